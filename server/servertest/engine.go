package servertest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"testing"

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
	u := NewPostgresDatabase(t)
	if err := os.WriteFile(mark, []byte(u), 0o600); err != nil {
		t.Fatalf("servertest: %v", err)
	}
	return u
}

// NewPostgresDatabase creates an empty database (C collation) on
// FIELDSYNC_TEST_PG_URL for one test, dropped when it ends, and returns
// its URL. Without FIELDSYNC_TEST_PG_URL the test fails.
func NewPostgresDatabase(t testing.TB) string {
	t.Helper()
	admin := os.Getenv("FIELDSYNC_TEST_PG_URL")
	if admin == "" {
		t.Fatal("servertest: FIELDSYNC_TEST_PG_URL is not set (bash .ci/test starts a PostgreSQL and sets it)")
	}
	db, err := pgsql.Open(admin, pgsql.Options{MaxConns: 1})
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	defer db.Close()
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	name := "fs_" + hex.EncodeToString(b) // generated, never from input
	if _, err := db.Exec(`CREATE DATABASE ` + name + ` TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'`); err != nil {
		t.Fatalf("servertest: create database: %v", err)
	}
	t.Cleanup(func() {
		db, err := pgsql.Open(admin, pgsql.Options{MaxConns: 1})
		if err != nil {
			return
		}
		defer db.Close()
		_, _ = db.Exec(`DROP DATABASE IF EXISTS ` + name + ` WITH (FORCE)`)
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("servertest: FIELDSYNC_TEST_PG_URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}
