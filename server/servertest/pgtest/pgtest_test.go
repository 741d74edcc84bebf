package pgtest_test

import (
	"context"
	"database/sql"
	"net/url"
	"os"
	"strings"
	"testing"

	"fieldsync/server/servertest/pgtest"
)

// TestNewDatabase_FreshUTF8CAndDropped: each call gives an empty database
// of its own, UTF8 with C collation, reachable at the URL returned, and
// the database is gone once its test ends.
func TestNewDatabase_FreshUTF8CAndDropped(t *testing.T) {
	ctx := context.Background()
	pgtest.NewDatabase(t) // skips (or fails) here when there is no server
	var names []string
	var open []*sql.DB // still open when the databases are dropped
	defer func() {
		for _, db := range open {
			db.Close()
		}
	}()
	t.Run("inner", func(t *testing.T) {
		for range 2 {
			u := pgtest.NewDatabase(t)
			parsed, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			if got := parsed.Query().Get("sslmode"); got != "disable" {
				t.Errorf("sslmode = %q", got)
			}
			db, err := sql.Open("pgx", u)
			if err != nil {
				t.Fatal(err)
			}
			open = append(open, db)
			var name, enc, collate, ctype string
			var tables int
			err = db.QueryRowContext(ctx, `SELECT current_database(), pg_encoding_to_char(encoding), datcollate, datctype,
				(SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public')
				FROM pg_database WHERE datname = current_database()`).Scan(&name, &enc, &collate, &ctype, &tables)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(name, "fs_") || "/"+name != parsed.Path {
				t.Errorf("database %q at path %q", name, parsed.Path)
			}
			if enc != "UTF8" || collate != "C" || ctype != "C" || tables != 0 {
				t.Errorf("%s: encoding %s, collate %s, ctype %s, %d tables", name, enc, collate, ctype, tables)
			}
			if _, err := db.ExecContext(ctx, `CREATE TABLE t (x TEXT)`); err != nil {
				t.Fatal(err)
			}
			names = append(names, name)
		}
	})
	if len(names) != 2 || names[0] == names[1] {
		t.Fatalf("databases %v", names)
	}
	admin, err := sql.Open("pgx", os.Getenv(pgtest.EnvURL))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for _, n := range names {
		var left int
		if err := admin.QueryRowContext(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, n).Scan(&left); err != nil {
			t.Fatal(err)
		}
		if left != 0 {
			t.Errorf("database %s was not dropped", n)
		}
	}
}

// TestServer_RestartStopStart: a private server keeps its data over a
// fast restart and over an immediate stop (a crash) and start, and a pool
// opened before reconnects by itself; while stopped, queries fail.
func TestServer_RestartStopStart(t *testing.T) {
	srv := pgtest.StartServer(t)
	db := pgtest.Open(t, srv.NewDatabase(t))
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('保存的记录')`); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		var x string
		var err error
		// database/sql retries a connection the restart closed, once per
		// pooled connection; a few tries cover the whole pool.
		for range 3 {
			if err = db.QueryRowContext(ctx, `SELECT x FROM t`).Scan(&x); err == nil {
				break
			}
		}
		if err != nil || x != "保存的记录" {
			t.Fatalf("%s: %q, %v", when, x, err)
		}
	}
	check("before")
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	check("after restart")
	if err := srv.Stop(true); err != nil {
		t.Fatal(err)
	}
	if err := db.PingContext(ctx); err == nil {
		t.Fatal("ping succeeded while the server was stopped")
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	check("after crash and start")
}
