package app

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"fieldsync/server/domain"
)

func TestParseDB_Cases(t *testing.T) {
	cases := []struct {
		name, value, dataDir string
		sqlite, pg           string // what it must select
		errHas               string // else: the error must say this
	}{
		{name: "default", value: "", dataDir: "data", sqlite: filepath.Join("data", "fieldsync.db")},
		{name: "default follows -data", value: "", dataDir: "/srv/fs", sqlite: "/srv/fs/fieldsync.db"},
		{name: "default without -data", value: "", sqlite: filepath.Join("data", "fieldsync.db")},
		{name: "sqlite relative", value: "sqlite:data/fieldsync.db", dataDir: "/elsewhere", sqlite: filepath.Join("data", "fieldsync.db")},
		{name: "sqlite absolute", value: "sqlite:/var/lib/fs/x.db", sqlite: "/var/lib/fs/x.db"},
		{name: "sqlite URL form", value: "sqlite:///var/lib/fs/x.db", sqlite: "/var/lib/fs/x.db"},
		{name: "spaces trimmed", value: "  sqlite:a.db ", sqlite: "a.db"},
		{name: "bare path", value: "/tmp/fs/other.db", sqlite: "/tmp/fs/other.db"},
		{name: "bare relative path", value: "x/y.db", sqlite: "x/y.db"},
		{name: "postgres", value: "postgres://fs@db.example.org:5432/fieldsync?sslmode=require", pg: "postgres://fs@db.example.org:5432/fieldsync?sslmode=require"},
		{name: "postgresql", value: "postgresql://fs:pw@10.0.0.5/fieldsync", pg: "postgresql://fs:pw@10.0.0.5/fieldsync"},
		{name: "postgres unix socket", value: "postgres:///fieldsync?host=/var/run/postgresql", pg: "postgres:///fieldsync?host=/var/run/postgresql"},
		{name: "postgres host only", value: "postgres://db.example.org", pg: "postgres://db.example.org"},
		{name: "postgres empty", value: "postgres://", errHas: "缺少主机或数据库名"},
		{name: "postgres bad", value: "postgres://fs:p%zz@host/db", errHas: "无法解析"},
		{name: "sqlite empty path", value: "sqlite:", errHas: "缺少文件路径"},
		{name: "mysql", value: "mysql://root@localhost/fs", errHas: `"mysql"`},
		{name: "typo scheme", value: "postgress://fs@host/db", errHas: "不支持的数据库类型"},
		{name: "file scheme", value: "file:data/x.db", errHas: "sqlite:文件路径"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db, err := ParseDB(c.value, c.dataDir)
			if c.errHas != "" {
				if err == nil || !errors.Is(err, ErrBadDB) || !strings.Contains(err.Error(), c.errHas) {
					t.Fatalf("ParseDB(%q) = %+v, %v; want an ErrBadDB saying %q", c.value, db, err, c.errHas)
				}
				if strings.Contains(err.Error(), "p%zz") {
					t.Errorf("the error quotes the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseDB(%q): %v", c.value, err)
			}
			if db.SQLitePath != c.sqlite || db.PostgresURL != c.pg || db.IsPostgres() != (c.pg != "") {
				t.Fatalf("ParseDB(%q) = %+v, want sqlite %q pg %q", c.value, db, c.sqlite, c.pg)
			}
		})
	}
}

func TestDatabase_StringRedactsPassword(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"postgres://fs:s3cret@db:5432/fieldsync?sslmode=disable", "postgres://fs:xxxxx@db:5432/fieldsync?sslmode=disable"},
		{"postgres://fs@db/fieldsync?password=s3cret&sslmode=disable", "postgres://fs@db/fieldsync?password=xxxxx&sslmode=disable"},
		{"postgres://fs@db/fieldsync", "postgres://fs@db/fieldsync"},
	} {
		db, err := ParseDB(c.in, "")
		if err != nil {
			t.Fatal(err)
		}
		if got := db.String(); got != c.want || strings.Contains(got, "s3cret") {
			t.Errorf("String(%q) = %q, want %q", c.in, got, c.want)
		}
		if got := db.redactErr(errors.New("failed to connect with s3cret")); strings.Contains(c.in, "s3cret") && strings.Contains(got, "s3cret") {
			t.Errorf("redactErr kept the password: %q", got)
		}
	}
	if got := (Database{SQLitePath: "data/fieldsync.db"}).String(); got != "sqlite:data/fieldsync.db" {
		t.Errorf("sqlite String = %q", got)
	}
}

// TestLibpqTarget_PasswordOutOfArguments: pg_dump's arguments (which ps
// shows) never carry the password, and pgx-only parameters are dropped.
func TestLibpqTarget_PasswordOutOfArguments(t *testing.T) {
	target, pw, err := libpqTarget("postgres://fs:s3cret@db:5432/fieldsync?sslmode=require&pool_max_conns=9&default_query_exec_mode=exec")
	if err != nil {
		t.Fatal(err)
	}
	if pw != "s3cret" || target != "postgres://fs@db:5432/fieldsync?sslmode=require" {
		t.Fatalf("target %q password %q", target, pw)
	}
	target, pw, _ = libpqTarget("postgres://fs@db/fieldsync?password=s3cret")
	if pw != "s3cret" || strings.Contains(target, "s3cret") {
		t.Fatalf("target %q password %q", target, pw)
	}
}

// TestBackupPostgres_WithoutPgDump: without pg_dump anywhere, backup says
// (in Chinese) which command to run, with the password as a placeholder,
// and fails; restore likewise.
func TestBackupPostgres_WithoutPgDump(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	old := pgToolDirs
	pgToolDirs = filepath.Join(t.TempDir(), "none", "*", "bin")
	t.Cleanup(func() { pgToolDirs = old })
	db, err := ParseDB("postgres://fs:s3cret@db.example.org/fieldsync?sslmode=require", "")
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "fs.pgdump")
	err = BackupPostgres(context.Background(), db, dest)
	if !errors.Is(err, ErrPgToolMissing) {
		t.Fatalf("backup without pg_dump: %v", err)
	}
	want := "PGPASSWORD='<数据库密码>' pg_dump --format=custom --file=" + dest + " 'postgres://fs@db.example.org/fieldsync?sslmode=require'"
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "找不到 pg_dump") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("message:\n%v\nwant it to contain\n%s", err, want)
	}
	src := filepath.Join(t.TempDir(), "in.pgdump")
	if err := os.WriteFile(src, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = RestorePostgres(context.Background(), Config{}, db, src)
	if !errors.Is(err, ErrPgToolMissing) || !strings.Contains(err.Error(), "pg_restore --clean --if-exists --no-owner") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("restore without pg_restore: %v", err)
	}
	// An existing destination is refused before anything runs.
	if err := BackupPostgres(context.Background(), db, src); !errors.Is(err, domain.ErrExists) {
		t.Fatalf("backup over an existing file: %v", err)
	}
}
