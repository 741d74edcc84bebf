package app

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"fieldsync/mobileclient/webapp"
	"fieldsync/server/demo"
	"fieldsync/server/evidence/evidencetest"
)

// The emulated 2G link of issue 14's figures: 50 kbps each way, 800 ms
// round trip.
const (
	link2GBytesPerSec = 50_000 / 8
	link2GRTT         = 800 * time.Millisecond
)

// emulateLink throttles the tab's link (bytesPerSec < 0: no limit).
func emulateLink(t *testing.T, ctx context.Context, bytesPerSec float64, rtt time.Duration) {
	t.Helper()
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	conds := []*network.Conditions{}
	if bytesPerSec >= 0 {
		conds = append(conds, &network.Conditions{Latency: float64(rtt.Milliseconds()), DownloadThroughput: bytesPerSec, UploadThroughput: bytesPerSec})
	}
	if _, err := chromedp.Call(ctx, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{MatchedNetworkConditions: conds}); err != nil {
		t.Fatalf("emulate link: %v", err)
	}
}

// pollJS waits up to limit for a JS predicate (figures can take minutes).
func pollJS(t *testing.T, ctx context.Context, what, js string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ok, err := chromedp.Run(tctx, chromedp.Evaluate[bool]("(async () => !!(await ("+js+")))()", chromedp.EvalAwaitPromise))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func envInt(name string, dflt int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return dflt
}

// TestBrowser_FieldAppFigures measures the field app for the closing note
// of issue 14. It runs only with FIELDSYNC_APP_FIGURES=1 and asserts no
// times: it prints them. The sync over 2G takes long (8 MB at 50 kbps is
// over 20 minutes); FIELDSYNC_APP_FIGURES_VISITS (default 20, two 200 KB
// photos each) makes it shorter.
func TestBrowser_FieldAppFigures(t *testing.T) {
	if os.Getenv("FIELDSYNC_APP_FIGURES") == "" {
		t.Skip("set FIELDSYNC_APP_FIGURES=1 to measure the field app's figures")
	}
	base, _ := testServer(t)
	// Everything the browser sends and receives goes through a counting
	// proxy: the bytes on the link, and the requests (each at least one
	// round trip).
	var upBytes, downBytes, requests atomic.Int64
	target, _ := url.Parse(base)
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		r.Body = &countingBody{r.Body, &upBytes}
		rp.ServeHTTP(&countingWriter{w, &downBytes}, r)
	}))
	defer proxy.Close()
	app := proxy.URL + "/app/"

	// 1. The shell's compressed transfer size: every file the service
	// worker caches, as the server sends it to a browser that accepts gzip.
	sw, err := webapp.FS().Open("sw.js")
	if err != nil {
		t.Fatal(err)
	}
	swSrc, _ := io.ReadAll(sw)
	sw.Close()
	list := regexp.MustCompile(`(?s)const SHELL = \[(.*?)\];`).FindSubmatch(swSrc)
	if list == nil {
		t.Fatal("no SHELL list in sw.js")
	}
	var shellGz, shellRaw int64
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	for _, m := range regexp.MustCompile(`'([^']+)'`).FindAllSubmatch(list[1], -1) {
		p := string(m[1])
		req, _ := http.NewRequest("GET", base+"/app/"+strings.TrimPrefix(p, "./"), nil)
		req.Header.Set("Accept-Encoding", "gzip")
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		shellGz += int64(len(b))
		req.Header.Del("Accept-Encoding")
		if res, err = client.Do(req); err == nil {
			b, _ = io.ReadAll(res.Body)
			res.Body.Close()
			shellRaw += int64(len(b))
		}
	}
	t.Logf("FIGURE app shell: %.1f KB on the wire with gzip (%.1f KB uncompressed), %d files", float64(shellGz)/1024, float64(shellRaw)/1024, len(regexp.MustCompile(`'([^']+)'`).FindAllSubmatch(list[1], -1)))

	// 2. Time to usable on 2G, empty cache, then warm.
	ctx, _ := newBrowser(t, 800, 1280)
	emulateLink(t, ctx, link2GBytesPerSec, link2GRTT)
	timed := func(what string, actions ...chromedp.Action[chromedp.Void]) time.Duration {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		start := time.Now()
		if err := chromedp.Do(tctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return time.Since(start)
	}
	up0, down0 := upBytes.Load(), downBytes.Load()
	cold := timed("cold load", chromedp.Navigate(app), chromedp.WaitVisible(chromedp.ID("enrollbtn")))
	coldDown := downBytes.Load() - down0
	t.Logf("FIGURE time to usable, empty cache, 2G (50 kbps, 800 ms RTT): %v (%.1f KB down, %.1f KB up before the enroll screen)", cold.Round(10*time.Millisecond), float64(coldDown)/1024, float64(upBytes.Load()-up0)/1024)
	start := time.Now()
	pollJS(t, ctx, "service worker installed", `!!navigator.serviceWorker.controller`, 10*time.Minute)
	t.Logf("FIGURE service worker installed (shell cached) %v after the screen was usable, 2G", time.Since(start).Round(10*time.Millisecond))
	warm := timed("warm load", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("enrollbtn")))
	t.Logf("FIGURE time to usable, warm cache (service worker), 2G: %v", warm.Round(10*time.Millisecond))

	// Enroll on an open link.
	emulateLink(t, ctx, -1, 0)
	code, _ := enrollWorker(t, base, "wangge_figures", "测量员", demo.VillageCode)
	step(t, ctx, "enroll", chromedp.SendKeys(chromedp.ID("code"), code), chromedp.Click(chromedp.ID("enrollbtn")))
	pollJS(t, ctx, "first sync", `/^[1-9][0-9]* 户$/.test((document.getElementById('hhcount') || {}).textContent || '') && !fieldsyncApp.syncer.running`, 2*time.Minute)
	nHH := eval[int](t, ctx, `fieldsyncApp.db.read(['households'], t => t.count('households'))`)

	// 3. IndexedDB bytes per 1,000 households: 2,000 more households
	// shaped like the real ones, and the storage estimate before and after.
	usage := func() float64 {
		return eval[float64](t, ctx, `navigator.storage.estimate().then(e => (e.usageDetails && e.usageDetails.indexedDB) || e.usage)`)
	}
	u0 := usage()
	eval[bool](t, ctx, `fieldsyncApp.db.write(['households', 'places'], async t => {
		const real = await t.all('households', null, 50);
		await t.put('places', {code: 'FIG', name: '测量组', level: 'group', parent_code: '`+demo.VillageCode+`'});
		for (let i = 0; i < 2000; i++) {
			const r = real[i % real.length];
			await t.put('households', {...structuredClone(r), id: 'fig-' + String(i).padStart(5, '0'), place_code: 'FIG',
				fields: {...r.fields, head_name: (r.fields.head_name || '户主') + i, address: '测量组' + (i + 1) + '号'}});
		}
	}).then(() => true)`)
	time.Sleep(2 * time.Second) // let the storage estimate catch up
	u1 := usage()
	t.Logf("FIGURE IndexedDB: %.0f KB per 1,000 households (estimate %.0f -> %.0f KB for 2,000 added; the device held %d real households before: %.0f KB in all)",
		(u1-u0)/2/1024, u0/1024, u1/1024, nHH, u0/1024)

	// 4. Rendering 2,000 households (the list of one place).
	var renders []float64
	for range 5 {
		step(t, ctx, "home", chromedp.Navigate(app+"#/"), chromedp.WaitVisible(chromedp.ID("syncbtn")))
		renders = append(renders, eval[float64](t, ctx, `new Promise(ok => { const m = document.getElementById('main'); const t0 = performance.now();
			m.addEventListener('rendered', () => requestAnimationFrame(() => ok(performance.now() - t0)), {once: true}); location.hash = '#/place/FIG'; })`))
	}
	if n := eval[string](t, ctx, `document.getElementById('hhcount').textContent`); n != "共 2000 户" {
		t.Errorf("the measured list shows %q", n)
	}
	t.Logf("FIGURE render 2,000 households (route to first paint): median %.0f ms of %v", median(renders), fmtMs(renders))

	// 5. One visit, from the tap on 保存走访 to the outbox row written.
	hhIDs := eval[[]string](t, ctx, `fieldsyncApp.db.read(['households'], t => t.all('households', null, 5)).then(r => r.map(h => h.id))`)
	lat, lon, acc := 25.0, 103.7, 5.0
	if _, err := chromedp.CallBrowser(ctx, browser.SetPermission, browser.SetPermissionParams{
		Permission: &browser.PermissionDescriptor{Name: "geolocation"}, Setting: "granted", Origin: proxy.URL}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, emulation.SetGeolocationOverride, emulation.SetGeolocationOverrideParams{Latitude: &lat, Longitude: &lon, Accuracy: &acc}); err != nil {
		t.Fatal(err)
	}
	photoDir := t.TempDir()
	small := filepath.Join(photoDir, "small.jpg")
	os.WriteFile(small, evidencetest.JPEG(evidencetest.Photo{Seed: 5, Width: 1200, Height: 900, Taken: time.Now()}), 0o600)
	setupOffline := func(off bool) { setOffline(t, ctx, off) }
	setupOffline(true) // the visit is saved offline: no sync starts behind it
	var taps []float64
	for i := range 5 {
		step(t, ctx, "form", chromedp.Navigate(app+"#/visit/"+hhIDs[i]+"/water_cellar_progress"), chromedp.WaitVisible(chromedp.ID("f_site_name")))
		waitFor(t, ctx, "the draft", `fieldsyncApp.db.read(['drafts'], t => t.all('drafts')).then(d => d.some(x => x.household_id === '`+hhIDs[i]+`'))`)
		fixGPS(t, ctx, lat, lon, acc)
		step(t, ctx, "fill", chromedp.SendKeys(chromedp.ID("f_site_name"), fmt.Sprintf("测量%d", i)), chromedp.SendKeys(chromedp.ID("f_capacity_m3"), "24"),
			chromedp.Click(chromedp.CSS(`input[name="stage"][value="planned"]`)),
			chromedp.SetUploadFiles(chromedp.CSS(`input[data-slot-gallery="progress"]`), []string{small}, chromedp.NodeReady))
		eval[bool](t, ctx, `(() => { const d = document.getElementById('f_due_date'); d.value = '2027-05-01'; d.dispatchEvent(new Event('input', {bubbles: true})); return true; })()`)
		waitFor(t, ctx, "photo", `document.querySelectorAll('#slot_progress img').length === 1`)
		ms := eval[float64](t, ctx, `new Promise(ok => { const t0 = performance.now(); setTimeout(() => ok(-1), 10000);
			addEventListener('hashchange', () => ok(performance.now() - t0), {once: true});
			document.getElementById('save').click(); })`)
		if ms < 0 {
			t.Errorf("visit %d was not saved: %s", i, eval[string](t, ctx, `[...document.querySelectorAll('.err')].map(e => e.id + ': ' + e.textContent).filter(Boolean).join('; ')`))
			continue
		}
		taps = append(taps, ms)
	}
	t.Logf("FIGURE one visit from tap to saved (validation, IndexedDB transaction with the outbox row): median %.1f ms of %v", median(taps), fmtMs(taps))

	// 6. Downscaling a 12 MP photo (4000×3000 JPEG with EXIF) to 1600 px
	// with the EXIF carried over.
	big := filepath.Join(photoDir, "12mp.jpg")
	bigJPG := evidencetest.JPEG(evidencetest.Photo{Seed: 12, Width: 4000, Height: 3000, Taken: time.Now(), GPS: &[2]float64{103.7, 25.0}})
	os.WriteFile(big, bigJPG, 0o600)
	eval[bool](t, ctx, `(() => { const i = document.createElement('input'); i.type = 'file'; i.id = 'figfile'; document.body.append(i); return true; })()`)
	step(t, ctx, "12 MP file", chromedp.SetUploadFiles(chromedp.ID("figfile"), []string{big}, chromedp.NodeReady))
	var scales []float64
	for range 3 {
		scales = append(scales, eval[float64](t, ctx, `import('./js/photo.js').then(async m => { const f = document.getElementById('figfile').files[0];
			const t0 = performance.now(); const r = await m.processPhoto(f); if (r.width !== 1600) throw new Error('width ' + r.width); return performance.now() - t0; })`))
	}
	t.Logf("FIGURE downscale a 12 MP photo (%.1f MB JPEG, smooth) to 1600 px keeping EXIF, in the browser: median %.0f ms of %v", float64(len(bigJPG))/1e6, median(scales), fmtMs(scales))
	// The same with camera-like detail (grain on every pixel): a JPEG of
	// several MB, as a phone writes it.
	pic := evidencetest.Picture(12, 4000, 3000)
	grainy := image.NewRGBA(pic.Bounds())
	rnd := rand.New(rand.NewPCG(12, 13))
	for y := range 3000 {
		for x := range 4000 {
			r, g, b, _ := pic.At(x, y).RGBA()
			n := int(rnd.IntN(41)) - 20
			grainy.Set(x, y, color.RGBA{clamp8(int(r>>8) + n), clamp8(int(g>>8) + n), clamp8(int(b>>8) + n), 255})
		}
	}
	var gbuf bytes.Buffer
	if err := jpeg.Encode(&gbuf, grainy, &jpeg.Options{Quality: 92}); err != nil {
		t.Fatal(err)
	}
	grainyJPG := evidencetest.SpliceEXIF(gbuf.Bytes(), evidencetest.EXIF(evidencetest.Photo{Taken: time.Now(), GPS: &[2]float64{103.7, 25.0}}))
	os.WriteFile(big, grainyJPG, 0o600)
	step(t, ctx, "12 MP grainy file", chromedp.SetUploadFiles(chromedp.ID("figfile"), []string{big}, chromedp.NodeReady))
	scales = scales[:0]
	for range 3 {
		scales = append(scales, eval[float64](t, ctx, `import('./js/photo.js').then(async m => { const f = document.getElementById('figfile').files[0];
			const t0 = performance.now(); const r = await m.processPhoto(f); if (r.width !== 1600) throw new Error('width ' + r.width); return performance.now() - t0; })`))
	}
	t.Logf("FIGURE downscale a 12 MP photo (%.1f MB JPEG, camera-like grain) to 1600 px keeping EXIF, in the browser: median %.0f ms of %v", float64(len(grainyJPG))/1e6, median(scales), fmtMs(scales))
	setupOffline(false)
	step(t, ctx, "home", chromedp.Navigate(app+"#/"), chromedp.WaitVisible(chromedp.ID("syncbtn")))
	pollJS(t, ctx, "the measured visits synced", `fieldsyncApp.db.read(['outbox', 'uploads'], async t => (await t.count('outbox')) === 0 && (await t.all('uploads')).every(u => u.state === 'done')).then(x => x && !fieldsyncApp.syncer.running)`, 2*time.Minute)

	// 7. Sync of N visits and 2N photos of about 200 KB over 2G, against
	// the link's raw time for the same bytes.
	visits := envInt("FIELDSYNC_APP_FIGURES_VISITS", 20)
	var files []string
	var photoBytes int
	for i := range 2 * visits {
		jpg := evidencetest.JPEG(evidencetest.Photo{Seed: uint64(5000 + i), Width: 3000, Height: 2250, Quality: 95, Taken: time.Now(), GPS: &[2]float64{103.7, 25.0}})
		photoBytes += len(jpg)
		p := filepath.Join(photoDir, fmt.Sprintf("p%03d.jpg", i))
		os.WriteFile(p, jpg, 0o600)
		files = append(files, p)
	}
	eval[bool](t, ctx, `(fieldsyncApp.syncer.blocked = true)`) // no sync until the link is throttled
	eval[bool](t, ctx, `(() => { const i = document.createElement('input'); i.type = 'file'; i.multiple = true; i.id = 'figfiles'; document.body.append(i); return true; })()`)
	step(t, ctx, "photos", chromedp.SetUploadFiles(chromedp.ID("figfiles"), files, chromedp.NodeReady))
	eval[bool](t, ctx, `(async () => {
		const sync = await import('./js/sync.js'); const u = await import('./js/util.js');
		const files = [...document.getElementById('figfiles').files];
		const hhs = await fieldsyncApp.db.read(['households'], t => t.all('households', null, `+strconv.Itoa(visits)+`));
		for (let i = 0; i < hhs.length; i++) {
			const ev = [];
			for (const f of files.slice(2 * i, 2 * i + 2)) {
				const sha = [...new Uint8Array(await crypto.subtle.digest('SHA-256', await f.arrayBuffer()))].map(b => b.toString(16).padStart(2, '0')).join('');
				await fieldsyncApp.db.write(['photos'], t => t.put('photos', {sha256: sha, blob: f, size: f.size, media_type: 'image/jpeg', created: new Date().toISOString()}));
				ev.push({sha256: sha, size: f.size, media_type: 'image/jpeg', slot: 'progress'});
			}
			await sync.saveVisit(fieldsyncApp.db, {id: u.newID(), household_id: hhs[i].id, form_id: 'water_cellar_progress', form_version: 1,
				answers: {site_name: '测量' + i, capacity_m3: 24, stage: 'built', due_date: '2027-05-01'}, device_time: new Date().toISOString(),
				point: {lon: 103.7, lat: 25.0}, accuracy_m: 5, evidence: ev}, '');
		}
		return true;
	})()`)
	pending := eval[string](t, ctx, `fieldsyncApp.db.read(['outbox', 'uploads'], async t => (await t.count('outbox')) + ' records, ' + (await t.all('uploads')).filter(u => u.state === 'pending').length + ' uploads pending')`)
	t.Logf("before the 2G sync: %s", pending)
	emulateLink(t, ctx, link2GBytesPerSec, link2GRTT)
	up0, down0, req0 := upBytes.Load(), downBytes.Load(), requests.Load()
	start = time.Now()
	eval[bool](t, ctx, `(fieldsyncApp.syncer.blocked = false, fieldsyncApp.syncer.failures = 0, fieldsyncApp.syncer.sync(), true)`)
	pollJS(t, ctx, "the 2G sync", `fieldsyncApp.db.read(['outbox', 'uploads'], async t => (await t.count('outbox')) === 0 && (await t.all('uploads')).every(u => u.state === 'done')).then(x => x && !fieldsyncApp.syncer.running)`, 60*time.Minute)
	wall := time.Since(start)
	up, down, reqs := upBytes.Load()-up0, downBytes.Load()-down0, requests.Load()-req0
	raw := time.Duration(float64(up+down) / link2GBytesPerSec * float64(time.Second))
	rawRTT := raw + time.Duration(reqs)*link2GRTT
	t.Logf("FIGURE sync of %d visits and %d photos (%.0f KB each, %.1f MB) over 2G: %v wall; on the link %.1f KB up, %.1f KB down in %d requests; raw transfer time %v (%.2fx), raw plus one RTT per request %v (%.2fx)",
		visits, 2*visits, float64(photoBytes)/float64(2*visits)/1024, float64(photoBytes)/1e6, wall.Round(100*time.Millisecond),
		float64(up)/1024, float64(down)/1024, reqs, raw.Round(100*time.Millisecond), float64(wall)/float64(raw), rawRTT.Round(100*time.Millisecond), float64(wall)/float64(rawRTT))
}

// countingWriter counts the bytes of a response body.
type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func fmtMs(xs []float64) string {
	var parts []string
	for _, x := range xs {
		parts = append(parts, fmt.Sprintf("%.0f", x))
	}
	return strings.Join(parts, "/") + " ms"
}

func clamp8(v int) uint8 { return uint8(max(0, min(255, v))) }
