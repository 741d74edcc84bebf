package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"fieldsync/migrations"
	"fieldsync/server/domain"
	"fieldsync/server/servertest/pgtest"
	"fieldsync/server/sqlstore"
)

// The fieldsync binary, built once for the tests that run it as separate
// processes, and removed by TestMain.
var binary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binary.dir != "" {
		os.RemoveAll(binary.dir)
	}
	os.Exit(code)
}

func fieldsyncBinary(t *testing.T) string {
	t.Helper()
	binary.once.Do(func() {
		binary.dir, binary.err = os.MkdirTemp("", "fieldsync-bin-")
		if binary.err != nil {
			return
		}
		binary.path = filepath.Join(binary.dir, "fieldsync")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", binary.path, ".").CombinedOutput()
		if err != nil {
			binary.err = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

// withPassword puts a password into a pgtest URL: the test server's trust
// authentication ignores it, which lets tests check it never shows.
func withPassword(t *testing.T, raw, pw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), pw)
	return u.String()
}

// TestDBFlag_SQLiteFileAndEnvironment: -db sqlite:PATH puts the database
// there, FIELDSYNC_DB does the same unless -db is given, the default stays
// the data folder's fieldsync.db, and a bad value is a clear error.
func TestDBFlag_SQLiteFileAndEnvironment(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if err := run(ctx, []string{"migrate", "-data", filepath.Join(dir, "d1")}, &out, &errb); err != nil {
		t.Fatalf("migrate: %v %s", err, errb.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "d1", "fieldsync.db")); err != nil {
		t.Fatalf("default database: %v", err)
	}
	other := filepath.Join(dir, "elsewhere", "x.db")
	out.Reset()
	if err := run(ctx, []string{"migrate", "-data", filepath.Join(dir, "d2"), "-db", "sqlite:" + other}, &out, &errb); err != nil {
		t.Fatalf("migrate -db sqlite: %v %s", err, errb.String())
	}
	if _, err := os.Stat(other); err != nil || !strings.Contains(out.String(), "sqlite:"+other) {
		t.Fatalf("-db sqlite:%s: %v, said %q", other, err, out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "d2", "fieldsync.db")); err == nil {
		t.Fatal("-db sqlite:PATH also made the data folder's file")
	}
	fromEnv := filepath.Join(dir, "env.db")
	t.Setenv("FIELDSYNC_DB", "sqlite:"+fromEnv)
	if err := run(ctx, []string{"migrate", "-data", filepath.Join(dir, "d3")}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fromEnv); err != nil {
		t.Fatalf("FIELDSYNC_DB: %v", err)
	}
	flagWins := filepath.Join(dir, "flag.db")
	if err := run(ctx, []string{"admin", "users", "-db", flagWins}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(flagWins); err != nil {
		t.Fatalf("-db over FIELDSYNC_DB: %v", err)
	}
	// A PostgreSQL that does not answer: migrate (unlike run) fails at
	// once, naming the database without its password.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	err = run(ctx, []string{"migrate", "-db", "postgres://fs:pg-s3cret-pw@" + closed + "/fieldsync?sslmode=disable"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "PostgreSQL 数据库 postgres://fs:xxxxx@"+closed) || strings.Contains(err.Error(), "pg-s3cret-pw") {
		t.Fatalf("migrate on a closed port: %v", err)
	}
	t.Setenv("FIELDSYNC_DB", "mysql://root:pw@localhost/fs")
	bad := filepath.Join(dir, "bad")
	for _, args := range [][]string{{"migrate", "-data", bad}, {"run", "-data", bad, "-addr", "127.0.0.1:0"}, {"seed", "-data", bad},
		{"admin", "users", "-data", bad}, {"export", "-data", bad, "-out", "-"}, {"import-outbox", "-data", bad, "x.json"},
		{"backup", "-data", bad, "-out", "x"}, {"restore", "-data", bad, "-from", "x"}, {"demo", "-data", bad}} {
		err := run(ctx, args, &out, &errb)
		if err == nil || !strings.Contains(err.Error(), "不支持的数据库类型") {
			t.Errorf("%v with FIELDSYNC_DB=mysql://: %v", args, err)
		}
	}
}

// TestMigrate_PostgresThreeProcesses: three `fieldsync migrate` processes
// on one new PostgreSQL database at once (and on one -data folder: on
// PostgreSQL the folder's lock is not taken) all exit 0 at the newest
// version, and every migration is recorded once.
func TestMigrate_PostgresThreeProcesses(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	bin := fieldsyncBinary(t)
	want, err := migrations.List(migrations.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	latest := want[len(want)-1].Version
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	secret := withPassword(t, dbURL, "pg-s3cret-pw")
	data := t.TempDir()
	cmds := make([]*exec.Cmd, 3)
	outs := make([]*bytes.Buffer, 3)
	for i := range cmds {
		cmds[i] = exec.CommandContext(ctx, bin, "migrate", "-data", data)
		cmds[i].Env = append(os.Environ(), "FIELDSYNC_DB="+secret)
		outs[i] = new(bytes.Buffer)
		cmds[i].Stdout, cmds[i].Stderr = outs[i], outs[i]
	}
	for _, c := range cmds { // started back to back, before any waits
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range cmds {
		err := c.Wait()
		got := outs[i].String()
		if err != nil {
			t.Errorf("migrate #%d: %v\n%s", i, err, got)
			continue
		}
		if !strings.Contains(got, fmt.Sprintf("at schema version %d", latest)) || !strings.Contains(got, "fieldsync:xxxxx@") ||
			strings.Contains(got, "pg-s3cret-pw") {
			t.Errorf("migrate #%d said:\n%s", i, got)
		}
	}
	rows, err := pgtest.Open(t, dbURL).Query(`SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var versions []int
	for rows.Next() {
		var v, n int
		if err := rows.Scan(&v, &n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("version %d recorded %d times", v, n)
		}
		versions = append(versions, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(versions) != len(want) || versions[len(versions)-1] != latest {
		t.Fatalf("schema_migrations holds %v, want %d versions up to %d", versions, len(want), latest)
	}
}

// havePgDump reports whether pg_dump and pg_restore are where the backup
// command looks (PATH, /usr/lib/postgresql/*/bin); without them the test
// is skipped, or fails under FIELDSYNC_REQUIRE_S3 (or CI).
func havePgDump(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"pg_dump", "pg_restore"} {
		if _, err := exec.LookPath(tool); err == nil {
			continue
		}
		if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + tool); len(m) > 0 {
			continue
		}
		msg := tool + " is not installed (Debian: postgresql-client)"
		if os.Getenv(pgtest.EnvRequire) != "" || os.Getenv("CI") != "" {
			t.Fatal(msg + "; FIELDSYNC_REQUIRE_S3 or CI is set, so this is an error")
		}
		t.Skip(msg)
	}
}

// TestBackupRestore_Postgres: on PostgreSQL, backup (pg_dump, to a file
// and to the object store) and restore (pg_restore) bring back the
// database as it was at the backup, with a new epoch; a second backup
// onto the same file and a restore from garbage fail and change nothing.
func TestBackupRestore_Postgres(t *testing.T) {
	havePgDump(t)
	ctx := context.Background()
	dbURL := withPassword(t, pgtest.NewDatabase(t), "pg-s3cret-pw")
	data := t.TempDir()
	var out, errb syncBuffer
	cli := func(args ...string) error {
		return run(ctx, append(args, "-db", dbURL, "-data", data), &out, &errb)
	}
	if err := cli("migrate"); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	state := func() (users map[string]bool, epoch string) {
		st, err := sqlstore.Open(ctx, sqlstore.Config{PostgresURL: dbURL})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		us, err := st.Users(ctx)
		if err != nil {
			t.Fatal(err)
		}
		users = map[string]bool{}
		for _, u := range us {
			users[u.Username] = true
		}
		return users, st.Epoch()
	}
	addUser := func(name string) {
		st, err := sqlstore.Open(ctx, sqlstore.Config{PostgresURL: dbURL})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if _, err := st.CreateUser(ctx, domain.User{Username: name, DisplayName: name, Role: domain.RoleSupervisor}); err != nil {
			t.Fatal(err)
		}
	}
	addUser("before_backup")
	_, epoch0 := state()

	file := filepath.Join(t.TempDir(), "fs.pgdump")
	if err := cli("backup", "-out", file); err != nil {
		t.Fatalf("backup: %v\n%s", err, errb.String())
	}
	if err := cli("backup", "-out", file); err == nil {
		t.Fatal("a backup over an existing file must fail")
	}
	before := len(out.String())
	if err := cli("backup", "-to-object-store"); err != nil {
		t.Fatalf("backup -to-object-store: %v", err)
	}
	name := regexp.MustCompile(`backups/fieldsync-[0-9tz]+\.pgdump`).FindString(out.String()[before:])
	if name == "" {
		t.Fatalf("backup -to-object-store said %q", out.String())
	}
	addUser("after_backup")

	if err := cli("restore", "-from", file); err != nil {
		t.Fatalf("restore: %v", err)
	}
	users, epoch1 := state()
	if !users["before_backup"] || users["after_backup"] || epoch1 == epoch0 {
		t.Fatalf("after restore: users %v, epoch %s (before %s)", users, epoch1, epoch0)
	}
	addUser("after_restore")
	if err := cli("restore", "-from-object-store", name); err != nil {
		t.Fatalf("restore -from-object-store: %v", err)
	}
	users, epoch2 := state()
	if !users["before_backup"] || users["after_restore"] || epoch2 == epoch1 {
		t.Fatalf("after restore from the object store: users %v, epoch %s", users, epoch2)
	}

	bad := filepath.Join(t.TempDir(), "bad.pgdump")
	os.WriteFile(bad, []byte("not a dump"), 0o600)
	if err := cli("restore", "-from", bad); err == nil || !strings.Contains(err.Error(), "不是 pg_dump 的归档文件") {
		t.Fatalf("restore from garbage: %v", err)
	}
	if users, epoch := state(); !users["before_backup"] || epoch != epoch2 {
		t.Fatalf("a failed restore changed the database: %v %s", users, epoch)
	}
	all := out.String() + errb.String()
	if strings.Contains(all, "pg-s3cret-pw") {
		t.Fatalf("the password shows in the output:\n%s", all)
	}
}

// instance is a `fieldsync run` process.
type instance struct {
	cmd       *exec.Cmd
	out, errb *syncBuffer
	base      string
	done      chan error
}

func startInstance(t *testing.T, bin string, args ...string) *instance {
	t.Helper()
	in := &instance{out: new(syncBuffer), errb: new(syncBuffer), done: make(chan error, 1)}
	in.cmd = exec.Command(bin, append([]string{"run", "-addr", "127.0.0.1:0"}, args...)...)
	in.cmd.Stdout, in.cmd.Stderr = in.out, in.errb
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { in.done <- in.cmd.Wait() }()
	t.Cleanup(func() {
		if in.cmd.ProcessState == nil {
			in.cmd.Process.Kill()
			<-in.done
		}
	})
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if i := strings.Index(in.errb.String(), `"addr":"127.0.0.1:`); i >= 0 {
			rest := in.errb.String()[i+len(`"addr":"`):]
			in.base = "http://" + rest[:strings.Index(rest, `"`)]
			return in
		}
		select {
		case err := <-in.done:
			t.Fatalf("fieldsync run exited: %v\n%s", err, in.errb.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("fieldsync run did not start:\n%s", in.errb.String())
	return nil
}

func (in *instance) stop(t *testing.T) {
	t.Helper()
	in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-in.done:
		if err != nil {
			t.Fatalf("fieldsync run after SIGTERM: %v\n%s", err, in.errb.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("fieldsync run did not stop on SIGTERM")
	}
}

// TestRun_PostgresBinary: `fieldsync run -db postgres://...` end to end:
// the binary on a new database migrates it, creates the admin and serves
// (healthz, login); a second instance with its own -data folder on the
// same database starts beside it (no exclusive lock), prints no second
// password, and takes the same login. Both stop cleanly on SIGTERM; the
// password in the URL never shows.
func TestRun_PostgresBinary(t *testing.T) {
	bin := fieldsyncBinary(t)
	dbURL := withPassword(t, pgtest.NewDatabase(t), "pg-s3cret-pw")
	a := startInstance(t, bin, "-db", dbURL, "-data", t.TempDir())
	m := regexp.MustCompile(`登录：\s+admin / (\S+)`).FindStringSubmatch(a.out.String())
	if m == nil {
		t.Fatalf("no first-start banner:\n%s", a.out.String())
	}
	password := m[1]
	t.Setenv("FIELDSYNC_DB", dbURL) // the second takes it from the environment
	b := startInstance(t, bin, "-data", t.TempDir())
	if strings.Contains(b.out.String(), "登录：") {
		t.Errorf("the second instance printed a password again:\n%s", b.out.String())
	}
	for _, in := range []*instance{a, b} {
		resp, err := http.Get(in.base + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		var h struct {
			Status string            `json:"status"`
			Checks map[string]string `json:"checks"`
		}
		json.NewDecoder(resp.Body).Decode(&h)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || h.Status != "ok" || h.Checks["database"] != "ok" {
			t.Fatalf("%s healthz: %d %+v", in.base, resp.StatusCode, h)
		}
		resp, err = http.Post(in.base+"/api/v1/auth/login", "application/json",
			strings.NewReader(`{"username":"admin","password":"`+password+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s login: %d", in.base, resp.StatusCode)
		}
	}
	a.stop(t)
	b.stop(t)
	for _, in := range []*instance{a, b} {
		all := in.out.String() + in.errb.String()
		if strings.Contains(all, "pg-s3cret-pw") {
			t.Fatalf("the password shows in the output:\n%s", all)
		}
		if !strings.Contains(in.errb.String(), `"db":"postgres://fieldsync:xxxxx@`) {
			t.Errorf("the log does not name the database:\n%s", in.errb.String())
		}
	}
}

// TestCommands_Postgres: the chores work on PostgreSQL as on SQLite:
// demo loads the county (its photos into the data folder's blobs), admin
// lists and resets accounts, export reads households, seed imports more,
// and a second demo changes nothing.
func TestCommands_Postgres(t *testing.T) {
	ctx := context.Background()
	dbURL := pgtest.NewDatabase(t)
	data := t.TempDir()
	var out, errb syncBuffer
	cli := func(args ...string) string {
		t.Helper()
		before := len(out.String())
		if err := run(ctx, args, &out, &errb); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errb.String())
		}
		return out.String()[before:]
	}
	t.Setenv("FIELDSYNC_DB", dbURL)
	if got := cli("demo", "-data", data); !strings.Contains(got, "875 户") {
		t.Fatalf("demo said %q", got)
	}
	if got := cli("admin", "users"); !strings.Contains(got, "wangge_li") || !strings.Contains(got, "cun_supervisor") {
		t.Fatalf("admin users:\n%s", got)
	}
	if got := cli("admin", "reset-password", "wangge_zhao"); !strings.Contains(got, "wangge_zhao 的新密码：") {
		t.Fatalf("reset-password said %q", got)
	}
	csv := cli("export", "-format", "csv", "-what", "households", "-out", "-", "-quiet")
	if n := strings.Count(csv, "\n"); n != 876 {
		t.Fatalf("households CSV has %d lines, want 876", n)
	}
	stdin = strings.NewReader(`{"households": [{"place": "530100101201001", "count": 5, "seed": 3}]}`)
	t.Cleanup(func() { stdin = nil })
	if got := cli("seed", "-spec", "-"); !strings.Contains(got, `"households_total": 880`) || !strings.Contains(got, `"database": "postgres://`) {
		t.Fatalf("seed manifest:\n%s", got)
	}
	cli("demo", "-data", data)
	csv = cli("export", "-format", "csv", "-what", "households", "-out", "-", "-quiet")
	if n := strings.Count(csv, "\n"); n != 881 {
		t.Fatalf("after a second demo the CSV has %d lines, want 881", n)
	}
}
