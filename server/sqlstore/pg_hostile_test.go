package sqlstore_test

// The hostile variations of issue 15 at the store level, on a real
// PostgreSQL: a read pool smaller than the concurrent reads, a row lock
// that another session holds, and a restart of the server under load.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"fieldsync/server/domain"
	"fieldsync/server/servertest/pgtest"
	"fieldsync/server/sqlstore"
	"fieldsync/server/sqlstore/pgsql"
	"fieldsync/syncproto"
)

// TestPG_PoolSmallerThanConcurrency: a store with two read connections
// and 50 concurrent pulls and visit lists. While another session holds
// the tables the reads need (so the two that got a connection wait on it),
// the other reads give up after PoolWait with ErrPoolBusy (a 503), the
// health check still answers on its own connection, and once the tables
// are free every read works again: no connection was lost to the gate,
// nothing deadlocked.
func TestPG_PoolSmallerThanConcurrency(t *testing.T) {
	url := pgtest.NewDatabase(t)
	env := pgEnv(t, url, sqlstore.Config{Readers: 2, PoolWait: time.Second})
	hh := syncproto.NewID(time.Now())
	env.AddHouseholds(t, household(hh, "G11", "杨绍华"))
	w := newDevice(t, env, env.CreateUser(t, "w", domain.RoleFieldWorker, "V1"))
	for range 5 {
		w.push(visitMut(w, hh))
	}
	sup := env.CreateUser(t, "s", domain.RoleSupervisor, "T1")
	const readers = 50
	devs := make([]*device, readers)
	for i := range devs {
		devs[i] = newDevice(t, env, sup)
	}
	read := func(ctx context.Context, i int) error {
		if i%2 == 0 {
			_, err := env.Store.Pull(ctx, devs[i].dev, &syncproto.PullRequest{ProtocolVersion: 1, DeviceID: devs[i].dev.DeviceID, MaxBytes: syncproto.MinPullBytes})
			return err
		}
		_, err := env.Store.Visits(ctx, sqlstore.VisitFilter{Places: map[string]bool{"G11": true}, Limit: 10})
		return err
	}
	// All reads at once; each outcome: nil or ErrPoolBusy, nothing else.
	burst := func(ctx context.Context) (ok, busy int) {
		var wg sync.WaitGroup
		var nOK, nBusy atomic.Int64
		var errs errList
		for i := range readers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				switch err := read(ctx, i); {
				case err == nil:
					nOK.Add(1)
				case errors.Is(err, sqlstore.ErrPoolBusy) && errors.Is(err, domain.ErrUnavailable):
					nBusy.Add(1)
				default:
					errs.add("read %d: %v", i, err)
				}
			}()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			t.Fatalf("reads still running after the test's deadline: a deadlock")
		}
		errs.report(t)
		return int(nOK.Load()), int(nBusy.Load())
	}
	runCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()

	// Another session takes the tables every read needs and holds them for
	// three times PoolWait: the two reads that got a connection wait, the
	// others must give up, not queue for ever.
	blocker := pgtest.Open(t, url)
	conn, err := blocker.Conn(runCtx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(runCtx, `BEGIN; LOCK TABLE visits, changes IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() {
		defer close(released)
		time.Sleep(3 * time.Second)
		if _, err := conn.ExecContext(context.Background(), `ROLLBACK`); err != nil {
			t.Errorf("release the tables: %v", err)
		}
	}()
	healthDone := make(chan error, 1)
	go func() {
		time.Sleep(1500 * time.Millisecond) // while the pool is taken
		healthDone <- env.Store.Ping(runCtx)
	}()
	ok, busy := burst(runCtx)
	<-released
	if err := <-healthDone; err != nil {
		t.Errorf("health check while the pool was taken: %v", err)
	}
	if busy == 0 || ok == 0 || ok+busy != readers {
		t.Fatalf("with the tables held: %d reads answered, %d busy, of %d; want some of each", ok, busy, readers)
	}
	t.Logf("tables held for 3 × PoolWait: %d reads answered, %d gave up with ErrPoolBusy", ok, busy)

	// Free again: every connection came back to the pool.
	ok2, busy2 := burst(runCtx)
	for i := range 3 {
		if err := read(runCtx, i); err != nil {
			t.Fatalf("read %d after the bursts: %v", i, err)
		}
	}
	t.Logf("free: %d reads answered, %d gave up with ErrPoolBusy", ok2, busy2)
}

// TestPG_StuckWriteLock: another session holds the row lock every write
// takes (sync_head FOR UPDATE) and does not let go. A push must fail once
// the store's lock_timeout passes (here 1 s, from the URL), with an error
// that says to retry (domain.ErrUnavailable, a 503 with Retry-After over
// HTTP), never hang the instance. Once the lock is released the retried
// push lands, once.
func TestPG_StuckWriteLock(t *testing.T) {
	url := pgtest.NewDatabase(t)
	env := pgEnv(t, url+"&lock_timeout=1s", sqlstore.Config{})
	hh := syncproto.NewID(time.Now())
	env.AddHouseholds(t, household(hh, "G11", "杨绍华"))
	u := env.CreateUser(t, "w", domain.RoleFieldWorker, "V1")
	d := newDevice(t, env, u)
	d.push(visitMut(d, hh))
	otherID, token := env.Device(t, u.ID) // for the push over HTTP

	db := pgtest.Open(t, url)
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN; SELECT seq FROM sync_head WHERE id = 1 FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	m := visitMut(d, hh)
	type result struct {
		err  error
		took time.Duration
	}
	res := make(chan result, 1)
	go func() {
		start := time.Now()
		_, err := pushOne(ctx, env.Store, d, m)
		res <- result{err, time.Since(start)}
	}()
	var r result
	select {
	case r = <-res:
	case <-time.After(45 * time.Second):
		t.Fatal("the push still waits for the lock after 45 s: the instance hangs")
	}
	var pe *pgconn.PgError
	if r.err == nil || !errors.Is(r.err, domain.ErrUnavailable) || !errors.As(r.err, &pe) || pe.Code != "55P03" {
		t.Fatalf("push under a held lock: %v; want a lock timeout (55P03) marked unavailable", r.err)
	}
	t.Logf("push under a held lock failed after %s: %v", r.took.Round(time.Millisecond), r.err)

	// Over HTTP the same is a 503 with Retry-After.
	other := &device{t: t, env: env}
	body, _ := json.Marshal(syncproto.PushRequest{ProtocolVersion: 1, DeviceID: otherID, Mutations: []syncproto.Mutation{visitMut(other, hh)}})
	hctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(hctx, http.MethodPost, env.URL+"/api/v1/sync/push", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("HTTP push under a held lock: %v", err)
	}
	var e syncproto.Error
	_ = json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || e.Code != syncproto.CodeUnavailable {
		t.Fatalf("HTTP push under a held lock: %d %q %+v; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), e)
	}

	if _, err := conn.ExecContext(ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	got, err := pushOne(ctx, env.Store, d, m)
	if err != nil || got.Results[0].Status != syncproto.StatusApplied {
		t.Fatalf("retry after the lock was released: %v %+v", err, got)
	}
	var n, changes int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM visits WHERE id = $1`, m.Visit.ID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM changes WHERE entity_type = 'visit' AND entity_id = $1`, m.Visit.ID).Scan(&changes); err != nil {
		t.Fatal(err)
	}
	if n != 1 || changes != 1 {
		t.Fatalf("after the retry the visit is stored %d times with %d changes; want 1 and 1", n, changes)
	}
}

// TestPG_Restart: writers push in a loop while PostgreSQL restarts (a
// private server: pg_ctl restart -m fast, and an immediate stop then a
// start, as after a crash). Pushes during the outage fail with
// retryable errors and are retried as a device does (the same batch, the
// same seqs); the store reconnects by itself, writer included. In the
// end every acknowledged visit is stored exactly once, every device's
// state matches its acknowledged seqs (nothing half-applied), and a pull
// after the restart sees every visit once.
func TestPG_Restart(t *testing.T) {
	modes := []struct {
		name    string
		restart func(*pgtest.Server) error
	}{
		{"fast", (*pgtest.Server).Restart},
		// Like a crash: sessions killed without a shutdown, recovery at
		// the start, and a moment with nothing listening.
		{"immediate", func(s *pgtest.Server) error {
			if err := s.Stop(true); err != nil {
				return err
			}
			time.Sleep(500 * time.Millisecond)
			return s.Start()
		}},
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) { testRestart(t, mode.restart) })
	}
}

func testRestart(t *testing.T, restart func(*pgtest.Server) error) {
	srv := pgtest.StartServer(t)
	url := srv.NewDatabase(t)
	env := pgEnv(t, url, sqlstore.Config{PoolWait: 5 * time.Second})
	hh := syncproto.NewID(time.Now())
	env.AddHouseholds(t, household(hh, "G11", "杨绍华"))
	u := env.CreateUser(t, "w", domain.RoleFieldWorker, "V1")
	const writers, batches = 8, 25
	devs := make([]*device, writers)
	for i := range devs {
		devs[i] = newDevice(t, env, u)
	}
	reader := newDevice(t, env, env.CreateUser(t, "s", domain.RoleSupervisor, "T1"))

	runCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var errs errList
	var mu sync.Mutex
	acked := map[string]bool{}
	var ackedN, retried atomic.Int64
	var sample sync.Map // one error message of each kind seen, for the log
	var wg sync.WaitGroup
	for w, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				// A batch of two: a visit and an edit of the household.
				ms := []syncproto.Mutation{visitMut(d, hh), d.mut(syncproto.KindHouseholdUpdate, func(m *syncproto.Mutation) {
					m.HouseholdUpdate = &syncproto.HouseholdUpdate{HouseholdID: hh, BaseVersion: 1,
						Fields: map[string]json.RawMessage{"notes": json.RawMessage(fmt.Sprintf(`"第%d台第%d批"`, w, b))}}
				})}
				for {
					if runCtx.Err() != nil {
						errs.add("writer %d batch %d: not acknowledged before the deadline", w, b)
						return
					}
					resp, err := pushOne(runCtx, env.Store, d, ms...)
					if err == nil {
						if resp.LastSeq != ms[1].Seq || resp.Results[0].Status != syncproto.StatusApplied || resp.Results[1].Status != syncproto.StatusApplied {
							errs.add("writer %d batch %d: %+v", w, b, resp)
							return
						}
						mu.Lock()
						acked[ms[0].Visit.ID] = true
						mu.Unlock()
						ackedN.Add(1)
						break
					}
					if !errors.Is(err, domain.ErrUnavailable) {
						errs.add("writer %d batch %d: an error that does not say to retry: %v", w, b, err)
						return
					}
					retried.Add(1)
					sample.LoadOrStore(fmt.Sprintf("%.60s", err.Error()), err.Error())
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	// Restart once a third of the batches are in.
	for ackedN.Load() < writers*batches/3 && runCtx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	restartAt := ackedN.Load()
	if err := restart(srv); err != nil {
		t.Fatal(err)
	}
	afterRestart := ackedN.Load()
	wg.Wait()
	errs.report(t)
	t.Logf("restart after %d acknowledged batches (%d during it); %d pushes failed with retryable errors and were retried", restartAt, afterRestart-restartAt, retried.Load())
	sample.Range(func(_, v any) bool { t.Logf("retryable error: %v", v); return true })

	db := pgtest.Open(t, url)
	var visits int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM visits`).Scan(&visits); err != nil {
		t.Fatal(err)
	}
	if visits != len(acked) || len(acked) != writers*batches {
		t.Fatalf("%d visits stored, %d acknowledged, %d sent", visits, len(acked), writers*batches)
	}
	for id := range acked {
		var n, ch int
		if err := db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM visits WHERE id = $1), (SELECT count(*) FROM changes WHERE entity_type = 'visit' AND entity_id = $1)`, id).Scan(&n, &ch); err != nil {
			t.Fatal(err)
		}
		if n != 1 || ch != 1 {
			t.Fatalf("visit %s: stored %d times, %d changes", id, n, ch)
		}
	}
	for _, d := range devs {
		var last int64
		var results int
		if err := db.QueryRowContext(ctx, `SELECT (SELECT last_seq FROM device_sync WHERE device_id = $1), (SELECT count(*) FROM mutation_results WHERE device_id = $1)`, d.dev.DeviceID).Scan(&last, &results); err != nil {
			t.Fatal(err)
		}
		if last != d.seq || results != int(d.seq) {
			t.Fatalf("device %s: last seq %d and %d stored results; it sent %d mutations", d.dev.DeviceID, last, results, d.seq)
		}
	}
	var head, maxSeq, nChanges int64
	if err := db.QueryRowContext(ctx, `SELECT (SELECT seq FROM sync_head WHERE id = 1), (SELECT max(seq) FROM changes), (SELECT count(*) FROM changes)`).Scan(&head, &maxSeq, &nChanges); err != nil {
		t.Fatal(err)
	}
	if head != maxSeq {
		t.Fatalf("log head %d, last change %d", head, maxSeq)
	}
	// A pull after the restart, on the reconnected read pool.
	ops, _ := reader.pullAll("", 0)
	seen := map[string]int{}
	for _, op := range ops {
		if op.Op == syncproto.OpPut && op.Type == syncproto.EntityVisit {
			seen[op.ID]++
		}
	}
	for id := range acked {
		if seen[id] != 1 {
			t.Fatalf("the pull after the restart has visit %s %d times", id, seen[id])
		}
	}
}

// TestPG_SessionEndedBetweenUses: the server ends a pooled session (as a
// restart or pg_terminate_backend does) less than a second after its
// last use, before pgx's idle ping would notice. The next transaction on
// the pool begins on another connection instead of failing with
// "terminating connection due to administrator command" (TestPG_Restart's
// pull after the restart failed so once).
func TestPG_SessionEndedBetweenUses(t *testing.T) {
	url := pgtest.NewDatabase(t)
	db, err := pgsql.Open(url, pgsql.Options{MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	admin := pgtest.Open(t, url)
	for round := range 3 {
		var pid int
		// Twice: the second use resets the session (with pgx's ping), so
		// the next one within a second does not ping.
		for range 2 {
			if err := db.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
				t.Fatal(err)
			}
		}
		var ended bool
		if err := admin.QueryRowContext(ctx, `SELECT pg_terminate_backend($1, 5000)`, pid).Scan(&ended); err != nil || !ended {
			t.Fatalf("round %d: terminate %d: %v %v", round, pid, ended, err)
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatalf("round %d: begin after the session ended: %v", round, err)
		}
		var now int
		if err := tx.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&now); err != nil || now == pid {
			t.Fatalf("round %d: on backend %d (the ended one was %d): %v", round, now, pid, err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
	}
}
