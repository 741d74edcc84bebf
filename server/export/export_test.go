package export_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"os"
	"regexp"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paulmach/orb"
	"github.com/paulmach/orb/geojson"
	"github.com/xuri/excelize/v2"

	"fieldsync/server/demo"
	"fieldsync/server/domain"
	"fieldsync/server/export"
	"fieldsync/server/export/exporttest"
	"fieldsync/server/sqlstore"
	"fieldsync/syncproto"
)

var bg = context.Background()

func user(t *testing.T, env *exporttest.Env, name string) domain.User {
	t.Helper()
	u, err := env.Store.UserByName(bg, name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// fixture: the demo county, ID cards on every 5th household of the demo
// village, 60 survey visits of which some carry ID cards in their answers.
type fixture struct {
	env     *exporttest.Env
	idCards map[string]string // household id -> ID number
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	env := exporttest.Demo(t)
	f := &fixture{env: env}
	f.idCards = env.SetIDCards(t, demo.VillageCode, 5)
	hs := env.Households(t, demo.VillageCode)
	env.BulkVisits(t, hs[:30], 60, env.UserID(t, "wangge_li"), time.Date(2024, 5, 1, 2, 0, 0, 0, time.UTC))
	// One household in the other township, with a visit, for scope tests.
	if err := env.Store.ImportHouseholds(bg, []syncproto.Household{{ID: "01J00000000000000000000001", PlaceCode: demo.OtherVillageCode + "001",
		Fields: map[string]json.RawMessage{"head_name": json.RawMessage(`"龙潭户主"`), "location": json.RawMessage(`{"lon":103.8,"lat":25.01}`)}}}, 0); err != nil {
		t.Fatal(err)
	}
	other := env.Households(t, demo.OtherTownshipCode)
	env.BulkVisits(t, other[:1], 3, env.UserID(t, "wangge_zhao"), time.Date(2024, 5, 2, 2, 0, 0, 0, time.UTC))
	return f
}

func run(t *testing.T, env *exporttest.Env, u domain.User, r export.Request) (*bytes.Buffer, export.Result) {
	t.Helper()
	var buf bytes.Buffer
	res, err := export.Run(bg, env.Store, &buf, u, r, export.Options{Location: time.UTC, Source: "test"})
	if err != nil {
		t.Fatalf("export %+v: %v", r, err)
	}
	return &buf, res
}

var fullID = regexp.MustCompile(`[1-9]\d{16}[\dX]`)

func TestExport_CSV_BOMRowsChineseAndMasking(t *testing.T) {
	f := newFixture(t)
	env := f.env
	for _, c := range []struct {
		user   string
		masked bool
	}{{"admin", false}, {"zhen_supervisor", true}} {
		t.Run(c.user, func(t *testing.T) {
			u := user(t, env, c.user)
			buf, res := run(t, env, u, export.Request{What: "visits", Format: "csv", FormID: "household_survey"})
			if !bytes.HasPrefix(buf.Bytes(), []byte(export.BOM)) {
				t.Fatal("no UTF-8 BOM")
			}
			recs, err := csv.NewReader(bytes.NewReader(buf.Bytes()[3:])).ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			scope := "place_code LIKE '" + demo.CountyCode + "%'"
			if c.user != "admin" {
				scope = "place_code LIKE '" + demo.TownshipCode + "%'"
			}
			want := env.Count(t, `SELECT count(*) FROM visits WHERE form_id = 'household_survey' AND `+scope)
			if len(recs)-1 != want || res.Rows != want {
				t.Fatalf("%d rows (result %d), database has %d", len(recs)-1, res.Rows, want)
			}
			hdr := recs[0]
			col := func(name string) int {
				for i, h := range hdr {
					if h == name {
						return i
					}
				}
				t.Fatalf("no column %q in %v", name, hdr)
				return -1
			}
			head, vid := col("户主"), col("走访ID")
			idc := -1
			for i, h := range hdr {
				if strings.Contains(h, "身份证号") || strings.Contains(h, "身份证号") {
					idc = i
				}
			}
			if idc < 0 {
				t.Fatalf("no ID-card column in %v", hdr)
			}
			// Chinese text matches the database.
			checked := 0
			for _, r := range recs[1:] {
				var dbHead string
				if err := env.Store.DB().QueryRow(`SELECT h.fields ->> 'head_name' FROM visits v JOIN households h ON h.id = v.household_id WHERE v.id = ?`, r[vid]).Scan(&dbHead); err != nil {
					t.Fatal(err)
				}
				if r[head] != dbHead || !regexp.MustCompile(`\p{Han}`).MatchString(r[head]) {
					t.Fatalf("head %q, database %q", r[head], dbHead)
				}
				checked++
			}
			if checked == 0 {
				t.Fatal("nothing checked")
			}
			ids := 0
			for _, r := range recs[1:] {
				if r[idc] == "" {
					continue
				}
				ids++
				if c.masked != !fullID.MatchString(r[idc]) {
					t.Fatalf("id column %q, masked=%v", r[idc], c.masked)
				}
				if c.masked && !regexp.MustCompile(`^\d{6}\*{8}[\dX]{4}$`).MatchString(r[idc]) {
					t.Fatalf("mask format %q", r[idc])
				}
			}
			if ids == 0 {
				t.Fatal("no ID numbers in the export to check")
			}
			if c.masked && fullID.Match(buf.Bytes()) {
				t.Fatal("a full ID number leaked into a masked export")
			}
			if res.Masked != c.masked {
				t.Errorf("result masked = %v", res.Masked)
			}
		})
	}
}

func TestExport_XLSX_SheetPerFormTypedCells(t *testing.T) {
	f := newFixture(t)
	env := f.env
	u := user(t, env, "zhen_supervisor")
	buf, res := run(t, env, u, export.Request{What: "visits", Format: "xlsx"})
	x, err := excelize.OpenReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	titles := map[string]string{}
	forms, _ := env.Store.Forms(bg, true)
	for _, fd := range forms {
		titles[fd.Title] = fd.ID
	}
	total := 0
	sheets := x.GetSheetList()
	if len(sheets) < 3 {
		t.Fatalf("sheets %v: want one per form", sheets)
	}
	for _, sh := range sheets {
		form, ok := titles[sh]
		if !ok {
			t.Fatalf("sheet %q is not a form title", sh)
		}
		rows, err := x.GetRows(sh)
		if err != nil {
			t.Fatal(err)
		}
		want := env.Count(t, `SELECT count(*) FROM visits WHERE form_id = ? AND place_code LIKE ?`, form, demo.TownshipCode+"%")
		if len(rows)-1 != want {
			t.Errorf("sheet %s: %d rows, database %d", sh, len(rows)-1, want)
		}
		total += len(rows) - 1
		hdr := rows[0]
		find := func(name string) int {
			for i, h := range hdr {
				if h == name {
					return i
				}
			}
			return -1
		}
		// Typed cells: the visit time is a number with a date format, the
		// accuracy a number, the head a Chinese string.
		if len(rows) > 1 {
			ti, ai := find("走访时间"), find("定位精度(米)")
			cellT, _ := excelize.CoordinatesToCellName(ti+1, 2)
			cellA, _ := excelize.CoordinatesToCellName(ai+1, 2)
			if typ, _ := x.GetCellType(sh, cellA); typ != excelize.CellTypeNumber && typ != excelize.CellTypeUnset {
				t.Errorf("%s accuracy cell type %v", sh, typ)
			}
			raw, _ := x.GetCellValue(sh, cellT, excelize.Options{RawCellValue: true})
			if _, err := strconv.ParseFloat(raw, 64); err != nil {
				t.Errorf("%s time cell is not a serial number: %q", sh, raw)
			}
			if shown, _ := x.GetCellValue(sh, cellT); !regexp.MustCompile(`^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$`).MatchString(shown) {
				t.Errorf("%s time cell shows %q", sh, shown)
			}
			if form == "household_survey" {
				ii := find("人均纯收入(元)")
				if ii < 0 {
					ii = find("人均收入(元)")
				}
				if ii >= 0 {
					c, _ := excelize.CoordinatesToCellName(ii+1, 2)
					if typ, _ := x.GetCellType(sh, c); typ != excelize.CellTypeNumber && typ != excelize.CellTypeUnset {
						t.Errorf("income cell type %v", typ)
					}
				}
				for _, r := range rows[1:] {
					for _, v := range r {
						if fullID.MatchString(v) {
							t.Fatalf("full ID in a supervisor's export: %q", v)
						}
					}
				}
			}
		}
	}
	if total != res.Rows {
		t.Errorf("sheets hold %d rows, result says %d", total, res.Rows)
	}
}

func TestExport_GeoJSON_VisitsAndHouseholds(t *testing.T) {
	f := newFixture(t)
	env := f.env
	u := user(t, env, "admin")
	buf, res := run(t, env, u, export.Request{What: "visits", Format: "geojson", Place: demo.VillageCode, State: "submitted"})
	fc, err := geojson.UnmarshalFeatureCollection(buf.Bytes())
	if err != nil {
		t.Fatalf("not GeoJSON: %v\n%s", err, buf.String()[:min(500, buf.Len())])
	}
	want := env.Count(t, `SELECT count(*) FROM visits WHERE review_state = 'submitted' AND place_code LIKE ?`, demo.VillageCode+"%")
	if len(fc.Features) != want || res.Rows != want {
		t.Fatalf("%d features, database %d", len(fc.Features), want)
	}
	for _, ft := range fc.Features {
		if _, ok := ft.Geometry.(orb.Point); !ok {
			t.Fatalf("geometry %T", ft.Geometry)
		}
		if ft.Properties.MustString("review_state") != "submitted" || !regexp.MustCompile(`\p{Han}`).MatchString(ft.Properties.MustString("head_name")) {
			t.Fatalf("properties %v", ft.Properties)
		}
	}
	// Households, masked for a supervisor.
	sup := user(t, env, "cun_supervisor")
	buf, _ = run(t, env, sup, export.Request{What: "households", Format: "geojson"})
	fc, err = geojson.UnmarshalFeatureCollection(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if want := env.Count(t, `SELECT count(*) FROM households WHERE deleted = 0 AND place_code LIKE ?`, demo.VillageCode+"%"); len(fc.Features) != want {
		t.Fatalf("%d household features, database %d", len(fc.Features), want)
	}
	masked := 0
	for _, ft := range fc.Features {
		id := ft.ID.(string)
		if full := f.idCards[id]; full != "" {
			got := ft.Properties.MustString("id_card_no")
			if got != export.MaskID(full) {
				t.Fatalf("household %s id %q, want %q", id, got, export.MaskID(full))
			}
			masked++
		}
	}
	if masked == 0 || fullID.Match(buf.Bytes()) {
		t.Fatalf("masked %d; full ID leaked: %v", masked, fullID.Match(buf.Bytes()))
	}
}

func TestExport_Households_CSVAndXLSXMembers(t *testing.T) {
	f := newFixture(t)
	env := f.env
	admin := user(t, env, "admin")
	buf, _ := run(t, env, admin, export.Request{What: "households", Format: "csv", Place: demo.VillageCode, Lang: "en"})
	recs, err := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(buf.Bytes(), []byte(export.BOM)))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs)-1 != demo.TotalHouseholds {
		t.Fatalf("%d households, want %d", len(recs)-1, demo.TotalHouseholds)
	}
	if recs[0][0] != "Household ID" {
		t.Errorf("English headers: %v", recs[0][:3])
	}
	full := 0
	for _, r := range recs[1:] {
		if id := f.idCards[r[0]]; id != "" && r[12] == id {
			full++
		}
	}
	if full != len(f.idCards) {
		t.Errorf("admin export: %d full ID numbers, want %d", full, len(f.idCards))
	}
	buf, _ = run(t, env, user(t, env, "zhen_supervisor"), export.Request{What: "households", Format: "xlsx"})
	x, err := excelize.OpenReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if s := x.GetSheetList(); len(s) != 2 || s[0] != "户" || s[1] != "家庭成员" {
		t.Fatalf("sheets %v", s)
	}
	hh, _ := x.GetRows("户")
	ms, _ := x.GetRows("家庭成员")
	if len(hh)-1 != demo.TotalHouseholds {
		t.Errorf("%d household rows", len(hh)-1)
	}
	if len(ms)-1 != demo.TotalPeople {
		t.Errorf("%d member rows, want %d", len(ms)-1, demo.TotalPeople)
	}
	for _, r := range append(hh, ms...) {
		for _, v := range r {
			if fullID.MatchString(v) {
				t.Fatalf("full ID in a supervisor's XLSX: %q", v)
			}
		}
	}
}

func TestExport_ScopeAndAudit(t *testing.T) {
	f := newFixture(t)
	env := f.env
	before := env.Count(t, `SELECT count(*) FROM audit_events WHERE action = 'export'`)
	zhen := user(t, env, "zhen_supervisor")
	buf, res := run(t, env, zhen, export.Request{What: "visits", Format: "csv"})
	if strings.Contains(buf.String(), demo.OtherTownshipCode) {
		t.Fatal("a township supervisor's export holds the other township")
	}
	if want := env.Count(t, `SELECT count(*) FROM visits WHERE place_code LIKE ?`, demo.TownshipCode+"%"); res.Rows != want {
		t.Errorf("rows %d want %d", res.Rows, want)
	}
	_, err := export.Run(bg, env.Store, io.Discard, zhen, export.Request{Format: "csv", Place: demo.OtherTownshipCode}, export.Options{})
	if !errors.Is(err, export.ErrForbidden) {
		t.Errorf("other township: %v", err)
	}
	_, err = export.Run(bg, env.Store, io.Discard, user(t, env, "wangge_li"), export.Request{Format: "csv"}, export.Options{})
	if !errors.Is(err, export.ErrForbidden) {
		t.Errorf("field worker: %v", err)
	}
	_, err = export.Run(bg, env.Store, io.Discard, zhen, export.Request{Format: "pdf"}, export.Options{})
	if !errors.Is(err, export.ErrBadRequest) {
		t.Errorf("bad format: %v", err)
	}
	after := env.Count(t, `SELECT count(*) FROM audit_events WHERE action = 'export'`)
	if after != before+1 {
		t.Fatalf("audit events %d -> %d; want one per export run", before, after)
	}
	var details string
	if err := env.Store.DB().QueryRow(`SELECT after FROM audit_events WHERE action = 'export' AND entity_id = ?`, res.ID).Scan(&details); err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	json.Unmarshal([]byte(details), &d)
	if d["format"] != "csv" || d["masked"] != true || d["user"] != "zhen_supervisor" || d["rows"].(float64) != float64(res.Rows) {
		t.Errorf("audit details %v", d)
	}
}

func TestExport_FiltersByDateAndState(t *testing.T) {
	f := newFixture(t)
	env := f.env
	q := url.Values{"format": {"csv"}, "from": {"2024-05-01"}, "to": {"2024-05-01"}, "state": {"approved"}}
	r, err := export.ParseRequest(q, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	_, res := run(t, env, user(t, env, "admin"), r)
	want := env.Count(t, `SELECT count(*) FROM visits WHERE review_state = 'approved' AND server_time >= '2024-05-01' AND server_time < '2024-05-02'`)
	if res.Rows != want || want == 0 {
		t.Errorf("rows %d, database %d", res.Rows, want)
	}
	for _, bad := range []url.Values{{"format": {"csv"}, "from": {"May 1"}}, {"format": {"csv"}, "state": {"lost"}}, {"format": {"doc"}},
		{"format": {"csv"}, "from": {"2024-05-02"}, "to": {"2024-05-01"}}} {
		if _, err := export.ParseRequest(bad, time.UTC); !errors.Is(err, export.ErrBadRequest) {
			t.Errorf("%v: %v", bad, err)
		}
	}
}

func TestMaskID(t *testing.T) {
	for in, want := range map[string]string{
		"530102199001011234": "530102********1234",
		"53010219900101123X": "530102********123X",
		"530102900101123":    "530102*****1123",
		"12345":              "1****",
		"":                   "",
	} {
		if got := export.MaskID(in); got != want {
			t.Errorf("MaskID(%q) = %q, want %q", in, got, want)
		}
	}
	if got := export.MaskText("户主身份证530102199001011234,电话13800138000"); got != "户主身份证530102********1234,电话13800138000" {
		t.Errorf("MaskText: %q", got)
	}
}

func TestExport_CSVInjectionNeutralised(t *testing.T) {
	env := exporttest.Demo(t)
	h := env.Households(t, demo.VillageCode)[0]
	var raw string
	if err := env.Store.DB().QueryRow(`SELECT fields FROM households WHERE id = ?`, h.ID).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	fields := map[string]any{}
	if err := json.Unmarshal([]byte(raw), &fields); err != nil {
		t.Fatal(err)
	}
	fields["address"] = `=HYPERLINK("http://x","y")`
	b, _ := json.Marshal(fields)
	env.Exec(t, `UPDATE households SET fields = ? WHERE id = ?`, string(b), h.ID)
	buf, _ := run(t, env, user(t, env, "admin"), export.Request{What: "households", Format: "csv", Place: h.PlaceCode})
	if !strings.Contains(buf.String(), `'=HYPERLINK`) {
		t.Errorf("formula not neutralised")
	}
}

// peakMeter samples the Go heap while an export runs and resets and reads
// the process's peak RSS (VmHWM) around it.
type peakMeter struct {
	stop    chan struct{}
	done    chan struct{}
	peak    atomic.Uint64
	base    uint64
	rssBase float64
}

// procStatus reads a field of /proc/self/status in MB (0 if unavailable).
func procStatus(field string) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field) {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func startMeter() *peakMeter {
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // resets VmHWM to the current RSS (Linux)
	m := &peakMeter{stop: make(chan struct{}), done: make(chan struct{}), base: ms.HeapInuse, rssBase: procStatus("VmRSS:")}
	go func() {
		defer close(m.done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > m.peak.Load() {
				m.peak.Store(ms.HeapInuse)
			}
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

func (m *peakMeter) end() (heapPeakMB, heapGrowthMB, rssPeakMB, rssBaseMB float64) {
	close(m.stop)
	<-m.done
	p := float64(m.peak.Load())
	return p / (1 << 20), (p - float64(m.base)) / (1 << 20), procStatus("VmHWM:"), m.rssBase
}

// countingWriter counts bytes and discards them.
type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func TestExport_100kVisitsBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	env := exporttest.Demo(t)
	const n = 100_000
	hs := env.Households(t, demo.VillageCode)
	start := time.Now()
	env.BulkVisits(t, hs, n, env.UserID(t, "wangge_li"), time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC))
	t.Logf("inserted %d visits in %v", n, time.Since(start).Round(time.Millisecond))
	admin := user(t, env, "admin")
	limits := map[string]float64{"csv": 64, "geojson": 64, "xlsx": 256} // heap growth, MB
	for _, format := range []string{"csv", "geojson", "xlsx"} {
		t.Run(format, func(t *testing.T) {
			m := startMeter()
			var cw countingWriter
			t0 := time.Now()
			progress := 0
			res, err := export.Run(bg, env.Store, &cw, admin, export.Request{What: "visits", Format: format, FormID: "household_survey"},
				export.Options{Location: time.UTC, Progress: func(d int) { progress = d }, ProgressEvery: 10000})
			el := time.Since(t0)
			peak, growth, rss, rssBase := m.end()
			if err != nil {
				t.Fatal(err)
			}
			want := env.Count(t, `SELECT count(*) FROM visits WHERE form_id = 'household_survey'`)
			if res.Rows != want || want < n || progress != want {
				t.Fatalf("rows %d, progress %d, database %d", res.Rows, progress, want)
			}
			t.Logf("%s: %d rows, %.1f MB out in %v; heap in use peak %.1f MB (growth %.1f MB); process peak RSS (VmHWM) %.1f MB, %.1f MB before the export",
				format, res.Rows, float64(cw.n)/(1<<20), el.Round(time.Millisecond), peak, growth, rss, rssBase)
			if growth > limits[format] {
				t.Errorf("%s export grew the heap by %.1f MB (limit %.0f MB): not streaming", format, growth, limits[format])
			}
		})
	}
}

// keep sqlstore imported for the filter type in helpers.
var _ sqlstore.ExportFilter
