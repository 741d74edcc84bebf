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
		s.commitGroup(group)
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
