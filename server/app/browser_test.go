package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/jpeg"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	_ "github.com/mattn/go-sqlite3"
	"github.com/rwcarlsen/goexif/exif"

	"fieldsync/server/evidence/evidencetest"
	"fieldsync/server/servertest"
)

func chromiumPath(t *testing.T) string { return servertest.ChromiumPath(t) }

// newBrowser starts headless Chromium with a fresh profile at a tablet's
// size and returns a tab context and a reader of the page's uncaught
// exceptions and console errors.
func newBrowser(t *testing.T, w, h int) (context.Context, func() []string) {
	t.Helper()
	ctx, problems, _ := newBrowserOn(t, w, h, t.TempDir())
	return ctx, problems
}

// newBrowserOn is newBrowser on a given profile folder (a later browser on
// the same folder finds the first one's IndexedDB, service worker and
// caches), and also returns kill, which ends the browser process at once
// (SIGKILL, as a dying tablet would: no orderly shutdown).
func newBrowserOn(t *testing.T, w, h int, profile string) (context.Context, func() []string, func()) {
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
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(w, h),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); acancel() })
	kill := func() { acancel(); cancel() } // the allocator's context ends the process with SIGKILL
	if err := chromedp.Do(ctx); err != nil {
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
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), problems...)
	}, kill
}

// appShot keeps a screenshot of the app's visible screen as
// app-<name>.png when FIELDSYNC_SCREENSHOTS is set ("1": the README's
// testdata/screenshots; see servertest.SaveScreenshot).
func appShot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv("FIELDSYNC_SCREENSHOTS") == "" {
		return
	}
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// Let a toast or a thumbnail finish drawing.
	chromedp.Run(tctx, chromedp.Evaluate[bool](`new Promise(ok => requestAnimationFrame(() => requestAnimationFrame(() => ok(true))))`, chromedp.EvalAwaitPromise))
	shot, err := chromedp.Run(tctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return
	}
	servertest.SaveScreenshot(t, "app-"+name+".png", shot)
}

// fixGPS gives the open visit form a position with the accuracy acc (in
// metres) and waits until the form shows it. An override set before the
// form started watching is not always delivered again, so it is set again
// (a hair apart) until the form has it.
func fixGPS(t *testing.T, ctx context.Context, lat, lon, acc float64) {
	t.Helper()
	fixed := fmt.Sprintf(`document.getElementById('gpsline').textContent.includes('±%.0f 米')`, acc)
	for try := 0; try < 20 && !eval[bool](t, ctx, fixed); try++ {
		la := lat + float64(try)*1e-7
		if _, err := chromedp.Call(ctx, emulation.SetGeolocationOverride, emulation.SetGeolocationOverrideParams{Latitude: &la, Longitude: &lon, Accuracy: &acc}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	waitFor(t, ctx, "GPS fix", fixed)
}

func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// waitFor polls a JS predicate until it is truthy (hang detector: 30 s).
func waitFor(t *testing.T, ctx context.Context, what, js string) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.Run(tctx, chromedp.Poll[chromedp.Void](js)); err != nil {
		sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
		state, _ := chromedp.Run(sctx, chromedp.Evaluate[string](`location.hash + ' | ' + ((document.getElementById('banner') || {}).textContent || '') + ' | ' + ((document.getElementById('gpsline') || {}).textContent || '') + ' | ' + [...document.querySelectorAll('.err')].map(e => e.textContent).filter(Boolean).join('; ')`))
		scancel()
		t.Fatalf("waiting for %s (%s): %v\npage: %s", what, js, err, state)
	}
}

// waitAcrossReload polls a JS predicate that becomes true only after the
// page reloads: errors from the navigation are retried (hang detector: 30 s).
func waitAcrossReload(t *testing.T, ctx context.Context, what, js string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ok, err := chromedp.Run(tctx, chromedp.Evaluate[bool]("!!("+js+")", chromedp.EvalAwaitPromise))
		cancel()
		if err == nil && ok {
			return
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("waiting for %s (%s): %v", what, js, last)
}

// syncNow runs a sync in the page, waiting out one already running (in
// this tab, or holding the sync lock), and returns its result.
func syncNow(t *testing.T, ctx context.Context) string {
	t.Helper()
	return eval[string](t, ctx, `(async () => {
		for (let i = 0; i < 150; i++) {
			const r = await fieldsyncApp.syncer.sync();
			if (r === 'error') {
				// Say why: the last lines of the app's sync log.
				const log = await fieldsyncApp.db.read(['log'], t => t.all('log'));
				return r + ': ' + log.slice(-5).map(l => l.text).join(' / ');
			}
			// 'busy': another sync holds the lock (an automatic one that
			// started when the link came back, or the page before a
			// reload that is still letting go of it).
			if (r !== 'running' && r !== 'busy') return r;
			await new Promise(ok => setTimeout(ok, 200));
		}
		return 'still running';
	})()`)
}

// testServer runs the fieldsync server (demo data, local blobs) and
// returns its base URL and data folder.
func testServer(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{DataDir: data, Addr: "127.0.0.1:0", Demo: true, DemoNoEvidence: true,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Out: io.Discard, Ready: func(a string) { addrc <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("server did not stop")
		}
	})
	select {
	case a := <-addrc:
		return "http://" + a, data
	case err := <-done:
		t.Fatalf("server: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("server did not start")
	}
	return "", ""
}

// apiJSON calls the API with a bearer token and decodes the answer.
func apiJSON(t *testing.T, method, url, token string, body, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode >= 300 {
		t.Fatalf("%s %s: %d %s", method, url, res.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
	}
}

// setOffline switches the tab's network off or on: requests fail (the
// service worker's too) and navigator.onLine follows.
func setOffline(t *testing.T, ctx context.Context, off bool) {
	t.Helper()
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	conds := []*network.Conditions{}
	if off {
		conds = append(conds, &network.Conditions{Offline: true, DownloadThroughput: -1, UploadThroughput: -1})
	}
	if _, err := chromedp.Call(ctx, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
		EmulateOfflineServiceWorker: &off, MatchedNetworkConditions: conds}); err != nil {
		t.Fatalf("emulate network: %v", err)
	}
	if _, err := chromedp.Call(ctx, network.OverrideNetworkState, network.OverrideNetworkStateParams{
		Offline: off, DownloadThroughput: -1, UploadThroughput: -1}); err != nil {
		t.Fatalf("override network state: %v", err)
	}
}

// TestBrowser_FieldAppOfflineDay enrolls a device in the field app by
// typing a code, syncs the worker's part of the demo village, goes
// offline, reloads (the app comes from the service worker), records two
// visits with GPS and a photo each, goes online and syncs. The server then
// holds the two visits exactly once and both photos, downscaled, with
// their EXIF GPS still in the stored bytes.
func TestBrowser_FieldAppOfflineDay(t *testing.T) {
	ctx, problems := newBrowser(t, 800, 1280)
	base, data := testServer(t)
	db, count := openServerDB(t, data)

	// The admin issues an enrollment code for wangge_li.
	en := demoEnrollment(t, base, "wangge_li")
	places := en.Places
	inScope := "place_code IN ('" + strings.Join(places, "','") + "') AND deleted = 0" // codes from the server's own data
	wantHH := count(`SELECT count(*) FROM households WHERE ` + inScope)

	app := base + "/app/"
	t.Run("enroll and sync", func(t *testing.T) {
		step(t, ctx, "open app", chromedp.Navigate(app), chromedp.WaitVisible(chromedp.ID("code")))
		if txt := eval[string](t, ctx, `document.querySelector('main h1').textContent`); txt != "本设备尚未登记" {
			t.Errorf("not-enrolled page says %q", txt)
		}
		step(t, ctx, "enroll", chromedp.SendKeys(chromedp.ID("code"), en.Code), chromedp.Click(chromedp.ID("enrollbtn")))
		waitFor(t, ctx, "households after the first sync", fmt.Sprintf(`document.getElementById('hhcount') && document.getElementById('hhcount').textContent === '%d 户'`, wantHH))
		who := eval[string](t, ctx, `document.querySelector('main h1').textContent`)
		mine := eval[string](t, ctx, `document.getElementById('myplaces').textContent`)
		if !strings.Contains(who, "李文华") || strings.Count(mine, "、") != len(places)-1 {
			t.Errorf("home shows %q, places %q (want %d places)", who, mine, len(places))
		}
		waitFor(t, ctx, "service worker in control", `!!navigator.serviceWorker.controller`)
	})
	devID := eval[string](t, ctx, `fieldsyncApp.db.getMeta('device_id')`)

	t.Run("two tabs never sync at once", func(t *testing.T) {
		tab2, cancel := chromedp.NewContext(ctx)
		defer cancel()
		if err := chromedp.Do(tab2); err != nil { // open the tab for the life of tab2, not of one step
			t.Fatal(err)
		}
		step(t, tab2, "second tab", chromedp.Navigate(app), chromedp.WaitVisible(chromedp.ID("syncbtn")))
		eval[bool](t, ctx, `new Promise(ok => navigator.locks.request('fieldsync-sync', () => { ok(true); return new Promise(r => { window.releaseSync = r; }); }))`)
		if got := eval[string](t, tab2, `fieldsyncApp.syncer.sync()`); got != "busy" {
			t.Errorf("second tab synced while the first held the lock: %q", got)
		}
		eval[bool](t, ctx, `(window.releaseSync(), true)`)
		if got := syncNow(t, tab2); got != "ok" {
			t.Errorf("second tab after the lock was released: %q", got)
		}
	})

	t.Run("households list and search", func(t *testing.T) {
		step(t, ctx, "places", chromedp.Click(chromedp.ID("go-places")), chromedp.WaitVisible(chromedp.ID("placelist")))
		if n := eval[int](t, ctx, `document.querySelectorAll('#placelist li').length`); n != len(places) {
			t.Errorf("%d places listed, want %d", n, len(places))
		}
		step(t, ctx, "a place", chromedp.Navigate(app+"#/place/"+places[0]), chromedp.WaitVisible(chromedp.CSS("#hhlist .hh")))
		inPlace := count(`SELECT count(*) FROM households WHERE place_code = ? AND deleted = 0`, places[0])
		if got := eval[string](t, ctx, `document.getElementById('hhcount').textContent`); got != fmt.Sprintf("共 %d 户", inPlace) {
			t.Errorf("list says %q, want %d households", got, inPlace)
		}
		// Only the rows in view exist.
		if n := eval[int](t, ctx, `document.querySelectorAll('#hhlist .hh').length`); n == 0 || (inPlace > 60 && n >= inPlace) {
			t.Errorf("%d rows in the DOM for %d households", n, inPlace)
		}
		var name string
		db.QueryRow(`SELECT json_extract(fields, '$.head_name') FROM households WHERE place_code = ? AND deleted = 0 ORDER BY id LIMIT 1 OFFSET 3`, places[0]).Scan(&name)
		step(t, ctx, "search", chromedp.SendKeys(chromedp.ID("search"), name))
		waitFor(t, ctx, "search result", `document.querySelectorAll('#hhlist .hh').length >= 1 && document.getElementById('hhcount').textContent !== '共 `+fmt.Sprint(inPlace)+` 户'`)
		if first := eval[string](t, ctx, `document.querySelector('#hhlist .hh .name').textContent`); !strings.Contains(first, name) {
			t.Errorf("search for %q shows %q first", name, first)
		}
	})

	// Two households of the worker, and photos taken there.
	hhIDs, lons, lats := householdsAt(t, db, inScope, 2)
	taken := time.Date(2026, 12, 6, 10, 30, 0, 0, time.FixedZone("CST", 8*3600))
	photos := photosAt(t, 100, 2400, 1800, taken, lons, lats)

	t.Run("offline reload comes from the service worker", func(t *testing.T) {
		setOffline(t, ctx, true)
		step(t, ctx, "reload offline", chromedp.Navigate(app+"#/"), chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("hhcount")))
		if on := eval[bool](t, ctx, `navigator.onLine`); on {
			t.Error("navigator.onLine after switching the network off")
		}
		if sw := eval[bool](t, ctx, `performance.getEntriesByType('navigation')[0].workerStart > 0 && !!navigator.serviceWorker.controller`); !sw {
			t.Error("the page did not come from the service worker")
		}
		if got := eval[string](t, ctx, `document.getElementById('hhcount').textContent`); got != fmt.Sprintf("%d 户", wantHH) {
			t.Errorf("offline the app shows %q", got)
		}
	})

	origin := strings.TrimSuffix(base, "/")
	if _, err := chromedp.CallBrowser(ctx, browser.SetPermission, browser.SetPermissionParams{
		Permission: &browser.PermissionDescriptor{Name: "geolocation"}, Setting: "granted", Origin: origin}); err != nil {
		t.Fatalf("grant geolocation: %v", err)
	}
	var visitIDs []string
	t.Run("record two visits offline", func(t *testing.T) {
		for i, hh := range hhIDs {
			acc := 6.0
			if _, err := chromedp.Call(ctx, emulation.SetGeolocationOverride, emulation.SetGeolocationOverrideParams{Latitude: &lats[i], Longitude: &lons[i], Accuracy: &acc}); err != nil {
				t.Fatal(err)
			}
			step(t, ctx, "open form", chromedp.Navigate(app+"#/visit/"+hh+"/water_cellar_progress"), chromedp.WaitVisible(chromedp.ID("f_site_name")))
			if i == 0 {
				step(t, ctx, "save empty", chromedp.Click(chromedp.ID("save")))
				waitFor(t, ctx, "required errors", `document.getElementById('err_site_name').textContent === '必填' && document.getElementById('err_slot_progress').textContent !== ''`)
			}
			waitFor(t, ctx, "GPS fix", `document.getElementById('gpsline').textContent.includes('±6 米')`)
			if warn := eval[string](t, ctx, `document.getElementById('gpsplace').textContent`); warn != "" {
				t.Errorf("at the household the app warns %q", warn)
			}
			step(t, ctx, "fill",
				chromedp.SendKeys(chromedp.ID("f_site_name"), fmt.Sprintf("村口水窖%d号", i+1)),
				chromedp.SendKeys(chromedp.ID("f_capacity_m3"), "24.5"),
				chromedp.Click(chromedp.CSS(`input[name="stage"][value="built"]`)),
				chromedp.SendKeys(chromedp.ID("f_households_served"), "3"),
				chromedp.Click(chromedp.CSS(`[data-field="site_location"] button`)),
				chromedp.SetUploadFiles(chromedp.CSS(`input[data-slot-gallery="progress"]`), []string{photos[i]}, chromedp.NodeReady),
			)
			eval[bool](t, ctx, `(() => { const d = document.getElementById('f_due_date'); d.value = '2027-03-01'; d.dispatchEvent(new Event('input', {bubbles: true})); return true; })()`)
			waitFor(t, ctx, "photo in the slot", `document.querySelectorAll('#slot_progress img').length === 1`)
			step(t, ctx, "save", chromedp.Click(chromedp.ID("save")))
			waitFor(t, ctx, "saved", `location.hash.startsWith('#/hh/') && document.getElementById('main').dataset.shown === location.hash`)
			visitIDs = append(visitIDs, eval[string](t, ctx, `fieldsyncApp.db.read(['outbox'], t => t.all('outbox')).then(r => r[r.length-1].body.visit.id)`))
		}
		if n := eval[int](t, ctx, `fieldsyncApp.db.read(['outbox'], t => t.count('outbox'))`); n != 2 {
			t.Fatalf("outbox holds %d, want 2", n)
		}
	})

	t.Run("reload offline keeps the outbox", func(t *testing.T) {
		step(t, ctx, "reload", chromedp.Navigate(app+"#/outbox"), chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("outboxlist")))
		if n := eval[int](t, ctx, `document.querySelectorAll('#outboxlist li').length`); n != 2 {
			t.Errorf("outbox page lists %d, want 2", n)
		}
		if n := count(`SELECT count(*) FROM visits WHERE device_id = ?`, devID); n != 0 {
			t.Errorf("server has %d visits of the device while it is offline", n)
		}
	})

	// A mutation the server refuses (the app would not make it: it is put
	// straight into the outbox) is shown with the server's reason and does
	// not block the queue.
	eval[int](t, ctx, `(async () => {
		const db = await import('./js/db.js'); const u = await import('./js/util.js');
		return fieldsyncApp.db.write(['meta', 'outbox'], t => db.enqueue(t, 'visit.create', 'visit', {id: u.newID(), household_id: '`+hhIDs[0]+`',
			form_id: 'water_cellar_progress', form_version: 1, answers: {site_name: 'x', capacity_m3: 'abc', stage: 'built', due_date: '2027-01-01'},
			device_time: new Date().toISOString()}, u.nextHLC));
	})()`)

	t.Run("503 with Retry-After is honoured", func(t *testing.T) {
		fctx, fcancel := context.WithCancel(ctx)
		defer fcancel()
		if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*/api/v1/sync/push"}}}); err != nil {
			t.Fatal(err)
		}
		var hits atomic.Int32
		go func() {
			for ev, err := range chromedp.Events(fctx, fetch.RequestPaused) {
				if err != nil {
					return
				}
				hits.Add(1)
				chromedp.Call(ctx, fetch.FulfillRequest, fetch.FulfillRequestParams{RequestID: ev.RequestID, ResponseCode: 503,
					ResponseHeaders: []*fetch.HeaderEntry{{Name: "Retry-After", Value: "120"}, {Name: "Content-Type", Value: "application/json"}},
					Body:            []byte(`{"code":"unavailable","message":"maintenance"}`)})
			}
		}()
		setOffline(t, ctx, false) // the app syncs by itself when the link returns
		waitFor(t, ctx, "failed sync", `document.getElementById('syncline').textContent.startsWith('同步失败')`)
		if wait := eval[float64](t, ctx, `(fieldsyncApp.syncer.nextAt - Date.now()) / 1000`); wait < 100 || wait > 121 {
			t.Errorf("next try in %.0f s, want the server's 120 s", wait)
		}
		if hits.Load() == 0 {
			t.Error("no push reached the interception")
		}
		if _, err := chromedp.Call(ctx, fetch.Disable, cdp.Empty{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("online sync", func(t *testing.T) {
		step(t, ctx, "home", chromedp.Navigate(app+"#/"), chromedp.WaitVisible(chromedp.ID("syncbtn")), chromedp.Click(chromedp.ID("syncbtn")))
		waitFor(t, ctx, "outbox and uploads done", `fieldsyncApp.db.read(['outbox', 'uploads'], async t => (await t.count('outbox')) === 0 && (await t.all('uploads')).length === 2 && (await t.all('uploads')).every(u => u.state === 'done'))`)
		// A second sync changes nothing on the server.
		waitFor(t, ctx, "first sync over", `!fieldsyncApp.syncer.running`)
		if got := syncNow(t, ctx); got != "ok" {
			t.Errorf("second sync: %s", got)
		}
	})

	t.Run("server restored from a backup: lost mutations go again", func(t *testing.T) {
		// The next pull says the server holds none of the device's
		// mutations (as after a restore); every answered one is queued and
		// pushed again, and the server, which does hold them, applies
		// nothing twice.
		cursor := eval[string](t, ctx, `fieldsyncApp.db.getMeta('cursor')`)
		fctx, fcancel := context.WithCancel(ctx)
		defer fcancel()
		if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*/api/v1/sync/pull"}}}); err != nil {
			t.Fatal(err)
		}
		var hits atomic.Int32
		go func() {
			for ev, err := range chromedp.Events(fctx, fetch.RequestPaused) {
				if err != nil {
					return
				}
				if hits.Add(1) > 1 {
					chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
					continue
				}
				body, _ := json.Marshal(map[string]any{"protocol_version": 1, "ops": []any{}, "cursor": cursor, "has_more": false, "last_seq": 0})
				chromedp.Call(ctx, fetch.FulfillRequest, fetch.FulfillRequestParams{RequestID: ev.RequestID, ResponseCode: 200,
					ResponseHeaders: []*fetch.HeaderEntry{{Name: "Content-Type", Value: "application/json"}}, Body: body})
			}
		}()
		if got := syncNow(t, ctx); got != "ok" {
			t.Errorf("sync: %s", got)
		}
		fcancel()
		if _, err := chromedp.Call(ctx, fetch.Disable, cdp.Empty{}); err != nil {
			t.Fatal(err)
		}
		log := eval[string](t, ctx, `fieldsyncApp.db.read(['log'], t => t.all('log')).then(r => r.map(x => x.text).join('\n'))`)
		if !strings.Contains(log, "少了本设备已上传的 3 条记录") {
			t.Errorf("log:\n%s", log)
		}
		if n := eval[int](t, ctx, `fieldsyncApp.db.read(['outbox'], t => t.count('outbox'))`); n != 0 {
			t.Errorf("outbox %d after pushing the lost ones again", n)
		}
	})

	if n := count(`SELECT count(*) FROM visits WHERE device_id = ?`, devID); n != 2 {
		t.Fatalf("server holds %d visits of the device, want 2", n)
	}
	t.Run("rejected mutation shown with the reason", func(t *testing.T) {
		step(t, ctx, "outbox page", chromedp.Navigate(app+"#/outbox"), chromedp.WaitVisible(chromedp.ID("rejectedlist")))
		txt := eval[string](t, ctx, `document.getElementById('rejectedlist').textContent`)
		if !strings.Contains(txt, "validation_failed") || !strings.Contains(txt, "capacity_m3") {
			t.Errorf("rejected list: %q", txt)
		}
		if n := eval[int](t, ctx, `document.querySelectorAll('#outboxlist li').length`); n != 0 {
			t.Errorf("%d left in the outbox", n)
		}
	})
	t.Run("refused visit corrected and sent again", func(t *testing.T) {
		before := count(`SELECT count(*) FROM visits WHERE household_id = ?`, hhIDs[0])
		step(t, ctx, "redo", chromedp.Click(chromedp.CSS(`#rejectedlist a.btn`)), chromedp.WaitVisible(chromedp.ID("f_capacity_m3")))
		waitFor(t, ctx, "the refused answers in the form", `document.getElementById('f_site_name').value === 'x' && document.getElementById('f_capacity_m3').value === 'abc'`)
		eval[bool](t, ctx, `(() => { const c = document.getElementById('f_capacity_m3'); c.value = '30'; c.dispatchEvent(new Event('input', {bubbles: true})); return true; })()`)
		step(t, ctx, "photo", chromedp.SetUploadFiles(chromedp.CSS(`input[data-slot-gallery="progress"]`), []string{photos[0]}, chromedp.NodeReady))
		waitFor(t, ctx, "photo in the slot", `document.querySelectorAll('#slot_progress img').length === 1`)
		step(t, ctx, "save", chromedp.SetValue(chromedp.ID("gps_reason_pick"), "山谷里没有信号"), chromedp.Click(chromedp.ID("save")))
		waitFor(t, ctx, "saved", `location.hash.startsWith('#/hh/') && document.getElementById('main').dataset.shown === location.hash`)
		if r := syncNow(t, ctx); r != "ok" {
			t.Fatalf("sync: %s", r)
		}
		if n := count(`SELECT count(*) FROM visits WHERE household_id = ? AND json_extract(answers, '$.capacity_m3') = 30 AND json_extract(answers, '$.site_name') = 'x'`, hhIDs[0]); n != 1 {
			t.Errorf("corrected visit on the server %d times", n)
		}
		if n := count(`SELECT count(*) FROM visits WHERE household_id = ?`, hhIDs[0]); n != before+1 {
			t.Errorf("visits of the household: %d, then %d", before, n)
		}
		step(t, ctx, "outbox page", chromedp.Navigate(app+"#/outbox"), chromedp.WaitVisible(chromedp.ID("rejectedlist")))
		if txt := eval[string](t, ctx, `document.getElementById('rejectedlist').textContent`); !strings.Contains(txt, "已修改并重新保存") || strings.Contains(txt, "修改后重新提交") {
			t.Errorf("rejected list after the correction: %q", txt)
		}
	})
	t.Run("rework task shown and cleared", func(t *testing.T) {
		var hh, reason string
		err := db.QueryRow(`SELECT household_id, reason FROM tasks WHERE state = 'open' AND `+strings.Replace(inScope, "deleted = 0", "1", 1)+` ORDER BY id LIMIT 1`).Scan(&hh, &reason)
		if err != nil {
			t.Skipf("no open rework task in the worker's places: %v", err)
		}
		step(t, ctx, "household", chromedp.Navigate(app+"#/hh/"+hh), chromedp.WaitVisible(chromedp.ID("lastvisit")))
		if txt := eval[string](t, ctx, `(document.getElementById('tasks') || {}).textContent || ''`); !strings.Contains(txt, reason) || !strings.Contains(txt, "整改走访") {
			t.Errorf("household %s shows tasks %q, want the reason %q", hh, txt, reason)
		}

		// The corrective visit clears the task.
		var taskID, sentBack string
		var lon, lat float64
		db.QueryRow(`SELECT t.id, t.visit_id, h.lon, h.lat FROM tasks t JOIN households h ON h.id = t.household_id WHERE t.household_id = ? AND t.state = 'open' ORDER BY t.id LIMIT 1`, hh).Scan(&taskID, &sentBack, &lon, &lat)
		acc := 4.0
		if _, err := chromedp.Call(ctx, emulation.SetGeolocationOverride, emulation.SetGeolocationOverrideParams{Latitude: &lat, Longitude: &lon, Accuracy: &acc}); err != nil {
			t.Fatal(err)
		}
		step(t, ctx, "corrective visit", chromedp.Click(chromedp.CSS(`#tasks a.btn.primary`)), chromedp.WaitVisible(chromedp.ID("f_head_name")))
		waitFor(t, ctx, "GPS fix", `document.getElementById('gpsline').textContent.includes('±4 米')`)
		certificate := filepath.Join(t.TempDir(), "certificate.jpg")
		if err := os.WriteFile(certificate, evidencetest.JPEG(evidencetest.Photo{Seed: 300, Taken: taken}), 0o600); err != nil {
			t.Fatal(err)
		}
		acts := []chromedp.Action[chromedp.Void]{chromedp.SendKeys(chromedp.ID("f_head_name"), "复验户主")}
		for name, val := range map[string]string{"house_grade": "C", "retrofit_finished": "yes", "inspection_round": "reinspection", "inspection_result": "pass", "plaque_installed": "yes"} {
			acts = append(acts, chromedp.Click(chromedp.CSS(`input[name="`+name+`"][value="`+val+`"]`)))
		}
		for slot, file := range map[string]string{"before": photos[0], "after": photos[1], "certificate": certificate} {
			acts = append(acts, chromedp.SetUploadFiles(chromedp.CSS(`input[data-slot-gallery="`+slot+`"]`), []string{file}, chromedp.NodeReady))
		}
		step(t, ctx, "fill the inspection", acts...)
		eval[bool](t, ctx, `(() => { const d = document.getElementById('f_inspection_date'); d.value = '2026-12-06'; d.dispatchEvent(new Event('input', {bubbles: true})); return true; })()`)
		waitFor(t, ctx, "three photos", `document.querySelectorAll('#slot_before img, #slot_after img, #slot_certificate img').length === 3`)
		step(t, ctx, "save", chromedp.Click(chromedp.ID("save")))
		waitFor(t, ctx, "saved", `location.hash === '#/hh/`+hh+`'`)
		waitFor(t, ctx, "idle", `!fieldsyncApp.syncer.running`)
		if got := syncNow(t, ctx); got != "ok" {
			t.Fatalf("sync: %s", got)
		}
		var state, closedBy, corrects string
		db.QueryRow(`SELECT state, coalesce(closed_by_visit, '') FROM tasks WHERE id = ?`, taskID).Scan(&state, &closedBy)
		if closedBy != "" {
			db.QueryRow(`SELECT coalesce(corrects_visit_id, '') FROM visits WHERE id = ?`, closedBy).Scan(&corrects)
		}
		if state != "done" || corrects != sentBack {
			t.Errorf("task %s: state %s, closed by %q which corrects %q (want %s)", taskID, state, closedBy, corrects, sentBack)
		}
		if got := eval[string](t, ctx, `fieldsyncApp.db.read(['tasks'], t => t.get('tasks', '`+taskID+`')).then(x => x.state)`); got != "done" {
			t.Errorf("the device holds the task as %q after the sync", got)
		}
		if n := count(`SELECT count(*) FROM visit_evidence ve JOIN blobs b ON b.sha256 = ve.sha256 WHERE ve.visit_id = ?`, closedBy); n != 3 {
			t.Errorf("the corrective visit has %d present blobs, want 3", n)
		}
	})
	t.Run("phone width", func(t *testing.T) {
		if _, err := chromedp.Call(ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{Width: 360, Height: 800, DeviceScaleFactor: 2, Mobile: true}); err != nil {
			t.Fatal(err)
		}
		for _, page := range []string{"#/", "#/place/" + places[0], "#/hh/" + hhIDs[0], "#/visit/" + hhIDs[1] + "/house_retrofit_inspection", "#/outbox", "#/log"} {
			step(t, ctx, page, chromedp.Navigate(app+page), chromedp.WaitVisible(chromedp.CSS("main h1")))
			if over := eval[bool](t, ctx, `document.documentElement.scrollWidth > window.innerWidth + 1`); over {
				t.Errorf("%s is wider than 360 px (%d)", page, eval[int](t, ctx, `document.documentElement.scrollWidth`))
			}
		}
		// Touch targets: every button and link-button at least 44 px high.
		small := eval[int](t, ctx, `[...document.querySelectorAll('button, .btn')].filter(b => b.offsetParent && b.getBoundingClientRect().height < 44).length`)
		if small > 0 {
			t.Errorf("%d buttons under 44 px", small)
		}
	})
	for i, id := range visitIDs {
		var hh, answers string
		var lon, lat, acc float64
		if err := db.QueryRow(`SELECT household_id, answers, lon, lat, accuracy_m FROM visits WHERE id = ?`, id).Scan(&hh, &answers, &lon, &lat, &acc); err != nil {
			t.Fatalf("visit %s: %v", id, err)
		}
		if hh != hhIDs[i] || !strings.Contains(answers, `"stage":"built"`) || !strings.Contains(answers, `"capacity_m3":24.5`) || !strings.Contains(answers, `"due_date":"2027-03-01"`) {
			t.Errorf("visit %s: household %s answers %s", id, hh, answers)
		}
		if d := lon - lons[i]; d > 1e-6 || d < -1e-6 || acc != 6 {
			t.Errorf("visit %s at %f,%f ±%f, want %f,%f ±6", id, lon, lat, acc, lons[i], lats[i])
		}
		var sum string
		if err := db.QueryRow(`SELECT sha256 FROM visit_evidence WHERE visit_id = ? AND slot = 'progress'`, id).Scan(&sum); err != nil {
			t.Fatalf("evidence of %s: %v", id, err)
		}
		if count(`SELECT count(*) FROM blobs WHERE sha256 = ?`, sum) != 1 {
			t.Fatalf("blob %s not present", sum)
		}
		req, _ := http.NewRequest("GET", base+"/api/v1/evidence/"+sum, nil)
		req.Header.Set("Authorization", "Bearer "+en.AdminToken)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		stored, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("download %s: %d", sum, res.StatusCode)
		}
		cfg, err := jpeg.DecodeConfig(bytes.NewReader(stored))
		if err != nil || max(cfg.Width, cfg.Height) != 1600 {
			t.Errorf("stored photo %dx%d (%v), want downscaled to 1600 on the long side", cfg.Width, cfg.Height, err)
		}
		x, err := exif.Decode(bytes.NewReader(stored))
		if err != nil {
			t.Fatalf("stored photo has no EXIF: %v", err)
		}
		glat, glon, err := x.LatLong()
		if err != nil || glat-lats[i] > 1e-5 || lats[i]-glat > 1e-5 || glon-lons[i] > 1e-5 || lons[i]-glon > 1e-5 {
			t.Errorf("stored EXIF GPS %f,%f (%v), want %f,%f", glat, glon, err, lats[i], lons[i])
		}
		if tm, err := x.DateTime(); err != nil || !tm.Equal(taken) && tm.Format("2006-01-02 15:04") != "2026-12-06 10:30" {
			t.Errorf("stored EXIF time %v (%v)", tm, err)
		}
	}
	t.Run("revoked device locks", func(t *testing.T) {
		apiJSON(t, "POST", base+"/api/v1/devices/"+devID+"/revoke", en.AdminToken, map[string]any{}, nil)
		if got := syncNow(t, ctx); got != "revoked" {
			t.Errorf("sync of a revoked device: %q", got)
		}
		step(t, ctx, "home", chromedp.Navigate(app+"#/places"))
		waitFor(t, ctx, "lock screen", `document.querySelector('main h1').textContent === '本设备已被停用'`)
		// The unsent work stays readable.
		step(t, ctx, "outbox", chromedp.Navigate(app+"#/outbox"), chromedp.WaitVisible(chromedp.ID("outboxlist")))
	})
	for _, p := range problems() {
		if strings.Contains(p, "status of 401") {
			continue // the revoked device's last try
		}
		if strings.Contains(p, "status of 503") && strings.Contains(p, "/api/v1/sync/push") {
			continue // the 503 the test itself answered
		}
		t.Errorf("page problem: %s", p)
	}
}
