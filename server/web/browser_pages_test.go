package web_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"fieldsync/server/demo"
)

// login signs the browser in as user.
func login(t *testing.T, ctx context.Context, base, user string) {
	t.Helper()
	step(t, ctx, "login "+user,
		chromedp.Navigate(base+"/login"),
		chromedp.WaitVisible(chromedp.ID("login-form")),
		chromedp.SendKeys(chromedp.ID("username"), user),
		chromedp.SendKeys(chromedp.ID("password"), demo.DemoPassword),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.CSS("nav.main")),
	)
}

// choosePeriod picks a period in the page's selector (it submits itself)
// and waits for the page to come back with it.
func choosePeriod(t *testing.T, ctx context.Context, period string) {
	t.Helper()
	step(t, ctx, "choose "+period,
		chromedp.WaitVisible(chromedp.ID("period")),
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(s => { s.value = %q; s.dispatchEvent(new Event('change', {bubbles: true})); })(document.getElementById('period'))`, period)),
		chromedp.WaitReady(chromedp.CSS(fmt.Sprintf(`#period option[value="%s"][selected]`, period))),
	)
}

// TestBrowser_PeriodCarries: the overview and the map open on the same
// period, and a period chosen on one is the one the other opens on, also
// through the main navigation (which carries no parameter).
func TestBrowser_PeriodCarries(t *testing.T) {
	ctx, problems := newBrowser(t)
	e := start(t)
	base := e.URL + "/console"
	login(t, ctx, base, "admin")
	period := func() string { return eval[string](t, ctx, `document.getElementById('period').value`) }

	step(t, ctx, "overview", chromedp.Navigate(base+"/overview?place="+demo.VillageCode), chromedp.WaitVisible(chromedp.ID("period")))
	ov := period()
	step(t, ctx, "map", chromedp.Navigate(base+"/map?place="+demo.VillageCode), chromedp.WaitVisible(chromedp.ID("period")))
	if mp := period(); ov != "month" || mp != ov {
		t.Fatalf("first opened: overview on %q, map on %q; want both on this month", ov, mp)
	}
	// Chosen on the overview, the map follows (through the nav link and
	// through the overview's map button).
	step(t, ctx, "overview", chromedp.Navigate(base+"/overview?place="+demo.VillageCode), chromedp.WaitVisible(chromedp.ID("period")))
	choosePeriod(t, ctx, "30d")
	if sub := eval[string](t, ctx, `document.getElementById('place-title').textContent`); !strings.Contains(sub, "近 30 天") {
		t.Errorf("overview title after choosing 30 days: %q", sub)
	}
	step(t, ctx, "map button", chromedp.Click(chromedp.ID("to-map")), chromedp.WaitVisible(chromedp.CSS(`body[data-page="map"] #period`)))
	if p := period(); p != "30d" {
		t.Errorf("the overview's map button opened the map on %q", p)
	}
	step(t, ctx, "nav to overview", chromedp.Click(chromedp.CSS(`nav.main a[href="/console/overview"]`)), chromedp.WaitVisible(chromedp.CSS(`body[data-page="overview"] #period`)))
	if p := period(); p != "30d" {
		t.Errorf("the navigation opened the overview on %q", p)
	}
	// Chosen on the map, the overview follows.
	step(t, ctx, "nav to map", chromedp.Click(chromedp.CSS(`nav.main a[href="/console/map"]`)), chromedp.WaitVisible(chromedp.CSS(`body[data-page="map"] #period`)))
	choosePeriod(t, ctx, "all")
	step(t, ctx, "nav to overview", chromedp.Click(chromedp.CSS(`nav.main a[href="/console/overview"]`)), chromedp.WaitVisible(chromedp.CSS(`body[data-page="overview"] #period`)))
	if p := period(); p != "all" {
		t.Errorf("after choosing all on the map, the overview opens on %q", p)
	}
	// Whatever else ?period= says is ignored and the remembered one kept.
	step(t, ctx, "hostile period", chromedp.Navigate(base+"/map?period=%27%3B--&place="+demo.VillageCode), chromedp.WaitVisible(chromedp.ID("map")))
	if p := period(); p != "all" {
		t.Errorf("a bad period gave %q", p)
	}
	for _, p := range problems() {
		t.Errorf("browser console: %s", p)
	}
}

// TestBrowser_ChartLabels: the overview's chart labels (ticks, legend,
// captions) do not overlap one another and stay inside their chart, on a
// desktop and on a narrow window.
func TestBrowser_ChartLabels(t *testing.T) {
	ctx, _ := newBrowser(t)
	e := start(t)
	base := e.URL + "/console"
	login(t, ctx, base, "admin")
	for _, w := range []int64{1280, 800} {
		for _, place := range []string{demo.CountyCode, demo.VillageCode, demo.VillageCode + "001"} {
			step(t, ctx, "overview",
				chromedp.EmulateViewport(w, 900),
				chromedp.Navigate(base+"/overview?period=all&place="+place),
				chromedp.WaitVisible(chromedp.CSS(".charts svg.chart")),
			)
			type box struct {
				Text                     string
				Left, Top, Right, Bottom float64
				Out                      bool
			}
			boxes := eval[[]box](t, ctx, `[...document.querySelectorAll('.charts svg.chart text, .charts figcaption')].map(el => {
				const r = el.getBoundingClientRect();
				const c = (el.closest('svg') || el.closest('figure')).getBoundingClientRect();
				return {Text: el.textContent, Left: r.left, Top: r.top, Right: r.right, Bottom: r.bottom,
					Out: r.left < c.left - 0.5 || r.right > c.right + 0.5 || r.top < c.top - 0.5 || r.bottom > c.bottom + 0.5};
			})`)
			if len(boxes) < 6 {
				t.Fatalf("%d px, %s: %d chart labels", w, place, len(boxes))
			}
			for i, a := range boxes {
				if a.Right-a.Left < 1 {
					t.Errorf("%d px, %s: label %q has no width", w, place, a.Text)
				}
				if a.Out {
					t.Errorf("%d px, %s: label %q sticks out of its chart", w, place, a.Text)
				}
				for _, b := range boxes[i+1:] {
					if a.Left < b.Right && b.Left < a.Right && a.Top < b.Bottom && b.Top < a.Bottom {
						t.Errorf("%d px, %s: labels %q [%.0f,%.0f-%.0f,%.0f] and %q [%.0f,%.0f-%.0f,%.0f] overlap", w, place,
							a.Text, a.Left, a.Top, a.Right, a.Bottom, b.Text, b.Left, b.Top, b.Right, b.Bottom)
					}
				}
			}
		}
	}
}

// TestBrowser_PagesStaySmall: with the demo county, every main page keeps
// under 1,500 DOM elements (Lighthouse's limit), at every level, over all
// time; long lists page, the map groups its households.
func TestBrowser_PagesStaySmall(t *testing.T) {
	ctx, problems := newBrowser(t)
	e := start(t)
	base := e.URL + "/console"
	login(t, ctx, base, "admin")
	var hh string
	e.Store.DB().QueryRow(`SELECT household_id FROM visits GROUP BY household_id ORDER BY count(*) DESC, household_id LIMIT 1`).Scan(&hh)
	group := demo.VillageCode + "001"
	pages := []string{"/overview", "/overview?place=" + demo.VillageCode, "/overview?place=" + group,
		"/map?period=all", "/map?period=all&place=" + demo.VillageCode, "/map?period=all&place=" + group, "/map?period=month",
		"/gaps", "/gaps?place=" + demo.VillageCode, "/gaps?place=" + group,
		"/review", "/review?place=" + demo.VillageCode + "&state=submitted", "/review?state=", "/households/" + hh,
	}
	for _, p := range pages {
		step(t, ctx, p, chromedp.Navigate(base+p), chromedp.WaitReady(chromedp.CSS("footer.foot")))
		n := eval[int](t, ctx, `document.getElementsByTagName('*').length`)
		t.Logf("%-60s %5d elements", p, n)
		if n >= 1500 {
			t.Errorf("%s has %d elements", p, n)
		}
	}
	// The county map groups the households by villager group: the bubbles
	// add up to every household with a point, the flagged ones included;
	// a bubble leads to its group, which draws each household.
	step(t, ctx, "county map", chromedp.Navigate(base+"/map?period=all&place="+demo.CountyCode), chromedp.WaitVisible(chromedp.ID("map")))
	inBubbles := eval[int](t, ctx, `[...document.querySelectorAll('#map circle.agg')].reduce((s, c) => s + +c.dataset.n, 0)`)
	flagged := eval[int](t, ctx, `[...document.querySelectorAll('#map circle.agg')].reduce((s, c) => s + +c.dataset.flagged, 0)`)
	withPoint := e.Count(t, `SELECT count(*) FROM households WHERE deleted = 0 AND lon IS NOT NULL`)
	if inBubbles != withPoint || eval[int](t, ctx, `document.querySelectorAll('#map circle.hh').length`) != 0 {
		t.Errorf("county map: bubbles hold %d households, database %d", inBubbles, withPoint)
	}
	hs, err := e.Store.ConsoleHouseholds(bg, demo.CountyCode, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	wantFlagged := 0
	for _, h := range hs {
		if h.HasPoint && h.Status == "flagged" {
			wantFlagged++
		}
	}
	if flagged != wantFlagged {
		t.Errorf("flagged households in the bubbles %d, in the store %d", flagged, wantFlagged)
	}
	sel := fmt.Sprintf(`#map circle.agg[data-code="%s"]`, group)
	step(t, ctx, "open a bubble",
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector('%s').dispatchEvent(new MouseEvent('click', {bubbles: true}))`, sel)),
		chromedp.WaitVisible(chromedp.CSS(`#map circle.hh`)),
	)
	inGroup := e.Count(t, `SELECT count(*) FROM households WHERE deleted = 0 AND lon IS NOT NULL AND place_code = ?`, group)
	if n := eval[int](t, ctx, `document.querySelectorAll('#map circle.hh').length`); n != inGroup || n == 0 {
		t.Errorf("group map draws %d households, database %d", n, inGroup)
	}
	for _, p := range problems() {
		if strings.Contains(p, "/api/v1/evidence/") {
			continue
		}
		t.Errorf("browser console: %s", p)
	}
}
