package syncproto

import (
	"encoding/json"
	"math"
	"strconv"
	"time"
)

// MutationKind names what a pushed mutation does.
type MutationKind string

// The mutation kinds of protocol version 1.
const (
	KindVisitCreate     MutationKind = "visit.create"
	KindHouseholdCreate MutationKind = "household.create"
	KindHouseholdUpdate MutationKind = "household.update"
	KindHouseholdMove   MutationKind = "household.move"
	KindHouseholdDelete MutationKind = "household.delete"
	KindEvidenceAttach  MutationKind = "evidence.attach"
)

// OpKind names what a pulled op asks the device to do.
type OpKind string

// The op kinds a pull carries.
const (
	// OpPut stores the entity, replacing any local copy.
	OpPut OpKind = "put"
	// OpDelete removes the entity (a tombstone, or the entity left the
	// device's scope on its own, e.g. a household that moved away).
	OpDelete OpKind = "delete"
	// OpScopeEnter announces that Place and its descendants entered the
	// device's scope; their entities follow as puts.
	OpScopeEnter OpKind = "scope_enter"
	// OpScopeLeave tells the device to drop everything it holds under Place
	// and its descendants (households, visits, conflicts, tasks, the places
	// themselves). Unpushed local mutations stay in the outbox.
	OpScopeLeave OpKind = "scope_leave"
	// OpReset tells the device to drop its whole local copy (never its
	// outbox) and continue pulling from the cursor in the same response,
	// which starts a clean full copy.
	OpReset OpKind = "reset"
)

// EntityType names the kind of entity an op carries.
type EntityType string

// The entity types.
const (
	EntityPlace     EntityType = "place"
	EntityForm      EntityType = "form"
	EntityHousehold EntityType = "household"
	EntityVisit     EntityType = "visit"
	EntityConflict  EntityType = "conflict"
	EntityTask      EntityType = "task"
)

// Point is a WGS84 position.
type Point struct {
	Lon float64 `json:"lon"`
	Lat float64 `json:"lat"`
}

// Valid reports whether p is a finite WGS84 coordinate.
func (p Point) Valid() bool {
	return finite(p.Lon) && finite(p.Lat) && p.Lon >= -180 && p.Lon <= 180 && p.Lat >= -90 && p.Lat <= 90
}

// Problem says what is wrong with the point, naming the coordinate and
// its value ("" when it is valid).
func (p Point) Problem() string {
	switch {
	case !finite(p.Lon) || p.Lon < -180 || p.Lon > 180:
		return "point.lon " + strconv.FormatFloat(p.Lon, 'g', -1, 64) + " is outside [-180, 180]"
	case !finite(p.Lat) || p.Lat < -90 || p.Lat > 90:
		return "point.lat " + strconv.FormatFloat(p.Lat, 'g', -1, 64) + " is outside [-90, 90]"
	}
	return ""
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// EvidenceRef names a blob attached to a visit's evidence slot. The blob
// itself travels apart, through the resumable upload endpoint.
type EvidenceRef struct {
	SHA256    string `json:"sha256"`
	Size      int64  `json:"size"`
	MediaType string `json:"media_type"`
	Slot      string `json:"slot"`
}

// Visit is one household visit: who, when, where, which form, the answers
// and evidence references. Visits are append-only; a correction is a new
// visit whose CorrectsVisitID names the one it corrects.
type Visit struct {
	ID              string                     `json:"id"`
	HouseholdID     string                     `json:"household_id"`
	FormID          string                     `json:"form_id"`
	FormVersion     int                        `json:"form_version"`
	Answers         map[string]json.RawMessage `json:"answers"`
	Point           *Point                     `json:"point,omitempty"`
	AccuracyM       float64                    `json:"accuracy_m,omitempty"`
	DeviceTime      time.Time                  `json:"device_time"`
	Evidence        []EvidenceRef              `json:"evidence,omitempty"`
	CorrectsVisitID string                     `json:"corrects_visit_id,omitempty"`
	// GPSReason is the worker's reason for saving the visit without a GPS
	// fix within the form's max_accuracy_m (e.g. "山谷里没有信号"):
	// optional, at most MaxGPSReasonRunes code points (CheckGPSReason).
	// The server keeps it and shows it with the visit_without_gps and
	// poor_gps_accuracy flags. Added 2026-12-06, within version 1.
	GPSReason string `json:"gps_reason,omitempty"`

	// Set by the server in pulls; ignored in pushes.
	PlaceCode   string    `json:"place_code,omitempty"`
	DeviceID    string    `json:"device_id,omitempty"`
	UserName    string    `json:"user_name,omitempty"`
	ServerTime  time.Time `json:"server_time,omitzero"`
	ReviewState string    `json:"review_state,omitempty"`
}

// Household is the long-lived entity visits update. Fields is a flat map of
// field name to JSON value. Members are fields named "member.<member id>"
// whose value is a member object; a null value removes the member. The
// household's position is the field "location", a {"lon","lat"} object.
type Household struct {
	ID        string                     `json:"id"`
	PlaceCode string                     `json:"place_code"`
	Fields    map[string]json.RawMessage `json:"fields"`

	// Set by the server in pulls.
	Version int64 `json:"version,omitempty"`
}

// HouseholdUpdate changes some fields of a household. BaseVersion is the
// household version the device started from; Fields carries only the fields
// it changed (null removes a field or a member).
type HouseholdUpdate struct {
	HouseholdID string                     `json:"household_id"`
	BaseVersion int64                      `json:"base_version"`
	Fields      map[string]json.RawMessage `json:"fields"`
}

// HouseholdMove moves a household to another place.
type HouseholdMove struct {
	HouseholdID string `json:"household_id"`
	BaseVersion int64  `json:"base_version"`
	PlaceCode   string `json:"place_code"`
}

// HouseholdDelete deletes a household (it stays as a tombstone).
type HouseholdDelete struct {
	HouseholdID string `json:"household_id"`
	BaseVersion int64  `json:"base_version"`
}

// EvidenceAttach adds an evidence reference to an existing visit.
type EvidenceAttach struct {
	VisitID  string      `json:"visit_id"`
	Evidence EvidenceRef `json:"evidence"`
}

// Mutation is one change made on a device. Seq is the device's own sequence
// number: 1, 2, 3, ... without gaps, never reused. Exactly one payload field
// matching Kind is set. (Seq and Kind are left out only in the compact
// form of a version 2 push; see Compact.)
type Mutation struct {
	Seq  int64        `json:"seq,omitempty"`
	Kind MutationKind `json:"kind,omitempty"`
	HLC  HLC          `json:"hlc"`

	Visit           *Visit           `json:"visit,omitempty"`
	Household       *Household       `json:"household,omitempty"`
	HouseholdUpdate *HouseholdUpdate `json:"household_update,omitempty"`
	HouseholdMove   *HouseholdMove   `json:"household_move,omitempty"`
	HouseholdDelete *HouseholdDelete `json:"household_delete,omitempty"`
	EvidenceAttach  *EvidenceAttach  `json:"evidence_attach,omitempty"`
}

// OutboxHealth is what a device reports about its own queue on every sync,
// so supervisors can see who is stuck.
type OutboxHealth struct {
	PendingMutations int       `json:"pending_mutations"`
	PendingBlobs     int       `json:"pending_blobs"`
	PendingBytes     int64     `json:"pending_bytes"`
	OldestPending    time.Time `json:"oldest_pending,omitzero"`
	AppVersion       string    `json:"app_version,omitempty"`
}

// PushRequest carries a batch of mutations, in sequence order.
type PushRequest struct {
	ProtocolVersion int           `json:"protocol_version"`
	DeviceID        string        `json:"device_id"`
	Mutations       []Mutation    `json:"mutations"`
	Health          *OutboxHealth `json:"health,omitempty"`
}

// Result statuses of a pushed mutation.
const (
	StatusApplied  = "applied"
	StatusRejected = "rejected"
)

// MutationResult is the server's answer for one mutation. A rejected
// mutation is final: it advanced the sequence and will never apply; Code
// and Message say why. Results are stored, so a repeated push answers the
// same.
type MutationResult struct {
	Seq     int64  `json:"seq"`
	Status  string `json:"status"`
	Code    Code   `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
	// Version is the entity version after the mutation (households).
	Version int64 `json:"version,omitempty"`
	// Conflicts counts fields of this mutation that clashed with another
	// edit; each is kept in a conflict record.
	Conflicts int `json:"conflicts,omitempty"`
	// ClockClamped is set when the mutation's HLC ran ahead of the server
	// clock and was clamped.
	ClockClamped bool `json:"clock_clamped,omitempty"`
}

// PushResponse answers a push after the server has committed it.
type PushResponse struct {
	ProtocolVersion int              `json:"protocol_version"`
	LastSeq         int64            `json:"last_seq"`
	Results         []MutationResult `json:"results"`
	ServerHLC       HLC              `json:"server_hlc"`
}

// PullRequest asks for the changes in the device's scope after Cursor.
type PullRequest struct {
	ProtocolVersion int           `json:"protocol_version"`
	DeviceID        string        `json:"device_id"`
	Cursor          string        `json:"cursor"`
	MaxBytes        int           `json:"max_bytes,omitempty"`
	Health          *OutboxHealth `json:"health,omitempty"`
}

// Place is a node of the place tree as a device sees it.
type Place struct {
	Code       string          `json:"code"`
	Name       string          `json:"name"`
	Level      string          `json:"level"`
	ParentCode string          `json:"parent_code,omitempty"`
	Boundary   json.RawMessage `json:"boundary,omitempty"` // GeoJSON geometry
}

// Conflict is a field of a household on which two edits clashed. The
// losing value is kept here; a supervisor resolves open ones.
type Conflict struct {
	ID           string          `json:"id"`
	HouseholdID  string          `json:"household_id"`
	Field        string          `json:"field"`
	KeptValue    json.RawMessage `json:"kept_value"`
	LosingValue  json.RawMessage `json:"losing_value"`
	LosingDevice string          `json:"losing_device,omitempty"`
	LosingUser   string          `json:"losing_user,omitempty"`
	LosingHLC    HLC             `json:"losing_hlc"`
	State        string          `json:"state"` // auto_resolved, open, resolved
	Sensitive    bool            `json:"sensitive,omitempty"`
	CreatedAt    time.Time       `json:"created_at"`
}

// Task is work sent back to a worker, e.g. a visit that needs rework.
type Task struct {
	ID          string    `json:"id"`
	Kind        string    `json:"kind"` // rework
	VisitID     string    `json:"visit_id"`
	HouseholdID string    `json:"household_id"`
	Reason      string    `json:"reason"`
	State       string    `json:"state"` // open, done
	CreatedAt   time.Time `json:"created_at"`
}

// Op is one instruction in a pull response. Exactly the payload matching
// Type is set on puts; deletes carry only Type and ID; scope ops carry
// Place.
type Op struct {
	Op    OpKind     `json:"op"`
	Type  EntityType `json:"type,omitempty"`
	ID    string     `json:"id,omitempty"`
	Place string     `json:"place,omitempty"`
	// Seq is the change-log sequence that produced the op (0 for snapshot
	// copies); informational.
	Seq int64 `json:"seq,omitempty"`

	PlaceData *Place     `json:"place_data,omitempty"`
	Form      *FormDef   `json:"form,omitempty"`
	Household *Household `json:"household,omitempty"`
	Visit     *Visit     `json:"visit,omitempty"`
	Conflict  *Conflict  `json:"conflict,omitempty"`
	Task      *Task      `json:"task,omitempty"`
}

// PullResponse carries one page of ops. The device applies the ops and
// saves Cursor in one local transaction, then pulls again while HasMore.
type PullResponse struct {
	ProtocolVersion int    `json:"protocol_version"`
	Ops             []Op   `json:"ops"`
	Cursor          string `json:"cursor"`
	HasMore         bool   `json:"has_more"`
	ServerHLC       HLC    `json:"server_hlc"`
	// LastSeq is the last of this device's mutation sequence numbers the
	// server holds. A device that has answers for later ones knows the
	// server lost them (it was restored from a backup) and sends them
	// again from its saved results.
	// Absent from servers that do not track it: then the device must not
	// draw conclusions.
	LastSeq *int64 `json:"last_seq,omitempty"`

	// EncodedOps, when it holds one entry per op of Ops, is each op
	// already encoded as JSON (a server encodes its ops to measure its
	// page); WritePullResponse sends these bytes instead of encoding the
	// ops again. Never on the wire.
	EncodedOps []json.RawMessage `json:"-"`
}
