package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"fieldsync/server/app"
	"fieldsync/server/demo"
	"fieldsync/server/servertest"
)

// startDemo starts the server as `fieldsync -demo` does (app.Run, the
// demo county with its evidence, analysed before the console opens) on a
// loopback port, and returns its base URL.
func startDemo(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	var out strings.Builder
	go func() {
		done <- app.Run(ctx, app.Config{DataDir: t.TempDir(), Addr: "127.0.0.1:0", Demo: true,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Out: &out, Ready: func(a string) { addrc <- a }})
	}()
	start := time.Now()
	select {
	case a := <-addrc:
		t.Logf("-demo start (demo data, evidence photos stored and analysed): %.1f s", time.Since(start).Seconds())
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("server: %v", err)
			}
		})
		return "http://" + a
	case err := <-done:
		cancel()
		t.Fatalf("server did not start: %v", err)
	case <-time.After(5 * time.Minute):
		cancel()
		t.Fatal("server did not start in 5 minutes")
	}
	return ""
}

// englishWord is a token that reads as an English word (not a code, an
// id, a number or a unit).
var englishWord = regexp.MustCompile(`^[A-Za-z][a-z]+[.,:;!?]?$|^[A-Z][a-z]+[.,:;!?]?$|^(a|I)$`)

// notEnglish are the Latin tokens a Chinese console may show: formats,
// units, technical names.
var notEnglish = map[string]bool{"GeoJSON": true, "Excel": true, "English": true, "Chromium": true}

// englishSentences finds runs of three or more English words in text:
// cells (tabs) and lines break a run, and URLs, codes and ids are not
// words.
func englishSentences(text string) []string {
	var out []string
	for _, line := range strings.FieldsFunc(text, func(r rune) bool { return r == '\n' || r == '\t' }) {
		var run []string
		flush := func() {
			if len(run) >= 3 {
				out = append(out, strings.Join(run, " "))
			}
			run = nil
		}
		for _, tok := range strings.Fields(line) {
			if englishWord.MatchString(tok) && !notEnglish[strings.TrimRight(tok, ".,:;!?")] && !strings.Contains(tok, "://") {
				run = append(run, tok)
			} else {
				flush()
			}
		}
		flush()
	}
	return out
}

// clockTime is a time of day; the zone must follow it (+08:00) or
// 北京时间 must be next to it.
var clockTime = regexp.MustCompile(`\d{1,2}:\d{2}(?::\d{2})?`)

// timesWithoutZone lists the times in text that carry no zone.
func timesWithoutZone(text string) []string {
	var out []string
	for _, m := range clockTime.FindAllStringIndex(text, -1) {
		if m[0] > 0 && strings.ContainsRune("+-−", rune(text[m[0]-1])) {
			continue // an offset itself (+08:00, UTC+08:00)
		}
		after := text[m[1]:min(len(text), m[1]+8)]
		around := text[max(0, m[0]-16):min(len(text), m[1]+16)]
		if strings.HasPrefix(strings.TrimSpace(after), "+08:00") || strings.Contains(around, "北京时间") {
			continue
		}
		out = append(out, text[max(0, m[0]-12):min(len(text), m[1]+8)])
	}
	return out
}

func TestFirstHour_TextHeuristics(t *testing.T) {
	if got := englishSentences("照片 Photo taken far away\t户主\nGPS 精度 30 m\twangge_li cun_supervisor admin\thttps://x.example/a b c\n导出 CSV XLSX GeoJSON"); len(got) != 1 || got[0] != "Photo taken far away" {
		t.Errorf("englishSentences: %q", got)
	}
	if got := timesWithoutZone("2026-11-28 14:03 +08:00；UTC+08:00；北京时间 09:15；12:30 到达"); len(got) != 1 || !strings.Contains(got[0], "12:30") {
		t.Errorf("timesWithoutZone: %q", got)
	}
}

// pagePattern names the kind of a console page: its path with ids
// replaced and its query's keys.
func pagePattern(u *url.URL) string {
	p := u.Path
	if i := strings.Index(p, "/households/"); i >= 0 {
		p = p[:i] + "/households/:id"
	}
	var keys []string
	for k := range u.Query() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return p + "?" + strings.Join(keys, "&")
}

// TestBrowser_FirstHour walks a new user's first hour on a -demo start:
// every demo user signs in, opens every console page the navigation
// leads to (and the pages those link to), and reads only Simplified
// Chinese, with every time in the programme's zone; a supervisor approves
// a visit, sends one back for rework, and sees a bulk action without a
// reason refused in red. With FIELDSYNC_SCREENSHOTS=1 it saves the
// README's console screenshots (testdata/screenshots/console-*.png).
func TestBrowser_FirstHour(t *testing.T) {
	ctx, problems := newBrowser(t)
	base := startDemo(t)
	trad := servertest.TraditionalOnly(t)
	users := demo.Build(app.DemoSeed).Users
	if len(users) < 4 {
		t.Fatalf("%d demo users", len(users))
	}

	login := func(t *testing.T, username string) {
		t.Helper()
		if _, err := chromedp.Call(ctx, network.ClearBrowserCookies, cdp.Empty{}); err != nil {
			t.Fatalf("sign out: %v", err)
		}
		step(t, ctx, "login "+username,
			chromedp.Navigate(base+"/console/login"),
			chromedp.WaitVisible(chromedp.ID("login-form")),
			chromedp.SendKeys(chromedp.ID("username"), username),
			chromedp.SendKeys(chromedp.ID("password"), demo.DemoPassword),
			chromedp.Evaluate[chromedp.Void](`window.leaving = true`),
			chromedp.Click(chromedp.ID("login-submit")),
		)
		waitNewPage(t, ctx)
	}
	// read checks the page on screen and returns its links.
	read := func(t *testing.T, where string) []string {
		t.Helper()
		text := eval[string](t, ctx, `document.title + '\n' + document.body.innerText`)
		for _, s := range englishSentences(text) {
			t.Errorf("%s: English on the page: %q", where, s)
		}
		if got := trad(text); got != "" {
			t.Errorf("%s: Traditional-only characters: %s", where, got)
		}
		for _, s := range timesWithoutZone(text) {
			t.Errorf("%s: a time without its zone: %q", where, s)
		}
		// Readable on a phone: no text below 14 px (charts' SVG aside).
		if small := eval[string](t, ctx, `[...document.querySelectorAll('body *')]
			.filter(el => !el.closest('svg') && [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()))
			.filter(el => parseFloat(getComputedStyle(el).fontSize) < 14)
			.slice(0, 5).map(el => el.tagName + '.' + el.className + ' ' + getComputedStyle(el).fontSize).join('; ')`); small != "" {
			t.Errorf("%s: text below 14 px: %s", where, small)
		}
		return eval[[]string](t, ctx, `[...document.querySelectorAll('a[href]')].map(a => new URL(a.getAttribute('href'), location.href).href)`)
	}

	for _, u := range users {
		t.Run(u.Username, func(t *testing.T) {
			login(t, u.Username)
			if u.Role == demo.RoleFieldWorker {
				// Field workers use the tablet app: the console says so.
				if n := eval[int](t, ctx, `document.querySelectorAll('nav.main').length`); n != 0 {
					t.Fatal("a field worker got into the console")
				}
				if text := eval[string](t, ctx, `document.body.innerText`); !strings.Contains(text, "网格员") && !strings.Contains(text, "权限") {
					t.Errorf("the refusal does not explain itself: %q", text)
				}
				read(t, u.Username+" refused")
				return
			}
			step(t, ctx, "overview", chromedp.Navigate(base+"/console/overview"), chromedp.WaitVisible(chromedp.CSS("nav.main")))
			nav := eval[[]string](t, ctx, `[...document.querySelectorAll('nav.main a[href]')].map(a => a.href)`)
			if len(nav) < 5 {
				t.Fatalf("navigation has %d links", len(nav))
			}
			// Breadth first: the navigation's pages, then one page of each
			// kind they link to.
			seen := map[string]bool{}
			queue := nav
			opened := 0
			for depth := 0; depth < 2 && len(queue) > 0; depth++ {
				var next []string
				for _, link := range queue {
					lu, err := url.Parse(link)
					if err != nil || lu.Host != strings.TrimPrefix(base, "http://") || !strings.HasPrefix(lu.Path, "/console/") ||
						lu.Query().Has("lang") || lu.Query().Has("format") || strings.HasPrefix(lu.Path, "/console/static/") {
						continue
					}
					key := pagePattern(lu)
					if seen[key] || opened >= 60 {
						continue
					}
					seen[key] = true
					opened++
					step(t, ctx, "open "+link, chromedp.Navigate(link), chromedp.WaitReady(chromedp.CSS("body")))
					if n := eval[int](t, ctx, `document.querySelectorAll('nav.main').length`); n != 1 {
						t.Errorf("%s: not a console page (signed out?)", link)
						continue
					}
					t.Logf("%s: %s", u.Username, lu.RequestURI())
					next = append(next, read(t, u.Username+" "+lu.RequestURI())...)
				}
				queue = next
			}
			t.Logf("%s (%s) opened %d console pages", u.Username, u.Role, opened)
			if opened < len(nav) {
				t.Errorf("%s opened only %d pages", u.Username, opened)
			}
		})
	}

	t.Run("evidence shows on first start", func(t *testing.T) {
		login(t, "admin")
		// The gap report lists the visits with missing evidence.
		step(t, ctx, "gaps", chromedp.Navigate(base+"/console/gaps"), chromedp.WaitVisible(chromedp.ID("gap-items")))
		if n := eval[string](t, ctx, `document.getElementById('gap-visits').textContent.trim()`); n == "0" || n == "" {
			t.Errorf("the gap report counts %q visits with missing evidence", n)
		}
		if n := eval[int](t, ctx, `document.querySelectorAll('#gap-items tbody tr').length`); n == 0 {
			t.Error("the gap report lists no visit")
		}
		// The review queue filters by every kind of flag, each finding
		// visits.
		step(t, ctx, "review", chromedp.Navigate(base+"/console/review"), chromedp.WaitVisible(chromedp.ID("queue")))
		flags := eval[[]string](t, ctx, `[...document.querySelectorAll('select[name=flag] option')].map(o => o.value).filter(v => v)`)
		if len(flags) < 7 {
			t.Errorf("the flag filter offers %q", flags)
		}
		for _, f := range flags {
			step(t, ctx, "flag "+f, chromedp.Navigate(base+"/console/review?state=&flag="+f), chromedp.WaitVisible(chromedp.ID("queue")))
			if n := eval[int](t, ctx, `document.querySelectorAll('#queue tbody tr[data-id]').length`); n == 0 {
				t.Errorf("no visit with the flag %s in the review queue", f)
			}
		}
		// The checks catch what they look for: the English console is
		// English.
		step(t, ctx, "english", chromedp.Navigate(base+"/console/overview?lang=en"), chromedp.WaitVisible(chromedp.ID("place-title")))
		if text := eval[string](t, ctx, `document.body.innerText`); len(englishSentences(text)) == 0 {
			t.Error("the English heuristic finds nothing on the English console")
		}
		step(t, ctx, "chinese", chromedp.Navigate(base+"/console/overview?lang=zh"), chromedp.WaitVisible(chromedp.ID("place-title")))
	})

	t.Run("review: approve, rework, a refused bulk action", func(t *testing.T) {
		login(t, "cun_supervisor")
		token := apiLogin(t, base, "cun_supervisor")
		// Water-cellar visits have one review step: approving one ends it.
		q := base + "/console/review?state=submitted&form=water_cellar_progress"
		rows := `document.querySelectorAll('#queue tbody tr[data-id]')`
		step(t, ctx, "queue", chromedp.Navigate(q), chromedp.WaitVisible(chromedp.ID("queue")))
		if n := eval[int](t, ctx, rows+`.length`); n < 3 {
			t.Fatalf("the review queue shows %d visits", n)
		}
		nth := func(i int) string { return eval[string](t, ctx, fmt.Sprintf(rows+`[%d].dataset.id`, i)) }
		tick := func(id string) chromedp.Action[chromedp.Void] {
			return chromedp.Click(chromedp.CSS(fmt.Sprintf(`#queue input[name=ids][value="%s"]`, id)))
		}
		flash := func() (string, bool) {
			return eval[string](t, ctx, `document.getElementById('flash').textContent`),
				eval[bool](t, ctx, `document.getElementById('flash').classList.contains('error') && getComputedStyle(document.getElementById('flash')).color !== getComputedStyle(document.body).color`)
		}

		// A bulk rework without a reason: refused, in red, the selection
		// kept, nothing changed.
		bad := nth(0)
		step(t, ctx, "rework without a reason", tick(bad), chromedp.Evaluate[chromedp.Void](`window.leaving = true`), chromedp.Click(chromedp.ID("bulk-rework")))
		waitNewPage(t, ctx)
		if msg, red := flash(); !red || msg == "" {
			t.Errorf("a bulk rework without a reason: flash %q, shown as an error: %v", msg, red)
		}
		if !eval[bool](t, ctx, fmt.Sprintf(`document.querySelector('#queue input[name=ids][value="%s"]').checked`, bad)) {
			t.Error("the selection was lost after the error")
		}
		if st := visitState(t, base, token, bad); st != "submitted" {
			t.Errorf("the refused action changed the visit to %s", st)
		}
		read(t, "review after an error")
		if os.Getenv("FIELDSYNC_SCREENSHOTS") == "1" {
			step(t, ctx, "clean queue", chromedp.Navigate(q), chromedp.WaitVisible(chromedp.ID("queue")))
			readmeShot(t, ctx, "review")
		}

		// Approve one.
		step(t, ctx, "queue", chromedp.Navigate(q), chromedp.WaitVisible(chromedp.ID("queue")))
		ok := nth(0)
		step(t, ctx, "approve", tick(ok), chromedp.Evaluate[chromedp.Void](`window.leaving = true`), chromedp.Click(chromedp.ID("bulk-approve")))
		waitNewPage(t, ctx)
		if msg, red := flash(); red || msg == "" {
			t.Errorf("approve: flash %q, error %v", msg, red)
		}
		if st := visitState(t, base, token, ok); st != "approved" {
			t.Errorf("approved visit is %s", st)
		}

		// Send one back, with a reason.
		step(t, ctx, "queue", chromedp.Navigate(q), chromedp.WaitVisible(chromedp.ID("queue")))
		back := nth(0)
		if back == ok {
			t.Fatal("the approved visit is still in the queue of submitted visits")
		}
		step(t, ctx, "rework", tick(back), chromedp.SendKeys(chromedp.ID("reason"), "证件照片模糊，请重拍"),
			chromedp.Evaluate[chromedp.Void](`window.leaving = true`), chromedp.Click(chromedp.ID("bulk-rework")))
		waitNewPage(t, ctx)
		if msg, red := flash(); red || msg == "" {
			t.Errorf("rework: flash %q, error %v", msg, red)
		}
		if st := visitState(t, base, token, back); st != "needs_rework" {
			t.Errorf("visit sent back is %s", st)
		}
		read(t, "review after rework")
	})

	if os.Getenv("FIELDSYNC_SCREENSHOTS") == "1" {
		t.Run("screenshots", func(t *testing.T) {
			login(t, "admin")
			step(t, ctx, "overview", chromedp.Navigate(base+"/console/overview"), chromedp.WaitVisible(chromedp.ID("children")))
			readmeShot(t, ctx, "overview")
			step(t, ctx, "map", chromedp.Navigate(base+"/console/map?place="+demo.VillageCode), chromedp.WaitVisible(chromedp.ID("map")))
			readmeShot(t, ctx, "map")
			// A household whose photo was taken far from the visit.
			step(t, ctx, "flagged", chromedp.Navigate(base+"/console/review?state=&flag=gps_far_from_visit&place="+demo.VillageCode), chromedp.WaitVisible(chromedp.ID("queue")))
			household := eval[string](t, ctx, `document.querySelector('#queue tbody tr[data-id] a[href*="/households/"]').href`)
			step(t, ctx, "household", chromedp.Navigate(household), chromedp.WaitVisible(chromedp.ID("hh-title")))
			if n := eval[int](t, ctx, `document.querySelectorAll('#visits figure.thumb img').length`); n == 0 {
				t.Error("the household shows no evidence thumbnails")
			}
			step(t, ctx, "images", chromedp.Evaluate[chromedp.Void](`Promise.all([...document.images].map(i => i.complete ? 1 : new Promise(r => { i.onload = i.onerror = r })))`, chromedp.EvalAwaitPromise))
			if n := eval[int](t, ctx, `[...document.images].filter(i => !i.naturalWidth).length`); n != 0 {
				t.Errorf("%d images on the household page did not load", n)
			}
			step(t, ctx, "to the evidence", chromedp.Evaluate[chromedp.Void](`document.querySelector('#visits figure.thumb.flagged').scrollIntoView({block: 'center'})`))
			readmeShot(t, ctx, "household")
		})
	}
	for _, p := range problems() {
		if strings.Contains(p, "status of 403") && strings.HasSuffix(p, "/console/login)") {
			continue // the field workers' refused sign-in
		}
		t.Errorf("browser console: %s", p)
	}
}

// waitNewPage waits until the page that was on screen (it set
// window.leaving) is replaced by a fully loaded new one.
func waitNewPage(t *testing.T, ctx context.Context) {
	t.Helper()
	for i := 0; i < 600; i++ {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		done, err := chromedp.Run(tctx, chromedp.Evaluate[bool](`!window.leaving && document.readyState === 'complete'`))
		cancel()
		if err == nil && done {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("no new page after 60 s")
}

// readmeShot saves what the browser window shows (1280×900) as
// console-NAME.png, one of the README's pictures (see
// servertest.SaveScreenshot: testdata/screenshots, in 256 colours).
func readmeShot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	servertest.SaveScreenshot(t, "console-"+name+".png", shot)
}

func apiLogin(t *testing.T, base, user string) string {
	t.Helper()
	resp, err := http.Post(base+"/api/v1/auth/login", "application/json", strings.NewReader(`{"username":"`+user+`","password":"`+demo.DemoPassword+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || v.Token == "" {
		t.Fatalf("api login %s: %d %v", user, resp.StatusCode, err)
	}
	return v.Token
}

func visitState(t *testing.T, base, token, id string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/api/v1/visits/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		Visit struct {
			ReviewState string `json:"review_state"`
		} `json:"visit"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("GET visit %s: %d %v", id, resp.StatusCode, err)
	}
	return v.Visit.ReviewState
}
