package evidence

import (
	"time"

	"fieldsync/syncproto"
)

// SlotStatus is how far one evidence slot of a visit is filled.
type SlotStatus struct {
	Slot  string `json:"slot"`
	Label string `json:"label,omitempty"`
	// Need is the form's MinCount for the slot.
	Need int `json:"need"`
	// Referenced counts the blobs the visit names for the slot; Present
	// counts those that have arrived and been verified.
	Referenced int `json:"referenced"`
	Present    int `json:"present"`
}

// Missing reports whether the slot holds fewer present blobs than it
// needs.
func (s SlotStatus) Missing() bool { return s.Present < s.Need }

// Counts is, per slot name, how many blobs a visit references and how
// many of them are present.
type Counts map[string]struct{ Referenced, Present int }

// Slots returns the status of every slot of the form, in definition order,
// followed by any slot the visit references that the form does not know
// (need 0).
func Slots(form *syncproto.FormDef, c Counts) []SlotStatus {
	out := make([]SlotStatus, 0, len(form.Slots))
	known := map[string]bool{}
	for _, s := range form.Slots {
		known[s.Name] = true
		out = append(out, SlotStatus{Slot: s.Name, Label: s.Label, Need: s.MinCount, Referenced: c[s.Name].Referenced, Present: c[s.Name].Present})
	}
	for name, n := range c {
		if !known[name] && name != "" {
			out = append(out, SlotStatus{Slot: name, Referenced: n.Referenced, Present: n.Present})
		}
	}
	return out
}

// MissingSlots keeps the slots that lack present blobs.
func MissingSlots(ss []SlotStatus) []SlotStatus {
	var out []SlotStatus
	for _, s := range ss {
		if s.Missing() {
			out = append(out, s)
		}
	}
	return out
}

// VisitGap is a visit whose evidence is incomplete, and what it lacks.
type VisitGap struct {
	VisitID     string       `json:"visit_id"`
	HouseholdID string       `json:"household_id"`
	PlaceCode   string       `json:"place_code"`
	FormID      string       `json:"form_id"`
	FormVersion int          `json:"form_version"`
	DeviceID    string       `json:"device_id,omitempty"`
	UserName    string       `json:"user_name,omitempty"`
	DeviceTime  time.Time    `json:"device_time"`
	ReviewState string       `json:"review_state"`
	Missing     []SlotStatus `json:"missing"`
}

// Item is one evidence reference of a visit with what the server knows of
// its blob.
type Item struct {
	SHA256    string `json:"sha256"`
	Slot      string `json:"slot"`
	Size      int64  `json:"size"`
	MediaType string `json:"media_type"`
	// Present: verified and stored. The fields below are set only then.
	Present  bool       `json:"present"`
	StoredAt *time.Time `json:"stored_at,omitempty"`
	Width    int        `json:"width,omitempty"`
	Height   int        `json:"height,omitempty"`
	// TakenAt is the EXIF capture time (see CaptureTime.String).
	TakenAt string `json:"taken_at,omitempty"`
	// GPS is the EXIF position.
	GPS *syncproto.Point `json:"gps,omitempty"`
	// AnalysisPending: the blob is stored but its metadata has not been
	// read yet (it is, shortly after the upload); until then Width,
	// Height, TakenAt and GPS are empty and the checks on the photo
	// itself have not run.
	AnalysisPending bool   `json:"analysis_pending,omitempty"`
	Flags           []Flag `json:"flags"`
}

// VisitReport is a visit's evidence: each slot's status, each reference
// with its blob and flags, and the flags about the visit itself.
type VisitReport struct {
	VisitID     string       `json:"visit_id"`
	HouseholdID string       `json:"household_id"`
	PlaceCode   string       `json:"place_code"`
	FormID      string       `json:"form_id"`
	FormVersion int          `json:"form_version"`
	Complete    bool         `json:"complete"`
	Slots       []SlotStatus `json:"slots"`
	Evidence    []Item       `json:"evidence"`
	Flags       []Flag       `json:"flags"`
}
