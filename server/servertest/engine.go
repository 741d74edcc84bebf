package servertest

import (
	"database/sql"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"fieldsync/server/servertest/pgtest"
	"fieldsync/server/sqlstore"
	"fieldsync/server/sqlstore/pgsql"
)

// Engine is the store engine the tests run on: "postgres" when
// FIELDSYNC_TEST_ENGINE=postgres (each server then gets a database of its
// own on FIELDSYNC_TEST_PG_URL), else "sqlite".
func Engine() string {
	if os.Getenv("FIELDSYNC_TEST_ENGINE") == "postgres" {
		return "postgres"
	}
	return "sqlite"
}

// SQLiteOnly skips a test that checks SQLite itself (its file, its
// pragmas) when the suite runs on PostgreSQL.
func SQLiteOnly(t testing.TB) {
	t.Helper()
	if Engine() != "sqlite" {
		t.Skip("tests SQLite itself; the suite runs on " + Engine())
	}
}

// StoreConfig returns cfg set to the database of the server in dir: the
// SQLite file dir/fieldsync.db, or on PostgreSQL the database made for dir
// (the same one each time, so a test can stop and restart a server).
func StoreConfig(t testing.TB, dir string, cfg sqlstore.Config) sqlstore.Config {
	t.Helper()
	cfg.Path = filepath.Join(dir, "fieldsync.db")
	if Engine() == "postgres" {
		cfg.Path, cfg.PostgresURL = "", postgresFor(t, dir)
	}
	return cfg
}

// postgresFor returns the database of the server in dir: a new one the
// first time, the same one when the test starts a server on dir again.
func postgresFor(t testing.TB, dir string) string {
	t.Helper()
	mark := filepath.Join(dir, "postgres-url")
	if b, err := os.ReadFile(mark); err == nil {
		return string(b)
	} else if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("servertest: %v", err)
	}
	u := pgtest.NewDatabase(t)
	if err := os.WriteFile(mark, []byte(u), 0o600); err != nil {
		t.Fatalf("servertest: %v", err)
	}
	return u
}

// RawDB opens a writable pool on the env's database, beside the store,
// for tests that plant rows the API cannot make (old versions' rows,
// fixtures). Its SQL is written as for SQLite; on PostgreSQL it goes
// through the store's rewriting driver. Closed when the test ends.
func (e *Env) RawDB(t testing.TB) *sql.DB {
	t.Helper()
	var db *sql.DB
	var err error
	if b, rerr := os.ReadFile(filepath.Join(e.Dir, "postgres-url")); rerr == nil {
		db, err = pgsql.Open(string(b), pgsql.Options{MaxConns: 2})
	} else {
		db, err = sql.Open("sqlite3", sqlstore.DSN(filepath.Join(e.Dir, "fieldsync.db"), false, 10*time.Second))
	}
	if err != nil {
		t.Fatalf("servertest: raw database: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
