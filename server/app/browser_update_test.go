package app

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/chromedp/chromedp"

	"fieldsync/mobileclient/webapp"
)

// appVersion2 is the embedded app with one file changed, so it has a new
// version (a new sw.js).
func appVersion2(t *testing.T) *AppFiles {
	t.Helper()
	m := fstest.MapFS{}
	err := fs.WalkDir(webapp.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(webapp.FS(), p)
		if p == "app.css" {
			b = append(b, []byte("\n/* version 2 */\n")...)
		}
		m[p] = &fstest.MapFile{Data: b}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	a, err := LoadAppFiles(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestBrowser_FieldAppUpdateWaitsForSync: a new app version installs in the
// background but takes over only once no sync holds the sync lock; then
// the page reloads into it, and the outbox is intact. It also checks the
// IndexedDB schema and that an outbox write is all or nothing.
func TestBrowser_FieldAppUpdateWaitsForSync(t *testing.T) {
	ctx, problems := newBrowser(t, 360, 800)
	v1, err := LoadAppFiles(webapp.FS())
	if err != nil {
		t.Fatal(err)
	}
	v2 := appVersion2(t)
	if v1.Version == v2.Version {
		t.Fatal("the two versions are the same")
	}
	var cur atomic.Pointer[AppFiles]
	cur.Store(v1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, AppPrefix) {
			http.NotFound(w, r)
			return
		}
		cur.Load().ServeHTTP(w, r)
	}))
	defer srv.Close()
	app := srv.URL + AppPrefix

	step(t, ctx, "open", chromedp.Navigate(app), chromedp.WaitVisible(chromedp.ID("code")))
	waitFor(t, ctx, "service worker v1 in control", `!!navigator.serviceWorker.controller && fieldsyncApp.version === '`+v1.Version+`'`)

	t.Run("schema", func(t *testing.T) {
		stores := eval[string](t, ctx, `Array.from(fieldsyncApp.db.idb.objectStoreNames).sort().join(',')`)
		if stores != "conflicts,drafts,forms,households,log,meta,outbox,photos,places,rejected,sent,tasks,uploads,visits" {
			t.Errorf("stores %s", stores)
		}
		if v := eval[int](t, ctx, `import('./js/db.js').then(m => m.DB_VERSION === m.MIGRATIONS.length && fieldsyncApp.db.idb.version === m.DB_VERSION ? m.DB_VERSION : -1)`); v < 1 {
			t.Errorf("database version does not follow the migrations: %d", v)
		}
		// A database of version 1 with an outbox row upgrades to the current
		// version with the row and the sequence counter intact.
		up := eval[string](t, ctx, `(async () => {
			const m = await import('./js/db.js');
			await new Promise((res, rej) => {
				const r = indexedDB.open('fieldsync-upgrade', 1);
				r.onupgradeneeded = (e) => m.upgrade(r.result, r.transaction, e.oldVersion, 1);
				r.onerror = () => rej(r.error);
				r.onsuccess = async () => {
					const db = new m.DB(r.result);
					await db.write(['outbox', 'meta'], async (t) => { await t.put('outbox', {seq: 1, kind: 'visit.create', body: {seq: 1}}); await t.setMeta('next_seq', 2); });
					db.close(); res();
				};
			});
			const db2 = await m.openDB('fieldsync-upgrade');
			const out = [db2.idb.version === m.DB_VERSION, [...db2.idb.objectStoreNames].includes('sent'),
				(await db2.read(['outbox'], t => t.all('outbox'))).map(r => r.seq).join(','), await db2.getMeta('next_seq')];
			db2.close();
			return out.join('|');
		})()`)
		if up != "true|true|1|2" {
			t.Errorf("upgrade from version 1: %s", up)
		}
		// Three outbox rows; a fourth write that fails half-way leaves nothing.
		got := eval[string](t, ctx, `(async () => {
			const db = await import('./js/db.js'); const u = await import('./js/util.js');
			for (let i = 0; i < 3; i++) {
				await fieldsyncApp.db.write(['meta', 'outbox'], t => db.enqueue(t, 'visit.create', 'visit', {id: u.newID(), n: i}, u.nextHLC));
			}
			let failed = '';
			try {
				await fieldsyncApp.db.write(['meta', 'outbox'], async t => { await db.enqueue(t, 'visit.create', 'visit', {id: 'x'}, u.nextHLC); throw new Error('boom'); });
			} catch (e) { failed = e.message; }
			const rows = await fieldsyncApp.db.read(['outbox'], t => t.all('outbox'));
			return failed + ':' + rows.map(r => r.seq).join(',') + ':' + await fieldsyncApp.db.getMeta('next_seq');
		})()`)
		if got != "boom:1,2,3:4" {
			t.Errorf("outbox after three writes and a failed one: %s", got)
		}
	})

	t.Run("update waits while a sync runs", func(t *testing.T) {
		// A sync is running (another tab, say): it holds the lock.
		eval[bool](t, ctx, `(navigator.locks.request('fieldsync-sync', () => new Promise(r => { window.releaseSync = r; })), window.marker = 1, true)`)
		cur.Store(v2)
		eval[bool](t, ctx, `navigator.serviceWorker.getRegistration().then(r => r.update()).then(() => true)`)
		waitFor(t, ctx, "v2 installed and waiting", `navigator.serviceWorker.getRegistration().then(r => !!r.waiting)`)
		time.Sleep(4 * time.Second) // longer than the page's retry interval (3 s)
		if still := eval[bool](t, ctx, `window.marker === 1 && fieldsyncApp.version === '`+v1.Version+`'`); !still {
			t.Fatal("the new version took over while a sync was running")
		}
		eval[bool](t, ctx, `(window.releaseSync(), true)`)
		waitAcrossReload(t, ctx, "page reloaded into v2", `window.marker === undefined && window.fieldsyncApp && fieldsyncApp.version === '`+v2.Version+`'`)
		if got := eval[string](t, ctx, `fieldsyncApp.db.read(['outbox'], t => t.all('outbox')).then(r => r.map(x => x.seq).join(','))`); got != "1,2,3" {
			t.Errorf("outbox after the update: %q", got)
		}
		if css := eval[bool](t, ctx, `caches.keys().then(k => k.length === 1 && k[0] === 'fieldsync-shell-`+v2.Version+`')`); !css {
			t.Errorf("caches after the update: %v", eval[[]string](t, ctx, `caches.keys()`))
		}
	})
	for _, p := range problems() {
		t.Errorf("page problem: %s", p)
	}
}
