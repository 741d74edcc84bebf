package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"fieldsync/syncproto"
)

// answersTemplate returns an answers object for f, on one line, with every
// required field filled with a plausible value of its type (text in
// Simplified Chinese, today's date, the first choices, numbers within the
// field's bounds). Optional fields are left out. The result passes
// f.ValidateAnswers; an error says which field could not be filled.
func answersTemplate(f syncproto.FormDef, now time.Time) ([]byte, error) {
	answers := map[string]json.RawMessage{}
	for _, fd := range f.Fields {
		if !fd.Required {
			continue
		}
		v, err := sampleAnswer(fd, now)
		if err != nil {
			return nil, fmt.Errorf("forms -template %s: field %s: %w", f.ID, fd.Name, err)
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("forms -template %s: field %s: %w", f.ID, fd.Name, err)
		}
		answers[fd.Name] = b
	}
	if err := f.ValidateAnswers(answers); err != nil {
		return nil, fmt.Errorf("forms -template %s: %w", f.ID, err)
	}
	return json.Marshal(answers)
}

// sampleAnswer is a plausible answer for one field.
func sampleAnswer(fd syncproto.Field, now time.Time) (any, error) {
	switch fd.Type {
	case syncproto.FieldText:
		return sampleText(fd), nil
	case syncproto.FieldInteger:
		lo, hi := bounds(fd, 0, syncproto.MaxSafeInteger)
		n := math.Ceil(lo)
		if lo <= 1 && hi >= 1 {
			n = 1
		}
		if n > hi {
			return nil, fmt.Errorf("no integer in [%g, %g]", lo, hi)
		}
		return int64(n), nil
	case syncproto.FieldDecimal:
		lo, hi := bounds(fd, 0, math.MaxFloat64)
		v := lo
		if lo <= 1 && hi >= 1 {
			v = 1
		}
		return v, nil
	case syncproto.FieldDate:
		return now.Format("2006-01-02"), nil
	case syncproto.FieldSelectOne:
		if len(fd.Choices) == 0 {
			return nil, fmt.Errorf("no choices")
		}
		return fd.Choices[0].Value, nil
	case syncproto.FieldSelectMany:
		lo, hi := bounds(fd, 0, float64(len(fd.Choices)))
		n := int(math.Ceil(lo))
		if n == 0 && hi >= 1 {
			n = 1
		}
		if n > len(fd.Choices) || float64(n) > hi {
			return nil, fmt.Errorf("cannot choose %d of %d choices", n, len(fd.Choices))
		}
		vals := make([]string, n)
		for i := range vals {
			vals[i] = fd.Choices[i].Value
		}
		return vals, nil
	case syncproto.FieldGeopoint:
		// A point in the demo village (石门村委会, 采山坪); replace it with
		// the device's GPS reading.
		return map[string]float64{"lon": 103.706, "lat": 25.005}, nil
	case syncproto.FieldPhoto, syncproto.FieldDocument, syncproto.FieldSignature:
		// The SHA-256 of the evidence file; this one is of no file.
		sum := sha256.Sum256(nil)
		return hex.EncodeToString(sum[:]), nil
	}
	return nil, fmt.Errorf("unknown type %q", fd.Type)
}

// bounds returns the field's Min and Max, or lo and hi where unset.
func bounds(fd syncproto.Field, lo, hi float64) (float64, float64) {
	if fd.Min != nil {
		lo = *fd.Min
	}
	if fd.Max != nil {
		hi = *fd.Max
	}
	return lo, hi
}

// sampleText is "示例" and the field's label, cut to the field's Max and
// padded with "示例" up to its Min (lengths in code points).
func sampleText(fd syncproto.Field) string {
	s := "示例" + strings.TrimSpace(fd.Label)
	lo, hi := bounds(fd, 0, syncproto.MaxTextRunes)
	for float64(utf8.RuneCountInString(s)) < lo {
		s += "示例"
	}
	if r := []rune(s); float64(len(r)) > hi {
		s = string(r[:int(hi)])
	}
	return s
}
