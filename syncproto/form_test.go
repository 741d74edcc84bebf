package syncproto

import (
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
)

func fptr(v float64) *float64 { return &v }

// testForm uses every field type.
func testForm() *FormDef {
	return &FormDef{
		ID:      "test_form",
		Version: 3,
		Title:   "测试表单",
		Fields: []Field{
			{Name: "name", Type: FieldText, Label: "姓名", Required: true, Min: fptr(2), Max: fptr(5)},
			{Name: "note", Type: FieldText, Label: "备注"},
			{Name: "count", Type: FieldInteger, Label: "人数", Required: true, Min: fptr(1), Max: fptr(30)},
			{Name: "big", Type: FieldInteger, Label: "大数"},
			{Name: "income", Type: FieldDecimal, Label: "收入", Min: fptr(0), Max: fptr(1e6)},
			{Name: "when", Type: FieldDate, Label: "日期"},
			{Name: "status", Type: FieldSelectOne, Label: "状态", Required: true, Choices: []Choice{
				{Value: "a", Label: "甲"}, {Value: "b", Label: "乙"}, {Value: "c", Label: "丙"},
			}},
			{Name: "changes", Type: FieldSelectMany, Label: "变动", Max: fptr(2), Choices: []Choice{
				{Value: "x", Label: "子"}, {Value: "y", Label: "丑"}, {Value: "z", Label: "寅"},
			}},
			{Name: "loc", Type: FieldGeopoint, Label: "位置"},
			{Name: "photo", Type: FieldPhoto, Label: "照片"},
			{Name: "doc", Type: FieldDocument, Label: "文件"},
			{Name: "sig", Type: FieldSignature, Label: "签字"},
		},
		Slots: []EvidenceSlot{
			{Name: "before", Label: "改造前", MinCount: 1},
			{Name: "extra", Label: "其他", MinCount: 0, MaxCount: 3, MediaTypes: []string{"image/*", "application/pdf"}},
		},
		MaxAccuracyM: 50,
		Review: []ReviewStep{
			{Name: "village_check", Label: "村审核", Roles: []string{"supervisor"}, Level: "village"},
			{Name: "township_approval", Label: "镇审批", Roles: []string{"supervisor", "admin"}, Level: "township"},
		},
	}
}

const (
	hashA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	hashB = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
)

func baseAnswers() map[string]json.RawMessage {
	return map[string]json.RawMessage{
		"name":   json.RawMessage(`"张三"`),
		"count":  json.RawMessage(`4`),
		"status": json.RawMessage(`"a"`),
	}
}

const absent = "<absent>"

func TestValidateAnswers(t *testing.T) {
	f := testForm()
	if err := f.Check(); err != nil {
		t.Fatalf("fixture: %v", err)
	}
	cases := []struct {
		name   string
		field  string
		raw    string // absent deletes the key
		reason string // "" = valid; otherwise a substring of the one expected reason
	}{
		// text
		{"Text_OK", "name", `"李四"`, ""},
		{"Text_MaxRunes", "name", `"欧阳修文华"`, ""}, // 5 runes, 15 bytes
		{"Text_Escapes", "name", `"ab\u4e2d"`, ""},
		{"Text_TooShort", "name", `"张"`, "length 1 below min 2"},
		{"Text_TooLong", "name", `"abcdef"`, "length 6 above max 5"},
		{"Text_Number", "name", `12`, "not a string"},
		{"Text_Array", "name", `["ab"]`, "not a string"},
		{"Text_Bool", "name", `true`, "not a string"},
		{"Text_BadJSON", "name", `"abc`, "not a string"},
		{"Text_DefaultCap", "note", `"` + strings.Repeat("字", MaxTextRunes+1) + `"`, "longer than"},
		{"Text_DefaultCapOK", "note", `"` + strings.Repeat("字", MaxTextRunes) + `"`, ""},
		{"Text_OptionalEmpty", "note", `""`, ""},
		// integer
		{"Integer_OK", "count", `30`, ""},
		{"Integer_Min", "count", `1`, ""},
		{"Integer_Spaces", "count", " 7 ", ""},
		{"Integer_Negative", "big", `-9007199254740991`, ""},
		{"Integer_Fraction", "count", `1.5`, "not an integer"},
		{"Integer_PointZero", "count", `3.0`, "not an integer"},
		{"Integer_Exponent", "count", `3e0`, "not an integer"},
		{"Integer_String", "count", `"3"`, "not an integer"},
		{"Integer_Below", "count", `0`, "value 0 below min 1"},
		{"Integer_Above", "count", `31`, "value 31 above max 30"},
		{"Integer_Unsafe", "big", `9007199254740992`, "out of range"},
		{"Integer_Overflow", "big", `123456789012345678901234567890`, "out of range"},
		{"Integer_NaN", "count", `NaN`, "not an integer"},
		{"Integer_LeadingZero", "count", `07`, "not an integer"},
		// decimal
		{"Decimal_OK", "income", `1234.5`, ""},
		{"Decimal_Integer", "income", `0`, ""},
		{"Decimal_Exponent", "income", `1e3`, ""},
		{"Decimal_Negative", "income", `-0.01`, "below min 0"},
		{"Decimal_Above", "income", `1000000.5`, "above max"},
		{"Decimal_String", "income", `"12.5"`, "not a number"},
		{"Decimal_NaNString", "income", `"NaN"`, "not a number"},
		{"Decimal_NaN", "income", `NaN`, "not a number"},
		{"Decimal_Infinity", "income", `Infinity`, "not a number"},
		{"Decimal_Overflow", "income", `1e400`, "not a finite number"},
		{"Decimal_Hex", "income", `0x10`, "not a number"},
		// date
		{"Date_OK", "when", `"2024-11-30"`, ""},
		{"Date_Leap", "when", `"2024-02-29"`, ""},
		{"Date_NotLeap", "when", `"2023-02-29"`, "not a date"},
		{"Date_Month13", "when", `"2024-13-01"`, "not a date"},
		{"Date_Short", "when", `"2024-2-9"`, "not a date"},
		{"Date_Time", "when", `"2024-11-30T10:00:00Z"`, "not a date"},
		{"Date_Slashes", "when", `"2024/11/30"`, "not a date"},
		{"Date_Number", "when", `20241130`, "not a string"},
		// select_one
		{"SelectOne_OK", "status", `"b"`, ""},
		{"SelectOne_Last", "status", `"c"`, ""},
		{"SelectOne_Unknown", "status", `"d"`, `"d" is not a choice`},
		{"SelectOne_Label", "status", `"甲"`, "is not a choice"},
		{"SelectOne_Case", "status", `"A"`, "is not a choice"},
		{"SelectOne_Array", "status", `["a"]`, "not a string"},
		{"SelectOne_Empty", "status", `""`, "is not a choice"},
		// select_many
		{"SelectMany_OK", "changes", `["x","z"]`, ""},
		{"SelectMany_Empty", "changes", `[]`, ""},
		{"SelectMany_One", "changes", ` [ "y" ] `, ""},
		{"SelectMany_Duplicate", "changes", `["x","x"]`, `"x" chosen twice`},
		{"SelectMany_Unknown", "changes", `["x","w"]`, `"w" is not a choice`},
		{"SelectMany_TooMany", "changes", `["x","y","z"]`, "count 3 above max 2"},
		{"SelectMany_String", "changes", `"x"`, "not an array"},
		{"SelectMany_Numbers", "changes", `[1,2]`, "not an array"},
		{"SelectMany_NullItem", "changes", `[null]`, "is not a choice"},
		{"SelectMany_Object", "changes", `{"x":true}`, "not an array"},
		// geopoint
		{"Geopoint_OK", "loc", `{"lon":103.7,"lat":25.01,"acc":8.5}`, ""},
		{"Geopoint_NoAcc", "loc", `{"lat":-90,"lon":180}`, ""},
		{"Geopoint_NullAccAlt", "loc", `{"lon":0,"lat":0,"acc":null,"alt":1820}`, ""},
		{"Geopoint_LonRange", "loc", `{"lon":180.0001,"lat":25}`, "lon outside"},
		{"Geopoint_LatRange", "loc", `{"lon":103,"lat":-90.5}`, "lat outside"},
		{"Geopoint_NegAcc", "loc", `{"lon":103,"lat":25,"acc":-1}`, "acc is negative"},
		{"Geopoint_MissingLat", "loc", `{"lon":103}`, "missing lat"},
		{"Geopoint_StringLon", "loc", `{"lon":"103","lat":25}`, "lon not a number"},
		{"Geopoint_InfAcc", "loc", `{"lon":103,"lat":25,"acc":1e999}`, "acc not a finite number"},
		{"Geopoint_UnknownKey", "loc", `{"lon":103,"lat":25,"x":1}`, `unknown key "x"`},
		{"Geopoint_Array", "loc", `[103,25]`, "not an object"},
		{"Geopoint_NaNString", "loc", `{"lon":"NaN","lat":25}`, "lon not a number"},
		// photo, document, signature
		{"Photo_OK", "photo", `"` + hashA + `"`, ""},
		{"Photo_OK2", "photo", `"` + hashB + `"`, ""},
		{"Photo_Upper", "photo", `"` + strings.ToUpper(hashA) + `"`, "not a lowercase hex SHA-256"},
		{"Photo_Short", "photo", `"` + hashA[:63] + `"`, "not a lowercase hex SHA-256"},
		{"Photo_NotHex", "photo", `"` + strings.Repeat("g", 64) + `"`, "not a lowercase hex SHA-256"},
		{"Photo_Object", "photo", `{"sha256":"` + hashA + `"}`, "not a string"},
		{"Document_OK", "doc", `"` + hashB + `"`, ""},
		{"Document_OK2", "doc", `"` + strings.Repeat("0", 64) + `"`, ""},
		{"Document_Prefixed", "doc", `"sha256:` + hashA[:57] + `"`, "not a lowercase hex SHA-256"},
		{"Document_Long", "doc", `"` + hashA + `0"`, "not a lowercase hex SHA-256"},
		{"Document_Number", "doc", `1`, "not a string"},
		{"Signature_OK", "sig", `"` + hashA + `"`, ""},
		{"Signature_OK2", "sig", `"` + strings.Repeat("f", 64) + `"`, ""},
		{"Signature_Empty", "sig", `""`, "not a lowercase hex SHA-256"},
		{"Signature_Spaces", "sig", `" ` + hashA[1:] + `"`, "not a lowercase hex SHA-256"},
		{"Signature_Bool", "sig", `false`, "not a string"},
		// required, optional, null, unknown
		{"Required_Absent", "name", absent, "required"},
		{"Required_Null", "count", `null`, "required"},
		{"Required_NullSpaces", "status", ` null `, "required"},
		{"Required_Empty", "status", ``, "required"},
		{"Optional_Absent", "loc", absent, ""},
		{"Optional_Null", "loc", `null`, ""},
		{"Optional_NullSelectMany", "changes", `null`, ""},
		{"Unknown_Field", "nmae", `"x"`, "unknown field"},
		{"Unknown_Null", "extra", `null`, "unknown field"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			answers := baseAnswers()
			if tc.raw == absent {
				delete(answers, tc.field)
			} else {
				answers[tc.field] = json.RawMessage(tc.raw)
			}
			err := f.ValidateAnswers(answers)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			var verrs ValidationErrors
			if !errors.As(err, &verrs) {
				t.Fatalf("want ValidationErrors, got %T %v", err, err)
			}
			if len(verrs) != 1 || verrs[0].Field != tc.field || !strings.Contains(verrs[0].Reason, tc.reason) {
				t.Fatalf("want one error on %q containing %q, got %v", tc.field, tc.reason, err)
			}
		})
	}
}

func TestValidateAnswers_AllErrorsSorted(t *testing.T) {
	f := testForm()
	answers := map[string]json.RawMessage{
		"zzz":     json.RawMessage(`1`),
		"when":    json.RawMessage(`"2024-02-30"`),
		"count":   json.RawMessage(`1.5`),
		"aaa":     json.RawMessage(`null`),
		"changes": json.RawMessage(`["x","x"]`),
		// name and status missing
	}
	want := ValidationErrors{
		{Field: "aaa", Code: FieldCodeUnknownField, Reason: "unknown field"},
		{Field: "changes", Code: FieldCodeChosenTwice, Reason: `"x" chosen twice`},
		{Field: "count", Code: FieldCodeNotInteger, Reason: "not an integer"},
		{Field: "name", Code: FieldCodeRequired, Reason: "required"},
		{Field: "status", Code: FieldCodeRequired, Reason: "required"},
		{Field: "when", Code: FieldCodeNotDate, Reason: "not a date YYYY-MM-DD"},
		{Field: "zzz", Code: FieldCodeUnknownField, Reason: "unknown field"},
	}
	err := f.ValidateAnswers(answers)
	var got ValidationErrors
	if !errors.As(err, &got) {
		t.Fatalf("want ValidationErrors, got %T %v", err, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
	wantMsg := `answers: field aaa: unknown field; field changes: "x" chosen twice; field count: not an integer; ` +
		`field name: required; field status: required; field when: not a date YYYY-MM-DD; field zzz: unknown field`
	if err.Error() != wantMsg {
		t.Fatalf("message\n got %s\nwant %s", err.Error(), wantMsg)
	}
	// Map iteration order is random; the result must not be.
	for range 50 {
		again := f.ValidateAnswers(answers)
		if again.Error() != wantMsg {
			t.Fatalf("non-deterministic: %v", again)
		}
	}
	// Errors encode for the wire as field/reason/code triples.
	b, _ := json.Marshal(got[:1])
	if string(b) != `[{"field":"aaa","reason":"unknown field","code":"unknown_field"}]` {
		t.Fatalf("json: %s", b)
	}
}

func TestValidateAnswers_NilAndEmpty(t *testing.T) {
	f := &FormDef{ID: "x", Title: "x", Fields: []Field{{Name: "a", Type: FieldText, Label: "a"}}}
	if err := f.ValidateAnswers(nil); err != nil {
		t.Fatalf("nil answers to an all-optional form: %v", err)
	}
	if err := testForm().ValidateAnswers(map[string]json.RawMessage{}); err == nil {
		t.Fatal("empty answers to a form with required fields passed")
	}
	// A nil ValidationErrors must never reach callers as a non-nil error.
	if err := testForm().ValidateAnswers(baseAnswers()); err != nil {
		t.Fatalf("base answers: %v", err)
	}
}

func TestFormDefCheck(t *testing.T) {
	if err := testForm().Check(); err != nil {
		t.Fatalf("good form: %v", err)
	}
	draft := testForm()
	draft.Version = 0
	if err := draft.Check(); err != nil {
		t.Fatalf("draft (version 0) form: %v", err)
	}
	cases := []struct {
		name   string
		mutate func(f *FormDef)
		reason string
	}{
		{"IDEmpty", func(f *FormDef) { f.ID = "" }, "id"},
		{"IDUpper", func(f *FormDef) { f.ID = "Household" }, "id"},
		{"IDDash", func(f *FormDef) { f.ID = "house-hold" }, "id"},
		{"IDTooLong", func(f *FormDef) { f.ID = strings.Repeat("a", 65) }, "id"},
		{"IDChinese", func(f *FormDef) { f.ID = "入户" }, "id"},
		{"VersionNegative", func(f *FormDef) { f.Version = -1 }, "version"},
		{"TitleEmpty", func(f *FormDef) { f.Title = "  " }, "title"},
		{"NothingToRecord", func(f *FormDef) { f.Fields, f.Slots = nil, nil }, "no fields"},
		{"AccuracyNegative", func(f *FormDef) { f.MaxAccuracyM = -1 }, "max_accuracy_m"},
		{"AccuracyNaN", func(f *FormDef) { f.MaxAccuracyM = math.NaN() }, "max_accuracy_m"},
		{"FieldNameEmpty", func(f *FormDef) { f.Fields[0].Name = "" }, "name"},
		{"FieldNameDigit", func(f *FormDef) { f.Fields[0].Name = "1st" }, "name"},
		{"FieldNameUpper", func(f *FormDef) { f.Fields[0].Name = "Name" }, "name"},
		{"FieldNameDot", func(f *FormDef) { f.Fields[0].Name = "member.x" }, "name"},
		{"FieldNameTooLong", func(f *FormDef) { f.Fields[0].Name = "a" + strings.Repeat("b", 64) }, "name"},
		{"FieldNameDuplicate", func(f *FormDef) { f.Fields[1].Name = "name" }, "duplicate"},
		{"FieldTypeUnknown", func(f *FormDef) { f.Fields[0].Type = "email" }, "unknown type"},
		{"FieldTypeEmpty", func(f *FormDef) { f.Fields[0].Type = "" }, "unknown type"},
		{"FieldLabelEmpty", func(f *FormDef) { f.Fields[0].Label = "" }, "label"},
		{"SelectNoChoices", func(f *FormDef) { f.Fields[6].Choices = nil }, "at least one choice"},
		{"SelectManyNoChoices", func(f *FormDef) { f.Fields[7].Choices = []Choice{} }, "at least one choice"},
		{"ChoiceDuplicate", func(f *FormDef) { f.Fields[6].Choices[1].Value = "a" }, "duplicate choice"},
		{"ChoiceEmptyValue", func(f *FormDef) { f.Fields[6].Choices[0].Value = "" }, "choice value"},
		{"ChoiceEmptyLabel", func(f *FormDef) { f.Fields[6].Choices[0].Label = "" }, "empty label"},
		{"ChoicesOnText", func(f *FormDef) { f.Fields[0].Choices = []Choice{{Value: "a", Label: "a"}} }, "only allowed on select"},
		{"MinAboveMax", func(f *FormDef) { f.Fields[2].Min, f.Fields[2].Max = fptr(10), fptr(5) }, "min 10 > max 5"},
		{"MinNaN", func(f *FormDef) { f.Fields[4].Min = fptr(math.NaN()) }, "finite"},
		{"MaxInf", func(f *FormDef) { f.Fields[4].Max = fptr(math.Inf(1)) }, "finite"},
		{"TextMinNegative", func(f *FormDef) { f.Fields[0].Min = fptr(-1) }, "whole numbers"},
		{"TextMaxFraction", func(f *FormDef) { f.Fields[0].Max = fptr(2.5) }, "whole numbers"},
		{"BoundsOnDate", func(f *FormDef) { f.Fields[5].Min = fptr(1) }, "do not apply"},
		{"BoundsOnSelectOne", func(f *FormDef) { f.Fields[6].Max = fptr(1) }, "do not apply"},
		{"BoundsOnPhoto", func(f *FormDef) { f.Fields[9].Max = fptr(1) }, "do not apply"},
		{"SlotNameBad", func(f *FormDef) { f.Slots[0].Name = "Before" }, "slot"},
		{"SlotNameDuplicate", func(f *FormDef) { f.Slots[1].Name = "before" }, "duplicate"},
		{"SlotLabelEmpty", func(f *FormDef) { f.Slots[0].Label = "" }, "label"},
		{"SlotMinNegative", func(f *FormDef) { f.Slots[0].MinCount = -1 }, "min_count"},
		{"SlotMaxBelowMin", func(f *FormDef) { f.Slots[1].MinCount, f.Slots[1].MaxCount = 4, 3 }, "max_count"},
		{"SlotMaxNegative", func(f *FormDef) { f.Slots[1].MaxCount = -2 }, "max_count"},
		{"SlotMediaType", func(f *FormDef) { f.Slots[1].MediaTypes = []string{"jpeg"} }, "media type"},
		{"ReviewNameBad", func(f *FormDef) { f.Review[0].Name = "" }, "review step"},
		{"ReviewNameDuplicate", func(f *FormDef) { f.Review[1].Name = "village_check" }, "duplicate"},
		{"ReviewLabelEmpty", func(f *FormDef) { f.Review[0].Label = "" }, "label"},
		{"ReviewNoRoles", func(f *FormDef) { f.Review[0].Roles = nil }, "no roles"},
		{"ReviewUnknownRole", func(f *FormDef) { f.Review[0].Roles = []string{"mayor"} }, `unknown role "mayor"`},
		{"ReviewUnknownLevel", func(f *FormDef) { f.Review[0].Level = "province" }, `unknown level "province"`},
		{"ReviewLevelEmpty", func(f *FormDef) { f.Review[0].Level = "" }, "unknown level"},
		{"ReviewGoesDown", func(f *FormDef) { f.Review[0].Level, f.Review[1].Level = "county", "village" }, "after a higher level"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := testForm()
			tc.mutate(f)
			err := f.Check()
			var fe *FormError
			if !errors.As(err, &fe) {
				t.Fatalf("want *FormError, got %T %v", err, err)
			}
			if !strings.Contains(fe.Reason, tc.reason) {
				t.Fatalf("reason %q does not contain %q", fe.Reason, tc.reason)
			}
			// The same definition must also fail to parse.
			b, err := json.Marshal(f)
			if err != nil {
				return // NaN/Inf cannot be encoded; Check alone covers them
			}
			if _, err := ParseFormDef(b); err == nil {
				t.Fatalf("ParseFormDef accepted %s", b)
			}
		})
	}
	var nilForm *FormDef
	if err := nilForm.Check(); err == nil {
		t.Fatal("nil form passed Check")
	}
}

func TestParseFormDef(t *testing.T) {
	good := `{"id":"visit","title":"走访","fields":[{"name":"a","type":"text","label":"甲","future_key":1}],"future":{"x":1}}`
	f, err := ParseFormDef([]byte(good))
	if err != nil {
		t.Fatalf("unknown keys must be ignored: %v", err)
	}
	if f.ID != "visit" || len(f.Fields) != 1 || f.Fields[0].Label != "甲" {
		t.Fatalf("decoded %+v", f)
	}
	bad := []string{
		``,
		`null`,
		`[]`,
		`{"id":"visit","title":"走访","fields":[{"name":"a","type":"text","label":"甲"}]} x`,
		`{"id":1}`,
		`{"id":"visit","title":"走访","fields":[{"name":"a","type":"text","label":"甲","min":"1"}]}`,
		`{"id":"visit","title":"走访","fields":[{"name":"a","type":"text","label":"甲"}],"version":1.5}`,
	}
	for _, in := range bad {
		var fe *FormError
		if _, err := ParseFormDef([]byte(in)); !errors.As(err, &fe) {
			t.Errorf("ParseFormDef(%q) = %v, want *FormError", in, err)
		}
	}
	huge := []byte(`{"id":"visit","title":"` + strings.Repeat("长", MaxFormDefSize/3+1) + `","fields":[{"name":"a","type":"text","label":"甲"}]}`)
	if _, err := ParseFormDef(huge); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversized definition: %v", err)
	}
}

func TestFormDefHelpers(t *testing.T) {
	f := testForm()
	if s, ok := f.Slot("extra"); !ok || s.MaxCount != 3 {
		t.Fatalf("Slot(extra) = %+v %v", s, ok)
	}
	if _, ok := f.Slot("nope"); ok {
		t.Fatal("Slot(nope) found")
	}
	if fd, ok := f.Field("count"); !ok || fd.Type != FieldInteger {
		t.Fatalf("Field(count) = %+v %v", fd, ok)
	}
	if got := f.MissingSlots(nil); !slices.Equal(got, []string{"before"}) {
		t.Fatalf("MissingSlots(nil) = %v", got)
	}
	if got := f.MissingSlots(map[string]int{"before": 2}); len(got) != 0 {
		t.Fatalf("MissingSlots(before=2) = %v", got)
	}
	s, _ := f.Slot("extra")
	for mt, want := range map[string]bool{
		"image/jpeg": true, "IMAGE/PNG": true, "application/pdf; q=1": true,
		"application/zip": false, "imagejpeg": false, "": false,
	} {
		if got := s.Accepts(mt); got != want {
			t.Errorf("Accepts(%q) = %v, want %v", mt, got, want)
		}
	}
	if !(EvidenceSlot{}).Accepts("anything/at-all") {
		t.Error("slot without media types must accept any")
	}
	for _, ty := range []FieldType{FieldPhoto, FieldDocument, FieldSignature} {
		if !ty.IsEvidence() {
			t.Errorf("%s should be evidence", ty)
		}
	}
	if FieldText.IsEvidence() || FieldType("x").Known() {
		t.Error("IsEvidence/Known wrong")
	}
}

func hasHan(s string) bool {
	for _, r := range s {
		if unicode.Is(unicode.Han, r) {
			return true
		}
	}
	return false
}

// pinyinAnnotation matches a reading in parentheses glued to a Han
// character, e.g. a "(hui)" with a tone mark after the character for
// "meeting", as left by converters in some of the source texts. Labels
// must not carry them.
var pinyinAnnotation = regexp.MustCompile(`\p{Han}\([a-z\x{e0}-\x{1dc}]{1,7}\)`)

func TestTemplates_NoPinyinAnnotations(t *testing.T) {
	paths, err := fs.Glob(formTemplateFS, "templates/*.json")
	if err != nil || len(paths) == 0 {
		t.Fatalf("glob: %v %v", paths, err)
	}
	for _, p := range paths {
		b, _ := formTemplateFS.ReadFile(p)
		if m := pinyinAnnotation.FindAll(b, 3); m != nil {
			t.Errorf("%s: pinyin annotations in labels: %q", p, m)
		}
	}
	if !pinyinAnnotation.MatchString("\u6703(hu\u00ec)") {
		t.Fatal("pattern does not match an annotation")
	}
}

// templateAnswers are plausible complete answers for each shipped template.
var templateAnswers = map[string]map[string]json.RawMessage{
	"household_survey": {
		"head_name":         json.RawMessage(`"杨正华"`),
		"members_count":     json.RawMessage(`5`),
		"poverty_status":    json.RawMessage(`"registered_poor"`),
		"dibao_class":       json.RawMessage(`"B"`),
		"wubao":             json.RawMessage(`"no"`),
		"pension":           json.RawMessage(`"yes"`),
		"medical_insurance": json.RawMessage(`"yes"`),
		"income_per_capita": json.RawMessage(`4210.5`),
		"id_card_no":        json.RawMessage(`"53012119650312401X"`),
		"member_changes":    json.RawMessage(`["birth","army"]`),
		"notes":             json.RawMessage(`"长子外出务工"`),
	},
	"house_retrofit_inspection": {
		"head_name":         json.RawMessage(`"马国富"`),
		"house_grade":       json.RawMessage(`"D"`),
		"retrofit_method":   json.RawMessage(`"rebuild"`),
		"retrofit_finished": json.RawMessage(`"yes"`),
		"inspection_round":  json.RawMessage(`"first"`),
		"inspection_result": json.RawMessage(`"fail"`),
		"failure_reason":    json.RawMessage(`"圈梁未封闭"`),
		"rework_due":        json.RawMessage(`"2024-11-30"`),
		"plaque_installed":  json.RawMessage(`"no"`),
		"inspection_date":   json.RawMessage(`"2024-10-08"`),
		"house_location":    json.RawMessage(`{"lon":103.71,"lat":25.02,"acc":6}`),
	},
	"water_cellar_progress": {
		"site_name":   json.RawMessage(`"塘子3号水窖"`),
		"capacity_m3": json.RawMessage(`24`),
		"stage":       json.RawMessage(`"excavated"`),
		"due_date":    json.RawMessage(`"2024-11-30"`),
	},
	"dropout_followup": {
		"student_name":       json.RawMessage(`"李小梅"`),
		"age":                json.RawMessage(`15`),
		"school":             json.RawMessage(`"示范县第二中学"`),
		"current_location":   json.RawMessage(`"migrant_work"`),
		"persuasion_outcome": json.RawMessage(`"promised"`),
		"visit_method":       json.RawMessage(`"in_person"`),
	},
}

func TestTemplates(t *testing.T) {
	ts := Templates()
	ids := make([]string, len(ts))
	for i, f := range ts {
		ids[i] = f.ID
	}
	wantIDs := []string{"dropout_followup", "house_retrofit_inspection", "household_survey", "water_cellar_progress"}
	if !slices.Equal(ids, wantIDs) {
		t.Fatalf("template ids %v, want %v", ids, wantIDs)
	}
	for _, f := range ts {
		t.Run(f.ID, func(t *testing.T) {
			if f.Version != 1 {
				t.Errorf("version %d", f.Version)
			}
			if err := f.Check(); err != nil {
				t.Fatal(err)
			}
			if !hasHan(f.Title) || f.TitleEn == "" {
				t.Errorf("title %q / %q", f.Title, f.TitleEn)
			}
			if f.MaxAccuracyM <= 0 {
				t.Errorf("max_accuracy_m %v", f.MaxAccuracyM)
			}
			for _, fd := range f.Fields {
				if !hasHan(fd.Label) || fd.LabelEn == "" {
					t.Errorf("field %s: label %q / %q", fd.Name, fd.Label, fd.LabelEn)
				}
				for _, c := range fd.Choices {
					if c.Label == "" || c.LabelEn == "" {
						t.Errorf("field %s choice %s: label %q / %q", fd.Name, c.Value, c.Label, c.LabelEn)
					}
				}
			}
			for _, s := range f.Slots {
				if !hasHan(s.Label) || s.LabelEn == "" {
					t.Errorf("slot %s: label %q / %q", s.Name, s.Label, s.LabelEn)
				}
			}
			for _, r := range f.Review {
				if !hasHan(r.Label) {
					t.Errorf("review %s: label %q", r.Name, r.Label)
				}
			}
			// Round trip through JSON keeps everything, Chinese included.
			b, err := json.Marshal(f)
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParseFormDef(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*back, f) {
				t.Fatalf("round trip changed the form:\n%s", b)
			}
			if !strings.Contains(string(b), f.Title) {
				t.Fatalf("title not kept verbatim in %s", b)
			}
			answers, ok := templateAnswers[f.ID]
			if !ok {
				t.Fatal("no sample answers")
			}
			if err := f.ValidateAnswers(answers); err != nil {
				t.Fatalf("sample answers: %v", err)
			}
			if err := f.ValidateAnswers(nil); err == nil {
				t.Fatal("template without required fields?")
			}
			if missing := f.MissingSlots(nil); len(missing) == 0 {
				t.Fatal("template without required evidence?")
			}
		})
	}

	retrofit, ok := Template("house_retrofit_inspection")
	if !ok {
		t.Fatal("Template(house_retrofit_inspection) not found")
	}
	for _, name := range []string{"before", "after", "certificate"} {
		s, ok := retrofit.Slot(name)
		if !ok || s.MinCount < 1 {
			t.Errorf("retrofit slot %s = %+v %v, want MinCount >= 1", name, s, ok)
		}
	}
	if got := retrofit.MissingSlots(map[string]int{"before": 1, "after": 2}); !slices.Equal(got, []string{"certificate"}) {
		t.Errorf("retrofit MissingSlots = %v", got)
	}
	if len(retrofit.Review) != 2 || retrofit.Review[0].Level != "township" || retrofit.Review[1].Level != "county" {
		t.Errorf("retrofit review %+v", retrofit.Review)
	}
	hs, _ := Template("household_survey")
	ps, _ := hs.Field("poverty_status")
	if !ps.HasChoice("registered_poor") || ps.Choices[0].Label != "建档立卡户" {
		t.Errorf("poverty_status choices %+v", ps.Choices)
	}
	if hs.MaxAccuracyM != 50 {
		t.Errorf("household_survey max accuracy %v", hs.MaxAccuracyM)
	}

	// Callers get copies.
	ts[0].Fields[0].Label = "changed"
	if Templates()[0].Fields[0].Label == "changed" {
		t.Fatal("Templates shares state between calls")
	}
}

func templateSeeds(f interface{ Add(args ...any) }) {
	paths, _ := fs.Glob(formTemplateFS, "templates/*.json")
	for _, p := range paths {
		b, _ := formTemplateFS.ReadFile(p)
		f.Add(b)
	}
}

func FuzzParseFormDef(f *testing.F) {
	templateSeeds(f)
	f.Add([]byte(`{"id":"a","title":"t","fields":[{"name":"a","type":"select_one","label":"l","choices":[{"value":"v","label":"l"}]}]}`))
	f.Add([]byte(`{"id":"a","title":"t","slots":[{"name":"s","label":"l","min_count":2,"max_count":1}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fd, err := ParseFormDef(data)
		if err != nil {
			var fe *FormError
			if !errors.As(err, &fe) {
				t.Fatalf("error %T is not *FormError", err)
			}
			if !slices.Contains(FormCodes(), fe.Code) {
				t.Fatalf("FormError %q has code %q, not one of FormCodes", fe.Reason, fe.Code)
			}
			return
		}
		// A parsed definition re-encodes to one that parses the same.
		b, err := json.Marshal(fd)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseFormDef(b)
		if err != nil {
			t.Fatalf("re-parse: %v\n%s", err, b)
		}
		b2, err := json.Marshal(again)
		if err != nil || string(b2) != string(b) {
			t.Fatalf("round trip differs:\n%s\n%s", b, b2)
		}
		_ = fd.ValidateAnswers(nil)
		_ = fd.MissingSlots(nil)
	})
}

func FuzzValidateAnswers(f *testing.F) {
	forms := append(Templates(), *testForm())
	for i, ff := range forms {
		if a, ok := templateAnswers[ff.ID]; ok {
			b, _ := json.Marshal(a)
			f.Add(uint8(i), b)
		}
	}
	b, _ := json.Marshal(baseAnswers())
	f.Add(uint8(len(forms)-1), b)
	f.Add(uint8(len(forms)-1), []byte(`{"loc":{"lon":1e999,"lat":"x"},"changes":[null,1],"when":"2024-02-30","count":-0}`))
	f.Add(uint8(0), []byte(`{"age":6.0,"student_name":"\ud800","unknown":null}`))
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		var answers map[string]json.RawMessage
		if json.Unmarshal(data, &answers) != nil {
			return
		}
		form := forms[int(which)%len(forms)]
		err := form.ValidateAnswers(answers)
		if err == nil {
			return
		}
		verrs, ok := err.(ValidationErrors)
		if !ok || len(verrs) == 0 {
			t.Fatalf("error %T %v", err, err)
		}
		if !slices.IsSortedFunc(verrs, func(a, b FieldError) int { return strings.Compare(a.Field, b.Field) }) {
			t.Fatalf("not sorted: %v", verrs)
		}
		for _, fe := range verrs {
			if fe.Reason == "" || !slices.Contains(FieldCodes(), fe.Code) {
				t.Fatalf("field %q: reason %q, code %q not one of FieldCodes", fe.Field, fe.Reason, fe.Code)
			}
		}
		if again := form.ValidateAnswers(answers); again.Error() != err.Error() {
			t.Fatalf("not deterministic: %v vs %v", err, again)
		}
	})
}
