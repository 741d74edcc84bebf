package sqlstore_test

// Concurrency on PostgreSQL: several stores ("instances") on one
// database, as fieldsync runs behind a load balancer. These tests need a
// real PostgreSQL (bash .ci/test starts one); without it they skip, or
// fail under FIELDSYNC_REQUIRE_S3=1 (see pgtest).

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"fieldsync/server/domain"
	"fieldsync/server/merge"
	"fieldsync/server/servertest"
	"fieldsync/server/servertest/pgtest"
	"fieldsync/server/sqlstore"
	"fieldsync/syncproto"
)

// pgEnv runs a test server (an instance with its HTTP API, seeded with
// the fixture places, forms and admin) on the PostgreSQL database at url.
func pgEnv(t *testing.T, url string, cfg sqlstore.Config) *servertest.Env {
	t.Helper()
	t.Setenv("FIELDSYNC_TEST_ENGINE", "postgres")
	dir := t.TempDir()
	// servertest keeps the database of a server's folder in this file, so
	// that a server started again on the folder finds it: here it names
	// the database this test chose.
	if err := os.WriteFile(filepath.Join(dir, "postgres-url"), []byte(url), 0o600); err != nil {
		t.Fatal(err)
	}
	return servertest.StartWith(t, servertest.Options{Dir: dir, Store: cfg})
}

// pgStore opens one more instance's store on the database at url.
func pgStore(t *testing.T, url string, cfg sqlstore.Config) *sqlstore.Store {
	t.Helper()
	cfg.PostgresURL = url
	st, err := sqlstore.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// errList collects the errors of many goroutines; the test reports the
// first few.
type errList struct {
	mu   sync.Mutex
	errs []error
}

func (l *errList) add(format string, args ...any) {
	l.mu.Lock()
	l.errs = append(l.errs, fmt.Errorf(format, args...))
	l.mu.Unlock()
}

func (l *errList) report(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, err := range l.errs {
		if i == 10 {
			t.Errorf("... and %d more", len(l.errs)-10)
			break
		}
		t.Error(err)
	}
	if len(l.errs) > 0 {
		t.FailNow()
	}
}

func pushOne(ctx context.Context, st *sqlstore.Store, d *device, ms ...syncproto.Mutation) (*syncproto.PushResponse, error) {
	return st.Push(ctx, d.dev, &syncproto.PushRequest{ProtocolVersion: 1, DeviceID: d.dev.DeviceID, Mutations: ms})
}

// TestPG_CursorsAcrossInstances is point 4 of issue 15: three instances
// on one database, writers pushing visits and household edits through
// all three, pullers paging with small budgets through all three (each
// page on another instance than the last), until the writers are done,
// then to the end. Every acknowledged visit reaches every puller exactly
// once, the seqs each puller sees only go up, and every puller ends with
// each household's last version.
func TestPG_CursorsAcrossInstances(t *testing.T) {
	setupStart := time.Now()
	url := pgtest.NewDatabase(t)
	env := pgEnv(t, url, sqlstore.Config{})
	stores := []*sqlstore.Store{env.Store, pgStore(t, url, sqlstore.Config{}), pgStore(t, url, sqlstore.Config{})}
	const writers, pullers, perWriter = 150, 50, 4
	var hhs []syncproto.Household
	for i := range 8 {
		hhs = append(hhs, household(syncproto.NewID(time.Now()), []string{"G11", "G12"}[i%2], fmt.Sprintf("户主%d", i)))
	}
	env.AddHouseholds(t, hhs...)
	var workers, supers []domain.User
	for i := range 10 {
		workers = append(workers, env.CreateUser(t, fmt.Sprintf("w%d", i), domain.RoleFieldWorker, "V1"))
	}
	for i := range 4 {
		supers = append(supers, env.CreateUser(t, fmt.Sprintf("s%d", i), domain.RoleSupervisor, "T1"))
	}
	wdevs := make([]*device, writers)
	for i := range wdevs {
		wdevs[i] = newDevice(t, env, workers[i%len(workers)])
	}
	pdevs := make([]*device, pullers)
	cursors := make([]string, pullers)
	firstCopy := make([][]syncproto.Op, pullers)
	for i := range pdevs {
		pdevs[i] = newDevice(t, env, supers[i%len(supers)])
		// The first copy is taken before the writers start: a copy paged
		// while writes land is TestPG_FirstCopyDuringWrites.
		firstCopy[i], cursors[i] = pdevs[i].pullAll("", 0)
	}

	t.Logf("setup (3 instances, %d devices enrolled) took %s", writers+pullers, time.Since(setupStart).Round(time.Millisecond))

	runCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	start := time.Now()
	var errs errList
	var mu sync.Mutex
	acked := map[string]bool{}
	var pushes, pulls atomic.Int64
	var writersWG sync.WaitGroup
	writersDone := make(chan struct{})
	for w, d := range wdevs {
		writersWG.Add(1)
		go func() {
			defer writersWG.Done()
			for i := range perWriter {
				st := stores[(w+i)%len(stores)]
				hh := hhs[(w+i)%len(hhs)].ID
				var m syncproto.Mutation
				if i%4 == 3 {
					m = d.mut(syncproto.KindHouseholdUpdate, func(m *syncproto.Mutation) {
						m.HouseholdUpdate = &syncproto.HouseholdUpdate{HouseholdID: hh, BaseVersion: 1,
							Fields: map[string]json.RawMessage{"notes": json.RawMessage(fmt.Sprintf(`"第%d台设备第%d次"`, w, i))}}
					})
				} else {
					m = visitMut(d, hh)
				}
				resp, err := pushOne(runCtx, st, d, m)
				if err != nil || len(resp.Results) != 1 || resp.Results[0].Status != syncproto.StatusApplied {
					errs.add("writer %d push %d: %v %+v", w, i, err, resp)
					return
				}
				pushes.Add(1)
				if m.Visit != nil {
					mu.Lock()
					acked[m.Visit.ID] = true
					mu.Unlock()
				}
			}
		}()
	}
	go func() { writersWG.Wait(); close(writersDone) }()

	type pullerState struct {
		seen     map[string]int
		seqs     map[string][]int64 // the seqs (0: from the first copy) each visit came with
		versions map[string]int64
	}
	states := make([]*pullerState, pullers)
	budgets := []int{syncproto.MinPullBytes, 2 * syncproto.MinPullBytes, 4 * syncproto.MinPullBytes, 8 * syncproto.MinPullBytes}
	var pullersWG sync.WaitGroup
	for p, d := range pdevs {
		ps := &pullerState{seen: map[string]int{}, seqs: map[string][]int64{}, versions: map[string]int64{}}
		for _, op := range firstCopy[p] {
			if op.Op == syncproto.OpPut && op.Type == syncproto.EntityHousehold {
				ps.versions[op.ID] = op.Household.Version
			}
		}
		states[p] = ps
		pullersWG.Add(1)
		go func() {
			defer pullersWG.Done()
			cursor := cursors[p]
			var last int64
			for page := 0; ; page++ {
				// Whether the writers were done is read before the page, so
				// the last page's head covers every acknowledged push.
				finished := false
				select {
				case <-writersDone:
					finished = true
				default:
				}
				if runCtx.Err() != nil {
					errs.add("puller %d: not done after %d pages: %v", p, page, runCtx.Err())
					return
				}
				st := stores[(p+page)%len(stores)]
				resp, err := st.Pull(runCtx, d.dev, &syncproto.PullRequest{ProtocolVersion: 1, DeviceID: d.dev.DeviceID,
					Cursor: cursor, MaxBytes: budgets[p%len(budgets)]})
				if err != nil {
					errs.add("puller %d page %d: %v", p, page, err)
					return
				}
				pulls.Add(1)
				for _, op := range resp.Ops {
					if op.Op == syncproto.OpReset {
						errs.add("puller %d page %d: reset", p, page)
						return
					}
					if op.Seq > 0 {
						if op.Seq <= last {
							errs.add("puller %d page %d: seq %d after %d", p, page, op.Seq, last)
							return
						}
						last = op.Seq
					}
					switch {
					case op.Op == syncproto.OpPut && op.Type == syncproto.EntityVisit:
						ps.seen[op.ID]++
						ps.seqs[op.ID] = append(ps.seqs[op.ID], op.Seq)
					case op.Op == syncproto.OpPut && op.Type == syncproto.EntityHousehold:
						ps.versions[op.ID] = op.Household.Version
					}
				}
				cursor = resp.Cursor
				if finished && !resp.HasMore {
					return
				}
			}
		}()
	}
	<-writersDone
	t.Logf("writers done after %s", time.Since(start).Round(time.Millisecond))
	pullersWG.Wait()
	errs.report(t)
	elapsed := time.Since(start)

	db := pgtest.Open(t, url)
	want := map[string]int64{}
	for _, h := range hhs {
		var v int64
		if err := db.QueryRowContext(ctx, `SELECT version FROM households WHERE id = $1`, h.ID).Scan(&v); err != nil {
			t.Fatal(err)
		}
		want[h.ID] = v
	}
	var visits int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM visits`).Scan(&visits); err != nil {
		t.Fatal(err)
	}
	if visits != len(acked) {
		t.Fatalf("%d visits stored, %d acknowledged", visits, len(acked))
	}
	for p, ps := range states {
		for id := range acked {
			if ps.seen[id] != 1 {
				t.Errorf("puller %d saw visit %s %d times, with seqs %v (0: in the first copy)", p, id, ps.seen[id], ps.seqs[id])
			}
		}
		if len(ps.seen) != len(acked) {
			t.Errorf("puller %d saw %d visits, %d acknowledged", p, len(ps.seen), len(acked))
		}
		for id, v := range want {
			if ps.versions[id] != v {
				t.Errorf("puller %d ends with household %s at version %d, the database has %d", p, id, ps.versions[id], v)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	t.Logf("3 instances, %d writers and %d pullers: %d pushes (%d visits), %d pages pulled, in %s",
		writers, pullers, pushes.Load(), len(acked), pulls.Load(), elapsed.Round(time.Millisecond))
}

// mergeState is a household as the merge left it, with device and user
// ids replaced by names, and versions (change seqs, which differ from one
// database to another) left out, so that two databases compare.
type mergeState struct {
	Fields    map[string]json.RawMessage
	Meta      map[string]string
	Conflicts []string
}

func readMergeState(t *testing.T, q func(query string, args ...any) (*sql.Rows, error), hh string, names map[string]string) mergeState {
	t.Helper()
	st := mergeState{Meta: map[string]string{}}
	rows, err := q(`SELECT fields, field_meta FROM households WHERE id = ?`, hh)
	if err != nil {
		t.Fatal(err)
	}
	var fields, meta string
	for rows.Next() {
		if err := rows.Scan(&fields, &meta); err != nil {
			t.Fatal(err)
		}
	}
	rows.Close()
	var fm map[string]merge.FieldMeta
	if err := json.Unmarshal([]byte(fields), &st.Fields); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(meta), &fm); err != nil {
		t.Fatal(err)
	}
	for f, m := range fm {
		if m.Device == "" {
			st.Meta[f] = "imported" // at the server's clock of the import
			continue
		}
		st.Meta[f] = fmt.Sprintf("%s by %s", m.HLC, names[m.Device])
	}
	rows, err = q(`SELECT field, COALESCE(kept_value, ''), COALESCE(losing_value, ''), losing_device, losing_hlc, state, sensitive
		FROM conflicts WHERE household_id = ?`, hh)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var field, kept, losing, dev, hlc, state string
		var sensitive int
		if err := rows.Scan(&field, &kept, &losing, &dev, &hlc, &state, &sensitive); err != nil {
			t.Fatal(err)
		}
		st.Conflicts = append(st.Conflicts, fmt.Sprintf("%s kept=%s losing=%s by %s at %s %s sensitive=%d", field, kept, losing, names[dev], hlc, state, sensitive))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(st.Conflicts)
	return st
}

// TestPG_ConcurrentMerge is point 5 of issue 15: two instances apply two
// devices' offline edits of one household at the same moment (different
// fields; the same field with different clocks, and with equal clocks; a
// sensitive field), round after round. After each round the household
// (fields, field metadata, conflict records) must equal what a single
// SQLite server makes of the same pushes in the order PostgreSQL
// committed them.
func TestPG_ConcurrentMerge(t *testing.T) {
	// The single-instance reference: SQLite, whatever engine the suite runs on.
	t.Setenv("FIELDSYNC_TEST_ENGINE", "sqlite")
	ref := servertest.Start(t)
	url := pgtest.NewDatabase(t)
	env := pgEnv(t, url, sqlstore.Config{})
	other := pgStore(t, url, sqlstore.Config{})
	hh := household("01JDZX5Q7R8S9T0V1W2X3Y4Z5A", "G11", "王建国")
	hh.Fields["phone"] = json.RawMessage(`"13800000000"`)
	env.AddHouseholds(t, hh)
	ref.AddHouseholds(t, hh)
	type side struct {
		name      string
		st        *sqlstore.Store
		dev, rdev *device
	}
	sides := []*side{{name: "A", st: env.Store}, {name: "B", st: other}}
	names, refNames := map[string]string{"": ""}, map[string]string{"": ""}
	for _, s := range sides {
		s.dev = newDevice(t, env, env.CreateUser(t, "w"+s.name, domain.RoleFieldWorker, "V1"))
		s.rdev = newDevice(t, ref, ref.CreateUser(t, "w"+s.name, domain.RoleFieldWorker, "V1"))
		names[s.dev.dev.DeviceID], refNames[s.rdev.dev.DeviceID] = s.name, s.name
	}
	pg := pgtest.Open(t, url)
	pgQuery := func(q string, args ...any) (*sql.Rows, error) {
		return pg.QueryContext(ctx, rebindDollar(q), args...)
	}
	refQuery := func(q string, args ...any) (*sql.Rows, error) { return ref.Store.DB().QueryContext(ctx, q, args...) }
	version := func(q func(string, ...any) (*sql.Rows, error)) int64 {
		rows, err := q(`SELECT version FROM households WHERE id = ?`, hh.ID)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var v int64
		for rows.Next() {
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
		}
		return v
	}
	wall := time.Now().Add(-time.Hour).UnixMilli()
	const rounds = 8
	for r := range rounds {
		base, refBase := version(pgQuery), version(refQuery)
		// Each side's edit: a field of its own, the shared "notes", and in
		// odd rounds the sensitive head_name too. The clocks alternate
		// which side is later; every third round they are equal (the later
		// commit wins the tie).
		hlcs := []syncproto.HLC{{WallMs: wall + int64(r)*1000 + 10}, {WallMs: wall + int64(r)*1000 + 20}}
		if r%2 == 1 {
			hlcs[0], hlcs[1] = hlcs[1], hlcs[0]
		}
		if r%3 == 2 {
			hlcs[1] = hlcs[0]
		}
		edit := func(i int) map[string]json.RawMessage {
			s := sides[i].name
			f := map[string]json.RawMessage{
				"notes":                           json.RawMessage(fmt.Sprintf(`"%s 第%d轮备注"`, s, r)),
				[]string{"address", "pension"}[i]: json.RawMessage(fmt.Sprintf(`"%s 第%d轮"`, s, r)),
			}
			if r%2 == 1 {
				f[syncproto.FieldHeadName] = json.RawMessage(fmt.Sprintf(`"%s 户主%d"`, s, r))
			}
			return f
		}
		mut := func(d *device, i int, base int64) syncproto.Mutation {
			d.seq++
			return syncproto.Mutation{Seq: d.seq, Kind: syncproto.KindHouseholdUpdate, HLC: hlcs[i],
				HouseholdUpdate: &syncproto.HouseholdUpdate{HouseholdID: hh.ID, BaseVersion: base, Fields: edit(i)}}
		}
		// Both instances at the same moment.
		results := make([]*syncproto.PushResponse, len(sides))
		pushErrs := make([]error, len(sides))
		gate := make(chan struct{})
		var wg sync.WaitGroup
		for i, s := range sides {
			m := mut(s.dev, i, base)
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				results[i], pushErrs[i] = pushOne(ctx, s.st, s.dev, m)
			}()
		}
		close(gate)
		wg.Wait()
		for i, err := range pushErrs {
			if err != nil || results[i].Results[0].Status != syncproto.StatusApplied {
				t.Fatalf("round %d: push %s: %v %+v", r, sides[i].name, err, results[i])
			}
		}
		// The same pushes, one after the other, in PostgreSQL's commit
		// order (a push's version is the seq its commit took).
		order := []int{0, 1}
		if results[1].Results[0].Version < results[0].Results[0].Version {
			order = []int{1, 0}
		}
		for _, i := range order {
			resp, err := pushOne(ctx, ref.Store, sides[i].rdev, mut(sides[i].rdev, i, refBase))
			if err != nil || resp.Results[0].Status != syncproto.StatusApplied {
				t.Fatalf("round %d: reference push %s: %v %+v", r, sides[i].name, err, resp)
			}
			if resp.Results[0].Conflicts != results[i].Results[0].Conflicts {
				t.Errorf("round %d: %s's push reported %d conflicts on PostgreSQL, %d on the reference", r, sides[i].name,
					results[i].Results[0].Conflicts, resp.Results[0].Conflicts)
			}
		}
		got, want := readMergeState(t, pgQuery, hh.ID, names), readMergeState(t, refQuery, hh.ID, refNames)
		gb, _ := json.MarshalIndent(got, "", " ")
		wb, _ := json.MarshalIndent(want, "", " ")
		if string(gb) != string(wb) {
			t.Fatalf("round %d (commit order %s then %s): two instances made\n%s\nthe single instance made\n%s", r,
				sides[order[0]].name, sides[order[1]].name, gb, wb)
		}
	}
}

// rebindDollar numbers ? placeholders as $1, $2, ... for a plain pgx
// connection (the test's queries have no ? in strings).
func rebindDollar(q string) string {
	out := make([]byte, 0, len(q)+8)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			out = fmt.Appendf(out, "$%d", n)
			continue
		}
		out = append(out, q[i])
	}
	return string(out)
}
