package mobileclient

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/mattn/go-sqlite3" // the SQLite driver

	"fieldsync/migrations"
	"fieldsync/syncproto"
)

// The package's errors. Returned errors wrap one of them (test with
// errors.Is); server errors also wrap the *syncproto.Error the server sent
// (errors.As).
var (
	// ErrNotEnrolled: the device has no device id and token yet.
	ErrNotEnrolled = errors.New("device not enrolled")
	// ErrAlreadyEnrolled: Enroll on a device database that already has an
	// identity (its outbox belongs to that device id).
	ErrAlreadyEnrolled = errors.New("device already enrolled")
	// ErrUnauthorized: the server refused the device token (401), e.g. the
	// device was revoked.
	ErrUnauthorized = errors.New("unauthorized: device token refused")
	// ErrUnsupportedVersion: the server does not speak this protocol
	// version (426).
	ErrUnsupportedVersion = errors.New("server does not support this protocol version")
	// ErrSequenceGap: the server expects another sequence number than the
	// first one in the outbox. The error is a *SequenceGapError carrying
	// the expected number. The device does not try to repair this.
	ErrSequenceGap = errors.New("sequence gap")
	// ErrSequenceReused: the server had already applied some of the
	// outbox's sequence numbers with other content (this device's
	// database was restored from a backup, or the app reinstalled with its
	// old token). Sync renumbers the unsent outbox after the server's last
	// seq and pushes again on its own; the error (a *SequenceReusedError)
	// is returned only if that did not help.
	ErrSequenceReused = errors.New("sequence number reused")
	// ErrUnavailable: the server could not be reached or kept answering
	// 5xx/429 for every allowed attempt.
	ErrUnavailable = errors.New("server unavailable")
	// ErrServer: the server refused a request for another reason, or
	// answered something the client cannot use.
	ErrServer = errors.New("server error")
	// ErrNotFound: no such household, place, form or result on the device.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: a local write was refused before queuing (bad answers,
	// ids, fields, points); nothing was written.
	ErrInvalid = errors.New("invalid")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("client closed")
	// ErrCorrupt: a queued evidence file no longer matches the SHA-256 it
	// was queued under (changed or damaged on the device), or the server
	// found that the bytes it received do not. The upload is marked failed
	// and is not retried.
	ErrCorrupt = errors.New("evidence file corrupt")
	// ErrWeakGPS: RecordVisit was given a visit without a GPS point, or
	// with an accuracy beyond its form's max_accuracy_m, and the caller
	// did not acknowledge it (AcceptNoGPS); nothing was written. The error
	// is a *GPSWarning.
	ErrWeakGPS = errors.New("visit without a GPS fix within the form's accuracy limit")
)

// SequenceGapError is returned (wrapping ErrSequenceGap) when the server
// refuses a push because its first sequence number does not follow the
// last one it applied for this device.
type SequenceGapError struct {
	// Expected is the sequence number the server wants next.
	Expected int64
	// Sent is the first sequence number of the refused push.
	Sent int64
	// Server is the error body, if any.
	Server *syncproto.Error
}

func (e *SequenceGapError) Error() string {
	return fmt.Sprintf("sequence gap: server expects seq %d, device sent %d", e.Expected, e.Sent)
}

// Unwrap makes errors.Is(err, ErrSequenceGap) and errors.As(err,
// **syncproto.Error) work.
func (e *SequenceGapError) Unwrap() []error {
	if e.Server == nil {
		return []error{ErrSequenceGap}
	}
	return []error{ErrSequenceGap, e.Server}
}

// SequenceReusedError is returned (wrapping ErrSequenceReused) when the
// server refuses a push because a sequence number in it was applied before
// with other content.
type SequenceReusedError struct {
	// Seq is the first reused sequence number of the refused push.
	Seq int64
	// LastSeq is the last sequence number the server applied.
	LastSeq int64
	// Server is the error body, if any.
	Server *syncproto.Error
}

func (e *SequenceReusedError) Error() string {
	return fmt.Sprintf("sequence reused: the server applied seq %d with other content (its last seq is %d)", e.Seq, e.LastSeq)
}

// Unwrap makes errors.Is(err, ErrSequenceReused) and errors.As(err,
// **syncproto.Error) work.
func (e *SequenceReusedError) Unwrap() []error {
	if e.Server == nil {
		return []error{ErrSequenceReused}
	}
	return []error{ErrSequenceReused, e.Server}
}

// Backoff configures retries of one request.
type Backoff struct {
	// Base is the first retry's upper bound (default 500ms); it doubles for
	// each further retry. The actual wait is random in [0, bound] (full
	// jitter).
	Base time.Duration
	// Max caps one wait (default 30s), also when the server asks for a
	// longer Retry-After.
	Max time.Duration
	// MaxAttempts bounds the tries of one request, the first included
	// (default 5).
	MaxAttempts int
}

// Options configures a Client. The zero value (or nil) gives the defaults.
type Options struct {
	// HTTPClient sends the requests (default: a client with a 2 minute
	// timeout). Tests inject transports here.
	HTTPClient *http.Client
	// Now replaces time.Now for device times, HLCs and ids (clock skew
	// tests).
	Now func() time.Time
	// MaxBatch fixes the most mutations of one push (at most
	// syncproto.MaxPushMutations). Zero (the default) adapts the batch to
	// the link: each sync's first push carries at most StartBatch; every
	// full push answered within GrowBatchWithin doubles the next, up to
	// GrownBatch, as TCP's slow start grows its window. A slow answer
	// stops the growth and the next sync starts small again, so a weak
	// link never risks a big body, while a good one sends a long outbox
	// in few round trips.
	MaxBatch int
	// MaxPushBytes bounds the encoded mutations of one push before
	// compression (default 256 KiB); a single larger mutation still goes
	// alone.
	MaxPushBytes int
	// PullBytes is the page size asked of the server (default
	// syncproto.DefaultPullBytes).
	PullBytes int
	// AppVersion is reported in the outbox health and the User-Agent.
	AppVersion string
	// Backoff configures retries.
	Backoff Backoff
	// MaxPhotoPx is the longest side, in pixels, of a photo (JPEG or PNG)
	// queued by PrepareEvidence or AttachEvidence (default 1600). Bigger
	// photos are downscaled and re-encoded as JPEG before they are hashed.
	MaxPhotoPx int
	// PhotoQuality is the JPEG quality of downscaled photos (default 85).
	PhotoQuality int
	// ChunkSize is the most evidence bytes sent in one PATCH (default
	// 256 KiB). Once a PATCH was cut, the rest of that sync sends a
	// quarter of it (at least 16 KiB).
	ChunkSize int
	// ChunkChecksums sends each chunk's SHA-256 (tus Upload-Checksum),
	// until the first cut. Off by default: the server discards a
	// checksummed chunk that arrives only in part, so every cut would cost
	// up to a chunk, while without it the server keeps every byte that
	// arrived. The server re-hashes the whole file before it stores
	// anything, so the content is guarded either way; checksums only find
	// a corrupt chunk earlier.
	ChunkChecksums bool

	growBatch bool // MaxBatch was left to adapt (see MaxBatch)
}

// The adaptive push batch (Options.MaxBatch zero): its start, its bound,
// and how quickly a full push must be answered for the next to double.
const (
	StartBatch      = 20
	GrownBatch      = 200
	GrowBatchWithin = 2 * time.Second
)

func (o *Options) setDefaults() error {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 2 * time.Minute}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	switch {
	case o.MaxBatch < 0:
		return fmt.Errorf("options: MaxBatch %d < 0: %w", o.MaxBatch, ErrInvalid)
	case o.MaxBatch == 0:
		o.MaxBatch, o.growBatch = StartBatch, true
	case o.MaxBatch > syncproto.MaxPushMutations:
		o.MaxBatch = syncproto.MaxPushMutations
	}
	switch {
	case o.MaxPushBytes < 0:
		return fmt.Errorf("options: MaxPushBytes %d < 0: %w", o.MaxPushBytes, ErrInvalid)
	case o.MaxPushBytes == 0:
		o.MaxPushBytes = 256 << 10
	}
	switch {
	case o.PullBytes < 0:
		return fmt.Errorf("options: PullBytes %d < 0: %w", o.PullBytes, ErrInvalid)
	case o.PullBytes == 0:
		o.PullBytes = syncproto.DefaultPullBytes
	}
	b := &o.Backoff
	if b.Base < 0 || b.Max < 0 || b.MaxAttempts < 0 {
		return fmt.Errorf("options: negative backoff setting: %w", ErrInvalid)
	}
	if b.Base == 0 {
		b.Base = 500 * time.Millisecond
	}
	if b.Max == 0 {
		b.Max = 30 * time.Second
	}
	if b.Max < b.Base {
		b.Max = b.Base
	}
	if b.MaxAttempts == 0 {
		b.MaxAttempts = 5
	}
	switch {
	case o.MaxPhotoPx < 0:
		return fmt.Errorf("options: MaxPhotoPx %d < 0: %w", o.MaxPhotoPx, ErrInvalid)
	case o.MaxPhotoPx == 0:
		o.MaxPhotoPx = 1600
	}
	switch {
	case o.PhotoQuality < 0 || o.PhotoQuality > 100:
		return fmt.Errorf("options: PhotoQuality %d outside 1..100: %w", o.PhotoQuality, ErrInvalid)
	case o.PhotoQuality == 0:
		o.PhotoQuality = 85
	}
	switch {
	case o.ChunkSize < 0:
		return fmt.Errorf("options: ChunkSize %d < 0: %w", o.ChunkSize, ErrInvalid)
	case o.ChunkSize == 0:
		o.ChunkSize = 256 << 10
	case o.ChunkSize > syncproto.MaxEvidenceBytes:
		o.ChunkSize = syncproto.MaxEvidenceBytes
	}
	return nil
}

// Client is one device: its database and its link to the server. It is
// safe for concurrent use; local writes are serialized, and one Sync runs
// at a time.
type Client struct {
	db     *sql.DB
	dir    string // the client's folder (device.db, evidence/)
	opts   Options
	server string
	clock  *syncproto.Clock

	writeMu sync.Mutex    // serializes write transactions (seq + HLC order)
	syncSem chan struct{} // one Sync/Push/Pull at a time
	closed  atomic.Bool
	// pushV1: the server refused a compact (version 2) push; this Client
	// pushes in the version 1 form from then on.
	pushV1 atomic.Bool
	// lastCut is when an upload request last lost its connection mid-way
	// (unix nanoseconds; 0: never since Open).
	lastCut atomic.Int64
}

// DBFile is the name of the device database inside the client's folder.
const DBFile = "device.db"

// Open opens (creating if needed) the device database dir/device.db and
// brings its schema up to date. serverURL is the server's base URL, e.g.
// "https://fieldsync.example.org"; when empty, the URL saved at enrollment
// is used. opts may be nil.
func Open(dir, serverURL string, opts *Options) (*Client, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if err := o.setDefaults(); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	// _stmt_cache_size keeps each connection's last 64 prepared
	// statements (go-sqlite3's bounded LRU; our SQL is constant text): a
	// push's answers are saved with two statements per mutation, and
	// preparing them again each time was 16% of the device's CPU in p8.
	dsn := filepath.Join(dir, DBFile) +
		"?_journal_mode=WAL&_synchronous=FULL&_foreign_keys=on&_busy_timeout=10000&_txlock=immediate&_stmt_cache_size=64"
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	ctx := context.Background()
	if _, err := migrations.Up(ctx, db, migrations.Device, 0); err != nil {
		db.Close()
		return nil, fmt.Errorf("open: %w", err)
	}
	removeTempEvidence(dir)
	c := &Client{
		db:      db,
		dir:     dir,
		opts:    o,
		clock:   &syncproto.Clock{Now: o.Now},
		syncSem: make(chan struct{}, 1),
	}
	saved, _, err := getMeta(ctx, db, metaServerURL)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open: %w", err)
	}
	c.server = strings.TrimRight(serverURL, "/")
	if c.server == "" {
		c.server = saved
	}
	last, _, err := getMeta(ctx, db, metaHLC)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open: %w", err)
	}
	if last != "" {
		h, err := syncproto.ParseHLC(last)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("open: saved hlc: %w", err)
		}
		// The clock issues only timestamps after the last one persisted,
		// even when the wall clock went backwards across the restart.
		c.clock.Observe(h)
	}
	// Best effort: a copy left now is tried again at the next Open.
	_ = c.prunePrepared(ctx)
	return c, nil
}

// Close closes the database. Pending work stays in it for the next Open.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	// Wait for a running write transaction to finish.
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return c.db.Close()
}

func (c *Client) check() error {
	if c.closed.Load() {
		return ErrClosed
	}
	return nil
}

func (c *Client) now() time.Time { return c.opts.Now().UTC() }

// Keys of device_meta.
const (
	metaDeviceID   = "device_id"
	metaToken      = "token"
	metaUsername   = "username"
	metaServerURL  = "server_url"
	metaCursor     = "cursor"
	metaLastSeq    = "last_seq"
	metaHLC        = "hlc"
	metaLastSyncAt = "last_sync_at"
	metaUploadPol  = "upload_policy"
	// metaEnrollAsk is the code and token of an enrollment asked for
	// whose answer has not arrived ("code token").
	metaEnrollAsk = "enroll_ask"
)

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func getMeta(ctx context.Context, q querier, key string) (string, bool, error) {
	var v string
	err := q.QueryRowContext(ctx, `SELECT value FROM device_meta WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("meta %s: %w", key, err)
	}
	return v, true, nil
}

func setMeta(ctx context.Context, q querier, key, value string) error {
	_, err := q.ExecContext(ctx, `INSERT INTO device_meta(key, value) VALUES (?, ?)
		ON CONFLICT(key) DO UPDATE SET value = excluded.value`, key, value)
	if err != nil {
		return fmt.Errorf("meta %s: %w", key, err)
	}
	return nil
}

// saveHLC persists h unless a later value is already saved (HLC strings
// are fixed width and sort like the clock).
func saveHLC(ctx context.Context, q querier, h syncproto.HLC) error {
	_, err := q.ExecContext(ctx, `INSERT INTO device_meta(key, value) VALUES (?, ?)
		ON CONFLICT(key) DO UPDATE SET value = excluded.value WHERE excluded.value > device_meta.value`, metaHLC, h.String())
	if err != nil {
		return fmt.Errorf("meta hlc: %w", err)
	}
	return nil
}

// withTx runs fn in one write transaction.
func (c *Client) withTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if err := c.check(); err != nil {
		return err
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if err := c.check(); err != nil {
		return err
	}
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// tsLayout keeps times sortable as text.
const tsLayout = "2006-01-02T15:04:05.000000000Z"

func ts(t time.Time) string { return t.UTC().Format(tsLayout) }

func parseTS(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(tsLayout, s)
	if err != nil {
		t, _ = time.Parse(time.RFC3339Nano, s)
	}
	return t
}

// DeviceInfo says who this device is.
type DeviceInfo struct {
	DeviceID   string
	Username   string
	ServerURL  string
	Enrolled   bool
	LastSyncAt time.Time
	// HasCursor is set once a first pull has been saved.
	HasCursor bool
}

// Info returns the device's identity and sync state.
func (c *Client) Info() (DeviceInfo, error) {
	if err := c.check(); err != nil {
		return DeviceInfo{}, err
	}
	ctx := context.Background()
	var d DeviceInfo
	var err error
	if d.DeviceID, _, err = getMeta(ctx, c.db, metaDeviceID); err != nil {
		return d, err
	}
	if d.Username, _, err = getMeta(ctx, c.db, metaUsername); err != nil {
		return d, err
	}
	d.ServerURL = c.server
	d.Enrolled = d.DeviceID != ""
	last, _, err := getMeta(ctx, c.db, metaLastSyncAt)
	if err != nil {
		return d, err
	}
	d.LastSyncAt = parseTS(last)
	cur, _, err := getMeta(ctx, c.db, metaCursor)
	if err != nil {
		return d, err
	}
	d.HasCursor = cur != ""
	return d, nil
}

type credentials struct{ deviceID, token string }

func (c *Client) creds(ctx context.Context) (credentials, error) {
	id, _, err := getMeta(ctx, c.db, metaDeviceID)
	if err != nil {
		return credentials{}, err
	}
	tok, _, err := getMeta(ctx, c.db, metaToken)
	if err != nil {
		return credentials{}, err
	}
	if id == "" || tok == "" {
		return credentials{}, ErrNotEnrolled
	}
	if c.server == "" {
		return credentials{}, fmt.Errorf("no server URL: %w", ErrNotEnrolled)
	}
	return credentials{deviceID: id, token: tok}, nil
}
