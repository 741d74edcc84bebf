package syncproto

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
)

// AppendFields appends the JSON encoding of a household's fields to dst,
// byte for byte what json.Marshal writes for the map (sorted keys, compact
// values, HTML characters escaped), without the reflective encoder on the
// common shape: printable ASCII keys and values with no white space or
// HTML characters, as a decoded page or a stored household holds them.
// Anything else goes through json.Marshal. A nil map is null.
func AppendFields(dst []byte, fields map[string]json.RawMessage) ([]byte, error) {
	if fields == nil {
		return append(dst, "null"...), nil
	}
	var buf [16]string
	keys := buf[:0]
	for k, v := range fields {
		if !plainString(k) || !plainValue(v) {
			b, err := json.Marshal(fields)
			return append(dst, b...), err
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		dst = append(dst, k...)
		dst = append(dst, '"', ':')
		dst = append(dst, fields[k]...)
	}
	return append(dst, '}'), nil
}

// plainString reports whether json.Marshal writes s as it is between
// quotes: printable ASCII without the characters it escapes.
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// plainValue reports whether json.Marshal writes the raw value v as it is:
// one valid JSON value with no white space (even inside strings, to keep
// the check simple), none of the characters escaped for HTML, and no
// U+2028 or U+2029.
func plainValue(v json.RawMessage) bool {
	if len(v) == 0 || bytes.ContainsAny(v, " \t\r\n<>&") || bytes.Contains(v, []byte("\u2028")) || bytes.Contains(v, []byte("\u2029")) {
		return false
	}
	return json.Valid(v)
}

// householdJSON is Household without its MarshalJSON.
type householdJSON Household

// MarshalJSON writes h exactly as the default encoding of its fields would
// (the same bytes), faster: a first sync sends and stores households by
// the hundred thousand.
func (h Household) MarshalJSON() ([]byte, error) {
	if !plainString(h.ID) || !plainString(h.PlaceCode) {
		return json.Marshal(householdJSON(h))
	}
	return appendHousehold(make([]byte, 0, 64+len(h.ID)+len(h.PlaceCode)+32*len(h.Fields)), &h)
}

// appendHousehold appends MarshalJSON's bytes of h, whose id and place
// code are plain strings (plainString), to b.
func appendHousehold(b []byte, h *Household) ([]byte, error) {
	b = append(b, `{"id":"`...)
	b = append(b, h.ID...)
	b = append(b, `","place_code":"`...)
	b = append(b, h.PlaceCode...)
	b = append(b, `","fields":`...)
	b, err := AppendFields(b, h.Fields)
	if err != nil {
		return nil, fmt.Errorf("household %s: %w", h.ID, err)
	}
	if h.Version != 0 {
		b = append(b, `,"version":`...)
		b = strconv.AppendInt(b, h.Version, 10)
	}
	return append(b, '}'), nil
}

// MarshalOp is json.Marshal(op), the same bytes, with a direct path for
// the op a first sync is made of: a household put. (json.Marshal would
// check and compact again what Household.MarshalJSON wrote.)
func MarshalOp(op *Op) ([]byte, error) {
	h := op.Household
	if op.Op != OpPut || op.Type != EntityHousehold || h == nil || op.PlaceData != nil || op.Form != nil || op.Visit != nil ||
		op.Conflict != nil || op.Task != nil || !plainString(op.ID) || !plainString(op.Place) || !plainString(h.ID) || !plainString(h.PlaceCode) {
		return json.Marshal(op)
	}
	b := make([]byte, 0, 128+2*len(op.ID)+2*len(op.Place)+32*len(h.Fields))
	b = append(b, `{"op":"put","type":"household"`...)
	if op.ID != "" {
		b = append(b, `,"id":"`...)
		b = append(b, op.ID...)
		b = append(b, '"')
	}
	if op.Place != "" {
		b = append(b, `,"place":"`...)
		b = append(b, op.Place...)
		b = append(b, '"')
	}
	if op.Seq != 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendInt(b, op.Seq, 10)
	}
	b = append(b, `,"household":`...)
	b, err := appendHousehold(b, h)
	if err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}
