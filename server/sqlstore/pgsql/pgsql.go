// Package pgsql opens PostgreSQL for the store: a database/sql pool on
// pgx v5 whose connections take the store's SQL as it is written for
// SQLite and rewrite it for PostgreSQL on the way in.
//
// The store's SQL is written once. Most of it is text both engines accept
// (->> on JSON, ON CONFLICT, RETURNING); what differs is rewritten here, in
// one table, so that it is seen in one place:
//
//   - ? placeholders become $1, $2, ... (outside quotes and comments);
//   - json_each(?) over a JSON array parameter becomes
//     json_array_elements_text / json_array_elements;
//   - group_concat becomes string_agg; printf('%08d', x) becomes lpad;
//   - a few whole statements that differ (the change log's seq, the log
//     head, local days) are replaced by their PostgreSQL form.
//
// Rewriting costs a scan of the statement text per call; statements are
// constants of the store, never built from client values, so the small
// bounded cache of rewritten texts fills once.
package pgsql

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"fieldsync/server/domain"
)

// IsURL reports whether dsn names a PostgreSQL database (postgres:// or
// postgresql://).
func IsURL(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// Options tune a pool.
type Options struct {
	// MaxConns bounds the pool's open connections.
	MaxConns int
	// ReadOnly makes every transaction of the pool read-only and
	// repeatable read (one snapshot per transaction).
	ReadOnly bool
	// StatementTimeout and LockTimeout are set on every connection (0:
	// what the URL says, e.g. ?lock_timeout=2s, else 60 s and 10 s). A
	// statement past them fails with a retryable error instead of hanging
	// the instance.
	StatementTimeout, LockTimeout time.Duration
}

// Open returns a pool on the database at url.
func Open(url string, o Options) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("pgsql: %w", err)
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	// The URL's own settings (postgres://...?lock_timeout=2s, as libpq
	// takes them) stand unless Options set them.
	timeout := func(name string, set, def time.Duration) {
		if set > 0 || cfg.RuntimeParams[name] == "" {
			cfg.RuntimeParams[name] = fmt.Sprint(cmp.Or(set, def).Milliseconds())
		}
	}
	timeout("statement_timeout", o.StatementTimeout, time.Minute)
	timeout("lock_timeout", o.LockTimeout, 10*time.Second)
	cfg.RuntimeParams["timezone"] = "UTC"
	if o.ReadOnly {
		cfg.RuntimeParams["default_transaction_read_only"] = "on"
		// Every read transaction sees one snapshot, as a SQLite read
		// transaction does. A pull reads the log head, then copies rows
		// and replays the log up to that head: under PostgreSQL's default
		// (each statement its own snapshot) a visit committed between the
		// head and the copy came twice, once in the copy and again in the
		// replay of the next page. Read-only repeatable read never fails
		// with a serialization error.
		cfg.RuntimeParams["default_transaction_isolation"] = "repeatable read"
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	db := sql.OpenDB(connector{inner: stdlib.GetConnector(*cfg)})
	if o.MaxConns > 0 {
		db.SetMaxOpenConns(o.MaxConns)
		db.SetMaxIdleConns(o.MaxConns)
	}
	db.SetConnMaxIdleTime(5 * time.Minute)
	return db, nil
}

// connector hands out connections that rewrite SQL.
type connector struct{ inner driver.Connector }

func (c connector) Connect(ctx context.Context) (driver.Conn, error) {
	dc, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, unavailable(err)
	}
	sc, ok := dc.(*stdlib.Conn)
	if !ok {
		dc.Close()
		return nil, fmt.Errorf("pgsql: unexpected driver connection %T", dc)
	}
	return &conn{c: sc}, nil
}

func (c connector) Driver() driver.Driver { return c.inner.Driver() }

// conn is a pgx stdlib connection whose statements are rewritten.
type conn struct{ c *stdlib.Conn }

var (
	_ driver.Conn               = (*conn)(nil)
	_ driver.ConnPrepareContext = (*conn)(nil)
	_ driver.ConnBeginTx        = (*conn)(nil)
	_ driver.ExecerContext      = (*conn)(nil)
	_ driver.QueryerContext     = (*conn)(nil)
	_ driver.Pinger             = (*conn)(nil)
	_ driver.NamedValueChecker  = (*conn)(nil)
	_ driver.SessionResetter    = (*conn)(nil)
	_ driver.Validator          = (*conn)(nil)
)

func (c *conn) Prepare(q string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), q)
}
func (c *conn) PrepareContext(ctx context.Context, q string) (driver.Stmt, error) {
	st, err := c.c.PrepareContext(ctx, Rewrite(q))
	if err != nil {
		return nil, c.mark(err)
	}
	return &stmt{Stmt: st, c: c}, nil
}
func (c *conn) Close() error { return c.c.Close() }
func (c *conn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}
func (c *conn) BeginTx(ctx context.Context, o driver.TxOptions) (driver.Tx, error) {
	t, err := c.c.BeginTx(ctx, o)
	if err != nil {
		if ctx.Err() == nil && (c.c.Conn().IsClosed() || sessionEnded(err)) {
			// The pooled connection was dead before the BEGIN (the server
			// restarted, or ended the session, since it was last used):
			// nothing was done on it, so database/sql may take another
			// (driver.ErrBadConn) instead of failing the request.
			return nil, fmt.Errorf("PostgreSQL: %w: %w: begin on a lost connection: %w", domain.ErrUnavailable, driver.ErrBadConn, err)
		}
		return nil, c.mark(err)
	}
	return tx{t: t, c: c}, nil
}

// sessionEnded reports whether err says the server ended the session
// (admin_shutdown, crash_shutdown, cannot_connect_now).
func sessionEnded(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03")
}
func (c *conn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	res, err := c.c.ExecContext(ctx, Rewrite(q), args)
	return res, c.mark(err)
}
func (c *conn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	return c.wrapRows(c.c.QueryContext(ctx, Rewrite(q), args))
}
func (c *conn) Ping(ctx context.Context) error { return c.mark(c.c.Ping(ctx)) }
func (c *conn) CheckNamedValue(v *driver.NamedValue) error {
	// The schema keeps flags as integers 0/1, as on SQLite (whose driver
	// writes a Go bool as 1 or 0); pgx would refuse a bool for them.
	switch x := v.Value.(type) {
	case bool:
		v.Value = int64(0)
		if x {
			v.Value = int64(1)
		}
		return nil
	case string:
		// PostgreSQL text cannot hold NUL or invalid UTF-8 (SQLite can):
		// such input is refused as invalid, a client error, not a 500.
		if strings.IndexByte(x, 0) >= 0 || !utf8.ValidString(x) {
			return fmt.Errorf("pgsql: text with a NUL byte or invalid UTF-8: %w", domain.ErrInvalid)
		}
	}
	return c.c.CheckNamedValue(v)
}
func (c *conn) ResetSession(ctx context.Context) error { return c.c.ResetSession(ctx) }
func (c *conn) IsValid() bool                          { return !c.c.Conn().IsClosed() }
func (c *conn) txStatus() byte                         { return c.c.Conn().PgConn().TxStatus() }
func (c *conn) version() string                        { return c.c.Conn().PgConn().ParameterStatus("server_version") }

// InTransaction reports whether c is one of this package's connections
// (ok) and, if so, whether it is inside a transaction block, also a failed
// one (active): false once the server ended it.
func InTransaction(c *sql.Conn) (active, ok bool) {
	_ = c.Raw(func(dc any) error {
		if pc, isPG := dc.(*conn); isPG {
			st := pc.txStatus()
			active, ok = st == 'T' || st == 'E', true
		}
		return nil
	})
	return active, ok
}

// ServerVersion is the server_version the connection reports.
func ServerVersion(ctx context.Context, db *sql.DB) (string, error) {
	c, err := db.Conn(ctx)
	if err != nil {
		return "", err
	}
	defer c.Close()
	v := ""
	err = c.Raw(func(dc any) error {
		if pc, ok := dc.(*conn); ok {
			v = pc.version()
		}
		return nil
	})
	return v, err
}

// unavailable marks an error a caller may retry (Retryable) as
// domain.ErrUnavailable, which the API answers with 503 and Retry-After:
// a lock or statement timeout, a serialization failure, a server that
// restarted or cannot be reached. The driver's own error stays in the
// chain (errors.Is(err, driver.ErrBadConn) and errors.As to
// *pgconn.PgError still work); driver.ErrSkip and io.EOF, which
// database/sql compares by identity, pass unchanged.
func unavailable(err error) error {
	if err == nil || err == driver.ErrSkip || err == io.EOF || errors.Is(err, domain.ErrUnavailable) || !Retryable(err) {
		return err
	}
	return fmt.Errorf("PostgreSQL: %w: %w", domain.ErrUnavailable, err)
}

// mark is unavailable for an error on c, and also marks any error after
// which c is closed: the connection broke under the statement (a reset,
// a crash of the server, a network cut), whatever pgx called it, and the
// statement may be retried on another connection.
func (c *conn) mark(err error) error {
	if err == nil || err == driver.ErrSkip || err == io.EOF || errors.Is(err, domain.ErrUnavailable) {
		return err
	}
	if !Retryable(err) && c.c.Conn().IsClosed() && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("PostgreSQL: %w: connection lost: %w", domain.ErrUnavailable, err)
	}
	return unavailable(err)
}

// stmt is a prepared statement whose errors are marked as conn's are.
type stmt struct {
	driver.Stmt
	c *conn
}

var (
	_ driver.StmtExecContext  = (*stmt)(nil)
	_ driver.StmtQueryContext = (*stmt)(nil)
)

func (s *stmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	sc, ok := s.Stmt.(driver.StmtExecContext)
	if !ok {
		return nil, fmt.Errorf("pgsql: statement %T has no ExecContext", s.Stmt)
	}
	res, err := sc.ExecContext(ctx, args)
	return res, s.c.mark(err)
}

func (s *stmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	sc, ok := s.Stmt.(driver.StmtQueryContext)
	if !ok {
		return nil, fmt.Errorf("pgsql: statement %T has no QueryContext", s.Stmt)
	}
	return s.c.wrapRows(sc.QueryContext(ctx, args))
}

// tx is a transaction whose commit and rollback errors are marked.
type tx struct {
	t driver.Tx
	c *conn
}

func (t tx) Commit() error   { return t.c.mark(t.t.Commit()) }
func (t tx) Rollback() error { return t.c.mark(t.t.Rollback()) }

// rows are pgx's rows (their column type methods kept) whose errors
// while reading are marked: a statement or lock timeout, or a lost
// connection, often arrives with the first row rather than the query.
type rows struct {
	*stdlib.Rows
	c *conn
}

func (r rows) Next(dest []driver.Value) error { return r.c.mark(r.Rows.Next(dest)) }

func (c *conn) wrapRows(dr driver.Rows, err error) (driver.Rows, error) {
	if err != nil {
		return nil, c.mark(err)
	}
	if sr, ok := dr.(*stdlib.Rows); ok {
		return rows{Rows: sr, c: c}, nil
	}
	return dr, nil
}

// Retryable reports whether err is one a caller may retry as is: a
// serialization failure, a deadlock, a lock or statement timeout, or a
// connection lost (the server restarted, the network dropped).
func Retryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "08000", "08003", "08006":
			return true
		}
		return false
	}
	return errors.Is(err, driver.ErrBadConn) || pgconn.SafeToRetry(err) || isConnErr(err)
}

func isConnErr(err error) bool {
	var ce *pgconn.ConnectError
	return errors.As(err, &ce) || pgconn.Timeout(err)
}

// rewrites maps whole SQLite statements (or distinctive fragments of
// them) to their PostgreSQL form, applied in order before the
// placeholders are numbered.
var rewrites = []struct{ from, to string }{
	// The change log: seq comes from sync_head under the row lock every
	// writer holds (see migrations/postgres/0001), so seqs follow commit
	// order.
	{`INSERT INTO changes(entity_type, entity_id, place_code, kind, created_at) VALUES (?, ?, ?, ?, ?) RETURNING seq`,
		`WITH h AS (UPDATE sync_head SET seq = seq + 1 WHERE id = 1 RETURNING seq)
		INSERT INTO changes(seq, entity_type, entity_id, place_code, kind, created_at)
		SELECT h.seq, CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT) FROM h RETURNING seq`},
	// The log head: the last seq committed as this snapshot sees it.
	{`SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0)`,
		`SELECT seq FROM sync_head WHERE id = 1`},
	{`json_each(?) r`, `json_array_elements(CAST(? AS json)) r`},
	{`json_each(?)`, `json_array_elements_text(CAST(? AS json))`},
	{`group_concat(`, `string_agg(`},
	{`printf('%08d', version)`, `lpad(CAST(version AS TEXT), 8, '0')`},
	// Local days: SQLite's date(t, '+480 minutes') modifier.
	{`date(device_time, ?)`, `substr(CAST(CAST(device_time AS timestamptz) + CAST(? AS interval) AS TEXT), 1, 10)`},
}

// rewriteCache holds rewritten texts; the store's statements are a few
// hundred constants, and a text beyond the bound is rewritten each call.
var rewriteCache = struct {
	sync.RWMutex
	m map[string]string
}{m: map[string]string{}}

const maxRewriteCache = 2048

// Rewrite returns q in PostgreSQL's dialect.
func Rewrite(q string) string {
	rewriteCache.RLock()
	out, ok := rewriteCache.m[q]
	rewriteCache.RUnlock()
	if ok {
		return out
	}
	out = q
	for _, r := range rewrites {
		if strings.Contains(out, r.from) {
			out = strings.ReplaceAll(out, r.from, r.to)
		}
	}
	out = Rebind(out)
	rewriteCache.Lock()
	if len(rewriteCache.m) < maxRewriteCache {
		rewriteCache.m[q] = out
	}
	rewriteCache.Unlock()
	return out
}

// Rebind numbers the ? placeholders of q as $1, $2, ... (and ?N as $N),
// leaving ? inside
// quoted strings, quoted identifiers and comments alone.
func Rebind(q string) string {
	if !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	for i := 0; i < len(q); i++ {
		ch := q[i]
		switch {
		case ch == '\'' || ch == '"':
			j := i + 1
			for j < len(q) {
				if q[j] == ch {
					if j+1 < len(q) && q[j+1] == ch { // doubled quote
						j += 2
						continue
					}
					break
				}
				j++
			}
			end := min(j+1, len(q))
			b.WriteString(q[i:end])
			i = end - 1
		case ch == '-' && i+1 < len(q) && q[i+1] == '-':
			j := strings.IndexByte(q[i:], '\n')
			if j < 0 {
				b.WriteString(q[i:])
				return b.String()
			}
			b.WriteString(q[i : i+j])
			i += j - 1
		case ch == '?' && i+1 < len(q) && q[i+1] >= '0' && q[i+1] <= '9':
			b.WriteByte('$') // SQLite's numbered ?NNN is PostgreSQL's $NNN
		case ch == '?':
			n++
			b.WriteByte('$')
			b.WriteString(fmt.Sprint(n))
		default:
			b.WriteByte(ch)
		}
	}
	return b.String()
}
