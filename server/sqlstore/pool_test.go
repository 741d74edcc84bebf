package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/server/sqlstore"
	"fieldsync/syncproto"
)

// TestReadStatements_ListsAndLimitsOfEverySize runs the store's list
// queries with list lengths and limits from 1 to 2000 (every one up to
// 600, then every seventh). The read
// statement cache used to fall back to itself once 512 distinct SQL texts
// had been seen (a LIMIT or an IN-list formatted into the text), which
// killed the process with a stack overflow. Now the texts are constant:
// the caches stay small and the store still answers.
func TestReadStatements_ListsAndLimitsOfEverySize(t *testing.T) {
	env := servertest.Start(t)
	w := env.CreateUser(t, "worker", domain.RoleFieldWorker, "G11")
	d := newDevice(t, env, w)
	hh := syncproto.NewID(time.Now())
	env.AddHouseholds(t, household(hh, "G11", "杨绍华"))
	var visitIDs []string
	for i := 0; i < 3; i++ {
		m := visitMut(d, hh)
		visitIDs = append(visitIDs, m.Visit.ID)
		d.push(m)
	}
	const most = 2000
	sums := make([]string, most)
	ids := make([]string, most)
	places := map[string]bool{"G11": true, "G12": true}
	for i := range most {
		sums[i] = fmt.Sprintf("%064x", i+1)
		ids[i] = fmt.Sprintf("visit-%d", i)
	}
	copy(ids, visitIDs)
	for n := 1; n <= most; n++ {
		if n > 2 {
			places[fmt.Sprintf("P%d", n)] = true
		}
		if n > 600 && n%7 != 0 {
			continue // every length past 512, then enough of the others
		}
		missing, err := env.Store.MissingBlobs(ctx, sums[:n])
		if err != nil || len(missing) != n {
			t.Fatalf("n=%d: missing blobs: %d, %v", n, len(missing), err)
		}
		if _, err := env.Store.ConsoleVisitFlags(ctx, ids[:n]); err != nil {
			t.Fatalf("n=%d: visit flags: %v", n, err)
		}
		vs, err := env.Store.Visits(ctx, sqlstore.VisitFilter{Places: places, Limit: n})
		if err != nil || len(vs) != min(n, len(visitIDs)) {
			t.Fatalf("n=%d: visits: %d, %v", n, len(vs), err)
		}
		if _, err := env.Store.ListConflicts(ctx, places, ""); err != nil {
			t.Fatalf("n=%d: conflicts: %v", n, err)
		}
		if n%100 == 0 {
			if _, err := env.Store.ConsoleHouseholds(ctx, "C1", time.Time{}, n); err != nil {
				t.Fatalf("n=%d: map: %v", n, err)
			}
		}
	}
	// The checks after a push read the batch's visits as one list: every
	// list length up to 300 (the HTTP test pushes batches of every size).
	all := make([]syncproto.Mutation, 0, 300)
	for n := 1; len(all) < 300; n++ {
		ms := make([]syncproto.Mutation, min(n, 300-len(all)))
		for i := range ms {
			ms[i] = visitMut(d, hh)
		}
		d.push(ms...)
		all = append(all, ms...)
	}
	resp := &syncproto.PushResponse{}
	for _, m := range all {
		resp.Results = append(resp.Results, syncproto.MutationResult{Seq: m.Seq, Status: syncproto.StatusApplied})
	}
	for n := 1; n <= len(all); n += 1 + n/100 {
		req := &syncproto.PushRequest{ProtocolVersion: 1, DeviceID: d.dev.DeviceID, Mutations: all[:n]}
		if err := env.Store.RunEvidenceChecksForPush(ctx, req, resp); err != nil {
			t.Fatalf("checks of %d visits: %v", n, err)
		}
	}
	if err := env.Store.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	read, write := env.Store.CachedStatements()
	if read > 100 || write > 100 {
		t.Errorf("statement caches hold %d read and %d write statements; the store's query texts should be constant", read, write)
	}
}

// TestReadGate_OneConnection runs every read path of a push, a pull and
// the supervisors' lists on a store with a single read connection. A path
// that holds a connection (open rows) while it waits for a second one can
// never finish there: it used to hang for ever (the evidence checks after
// a push, with a cold boundary cache), and now the wait for the second
// connection would fail after PoolWait, failing the test.
func TestReadGate_OneConnection(t *testing.T) {
	env := servertest.StartWith(t, servertest.Options{Store: sqlstore.Config{Readers: 1, PoolWait: 3 * time.Second}})
	w := env.CreateUser(t, "worker", domain.RoleFieldWorker, "V1")
	d := newDevice(t, env, w)
	hh1, hh2 := syncproto.NewID(time.Now()), syncproto.NewID(time.Now())
	env.AddHouseholds(t, household(hh1, "G11", "杨绍华"), household(hh2, "G12", "李桂英"))
	photo := syncproto.EvidenceRef{SHA256: fmt.Sprintf("%064x", 7), Size: 10, MediaType: "image/jpeg", Slot: "progress"}
	var visits []string
	steps := []struct {
		name string
		run  func(ctx context.Context) error
	}{
		{"push and checks", func(ctx context.Context) error {
			ms := []syncproto.Mutation{visitMut(d, hh1), visitMut(d, hh2), visitMut(d, hh1)}
			ms[2].Visit.Evidence = []syncproto.EvidenceRef{photo}
			for _, m := range ms {
				visits = append(visits, m.Visit.ID)
			}
			req := &syncproto.PushRequest{ProtocolVersion: 1, DeviceID: d.dev.DeviceID, Mutations: ms}
			resp, err := env.Store.Push(ctx, d.dev, req)
			if err != nil {
				return err
			}
			return env.Store.RunEvidenceChecksForPush(ctx, req, resp)
		}},
		{"pull", func(ctx context.Context) error {
			_, err := env.Store.Pull(ctx, d.dev, &syncproto.PullRequest{ProtocolVersion: 1, DeviceID: d.dev.DeviceID})
			return err
		}},
		{"visit checks", func(ctx context.Context) error { return env.Store.RunEvidenceChecks(ctx, visits[2]) }},
		{"blob arrived", func(ctx context.Context) error { return env.Store.BlobArrived(ctx, photo.SHA256) }},
		{"visit evidence", func(ctx context.Context) error { _, err := env.Store.VisitEvidence(ctx, visits[2]); return err }},
		{"review queue", func(ctx context.Context) error {
			_, err := env.Store.Visits(ctx, sqlstore.VisitFilter{Places: map[string]bool{"G11": true, "G12": true}})
			return err
		}},
		{"conflicts", func(ctx context.Context) error { _, err := env.Store.ListConflicts(ctx, nil, ""); return err }},
		{"household", func(ctx context.Context) error {
			if _, _, err := env.Store.Household(ctx, hh1); err != nil {
				return err
			}
			if _, err := env.Store.HouseholdVisits(ctx, hh1); err != nil {
				return err
			}
			_, err := env.Store.Conflicts(ctx, hh1)
			return err
		}},
		{"households", func(ctx context.Context) error {
			_, err := env.Store.Households(ctx, map[string]bool{"G11": true, "G12": true}, 0)
			return err
		}},
		{"evidence gaps", func(ctx context.Context) error {
			_, _, err := env.Store.EvidenceGaps(ctx, []string{"V1"}, 10)
			return err
		}},
		{"console", func(ctx context.Context) error {
			if _, err := env.Store.ConsoleProgress(ctx, "C1", time.Time{}, time.Now()); err != nil {
				return err
			}
			if _, err := env.Store.ConsoleHouseholds(ctx, "C1", time.Time{}, 0); err != nil {
				return err
			}
			if _, err := env.Store.ConsoleVisitPoints(ctx, "C1", time.Time{}, 0); err != nil {
				return err
			}
			_, err := env.Store.ConsoleEvidenceGaps(ctx, "C1", 10, 0)
			return err
		}},
		{"export", func(ctx context.Context) error {
			f := sqlstore.ExportFilter{Roots: []string{"C1"}}
			if _, err := env.Store.ConsoleExportForms(ctx, f); err != nil {
				return err
			}
			return env.Store.ExportVisits(ctx, f, func(*sqlstore.ExportVisit) error { return nil })
		}},
		{"users", func(ctx context.Context) error {
			if _, err := env.Store.Users(ctx); err != nil {
				return err
			}
			_, err := env.Store.User(ctx, w.ID)
			return err
		}},
		{"forms", func(ctx context.Context) error {
			_, err := env.Store.Form(ctx, "water_cellar_progress", 1)
			return err
		}},
	}
	for _, st := range steps {
		done := make(chan error, 1)
		go func() { done <- st.run(ctx) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: hung with one read connection (it holds a connection while it waits for another)", st.name)
		}
	}
}

// TestReadGate_WaitHasADeadline: with every read connection taken, a read
// whose context has no deadline fails after PoolWait with ErrPoolBusy (an
// HTTP 503), instead of waiting for ever; the health check still answers
// on its own connection.
func TestReadGate_WaitHasADeadline(t *testing.T) {
	env := servertest.StartWith(t, servertest.Options{Store: sqlstore.Config{Readers: 1, PoolWait: 200 * time.Millisecond}})
	release, err := env.Store.HoldRead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sum := fmt.Sprintf("%064x", 1)
	_, err = env.Store.BlobPresent(context.Background(), sum)
	if !errors.Is(err, sqlstore.ErrPoolBusy) || !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("read with the pool taken: %v, want ErrPoolBusy", err)
	}
	if err := env.Store.Ping(ctx); err != nil {
		t.Fatalf("health check with the pool taken: %v", err)
	}
	release()
	if _, err := env.Store.BlobPresent(ctx, sum); err != nil {
		t.Fatalf("read after release: %v", err)
	}
}

// TestReadGate_BackgroundShare: background work (domain.Background) holds
// at most its share of the read pool; requests still get a connection
// while background work waits for its share.
func TestReadGate_BackgroundShare(t *testing.T) {
	env := servertest.StartWith(t, servertest.Options{Store: sqlstore.Config{Readers: 4, BackgroundReaders: 1, PoolWait: 300 * time.Millisecond}})
	bg := domain.Background(ctx)
	release, err := env.Store.HoldRead(bg)
	if err != nil {
		t.Fatal(err)
	}
	sum := fmt.Sprintf("%064x", 1)
	if _, err := env.Store.BlobPresent(bg, sum); !errors.Is(err, sqlstore.ErrPoolBusy) {
		t.Fatalf("second background read: %v, want ErrPoolBusy (its share is 1)", err)
	}
	var held []func()
	for i := 0; i < 3; i++ {
		r, err := env.Store.HoldRead(ctx)
		if err != nil {
			t.Fatalf("request read %d with background work holding its share: %v", i, err)
		}
		held = append(held, r)
	}
	for _, r := range held {
		r()
	}
	release()
	if _, err := env.Store.BlobPresent(bg, sum); err != nil {
		t.Fatalf("background read after release: %v", err)
	}
}

// TestReadGate_ExportsShare: an export streaming to a slow client holds at
// most the exports' share of the read pool; requests still get the rest.
func TestReadGate_ExportsShare(t *testing.T) {
	env := servertest.StartWith(t, servertest.Options{Store: sqlstore.Config{Readers: 2, BackgroundReaders: 1, PoolWait: 300 * time.Millisecond}})
	w := env.CreateUser(t, "worker", domain.RoleFieldWorker, "G11")
	d := newDevice(t, env, w)
	hh := syncproto.NewID(time.Now())
	env.AddHouseholds(t, household(hh, "G11", "杨绍华"))
	d.push(visitMut(d, hh))
	f := sqlstore.ExportFilter{Roots: []string{"C1"}}
	inside := make(chan struct{})
	finish := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- env.Store.ExportVisits(ctx, f, func(*sqlstore.ExportVisit) error {
			close(inside)
			<-finish // a slow client
			return nil
		})
	}()
	<-inside
	err := env.Store.ExportHouseholds(ctx, f, func(*sqlstore.ExportHousehold) error { return nil })
	if !errors.Is(err, sqlstore.ErrPoolBusy) {
		t.Errorf("a second export while one streams: %v, want ErrPoolBusy (the exports' share is 1)", err)
	}
	if _, err := env.Store.Visits(ctx, sqlstore.VisitFilter{}); err != nil {
		t.Errorf("a request while an export streams: %v", err)
	}
	close(finish)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
