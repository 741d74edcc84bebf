// Package sqlstore is fieldsync's SQLite store (mattn/go-sqlite3): one
// writer connection that every write goes through, a pool of read-only
// connections, WAL, foreign keys and synchronous=FULL so that a committed
// write survives a process kill or a power cut.
package sqlstore

import (
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
	"fieldsync/syncproto"
)

// Config configures the store.
type Config struct {
	// Path is the SQLite file. Required.
	Path string
	// Readers is the size of the read pool (default: 2 × CPUs, at least 4).
	Readers int
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
	// Now replaces time.Now in tests.
	Now func() time.Time
}

func (c *Config) setDefaults() error {
	if c.Path == "" {
		return fmt.Errorf("sqlstore: Path required: %w", domain.ErrInvalid)
	}
	if c.Readers <= 0 {
		c.Readers = max(4, 2*runtime.NumCPU())
	}
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
	w     *sql.DB // exactly one connection: the single writer
	r     *sql.DB // read-only pool
	clock syncproto.Clock

	epoch     string
	cursorKey []byte

	forms      formCache
	boundaries boundaryCache
	stmts      stmtCache
	rstmts     readStmts
	health     healthBuffer
	evCfg      atomic.Pointer[evidence.Config]

	pushes    chan *pushJob
	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
}

// DSN returns the go-sqlite3 connection string fieldsync uses for path:
// WAL, synchronous=FULL, foreign keys, a busy timeout, and immediate
// transactions for the writer so that writers queue instead of failing
// to upgrade a read lock.
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
	return "file:" + path + "?" + q.Encode()
}

// Open opens (creating if needed) the database, applies migrations and
// starts the group-commit writer.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	w, err := sql.Open("sqlite3", DSN(cfg.Path, false, cfg.BusyTimeout))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: open writer: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlstore: open %s: %w", cfg.Path, err)
	}
	if _, err := migrations.Up(ctx, w, migrations.Server, 0); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlstore: %w", err)
	}
	r, err := sql.Open("sqlite3", DSN(cfg.Path, true, cfg.BusyTimeout))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlstore: open readers: %w", err)
	}
	r.SetMaxOpenConns(cfg.Readers)
	r.SetMaxIdleConns(cfg.Readers)
	s := &Store{cfg: cfg, w: w, r: r, done: make(chan struct{}), pushes: make(chan *pushJob, 1024)}
	s.clock.Now = cfg.Now
	s.SetEvidenceConfig(cfg.Evidence)
	if err := s.initMeta(ctx); err != nil {
		s.Close()
		return nil, err
	}
	s.wg.Add(2)
	go s.writerLoop()
	go s.healthLoop()
	return s, nil
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
	return errors.Join(s.r.Close(), s.w.Close())
}

// Ping checks that the database answers a query.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.readRow(ctx, `SELECT 1`).Scan(&one); err != nil {
		return fmt.Errorf("sqlstore: ping: %w", err)
	}
	return nil
}

// Epoch is this database's epoch: cursors from another epoch reset.
func (s *Store) Epoch() string { return s.epoch }

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
			_, err = s.w.ExecContext(ctx, `INSERT INTO meta(key, value) VALUES (?, ?)`, key, v)
		}
		return v, err
	}
	var err error
	if s.epoch, err = get("epoch"); err != nil {
		return fmt.Errorf("sqlstore: epoch: %w", err)
	}
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
	s.epoch = e
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
	j := &pushJob{ctx: ctx, fn: fn, done: make(chan struct{})}
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
func logChange(tx execer, now, entityType, entityID, placeCode, kind string) (int64, error) {
	res, err := tx.ExecContext(context.Background(), `INSERT INTO changes(entity_type, entity_id, place_code, kind, created_at) VALUES (?, ?, ?, ?, ?)`,
		entityType, entityID, placeCode, kind, now)
	if err != nil {
		return 0, fmt.Errorf("change log: %w", err)
	}
	return res.LastInsertId()
}

// scanStrings reads a one-column result into a slice (never nil) and
// closes rows.
func scanStrings(rows *sql.Rows) ([]string, error) {
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
type readStmts struct {
	mu sync.RWMutex
	m  map[string]*sql.Stmt
}

// maxReadStmts bounds the cache; queries built with a variable number of
// placeholders beyond it run unprepared.
const maxReadStmts = 512

func (c *readStmts) get(db *sql.DB, q string) *sql.Stmt {
	c.mu.RLock()
	st := c.m[q]
	c.mu.RUnlock()
	if st != nil {
		return st
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.m[q]; st != nil {
		return st
	}
	if len(c.m) >= maxReadStmts {
		return nil
	}
	st, err := db.Prepare(q)
	if err != nil {
		return nil // running it unprepared reports the error
	}
	if c.m == nil {
		c.m = map[string]*sql.Stmt{}
	}
	c.m[q] = st
	return st
}

func (c *readStmts) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.m {
		st.Close()
	}
	c.m = nil
}

// readRow runs a one-row query on the read pool, prepared once.
func (s *Store) readRow(ctx context.Context, q string, args ...any) *sql.Row {
	if st := s.rstmts.get(s.r, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return s.readRow(ctx, q, args...)
}

// readRows runs a query on the read pool, prepared once.
func (s *Store) readRows(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := s.rstmts.get(s.r, q); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return s.readRows(ctx, q, args...)
}

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
		s.stmts.m[q] = st
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
