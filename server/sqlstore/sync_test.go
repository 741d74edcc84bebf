package sqlstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/server/sqlstore"
	"fieldsync/syncproto"
)

var ctx = context.Background()

// device is a test device speaking to the store directly.
type device struct {
	t     testing.TB
	env   *servertest.Env
	dev   sqlstore.PushDevice
	seq   int64
	clock syncproto.Clock
}

func newDevice(t testing.TB, env *servertest.Env, user domain.User) *device {
	id, _ := env.Device(t, user.ID)
	return &device{t: t, env: env, dev: sqlstore.PushDevice{DeviceID: id, UserID: user.ID}}
}

func (d *device) mut(kind syncproto.MutationKind, set func(m *syncproto.Mutation)) syncproto.Mutation {
	d.seq++
	m := syncproto.Mutation{Seq: d.seq, Kind: kind, HLC: d.clock.Tick()}
	set(&m)
	return m
}

func (d *device) push(ms ...syncproto.Mutation) *syncproto.PushResponse {
	d.t.Helper()
	resp, err := d.env.Store.Push(ctx, d.dev, &syncproto.PushRequest{ProtocolVersion: 1, DeviceID: d.dev.DeviceID, Mutations: ms})
	if err != nil {
		d.t.Fatalf("push: %v", err)
	}
	return resp
}

func (d *device) pullAll(cursor string, maxBytes int) ([]syncproto.Op, string) {
	d.t.Helper()
	var ops []syncproto.Op
	for i := 0; i < 10000; i++ {
		resp, err := d.env.Store.Pull(ctx, d.dev, &syncproto.PullRequest{ProtocolVersion: 1, DeviceID: d.dev.DeviceID, Cursor: cursor, MaxBytes: maxBytes})
		if err != nil {
			d.t.Fatalf("pull: %v", err)
		}
		ops = append(ops, resp.Ops...)
		cursor = resp.Cursor
		if !resp.HasMore {
			return ops, cursor
		}
	}
	d.t.Fatal("pull did not finish")
	return nil, ""
}

func household(id, place, head string) syncproto.Household {
	return syncproto.Household{ID: id, PlaceCode: place, Fields: map[string]json.RawMessage{"head_name": json.RawMessage(fmt.Sprintf("%q", head))}}
}

func visitMut(d *device, hh string) syncproto.Mutation {
	return d.mut(syncproto.KindVisitCreate, func(m *syncproto.Mutation) {
		m.Visit = &syncproto.Visit{ID: syncproto.NewID(time.Now()), HouseholdID: hh, FormID: "water_cellar_progress", FormVersion: 1,
			Answers: waterAnswers(), Point: &syncproto.Point{Lon: 103.15, Lat: 25.15}, AccuracyM: 8, DeviceTime: time.Now()}
	})
}

var waterOnce = sync.OnceValue(buildWaterAnswers)

// waterAnswers is a valid answer set for the water-cellar template.
func waterAnswers() map[string]json.RawMessage { return waterOnce() }

func buildWaterAnswers() map[string]json.RawMessage {
	f, ok := syncproto.Template("water_cellar_progress")
	if !ok {
		panic("template")
	}
	out := map[string]json.RawMessage{}
	for _, fd := range f.Fields {
		if !fd.Required {
			continue
		}
		switch fd.Type {
		case syncproto.FieldText:
			out[fd.Name] = json.RawMessage(`"塘子 1号水窖"`)
		case syncproto.FieldDecimal, syncproto.FieldInteger:
			out[fd.Name] = json.RawMessage(`24`)
		case syncproto.FieldSelectOne:
			out[fd.Name] = json.RawMessage(fmt.Sprintf("%q", fd.Choices[0].Value))
		case syncproto.FieldDate:
			out[fd.Name] = json.RawMessage(`"2026-11-30"`)
		case syncproto.FieldSelectMany:
			out[fd.Name] = json.RawMessage(fmt.Sprintf("[%q]", fd.Choices[0].Value))
		case syncproto.FieldGeopoint:
			out[fd.Name] = json.RawMessage(`{"lon":103.1,"lat":25.1}`)
		default:
			panic("unhandled required field type " + string(fd.Type))
		}
	}
	return out
}

func count(t testing.TB, env *servertest.Env, q string, args ...any) int {
	t.Helper()
	var n int
	if err := env.Store.DB().QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPush_ReplayIsIdempotent(t *testing.T) {
	env := servertest.Start(t)
	u := env.CreateUser(t, "w", domain.RoleFieldWorker, "V1")
	env.AddHouseholds(t, household("01JDZX5Q7R8S9T0V1W2X3Y4Z5A", "G11", "王建国"))
	d := newDevice(t, env, u)
	batch := []syncproto.Mutation{visitMut(d, "01JDZX5Q7R8S9T0V1W2X3Y4Z5A"), visitMut(d, "01JDZX5Q7R8S9T0V1W2X3Y4Z5A"),
		d.mut(syncproto.KindHouseholdUpdate, func(m *syncproto.Mutation) {
			m.HouseholdUpdate = &syncproto.HouseholdUpdate{HouseholdID: "01JDZX5Q7R8S9T0V1W2X3Y4Z5A", BaseVersion: 1, Fields: map[string]json.RawMessage{"notes": json.RawMessage(`"修好了"`)}}
		})}
	first := d.push(batch...)
	visits := count(t, env, `SELECT count(*) FROM visits`)
	changes := count(t, env, `SELECT count(*) FROM changes`)
	for i := 0; i < 3; i++ {
		again := d.push(batch...)
		a, _ := json.Marshal(first.Results)
		b, _ := json.Marshal(again.Results)
		if string(a) != string(b) || again.LastSeq != first.LastSeq {
			t.Fatalf("replay %d answered differently:\n%s\n%s", i, a, b)
		}
	}
	if count(t, env, `SELECT count(*) FROM visits`) != visits || visits != 2 {
		t.Fatalf("visits changed by replay")
	}
	if count(t, env, `SELECT count(*) FROM changes`) != changes {
		t.Fatalf("change log grew on replay")
	}
	// A replay that overlaps old and new mutations applies only the new.
	next := visitMut(d, "01JDZX5Q7R8S9T0V1W2X3Y4Z5A")
	resp := d.push(append(batch[1:], next)...)
	if resp.LastSeq != next.Seq || len(resp.Results) != 3 || count(t, env, `SELECT count(*) FROM visits`) != 3 {
		t.Fatalf("overlap: %+v", resp)
	}
}

func TestPush_GapRefusedAndChangesNothing(t *testing.T) {
	env := servertest.Start(t)
	u := env.CreateUser(t, "w", domain.RoleFieldWorker, "V1")
	env.AddHouseholds(t, household("01JDZX5Q7R8S9T0V1W2X3Y4Z5A", "G11", "王建国"))
	d := newDevice(t, env, u)
	d.push(visitMut(d, "01JDZX5Q7R8S9T0V1W2X3Y4Z5A"))
	d.seq += 3 // the device lost track of three mutations
	_, err := env.Store.Push(ctx, d.dev, &syncproto.PushRequest{ProtocolVersion: 1, DeviceID: d.dev.DeviceID, Mutations: []syncproto.Mutation{visitMut(d, "01JDZX5Q7R8S9T0V1W2X3Y4Z5A")}})
	var gap *sqlstore.SequenceGapError
	if !errors.As(err, &gap) || gap.Expected != 2 || gap.Got != 5 || !errors.Is(err, domain.ErrSequenceGap) {
		t.Fatalf("err = %v", err)
	}
	if count(t, env, `SELECT count(*) FROM visits`) != 1 {
		t.Fatal("gap push changed data")
	}
}

func TestPush_BadMutationAdvancesAndDoesNotBlock(t *testing.T) {
	env := servertest.Start(t)
	u := env.CreateUser(t, "w", domain.RoleFieldWorker, "V1")
	env.AddHouseholds(t, household("01JDZX5Q7R8S9T0V1W2X3Y4Z5A", "G11", "王建国"), household("01JDZX5Q7R8S9T0V1W2X3Y4Z5B", "G21", "外村"))
	d := newDevice(t, env, u)
	bad := visitMut(d, "01JDZX5Q7R8S9T0V1W2X3Y4Z5A")
	bad.Visit.Answers = map[string]json.RawMessage{"nonsense": json.RawMessage(`1`)}
	unknownHH := visitMut(d, "01JDZX5Q7R8S9T0V1W2X3Y4Z5C")
	outside := visitMut(d, "01JDZX5Q7R8S9T0V1W2X3Y4Z5B")
	outsideHH := d.mut(syncproto.KindHouseholdCreate, func(m *syncproto.Mutation) {
		h := household("01JDZX5Q7R8S9T0V1W2X3Y4Z5D", "G21", "越界")
		m.Household = &h
	})
	badForm := visitMut(d, "01JDZX5Q7R8S9T0V1W2X3Y4Z5A")
	badForm.Visit.FormVersion = 99
	good := visitMut(d, "01JDZX5Q7R8S9T0V1W2X3Y4Z5A")
	resp := d.push(bad, unknownHH, outside, outsideHH, badForm, good)
	want := []syncproto.Code{syncproto.CodeValidation, syncproto.CodeUnknownEntity, syncproto.CodeOutOfScope, syncproto.CodeOutOfScope, syncproto.CodeUnknownEntity, ""}
	for i, r := range resp.Results {
		if r.Code != want[i] || (want[i] == "") != (r.Status == syncproto.StatusApplied) || (want[i] != "" && r.Message == "") {
			t.Errorf("result %d = %+v, want code %q", i, r, want[i])
		}
	}
	// The unknown form's rejection says which forms there are.
	if m := resp.Results[4].Message; !strings.Contains(m, "water_cellar_progress@1") || !strings.Contains(m, "household_survey@") {
		t.Errorf("unknown form's rejection does not list the forms: %q", m)
	}
	if resp.LastSeq != good.Seq {
		t.Fatalf("last seq %d", resp.LastSeq)
	}
	if count(t, env, `SELECT count(*) FROM visits`) != 1 || count(t, env, `SELECT count(*) FROM households WHERE id = '01JDZX5Q7R8S9T0V1W2X3Y4Z5D'`) != 0 {
		t.Fatal("a rejected mutation left effects")
	}
	// Nothing a device sent is lost: the rejected bodies are kept.
	if count(t, env, `SELECT count(*) FROM mutation_results WHERE device_id = ? AND CAST(result AS TEXT) LIKE '%rejected%'`, d.dev.DeviceID) != 5 {
		t.Fatal("rejections not stored")
	}
}

func TestPush_DuplicateIDDifferentContent(t *testing.T) {
	env := servertest.Start(t)
	u := env.CreateUser(t, "w", domain.RoleFieldWorker, "V1")
	env.AddHouseholds(t, household("01JDZX5Q7R8S9T0V1W2X3Y4Z5A", "G11", "王建国"))
	d := newDevice(t, env, u)
	v := visitMut(d, "01JDZX5Q7R8S9T0V1W2X3Y4Z5A")
	d.push(v)
	// The same visit re-queued under a new seq (device crashed before it
	// saved the answer) is accepted as the same visit.
	same := v
	d.seq++
	same.Seq = d.seq
	if r := d.push(same).Results[0]; r.Status != syncproto.StatusApplied {
		t.Fatalf("same content: %+v", r)
	}
	other := visitMut(d, "01JDZX5Q7R8S9T0V1W2X3Y4Z5A")
	other.Visit.ID = v.Visit.ID
	other.Visit.AccuracyM = 99
	if r := d.push(other).Results[0]; r.Code != syncproto.CodeDuplicateID {
		t.Fatalf("different content: %+v", r)
	}
	if count(t, env, `SELECT count(*) FROM visits`) != 1 {
		t.Fatal("duplicate stored")
	}
	// The visit's existence answers before the checks against the
	// database: once the household is deleted, the same visit again still
	// applies (it did, and changes nothing) and a different one with its
	// id is still a duplicate, not "gone".
	changes := count(t, env, `SELECT count(*) FROM changes`)
	audits := count(t, env, `SELECT count(*) FROM audit_events`)
	if _, err := env.RawDB(t).Exec(`UPDATE households SET deleted = 1 WHERE id = ?`, v.Visit.HouseholdID); err != nil {
		t.Fatal(err)
	}
	again := v
	d.seq++
	again.Seq = d.seq
	if r := d.push(again).Results[0]; r.Status != syncproto.StatusApplied {
		t.Fatalf("same content, household deleted since: %+v", r)
	}
	d.seq++
	other.Seq = d.seq
	if r := d.push(other).Results[0]; r.Code != syncproto.CodeDuplicateID {
		t.Fatalf("different content, household deleted since: %+v", r)
	}
	fresh := visitMut(d, v.Visit.HouseholdID)
	if r := d.push(fresh).Results[0]; r.Code != syncproto.CodeGone {
		t.Fatalf("a new visit to the deleted household: %+v", r)
	}
	if n := count(t, env, `SELECT count(*) FROM visits`); n != 1 {
		t.Fatalf("%d visits", n)
	}
	if c, a := count(t, env, `SELECT count(*) FROM changes`), count(t, env, `SELECT count(*) FROM audit_events`); c != changes || a != audits {
		t.Fatalf("replays and rejections wrote: changes %d -> %d, audit events %d -> %d", changes, c, audits, a)
	}
}

// TestPullNeverMissesConcurrentCommits is the out-of-order-commit test:
// many devices push concurrently while a puller pages with a small byte
// budget. Every visit must be seen exactly once, in change-log order.
func TestPullNeverMissesConcurrentCommits(t *testing.T) {
	for _, gc := range []bool{true, false} {
		t.Run(fmt.Sprintf("group_commit=%v", gc), func(t *testing.T) {
			env := servertest.StartWith(t, servertest.Options{Store: sqlstore.Config{DisableGroupCommit: !gc}})
			env.AddHouseholds(t, household("01JDZX5Q7R8S9T0V1W2X3Y4Z5A", "G11", "王建国"))
			const pushers, perPusher = 8, 25
			var devs []*device
			for i := 0; i < pushers; i++ {
				devs = append(devs, newDevice(t, env, env.CreateUser(t, fmt.Sprintf("w%d", i), domain.RoleFieldWorker, "V1")))
			}
			reader := newDevice(t, env, env.CreateUser(t, "reader", domain.RoleSupervisor, "T1"))
			_, cursor := reader.pullAll("", 0) // initial copy
			var wg sync.WaitGroup
			var mu sync.Mutex
			sent := map[string]bool{}
			errc := make(chan error, pushers)
			for _, d := range devs {
				wg.Add(1)
				go func(d *device) {
					defer wg.Done()
					for i := 0; i < perPusher; i++ {
						m := visitMut(d, "01JDZX5Q7R8S9T0V1W2X3Y4Z5A")
						resp, err := env.Store.Push(ctx, d.dev, &syncproto.PushRequest{ProtocolVersion: 1, DeviceID: d.dev.DeviceID, Mutations: []syncproto.Mutation{m}})
						if err != nil || resp.Results[0].Status != syncproto.StatusApplied {
							errc <- fmt.Errorf("push: %v %+v", err, resp)
							return
						}
						mu.Lock()
						sent[m.Visit.ID] = true
						mu.Unlock()
					}
				}(d)
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			seen := map[string]int{}
			var lastSeq int64
			finished := false
			for rounds := 0; rounds < 100000; rounds++ {
				select {
				case <-done:
					finished = true
				default:
				}
				resp, err := env.Store.Pull(ctx, reader.dev, &syncproto.PullRequest{ProtocolVersion: 1, DeviceID: reader.dev.DeviceID, Cursor: cursor, MaxBytes: syncproto.MinPullBytes})
				if err != nil {
					t.Fatal(err)
				}
				for _, op := range resp.Ops {
					if op.Type != syncproto.EntityVisit {
						continue
					}
					if op.Seq <= lastSeq {
						t.Fatalf("op seq %d after %d: out of order", op.Seq, lastSeq)
					}
					lastSeq = op.Seq
					seen[op.ID]++
				}
				cursor = resp.Cursor
				if finished && !resp.HasMore {
					break
				}
			}
			select {
			case err := <-errc:
				t.Fatal(err)
			default:
			}
			if len(sent) != pushers*perPusher {
				t.Fatalf("sent %d", len(sent))
			}
			for id := range sent {
				if seen[id] != 1 {
					t.Errorf("visit %s seen %d times", id, seen[id])
				}
			}
			if len(seen) != len(sent) {
				t.Errorf("seen %d visits, sent %d", len(seen), len(sent))
			}
		})
	}
}

func opsByType(ops []syncproto.Op) map[string][]syncproto.Op {
	out := map[string][]syncproto.Op{}
	for _, op := range ops {
		k := string(op.Op)
		if op.Type != "" {
			k += "/" + string(op.Type)
		}
		out[k] = append(out[k], op)
	}
	return out
}

func ids(ops []syncproto.Op) map[string]bool {
	out := map[string]bool{}
	for _, op := range ops {
		out[op.ID+op.Place] = true
	}
	return out
}

func TestPull_ScopeChanges(t *testing.T) {
	env := servertest.Start(t)
	env.AddHouseholds(t,
		household("01JDZX5Q7R8S9T0V1W2X3Y4Z5A", "G11", "一"),
		household("01JDZX5Q7R8S9T0V1W2X3Y4Z5B", "G12", "二"),
		household("01JDZX5Q7R8S9T0V1W2X3Y4Z5C", "G21", "三"))
	u := env.CreateUser(t, "w", domain.RoleFieldWorker, "V1")
	d := newDevice(t, env, u)
	ops, cursor := d.pullAll("", 0)
	by := opsByType(ops)
	if len(by["put/household"]) != 2 || ids(by["put/household"])["01JDZX5Q7R8S9T0V1W2X3Y4Z5C"+"G21"] {
		t.Fatalf("first pull households = %v", by["put/household"])
	}
	if len(by["put/form"]) != 4 {
		t.Fatalf("forms in first pull = %d", len(by["put/form"]))
	}
	places := map[string]bool{}
	for _, op := range by["put/place"] {
		places[op.ID] = true
	}
	if !places["C1"] || !places["T1"] || !places["V1"] || !places["G11"] || places["V2"] || places["G21"] {
		t.Fatalf("places = %v", places)
	}
	// Gain V2 while offline: exactly V2's places and households arrive.
	env.SetPlaces(t, u.ID, "V1", "V2")
	ops, cursor = d.pullAll(cursor, 0)
	by = opsByType(ops)
	if len(by["scope_enter"]) != 1 || by["scope_enter"][0].Place != "V2" || len(by["scope_leave"]) != 0 {
		t.Fatalf("scope ops = %+v", ops)
	}
	if len(by["put/household"]) != 1 || by["put/household"][0].ID != "01JDZX5Q7R8S9T0V1W2X3Y4Z5C" || len(by["put/form"]) != 0 {
		t.Fatalf("gain brought %+v", by)
	}
	// Lose V1: a leave op, and nothing else of V1.
	env.SetPlaces(t, u.ID, "V2")
	ops, cursor = d.pullAll(cursor, 0)
	by = opsByType(ops)
	if len(by["scope_leave"]) != 1 || by["scope_leave"][0].Place != "V1" || len(by["put/household"]) != 0 {
		t.Fatalf("lose: %+v", ops)
	}
	// No change: an empty page.
	ops, _ = d.pullAll(cursor, 0)
	if len(ops) != 0 {
		t.Fatalf("no-op pull = %+v", ops)
	}
}

func TestPull_HouseholdMovesBetweenDevices(t *testing.T) {
	env := servertest.Start(t)
	env.AddHouseholds(t, household("01JDZX5Q7R8S9T0V1W2X3Y4Z5A", "G11", "搬家户"))
	a := newDevice(t, env, env.CreateUser(t, "a", domain.RoleFieldWorker, "V1"))
	b := newDevice(t, env, env.CreateUser(t, "b", domain.RoleFieldWorker, "V2"))
	// The mover works in both villages: a move needs both places in scope.
	mover := newDevice(t, env, env.CreateUser(t, "m", domain.RoleFieldWorker, "V1", "V2"))
	_, ca := a.pullAll("", 0)
	_, cb := b.pullAll("", 0)
	hh, _, _ := env.Store.Household(ctx, "01JDZX5Q7R8S9T0V1W2X3Y4Z5A")
	r := mover.push(mover.mut(syncproto.KindHouseholdMove, func(m *syncproto.Mutation) {
		m.HouseholdMove = &syncproto.HouseholdMove{HouseholdID: hh.ID, BaseVersion: hh.Version, PlaceCode: "G21"}
	}))
	if r.Results[0].Status != syncproto.StatusApplied {
		t.Fatalf("move: %+v", r.Results[0])
	}
	opsA, _ := a.pullAll(ca, 0)
	opsB, _ := b.pullAll(cb, 0)
	if by := opsByType(opsA); len(by["delete/household"]) != 1 || len(by["put/household"]) != 0 {
		t.Fatalf("device A after move: %+v", opsA)
	}
	if by := opsByType(opsB); len(by["put/household"]) != 1 || by["put/household"][0].Household.PlaceCode != "G21" {
		t.Fatalf("device B after move: %+v", opsB)
	}
	// A can no longer write to it: the push is reported, not lost.
	r = a.push(a.mut(syncproto.KindHouseholdUpdate, func(m *syncproto.Mutation) {
		m.HouseholdUpdate = &syncproto.HouseholdUpdate{HouseholdID: hh.ID, BaseVersion: hh.Version, Fields: map[string]json.RawMessage{"notes": json.RawMessage(`"late"`)}}
	}))
	if r.Results[0].Code != syncproto.CodeOutOfScope {
		t.Fatalf("late edit: %+v", r.Results[0])
	}
}

func TestPull_ResetAndBadCursors(t *testing.T) {
	env := servertest.Start(t)
	env.AddHouseholds(t, household("01JDZX5Q7R8S9T0V1W2X3Y4Z5A", "G11", "一"))
	u := env.CreateUser(t, "w", domain.RoleFieldWorker, "V1")
	d := newDevice(t, env, u)
	other := newDevice(t, env, u)
	_, cursor := d.pullAll("", 0)
	pull := func(dev *device, cur string) (*syncproto.PullResponse, error) {
		return env.Store.Pull(ctx, dev.dev, &syncproto.PullRequest{ProtocolVersion: 1, DeviceID: dev.dev.DeviceID, Cursor: cur, MaxBytes: 1 << 20})
	}
	if _, err := pull(other, cursor); syncproto.CodeOf(err) != syncproto.CodeInvalidCursor {
		t.Fatalf("foreign device cursor: %v", err)
	}
	if _, err := pull(d, cursor[:len(cursor)-3]+"AAA"); syncproto.CodeOf(err) != syncproto.CodeInvalidCursor {
		t.Fatalf("forged cursor: %v", err)
	}
	// Expired: the log was pruned past the cursor.
	env.AddHouseholds(t, household("01JDZX5Q7R8S9T0V1W2X3Y4Z5B", "G11", "二"))
	var head int64
	env.Store.DB().QueryRow(`SELECT max(seq) FROM changes`).Scan(&head)
	if err := env.Store.PruneLog(ctx, head); err != nil {
		t.Fatal(err)
	}
	resp, err := pull(d, cursor)
	if err != nil || len(resp.Ops) == 0 || resp.Ops[0].Op != syncproto.OpReset {
		t.Fatalf("expired cursor: %v %+v", err, resp)
	}
	ops, cur2 := d.pullAll(cursor, 0)
	if by := opsByType(ops); len(by["put/household"]) != 2 || len(by["reset"]) != 1 {
		t.Fatalf("re-sync after reset = %+v", by)
	}
	// Another epoch (a restore): reset too.
	if err := env.Store.NewEpoch(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err = pull(d, cur2)
	if err != nil || resp.Ops[0].Op != syncproto.OpReset {
		t.Fatalf("foreign epoch: %v %+v", err, resp)
	}
}

func TestPull_PagesRespectByteBudget(t *testing.T) {
	env := servertest.Start(t)
	var hs []syncproto.Household
	for i := 0; i < 300; i++ {
		hs = append(hs, household(syncproto.NewID(time.Now()), "G11", fmt.Sprintf("户主%03d", i)))
	}
	env.AddHouseholds(t, hs...)
	d := newDevice(t, env, env.CreateUser(t, "w", domain.RoleFieldWorker, "V1"))
	cursor := ""
	got := map[string]int{}
	pages := 0
	for {
		resp, err := env.Store.Pull(ctx, d.dev, &syncproto.PullRequest{ProtocolVersion: 1, DeviceID: d.dev.DeviceID, Cursor: cursor, MaxBytes: syncproto.MinPullBytes})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		size := 0
		for _, op := range resp.Ops {
			b, _ := json.Marshal(op)
			size += len(b)
			if op.Type == syncproto.EntityHousehold {
				got[op.ID]++
			}
		}
		if len(resp.Ops) > 1 && size > syncproto.MinPullBytes {
			t.Fatalf("page of %d bytes over budget %d", size, syncproto.MinPullBytes)
		}
		cursor = resp.Cursor
		if !resp.HasMore {
			break
		}
	}
	if len(got) != 300 || pages < 5 {
		t.Fatalf("households %d in %d pages", len(got), pages)
	}
	for id, n := range got {
		if n != 1 {
			t.Fatalf("%s sent %d times", id, n)
		}
	}
}

// TestHouseholdMove_TargetScope: a move needs both the household's place
// and the target place in the device's scope. A refused move is rejected
// with a reason, advances the sequence and changes nothing.
func TestHouseholdMove_TargetScope(t *testing.T) {
	const inside, outside = "01JDZX5Q7R8S9T0V1W2X3Y4Z5A", "01JDZX5Q7R8S9T0V1W2X3Y4Z5B"
	cases := []struct {
		name, hh, target string
		want             syncproto.Code
	}{
		{"InScopeTarget", inside, "G12", ""},
		{"VillageOfOwnScope", inside, "V1", ""},
		{"CountyRoot", inside, "C1", syncproto.CodeOutOfScope},
		{"Township", inside, "T1", syncproto.CodeOutOfScope},
		{"AnotherVillage", inside, "V2", syncproto.CodeOutOfScope},
		{"AnotherVillagesGroup", inside, "G21", syncproto.CodeOutOfScope},
		{"SourceOutOfScope", outside, "G11", syncproto.CodeOutOfScope},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := servertest.Start(t)
			env.AddHouseholds(t, household(inside, "G11", "王建国"), household(outside, "G21", "外村"))
			d := newDevice(t, env, env.CreateUser(t, "w", domain.RoleFieldWorker, "V1"))
			hh, _, err := env.Store.Household(ctx, tc.hh)
			if err != nil {
				t.Fatal(err)
			}
			move := d.mut(syncproto.KindHouseholdMove, func(m *syncproto.Mutation) {
				m.HouseholdMove = &syncproto.HouseholdMove{HouseholdID: hh.ID, BaseVersion: hh.Version, PlaceCode: tc.target}
			})
			after := visitMut(d, inside) // the queue goes on after a refused move
			resp := d.push(move, after)
			r := resp.Results[0]
			if r.Code != tc.want || (tc.want == "") != (r.Status == syncproto.StatusApplied) || (tc.want != "" && r.Message == "") {
				t.Fatalf("move to %s = %+v, want code %q", tc.target, r, tc.want)
			}
			if resp.LastSeq != after.Seq || resp.Results[1].Status != syncproto.StatusApplied {
				t.Fatalf("sequence did not advance past the move: last %d, %+v", resp.LastSeq, resp.Results[1])
			}
			now, _, err := env.Store.Household(ctx, tc.hh)
			if err != nil {
				t.Fatal(err)
			}
			wantPlace := hh.PlaceCode
			if tc.want == "" {
				wantPlace = tc.target
			}
			if now.PlaceCode != wantPlace {
				t.Fatalf("household in %s, want %s", now.PlaceCode, wantPlace)
			}
			if tc.want != "" && count(t, env, `SELECT count(*) FROM changes WHERE entity_id = ? AND kind = 'moved_out'`, tc.hh) != 0 {
				t.Fatal("a refused move logged a change")
			}
		})
	}
}

// TestPush_SequenceReused_Store: the same seq with other content is
// refused with the server's last seq and changes nothing; the same
// mutation again is answered from the stored result; a result stored
// before digests were kept (digest NULL) counts as matching.
func TestPush_SequenceReused_Store(t *testing.T) {
	env := servertest.Start(t)
	u := env.CreateUser(t, "w", domain.RoleFieldWorker, "V1")
	const hh = "01JDZX5Q7R8S9T0V1W2X3Y4Z5A"
	env.AddHouseholds(t, household(hh, "G11", "王建国"))
	d := newDevice(t, env, u)
	v1, v2 := visitMut(d, hh), visitMut(d, hh)
	d.push(v1, v2)
	d.seq = 1 // a restored copy of the device: it numbers from 2 again
	other := visitMut(d, hh)
	_, err := env.Store.Push(ctx, d.dev, &syncproto.PushRequest{ProtocolVersion: 1, DeviceID: d.dev.DeviceID, Mutations: []syncproto.Mutation{v1, other}})
	var reused *sqlstore.SequenceReusedError
	if !errors.As(err, &reused) || reused.Seq != 2 || reused.LastSeq != 2 || !errors.Is(err, domain.ErrSequenceReused) {
		t.Fatalf("err = %v", err)
	}
	if count(t, env, `SELECT count(*) FROM visits`) != 2 || count(t, env, `SELECT count(*) FROM visits WHERE id = ?`, other.Visit.ID) != 0 {
		t.Fatal("the refused push changed data")
	}
	if r := d.push(v1, v2); r.LastSeq != 2 || r.Results[1].Status != syncproto.StatusApplied {
		t.Fatalf("replay: %+v", r)
	}
	// Results stored before this version have no digest: a push of those
	// numbers is answered from the stored result, as it always was.
	if _, err := env.RawDB(t).Exec(`UPDATE mutation_results SET digest = NULL WHERE device_id = ?`, d.dev.DeviceID); err != nil {
		t.Fatal(err)
	}
	if r := d.push(v1, other); r.LastSeq != 2 || len(r.Results) != 2 {
		t.Fatalf("legacy rows: %+v", r)
	}
	if count(t, env, `SELECT count(*) FROM visits`) != 2 {
		t.Fatal("a legacy replay changed data")
	}
}

// TestPush_ReplaySpelledOtherwise_Store: a replay whose JSON is spelled
// otherwise (a string's characters escaped the first time, plain the
// second) is the same mutation: it gets the stored answer, not
// sequence_reused, and applies nothing again.
func TestPush_ReplaySpelledOtherwise_Store(t *testing.T) {
	env := servertest.Start(t)
	u := env.CreateUser(t, "w", domain.RoleFieldWorker, "V1")
	const hh = "01JDZX5Q7R8S9T0V1W2X3Y4Z5A"
	env.AddHouseholds(t, household(hh, "G11", "王建国"))
	d := newDevice(t, env, u)
	escaped, plain := visitMut(d, hh), syncproto.Mutation{}
	answers := map[string]json.RawMessage{}
	key := ""
	for k, v := range escaped.Visit.Answers {
		answers[k] = v
		if string(v) == `"塘子 1号水窖"` {
			key = k
		}
	}
	if key == "" {
		t.Fatal("no text answer to spell otherwise")
	}
	answers[key] = json.RawMessage(`"\u5858\u5b50 1\u53f7\u6c34\u7a96"`)
	v := *escaped.Visit
	v.Answers = answers
	escaped.Visit = &v
	first := d.push(escaped)
	if first.Results[0].Status != syncproto.StatusApplied {
		t.Fatalf("first push: %+v", first)
	}
	plain = escaped
	pv := *escaped.Visit
	pv.Answers = map[string]json.RawMessage{}
	for k, a := range answers {
		pv.Answers[k] = a
	}
	pv.Answers[key] = json.RawMessage(`"塘子 1号水窖"`)
	plain.Visit = &pv
	r := d.push(plain)
	if r.LastSeq != 1 || len(r.Results) != 1 || r.Results[0] != first.Results[0] {
		t.Fatalf("replay: %+v, first %+v", r, first)
	}
	if count(t, env, `SELECT count(*) FROM visits`) != 1 || count(t, env, `SELECT count(*) FROM mutation_results WHERE device_id = ?`, d.dev.DeviceID) != 1 {
		t.Fatal("the replay applied something again")
	}
	// Other content under the same number is still refused.
	pv.Answers[key] = json.RawMessage(`"塘子 2号水窖"`)
	_, err := env.Store.Push(ctx, d.dev, &syncproto.PushRequest{ProtocolVersion: 1, DeviceID: d.dev.DeviceID, Mutations: []syncproto.Mutation{plain}})
	if !errors.Is(err, domain.ErrSequenceReused) {
		t.Fatalf("other content: err = %v", err)
	}
}

// TestPush_WriterDeadline_Store: a push that outlives the writer's
// deadline is refused as unavailable and keeps nothing (its sequence
// numbers are not used up); the same push later applies.
func TestPush_WriterDeadline_Store(t *testing.T) {
	env := servertest.Start(t)
	u := env.CreateUser(t, "w", domain.RoleFieldWorker, "V1")
	const hh = "01JDZX5Q7R8S9T0V1W2X3Y4Z5A"
	env.AddHouseholds(t, household(hh, "G11", "王建国"))
	d := newDevice(t, env, u)
	ms := []syncproto.Mutation{visitMut(d, hh), visitMut(d, hh)}
	env.Store.SetWriteTimeout(time.Nanosecond) // over before the first mutation
	_, err := env.Store.Push(ctx, d.dev, &syncproto.PushRequest{ProtocolVersion: 1, DeviceID: d.dev.DeviceID, Mutations: ms})
	// SQLite checks the deadline between mutations (ErrUnavailable too);
	// PostgreSQL's statements carry it. Both answer "unavailable".
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the deadline", err)
	}
	if n := count(t, env, `SELECT count(*) FROM visits`) + count(t, env, `SELECT count(*) FROM mutation_results`); n != 0 {
		t.Fatalf("a push past the deadline kept %d rows", n)
	}
	env.Store.SetWriteTimeout(time.Minute)
	if r := d.push(ms...); r.LastSeq != 2 || r.Results[1].Status != syncproto.StatusApplied {
		t.Fatalf("the same push later: %+v", r)
	}
}

// TestPush_VisitAuditsInOrder_Store: the visits' audit events of a push,
// written together, keep the order of the mutations around another kind,
// and each says who, from which device, where and what.
func TestPush_VisitAuditsInOrder_Store(t *testing.T) {
	env := servertest.Start(t)
	u := env.CreateUser(t, "w", domain.RoleFieldWorker, "V1")
	const hh = "01JDZX5Q7R8S9T0V1W2X3Y4Z5A"
	env.AddHouseholds(t, household(hh, "G11", "王建国"))
	d := newDevice(t, env, u)
	a, b := visitMut(d, hh), visitMut(d, hh)
	upd := d.mut(syncproto.KindHouseholdUpdate, func(m *syncproto.Mutation) {
		m.HouseholdUpdate = &syncproto.HouseholdUpdate{HouseholdID: hh, BaseVersion: 1, Fields: map[string]json.RawMessage{"notes": json.RawMessage(`"修好了"`)}}
	})
	c := visitMut(d, hh)
	if r := d.push(a, b, upd, c); r.LastSeq != 4 {
		t.Fatalf("push: %+v", r)
	}
	trail, err := env.Store.AuditTrail(ctx, "household", hh)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range trail {
		switch e.Action {
		case "visit.create":
			got = append(got, e.EntityID)
			var after struct {
				HouseholdID string `json:"household_id"`
			}
			if e.ActorUser != u.ID || e.ActorName != "w" || e.DeviceID != d.dev.DeviceID || e.PlaceCode != "G11" ||
				json.Unmarshal(e.After, &after) != nil || after.HouseholdID != hh || e.Before != nil {
				t.Errorf("visit audit event: %+v", e)
			}
		case "household.update":
			got = append(got, "update")
		}
	}
	want := []string{a.Visit.ID, b.Visit.ID, "update", c.Visit.ID}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("audit order %v, want %v", got, want)
	}
}
