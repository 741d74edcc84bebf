package store

import (
	"context"
	"encoding/json"
	"time"

	"fieldsync/server/domain"
	"fieldsync/server/evidence"
	"fieldsync/syncproto"
)

// Lookups of absent rows return errors wrapping domain.ErrNotFound; a
// store that is overloaded or down returns errors wrapping
// domain.ErrUnavailable.

// Health is what the health endpoint asks.
type Health interface {
	// Ping reports whether the database answers.
	Ping(ctx context.Context) error
}

// Admin is the administration of places, accounts, devices, forms and
// the household register.
type Admin interface {
	UpsertPlaces(ctx context.Context, places []domain.Place) error
	Place(ctx context.Context, code string) (domain.Place, error)
	Places(ctx context.Context, roots []string, withAncestors bool) ([]domain.Place, error)
	// Subtree returns the codes of roots and every place under them.
	Subtree(ctx context.Context, roots []string) (map[string]bool, error)

	CreateUser(ctx context.Context, u domain.User) (domain.User, error)
	User(ctx context.Context, id int64) (domain.User, error)
	UserByName(ctx context.Context, name string) (domain.User, error)
	Users(ctx context.Context) ([]domain.User, error)
	SetUserPlaces(ctx context.Context, userID int64, codes []string) error

	Devices(ctx context.Context, userIDs []int64) ([]domain.Device, error)
	RevokeDevice(ctx context.Context, id string) error

	PublishForm(ctx context.Context, def syncproto.FormDef, by int64) (syncproto.FormDef, error)
	Form(ctx context.Context, id string, version int) (syncproto.FormDef, error)
	Forms(ctx context.Context, latestOnly bool) ([]syncproto.FormDef, error)

	// ImportHouseholds adds or replaces households from a register in one
	// transaction; devices in scope receive the change.
	ImportHouseholds(ctx context.Context, hs []syncproto.Household, by int64) error
}

// Sessions are the signed-in users' sessions, keyed by token hash.
type Sessions interface {
	CreateSession(ctx context.Context, tokenHash string, s domain.Session) error
	Session(ctx context.Context, tokenHash string) (domain.Session, error)
	RevokeSession(ctx context.Context, tokenHash string) error
}

// Sync is what devices do: enroll, authenticate by token, push and pull.
type Sync interface {
	CreateEnrollmentCode(ctx context.Context, codeHash string, userID, createdBy int64, expires time.Time) error
	// Enroll redeems a one-time code for dev with tokenHash. A code that
	// was redeemed already answers with the device it was redeemed for
	// if that device is live and holds tokenHash (its answer was lost, and
	// it asks again with the token it chose); else ErrUsed.
	Enroll(ctx context.Context, codeHash string, dev domain.Device, tokenHash string) (domain.Device, error)
	DeviceByToken(ctx context.Context, tokenHash string) (domain.Device, error)

	// Push applies a device's mutations. A sequence number out of order
	// returns a *SequenceGapError or *SequenceReusedError.
	Push(ctx context.Context, dev PushDevice, req *syncproto.PushRequest) (*syncproto.PushResponse, error)
	// Pull returns the next page of ops for the device after its cursor
	// (syncproto/doc.go has the rules).
	Pull(ctx context.Context, dev PushDevice, req *syncproto.PullRequest) (*syncproto.PullResponse, error)
}

// Review is what a supervisor looks at and decides: households, visits,
// the review queue, conflicts, audit trails and devices that stopped
// syncing.
type Review interface {
	Household(ctx context.Context, id string) (*syncproto.Household, bool, error)
	Households(ctx context.Context, places map[string]bool, limit int) ([]HouseholdRow, error)
	HouseholdVisits(ctx context.Context, id string) ([]syncproto.Visit, error)
	Conflicts(ctx context.Context, householdID string) ([]syncproto.Conflict, error)
	Visit(ctx context.Context, id string) (*syncproto.Visit, error)
	Visits(ctx context.Context, f VisitFilter) ([]VisitRow, error)
	ReviewVisit(ctx context.Context, visitID string, reviewer domain.User, action, reason string) (ReviewResult, error)
	ReviewHistory(ctx context.Context, visitID string) ([]map[string]any, error)
	ListConflicts(ctx context.Context, places map[string]bool, state string) ([]ConflictRow, error)
	ConflictPlace(ctx context.Context, id string) (string, error)
	// ResolveConflict settles a conflict with ResolveKeep, ResolveTake or
	// ResolveValue (then value is the new value).
	ResolveConflict(ctx context.Context, id string, by domain.User, action string, value json.RawMessage) (ConflictRow, error)
	AuditTrail(ctx context.Context, entityType, id string) ([]domain.AuditEvent, error)
	StuckDevices(ctx context.Context, userIDs []int64, d time.Duration) ([]domain.Device, error)
}

// Export is what a CSV, XLSX or GeoJSON export reads (streamed one row at
// a time; fn must not keep the row) and the audit record it leaves.
type Export interface {
	ExportVisits(ctx context.Context, f ExportFilter, fn func(*ExportVisit) error) error
	ExportHouseholds(ctx context.Context, f ExportFilter, fn func(*ExportHousehold) error) error
	// ConsoleExportForms lists the form versions the visits f selects
	// use, so that an export lays out one sheet per form.
	ConsoleExportForms(ctx context.Context, f ExportFilter) ([]syncproto.FormDef, error)
	// CountExport counts the rows an export of what ("visits" or
	// "households") would hold.
	CountExport(ctx context.Context, what string, f ExportFilter) (int, error)
	Forms(ctx context.Context, latestOnly bool) ([]syncproto.FormDef, error)
	Subtree(ctx context.Context, roots []string) (map[string]bool, error)
	User(ctx context.Context, id int64) (domain.User, error)
	Audit(ctx context.Context, action, entityType, entityID, place string, details any) error
}

// Console is the web console's read models: progress, cadres, visits per
// day, the map, evidence gaps and flags. They only read.
type Console interface {
	ConsoleProgress(ctx context.Context, root string, monthFrom, monthTo time.Time) ([]PlaceProgress, error)
	ConsoleCadres(ctx context.Context, root string, from, to time.Time) ([]CadreProgress, error)
	ConsoleVisitsPerDay(ctx context.Context, root string, from, to time.Time, offsetMinutes int) ([]DayCount, error)
	ConsoleHouseholds(ctx context.Context, root string, since time.Time, limit int) ([]MapHousehold, error)
	ConsoleVisitPoints(ctx context.Context, root string, since time.Time, limit int) ([]MapVisit, error)
	ConsoleEvidenceGaps(ctx context.Context, root string, limit, offset int) (*EvidenceGapReport, error)
	ConsoleHouseholdEvidence(ctx context.Context, householdID string) (map[string]BlobMeta, map[string][]ConsoleFlag, error)
	ConsoleVisitFlags(ctx context.Context, visitIDs []string) (map[string][]string, error)
	ConsoleFlagNames(ctx context.Context) ([]string, error)
}

// Uploads is what the tus upload handler (server/upload) needs.
type Uploads interface {
	// CreateUpload records a new upload. The record of an upload with no
	// bytes yet may be made durable only by the next durable write (a
	// power cut can lose it, and the client then creates the upload
	// again); one recorded complete (Done) is durable when it returns.
	CreateUpload(ctx context.Context, u Upload) error
	// Upload returns one upload.
	Upload(ctx context.Context, id string) (Upload, error)
	// UpdateUpload records the offset reached and the new expiry.
	UpdateUpload(ctx context.Context, id string, offset int64, expires time.Time) error
	// CompleteUpload records the blob as present (if it is not yet) and
	// marks the upload done, in one transaction.
	CompleteUpload(ctx context.Context, id string, b Blob, expires time.Time) error
	// DeleteUpload forgets an upload (absent is not an error).
	DeleteUpload(ctx context.Context, id string) error
	// LockUpload holds the upload's lock across server instances until
	// release is called (or the instance dies), so that requests on one
	// upload run one at a time wherever they land. It waits at most as
	// long as ctx. A single-instance store answers at once.
	LockUpload(ctx context.Context, id string) (release func(), err error)
	// ActiveUploads lists up to limit of the device's uploads still
	// receiving, oldest first.
	ActiveUploads(ctx context.Context, deviceID string, limit int) ([]Upload, error)
	// ExpiredUploads lists uploads whose expiry is before now, and every
	// upload of a revoked device.
	ExpiredUploads(ctx context.Context, now time.Time) ([]Upload, error)
	// DeviceUploads lists a device's uploads.
	DeviceUploads(ctx context.Context, deviceID string) ([]Upload, error)
	// Referenced reports whether a visit pushed by the device references
	// the blob.
	Referenced(ctx context.Context, deviceID, sum string) (bool, error)
	// BlobPresent reports whether the blob is present (verified and
	// stored).
	BlobPresent(ctx context.Context, sum string) (bool, error)
	// ClaimPresentBlob reports whether the blob is present and named by
	// a visit link that counts in the device's scope (so the device may
	// download it anyway); if so it records that the device holds the
	// blob, so that its own links to it count without an upload.
	// Otherwise the device must send the bytes: knowing a hash proves
	// nothing. CompleteUpload records the uploading device as holding
	// the blob.
	ClaimPresentBlob(ctx context.Context, deviceID, sum string) (bool, error)
	// BlobArrived runs the evidence checks for every visit that
	// references a blob that has just become present.
	BlobArrived(ctx context.Context, sum string) error
	// UnanalysedBlobs lists up to limit present blobs that have not been
	// analysed yet, oldest first (SHA256, Size, MediaType and StoredAt
	// set).
	UnanalysedBlobs(ctx context.Context, limit int) ([]Blob, error)
	// ClaimBlobsForAnalysis takes up to limit unanalysed blobs, oldest
	// first, that no instance holds (or whose holder's lease has passed)
	// and holds them for this instance for lease: no other instance gets
	// them until then. BlobAnalysed ends the claim.
	ClaimBlobsForAnalysis(ctx context.Context, limit int, lease time.Duration) ([]Blob, error)
	// ReleaseBlobClaims gives back this instance's claims on blobs it did
	// not analyse: any instance may take them again after retryIn (0: at
	// once).
	ReleaseBlobClaims(ctx context.Context, sums []string, retryIn time.Duration) error
	// BlobAnalysed records what was read from a present blob, marks it
	// analysed and ends any claim on it.
	BlobAnalysed(ctx context.Context, sum string, m evidence.Meta) error
	Singletons
}

// Singletons lets periodic work (the upload janitor's sweeps) run on one
// instance at a time when several share the database.
type Singletons interface {
	// TrySingleton takes the cluster-wide lock called name if no one
	// holds it: ok false means another holder (skip this round). release
	// must be called when ok. A lock whose holder dies is free again.
	TrySingleton(ctx context.Context, name string) (release func(), ok bool, err error)
}

// Evidence is what the evidence endpoints need: uploads, blob records and
// the places that may see them, per-visit reports and completeness, and
// the checks that run after a push.
type Evidence interface {
	Uploads
	MissingBlobsFor(ctx context.Context, deviceID string, sums []string) ([]string, error)
	Blob(ctx context.Context, sum string) (BlobRecord, error)
	BlobPlaces(ctx context.Context, sum string) ([]string, error)
	VisitEvidence(ctx context.Context, visitID string) (evidence.VisitReport, error)
	EvidenceGaps(ctx context.Context, roots []string, limit int) ([]evidence.VisitGap, bool, error)
	// RunEvidenceChecksForPush runs the evidence checks for every visit
	// that a committed push created or attached evidence to. It is called
	// after Push returns: a failure here must not fail the push.
	RunEvidenceChecksForPush(ctx context.Context, req *syncproto.PushRequest, resp *syncproto.PushResponse) error
}

// OutboxImport is what importing a device's exported outbox file needs
// (server/outboximport).
type OutboxImport interface {
	DeviceAnyState(ctx context.Context, id string) (domain.Device, error)
	UserByName(ctx context.Context, name string) (domain.User, error)
	Push(ctx context.Context, dev PushDevice, req *syncproto.PushRequest) (*syncproto.PushResponse, error)
	RunEvidenceChecksForPush(ctx context.Context, req *syncproto.PushRequest, resp *syncproto.PushResponse) error
	Referenced(ctx context.Context, deviceID, sum string) (bool, error)
	DeviceHoldsBlob(ctx context.Context, deviceID, sum string) (bool, error)
	// RecordImportedBlob records a blob that came, verified, from the
	// device's outbox file and is already in the blob store: present and
	// held by the device, as CompleteUpload does for an upload. fresh
	// reports a new blob row.
	RecordImportedBlob(ctx context.Context, deviceID string, b Blob) (fresh bool, err error)
	AuditAs(ctx context.Context, actor domain.Actor, action, entityType, entityID string, details any) error
}

// Store is every job at once: what a whole fieldsync server needs of its
// database. Every engine implements it.
type Store interface {
	Health
	Admin
	Sessions
	Sync
	Review
	Export
	Console
	Evidence
	OutboxImport
}
