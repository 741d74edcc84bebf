package mobileclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"fieldsync/syncproto"
)

func newID() string { return syncproto.NewID(time.Now()) }

func TestOpen_BadOptions(t *testing.T) {
	for _, o := range []Options{{MaxBatch: -1}, {PullBytes: -1}, {MaxPushBytes: -1}, {Backoff: Backoff{MaxAttempts: -1}}} {
		if _, err := Open(t.TempDir(), "", &o); !errors.Is(err, ErrInvalid) {
			t.Errorf("Open(%+v) = %v, want ErrInvalid", o, err)
		}
	}
}

func TestOutbox_SeqAllocation(t *testing.T) {
	dir := t.TempDir()
	c := openTest(t, dir, "", nil)
	hh := newID()
	seed(t, c, hhOp(hh, "G11", 7, map[string]json.RawMessage{"head_name": str("王建国")}))

	if _, err := c.RecordVisit(surveyVisit(hh, "王建国")); err != nil {
		t.Fatal(err)
	}
	if err := c.UpdateHousehold(hh, map[string]json.RawMessage{"notes": str("a")}); err != nil {
		t.Fatal(err)
	}
	created, err := c.CreateHousehold("G12", map[string]json.RawMessage{"head_name": str("李四")})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.MoveHousehold(hh, "G12"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteHousehold(created); err != nil {
		t.Fatal(err)
	}
	ob := outbox(t, c)
	wantKinds := []syncproto.MutationKind{syncproto.KindVisitCreate, syncproto.KindHouseholdUpdate,
		syncproto.KindHouseholdCreate, syncproto.KindHouseholdMove, syncproto.KindHouseholdDelete}
	if len(ob) != len(wantKinds) {
		t.Fatalf("outbox has %d rows, want %d", len(ob), len(wantKinds))
	}
	var lastHLC syncproto.HLC
	for i, e := range ob {
		if e.Seq != int64(i+1) || e.M.Seq != e.Seq {
			t.Errorf("row %d: seq %d (body %d), want %d", i, e.Seq, e.M.Seq, i+1)
		}
		if e.M.Kind != wantKinds[i] {
			t.Errorf("row %d: kind %s, want %s", i, e.M.Kind, wantKinds[i])
		}
		if e.M.HLC.Compare(lastHLC) <= 0 {
			t.Errorf("row %d: hlc %s not after %s", i, e.M.HLC, lastHLC)
		}
		lastHLC = e.M.HLC
		if err := e.M.Check(); err != nil {
			t.Errorf("row %d: %v", i, err)
		}
	}
	if got := ob[1].M.HouseholdUpdate.BaseVersion; got != 7 {
		t.Errorf("update base_version = %d, want 7", got)
	}

	// Answer everything: the outbox empties, but numbers are never reused.
	ack(t, c, syncproto.StatusApplied, 10)
	if n := len(outbox(t, c)); n != 0 {
		t.Fatalf("outbox after ack: %d rows", n)
	}
	c.Close()
	c = openTest(t, dir, "", nil)
	if err := c.UpdateHousehold(hh, map[string]json.RawMessage{"notes": str("b")}); err != nil {
		t.Fatal(err)
	}
	ob = outbox(t, c)
	if len(ob) != 1 || ob[0].Seq != 6 {
		t.Fatalf("after reopen: outbox %+v, want one row with seq 6", ob)
	}
	if ob[0].M.HLC.Compare(lastHLC) <= 0 {
		t.Errorf("hlc after reopen %s not after %s", ob[0].M.HLC, lastHLC)
	}
}

func TestOutbox_ReopenKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	c := openTest(t, dir, "", nil)
	hh := newID()
	seed(t, c, hhOp(hh, "G11", 3, map[string]json.RawMessage{"head_name": str("王建国")}))
	var ids []string
	for i := 0; i < 5; i++ {
		id, err := c.RecordVisit(surveyVisit(hh, "王建国"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	before := outbox(t, c)
	c.Close() // no sync
	c = openTest(t, dir, "", nil)
	after := outbox(t, c)
	if len(after) != len(before) {
		t.Fatalf("outbox %d rows after reopen, want %d", len(after), len(before))
	}
	for i := range after {
		b1, _ := json.Marshal(before[i].M)
		b2, _ := json.Marshal(after[i].M)
		if string(b1) != string(b2) {
			t.Errorf("row %d changed across reopen", i)
		}
	}
	vs, err := c.Visits(hh)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != len(ids) {
		t.Fatalf("%d local visits, want %d", len(vs), len(ids))
	}
	p, err := c.Pending()
	if err != nil {
		t.Fatal(err)
	}
	if p.Mutations != 5 || p.OldestAt.IsZero() {
		t.Errorf("Pending = %+v", p)
	}
}

func TestRecordVisit_Validation(t *testing.T) {
	c := openTest(t, t.TempDir(), "", nil)
	hh := newID()
	seed(t, c, hhOp(hh, "G11", 1, map[string]json.RawMessage{"head_name": str("王建国")}))

	tests := []struct {
		name   string
		mutate func(v *syncproto.Visit)
		is     error
	}{
		{"bad answer", func(v *syncproto.Visit) { v.Answers["members_count"] = str("4") }, ErrInvalid},
		{"missing required", func(v *syncproto.Visit) { delete(v.Answers, "head_name") }, ErrInvalid},
		{"unknown field", func(v *syncproto.Visit) { v.Answers["shoe_size"] = raw("42") }, ErrInvalid},
		{"bad point", func(v *syncproto.Visit) { v.Point = &syncproto.Point{Lon: 200, Lat: 0} }, ErrInvalid},
		{"bad id", func(v *syncproto.Visit) { v.ID = "not-an-id" }, ErrInvalid},
		{"unknown slot", func(v *syncproto.Visit) {
			v.Evidence = []syncproto.EvidenceRef{{SHA256: sha64, Size: 10, MediaType: "image/jpeg", Slot: "selfie"}}
		}, ErrInvalid},
		{"unknown household", func(v *syncproto.Visit) { v.HouseholdID = newID() }, ErrNotFound},
		{"unknown form without version", func(v *syncproto.Visit) { v.FormID, v.FormVersion = "nope", 0 }, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := surveyVisit(hh, "王建国")
			tt.mutate(&v)
			_, err := c.RecordVisit(v)
			if !errors.Is(err, tt.is) {
				t.Fatalf("RecordVisit = %v, want %v", err, tt.is)
			}
		})
	}
	var ve syncproto.ValidationErrors
	v := surveyVisit(hh, "王建国")
	v.Answers["members_count"] = raw("99")
	if _, err := c.RecordVisit(v); !errors.As(err, &ve) || len(ve) != 1 || ve[0].Field != "members_count" {
		t.Errorf("RecordVisit(members_count 99) = %v, want one ValidationErrors entry", err)
	}
	if n := len(outbox(t, c)); n != 0 {
		t.Fatalf("invalid visits queued %d rows", n)
	}
	if n := count(t, c.db, `SELECT count(*) FROM visits`); n != 0 {
		t.Fatalf("invalid visits stored %d rows", n)
	}
	// Version 0 picks the newest local version; an unknown form with a
	// version is left to the server.
	v = surveyVisit(hh, "王建国")
	v.FormVersion = 0
	id, err := c.RecordVisit(v)
	if err != nil {
		t.Fatal(err)
	}
	v = syncproto.Visit{HouseholdID: hh, FormID: "not_here", FormVersion: 3, Answers: map[string]json.RawMessage{"x": raw("1")},
		Point: &syncproto.Point{Lon: 103.15, Lat: 25.15}}
	if _, err := c.RecordVisit(v); err != nil {
		t.Fatalf("unknown form with version: %v", err)
	}
	ob := outbox(t, c)
	if len(ob) != 2 || ob[0].M.Visit.ID != id || ob[0].M.Visit.FormVersion != 1 || ob[0].M.Visit.DeviceTime.IsZero() {
		t.Fatalf("outbox = %+v", ob)
	}
	if _, err := c.RecordVisit(syncproto.Visit{ID: id, HouseholdID: hh, FormID: "household_survey", FormVersion: 1, Answers: surveyAnswers("x")}); !errors.Is(err, ErrInvalid) {
		t.Errorf("same visit id twice = %v, want ErrInvalid", err)
	}
}

// TestRecordVisit_WarnsOnWeakGPS: a visit without a point, or less
// accurate than its form allows (household_survey: 50 m), is refused
// with a GPSWarning and nothing queued, until the caller acknowledges it
// with AcceptNoGPS; the reason then travels with the visit. An accurate
// fix needs no acknowledgement; an unknown form warns only without a
// point; a reason over the bound is invalid.
func TestRecordVisit_WarnsOnWeakGPS(t *testing.T) {
	c := openTest(t, t.TempDir(), "", nil)
	hh := newID()
	seed(t, c, hhOp(hh, "G11", 1, map[string]json.RawMessage{"head_name": str("王建国")}))
	tests := []struct {
		name   string
		mutate func(*syncproto.Visit)
		noFix  bool
		limit  float64
	}{
		{"no point", func(v *syncproto.Visit) { v.Point, v.AccuracyM = nil, 0 }, true, 50},
		{"beyond the limit", func(v *syncproto.Visit) { v.AccuracyM = 50.01 }, false, 50},
		{"far beyond", func(v *syncproto.Visit) { v.AccuracyM = 2000 }, false, 50},
		{"unknown form, no point", func(v *syncproto.Visit) { v.FormID, v.FormVersion, v.Point = "not_here", 3, nil }, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(outbox(t, c))
			v := surveyVisit(hh, "王建国")
			tt.mutate(&v)
			_, err := c.RecordVisit(v)
			var w *GPSWarning
			if !errors.Is(err, ErrWeakGPS) || !errors.As(err, &w) || w.NoFix != tt.noFix || w.LimitM != tt.limit {
				t.Fatalf("RecordVisit = %v (%+v), want a GPSWarning", err, w)
			}
			if n := len(outbox(t, c)); n != before {
				t.Fatalf("a warned visit queued %d rows", n-before)
			}
			id, err := c.RecordVisit(v, AcceptNoGPS("  山谷里没有信号 "))
			if err != nil {
				t.Fatalf("acknowledged: %v", err)
			}
			ob := outbox(t, c)
			if last := ob[len(ob)-1].M.Visit; last.ID != id || last.GPSReason != "山谷里没有信号" {
				t.Fatalf("queued %+v", last)
			}
		})
	}
	// Acknowledged without a reason; or with the reason already on the visit.
	v := surveyVisit(hh, "王建国")
	v.Point = nil
	if _, err := c.RecordVisit(v, AcceptNoGPS("")); err != nil {
		t.Errorf("acknowledged without a reason: %v", err)
	}
	v.GPSReason = "室内无信号"
	if _, err := c.RecordVisit(v); err != nil {
		t.Errorf("with a stated reason: %v", err)
	}
	// At the limit, or with an unknown accuracy: no warning.
	for _, acc := range []float64{0, 8, 50} {
		v := surveyVisit(hh, "王建国")
		v.AccuracyM = acc
		if _, err := c.RecordVisit(v); err != nil {
			t.Errorf("accuracy %g: %v", acc, err)
		}
	}
	before := len(outbox(t, c))
	v = surveyVisit(hh, "王建国")
	v.Point = nil
	if _, err := c.RecordVisit(v, AcceptNoGPS(strings.Repeat("信", syncproto.MaxGPSReasonRunes+1))); !errors.Is(err, ErrInvalid) {
		t.Errorf("reason over the bound: %v, want ErrInvalid", err)
	}
	if n := len(outbox(t, c)); n != before {
		t.Errorf("an invalid visit queued %d rows", n-before)
	}
}

const sha64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// TestRecordVisit_RoundsPosition: a phone's GPS reading is kept to 7
// decimals (about 1 cm) and its accuracy to 1 cm, in the outbox and the
// local copy alike; the caller's visit is not changed.
func TestRecordVisit_RoundsPosition(t *testing.T) {
	c := openTest(t, t.TempDir(), "", nil)
	hh := newID()
	seed(t, c, hhOp(hh, "G11", 1, map[string]json.RawMessage{"head_name": str("王建国")}))
	v := surveyVisit(hh, "王建国")
	p := syncproto.Point{Lon: 103.70436123456789, Lat: 25.00169349999999}
	v.Point, v.AccuracyM = &p, float64(float32(8.7))
	id, err := c.RecordVisit(v)
	if err != nil {
		t.Fatal(err)
	}
	want := syncproto.Point{Lon: 103.7043612, Lat: 25.0016935}
	ob := outbox(t, c)
	if got := ob[0].M.Visit; *got.Point != want || got.AccuracyM != 8.7 {
		t.Errorf("queued %+v ± %v, want %+v ± 8.7", *got.Point, got.AccuracyM, want)
	}
	var body string
	if err := c.db.QueryRow(`SELECT body FROM visits WHERE id = ?`, id).Scan(&body); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, `"point":{"lon":103.7043612,"lat":25.0016935},"accuracy_m":8.7,`) {
		t.Errorf("local copy %s", body)
	}
	if p.Lon != 103.70436123456789 || v.Point != &p {
		t.Error("the caller's visit changed")
	}
}

func TestHouseholdWrites_Validation(t *testing.T) {
	c := openTest(t, t.TempDir(), "", nil)
	hh := newID()
	seed(t, c, hhOp(hh, "G11", 1, map[string]json.RawMessage{"head_name": str("王建国")}))
	if _, err := c.CreateHousehold("NOPE", map[string]json.RawMessage{"head_name": str("x")}); !errors.Is(err, ErrNotFound) {
		t.Errorf("create in unknown place = %v", err)
	}
	if _, err := c.CreateHousehold("G11", map[string]json.RawMessage{"Bad Name": str("x")}); !errors.Is(err, ErrInvalid) {
		t.Errorf("create with bad field = %v", err)
	}
	if err := c.UpdateHousehold(hh, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("update without fields = %v", err)
	}
	if err := c.UpdateHousehold(hh, map[string]json.RawMessage{"location": raw(`{"lon":500,"lat":1}`)}); !errors.Is(err, ErrInvalid) {
		t.Errorf("update with bad location = %v", err)
	}
	if err := c.UpdateHousehold(newID(), map[string]json.RawMessage{"notes": str("x")}); !errors.Is(err, ErrNotFound) {
		t.Errorf("update unknown = %v", err)
	}
	if err := c.MoveHousehold(hh, "NOPE"); !errors.Is(err, ErrNotFound) {
		t.Errorf("move to unknown place = %v", err)
	}
	if err := c.MoveHousehold(hh, "G11"); err != nil {
		t.Errorf("move to same place = %v", err)
	}
	if n := len(outbox(t, c)); n != 0 {
		t.Fatalf("refused writes queued %d rows", n)
	}
	if err := c.DeleteHousehold(hh); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Household(hh); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted household still visible: %v", err)
	}
	if err := c.UpdateHousehold(hh, map[string]json.RawMessage{"notes": str("x")}); !errors.Is(err, ErrNotFound) {
		t.Errorf("update deleted = %v", err)
	}
}

func TestLocalView_UnpushedEditsSurvivePull(t *testing.T) {
	c := openTest(t, t.TempDir(), "", nil)
	hh := newID()
	seed(t, c, hhOp(hh, "G11", 5, map[string]json.RawMessage{"head_name": str("王建国"), "phone": str("1"), "notes": str("old")}))

	if err := c.UpdateHousehold(hh, map[string]json.RawMessage{"notes": str("mine"), "phone": raw("null")}); err != nil {
		t.Fatal(err)
	}
	h := mustHousehold(t, c, hh)
	fieldEq(t, h, "notes", `"mine"`)
	fieldEq(t, h, "phone", "")
	if h.Version != 5 {
		t.Errorf("version = %d, want 5", h.Version)
	}

	// A pull brings a newer server copy: other fields change, the unpushed
	// edit stays on top.
	page(t, c, "c2", hhOp(hh, "G11", 9, map[string]json.RawMessage{"head_name": str("王建国"), "phone": str("2"), "notes": str("theirs"), "wubao": str("yes")}))
	h = mustHousehold(t, c, hh)
	fieldEq(t, h, "head_name", `"王建国"`)
	fieldEq(t, h, "wubao", `"yes"`)
	fieldEq(t, h, "notes", `"mine"`)
	fieldEq(t, h, "phone", "")
	if h.Version != 9 {
		t.Errorf("version = %d, want 9", h.Version)
	}
	// The outbox keeps the base the edit was made on.
	if ob := outbox(t, c); len(ob) != 1 || ob[0].M.HouseholdUpdate.BaseVersion != 5 {
		t.Fatalf("outbox = %+v", ob)
	}
	// A further edit starts from the newer version.
	if err := c.MoveHousehold(hh, "G12"); err != nil {
		t.Fatal(err)
	}
	if ob := outbox(t, c); ob[1].M.HouseholdMove.BaseVersion != 9 {
		t.Errorf("move base = %d, want 9", ob[1].M.HouseholdMove.BaseVersion)
	}
	if hs, _ := c.Households("G12"); len(hs) != 1 {
		t.Errorf("Households(G12) = %v", hs)
	}
	if hs, _ := c.Households("V1"); len(hs) != 1 {
		t.Errorf("Households(V1) (descendants) = %v", hs)
	}
	if hs, _ := c.Households("G11"); len(hs) != 0 {
		t.Errorf("Households(G11) = %v", hs)
	}

	// Applied: the edits keep showing until a pull brings their version.
	ack(t, c, syncproto.StatusApplied, 10) // update → v10, move → v11
	h = mustHousehold(t, c, hh)
	fieldEq(t, h, "notes", `"mine"`)
	if h.PlaceCode != "G12" {
		t.Errorf("place after ack = %s, want G12", h.PlaceCode)
	}
	// A pull of version 10 (the update) but not 11: the move still shows.
	page(t, c, "c3", hhOp(hh, "G11", 10, map[string]json.RawMessage{"head_name": str("王建国"), "notes": str("mine")}))
	h = mustHousehold(t, c, hh)
	if h.PlaceCode != "G12" {
		t.Errorf("place after pull of v10 = %s, want G12 (overlay)", h.PlaceCode)
	}
	// The server's copy at 11 has the other worker's later notes: the
	// server wins now that nothing is pending.
	page(t, c, "c4", hhOp(hh, "G12", 11, map[string]json.RawMessage{"head_name": str("王建国"), "notes": str("merged")}))
	h = mustHousehold(t, c, hh)
	fieldEq(t, h, "notes", `"merged"`)
	if n := count(t, c.db, `SELECT count(*) FROM results WHERE overlay = 1`); n != 0 {
		t.Errorf("%d overlays left", n)
	}
}

func TestLocalView_CreatedHousehold(t *testing.T) {
	c := openTest(t, t.TempDir(), "", nil)
	seed(t, c)
	id, err := c.CreateHousehold("G11", map[string]json.RawMessage{"head_name": str("李四"), "notes": raw("null")})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.UpdateHousehold(id, map[string]json.RawMessage{"phone": str("138")}); err != nil {
		t.Fatal(err)
	}
	h := mustHousehold(t, c, id)
	fieldEq(t, h, "head_name", `"李四"`)
	fieldEq(t, h, "phone", `"138"`)
	fieldEq(t, h, "notes", "")
	if h.Version != 0 {
		t.Errorf("version of unacknowledged household = %d", h.Version)
	}
	if n := count(t, c.db, `SELECT count(*) FROM households WHERE id = ? AND local_only = 1`, id); n != 1 {
		t.Fatalf("new household not local_only")
	}
	// A pull that knows nothing of it leaves it alone, a reset too.
	page(t, c, "c2", syncproto.Op{Op: syncproto.OpReset})
	h = mustHousehold(t, c, id)
	fieldEq(t, h, "phone", `"138"`)

	// Acknowledged: the creation becomes the base at the answered version.
	ack(t, c, syncproto.StatusApplied, 20) // create → v20, update → v21
	h = mustHousehold(t, c, id)
	fieldEq(t, h, "phone", `"138"`)
	if h.Version != 20 {
		t.Errorf("version after ack = %d, want 20", h.Version)
	}
	if n := count(t, c.db, `SELECT count(*) FROM households WHERE id = ? AND local_only = 0 AND has_base = 1`, id); n != 1 {
		t.Errorf("acknowledged household still local_only or without base")
	}
}

func TestLocalView_RejectedCreationDisappears(t *testing.T) {
	c := openTest(t, t.TempDir(), "", nil)
	hh := newID()
	seed(t, c, hhOp(hh, "G11", 1, map[string]json.RawMessage{"head_name": str("王建国")}))
	id, err := c.CreateHousehold("G11", map[string]json.RawMessage{"head_name": str("李四")})
	if err != nil {
		t.Fatal(err)
	}
	vid, err := c.RecordVisit(surveyVisit(hh, "王建国"))
	if err != nil {
		t.Fatal(err)
	}
	rep := ack(t, c, syncproto.StatusRejected, 0)
	if rep.Pushed != 2 || rep.Rejected != 2 || len(rep.Rejections) != 2 {
		t.Fatalf("report = %+v", rep)
	}
	if _, err := c.Household(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("rejected household still shown: %v", err)
	}
	if vs, _ := c.Visits(hh); len(vs) != 0 {
		t.Errorf("rejected visit still shown: %v", vs)
	}
	rj, err := c.Rejections()
	if err != nil {
		t.Fatal(err)
	}
	if len(rj) != 2 || rj[0].Code != string(syncproto.CodeValidation) || rj[1].EntityID != vid || rj[0].Mutation == "" {
		t.Fatalf("Rejections = %+v", rj)
	}
	if err := c.DismissRejection(rj[0].Seq); err != nil {
		t.Fatal(err)
	}
	if rj, _ := c.Rejections(); len(rj) != 1 {
		t.Errorf("after dismiss: %d rejections", len(rj))
	}
	if err := c.DismissRejection(999); !errors.Is(err, ErrNotFound) {
		t.Errorf("dismiss unknown = %v", err)
	}
}

func TestApply_ScopeLeaveKeepsOutbox(t *testing.T) {
	c := openTest(t, t.TempDir(), "", nil)
	h11, h12, h21 := newID(), newID(), newID()
	seed(t, c,
		hhOp(h11, "G11", 1, map[string]json.RawMessage{"head_name": str("a")}),
		hhOp(h12, "V1", 2, map[string]json.RawMessage{"head_name": str("b")}),
		hhOp(h21, "G21", 3, map[string]json.RawMessage{"head_name": str("c")}),
	)
	vPulled := syncproto.Visit{ID: newID(), HouseholdID: h11, FormID: "household_survey", FormVersion: 1, PlaceCode: "G11", DeviceTime: time.Now()}
	vOther := syncproto.Visit{ID: newID(), HouseholdID: h21, FormID: "household_survey", FormVersion: 1, PlaceCode: "G21", DeviceTime: time.Now()}
	page(t, c, "c2",
		syncproto.Op{Op: syncproto.OpPut, Type: syncproto.EntityVisit, ID: vPulled.ID, Place: "G11", Visit: &vPulled},
		syncproto.Op{Op: syncproto.OpPut, Type: syncproto.EntityVisit, ID: vOther.ID, Place: "G21", Visit: &vOther},
		syncproto.Op{Op: syncproto.OpPut, Type: syncproto.EntityConflict, ID: "c-1", Place: "G11",
			Conflict: &syncproto.Conflict{ID: "c-1", HouseholdID: h11, Field: "notes", State: "open"}},
		syncproto.Op{Op: syncproto.OpPut, Type: syncproto.EntityTask, ID: "t-1", Place: "G11",
			Task: &syncproto.Task{ID: "t-1", Kind: "rework", VisitID: vPulled.ID, HouseholdID: h11, State: "open"}},
		syncproto.Op{Op: syncproto.OpPut, Type: syncproto.EntityTask, ID: "t-2", Place: "G21",
			Task: &syncproto.Task{ID: "t-2", Kind: "rework", VisitID: vOther.ID, HouseholdID: h21, State: "open"}},
	)
	// Unpushed work under V1: an edit, a visit, a new household.
	if err := c.UpdateHousehold(h11, map[string]json.RawMessage{"notes": str("unpushed")}); err != nil {
		t.Fatal(err)
	}
	myVisit, err := c.RecordVisit(surveyVisit(h12, "b"))
	if err != nil {
		t.Fatal(err)
	}
	mine, err := c.CreateHousehold("G12", map[string]json.RawMessage{"head_name": str("new")})
	if err != nil {
		t.Fatal(err)
	}
	before := outbox(t, c)

	var rep SyncReport
	if err := c.applyPage(context.Background(), &syncproto.PullResponse{Ops: []syncproto.Op{{Op: syncproto.OpScopeLeave, Place: "V1"}}, Cursor: "c3"}, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.ScopeLeft != 1 {
		t.Errorf("ScopeLeft = %d", rep.ScopeLeft)
	}
	ps, _ := c.Places()
	var codes []string
	for _, p := range ps {
		codes = append(codes, p.Code)
	}
	if want := "C1 G21 T1 V2"; join(codes) != want {
		t.Errorf("places after leave = %s, want %s", join(codes), want)
	}
	hs, _ := c.Households("")
	var ids []string
	for _, h := range hs {
		ids = append(ids, h.ID)
	}
	if want := join(sorted(h21, mine)); join(ids) != want {
		t.Errorf("households after leave = %s, want %s (the unacknowledged one stays)", join(ids), want)
	}
	if vs, _ := c.Visits(h11); len(vs) != 0 {
		t.Errorf("pulled visit under V1 kept")
	}
	if vs, _ := c.Visits(h12); len(vs) != 1 || vs[0].ID != myVisit {
		t.Errorf("own unacknowledged visit dropped: %v", vs)
	}
	if vs, _ := c.Visits(h21); len(vs) != 1 {
		t.Errorf("visit under V2 dropped")
	}
	if cs, _ := c.Conflicts(); len(cs) != 0 {
		t.Errorf("conflicts = %v", cs)
	}
	if ts, _ := c.Tasks(); len(ts) != 1 || ts[0].ID != "t-2" {
		t.Errorf("tasks = %v", ts)
	}
	after := outbox(t, c)
	if len(after) != len(before) {
		t.Fatalf("scope_leave touched the outbox: %d rows, want %d", len(after), len(before))
	}
	if err := c.UpdateHousehold(h11, map[string]json.RawMessage{"notes": str("again")}); !errors.Is(err, ErrNotFound) {
		t.Errorf("edit of a household out of scope = %v, want ErrNotFound", err)
	}
	// When V1 comes back, the unpushed edit shows again on the new copy.
	page(t, c, "c4", append(placeOps(fixturePlaces()[2:3]), hhOp(h11, "G11", 4, map[string]json.RawMessage{"head_name": str("a")}))...)
	fieldEq(t, mustHousehold(t, c, h11), "notes", `"unpushed"`)
}

func TestApply_ResetThenContinue(t *testing.T) {
	c := openTest(t, t.TempDir(), "", nil)
	h1, h2 := newID(), newID()
	seed(t, c,
		hhOp(h1, "G11", 1, map[string]json.RawMessage{"head_name": str("a")}),
		hhOp(h2, "G21", 2, map[string]json.RawMessage{"head_name": str("b")}),
	)
	if err := c.UpdateHousehold(h1, map[string]json.RawMessage{"notes": str("unpushed")}); err != nil {
		t.Fatal(err)
	}
	vid, err := c.RecordVisit(surveyVisit(h1, "a"))
	if err != nil {
		t.Fatal(err)
	}
	mine, err := c.CreateHousehold("G11", map[string]json.RawMessage{"head_name": str("new")})
	if err != nil {
		t.Fatal(err)
	}
	// One earlier answered mutation: results survive a reset.
	if _, err := c.db.Exec(`INSERT INTO results(seq, kind, status, body, queued_at, answered_at) VALUES (0, 'visit.create', 'rejected', '{}', '', '')`); err != nil {
		t.Fatal(err)
	}
	before := outbox(t, c)

	// reset, then the fresh copy in the same page: only V1 now.
	ops := []syncproto.Op{{Op: syncproto.OpReset}}
	ops = append(ops, placeOps(fixturePlaces()[:3])...)
	ops = append(ops, formOps()[:1]...)
	ops = append(ops, hhOp(h1, "G11", 5, map[string]json.RawMessage{"head_name": str("a2")}))
	var rep SyncReport
	if err := c.applyPage(context.Background(), &syncproto.PullResponse{Ops: ops, Cursor: "fresh"}, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Resets != 1 {
		t.Errorf("Resets = %d", rep.Resets)
	}
	if ps, _ := c.Places(); len(ps) != 3 {
		t.Errorf("%d places after reset, want 3", len(ps))
	}
	if fs, _ := c.Forms(); len(fs) != 1 {
		t.Errorf("%d forms after reset, want 1", len(fs))
	}
	hs, _ := c.Households("")
	if len(hs) != 2 {
		t.Fatalf("households after reset = %v", hs)
	}
	h := mustHousehold(t, c, h1)
	fieldEq(t, h, "head_name", `"a2"`)
	fieldEq(t, h, "notes", `"unpushed"`)
	mustHousehold(t, c, mine)
	if _, err := c.Household(h2); !errors.Is(err, ErrNotFound) {
		t.Errorf("household not in the fresh copy kept: %v", err)
	}
	if vs, _ := c.Visits(h1); len(vs) != 1 || vs[0].ID != vid {
		t.Errorf("own unacknowledged visit lost in reset: %v", vs)
	}
	if after := outbox(t, c); len(after) != len(before) {
		t.Errorf("reset touched the outbox")
	}
	if n := count(t, c.db, `SELECT count(*) FROM results`); n != 1 {
		t.Errorf("reset touched results: %d rows", n)
	}
	if cur, _, _ := getMeta(context.Background(), c.db, metaCursor); cur != "fresh" {
		t.Errorf("cursor = %q", cur)
	}
}

func TestApply_BadOpRollsBackPage(t *testing.T) {
	c := openTest(t, t.TempDir(), "", nil)
	seed(t, c)
	h := newID()
	err := c.applyPage(context.Background(), &syncproto.PullResponse{Cursor: "next", Ops: []syncproto.Op{
		hhOp(h, "G11", 1, map[string]json.RawMessage{"head_name": str("a")}),
		{Op: syncproto.OpPut, Type: syncproto.EntityVisit, ID: newID()}, // no payload
	}}, &SyncReport{})
	if !errors.Is(err, ErrServer) {
		t.Fatalf("applyPage = %v, want ErrServer", err)
	}
	if _, err := c.Household(h); !errors.Is(err, ErrNotFound) {
		t.Errorf("part of a refused page was applied")
	}
	if cur, _, _ := getMeta(context.Background(), c.db, metaCursor); cur != "c-seed" {
		t.Errorf("cursor = %q, want the previous one", cur)
	}
	// Unknown op kinds and entity types are ignored.
	page(t, c, "c5", syncproto.Op{Op: "teleport"}, syncproto.Op{Op: syncproto.OpPut, Type: "spaceship", ID: "x"},
		syncproto.Op{Op: syncproto.OpScopeEnter, Place: "V1"})
}

func TestApply_Deletes(t *testing.T) {
	c := openTest(t, t.TempDir(), "", nil)
	h1 := newID()
	seed(t, c, hhOp(h1, "G11", 1, map[string]json.RawMessage{"head_name": str("a")}))
	if err := c.UpdateHousehold(h1, map[string]json.RawMessage{"notes": str("x")}); err != nil {
		t.Fatal(err)
	}
	page(t, c, "c2",
		syncproto.Op{Op: syncproto.OpDelete, Type: syncproto.EntityHousehold, ID: h1},
		syncproto.Op{Op: syncproto.OpDelete, Type: syncproto.EntityForm, ID: "water_cellar_progress@1"},
		syncproto.Op{Op: syncproto.OpDelete, Type: syncproto.EntityPlace, ID: "G12"},
	)
	if _, err := c.Household(h1); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted household shown")
	}
	if len(outbox(t, c)) != 1 {
		t.Errorf("delete op touched the outbox")
	}
	if fs, _ := c.Forms(); len(fs) != 3 {
		t.Errorf("%d forms", len(fs))
	}
	if _, err := c.Form("water_cellar_progress", 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("Form(deleted) = %v", err)
	}
	if f, err := c.Form("household_survey", 0); err != nil || f.Version != 1 {
		t.Errorf("Form(household_survey) = %v, %v", f.Version, err)
	}
	if ps, _ := c.Places(); len(ps) != 6 {
		t.Errorf("%d places", len(ps))
	}
}

func TestHLC_NeverGoesBackAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	future := time.Now().Add(48 * time.Hour)
	c := openTest(t, dir, "", &Options{Now: func() time.Time { return future }})
	hh := newID()
	seed(t, c, hhOp(hh, "G11", 1, map[string]json.RawMessage{"head_name": str("a")}))
	if err := c.UpdateHousehold(hh, map[string]json.RawMessage{"notes": str("1")}); err != nil {
		t.Fatal(err)
	}
	first := outbox(t, c)[0].M.HLC
	c.Close()
	// The clock was fixed back by two days.
	c = openTest(t, dir, "", &Options{Now: func() time.Time { return time.Now() }})
	if err := c.UpdateHousehold(hh, map[string]json.RawMessage{"notes": str("2")}); err != nil {
		t.Fatal(err)
	}
	second := outbox(t, c)[1].M.HLC
	if second.Compare(first) <= 0 {
		t.Fatalf("hlc went back: %s then %s", first, second)
	}
	// A server HLC ahead of the device moves the clock forward, persisted.
	server := syncproto.HLC{WallMs: future.Add(time.Hour).UnixMilli(), Counter: 3}
	var rep SyncReport
	if err := c.applyPage(context.Background(), &syncproto.PullResponse{Cursor: "x", ServerHLC: server}, &rep); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c = openTest(t, dir, "", nil)
	if err := c.UpdateHousehold(hh, map[string]json.RawMessage{"notes": str("3")}); err != nil {
		t.Fatal(err)
	}
	if third := outbox(t, c)[2].M.HLC; third.Compare(server) <= 0 {
		t.Fatalf("hlc %s not after observed server hlc %s", third, server)
	}
}

func TestConcurrentWrites_SeqsContiguous(t *testing.T) {
	c := openTest(t, t.TempDir(), "", nil)
	hh := newID()
	seed(t, c, hhOp(hh, "G11", 1, map[string]json.RawMessage{"head_name": str("a")}))
	const workers, each = 4, 10
	errc := make(chan error, workers)
	for w := 0; w < workers; w++ {
		go func() {
			for i := 0; i < each; i++ {
				if _, err := c.RecordVisit(surveyVisit(hh, "a")); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for w := 0; w < workers; w++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	ob := outbox(t, c)
	if len(ob) != workers*each {
		t.Fatalf("%d rows", len(ob))
	}
	for i, e := range ob {
		if e.Seq != int64(i+1) {
			t.Fatalf("row %d has seq %d", i, e.Seq)
		}
		if i > 0 && e.M.HLC.Compare(ob[i-1].M.HLC) <= 0 {
			t.Fatalf("hlc not increasing with seq at %d", i)
		}
	}
}

// TestApply_BatchedHouseholdsKeepPageOrder: household puts are written in
// batches, yet every op of a page takes effect in page order: a delete or
// a scope_leave after a put removes it, a later put of the same household
// wins, and a page longer than one batch is applied whole.
func TestApply_BatchedHouseholdsKeepPageOrder(t *testing.T) {
	c := openTest(t, t.TempDir(), "", nil)
	seed(t, c)
	h1, h2, h3 := newID(), newID(), newID()
	var many []syncproto.Op
	var manyIDs []string
	for i := 0; i < householdBatch+7; i++ {
		id := newID()
		manyIDs = append(manyIDs, id)
		many = append(many, hhOp(id, "G11", 1, map[string]json.RawMessage{"head_name": str(fmt.Sprint("户主", i))}))
	}
	ops := []syncproto.Op{
		hhOp(h1, "G11", 1, map[string]json.RawMessage{"head_name": str("a")}),
		{Op: syncproto.OpDelete, Type: syncproto.EntityHousehold, ID: h1},
		hhOp(h2, "G11", 1, map[string]json.RawMessage{"head_name": str("old")}),
		hhOp(h2, "G11", 2, map[string]json.RawMessage{"head_name": str("new")}),
		hhOp(h3, "G21", 1, map[string]json.RawMessage{"head_name": str("c")}),
		{Op: syncproto.OpScopeLeave, Place: "V2"},
	}
	page(t, c, "c2", append(ops, many...)...)
	if _, err := c.Household(h1); !errors.Is(err, ErrNotFound) {
		t.Errorf("household put then deleted in one page: %v, want ErrNotFound", err)
	}
	if h := mustHousehold(t, c, h2); string(h.Fields["head_name"]) != `"new"` || h.Version != 2 {
		t.Errorf("household put twice = %s v%d, want the later put", h.Fields["head_name"], h.Version)
	}
	if _, err := c.Household(h3); !errors.Is(err, ErrNotFound) {
		t.Errorf("household put then left with its place: %v, want ErrNotFound", err)
	}
	for i, id := range manyIDs {
		if h := mustHousehold(t, c, id); string(h.Fields["head_name"]) != string(str(fmt.Sprint("户主", i))) {
			t.Fatalf("household %d of a long page = %s", i, h.Fields["head_name"])
		}
	}
}
