package sqlstore_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/server/sqlstore"
	"fieldsync/syncproto"
)

// conFixture is the servertest tree with households, visits, evidence,
// flags, a conflict and two field workers, at a fixed "now".
type conFixture struct {
	env        *servertest.Env
	raw        *sql.DB // a second writer connection for direct inserts
	monthFrom  time.Time
	monthTo    time.Time
	hh         map[string]string // name -> household id
	visits     map[string]string // name -> visit id
	w1, w2     domain.User
	lastMonthV string
}

func conJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func conSHA(c byte) string { return strings.Repeat(string(c), 64) }

func newConFixture(t *testing.T) *conFixture {
	t.Helper()
	ctx := context.Background()
	env := servertest.Start(t)
	raw := env.RawDB(t)
	f := &conFixture{env: env, raw: raw, hh: map[string]string{}, visits: map[string]string{},
		monthFrom: time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC), monthTo: time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)}
	f.w1 = env.CreateUser(t, "w1", domain.RoleFieldWorker, "G11", "G12")
	f.w2 = env.CreateUser(t, "w2", domain.RoleFieldWorker, "G21")
	env.CreateUser(t, "sup", domain.RoleSupervisor, "T1")
	add := func(name, place string, lon, lat float64) {
		id := syncproto.NewID(time.Now())
		f.hh[name] = id
		env.AddHouseholds(t, syncproto.Household{ID: id, PlaceCode: place, Fields: map[string]json.RawMessage{
			"head_name": conJSON(name), "location": conJSON(syncproto.Point{Lon: lon, Lat: lat}), "id_card_no": conJSON("530102199001011234"),
		}})
	}
	add("张三", "G11", 103.12, 25.12)
	add("李四", "G11", 103.13, 25.13)
	add("王五", "G11", 103.14, 25.14)
	add("赵六", "G12", 103.22, 25.12)
	add("钱七", "G12", 103.23, 25.13)
	add("孙八", "G21", 103.37, 25.12)

	retrofit := func(head string) map[string]json.RawMessage {
		return map[string]json.RawMessage{"head_name": conJSON(head), "house_grade": conJSON("C"), "retrofit_finished": conJSON("yes"),
			"inspection_round": conJSON("first"), "inspection_result": conJSON("pass"), "plaque_installed": conJSON("yes"),
			"inspection_date": conJSON("2024-05-03")}
	}
	water := map[string]json.RawMessage{"site_name": conJSON("水窖一号"), "capacity_m3": conJSON(24), "stage": conJSON("built"), "due_date": conJSON("2024-11-30")}
	at := func(day int) time.Time { return time.Date(2024, 5, day, 3, 0, 0, 0, time.UTC) }
	var ivs []sqlstore.ImportedVisit
	visit := func(name, hh, form string, ans map[string]json.RawMessage, when time.Time, user int64, state string, ev ...syncproto.EvidenceRef) {
		id := syncproto.NewID(when)
		f.visits[name] = id
		iv := sqlstore.ImportedVisit{UserID: user, State: state, Visit: syncproto.Visit{ID: id, HouseholdID: f.hh[hh], FormID: form, FormVersion: 1,
			Answers: ans, Point: &syncproto.Point{Lon: 103.12, Lat: 25.12}, AccuracyM: 12, DeviceTime: when, Evidence: ev}}
		if state == domain.StateNeedsRework {
			iv.TaskReason = "缺少改造后照片"
		}
		ivs = append(ivs, iv)
	}
	ref := func(slot string, c byte) syncproto.EvidenceRef {
		return syncproto.EvidenceRef{Slot: slot, SHA256: conSHA(c), Size: 10, MediaType: "image/jpeg"}
	}
	// Complete: before, after, certificate all present.
	visit("complete", "张三", "house_retrofit_inspection", retrofit("张三"), at(3), f.w1.ID, domain.StateApproved, ref("before", 'a'), ref("after", 'b'), ref("certificate", 'c'))
	// Incomplete: "after" referenced but not uploaded, no certificate.
	visit("incomplete", "张三", "house_retrofit_inspection", retrofit("张三"), at(4), f.w1.ID, domain.StateNeedsRework, ref("before", 'a'), ref("after", 'd'))
	visit("water", "李四", "water_cellar_progress", water, at(5), f.w1.ID, "", ref("progress", 'e'))
	visit("rejected", "赵六", "water_cellar_progress", water, at(6), f.w1.ID, domain.StateRejected)
	visit("other", "孙八", "water_cellar_progress", water, at(7), f.w2.ID, "", ref("progress", 'f'))
	visit("lastmonth", "钱七", "water_cellar_progress", water, time.Date(2024, 4, 20, 3, 0, 0, 0, time.UTC), f.w1.ID, "")
	if err := env.Store.ImportVisits(ctx, ivs); err != nil {
		t.Fatalf("import visits: %v", err)
	}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := raw.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for _, c := range "abcf" {
		exec(`INSERT INTO blobs(sha256, size, media_type, stored_at, exif_lon, exif_lat) VALUES (?, 10, 'image/jpeg', '2024-05-03T00:00:00Z', 103.2, 25.2)`, conSHA(byte(c)))
	}
	exec(`UPDATE visit_evidence SET held = 1`) // their devices uploaded them
	exec(`INSERT INTO evidence_flags(visit_id, sha256, flag, detail, created_at) VALUES (?, ?, 'gps_far_from_visit', '2.1 km', '2024-05-05T00:00:00Z')`, f.visits["water"], conSHA('e'))
	exec(`INSERT INTO evidence_flags(visit_id, sha256, flag, detail, created_at) VALUES (?, '', 'poor_gps_accuracy', '80 m', '2024-05-05T00:00:00Z')`, f.visits["water"])
	exec(`INSERT INTO evidence_flags(visit_id, sha256, flag, detail, created_at) VALUES (?, '', 'poor_gps_accuracy', '80 m', '2024-05-05T00:00:00Z')`, f.visits["rejected"])
	exec(`INSERT INTO conflicts(id, household_id, place_code, field, losing_hlc, state, created_at) VALUES ('c1', ?, 'G12', 'head_name', '1', 'open', '2024-05-05T00:00:00Z')`, f.hh["赵六"])
	exec(`INSERT INTO conflicts(id, household_id, place_code, field, losing_hlc, state, created_at) VALUES ('c2', ?, 'G12', 'head_name', '1', 'resolved', '2024-05-05T00:00:00Z')`, f.hh["赵六"])
	return f
}

func conProgressOf(t *testing.T, ps []sqlstore.PlaceProgress, code string) sqlstore.PlaceProgress {
	t.Helper()
	for _, p := range ps {
		if p.Place.Code == code {
			return p
		}
	}
	t.Fatalf("no progress for %s", code)
	return sqlstore.PlaceProgress{}
}

func TestConsoleProgress_RollsUpTheSubtree(t *testing.T) {
	f := newConFixture(t)
	ps, err := f.env.Store.ConsoleProgress(context.Background(), "T1", f.monthFrom, f.monthTo)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 6 || ps[0].Place.Code != "T1" || ps[0].Depth != 0 {
		t.Fatalf("want T1 and its 5 descendants in tree order, got %d rows starting %s", len(ps), ps[0].Place.Code)
	}
	g11 := conProgressOf(t, ps, "G11")
	want := sqlstore.PlaceProgress{Households: 3, VisitedThisMonth: 2, VisitsThisMonth: 3, Cadres: 1, Target: 4, Visits: 3,
		EvidenceVisits: 3, EvidenceComplete: 1, Submitted: 1, NeedsRework: 1, Approved: 1, Flagged: 1, OpenRework: 1, EvidenceGaps: 2}
	g11.Place, want.Depth = domain.Place{}, 2
	if !reflect.DeepEqual(g11, want) {
		t.Errorf("G11:\n got %+v\nwant %+v", g11, want)
	}
	g12 := conProgressOf(t, ps, "G12")
	if g12.Households != 2 || g12.OpenConflicts != 1 || g12.Rejected != 1 || g12.VisitsThisMonth != 1 || g12.VisitedThisMonth != 1 ||
		g12.EvidenceVisits != 1 || g12.Flagged != 0 || g12.Cadres != 1 {
		t.Errorf("G12: %+v", g12)
	}
	v1 := conProgressOf(t, ps, "V1")
	if v1.Households != 5 || v1.Visits != 5 || v1.VisitsThisMonth != 4 || v1.Cadres != 1 || v1.Target != 4 || v1.OpenConflicts != 1 {
		t.Errorf("V1: %+v", v1)
	}
	t1 := ps[0]
	if t1.Households != 6 || t1.Visits != 6 || t1.VisitsThisMonth != 5 || t1.VisitedThisMonth != 4 || t1.Cadres != 2 || t1.Target != 8 ||
		t1.EvidenceComplete != 2 || t1.EvidenceVisits != 5 || t1.Flagged != 1 {
		t.Errorf("T1: %+v", t1)
	}
	if _, err := f.env.Store.ConsoleProgress(context.Background(), "nope", f.monthFrom, f.monthTo); err == nil {
		t.Error("unknown place: want an error")
	}
}

func TestConsoleEvidenceGaps_SaysWhatIsMissing(t *testing.T) {
	f := newConFixture(t)
	rep, err := f.env.Store.ConsoleEvidenceGaps(context.Background(), "C1", 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	// incomplete (after not present, certificate absent), water (its
	// photo never arrived) and lastmonth (no progress photo); the rejected
	// visit does not count.
	if rep.Visits != 3 || rep.Households != 3 || len(rep.Items) != 3 || rep.Truncated {
		t.Fatalf("report: %+v", rep)
	}
	var inc *sqlstore.VisitEvidenceGap
	for i := range rep.Items {
		if rep.Items[i].VisitID == f.visits["incomplete"] {
			inc = &rep.Items[i]
		}
	}
	if inc == nil || inc.HeadName != "张三" || inc.UserName != "w1" || len(inc.Missing) != 2 {
		t.Fatalf("incomplete visit: %+v", inc)
	}
	if m := inc.Missing[0]; m.Slot != "after" || m.MinCount != 1 || m.Referenced != 1 || m.Present != 0 {
		t.Errorf("after: %+v", m)
	}
	if m := inc.Missing[1]; m.Slot != "certificate" || m.Referenced != 0 {
		t.Errorf("certificate: %+v", m)
	}
	if rep.ByPlace["G11"] != 2 || rep.ByPlace["G12"] != 1 {
		t.Errorf("by place: %v", rep.ByPlace)
	}
	if len(rep.BySlot) != 3 {
		t.Errorf("by slot: %+v", rep.BySlot)
	}
	small, err := f.env.Store.ConsoleEvidenceGaps(context.Background(), "C1", 1, 0)
	if err != nil || len(small.Items) != 1 || !small.Truncated || small.Items[0].VisitID != f.visits["water"] {
		t.Errorf("limit 1: %+v %v", small, err)
	}
	g21, err := f.env.Store.ConsoleEvidenceGaps(context.Background(), "G21", 100, 0)
	if err != nil || g21.Visits != 0 {
		t.Errorf("G21 has no gaps: %+v %v", g21, err)
	}
}

// TestConsoleEvidenceGaps_Pages walks the report one visit a page: the
// pages together hold every visit once, in the order of the whole list,
// and offsets past the end or below zero are harmless.
func TestConsoleEvidenceGaps_Pages(t *testing.T) {
	f := newConFixture(t)
	ctx := context.Background()
	all, err := f.env.Store.ConsoleEvidenceGaps(ctx, "C1", 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	var walked []string
	for off := 0; off < all.Visits; off++ {
		pg, err := f.env.Store.ConsoleEvidenceGaps(ctx, "C1", 1, off)
		if err != nil {
			t.Fatal(err)
		}
		if len(pg.Items) != 1 || pg.Visits != all.Visits || pg.Truncated != (off < all.Visits-1) {
			t.Fatalf("page at %d: %d items, %d visits, truncated %v", off, len(pg.Items), pg.Visits, pg.Truncated)
		}
		walked = append(walked, pg.Items[0].VisitID)
	}
	for i, it := range all.Items {
		if walked[i] != it.VisitID {
			t.Fatalf("page %d holds %s, the whole list %s", i, walked[i], it.VisitID)
		}
	}
	for _, off := range []int{-1 << 62, -1, all.Visits, 1 << 40} {
		pg, err := f.env.Store.ConsoleEvidenceGaps(ctx, "C1", 2, off)
		if err != nil {
			t.Fatalf("offset %d: %v", off, err)
		}
		want := 0
		if off < 0 {
			want = 2
		}
		if len(pg.Items) != want || pg.Visits != all.Visits {
			t.Errorf("offset %d: %d items, %d visits", off, len(pg.Items), pg.Visits)
		}
	}
}

func TestConsoleHouseholds_StatusOnTheMap(t *testing.T) {
	f := newConFixture(t)
	hs, err := f.env.Store.ConsoleHouseholds(context.Background(), "V1", time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, h := range hs {
		got[h.HeadName] = h.Status
		if !h.HasPoint {
			t.Errorf("%s has no point", h.HeadName)
		}
	}
	want := map[string]string{"张三": sqlstore.MapNeedsRework, "李四": sqlstore.MapFlagged, "王五": sqlstore.MapNotVisited,
		"赵六": sqlstore.MapNotVisited, "钱七": sqlstore.MapVisited}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %s want %s", k, got[k], v)
		}
	}
	if len(hs) != 5 {
		t.Errorf("V1 has 5 households, got %d", len(hs))
	}
	// Since this month, 钱七's April visit no longer counts.
	hs, _ = f.env.Store.ConsoleHouseholds(context.Background(), "G12", f.monthFrom, 0)
	for _, h := range hs {
		if h.HeadName == "钱七" && h.Status != sqlstore.MapNotVisited {
			t.Errorf("钱七 since May: %s", h.Status)
		}
	}
	vs, err := f.env.Store.ConsoleVisitPoints(context.Background(), "C1", time.Time{}, 0)
	if err != nil || len(vs) != 6 || vs[0].AccuracyM != 12 {
		t.Errorf("visit points: %d %v", len(vs), err)
	}
}

func TestConsoleCadresAndDays(t *testing.T) {
	f := newConFixture(t)
	cs, err := f.env.Store.ConsoleCadres(context.Background(), "C1", f.monthFrom, f.monthTo)
	if err != nil || len(cs) != 2 {
		t.Fatalf("cadres: %+v %v", cs, err)
	}
	if cs[0].Username != "w1" || cs[0].Visits != 4 || cs[0].Target != 4 || strings.Join(cs[0].PlaceCodes, ",") != "G11,G12" {
		t.Errorf("w1: %+v", cs[0])
	}
	if cs[1].Username != "w2" || cs[1].Visits != 1 {
		t.Errorf("w2: %+v", cs[1])
	}
	days, err := f.env.Store.ConsoleVisitsPerDay(context.Background(), "C1", f.monthFrom, f.monthFrom.AddDate(0, 0, 10), 480)
	if err != nil || len(days) != 10 {
		t.Fatalf("days: %v %v", days, err)
	}
	if days[2].Day != "2024-05-03" || days[2].Count != 1 || days[0].Count != 0 {
		t.Errorf("days: %+v", days)
	}
	sum := 0
	for _, d := range days {
		sum += d.Count
	}
	if sum != 5 {
		t.Errorf("visits in the first 10 days: %d", sum)
	}
}

func TestConsoleHouseholdEvidenceAndFlags(t *testing.T) {
	f := newConFixture(t)
	blobs, flags, err := f.env.Store.ConsoleHouseholdEvidence(context.Background(), f.hh["张三"])
	if err != nil {
		t.Fatal(err)
	}
	if len(blobs) != 4 || !blobs[conSHA('a')].Present || blobs[conSHA('d')].Present || blobs[conSHA('a')].ExifLon == nil {
		t.Errorf("blobs: %+v", blobs)
	}
	if len(flags) != 0 {
		t.Errorf("flags: %+v", flags)
	}
	_, flags, _ = f.env.Store.ConsoleHouseholdEvidence(context.Background(), f.hh["李四"])
	if fl := flags[f.visits["water"]]; len(fl) != 2 {
		t.Errorf("water flags: %+v", fl)
	}
	vf, err := f.env.Store.ConsoleVisitFlags(context.Background(), []string{f.visits["water"], f.visits["complete"]})
	if err != nil || strings.Join(vf[f.visits["water"]], ",") != "gps_far_from_visit,poor_gps_accuracy" || len(vf[f.visits["complete"]]) != 0 {
		t.Errorf("visit flags: %v %v", vf, err)
	}
	names, err := f.env.Store.ConsoleFlagNames(context.Background())
	if err != nil || len(names) != 2 {
		t.Errorf("flag names: %v %v", names, err)
	}
}

func TestExportVisits_FiltersAndStreams(t *testing.T) {
	f := newConFixture(t)
	ctx := context.Background()
	cases := []struct {
		name string
		f    sqlstore.ExportFilter
		want int
	}{
		{"all", sqlstore.ExportFilter{}, 6},
		{"township", sqlstore.ExportFilter{Roots: []string{"T1"}}, 6},
		{"group", sqlstore.ExportFilter{Roots: []string{"G11"}}, 3},
		{"nested roots count once", sqlstore.ExportFilter{Roots: []string{"V1", "G11"}}, 5},
		{"no roots", sqlstore.ExportFilter{Roots: []string{}}, 0},
		{"form", sqlstore.ExportFilter{FormID: "water_cellar_progress"}, 4},
		{"state", sqlstore.ExportFilter{State: "submitted"}, 3},
		{"may", sqlstore.ExportFilter{From: f.monthFrom, To: f.monthTo}, 5},
		{"from 5th", sqlstore.ExportFilter{From: time.Date(2024, 5, 5, 0, 0, 0, 0, time.UTC)}, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, err := f.env.Store.CountExport(ctx, "visits", c.f)
			if err != nil || n != c.want {
				t.Errorf("count: %d %v, want %d", n, err, c.want)
			}
			got := 0
			prevForm := ""
			err = f.env.Store.ExportVisits(ctx, c.f, func(v *sqlstore.ExportVisit) error {
				got++
				if v.FormID < prevForm {
					t.Errorf("not ordered by form")
				}
				prevForm = v.FormID
				return nil
			})
			if err != nil || got != c.want {
				t.Errorf("rows: %d %v, want %d", got, err, c.want)
			}
		})
	}
	var water *sqlstore.ExportVisit
	f.env.Store.ExportVisits(ctx, sqlstore.ExportFilter{}, func(v *sqlstore.ExportVisit) error {
		if v.ID == f.visits["water"] {
			c := *v
			c.Flags = append([]string(nil), v.Flags...)
			water = &c
		}
		return nil
	})
	if water == nil || water.HeadName != "李四" || water.PlaceName != "采山坪" || water.UserName != "w1" || water.Evidence != 1 || water.EvidencePresent != 0 ||
		strings.Join(water.Flags, ",") != "gps_far_from_visit,poor_gps_accuracy" || !water.HasPoint || water.AccuracyM != 12 {
		t.Errorf("water visit: %+v", water)
	}
	hn := 0
	err := f.env.Store.ExportHouseholds(ctx, sqlstore.ExportFilter{Roots: []string{"V1"}}, func(h *sqlstore.ExportHousehold) error {
		hn++
		if h.PlaceName == "" || !h.HasPoint || len(h.Fields) == 0 {
			t.Errorf("household row: %+v", h)
		}
		return nil
	})
	if err != nil || hn != 5 {
		t.Errorf("households: %d %v", hn, err)
	}
	forms, err := f.env.Store.ConsoleExportForms(ctx, sqlstore.ExportFilter{Roots: []string{"G11"}})
	if err != nil || len(forms) != 2 || forms[0].ID != "house_retrofit_inspection" {
		t.Errorf("forms: %v %v", forms, err)
	}
}
