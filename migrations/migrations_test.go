package migrations_test

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"path/filepath"
	"testing"
	"testing/fstest"

	_ "github.com/mattn/go-sqlite3"

	"fieldsync/migrations"
)

func open(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(t.TempDir(), "m.db")+"?_foreign_keys=on&_journal_mode=WAL")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

func schema(t *testing.T, db *sql.DB) map[string]string {
	t.Helper()
	rows, err := db.Query(`SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name != 'schema_migrations' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var n, s string
		rows.Scan(&n, &s)
		out[n] = s
	}
	return out
}

// TestUp_FreshAndFromEveryVersion installs each schema fresh, and upgrades
// from every earlier version to the latest, on real SQLite files; all
// paths must end in the same schema.
func TestUp_FreshAndFromEveryVersion(t *testing.T) {
	for name, fsys := range map[string]fs.FS{"server": migrations.Server, "device": migrations.Device} {
		t.Run(name, func(t *testing.T) {
			all, err := migrations.List(fsys)
			if err != nil || len(all) == 0 {
				t.Fatalf("list: %v (%d)", err, len(all))
			}
			ctx := context.Background()
			fresh := open(t)
			applied, err := migrations.Up(ctx, fresh, fsys, 0)
			if err != nil || len(applied) != len(all) {
				t.Fatalf("fresh: %v %v", applied, err)
			}
			want := schema(t, fresh)
			if len(want) == 0 {
				t.Fatal("empty schema")
			}
			for _, from := range all {
				db := open(t)
				if _, err := migrations.Up(ctx, db, fsys, from.Version); err != nil {
					t.Fatalf("to %d: %v", from.Version, err)
				}
				if v, _ := migrations.Current(ctx, db); v != from.Version {
					t.Fatalf("at %d, want %d", v, from.Version)
				}
				if _, err := migrations.Up(ctx, db, fsys, 0); err != nil {
					t.Fatalf("upgrade from %d: %v", from.Version, err)
				}
				got := schema(t, db)
				for k, v := range want {
					if got[k] != v {
						t.Errorf("upgrade from %d: %s differs", from.Version, k)
					}
				}
				if len(got) != len(want) {
					t.Errorf("upgrade from %d: %d objects, want %d", from.Version, len(got), len(want))
				}
				// Up again is a no-op.
				if again, err := migrations.Up(ctx, db, fsys, 0); err != nil || len(again) != 0 {
					t.Errorf("second up applied %v, %v", again, err)
				}
			}
		})
	}
}

// TestUp_FailedMigrationLeavesPreviousVersion: a broken file rolls back
// whole, and the recorded version stays where it was.
func TestUp_FailedMigrationLeavesPreviousVersion(t *testing.T) {
	fsys := fstest.MapFS{
		"0001_a.sql": {Data: []byte(`CREATE TABLE a (x INTEGER);`)},
		"0002_b.sql": {Data: []byte(`CREATE TABLE b (x INTEGER); INSERT INTO nope VALUES (1);`)},
	}
	db := open(t)
	ctx := context.Background()
	if _, err := migrations.Up(ctx, db, fsys, 0); err == nil {
		t.Fatal("want error")
	}
	if v, _ := migrations.Current(ctx, db); v != 1 {
		t.Fatalf("version = %d, want 1", v)
	}
	var n int
	db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = 'b'`).Scan(&n)
	if n != 0 {
		t.Fatal("half-applied migration left table b")
	}
}

func TestUp_RefusesNewerDatabase(t *testing.T) {
	db := open(t)
	ctx := context.Background()
	big := fstest.MapFS{"0001_a.sql": {Data: []byte(`SELECT 1;`)}, "0002_b.sql": {Data: []byte(`SELECT 1;`)}}
	small := fstest.MapFS{"0001_a.sql": {Data: []byte(`SELECT 1;`)}}
	if _, err := migrations.Up(ctx, db, big, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := migrations.Up(ctx, db, small, 0); !errors.Is(err, migrations.ErrNewer) {
		t.Fatalf("err = %v, want ErrNewer", err)
	}
}

func TestList_BadNames(t *testing.T) {
	for _, name := range []string{"x_a.sql", "0_a.sql", "0001.sql"} {
		if _, err := migrations.List(fstest.MapFS{name: {Data: []byte(`SELECT 1;`)}}); !errors.Is(err, migrations.ErrBadName) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

// The PostgreSQL schema has a migration for every SQLite one, of the same
// version and name, and none more: a database is at the same version
// whichever engine holds it.
func TestPostgresMatchesServerVersions(t *testing.T) {
	lite, err := migrations.List(migrations.Server)
	if err != nil {
		t.Fatal(err)
	}
	pg, err := migrations.List(migrations.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	if len(lite) != len(pg) {
		t.Fatalf("server has %d migrations, postgres %d", len(lite), len(pg))
	}
	for i := range lite {
		if lite[i].Version != pg[i].Version || lite[i].Name != pg[i].Name {
			t.Errorf("migration %d: server %04d_%s, postgres %04d_%s", i, lite[i].Version, lite[i].Name, pg[i].Version, pg[i].Name)
		}
	}
}
