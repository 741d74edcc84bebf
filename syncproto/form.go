package syncproto

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// FieldType is the type of one form field; it fixes how the field's answer
// is encoded (see FormDef.ValidateAnswers).
type FieldType string

// The field types a form may use.
const (
	FieldText       FieldType = "text"
	FieldInteger    FieldType = "integer"
	FieldDecimal    FieldType = "decimal"
	FieldDate       FieldType = "date"
	FieldSelectOne  FieldType = "select_one"
	FieldSelectMany FieldType = "select_many"
	FieldGeopoint   FieldType = "geopoint"
	FieldPhoto      FieldType = "photo"
	FieldDocument   FieldType = "document"
	FieldSignature  FieldType = "signature"
)

// Known reports whether t is one of the field types above.
func (t FieldType) Known() bool {
	switch t {
	case FieldText, FieldInteger, FieldDecimal, FieldDate, FieldSelectOne,
		FieldSelectMany, FieldGeopoint, FieldPhoto, FieldDocument, FieldSignature:
		return true
	}
	return false
}

// IsEvidence reports whether answers of type t reference an evidence blob
// by its SHA-256 (photo, document, signature).
func (t FieldType) IsEvidence() bool {
	return t == FieldPhoto || t == FieldDocument || t == FieldSignature
}

// Limits on form definitions and answers.
const (
	// MaxFormDefSize is the largest encoded form definition ParseFormDef
	// accepts.
	MaxFormDefSize = 1 << 20
	// MaxTextRunes caps a text answer when its field sets no Max.
	MaxTextRunes = 10000
	// MaxSafeInteger is the largest magnitude an integer answer may have
	// (2^53-1), so that every client can hold it in a float64 exactly.
	MaxSafeInteger = 1<<53 - 1
)

// Review roles and levels a ReviewStep may name.
var (
	formReviewRoles  = []string{"admin", "supervisor", "field_worker"}
	formReviewLevels = []string{"village", "township", "county"} // up the tree
)

// Choice is one option of a select_one or select_many field.
type Choice struct {
	Value   string `json:"value"`
	Label   string `json:"label"`
	LabelEn string `json:"label_en,omitempty"`
}

// Field is one question of a form.
type Field struct {
	Name     string    `json:"name"`
	Type     FieldType `json:"type"`
	Label    string    `json:"label"`
	LabelEn  string    `json:"label_en,omitempty"`
	Required bool      `json:"required,omitempty"`
	// Min and Max bound the answer, both inclusive: the value for integer
	// and decimal, the length in characters (Unicode code points) for
	// text, the number of chosen values for select_many. Other types
	// take no bounds.
	Min     *float64 `json:"min,omitempty"`
	Max     *float64 `json:"max,omitempty"`
	Choices []Choice `json:"choices,omitempty"`
}

// HasChoice reports whether v is the value of one of the field's choices.
func (fd Field) HasChoice(v string) bool {
	for _, c := range fd.Choices {
		if c.Value == v {
			return true
		}
	}
	return false
}

// EvidenceSlot is a named place for evidence on a visit, e.g. "before" and
// "after" photos of a retrofit. A visit's evidence is complete when every
// slot holds at least MinCount present blobs.
type EvidenceSlot struct {
	Name     string `json:"name"`
	Label    string `json:"label"`
	LabelEn  string `json:"label_en,omitempty"`
	MinCount int    `json:"min_count"`
	MaxCount int    `json:"max_count,omitempty"` // 0 = no limit
	// MediaTypes lists accepted media types ("image/jpeg"); a type may end
	// in "/*" ("image/*"). Empty accepts any.
	MediaTypes []string `json:"media_types,omitempty"`
}

// Accepts reports whether the slot accepts blobs of the given media type.
// Parameters (";charset=...") and case are ignored.
func (s EvidenceSlot) Accepts(mediaType string) bool {
	if len(s.MediaTypes) == 0 {
		return true
	}
	mt, _, _ := strings.Cut(mediaType, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	for _, want := range s.MediaTypes {
		want = strings.ToLower(want)
		if want == mt {
			return true
		}
		if prefix, ok := strings.CutSuffix(want, "*"); ok && strings.HasSuffix(prefix, "/") && strings.HasPrefix(mt, prefix) {
			return true
		}
	}
	return false
}

// ReviewStep is one layer of review, e.g. village check then township approval.
type ReviewStep struct {
	Name  string   `json:"name"`
	Label string   `json:"label"`
	Roles []string `json:"roles"`
	Level string   `json:"level"` // "village", "township" or "county"
}

// FormDef is a versioned definition of what a visit records.
type FormDef struct {
	ID           string         `json:"id"`      // stable key, [a-z0-9_]{1,64}
	Version      int            `json:"version"` // >=1, assigned by the server at publish; 0 = draft
	Title        string         `json:"title"`
	TitleEn      string         `json:"title_en,omitempty"`
	Fields       []Field        `json:"fields"`
	Slots        []EvidenceSlot `json:"slots,omitempty"`
	MaxAccuracyM float64        `json:"max_accuracy_m,omitempty"` // GPS accuracy threshold; 0 = none
	// Review lists the review steps in order; levels never go down the
	// tree (village, then township, then county).
	Review []ReviewStep `json:"review,omitempty"`
}

// FormError says why a form definition is unusable: Code stably, Reason
// in English for logs and developers.
type FormError struct {
	Code   FormCode
	Reason string
}

// FormCode says, stably, what is wrong with a form definition. The field
// app's formcheck.js checkForm gives the same codes (shared vectors in
// testdata/vectors/formdef.json).
type FormCode string

// The form definition codes of ParseFormDef and FormDef.Check.
const (
	FormCodeTooLarge          FormCode = "too_large"
	FormCodeDecode            FormCode = "decode" // not JSON, or a key of the wrong JSON type
	FormCodeMissing           FormCode = "missing"
	FormCodeBadID             FormCode = "bad_id"
	FormCodeBadVersion        FormCode = "bad_version"
	FormCodeEmptyTitle        FormCode = "empty_title"
	FormCodeEmpty             FormCode = "no_fields_or_slots"
	FormCodeBadAccuracy       FormCode = "bad_max_accuracy"
	FormCodeBadFieldName      FormCode = "bad_field_name"
	FormCodeDuplicateField    FormCode = "duplicate_field"
	FormCodeUnknownFieldType  FormCode = "unknown_field_type"
	FormCodeEmptyFieldLabel   FormCode = "empty_field_label"
	FormCodeNoChoices         FormCode = "no_choices"
	FormCodeBadChoiceValue    FormCode = "bad_choice_value"
	FormCodeDuplicateChoice   FormCode = "duplicate_choice_value"
	FormCodeEmptyChoiceLabel  FormCode = "empty_choice_label"
	FormCodeChoicesNotAllowed FormCode = "choices_not_allowed"
	FormCodeBoundsNotAllowed  FormCode = "bounds_not_allowed"
	FormCodeBoundNotFinite    FormCode = "bound_not_finite"
	FormCodeBadCountBound     FormCode = "bad_count_bound"
	FormCodeMinAboveMax       FormCode = "min_above_max"
	FormCodeBadSlotName       FormCode = "bad_slot_name"
	FormCodeDuplicateSlot     FormCode = "duplicate_slot"
	FormCodeEmptySlotLabel    FormCode = "empty_slot_label"
	FormCodeBadSlotCount      FormCode = "bad_slot_count"
	FormCodeBadMediaType      FormCode = "bad_media_type"
	FormCodeBadStepName       FormCode = "bad_step_name"
	FormCodeDuplicateStep     FormCode = "duplicate_step"
	FormCodeEmptyStepLabel    FormCode = "empty_step_label"
	FormCodeNoRoles           FormCode = "no_roles"
	FormCodeUnknownRole       FormCode = "unknown_role"
	FormCodeUnknownLevel      FormCode = "unknown_level"
	FormCodeLevelOrder        FormCode = "level_order"
)

// FormCodes lists every FormCode, in the order above.
func FormCodes() []FormCode {
	return []FormCode{
		FormCodeTooLarge, FormCodeDecode, FormCodeMissing, FormCodeBadID, FormCodeBadVersion, FormCodeEmptyTitle, FormCodeEmpty, FormCodeBadAccuracy, FormCodeBadFieldName, FormCodeDuplicateField, FormCodeUnknownFieldType, FormCodeEmptyFieldLabel, FormCodeNoChoices, FormCodeBadChoiceValue, FormCodeDuplicateChoice, FormCodeEmptyChoiceLabel, FormCodeChoicesNotAllowed, FormCodeBoundsNotAllowed, FormCodeBoundNotFinite, FormCodeBadCountBound, FormCodeMinAboveMax, FormCodeBadSlotName, FormCodeDuplicateSlot, FormCodeEmptySlotLabel, FormCodeBadSlotCount, FormCodeBadMediaType, FormCodeBadStepName, FormCodeDuplicateStep, FormCodeEmptyStepLabel, FormCodeNoRoles, FormCodeUnknownRole, FormCodeUnknownLevel, FormCodeLevelOrder,
	}
}

func (e *FormError) Error() string { return "form definition: " + e.Reason }

func formErrf(code FormCode, format string, args ...any) *FormError {
	return &FormError{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// FieldError is the reason one answer was refused: Code is stable and
// machine-readable (the field app shows its own Simplified Chinese text for
// it), Reason is an English explanation for logs and developers.
type FieldError struct {
	Field  string    `json:"field"`
	Reason string    `json:"reason"`
	Code   FieldCode `json:"code,omitempty"`
}

// FieldCode says, stably, why one answer (or household field) was refused.
// Codes never change meaning; new ones may be added, so a client must show
// a generic message for a code it does not know. The field app mirrors
// them in mobileclient/webapp/js/formcheck.js, and the shared vectors in
// syncproto/testdata/vectors pin which answer gets which code.
type FieldCode string

// The answer codes of FormDef.ValidateAnswers.
const (
	FieldCodeRequired      FieldCode = "required"      // required field absent or null
	FieldCodeUnknownField  FieldCode = "unknown_field" // key names no field of the form
	FieldCodeUnknownType   FieldCode = "unknown_type"  // the field's type is unknown (form not checked)
	FieldCodeNotString     FieldCode = "not_string"    // text, date, select_one, photo, document, signature
	FieldCodeTooShort      FieldCode = "too_short"     // text length below Min
	FieldCodeTooLong       FieldCode = "too_long"      // text length above Max (or MaxTextRunes)
	FieldCodeNotInteger    FieldCode = "not_integer"   // not a number literal without fraction or exponent
	FieldCodeIntegerRange  FieldCode = "integer_out_of_range"
	FieldCodeNotNumber     FieldCode = "not_number" // decimal: not a JSON number
	FieldCodeNotFinite     FieldCode = "not_finite" // decimal: overflows float64
	FieldCodeBelowMin      FieldCode = "below_min"  // integer or decimal value below Min
	FieldCodeAboveMax      FieldCode = "above_max"  // integer or decimal value above Max
	FieldCodeNotDate       FieldCode = "not_a_date" // not a real calendar date YYYY-MM-DD
	FieldCodeUnknownChoice FieldCode = "unknown_choice"
	FieldCodeNotArray      FieldCode = "not_string_array" // select_many
	FieldCodeChosenTwice   FieldCode = "duplicate_choice" // select_many
	FieldCodeTooFew        FieldCode = "too_few"          // select_many count below Min
	FieldCodeTooMany       FieldCode = "too_many"         // select_many count above Max
	FieldCodeBadGeopoint   FieldCode = "bad_geopoint"     // not a JSON object
	FieldCodeGeoUnknownKey FieldCode = "geopoint_unknown_key"
	FieldCodeGeoMissing    FieldCode = "geopoint_missing"    // lon or lat absent or null
	FieldCodeGeoNotNumber  FieldCode = "geopoint_not_number" // lon, lat, acc or alt not a finite number
	FieldCodeLonRange      FieldCode = "lon_out_of_range"
	FieldCodeLatRange      FieldCode = "lat_out_of_range"
	FieldCodeNegativeAcc   FieldCode = "negative_accuracy"
	FieldCodeNotSHA256     FieldCode = "not_sha256" // photo, document, signature
)

// The household field codes of CheckHouseholdFields.
const (
	FieldCodeBadFieldName  FieldCode = "invalid_field_name"
	FieldCodeValueTooLarge FieldCode = "value_too_large"
	FieldCodeNotJSON       FieldCode = "not_json"
	FieldCodeBadLocation   FieldCode = "bad_location"
	FieldCodeBadMember     FieldCode = "bad_member"
)

// FieldCodes lists every FieldCode, answer codes first, in the order above.
func FieldCodes() []FieldCode {
	return []FieldCode{
		FieldCodeRequired, FieldCodeUnknownField, FieldCodeUnknownType, FieldCodeNotString,
		FieldCodeTooShort, FieldCodeTooLong, FieldCodeNotInteger, FieldCodeIntegerRange,
		FieldCodeNotNumber, FieldCodeNotFinite, FieldCodeBelowMin, FieldCodeAboveMax,
		FieldCodeNotDate, FieldCodeUnknownChoice, FieldCodeNotArray, FieldCodeChosenTwice,
		FieldCodeTooFew, FieldCodeTooMany, FieldCodeBadGeopoint, FieldCodeGeoUnknownKey,
		FieldCodeGeoMissing, FieldCodeGeoNotNumber, FieldCodeLonRange, FieldCodeLatRange,
		FieldCodeNegativeAcc, FieldCodeNotSHA256,
		FieldCodeBadFieldName, FieldCodeValueTooLarge, FieldCodeNotJSON, FieldCodeBadLocation,
		FieldCodeBadMember,
	}
}

// ValidationErrors lists every refused answer of a visit, sorted by field
// name.
type ValidationErrors []FieldError

func (v ValidationErrors) Error() string {
	var b strings.Builder
	b.WriteString("answers:")
	for i, fe := range v {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString(" field ")
		b.WriteString(fe.Field)
		b.WriteString(": ")
		b.WriteString(fe.Reason)
	}
	return b.String()
}

// ParseFormDef decodes a form definition (at most MaxFormDefSize bytes;
// unknown JSON keys are ignored) and checks it with Check.
func ParseFormDef(data []byte) (*FormDef, error) {
	if len(data) > MaxFormDefSize {
		return nil, formErrf(FormCodeTooLarge, "larger than %d bytes", MaxFormDefSize)
	}
	var f FormDef
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, &FormError{Code: FormCodeDecode, Reason: "decode: " + err.Error()}
	}
	if err := f.Check(); err != nil {
		return nil, err
	}
	return &f, nil
}

// Check reports whether the definition is usable: id and names well formed
// and unique, known field types, select fields with at least one choice
// and unique choice values, bounds only where they apply and min <= max,
// slot counts consistent, review roles and levels known. The error is a
// *FormError naming the first problem found.
func (f *FormDef) Check() error {
	if f == nil {
		return formErrf(FormCodeMissing, "missing")
	}
	if !formValidID(f.ID) {
		return formErrf(FormCodeBadID, "id %q must match [a-z0-9_]{1,64}", f.ID)
	}
	if f.Version < 0 {
		return formErrf(FormCodeBadVersion, "version %d is negative", f.Version)
	}
	if strings.TrimSpace(f.Title) == "" {
		return formErrf(FormCodeEmptyTitle, "title is empty")
	}
	if len(f.Fields) == 0 && len(f.Slots) == 0 {
		return formErrf(FormCodeEmpty, "no fields and no evidence slots")
	}
	if math.IsNaN(f.MaxAccuracyM) || math.IsInf(f.MaxAccuracyM, 0) || f.MaxAccuracyM < 0 {
		return formErrf(FormCodeBadAccuracy, "max_accuracy_m must be a finite number >= 0")
	}
	seen := make(map[string]bool, len(f.Fields))
	for i := range f.Fields {
		fd := &f.Fields[i]
		if !formValidName(fd.Name) {
			return formErrf(FormCodeBadFieldName, "field %d: name %q must match [a-z][a-z0-9_]{0,63}", i, fd.Name)
		}
		if seen[fd.Name] {
			return formErrf(FormCodeDuplicateField, "field %q: duplicate name", fd.Name)
		}
		seen[fd.Name] = true
		if err := fd.check(); err != nil {
			return err
		}
	}
	seenSlot := make(map[string]bool, len(f.Slots))
	for i, s := range f.Slots {
		if !formValidName(s.Name) {
			return formErrf(FormCodeBadSlotName, "slot %d: name %q must match [a-z][a-z0-9_]{0,63}", i, s.Name)
		}
		if seenSlot[s.Name] {
			return formErrf(FormCodeDuplicateSlot, "slot %q: duplicate name", s.Name)
		}
		seenSlot[s.Name] = true
		if strings.TrimSpace(s.Label) == "" {
			return formErrf(FormCodeEmptySlotLabel, "slot %q: label is empty", s.Name)
		}
		if s.MinCount < 0 {
			return formErrf(FormCodeBadSlotCount, "slot %q: min_count is negative", s.Name)
		}
		if s.MaxCount < 0 || (s.MaxCount != 0 && s.MaxCount < s.MinCount) {
			return formErrf(FormCodeBadSlotCount, "slot %q: max_count must be 0 (no limit) or >= min_count", s.Name)
		}
		for _, mt := range s.MediaTypes {
			typ, sub, ok := strings.Cut(mt, "/")
			if !ok || typ == "" || sub == "" || strings.ContainsAny(mt, " ;,") {
				return formErrf(FormCodeBadMediaType, "slot %q: media type %q is not type/subtype", s.Name, mt)
			}
		}
	}
	seenStep := make(map[string]bool, len(f.Review))
	lastLevel := 0
	for i, st := range f.Review {
		if !formValidName(st.Name) {
			return formErrf(FormCodeBadStepName, "review step %d: name %q must match [a-z][a-z0-9_]{0,63}", i, st.Name)
		}
		if seenStep[st.Name] {
			return formErrf(FormCodeDuplicateStep, "review step %q: duplicate name", st.Name)
		}
		seenStep[st.Name] = true
		if strings.TrimSpace(st.Label) == "" {
			return formErrf(FormCodeEmptyStepLabel, "review step %q: label is empty", st.Name)
		}
		if len(st.Roles) == 0 {
			return formErrf(FormCodeNoRoles, "review step %q: no roles", st.Name)
		}
		for _, r := range st.Roles {
			if !slices.Contains(formReviewRoles, r) {
				return formErrf(FormCodeUnknownRole, "review step %q: unknown role %q", st.Name, r)
			}
		}
		lvl := slices.Index(formReviewLevels, st.Level)
		if lvl < 0 {
			return formErrf(FormCodeUnknownLevel, "review step %q: unknown level %q (want village, township or county)", st.Name, st.Level)
		}
		if lvl < lastLevel {
			return formErrf(FormCodeLevelOrder, "review step %q: level %q comes after a higher level", st.Name, st.Level)
		}
		lastLevel = lvl
	}
	return nil
}

func (fd *Field) check() error {
	if !fd.Type.Known() {
		return formErrf(FormCodeUnknownFieldType, "field %q: unknown type %q", fd.Name, fd.Type)
	}
	if strings.TrimSpace(fd.Label) == "" {
		return formErrf(FormCodeEmptyFieldLabel, "field %q: label is empty", fd.Name)
	}
	isSelect := fd.Type == FieldSelectOne || fd.Type == FieldSelectMany
	if isSelect {
		if len(fd.Choices) == 0 {
			return formErrf(FormCodeNoChoices, "field %q: %s needs at least one choice", fd.Name, fd.Type)
		}
		vals := make(map[string]bool, len(fd.Choices))
		for _, c := range fd.Choices {
			if c.Value == "" || !utf8.ValidString(c.Value) {
				return formErrf(FormCodeBadChoiceValue, "field %q: empty or invalid choice value", fd.Name)
			}
			if vals[c.Value] {
				return formErrf(FormCodeDuplicateChoice, "field %q: duplicate choice %q", fd.Name, c.Value)
			}
			vals[c.Value] = true
			if strings.TrimSpace(c.Label) == "" {
				return formErrf(FormCodeEmptyChoiceLabel, "field %q: choice %q has an empty label", fd.Name, c.Value)
			}
		}
	} else if len(fd.Choices) > 0 {
		return formErrf(FormCodeChoicesNotAllowed, "field %q: choices are only allowed on select fields", fd.Name)
	}
	if fd.Min == nil && fd.Max == nil {
		return nil
	}
	switch fd.Type {
	case FieldInteger, FieldDecimal, FieldText, FieldSelectMany:
	default:
		return formErrf(FormCodeBoundsNotAllowed, "field %q: min/max do not apply to %s", fd.Name, fd.Type)
	}
	counts := fd.Type == FieldText || fd.Type == FieldSelectMany
	for _, b := range []*float64{fd.Min, fd.Max} {
		if b == nil {
			continue
		}
		v := *b
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return formErrf(FormCodeBoundNotFinite, "field %q: min/max must be finite", fd.Name)
		}
		if counts && (v < 0 || v != math.Trunc(v)) {
			return formErrf(FormCodeBadCountBound, "field %q: min/max of %s must be whole numbers >= 0", fd.Name, fd.Type)
		}
	}
	if fd.Min != nil && fd.Max != nil && *fd.Min > *fd.Max {
		return formErrf(FormCodeMinAboveMax, "field %q: min %v > max %v", fd.Name, *fd.Min, *fd.Max)
	}
	return nil
}

// Field returns the field with the given name.
func (f *FormDef) Field(name string) (Field, bool) {
	for _, fd := range f.Fields {
		if fd.Name == name {
			return fd, true
		}
	}
	return Field{}, false
}

// Slot returns the evidence slot with the given name.
func (f *FormDef) Slot(name string) (EvidenceSlot, bool) {
	for _, s := range f.Slots {
		if s.Name == name {
			return s, true
		}
	}
	return EvidenceSlot{}, false
}

// MissingSlots returns, in definition order, the names of the slots that
// hold fewer than MinCount blobs, given the number of present blobs per
// slot name. An empty result means the visit's evidence is complete.
func (f *FormDef) MissingSlots(present map[string]int) []string {
	var missing []string
	for _, s := range f.Slots {
		if present[s.Name] < s.MinCount {
			missing = append(missing, s.Name)
		}
	}
	return missing
}

// ValidateAnswers checks a visit's answers (field name → JSON value)
// against the form and returns ValidationErrors listing every bad answer,
// one per field, sorted by field name; nil if all are good.
//
// Encoding of answers, by field type:
//
//   - text: a JSON string. Min/Max bound its length in Unicode code points
//     (not bytes, not UTF-16 units); without Max, at most MaxTextRunes.
//   - integer: a JSON number written without fraction or exponent
//     (3, -2; not 3.0, 3e0 or "3"), magnitude at most 2^53-1.
//   - decimal: a JSON number (1, 2.5, 1e3) that is finite as a float64.
//   - date: a JSON string "YYYY-MM-DD" naming a real calendar date
//     ("2024-02-29" yes, "2023-02-29" and "2024-2-9" no).
//   - select_one: a JSON string equal to one choice value.
//   - select_many: a JSON array of distinct strings, each a choice value,
//     in any order; [] chooses nothing. Min/Max bound the count.
//   - geopoint: a JSON object {"lon": x, "lat": y, "acc": a} of numbers in
//     WGS84 degrees: lon in [-180, 180], lat in [-90, 90]; "acc" (metres)
//     is optional and >= 0; "alt" (metres) is optional; other keys are
//     refused.
//   - photo, document, signature: the evidence blob's SHA-256 as 64
//     lowercase hexadecimal characters.
//
// Min and Max are inclusive. A required field must be present and not
// null; an optional field may be absent or null. A key that names no field
// of the form is refused as "unknown field". Answers are never coerced: a
// number sent as a string is refused. Each FieldError carries a FieldCode;
// the shared vectors in testdata/vectors pin the code for each case, and
// the field app's formcheck.js gives the same verdicts.
func (f *FormDef) ValidateAnswers(answers map[string]json.RawMessage) error {
	var errs ValidationErrors
	for name := range answers {
		if _, ok := f.Field(name); !ok {
			errs = append(errs, FieldError{Field: name, Code: FieldCodeUnknownField, Reason: "unknown field"})
		}
	}
	for _, fd := range f.Fields {
		raw, ok := answers[fd.Name]
		raw = bytes.TrimSpace(raw)
		if !ok || len(raw) == 0 || string(raw) == "null" {
			if fd.Required {
				errs = append(errs, FieldError{Field: fd.Name, Code: FieldCodeRequired, Reason: "required"})
			}
			continue
		}
		if code, reason := fd.checkAnswer(raw); code != "" {
			errs = append(errs, FieldError{Field: fd.Name, Code: code, Reason: reason})
		}
	}
	if len(errs) == 0 {
		return nil
	}
	slices.SortFunc(errs, func(a, b FieldError) int {
		if c := strings.Compare(a.Field, b.Field); c != 0 {
			return c
		}
		return strings.Compare(a.Reason, b.Reason)
	})
	return errs
}

// checkAnswer returns why raw (not null, not empty) is a bad answer for
// the field, as a code and a reason, or "", "".
func (fd *Field) checkAnswer(raw []byte) (FieldCode, string) {
	switch fd.Type {
	case FieldText:
		s, ok := answerString(raw)
		if !ok {
			return FieldCodeNotString, "not a string"
		}
		n := utf8.RuneCountInString(s)
		if fd.Max == nil && n > MaxTextRunes {
			return FieldCodeTooLong, fmt.Sprintf("longer than %d characters", MaxTextRunes)
		}
		return fd.checkBounds(float64(n), "length", FieldCodeTooShort, FieldCodeTooLong)
	case FieldInteger:
		n, code, reason := answerInteger(raw)
		if code != "" {
			return code, reason
		}
		return fd.checkBounds(float64(n), "value", FieldCodeBelowMin, FieldCodeAboveMax)
	case FieldDecimal:
		v, code, reason := answerNumber(raw)
		if code != "" {
			return code, reason
		}
		return fd.checkBounds(v, "value", FieldCodeBelowMin, FieldCodeAboveMax)
	case FieldDate:
		s, ok := answerString(raw)
		if !ok {
			return FieldCodeNotString, "not a string"
		}
		if !answerIsDate(s) {
			return FieldCodeNotDate, "not a date YYYY-MM-DD"
		}
	case FieldSelectOne:
		s, ok := answerString(raw)
		if !ok {
			return FieldCodeNotString, "not a string"
		}
		if !fd.HasChoice(s) {
			return FieldCodeUnknownChoice, fmt.Sprintf("%q is not a choice", s)
		}
	case FieldSelectMany:
		if raw[0] != '[' {
			return FieldCodeNotArray, "not an array of strings"
		}
		var vals []string
		if err := json.Unmarshal(raw, &vals); err != nil {
			return FieldCodeNotArray, "not an array of strings"
		}
		seen := make(map[string]bool, len(vals))
		for _, s := range vals {
			if seen[s] {
				return FieldCodeChosenTwice, fmt.Sprintf("%q chosen twice", s)
			}
			seen[s] = true
			if !fd.HasChoice(s) {
				return FieldCodeUnknownChoice, fmt.Sprintf("%q is not a choice", s)
			}
		}
		return fd.checkBounds(float64(len(vals)), "count", FieldCodeTooFew, FieldCodeTooMany)
	case FieldGeopoint:
		return answerGeopoint(raw)
	case FieldPhoto, FieldDocument, FieldSignature:
		s, ok := answerString(raw)
		if !ok {
			return FieldCodeNotString, "not a string"
		}
		if !answerIsSHA256Hex(s) {
			return FieldCodeNotSHA256, "not a lowercase hex SHA-256"
		}
	default:
		return FieldCodeUnknownType, fmt.Sprintf("unknown type %q", fd.Type)
	}
	return "", ""
}

func (fd *Field) checkBounds(v float64, what string, below, above FieldCode) (FieldCode, string) {
	if fd.Min != nil && v < *fd.Min {
		return below, fmt.Sprintf("%s %s below min %s", what, answerFmt(v), answerFmt(*fd.Min))
	}
	if fd.Max != nil && v > *fd.Max {
		return above, fmt.Sprintf("%s %s above max %s", what, answerFmt(v), answerFmt(*fd.Max))
	}
	return "", ""
}

func answerFmt(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// answerString decodes raw as a JSON string, refusing any other JSON type.
func answerString(raw []byte) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// answerNumberLiteral decodes raw as a JSON number and returns its literal.
func answerNumberLiteral(raw []byte) (string, bool) {
	if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return "", false
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", false
	}
	return n.String(), true
}

func answerNumber(raw []byte) (float64, FieldCode, string) {
	lit, ok := answerNumberLiteral(raw)
	if !ok {
		return 0, FieldCodeNotNumber, "not a number"
	}
	v, err := strconv.ParseFloat(lit, 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, FieldCodeNotFinite, "not a finite number"
	}
	return v, "", ""
}

func answerInteger(raw []byte) (int64, FieldCode, string) {
	lit, ok := answerNumberLiteral(raw)
	if !ok {
		return 0, FieldCodeNotInteger, "not an integer"
	}
	if strings.ContainsAny(lit, ".eE") {
		return 0, FieldCodeNotInteger, "not an integer"
	}
	n, err := strconv.ParseInt(lit, 10, 64)
	if err != nil || n > MaxSafeInteger || n < -MaxSafeInteger {
		return 0, FieldCodeIntegerRange, "integer out of range"
	}
	return n, "", ""
}

func answerIsDate(s string) bool {
	if len(s) != len("2006-01-02") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if i == 4 || i == 7 {
			if c != '-' {
				return false
			}
		} else if c < '0' || c > '9' {
			return false
		}
	}
	_, err := time.Parse(time.DateOnly, s)
	return err == nil
}

func answerIsSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func answerGeopoint(raw []byte) (FieldCode, string) {
	const bad = `not an object {"lon","lat","acc"}`
	if raw[0] != '{' {
		return FieldCodeBadGeopoint, bad
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return FieldCodeBadGeopoint, bad
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		switch k {
		case "lon", "lat", "acc", "alt":
		default:
			return FieldCodeGeoUnknownKey, fmt.Sprintf("geopoint: unknown key %q", k)
		}
	}
	get := func(key string, required bool) (float64, bool, FieldCode, string) {
		r, ok := obj[key]
		r = bytes.TrimSpace(r)
		if !ok || len(r) == 0 || string(r) == "null" {
			if required {
				return 0, false, FieldCodeGeoMissing, "geopoint: missing " + key
			}
			return 0, false, "", ""
		}
		v, code, reason := answerNumber(r)
		if code != "" {
			return 0, false, FieldCodeGeoNotNumber, "geopoint: " + key + " " + reason
		}
		return v, true, "", ""
	}
	lon, _, code, reason := get("lon", true)
	if code != "" {
		return code, reason
	}
	lat, _, code, reason := get("lat", true)
	if code != "" {
		return code, reason
	}
	acc, hasAcc, code, reason := get("acc", false)
	if code != "" {
		return code, reason
	}
	if _, _, code, reason := get("alt", false); code != "" {
		return code, reason
	}
	if lon < -180 || lon > 180 {
		return FieldCodeLonRange, "geopoint: lon outside [-180, 180]"
	}
	if lat < -90 || lat > 90 {
		return FieldCodeLatRange, "geopoint: lat outside [-90, 90]"
	}
	if hasAcc && acc < 0 {
		return FieldCodeNegativeAcc, "geopoint: acc is negative"
	}
	return "", ""
}

func formValidID(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

func formValidName(s string) bool {
	if len(s) < 1 || len(s) > 64 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	return formValidID(s)
}
