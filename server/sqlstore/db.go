// Package sqlstore is fieldsync's SQLite store (mattn/go-sqlite3): one
// writer connection that every write goes through, a pool of read-only
// connections, WAL, foreign keys and synchronous=FULL so that a committed
// write survives a process kill or a power cut.
package sqlstore

import (
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/mattn/go-sqlite3" // the SQLite driver

	"fieldsync/migrations"
	"fieldsync/server/domain"
	"fieldsync/server/evidence"
	"fieldsync/server/sqlstore/pgsql"
	"fieldsync/syncproto"
)

// Config configures the store.
type Config struct {
	// Path is the SQLite file. Required unless PostgresURL is set.
	Path string
	// PostgresURL selects PostgreSQL (postgres://user@host/db?...) instead
	// of SQLite: the same store, its SQL rewritten by package pgsql, every
	// write transaction ordered by the sync_head row lock so that any
	// number of instances can share the database.
	PostgresURL string
	// Readers is the size of the read pool (default: 2 × CPUs, at least 4).
	Readers int
	// PoolWait bounds how long a read waits for a pooled connection
	// before it fails with ErrPoolBusy (an HTTP 503); default 30 s.
	PoolWait time.Duration
	// BackgroundReaders is the share of the read pool that background
	// work (domain.Background: checks after pushes, the upload analysis
	// worker) may hold at once, and likewise streaming exports (default
	// Readers/4, at least 1; at most Readers/2 so that at least half the
	// pool is left to requests).
	BackgroundReaders int
	// BusyTimeout is SQLite's busy timeout (default 10 s).
	BusyTimeout time.Duration
	// GroupCommit batches concurrent pushes into one transaction, so many
	// devices share one fsync (default on; set DisableGroupCommit to
	// measure without).
	DisableGroupCommit bool
	// MaxGroup bounds the pushes in one group commit (default 64).
	MaxGroup int
	// WriteTimeout bounds one job (a push, or any other write) in the
	// single writer's group transaction (default 1 minute). Jobs run
	// detached from their caller's cancellation, so a client that goes
	// away cannot abort the transaction the group shares; this deadline is
	// the writer's own.
	WriteTimeout time.Duration
	// MaxClockAhead is how far a device HLC may run ahead of the server
	// clock before it is clamped (default 5 minutes).
	MaxClockAhead time.Duration
	// Evidence sets the thresholds of the checks on arrival (distance
	// from the visit, time zone of the visit day, near-duplicate distance);
	// zero fields take the defaults.
	Evidence evidence.Config
	// InstanceID names this instance in the analysis claims it holds
	// (default: the host name and a random part). An instance started
	// again with the same id takes its own unfinished claims back at
	// once instead of waiting for their leases; ids must differ between
	// instances running at the same time.
	InstanceID string
	// Now replaces time.Now in tests.
	Now func() time.Time
}

func (c *Config) setDefaults() error {
	if c.Path == "" && c.PostgresURL == "" {
		return fmt.Errorf("sqlstore: Path or PostgresURL required: %w", domain.ErrInvalid)
	}
	if c.Readers <= 0 {
		c.Readers = max(4, 2*runtime.NumCPU())
	}
	if c.PoolWait <= 0 {
		c.PoolWait = 30 * time.Second
	}
	if c.BackgroundReaders <= 0 {
		c.BackgroundReaders = c.Readers / 4
	}
	c.BackgroundReaders = max(1, min(c.BackgroundReaders, c.Readers/2))
	if c.BusyTimeout <= 0 {
		c.BusyTimeout = 10 * time.Second
	}
	if c.MaxGroup <= 0 {
		c.MaxGroup = 64
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = time.Minute
	}
	if c.MaxClockAhead <= 0 {
		c.MaxClockAhead = 5 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Store is the SQLite implementation of the server's store interfaces.
type Store struct {
	cfg   Config
	pg    bool    // PostgreSQL (Config.PostgresURL), else SQLite
	w     *sql.DB // exactly one connection: the single writer
	locks *sql.DB // PostgreSQL: connections holding upload locks (LockUpload)
	r     *sql.DB // read-only pool
	clock syncproto.Clock

	instance  string     // this Store's id in analysis claims (instances.go)
	epochMu   sync.Mutex // guards epoch: on PostgreSQL pulls read it again
	epoch     string
	cursorKey []byte

	forms      formCache
	boundaries boundaryCache
	stmts      stmtCache
	rstmts     readStmts
	gate       *readGate
	health     healthBuffer
	evCfg      atomic.Pointer[evidence.Config]
	near       atomic.Pointer[nearIndex] // perceptual hashes of the stored photos
	nearMu     sync.Mutex                // guards nearSeq, nearReload and refreshes
	nearSeq    int64                     // highest hash_seq in near
	nearReload bool                      // the database was replaced: build near again

	pushes    chan *pushJob
	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
}

// DSN returns the go-sqlite3 connection string fieldsync uses for path:
// WAL, synchronous=FULL, foreign keys, a busy timeout, and immediate
// transactions for the writer so that writers queue instead of failing
// to upgrade a read lock. Each connection keeps its last 32 prepared
// statements (go-sqlite3's bounded LRU; our SQL is constant text, never
// built from client values): the writer prepared every upload's and
// review's statements again each time (a tenth of its time in p4).
func DSN(path string, readOnly bool, busy time.Duration) string {
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "FULL")
	q.Set("_foreign_keys", "on")
	q.Set("_busy_timeout", fmt.Sprint(busy.Milliseconds()))
	if readOnly {
		q.Set("mode", "ro")
		q.Set("_query_only", "true")
	} else {
		q.Set("_txlock", "immediate")
	}
	q.Set("_cache_size", "-16000")
	q.Set("_stmt_cache_size", "32")
	return "file:" + path + "?" + q.Encode()
}

// Open opens (creating if needed) the database, applies migrations and
// starts the group-commit writer.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	var w, r *sql.DB
	var err error
	if cfg.PostgresURL != "" {
		w, r, err = openPostgres(ctx, cfg)
	} else {
		w, r, err = openSQLite(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, pg: cfg.PostgresURL != "", instance: cmp.Or(cfg.InstanceID, newInstanceID()), w: w, r: r, done: make(chan struct{}), pushes: make(chan *pushJob, 1024),
		gate: newReadGate(cfg.Readers, cfg.BackgroundReaders, cfg.PoolWait)}
	if s.pg {
		if s.locks, err = pgsql.Open(cfg.PostgresURL, pgsql.Options{MaxConns: uploadLockConns}); err != nil {
			w.Close()
			r.Close()
			return nil, fmt.Errorf("sqlstore: %w", err)
		}
	}
	s.clock.Now = cfg.Now
	s.SetEvidenceConfig(cfg.Evidence)
	if err := s.initMeta(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.releaseStaleClaims(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.loadNearIndex(ctx); err != nil {
		s.Close()
		return nil, err
	}
	s.wg.Add(2)
	go s.writerLoop()
	go s.healthLoop()
	return s, nil
}

// openSQLite opens the single writer connection, applies the migrations
// and opens the read-only pool.
func openSQLite(ctx context.Context, cfg Config) (w, r *sql.DB, err error) {
	w, err = sql.Open("sqlite3", DSN(cfg.Path, false, cfg.BusyTimeout))
	if err != nil {
		return nil, nil, fmt.Errorf("sqlstore: open writer: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, nil, fmt.Errorf("sqlstore: open %s: %w", cfg.Path, err)
	}
	if _, err := migrations.Up(ctx, w, migrations.Server, 0); err != nil {
		w.Close()
		return nil, nil, fmt.Errorf("sqlstore: %w", err)
	}
	r, err = sql.Open("sqlite3", DSN(cfg.Path, true, cfg.BusyTimeout))
	if err != nil {
		w.Close()
		return nil, nil, fmt.Errorf("sqlstore: open readers: %w", err)
	}
	// One connection more than there are read tokens: the health check's
	// own (see readGate).
	r.SetMaxOpenConns(cfg.Readers + 1)
	r.SetMaxIdleConns(cfg.Readers + 1)
	return w, r, nil
}

// Close stops the writer and closes the database.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.wg.Wait()
		s.stmts.mu.Lock()
		for _, st := range s.stmts.m {
			st.Close()
		}
		s.stmts.m = nil
		s.stmts.mu.Unlock()
		s.rstmts.closeAll()
	})
	var locksErr error
	if s.locks != nil {
		locksErr = s.locks.Close()
	}
	return errors.Join(s.r.Close(), s.w.Close(), locksErr)
}

// Ping checks that the database answers a query.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.readRow(context.WithValue(ctx, healthKey{}, true), `SELECT 1`).Scan(&one); err != nil {
		return fmt.Errorf("sqlstore: ping: %w", err)
	}
	return nil
}

// Epoch is this database's epoch: cursors from another epoch reset.
// On PostgreSQL it is the one the last pull read (currentEpoch).
func (s *Store) Epoch() string {
	s.epochMu.Lock()
	defer s.epochMu.Unlock()
	return s.epoch
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Store) initMeta(ctx context.Context) error {
	get := func(key string) (string, error) {
		var v string
		err := s.w.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&v)
		if errors.Is(err, sql.ErrNoRows) {
			v = randomHex(16)
			if key == "cursor_key" {
				v = randomHex(32)
			}
			if _, err = s.w.ExecContext(ctx, `INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT DO NOTHING`, key, v); err == nil {
				// Another instance may have written it first: read what won.
				err = s.w.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&v)
			}
		}
		return v, err
	}
	epoch, err := get("epoch")
	if err != nil {
		return fmt.Errorf("sqlstore: epoch: %w", err)
	}
	s.noteEpoch(epoch)
	key, err := get("cursor_key")
	if err != nil {
		return fmt.Errorf("sqlstore: cursor key: %w", err)
	}
	s.cursorKey, _ = hex.DecodeString(key)
	return nil
}

// NewEpoch starts a new epoch: every cursor handed out before is answered
// with a reset. Restore calls it.
func (s *Store) NewEpoch(ctx context.Context) error {
	e := randomHex(16)
	if _, err := s.w.ExecContext(ctx, `UPDATE meta SET value = ? WHERE key = 'epoch'`, e); err != nil {
		return fmt.Errorf("sqlstore: new epoch: %w", err)
	}
	s.noteEpoch(e)
	return nil
}

func (s *Store) now() time.Time { return s.cfg.Now().UTC() }

func (s *Store) ts() string { return domain.Timestamp(s.now()) }

// writeTx runs fn as one write transaction on the single writer: in a
// savepoint of the writer's next group commit, so concurrent writes
// (pushes, uploads completing, reviews) share one fsync. fn's error rolls
// back what fn did and is returned as is. fn must not call the Store's
// write methods (the writer would wait for itself).
//
// fn gets its own context: ctx's values without its cancellation, bounded
// by the writer's deadline (Config.WriteTimeout). A statement cancelled
// mid-way makes SQLite roll back the whole group transaction, so fn must
// run every statement with that context, never with the caller's (the
// parameter shadows it). Once queued, the job runs even if the caller
// goes away; a caller gone before the writer reaches it is skipped.
func (s *Store) writeTx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return s.queueTx(ctx, fn, false)
}

// writeTxUnsynced is writeTx for a write whose answer acknowledges
// nothing a client could lose: its transaction commits without waiting
// for the disk (SQLite's synchronous=NORMAL for that one commit,
// PostgreSQL's synchronous_commit=off), and it is answered as soon as it
// is visible to every reader. It becomes durable with the next commit
// that waits for the disk, which flushes the log it was written to: both
// engines write their log in commit order. A power cut before that can
// lose it, never half of it, and never a commit that came after it.
//
// The writer commits such jobs in a transaction of their own, ahead of
// the durable jobs queued with them (concurrent jobs have no order), so
// they do not wait for the group's fsync.
//
// Only upload creations use it: the creation's answer gives a client an
// upload URL and no acknowledgment of bytes, and every acknowledgment of
// bytes in that upload (a PATCH's offset, the upload's completion) is a
// durable commit made after it. If a power cut took the record, the
// client finds the URL gone and creates the upload again.
func (s *Store) writeTxUnsynced(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return s.queueTx(ctx, fn, true)
}

// queueTx queues fn as a write job (writeTx, writeTxUnsynced) and
// returns its outcome.
func (s *Store) queueTx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error, unsynced bool) error {
	j := &pushJob{ctx: ctx, fn: fn, unsynced: unsynced, done: make(chan struct{})}
	if err := s.queueWrite(j); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return j.err
}

// writeExec runs one statement as a write transaction (writeTx) and
// returns the rows it changed.
func (s *Store) writeExec(ctx context.Context, query string, args ...any) (int64, error) {
	var n int64
	err := s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, query, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// logChange appends to the change log inside tx and returns its seq.
func logChange(tx querier, now, entityType, entityID, placeCode, kind string) (int64, error) {
	if c, ok := tx.(cachedTx); ok && !c.s.pg {
		// On SQLite the seq is the rowid: a plain insert and
		// sqlite3_last_insert_rowid cost a third of INSERT ... RETURNING
		// through database/sql's rows machinery (BenchmarkPushVisits).
		res, err := c.ExecContext(context.Background(), `INSERT INTO changes(entity_type, entity_id, place_code, kind, created_at) VALUES (?, ?, ?, ?, ?)`,
			entityType, entityID, placeCode, kind, now)
		if err != nil {
			return 0, fmt.Errorf("change log: %w", err)
		}
		seq, err := res.LastInsertId()
		if err != nil {
			return 0, fmt.Errorf("change log: %w", err)
		}
		return seq, nil
	}
	var seq int64
	if err := tx.QueryRowContext(context.Background(), `INSERT INTO changes(entity_type, entity_id, place_code, kind, created_at) VALUES (?, ?, ?, ?, ?) RETURNING seq`,
		entityType, entityID, placeCode, kind, now).Scan(&seq); err != nil {
		return 0, fmt.Errorf("change log: %w", err)
	}
	return seq, nil
}

// scanStrings reads a one-column result into a slice (never nil) and
// closes rows.
func scanStrings(rows rowsScanner) ([]string, error) {
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// rowsScanner is what scanners need of *sql.Rows and *Rows.
type rowsScanner interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close() error
}

// queryStrings runs a query whose result is one text column.
func queryStrings(ctx context.Context, q querier, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return scanStrings(rows)
}

// readStmts holds statements prepared once on the read pool
// (database/sql prepares each on a connection the first time it runs
// there). Preparing a query every call cost more than running it on the
// hot read paths: the evidence checks after each push, pulls, uploads.
//
// The cache is bounded and never evicts: every query text of the store is
// a constant (values, limits and lists are parameters, lists as one JSON
// array for json_each), so a few dozen texts fill it for good. A text seen
// once the cache is full runs unprepared; nothing here recurses or waits
// on the pool without the caller's token (see readGate).
type readStmts struct {
	mu sync.RWMutex
	m  map[string]*sql.Stmt
}

// maxReadStmts bounds the read statement cache.
const maxReadStmts = 256

// get returns the prepared statement of q, preparing it on a connection
// of db if there is room; nil means run q unprepared. The caller holds a
// read token, so a connection is free for the prepare.
func (c *readStmts) get(ctx context.Context, db *sql.DB, q string) *sql.Stmt {
	c.mu.RLock()
	st, full := c.m[q], len(c.m) >= maxReadStmts
	c.mu.RUnlock()
	if st != nil || full {
		return st
	}
	// Prepare outside the lock: it takes a pooled connection.
	st, err := db.PrepareContext(ctx, q)
	if err != nil {
		return nil // running it unprepared reports the error
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if have := c.m[q]; have != nil {
		st.Close()
		return have
	}
	if len(c.m) >= maxReadStmts {
		st.Close()
		return nil
	}
	if c.m == nil {
		c.m = map[string]*sql.Stmt{}
	}
	c.m[q] = st
	return st
}

// CachedStatements returns how many prepared statements the read and the
// write caches hold (the write count includes those waiting to be
// prepared), for metrics and tests: both stay far below their bounds.
func (s *Store) CachedStatements() (read, write int) {
	s.rstmts.mu.RLock()
	read = len(s.rstmts.m)
	s.rstmts.mu.RUnlock()
	s.stmts.mu.Lock()
	write = len(s.stmts.m) + len(s.stmts.wanted)
	s.stmts.mu.Unlock()
	return read, write
}

func (c *readStmts) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.m {
		st.Close()
	}
	c.m = nil
}

// readGate hands out the read pool's connections as tokens, one per
// pooled connection: a read takes a token before it touches the pool and
// gives it back when its rows are closed, so every wait for a connection
// is a wait here, with a deadline (Config.PoolWait or the caller's,
// whichever is sooner). Background work (domain.Background) and exports
// streaming to a client first take a token of their own smaller share, so
// at least half the pool is always left to the requests of people and
// devices. The health check (Ping) has a connection of its own, so that
// /healthz says whether the database answers, promptly, however busy the
// pool is; every wait in the pool is bounded, so busy never means hung.
//
// The rule that makes the tokens enough: no code holds a token (open rows,
// a read transaction) while it takes another. A code path that needs
// several queries reads the rows fully first, or runs them all in one
// readTx.
type readGate struct {
	all    chan struct{} // one per pooled connection but the health check's
	health chan struct{} // the health check's connection
	bg     chan struct{} // background work's share
	bulk   chan struct{} // streaming exports' share
	wait   time.Duration
}

func newReadGate(readers, shared int, wait time.Duration) *readGate {
	return &readGate{all: make(chan struct{}, readers), health: make(chan struct{}, 1), bg: make(chan struct{}, shared),
		bulk: make(chan struct{}, shared), wait: wait}
}

type bulkKey struct{}

type healthKey struct{}

// bulk marks ctx as a long read that streams to a client (an export).
func bulk(ctx context.Context) context.Context { return context.WithValue(ctx, bulkKey{}, true) }

// ErrPoolBusy is returned (wrapped, with domain.ErrUnavailable) when no
// read connection came free within Config.PoolWait.
var ErrPoolBusy = errors.New("sqlstore: every read connection is busy")

// acquire takes a read token for ctx, waiting at most until the sooner of
// ctx's deadline and PoolWait; release gives it back (once).
func (g *readGate) acquire(ctx context.Context) (release func(), err error) {
	timer := time.NewTimer(g.wait)
	defer timer.Stop()
	take := func(ch chan struct{}) error {
		select {
		case ch <- struct{}{}:
			return nil
		default:
		}
		select {
		case ch <- struct{}{}:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("sqlstore: waiting for a read connection: %w", ctx.Err())
		case <-timer.C:
			return fmt.Errorf("%w (waited %s): %w", ErrPoolBusy, g.wait, domain.ErrUnavailable)
		}
	}
	if ctx.Value(healthKey{}) != nil {
		if err := take(g.health); err != nil {
			return nil, err
		}
		var once sync.Once
		return func() { once.Do(func() { <-g.health }) }, nil
	}
	var share chan struct{}
	switch {
	case domain.IsBackground(ctx):
		share = g.bg
	case ctx.Value(bulkKey{}) != nil:
		share = g.bulk
	}
	if share != nil {
		if err := take(share); err != nil {
			return nil, err
		}
	}
	if err := take(g.all); err != nil {
		if share != nil {
			<-share
		}
		return nil, err
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-g.all
			if share != nil {
				<-share
			}
		})
	}, nil
}

// Rows are the rows of a read on the pool; Close gives the connection
// and its token back.
type Rows struct {
	*sql.Rows
	release func()
}

// Close closes the rows and releases the read token.
func (r *Rows) Close() error {
	err := r.Rows.Close()
	r.release()
	return err
}

// Row is one row of a read on the pool; Scan gives the connection and
// its token back.
type Row struct {
	row     *sql.Row
	err     error
	release func()
}

// Scan copies the row's columns into dest (sql.ErrNoRows when there is
// none) and releases the read token.
func (r *Row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.release()
	return r.row.Scan(dest...)
}

// readRow runs a one-row query on the read pool (prepared once when the
// statement cache has room). The row's Scan must be called.
func (s *Store) readRow(ctx context.Context, q string, args ...any) *Row {
	release, err := s.gate.acquire(ctx)
	if err != nil {
		return &Row{err: err}
	}
	if st := s.rstmts.get(ctx, s.r, q); st != nil {
		return &Row{row: st.QueryRowContext(ctx, args...), release: release}
	}
	return &Row{row: s.r.QueryRowContext(ctx, q, args...), release: release}
}

// readRows runs a query on the read pool (prepared once when the
// statement cache has room). The rows hold a read token until closed: read
// them fully and close them before anything else reads.
func (s *Store) readRows(ctx context.Context, q string, args ...any) (*Rows, error) {
	release, err := s.gate.acquire(ctx)
	if err != nil {
		return nil, err
	}
	var rows *sql.Rows
	if st := s.rstmts.get(ctx, s.r, q); st != nil {
		rows, err = st.QueryContext(ctx, args...)
	} else {
		rows, err = s.r.QueryContext(ctx, q, args...)
	}
	if err != nil {
		release()
		return nil, err
	}
	return &Rows{Rows: rows, release: release}, nil
}

// readTx runs fn in a read-only transaction on one pooled connection, for
// reads that take several queries (a visit and its evidence, a list and
// its items): they all share the connection and see one snapshot, and fn
// must not read through the Store's other read methods.
func (s *Store) readTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	release, err := s.gate.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	opts := &sql.TxOptions{ReadOnly: true}
	if s.pg {
		// One snapshot for every statement, as a SQLite read transaction
		// has; PostgreSQL's default gives each statement its own.
		opts.Isolation = sql.LevelRepeatableRead
	}
	tx, err := s.r.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("sqlstore: begin read: %w", err)
	}
	defer tx.Rollback()
	return fn(tx)
}

// maxWriterStmts bounds the writer's statement cache, prepared and wanted
// together; like the read cache, it never evicts and a text beyond it runs
// unprepared.
const maxWriterStmts = 256

// stmtCache holds statements prepared once on the single writer
// connection; the push path runs the same dozen statements thousands of
// times a second, and preparing each call was a fifth of the writer's time.
//
// A statement cannot be prepared on the writer while a transaction holds
// its only connection (that would wait for itself), so a miss inside a
// transaction runs unprepared and is noted; the writer prepares the noted
// statements between group commits.
type stmtCache struct {
	mu     sync.Mutex
	m      map[string]*sql.Stmt
	wanted map[string]bool
}

func (s *Store) stmt(q string) *sql.Stmt {
	s.stmts.mu.Lock()
	defer s.stmts.mu.Unlock()
	if st, ok := s.stmts.m[q]; ok {
		return st
	}
	if len(s.stmts.m)+len(s.stmts.wanted) >= maxWriterStmts {
		return nil // full: the statement runs unprepared
	}
	if s.stmts.wanted == nil {
		s.stmts.wanted = map[string]bool{}
	}
	s.stmts.wanted[q] = true
	return nil
}

// prepareWanted prepares the statements noted since the last call. The
// writer calls it with no transaction open.
func (s *Store) prepareWanted(ctx context.Context) {
	s.stmts.mu.Lock()
	wanted := s.stmts.wanted
	s.stmts.wanted = nil
	s.stmts.mu.Unlock()
	for q := range wanted {
		st, err := s.w.PrepareContext(ctx, q)
		if err != nil {
			continue // it runs unprepared, as before
		}
		s.stmts.mu.Lock()
		if s.stmts.m == nil {
			s.stmts.m = map[string]*sql.Stmt{}
		}
		if old, ok := s.stmts.m[q]; ok {
			old.Close()
		}
		if len(s.stmts.m) < maxWriterStmts {
			s.stmts.m[q] = st
		} else {
			st.Close()
		}
		s.stmts.mu.Unlock()
	}
}

// cachedTx runs statements of a write transaction through the writer's
// statement cache. The writer has one connection, so a statement prepared
// on it is reused inside every transaction without preparing again.
type cachedTx struct {
	tx *sql.Tx
	s  *Store
}

func (c cachedTx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if st := c.s.stmt(q); st != nil {
		return c.tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return c.tx.ExecContext(ctx, q, args...)
}

func (c cachedTx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	if st := c.s.stmt(q); st != nil {
		return c.tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return c.tx.QueryRowContext(ctx, q, args...)
}

func (c cachedTx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := c.s.stmt(q); st != nil {
		return c.tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	}
	return c.tx.QueryContext(ctx, q, args...)
}
