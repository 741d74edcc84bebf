package mobileclient

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/server/sqlstore"
)

// TestE2E_BackupRestore: a backup taken while the server runs, more
// acknowledged work after it, a restore. The restored server serves the
// backup's data; the device is told to reset (new epoch) and re-sends what
// the restored server lacks from its saved answers, so in the end every
// visit the device was ever told "received" is on the server exactly once.
func TestE2E_BackupRestore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	env := servertest.StartWith(t, servertest.Options{Dir: dir})
	u := env.CreateUser(t, "worker1", domain.RoleFieldWorker, "V1")
	hs := importHouseholds(t, env, "G11", "G12")
	devDir := t.TempDir()
	c := openTest(t, devDir, env.URL, nil)
	if err := c.Enroll(ctx, env.EnrollCode(t, u.ID), "tablet"); err != nil {
		t.Fatal(err)
	}
	mustSync(t, c)
	var ids []string
	record := func(n int) {
		for i := 0; i < n; i++ {
			id, err := c.RecordVisit(surveyVisit(hs[i%2], "王建国"))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		mustSync(t, c)
	}
	record(3)
	backup := filepath.Join(t.TempDir(), "backup.db")
	if err := sqlstore.Backup(ctx, filepath.Join(dir, "fieldsync.db"), backup); err != nil {
		t.Fatal(err)
	}
	record(2) // acknowledged after the backup: the restore will lose them
	if n := serverCount(t, env, `SELECT count(*) FROM visits`); n != 5 {
		t.Fatalf("before restore: %d visits", n)
	}
	env.Stop()

	if err := sqlstore.Restore(ctx, backup, filepath.Join(dir, "fieldsync.db")); err != nil {
		t.Fatal(err)
	}
	env2 := servertest.StartWith(t, servertest.Options{Dir: dir})
	if n := serverCount(t, env2, `SELECT count(*) FROM visits`); n != 3 {
		t.Fatalf("restored server has %d visits, want the backup's 3", n)
	}
	c.Close()
	c2 := openTest(t, devDir, env2.URL, nil)
	rep := mustSync(t, c2)
	if rep.Resets == 0 {
		t.Errorf("device was not told to reset: %+v", rep)
	}
	if rep.Resent != 2 {
		t.Errorf("resent %d mutations, want 2", rep.Resent)
	}
	for _, id := range ids {
		if n := serverCount(t, env2, `SELECT count(*) FROM visits WHERE id = ?`, id); n != 1 {
			t.Errorf("visit %s on the restored server %d times", id, n)
		}
	}
	if n := serverCount(t, env2, `SELECT count(*) FROM visits`); n != 5 {
		t.Errorf("after re-sync: %d visits, want 5", n)
	}
	// Converged: the device's copy matches the server.
	mustSync(t, c2)
	assertConverged(t, "device", c2, env2, "G11", "G12")
}

// TestE2E_DeviceRestoredFromCopy: the device's own database is restored
// from a copy (app data restored from a backup), so it numbers new work
// with sequence numbers the server already applied from the lost copy.
// The server refuses them (sequence_reused) instead of acking and dropping
// them; the device renumbers its unsent outbox and pushes again. Every
// visit ever recorded is on the server exactly once.
func TestE2E_DeviceRestoredFromCopy(t *testing.T) {
	for _, tc := range []struct {
		name       string
		syncBefore bool // sync before the copy: nothing unsent in it
	}{{"UnsentInTheCopy", false}, {"AllSentBeforeTheCopy", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			env := servertest.Start(t)
			u := env.CreateUser(t, "worker1", domain.RoleFieldWorker, "V1")
			hs := importHouseholds(t, env, "G11", "G12")
			devDir := filepath.Join(t.TempDir(), "device")
			c := openTest(t, devDir, env.URL, nil)
			if err := c.Enroll(ctx, env.EnrollCode(t, u.ID), "tablet"); err != nil {
				t.Fatal(err)
			}
			mustSync(t, c)
			var ids []string
			record := func(c *Client, n int) {
				for i := 0; i < n; i++ {
					id, err := c.RecordVisit(surveyVisit(hs[i%2], "王建国"))
					if err != nil {
						t.Fatal(err)
					}
					ids = append(ids, id)
				}
			}
			record(c, 2)
			if tc.syncBefore {
				mustSync(t, c)
			}
			c.Close()
			copyDir := filepath.Join(t.TempDir(), "copy")
			if err := os.CopyFS(copyDir, os.DirFS(devDir)); err != nil {
				t.Fatal(err)
			}
			c = openTest(t, devDir, env.URL, nil)
			record(c, 3) // numbered after the copy: the copy will not know
			mustSync(t, c)
			c.Close()

			if err := os.RemoveAll(devDir); err != nil {
				t.Fatal(err)
			}
			if err := os.CopyFS(devDir, os.DirFS(copyDir)); err != nil {
				t.Fatal(err)
			}
			c = openTest(t, devDir, env.URL, nil)
			record(c, 4) // reuses the numbers of the work recorded after the copy
			rep := mustSync(t, c)
			if rep.Renumbered != 4 {
				t.Errorf("renumbered %d mutations, want 4: %+v", rep.Renumbered, rep)
			}
			for _, id := range ids {
				if n := serverCount(t, env, `SELECT count(*) FROM visits WHERE id = ?`, id); n != 1 {
					t.Errorf("visit %s on the server %d times", id, n)
				}
			}
			if n := serverCount(t, env, `SELECT count(*) FROM visits`); n != len(ids) {
				t.Errorf("server has %d visits, want %d", n, len(ids))
			}
			if p, err := c.Pending(); err != nil || p.Mutations != 0 {
				t.Errorf("outbox not empty: %+v %v", p, err)
			}
			// The device goes on numbering after the server's last seq.
			record(c, 1)
			mustSync(t, c)
			if n := serverCount(t, env, `SELECT count(*) FROM visits`); n != len(ids) {
				t.Errorf("after one more: server has %d visits, want %d", n, len(ids))
			}
			assertConverged(t, "device", c, env, "G11", "G12")
		})
	}
}
