// Package pgtest gives tests a real PostgreSQL: a fresh, empty database
// per test on the private server that the test script (bash .ci/test)
// starts for the run (initdb and pg_ctl on a temporary folder, a random
// loopback port, trust authentication for the superuser fieldsync).
//
// The script exports:
//
//	FIELDSYNC_TEST_PG_URL   postgres://fieldsync@127.0.0.1:PORT/postgres?sslmode=disable
//	FIELDSYNC_TEST_PG_CMD   a shell command that restarts the server in
//	                        place (pg_ctl restart -m fast, same port and data)
//	FIELDSYNC_TEST_PG_BIN   PostgreSQL's bin folder, for StartServer
//	FIELDSYNC_TEST_PG_USER  the user the server runs as when tests run as root
//	FIELDSYNC_REQUIRE_S3=1  a missing server fails tests instead of skipping
//
// go test runs packages in parallel, all against the shared server. A test
// that stops or restarts PostgreSQL should use a private one
// (StartServer); Restart, which restarts the shared one, breaks the
// connections of every package running at that moment.
//
// Without the variables (a plain `go test`), tests that need PostgreSQL
// are skipped, unless FIELDSYNC_REQUIRE_S3 or CI is set, when they fail
// (as in s3test).
//
// Open the returned URL with database/sql and the "pgx" driver
// (import _ "github.com/jackc/pgx/v5/stdlib").
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
)

// Environment variable names set by .ci/test.
const (
	EnvURL     = "FIELDSYNC_TEST_PG_URL"
	EnvCmd     = "FIELDSYNC_TEST_PG_CMD"
	EnvRequire = "FIELDSYNC_REQUIRE_S3"
)

// adminTimeout bounds each CREATE DATABASE, DROP DATABASE and restart.
const adminTimeout = 2 * time.Minute

// required reports whether a missing server must fail the test.
func required() bool {
	return os.Getenv(EnvRequire) != "" || os.Getenv("CI") != ""
}

func unavailable(t testing.TB, why string) {
	t.Helper()
	msg := why + "; run the tests with `bash .ci/test`, which starts a private PostgreSQL"
	if required() {
		t.Fatal(msg + " (" + EnvRequire + " or CI is set, so this is an error)")
	}
	t.Skip(msg)
}

// serverURL returns the parsed FIELDSYNC_TEST_PG_URL, or skips or fails
// the test when it is unset (see the package comment).
func serverURL(t testing.TB) *url.URL {
	t.Helper()
	raw := os.Getenv(EnvURL)
	if raw == "" {
		unavailable(t, EnvURL+" is not set")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "postgres" && u.Scheme != "postgresql" || u.Host == "" {
		t.Fatalf("pgtest: %s=%q is not a postgres:// URL (%v)", EnvURL, raw, err)
	}
	return u
}

// NewDatabase creates an empty database (UTF8, C collation) for this test
// on the shared test server and returns its URL: the server's host, port
// and user, with sslmode=disable. The database is dropped when the test
// ends, connections still open to it included. Its name, fs_ and 16
// random hex digits, is made here, never taken from input.
func NewDatabase(t testing.TB) string {
	t.Helper()
	return newDatabase(t, serverURL(t))
}

// NewDatabaseFrom is NewDatabase with a copy of the database template
// (made by NewTemplate) instead of an empty one.
func NewDatabaseFrom(t testing.TB, template string) string {
	t.Helper()
	return newDatabaseFrom(t, serverURL(t), template)
}

func newDatabase(t testing.TB, admin *url.URL) string {
	t.Helper()
	return newDatabaseFrom(t, admin, "template0")
}

// randomName is fs_ and 16 random hex digits: made here, never taken
// from input, so quoting it is enough.
func randomName(prefix string) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return prefix + hex.EncodeToString(b[:]), nil
}

// NewTemplate creates a database for many tests to copy (NewDatabaseFrom),
// fills it with build (given its URL; build must close what it opens) and
// returns its name. It is not tied to a test: it lives as long as the
// test server (the one .ci/test starts is removed after the run).
func NewTemplate(build func(url string) error) (string, error) {
	raw := os.Getenv(EnvURL)
	if raw == "" {
		return "", fmt.Errorf("pgtest: %s is not set", EnvURL)
	}
	admin, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("pgtest: %s: %w", EnvURL, err)
	}
	name, err := randomName("fs_tpl_")
	if err != nil {
		return "", err
	}
	if err := adminExec(admin, `CREATE DATABASE "`+name+`" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'`); err != nil {
		return "", fmt.Errorf("pgtest: create template %s: %w", name, err)
	}
	if err := build(databaseURL(admin, name)); err != nil {
		return "", fmt.Errorf("pgtest: build template %s: %w", name, err)
	}
	return name, nil
}

func databaseURL(admin *url.URL, name string) string {
	u := *admin
	u.Path = "/" + name
	u.RawPath = ""
	q := u.Query()
	q.Set("sslmode", "disable")
	u.RawQuery = q.Encode()
	return u.String()
}

func newDatabaseFrom(t testing.TB, admin *url.URL, template string) string {
	t.Helper()
	name, err := randomName("fs_")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	quoted := `"` + name + `"`
	if err := adminExec(admin, `CREATE DATABASE `+quoted+
		` TEMPLATE "`+template+`" ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'`); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := adminExec(admin, `DROP DATABASE IF EXISTS `+quoted+` WITH (FORCE)`); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return databaseURL(admin, name)
}

// adminExec runs one statement on the server's maintenance database (the
// one FIELDSYNC_TEST_PG_URL names), on a connection of its own.
func adminExec(admin *url.URL, stmt string) error {
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	db, err := sql.Open("pgx", admin.String())
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, stmt)
	return err
}

// Open opens url (from NewDatabase) with the pgx driver and closes the
// pool when the test ends.
func Open(t testing.TB, url string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatalf("pgtest: open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Restart restarts the shared test server in place (pg_ctl restart -m
// fast: open sessions are ended, the port and data stay) and returns once
// it accepts connections again.
//
// go test runs packages in parallel against this one server: a restart
// breaks the connections of every test running at that moment, in every
// package. Prefer a private server (StartServer, Server.Restart); call
// this only when the shared server itself must restart, and only where
// everything else running then retries (as the server code must anyway).
func Restart(t testing.TB) {
	t.Helper()
	serverURL(t)
	cmdline := os.Getenv(EnvCmd)
	if cmdline == "" {
		unavailable(t, EnvCmd+" is not set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", cmdline)
	cmd.WaitDelay = 5 * time.Second // pg_ctl writes the server's output to its log, not to us
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pgtest: restart: %v\n%s", err, out)
	}
	t.Logf("pgtest: PostgreSQL restarted")
}
