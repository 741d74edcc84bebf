package syncproto

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestHLC_WireFormRoundTripAndOrder(t *testing.T) {
	a := HLC{WallMs: 1764345600000, Counter: 2}
	b, _ := json.Marshal(a)
	if string(b) != `"1764345600000-0002"` {
		t.Fatalf("wire = %s", b)
	}
	var back HLC
	if err := json.Unmarshal(b, &back); err != nil || back != a {
		t.Fatalf("round trip = %v %v", back, err)
	}
	later := HLC{WallMs: 1764345600000, Counter: 0x10}
	if a.Compare(later) != -1 || later.Compare(a) != 1 || a.Compare(a) != 0 {
		t.Fatal("compare")
	}
	if !(a.String() < later.String()) {
		t.Fatal("wire form does not sort like the clock")
	}
	for _, bad := range []string{"x", "+000000000000-0000", "1764345600000-+001", "1764345600000-00021", "17643456000x0-0002", "1764345600000-zzzz", "-764345600000-0002"} {
		if _, err := ParseHLC(bad); err == nil {
			t.Errorf("ParseHLC(%q) accepted", bad)
		}
	}
}

func TestClock_MonotonicUnderSkew(t *testing.T) {
	now := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	c := &Clock{Now: func() time.Time { return now }}
	h1 := c.Tick()
	h2 := c.Tick()
	if h2.Compare(h1) <= 0 {
		t.Fatal("tick not increasing")
	}
	// A remote clock a day ahead pulls ours forward; the next local tick
	// is still after it even though the wall clock did not move.
	remote := HLC{WallMs: now.Add(24 * time.Hour).UnixMilli()}
	h3 := c.Observe(remote)
	if h3.Compare(remote) <= 0 {
		t.Fatal("observe not after remote")
	}
	if c.Tick().Compare(h3) <= 0 {
		t.Fatal("tick after observe went backwards")
	}
	// Wall clock going backwards never makes the HLC go backwards.
	now = now.Add(-time.Hour)
	if c.Tick().Compare(h3) <= 0 {
		t.Fatal("HLC went backwards with the wall clock")
	}
}

func TestClampHLC(t *testing.T) {
	server := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	ahead := HLC{WallMs: server.Add(24 * time.Hour).UnixMilli()}
	got, clamped := ClampHLC(ahead, server, 5*time.Minute)
	if !clamped || got.WallMs != server.Add(5*time.Minute).UnixMilli() {
		t.Fatalf("clamp = %v %v", got, clamped)
	}
	behind := HLC{WallMs: server.AddDate(-1, 0, 0).UnixMilli()}
	if got, clamped := ClampHLC(behind, server, 5*time.Minute); clamped || got != behind {
		t.Fatal("a clock behind must be kept")
	}
}

func TestCursor_TamperForeignAndVersion(t *testing.T) {
	key := []byte("k1")
	c := Cursor{Epoch: "e1", Device: "d1", Seq: 42, Roots: []string{"V1"}, Snap: &Snapshot{Roots: []string{"V1"}, Stage: 2, After: "x"}}
	tok := EncodeCursor(key, c)
	got, err := DecodeCursor(key, tok)
	if err != nil || got.Seq != 42 || got.Device != "d1" || got.Snap.After != "x" || got.V != CursorVersion {
		t.Fatalf("round trip = %+v %v", got, err)
	}
	if c0, err := DecodeCursor(key, ""); err != nil || c0.Seq != 0 {
		t.Fatal("empty cursor must be the zero cursor")
	}
	payload, mac, _ := strings.Cut(tok, ".")
	forged := EncodeCursor([]byte("other key"), Cursor{Epoch: "e1", Device: "d1", Seq: 1 << 40})
	_, fmac, _ := strings.Cut(forged, ".")
	fpayload, _, _ := strings.Cut(forged, ".")
	for name, bad := range map[string]string{
		"other key":       forged,
		"swapped payload": fpayload + "." + mac,
		"swapped mac":     payload + "." + fmac,
		"no dot":          payload,
		"bad base64":      "!!!." + mac,
		"short mac":       payload + "." + mac[:4],
		"huge":            strings.Repeat("a", MaxCursorLen+1),
	} {
		if _, err := DecodeCursor(key, bad); CodeOf(err) != CodeInvalidCursor {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func gz(t *testing.T, s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.Bytes()
}

func TestDecodePushRequest_Checks(t *testing.T) {
	cases := []struct {
		name string
		body string
		code Code
	}{
		{"unknown version", `{"protocol_version":99,"device_id":"d","mutations":[{"seq":1}]}`, CodeUnsupportedVersion},
		{"missing version", `{"device_id":"d","mutations":[{"seq":1}]}`, CodeUnsupportedVersion},
		{"no device", `{"protocol_version":1,"mutations":[{"seq":1}]}`, CodeBadRequest},
		{"empty batch", `{"protocol_version":1,"device_id":"d","mutations":[]}`, CodeBadRequest},
		{"seq zero", `{"protocol_version":1,"device_id":"d","mutations":[{"seq":0}]}`, CodeBadRequest},
		{"seq hole inside batch", `{"protocol_version":1,"device_id":"d","mutations":[{"seq":1},{"seq":3}]}`, CodeBadRequest},
		{"malformed", `{"protocol_version":1,`, CodeInvalidJSON},
		{"empty", ``, CodeInvalidJSON},
		{"deep nesting", strings.Repeat("[", 20000) + strings.Repeat("]", 20000), CodeInvalidJSON},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodePushRequest(strings.NewReader(c.body))
			if CodeOf(err) != c.code {
				t.Fatalf("err = %v, want %s", err, c.code)
			}
		})
	}
	var muts []string
	for i := 1; i <= MaxPushMutations+1; i++ {
		muts = append(muts, `{"seq":`+itoa(i)+`}`)
	}
	_, err := DecodePushRequest(strings.NewReader(`{"protocol_version":1,"device_id":"d","mutations":[` + strings.Join(muts, ",") + `]}`))
	if CodeOf(err) != CodeTooLarge {
		t.Fatalf("oversize batch: %v", err)
	}
	big := `{"protocol_version":1,"device_id":"` + strings.Repeat("x", MaxMessageBytes) + `"}`
	if _, err := DecodePushRequest(strings.NewReader(big)); CodeOf(err) != CodeTooLarge || !errors.Is(err, ErrTooLarge) {
		t.Fatalf("huge body: %v", err)
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// TestUnknownFieldsIgnored: a message from a newer peer, with fields this
// version does not know, still decodes (rule 8).
func TestUnknownFieldsIgnored(t *testing.T) {
	body := `{"protocol_version":1,"device_id":"d","future_thing":{"a":[1,2]},"mutations":[{"seq":1,"kind":"visit.create","new_flag":true,
	  "visit":{"id":"01JDZX5Q7R8S9T0V1W2X3Y4Z5A","household_id":"01JDZX5Q7R8S9T0V1W2X3Y4Z5B","form_id":"f","form_version":1,"answers":{},"device_time":"2026-11-28T09:00:00Z","halo":1}}]}`
	req, err := DecodePushRequest(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if req.Mutations[0].Visit == nil || req.Mutations[0].Visit.FormID != "f" {
		t.Fatalf("decoded %+v", req.Mutations[0])
	}
	if perr := req.Mutations[0].Check(); perr != nil {
		t.Fatalf("check: %v", perr)
	}
	pull := `{"protocol_version":1,"ops":[{"op":"put","type":"household","id":"x","household":{"id":"x","place_code":"G1","fields":{},"version":3,"shiny":true},"glitter":1}],"cursor":"c","has_more":false,"extra":{}}`
	resp, err := DecodePullResponse(strings.NewReader(pull))
	if err != nil || resp.Ops[0].Household.Version != 3 {
		t.Fatalf("pull response: %+v %v", resp, err)
	}
}

func TestEncode_GzipRoundTrip(t *testing.T) {
	var b bytes.Buffer
	req := PullRequest{ProtocolVersion: 1, DeviceID: "d", Cursor: "c"}
	if err := Encode(&b, req, true); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodePullRequest(zr)
	if err != nil || got.DeviceID != "d" || got.MaxBytes != DefaultPullBytes {
		t.Fatalf("got %+v %v", got, err)
	}
	_ = gz
}

func TestMutationCheck(t *testing.T) {
	id := "01JDZX5Q7R8S9T0V1W2X3Y4Z5A"
	sha := strings.Repeat("ab", 32)
	now := time.Now()
	cases := []struct {
		name string
		m    Mutation
		ok   bool
	}{
		{"visit ok", Mutation{Seq: 1, Kind: KindVisitCreate, Visit: &Visit{ID: id, HouseholdID: id, FormID: "f", FormVersion: 1, DeviceTime: now}}, true},
		{"visit bad id", Mutation{Seq: 1, Kind: KindVisitCreate, Visit: &Visit{ID: "../x", HouseholdID: id, FormID: "f", FormVersion: 1, DeviceTime: now}}, false},
		{"visit point out of range", Mutation{Seq: 1, Kind: KindVisitCreate, Visit: &Visit{ID: id, HouseholdID: id, FormID: "f", FormVersion: 1, DeviceTime: now, Point: &Point{Lon: 200, Lat: 0}}}, false},
		{"visit negative accuracy", Mutation{Seq: 1, Kind: KindVisitCreate, Visit: &Visit{ID: id, HouseholdID: id, FormID: "f", FormVersion: 1, DeviceTime: now, AccuracyM: -1}}, false},
		{"visit bad evidence hash", Mutation{Seq: 1, Kind: KindVisitCreate, Visit: &Visit{ID: id, HouseholdID: id, FormID: "f", FormVersion: 1, DeviceTime: now, Evidence: []EvidenceRef{{SHA256: "ABC", Size: 1, MediaType: "image/jpeg", Slot: "s"}}}}, false},
		{"visit evidence ok", Mutation{Seq: 1, Kind: KindVisitCreate, Visit: &Visit{ID: id, HouseholdID: id, FormID: "f", FormVersion: 1, DeviceTime: now, Evidence: []EvidenceRef{{SHA256: sha, Size: 1, MediaType: "image/jpeg", Slot: "s"}}}}, true},
		{"two payloads", Mutation{Seq: 1, Kind: KindVisitCreate, Visit: &Visit{ID: id}, Household: &Household{ID: id}}, false},
		{"kind payload mismatch", Mutation{Seq: 1, Kind: KindHouseholdCreate, Visit: &Visit{ID: id}}, false},
		{"unknown kind", Mutation{Seq: 1, Kind: "visit.explode", Visit: &Visit{ID: id}}, false},
		{"household bad field name", Mutation{Seq: 1, Kind: KindHouseholdCreate, Household: &Household{ID: id, PlaceCode: "G1", Fields: map[string]json.RawMessage{"Bad Name": []byte(`1`)}}}, false},
		{"household bad location", Mutation{Seq: 1, Kind: KindHouseholdCreate, Household: &Household{ID: id, PlaceCode: "G1", Fields: map[string]json.RawMessage{"location": []byte(`{"lon":500,"lat":1}`)}}}, false},
		{"household member ok", Mutation{Seq: 1, Kind: KindHouseholdCreate, Household: &Household{ID: id, PlaceCode: "G1", Fields: map[string]json.RawMessage{"member." + id: []byte(`{"name":"王芳"}`)}}}, true},
		{"update without fields", Mutation{Seq: 1, Kind: KindHouseholdUpdate, HouseholdUpdate: &HouseholdUpdate{HouseholdID: id}}, false},
		{"move ok", Mutation{Seq: 1, Kind: KindHouseholdMove, HouseholdMove: &HouseholdMove{HouseholdID: id, PlaceCode: "G2"}}, true},
		{"attach ok", Mutation{Seq: 1, Kind: KindEvidenceAttach, EvidenceAttach: &EvidenceAttach{VisitID: id, Evidence: EvidenceRef{SHA256: sha, Size: 10, MediaType: "image/jpeg", Slot: "after"}}}, true},
		{"attach too big", Mutation{Seq: 1, Kind: KindEvidenceAttach, EvidenceAttach: &EvidenceAttach{VisitID: id, Evidence: EvidenceRef{SHA256: sha, Size: MaxEvidenceBytes + 1, MediaType: "image/jpeg", Slot: "after"}}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.m.Check()
			if (err == nil) != c.ok {
				t.Fatalf("Check = %v, want ok=%v", err, c.ok)
			}
		})
	}
}

func TestValidID(t *testing.T) {
	now := time.Now()
	a, b := NewID(now), NewID(now.Add(time.Millisecond))
	if !ValidID(a) || !ValidID(b) || a == b || !(a < b) {
		t.Fatalf("NewID %s %s", a, b)
	}
	for _, ok := range []string{"01JDZX5Q7R8S9T0V1W2X3Y4Z5A", "01936b5e-1c2a-7d3e-8f40-123456789abc"} {
		if !ValidID(ok) {
			t.Errorf("%s rejected", ok)
		}
	}
	for _, bad := range []string{"", "x", "81JDZX5Q7R8S9T0V1W2X3Y4Z5A", "01JDZX5Q7R8S9T0V1W2X3Y4Z5U", "01936b5e-1c2a-7d3e-8f40-123456789abg", "../../../../etc/passwd//x"} {
		if ValidID(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCodes_StatusTable(t *testing.T) {
	for _, c := range Codes() {
		s := c.HTTPStatus()
		if s < 400 || s > 599 {
			t.Errorf("%s → %d", c, s)
		}
	}
	if CodeSequenceGap.HTTPStatus() != 409 || CodeUnsupportedVersion.HTTPStatus() != 426 || CodeUnavailable.HTTPStatus() != 503 {
		t.Fatal("table changed")
	}
	if CodeForStatus(503) != CodeUnavailable || CodeForStatus(401) != CodeUnauthorized {
		t.Fatal("reverse map")
	}
}

// TestCursor_NonCanonicalRefused: a token whose base64 differs from the
// one handed out only in the unused low bits of a last character decodes
// to the same bytes under lenient base64; it is refused, so that one
// cursor has exactly one spelling.
func TestCursor_NonCanonicalRefused(t *testing.T) {
	key := []byte("k")
	found := 0
	for seq := int64(1); seq < 64 && found < 8; seq++ {
		tok := EncodeCursor(key, Cursor{Epoch: "e1", Device: "d1", Seq: seq})
		p, m, _ := strings.Cut(tok, ".")
		for part, s := range map[string]string{"payload": p, "mac": m} {
			if len(s)%4 == 0 {
				continue // no spare bits in the last character
			}
			// The last character then carries 2 or 4 unused bits: flipping
			// the lowest changes the spelling, not the bytes.
			last := strings.IndexByte(alphabetURL, s[len(s)-1])
			alt := s[:len(s)-1] + string(alphabetURL[last^1])
			var bad string
			if part == "payload" {
				bad = alt + "." + m
			} else {
				bad = p + "." + alt
			}
			if _, err := DecodeCursor(key, tok); err != nil {
				t.Fatalf("canonical token refused: %v", err)
			}
			if _, err := DecodeCursor(key, bad); CodeOf(err) != CodeInvalidCursor {
				t.Fatalf("non-canonical %s accepted: %q (%v)", part, bad, err)
			}
			found++
		}
	}
	if found == 0 {
		t.Fatal("no token with spare bits was made")
	}
}

const alphabetURL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
