package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path"
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
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/storage"
	"github.com/chromedp/chromedp"
	_ "github.com/mattn/go-sqlite3"

	"fieldsync/server/evidence/evidencetest"
	"fieldsync/syncproto"
)

// The field is not the happy path: these tests drive the field app
// through what goes wrong out there (a reused sequence number, a server
// that is busy, upgraded or lost an upload, the link dropping in the
// middle of a sync, a full disk, odd media, a wrong clock, big scopes).

// noFixReason is what the worker states when a visit is saved without a
// GPS fix (these tests grant no position unless they set one).
const noFixReason = "山谷里没有信号"

// hostile is one fieldsync server with the demo data and a fresh
// Chromium, with the admin's token and a read-only handle on the
// server's database.
type hostile struct {
	t        *testing.T
	ctx      context.Context
	problems func() []string
	base     string
	data     string
	app      string
	admin    string
	db       *sql.DB
	countFn  func(q string, args ...any) int
}

func newHostile(t *testing.T) *hostile {
	t.Helper()
	ctx, problems := newBrowser(t, 800, 1280)
	base, data := testServer(t)
	db, count := openServerDB(t, data)
	return &hostile{t: t, ctx: ctx, problems: problems, base: base, data: data, app: base + "/app/", admin: loginToken(t, base, "admin"), db: db, countFn: count}
}

// count runs a counting query on the server's database.
func (h *hostile) count(q string, args ...any) int {
	h.t.Helper()
	return h.countFn(q, args...)
}

// enroll issues an enrollment code for the demo user, types it into the
// app and waits for the first sync; it returns the device id.
func (h *hostile) enroll(username string) string {
	h.t.Helper()
	return h.enrollWith(demoEnrollment(h.t, h.base, username).Code)
}

// typeCode opens the app's enrollment screen, types code and taps 登记.
func (h *hostile) typeCode(code string) {
	h.t.Helper()
	step(h.t, h.ctx, "enroll", chromedp.Navigate(h.app), chromedp.WaitVisible(chromedp.ID("code")),
		chromedp.SendKeys(chromedp.ID("code"), code), chromedp.Click(chromedp.ID("enrollbtn")))
}

// enrollWith types code into the app and waits for the first sync; it
// returns the device id.
func (h *hostile) enrollWith(code string) string {
	t := h.t
	t.Helper()
	h.typeCode(code)
	// The first sync of a big scope may take longer than waitFor's 30 s
	// on a loaded machine.
	for deadline := time.Now().Add(3 * time.Minute); !eval[bool](t, h.ctx, `/^[1-9][0-9]* 户$/.test((document.getElementById('hhcount') || {}).textContent || '')`); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no first sync: %s", eval[string](t, h.ctx, `document.getElementById('syncline').textContent`))
		}
	}
	waitFor(t, h.ctx, "service worker in control", `!!navigator.serviceWorker.controller`)
	waitFor(t, h.ctx, "first sync over", `!fieldsyncApp.syncer.running`)
	return eval[string](t, h.ctx, `fieldsyncApp.db.getMeta('device_id')`)
}

// TestBrowser_FieldAppHostile_EnrollAnswerLost: the server enrolls the
// tablet but the link drops before the answer arrives, for every try of
// the first tap; the worker reloads the app and types the code again (in
// lower case, without dashes), and the first answer of that tap is lost
// too. The app asked with a token it chose and saved, so the server
// answers the one device it enrolled: no second device, no spent code,
// and the app syncs.
func TestBrowser_FieldAppHostile_EnrollAnswerLost(t *testing.T) {
	h := newHostile(t)
	ec := demoEnrollment(t, h.base, "wangge_zhao")
	devices := func() int {
		return h.count(`SELECT count(*) FROM devices WHERE user_id = ?`, ec.UserID)
	}
	before := devices()
	var lost atomic.Int32
	const lose = 4 // three tries of the first tap, one of the second
	stop, seen := h.interceptAt([]*fetch.RequestPattern{{URLPattern: "*/api/v1/devices/enroll", RequestStage: fetch.RequestStageResponse}}, func(ev *fetch.EventRequestPaused) {
		if lost.Add(1) <= lose {
			chromedp.Call(h.ctx, fetch.FailRequest, fetch.FailRequestParams{RequestID: ev.RequestID, ErrorReason: network.ErrorReasonConnectionReset})
			return
		}
		chromedp.Call(h.ctx, fetch.ContinueResponse, fetch.ContinueResponseParams{RequestID: ev.RequestID})
	})
	defer stop()
	h.typeCode(ec.Code)
	waitFor(t, h.ctx, "the enrollment error", `(document.getElementById('enrollerr') || {}).textContent !== ''`)
	if got := eval[string](t, h.ctx, `document.getElementById('enrollerr').textContent`); !strings.HasPrefix(got, "登记失败") {
		t.Errorf("error shown: %q", got)
	}
	if n := seen.Load(); n != 3 {
		t.Errorf("the first tap asked %d times, want 3", n)
	}
	if n := devices() - before; n != 1 {
		t.Fatalf("the server enrolled %d devices after the first tap, want 1", n)
	}
	if id := eval[string](t, h.ctx, `fieldsyncApp.db.getMeta('device_id').then(x => x || '')`); id != "" {
		t.Fatalf("the app saved device %s without an answer", id)
	}

	dev := h.enrollWith(strings.ToLower(strings.ReplaceAll(ec.Code, "-", "")))
	if n := seen.Load(); n != lose+1 {
		t.Errorf("asked %d times in all, want %d", n, lose+1)
	}
	if n := devices() - before; n != 1 {
		t.Errorf("the server enrolled %d devices, want 1", n)
	}
	if n := h.count(`SELECT count(*) FROM devices WHERE id = ? AND user_id = ? AND revoked_at IS NULL`, dev, ec.UserID); n != 1 {
		t.Errorf("the app's device %s is not the one the server enrolled", dev)
	}
	if ask := eval[string](t, h.ctx, `localStorage.getItem('fieldsync_enroll_ask') || ''`); ask != "" {
		t.Errorf("the saved ask is left after enrolling: %s", ask)
	}
	if got := syncNow(t, h.ctx); got != "ok" {
		t.Errorf("sync after enrolling: %s", got)
	}
}

// js runs an async function body in the page with the app's modules at
// hand (db, util, sync) and returns its result.
func hostileJS[T any](h *hostile, body string) T {
	h.t.Helper()
	return eval[T](h.t, h.ctx, `(async () => {
		const db = await import('./js/db.js'); const util = await import('./js/util.js'); const sync = await import('./js/sync.js');
		const app = fieldsyncApp;
		`+body+`
	})()`)
}

// intercept answers the page's requests matching pattern with fn (which
// calls fetch.FulfillRequest or fetch.ContinueRequest itself) until the
// returned stop is called; it returns how many requests it saw.
func (h *hostile) intercept(pattern string, fn func(ev *fetch.EventRequestPaused)) (stop func(), hits *atomic.Int32) {
	h.t.Helper()
	return h.interceptAt([]*fetch.RequestPattern{{URLPattern: pattern}}, fn)
}

// interceptAt is intercept for several patterns and stages (a paused
// response has ev.ResponseStatusCode set).
func (h *hostile) interceptAt(patterns []*fetch.RequestPattern, fn func(ev *fetch.EventRequestPaused)) (stop func(), hits *atomic.Int32) {
	t := h.t
	t.Helper()
	fctx, fcancel := context.WithCancel(h.ctx)
	if _, err := chromedp.Call(h.ctx, fetch.Enable, fetch.EnableParams{Patterns: patterns}); err != nil {
		t.Fatal(err)
	}
	hits = new(atomic.Int32)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev, err := range chromedp.Events(fctx, fetch.RequestPaused) {
			if err != nil {
				return
			}
			hits.Add(1)
			fn(&ev)
		}
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		if _, err := chromedp.Call(h.ctx, fetch.Disable, cdp.Empty{}); err != nil {
			t.Errorf("fetch.Disable: %v", err)
		}
		fcancel()
		<-done
	}
	t.Cleanup(stop)
	return stop, hits
}

// answer fulfils a paused request with a JSON body.
func (h *hostile) answer(ev *fetch.EventRequestPaused, status int64, body string, headers ...*fetch.HeaderEntry) {
	headers = append(headers, &fetch.HeaderEntry{Name: "Content-Type", Value: "application/json"})
	chromedp.Call(h.ctx, fetch.FulfillRequest, fetch.FulfillRequestParams{RequestID: ev.RequestID, ResponseCode: status,
		ResponseHeaders: headers, Body: []byte(body)})
}

// pass lets a paused request go on to the server.
func (h *hostile) pass(ev *fetch.EventRequestPaused) {
	chromedp.Call(h.ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
}

// appLog is the app's sync log, one line per entry.
func (h *hostile) appLog() string {
	h.t.Helper()
	return eval[string](h.t, h.ctx, `fieldsyncApp.db.read(['log'], t => t.all('log')).then(r => r.map(x => x.text).join('\n'))`)
}

// checkProblems fails on page errors other than those allowed (substrings).
func (h *hostile) checkProblems(allowed ...string) {
	h.t.Helper()
next:
	for _, p := range h.problems() {
		for _, a := range allowed {
			if strings.Contains(p, a) {
				continue next
			}
		}
		h.t.Errorf("page problem: %s", p)
	}
}

// enqueueUpdate puts a household.update of one field into the outbox, as
// the app's own edits do, and returns its sequence number.
func enqueueUpdate(h *hostile, hh, field, value string) int {
	h.t.Helper()
	return hostileJS[int](h, `const hh = await app.db.read(['households'], t => t.get('households', '`+hh+`'));
		return app.db.write(['meta', 'outbox'], t => db.enqueue(t, 'household.update', 'household_update',
			{household_id: hh.id, base_version: hh.version || 0, fields: {`+field+`: '`+value+`'}}, util.nextHLC));`)
}

// TestBrowser_FieldAppHostile_SequenceReused: the device is restored from
// a backup taken before its last sync, so it numbers new edits with
// sequence numbers the server has already applied with other content.
// The server refuses them (409 sequence_reused); the app renumbers its
// unsent outbox after the server's last seq, as the Go device library
// does, and pushes again: every edit lands exactly once.
func TestBrowser_FieldAppHostile_SequenceReused(t *testing.T) {
	h := newHostile(t)
	dev := h.enroll("wangge_zhao")
	hhs := hostileJS[[]string](h, `return (await app.db.read(['households'], t => t.all('households', null, 3))).map(x => x.id);`)
	if len(hhs) != 3 {
		t.Fatalf("households %v", hhs)
	}
	// The backup: the device's state before its next edit.
	if seq := enqueueUpdate(h, hhs[0], "phone", "13800000001"); seq != 1 {
		t.Fatalf("first edit got seq %d", seq)
	}
	if got := syncNow(t, h.ctx); got != "ok" {
		t.Fatalf("sync: %s", got)
	}
	if n := h.count(`SELECT count(*) FROM mutation_results WHERE device_id = ?`, dev); n != 1 {
		t.Fatalf("server holds %d results of the device, want 1", n)
	}
	// Restored from the backup: the device forgets it sent seq 1 and
	// numbers two new edits 1 and 2.
	hostileJS[bool](h, `await app.db.write(['meta', 'sent'], async t => { await t.clear('sent'); await t.setMeta('next_seq', 1); await t.setMeta('last_seq', 0); }); return true;`)
	if seq := enqueueUpdate(h, hhs[1], "phone", "13800000002"); seq != 1 {
		t.Fatalf("restored device numbered its edit %d, want 1", seq)
	}
	enqueueUpdate(h, hhs[2], "phone", "13800000003")

	if got := syncNow(t, h.ctx); got != "ok" {
		t.Fatalf("sync after the restore: %s", got)
	}
	if n := eval[int](t, h.ctx, `fieldsyncApp.db.read(['outbox'], t => t.count('outbox'))`); n != 0 {
		t.Errorf("%d left in the outbox", n)
	}
	if log := h.appLog(); !strings.Contains(log, "重新编号") {
		t.Errorf("the log does not tell of the renumbering:\n%s", log)
	}
	if next := eval[int](t, h.ctx, `fieldsyncApp.db.getMeta('next_seq')`); next != 4 {
		t.Errorf("next seq %d, want 4", next)
	}
	// A repeat sync changes nothing.
	if got := syncNow(t, h.ctx); got != "ok" {
		t.Fatalf("repeat sync: %s", got)
	}
	if n := h.count(`SELECT count(*) FROM mutation_results WHERE device_id = ?`, dev); n != 3 {
		t.Errorf("server holds %d results of the device, want 3", n)
	}
	for i, hh := range hhs {
		var phone string
		h.db.QueryRow(`SELECT coalesce(json_extract(fields, '$.phone'), '') FROM households WHERE id = ?`, hh).Scan(&phone)
		if want := fmt.Sprintf("1380000000%d", i+1); phone != want {
			t.Errorf("household %s phone %q, want %q", hh, phone, want)
		}
	}
	h.checkProblems("status of 409")
}

// outboxCount is how many mutations wait in the app's outbox.
func (h *hostile) outboxCount() int {
	h.t.Helper()
	return eval[int](h.t, h.ctx, `fieldsyncApp.db.read(['outbox'], t => t.count('outbox'))`)
}

// atHousehold grants geolocation and puts the device at lon, lat (±5 m).
func (h *hostile) atHousehold(lon, lat float64) {
	h.t.Helper()
	acc := 5.0
	if _, err := chromedp.CallBrowser(h.ctx, browser.SetPermission, browser.SetPermissionParams{
		Permission: &browser.PermissionDescriptor{Name: "geolocation"}, Setting: "granted", Origin: strings.TrimSuffix(h.base, "/")}); err != nil {
		h.t.Fatal(err)
	}
	if _, err := chromedp.Call(h.ctx, emulation.SetGeolocationOverride, emulation.SetGeolocationOverrideParams{Latitude: &lat, Longitude: &lon, Accuracy: &acc}); err != nil {
		h.t.Fatal(err)
	}
}

// pictureAt writes a noise PNG of w×ht pixels to a file and puts the
// device at household hh; it returns the file, its sha256 and its bytes.
func (h *hostile) pictureAt(t *testing.T, hh string, w, ht int) (path, sha string, pic []byte) {
	t.Helper()
	pic = noisePNG(t, w, ht)
	sum := sha256.Sum256(pic)
	path = filepath.Join(t.TempDir(), "picture.png")
	if err := os.WriteFile(path, pic, 0o600); err != nil {
		t.Fatal(err)
	}
	var lon, lat float64
	h.db.QueryRow(`SELECT coalesce(lon, 103.7), coalesce(lat, 25.0) FROM households WHERE id = ?`, hh).Scan(&lon, &lat)
	h.atHousehold(lon, lat)
	return path, hex.EncodeToString(sum[:]), pic
}

// cellarVisit fills the water cellar form at household hh with the
// files in its photo slot and saves it (a sync follows by itself).
func (h *hostile) cellarVisit(hh string, files ...string) {
	t := h.t
	t.Helper()
	step(t, h.ctx, "form", chromedp.Navigate(h.app+"#/visit/"+hh+"/water_cellar_progress"), chromedp.WaitVisible(chromedp.ID("f_site_name")))
	waitFor(t, h.ctx, "GPS fix", `document.getElementById('gpsline').textContent.includes('±5 米')`)
	step(t, h.ctx, "fill",
		chromedp.SendKeys(chromedp.ID("f_site_name"), "新水窖"),
		chromedp.SendKeys(chromedp.ID("f_capacity_m3"), "24"),
		chromedp.Click(chromedp.CSS(`input[name="stage"][value="planned"]`)),
		chromedp.SetUploadFiles(chromedp.CSS(`input[data-slot-gallery="progress"]`), files, chromedp.NodeReady))
	eval[bool](t, h.ctx, `(() => { const d = document.getElementById('f_due_date'); d.value = '2027-05-01'; d.dispatchEvent(new Event('input', {bubbles: true})); return true; })()`)
	waitFor(t, h.ctx, "pictures in the slot", fmt.Sprintf(`document.querySelectorAll('#slot_progress img').length === %d`, len(files)))
	waitFor(t, h.ctx, "draft holds the pictures", fmt.Sprintf(`fieldsyncApp.db.read(['drafts'], t => t.all('drafts')).then(d => d.length === 1 && d[0].evidence.length === %d)`, len(files)))
	step(t, h.ctx, "save", chromedp.Click(chromedp.ID("save")))
	waitFor(t, h.ctx, "saved", `location.hash.startsWith('#/hh/') && document.getElementById('main').dataset.shown === location.hash`)
}

// serverBlob downloads a blob as the admin and returns its SHA-256 (hex),
// or "" if the server does not have it.
func (h *hostile) serverBlob(sha string) string {
	h.t.Helper()
	req, _ := http.NewRequest("GET", h.base+"/api/v1/evidence/"+sha, nil)
	req.Header.Set("Authorization", "Bearer "+h.admin)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		return ""
	}
	sum := sha256.New()
	io.Copy(sum, res.Body)
	return hex.EncodeToString(sum.Sum(nil))
}

// TestBrowser_FieldAppHostile_ServerTrouble: the server answers 429 with
// Retry-After (honoured), is upgraded to a newer protocol while the app
// is offline (the worker is told in Chinese to update, nothing is applied
// and the outbox stays), loses a half-done tus upload (404 on HEAD:
// the upload starts again at a new URL and completes), and records an
// upload whose creation answer never reaches the tablet (tus-js-client
// creates it again and is given the same upload: none is left open).
func TestBrowser_FieldAppHostile_ServerTrouble(t *testing.T) {
	h := newHostile(t)
	h.enroll("wangge_zhao")
	hhs := hostileJS[[]string](h, `return (await app.db.read(['households'], t => t.all('households', null, 2))).map(x => x.id);`)

	t.Run("429 with Retry-After", func(t *testing.T) {
		enqueueUpdate(h, hhs[0], "phone", "13900000001")
		stop, hits := h.intercept("*/api/v1/sync/push", func(ev *fetch.EventRequestPaused) {
			h.answer(ev, 429, `{"code":"rate_limited","message":"too many requests"}`, &fetch.HeaderEntry{Name: "Retry-After", Value: "90"})
		})
		if got := syncNow(t, h.ctx); !strings.HasPrefix(got, "error") {
			t.Errorf("sync against 429: %s", got)
		}
		stop()
		if wait := eval[float64](t, h.ctx, `(fieldsyncApp.syncer.nextAt - Date.now()) / 1000`); wait < 80 || wait > 91 {
			t.Errorf("next try in %.0f s, want the server's 90 s", wait)
		}
		if line := eval[string](t, h.ctx, `document.getElementById('syncline').textContent`); !strings.Contains(line, "服务器繁忙") {
			t.Errorf("sync line %q", line)
		}
		if hits.Load() == 0 || h.outboxCount() != 1 {
			t.Errorf("%d pushes intercepted, outbox %d (want the edit kept)", hits.Load(), h.outboxCount())
		}
	})

	t.Run("server upgraded while offline", func(t *testing.T) {
		setOffline(t, h.ctx, true)
		enqueueUpdate(h, hhs[1], "phone", "13900000002")
		cursor := eval[string](t, h.ctx, `fieldsyncApp.db.getMeta('cursor')`)
		nHH := eval[int](t, h.ctx, `fieldsyncApp.db.read(['households'], t => t.count('households'))`)
		// The upgraded server refuses version 1 pushes.
		stop, _ := h.intercept("*/api/v1/sync/push", func(ev *fetch.EventRequestPaused) {
			h.answer(ev, 426, `{"code":"unsupported_protocol_version","message":"protocol version 1 is no longer supported; use 2"}`)
		})
		setOffline(t, h.ctx, false) // the app syncs by itself
		waitFor(t, h.ctx, "failed sync", `document.getElementById('syncline').textContent.startsWith('同步失败')`)
		stop()
		line := eval[string](t, h.ctx, `document.getElementById('syncline').textContent`)
		banner := eval[string](t, h.ctx, `document.getElementById('banner').textContent`)
		for _, s := range []string{line, banner} {
			if !strings.Contains(s, "更新") || !strings.Contains(s, "不会丢失") {
				t.Errorf("the worker is not told to update: %q", s)
			}
		}
		if n := h.outboxCount(); n != 2 {
			t.Errorf("outbox %d after the refusal, want 2", n)
		}
		// An answer in a newer protocol is not applied either: a pull in
		// version 2 that would reset the scope changes nothing.
		waitFor(t, h.ctx, "idle", `!fieldsyncApp.syncer.running`)
		stop, _ = h.intercept("*/api/v1/sync/pull", func(ev *fetch.EventRequestPaused) {
			h.answer(ev, 200, `{"protocol_version":2,"ops":[{"op":"reset"}],"cursor":"v2cursor","has_more":false}`)
		})
		if got := syncNow(t, h.ctx); !strings.HasPrefix(got, "error") || !strings.Contains(got, "更新") {
			t.Errorf("sync against a version 2 pull: %s", got)
		}
		stop()
		if got := eval[string](t, h.ctx, `fieldsyncApp.db.getMeta('cursor')`); got != cursor {
			t.Errorf("cursor %q after a version 2 answer, want %q", got, cursor)
		}
		if n := eval[int](t, h.ctx, `fieldsyncApp.db.read(['households'], t => t.count('households'))`); n != nHH {
			t.Errorf("%d households after a version 2 reset, want %d", n, nHH)
		}
		// The server speaks version 1 again (or the app was updated).
		if got := syncNow(t, h.ctx); got != "ok" || h.outboxCount() != 0 {
			t.Errorf("sync: %s, outbox %d", got, h.outboxCount())
		}
	})

	t.Run("tus upload expired on the server", func(t *testing.T) {
		picPath, sha, pic := h.pictureAt(t, hhs[0], 700, 500) // about 1.4 MB
		if _, err := chromedp.Call(h.ctx, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
			MatchedNetworkConditions: []*network.Conditions{{Latency: 20, DownloadThroughput: -1, UploadThroughput: 256 * 1024}}}); err != nil {
			t.Fatal(err)
		}
		h.cellarVisit(hhs[0], picPath)
		uploadURL := ""
		var offset int64
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && (uploadURL == "" || offset < 256*1024); time.Sleep(50 * time.Millisecond) {
			uploadURL = eval[string](t, h.ctx, `fieldsyncApp.db.read(['uploads'], t => t.get('uploads', '`+sha+`')).then(u => (u && u.tus && u.tus.uploadUrl) || '')`)
			if uploadURL != "" {
				h.db.QueryRow(`SELECT "offset" FROM uploads WHERE id = ?`, path.Base(uploadURL)).Scan(&offset)
			}
		}
		if offset < 256*1024 || offset >= int64(len(pic)) {
			t.Fatalf("upload %q at offset %d of %d", uploadURL, offset, len(pic))
		}
		setOffline(t, h.ctx, true)
		waitFor(t, h.ctx, "sync gave up", `!fieldsyncApp.syncer.running`)
		// The server forgets the upload (it expired).
		rw, err := sql.Open("sqlite3", "file:"+DBPath(h.data)+"?_busy_timeout=5000")
		if err != nil {
			t.Fatal(err)
		}
		res, err := rw.Exec(`DELETE FROM uploads WHERE id = ?`, path.Base(uploadURL))
		rw.Close()
		if n, _ := res.RowsAffected(); err != nil || n != 1 {
			t.Fatalf("expire the upload: %v (%d rows)", err, n)
		}
		setOffline(t, h.ctx, false)
		waitFor(t, h.ctx, "upload done", `fieldsyncApp.db.read(['uploads'], t => t.get('uploads', '`+sha+`')).then(u => u.state === 'done')`)
		again := eval[string](t, h.ctx, `fieldsyncApp.db.read(['uploads'], t => t.get('uploads', '`+sha+`')).then(u => (u.tus && u.tus.uploadUrl) || '')`)
		if again == "" || again == uploadURL {
			t.Errorf("upload URL after the expiry %q (was %q): want a new upload", again, uploadURL)
		}
		if got := h.serverBlob(sha); got != sha {
			t.Errorf("server blob %q, want %s", got, sha)
		}
	})
	t.Run("tus creation answer lost", func(t *testing.T) {
		picPath, sha, _ := h.pictureAt(t, hhs[1], 300, 200)
		// The server records the upload; the link drops before the
		// creation's answer reaches the tablet.
		var lost atomic.Bool
		stop, _ := h.interceptAt([]*fetch.RequestPattern{{URLPattern: "*/api/v1/uploads/", RequestStage: fetch.RequestStageResponse}}, func(ev *fetch.EventRequestPaused) {
			if ev.Request.Method == http.MethodPost && lost.CompareAndSwap(false, true) {
				chromedp.Call(h.ctx, fetch.FailRequest, fetch.FailRequestParams{RequestID: ev.RequestID, ErrorReason: network.ErrorReasonInternetDisconnected})
				return
			}
			chromedp.Call(h.ctx, fetch.ContinueResponse, fetch.ContinueResponseParams{RequestID: ev.RequestID})
		})
		defer stop()
		h.cellarVisit(hhs[1], picPath)
		waitFor(t, h.ctx, "upload done", `fieldsyncApp.db.read(['uploads'], t => t.get('uploads', '`+sha+`')).then(u => !!u && u.state === 'done')`)
		if !lost.Load() {
			t.Fatal("no creation was intercepted")
		}
		// The app created the upload again and was given the one the
		// server had recorded: one upload, finished.
		if n, active := h.count(`SELECT count(*) FROM uploads WHERE sha256 = ?`, sha), h.count(`SELECT count(*) FROM uploads WHERE sha256 = ? AND state = 'active'`, sha); n != 1 || active != 0 {
			t.Errorf("%d uploads of the picture on the server, %d unfinished; want 1 and 0", n, active)
		}
		if got := h.serverBlob(sha); got != sha {
			t.Errorf("server blob %q, want %s", got, sha)
		}
	})
	t.Run("upload refused keeps the photo", func(t *testing.T) {
		upload := func(sha string) (state string, kept bool) {
			t.Helper()
			u := hostileJS[struct {
				State string
				Kept  bool
			}](h, `const u = await app.db.read(['uploads'], t => t.get('uploads', '`+sha+`'));
				const p = await app.db.read(['photos'], t => t.get('photos', '`+sha+`'));
				return {State: u ? u.state : '', Kept: !!(p && p.blob)};`)
			return u.State, u.Kept
		}
		visit := func(i, w int) string {
			t.Helper()
			picPath, sha, _ := h.pictureAt(t, hhs[i], w, 200)
			h.cellarVisit(hhs[i], picPath)
			return sha
		}
		// The server refuses the creation as if it did not know the visit
		// yet (403): the photo stays on the tablet, pending, and goes up
		// with the next sync.
		var refused atomic.Int32
		stop, _ := h.intercept("*/api/v1/uploads/", func(ev *fetch.EventRequestPaused) {
			if ev.Request.Method == http.MethodPost && refused.Add(1) == 1 {
				h.answer(ev, 403, `{"code":"forbidden","message":"no visit pushed by this device references it"}`)
				return
			}
			h.pass(ev)
		})
		sha := visit(0, 310)
		for deadline := time.Now().Add(30 * time.Second); refused.Load() == 0 || eval[bool](t, h.ctx, `fieldsyncApp.syncer.running`); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no refused creation (%d) or the sync still runs", refused.Load())
			}
		}
		stop()
		if state, kept := upload(sha); state != "pending" || !kept {
			t.Fatalf("after a 403 the upload is %q, photo kept %v; want pending and kept", state, kept)
		}
		if got := h.serverBlob(sha); got != "" {
			t.Fatalf("server holds %q after refusing it", got)
		}
		if got := syncNow(t, h.ctx); got != "ok" {
			t.Fatalf("next sync: %s", got)
		}
		if state, kept := upload(sha); state != "done" || kept {
			t.Errorf("after the next sync the upload is %q, photo kept %v; want done and freed", state, kept)
		}
		if got := h.serverBlob(sha); got != sha {
			t.Errorf("server blob %q, want %s", got, sha)
		}

		// Refused for good (415): marked failed, the photo kept on the
		// tablet for export.
		stop, _ = h.intercept("*/api/v1/uploads/", func(ev *fetch.EventRequestPaused) {
			if ev.Request.Method == http.MethodPost {
				h.answer(ev, 415, `{"code":"unsupported_media_type","message":"not a picture"}`)
				return
			}
			h.pass(ev)
		})
		defer stop()
		sha = visit(1, 320)
		waitFor(t, h.ctx, "the upload given up", `fieldsyncApp.db.read(['uploads'], t => t.get('uploads', '`+sha+`')).then(u => !!u && u.state === 'failed')`)
		if state, kept := upload(sha); state != "failed" || !kept {
			t.Errorf("after a 415 the upload is %q, photo kept %v; want failed and kept", state, kept)
		}
	})
	t.Run("visit saved while the uploads start", func(t *testing.T) {
		waitFor(t, h.ctx, "idle", `!fieldsyncApp.syncer.running`)
		pic := noisePNG(t, 330, 200)
		sum := sha256.Sum256(pic)
		sha := hex.EncodeToString(sum[:])
		var creations atomic.Int32
		stop, _ := h.intercept("*/api/v1/uploads/", func(ev *fetch.EventRequestPaused) {
			if ev.Request.Method == http.MethodPost {
				creations.Add(1)
			}
			h.pass(ev)
		})
		defer stop()
		// The worker saves a visit with a photo just after the sync's
		// upload step has read the outbox (a copy of a pushed visit's body
		// with a new id and the new photo).
		hostileJS[bool](h, `
			const bytes = Uint8Array.from(atob('`+base64.StdEncoding.EncodeToString(pic)+`'), c => c.charCodeAt(0));
			const blob = new Blob([bytes], {type: 'image/png'});
			await app.db.write(['photos'], t => t.put('photos', {sha256: '`+sha+`', blob, size: blob.size, media_type: 'image/png', created: new Date().toISOString()}));
			const sent = (await app.db.read(['sent'], t => t.all('sent'))).filter(r => r.kind === 'visit.create' && r.status === 'applied').pop();
			const v = {...sent.body.visit, id: util.newID(), evidence: [{sha256: '`+sha+`', size: blob.size, media_type: 'image/png', slot: sent.body.visit.evidence[0].slot}]};
			const d = app.syncer.db;
			let armed = true;
			d.read = async function (stores, fn) {
				const r = await Object.getPrototypeOf(d).read.call(d, stores, fn);
				if (armed && new Error().stack.includes('uploads')) {
					armed = false;
					await sync.saveVisit(d, v, null);
				}
				return r;
			};
			try {
				await app.syncer.uploads(await app.db.metaAll(), {uploaded: 0, bytes: 0});
			} finally {
				delete d.read;
			}
			if (armed) throw new Error('the upload step read nothing');
			return true;`)
		if n := creations.Load(); n != 0 {
			t.Errorf("%d uploads created for a visit not pushed yet, want none", n)
		}
		if got := syncNow(t, h.ctx); got != "ok" {
			t.Fatalf("next sync: %s", got)
		}
		waitFor(t, h.ctx, "upload done", `fieldsyncApp.db.read(['uploads'], t => t.get('uploads', '`+sha+`')).then(u => !!u && u.state === 'done')`)
		if got := h.serverBlob(sha); got != sha {
			t.Errorf("server blob %q, want %s", got, sha)
		}
	})
	h.checkProblems("status of 429", "status of 426", "status of 404", "ERR_INTERNET_DISCONNECTED", "Failed to load resource")
}

// TestBrowser_FieldAppHostile_AirplaneMode drops the link in the middle
// of a push (the server applied the batch, the answer never arrives), in
// the middle of a pull (a page is lost on the way) and while a page is
// being applied (the page's transaction fails half-way): nothing is
// half-applied, the outbox keeps what was not acknowledged, and a repeat
// sync completes with every change applied exactly once.
func TestBrowser_FieldAppHostile_AirplaneMode(t *testing.T) {
	h := newHostile(t)
	dev := h.enroll("wangge_zhao")

	t.Run("push answer lost", func(t *testing.T) {
		hhs := hostileJS[[]string](h, `return (await app.db.read(['households'], t => t.all('households', null, 25))).map(x => x.id);`)
		if len(hhs) != 25 {
			t.Fatalf("%d households, want 25", len(hhs))
		}
		var before int64
		h.db.QueryRow(`SELECT coalesce(max(seq), 0) FROM changes`).Scan(&before)
		for i, hh := range hhs {
			enqueueUpdate(h, hh, "phone", fmt.Sprintf("137%08d", i))
		}
		var cut atomic.Bool
		stop, _ := h.interceptAt([]*fetch.RequestPattern{{URLPattern: "*/api/v1/sync/push", RequestStage: fetch.RequestStageResponse}}, func(ev *fetch.EventRequestPaused) {
			if cut.CompareAndSwap(false, true) {
				// The server has applied the first batch; the link drops
				// before its answer reaches the tablet.
				chromedp.Call(h.ctx, fetch.FailRequest, fetch.FailRequestParams{RequestID: ev.RequestID, ErrorReason: network.ErrorReasonInternetDisconnected})
				return
			}
			chromedp.Call(h.ctx, fetch.ContinueResponse, fetch.ContinueResponseParams{RequestID: ev.RequestID})
		})
		if got := syncNow(t, h.ctx); !strings.HasPrefix(got, "error") {
			t.Fatalf("sync with the answer lost: %s", got)
		}
		stop()
		setOffline(t, h.ctx, true)
		if n := h.outboxCount(); n != 25 {
			t.Errorf("outbox %d after the lost answer, want all 25 (none acknowledged)", n)
		}
		if n := h.count(`SELECT count(*) FROM mutation_results WHERE device_id = ?`, dev); n != 20 {
			t.Errorf("server applied %d, want the first batch of 20", n)
		}
		setOffline(t, h.ctx, false) // the app syncs by itself
		waitFor(t, h.ctx, "outbox empty", `fieldsyncApp.db.read(['outbox'], t => t.count('outbox')).then(n => n === 0)`)
		waitFor(t, h.ctx, "idle", `!fieldsyncApp.syncer.running`)
		if got := syncNow(t, h.ctx); got != "ok" {
			t.Errorf("repeat sync: %s", got)
		}
		if n := h.count(`SELECT count(*) FROM mutation_results WHERE device_id = ?`, dev); n != 25 {
			t.Errorf("server holds %d results, want 25", n)
		}
		for i, hh := range hhs {
			n := h.count(`SELECT count(*) FROM changes WHERE entity_type = 'household' AND entity_id = ? AND seq > ?`, hh, before)
			var phone string
			h.db.QueryRow(`SELECT json_extract(fields, '$.phone') FROM households WHERE id = ?`, hh).Scan(&phone)
			if n != 1 || phone != fmt.Sprintf("137%08d", i) {
				t.Errorf("household %s: %d changes, phone %q", hh, n, phone)
			}
		}
	})

	t.Run("pull interrupted", func(t *testing.T) {
		want := eval[int](t, h.ctx, `fieldsyncApp.db.read(['households'], t => t.count('households'))`)
		// Start the scope over, as a fresh device, with small pages.
		hostileJS[bool](h, `await app.db.write([...db.SCOPE_STORES, 'meta'], async t => { for (const s of db.SCOPE_STORES) await t.clear(s); await t.setMeta('cursor', ''); }); return true;`)
		type page struct {
			Ops []struct {
				Op        string
				Type      string
				ID        string
				Household *struct{ ID string }
			}
			Cursor string
		}
		var mu sync.Mutex
		var pages []page     // as the server sent them
		var delivered []bool // whether the app got each intact
		stop, _ := h.interceptAt([]*fetch.RequestPattern{
			{URLPattern: "*/api/v1/sync/pull", RequestStage: fetch.RequestStageRequest},
			{URLPattern: "*/api/v1/sync/pull", RequestStage: fetch.RequestStageResponse},
		}, func(ev *fetch.EventRequestPaused) {
			if ev.ResponseStatusCode == 0 { // the request: ask for small pages
				var body []byte
				for _, e := range ev.Request.PostDataEntries {
					body = append(body, e.Bytes...)
				}
				body = []byte(strings.Replace(string(body), `"max_bytes":262144`, `"max_bytes":4096`, 1))
				chromedp.Call(h.ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID, PostData: body})
				return
			}
			res, err := chromedp.Call(h.ctx, fetch.GetResponseBody, fetch.GetResponseBodyParams{RequestID: ev.RequestID})
			var p page
			if err == nil {
				err = json.Unmarshal(res.Body, &p)
			}
			mu.Lock()
			n := len(pages)
			if err == nil {
				pages = append(pages, p)
				delivered = append(delivered, n != 2 && n != 4)
			}
			mu.Unlock()
			switch {
			case err != nil:
				chromedp.Call(h.ctx, fetch.FailRequest, fetch.FailRequestParams{RequestID: ev.RequestID, ErrorReason: network.ErrorReasonFailed})
			case n == 2:
				// The third page arrives, but applying it fails half-way
				// (its last op cannot be stored).
				var raw map[string]any
				json.Unmarshal(res.Body, &raw)
				ops, _ := raw["ops"].([]any)
				raw["ops"] = append(ops, map[string]any{"op": "put", "type": "household", "household": map[string]any{"place_code": "x"}})
				b, _ := json.Marshal(raw)
				h.answer(ev, 200, string(b))
			case n == 4:
				// The link drops while the fifth page is on the way.
				chromedp.Call(h.ctx, fetch.FailRequest, fetch.FailRequestParams{RequestID: ev.RequestID, ErrorReason: network.ErrorReasonInternetDisconnected})
			default:
				chromedp.Call(h.ctx, fetch.ContinueResponse, fetch.ContinueResponseParams{RequestID: ev.RequestID})
			}
		})
		// expect is what the app should hold after the delivered pages.
		expect := func() (map[string]bool, string) {
			mu.Lock()
			defer mu.Unlock()
			hh := map[string]bool{}
			cursor := ""
			for i, p := range pages {
				if !delivered[i] {
					continue
				}
				for _, op := range p.Ops {
					if op.Type == "household" && op.Op == "put" && op.Household != nil {
						hh[op.Household.ID] = true
					} else if op.Type == "household" && op.Op == "delete" {
						delete(hh, op.ID)
					}
				}
				cursor = p.Cursor
			}
			return hh, cursor
		}
		check := func(when string) {
			t.Helper()
			wantHH, wantCursor := expect()
			if got := eval[string](t, h.ctx, `fieldsyncApp.db.getMeta('cursor')`); got != wantCursor {
				t.Errorf("%s: cursor %q, want that of the last whole page %q", when, got, wantCursor)
			}
			if got := eval[int](t, h.ctx, `fieldsyncApp.db.read(['households'], t => t.count('households'))`); got != len(wantHH) {
				t.Errorf("%s: %d households on the device, want %d (the whole pages only)", when, got, len(wantHH))
			}
		}
		if got := syncNow(t, h.ctx); !strings.HasPrefix(got, "error") {
			t.Fatalf("sync with a page failing half-way: %s", got)
		}
		check("page failed half-way")
		setOffline(t, h.ctx, true)
		setOffline(t, h.ctx, false) // the app syncs by itself, and the link drops again
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			mu.Lock()
			n := len(pages)
			mu.Unlock()
			if n >= 5 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d pages: the scope is too small to cut", n)
			}
		}
		waitFor(t, h.ctx, "sync failed", `!fieldsyncApp.syncer.running && document.getElementById('syncline').textContent.startsWith('同步失败')`)
		check("link dropped")
		if got := syncNow(t, h.ctx); got != "ok" {
			t.Fatalf("repeat sync: %s", got)
		}
		stop()
		if got := eval[int](t, h.ctx, `fieldsyncApp.db.read(['households'], t => t.count('households'))`); got != want {
			t.Errorf("%d households after the repeat sync, want %d", got, want)
		}
		t.Logf("%d pages of at most 4 KB", len(pages))
	})
	h.checkProblems("ERR_INTERNET_DISCONNECTED", "Failed to load resource")
}

// publishForm publishes a form definition as the admin.
func (h *hostile) publishForm(def string) {
	h.t.Helper()
	req, _ := http.NewRequest("POST", h.base+"/api/v1/forms", strings.NewReader(def))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+h.admin)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		h.t.Fatalf("publish form: %d %s", res.StatusCode, b)
	}
}

// mediaForm has a photo slot and a document slot, nothing required.
const mediaForm = `{"id": "odd_media", "title": "附件测试", "title_en": "Odd media",
	"fields": [{"name": "notes", "type": "text", "label": "备注", "label_en": "Notes"}],
	"slots": [
		{"name": "photos", "label": "照片", "label_en": "Photos", "min_count": 0, "media_types": ["image/jpeg", "image/png"]},
		{"name": "scan", "label": "扫描件", "label_en": "Scan", "min_count": 0, "media_types": ["application/pdf", "image/jpeg", "image/png"]}
	]}`

// fakePDF is a PDF-looking file of n bytes that does not compress.
func fakePDF(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(7, 8))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	copy(b, "%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
	copy(b[n-6:], "%%EOF\n")
	return b
}

// TestBrowser_FieldAppHostile_UnusualMedia attaches a 50 MP photo
// (downscaled on the device, the tab survives), a 30 MB PDF scan in a
// document slot (uploaded with tus in 256 KB chunks), a photo without
// EXIF (accepted; the server records that it has no capture time or
// position) and a PNG screenshot taller than the photo limit (turned
// into a JPEG at 1600 px).
func TestBrowser_FieldAppHostile_UnusualMedia(t *testing.T) {
	h := newHostile(t)
	h.publishForm(mediaForm)
	h.enroll("wangge_zhao")
	hh := hostileJS[string](h, `return (await app.db.read(['households'], t => t.all('households', null, 1)))[0].id;`)
	var lon, lat float64
	h.db.QueryRow(`SELECT coalesce(lon, 103.7), coalesce(lat, 25.0) FROM households WHERE id = ?`, hh).Scan(&lon, &lat)
	h.atHousehold(lon, lat)

	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	start := time.Now()
	big := write("big.jpg", bigJPEG(t, 8660, 5774, evidencetest.Photo{Taken: time.Now(), GPS: &[2]float64{lon, lat}}))
	// A picture whose header says 12000×10000 (120 MP): refused before
	// it is decoded.
	huge := evidencetest.JPEG(evidencetest.Photo{Seed: 52})
	if i := bytes.Index(huge, []byte{0xff, 0xc0}); i < 0 {
		t.Fatal("no SOF0 in the fixture")
	} else {
		binary.BigEndian.PutUint16(huge[i+5:], 10000)
		binary.BigEndian.PutUint16(huge[i+7:], 12000)
	}
	hugePath := write("huge.jpg", huge)
	t.Logf("50 MP fixture made in %v", time.Since(start).Round(time.Millisecond))
	noEXIF := write("noexif.jpg", evidencetest.JPEG(evidencetest.Photo{Seed: 51, Width: 1200, Height: 900, NoEXIF: true}))
	shot := write("screenshot.png", noisePNG(t, 1080, 2400))
	pdf := fakePDF(30 << 20)
	pdfSum := sha256.Sum256(pdf)
	pdfPath := write("scan.pdf", pdf)

	step(t, h.ctx, "form", chromedp.Navigate(h.app+"#/visit/"+hh+"/odd_media"), chromedp.WaitVisible(chromedp.ID("f_notes")))
	for _, f := range []struct{ what, file, slot string }{{"50 MP photo", big, "photos"}, {"photo without EXIF", noEXIF, "photos"}, {"PNG screenshot", shot, "photos"}, {"30 MB PDF", pdfPath, "scan"}} {
		n := eval[int](t, h.ctx, `fieldsyncApp.db.read(['drafts'], t => t.all('drafts')).then(d => d.length ? d[0].evidence.length : 0)`)
		start := time.Now()
		step(t, h.ctx, f.what, chromedp.SetUploadFiles(chromedp.CSS(`input[data-slot-gallery="`+f.slot+`"]`), []string{f.file}, chromedp.NodeReady))
		waitFor(t, h.ctx, f.what+" in the draft", fmt.Sprintf(`fieldsyncApp.db.read(['drafts'], t => t.all('drafts')).then(d => d.length === 1 && d[0].evidence.length === %d)`, n+1))
		t.Logf("%s: in the draft after %v", f.what, time.Since(start).Round(time.Millisecond))
	}
	step(t, h.ctx, "120 MP photo", chromedp.SetUploadFiles(chromedp.CSS(`input[data-slot-gallery="photos"]`), []string{hugePath}, chromedp.NodeReady))
	waitFor(t, h.ctx, "refusal", `document.getElementById('banner').textContent.includes('照片像素过多')`)
	if n := eval[int](t, h.ctx, `fieldsyncApp.db.read(['drafts'], t => t.all('drafts')).then(d => d[0].evidence.length)`); n != 4 {
		t.Errorf("draft holds %d attachments after the refusal, want 4", n)
	}
	waitFor(t, h.ctx, "three pictures shown in the photo slot", `document.querySelectorAll('#slot_photos img').length === 3`)
	waitFor(t, h.ctx, "the scan shown as a document", `document.querySelectorAll('#slot_scan .card').length === 1`)
	refs := hostileJS[[]struct {
		SHA256    string `json:"sha256"`
		Size      int64  `json:"size"`
		MediaType string `json:"media_type"`
		Slot      string `json:"slot"`
	}](h, `return (await app.db.read(['drafts'], t => t.all('drafts')))[0].evidence;`)
	if len(refs) != 4 || refs[3].SHA256 != hex.EncodeToString(pdfSum[:]) || refs[3].MediaType != "application/pdf" {
		t.Fatalf("draft evidence %+v", refs)
	}
	for i, r := range refs[:3] {
		if r.MediaType != "image/jpeg" {
			t.Errorf("picture %d stored as %s, want image/jpeg", i, r.MediaType)
		}
	}

	// Count the upload's PATCH requests (network events: pausing them
	// with the Fetch domain would hold up Blob bodies).
	var chunks atomic.Int32
	if _, err := chromedp.Call(h.ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	nctx, stop := context.WithCancel(h.ctx)
	defer stop()
	go func() {
		for ev, err := range chromedp.Events(nctx, network.RequestWillBeSent) {
			if err != nil {
				return
			}
			if ev.Request.Method == "PATCH" && strings.Contains(ev.Request.URL, "/api/v1/uploads/") {
				chunks.Add(1)
			}
		}
	}()
	start = time.Now()
	step(t, h.ctx, "save", chromedp.SetValue(chromedp.ID("gps_reason_pick"), noFixReason), chromedp.Click(chromedp.ID("save")))
	waitFor(t, h.ctx, "saved", `location.hash.startsWith('#/hh/') && document.getElementById('main').dataset.shown === location.hash`)
	for deadline := time.Now().Add(40 * time.Second); !eval[bool](t, h.ctx, `fieldsyncApp.db.read(['uploads'], t => t.all('uploads')).then(u => u.length === 4 && u.every(x => x.state === 'done'))`); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("uploads not done: %s\nlog:\n%s", eval[string](t, h.ctx, `document.getElementById("syncline").textContent + " " + fieldsyncApp.db.read(['uploads'], t => t.all('uploads')).then(u => JSON.stringify(u.map(x => [x.state, x.size, x.error])))`), h.appLog())
		}
	}
	stop()
	t.Logf("four attachments (%d bytes) uploaded in %v in %d PATCH requests", refs[0].Size+refs[1].Size+refs[2].Size+refs[3].Size, time.Since(start).Round(time.Millisecond), chunks.Load())
	if n := chunks.Load(); n < 120 {
		t.Errorf("%d PATCH requests, want the 30 MB PDF in 256 KB chunks (120 or more)", n)
	}
	// The server reads the pictures after they arrive.
	for deadline := time.Now().Add(30 * time.Second); h.count(`SELECT count(*) FROM blobs WHERE sha256 IN (?, ?, ?, ?) AND analyzed_at IS NOT NULL`,
		refs[0].SHA256, refs[1].SHA256, refs[2].SHA256, refs[3].SHA256) < 4; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the server did not analyse the four blobs")
		}
	}
	type blobRow struct {
		mediaType     string
		width, height int
		exifTime      sql.NullString
		exifLon       sql.NullFloat64
	}
	blob := func(sha string) blobRow {
		var b blobRow
		if err := h.db.QueryRow(`SELECT media_type, coalesce(width, 0), coalesce(height, 0), exif_time, exif_lon FROM blobs WHERE sha256 = ?`, sha).Scan(&b.mediaType, &b.width, &b.height, &b.exifTime, &b.exifLon); err != nil {
			t.Fatalf("blob %s: %v", sha, err)
		}
		return b
	}
	if b := blob(refs[0].SHA256); b.width != 1600 || b.height != 1067 || !b.exifLon.Valid || !b.exifTime.Valid {
		t.Errorf("50 MP photo stored as %+v, want 1600×1067 with its EXIF", b)
	}
	if b := blob(refs[1].SHA256); b.width != 1200 || b.exifTime.Valid || b.exifLon.Valid {
		t.Errorf("photo without EXIF stored as %+v", b)
	}
	if b := blob(refs[2].SHA256); b.mediaType != "image/jpeg" || b.width != 720 || b.height != 1600 {
		t.Errorf("screenshot stored as %+v, want a 720×1600 JPEG", b)
	}
	if b := blob(refs[3].SHA256); b.mediaType != "application/pdf" {
		t.Errorf("PDF stored as %+v", b)
	}
	if got := h.serverBlob(refs[3].SHA256); got != refs[3].SHA256 {
		t.Errorf("server PDF hashes to %s", got)
	}
	h.checkProblems()
}

// bigJPEG makes a w×h JPEG quickly (a plain gradient) with p's EXIF.
func bigJPEG(t *testing.T, w, h int, p evidencetest.Photo) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, w, h))
	ramp := make([]byte, w+h)
	for i := range ramp {
		ramp[i] = byte(i >> 5)
	}
	for y := range h {
		copy(img.Pix[y*img.Stride:y*img.Stride+w], ramp[y:y+w])
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 80}); err != nil {
		t.Fatal(err)
	}
	return evidencetest.SpliceEXIF(buf.Bytes(), evidencetest.EXIF(p))
}

// draftState is the visit draft's notes and attachment count.
func (h *hostile) draftState() (string, int) {
	h.t.Helper()
	d := hostileJS[struct {
		Notes string
		N     int
	}](h, `const d = (await app.db.read(['drafts'], t => t.all('drafts')))[0] || {answers: {}, evidence: []}; return {Notes: d.answers.notes || '', N: d.evidence.length};`)
	return d.Notes, d.N
}

// TestBrowser_FieldAppHostile_QuotaFull shrinks the origin's storage quota
// (Storage.overrideQuotaForOrigin) so that a photo no longer fits while
// a visit is being recorded: the worker gets a clear Chinese message, the
// draft (its answers and the photo already attached) and the outbox are
// intact, and once space is free the same photo goes in and the visit
// saves.
func TestBrowser_FieldAppHostile_QuotaFull(t *testing.T) {
	h := newHostile(t)
	h.publishForm(mediaForm)
	dev := h.enroll("wangge_zhao")
	hh := hostileJS[string](h, `return (await app.db.read(['households'], t => t.all('households', null, 1)))[0].id;`)
	setOffline(t, h.ctx, true) // the work stays on the device

	// An earlier visit waits in the outbox.
	step(t, h.ctx, "first visit", chromedp.Navigate(h.app+"#/visit/"+hh+"/odd_media"), chromedp.WaitVisible(chromedp.ID("f_notes")),
		chromedp.SendKeys(chromedp.ID("f_notes"), "上午的走访"), chromedp.SetValue(chromedp.ID("gps_reason_pick"), noFixReason), chromedp.Click(chromedp.ID("save")))
	waitFor(t, h.ctx, "saved", `location.hash.startsWith('#/hh/') && document.getElementById('main').dataset.shown === location.hash`)

	dir := t.TempDir()
	small := filepath.Join(dir, "small.jpg")
	bigPNG := filepath.Join(dir, "big.png")
	os.WriteFile(small, evidencetest.JPEG(evidencetest.Photo{Seed: 60, Width: 800, Height: 600, Taken: time.Now()}), 0o600)
	os.WriteFile(bigPNG, noisePNG(t, 900, 700), 0o600) // about 2.5 MB, kept as it is
	step(t, h.ctx, "second visit", chromedp.Navigate(h.app+"#/visit/"+hh+"/odd_media"), chromedp.WaitVisible(chromedp.ID("f_notes")),
		chromedp.SendKeys(chromedp.ID("f_notes"), "下午的走访"),
		chromedp.SetUploadFiles(chromedp.CSS(`input[data-slot-gallery="photos"]`), []string{small}, chromedp.NodeReady))
	waitFor(t, h.ctx, "first photo in the draft", `fieldsyncApp.db.read(['drafts'], t => t.all('drafts')).then(d => d.length === 1 && d[0].evidence.length === 1 && d[0].answers.notes === '下午的走访')`)

	// The disk fills up: 256 KB left. (Chromium reads an origin's quota
	// when it opens the origin's IndexedDB store, which stays open for a
	// while, about 30 s here, after the last page leaves: the app is
	// closed and reopened until a probe write sees the new quota.)
	origin := strings.TrimSuffix(h.base, "/")
	// probe writes 512 KB of random bytes as a Blob to a database of
	// its own and says whether the quota refused it.
	const probe = `new Promise(ok => { const r = indexedDB.open('quota-probe', 1); r.onupgradeneeded = () => r.result.createObjectStore('s');
		r.onsuccess = () => { const db = r.result; const b = new Uint8Array(512 * 1024); for (let i = 0; i < b.length; i += 65536) crypto.getRandomValues(b.subarray(i, i + 65536));
			const t = db.transaction('s', 'readwrite'); t.objectStore('s').put(new Blob([b]), 1);
			t.oncomplete = () => { t.db.transaction('s', 'readwrite').objectStore('s').clear(); db.close(); ok(false); }; t.onabort = () => { db.close(); ok(t.error && t.error.name === 'QuotaExceededError'); }; };
		r.onerror = () => ok(false); })`
	setQuota := func(quota *float64) {
		t.Helper()
		if _, err := chromedp.Call(h.ctx, storage.OverrideQuotaForOrigin, storage.OverrideQuotaForOriginParams{Origin: origin, QuotaSize: quota}); err != nil {
			t.Fatalf("override quota: %v", err)
		}
		start := time.Now()
		for i := 0; ; i++ {
			step(t, h.ctx, "close the app", chromedp.Navigate("about:blank"))
			time.Sleep(2 * time.Second)
			step(t, h.ctx, "probe page", chromedp.Navigate(h.app+"#/log"), chromedp.WaitVisible(chromedp.CSS("main h1")))
			if refused := eval[bool](t, h.ctx, probe); refused == (quota != nil) {
				break
			}
			if time.Since(start) > 90*time.Second {
				t.Fatal("the quota change did not take hold in 90 s")
			}
		}
		if quota != nil {
			t.Logf("quota of %.0f bytes in force after %v", *quota, time.Since(start).Round(time.Millisecond))
		} else {
			t.Logf("quota back to normal after %v", time.Since(start).Round(time.Millisecond))
		}
		step(t, h.ctx, "reopen the draft", chromedp.Navigate(h.app+"#/visit/"+hh+"/odd_media"), chromedp.WaitVisible(chromedp.ID("f_notes")))
		waitFor(t, h.ctx, "draft restored", `document.getElementById('f_notes').value === '下午的走访' && document.querySelectorAll('#slot_photos img').length === 1`)
	}
	uq, err := chromedp.Call(h.ctx, storage.GetUsageAndQuota, storage.GetUsageAndQuotaParams{Origin: origin})
	if err != nil {
		t.Fatal(err)
	}
	quota := uq.Usage + 256*1024
	setQuota(&quota)
	step(t, h.ctx, "photo that does not fit", chromedp.SetUploadFiles(chromedp.CSS(`input[data-slot-gallery="photos"]`), []string{bigPNG}, chromedp.NodeReady))
	waitFor(t, h.ctx, "the worker is told", `document.getElementById('banner').textContent.includes('存储空间已满')`)
	if notes, n := h.draftState(); notes != "下午的走访" || n != 1 {
		t.Errorf("draft after the full disk: notes %q, %d attachments (want the notes and the first photo)", notes, n)
	}
	if n := eval[int](t, h.ctx, `fieldsyncApp.db.read(['photos'], t => t.count('photos'))`); n != 1 {
		t.Errorf("%d photos stored, want the first one only", n)
	}
	// The earlier visit waits in the outbox (or went up while the app
	// was reopened).
	kept := func() int { return h.outboxCount() + h.count(`SELECT count(*) FROM visits WHERE device_id = ?`, dev) }
	if n := kept(); n != 1 {
		t.Errorf("%d visits in the outbox or on the server, want the earlier one", n)
	}
	if n := eval[int](t, h.ctx, `document.querySelectorAll('#slot_photos img').length`); n != 1 {
		t.Errorf("%d pictures shown, want 1", n)
	}

	// Space again: the same photo goes in and the visit saves.
	setQuota(nil)
	step(t, h.ctx, "photo again", chromedp.SetUploadFiles(chromedp.CSS(`input[data-slot-gallery="photos"]`), []string{bigPNG}, chromedp.NodeReady))
	waitFor(t, h.ctx, "second photo in the draft", `fieldsyncApp.db.read(['drafts'], t => t.all('drafts')).then(d => d.length === 1 && d[0].evidence.length === 2)`)
	// The slot shows both pictures (the page has stopped moving).
	waitFor(t, h.ctx, "two pictures shown", `[...document.querySelectorAll('#slot_photos img')].filter(i => i.complete).length === 2`)
	step(t, h.ctx, "save", chromedp.SetValue(chromedp.ID("gps_reason_pick"), noFixReason), chromedp.Click(chromedp.ID("save")))
	waitFor(t, h.ctx, "saved", `location.hash.startsWith('#/hh/') && document.getElementById('main').dataset.shown === location.hash`)
	if n := kept(); n != 2 {
		t.Errorf("%d visits in the outbox or on the server, want both", n)
	}
	h.checkProblems()
}

// shiftClock makes the tab's clock run days off from the start of every
// page it loads (Date.now and new Date; the service worker keeps the
// right time, as it has no part in recording).
func (h *hostile) shiftClock(days int) {
	h.t.Helper()
	src := fmt.Sprintf(`(() => {
		const shift = %d * 86400000;
		const RealDate = Date;
		class ShiftedDate extends RealDate {
			constructor(...a) { if (a.length === 0) super(RealDate.now() + shift); else super(...a); }
			static now() { return RealDate.now() + shift; }
		}
		globalThis.Date = ShiftedDate;
	})();`, days)
	if _, err := chromedp.Call(h.ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: src}); err != nil {
		h.t.Fatal(err)
	}
}

// goDevice is a device with a right clock, speaking the sync API from Go.
type goDevice struct {
	h      *hostile
	id     string
	token  string
	seq    int
	hlcMs  int64
	hlcCnt int
}

func (h *hostile) goDevice(username string) *goDevice {
	h.t.Helper()
	ec := demoEnrollment(h.t, h.base, username)
	var en struct {
		DeviceID string `json:"device_id"`
		Token    string
	}
	apiJSON(h.t, "POST", h.base+"/api/v1/devices/enroll", "", map[string]string{"code": ec.Code, "name": "right clock"}, &en)
	return &goDevice{h: h, id: en.DeviceID, token: en.Token}
}

// observe moves the device's clock past an HLC the server sent.
func (d *goDevice) observe(hlc string) {
	var ms int64
	var c int
	if _, err := fmt.Sscanf(hlc, "%013d-%04x", &ms, &c); err == nil && (ms > d.hlcMs || ms == d.hlcMs && c > d.hlcCnt) {
		d.hlcMs, d.hlcCnt = ms, c
	}
}

// sync pulls everything (to learn the server's clock) and pushes one
// household field change.
func (d *goDevice) setField(hh, field, value string) {
	h := d.h
	h.t.Helper()
	var pull struct {
		ServerHLC string `json:"server_hlc"`
		Cursor    string
		HasMore   bool `json:"has_more"`
	}
	for more := true; more; more = pull.HasMore {
		apiJSON(h.t, "POST", h.base+"/api/v1/sync/pull", d.token, map[string]any{"protocol_version": 1, "device_id": d.id, "cursor": pull.Cursor}, &pull)
		d.observe(pull.ServerHLC)
	}
	if now := time.Now().UnixMilli(); now > d.hlcMs {
		d.hlcMs, d.hlcCnt = now, 0
	} else {
		d.hlcCnt++
	}
	var base int64
	h.db.QueryRow(`SELECT version FROM households WHERE id = ?`, hh).Scan(&base)
	d.seq++
	var push struct {
		Results []struct{ Status, Code, Message string }
	}
	apiJSON(h.t, "POST", h.base+"/api/v1/sync/push", d.token, map[string]any{"protocol_version": 1, "device_id": d.id, "mutations": []any{map[string]any{
		"seq": d.seq, "kind": "household.update", "hlc": fmt.Sprintf("%013d-%04x", d.hlcMs, d.hlcCnt),
		"household_update": map[string]any{"household_id": hh, "base_version": base, "fields": map[string]string{field: value}}}}}, &push)
	if len(push.Results) != 1 || push.Results[0].Status != "applied" {
		h.t.Fatalf("push: %+v", push.Results)
	}
}

// phone is a household's phone field on the server.
func (h *hostile) phone(hh string) string {
	var p string
	h.db.QueryRow(`SELECT coalesce(json_extract(fields, '$.phone'), '') FROM households WHERE id = ?`, hh).Scan(&p)
	return p
}

// TestBrowser_FieldAppHostile_ClockOff runs the app on a tablet whose
// clock is 400 days fast and on one whose clock is three years slow. The
// server keeps each visit's device time and its own receive time; the
// fast clock's visit is flagged clock_skew for review (with a Chinese
// detail), its HLC is clamped so a later edit by a right clock still
// wins; the slow clock's edits still order after what it has seen (its
// HLC follows the server's). A slow clock is not flagged: an old device
// time is what offline work looks like, so the server cannot tell.
func TestBrowser_FieldAppHostile_ClockOff(t *testing.T) {
	h := newHostile(t)
	h.publishForm(mediaForm)
	right := h.goDevice("wangge_zhao")

	t.Run("400 days fast", func(t *testing.T) {
		h.shiftClock(400)
		dev := h.enroll("wangge_zhao")
		if y := eval[int](t, h.ctx, `new Date().getFullYear()`); y < time.Now().Year()+1 {
			t.Fatalf("the page's clock says %d", y)
		}
		hhs := hostileJS[[]string](h, `return (await app.db.read(['households'], t => t.all('households', null, 2))).map(x => x.id);`)
		step(t, h.ctx, "visit", chromedp.Navigate(h.app+"#/visit/"+hhs[0]+"/odd_media"), chromedp.WaitVisible(chromedp.ID("f_notes")),
			chromedp.SendKeys(chromedp.ID("f_notes"), "时钟快的平板"), chromedp.SetValue(chromedp.ID("gps_reason_pick"), noFixReason), chromedp.Click(chromedp.ID("save")))
		waitFor(t, h.ctx, "saved", `location.hash.startsWith('#/hh/') && document.getElementById('main').dataset.shown === location.hash`)
		enqueueUpdate(h, hhs[1], "phone", "13600000001")
		waitFor(t, h.ctx, "idle", `!fieldsyncApp.syncer.running`)
		if got := syncNow(t, h.ctx); got != "ok" || h.outboxCount() != 0 {
			t.Fatalf("sync: %s, outbox %d", got, h.outboxCount())
		}
		var id, deviceTime, serverTime, hlc string
		if err := h.db.QueryRow(`SELECT id, device_time, server_time, hlc FROM visits WHERE device_id = ?`, dev).Scan(&id, &deviceTime, &serverTime, &hlc); err != nil {
			t.Fatal(err)
		}
		dt, _ := time.Parse(time.RFC3339Nano, deviceTime)
		st, _ := time.Parse(time.RFC3339Nano, serverTime)
		if d := dt.Sub(st); d < 399*24*time.Hour || d > 401*24*time.Hour {
			t.Errorf("device time %s, server time %s: want both kept, 400 days apart", deviceTime, serverTime)
		}
		var hlcMs int64
		fmt.Sscanf(hlc, "%013d", &hlcMs)
		if ahead := time.UnixMilli(hlcMs).Sub(st); ahead > 6*time.Minute {
			t.Errorf("visit HLC %s is %v past the server's time: not clamped", hlc, ahead)
		}
		var detail string
		for deadline := time.Now().Add(10 * time.Second); detail == "" && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			h.db.QueryRow(`SELECT detail FROM evidence_flags WHERE visit_id = ? AND flag = 'clock_skew'`, id).Scan(&detail)
		}
		if !strings.Contains(detail, "设备时钟快了约 399 天") && !strings.Contains(detail, "设备时钟快了约 400 天") {
			t.Errorf("clock_skew flag detail %q", detail)
		}
		// A right clock changes the same field after: its edit wins,
		// though the fast tablet's own clock is 400 days ahead of it.
		right.setField(hhs[1], "phone", "13600000002")
		if got := h.phone(hhs[1]); got != "13600000002" {
			t.Errorf("phone %q after the later edit by a right clock", got)
		}
		if got := syncNow(t, h.ctx); got != "ok" {
			t.Fatalf("sync: %s", got)
		}
		if got := hostileJS[string](h, `return (await app.db.read(['households'], t => t.get('households', '`+hhs[1]+`'))).fields.phone;`); got != "13600000002" {
			t.Errorf("the fast tablet holds phone %q", got)
		}
	})

	t.Run("three years slow", func(t *testing.T) {
		slow := *h
		slow.t = t
		slow.ctx, slow.problems = newBrowser(t, 800, 1280)
		s := &slow
		s.shiftClock(-3 * 365)
		hh := hostileJS[string](h, `return (await app.db.read(['households'], t => t.all('households', null, 3)))[2].id;`)
		right.setField(hh, "phone", "13500000001") // before the slow tablet's edit
		dev := s.enroll("wangge_zhao")
		if y := eval[int](t, s.ctx, `new Date().getFullYear()`); y > time.Now().Year()-2 {
			t.Fatalf("the page's clock says %d", y)
		}
		enqueueUpdate(s, hh, "phone", "13500000002")
		step(t, s.ctx, "visit", chromedp.Navigate(s.app+"#/visit/"+hh+"/odd_media"), chromedp.WaitVisible(chromedp.ID("f_notes")),
			chromedp.SendKeys(chromedp.ID("f_notes"), "时钟慢的平板"), chromedp.SetValue(chromedp.ID("gps_reason_pick"), noFixReason), chromedp.Click(chromedp.ID("save")))
		waitFor(t, s.ctx, "saved", `location.hash.startsWith('#/hh/') && document.getElementById('main').dataset.shown === location.hash`)
		waitFor(t, s.ctx, "idle", `!fieldsyncApp.syncer.running`)
		if got := syncNow(t, s.ctx); got != "ok" || s.outboxCount() != 0 {
			t.Fatalf("sync: %s, outbox %d", got, s.outboxCount())
		}
		if got := h.phone(hh); got != "13500000002" {
			t.Errorf("phone %q: the slow tablet's later edit lost to the earlier one", got)
		}
		var id, deviceTime, serverTime string
		if err := h.db.QueryRow(`SELECT id, device_time, server_time FROM visits WHERE device_id = ?`, dev).Scan(&id, &deviceTime, &serverTime); err != nil {
			t.Fatal(err)
		}
		dt, _ := time.Parse(time.RFC3339Nano, deviceTime)
		st, _ := time.Parse(time.RFC3339Nano, serverTime)
		if d := st.Sub(dt); d < 3*364*24*time.Hour {
			t.Errorf("device time %s, server time %s: want both kept", deviceTime, serverTime)
		}
		time.Sleep(500 * time.Millisecond) // the checks run after the push
		if n := h.count(`SELECT count(*) FROM evidence_flags WHERE visit_id = ? AND flag = 'clock_skew'`, id); n != 0 {
			t.Errorf("the slow tablet's visit is flagged clock_skew")
		}
		s.checkProblems()
	})
	h.checkProblems()
}

// bigForm has 200 fields: 199 optional ones of several types and a
// required select of 500 choices.
func bigForm() string {
	type choice struct {
		Value   string `json:"value"`
		Label   string `json:"label"`
		LabelEn string `json:"label_en"`
	}
	type field struct {
		Name     string   `json:"name"`
		Type     string   `json:"type"`
		Label    string   `json:"label"`
		LabelEn  string   `json:"label_en"`
		Required bool     `json:"required,omitempty"`
		Choices  []choice `json:"choices,omitempty"`
	}
	var fields []field
	types := []string{"text", "integer", "decimal", "text", "date"}
	for i := 1; i < 200; i++ {
		fields = append(fields, field{Name: fmt.Sprintf("q%03d", i), Type: types[i%len(types)], Label: fmt.Sprintf("第 %d 题", i), LabelEn: fmt.Sprintf("Question %d", i)})
	}
	sel := field{Name: "village_group", Type: "select_one", Label: "所属村民小组", LabelEn: "Village group", Required: true}
	for i := 1; i <= 500; i++ {
		sel.Choices = append(sel.Choices, choice{Value: fmt.Sprintf("g%03d", i), Label: fmt.Sprintf("第 %d 村民小组", i), LabelEn: fmt.Sprintf("Group %d", i)})
	}
	fields = append(fields, sel)
	b, _ := json.Marshal(map[string]any{"id": "big_survey", "title": "大型调查表", "title_en": "Big survey", "fields": fields})
	return string(b)
}

// TestBrowser_FieldAppHostile_LargeContent gives the worker a scope of
// 20,000 more households and a form of 200 fields with a select of 500
// choices: the app syncs it all, the household list keeps a bounded
// number of rows in the DOM and its search finds a household, and a
// visit with the big form is recorded and accepted.
func TestBrowser_FieldAppHostile_LargeContent(t *testing.T) {
	h := newHostile(t)
	h.publishForm(bigForm())
	var place string
	h.db.QueryRow(`SELECT up.place_code FROM user_places up JOIN users u ON u.id = up.user_id WHERE u.username = 'wangge_zhao' ORDER BY 1 LIMIT 1`).Scan(&place)
	if place == "" {
		t.Fatal("wangge_zhao has no place")
	}
	// 20,000 households in one of the worker's places, added as a
	// register import would (a second handle on the server's database).
	const extra = 20000
	st, err := OpenStore(context.Background(), Config{DataDir: h.data})
	if err != nil {
		t.Fatal(err)
	}
	surnames := []rune("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗")
	given := []rune("文华明芳建国秀英志强丽娟海军玉兰桂林德福春梅")
	hs := make([]syncproto.Household, extra)
	base := time.Now()
	for i := range hs {
		name := string(surnames[i%len(surnames)]) + string(given[(i/len(surnames))%len(given)]) + string(given[(i/7)%len(given)])
		f := map[string]json.RawMessage{}
		f["head_name"], _ = json.Marshal(fmt.Sprintf("%s%d", name, i))
		f["house_no"], _ = json.Marshal(fmt.Sprintf("新村%05d号", i))
		f["phone"], _ = json.Marshal(fmt.Sprintf("139%08d", i))
		hs[i] = syncproto.Household{ID: syncproto.NewID(base.Add(time.Duration(i) * time.Millisecond)), PlaceCode: place, Fields: f}
	}
	start := time.Now()
	if err := st.ImportHouseholds(context.Background(), hs, 0); err != nil {
		t.Fatalf("import: %v", err)
	}
	st.Close()
	t.Logf("imported %d households in %v", extra, time.Since(start).Round(time.Millisecond))
	want := h.count(`SELECT count(*) FROM households h WHERE h.deleted = 0 AND h.place_code IN (
		WITH RECURSIVE sub(code) AS (SELECT place_code FROM user_places up JOIN users u ON u.id = up.user_id WHERE u.username = 'wangge_zhao'
			UNION SELECT p.code FROM places p JOIN sub ON p.parent_code = sub.code) SELECT code FROM sub)`)
	if want < extra {
		t.Fatalf("scope holds %d households", want)
	}

	start = time.Now()
	h.enroll("wangge_zhao")
	t.Logf("enrolment and first sync of %d households: %v", want, time.Since(start).Round(time.Millisecond))
	if got := eval[int](t, h.ctx, `fieldsyncApp.db.read(['households'], t => t.count('households'))`); got != want {
		t.Errorf("device holds %d households, want %d", got, want)
	}
	usage := eval[float64](t, h.ctx, `navigator.storage.estimate().then(e => e.usageDetails ? e.usageDetails.indexedDB : e.usage)`)
	t.Logf("IndexedDB %.1f MB for %d households (%.0f KB per 1,000 households)", usage/1e6, want, usage/float64(want)*1000/1024)

	t.Run("list stays usable", func(t *testing.T) {
		start := time.Now()
		step(t, h.ctx, "place", chromedp.Navigate(h.app+"#/place/"+place), chromedp.WaitVisible(chromedp.CSS("#hhlist .hh")))
		t.Logf("list of the place rendered in %v", time.Since(start).Round(time.Millisecond))
		inPlace := h.count(`SELECT count(*) FROM households WHERE place_code = ? AND deleted = 0`, place)
		if got := eval[string](t, h.ctx, `document.getElementById('hhcount').textContent`); got != fmt.Sprintf("共 %d 户", inPlace) {
			t.Errorf("count %q, want %d", got, inPlace)
		}
		if n := eval[int](t, h.ctx, `document.querySelectorAll('#hhlist .hh').length`); n == 0 || n > 100 {
			t.Errorf("%d rows in the DOM for %d households", n, inPlace)
		}
		if n := eval[int](t, h.ctx, `document.getElementsByTagName('*').length`); n > 1000 {
			t.Errorf("%d elements in the page", n)
		}
		// Scroll far down: still a bounded window of rows, from there.
		eval[bool](t, h.ctx, `(() => { const l = document.getElementById('hhlist'); l.scrollTop = l.scrollHeight / 2; l.dispatchEvent(new Event('scroll')); return true; })()`)
		waitFor(t, h.ctx, "rows of the middle", `[...document.querySelectorAll('#hhlist .hh .sub')].some(e => { const m = /新村(\d{5})号/.exec(e.textContent); return m && +m[1] > 5000 && +m[1] < 15000; })`)
		if n := eval[int](t, h.ctx, `document.querySelectorAll('#hhlist .hh').length`); n == 0 || n > 100 {
			t.Errorf("%d rows in the DOM after scrolling", n)
		}
		start = time.Now()
		step(t, h.ctx, "search", chromedp.SendKeys(chromedp.ID("search"), "新村12345号"))
		waitFor(t, h.ctx, "search result", `document.getElementById('hhcount').textContent === '共 1 户'`)
		t.Logf("search typed and answered in %v", time.Since(start).Round(time.Millisecond))
		if got := eval[string](t, h.ctx, `document.querySelector('#hhlist .hh .name').textContent`); !strings.HasSuffix(got, "12345") {
			t.Errorf("search shows %q", got)
		}
	})

	t.Run("form of 200 fields", func(t *testing.T) {
		hh := hs[12345].ID
		start := time.Now()
		step(t, h.ctx, "form", chromedp.Navigate(h.app+"#/visit/"+hh+"/big_survey"), chromedp.WaitVisible(chromedp.ID("f_village_group")))
		t.Logf("form of 200 fields rendered in %v", time.Since(start).Round(time.Millisecond))
		if n := eval[int](t, h.ctx, `document.querySelectorAll('#f_village_group option').length`); n != 501 {
			t.Errorf("select has %d options, want 500 and the prompt", n)
		}
		step(t, h.ctx, "fill", chromedp.SendKeys(chromedp.ID("f_q001"), "42"), chromedp.SendKeys(chromedp.ID("f_q003"), "第三题的回答"))
		eval[bool](t, h.ctx, `(() => { const s = document.getElementById('f_village_group'); s.value = 'g437'; s.dispatchEvent(new Event('change', {bubbles: true})); s.dispatchEvent(new Event('input', {bubbles: true})); return true; })()`)
		// No GPS fix in this test: the worker states why (the app asks).
		step(t, h.ctx, "reason", chromedp.SetValue(chromedp.ID("gps_reason_pick"), "山谷里没有信号"))
		step(t, h.ctx, "save", chromedp.Click(chromedp.ID("save")))
		waitFor(t, h.ctx, "saved", `location.hash.startsWith('#/hh/') && document.getElementById('main').dataset.shown === location.hash`)
		waitFor(t, h.ctx, "idle", `!fieldsyncApp.syncer.running`)
		if got := syncNow(t, h.ctx); got != "ok" {
			t.Fatalf("sync: %s", got)
		}
		var answers string
		h.db.QueryRow(`SELECT answers FROM visits WHERE household_id = ? AND form_id = 'big_survey'`, hh).Scan(&answers)
		if !strings.Contains(answers, `"village_group":"g437"`) || !strings.Contains(answers, `"q001":42`) {
			t.Errorf("server holds answers %s", answers)
		}
	})
	h.checkProblems()
}
