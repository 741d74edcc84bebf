package store

import (
	"encoding/json"
	"time"
)

// ExportFilter selects what an export holds.
type ExportFilter struct {
	// Roots are place codes whose subtrees are exported; nil is every
	// place, an empty slice nothing.
	Roots  []string
	FormID string // visits only
	State  string // visits only: a review state
	// From and To bound the visits' server time, [From, To); zero is open.
	From, To time.Time
}

// ExportVisit is one visit row of an export.
type ExportVisit struct {
	ID              string
	HouseholdID     string
	HeadName        string
	PlaceCode       string
	PlaceName       string
	FormID          string
	FormVersion     int
	Answers         json.RawMessage
	HasPoint        bool
	Lon, Lat        float64
	AccuracyM       float64
	GPSReason       string // the worker's reason for a missing or poor fix
	DeviceTime      time.Time
	ServerTime      time.Time
	State           string
	ReviewStep      int
	UserName        string
	DeviceID        string
	CorrectsVisitID string
	Evidence        int      // blobs referenced
	EvidencePresent int      // of those, present
	Flags           []string // evidence flag names
}

// ExportHousehold is one household row of an export.
type ExportHousehold struct {
	ID        string
	PlaceCode string
	PlaceName string
	Fields    map[string]json.RawMessage
	HasPoint  bool
	Lon, Lat  float64
	Version   int64
	UpdatedAt time.Time
	Visits    int
	LastVisit time.Time
}
