package app

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"fieldsync/server/evidence/evidencetest"
)

// TestBrowser_FieldAppGPSReason: when no fix meets the form's accuracy
// limit (water_cellar_progress: 30 m), or there is no fix at all, the
// save button asks for the reason (a common one picked, or typed) and
// saves nothing until one is given; the visit then carries it as
// gps_reason, the server keeps it and quotes it in the review flag. A fix
// within the limit asks nothing.
func TestBrowser_FieldAppGPSReason(t *testing.T) {
	ctx, problems := newBrowser(t, 800, 1280)
	base, data := testServer(t)
	db, _ := openServerDB(t, data)

	// Enroll wangge_li by code and sync.
	en := demoEnrollment(t, base, "wangge_li")
	places := en.Places
	app := base + "/app/"
	step(t, ctx, "open app", chromedp.Navigate(app), chromedp.WaitVisible(chromedp.ID("code")))
	step(t, ctx, "enroll", chromedp.SendKeys(chromedp.ID("code"), en.Code), chromedp.Click(chromedp.ID("enrollbtn")))
	waitFor(t, ctx, "first sync", `document.getElementById('hhcount') && /\d+ 户/.test(document.getElementById('hhcount').textContent)`)

	inScope := "place_code IN ('" + strings.Join(places, "','") + "') AND deleted = 0" // codes from the server's own data
	hhs, lons, lats := householdsAt(t, db, inScope, 3)
	photoDir := t.TempDir()
	origin := strings.TrimSuffix(base, "/")
	permit := func(setting browser.PermissionSetting) {
		t.Helper()
		if _, err := chromedp.CallBrowser(ctx, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: "geolocation"}, Setting: setting, Origin: origin}); err != nil {
			t.Fatalf("geolocation permission: %v", err)
		}
	}
	outbox := func() int {
		return eval[int](t, ctx, `fieldsyncApp.db.read(['outbox'], t => t.count('outbox'))`)
	}
	// fill opens the form at household i and fills it, with a photo.
	fill := func(i int) {
		t.Helper()
		step(t, ctx, "open form", chromedp.Navigate(app+"#/visit/"+hhs[i]+"/water_cellar_progress"), chromedp.WaitVisible(chromedp.ID("f_site_name")))
		// The form is on screen for good once its draft is written (a
		// render the route replaced never writes one).
		waitFor(t, ctx, "the draft written", `fieldsyncApp.db.read(['drafts'], t => t.all('drafts')).then(d => d.some(x => x.household_id === '`+hhs[i]+`'))`)
		p := filepath.Join(photoDir, fmt.Sprintf("p%d.jpg", i))
		taken := time.Date(2026, 12, 6, 10, 30, 0, 0, time.FixedZone("CST", 8*3600))
		if err := os.WriteFile(p, evidencetest.JPEG(evidencetest.Photo{Seed: uint64(300 + i), Taken: taken, TakenOffset: true,
			GPS: &[2]float64{lons[i], lats[i]}}), 0o600); err != nil {
			t.Fatal(err)
		}
		step(t, ctx, "fill",
			chromedp.SendKeys(chromedp.ID("f_site_name"), fmt.Sprintf("山脚水窖%d号", i+1)),
			chromedp.SendKeys(chromedp.ID("f_capacity_m3"), "20"),
			chromedp.Click(chromedp.CSS(`input[name="stage"][value="built"]`)),
			chromedp.SetUploadFiles(chromedp.CSS(`input[data-slot-gallery="progress"]`), []string{p}, chromedp.NodeReady),
		)
		eval[bool](t, ctx, `(() => { const d = document.getElementById('f_due_date'); d.value = '2027-03-01'; d.dispatchEvent(new Event('input', {bubbles: true})); return true; })()`)
		waitFor(t, ctx, "photo in the slot", `document.querySelectorAll('#slot_progress img').length === 1`)
	}
	reasonShown := `!document.getElementById('gpsreason').classList.contains('hidden')`
	lastVisit := func() map[string]any {
		return eval[map[string]any](t, ctx, `fieldsyncApp.db.read(['outbox'], t => t.all('outbox')).then(r => r[r.length-1].body.visit)`)
	}
	var ids []string
	want := map[string]string{} // visit id -> gps_reason

	t.Run("poor accuracy asks for a reason", func(t *testing.T) {
		permit(browser.PermissionSettingGranted)
		acc := 120.0
		if _, err := chromedp.Call(ctx, emulation.SetGeolocationOverride, emulation.SetGeolocationOverrideParams{Latitude: &lats[0], Longitude: &lons[0], Accuracy: &acc}); err != nil {
			t.Fatal(err)
		}
		fill(0)
		waitFor(t, ctx, "poor fix shown", `document.getElementById('gpsline').textContent.includes('±120 米')`)
		if !eval[bool](t, ctx, reasonShown) {
			t.Error("the reason prompt is hidden with a 120 m fix")
		}
		before := outbox()
		step(t, ctx, "save without a reason", chromedp.Click(chromedp.ID("save")))
		waitFor(t, ctx, "asks for a reason", `document.getElementById('gps_reason_err').textContent === '请选择或填写原因' && document.activeElement.id === 'gps_reason_pick'`)
		// "Other" needs words.
		step(t, ctx, "other", chromedp.SetValue(chromedp.ID("gps_reason_pick"), "other"), chromedp.Click(chromedp.ID("save")))
		waitFor(t, ctx, "asks for words", `document.getElementById('gps_reason_err').textContent === '请填写原因'`)
		if n := outbox(); n != before || !strings.HasPrefix(eval[string](t, ctx, `location.hash`), "#/visit/") {
			t.Fatalf("saved without a reason: outbox %d -> %d", before, n)
		}
		step(t, ctx, "pick a reason",
			chromedp.SetValue(chromedp.ID("gps_reason_pick"), "山谷里没有信号"),
			chromedp.SendKeys(chromedp.ID("gps_reason"), "等了十分钟"),
			chromedp.Click(chromedp.ID("save")))
		waitFor(t, ctx, "saved", `location.hash.startsWith('#/hh/') && document.getElementById('main').dataset.shown === location.hash`)
		v := lastVisit()
		if v["gps_reason"] != "山谷里没有信号；等了十分钟" || v["accuracy_m"] != 120.0 {
			t.Fatalf("queued visit: gps_reason %v, accuracy %v", v["gps_reason"], v["accuracy_m"])
		}
		ids = append(ids, v["id"].(string))
		want[ids[0]] = "山谷里没有信号；等了十分钟"
	})

	t.Run("no fix at all asks too", func(t *testing.T) {
		if _, err := chromedp.Call(ctx, emulation.ClearGeolocationOverride, cdp.Empty{}); err != nil {
			t.Fatal(err)
		}
		permit(browser.PermissionSettingDenied)
		fill(1)
		waitFor(t, ctx, "no fix", `document.getElementById('gpsline').textContent.startsWith('定位失败') && `+reasonShown)
		before := outbox()
		step(t, ctx, "save", chromedp.Click(chromedp.ID("save")))
		waitFor(t, ctx, "asks", `document.getElementById('gps_reason_err').textContent !== ''`)
		if n := outbox(); n != before {
			t.Fatalf("saved without a reason: outbox %d -> %d", before, n)
		}
		step(t, ctx, "typed reason",
			chromedp.SetValue(chromedp.ID("gps_reason_pick"), "other"),
			chromedp.SendKeys(chromedp.ID("gps_reason"), "手机定位权限被家里人关了"),
			chromedp.Click(chromedp.ID("save")))
		waitFor(t, ctx, "saved", `location.hash.startsWith('#/hh/') && document.getElementById('main').dataset.shown === location.hash`)
		v := lastVisit()
		if v["gps_reason"] != "手机定位权限被家里人关了" || v["point"] != nil {
			t.Fatalf("queued visit: gps_reason %v, point %v", v["gps_reason"], v["point"])
		}
		ids = append(ids, v["id"].(string))
		want[ids[1]] = "手机定位权限被家里人关了"
	})

	t.Run("a good fix asks nothing", func(t *testing.T) {
		permit(browser.PermissionSettingGranted)
		acc := 5.0
		if _, err := chromedp.Call(ctx, emulation.SetGeolocationOverride, emulation.SetGeolocationOverrideParams{Latitude: &lats[2], Longitude: &lons[2], Accuracy: &acc}); err != nil {
			t.Fatal(err)
		}
		fill(2)
		waitFor(t, ctx, "good fix", `document.getElementById('gpsline').textContent.includes('±5 米')`)
		if eval[bool](t, ctx, reasonShown) {
			t.Error("the reason prompt shows with a 5 m fix")
		}
		step(t, ctx, "save", chromedp.Click(chromedp.ID("save")))
		waitFor(t, ctx, "saved", `location.hash.startsWith('#/hh/') && document.getElementById('main').dataset.shown === location.hash`)
		v := lastVisit()
		if _, ok := v["gps_reason"]; ok {
			t.Errorf("a visit with a good fix carries gps_reason %v", v["gps_reason"])
		}
		ids = append(ids, v["id"].(string))
		want[ids[2]] = ""
	})

	t.Run("the server keeps the reasons and flags with them", func(t *testing.T) {
		if r := syncNow(t, ctx); r != "ok" {
			t.Fatalf("sync: %s", r)
		}
		for _, id := range ids {
			var got sql.NullString
			if err := db.QueryRow(`SELECT gps_reason FROM visits WHERE id = ?`, id).Scan(&got); err != nil {
				t.Fatalf("visit %s: %v", id, err)
			}
			if got.String != want[id] {
				t.Errorf("visit %s: server keeps %q, want %q", id, got.String, want[id])
			}
		}
		// The checks run after the push commits: wait for the flags.
		flagged := func(id, flag string) string {
			var detail string
			for range 100 {
				if db.QueryRow(`SELECT detail FROM evidence_flags WHERE visit_id = ? AND flag = ?`, id, flag).Scan(&detail) == nil {
					return detail
				}
				time.Sleep(100 * time.Millisecond)
			}
			return ""
		}
		if d := flagged(ids[0], "poor_gps_accuracy"); !strings.Contains(d, "山谷里没有信号；等了十分钟") {
			t.Errorf("poor accuracy flag: %q", d)
		}
		if d := flagged(ids[1], "visit_without_gps"); !strings.Contains(d, "手机定位权限被家里人关了") {
			t.Errorf("no GPS flag: %q", d)
		}
	})
	for _, p := range problems() {
		t.Errorf("browser console: %s", p)
	}
}
