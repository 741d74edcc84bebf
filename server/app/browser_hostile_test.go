package app

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/chromedp"
	_ "github.com/mattn/go-sqlite3"

	"fieldsync/server/demo"
)

// The field is not the happy path: these tests drive the field app
// through what goes wrong out there (a reused sequence number, a server
// that is busy, upgraded or lost an upload, the link dropping in the
// middle of a sync, a full disk, odd media, a wrong clock, big scopes).

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
}

func newHostile(t *testing.T) *hostile {
	t.Helper()
	ctx, problems := newBrowser(t, 800, 1280)
	base, data := testServer(t)
	db, err := sql.Open("sqlite3", "file:"+DBPath(data)+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var login struct{ Token string }
	apiJSON(t, "POST", base+"/api/v1/auth/login", "", map[string]string{"username": "admin", "password": demo.DemoPassword}, &login)
	return &hostile{t: t, ctx: ctx, problems: problems, base: base, data: data, app: base + "/app/", admin: login.Token, db: db}
}

// count runs a counting query on the server's database.
func (h *hostile) count(q string, args ...any) int {
	h.t.Helper()
	var n int
	if err := h.db.QueryRow(q, args...).Scan(&n); err != nil {
		h.t.Fatalf("%s: %v", q, err)
	}
	return n
}

// enroll issues an enrollment code for the demo user, types it into the
// app and waits for the first sync; it returns the device id.
func (h *hostile) enroll(username string) string {
	t := h.t
	t.Helper()
	var users []struct {
		ID       int64
		Username string
	}
	apiJSON(t, "GET", h.base+"/api/v1/users", h.admin, nil, &users)
	var userID int64
	for _, u := range users {
		if u.Username == username {
			userID = u.ID
		}
	}
	if userID == 0 {
		t.Fatalf("no user %s", username)
	}
	var ec struct{ Code string }
	apiJSON(t, "POST", fmt.Sprintf("%s/api/v1/users/%d/enrollment-codes", h.base, userID), h.admin, map[string]any{}, &ec)
	step(t, h.ctx, "enroll", chromedp.Navigate(h.app), chromedp.WaitVisible(chromedp.ID("code")),
		chromedp.SendKeys(chromedp.ID("code"), ec.Code), chromedp.Click(chromedp.ID("enrollbtn")))
	waitFor(t, h.ctx, "first sync", `/^[1-9][0-9]* 户$/.test((document.getElementById('hhcount') || {}).textContent || '')`)
	waitFor(t, h.ctx, "service worker in control", `!!navigator.serviceWorker.controller`)
	waitFor(t, h.ctx, "first sync over", `!fieldsyncApp.syncer.running`)
	return eval[string](t, h.ctx, `fieldsyncApp.db.getMeta('device_id')`)
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
	t := h.t
	t.Helper()
	fctx, fcancel := context.WithCancel(h.ctx)
	if _, err := chromedp.Call(h.ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: pattern}}}); err != nil {
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
