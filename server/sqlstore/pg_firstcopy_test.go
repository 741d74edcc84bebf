package sqlstore_test

import (
	"testing"
	"time"

	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/server/servertest/pgtest"
	"fieldsync/server/sqlstore"
	"fieldsync/syncproto"
)

// TestPG_FirstCopyDuringWrites pages a device's first copy (the snapshot
// of its places) while a visit lands between two pages, on SQLite and on
// PostgreSQL: the visit must come once, either in the copy or in the
// replay of the log that follows it.
func TestPG_FirstCopyDuringWrites(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			var env *servertest.Env
			if engine == "sqlite" {
				t.Setenv("FIELDSYNC_TEST_ENGINE", "sqlite")
				env = servertest.Start(t)
			} else {
				env = pgEnv(t, pgtest.NewDatabase(t), sqlstore.Config{})
			}
			hh, other := syncproto.NewID(time.Now()), syncproto.NewID(time.Now())
			env.AddHouseholds(t, household(hh, "G11", "杨绍华"), household(other, "G12", "李桂英"))
			w := newDevice(t, env, env.CreateUser(t, "w", domain.RoleFieldWorker, "V1"))
			// Visits of G12, which the copy sends after G11's: the page that
			// copies the new visit of G11 fills up before the copy ends.
			const before = 30
			for range before {
				w.push(visitMut(w, other))
			}
			r := newDevice(t, env, env.CreateUser(t, "r", domain.RoleSupervisor, "T1"))
			seen := map[string][]int64{}
			cursor := ""
			var landed string
			for page := 0; page < 1000; page++ {
				resp, err := env.Store.Pull(ctx, r.dev, &syncproto.PullRequest{ProtocolVersion: 1, DeviceID: r.dev.DeviceID,
					Cursor: cursor, MaxBytes: syncproto.MinPullBytes})
				if err != nil {
					t.Fatal(err)
				}
				for _, op := range resp.Ops {
					if op.Op == syncproto.OpPut && op.Type == syncproto.EntityVisit {
						seen[op.ID] = append(seen[op.ID], op.Seq)
					}
				}
				cursor = resp.Cursor
				if landed == "" {
					// After the first page (mid-copy), a visit lands.
					m := visitMut(w, hh)
					w.push(m)
					landed = m.Visit.ID
				}
				if !resp.HasMore {
					break
				}
			}
			if len(seen) != before+1 {
				t.Fatalf("saw %d visits, want %d", len(seen), before+1)
			}
			for id, seqs := range seen {
				if len(seqs) != 1 {
					t.Errorf("visit %s came %d times, with seqs %v (0: in the copy); the one that landed mid-copy is %s", id, len(seqs), seqs, landed)
				}
			}
		})
	}
}
