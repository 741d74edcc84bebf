package web_test

import (
	"html"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"fieldsync/server/demo"
	"fieldsync/server/servertest"
)

// dateTime finds a date and time of day, with the zone offset after it if
// there is one.
var dateTime = regexp.MustCompile(`\d{4}-\d{2}-\d{2} \d{2}:\d{2}( [+-]\d{2}:\d{2})?`)

// TestPages_RenderInBothLanguages opens every page as an admin and a
// supervisor, in Chinese and English: 200, no missing message keys, the
// right language.
func TestPages_RenderInBothLanguages(t *testing.T) {
	e := start(t)
	trad := servertest.TraditionalOnly(t)
	devID, _ := e.enrollDevice(t, "wangge_li", "平板一")
	_ = devID
	hh := e.Households(t, demo.VillageCode)[0].ID
	group := demo.VillageCode + "001"
	pages := []string{"/console/overview", "/console/overview?place=" + demo.TownshipCode, "/console/overview?place=" + demo.VillageCode,
		"/console/overview?place=" + group, "/console/map", "/console/map?place=" + group + "&period=month", "/console/households/" + hh,
		"/console/review", "/console/review?state=&form=house_retrofit_inspection", "/console/gaps", "/console/gaps?place=" + group,
		"/console/devices", "/console/forms", "/console/export"}
	admin := []string{"/console/users", "/console/places"}
	for _, who := range []string{"admin", "zhen_supervisor"} {
		c := e.client(t)
		if st := c.login(who, demo.DemoPassword); st != http.StatusSeeOther {
			t.Fatalf("%s login: %d", who, st)
		}
		list := pages
		if who == "admin" {
			list = append(append([]string{}, pages...), admin...)
		}
		for _, lang := range []string{"zh", "en"} {
			c.get("/console/overview?lang=" + lang)
			for _, p := range list {
				st, body := c.get(p)
				if st != 200 {
					t.Errorf("%s %s %s: %d", who, lang, p, st)
					continue
				}
				if m := regexp.MustCompile(`‹[a-z0-9_.]+›`).FindString(body); m != "" {
					t.Errorf("%s %s %s: missing message %s", who, lang, p, m)
				}
				zh := strings.Contains(body, `<html lang="zh-CN">`)
				if zh != (lang == "zh") {
					t.Errorf("%s %s: page language wrong", p, lang)
				}
				if lang == "zh" {
					if got := trad(html.UnescapeString(body)); got != "" {
						t.Errorf("%s %s: Traditional characters on the page: %s", who, p, got)
					}
				}
				for _, m := range dateTime.FindAllStringSubmatch(html.UnescapeString(body), -1) {
					if m[1] != " +08:00" {
						t.Errorf("%s %s %s: time %q shown without its zone", who, lang, p, m[0])
					}
				}
				if lang == "en" && !strings.Contains(body, ">Overview<") || lang == "zh" && !strings.Contains(body, ">概览<") {
					t.Errorf("%s %s: navigation not translated", p, lang)
				}
			}
		}
	}
}

// TestMessages_EveryKeyUsedIsDefined checks the catalog against the
// templates and the Go code: every key used exists, and every message has
// both languages.
func TestMessages_EveryKeyUsedIsDefined(t *testing.T) {
	src := ""
	for _, pat := range []string{"templates/*.html", "*.go"} {
		files, _ := filepath.Glob(pat)
		for _, f := range files {
			if f == "i18n.go" {
				continue
			}
			b, _ := os.ReadFile(f)
			src += string(b)
		}
	}
	catalog, _ := os.ReadFile("i18n.go")
	keys := regexp.MustCompile(`(?m)^\s*"([a-z0-9_.]+)":\s*\{"([^"]*)",\s*"([^"]*)"\}`).FindAllStringSubmatch(string(catalog), -1)
	if len(keys) < 150 {
		t.Fatalf("only %d messages parsed", len(keys))
	}
	defined := map[string]bool{}
	for _, k := range keys {
		defined[k[1]] = true
		if strings.TrimSpace(k[2]) == "" || strings.TrimSpace(k[3]) == "" {
			t.Errorf("message %s lacks a language", k[1])
		}
		if !regexp.MustCompile(`\p{Han}`).MatchString(k[2]) && !strings.HasPrefix(k[1], "x.") {
			t.Errorf("message %s: the Chinese text has no Chinese: %q", k[1], k[2])
		}
	}
	for _, m := range regexp.MustCompile(`\.T "([a-z0-9_.]+)"|v\.T\("([a-z0-9_.]+)"`).FindAllStringSubmatch(src, -1) {
		k := m[1] + m[2]
		if strings.HasSuffix(k, ".") {
			continue // a prefix completed at run time (status.*, flag.*)
		}
		if !defined[k] {
			t.Errorf("key %s is used but not defined", k)
		}
	}
}

// TestRoot_RedirectsToConsole: the URL a newcomer opens (the server's
// root) leads to the console's sign-in, not to a JSON not_found.
func TestRoot_RedirectsToConsole(t *testing.T) {
	e := start(t)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		req, _ := http.NewRequest(method, e.URL+"/", nil)
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/console/" {
			t.Fatalf("%s /: %d to %q", method, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	// Followed to the end, an anonymous visitor sees the sign-in page.
	resp, err := http.Get(e.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Request.URL.Path, "/console/login") {
		t.Fatalf("GET / ends at %s with %d", resp.Request.URL, resp.StatusCode)
	}
}

// TestConsole_HEADLikeGET: HEAD on a console page answers as GET does,
// without a body.
func TestConsole_HEADLikeGET(t *testing.T) {
	e := start(t)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, p := range []string{"/console/login", "/console/overview", "/console/static/nonexistent.css"} {
		get, err := noFollow.Get(e.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		get.Body.Close()
		req, _ := http.NewRequest(http.MethodHead, e.URL+p, nil)
		head, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(head.Body)
		head.Body.Close()
		if head.StatusCode != get.StatusCode || len(b) != 0 {
			t.Errorf("HEAD %s: %d with %d bytes; GET: %d", p, head.StatusCode, len(b), get.StatusCode)
		}
	}
}

// TestOverview_CadresPlacesByName: the cadres' table names each cadre's
// places, with the code on hover, instead of listing codes.
func TestOverview_CadresPlacesByName(t *testing.T) {
	e := start(t)
	c := e.client(t)
	c.login("admin", demo.DemoPassword)
	_, page := c.get("/console/overview?place=" + demo.VillageCode)
	i := strings.Index(page, `id="cadres"`)
	if i < 0 {
		t.Fatal("no cadres table on the village overview")
	}
	table := page[i:]
	table = table[:strings.Index(table, "</table>")]
	u, err := e.Store.UserByName(bg, "wangge_li")
	if err != nil || len(u.PlaceCodes) == 0 {
		t.Fatalf("wangge_li: %+v %v", u, err)
	}
	for _, code := range u.PlaceCodes {
		p, err := e.Store.Place(bg, code)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(table, `<span title="`+code+`">`+p.Name+`</span>`) {
			t.Errorf("cadres table does not name %s as %s", code, p.Name)
		}
	}
}
