package sqlstore_test

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"

	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/server/sqlstore"
	"fieldsync/syncproto"
)

// fewerRapidChecks lowers rapid's number of checks for an expensive
// property unless the run sets -rapid.checks itself.
func fewerRapidChecks(t *testing.T, n int) {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "rapid.checks" })
	f := flag.Lookup("rapid.checks")
	if set || f == nil {
		return
	}
	old := f.Value.String()
	if err := flag.Set("rapid.checks", fmt.Sprint(n)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = flag.Set("rapid.checks", old) })
}

// groupOp is one caller of the single writer in a group: a device's push,
// an import of visits or a move of a village with a large subtree (writes
// that run their statements with the caller's context; the move's one
// statement rewrites thousands of paths), maybe cancelled by its caller at
// some moment.
type groupOp struct {
	dev    int // index of the pushing device, opImport or opMove
	visits []string
	seq    int64  // the device's last seq before the push
	parent string // opMove: the village's new township
	cancel bool
	after  time.Duration
	resp   *syncproto.PushResponse
	err    error
}

const (
	opImport = -1
	opMove   = -2
)

// TestGroupCommit_CancelledCallers: 50 devices push at once, together with
// a few imports and moves of a large village, and random callers cancel at
// random moments (before the writer reaches them, or mid-statement: a
// cancelled statement used to make SQLite roll back the whole group, after
// which later jobs autocommitted alone and every device was told
// "failed"). Every answer must match the
// database (an error means nothing of it landed; success means all of it
// did, and the device's last seq is the one answered), and nothing is
// committed twice.
func TestGroupCommit_CancelledCallers(t *testing.T) {
	fewerRapidChecks(t, 15)
	env := servertest.Start(t)
	u := env.CreateUser(t, "w", domain.RoleFieldWorker, "V1")
	const hh = "01JDZX5Q7R8S9T0V1W2X3Y4Z5A"
	env.AddHouseholds(t, household(hh, "G11", "王建国"))
	// A village outside the devices' scope with a large subtree, moved
	// between two townships: its move is one long write statement.
	big := []domain.Place{{Code: "T2", Name: "白云镇", Level: "township", ParentCode: "C1"}, {Code: "V9", Name: "大寨村", Level: "village", ParentCode: "T1"}}
	for i := range 10000 {
		big = append(big, domain.Place{Code: fmt.Sprintf("G9%04d", i), Name: fmt.Sprintf("第%d组", i), Level: "group", ParentCode: "V9"})
	}
	if err := env.Store.UpsertPlaces(ctx, big); err != nil {
		t.Fatal(err)
	}
	devs := make([]*device, 50)
	for i := range devs {
		devs[i] = newDevice(t, env, u)
	}
	newVisit := func() syncproto.Visit {
		return syncproto.Visit{ID: syncproto.NewID(time.Now()), HouseholdID: hh, FormID: "water_cellar_progress", FormVersion: 1,
			Answers: waterAnswers(), Point: &syncproto.Point{Lon: 103.15, Lat: 25.15}, AccuracyM: 8, DeviceTime: time.Now().UTC()}
	}
	rapid.Check(t, func(rt *rapid.T) {
		var ops []*groupOp
		for i := range devs {
			ops = append(ops, &groupOp{dev: i, visits: make([]string, rapid.IntRange(1, 3).Draw(rt, "visits"))})
		}
		for range rapid.IntRange(0, 3).Draw(rt, "imports") {
			ops = append(ops, &groupOp{dev: opImport, visits: make([]string, rapid.IntRange(10, 60).Draw(rt, "imported"))})
		}
		for range rapid.IntRange(1, 4).Draw(rt, "moves") {
			ops = append(ops, &groupOp{dev: opMove, parent: rapid.SampledFrom([]string{"T1", "T2"}).Draw(rt, "parent")})
		}
		ops = rapid.Permutation(ops).Draw(rt, "order")
		for _, op := range ops {
			op.cancel = rapid.Bool().Draw(rt, "cancel")
			// A group runs for some tens of milliseconds.
			op.after = time.Duration(rapid.IntRange(0, 40).Draw(rt, "after_ms")) * time.Millisecond
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		for _, op := range ops {
			var call func(ctx context.Context) error
			if op.dev >= 0 {
				d := devs[op.dev]
				op.seq = d.seq
				var ms []syncproto.Mutation
				for i := range op.visits {
					v := newVisit()
					op.visits[i] = v.ID
					ms = append(ms, syncproto.Mutation{Seq: d.seq + int64(i) + 1, Kind: syncproto.KindVisitCreate, HLC: d.clock.Tick(), Visit: &v})
				}
				req := &syncproto.PushRequest{ProtocolVersion: 1, DeviceID: d.dev.DeviceID, Mutations: ms}
				call = func(ctx context.Context) (err error) {
					op.resp, err = env.Store.Push(ctx, d.dev, req)
					return err
				}
			} else if op.dev == opMove {
				p := []domain.Place{{Code: "V9", Name: "大寨村", Level: "village", ParentCode: op.parent}}
				call = func(ctx context.Context) error { return env.Store.UpsertPlaces(ctx, p) }
			} else {
				var vs []sqlstore.ImportedVisit
				for i := range op.visits {
					v := newVisit()
					op.visits[i] = v.ID
					vs = append(vs, sqlstore.ImportedVisit{Visit: v, UserID: u.ID})
				}
				call = func(ctx context.Context) error { return env.Store.ImportVisits(ctx, vs) }
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				<-start
				if op.cancel {
					stop := time.AfterFunc(op.after, cancel)
					defer stop.Stop()
				}
				op.err = call(ctx)
			}()
		}
		close(start)
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			rt.Fatal("the writer did not answer every caller within 60 s")
		}

		stored := map[string]bool{}
		rows, err := env.Store.DB().Query(`SELECT id FROM visits`)
		if err != nil {
			rt.Fatal(err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rt.Fatal(err)
			}
			stored[id] = true
		}
		rows.Close()
		for _, op := range ops {
			landed := 0
			for _, id := range op.visits {
				if stored[id] {
					landed++
				}
			}
			who := "import"
			if op.dev == opMove {
				continue
			}
			if op.dev >= 0 {
				who = fmt.Sprintf("device %d", op.dev)
			}
			switch {
			case op.err != nil && landed > 0:
				rt.Fatalf("%s was told %v, but %d of its %d visits are stored", who, op.err, landed, len(op.visits))
			case op.err == nil && landed != len(op.visits):
				rt.Fatalf("%s was told ok, but only %d of its %d visits are stored", who, landed, len(op.visits))
			}
			if op.dev < 0 {
				continue
			}
			d := devs[op.dev]
			var last int64
			if err := env.Store.DB().QueryRow(`SELECT COALESCE(max(last_seq), 0) FROM device_sync WHERE device_id = ?`, d.dev.DeviceID).Scan(&last); err != nil {
				rt.Fatal(err)
			}
			want := op.seq
			if op.err == nil {
				want = op.resp.LastSeq
				for _, r := range op.resp.Results {
					if r.Status != syncproto.StatusApplied {
						rt.Fatalf("%s: result %+v", who, r)
					}
				}
			}
			if last != want {
				rt.Fatalf("%s was told last seq %d (err %v), the database has %d", who, want, op.err, last)
			}
			d.seq = last
		}
		for _, q := range []string{
			`SELECT count(*) FROM (SELECT entity_id FROM changes WHERE entity_type = 'visit' GROUP BY entity_id HAVING count(*) > 1) AS twice`,
			`SELECT count(*) FROM (SELECT entity_id FROM audit_events WHERE entity_type = 'visit' GROUP BY entity_id HAVING count(*) > 1) AS twice`,
			`SELECT count(*) FROM visits v WHERE NOT EXISTS (SELECT 1 FROM changes c WHERE c.entity_type = 'visit' AND c.entity_id = v.id)`,
			// No half-done move: every place's path is its parent's plus its code.
			`SELECT count(*) FROM places c JOIN places p ON p.code = c.parent_code WHERE c.path != p.path || c.code || '/'`,
		} {
			var n int
			if err := env.Store.DB().QueryRow(q).Scan(&n); err != nil {
				rt.Fatal(err)
			}
			if n != 0 {
				rt.Fatalf("%d visits committed twice or half: %s", n, q)
			}
		}
	})
}
