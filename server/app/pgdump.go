package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"fieldsync/server/domain"
)

// ErrPgToolMissing is returned when pg_dump or pg_restore is neither on
// PATH nor in /usr/lib/postgresql/*/bin; the error's text gives the
// command to run by hand.
var ErrPgToolMissing = errors.New("PostgreSQL client program not found")

// pgToolDirs is where Debian installs PostgreSQL's programs, one folder
// per major version (tests replace it).
var pgToolDirs = "/usr/lib/postgresql/*/bin"

// findPgTool finds name (pg_dump, pg_restore) on PATH, else in the newest
// /usr/lib/postgresql/N/bin.
func findPgTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	dirs, _ := filepath.Glob(pgToolDirs)
	major := func(dir string) int {
		n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
		return n
	}
	sort.Slice(dirs, func(i, j int) bool { return major(dirs[i]) > major(dirs[j]) })
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, ErrPgToolMissing)
}

// pgxOnlyParams are connection-URL parameters that pgx reads and libpq
// (pg_dump, pg_restore) rejects.
var pgxOnlyParams = []string{"statement_cache_capacity", "description_cache_capacity", "default_query_exec_mode"}

// libpqTarget splits the database URL for PostgreSQL's own programs: the
// URL without its password (an argument shows in ps) and the password,
// which goes into PGPASSWORD.
func libpqTarget(raw string) (target, password string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", fmt.Errorf("数据库地址无法解析: %w", ErrBadDB)
	}
	if u.User != nil {
		password, _ = u.User.Password()
		u.User = url.User(u.User.Username())
	}
	q := u.Query()
	if p := q.Get("password"); p != "" && password == "" {
		password = p
	}
	q.Del("password")
	for k := range q {
		if strings.HasPrefix(k, "pool_") || contains(pgxOnlyParams, k) {
			q.Del(k)
		}
	}
	u.RawQuery = q.Encode()
	return u.String(), password, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// manual is the command line to give the operator when the tool is
// missing: the password as a placeholder in PGPASSWORD, never its value.
func manual(tool string, args []string, hasPassword bool) string {
	var b strings.Builder
	if hasPassword {
		b.WriteString("PGPASSWORD='<数据库密码>' ")
	}
	b.WriteString(tool)
	for _, a := range args {
		b.WriteString(" ")
		if strings.ContainsAny(a, " &?'\"$;|<>*") {
			a = shellQuote(a)
		}
		b.WriteString(a)
	}
	return b.String()
}

// runPgTool runs tool with args, the password in PGPASSWORD, and returns
// its error with the last lines it wrote.
func runPgTool(ctx context.Context, path string, args []string, password string, db Database) error {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = os.Environ()
	if password != "" {
		cmd.Env = append(cmd.Env, "PGPASSWORD="+password)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if len(msg) > 2000 {
			msg = "..." + msg[len(msg)-2000:]
		}
		return fmt.Errorf("%s: %w\n%s", filepath.Base(path), err, db.redactErr(errors.New(msg)))
	}
	return nil
}

// BackupPostgres writes a pg_dump archive (custom format) of the database
// to dest, which must not exist, with the pg_dump found on PATH or in
// /usr/lib/postgresql/*/bin. pg_dump reads one snapshot, so instances may
// keep running. Without pg_dump it returns an error wrapping
// ErrPgToolMissing that says, in Chinese, the exact command to run.
func BackupPostgres(ctx context.Context, db Database, dest string) error {
	if !db.IsPostgres() {
		return fmt.Errorf("backup: %s is not PostgreSQL: %w", db, ErrBadDB)
	}
	if _, err := os.Stat(dest); err == nil {
		return fmt.Errorf("backup: %s exists: %w", dest, domain.ErrExists)
	}
	target, pw, err := libpqTarget(db.PostgresURL)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	tool, err := findPgTool("pg_dump")
	if err != nil {
		return fmt.Errorf("backup: 找不到 pg_dump（PATH 和 /usr/lib/postgresql/*/bin 中都没有；Debian 上可安装 postgresql-client）。请在装有它的机器上运行：\n  %s\n%w",
			manual("pg_dump", []string{"--format=custom", "--file=" + dest, target}, pw != ""), err)
	}
	tmp := dest + ".partial"
	_ = os.Remove(tmp)
	if err := runPgTool(ctx, tool, []string{"--format=custom", "--file=" + tmp, target}, pw, db); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("backup: %w", err)
	}
	f, err := os.Open(tmp)
	if err == nil {
		err = f.Sync()
		f.Close()
	}
	if err == nil {
		err = os.Rename(tmp, dest)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}

// RestorePostgres replaces the database's contents with the pg_dump
// archive at src: it checks that src is an archive (pg_restore --list),
// then runs pg_restore --clean --if-exists --no-owner --single-transaction
// (all or nothing), applies any newer migrations, and starts a new epoch,
// as a SQLite restore does: every cursor handed out before is answered
// with a reset, and devices re-send what the backup lacks. Every instance
// must be stopped. Without pg_restore it returns an error wrapping
// ErrPgToolMissing that gives the commands to run.
func RestorePostgres(ctx context.Context, cfg Config, db Database, src string) error {
	if !db.IsPostgres() {
		return fmt.Errorf("restore: %s is not PostgreSQL: %w", db, ErrBadDB)
	}
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	target, pw, err := libpqTarget(db.PostgresURL)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	args := []string{"--clean", "--if-exists", "--no-owner", "--single-transaction", "--dbname=" + target, src}
	tool, err := findPgTool("pg_restore")
	if err != nil {
		return fmt.Errorf("restore: 找不到 pg_restore（PATH 和 /usr/lib/postgresql/*/bin 中都没有）。请安装 postgresql-client（Debian）后重新运行本命令。手动恢复的命令是：\n  %s\n但手动恢复不会开始新纪元，设备的同步游标不会重置\n%w",
			manual("pg_restore", args, pw != ""), err)
	}
	if err := runPgTool(ctx, tool, []string{"--list", src}, "", db); err != nil {
		return fmt.Errorf("restore: %s 不是 pg_dump 的归档文件（-Fc）: %w", src, err)
	}
	if err := runPgTool(ctx, tool, args, pw, db); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	st, err := OpenStore(ctx, cfg)
	if err != nil {
		return fmt.Errorf("restore: open restored database: %w", err)
	}
	defer st.Close()
	if err := st.NewEpoch(ctx); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return st.Audit(ctx, "restore", "database", db.String(), "", map[string]string{"from": filepath.Base(src), "epoch": st.Epoch()})
}
