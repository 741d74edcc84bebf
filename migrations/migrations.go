// Package migrations holds fieldsync's database schemas as numbered .sql
// files embedded in the binary, and the small runner that applies them.
//
// The server schema lives in server/, the device schema in device/. Files
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

//go:embed server/*.sql device/*.sql
var files embed.FS

// Server is the server schema.
var Server = mustSub("server")

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

func ensureTable(ctx context.Context, db *sql.DB) error {
	_, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)`)
	if err != nil {
		return fmt.Errorf("migrations: create table: %w", err)
	}
	return nil
}

// Up applies every migration in fsys newer than the database, up to and
// including target (0 means all). It returns the versions it applied.
func Up(ctx context.Context, db *sql.DB, fsys fs.FS, target int) ([]int, error) {
	all, err := List(fsys)
	if err != nil {
		return nil, err
	}
	cur, err := Current(ctx, db)
	if err != nil {
		return nil, err
	}
	if len(all) > 0 && cur > all[len(all)-1].Version {
		return nil, fmt.Errorf("migrations: at %d, binary knows %d: %w", cur, all[len(all)-1].Version, ErrNewer)
	}
	var applied []int
	for _, m := range all {
		if m.Version <= cur || (target > 0 && m.Version > target) {
			continue
		}
		if err := apply(ctx, db, m); err != nil {
			return applied, err
		}
		applied = append(applied, m.Version)
	}
	return applied, nil
}

func apply(ctx context.Context, db *sql.DB, m Migration) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrations: %d: begin: %w", m.Version, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return fmt.Errorf("migrations: %04d_%s: %w", m.Version, m.Name, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)`,
		m.Version, m.Name, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		return fmt.Errorf("migrations: %d: record: %w", m.Version, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrations: %d: commit: %w", m.Version, err)
	}
	return nil
}
