package store

import (
	"fieldsync/syncproto"
)

// ConflictRow is a conflict with the place it belongs to.
type ConflictRow struct {
	syncproto.Conflict
	PlaceCode  string `json:"place_code"`
	HeadName   string `json:"head_name,omitempty"`
	Resolution string `json:"resolution,omitempty"`
}

// Conflict resolutions.
const (
	ResolveKeep  = "keep"  // keep the current value
	ResolveTake  = "take"  // take the losing value
	ResolveValue = "value" // enter a new value
)

// ReviewResult is a visit's review state after an action.
type ReviewResult struct {
	VisitID string `json:"visit_id"`
	State   string `json:"state"`
	Step    int    `json:"step"`
	Steps   int    `json:"steps"`
	TaskID  string `json:"task_id,omitempty"`
}

// VisitFilter selects visits for the review queue and exports.
type VisitFilter struct {
	Places   map[string]bool // nil: all
	FormID   string
	State    string
	Flag     string // only visits with this evidence flag
	From, To string // server_time range, RFC 3339 dates or times
	Limit    int
	Offset   int // rows to skip (a page of the list); negative: 0
	AfterID  string
}

// VisitRow is a visit with the names a supervisor needs.
type VisitRow struct {
	syncproto.Visit
	HeadName   string `json:"head_name,omitempty"`
	PlaceName  string `json:"place_name,omitempty"`
	ReviewStep int    `json:"review_step"`
	Flags      int    `json:"flags"`
}
