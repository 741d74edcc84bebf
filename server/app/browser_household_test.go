package app

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"fieldsync/server/demo"
	"fieldsync/server/web"
)

// hhEnv is the server side of a household browser test: the base URL, a
// read-only handle on the server's SQLite file and the admin's token.
type hhEnv struct {
	base    string
	db      *sql.DB
	admin   string
	countFn func(q string, args ...any) int
}

func newHHEnv(t *testing.T) *hhEnv {
	t.Helper()
	base, data := testServer(t)
	db, count := openServerDB(t, data)
	return &hhEnv{base: base, db: db, admin: loginToken(t, base, "admin"), countFn: count}
}

func loginToken(t *testing.T, base, user string) string {
	t.Helper()
	var login struct{ Token string }
	apiJSON(t, "POST", base+"/api/v1/auth/login", "", map[string]string{"username": user, "password": demo.DemoPassword}, &login)
	return login.Token
}

type apiUser struct {
	ID         int64
	Username   string
	PlaceCodes []string `json:"place_codes"`
}

func (e *hhEnv) user(t *testing.T, name string) apiUser {
	t.Helper()
	var users []apiUser
	apiJSON(t, "GET", e.base+"/api/v1/users", e.admin, nil, &users)
	for _, u := range users {
		if u.Username == name {
			return u
		}
	}
	t.Fatalf("no user %s", name)
	return apiUser{}
}

func (e *hhEnv) str(t *testing.T, q string, args ...any) string {
	t.Helper()
	var s sql.NullString
	if err := e.db.QueryRow(q, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return s.String
}

func (e *hhEnv) count(t *testing.T, q string, args ...any) int {
	t.Helper()
	return e.countFn(q, args...)
}

// enroll enrolls the browser's app for a user by typing a code and waits
// for the first sync; it returns the device id.
func (e *hhEnv) enroll(t *testing.T, ctx context.Context, username string) string {
	t.Helper()
	ec := demoEnrollment(t, e.base, username)
	step(t, ctx, "open app", chromedp.Navigate(e.base+"/app/"), chromedp.WaitVisible(chromedp.ID("code")))
	step(t, ctx, "enroll", chromedp.SendKeys(chromedp.ID("code"), ec.Code), chromedp.Click(chromedp.ID("enrollbtn")))
	waitFor(t, ctx, "first sync", `document.getElementById('hhcount') && !/^0 户$/.test(document.getElementById('hhcount').textContent) && !fieldsyncApp.syncer.running`)
	waitFor(t, ctx, "service worker in control", `!!navigator.serviceWorker.controller`)
	return eval[string](t, ctx, `fieldsyncApp.db.getMeta('device_id')`)
}

// fill sets form inputs by id (as typing would, read when the form is sent).
func fill(t *testing.T, ctx context.Context, values map[string]string) {
	t.Helper()
	b, _ := json.Marshal(values)
	missing := eval[string](t, ctx, `(() => { const v = `+string(b)+`; const miss = [];
		for (const [id, x] of Object.entries(v)) { const el = document.getElementById(id); if (!el) { miss.push(id); continue; } el.value = x; el.dispatchEvent(new Event('input', {bubbles: true})); }
		return miss.join(','); })()`)
	if missing != "" {
		t.Fatalf("no inputs %s on the page", missing)
	}
}

// localHH reads a household's fields from the app's IndexedDB.
func localHH(t *testing.T, ctx context.Context, id string) map[string]any {
	t.Helper()
	s := eval[string](t, ctx, `fieldsyncApp.db.read(['households'], t => t.get('households', '`+id+`')).then(x => JSON.stringify(x || null))`)
	var out map[string]any
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		t.Fatalf("local household %s: %v (%s)", id, err, s)
	}
	return out
}

func outboxCount(t *testing.T, ctx context.Context) int {
	return eval[int](t, ctx, `fieldsyncApp.db.read(['outbox'], t => t.count('outbox'))`)
}

// TestBrowser_FieldAppHousehold: offline, a worker creates a household
// (the form checks fields as the server does, in Chinese, next to each
// field), then edits it; the edit shows at once and survives a reload.
// After the sync the server holds the household exactly once, with the
// edited fields, and the device's copy is the server's.
func TestBrowser_FieldAppHousehold(t *testing.T) {
	ctx, problems := newBrowser(t, 800, 1280)
	e := newHHEnv(t)
	devID := e.enroll(t, ctx, "wangge_li")
	app := e.base + "/app/"
	place := e.user(t, "wangge_li").PlaceCodes[0]
	setOffline(t, ctx, true)

	var hhID string
	t.Run("create offline", func(t *testing.T) {
		step(t, ctx, "place", chromedp.Navigate(app+"#/place/"+place), chromedp.WaitVisible(chromedp.ID("hhnew")), chromedp.Click(chromedp.ID("hhnew")))
		step(t, ctx, "form", chromedp.WaitVisible(chromedp.ID("hf_head_name")))
		// Nothing typed: the head's name is required.
		step(t, ctx, "save empty", chromedp.Click(chromedp.ID("hhsave")))
		waitFor(t, ctx, "required", `document.getElementById('herr_head_name').textContent === '必填'`)
		step(t, ctx, "add member", chromedp.Click(chromedp.ID("addmember")))
		key := eval[string](t, ctx, `document.querySelector('#members [data-member]').dataset.member`)
		fill(t, ctx, map[string]string{"hf_head_name": "新户张三", "hf_address": "石门村新建 1 号", "hf_income_per_capita": "五千",
			"hf_poverty_status": "monitored", "hm_name_" + key: "", "hm_rel_" + key: "配偶", "hm_year_" + key: "1985"})
		step(t, ctx, "save with errors", chromedp.Click(chromedp.ID("hhsave")))
		waitFor(t, ctx, "field errors", `document.getElementById('herr_income_per_capita').textContent === '请填数字' && document.getElementById('herr_`+key+`').textContent === '家庭成员须有姓名'`)
		if n := outboxCount(t, ctx); n != 0 {
			t.Fatalf("a refused form queued %d mutations", n)
		}
		fill(t, ctx, map[string]string{"hf_income_per_capita": "5200", "hm_name_" + key: "李桂芳"})
		// The position comes from the GPS.
		if _, err := chromedp.CallBrowser(ctx, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: "geolocation"}, Setting: "granted", Origin: strings.TrimSuffix(e.base, "/")}); err != nil {
			t.Fatalf("grant geolocation: %v", err)
		}
		lon, lat, acc := 104.12345678, 30.87654321, 5.0
		if _, err := chromedp.Call(ctx, emulation.SetGeolocationOverride, emulation.SetGeolocationOverrideParams{Latitude: &lat, Longitude: &lon, Accuracy: &acc}); err != nil {
			t.Fatal(err)
		}
		step(t, ctx, "locate", chromedp.Click(chromedp.ID("hloc")))
		waitFor(t, ctx, "position", `document.getElementById('hloc_value').textContent.includes('±5 米')`)
		step(t, ctx, "save", chromedp.Click(chromedp.ID("hhsave")))
		waitFor(t, ctx, "hash", `location.hash.startsWith('#/hh/') && document.getElementById('main').dataset.shown === location.hash`)
		waitFor(t, ctx, "household page", `location.hash.startsWith('#/hh/') && !!document.getElementById('hhedit')`)
		hhID = eval[string](t, ctx, `decodeURIComponent(location.hash.slice(5))`)
		if txt := eval[string](t, ctx, `document.querySelector('main').textContent`); !strings.Contains(txt, "新户张三") || !strings.Contains(txt, "李桂芳（配偶）") || !strings.Contains(txt, "新建的农户，尚未上传") {
			t.Errorf("household page: %s", txt)
		}
	})

	t.Run("edit offline, reload", func(t *testing.T) {
		step(t, ctx, "edit", chromedp.Click(chromedp.ID("hhedit")), chromedp.WaitVisible(chromedp.ID("hf_phone")))
		if v := eval[string](t, ctx, `document.getElementById('hf_address').value`); v != "石门村新建 1 号" {
			t.Errorf("edit form shows address %q", v)
		}
		fill(t, ctx, map[string]string{"hf_phone": "13800001111", "hf_address": "石门村新建 2 号", "hf_notes": "新搬来的住户"})
		step(t, ctx, "save", chromedp.Click(chromedp.ID("hhsave")))
		waitFor(t, ctx, "household page", `location.hash === '#/hh/`+hhID+`' && !!document.getElementById('hhfields')`)
		step(t, ctx, "reload offline", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("hhfields")))
		if txt := eval[string](t, ctx, `document.querySelector('main').textContent`); !strings.Contains(txt, "13800001111") || !strings.Contains(txt, "石门村新建 2 号") || !strings.Contains(txt, "监测户") || !strings.Contains(txt, "新建的农户，尚未上传") {
			t.Errorf("after reload the household shows %q", txt)
		}
		if n := outboxCount(t, ctx); n != 2 {
			t.Errorf("outbox %d, want the creation and the edit", n)
		}
		if n := e.count(t, `SELECT count(*) FROM households WHERE id = ?`, hhID); n != 0 {
			t.Errorf("the server has the household while the device is offline")
		}
	})

	t.Run("sync", func(t *testing.T) {
		setOffline(t, ctx, false)
		waitFor(t, ctx, "idle", `!fieldsyncApp.syncer.running`)
		if got := syncNow(t, ctx); got != "ok" {
			t.Fatalf("sync: %s", got)
		}
		if got := syncNow(t, ctx); got != "ok" { // a second sync changes nothing
			t.Fatalf("second sync: %s", got)
		}
		if n := outboxCount(t, ctx); n != 0 {
			t.Errorf("outbox %d after the sync", n)
		}
		if n := e.count(t, `SELECT count(*) FROM households WHERE json_extract(fields, '$.head_name') = '新户张三'`); n != 1 {
			t.Fatalf("server holds %d households named 新户张三, want 1", n)
		}
		var got struct {
			Household struct {
				PlaceCode string                     `json:"place_code"`
				Fields    map[string]json.RawMessage `json:"fields"`
			}
		}
		apiJSON(t, "GET", e.base+"/api/v1/households/"+hhID, e.admin, nil, &got)
		want := map[string]string{"head_name": `"新户张三"`, "address": `"石门村新建 2 号"`, "phone": `"13800001111"`, "notes": `"新搬来的住户"`,
			"income_per_capita": `5200`, "poverty_status": `"monitored"`, "location": `{"lon":104.1234568,"lat":30.8765432}`}
		for k, v := range want {
			if string(got.Household.Fields[k]) != v {
				t.Errorf("server field %s = %s, want %s", k, got.Household.Fields[k], v)
			}
		}
		if got.Household.PlaceCode != place {
			t.Errorf("server place %s, want %s", got.Household.PlaceCode, place)
		}
		members := 0
		for k, v := range got.Household.Fields {
			if strings.HasPrefix(k, "member.") {
				members++
				if !strings.Contains(string(v), `"name":"李桂芳"`) || !strings.Contains(string(v), `"birth_year":1985`) {
					t.Errorf("member %s = %s", k, v)
				}
			}
		}
		if members != 1 || len(got.Household.Fields) != len(want)+1 {
			t.Errorf("server fields %v", got.Household.Fields)
		}
		if by := e.str(t, `SELECT created_by_device FROM households WHERE id = ?`, hhID); !strings.HasPrefix(by, devID+":") {
			t.Errorf("created by %q, want device %s", by, devID)
		}
		local := localHH(t, ctx, hhID)
		if local["server_fields"] != nil || local["local"] != nil || local["version"].(float64) == 0 {
			t.Errorf("device copy after the sync is not the server's: %v", local)
		}
		step(t, ctx, "page", chromedp.Navigate(app+"#/"), chromedp.WaitVisible(chromedp.ID("syncbtn")), chromedp.Navigate(app+"#/hh/"+hhID), chromedp.WaitVisible(chromedp.ID("hhfields")))
		if n := eval[int](t, ctx, `document.querySelectorAll('#hhpending').length`); n != 0 {
			t.Error("the household still says it has unsent changes")
		}
	})

	// A creation the server refuses (the app's form would not send it: it
	// is put straight into the outbox, with a member without a name) shows
	// the reason, is corrected in the form and sent again.
	t.Run("refused creation corrected and sent again", func(t *testing.T) {
		id := eval[string](t, ctx, `(async () => {
			const db = await import('./js/db.js'); const u = await import('./js/util.js');
			const id = u.newID(); const fields = {head_name: '待改正户', ['member.' + u.newID()]: {name: ''}};
			await fieldsyncApp.db.write(['meta', 'outbox', 'households'], async t => {
				await db.enqueue(t, 'household.create', 'household', {id, place_code: '`+place+`', fields}, u.nextHLC);
				await t.put('households', {id, place_code: '`+place+`', fields, version: 0, local: true});
			});
			return id; })()`)
		if got := syncNow(t, ctx); got != "ok" {
			t.Fatalf("sync: %s", got)
		}
		step(t, ctx, "refused household", chromedp.Navigate(app+"#/outbox"), chromedp.WaitVisible(chromedp.ID("outboxlist")),
			chromedp.Navigate(app+"#/hh/"+id), chromedp.WaitVisible(chromedp.ID("hhrejected")))
		if txt := eval[string](t, ctx, `document.getElementById('hhrejected').textContent`); !strings.Contains(txt, "填写的内容不符合要求") || !strings.Contains(txt, "validation_failed") {
			t.Errorf("refusal shown as %q", txt)
		}
		step(t, ctx, "correct", chromedp.Click(chromedp.ID("hhedit")), chromedp.WaitVisible(chromedp.CSS("#members [data-member]")))
		key := eval[string](t, ctx, `document.querySelector('#members [data-member]').dataset.member`)
		fill(t, ctx, map[string]string{"hm_name_" + key: "王小明"})
		step(t, ctx, "save", chromedp.Click(chromedp.ID("hhsave")))
		waitFor(t, ctx, "saved", `location.hash === '#/hh/`+id+`' && !!document.getElementById('hhpending')`)
		if got := syncNow(t, ctx); got != "ok" {
			t.Fatalf("sync: %s", got)
		}
		if n := e.count(t, `SELECT count(*) FROM households WHERE id = ? AND json_extract(fields, ?) = '王小明'`, id, `$."`+key+`".name`); n != 1 {
			t.Errorf("the corrected household is not on the server")
		}
		if n := outboxCount(t, ctx); n != 0 {
			t.Errorf("outbox %d", n)
		}
	})
	for _, p := range problems() {
		t.Errorf("page problem: %s", p)
	}
}

// TestBrowser_FieldAppTwoWorkers: two devices of the same worker (two
// browser profiles) edit one household offline: both change the poverty
// status (sensitive), one also the phone, the other the notes. Both sync,
// then sync again. The server keeps the first status and opens a conflict
// with the second; both devices end with the merged household and show
// the conflict; the console shows it to the village's supervisor.
func TestBrowser_FieldAppTwoWorkers(t *testing.T) {
	ctxA, problemsA := newBrowser(t, 800, 1280)
	ctxB, problemsB := newBrowser(t, 800, 1280)
	e := newHHEnv(t)
	devA := e.enroll(t, ctxA, "wangge_li")
	devB := e.enroll(t, ctxB, "wangge_li")
	if devA == devB {
		t.Fatal("two profiles got one device id")
	}
	places := e.user(t, "wangge_li").PlaceCodes
	inScope := "place_code IN ('" + strings.Join(places, "','") + "') AND deleted = 0" // codes from the server's own data
	hh := e.str(t, `SELECT id FROM households WHERE `+inScope+` AND json_extract(fields, '$.poverty_status') NOT IN ('monitored', 'marginal') ORDER BY id LIMIT 1`)
	app := e.base + "/app/"

	edit := func(ctx context.Context, values map[string]string) {
		t.Helper()
		step(t, ctx, "edit form", chromedp.Navigate(app+"#/hhedit/"+hh), chromedp.WaitVisible(chromedp.ID("hf_poverty_status")))
		fill(t, ctx, values)
		step(t, ctx, "save", chromedp.Click(chromedp.ID("hhsave")))
		waitFor(t, ctx, "saved", `location.hash === '#/hh/`+hh+`' && !!document.getElementById('hhpending')`)
	}
	setOffline(t, ctxA, true)
	setOffline(t, ctxB, true)
	edit(ctxA, map[string]string{"hf_poverty_status": "monitored", "hf_phone": "13900002222"})
	edit(ctxB, map[string]string{"hf_poverty_status": "marginal", "hf_notes": "二号设备补记"})
	if got := localHH(t, ctxB, hh)["fields"].(map[string]any)["poverty_status"]; got != "marginal" {
		t.Errorf("device B shows status %v before the sync", got)
	}

	sync := func(ctx context.Context, who string) {
		t.Helper()
		waitFor(t, ctx, "idle", `!fieldsyncApp.syncer.running`)
		if got := syncNow(t, ctx); got != "ok" {
			t.Fatalf("%s sync: %s", who, got)
		}
	}
	setOffline(t, ctxA, false)
	sync(ctxA, "A")
	setOffline(t, ctxB, false)
	sync(ctxB, "B")
	sync(ctxA, "A again")
	sync(ctxB, "B again")

	want := map[string]string{"poverty_status": "monitored", "phone": "13900002222", "notes": "二号设备补记"}
	var srv struct {
		Household struct {
			Fields map[string]json.RawMessage `json:"fields"`
		}
		Conflicts []struct {
			Field        string          `json:"field"`
			State        string          `json:"state"`
			KeptValue    json.RawMessage `json:"kept_value"`
			LosingValue  json.RawMessage `json:"losing_value"`
			LosingDevice string          `json:"losing_device"`
		}
	}
	apiJSON(t, "GET", e.base+"/api/v1/households/"+hh, e.admin, nil, &srv)
	for k, v := range want {
		if b, _ := json.Marshal(v); string(srv.Household.Fields[k]) != string(b) {
			t.Errorf("server %s = %s, want %s", k, srv.Household.Fields[k], b)
		}
	}
	if len(srv.Conflicts) != 1 || srv.Conflicts[0].Field != "poverty_status" || srv.Conflicts[0].State != "open" ||
		string(srv.Conflicts[0].KeptValue) != `"monitored"` || string(srv.Conflicts[0].LosingValue) != `"marginal"` || srv.Conflicts[0].LosingDevice != devB {
		t.Errorf("server conflicts %+v", srv.Conflicts)
	}
	for _, dev := range []struct {
		name string
		ctx  context.Context
	}{{"A", ctxA}, {"B", ctxB}} {
		local := localHH(t, dev.ctx, hh)
		f := local["fields"].(map[string]any)
		for k, v := range want {
			if f[k] != v {
				t.Errorf("device %s: %s = %v, want %s", dev.name, k, f[k], v)
			}
		}
		if local["server_fields"] != nil {
			t.Errorf("device %s still holds unsent changes", dev.name)
		}
		// Through the outbox page: the household page is already open, and
		// the same address again would not draw it anew.
		step(t, dev.ctx, "household page", chromedp.Navigate(app+"#/outbox"), chromedp.WaitVisible(chromedp.ID("outboxlist")),
			chromedp.Navigate(app+"#/hh/"+hh), chromedp.WaitVisible(chromedp.ID("conflicts")))
		txt := eval[string](t, dev.ctx, `document.getElementById('conflicts').textContent`)
		for _, s := range []string{"贫困状态", "待督导处理", "监测户", "边缘易致贫户", "wangge_li", "北京时间"} {
			if !strings.Contains(txt, s) {
				t.Errorf("device %s conflict box lacks %q: %s", dev.name, s, txt)
			}
		}
		step(t, dev.ctx, "home", chromedp.Navigate(app+"#/"), chromedp.WaitVisible(chromedp.ID("syncbtn")))
		if got := eval[string](t, dev.ctx, `(document.getElementById('conflictcount') || {}).textContent || ''`); got != "1 处待督导处理" {
			t.Errorf("device %s home says %q about conflicts", dev.name, got)
		}
	}
	t.Run("phone width", func(t *testing.T) {
		if _, err := chromedp.Call(ctxB, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{Width: 360, Height: 800, DeviceScaleFactor: 2, Mobile: true}); err != nil {
			t.Fatal(err)
		}
		for _, page := range []struct{ hash, sel string }{{"#/hh/" + hh, "conflicts"}, {"#/hhedit/" + hh, "hhsave"}, {"#/hhnew/" + places[0], "hhsave"}} {
			step(t, ctxB, page.hash, chromedp.Navigate(app+"#/outbox"), chromedp.WaitVisible(chromedp.ID("outboxlist")),
				chromedp.Navigate(app+page.hash), chromedp.WaitVisible(chromedp.ID(page.sel)))
			if over := eval[bool](t, ctxB, `document.documentElement.scrollWidth > window.innerWidth + 1`); over {
				t.Errorf("%s is wider than 360 px (%d)", page.hash, eval[int](t, ctxB, `document.documentElement.scrollWidth`))
			}
			if small := eval[int](t, ctxB, `[...document.querySelectorAll('main button, main .btn, main input, main select')].filter(b => b.offsetParent && b.getBoundingClientRect().height < 44).length`); small > 0 {
				t.Errorf("%s: %d touch targets under 44 px", page.hash, small)
			}
		}
	})

	t.Run("supervisor sees the conflict", func(t *testing.T) {
		sup := loginToken(t, e.base, "cun_supervisor")
		type row struct {
			HouseholdID string `json:"household_id"`
			Field       string `json:"field"`
		}
		var rows []row
		apiJSON(t, "GET", e.base+"/api/v1/conflicts?state=open", sup, nil, &rows)
		if !slices.ContainsFunc(rows, func(r row) bool { return r.HouseholdID == hh && r.Field == "poverty_status" }) {
			t.Errorf("open conflicts for the supervisor: %+v", rows)
		}
		// The console's household page, logged in as the supervisor.
		console, cancel := chromedp.NewContext(ctxA)
		defer cancel()
		if err := chromedp.Do(console); err != nil { // open the tab for the life of console, not of one step
			t.Fatal(err)
		}
		step(t, console, "console login", chromedp.Navigate(e.base+web.Prefix+"/login"), chromedp.WaitVisible(chromedp.ID("username")),
			chromedp.SendKeys(chromedp.ID("username"), "cun_supervisor"), chromedp.SendKeys(chromedp.ID("password"), demo.DemoPassword),
			chromedp.Click(chromedp.ID("login-submit")), chromedp.WaitVisible(chromedp.ID("place-title")))
		step(t, console, "household page", chromedp.Navigate(e.base+web.Prefix+"/households/"+hh), chromedp.WaitVisible(chromedp.ID("conflicts")))
		openRow := eval[string](t, console, `(document.querySelector('#conflicts tr.open') || {}).textContent || ''`)
		if !strings.Contains(openRow, "marginal") || !strings.Contains(openRow, "monitored") {
			t.Errorf("console conflict row: %q", openRow)
		}
	})
	for _, p := range append(problemsA(), problemsB()...) {
		t.Errorf("page problem: %s", p)
	}
}

// TestBrowser_FieldAppScope: offline, a worker edits a household in one of
// her villager groups; meanwhile the admin gives that group to another
// worker and one of the other worker's groups to her. At the next sync
// the edit is still pushed and its result reported (the server refuses
// it: the group is no longer hers; the reason shows in the outbox and the
// log), and the app shows the new group and no longer the old one.
func TestBrowser_FieldAppScope(t *testing.T) {
	ctx, problems := newBrowser(t, 800, 1280)
	e := newHHEnv(t)
	e.enroll(t, ctx, "wangge_li")
	li, zhao := e.user(t, "wangge_li"), e.user(t, "wangge_zhao")
	if len(li.PlaceCodes) < 2 || len(zhao.PlaceCodes) < 2 {
		t.Fatalf("demo places: li %v, zhao %v", li.PlaceCodes, zhao.PlaceCodes)
	}
	g, newG := li.PlaceCodes[len(li.PlaceCodes)-1], zhao.PlaceCodes[0]
	hh := e.str(t, `SELECT id FROM households WHERE place_code = ? AND deleted = 0 ORDER BY id LIMIT 1`, g)
	gName := e.str(t, `SELECT name FROM places WHERE code = ?`, g)
	newName := e.str(t, `SELECT name FROM places WHERE code = ?`, newG)
	app := e.base + "/app/"

	setOffline(t, ctx, true)
	step(t, ctx, "edit form", chromedp.Navigate(app+"#/hhedit/"+hh), chromedp.WaitVisible(chromedp.ID("hf_notes")))
	fill(t, ctx, map[string]string{"hf_notes": "调整片区前的修改"})
	step(t, ctx, "save", chromedp.Click(chromedp.ID("hhsave")))
	waitFor(t, ctx, "saved", `location.hash === '#/hh/`+hh+`' && !!document.getElementById('hhpending')`)

	// The admin swaps the groups.
	liPlaces := append(slices.DeleteFunc(slices.Clone(li.PlaceCodes), func(c string) bool { return c == g }), newG)
	zhaoPlaces := append(slices.DeleteFunc(slices.Clone(zhao.PlaceCodes), func(c string) bool { return c == newG }), g)
	apiJSON(t, "PUT", fmt.Sprintf("%s/api/v1/users/%d/places", e.base, li.ID), e.admin, map[string]any{"place_codes": liPlaces}, nil)
	apiJSON(t, "PUT", fmt.Sprintf("%s/api/v1/users/%d/places", e.base, zhao.ID), e.admin, map[string]any{"place_codes": zhaoPlaces}, nil)

	setOffline(t, ctx, false)
	waitFor(t, ctx, "idle", `!fieldsyncApp.syncer.running`)
	if got := syncNow(t, ctx); got != "ok" {
		t.Fatalf("sync: %s", got)
	}
	if n := outboxCount(t, ctx); n != 0 {
		t.Errorf("outbox %d: the edit was not pushed", n)
	}
	// The edit's result: refused with the reason, or applied.
	serverNotes := e.str(t, `SELECT json_extract(fields, '$.notes') FROM households WHERE id = ?`, hh)
	rejected := eval[string](t, ctx, `fieldsyncApp.db.read(['rejected'], t => t.all('rejected')).then(r => JSON.stringify(r.map(x => [x.kind, x.code, x.message])))`)
	switch {
	case strings.Contains(rejected, "household.update"):
		if !strings.Contains(rejected, "out_of_scope") {
			t.Errorf("refused for another reason: %s", rejected)
		}
		if serverNotes == "调整片区前的修改" {
			t.Error("refused, yet the server holds the edit")
		}
		step(t, ctx, "outbox", chromedp.Navigate(app+"#/outbox"), chromedp.WaitVisible(chromedp.ID("rejectedlist")))
		txt := eval[string](t, ctx, `document.getElementById('rejectedlist').textContent`)
		if !strings.Contains(txt, "修改农户") || !strings.Contains(txt, "不在本设备负责的范围内") || !strings.Contains(txt, "out_of_scope") {
			t.Errorf("outbox shows %q", txt)
		}
		log := eval[string](t, ctx, `fieldsyncApp.db.read(['log'], t => t.all('log')).then(r => r.map(x => x.text).join('\n'))`)
		if !strings.Contains(log, "被服务器拒绝") {
			t.Errorf("log: %s", log)
		}
	case serverNotes == "调整片区前的修改":
		t.Logf("the server applied the edit made before the scope change")
	default:
		t.Errorf("the edit was neither applied nor refused: server notes %q, refused %s", serverNotes, rejected)
	}

	if n := eval[int](t, ctx, `fieldsyncApp.db.read(['households'], t => t.byIndex('households', 'place', '`+g+`')).then(r => r.length)`); n != 0 {
		t.Errorf("the device still holds %d households of the old group", n)
	}
	wantNew := e.count(t, `SELECT count(*) FROM households WHERE place_code = ? AND deleted = 0`, newG)
	if n := eval[int](t, ctx, `fieldsyncApp.db.read(['households'], t => t.byIndex('households', 'place', '`+newG+`')).then(r => r.length)`); n != wantNew || n == 0 {
		t.Errorf("the device holds %d households of the new group, want %d", n, wantNew)
	}
	step(t, ctx, "places", chromedp.Navigate(app+"#/places"), chromedp.WaitVisible(chromedp.ID("placelist")))
	names := eval[[]string](t, ctx, `[...document.querySelectorAll('#placelist strong')].map(x => x.textContent)`)
	if slices.Contains(names, gName) || !slices.Contains(names, newName) {
		t.Errorf("places list %q: want %s and not %s", names, newName, gName)
	}
	step(t, ctx, "old household", chromedp.Navigate(app+"#/hh/"+hh))
	waitFor(t, ctx, "the old group's household is gone", `document.querySelector('main h1').textContent === '找不到这户'`)
	for _, p := range problems() {
		t.Errorf("page problem: %s", p)
	}
}
