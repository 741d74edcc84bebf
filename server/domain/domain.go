// Package domain holds the server's own types shared by the HTTP layer and
// the stores: places, users, roles, sessions, devices, and the store
// errors. It has no behaviour beyond small helpers.
package domain

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// Store errors. Stores wrap them with context; callers test with errors.Is.
var (
	ErrNotFound    = errors.New("not found")
	ErrExists      = errors.New("already exists")
	ErrInvalid     = errors.New("invalid")
	ErrExpired     = errors.New("expired")
	ErrUsed        = errors.New("already used")
	ErrRevoked     = errors.New("revoked")
	ErrForbidden   = errors.New("forbidden")
	ErrImmutable   = errors.New("immutable")
	ErrUnavailable = errors.New("unavailable")
	ErrSequenceGap = errors.New("sequence gap")
	// ErrSequenceReused: a sequence number already applied came again with
	// different content.
	ErrSequenceReused = errors.New("sequence number reused")
	ErrStaleCursor    = errors.New("stale cursor")
	ErrWrongContent   = errors.New("same id, different content")
)

// Role is what a user may do.
type Role string

// The roles.
const (
	RoleAdmin       Role = "admin"
	RoleSupervisor  Role = "supervisor"
	RoleFieldWorker Role = "field_worker"
)

// Valid reports whether r is a known role.
func (r Role) Valid() bool {
	return r == RoleAdmin || r == RoleSupervisor || r == RoleFieldWorker
}

// Place levels, from the root down.
var Levels = []string{"county", "township", "village", "group"}

// LevelIndex returns the depth of a level (county 0) or -1.
func LevelIndex(level string) int {
	for i, l := range Levels {
		if l == level {
			return i
		}
	}
	return -1
}

// Place is a node of the place tree.
type Place struct {
	Code       string          `json:"code"`
	Name       string          `json:"name"`
	Level      string          `json:"level"`
	ParentCode string          `json:"parent_code,omitempty"`
	Path       string          `json:"path,omitempty"`
	Boundary   json.RawMessage `json:"boundary,omitempty"` // GeoJSON geometry
	UpdatedAt  time.Time       `json:"updated_at,omitzero"`
}

// IsUnder reports whether a place with path p lies in the subtree of root
// (a place's path like "/c/t/v/").
func IsUnder(p, rootPath string) bool { return strings.HasPrefix(p, rootPath) }

// User is a person who signs in to the console or owns devices.
type User struct {
	ID          int64     `json:"id"`
	Username    string    `json:"username"`
	DisplayName string    `json:"display_name"`
	Role        Role      `json:"role"`
	Disabled    bool      `json:"disabled,omitempty"`
	PlaceCodes  []string  `json:"place_codes"`
	CreatedAt   time.Time `json:"created_at"`

	PasswordHash string `json:"-"`
}

// Session is a signed-in console or API session.
type Session struct {
	UserID    int64
	CSRFToken string
	ExpiresAt time.Time
}

// Device is an enrolled tablet or phone.
type Device struct {
	ID         string     `json:"id"`
	UserID     int64      `json:"user_id"`
	Username   string     `json:"username,omitempty"`
	Name       string     `json:"name"`
	CreatedAt  time.Time  `json:"created_at"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	LastSeenAt *time.Time `json:"last_seen_at,omitempty"`

	// Sync state, filled by listings.
	LastSeq      int64           `json:"last_seq"`
	LastSyncOKAt *time.Time      `json:"last_sync_ok_at,omitempty"`
	AppVersion   string          `json:"app_version,omitempty"`
	Health       json.RawMessage `json:"health,omitempty"`
}

// Principal is who is making a request: a user through a session, or a
// device through its token (then DeviceID is set).
type Principal struct {
	User     User
	DeviceID string
	// Session auth via cookie needs a CSRF check on writes.
	ViaCookie bool
	CSRFToken string
}

// Timestamp formats t the way stores keep times.
func Timestamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// ParseTimestamp reads a stored time.
func ParseTimestamp(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

// Actor is who makes a change, for the audit log: a user through a session
// (Session is a short hash identifying it, never the token), or a device.
type Actor struct {
	UserID   int64
	Name     string
	DeviceID string
	Session  string
}

type actorKey struct{}

// WithActor returns a context that carries the actor of a request.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorFrom returns the request's actor (zero for the system itself).
func ActorFrom(ctx context.Context) Actor {
	a, _ := ctx.Value(actorKey{}).(Actor)
	return a
}

// AuditEvent is one row of the append-only audit log.
type AuditEvent struct {
	ID         int64           `json:"id"`
	At         time.Time       `json:"at"`
	ActorUser  int64           `json:"actor_user,omitempty"`
	ActorName  string          `json:"actor_name,omitempty"`
	DeviceID   string          `json:"device_id,omitempty"`
	Session    string          `json:"session,omitempty"`
	Action     string          `json:"action"`
	EntityType string          `json:"entity_type"`
	EntityID   string          `json:"entity_id"`
	PlaceCode  string          `json:"place_code,omitempty"`
	Before     json.RawMessage `json:"before,omitempty"`
	After      json.RawMessage `json:"after,omitempty"`
}

// Review actions on a visit.
const (
	ReviewApprove = "approve"
	ReviewRework  = "rework"
	ReviewReject  = "reject"
)

// Review states of a visit.
const (
	StateSubmitted   = "submitted"
	StateApproved    = "approved"
	StateNeedsRework = "needs_rework"
	StateRejected    = "rejected"
)

type backgroundKey struct{}

// Background marks ctx as background work: the evidence checks after a
// push, the upload analysis worker. Stores give background work a bounded
// share of their resources (the SQLite read pool), so that the requests of
// people and devices are never starved by it.
func Background(ctx context.Context) context.Context {
	return context.WithValue(ctx, backgroundKey{}, true)
}

// IsBackground reports whether ctx was marked by Background.
func IsBackground(ctx context.Context) bool {
	v, _ := ctx.Value(backgroundKey{}).(bool)
	return v
}
