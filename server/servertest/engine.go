package servertest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"fieldsync/server/servertest/pgtest"
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
	u := pgtest.NewDatabase(t)
	if err := os.WriteFile(mark, []byte(u), 0o600); err != nil {
		t.Fatalf("servertest: %v", err)
	}
	return u
}
