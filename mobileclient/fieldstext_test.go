package mobileclient

import (
	"encoding/json"
	"testing"
)

// TestFieldsText_SameAsMarshal: the fast encoding of a household's fields
// is json.Marshal's, byte for byte, on the plain shape and on every case
// that must fall back.
func TestFieldsText_SameAsMarshal(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fields map[string]json.RawMessage
	}{
		{"empty", map[string]json.RawMessage{}},
		{"plain", map[string]json.RawMessage{"head_name": json.RawMessage(`"户主000001"`), "members_count": json.RawMessage(`4`),
			"location": json.RawMessage(`{"lon":103.1,"lat":25.1}`), "a": json.RawMessage(`null`), "z": json.RawMessage(`[1,true,"x"]`)}},
		{"space in a value", map[string]json.RawMessage{"k": json.RawMessage(`{ "a" : 1 }`)}},
		{"space in a string", map[string]json.RawMessage{"k": json.RawMessage(`"采山坪 组"`)}},
		{"html in a value", map[string]json.RawMessage{"k": json.RawMessage(`"<b>&</b>"`)}},
		{"html in a key", map[string]json.RawMessage{"a<b": json.RawMessage(`1`)}},
		{"quote in a key", map[string]json.RawMessage{`a"b`: json.RawMessage(`1`)}},
		{"chinese key", map[string]json.RawMessage{"户主": json.RawMessage(`"张三"`)}},
		{"line separator", map[string]json.RawMessage{"k": json.RawMessage("\"a\u2028b\"")}},
		{"control in a key", map[string]json.RawMessage{"a\tb": json.RawMessage(`1`)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := json.Marshal(tc.fields)
			if err != nil {
				t.Fatal(err)
			}
			got, err := fieldsText(tc.fields)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("fieldsText = %s\njson.Marshal = %s", got, want)
			}
		})
	}
	// An invalid value fails as json.Marshal does.
	if _, err := fieldsText(map[string]json.RawMessage{"k": json.RawMessage(`{`)}); err == nil {
		t.Errorf("fieldsText of an invalid value: no error")
	}
}

// FuzzFieldsText: on any key and value, fieldsText agrees with
// json.Marshal (both fail, or both give the same bytes).
func FuzzFieldsText(f *testing.F) {
	f.Add("head_name", `"户主"`, "n", `4`)
	f.Add("a<", `{ "x":1}`, "b", `"\u2029"`)
	f.Add("k", `[1,2]`, "k2", `tru`)
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		m := map[string]json.RawMessage{k1: json.RawMessage(v1), k2: json.RawMessage(v2)}
		want, werr := json.Marshal(m)
		got, gerr := fieldsText(m)
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("errors differ: fieldsText %v, json.Marshal %v", gerr, werr)
		}
		if werr == nil && got != string(want) {
			t.Fatalf("fieldsText = %q\njson.Marshal = %q", got, want)
		}
	})
}
