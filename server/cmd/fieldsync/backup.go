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

// runBackup snapshots the live database to a file or to the blob store.
func runBackup(ctx context.Context, cfg app.Config, bk backupFlags, stdout io.Writer) error {
	if (bk.out == "") == !bk.toStore {
		return errors.New("backup: give exactly one of -out FILE or -to-object-store")
	}
	db := app.DBPath(cfg.DataDir)
	if _, err := os.Stat(db); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if bk.out != "" {
		if err := sqlstore.Backup(ctx, db, bk.out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "backup written to %s\n", bk.out)
		return nil
	}
	tmp, err := os.MkdirTemp("", "fieldsync-backup")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	file := filepath.Join(tmp, "fieldsync.db")
	if err := sqlstore.Backup(ctx, db, file); err != nil {
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
	name := "backups/fieldsync-" + time.Now().UTC().Format("20060102t150405z") + ".db"
	if err := blobs.PutDerived(ctx, name, st.Size(), f); err != nil {
		return fmt.Errorf("backup: upload: %w", err)
	}
	fmt.Fprintf(stdout, "backup stored in the object store as %s (%d bytes)\n", name, st.Size())
	return nil
}

// runRestore replaces the database with a backup. The server must be
// stopped.
func runRestore(ctx context.Context, cfg app.Config, bk backupFlags, stdout io.Writer) error {
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
		tmp, err := os.CreateTemp(cfg.DataDir, "restore-*.db")
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
	if err := sqlstore.Restore(ctx, src, app.DBPath(cfg.DataDir)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored %s from %s; devices will re-sync (new epoch) and re-send what the backup lacks\n", app.DBPath(cfg.DataDir), src)
	return nil
}
