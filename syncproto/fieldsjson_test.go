package syncproto

import (
	"encoding/json"
	"testing"
)

// TestHouseholdMarshal_SameAsDefault: Household's MarshalJSON (and
// AppendFields under it) writes the bytes the default encoder writes, on
// the plain shape and on every case that falls back.
func TestHouseholdMarshal_SameAsDefault(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    Household
	}{
		{"nil fields", Household{ID: "h1", PlaceCode: "5301"}},
		{"empty fields, version", Household{ID: "h1", PlaceCode: "5301", Fields: map[string]json.RawMessage{}, Version: 7}},
		{"plain", Household{ID: "01J", PlaceCode: "530102", Version: 3, Fields: map[string]json.RawMessage{"head_name": json.RawMessage(`"户主000001"`),
			"members_count": json.RawMessage(`4`), "location": json.RawMessage(`{"lon":103.1,"lat":25.1}`), "a": json.RawMessage(`null`), "z": json.RawMessage(`[1,true,"x"]`)}}},
		{"space in a value", Household{ID: "h", Fields: map[string]json.RawMessage{"k": json.RawMessage(`{ "a" : 1 }`)}}},
		{"space in a string", Household{ID: "h", Fields: map[string]json.RawMessage{"k": json.RawMessage(`"采山坪 组"`)}}},
		{"html in a value", Household{ID: "h", Fields: map[string]json.RawMessage{"k": json.RawMessage(`"<b>&</b>"`)}}},
		{"html in a key", Household{ID: "h", Fields: map[string]json.RawMessage{"a<b": json.RawMessage(`1`)}}},
		{"quote in a key", Household{ID: "h", Fields: map[string]json.RawMessage{`a"b`: json.RawMessage(`1`)}}},
		{"chinese key", Household{ID: "h", Fields: map[string]json.RawMessage{"户主": json.RawMessage(`"张三"`)}}},
		{"line separator", Household{ID: "h", Fields: map[string]json.RawMessage{"k": json.RawMessage("\"a\u2028b\"")}}},
		{"escaped id", Household{ID: `h"<1>`, PlaceCode: "组", Fields: map[string]json.RawMessage{"k": json.RawMessage(`1`)}}},
		{"many fields", Household{ID: "h", Fields: func() map[string]json.RawMessage {
			m := map[string]json.RawMessage{}
			for _, k := range []string{"q", "w", "e", "r", "t", "y", "u", "i", "o", "p", "a", "s", "d", "f", "g", "h", "j", "k", "l", "z"} {
				m[k] = json.RawMessage(`"` + k + `"`)
			}
			return m
		}()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := json.Marshal(householdJSON(tc.h))
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.Marshal(tc.h)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("MarshalJSON = %s\ndefault     = %s", got, want)
			}
			op, err := json.Marshal(Op{Op: OpPut, Type: EntityHousehold, ID: tc.h.ID, Household: &tc.h})
			if err != nil {
				t.Fatal(err)
			}
			if direct, err := MarshalOp(&Op{Op: OpPut, Type: EntityHousehold, ID: tc.h.ID, Household: &tc.h}); err != nil || string(direct) != string(op) {
				t.Errorf("MarshalOp = %s, %v\njson.Marshal = %s", direct, err, op)
			}
			var back Op
			if err := json.Unmarshal(op, &back); err != nil || back.Household.ID != tc.h.ID || len(back.Household.Fields) != len(tc.h.Fields) {
				t.Errorf("op round trip: %v, %+v", err, back.Household)
			}
		})
	}
	if _, err := json.Marshal(Household{ID: "h", Fields: map[string]json.RawMessage{"k": json.RawMessage(`{`)}}); err == nil {
		t.Errorf("an invalid value encoded without error")
	}
}

// FuzzHouseholdMarshal: on any id, place, key and value, MarshalJSON and
// the default encoding agree (both fail, or both give the same bytes).
func FuzzHouseholdMarshal(f *testing.F) {
	f.Add("h1", "5301", "head_name", `"户主"`, "n", `4`, int64(1))
	f.Add("h<", "p", "a<", `{ "x":1}`, "b", `"\u2029"`, int64(0))
	f.Add("h", "", "k", `[1,2]`, "k2", `tru`, int64(-3))
	f.Fuzz(func(t *testing.T, id, place, k1, v1, k2, v2 string, version int64) {
		h := Household{ID: id, PlaceCode: place, Version: version, Fields: map[string]json.RawMessage{k1: json.RawMessage(v1), k2: json.RawMessage(v2)}}
		want, werr := json.Marshal(householdJSON(h))
		got, gerr := json.Marshal(h)
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("errors differ: MarshalJSON %v, default %v", gerr, werr)
		}
		if werr == nil && string(got) != string(want) {
			t.Fatalf("MarshalJSON = %q\ndefault     = %q", got, want)
		}
		for _, op := range []Op{
			{Op: OpPut, Type: EntityHousehold, ID: id, Place: place, Seq: version, Household: &h},
			{Op: OpPut, Type: EntityHousehold, Household: &h},
			{Op: OpDelete, Type: EntityHousehold, ID: id, Seq: version},
			{Op: OpPut, Type: EntityVisit, ID: id, Place: place, Visit: &Visit{ID: id}},
		} {
			want, werr := json.Marshal(op)
			got, gerr := MarshalOp(&op)
			if (werr != nil) != (gerr != nil) {
				t.Fatalf("op %s %s: errors differ: MarshalOp %v, json.Marshal %v", op.Op, op.Type, gerr, werr)
			}
			if werr == nil && string(got) != string(want) {
				t.Fatalf("MarshalOp = %q\njson.Marshal = %q", got, want)
			}
		}
	})
}
