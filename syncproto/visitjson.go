package syncproto

import (
	"encoding/json"
	"math"
	"strconv"
)

// AppendVisit appends json.Marshal(v)'s bytes to b, without the reflective
// encoder: the server encodes every pushed visit three times (the body it
// keeps, its content hash and its answers), which was a sixth of its CPU
// in a push herd. Strings that need escaping go through json.Marshal one
// by one, answers through AppendFields; a value json.Marshal refuses (a
// NaN coordinate, a year past 9999, an invalid answer) is refused with
// json.Marshal's error.
func AppendVisit(b []byte, v *Visit) ([]byte, error) {
	b, _, err := appendVisit(b, v)
	return b, err
}

// EncodeVisit returns json.Marshal(v)'s bytes and, within them, the
// encoding of v's answers (json.Marshal(v.Answers)), encoded once: the
// server keeps both for every pushed visit.
func EncodeVisit(v *Visit) (visit, answers []byte, err error) {
	return appendVisit(make([]byte, 0, 256+64*len(v.Answers)), v)
}

// appendVisit is AppendVisit, also returning the answers' bytes (a
// subslice of the result; nil for a nil visit).
func appendVisit(b []byte, v *Visit) (_, answers []byte, _ error) {
	if v == nil {
		return append(b, "null"...), nil, nil
	}
	start := len(b)
	fallback := func() ([]byte, []byte, error) {
		whole, err := json.Marshal(v)
		if err != nil {
			return nil, nil, err
		}
		a, err := json.Marshal(v.Answers)
		return append(b[:start], whole...), a, err
	}
	b = append(b, `{"id":`...)
	b = appendString(b, v.ID)
	b = append(b, `,"household_id":`...)
	b = appendString(b, v.HouseholdID)
	b = append(b, `,"form_id":`...)
	b = appendString(b, v.FormID)
	b = append(b, `,"form_version":`...)
	b = strconv.AppendInt(b, int64(v.FormVersion), 10)
	b = append(b, `,"answers":`...)
	at := len(b)
	b, err := AppendFields(b, v.Answers)
	if err != nil {
		return nil, nil, err
	}
	end := len(b)
	var ok bool
	if v.Point != nil {
		b = append(b, `,"point":{"lon":`...)
		if b, ok = appendFloat(b, v.Point.Lon); !ok {
			return fallback()
		}
		b = append(b, `,"lat":`...)
		if b, ok = appendFloat(b, v.Point.Lat); !ok {
			return fallback()
		}
		b = append(b, '}')
	}
	if v.AccuracyM != 0 {
		b = append(b, `,"accuracy_m":`...)
		if b, ok = appendFloat(b, v.AccuracyM); !ok {
			return fallback()
		}
	}
	b = append(b, `,"device_time":`...)
	t, err := v.DeviceTime.MarshalJSON()
	if err != nil {
		return fallback()
	}
	b = append(b, t...)
	if len(v.Evidence) > 0 {
		b = append(b, `,"evidence":[`...)
		for i, e := range v.Evidence {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"sha256":`...)
			b = appendString(b, e.SHA256)
			b = append(b, `,"size":`...)
			b = strconv.AppendInt(b, e.Size, 10)
			b = append(b, `,"media_type":`...)
			b = appendString(b, e.MediaType)
			b = append(b, `,"slot":`...)
			b = appendString(b, e.Slot)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = appendOptString(b, `,"corrects_visit_id":`, v.CorrectsVisitID)
	b = appendOptString(b, `,"gps_reason":`, v.GPSReason)
	b = appendOptString(b, `,"place_code":`, v.PlaceCode)
	b = appendOptString(b, `,"device_id":`, v.DeviceID)
	b = appendOptString(b, `,"user_name":`, v.UserName)
	if !v.ServerTime.IsZero() {
		b = append(b, `,"server_time":`...)
		t, err := v.ServerTime.MarshalJSON()
		if err != nil {
			return fallback()
		}
		b = append(b, t...)
	}
	b = appendOptString(b, `,"review_state":`, v.ReviewState)
	b = append(b, '}')
	return b, b[at:end:end], nil
}

// MarshalMutation is json.Marshal(m), the same bytes, with a direct path
// for the mutation devices push by the thousand: a visit.create.
func MarshalMutation(m *Mutation) ([]byte, error) {
	if m.Visit == nil || m.Household != nil || m.HouseholdUpdate != nil || m.HouseholdMove != nil || m.HouseholdDelete != nil || m.EvidenceAttach != nil {
		return json.Marshal(m)
	}
	b := make([]byte, 0, 512+64*len(m.Visit.Answers))
	b = append(b, '{')
	if m.Seq != 0 {
		b = append(b, `"seq":`...)
		b = strconv.AppendInt(b, m.Seq, 10)
		b = append(b, ',')
	}
	if m.Kind != "" {
		b = append(b, `"kind":`...)
		b = appendString(b, string(m.Kind))
		b = append(b, ',')
	}
	b = append(b, `"hlc":`...)
	if m.HLC.IsZero() {
		b = append(b, `""`...)
	} else {
		b = appendString(b, m.HLC.String())
	}
	b = append(b, `,"visit":`...)
	b, err := AppendVisit(b, m.Visit)
	if err != nil {
		// As json.Marshal reports it.
		return json.Marshal(m)
	}
	return append(b, '}'), nil
}

// appendString appends s as json.Marshal writes a string.
func appendString(b []byte, s string) []byte {
	if plainString(s) {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	q, _ := json.Marshal(s) // a string always encodes
	return append(b, q...)
}

// appendOptString appends key and s unless s is empty (omitempty).
func appendOptString(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return appendString(append(b, key...), s)
}

// appendFloat appends f as json.Marshal writes a float64 ('f' format, or
// 'e' for very small and very large magnitudes, with a two-digit negative
// exponent cut to one), and reports false for NaN and infinities, which
// json.Marshal refuses.
func appendFloat(b []byte, f float64) ([]byte, bool) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return b, false
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, true
}
