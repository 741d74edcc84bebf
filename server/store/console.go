package store

import (
	"time"

	"fieldsync/server/domain"
)

// ConsoleTargetPerCadre is how many visits a cadre must make a month
// (DOMAIN.md: at least four households or firms a month).
const ConsoleTargetPerCadre = 4

// PlaceProgress is the progress of one place and everything under it.
type PlaceProgress struct {
	Place domain.Place `json:"place"`
	Depth int          `json:"depth"` // 0 for the root asked for

	Households       int `json:"households"`
	VisitedThisMonth int `json:"visited_this_month"` // households with a visit this month
	VisitsThisMonth  int `json:"visits_this_month"`
	Cadres           int `json:"cadres"` // field workers assigned in the subtree
	Target           int `json:"target"` // ConsoleTargetPerCadre × Cadres

	Visits           int `json:"visits"`            // all visits
	EvidenceVisits   int `json:"evidence_visits"`   // visits whose evidence counts (not rejected, not corrected)
	EvidenceComplete int `json:"evidence_complete"` // of those, with every required slot filled
	Submitted        int `json:"submitted"`         // awaiting review
	NeedsRework      int `json:"needs_rework"`
	Approved         int `json:"approved"`
	Rejected         int `json:"rejected"`
	OpenConflicts    int `json:"open_conflicts"`
	Flagged          int `json:"flagged"`       // visits (not rejected) with an evidence flag
	OpenRework       int `json:"open_rework"`   // open rework tasks
	EvidenceGaps     int `json:"evidence_gaps"` // EvidenceVisits − EvidenceComplete
}

// Add adds o's counts (all but Place, Depth, Cadres, Target and EvidenceGaps)
// to p: how ConsoleProgress rolls a subtree up.
func (p *PlaceProgress) Add(o *PlaceProgress) {
	p.Households += o.Households
	p.VisitedThisMonth += o.VisitedThisMonth
	p.VisitsThisMonth += o.VisitsThisMonth
	p.Visits += o.Visits
	p.EvidenceVisits += o.EvidenceVisits
	p.EvidenceComplete += o.EvidenceComplete
	p.Submitted += o.Submitted
	p.NeedsRework += o.NeedsRework
	p.Approved += o.Approved
	p.Rejected += o.Rejected
	p.OpenConflicts += o.OpenConflicts
	p.Flagged += o.Flagged
	p.OpenRework += o.OpenRework
}

// CadreProgress is one field worker's visits in a period.
type CadreProgress struct {
	UserID      int64    `json:"user_id"`
	Username    string   `json:"username"`
	DisplayName string   `json:"display_name"`
	PlaceCodes  []string `json:"place_codes"`
	Visits      int      `json:"visits"`
	Target      int      `json:"target"`
}

// DayCount is a number of visits on one local day.
type DayCount struct {
	Day   string `json:"day"` // YYYY-MM-DD, local
	Count int    `json:"count"`
}

// Household statuses on the map, the most urgent first.
const (
	MapFlagged     = "flagged"      // a visit (not rejected) has an evidence flag
	MapNeedsRework = "needs_rework" // an open rework task
	MapVisited     = "visited"      // visited in the period
	MapNotVisited  = "not_visited"
)

// MapHousehold is a household point on the map.
type MapHousehold struct {
	ID        string  `json:"id"`
	PlaceCode string  `json:"place_code"`
	HeadName  string  `json:"head_name"`
	Lon       float64 `json:"lon"`
	Lat       float64 `json:"lat"`
	HasPoint  bool    `json:"has_point"`
	Visits    int     `json:"visits"` // in the period
	LastVisit string  `json:"last_visit,omitempty"`
	Status    string  `json:"status"`
}

// MapVisit is a visit point with its GPS accuracy.
type MapVisit struct {
	ID          string    `json:"id"`
	HouseholdID string    `json:"household_id"`
	FormID      string    `json:"form_id"`
	Lon         float64   `json:"lon"`
	Lat         float64   `json:"lat"`
	AccuracyM   float64   `json:"accuracy_m"`
	State       string    `json:"state"`
	DeviceTime  time.Time `json:"device_time"`
}

// SlotGap is one evidence slot of a visit that lacks blobs.
type SlotGap struct {
	Slot       string `json:"slot"`
	MinCount   int    `json:"min_count"`
	Referenced int    `json:"referenced"` // blobs the visit names in the slot
	Present    int    `json:"present"`    // of those, uploaded and verified
}

// VisitEvidenceGap is a visit whose required evidence is incomplete.
type VisitEvidenceGap struct {
	VisitID     string    `json:"visit_id"`
	HouseholdID string    `json:"household_id"`
	HeadName    string    `json:"head_name"`
	PlaceCode   string    `json:"place_code"`
	PlaceName   string    `json:"place_name"`
	FormID      string    `json:"form_id"`
	FormVersion int       `json:"form_version"`
	UserName    string    `json:"user_name"`
	DeviceTime  time.Time `json:"device_time"`
	State       string    `json:"state"`
	Missing     []SlotGap `json:"missing"`
}

// GapSummary counts gaps of one slot of one form.
type GapSummary struct {
	FormID     string `json:"form_id"`
	Slot       string `json:"slot"`
	Visits     int    `json:"visits"`
	Households int    `json:"households"`
}

// EvidenceGapReport is what the evidence-gaps page shows for a place.
type EvidenceGapReport struct {
	Visits     int                `json:"visits"`     // visits with a gap
	Households int                `json:"households"` // households with such a visit
	ByPlace    map[string]int     `json:"by_place"`   // visits with a gap per place code (own, not rolled up)
	BySlot     []GapSummary       `json:"by_slot"`
	Items      []VisitEvidenceGap `json:"items"`     // newest first, one page
	Truncated  bool               `json:"truncated"` // more visits after this page
}

// BlobMeta is what the console shows of an evidence blob.
type BlobMeta struct {
	SHA256    string   `json:"sha256"`
	Present   bool     `json:"present"`
	MediaType string   `json:"media_type,omitempty"`
	Size      int64    `json:"size,omitempty"`
	ExifTime  string   `json:"exif_time,omitempty"`
	ExifLon   *float64 `json:"exif_lon,omitempty"`
	ExifLat   *float64 `json:"exif_lat,omitempty"`
}

// ConsoleFlag is one evidence flag of a visit (SHA256 "" for the visit
// itself).
type ConsoleFlag struct {
	VisitID string `json:"visit_id"`
	SHA256  string `json:"sha256,omitempty"`
	Flag    string `json:"flag"`
	Detail  string `json:"detail"`
}
