package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"flag"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"fieldsync/mobileclient/linkproxy"
	"fieldsync/syncproto"
)

// demoHouseholds reads n of the demo village's households from the
// tests' data template (see TestMain), with plain SQL.
func demoHouseholds(t *testing.T, n int) []syncproto.Household {
	t.Helper()
	db, err := openServerDB(serverDBPath(dataTemplate))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rs, err := db.Query(`SELECT id, place_code, fields FROM households WHERE place_code LIKE ? || '%' AND deleted = 0 ORDER BY id LIMIT ?`,
		demoVillageCode, n)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var out []syncproto.Household
	for rs.Next() {
		var h syncproto.Household
		var fields string
		if err := rs.Scan(&h.ID, &h.PlaceCode, &fields); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(fields), &h.Fields); err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) != n {
		t.Fatalf("%d demo households in the data template, want %d", len(out), n)
	}
	return out
}

// TestWorkload_ValidAnswers makes many visits of every shipped form and
// checks them against the form, as the server will.
func TestWorkload_ValidAnswers(t *testing.T) {
	hs := demoHouseholds(t, 50)
	for _, f := range syncproto.Templates() {
		t.Run(f.ID, func(t *testing.T) {
			w := newWorkload(rand.New(rand.NewPCG(1, 2)), syncproto.Templates(), hs)
			for i := 0; i < 300; i++ {
				h, _ := w.household()
				v, photos, err := w.visitWith(h, f)
				if err != nil {
					t.Fatal(err)
				}
				if err := f.ValidateAnswers(v.Answers); err != nil {
					t.Fatalf("visit %d: %v", i, err)
				}
				m := syncproto.Mutation{Seq: 1, Kind: syncproto.KindVisitCreate, HLC: syncproto.HLC{WallMs: time.Now().UnixMilli()}, Visit: &v}
				v.ID = syncproto.NewID(time.Now())
				if perr := m.Check(); perr != nil {
					t.Fatalf("visit %d: %v", i, perr)
				}
				if len(photos) != 0 || len(v.Evidence) != 0 {
					t.Fatal("photos without photoBytes")
				}
			}
		})
	}
}

func TestWorkload_EvidenceAndEdits(t *testing.T) {
	hs := demoHouseholds(t, 10)
	w := newWorkload(rand.New(rand.NewPCG(3, 4)), syncproto.Templates(), hs)
	w.photoBytes = 20_000
	f, _ := syncproto.Template("house_retrofit_inspection")
	h, _ := w.household()
	v, photos, err := w.visitWith(h, f)
	if err != nil {
		t.Fatal(err)
	}
	if len(photos) != 3 || len(v.Evidence) != 3 {
		t.Fatalf("%d photos, %d refs; the form requires before, after and certificate", len(photos), len(v.Evidence))
	}
	for i, p := range photos {
		if len(p.Data) != 20_000 || v.Evidence[i].SHA256 != p.SHA256 || v.Evidence[i].Slot != p.Slot {
			t.Fatalf("photo %d does not match its reference", i)
		}
	}
	for i := 0; i < 100; i++ {
		id, fields, ok := w.edit()
		if !ok || id == "" {
			t.Fatal("no edit")
		}
		if perr := syncproto.CheckHouseholdFields(fields); perr != nil {
			t.Fatalf("edit %d: %v", i, perr)
		}
	}
}

func TestOpenRosaXML(t *testing.T) {
	f, _ := syncproto.Template("household_survey")
	v := syncproto.Visit{
		ID: syncproto.NewID(time.Now()), HouseholdID: "0190a5b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b", FormID: f.ID, FormVersion: 1,
		Answers: map[string]json.RawMessage{
			"head_name": jsonValue("王建国 <&>"), "members_count": json.RawMessage("4"), "member_changes": jsonValue([]string{"birth", "army"}),
		},
		Point: &syncproto.Point{Lon: 103.71234, Lat: 25.04321}, AccuracyM: 6.5, DeviceTime: time.Date(2024, 11, 28, 1, 2, 3, 0, time.UTC),
		Evidence: []syncproto.EvidenceRef{{SHA256: strings.Repeat("ab", 32), Size: 1000, MediaType: "image/jpeg", Slot: "id_card"}},
	}
	x := openRosaXML(v, f, "11111111-2222-4333-8444-555555555555")
	var doc struct {
		XMLName  xml.Name `xml:"data"`
		ID       string   `xml:"id,attr"`
		Version  string   `xml:"version,attr"`
		Head     string   `xml:"head_name"`
		Changes  string   `xml:"member_changes"`
		Location string   `xml:"location"`
		IDCard   string   `xml:"id_card"`
		Instance string   `xml:"meta>instanceID"`
	}
	if err := xml.Unmarshal(x, &doc); err != nil {
		t.Fatalf("not XML: %v\n%s", err, x)
	}
	if doc.ID != "household_survey" || doc.Version != "1" || doc.Head != "王建国 <&>" || doc.Changes != "birth army" ||
		doc.Location != "25.04321 103.71234 0.0 6.5" || !strings.HasSuffix(doc.IDCard, ".jpg") ||
		doc.Instance != "uuid:11111111-2222-4333-8444-555555555555" {
		t.Fatalf("instance %+v\n%s", doc, x)
	}
	if !bytes.HasPrefix(x, []byte("<?xml version='1.0' ?><data ")) {
		t.Fatalf("header: %s", x[:40])
	}
}

func TestLinkFlags_Resolve(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want *linkproxy.Link
		err  bool
	}{
		{"none", []string{"-link", "none"}, nil, false},
		{"2g", []string{"-link", "2g"}, linkProfiles["2g"], false},
		{"override", []string{"-link", "3g", "-rtt", "1s", "-cut-up-bytes", "262144"}, &linkproxy.Link{
			DownBytesPerSec: linkproxy.Kbps(1000), UpBytesPerSec: linkproxy.Kbps(384), Latency: 500 * time.Millisecond, CutEveryUpBytes: 256 << 10}, false},
		{"override on none", []string{"-link", "none", "-kbps", "50"}, &linkproxy.Link{UpBytesPerSec: 6250, DownBytesPerSec: 6250}, false},
		{"unknown", []string{"-link", "5g"}, nil, true},
		{"invalid", []string{"-reset-ratio", "3"}, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			var lf linkFlags
			lf.register(fs, "direct")
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			got, err := lf.resolve(fs)
			if (err != nil) != tc.err {
				t.Fatalf("err %v, want error %v", err, tc.err)
			}
			if tc.err {
				return
			}
			if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
				t.Fatalf("link %+v, want %+v", got, tc.want)
			}
		})
	}
}
