package web_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"fieldsync/server/demo"
	"fieldsync/server/export"
	"fieldsync/server/servertest"
)

func chromiumPath(t *testing.T) string { return servertest.ChromiumPath(t) }

// newBrowser starts headless Chromium with a fresh profile and returns a
// tab context. Uncaught page exceptions are collected for the caller to
// check.
func newBrowser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	path := chromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); acancel() })
	if err := chromedp.Do(ctx); err != nil { // start the browser with no timeout
		t.Fatalf("start chromium %s: %v", path, err)
	}
	var mu sync.Mutex
	var problems []string
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleException || m.Type == chromedp.ConsoleError {
				mu.Lock()
				problems = append(problems, fmt.Sprintf("%s: %s (%s)", m.Type, m.Text, m.URL))
				mu.Unlock()
			}
		}
	}()
	// Accept confirm() dialogs (revoking a device asks first).
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), problems...)
	}
}

// step runs actions with a timeout and fails the test on error.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// loadTime reads the page's navigation timing: load event end, in ms.
func loadTime(t *testing.T, ctx context.Context) float64 {
	t.Helper()
	for i := 0; i < 50; i++ {
		ms := eval[float64](t, ctx, `(performance.getEntriesByType('navigation')[0] || {}).loadEventEnd || 0`)
		if ms > 0 {
			return ms
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no navigation timing")
	return 0
}

// uniformity checks that an image is not blank: it has many colours and
// no single colour covers nearly all of it.
func uniformity(img image.Image) (colours int, topShare float64) {
	counts := map[uint32]int{}
	b := img.Bounds()
	n := 0
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, _ := img.At(x, y).RGBA()
			counts[(r>>11)<<10|(g>>11)<<5|bl>>11]++
			n++
		}
	}
	top := 0
	for _, c := range counts {
		top = max(top, c)
	}
	return len(counts), float64(top) / float64(n)
}

// TestBrowser_Console drives real Chromium through the console on the demo
// county: sign in, drill down to a group, the map, a household, send a
// visit back for rework, revoke a device, download an export.
func TestBrowser_Console(t *testing.T) {
	ctx, problems := newBrowser(t) // before the server: skips or fails early
	e := start(t)
	devID, devToken := e.enrollDevice(t, "wangge_li", "测试平板")
	base := e.URL + "/console"
	// Evidence on one rework visit: a photo taken 300 m away, flagged.
	var flaggedHH, flaggedVisit string
	var lon, lat float64
	e.Store.DB().QueryRow(`SELECT household_id, id, lon, lat FROM visits WHERE review_state = 'needs_rework' ORDER BY id LIMIT 1`).Scan(&flaggedHH, &flaggedVisit, &lon, &lat)
	photo := strings.Repeat("ab", 32)
	e.AddBlob(t, photo, lon+0.003, lat)
	e.AttachEvidence(t, flaggedVisit, "before", photo)
	e.AddFlag(t, flaggedVisit, photo, "gps_far_from_visit", "300 m")
	timings := map[string]float64{}

	t.Run("login", func(t *testing.T) {
		step(t, ctx, "login",
			chromedp.Navigate(base+"/overview"), // redirects to the sign-in page
			chromedp.WaitVisible(chromedp.ID("login-form")),
			chromedp.SendKeys(chromedp.ID("username"), "admin"),
			chromedp.SendKeys(chromedp.ID("password"), demo.DemoPassword),
			chromedp.Click(chromedp.ID("login-submit")),
			chromedp.WaitVisible(chromedp.ID("place-title")),
		)
		if lvl := eval[string](t, ctx, `document.getElementById('place-title').dataset.level`); lvl != "county" {
			t.Fatalf("after sign-in the overview shows a %s", lvl)
		}
	})

	t.Run("overview drill down to a group", func(t *testing.T) {
		step(t, ctx, "overview", chromedp.Navigate(base+"/overview"), chromedp.WaitVisible(chromedp.ID("children")))
		timings["overview (county)"] = loadTime(t, ctx)
		for _, want := range []struct{ code, level string }{
			{demo.TownshipCode, "township"}, {demo.VillageCode, "village"}, {demo.VillageCode + "001", "group"},
		} {
			sel := fmt.Sprintf(`#children tr[data-code="%s"] a.drill`, want.code)
			step(t, ctx, "drill to "+want.code,
				chromedp.Click(chromedp.CSS(sel)),
				chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#place-title[data-code="%s"]`, want.code))),
			)
			if lvl := eval[string](t, ctx, `document.getElementById('place-title').dataset.level`); lvl != want.level {
				t.Fatalf("drilled to %s, level %s", want.code, lvl)
			}
			if os.Getenv("FIELDSYNC_SCREENSHOTS") != "" {
				if shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
					saveShot(t, "overview-"+want.level+".png", shot)
				}
			}
			if bars := eval[int](t, ctx, `document.querySelectorAll('#cards .bar').length`); bars < 3 {
				t.Errorf("%s: %d progress bars", want.code, bars)
			}
			// Readable on a phone: no text below 14 px, every progress bar
			// named, every header cell scoped to its column.
			if small := eval[string](t, ctx, `[...document.querySelectorAll('body *')]
				.filter(el => !el.closest('svg') && [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()))
				.filter(el => parseFloat(getComputedStyle(el).fontSize) < 14)
				.slice(0, 5).map(el => el.tagName + '.' + el.className + ' ' + getComputedStyle(el).fontSize).join('; ')`); small != "" {
				t.Errorf("%s: text below 14 px: %s", want.code, small)
			}
			if n := eval[int](t, ctx, `[...document.querySelectorAll('[role=progressbar]')].filter(b => !b.getAttribute('aria-label')).length`); n != 0 {
				t.Errorf("%s: %d progress bars without a name", want.code, n)
			}
			if n := eval[int](t, ctx, `document.querySelectorAll('th:not([scope])').length`); n != 0 {
				t.Errorf("%s: %d header cells without a scope", want.code, n)
			}
			if charts := eval[int](t, ctx, `document.querySelectorAll('svg.chart rect').length`); charts < 10 {
				t.Errorf("%s: charts have %d bars", want.code, charts)
			}
		}
		timings["overview (group)"] = loadTime(t, ctx)
		// The group shows its households with the right count.
		want := e.Count(t, `SELECT count(*) FROM households WHERE place_code = ? AND deleted = 0`, demo.VillageCode+"001")
		got := eval[int](t, ctx, `document.querySelectorAll('#households tbody tr').length`)
		shown := eval[string](t, ctx, `document.getElementById('stat-households').textContent`)
		if got != want || shown != fmt.Sprint(want) {
			t.Errorf("group households: table %d, card %s, database %d", got, shown, want)
		}
		crumbs := eval[string](t, ctx, `document.getElementById('crumbs').textContent`)
		if !strings.Contains(crumbs, "青山镇") || !strings.Contains(crumbs, "石门村委会") {
			t.Errorf("breadcrumb %q", crumbs)
		}
	})

	var household string
	t.Run("map", func(t *testing.T) {
		// A villager group is drawn point by point (the county groups its
		// households into one bubble per place: TestBrowser_PagesStaySmall).
		var group string
		e.Store.DB().QueryRow(`SELECT place_code FROM households WHERE id = ?`, flaggedHH).Scan(&group)
		step(t, ctx, "map", chromedp.Navigate(base+"/map?period=all&place="+group), chromedp.WaitVisible(chromedp.ID("map")))
		timings["map (group, all time)"] = loadTime(t, ctx)
		polys := eval[int](t, ctx, `document.querySelectorAll('#map path.pl').length`)
		points := eval[int](t, ctx, `document.querySelectorAll('#map circle.hh').length`)
		acc := eval[int](t, ctx, `document.querySelectorAll('#map circle.acc').length`)
		rework := eval[int](t, ctx, `document.querySelectorAll('#map circle.hh.st-needs_rework').length`)
		flagged := eval[int](t, ctx, `document.querySelectorAll('#map circle.hh.st-flagged').length`)
		if flagged != 1 {
			t.Errorf("%d flagged households on the map, want 1", flagged)
		}
		visited := eval[int](t, ctx, `document.querySelectorAll('#map circle.hh.st-visited').length`)
		places := e.Count(t, `SELECT count(*) FROM places WHERE boundary IS NOT NULL AND code = ?`, group)
		hh := e.Count(t, `SELECT count(*) FROM households WHERE deleted = 0 AND lon IS NOT NULL AND place_code = ?`, group)
		vis := e.Count(t, `SELECT count(*) FROM visits WHERE lon IS NOT NULL AND place_code = ?`, group)
		if polys != places || points != hh || acc != vis || rework == 0 || visited == 0 {
			t.Fatalf("map draws %d polygons (db %d), %d households (db %d), %d accuracy circles (db %d), %d rework, %d visited",
				polys, places, points, hh, acc, vis, rework, visited)
		}
		// Polygons have real geometry on screen.
		w := eval[float64](t, ctx, `document.querySelector('#map path.pl').getBoundingClientRect().width`)
		if w < 100 {
			t.Errorf("the group's polygon is %.0f px wide", w)
		}
		shot, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.ID("map"), chromedp.NodeVisible))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(shot))
		if err != nil {
			t.Fatalf("screenshot is not a PNG: %v", err)
		}
		saveShot(t, "map.png", shot)
		colours, top := uniformity(img)
		t.Logf("map screenshot %dx%d: %d colours, the commonest covers %.0f%%", img.Bounds().Dx(), img.Bounds().Dy(), colours, top*100)
		if colours < 8 || top > 0.97 {
			t.Errorf("map screenshot looks blank: %d colours, top colour %.0f%%", colours, top*100)
		}
		// Zoom in with the button: the view box shrinks, points keep
		// their size on screen.
		before := eval[string](t, ctx, `document.getElementById('map').getAttribute('viewBox')`)
		step(t, ctx, "zoom", chromedp.Click(chromedp.CSS(`button[data-zoom="in"]`)))
		after := eval[string](t, ctx, `document.getElementById('map').getAttribute('viewBox')`)
		if before == after {
			t.Error("zoom did not change the view")
		}
		// Click a household point that is on top at its centre.
		type hit struct {
			X, Y float64
			ID   string
		}
		h := eval[hit](t, ctx, `(() => {
			for (const c of document.querySelectorAll('#map circle.hh')) {
				const r = c.getBoundingClientRect();
				const x = r.left + r.width / 2, y = r.top + r.height / 2;
				if (x < 40 || y < 40 || x > innerWidth - 10 || y > innerHeight - 10) continue;
				if (document.elementFromPoint(x, y) === c) return {X: x, Y: y, ID: c.dataset.id};
			}
			return {X: 0, Y: 0, ID: ''};
		})()`)
		if h.ID == "" {
			t.Fatal("no clickable household point")
		}
		step(t, ctx, "click a point",
			chromedp.MouseClickXY(h.X, h.Y),
			chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#hh-title[data-id="%s"]`, h.ID))),
		)
		household = h.ID
	})

	t.Run("household", func(t *testing.T) {
		if household == "" {
			t.Error("the map click opened no household")
		}
		hid := flaggedHH
		step(t, ctx, "household", chromedp.Navigate(base+"/households/"+hid), chromedp.WaitVisible(chromedp.ID("hh-title")))
		members := eval[int](t, ctx, `document.querySelectorAll('#members tbody tr').length`)
		visits := eval[int](t, ctx, `document.querySelectorAll('#visits li.visit').length`)
		mini := eval[int](t, ctx, `document.querySelectorAll('#minimap svg path.pl, #minimap svg circle.vp, #minimap svg circle.home').length`)
		audit := eval[int](t, ctx, `document.querySelectorAll('#audit tbody tr').length`)
		wantVisits := e.Count(t, `SELECT count(*) FROM visits WHERE household_id = ?`, hid)
		if members == 0 || visits != wantVisits || mini < 3 || audit == 0 {
			t.Errorf("household page: %d members, %d visits (db %d), %d map items, %d audit rows", members, visits, wantVisits, mini, audit)
		}
		exif := eval[int](t, ctx, `document.querySelectorAll('#minimap rect.exif').length`)
		thumbs := eval[int](t, ctx, `document.querySelectorAll('#visits figure.thumb.flagged img').length`)
		flagText := eval[string](t, ctx, `document.querySelector('#visits figure.thumb .flag').textContent`)
		if exif != 1 || thumbs != 1 || !strings.Contains(flagText, "照片位置远离走访点") {
			t.Errorf("evidence: %d EXIF points, %d flagged thumbnails, flag %q", exif, thumbs, flagText)
		}
		if src := eval[string](t, ctx, `document.querySelector('#visits figure.thumb img').getAttribute('src')`); src != "/api/v1/evidence/"+photo+"/thumb" {
			t.Errorf("thumbnail src %q", src)
		}
		if state := eval[string](t, ctx, `document.querySelector('#visits .state').dataset.state`); state == "" {
			t.Error("visit without a state")
		}
		if shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
			saveShot(t, "household.png", shot)
		}
	})

	t.Run("send a visit back for rework", func(t *testing.T) {
		q := fmt.Sprintf("/review?place=%s&form=water_cellar_progress&state=submitted", demo.VillageCode)
		step(t, ctx, "queue", chromedp.Navigate(base+q), chromedp.WaitVisible(chromedp.ID("queue")))
		first := eval[string](t, ctx, `document.querySelector('#queue tbody tr[data-id]').dataset.id`)
		if os.Getenv("FIELDSYNC_SCREENSHOTS") != "" {
			if shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
				saveShot(t, "review.png", shot)
			}
		}
		submittedBefore := e.Count(t, `SELECT count(*) FROM visits WHERE review_state = 'submitted'`)
		reason := "照片不清晰,请补拍水窖全景"
		// Keyboard: type the reason, j to the first row, r to send back.
		step(t, ctx, "rework",
			chromedp.SendKeys(chromedp.ID("reason"), reason),
			chromedp.Evaluate[chromedp.Void](`document.activeElement.blur()`),
			chromedp.KeyEvent("j"),
			chromedp.WaitVisible(chromedp.CSS(`#queue tr.cur`)),
			chromedp.KeyEvent("r"),
			chromedp.WaitVisible(chromedp.ID("flash")),
		)
		flash := eval[string](t, ctx, `document.getElementById('flash').textContent`)
		if !strings.Contains(flash, "1") {
			t.Errorf("flash %q", flash)
		}
		// Confirm through the JSON API.
		var got struct {
			Visit struct {
				ReviewState string `json:"review_state"`
			} `json:"visit"`
			Reviews []map[string]any `json:"reviews"`
		}
		if st := e.apiGET(t, e.AdminToken, "/api/v1/visits/"+first, &got); st != 200 {
			t.Fatalf("GET visit: %d", st)
		}
		if got.Visit.ReviewState != "needs_rework" || len(got.Reviews) == 0 || got.Reviews[len(got.Reviews)-1]["reason"] != reason {
			t.Fatalf("visit after rework: %+v", got)
		}
		if after := e.Count(t, `SELECT count(*) FROM visits WHERE review_state = 'submitted'`); after != submittedBefore-1 {
			t.Errorf("submitted visits %d -> %d; want exactly one sent back", submittedBefore, after)
		}
		if n := e.Count(t, `SELECT count(*) FROM tasks WHERE visit_id = ? AND state = 'open' AND reason = ?`, first, reason); n != 1 {
			t.Errorf("rework task: %d", n)
		}
	})

	t.Run("revoke a device", func(t *testing.T) {
		if st := e.apiGET(t, devToken, "/api/v1/device", nil); st != 200 {
			t.Fatalf("device before: %d", st)
		}
		sel := fmt.Sprintf(`#devices tr[data-id="%s"] button.revoke`, devID)
		step(t, ctx, "revoke",
			chromedp.Navigate(base+"/devices"),
			chromedp.WaitVisible(chromedp.CSS(sel)),
			chromedp.Click(chromedp.CSS(sel)), // confirm() is accepted
			chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#devices tr.revoked[data-id="%s"]`, devID))),
		)
		if st := e.apiGET(t, devToken, "/api/v1/device", nil); st != 401 {
			t.Errorf("revoked device still answers %d", st)
		}
	})

	t.Run("download an export", func(t *testing.T) {
		dir := t.TempDir()
		_, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dir, EventsEnabled: ptr(true)})
		if err != nil {
			t.Fatal(err)
		}
		begin := chromedp.BrowserEvents(ctx, browser.DownloadWillBegin)
		progress := chromedp.BrowserEvents(ctx, browser.DownloadProgress)
		step(t, ctx, "export page",
			chromedp.Navigate(base+"/export?place="+demo.VillageCode),
			chromedp.WaitVisible(chromedp.ID("export-form")),
			chromedp.SetValue(chromedp.ID("exp-format"), "csv"),
			chromedp.SetValue(chromedp.ID("exp-what"), "visits"),
			chromedp.Click(chromedp.ID("exp-submit")),
		)
		tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		var name, guid string
		for ev, err := range begin {
			if err != nil {
				t.Fatal(err)
			}
			name, guid = ev.SuggestedFilename, ev.GUID
			break
		}
		for ev, err := range progress {
			if err != nil || tctx.Err() != nil {
				t.Fatalf("download: %v %v", err, tctx.Err())
			}
			if ev.GUID == guid && ev.State == browser.DownloadProgressStateCompleted {
				break
			}
		}
		b, err := os.ReadFile(filepath.Join(dir, guid))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(name, "fieldsync-visits-"+demo.VillageCode) || !strings.HasSuffix(name, ".csv") {
			t.Errorf("download name %q", name)
		}
		if !bytes.HasPrefix(b, []byte(export.BOM)) {
			t.Fatal("downloaded CSV has no BOM")
		}
		recs, err := csv.NewReader(bytes.NewReader(b[3:])).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		want := e.Count(t, `SELECT count(*) FROM visits WHERE place_code LIKE ?`, demo.VillageCode+"%")
		if len(recs)-1 != want {
			t.Errorf("downloaded %d rows, database %d", len(recs)-1, want)
		}
		if n := e.Count(t, `SELECT count(*) FROM audit_events WHERE action = 'export' AND actor_name = 'admin'`); n != 1 {
			t.Errorf("export audit events: %d", n)
		}
	})

	t.Run("english", func(t *testing.T) {
		step(t, ctx, "english", chromedp.Navigate(base+"/overview?lang=en"), chromedp.WaitVisible(chromedp.ID("place-title")))
		if nav := eval[string](t, ctx, `document.querySelector('nav.main a').textContent`); nav != "Overview" {
			t.Errorf("English navigation: %q", nav)
		}
		step(t, ctx, "chinese", chromedp.Navigate(base+"/map"), chromedp.WaitVisible(chromedp.ID("map")))
		if lang := eval[string](t, ctx, `document.documentElement.lang`); lang != "en" {
			t.Errorf("the language cookie did not stick: %q", lang)
		}
		step(t, ctx, "back to chinese", chromedp.Navigate(base+"/map?lang=zh"), chromedp.WaitVisible(chromedp.ID("map")))
		timings["map (county, all time, second load)"] = loadTime(t, ctx)
	})

	names := make([]string, 0, len(timings))
	for k := range timings {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		t.Logf("page load (navigation start to load event end): %-36s %6.0f ms", k, timings[k])
	}
	for _, p := range problems() {
		if strings.Contains(p, "/api/v1/evidence/") {
			continue // thumbnails of blobs the demo does not have
		}
		t.Errorf("browser console: %s", p)
	}
}

func ptr[T any](v T) *T { return &v }

// saveShot keeps a screenshot when FIELDSYNC_SCREENSHOTS is set (see
// servertest.SaveScreenshot).
func saveShot(t *testing.T, name string, b []byte) { servertest.SaveScreenshot(t, name, b) }

// TestBrowser_TileLayer configures a tile URL (a local tile server) and
// checks that the map asks it for tiles under the features, and that the
// content security policy lets them in.
func TestBrowser_TileLayer(t *testing.T) {
	ctx, problems := newBrowser(t)
	var mu sync.Mutex
	requested := map[string]bool{}
	tile := image.NewRGBA(image.Rect(0, 0, 256, 256))
	var tileBuf bytes.Buffer
	png.Encode(&tileBuf, tile)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requested[r.URL.Path] = true
		mu.Unlock()
		w.Header().Set("Content-Type", "image/png")
		w.Write(tileBuf.Bytes())
	}))
	defer ts.Close()
	e := start(t, envOpts{tileURL: ts.URL + "/{z}/{x}/{y}.png"})
	step(t, ctx, "login",
		chromedp.Navigate(e.URL+"/console/login"),
		chromedp.SendKeys(chromedp.ID("username"), "admin"),
		chromedp.SendKeys(chromedp.ID("password"), demo.DemoPassword),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.ID("place-title")),
		chromedp.Navigate(e.URL+"/console/map?place="+demo.VillageCode),
		chromedp.WaitVisible(chromedp.ID("map")),
	)
	n := eval[int](t, ctx, `document.querySelectorAll('#tiles image').length`)
	if n == 0 {
		t.Fatal("no tile images on the map")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := len(requested)
		mu.Unlock()
		if got > 0 || time.Now().After(deadline) {
			if got == 0 {
				t.Fatal("the tile server got no request")
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range problems() {
		t.Errorf("browser console: %s", p)
	}
}
