package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"fieldsync/server/domain"
	"fieldsync/server/servertest/pgtest"
)

// TestWriter_TransactionLostUnderAJob: one job of a group runs a write
// statement that outlives the writer's deadline; SQLite interrupts it and
// rolls back the whole group transaction. The writer must notice, answer
// that job with an error, and apply the others in a fresh transaction, so
// that every answer matches the database (before, the jobs after it
// autocommitted alone and all were told "failed", while the ones before it
// were lost).
func TestWriter_TransactionLostUnderAJob(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Config{Path: filepath.Join(t.TempDir(), "w.db"), WriteTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	insert := func(key string) func(ctx context.Context, tx *sql.Tx) error {
		return func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO meta(key, value) VALUES (?, 'x')`, key)
			return err
		}
	}
	slow := func(ctx context.Context, tx *sql.Tx) error {
		if err := insert("slow")(ctx, tx); err != nil {
			return err
		}
		// A write that runs far beyond the deadline unless interrupted.
		_, err := tx.ExecContext(ctx, `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000000)
			INSERT INTO meta(key, value) SELECT 'never' || x, x FROM c WHERE x = 50000000`)
		return err
	}
	var group []*pushJob
	for _, fn := range []func(context.Context, *sql.Tx) error{insert("a"), insert("b"), slow, insert("c"), insert("d")} {
		group = append(group, &pushJob{ctx: ctx, fn: fn, done: make(chan struct{})})
	}
	finished := make(chan struct{})
	go func() {
		s.commitGroup(group, true)
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(30 * time.Second):
		t.Fatal("the group did not finish within 30 s")
	}
	has := func(key string) bool {
		var n int
		if err := s.w.QueryRowContext(ctx, `SELECT count(*) FROM meta WHERE key = ?`, key).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	for i, key := range []string{"a", "b", "slow", "c", "d"} {
		j := group[i]
		if (j.err == nil) != has(key) {
			t.Errorf("job %s answered %v, stored %v", key, j.err, has(key))
		}
	}
	if err := group[2].err; !errors.Is(err, domain.ErrUnavailable) || !errors.Is(err, errTxLost) {
		t.Errorf("slow job: err = %v, want ErrUnavailable and errTxLost", err)
	}
	for _, i := range []int{0, 1, 3, 4} {
		if group[i].err != nil {
			t.Errorf("job %d: %v (it should have been retried and committed)", i, group[i].err)
		}
	}
	// The writer goes on: a later write commits.
	if err := s.writeTx(ctx, insert("later")); err != nil || !has("later") {
		t.Fatalf("later write: %v", err)
	}
}

// TestWriter_CallerCancelDoesNotReachTheStatement: a writeTx callback gets
// a context without the caller's cancellation; the caller's values (the
// actor) are kept.
func TestWriter_CallerCancelDoesNotReachTheStatement(t *testing.T) {
	s, err := Open(context.Background(), Config{Path: filepath.Join(t.TempDir(), "w.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(domain.WithActor(context.Background(), domain.Actor{UserID: 7}))
	started := make(chan struct{})
	var inner error
	var actor domain.Actor
	err = s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		close(started)
		cancel() // the client goes away while its job runs
		inner, actor = ctx.Err(), domain.ActorFrom(ctx)
		_, err := tx.ExecContext(ctx, `INSERT INTO meta(key, value) VALUES ('k', 'v')`)
		return err
	})
	<-started
	if err != nil || inner != nil {
		t.Fatalf("writeTx = %v, callback ctx err = %v", err, inner)
	}
	if actor.UserID != 7 {
		t.Fatalf("actor lost: %+v", actor)
	}
	if _, ok := ctx.Deadline(); ok {
		t.Fatal("caller ctx changed")
	}
	var v string
	if err := s.w.QueryRow(`SELECT value FROM meta WHERE key = 'k'`).Scan(&v); err != nil || v != "v" {
		t.Fatal(fmt.Errorf("stored %q: %w", v, err))
	}
}

// TestWriter_UnsyncedCommits: jobs queued with writeTxUnsynced commit in a
// transaction of their own that does not wait for the disk (SQLite's
// synchronous=NORMAL, PostgreSQL's synchronous_commit=off), ahead of the
// durable jobs queued with them and committed before those run; every
// durable job still commits waiting for the disk, and the writer's
// connection is left as it was opened. All of them land.
func TestWriter_UnsyncedCommits(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			cfg := Config{Path: filepath.Join(t.TempDir(), "w.db")}
			if engine == "postgres" {
				cfg = Config{PostgresURL: pgtest.NewDatabase(t)}
			}
			s, err := Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			// waits reports whether tx will commit waiting for the disk.
			waits := func(ctx context.Context, tx *sql.Tx) (bool, error) {
				if s.pg {
					var v string
					err := tx.QueryRowContext(ctx, `SHOW synchronous_commit`).Scan(&v)
					return v != "off", err
				}
				var v int
				err := tx.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&v)
				return v >= 2, err // FULL or EXTRA
			}
			for round := 0; round < 3; round++ {
				// Hold the writer, queue both kinds, then let it go: its
				// next group holds them all.
				started, release := make(chan struct{}), make(chan struct{})
				blocked := make(chan error, 1)
				go func() {
					blocked <- s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
						close(started)
						<-release
						return nil
					})
				}()
				<-started
				const n = 6
				type outcome struct {
					unsynced, waited, afterUnsynced bool
					err                             error
				}
				out := make(chan outcome, 2*n)
				for i := 0; i < 2*n; i++ {
					unsynced := i%2 == 0
					key := fmt.Sprintf("d%d-%d", round, i)
					if unsynced {
						key = fmt.Sprintf("u%d-%d", round, i)
					}
					go func() {
						var o outcome
						o.unsynced = unsynced
						fn := func(ctx context.Context, tx *sql.Tx) error {
							if !unsynced {
								// Every unsynced job queued with it has
								// committed: another connection sees it.
								var c int
								err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM meta WHERE key LIKE ?`, fmt.Sprintf("u%d-%%", round)).Scan(&c)
								if err != nil {
									return err
								}
								o.afterUnsynced = c == n
							}
							w, err := waits(ctx, tx)
							if err != nil {
								return err
							}
							o.waited = w
							_, err = tx.ExecContext(ctx, `INSERT INTO meta(key, value) VALUES (?, 'x')`, key)
							return err
						}
						if unsynced {
							o.err = s.writeTxUnsynced(ctx, fn)
						} else {
							o.err = s.writeTx(ctx, fn)
						}
						out <- o
					}()
				}
				for len(s.pushes) < 2*n {
					time.Sleep(time.Millisecond)
				}
				close(release)
				if err := <-blocked; err != nil {
					t.Fatal(err)
				}
				for i := 0; i < 2*n; i++ {
					o := <-out
					switch {
					case o.err != nil:
						t.Errorf("round %d: job (unsynced %v): %v", round, o.unsynced, o.err)
					case o.unsynced && o.waited:
						t.Errorf("round %d: an unsynced job's commit waits for the disk", round)
					case !o.unsynced && !o.waited:
						t.Errorf("round %d: a durable job's commit does not wait for the disk", round)
					case !o.unsynced && !o.afterUnsynced:
						t.Errorf("round %d: a durable job ran before the unsynced jobs queued with it had committed", round)
					}
				}
				var count int
				if err := s.w.QueryRowContext(ctx, `SELECT count(*) FROM meta WHERE key LIKE ? OR key LIKE ?`, fmt.Sprintf("u%d-%%", round), fmt.Sprintf("d%d-%%", round)).Scan(&count); err != nil || count != 2*n {
					t.Fatalf("round %d: %d rows stored (%v), want %d", round, count, err, 2*n)
				}
			}
			// The writer's connection commits durably again.
			if err := s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
				w, err := waits(ctx, tx)
				if err == nil && !w {
					err = errors.New("the writer's connection was left with commits that do not wait for the disk")
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
		})
	}
}
