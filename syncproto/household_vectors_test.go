package syncproto

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// testdata/household_vectors.json pins the verdicts of CheckHouseholdFields.
// The field app's checkFields (mobileclient/webapp/js/hhfields.js) runs the
// same file (mobileclient/webapp/test/hhfields.test.mjs), so the app
// refuses on the device exactly what the server would refuse.
func TestHouseholdVectors_Go(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "household_vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		About   string `json:"about"`
		Vectors []struct {
			Name   string                     `json:"name"`
			Fields map[string]json.RawMessage `json:"fields"`
			Errors []vectorFieldError         `json:"errors"`
		} `json:"vectors"`
	}
	if err := strictUnmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Vectors) < 30 {
		t.Fatalf("%d vectors", len(doc.Vectors))
	}
	seen := map[string]bool{}
	codes := map[FieldCode]bool{}
	for _, v := range doc.Vectors {
		if seen[v.Name] {
			t.Errorf("vector %q twice", v.Name)
		}
		seen[v.Name] = true
		// A device sends compact JSON; the file is indented.
		fields := map[string]json.RawMessage{}
		for k, raw := range v.Fields {
			var c bytes.Buffer
			if err := json.Compact(&c, raw); err != nil {
				t.Fatalf("%s: %v", v.Name, err)
			}
			fields[k] = c.Bytes()
		}
		got := []vectorFieldError{}
		if perr := CheckHouseholdFields(fields); perr != nil {
			if perr.Code != CodeValidation || len(perr.Fields) == 0 {
				t.Errorf("%s: error %v without field errors", v.Name, perr)
				continue
			}
			for _, fe := range perr.Fields {
				got = append(got, vectorFieldError{Field: fe.Field, Code: fe.Code})
			}
		}
		if !slices.Equal(got, v.Errors) {
			t.Errorf("%s: got %v, want %v", v.Name, got, v.Errors)
		}
		for _, e := range v.Errors {
			codes[e.Code] = true
		}
	}
	for _, c := range []FieldCode{FieldCodeBadFieldName, FieldCodeValueTooLarge, FieldCodeBadLocation, FieldCodeBadMember} {
		if !codes[c] {
			t.Errorf("no vector gives %s", c)
		}
	}
}
