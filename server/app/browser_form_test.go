package app

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"fieldsync/server/evidence/evidencetest"
)

// allTypesForm uses every field type syncproto defines, with bounds.
const allTypesForm = `{"id": "all_types", "version": 3, "title": "全部题型", "fields": [
	{"name": "t_text", "type": "text", "label": "文字", "required": true, "min": 2, "max": 5},
	{"name": "t_int", "type": "integer", "label": "整数", "required": true, "min": 0, "max": 10},
	{"name": "t_dec", "type": "decimal", "label": "小数", "max": 100},
	{"name": "t_date", "type": "date", "label": "日期", "required": true},
	{"name": "t_one", "type": "select_one", "label": "单选", "required": true, "choices": [{"value": "a", "label": "甲"}, {"value": "b", "label": "乙"}]},
	{"name": "t_long", "type": "select_one", "label": "长单选", "choices": ` + choices20 + `},
	{"name": "t_many", "type": "select_many", "label": "多选", "max": 1, "choices": [{"value": "x", "label": "子"}, {"value": "y", "label": "丑"}]},
	{"name": "t_geo", "type": "geopoint", "label": "位置"},
	{"name": "t_photo", "type": "photo", "label": "照片", "required": true},
	{"name": "t_doc", "type": "document", "label": "文件"},
	{"name": "t_sign", "type": "signature", "label": "签名", "required": true}],
	"slots": [{"name": "t_photo", "label": "照片栏", "min_count": 0, "media_types": ["image/jpeg", "image/png"]},
	          {"name": "t_sign", "label": "签名栏", "min_count": 0, "max_count": 1, "media_types": ["image/png"]},
	          {"name": "extra", "label": "其他照片", "min_count": 1, "max_count": 2, "media_types": ["image/*"]}]}`

const choices20 = `[{"value":"c1","label":"一"},{"value":"c2","label":"二"},{"value":"c3","label":"三"},{"value":"c4","label":"四"},{"value":"c5","label":"五"},
{"value":"c6","label":"六"},{"value":"c7","label":"七"},{"value":"c8","label":"八"},{"value":"c9","label":"九"},{"value":"c10","label":"十"}]`

// TestBrowser_FieldAppAllFieldTypes renders a form with every field type,
// shows the validation errors in Chinese next to the fields, keeps a
// draft across a reload, takes a signature on the pad, keeps a small
// JPEG byte for byte (its SHA-256 as WebCrypto computes it equals Go's),
// and saves a visit whose answers have the types syncproto expects.
func TestBrowser_FieldAppAllFieldTypes(t *testing.T) {
	ctx, problems := newBrowser(t, 800, 1280)
	srv := httptest.NewServer(mustAppFiles(t))
	defer srv.Close()
	app := srv.URL + AppPrefix
	step(t, ctx, "open", chromedp.Navigate(app), chromedp.WaitVisible(chromedp.ID("code")))
	// A device that synced this form and one household (no server here:
	// automatic syncs fail and back off, which the app must survive).
	eval[bool](t, ctx, `fieldsyncApp.db.write(['meta', 'forms', 'households', 'places'], async t => {
		await t.setMeta('token', 'tok'); await t.setMeta('device_id', 'dev'); await t.setMeta('user', {username: 'w', display_name: '测试员', place_codes: ['P1']});
		await t.put('places', {code: 'P1', name: '一组', level: 'group', boundary: {type: 'Polygon', coordinates: [[[0, 0], [0.01, 0], [0.01, 0.01], [0, 0.01], [0, 0]]]}});
		await t.put('households', {id: 'H1', place_code: 'P1', version: 1, fields: {head_name: '张三', address: '一组1号'}});
		const f = `+allTypesForm+`; await t.put('forms', {...f, key: f.id + '@' + f.version});
	}).then(() => true)`)

	photo := evidencetest.JPEG(evidencetest.Photo{Seed: 7}) // 320×240: kept as it is
	photoPath := filepath.Join(t.TempDir(), "small.jpg")
	if err := os.WriteFile(photoPath, photo, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(photo)
	photoSHA := hex.EncodeToString(sum[:])

	// The device stands outside the household's group.
	lat, lon, acc := 0.02, 0.005, 8.0
	if _, err := chromedp.CallBrowser(ctx, browser.SetPermission, browser.SetPermissionParams{
		Permission: &browser.PermissionDescriptor{Name: "geolocation"}, Setting: "granted", Origin: srv.URL}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, emulation.SetGeolocationOverride, emulation.SetGeolocationOverrideParams{Latitude: &lat, Longitude: &lon, Accuracy: &acc}); err != nil {
		t.Fatal(err)
	}
	step(t, ctx, "form", chromedp.Navigate(app+"#/visit/H1/all_types"), chromedp.WaitVisible(chromedp.ID("f_t_text")))
	waitFor(t, ctx, "outside-the-place warning", `document.getElementById('gpsplace').textContent.includes('不在本户所属片区（一组）范围内')`)
	t.Run("every type renders", func(t *testing.T) {
		checks := map[string]string{
			"text input":             `!!document.querySelector('input#f_t_text')`,
			"integer numeric":        `document.getElementById('f_t_int').inputMode === 'numeric'`,
			"decimal":                `document.getElementById('f_t_dec').inputMode === 'decimal'`,
			"date picker":            `document.getElementById('f_t_date').type === 'date'`,
			"short select as radios": `document.querySelectorAll('input[type=radio][name=t_one]').length === 2`,
			"long select as list":    `document.querySelectorAll('select#f_t_long option').length === 11`,
			"checkboxes":             `document.querySelectorAll('input[type=checkbox][name=t_many]').length === 2`,
			"geopoint button":        `!!document.querySelector('[data-field=t_geo] button')`,
			"camera capture":         `document.querySelector('input[data-field=t_photo]').getAttribute('capture') === 'environment' && document.querySelector('input[data-field=t_photo]').accept === 'image/*'`,
			"document picker":        `document.querySelector('input[data-field-gallery=t_doc]').accept.includes('application/pdf')`,
			"signature pad":          `!!document.querySelector('canvas#f_t_sign_pad')`,
			"evidence slot":          `!!document.querySelector('input[data-slot-gallery=extra]')`,
		}
		for what, js := range checks {
			if !eval[bool](t, ctx, js) {
				t.Errorf("%s: %s is false", what, js)
			}
		}
	})

	t.Run("errors next to the fields", func(t *testing.T) {
		step(t, ctx, "bad answers",
			chromedp.SendKeys(chromedp.ID("f_t_text"), "太长的一段文字"),
			chromedp.SendKeys(chromedp.ID("f_t_int"), "3.5"),
			chromedp.SendKeys(chromedp.ID("f_t_dec"), "abc"),
			chromedp.Click(chromedp.CSS(`input[name=t_many][value=x]`)),
			chromedp.Click(chromedp.CSS(`input[name=t_many][value=y]`)),
			chromedp.Click(chromedp.ID("save")))
		want := map[string]string{
			"err_t_text": "最多 5 个字", "err_t_int": "请填整数", "err_t_dec": "请填数字", "err_t_date": "必填",
			"err_t_one": "必填", "err_t_many": "最多选 1 项", "err_t_photo": "必填", "err_t_sign": "必填",
			"err_slot_extra": "至少需要 1 个附件", "err_t_long": "", "err_t_doc": "",
		}
		waitFor(t, ctx, "errors shown", `document.getElementById('err_t_int').textContent !== ''`)
		for id, msg := range want {
			if got := eval[string](t, ctx, `document.getElementById('`+id+`').textContent`); got != msg {
				t.Errorf("%s: %q, want %q", id, got, msg)
			}
		}
	})

	t.Run("draft survives a reload", func(t *testing.T) {
		waitFor(t, ctx, "draft saved", `fieldsyncApp.db.read(['drafts'], t => t.all('drafts')).then(d => d.length === 1 && d[0].answers.t_text === '太长的一段文字' && d[0].answers.t_many.length === 2)`)
		step(t, ctx, "reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("f_t_text")))
		if got := eval[string](t, ctx, `document.getElementById('f_t_text').value + '|' + document.getElementById('f_t_int').value + '|' + document.querySelector('input[name=t_many][value=y]').checked`); got != "太长的一段文字|3.5|true" {
			t.Errorf("after reload the form holds %q", got)
		}
	})

	t.Run("signature, photo and a good save", func(t *testing.T) {
		type box struct{ X, Y, W, H float64 }
		b := eval[box](t, ctx, `(() => { const c = document.getElementById('f_t_sign_pad'); c.scrollIntoView({block: 'center'}); const r = c.getBoundingClientRect(); return {X: r.left, Y: r.top, W: r.width, H: r.height}; })()`)
		if b.W < 200 || b.H < 100 {
			t.Fatalf("signature pad is %.0f×%.0f", b.W, b.H)
		}
		strokes := []chromedp.Action[chromedp.Void]{chromedp.MouseEvent(chromedp.MousePressed, b.X+20, b.Y+30, chromedp.ButtonLeft)}
		for i := 1; i <= 20; i++ {
			strokes = append(strokes, chromedp.MouseEvent(chromedp.MouseMoved, b.X+20+float64(i*8), b.Y+30+float64((i%5)*12), chromedp.ButtonLeft))
		}
		strokes = append(strokes, chromedp.MouseEvent(chromedp.MouseReleased, b.X+180, b.Y+40, chromedp.ButtonLeft))
		step(t, ctx, "sign", strokes...)
		step(t, ctx, "confirm signature", chromedp.Click(chromedp.CSS(`[data-field=t_sign] button.primary`)))
		waitFor(t, ctx, "signature stored", `document.querySelectorAll('[data-field=t_sign] .thumbs img').length === 1`)
		step(t, ctx, "photo", chromedp.SetUploadFiles(chromedp.CSS(`input[data-field-gallery=t_photo]`), []string{photoPath}, chromedp.NodeReady))
		waitFor(t, ctx, "photo stored", `document.querySelectorAll('[data-field=t_photo] .thumbs img').length === 1`)
		step(t, ctx, "extra photo", chromedp.SetUploadFiles(chromedp.CSS(`input[data-slot-gallery=extra]`), []string{photoPath}, chromedp.NodeReady))
		waitFor(t, ctx, "extra photo stored", `document.querySelectorAll('#slot_extra img').length === 1`)
		for _, id := range []string{"f_t_text", "f_t_int", "f_t_dec"} {
			eval[bool](t, ctx, `(() => { const e = document.getElementById('`+id+`'); e.value = ''; e.dispatchEvent(new Event('input', {bubbles: true})); return true; })()`)
		}
		step(t, ctx, "good answers",
			chromedp.SendKeys(chromedp.ID("f_t_text"), "王五"),
			chromedp.SendKeys(chromedp.ID("f_t_int"), "7"),
			chromedp.SendKeys(chromedp.ID("f_t_dec"), "2.5"),
			chromedp.Click(chromedp.CSS(`input[name=t_many][value=x]`)), // leaves y
			chromedp.Click(chromedp.CSS(`input[name=t_one][value=b]`)))
		eval[bool](t, ctx, `(() => { const d = document.getElementById('f_t_date'); d.value = '2024-02-29'; d.dispatchEvent(new Event('input', {bubbles: true}));
			const s = document.getElementById('f_t_long'); s.value = 'c7'; s.dispatchEvent(new Event('change', {bubbles: true})); return true; })()`)
		step(t, ctx, "save", chromedp.Click(chromedp.ID("save")))
		waitFor(t, ctx, "saved", `location.hash === '#/hh/H1'`)
		type saved struct {
			Answers  map[string]any
			Evidence []struct {
				SHA256    string `json:"sha256"`
				Slot      string
				MediaType string `json:"media_type"`
				Size      int
			}
			Seq   int
			Draft int
			Kind  string
		}
		got := eval[saved](t, ctx, `(async () => {
			const r = await fieldsyncApp.db.read(['outbox', 'drafts'], async t => [await t.all('outbox'), await t.count('drafts')]);
			return {...r[0][0].body.visit, Seq: r[0][0].seq, Kind: r[0][0].kind, Draft: r[1]};
		})()`)
		if got.Seq != 1 || got.Kind != "visit.create" || got.Draft != 0 {
			t.Errorf("outbox row seq %d kind %s, drafts left %d", got.Seq, got.Kind, got.Draft)
		}
		want := map[string]any{"t_text": "王五", "t_int": float64(7), "t_dec": 2.5, "t_date": "2024-02-29", "t_one": "b", "t_long": "c7", "t_many": []any{"y"}, "t_photo": photoSHA}
		for k, v := range want {
			if gv, ok := got.Answers[k]; !ok || !equalJSON(gv, v) {
				t.Errorf("answer %s = %#v, want %#v", k, gv, v)
			}
		}
		sign, _ := got.Answers["t_sign"].(string)
		if len(sign) != 64 {
			t.Errorf("signature answer %q", sign)
		}
		slots := map[string]string{}
		for _, e := range got.Evidence {
			slots[e.Slot+":"+e.SHA256] = e.MediaType
		}
		if slots["t_photo:"+photoSHA] != "image/jpeg" || slots["extra:"+photoSHA] != "image/jpeg" || slots["t_sign:"+sign] != "image/png" || len(got.Evidence) != 3 {
			t.Errorf("evidence %+v", got.Evidence)
		}
		if n := eval[int](t, ctx, `fieldsyncApp.db.read(['photos'], t => t.get('photos', '`+photoSHA+`')).then(p => p.blob.size)`); n != len(photo) {
			t.Errorf("small photo stored as %d bytes, want the %d original bytes", n, len(photo))
		}
	})
	t.Run("times in Beijing time", func(t *testing.T) {
		got := eval[string](t, ctx, `import('./js/util.js').then(u => u.fmtTime('2026-12-06T06:03:00Z') + '|' + u.fmtTime('2026-12-31T23:30:00-08:00'))`)
		if got != "2026-12-06 14:03 北京时间|2027-01-01 15:30 北京时间" {
			t.Errorf("fmtTime: %q", got)
		}
	})

	t.Run("2000 households stay a short DOM", func(t *testing.T) {
		eval[bool](t, ctx, `fieldsyncApp.db.write(['households'], async t => {
			for (let i = 0; i < 2000; i++) await t.put('households', {id: 'G' + String(i).padStart(4, '0'), place_code: 'P1', version: 1,
				fields: {head_name: '户主' + i, address: '一组' + (i + 2) + '号'}});
		}).then(() => true)`)
		step(t, ctx, "list", chromedp.Navigate(app+"#/place/P1"), chromedp.WaitVisible(chromedp.CSS("#hhlist .hh")))
		if got := eval[string](t, ctx, `document.getElementById('hhcount').textContent`); got != "共 2001 户" {
			t.Errorf("count %q", got)
		}
		if n := eval[int](t, ctx, `document.querySelectorAll('#hhlist .hh').length`); n > 80 {
			t.Errorf("%d rows in the DOM for 2001 households", n)
		}
		eval[bool](t, ctx, `(() => { const l = document.getElementById('hhlist'); l.scrollTop = l.scrollHeight; return true; })()`)
		waitFor(t, ctx, "the last household drawn", `[...document.querySelectorAll('#hhlist .hh .sub')].some(e => e.textContent === '一组2001号')`)
		step(t, ctx, "search", chromedp.SendKeys(chromedp.ID("search"), "户主1999"))
		waitFor(t, ctx, "one result", `document.getElementById('hhcount').textContent === '共 1 户'`)
	})

	t.Run("full storage loses nothing", func(t *testing.T) {
		step(t, ctx, "form", chromedp.Navigate(app+"#/visit/H1/all_types"), chromedp.WaitVisible(chromedp.ID("f_t_text")))
		// The next photo write fails as a full disk makes it fail.
		eval[bool](t, ctx, `(() => {
			const put = IDBObjectStore.prototype.put;
			IDBObjectStore.prototype.put = function (...a) {
				if (this.name === 'photos') { IDBObjectStore.prototype.put = put; throw new DOMException('full', 'QuotaExceededError'); }
				return put.apply(this, a);
			};
			return true;
		})()`)
		other := filepath.Join(t.TempDir(), "other.jpg")
		if err := os.WriteFile(other, evidencetest.JPEG(evidencetest.Photo{Seed: 8}), 0o600); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, "the new draft written", `fieldsyncApp.db.read(['drafts'], t => t.count('drafts')).then(n => n === 1)`)
		before := eval[string](t, ctx, `fieldsyncApp.db.read(['drafts'], t => t.all('drafts')).then(d => JSON.stringify(d.map(x => x.evidence)))`)
		step(t, ctx, "photo", chromedp.SetUploadFiles(chromedp.CSS(`input[data-slot-gallery=extra]`), []string{other}, chromedp.NodeReady))
		waitFor(t, ctx, "quota message", `document.getElementById('banner').textContent.includes('设备存储空间已满')`)
		after := eval[string](t, ctx, `fieldsyncApp.db.read(['drafts'], t => t.all('drafts')).then(d => JSON.stringify(d.map(x => x.evidence)))`)
		if before != after {
			t.Errorf("a failed photo save changed the draft: %s -> %s", before, after)
		}
		if n := eval[int](t, ctx, `fieldsyncApp.db.read(['outbox'], t => t.count('outbox'))`); n != 1 {
			t.Errorf("outbox %d after the failed write, want 1", n)
		}
		// Space again: the same photo goes in.
		step(t, ctx, "photo again", chromedp.SetUploadFiles(chromedp.CSS(`input[data-slot-gallery=extra]`), []string{other}, chromedp.NodeReady))
		waitFor(t, ctx, "photo stored", `document.querySelectorAll('#slot_extra img').length === 1`)
	})
	for _, p := range problems() {
		t.Logf("page message (no server here): %s", p)
	}
}

func equalJSON(a, b any) bool {
	switch bv := b.(type) {
	case []any:
		av, ok := a.([]any)
		if !ok || len(av) != len(bv) {
			return false
		}
		for i := range av {
			if av[i] != bv[i] {
				return false
			}
		}
		return true
	}
	return a == b
}

func mustAppFiles(t *testing.T) *AppFiles {
	t.Helper()
	a, err := LoadAppFiles(webappFS())
	if err != nil {
		t.Fatal(err)
	}
	return a
}
