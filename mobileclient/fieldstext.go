package mobileclient

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
)

// fieldsText is json.Marshal of a household's fields, byte for byte (the
// device relies on that: see recomputeMany), without the cost of the
// reflective encoder on the common shape: plain ASCII keys and values
// already compact, as a pulled page delivers them. Anything else goes
// through json.Marshal.
func fieldsText(fields map[string]json.RawMessage) (string, error) {
	keys := make([]string, 0, len(fields))
	size := 2
	for k, v := range fields {
		if !plainKey(k) || !plainValue(v) {
			return jsonText(fields)
		}
		keys = append(keys, k)
		size += len(k) + len(v) + 4
	}
	slices.Sort(keys)
	var b strings.Builder
	b.Grow(size)
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		b.WriteString(k)
		b.WriteString(`":`)
		b.Write(fields[k])
	}
	b.WriteByte('}')
	return b.String(), nil
}

// plainKey reports whether json.Marshal writes k as it is between quotes:
// printable ASCII without the characters it escapes.
func plainKey(k string) bool {
	for i := 0; i < len(k); i++ {
		switch c := k[i]; {
		case c < 0x20 || c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// plainValue reports whether json.Marshal writes the raw value v as it is:
// v is one valid JSON value with no white space (even inside strings, to
// keep the check simple), none of the characters it escapes for HTML, and
// no U+2028 or U+2029.
func plainValue(v json.RawMessage) bool {
	if len(v) == 0 || bytes.ContainsAny(v, " \t\r\n<>&") || bytes.Contains(v, []byte("\u2028")) || bytes.Contains(v, []byte("\u2029")) {
		return false
	}
	return json.Valid(v)
}
