// Package migrations holds fieldsync's database schemas as numbered .sql
// files embedded in the binary, and the small runner that applies them.
//
// The server schema lives in server/ (SQLite) and postgres/ (PostgreSQL,
// the same version numbers and names), the device schema in device/. Files
// are named NNNN_description.sql; each runs in its own transaction together
// with the row that records it in schema_migrations, so a crash mid-way
// leaves the database at the previous version, never between two.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed server/*.sql device/*.sql postgres/*.sql
var files embed.FS

// Server is the server schema.
var Server = mustSub("server")

// Postgres is the server schema for PostgreSQL: the same versions and
// names as Server, in PostgreSQL's types.
var Postgres = mustSub("postgres")

// Device is the device (mobileclient) schema.
var Device = mustSub("device")

func mustSub(dir string) fs.FS {
	f, err := fs.Sub(files, dir)
	if err != nil {
		panic(err)
	}
	return f
}

// Errors returned by the runner.
var (
	ErrBadName = errors.New("migration file name must be NNNN_name.sql")
	ErrNewer   = errors.New("database schema is newer than this binary")
)

// Migration is one numbered schema step.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// List returns the migrations in fsys in version order.
func List(fsys fs.FS) ([]Migration, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	var out []Migration
	for _, n := range names {
		num, _, ok := strings.Cut(n, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v < 1 {
			return nil, fmt.Errorf("migrations: %q: %w", n, ErrBadName)
		}
		body, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, fmt.Errorf("migrations: %w", err)
		}
		out = append(out, Migration{Version: v, Name: strings.TrimSuffix(path.Base(n), ".sql"), SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("migrations: duplicate version %d", out[i].Version)
		}
	}
	return out, nil
}

// Current returns the highest applied version (0 for a new database).
func Current(ctx context.Context, db *sql.DB) (int, error) {
	if err := ensureTable(ctx, db); err != nil {
		return 0, err
	}
	var v sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("migrations: current: %w", err)
	}
	return int(v.Int64), nil
}

// querier is what the runner needs of a database: *sql.DB for SQLite,
// one *sql.Conn (the session holding the advisory lock) for PostgreSQL.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// dialect is what the runner's own statements need per engine: only the
// placeholders differ.
type dialect struct {
	record string // inserts the row of an applied migration (version, name, applied_at)
}

var (
	sqliteDialect   = dialect{record: `INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)`}
	postgresDialect = dialect{record: `INSERT INTO schema_migrations(version, name, applied_at) VALUES ($1, $2, $3)`}
)

func ensureTable(ctx context.Context, db querier) error {
	_, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)`)
	if err != nil {
		return fmt.Errorf("migrations: create table: %w", err)
	}
	return nil
}

// Up applies, in version order, every migration in fsys that the
// database has not recorded, up to and including target (0 means all). It
// returns the versions it applied. It is for SQLite, where one process
// owns the file; PostgreSQL, which several instances share, uses
// UpPostgres.
func Up(ctx context.Context, db *sql.DB, fsys fs.FS, target int) ([]int, error) {
	return up(ctx, db, sqliteDialect, fsys, target)
}

func up(ctx context.Context, db querier, d dialect, fsys fs.FS, target int) ([]int, error) {
	all, err := List(fsys)
	if err != nil {
		return nil, err
	}
	done, err := applied(ctx, db)
	if err != nil {
		return nil, err
	}
	known := map[int]bool{}
	for _, m := range all {
		known[m.Version] = true
	}
	for v := range done {
		if !known[v] {
			return nil, fmt.Errorf("migrations: database has version %d that this binary does not know: %w", v, ErrNewer)
		}
	}
	var out []int
	for _, m := range all {
		if done[m.Version] || (target > 0 && m.Version > target) {
			continue
		}
		if err := apply(ctx, db, d, m); err != nil {
			return out, err
		}
		out = append(out, m.Version)
	}
	return out, nil
}

func applied(ctx context.Context, db querier) (map[int]bool, error) {
	if err := ensureTable(ctx, db); err != nil {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return nil, fmt.Errorf("migrations: applied: %w", err)
	}
	defer rows.Close()
	out := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("migrations: applied: %w", err)
		}
		out[v] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("migrations: applied: %w", err)
	}
	return out, nil
}

func apply(ctx context.Context, db querier, d dialect, m Migration) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrations: %d: begin: %w", m.Version, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return fmt.Errorf("migrations: %s: %w", m.Name, err)
	}
	if _, err := tx.ExecContext(ctx, d.record,
		m.Version, m.Name, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		return fmt.Errorf("migrations: %d: record: %w", m.Version, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrations: %d: commit: %w", m.Version, err)
	}
	return nil
}
