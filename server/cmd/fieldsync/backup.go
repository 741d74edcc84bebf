package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"fieldsync/server/app"
	"fieldsync/server/sqlstore"
)

type backupFlags struct {
	out, from, fromStore string
	toStore              bool
}

// runBackup snapshots the live database to a file or to the blob store:
// VACUUM INTO on SQLite, pg_dump (custom format) on PostgreSQL.
func runBackup(ctx context.Context, cfg app.Config, db app.Database, bk backupFlags, stdout io.Writer) error {
	if (bk.out == "") == !bk.toStore {
		return errors.New("backup: give exactly one of -out FILE or -to-object-store")
	}
	snapshot := func(dst string) error {
		if db.IsPostgres() {
			return app.BackupPostgres(ctx, db, dst)
		}
		return sqlstore.Backup(ctx, db.SQLitePath, dst)
	}
	if !db.IsPostgres() {
		if _, err := os.Stat(db.SQLitePath); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
	}
	if bk.out != "" {
		if err := snapshot(bk.out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "backup of %s written to %s\n", db, bk.out)
		return nil
	}
	tmp, err := os.MkdirTemp("", "fieldsync-backup")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	ext := ".db"
	if db.IsPostgres() {
		ext = ".pgdump"
	}
	file := filepath.Join(tmp, "fieldsync"+ext)
	if err := snapshot(file); err != nil {
		return err
	}
	blobs, err := app.OpenBlobs(ctx, cfg)
	if err != nil {
		return err
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	name := "backups/fieldsync-" + time.Now().UTC().Format("20060102t150405z") + ext
	if err := blobs.PutDerived(ctx, name, st.Size(), f); err != nil {
		return fmt.Errorf("backup: upload: %w", err)
	}
	fmt.Fprintf(stdout, "backup stored in the object store as %s (%d bytes)\n", name, st.Size())
	return nil
}

// runRestore replaces the database with a backup (a SQLite file, or a
// pg_dump archive on PostgreSQL) and starts a new epoch. The server (every
// instance, on PostgreSQL) must be stopped.
func runRestore(ctx context.Context, cfg app.Config, db app.Database, bk backupFlags, stdout io.Writer) error {
	if (bk.from == "") == (bk.fromStore == "") {
		return errors.New("restore: give exactly one of -from FILE or -from-object-store NAME")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return err
	}
	src := bk.from
	if bk.fromStore != "" {
		blobs, err := app.OpenBlobs(ctx, cfg)
		if err != nil {
			return err
		}
		r, _, err := blobs.OpenDerived(ctx, bk.fromStore)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		defer r.Close()
		tmp, err := os.CreateTemp(cfg.DataDir, "restore-*"+filepath.Ext(bk.fromStore))
		if err != nil {
			return err
		}
		defer os.Remove(tmp.Name())
		if _, err := io.Copy(tmp, r); err != nil {
			tmp.Close()
			return fmt.Errorf("restore: download: %w", err)
		}
		if err := tmp.Close(); err != nil {
			return err
		}
		src = tmp.Name()
	}
	if db.IsPostgres() {
		if err := app.RestorePostgres(ctx, cfg, db, src); err != nil {
			return err
		}
	} else if err := sqlstore.Restore(ctx, src, db.SQLitePath); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored %s from %s; devices will re-sync (new epoch) and re-send what the backup lacks\n", db, src)
	return nil
}
