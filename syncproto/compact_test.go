package syncproto

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// compactBatch is a batch of every mutation kind, as a device queues it.
func compactBatch(t *testing.T) []Mutation {
	t.Helper()
	at := time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC)
	hlc := func(i int) HLC { return HLC{WallMs: at.UnixMilli() + int64(i)} }
	ev := func(b byte, slot string) EvidenceRef {
		return EvidenceRef{SHA256: strings.Repeat(string("0123456789abcdef"[b%16]), 60) + "0a1f", Size: 1000 + int64(b), MediaType: "image/jpeg", Slot: slot}
	}
	id := func(i int) string { return NewID(at.Add(time.Duration(i) * time.Second)) }
	return []Mutation{
		{Seq: 41, Kind: KindVisitCreate, HLC: hlc(0), Visit: &Visit{ID: id(1), HouseholdID: id(2), FormID: "household_survey", FormVersion: 1,
			Answers: map[string]json.RawMessage{"head_name": json.RawMessage(`"李"`)}, Point: &Point{Lon: 103.7043612, Lat: 25.0016931}, AccuracyM: 8.7,
			DeviceTime: at, Evidence: []EvidenceRef{ev(1, "id_card"), ev(2, "household_register")}}},
		{Seq: 42, Kind: KindHouseholdCreate, HLC: hlc(1), Household: &Household{ID: id(3), PlaceCode: "G11", Fields: map[string]json.RawMessage{"head_name": json.RawMessage(`"王"`)}}},
		{Seq: 43, Kind: KindHouseholdUpdate, HLC: hlc(2), HouseholdUpdate: &HouseholdUpdate{HouseholdID: id(3), BaseVersion: 2, Fields: map[string]json.RawMessage{"notes": json.RawMessage(`"x"`)}}},
		{Seq: 44, Kind: KindHouseholdMove, HLC: hlc(3), HouseholdMove: &HouseholdMove{HouseholdID: id(3), BaseVersion: 3, PlaceCode: "G12"}},
		{Seq: 45, Kind: KindHouseholdDelete, HLC: hlc(4), HouseholdDelete: &HouseholdDelete{HouseholdID: id(3), BaseVersion: 4}},
		{Seq: 46, Kind: KindEvidenceAttach, HLC: hlc(5), EvidenceAttach: &EvidenceAttach{VisitID: id(1), Evidence: ev(3, "rework")}},
	}
}

// TestCompact_RoundTrip: a compact push (version 2) decodes to exactly the
// mutations of the same push in version 1 form, is smaller, and leaves
// the mutations it was made from unchanged.
func TestCompact_RoundTrip(t *testing.T) {
	batch := compactBatch(t)
	before, _ := json.Marshal(batch)
	full := PushRequest{ProtocolVersion: 1, DeviceID: "dev", Mutations: batch}
	compact := PushRequest{ProtocolVersion: 2, DeviceID: "dev"}
	for i, m := range batch {
		compact.Mutations = append(compact.Mutations, m.Compact(i == 0))
	}
	var fb, cb bytes.Buffer
	if err := Encode(&fb, full, false); err != nil {
		t.Fatal(err)
	}
	if err := Encode(&cb, compact, false); err != nil {
		t.Fatal(err)
	}
	if after, _ := json.Marshal(batch); !bytes.Equal(before, after) {
		t.Error("Compact changed the mutation it was called on")
	}
	wire := cb.String()
	for _, gone := range []string{`"kind"`, `"seq":42`, batch[0].Visit.Evidence[0].SHA256} {
		if strings.Contains(wire, gone) {
			t.Errorf("compact push still has %s:\n%s", gone, wire)
		}
	}
	if !strings.Contains(wire, `"seq":41`) || cb.Len() >= fb.Len() {
		t.Errorf("compact push of %d bytes (version 1: %d):\n%s", cb.Len(), fb.Len(), wire)
	}
	want, err := DecodePushRequest(&fb)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodePushRequest(&cb)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Mutations, want.Mutations) || !reflect.DeepEqual(got.Mutations, batch) {
		t.Errorf("compact push decodes to\n%+v\nwant\n%+v", got.Mutations, want.Mutations)
	}
	for _, m := range got.Mutations {
		if err := m.Check(); err != nil {
			t.Errorf("seq %d: %v", m.Seq, err)
		}
	}
	// A seq that does not follow the one before stays.
	if m := batch[3].Compact(true); m.Seq != 44 || m.Kind != "" {
		t.Errorf("Compact(keepSeq) = seq %d kind %q", m.Seq, m.Kind)
	}
}

// TestDecodePushRequest_CompactOnlyInVersion2: version 1 pushes are read
// as before (no seq or kind filled in, base64 hashes refused), and a
// compact push cannot make a malformed batch well formed.
func TestDecodePushRequest_CompactOnlyInVersion2(t *testing.T) {
	b64 := compactSHA256(strings.Repeat("ab", 32))
	visit := func(extra string) string {
		return `{"hlc":"1764345600000-0000"` + extra + `,"visit":{"id":"01JDZX5Q7R8S9T0V1W2X3Y4Z5A","household_id":"01JDZX5Q7R8S9T0V1W2X3Y4Z5B","form_id":"f","form_version":1,"answers":{},"device_time":"2026-11-28T09:00:00Z","evidence":[{"sha256":"` + b64 + `","size":1,"media_type":"image/jpeg","slot":"s"}]}}`
	}
	cases := []struct {
		name    string
		body    string
		code    Code   // of DecodePushRequest
		check   Code   // of the first mutation's Check ("" none)
		wantSeq string // the seqs after decoding
	}{
		{"v1 without kind: rejected as before", `{"protocol_version":1,"device_id":"d","mutations":[` + visit(`,"seq":1`) + `]}`, "", CodeBadRequest, "1"},
		{"v1 without seq", `{"protocol_version":1,"device_id":"d","mutations":[` + visit(`,"seq":1`) + `,` + visit(``) + `]}`, CodeBadRequest, "", ""},
		{"v2", `{"protocol_version":2,"device_id":"d","mutations":[` + visit(`,"seq":5`) + `,` + visit(``) + `,` + visit(``) + `]}`, "", "", "5 6 7"},
		{"v2 explicit seqs", `{"protocol_version":2,"device_id":"d","mutations":[` + visit(`,"seq":5,"kind":"visit.create"`) + `,` + visit(`,"seq":6`) + `]}`, "", "", "5 6"},
		{"v2 first seq missing", `{"protocol_version":2,"device_id":"d","mutations":[` + visit(``) + `,` + visit(``) + `]}`, CodeBadRequest, "", ""},
		{"v2 seq hole", `{"protocol_version":2,"device_id":"d","mutations":[` + visit(`,"seq":5`) + `,` + visit(`,"seq":7`) + `]}`, CodeBadRequest, "", ""},
		{"v2 kind contradicts payload", `{"protocol_version":2,"device_id":"d","mutations":[` + visit(`,"seq":5,"kind":"household.move"`) + `]}`, "", CodeBadRequest, "5"},
		{"v2 two payloads, no kind", `{"protocol_version":2,"device_id":"d","mutations":[{"seq":5,"hlc":"1764345600000-0000","household_delete":{"household_id":"01JDZX5Q7R8S9T0V1W2X3Y4Z5B"},"household_move":{"household_id":"01JDZX5Q7R8S9T0V1W2X3Y4Z5B","place_code":"G1"}}]}`, "", CodeBadRequest, "5"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := DecodePushRequest(strings.NewReader(c.body))
			if CodeOf(err) != c.code || (err == nil) != (c.code == "") {
				t.Fatalf("err = %v, want %q", err, c.code)
			}
			if err != nil {
				return
			}
			var seqs []string
			for _, m := range req.Mutations {
				seqs = append(seqs, itoa(int(m.Seq)))
			}
			if got := strings.Join(seqs, " "); got != c.wantSeq {
				t.Errorf("seqs %s, want %s", got, c.wantSeq)
			}
			var code Code
			if perr := req.Mutations[0].Check(); perr != nil {
				code = perr.Code
			}
			if code != c.check {
				t.Errorf("Check: %q, want %q", code, c.check)
			}
			if req.ProtocolVersion == 2 && c.check == "" {
				if h := req.Mutations[0].Visit.Evidence[0].SHA256; h != strings.Repeat("ab", 32) {
					t.Errorf("sha256 %q not expanded to hex", h)
				}
			}
		})
	}
}

func TestCompactSHA256(t *testing.T) {
	hexSum := "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	b := compactSHA256(hexSum)
	if len(b) != 43 || expandSHA256(b) != hexSum {
		t.Errorf("compact %q, back %q", b, expandSHA256(b))
	}
	for _, s := range []string{"", "xyz", hexSum, strings.ToUpper(hexSum), b + "=", strings.Repeat("!", 43)} {
		if got := expandSHA256(s); got != s {
			t.Errorf("expand(%q) = %q", s, got)
		}
	}
	if got := compactSHA256("not a sum"); got != "not a sum" {
		t.Errorf("compact of a non-sum: %q", got)
	}
}
