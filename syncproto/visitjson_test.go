package syncproto

import (
	"encoding/json"
	"math"
	"testing"
	"time"
)

// sameAsMarshal fails t unless AppendVisit and MarshalMutation give
// json.Marshal's bytes for v (or, where it refuses, an error too).
func sameAsMarshal(t *testing.T, v *Visit) {
	t.Helper()
	want, werr := json.Marshal(v)
	got, gerr := AppendVisit([]byte("prefix"), v)
	if (werr != nil) != (gerr != nil) {
		t.Fatalf("errors differ: AppendVisit %v, json.Marshal %v", gerr, werr)
	}
	if werr == nil && string(got) != "prefix"+string(want) {
		t.Fatalf("AppendVisit  = %s\njson.Marshal = prefix%s", got, want)
	}
	if v != nil {
		enc, answers, err := EncodeVisit(v)
		if (err != nil) != (werr != nil) || (werr == nil && string(enc) != string(want)) {
			t.Fatalf("EncodeVisit = %s, %v\njson.Marshal = %s, %v", enc, err, want, werr)
		}
		if wantA, aerr := json.Marshal(v.Answers); werr == nil && (aerr != nil || string(answers) != string(wantA)) {
			t.Fatalf("EncodeVisit's answers = %s\njson.Marshal      = %s", answers, wantA)
		}
	}
	for _, m := range []Mutation{
		{Seq: 7, Kind: KindVisitCreate, HLC: HLC{WallMs: 1765000000000, Counter: 3}, Visit: v},
		{Visit: v},
		{Kind: KindVisitCreate, HLC: HLC{WallMs: -5}, Visit: v},
		{Seq: 1, Kind: KindHouseholdCreate, Visit: v, Household: &Household{ID: "h"}},
	} {
		want, werr := json.Marshal(m)
		got, gerr := MarshalMutation(&m)
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("mutation %+v: errors differ: MarshalMutation %v, json.Marshal %v", m, gerr, werr)
		}
		if werr == nil && string(got) != string(want) {
			t.Fatalf("MarshalMutation = %s\njson.Marshal    = %s", got, want)
		}
	}
}

// TestAppendVisit_SameAsMarshal: the plain shape, every optional field,
// every string and number that json.Marshal writes in a special way, and
// the values it refuses.
func TestAppendVisit_SameAsMarshal(t *testing.T) {
	shanghai := time.FixedZone("CST", 8*3600)
	base := func() *Visit {
		return &Visit{ID: "01JEXAMPLE0000000000000000", HouseholdID: "01JHH", FormID: "household_survey", FormVersion: 3,
			Answers:    map[string]json.RawMessage{"head_name": json.RawMessage(`"户主000001"`), "members": json.RawMessage(`4`), "ok": json.RawMessage(`true`)},
			DeviceTime: time.Date(2026, 12, 7, 9, 30, 15, 123456789, shanghai)}
	}
	for _, tc := range []struct {
		name string
		edit func(v *Visit)
	}{
		{"plain", func(v *Visit) {}},
		{"everything", func(v *Visit) {
			v.Point = &Point{Lon: 103.123456789, Lat: 25.5}
			v.AccuracyM = 12.5
			v.Evidence = []EvidenceRef{{SHA256: "ab", Size: 250000, MediaType: "image/jpeg", Slot: "photo"}, {SHA256: "cd", Size: 0, MediaType: "application/pdf", Slot: "doc"}}
			v.CorrectsVisitID = "01JOLD"
			v.GPSReason = "山谷里没有信号"
			v.PlaceCode, v.DeviceID, v.UserName, v.ReviewState = "530102001001", "dev", "李四", "approved"
			v.ServerTime = time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)
		}},
		{"nil answers", func(v *Visit) { v.Answers = nil }},
		{"empty answers", func(v *Visit) { v.Answers = map[string]json.RawMessage{} }},
		{"answers that need compacting or escaping", func(v *Visit) {
			v.Answers["note"] = json.RawMessage(`{ "a" : "<b>" }`)
			v.Answers["a&b"] = json.RawMessage(`1`)
			v.Answers["ls"] = json.RawMessage("\"a\u2028b\"")
		}},
		{"a nil answer", func(v *Visit) { v.Answers["x"] = nil }},
		{"an invalid answer", func(v *Visit) { v.Answers["x"] = json.RawMessage(`{`) }},
		{"strings to escape", func(v *Visit) {
			v.ID = `a"b\c`
			v.FormID = "<form>&"
			v.GPSReason = "tab\there\x01 \u2028 \xff"
			v.UserName = "张\u2029三"
		}},
		{"empty strings", func(v *Visit) { v.ID, v.HouseholdID, v.FormID = "", "", "" }},
		{"negative and large numbers", func(v *Visit) { v.FormVersion = -1; v.Evidence = []EvidenceRef{{Size: math.MaxInt64}} }},
		{"small accuracy", func(v *Visit) { v.AccuracyM = 1e-7 }},
		{"accuracy at the 'e' limits", func(v *Visit) { v.AccuracyM = 1e-6 }},
		{"huge accuracy", func(v *Visit) { v.AccuracyM = 1e21 }},
		{"accuracy just under 1e21", func(v *Visit) { v.AccuracyM = 999999999999999900000 }},
		{"tiny exponent", func(v *Visit) { v.AccuracyM = 5e-324 }},
		{"negative zero accuracy", func(v *Visit) { v.AccuracyM = math.Copysign(0, -1) }},
		{"zero point", func(v *Visit) { v.Point = &Point{} }},
		{"negative zero point", func(v *Visit) { v.Point = &Point{Lon: math.Copysign(0, -1), Lat: -1e-9} }},
		{"NaN point", func(v *Visit) { v.Point = &Point{Lon: math.NaN()} }},
		{"infinite latitude", func(v *Visit) { v.Point = &Point{Lat: math.Inf(-1)} }},
		{"infinite accuracy", func(v *Visit) { v.AccuracyM = math.Inf(1) }},
		{"zero device time", func(v *Visit) { v.DeviceTime = time.Time{} }},
		{"utc time without nanoseconds", func(v *Visit) { v.DeviceTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }},
		{"year 10000", func(v *Visit) { v.DeviceTime = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"server time in year 10000", func(v *Visit) { v.ServerTime = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"empty evidence list", func(v *Visit) { v.Evidence = []EvidenceRef{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := base()
			tc.edit(v)
			sameAsMarshal(t, v)
		})
	}
	sameAsMarshal(t, nil)
}

// FuzzAppendVisit: on any strings, numbers, times and one answer,
// AppendVisit and MarshalMutation agree with json.Marshal.
func FuzzAppendVisit(f *testing.F) {
	f.Add("01J", "h<1>", "form", 2, "k", `"值"`, 103.5, 25.1, 8.0, int64(1765000000), int64(5), "山谷", "dev", int64(250000), "photo")
	f.Add("", "", "", -3, "a&b", `{ "x" : [1, 2] }`, math.Inf(1), 0.0, 1e-9, int64(-62135596800), int64(0), "\xff", "", int64(-1), "")
	f.Add("a\u2028", "\"", "\\", 0, "", `tru`, 1e21, -0.0, 1e300, int64(253402300800), int64(999999999), "<>", "&", int64(0), "x")
	f.Fuzz(func(t *testing.T, id, hh, form string, version int, key, answer string, lon, lat, acc float64, sec, nsec int64, reason, device string, size int64, slot string) {
		v := &Visit{ID: id, HouseholdID: hh, FormID: form, FormVersion: version, Answers: map[string]json.RawMessage{key: json.RawMessage(answer)},
			AccuracyM: acc, DeviceTime: time.Unix(sec, nsec).In(time.FixedZone("", int(nsec%50000))), GPSReason: reason, DeviceID: device}
		if lon != 0 || lat != 0 {
			v.Point = &Point{Lon: lon, Lat: lat}
		}
		if size != 0 {
			v.Evidence = []EvidenceRef{{SHA256: key, Size: size, MediaType: reason, Slot: slot}}
		}
		if nsec%3 == 0 {
			v.ServerTime = time.Unix(sec/2, 0)
		}
		sameAsMarshal(t, v)
	})
}
