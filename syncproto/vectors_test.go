package syncproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The shared validation vectors in testdata/vectors pin the verdicts of
// FormDef.ValidateAnswers, FormDef.MissingSlots and FormDef.Check. The
// field app's mobileclient/webapp/js/formcheck.js runs the same files
// (mobileclient/webapp/test/formcheck.test.mjs), so Go and JS cannot drift
// apart. Format: testdata/vectors/README.md.

type vectorFile struct {
	About   string            `json:"about"`
	Form    json.RawMessage   `json:"form"`
	Vectors []json.RawMessage `json:"vectors"`
}

type vectorFieldError struct {
	Field string    `json:"field"`
	Code  FieldCode `json:"code"`
}

type vector struct {
	Name          string              `json:"name"`
	Form          json.RawMessage     `json:"form"`
	FormUnchecked bool                `json:"form_unchecked"`
	Answers       json.RawMessage     `json:"answers"`
	Errors        *[]vectorFieldError `json:"errors"`
	Present       json.RawMessage     `json:"present"`
	Missing       *[]string           `json:"missing"`
	FormError     json.RawMessage     `json:"form_error"`
	Slot          *EvidenceSlot       `json:"slot"`
	MediaType     *string             `json:"media_type"`
	Accepts       *bool               `json:"accepts"`
	GPSReason     *string             `json:"gps_reason"`
	GPSReasonCode *FieldCode          `json:"gps_reason_code"`

	file      string
	form      *FormDef
	decodeErr error // form_error vectors only: Go's JSON decoding refused the form
}

func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// loadVectors reads every vector file; it fails the test on a malformed
// file or vector, so a typo cannot silently skip a case.
func loadVectors(t *testing.T) []*vector {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "vectors", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no vector files: %v", err)
	}
	var out []*vector
	names := map[string]string{}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var vf vectorFile
		if err := strictUnmarshal(data, &vf); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if strings.TrimSpace(vf.About) == "" || len(vf.Vectors) == 0 {
			t.Fatalf("%s: needs an about and at least one vector", file)
		}
		for i, raw := range vf.Vectors {
			v := &vector{file: filepath.Base(file)}
			if err := strictUnmarshal(raw, v); err != nil {
				t.Fatalf("%s: vector %d: %v", file, i, err)
			}
			if v.Name == "" {
				t.Fatalf("%s: vector %d has no name", file, i)
			}
			if other, dup := names[v.Name]; dup {
				t.Fatalf("vector %q in %s and %s", v.Name, other, file)
			}
			names[v.Name] = file
			kinds := 0
			for _, has := range []bool{v.Answers != nil, v.Present != nil, v.FormError != nil, v.Slot != nil, v.GPSReason != nil} {
				if has {
					kinds++
				}
			}
			if kinds != 1 {
				t.Fatalf("%s: vector %q must have exactly one of answers, present, form_error, slot, gps_reason", file, v.Name)
			}
			if (v.Answers != nil) != (v.Errors != nil) || (v.Present != nil) != (v.Missing != nil) ||
				(v.Slot != nil) != (v.MediaType != nil && v.Accepts != nil) {
				t.Fatalf("%s: vector %q: answers go with errors, present with missing, slot with media_type and accepts", file, v.Name)
			}
			if v.GPSReason != nil {
				out = append(out, v) // no form; gps_reason_code may be null
				continue
			}
			if v.Slot == nil {
				formJSON := v.Form
				if formJSON == nil {
					formJSON = vf.Form
				}
				if formJSON == nil {
					t.Fatalf("%s: vector %q has no form and the file has none", file, v.Name)
				}
				v.form = new(FormDef)
				if err := json.Unmarshal(formJSON, v.form); err != nil {
					if v.FormError == nil {
						t.Fatalf("%s: vector %q: form: %v", file, v.Name, err)
					}
					v.form, v.decodeErr = nil, err
				}
			}
			out = append(out, v)
		}
	}
	return out
}

func TestVectors_Go(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			switch {
			case v.Answers != nil:
				if err := v.form.Check(); (err != nil) != v.FormUnchecked {
					t.Fatalf("form Check = %v, but form_unchecked = %v", err, v.FormUnchecked)
				}
				var answers map[string]json.RawMessage
				if err := json.Unmarshal(v.Answers, &answers); err != nil {
					t.Fatalf("answers: %v", err)
				}
				want := *v.Errors
				var got []vectorFieldError
				err := v.form.ValidateAnswers(answers)
				var verrs ValidationErrors
				if err != nil && !errors.As(err, &verrs) {
					t.Fatalf("ValidateAnswers = %T %v", err, err)
				}
				for _, fe := range verrs {
					if fe.Code == "" || fe.Reason == "" {
						t.Errorf("field %q: empty code or reason: %+v", fe.Field, fe)
					}
					got = append(got, vectorFieldError{Field: fe.Field, Code: fe.Code})
				}
				if !slices.Equal(got, want) {
					t.Fatalf("got  %v\nwant %v\n(%v)", got, want, err)
				}
			case v.Present != nil:
				var present map[string]int
				if err := json.Unmarshal(v.Present, &present); err != nil {
					t.Fatalf("present: %v", err)
				}
				got := v.form.MissingSlots(present)
				if !slices.Equal(got, *v.Missing) && !(len(got) == 0 && len(*v.Missing) == 0) {
					t.Fatalf("MissingSlots = %v, want %v", got, *v.Missing)
				}
			case v.GPSReason != nil:
				var want FieldCode
				if v.GPSReasonCode != nil {
					want = *v.GPSReasonCode
				}
				if got := CheckGPSReason(*v.GPSReason); got != want {
					t.Fatalf("CheckGPSReason(%d runes) = %q, want %q", len([]rune(*v.GPSReason)), got, want)
				}
				// A visit.create carrying it gets the same verdict.
				m := Mutation{Seq: 1, Kind: KindVisitCreate, Visit: &Visit{ID: NewID(time.Unix(1_800_000_000, 0)), HouseholdID: NewID(time.Unix(1_800_000_000, 0)), FormID: "f", FormVersion: 1,
					DeviceTime: time.Unix(1_800_000_000, 0), GPSReason: *v.GPSReason}}
				if err := m.Check(); (err != nil) != (want != "") || (err != nil && err.Code != CodeValidation) {
					t.Fatalf("visit.create with it: %v", err)
				}
			case v.Slot != nil:
				if got := v.Slot.Accepts(*v.MediaType); got != *v.Accepts {
					t.Fatalf("Accepts(%q) = %v, want %v", *v.MediaType, got, *v.Accepts)
				}
			case v.FormError != nil:
				var want *string
				if err := json.Unmarshal(v.FormError, &want); err != nil {
					t.Fatalf("form_error: %v", err)
				}
				if v.decodeErr != nil || (want != nil && FormCode(*want) == FormCodeDecode) {
					if v.decodeErr == nil || want == nil || FormCode(*want) != FormCodeDecode {
						t.Fatalf("decoding the form: %v, want form_error %v", v.decodeErr, v.FormError)
					}
					return
				}
				err := v.form.Check()
				if want == nil {
					if err != nil {
						t.Fatalf("Check = %v, want valid", err)
					}
					return
				}
				var fe *FormError
				if !errors.As(err, &fe) {
					t.Fatalf("Check = %v, want *FormError %s", err, *want)
				}
				if string(fe.Code) != *want {
					t.Fatalf("Check = code %q (%v), want %q", fe.Code, err, *want)
				}
			}
		})
	}
}

// TestVectors_Coverage holds the vectors to the promise of issue 14: at
// least 60 answer vectors, every field type used, every answer code
// produced by some vector, every bound exercised on both sides.
func TestVectors_Coverage(t *testing.T) {
	vs := loadVectors(t)
	answerVectors := 0
	types := map[FieldType]int{}
	codes := map[FieldCode]int{}
	for _, v := range vs {
		if v.Answers == nil {
			continue
		}
		answerVectors++
		for _, fd := range v.form.Fields {
			types[fd.Type]++
		}
		for _, fe := range *v.Errors {
			codes[fe.Code]++
		}
	}
	if answerVectors < 60 {
		t.Errorf("%d answer vectors, want at least 60", answerVectors)
	}
	for _, ft := range []FieldType{FieldText, FieldInteger, FieldDecimal, FieldDate, FieldSelectOne,
		FieldSelectMany, FieldGeopoint, FieldPhoto, FieldDocument, FieldSignature} {
		if types[ft] == 0 {
			t.Errorf("no vector uses field type %s", ft)
		}
	}
	for _, c := range FieldCodes() {
		if strings.Contains(string(c), "field_name") || c == FieldCodeValueTooLarge || c == FieldCodeNotJSON ||
			c == FieldCodeBadLocation || c == FieldCodeBadMember {
			continue // household codes, not answers
		}
		if codes[c] == 0 {
			t.Errorf("no vector expects code %s", c)
		}
	}
	for c := range codes {
		if !slices.Contains(FieldCodes(), c) {
			t.Errorf("vectors expect unknown code %q", c)
		}
	}
	formCodes := map[FormCode]int{}
	for _, v := range vs {
		if v.FormError != nil && string(v.FormError) != "null" {
			var c FormCode
			if err := json.Unmarshal(v.FormError, &c); err != nil {
				t.Fatalf("%s: form_error: %v", v.Name, err)
			}
			formCodes[c]++
		}
	}
	for _, c := range FormCodes() {
		switch c {
		case FormCodeTooLarge, FormCodeMissing, FormCodeBoundNotFinite:
			continue // no JSON text reaches these through Check alone
		}
		if formCodes[c] == 0 {
			t.Errorf("no vector expects form code %s", c)
		}
	}
	for c := range formCodes {
		if !slices.Contains(FormCodes(), c) {
			t.Errorf("vectors expect unknown form code %q", c)
		}
	}
}

// TestVectors_CodesFile keeps testdata/field_codes.json and form_codes.json
// (read by the app's test to check that every code has a Chinese message)
// equal to FieldCodes and FormCodes.
func TestVectors_CodesFile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "field_codes.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got []FieldCode
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, FieldCodes()) {
		want, _ := json.MarshalIndent(FieldCodes(), "", "  ")
		t.Fatalf("testdata/field_codes.json is stale; want:\n%s", want)
	}
	data, err = os.ReadFile(filepath.Join("testdata", "form_codes.json"))
	if err != nil {
		t.Fatal(err)
	}
	var gotForm []FormCode
	if err := json.Unmarshal(data, &gotForm); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(gotForm, FormCodes()) {
		want, _ := json.MarshalIndent(FormCodes(), "", "  ")
		t.Fatalf("testdata/form_codes.json is stale; want:\n%s", want)
	}
}

func TestCheckHouseholdFields_Codes(t *testing.T) {
	cases := []struct {
		name  string
		field string
		value string
		code  FieldCode
	}{
		{"BadName", "Bad Name", `1`, FieldCodeBadFieldName},
		{"TooLarge", "note", `"` + strings.Repeat("a", MaxFieldValueBytes) + `"`, FieldCodeValueTooLarge},
		{"NotJSON", "note", `{`, FieldCodeNotJSON},
		{"BadLocation", FieldLocation, `{"lon":200,"lat":1}`, FieldCodeBadLocation},
		{"BadMember", MemberPrefix + "01J9ZQ4C3V8W7X6Y5Z4A3B2C1D", `{"name":" "}`, FieldCodeBadMember},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			perr := CheckHouseholdFields(map[string]json.RawMessage{tc.field: json.RawMessage(tc.value)})
			if perr == nil || len(perr.Fields) != 1 || perr.Fields[0].Code != tc.code || perr.Fields[0].Reason == "" {
				t.Fatalf("got %+v, want one field error with code %s", perr, tc.code)
			}
		})
	}
}
