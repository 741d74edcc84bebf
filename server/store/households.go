package store

import (
	"fieldsync/syncproto"
)

// HouseholdRow is a household as listings show it.
type HouseholdRow struct {
	syncproto.Household
	PlaceName   string `json:"place_name"`
	Deleted     bool   `json:"deleted,omitempty"`
	Visits      int    `json:"visits"`
	LastVisitAt string `json:"last_visit_at,omitempty"`
}

// ImportedVisit is a visit loaded from outside the sync path (the demo
// data, a migration from another system), with its review state.
type ImportedVisit struct {
	Visit  syncproto.Visit
	UserID int64
	// State is the review state (default submitted); Step the review step.
	State string
	Step  int
	// TaskReason, with State needs_rework, opens a rework task.
	TaskReason string
}
