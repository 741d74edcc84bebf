package migrations_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"fieldsync/migrations"
	"fieldsync/server/servertest/pgtest"
)

// pgDB returns a pool on a fresh PostgreSQL database.
func pgDB(t *testing.T) (*sql.DB, string) {
	t.Helper()
	u := pgtest.NewDatabase(t)
	return pgtest.Open(t, u), u
}

func migrationRows(t *testing.T, db *sql.DB) map[int]int {
	t.Helper()
	rows, err := db.Query(`SELECT version, count(*) FROM schema_migrations GROUP BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[int]int{}
	for rows.Next() {
		var v, n int
		if err := rows.Scan(&v, &n); err != nil {
			t.Fatal(err)
		}
		out[v] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// advisoryLocks counts advisory locks on PostgresLockKey in the server,
// held (granted) or waited for.
func advisoryLocks(t *testing.T, db *sql.DB, granted bool) int {
	t.Helper()
	// A bigint key is stored as classid (high 32 bits) and objid (low).
	var n int
	err := db.QueryRow(`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND classid::bigint = $1 AND objid::bigint = $2 AND granted = $3`,
		migrations.PostgresLockKey>>32, migrations.PostgresLockKey&0xffffffff, granted).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestUpPostgres_AllThenNothing: every PostgreSQL migration applies to an
// empty database, each recorded once; a second run applies nothing and
// the lock is free afterwards.
func TestUpPostgres_AllThenNothing(t *testing.T) {
	ctx := context.Background()
	db, _ := pgDB(t)
	all, err := migrations.List(migrations.Postgres)
	if err != nil || len(all) == 0 {
		t.Fatalf("list: %v (%d)", err, len(all))
	}
	got, err := migrations.UpPostgres(ctx, db, migrations.Postgres, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(all) {
		t.Fatalf("applied %v, want %d migrations", got, len(all))
	}
	if v, err := migrations.Current(ctx, db); err != nil || v != all[len(all)-1].Version {
		t.Fatalf("current %d, %v", v, err)
	}
	again, err := migrations.UpPostgres(ctx, db, migrations.Postgres, 0)
	if err != nil || len(again) != 0 {
		t.Fatalf("second run applied %v, %v", again, err)
	}
	rows := migrationRows(t, db)
	for _, m := range all {
		if rows[m.Version] != 1 {
			t.Errorf("version %d recorded %d times", m.Version, rows[m.Version])
		}
	}
	if n := advisoryLocks(t, db, true); n != 0 {
		t.Errorf("%d advisory locks still held", n)
	}
}

// TestUpPostgres_TargetThenRest: migrating to each version and then to the
// latest gives the same tables and columns as migrating at once.
func TestUpPostgres_TargetThenRest(t *testing.T) {
	ctx := context.Background()
	all, err := migrations.List(migrations.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	fresh, _ := pgDB(t)
	if _, err := migrations.UpPostgres(ctx, fresh, migrations.Postgres, 0); err != nil {
		t.Fatal(err)
	}
	want := pgColumns(t, fresh)
	// Every fourth version keeps the number of databases small.
	for i := 0; i < len(all); i += 4 {
		from := all[i].Version
		db, _ := pgDB(t)
		if _, err := migrations.UpPostgres(ctx, db, migrations.Postgres, from); err != nil {
			t.Fatalf("to %d: %v", from, err)
		}
		if v, _ := migrations.Current(ctx, db); v != from {
			t.Fatalf("at %d, want %d", v, from)
		}
		if _, err := migrations.UpPostgres(ctx, db, migrations.Postgres, 0); err != nil {
			t.Fatalf("upgrade from %d: %v", from, err)
		}
		if diff := diffSchemas(want, pgColumns(t, db), nil); diff != "" {
			t.Errorf("upgrade from %d:\n%s", from, diff)
		}
	}
}

// TestUpPostgres_ThreeInstancesAtOnce: three pools, as three instances
// starting together would have, migrate one empty database at the same
// moment. The test holds the migration lock until all three are waiting
// for it, so they really contend. None fails, every version is applied by
// exactly one of them and recorded once, and the tables exist.
func TestUpPostgres_ThreeInstancesAtOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	u := pgtest.NewDatabase(t)
	all, err := migrations.List(migrations.Postgres)
	if err != nil {
		t.Fatal(err)
	}

	holder := pgtest.Open(t, u)
	hold, err := holder.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	if _, err := hold.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, migrations.PostgresLockKey); err != nil {
		t.Fatal(err)
	}

	const instances = 3
	applied := make([][]int, instances)
	errs := make([]error, instances)
	var wg sync.WaitGroup
	var finished atomic.Int32
	for i := range instances {
		db := pgtest.Open(t, u) // a pool per instance
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer finished.Add(1)
			applied[i], errs[i] = migrations.UpPostgres(ctx, db, migrations.Postgres, 0)
		}()
	}
	// Wait (without a clock) until the three wait for the lock.
	for advisoryLocks(t, holder, false) < instances {
		if n := finished.Load(); n > 0 || ctx.Err() != nil {
			cancel()
			wg.Wait()
			t.Fatalf("%d instances finished while the lock was held (%v); they must wait for it", n, errs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := hold.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, migrations.PostgresLockKey); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	count := map[int]int{}
	for i := range instances {
		if errs[i] != nil {
			t.Errorf("instance %d: %v", i, errs[i])
		}
		for _, v := range applied[i] {
			count[v]++
		}
	}
	rows := migrationRows(t, holder)
	for _, m := range all {
		if count[m.Version] != 1 || rows[m.Version] != 1 {
			t.Errorf("version %d applied %d times, recorded %d times", m.Version, count[m.Version], rows[m.Version])
		}
	}
	if len(rows) != len(all) {
		t.Errorf("schema_migrations has %d versions, want %d", len(rows), len(all))
	}
	cols := pgColumns(t, holder)
	for _, table := range []string{"households", "visits", "changes", "sync_head", "blob_crop_hashes"} {
		if len(cols[table]) == 0 {
			t.Errorf("table %s missing", table)
		}
	}
	if n := advisoryLocks(t, holder, true); n != 0 {
		t.Errorf("%d advisory locks still held", n)
	}
}

// TestUpPostgres_RefusesNewerDatabase: a database at a version this binary
// does not know gives ErrNewer, and the lock is released after the error.
func TestUpPostgres_RefusesNewerDatabase(t *testing.T) {
	ctx := context.Background()
	db, u := pgDB(t)
	if _, err := migrations.UpPostgres(ctx, db, migrations.Postgres, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO schema_migrations(version, name, applied_at) VALUES (9999, 'from_the_future', '2030-01-01T00:00:00Z')`); err != nil {
		t.Fatal(err)
	}
	if _, err := migrations.UpPostgres(ctx, db, migrations.Postgres, 0); !errors.Is(err, migrations.ErrNewer) {
		t.Fatalf("err = %v, want ErrNewer", err)
	}
	if n := advisoryLocks(t, db, true); n != 0 {
		t.Fatalf("%d advisory locks still held after the error", n)
	}
	// Another pool (another instance) gets the lock and the same answer.
	other := pgtest.Open(t, u)
	if _, err := migrations.UpPostgres(ctx, other, migrations.Postgres, 0); !errors.Is(err, migrations.ErrNewer) {
		t.Fatalf("other instance: err = %v, want ErrNewer", err)
	}
}

// TestUpPostgres_FailedMigrationRollsBack: a broken file rolls back whole
// on PostgreSQL too, the recorded version stays where it was, and the lock
// is released.
func TestUpPostgres_FailedMigrationRollsBack(t *testing.T) {
	ctx := context.Background()
	db, _ := pgDB(t)
	fsys := fstest.MapFS{
		"0001_a.sql": {Data: []byte(`CREATE TABLE a (x BIGINT);`)},
		"0002_b.sql": {Data: []byte(`CREATE TABLE b (x BIGINT); INSERT INTO nope VALUES (1);`)},
	}
	if _, err := migrations.UpPostgres(ctx, db, fsys, 0); err == nil {
		t.Fatal("want error")
	}
	if v, _ := migrations.Current(ctx, db); v != 1 {
		t.Fatalf("version = %d, want 1", v)
	}
	if _, ok := pgColumns(t, db)["b"]; ok {
		t.Fatal("half-applied migration left table b")
	}
	if n := advisoryLocks(t, db, true); n != 0 {
		t.Fatalf("%d advisory locks still held after the error", n)
	}
}

// TestUpPostgres_WaitBoundedByContext: while another session holds the
// migration lock, UpPostgres waits, and gives up when its context ends.
func TestUpPostgres_WaitBoundedByContext(t *testing.T) {
	db, u := pgDB(t)
	hold, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	if _, err := hold.ExecContext(context.Background(), `SELECT pg_advisory_lock($1)`, migrations.PostgresLockKey); err != nil {
		t.Fatal(err)
	}
	other := pgtest.Open(t, u)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := migrations.UpPostgres(ctx, other, migrations.Postgres, 0)
		done <- err
	}()
	for advisoryLocks(t, db, false) < 1 {
		select {
		case err := <-done:
			t.Fatalf("UpPostgres returned (%v) without waiting for the lock", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("UpPostgres went ahead while the lock was held")
	}
	if v, _ := migrations.Current(context.Background(), db); v != 0 {
		t.Fatalf("version = %d, want 0", v)
	}
}

// TestSchemaParity_SQLiteAndPostgres: the server schema migrated on SQLite
// and on PostgreSQL has the same tables, and each table the same columns.
// PostgreSQL alone has sync_head (see migrations/postgres/0001).
func TestSchemaParity_SQLiteAndPostgres(t *testing.T) {
	ctx := context.Background()
	lite, err := sql.Open("sqlite3", "file:"+filepath.Join(t.TempDir(), "parity.db")+"?_foreign_keys=on")
	if err != nil {
		t.Fatal(err)
	}
	defer lite.Close()
	if _, err := migrations.Up(ctx, lite, migrations.Server, 0); err != nil {
		t.Fatal(err)
	}
	pg, _ := pgDB(t)
	if _, err := migrations.UpPostgres(ctx, pg, migrations.Postgres, 0); err != nil {
		t.Fatal(err)
	}
	pgCols := pgColumns(t, pg)
	if diff := diffSchemas(sqliteColumns(t, lite), pgCols, map[string]bool{"sync_head": true}); diff != "" {
		t.Errorf("SQLite (-) and PostgreSQL (+) schemas differ:\n%s", diff)
	}
	if len(pgCols["sync_head"]) == 0 {
		t.Error("PostgreSQL has no sync_head")
	}
}

// sqliteColumns maps each table to its column names.
func sqliteColumns(t *testing.T, db *sql.DB) map[string][]string {
	t.Helper()
	var tables []string
	rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, n)
	}
	rows.Close()
	out := map[string][]string{}
	for _, table := range tables {
		// pragma_table_info takes the table name as a bound value.
		cols, err := db.Query(`SELECT name FROM pragma_table_info(?)`, table)
		if err != nil {
			t.Fatal(err)
		}
		for cols.Next() {
			var c string
			if err := cols.Scan(&c); err != nil {
				t.Fatal(err)
			}
			out[table] = append(out[table], c)
		}
		cols.Close()
		sort.Strings(out[table])
	}
	return out
}

// pgColumns maps each table of the public schema to its column names.
func pgColumns(t *testing.T, db *sql.DB) map[string][]string {
	t.Helper()
	rows, err := db.Query(`SELECT c.table_name, c.column_name
		FROM information_schema.columns c
		JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
		WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var table, col string
		if err := rows.Scan(&table, &col); err != nil {
			t.Fatal(err)
		}
		out[table] = append(out[table], col)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, cols := range out {
		sort.Strings(cols)
	}
	return out
}

// diffSchemas lists the tables and columns in which a and b differ,
// leaving out tables that only b has and that onlyB allows.
func diffSchemas(a, b map[string][]string, onlyB map[string]bool) string {
	var lines []string
	for table, colsA := range a {
		colsB, ok := b[table]
		if !ok {
			lines = append(lines, "- table "+table)
			continue
		}
		for _, c := range colsA {
			if !slices.Contains(colsB, c) {
				lines = append(lines, fmt.Sprintf("- %s.%s", table, c))
			}
		}
		for _, c := range colsB {
			if !slices.Contains(colsA, c) {
				lines = append(lines, fmt.Sprintf("+ %s.%s", table, c))
			}
		}
	}
	for table := range b {
		if _, ok := a[table]; !ok && !onlyB[table] {
			lines = append(lines, "+ table "+table)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
