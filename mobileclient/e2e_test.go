package mobileclient

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/syncproto"
)

// e2e tests run the device library against the real server (HTTP handler,
// SQLite store) from server/servertest.

// device enrolls a new device for user and makes its first sync.
func device(t *testing.T, env *servertest.Env, u domain.User, o *Options) *Client {
	t.Helper()
	if o == nil {
		o = &Options{Backoff: fastBackoff}
	}
	c := openTest(t, t.TempDir(), env.URL, o)
	if err := c.Enroll(context.Background(), env.EnrollCode(t, u.ID), u.Username+"-tablet"); err != nil {
		t.Fatalf("enroll: %v", err)
	}
	mustSync(t, c)
	return c
}

func mustSync(t *testing.T, c *Client) SyncReport {
	t.Helper()
	rep, err := c.Sync(context.Background())
	if err != nil {
		t.Fatalf("sync: %v (report %+v)", err, rep)
	}
	return rep
}

func importHouseholds(t *testing.T, env *servertest.Env, places ...string) []string {
	t.Helper()
	var hs []syncproto.Household
	var ids []string
	for i, p := range places {
		id := newID()
		ids = append(ids, id)
		hs = append(hs, syncproto.Household{ID: id, PlaceCode: p, Fields: map[string]json.RawMessage{
			"head_name": raw(`"王建国"`),
			"notes":     str("imported " + string(rune('a'+i))),
		}})
	}
	env.AddHouseholds(t, hs...)
	return ids
}

// serverHouseholds returns the server's live households in the given
// places (all when none given).
func serverHouseholds(t *testing.T, env *servertest.Env, places ...string) map[string]syncproto.Household {
	t.Helper()
	rows, err := env.Store.DB().Query(`SELECT id, place_code FROM households WHERE deleted = 0`)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for rows.Next() {
		var id, place string
		rows.Scan(&id, &place)
		if len(places) == 0 || slices.Contains(places, place) {
			ids = append(ids, id)
		}
	}
	rows.Close()
	out := map[string]syncproto.Household{}
	for _, id := range ids {
		h, _, err := env.Store.Household(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		out[id] = *h
	}
	return out
}

func compact(v json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, v); err != nil {
		return string(v)
	}
	return b.String()
}

func fieldsJSON(f map[string]json.RawMessage) string {
	keys := slices.Sorted(maps.Keys(f))
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "=" + compact(f[k]) + ";")
	}
	return b.String()
}

// assertConverged checks that the device's view equals the server's state
// in the given places (all when none given).
func assertConverged(t *testing.T, name string, c *Client, env *servertest.Env, places ...string) {
	t.Helper()
	want := serverHouseholds(t, env, places...)
	got, err := c.Households("")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("%s: %d households, server has %d", name, len(got), len(want))
	}
	for _, h := range got {
		w, ok := want[h.ID]
		if !ok {
			t.Errorf("%s: household %s not on the server", name, h.ID)
			continue
		}
		if h.Version != w.Version || h.PlaceCode != w.PlaceCode || fieldsJSON(h.Fields) != fieldsJSON(w.Fields) {
			t.Errorf("%s: household %s\n device v%d %s %s\n server v%d %s %s", name, h.ID,
				h.Version, h.PlaceCode, fieldsJSON(h.Fields), w.Version, w.PlaceCode, fieldsJSON(w.Fields))
		}
		vs, err := c.Visits(h.ID)
		if err != nil {
			t.Fatal(err)
		}
		var gotV []string
		for _, v := range vs {
			gotV = append(gotV, v.ID)
			if v.ServerTime.IsZero() || v.DeviceID == "" {
				t.Errorf("%s: visit %s is not the server's copy", name, v.ID)
			}
		}
		sort.Strings(gotV)
		if wantV := serverVisitIDs(t, env, h.ID); strings.Join(gotV, ",") != strings.Join(wantV, ",") {
			t.Errorf("%s: visits of %s = %v, server %v", name, h.ID, gotV, wantV)
		}
	}
	if p, _ := c.Pending(); p.Mutations != 0 {
		t.Errorf("%s: %d mutations still pending", name, p.Mutations)
	}
}

func serverVisitIDs(t *testing.T, env *servertest.Env, householdID string) []string {
	t.Helper()
	rows, err := env.Store.DB().Query(`SELECT id FROM visits WHERE household_id = ? ORDER BY id`, householdID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		rows.Scan(&id)
		out = append(out, id)
	}
	return out
}

func serverCount(t *testing.T, env *servertest.Env, q string, args ...any) int {
	t.Helper()
	return count(t, env.Store.DB(), q, args...)
}

func TestE2E_TwoOfflineDevicesConverge(t *testing.T) {
	for _, order := range []string{"a-first", "b-first"} {
		t.Run(order, func(t *testing.T) {
			env := servertest.Start(t)
			ua := env.CreateUser(t, "worker1", domain.RoleFieldWorker, "V1")
			ub := env.CreateUser(t, "worker2", domain.RoleFieldWorker, "V1")
			hs := importHouseholds(t, env, "G11", "G11", "G12")
			a := device(t, env, ua, nil)
			b := device(t, env, ub, nil)
			for name, c := range map[string]*Client{"a": a, "b": b} {
				if got, _ := c.Households(""); len(got) != 3 {
					t.Fatalf("%s: first sync brought %d households", name, len(got))
				}
				if fs, _ := c.Forms(); len(fs) != len(syncproto.Templates()) {
					t.Fatalf("%s: first sync brought %d forms", name, len(fs))
				}
			}

			// Offline work on both devices.
			var visits []string
			rec := func(c *Client, hh, head string) {
				id, err := c.RecordVisit(surveyVisit(hh, head))
				if err != nil {
					t.Fatal(err)
				}
				visits = append(visits, id)
			}
			rec(a, hs[0], "王建国")
			rec(a, hs[0], "王建国")
			rec(a, hs[1], "王建国")
			rec(b, hs[0], "王建国")
			rec(b, hs[2], "王建国")
			edit := func(c *Client, hh string, f map[string]json.RawMessage) {
				if err := c.UpdateHousehold(hh, f); err != nil {
					t.Fatal(err)
				}
			}
			edit(a, hs[0], map[string]json.RawMessage{"notes": str("from a"), "phone": str("1390000")})
			time.Sleep(5 * time.Millisecond) // b's edit of notes is the later one
			edit(b, hs[0], map[string]json.RawMessage{"notes": str("from b"), "wubao": str("yes")})
			edit(b, hs[1], map[string]json.RawMessage{"pension": str("yes")})
			edit(a, hs[2], map[string]json.RawMessage{"notes": raw("null")})
			newHH, err := a.CreateHousehold("G12", map[string]json.RawMessage{"head_name": raw(`"李秀英"`), "notes": str("new")})
			if err != nil {
				t.Fatal(err)
			}
			rec(a, newHH, "李秀英")
			edit(a, newHH, map[string]json.RawMessage{"phone": str("1380000")})
			if err := b.MoveHousehold(hs[2], "G11"); err != nil {
				t.Fatal(err)
			}
			// The local view shows the device's own edits at once.
			fieldEq(t, mustHousehold(t, a, hs[0]), "notes", `"from a"`)
			fieldEq(t, mustHousehold(t, b, hs[0]), "notes", `"from b"`)

			first, second := a, b
			if order == "b-first" {
				first, second = b, a
			}
			r1 := mustSync(t, first)
			r2 := mustSync(t, second)
			mustSync(t, first) // bring the second device's changes
			if r1.Rejected+r2.Rejected != 0 {
				t.Fatalf("rejections: %+v %+v", r1.Rejections, r2.Rejections)
			}
			if r1.Pushed+r2.Pushed != 13 {
				t.Errorf("pushed %d+%d, want 13", r1.Pushed, r2.Pushed)
			}
			// Every visit on the server exactly once.
			if n := serverCount(t, env, `SELECT count(*) FROM visits`); n != len(visits) {
				t.Errorf("server has %d visits, want %d", n, len(visits))
			}
			for _, id := range visits {
				if n := serverCount(t, env, `SELECT count(*) FROM visits WHERE id = ?`, id); n != 1 {
					t.Errorf("visit %s on the server %d times", id, n)
				}
			}
			// Fields changed on one side merged; the later edit of notes won.
			srv := serverHouseholds(t, env)
			h0 := srv[hs[0]]
			if compact(h0.Fields["phone"]) != `"1390000"` || compact(h0.Fields["wubao"]) != `"yes"` {
				t.Errorf("merge lost a field: %s", fieldsJSON(h0.Fields))
			}
			wantNotes := `"from b"` // b's edit has the later HLC
			if compact(h0.Fields["notes"]) != wantNotes {
				t.Errorf("notes = %s, want %s", h0.Fields["notes"], wantNotes)
			}
			if srv[hs[2]].PlaceCode != "G11" || srv[hs[2]].Fields["notes"] != nil {
				t.Errorf("household 3 = %+v", srv[hs[2]])
			}
			if compact(srv[newHH].Fields["phone"]) != `"1380000"` {
				t.Errorf("new household = %+v", srv[newHH])
			}
			assertConverged(t, "a", a, env)
			assertConverged(t, "b", b, env)
			// The notes clash is kept as a conflict record both devices see.
			for name, c := range map[string]*Client{"a": a, "b": b} {
				cs, _ := c.Conflicts()
				if len(cs) != 1 || cs[0].Field != "notes" || cs[0].HouseholdID != hs[0] {
					t.Errorf("%s: conflicts = %+v", name, cs)
				}
			}
		})
	}
}

// dropAnswer lets requests reach the server but loses the answers of the
// first requests to path (PushPath if empty) on their way back, as a weak
// link would: the server acted, the device sees a cut.
type dropAnswer struct {
	inner http.RoundTripper
	path  string
	drops atomic.Int32 // answers still to drop
	asked atomic.Int32 // requests to path
}

func (d *dropAnswer) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := d.inner.RoundTrip(r)
	if err != nil || !strings.HasSuffix(r.URL.Path, cmp.Or(d.path, PushPath)) {
		return resp, err
	}
	d.asked.Add(1)
	if d.drops.Add(-1) >= 0 {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil, errors.New("connection reset after the server committed")
	}
	return resp, nil
}

func TestE2E_ReplayAfterLostAnswer(t *testing.T) {
	env := servertest.Start(t)
	u := env.CreateUser(t, "worker1", domain.RoleFieldWorker, "V1")
	hs := importHouseholds(t, env, "G11")
	tr := &dropAnswer{inner: http.DefaultTransport}
	tr.drops.Store(1)
	c := device(t, env, u, &Options{HTTPClient: &http.Client{Transport: tr}, Backoff: fastBackoff})
	var ids []string
	for i := 0; i < 3; i++ {
		id, err := c.RecordVisit(surveyVisit(hs[0], "王建国"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	created, err := c.CreateHousehold("G11", map[string]json.RawMessage{"head_name": raw(`"张三"`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.UpdateHousehold(hs[0], map[string]json.RawMessage{"notes": str("edited")}); err != nil {
		t.Fatal(err)
	}
	rep := mustSync(t, c)
	if tr.asked.Load() != 2 || rep.Retries != 1 {
		t.Errorf("pushes %d, retries %d; want 2 and 1", tr.asked.Load(), rep.Retries)
	}
	if rep.Pushed != 5 || rep.Rejected != 0 {
		t.Errorf("report = %+v", rep)
	}
	if n := serverCount(t, env, `SELECT count(*) FROM visits`); n != 3 {
		t.Errorf("server has %d visits, want 3", n)
	}
	// The edit applied once: one version step, no conflict with itself.
	if n := serverCount(t, env, `SELECT count(*) FROM conflicts`); n != 0 {
		t.Errorf("%d conflicts", n)
	}
	if n := serverCount(t, env, `SELECT count(*) FROM households WHERE id = ?`, created); n != 1 {
		t.Errorf("created household %d times", n)
	}
	assertConverged(t, "device", c, env)
}

func TestE2E_CrashBetweenPushAndSave(t *testing.T) {
	env := servertest.Start(t)
	u := env.CreateUser(t, "worker1", domain.RoleFieldWorker, "V1")
	hs := importHouseholds(t, env, "G11", "G12")
	dir := t.TempDir()
	tr := &dropAnswer{inner: http.DefaultTransport}
	tr.drops.Store(1 << 20) // every push answer is lost
	crashing := &Options{HTTPClient: &http.Client{Transport: tr}, MaxBatch: 4,
		Backoff: Backoff{Base: time.Millisecond, Max: time.Millisecond, MaxAttempts: 1}}
	c := openTest(t, dir, env.URL, crashing)
	if err := c.Enroll(context.Background(), env.EnrollCode(t, u.ID), "t"); err != nil {
		t.Fatal(err)
	}
	mustSync(t, c) // pulls only
	var ids []string
	for i := 0; i < 6; i++ {
		id, err := c.RecordVisit(surveyVisit(hs[i%2], "王建国"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := c.UpdateHousehold(hs[0], map[string]json.RawMessage{"head_name": raw(`"王建国"`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sync(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("sync with lost answer = %v", err)
	}
	// The server committed the first batch; the device saved nothing.
	if n := serverCount(t, env, `SELECT count(*) FROM visits`); n != 4 {
		t.Fatalf("server has %d visits after the first batch", n)
	}
	c.Close() // the crash: nothing of the answer was saved

	c = openTest(t, dir, env.URL, nil)
	p, err := c.Pending()
	if err != nil || p.Mutations != 7 {
		t.Fatalf("after crash: %d pending (%v), want 7", p.Mutations, err)
	}
	// Bytes is the bodies' encoded size, in bytes (the edit's body holds
	// Chinese characters of 3 bytes each).
	var want int64
	rows, err := c.db.Query(`SELECT body FROM outbox`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var b string
		if err := rows.Scan(&b); err != nil {
			t.Fatal(err)
		}
		want += int64(len(b))
	}
	rows.Close()
	if p.Bytes != want {
		t.Fatalf("pending bytes %d, the outbox bodies are %d bytes", p.Bytes, want)
	}
	rep := mustSync(t, c)
	if rep.Pushed != 7 || rep.Rejected != 0 {
		t.Fatalf("report = %+v", rep)
	}
	if n := serverCount(t, env, `SELECT count(*) FROM visits`); n != 6 {
		t.Errorf("server has %d visits, want 6", n)
	}
	if n := serverCount(t, env, `SELECT count(*) FROM conflicts`); n != 0 {
		t.Errorf("the replayed edit clashed with itself: %d conflicts", n)
	}
	for _, id := range ids {
		if n := serverCount(t, env, `SELECT count(*) FROM visits WHERE id = ?`, id); n != 1 {
			t.Errorf("visit %s %d times", id, n)
		}
	}
	assertConverged(t, "device", c, env)
	fieldEq(t, mustHousehold(t, c, hs[0]), "head_name", `"王建国"`)
}

func placeCodes(t *testing.T, c *Client) string {
	t.Helper()
	ps, err := c.Places()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range ps {
		out = append(out, p.Code)
	}
	return strings.Join(out, " ")
}

func householdIDs(t *testing.T, c *Client, place string) []string {
	t.Helper()
	hs, err := c.Households(place)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, h := range hs {
		out = append(out, h.ID)
	}
	return out
}

func TestE2E_ScopeChanges(t *testing.T) {
	env := servertest.Start(t)
	u := env.CreateUser(t, "worker1", domain.RoleFieldWorker, "V1")
	v1 := importHouseholds(t, env, "G11", "G12", "V1")
	v2 := importHouseholds(t, env, "G21", "V2")
	c := device(t, env, u, nil)
	if got := placeCodes(t, c); got != "C1 G11 G12 T1 V1" {
		t.Fatalf("places = %s", got)
	}
	if got := householdIDs(t, c, ""); strings.Join(got, ",") != strings.Join(sorted(v1...), ",") {
		t.Fatalf("households = %v, want %v", got, v1)
	}

	// A village assigned while the device is offline: the next pull brings
	// exactly it.
	env.SetPlaces(t, u.ID, "V1", "V2")
	rep := mustSync(t, c)
	if rep.ScopeEntered != 1 || rep.ScopeLeft != 0 {
		t.Errorf("report = %+v", rep)
	}
	if got := placeCodes(t, c); got != "C1 G11 G12 G21 T1 V1 V2" {
		t.Errorf("places = %s", got)
	}
	if got := householdIDs(t, c, "V2"); strings.Join(got, ",") != strings.Join(sorted(v2...), ",") {
		t.Errorf("V2 households = %v, want %v", got, v2)
	}
	assertConverged(t, "after enter", c, env)
	v2Places := []string{"V2", "G21"}

	// Unpushed work in V1, then V1 is taken away.
	if err := c.UpdateHousehold(v1[0], map[string]json.RawMessage{"notes": str("late edit")}); err != nil {
		t.Fatal(err)
	}
	visit, err := c.RecordVisit(surveyVisit(v1[1], "王建国"))
	if err != nil {
		t.Fatal(err)
	}
	env.SetPlaces(t, u.ID, "V2")
	// Pull first: the leave drops V1 locally but not the outbox.
	rep, err = c.Pull(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.ScopeLeft != 1 {
		t.Errorf("report = %+v", rep)
	}
	if got := placeCodes(t, c); got != "C1 G21 T1 V2" {
		t.Errorf("places after leave = %s", got)
	}
	if got := householdIDs(t, c, ""); strings.Join(got, ",") != strings.Join(sorted(v2...), ",") {
		t.Errorf("households after leave = %v, want %v", got, v2)
	}
	if p, _ := c.Pending(); p.Mutations != 2 {
		t.Fatalf("outbox after leave: %d, want 2", p.Mutations)
	}
	// The unpushed work is still pushed, and its rejection reported.
	rep = mustSync(t, c)
	if rep.Pushed != 2 || rep.Rejected != 2 {
		t.Fatalf("report = %+v", rep)
	}
	rj, err := c.Rejections()
	if err != nil {
		t.Fatal(err)
	}
	if len(rj) != 2 || rj[0].EntityID != v1[0] || rj[1].EntityID != visit {
		t.Fatalf("rejections = %+v", rj)
	}
	for _, r := range rj {
		if r.Code != string(syncproto.CodeOutOfScope) || r.Message == "" {
			t.Errorf("rejection %d: %s %q", r.Seq, r.Code, r.Message)
		}
	}
	if n := serverCount(t, env, `SELECT count(*) FROM visits`); n != 0 {
		t.Errorf("out-of-scope visit stored")
	}
	assertConverged(t, "after leave", c, env, v2Places...)
}

func TestE2E_HouseholdMovesOutOfScope(t *testing.T) {
	env := servertest.Start(t)
	u := env.CreateUser(t, "worker1", domain.RoleFieldWorker, "V1")
	sup := env.CreateUser(t, "worker2", domain.RoleFieldWorker, "V1", "V2")
	hs := importHouseholds(t, env, "G11")
	c := device(t, env, u, nil)
	other := device(t, env, sup, nil)
	if err := other.MoveHousehold(hs[0], "G21"); err != nil {
		t.Fatal(err)
	}
	mustSync(t, other)
	mustSync(t, c)
	if _, err := c.Household(hs[0]); !errors.Is(err, ErrNotFound) {
		t.Errorf("household moved away still shown: %v", err)
	}
	assertConverged(t, "worker1", c, env, "V1", "G11", "G12")
	assertConverged(t, "worker2", other, env)
}

func TestE2E_RejectionsAndRevocation(t *testing.T) {
	env := servertest.Start(t)
	u := env.CreateUser(t, "worker1", domain.RoleFieldWorker, "V1")
	hs := importHouseholds(t, env, "G11")
	c := device(t, env, u, nil)
	// A form version the device does not know passes locally; the server
	// rejects it, and the queue goes on.
	bad := surveyVisit(hs[0], "王建国")
	bad.FormVersion = 9
	badID, err := c.RecordVisit(bad)
	if err != nil {
		t.Fatal(err)
	}
	good, err := c.RecordVisit(surveyVisit(hs[0], "王建国"))
	if err != nil {
		t.Fatal(err)
	}
	rep := mustSync(t, c)
	if rep.Pushed != 2 || rep.Rejected != 1 || len(rep.Rejections) != 1 || rep.Rejections[0].EntityID != badID {
		t.Fatalf("report = %+v", rep)
	}
	if rep.Rejections[0].Code != string(syncproto.CodeUnknownEntity) {
		t.Errorf("code = %s", rep.Rejections[0].Code)
	}
	vs, _ := c.Visits(hs[0])
	if len(vs) != 1 || vs[0].ID != good {
		t.Errorf("visits = %+v", vs)
	}
	if rep.BytesSent == 0 || rep.BytesReceived == 0 {
		t.Errorf("bytes not counted: %+v", rep)
	}

	info, _ := c.Info()
	if err := env.Store.RevokeDevice(context.Background(), info.DeviceID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RecordVisit(surveyVisit(hs[0], "王建国")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sync(context.Background()); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("sync of revoked device = %v", err)
	}
	if p, _ := c.Pending(); p.Mutations != 1 {
		t.Errorf("pending = %+v", p)
	}
}

func TestE2E_SequenceGap(t *testing.T) {
	env := servertest.Start(t)
	u := env.CreateUser(t, "worker1", domain.RoleFieldWorker, "V1")
	hs := importHouseholds(t, env, "G11")
	c := device(t, env, u, nil)
	// A device database restored from an old backup would number from
	// further on than the server expects; simulate by skipping numbers.
	if err := setMeta(context.Background(), c.db, metaLastSeq, "41"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RecordVisit(surveyVisit(hs[0], "王建国")); err != nil {
		t.Fatal(err)
	}
	_, err := c.Sync(context.Background())
	var gap *SequenceGapError
	if !errors.Is(err, ErrSequenceGap) || !errors.As(err, &gap) || gap.Expected != 1 || gap.Sent != 42 {
		t.Fatalf("sync = %v (gap %+v)", err, gap)
	}
}

func TestE2E_ResetKeepsUnpushedWork(t *testing.T) {
	env := servertest.Start(t)
	u := env.CreateUser(t, "worker1", domain.RoleFieldWorker, "V1")
	hs := importHouseholds(t, env, "G11", "G12")
	c := device(t, env, u, nil)
	if err := c.UpdateHousehold(hs[0], map[string]json.RawMessage{"notes": str("unpushed")}); err != nil {
		t.Fatal(err)
	}
	mine, err := c.CreateHousehold("G11", map[string]json.RawMessage{"head_name": raw(`"新户"`)})
	if err != nil {
		t.Fatal(err)
	}
	visit, err := c.RecordVisit(surveyVisit(hs[1], "王建国"))
	if err != nil {
		t.Fatal(err)
	}
	// The server forgets the log the device's cursor points into.
	more := importHouseholds(t, env, "G12")
	var head int64
	if err := env.Store.DB().QueryRow(`SELECT max(seq) FROM changes`).Scan(&head); err != nil {
		t.Fatal(err)
	}
	if err := env.Store.PruneLog(context.Background(), head); err != nil {
		t.Fatal(err)
	}
	rep, err := c.Pull(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Resets != 1 {
		t.Fatalf("report = %+v", rep)
	}
	fieldEq(t, mustHousehold(t, c, hs[0]), "notes", `"unpushed"`)
	mustHousehold(t, c, mine)
	mustHousehold(t, c, more[0])
	if vs, _ := c.Visits(hs[1]); len(vs) != 1 || vs[0].ID != visit {
		t.Errorf("own visit lost in reset: %+v", vs)
	}
	if fs, _ := c.Forms(); len(fs) == 0 {
		t.Errorf("no forms after reset")
	}
	mustSync(t, c)
	assertConverged(t, "device", c, env)
}

func TestE2E_SmallPagesAndBatches(t *testing.T) {
	env := servertest.Start(t)
	u := env.CreateUser(t, "worker1", domain.RoleFieldWorker, "V1")
	var places []string
	for i := 0; i < 60; i++ {
		places = append(places, []string{"G11", "G12", "V1"}[i%3])
	}
	importHouseholds(t, env, places...)
	c := device(t, env, u, &Options{PullBytes: syncproto.MinPullBytes, MaxBatch: 7, Backoff: fastBackoff})
	if got := householdIDs(t, c, ""); len(got) != 60 {
		t.Fatalf("%d households", len(got))
	}
	hs, _ := c.Households("")
	for i, h := range hs {
		if i%2 == 0 {
			if _, err := c.RecordVisit(surveyVisit(h.ID, "王建国")); err != nil {
				t.Fatal(err)
			}
		}
	}
	rep := mustSync(t, c)
	if rep.Pushed != 30 || rep.Batches != 5 || rep.Pages < 2 {
		t.Errorf("report = %+v", rep)
	}
	assertConverged(t, "device", c, env)
}

// TestE2E_TwoOfflineEditsOfOneField: a worker edits the same field twice
// before syncing. Both updates carry the base version the device last
// pulled; the server must not see the second as clashing with the first
// (a field last written by the same device is not a clash), so the
// device's own later write simply wins, with no conflict record.
func TestE2E_TwoOfflineEditsOfOneField(t *testing.T) {
	env := servertest.Start(t)
	u := env.CreateUser(t, "worker1", domain.RoleFieldWorker, "V1")
	hs := importHouseholds(t, env, "G11")
	c := device(t, env, u, nil)
	for _, v := range []string{`"a"`, `"b"`} {
		if err := c.UpdateHousehold(hs[0], map[string]json.RawMessage{"head_name": raw(v), "notes": raw(v)}); err != nil {
			t.Fatal(err)
		}
	}
	rep := mustSync(t, c)
	if rep.Conflicts != 0 {
		t.Errorf("%d conflicts", rep.Conflicts)
	}
	h := serverHouseholds(t, env)[hs[0]]
	if compact(h.Fields["head_name"]) != `"b"` || compact(h.Fields["notes"]) != `"b"` {
		t.Errorf("server = %s, want the later edit", fieldsJSON(h.Fields))
	}
	assertConverged(t, "device", c, env)
}

// wireCounter counts response bodies as they come off the wire and notes
// their encodings and the request encodings.
type wireCounter struct {
	inner    http.RoundTripper
	bytes    atomic.Int64
	gzipResp atomic.Int32
	gzipReq  atomic.Int32
}

type countBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b countBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (w *wireCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Content-Encoding") == "gzip" {
		w.gzipReq.Add(1)
	}
	resp, err := w.inner.RoundTrip(r)
	if err != nil {
		return resp, err
	}
	if resp.Header.Get("Content-Encoding") == "gzip" {
		w.gzipResp.Add(1)
	}
	resp.Body = countBody{resp.Body, &w.bytes}
	return resp, nil
}

func TestE2E_CompressedOnTheWire(t *testing.T) {
	env := servertest.Start(t)
	u := env.CreateUser(t, "worker1", domain.RoleFieldWorker, "V1")
	importHouseholds(t, env, "G11", "G12", "V1")
	wc := &wireCounter{inner: http.DefaultTransport}
	c := openTest(t, t.TempDir(), env.URL, &Options{HTTPClient: &http.Client{Transport: wc}, Backoff: fastBackoff})
	if err := c.Enroll(context.Background(), env.EnrollCode(t, u.ID), "t"); err != nil {
		t.Fatal(err)
	}
	wc.bytes.Store(0)
	rep := mustSync(t, c)
	if wc.gzipResp.Load() == 0 || wc.gzipReq.Load() == 0 {
		t.Errorf("gzip responses %d, gzip requests %d", wc.gzipResp.Load(), wc.gzipReq.Load())
	}
	if rep.BytesReceived != wc.bytes.Load() {
		t.Errorf("BytesReceived %d, wire %d", rep.BytesReceived, wc.bytes.Load())
	}
	// The forms alone are far larger than what crossed the wire.
	var forms int
	fs, _ := c.Forms()
	for _, f := range fs {
		b, _ := json.Marshal(f)
		forms += len(b)
	}
	if rep.BytesReceived >= int64(forms) {
		t.Errorf("received %d bytes for %d bytes of forms: not compressed?", rep.BytesReceived, forms)
	}
}

// TestEnroll_AnswerLostOnTheWayBack: the server enrolls the device but
// its answer is lost. The device asks again with the same code and the
// token it chose and saved, within the same call (retries) and after the
// app was closed (the code typed again with other dashes and case); it
// becomes the one device the server enrolled, and it syncs. Another device
// database with the same code is refused: the code is spent.
func TestEnroll_AnswerLostOnTheWayBack(t *testing.T) {
	env := servertest.Start(t)
	devicesOf := func(u domain.User) int {
		t.Helper()
		var n int
		if err := env.Store.DB().QueryRow(`SELECT count(*) FROM devices WHERE user_id = ?`, u.ID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	lossy := func(n int32) *dropAnswer {
		l := &dropAnswer{inner: http.DefaultTransport.(*http.Transport).Clone(), path: EnrollPath}
		l.drops.Store(n)
		return l
	}
	enrolledAs := func(c *Client, u domain.User) {
		t.Helper()
		info, err := c.Info()
		if err != nil || !info.Enrolled || info.Username != u.Username {
			t.Fatalf("Info = %+v, %v", info, err)
		}
		var owner int64
		if err := env.Store.DB().QueryRow(`SELECT user_id FROM devices WHERE id = ?`, info.DeviceID).Scan(&owner); err != nil || owner != u.ID {
			t.Fatalf("device %s on the server: user %d (%v), want %d", info.DeviceID, owner, err, u.ID)
		}
		if n := devicesOf(u); n != 1 {
			t.Errorf("%d devices enrolled for %s, want 1", n, u.Username)
		}
		mustSync(t, c)
	}

	// Answers lost within one call: its retries ask again.
	for _, lost := range []int32{1, 2, 3} {
		u := env.CreateUser(t, "wangge_sun"+string(rune('a'+lost)), domain.RoleFieldWorker, "G11")
		l := lossy(lost)
		c := openTest(t, t.TempDir(), env.URL, &Options{Backoff: fastBackoff, HTTPClient: &http.Client{Transport: l}})
		if err := c.Enroll(context.Background(), env.EnrollCode(t, u.ID), "平板"); err != nil {
			t.Fatalf("%d answers lost: enroll: %v", lost, err)
		}
		if got := l.asked.Load(); got != lost+1 {
			t.Errorf("%d answers lost: asked %d times", lost, got)
		}
		enrolledAs(c, u)
	}

	// Every answer of the call lost; the app is closed and opened again.
	u := env.CreateUser(t, "wangge_zhou", domain.RoleFieldWorker, "G11")
	code := env.EnrollCode(t, u.ID)
	dir := t.TempDir()
	c := openTest(t, dir, env.URL, &Options{Backoff: Backoff{Base: time.Millisecond, Max: time.Millisecond, MaxAttempts: 2},
		HTTPClient: &http.Client{Transport: lossy(2)}})
	if err := c.Enroll(context.Background(), code, "平板"); err == nil {
		t.Fatal("enroll with every answer lost succeeded")
	}
	if n := devicesOf(u); n != 1 {
		t.Fatalf("the server enrolled %d devices, want 1", n)
	}
	c.Close()
	c = openTest(t, dir, env.URL, nil)
	if err := c.Enroll(context.Background(), " "+strings.ToLower(strings.ReplaceAll(code, "-", ""))+" ", "平板"); err != nil {
		t.Fatalf("enroll again after the app restarted: %v", err)
	}
	enrolledAs(c, u)

	// Another device database has no token for the code: refused.
	other := openTest(t, t.TempDir(), env.URL, nil)
	var se *syncproto.Error
	if err := other.Enroll(context.Background(), code, "另一台"); !errors.As(err, &se) || se.Code != syncproto.CodeGone {
		t.Errorf("another device with the spent code: %v, want %s", err, syncproto.CodeGone)
	}
	if n := devicesOf(u); n != 1 {
		t.Errorf("%d devices enrolled for %s, want 1", n, u.Username)
	}
}
