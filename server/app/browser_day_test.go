package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/chromedp"
	"github.com/rwcarlsen/goexif/exif"

	"fieldsync/server/demo"
	"fieldsync/server/evidence/evidencetest"
)

// dayVisits and dayPhotos are a grid worker's day in "A day offline".
const (
	dayVisits = 20
	dayPhotos = 2 * dayVisits
)

// enrollWorker creates a field worker for places, issues an enrollment
// code and returns it with the admin's token.
func enrollWorker(t *testing.T, base, username, display string, places ...string) (code, adminToken string) {
	t.Helper()
	var login struct{ Token string }
	apiJSON(t, "POST", base+"/api/v1/auth/login", "", map[string]string{"username": "admin", "password": demo.DemoPassword}, &login)
	var u struct{ ID int64 }
	apiJSON(t, "POST", base+"/api/v1/users", login.Token, map[string]any{"username": username, "display_name": display,
		"role": "field_worker", "password": demo.DemoPassword, "place_codes": places}, &u)
	var ec struct{ Code string }
	apiJSON(t, "POST", fmt.Sprintf("%s/api/v1/users/%d/enrollment-codes", base, u.ID), login.Token, map[string]any{}, &ec)
	return ec.Code, login.Token
}

// TestBrowser_FieldAppFullDay is "A day offline" of issue 14: a new
// device enrolls by code and syncs the whole demo village; the network
// goes off; the worker records 20 visits with GPS and 40 photos (JPEGs
// with EXIF GPS and capture time, half of them big enough to be
// downscaled), starts a 21st visit as a draft, reloads (the app comes
// from the service worker), and the browser is killed. A new browser on
// the same profile finds the outbox and the draft intact, goes online and
// syncs. The server then holds exactly 20 new visits and 40 verified blobs
// whose stored bytes carry the EXIF GPS and time, the console shows them,
// and the app has dropped the uploaded photos' bytes from IndexedDB.
//
// It also checks "No network at all": with the network off from the
// first request of a fresh page load, and with every API request hanging,
// the home screen still renders from the cache.
func TestBrowser_FieldAppFullDay(t *testing.T) {
	base, data := testServer(t)
	db, count := openServerDB(t, data)
	code, adminToken := enrollWorker(t, base, "wangge_quan", "钱玉梅(网格员)", demo.VillageCode)
	inVillage := `FROM households h JOIN places p ON p.code = h.place_code
		WHERE p.path LIKE (SELECT path FROM places WHERE code = ?) || '%' AND h.deleted = 0`
	wantHH := count(`SELECT count(*) `+inVillage, demo.VillageCode)
	if wantHH < 500 {
		t.Fatalf("the demo village has %d households", wantHH)
	}
	visitsBefore := count(`SELECT count(*) FROM visits`)

	profile := t.TempDir()
	ctx, problems, kill := newBrowserOn(t, 800, 1280, profile)
	app := base + "/app/"
	t.Run("enroll and sync the village", func(t *testing.T) {
		step(t, ctx, "open app", chromedp.Navigate(app), chromedp.WaitVisible(chromedp.ID("code")))
		step(t, ctx, "type the code", chromedp.SendKeys(chromedp.ID("code"), code), chromedp.SendKeys(chromedp.ID("devname"), "钱玉梅的平板"))
		appShot(t, ctx, "enroll")
		step(t, ctx, "enroll", chromedp.Click(chromedp.ID("enrollbtn")))
		waitFor(t, ctx, "the village after the first sync", fmt.Sprintf(`(document.getElementById('hhcount') || {}).textContent === '%d 户'`, wantHH))
		waitFor(t, ctx, "service worker in control", `!!navigator.serviceWorker.controller`)
		waitFor(t, ctx, "first sync over", `!fieldsyncApp.syncer.running`)
	})
	devID := eval[string](t, ctx, `fieldsyncApp.db.getMeta('device_id')`)
	if devID == "" {
		t.Fatal("not enrolled")
	}

	t.Run("no network at all", func(t *testing.T) {
		// A fresh page load with the network off from its first request.
		tab, cancel := chromedp.NewContext(ctx)
		defer cancel()
		if err := chromedp.Do(tab); err != nil {
			t.Fatal(err)
		}
		setOffline(t, tab, true)
		start := time.Now()
		step(t, tab, "open offline", chromedp.Navigate(app), chromedp.WaitVisible(chromedp.ID("hhcount")))
		t.Logf("home screen with no network: %v", time.Since(start).Round(time.Millisecond))
		if got := eval[string](t, tab, `document.getElementById('hhcount').textContent`); got != fmt.Sprintf("%d 户", wantHH) {
			t.Errorf("offline home shows %q", got)
		}
		if sw := eval[bool](t, tab, `performance.getEntriesByType('navigation')[0].workerStart > 0 && !!navigator.serviceWorker.controller && !navigator.onLine`); !sw {
			t.Error("the offline page did not come from the service worker")
		}
		cancel()

		// Online, but every API request hangs (a link that connects and
		// then carries nothing): the screens still render and respond.
		tab2, cancel2 := chromedp.NewContext(ctx)
		defer cancel2()
		if err := chromedp.Do(tab2); err != nil {
			t.Fatal(err)
		}
		if _, err := chromedp.Call(tab2, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*/api/*"}}}); err != nil {
			t.Fatal(err)
		}
		step(t, tab2, "open with a hanging API", chromedp.Navigate(app), chromedp.WaitVisible(chromedp.ID("hhcount")))
		waitFor(t, tab2, "a sync waiting on the network", `fieldsyncApp.syncer.running`)
		step(t, tab2, "places while the sync hangs", chromedp.Click(chromedp.ID("go-places")), chromedp.WaitVisible(chromedp.CSS("#placelist li")))
		cancel2() // closing the tab ends its hanging sync and frees the sync lock
	})

	// The households of the day, and their photos: EXIF GPS at the house,
	// capture times through the morning; every other photo 2400×1800 (the
	// app downscales it and carries the EXIF over), the others 1200×900
	// (kept byte for byte).
	type house struct {
		id       string
		lon, lat float64
	}
	var houses []house
	rows, err := db.Query(`SELECT h.id, h.lon, h.lat `+inVillage+` AND h.lon IS NOT NULL ORDER BY h.id LIMIT ?`, demo.VillageCode, dayVisits+1)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var h house
		if err := rows.Scan(&h.id, &h.lon, &h.lat); err != nil {
			t.Fatal(err)
		}
		houses = append(houses, h)
	}
	rows.Close()
	if len(houses) != dayVisits+1 {
		t.Fatalf("%d households with a location", len(houses))
	}
	cst := time.FixedZone("CST", 8*3600)
	photoDir := t.TempDir()
	taken := make([]time.Time, dayPhotos)
	photoFiles := make([]string, dayPhotos)
	for i := range dayPhotos {
		hh := houses[i/2]
		taken[i] = time.Date(2026, 12, 7, 8, 0, 0, 0, cst).Add(time.Duration(i) * 7 * time.Minute)
		w, h := 1200, 900
		if i%2 == 0 {
			w, h = 2400, 1800
		}
		jpg := evidencetest.JPEG(evidencetest.Photo{Seed: uint64(1000 + i), Width: w, Height: h, Taken: taken[i], TakenOffset: true,
			GPSTime: taken[i].UTC(), GPS: &[2]float64{hh.lon, hh.lat}})
		photoFiles[i] = filepath.Join(photoDir, fmt.Sprintf("IMG_%04d.jpg", i+1))
		if err := os.WriteFile(photoFiles[i], jpg, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	setOffline(t, ctx, true)
	if _, err := chromedp.CallBrowser(ctx, browser.SetPermission, browser.SetPermissionParams{
		Permission: &browser.PermissionDescriptor{Name: "geolocation"}, Setting: "granted", Origin: strings.TrimSuffix(base, "/")}); err != nil {
		t.Fatalf("grant geolocation: %v", err)
	}
	t.Run("a day of visits offline", func(t *testing.T) {
		step(t, ctx, "places", chromedp.Navigate(app+"#/places"), chromedp.WaitVisible(chromedp.CSS("#placelist li")))
		appShot(t, ctx, "places")
		for i := range dayVisits {
			hh := houses[i]
			// Each house a better fix than the last (the form keeps the
			// best one it saw), within the form's 30 m.
			acc := 25.0 - float64(i)
			if _, err := chromedp.Call(ctx, emulation.SetGeolocationOverride, emulation.SetGeolocationOverrideParams{Latitude: &hh.lat, Longitude: &hh.lon, Accuracy: &acc}); err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				var place string
				db.QueryRow(`SELECT place_code FROM households WHERE id = ?`, hh.id).Scan(&place)
				step(t, ctx, "households list", chromedp.Navigate(app+"#/place/"+place), chromedp.WaitVisible(chromedp.CSS("#hhlist .hh")))
				appShot(t, ctx, "households")
				step(t, ctx, "household", chromedp.Navigate(app+"#/hh/"+hh.id), chromedp.WaitVisible(chromedp.ID("formlist")))
				appShot(t, ctx, "household")
			}
			step(t, ctx, "open form", chromedp.Navigate(app+"#/visit/"+hh.id+"/water_cellar_progress"), chromedp.WaitVisible(chromedp.ID("f_site_name")))
			fixGPS(t, ctx, hh.lat, hh.lon, acc)
			step(t, ctx, "fill",
				chromedp.SendKeys(chromedp.ID("f_site_name"), fmt.Sprintf("%d号水窖", i+1)),
				chromedp.SendKeys(chromedp.ID("f_capacity_m3"), "24"),
				chromedp.Click(chromedp.CSS(`input[name="stage"][value="excavated"]`)),
				chromedp.SetUploadFiles(chromedp.CSS(`input[data-slot-gallery="progress"]`), photoFiles[2*i:2*i+2], chromedp.NodeReady))
			eval[bool](t, ctx, `(() => { const d = document.getElementById('f_due_date'); d.value = '2027-04-30'; d.dispatchEvent(new Event('input', {bubbles: true})); return true; })()`)
			waitFor(t, ctx, "two photos in the slot", `document.querySelectorAll('#slot_progress img').length === 2`)
			if i == 0 {
				appShot(t, ctx, "visit")
			}
			step(t, ctx, "save", chromedp.Click(chromedp.ID("save")))
			waitFor(t, ctx, "saved", `location.hash === '#/hh/`+hh.id+`' && !!document.getElementById('formlist')`)
		}
		// The next visit is begun and left as a draft.
		next := houses[dayVisits]
		step(t, ctx, "a draft", chromedp.Navigate(app+"#/visit/"+next.id+"/water_cellar_progress"), chromedp.WaitVisible(chromedp.ID("f_site_name")))
		waitFor(t, ctx, "the new draft written", `fieldsyncApp.db.read(['drafts'], t => t.all('drafts')).then(d => d.length === 1 && d[0].household_id === '`+next.id+`')`)
		eval[bool](t, ctx, `(() => { const e = document.getElementById('f_site_name'); e.value = '未完成的水窖'; e.dispatchEvent(new Event('input', {bubbles: true})); return true; })()`)
		waitFor(t, ctx, "draft saved", `fieldsyncApp.db.read(['drafts'], t => t.all('drafts')).then(d => d.length === 1 && d[0].answers.site_name === '未完成的水窖')`)
		if n := eval[int](t, ctx, `fieldsyncApp.db.read(['outbox'], t => t.count('outbox'))`); n != dayVisits {
			t.Fatalf("outbox holds %d, want %d", n, dayVisits)
		}
		step(t, ctx, "outbox", chromedp.Navigate(app+"#/outbox"), chromedp.WaitVisible(chromedp.ID("outboxlist")))
		appShot(t, ctx, "outbox")
	})

	// photoState: rows in the photos store, how many still hold their
	// bytes, and those bytes.
	type photoState struct{ Rows, WithBlob, Bytes int }
	readPhotos := func(ctx context.Context) photoState {
		return eval[photoState](t, ctx, `fieldsyncApp.db.read(['photos'], t => t.all('photos')).then(r => ({Rows: r.length,
			WithBlob: r.filter(p => p.blob).length, Bytes: r.reduce((a, p) => a + (p.blob ? p.blob.size : 0), 0)}))`)
	}
	t.Run("reload offline", func(t *testing.T) {
		step(t, ctx, "reload", chromedp.Navigate(app+"#/outbox"), chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("outboxlist")))
		if sw := eval[bool](t, ctx, `performance.getEntriesByType('navigation')[0].workerStart > 0 && !navigator.onLine`); !sw {
			t.Error("the reloaded page did not come from the service worker while offline")
		}
		if n := eval[int](t, ctx, `document.querySelectorAll('#outboxlist li').length`); n != dayVisits {
			t.Errorf("outbox page lists %d, want %d", n, dayVisits)
		}
		if n := count(`SELECT count(*) FROM visits WHERE device_id = ?`, devID); n != 0 {
			t.Errorf("the server has %d visits of the device while it is offline", n)
		}
	})

	// The browser dies (no orderly shutdown); a new one opens the same
	// profile, still offline.
	kill()
	ctx, problems2, _ := newBrowserOn(t, 800, 1280, profile)
	setOffline(t, ctx, true)
	var before photoState
	t.Run("a new browser on the same profile", func(t *testing.T) {
		step(t, ctx, "open offline", chromedp.Navigate(app+"#/outbox"), chromedp.WaitVisible(chromedp.ID("outboxlist")))
		if n := eval[int](t, ctx, `document.querySelectorAll('#outboxlist li').length`); n != dayVisits {
			t.Errorf("outbox page lists %d after the restart, want %d", n, dayVisits)
		}
		if got := eval[string](t, ctx, `fieldsyncApp.db.read(['drafts'], t => t.all('drafts')).then(d => d.map(x => x.answers.site_name).join())`); got != "未完成的水窖" {
			t.Errorf("drafts after the restart: %q", got)
			t.Log(eval[string](t, ctx, `fieldsyncApp.db.read(['drafts', 'visits'], async t => { const vs = await t.all('visits'); return (await t.all('drafts')).map(x => JSON.stringify({...x, saved: vs.filter(v => v.household_id === x.household_id && v.local).map(v => v.id)})).join('\n'); })`))
		}
		before = readPhotos(ctx)
		if before.Rows != dayPhotos || before.WithBlob != dayPhotos {
			t.Errorf("photos after the restart: %+v, want %d with their bytes", before, dayPhotos)
		}
	})

	idbUsage := func() int64 {
		return int64(eval[float64](t, ctx, `navigator.storage.estimate().then(e => (e.usageDetails && e.usageDetails.indexedDB) || e.usage)`))
	}
	usageBefore := idbUsage()
	t.Run("online sync", func(t *testing.T) {
		start := time.Now()
		setOffline(t, ctx, false) // the app syncs by itself when the link returns
		step(t, ctx, "home", chromedp.Navigate(app+"#/"), chromedp.WaitVisible(chromedp.ID("syncbtn")))
		deadline := time.Now().Add(3 * time.Minute) // forty uploads on a busy machine
		for {
			done := eval[bool](t, ctx, `fieldsyncApp.db.read(['outbox', 'uploads'], async t => (await t.count('outbox')) === 0 &&
				(await t.all('uploads')).every(u => u.state === 'done' || u.state === 'failed'))`)
			if done {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sync not done after 3 minutes: %s", eval[string](t, ctx, `document.getElementById('syncline').textContent`))
			}
			time.Sleep(500 * time.Millisecond)
		}
		waitFor(t, ctx, "sync over", `!fieldsyncApp.syncer.running`)
		if n := eval[int](t, ctx, `fieldsyncApp.db.read(['uploads'], t => t.all('uploads')).then(r => r.filter(u => u.state === 'done').length)`); n != dayPhotos {
			t.Errorf("%d uploads done, want %d", n, dayPhotos)
		}
		t.Logf("sync of %d visits and %d photos on loopback: %v", dayVisits, dayPhotos, time.Since(start).Round(time.Millisecond))
		if got := syncNow(t, ctx); got != "ok" {
			t.Errorf("a second sync: %s", got)
		}
		step(t, ctx, "log", chromedp.Navigate(app+"#/log"), chromedp.WaitVisible(chromedp.ID("log")))
		appShot(t, ctx, "log")
		step(t, ctx, "home", chromedp.Navigate(app+"#/"), chromedp.WaitVisible(chromedp.ID("syncbtn")))
		appShot(t, ctx, "home")
	})

	t.Run("uploaded photos leave IndexedDB", func(t *testing.T) {
		after := readPhotos(ctx)
		if after.Rows != dayPhotos || after.WithBlob != 0 || after.Bytes != 0 {
			t.Errorf("photos store after the sync: %+v, want %d rows without bytes (before: %d bytes)", after, dayPhotos, before.Bytes)
		}
		if got := eval[string](t, ctx, `fieldsyncApp.db.read(['drafts'], t => t.all('drafts')).then(d => d.map(x => x.answers.site_name).join())`); got != "未完成的水窖" {
			t.Errorf("the draft after the sync: %q", got)
		}
		t.Logf("photo bytes in IndexedDB: %d before the sync, %d after; IndexedDB usage estimate %d -> %d bytes", before.Bytes, after.Bytes, usageBefore, idbUsage())
	})

	// The server: exactly the day's visits, each photo once, verified,
	// with EXIF GPS and time in the stored bytes.
	if n := count(`SELECT count(*) FROM visits`) - visitsBefore; n != dayVisits {
		t.Errorf("the server gained %d visits, want %d", n, dayVisits)
	}
	if n := count(`SELECT count(*) FROM visits WHERE device_id = ?`, devID); n != dayVisits {
		t.Errorf("the server holds %d visits of the device, want %d", n, dayVisits)
	}
	type evRow struct{ visit, hh, sha string }
	var evs []evRow
	rows, err = db.Query(`SELECT v.id, v.household_id, ve.sha256 FROM visits v JOIN visit_evidence ve ON ve.visit_id = v.id WHERE v.device_id = ? ORDER BY v.household_id, ve.sha256`, devID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var e evRow
		rows.Scan(&e.visit, &e.hh, &e.sha)
		evs = append(evs, e)
	}
	rows.Close()
	if len(evs) != dayPhotos {
		t.Fatalf("%d evidence rows, want %d", len(evs), dayPhotos)
	}
	// The server reads EXIF when it stores a blob, or later in the
	// background when it was busy: wait for that analysis.
	unanalysed := `SELECT count(*) FROM visit_evidence ve JOIN visits v ON v.id = ve.visit_id JOIN blobs b ON b.sha256 = ve.sha256
		WHERE v.device_id = ? AND b.analyzed_at IS NULL`
	for deadline := time.Now().Add(2 * time.Minute); count(unanalysed, devID) > 0 && time.Now().Before(deadline); {
		time.Sleep(250 * time.Millisecond)
	}
	houseOf := map[string]house{}
	for _, h := range houses {
		houseOf[h.id] = h
	}
	takenSeen := map[string]bool{}
	for _, e := range evs {
		var exifTime sql.NullString
		var exifLon, exifLat sql.NullFloat64
		if err := db.QueryRow(`SELECT exif_time, exif_lon, exif_lat FROM blobs WHERE sha256 = ?`, e.sha).Scan(&exifTime, &exifLon, &exifLat); err != nil {
			t.Errorf("blob %s of visit %s: %v", e.sha, e.visit, err)
			continue
		}
		h := houseOf[e.hh]
		if !exifLon.Valid || !near(exifLon.Float64, h.lon) || !near(exifLat.Float64, h.lat) || !exifTime.Valid {
			t.Errorf("blob %s: server read EXIF at %v,%v time %v, want %f,%f", e.sha, exifLon, exifLat, exifTime, h.lon, h.lat)
		}
		req, _ := http.NewRequest("GET", base+"/api/v1/evidence/"+e.sha, nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		stored, _ := io.ReadAll(res.Body)
		res.Body.Close()
		sum := sha256.Sum256(stored)
		if res.StatusCode != 200 || hex.EncodeToString(sum[:]) != e.sha {
			t.Errorf("download %s: %d, %d bytes hashing to %x", e.sha, res.StatusCode, len(stored), sum)
			continue
		}
		x, err := exif.Decode(bytes.NewReader(stored))
		if err != nil {
			t.Errorf("stored blob %s has no EXIF: %v", e.sha, err)
			continue
		}
		lat, lon, err := x.LatLong()
		if err != nil || !near(lat, h.lat) || !near(lon, h.lon) {
			t.Errorf("stored blob %s: EXIF GPS %f,%f (%v), want %f,%f", e.sha, lat, lon, err, h.lat, h.lon)
		}
		tm, err := x.DateTime()
		if err != nil {
			t.Errorf("stored blob %s: EXIF time: %v", e.sha, err)
			continue
		}
		takenSeen[tm.Format("2006-01-02 15:04:05")] = true
	}
	for i, tk := range taken {
		if !takenSeen[tk.Format("2006-01-02 15:04:05")] {
			t.Errorf("no stored photo carries the capture time of photo %d (%s)", i+1, tk.Format(time.DateTime))
		}
	}

	t.Run("the console shows them", func(t *testing.T) {
		jar, _ := cookiejar.New(nil)
		client := &http.Client{Jar: jar}
		res, err := client.Post(base+"/api/v1/auth/login", "application/json", strings.NewReader(`{"username":"zhen_supervisor","password":"`+demo.DemoPassword+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("supervisor login: %d", res.StatusCode)
		}
		byHH := map[string][]string{}
		for _, e := range evs {
			byHH[e.hh] = append(byHH[e.hh], e.sha)
		}
		for hh, shas := range byHH {
			res, err := client.Get(base + "/console/households/" + hh)
			if err != nil {
				t.Fatal(err)
			}
			page, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				t.Fatalf("console household %s: %d", hh, res.StatusCode)
			}
			for _, sha := range shas {
				if !bytes.Contains(page, []byte("/api/v1/evidence/"+sha+"/thumb")) {
					t.Errorf("console household %s does not show photo %s", hh, sha)
				}
			}
			if !bytes.Contains(page, []byte("号水窖")) {
				t.Errorf("console household %s does not show the visit's answers", hh)
			}
		}
	})

	for _, p := range append(problems(), problems2()...) {
		if strings.Contains(p, "ERR_INTERNET_DISCONNECTED") || strings.Contains(p, "Failed to load resource") {
			continue // offline on purpose
		}
		t.Errorf("page problem: %s", p)
	}
}

// near says two coordinates agree to about a metre (EXIF stores them as
// rationals).
func near(a, b float64) bool { return a-b < 1e-5 && b-a < 1e-5 }
