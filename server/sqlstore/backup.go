package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"fieldsync/server/domain"
)

// Backup writes a consistent snapshot of the database file at dbPath to
// dst with VACUUM INTO. It opens its own connection and runs as a read
// transaction, so the server may keep running and writing meanwhile. dst
// must not exist.
func Backup(ctx context.Context, dbPath, dst string) error {
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("backup: %s exists: %w", dst, domain.ErrExists)
	}
	db, err := sql.Open("sqlite3", DSN(dbPath, false, 30*time.Second))
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, dst); err != nil {
		return fmt.Errorf("backup: vacuum into %s: %w", dst, err)
	}
	f, err := os.Open(dst)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("backup: fsync: %w", err)
	}
	return nil
}

// Restore replaces the database at dbPath with the backup at src. The
// server must be stopped. The backup is integrity-checked first, then
// copied in with a rename, and it gets a new epoch: every device cursor
// handed out before is answered with a reset, and devices whose pushes the
// restored database lacks are told the sequence they must resend from.
func Restore(ctx context.Context, src, dbPath string) error {
	check, err := sql.Open("sqlite3", "file:"+src+"?mode=ro")
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	var res string
	err = check.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&res)
	check.Close()
	if err != nil {
		return fmt.Errorf("restore: %s is not a SQLite database: %w", src, err)
	}
	if res != "ok" {
		return fmt.Errorf("restore: integrity check of %s: %s: %w", src, res, domain.ErrInvalid)
	}
	tmp := dbPath + ".restoring"
	if err := copyFile(src, tmp); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Remove(dbPath + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("restore: %w", err)
		}
	}
	if err := os.Rename(tmp, dbPath); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if d, err := os.Open(filepath.Dir(dbPath)); err == nil {
		d.Sync()
		d.Close()
	}
	st, err := Open(ctx, Config{Path: dbPath})
	if err != nil {
		return fmt.Errorf("restore: open restored database: %w", err)
	}
	defer st.Close()
	if err := st.NewEpoch(ctx); err != nil {
		return err
	}
	return st.Audit(ctx, "restore", "database", filepath.Base(dbPath), "", map[string]string{"from": src, "epoch": st.Epoch()})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
