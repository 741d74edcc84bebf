package syncproto

import (
	"bytes"
	"encoding/json"
	"sort"
	"strings"
)

// HouseholdField describes a household field of the shared household schema.
type HouseholdField struct {
	Name  string `json:"name"`
	Label string `json:"label"`
	// Sensitive fields are never settled automatically when two edits
	// clash: the current value stays and the conflict waits for a
	// supervisor.
	Sensitive bool `json:"sensitive,omitempty"`
}

// Well-known household fields. Other fields matching the name pattern are
// allowed and merge as plain fields.
const (
	FieldHeadName      = "head_name"
	FieldPovertyStatus = "poverty_status"
	FieldDibaoClass    = "dibao_class"
	FieldLocation      = "location"
	// MemberPrefix starts the name of a member field: "member.<member id>".
	MemberPrefix = "member."
)

// HouseholdSchema lists the known household fields.
var HouseholdSchema = []HouseholdField{
	{Name: FieldHeadName, Label: "户主", Sensitive: true},
	{Name: FieldPovertyStatus, Label: "贫困状态", Sensitive: true},
	{Name: FieldDibaoClass, Label: "低保类别", Sensitive: true},
	{Name: FieldLocation, Label: "位置", Sensitive: true},
	{Name: "wubao", Label: "五保"},
	{Name: "pension", Label: "养老保险"},
	{Name: "medical_insurance", Label: "医疗保险"},
	{Name: "address", Label: "地址"},
	{Name: "phone", Label: "电话"},
	{Name: "id_card_no", Label: "身份证号"},
	{Name: "notes", Label: "备注"},
}

// SensitiveField reports whether a household field is sensitive.
func SensitiveField(name string) bool {
	for _, f := range HouseholdSchema {
		if f.Name == name {
			return f.Sensitive
		}
	}
	return false
}

// Member is the value of a "member.<id>" household field.
type Member struct {
	Name      string `json:"name"`
	Relation  string `json:"relation,omitempty"`
	BirthYear int    `json:"birth_year,omitempty"`
	IDCardNo  string `json:"id_card_no,omitempty"`
}

// MaxFieldValueBytes bounds one household field's JSON value.
const MaxFieldValueBytes = 4 << 10

// MaxHouseholdFields bounds the number of fields in one household message.
const MaxHouseholdFields = 256

// ValidFieldName reports whether name is a household field name: a plain
// name [a-z][a-z0-9_]{0,63}, or "member." followed by a ULID/UUID.
func ValidFieldName(name string) bool {
	if rest, ok := strings.CutPrefix(name, MemberPrefix); ok {
		return ValidID(rest)
	}
	if len(name) == 0 || len(name) > 64 || name[0] < 'a' || name[0] > 'z' {
		return false
	}
	for i := 1; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// IsNull reports whether a raw JSON value is absent or null.
func IsNull(v json.RawMessage) bool {
	t := bytes.TrimSpace(v)
	return len(t) == 0 || bytes.Equal(t, []byte("null"))
}

// CheckHouseholdFields validates names and values of household fields.
func CheckHouseholdFields(fields map[string]json.RawMessage) *Error {
	if len(fields) > MaxHouseholdFields {
		return Errorf(CodeValidation, "%d household fields; at most %d", len(fields), MaxHouseholdFields)
	}
	var errs ValidationErrors
	for name, v := range fields {
		if !ValidFieldName(name) {
			errs = append(errs, FieldError{Field: name, Code: FieldCodeBadFieldName, Reason: "invalid field name"})
			continue
		}
		if len(v) > MaxFieldValueBytes {
			errs = append(errs, FieldError{Field: name, Code: FieldCodeValueTooLarge, Reason: "value too large"})
			continue
		}
		if IsNull(v) {
			continue
		}
		if !json.Valid(v) {
			errs = append(errs, FieldError{Field: name, Code: FieldCodeNotJSON, Reason: "not JSON"})
			continue
		}
		switch {
		case name == FieldLocation:
			var p Point
			if err := json.Unmarshal(v, &p); err != nil || !p.Valid() {
				errs = append(errs, FieldError{Field: name, Code: FieldCodeBadLocation, Reason: "location must be {lon,lat} inside WGS84"})
			}
		case strings.HasPrefix(name, MemberPrefix):
			var m Member
			if err := json.Unmarshal(v, &m); err != nil || strings.TrimSpace(m.Name) == "" {
				errs = append(errs, FieldError{Field: name, Code: FieldCodeBadMember, Reason: "member must be an object with a name"})
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Field < errs[j].Field })
	return &Error{Code: CodeValidation, Message: errs.Error(), Fields: errs}
}
