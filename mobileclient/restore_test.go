package mobileclient

import (
	"context"
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
