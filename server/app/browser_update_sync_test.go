package app

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chromedp/chromedp"

	"fieldsync/mobileclient/webapp"
	"fieldsync/server/demo"
)

// TestBrowser_FieldAppUpdateWithPendingOutbox is "Update" of issue 14: a
// new app version is served while 50 items wait in the outbox (25 new
// households and 25 edits, made offline). The page reloads into the new
// version with the outbox intact, and one sync sends each item exactly
// once: the server holds the 25 households once each with the edits
// applied, it recorded 50 results for the device, and a second sync sends
// nothing.
func TestBrowser_FieldAppUpdateWithPendingOutbox(t *testing.T) {
	const creates, edits = 25, 25
	base, data := testServer(t)
	v1, err := LoadAppFiles(webapp.FS())
	if err != nil {
		t.Fatal(err)
	}
	v2 := appVersion2(t)
	var cur atomic.Pointer[AppFiles]
	cur.Store(v1)
	var apiDown atomic.Bool // the API answers 503: the app can load but not sync
	target, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	api := httputil.NewSingleHostReverseProxy(target)
	// One origin: the app from a version the test switches, the API from
	// the real server.
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, AppPrefix) {
			cur.Load().ServeHTTP(w, r)
			return
		}
		if apiDown.Load() {
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"code":"unavailable","message":"维护中"}`, http.StatusServiceUnavailable)
			return
		}
		api.ServeHTTP(w, r)
	}))
	defer front.Close()
	_, count := openServerDB(t, data)

	ctx, problems := newBrowser(t, 800, 1280)
	group := demo.VillageCode + "001"
	code, _ := enrollWorker(t, base, "wangge_geng", "耿秀兰(网格员)", group)
	app := front.URL + AppPrefix
	step(t, ctx, "open", chromedp.Navigate(app), chromedp.WaitVisible(chromedp.ID("code")))
	step(t, ctx, "enroll", chromedp.SendKeys(chromedp.ID("code"), code), chromedp.Click(chromedp.ID("enrollbtn")))
	waitFor(t, ctx, "first sync", `document.getElementById('hhcount') && !document.getElementById('hhcount').textContent.startsWith('0 ')`)
	waitFor(t, ctx, "service worker v1 in control", `!!navigator.serviceWorker.controller && fieldsyncApp.version === '`+v1.Version+`'`)
	devID := eval[string](t, ctx, `fieldsyncApp.db.getMeta('device_id')`)

	setOffline(t, ctx, true)
	// 50 items, written as the household screens write them.
	made := eval[string](t, ctx, fmt.Sprintf(`(async () => {
		const db = await import('./js/db.js'); const u = await import('./js/util.js');
		const hhs = (await fieldsyncApp.db.read(['households'], t => t.all('households'))).filter(h => h.place_code === %q).slice(0, %d);
		if (hhs.length < %d) return 'only ' + hhs.length + ' households';
		const ids = [];
		for (let i = 0; i < %d; i++) {
			const id = u.newID(); ids.push(id);
			await fieldsyncApp.db.write(['households', 'outbox', 'meta'], async (t) => {
				const fields = { head_name: '更新测试户' + i };
				await db.enqueue(t, 'household.create', 'household', { id, place_code: %q, fields }, u.nextHLC);
				await t.put('households', { id, place_code: %q, fields, version: 0, local: true });
			});
		}
		for (const hh of hhs) {
			await fieldsyncApp.db.write(['households', 'outbox', 'meta'], async (t) => {
				await db.enqueue(t, 'household.update', 'household_update', { household_id: hh.id, base_version: hh.version || 0, fields: { notes: '升级前的修改' } }, u.nextHLC);
			});
		}
		return ids.join(',') + '|' + hhs.map(h => h.id).join(',');
	})()`, group, edits, edits, creates, group, group))
	newIDs, editedIDs, ok := strings.Cut(made, "|")
	if !ok {
		t.Fatalf("making the outbox: %s", made)
	}
	outbox := func() string {
		return eval[string](t, ctx, `fieldsyncApp.db.read(['outbox'], t => t.all('outbox')).then(r => r.length + ':' + r.map(x => x.seq).join(','))`)
	}
	before := outbox()
	if !strings.HasPrefix(before, fmt.Sprint(creates+edits)+":") {
		t.Fatalf("outbox before the update: %s", before)
	}

	// The new version: installed in the background; with no sync running
	// it takes over and the page reloads into it. The API is down
	// meanwhile, so that the items wait through the update.
	eval[bool](t, ctx, `(window.marker = 1, true)`)
	apiDown.Store(true)
	setOffline(t, ctx, false)
	cur.Store(v2)
	eval[bool](t, ctx, `navigator.serviceWorker.getRegistration().then(r => r.update()).then(() => true)`)
	waitAcrossReload(t, ctx, "page reloaded into v2", `window.marker === undefined && window.fieldsyncApp && fieldsyncApp.version === '`+v2.Version+`'`)
	if got := outbox(); got != before {
		t.Fatalf("outbox after the update: %s, before %s", got, before)
	}

	apiDown.Store(false)
	if r := syncNow(t, ctx); r != "ok" {
		t.Fatalf("sync: %s", r)
	}
	if got := outbox(); !strings.HasPrefix(got, "0:") {
		t.Errorf("outbox after the sync: %s", got)
	}
	for _, id := range strings.Split(newIDs, ",") {
		if n := count(`SELECT count(*) FROM households WHERE id = ? AND deleted = 0`, id); n != 1 {
			t.Errorf("household %s on the server %d times", id, n)
		}
	}
	for _, id := range strings.Split(editedIDs, ",") {
		if n := count(`SELECT count(*) FROM households WHERE id = ? AND json_extract(fields, '$.notes') = '升级前的修改'`, id); n != 1 {
			t.Errorf("edit of %s not on the server", id)
		}
	}
	results := count(`SELECT count(*) FROM mutation_results WHERE device_id = ?`, devID)
	if results != creates+edits {
		t.Errorf("the server recorded %d results for the device, want %d", results, creates+edits)
	}
	changes := count(`SELECT count(*) FROM changes`)
	if r := syncNow(t, ctx); r != "ok" {
		t.Fatalf("second sync: %s", r)
	}
	if n := count(`SELECT count(*) FROM mutation_results WHERE device_id = ?`, devID); n != results {
		t.Errorf("a second sync sent more: %d results, then %d", results, n)
	}
	if n := count(`SELECT count(*) FROM changes`); n != changes {
		t.Errorf("a second sync changed the server: %d changes, then %d", changes, n)
	}
	for _, p := range problems() {
		if !strings.Contains(p, "status of 503") { // the API down during the update
			t.Errorf("page problem: %s", p)
		}
	}
}
