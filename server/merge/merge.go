// Package merge holds fieldsync's rule for concurrent household edits
// (DESIGN.md rule 6): a field-level, three-way merge against the version
// the device started from. It is pure: the store feeds it the current
// fields and their metadata and applies what it returns.
package merge

import (
	"bytes"
	"encoding/json"
	"sort"

	"fieldsync/syncproto"
)

// FieldMeta records who last wrote a field and when.
type FieldMeta struct {
	HLC     syncproto.HLC `json:"h"`
	Version int64         `json:"v"` // household version (change seq) of the write
	Device  string        `json:"d,omitempty"`
	UserID  int64         `json:"u,omitempty"`
}

// Edit is an incoming change of some fields, made on a device that had
// seen household version Base.
type Edit struct {
	Fields map[string]json.RawMessage
	Base   int64
	HLC    syncproto.HLC
	Device string
	UserID int64
	// Version is the server version this edit will get if applied (its
	// change-log seq); it breaks HLC ties: the later write wins.
	Version int64
	// Sensitive reports fields that must never be settled automatically.
	Sensitive func(field string) bool
}

// Conflict states.
const (
	StateAutoResolved = "auto_resolved"
	StateOpen         = "open"
)

// Conflict is a field both sides changed. Kept is the value that stays,
// Losing the one that does not; LosingMeta says who wrote it.
type Conflict struct {
	Field      string
	Kept       json.RawMessage
	Losing     json.RawMessage
	LosingMeta FieldMeta
	State      string
	Sensitive  bool
}

// Outcome is what to write: the fields to set (null removes) with their
// new metadata, and the conflicts to record.
type Outcome struct {
	Set       map[string]json.RawMessage
	Meta      map[string]FieldMeta
	Conflicts []Conflict
}

// Apply merges e into the current fields cur with metadata meta.
//
// For each field of e: if nobody else wrote it after e.Base, e's value
// applies.
// Otherwise the field was changed on both sides: equal values are no
// conflict; a sensitive field keeps the current value and opens a conflict
// for a supervisor; any other field goes to the later hybrid logical clock
// (ties to the later server version, i.e. e) and the loser is kept in an
// auto-resolved conflict record.
func Apply(cur map[string]json.RawMessage, meta map[string]FieldMeta, e Edit) Outcome {
	out := Outcome{Set: map[string]json.RawMessage{}, Meta: map[string]FieldMeta{}}
	mine := FieldMeta{HLC: e.HLC, Version: e.Version, Device: e.Device, UserID: e.UserID}
	for _, f := range sortedFields(e.Fields) {
		v := e.Fields[f]
		m, written := meta[f]
		// Not a clash: nobody wrote the field since the device's base, or
		// the last writer is this same device (two offline edits of one
		// field carry the same base; the later one supersedes its own).
		if !written || m.Version <= e.Base || (e.Device != "" && m.Device == e.Device) {
			out.Set[f] = v
			out.Meta[f] = mine
			continue
		}
		curV := cur[f]
		if sameValue(curV, v) {
			continue
		}
		sensitive := e.Sensitive != nil && e.Sensitive(f)
		switch {
		case sensitive:
			out.Conflicts = append(out.Conflicts, Conflict{Field: f, Kept: curV, Losing: v, LosingMeta: mine, State: StateOpen, Sensitive: true})
		case e.HLC.Compare(m.HLC) >= 0:
			out.Set[f] = v
			out.Meta[f] = mine
			out.Conflicts = append(out.Conflicts, Conflict{Field: f, Kept: v, Losing: curV, LosingMeta: m, State: StateAutoResolved})
		default:
			out.Conflicts = append(out.Conflicts, Conflict{Field: f, Kept: curV, Losing: v, LosingMeta: mine, State: StateAutoResolved})
		}
	}
	return out
}

func sameValue(a, b json.RawMessage) bool {
	if syncproto.IsNull(a) && syncproto.IsNull(b) {
		return true
	}
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}

func sortedFields(m map[string]json.RawMessage) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
