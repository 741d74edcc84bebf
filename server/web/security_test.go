package web_test

import (
	"bytes"
	"encoding/csv"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"fieldsync/server/demo"
	"fieldsync/server/export"
)

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestLogin_SharesTheAPISession(t *testing.T) {
	e := start(t)
	c := e.client(t)
	if st := c.login("admin", "wrong-password"); st != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", st)
	}
	if st := c.login("admin", demo.DemoPassword); st != http.StatusSeeOther {
		t.Fatalf("login: %d", st)
	}
	// The console's cookie is the API's session: /api/v1/me answers.
	resp, err := c.http.Get(e.URL + "/api/v1/me")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"username":"admin"`) || !strings.Contains(string(b), c.csrf) {
		t.Fatalf("/api/v1/me with the console cookie: %d %s", resp.StatusCode, b)
	}
	u, _ := url.Parse(e.URL)
	for _, ck := range c.http.Jar.Cookies(u) {
		if ck.Name == "fieldsync_session" && ck.Value == "" {
			t.Error("empty session cookie")
		}
	}
	// Signing out ends the session for the API too.
	if st, _ := c.post("/console/logout", url.Values{"csrf": {c.csrf}}); st != http.StatusSeeOther {
		t.Fatalf("logout: %d", st)
	}
	if st, _ := c.get("/console/overview"); st != http.StatusSeeOther {
		t.Errorf("after logout the console still answers %d", st)
	}
}

func TestLogin_RateLimited(t *testing.T) {
	e := start(t, envOpts{loginRate: 3})
	c := e.client(t)
	var last int
	for i := 0; i < 5; i++ {
		last = c.login("admin", "nope-nope")
	}
	if last != http.StatusTooManyRequests {
		t.Fatalf("5th attempt at 3/min: %d, want 429", last)
	}
}

func TestSecurity_FieldWorkerCannotUseTheConsole(t *testing.T) {
	e := start(t)
	c := e.client(t)
	st := c.login("wangge_li", demo.DemoPassword)
	if st != http.StatusForbidden {
		t.Fatalf("field worker console login: %d, want 403", st)
	}
	// Even with an API session cookie (from /api/v1/auth/login), every
	// console page is refused.
	resp, err := c.http.Post(e.URL+"/api/v1/auth/login", "application/json", strings.NewReader(`{"username":"wangge_li","password":"`+demo.DemoPassword+`"}`))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("api login: %v %d", err, resp.StatusCode)
	}
	resp.Body.Close()
	for _, p := range []string{"/console/overview", "/console/users", "/console/places", "/console/devices", "/console/review", "/console/map",
		"/console/gaps", "/console/forms", "/console/export", "/console/export?format=csv", "/api/v1/export?format=csv"} {
		st, body := c.get(p)
		if st != http.StatusForbidden {
			t.Errorf("field worker GET %s: %d, want 403", p, st)
		}
		if strings.Contains(body, "530100") && p != "/api/v1/export?format=csv" {
			t.Errorf("field worker GET %s leaks place data", p)
		}
	}
}

func TestSecurity_SupervisorCannotOpenAdminPages(t *testing.T) {
	e := start(t)
	c := e.client(t)
	if st := c.login("zhen_supervisor", demo.DemoPassword); st != http.StatusSeeOther {
		t.Fatalf("login %d", st)
	}
	for _, p := range []string{"/console/users", "/console/places"} {
		if st, _ := c.get(p); st != http.StatusForbidden {
			t.Errorf("supervisor GET %s: %d", p, st)
		}
	}
	before := e.Count(t, `SELECT count(*) FROM users`)
	if st, _ := c.post("/console/users", url.Values{"csrf": {c.csrf}, "username": {"intruder"}, "role": {"admin"}, "password": {"12345678x"}}); st != http.StatusForbidden {
		t.Errorf("supervisor creates a user: %d", st)
	}
	if after := e.Count(t, `SELECT count(*) FROM users`); after != before {
		t.Error("a user was created")
	}
}

func TestSecurity_TownshipSupervisorSeesOnlyTheirTownship(t *testing.T) {
	e := start(t)
	otherHH, otherVisit := e.addOtherTownship(t)
	otherDev, _ := func() (string, string) {
		e.Exec(t, `INSERT INTO user_places(user_id, place_code) VALUES (?, ?)`, e.UserID(t, "wangge_zhao"), demo.OtherVillageCode)
		e.Exec(t, `DELETE FROM user_places WHERE user_id = ? AND place_code LIKE ?`, e.UserID(t, "wangge_zhao"), demo.VillageCode+"%")
		return e.enrollDevice(t, "wangge_zhao", "龙潭平板")
	}()
	liDev, _ := e.enrollDevice(t, "wangge_li", "石门平板")
	c := e.client(t)
	if st := c.login("zhen_supervisor", demo.DemoPassword); st != http.StatusSeeOther {
		t.Fatalf("login %d", st)
	}
	// The overview starts at their township, not the county.
	st, body := c.get("/console/overview")
	if st != 200 || !strings.Contains(body, `data-code="`+demo.TownshipCode+`"`) || strings.Contains(body, "龙潭乡") {
		t.Fatalf("overview: %d", st)
	}
	for _, p := range []string{
		"/console/overview?place=" + demo.CountyCode,
		"/console/overview?place=" + demo.OtherTownshipCode,
		"/console/map?place=" + demo.OtherVillageCode,
		"/console/gaps?place=" + demo.OtherTownshipCode,
		"/console/households/" + otherHH,
		"/console/review?place=" + demo.OtherTownshipCode,
	} {
		if st, body := c.get(p); st != http.StatusNotFound || strings.Contains(body, "龙潭乡户主") {
			t.Errorf("GET %s: %d, want 404", p, st)
		}
	}
	// Lists hold nothing of the other township.
	for _, p := range []string{"/console/review?state=", "/console/map", "/console/gaps", "/console/devices"} {
		st, body := c.get(p)
		if st != 200 {
			t.Errorf("GET %s: %d", p, st)
		}
		if strings.Contains(body, otherVisit) || strings.Contains(body, otherHH) || strings.Contains(body, otherDev) || strings.Contains(body, "龙潭") {
			t.Errorf("GET %s shows the other township", p)
		}
	}
	if _, body := c.get("/console/devices"); !strings.Contains(body, liDev) {
		t.Error("devices page misses a device of their own township")
	}
	// Reviewing or revoking outside is refused.
	if st, _ := c.post("/console/devices/"+otherDev+"/revoke", url.Values{"csrf": {c.csrf}}); st != http.StatusNotFound {
		t.Errorf("revoke other township's device: %d", st)
	}
	c.post("/console/review", url.Values{"csrf": {c.csrf}, "ids": {otherVisit}, "action": {"reject"}, "reason": {"x"}})
	if s := e.Count(t, `SELECT count(*) FROM visits WHERE id = ? AND review_state = 'submitted'`, otherVisit); s != 1 {
		t.Error("a visit of the other township was reviewed")
	}
	// Exports: the console and the API keep to the township and mask IDs.
	st, body = c.get("/console/export?format=csv&what=households")
	if st != 200 || strings.Contains(body, "龙潭乡户主") || !strings.HasPrefix(body, export.BOM) {
		t.Errorf("export: %d, other township present: %v", st, strings.Contains(body, "龙潭乡户主"))
	}
	if st, _ := c.get("/api/v1/export?format=csv&place=" + demo.OtherTownshipCode); st != http.StatusForbidden {
		t.Errorf("API export of the other township: %d", st)
	}
}

func TestSecurity_PostsWithoutCSRFAreRefused(t *testing.T) {
	e := start(t)
	devID, devToken := e.enrollDevice(t, "wangge_li", "平板")
	visit := e.VisitIDs(t, "v.review_state = 'submitted' AND v.form_id = 'water_cellar_progress'")[0]
	c := e.client(t)
	if st := c.login("admin", demo.DemoPassword); st != http.StatusSeeOther {
		t.Fatalf("login %d", st)
	}
	cases := []struct {
		name string
		path string
		form url.Values
		hdr  []string
	}{
		{"review no token", "/console/review", url.Values{"ids": {visit}, "action": {"reject"}, "reason": {"x"}}, nil},
		{"review wrong token", "/console/review", url.Values{"csrf": {"forged"}, "ids": {visit}, "action": {"reject"}, "reason": {"x"}}, nil},
		{"review other origin", "/console/review", url.Values{"csrf": {c.csrf}, "ids": {visit}, "action": {"reject"}, "reason": {"x"}}, []string{"Origin", "http://evil.example"}},
		{"revoke no token", "/console/devices/" + devID + "/revoke", url.Values{}, nil},
		{"create user no token", "/console/users", url.Values{"username": {"mallory"}, "role": {"admin"}}, nil},
		{"logout no token", "/console/logout", url.Values{}, nil},
	}
	for _, tc := range cases {
		if st, _ := c.post(tc.path, tc.form, tc.hdr...); st != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", tc.name, st)
		}
	}
	if n := e.Count(t, `SELECT count(*) FROM visits WHERE id = ? AND review_state = 'submitted'`, visit); n != 1 {
		t.Error("a CSRF-less post changed the visit")
	}
	if n := e.Count(t, `SELECT count(*) FROM devices WHERE id = ? AND revoked_at IS NULL`, devID); n != 1 {
		t.Error("a CSRF-less post revoked the device")
	}
	if st := e.apiGET(t, devToken, "/api/v1/device", nil); st != 200 {
		t.Errorf("device token: %d", st)
	}
	// The sign-in form has its own token.
	fresh := e.client(t)
	if st, _ := fresh.post("/console/login", url.Values{"username": {"admin"}, "password": {demo.DemoPassword}}); st != http.StatusForbidden {
		t.Errorf("login without its token: %d", st)
	}
	// With the token, the same post works.
	if st, _ := c.post("/console/devices/"+devID+"/revoke", url.Values{"csrf": {c.csrf}}); st != http.StatusSeeOther {
		t.Errorf("revoke with token: %d", st)
	}
	if st := e.apiGET(t, devToken, "/api/v1/device", nil); st != http.StatusUnauthorized {
		t.Errorf("revoked device token: %d", st)
	}
}

func TestExport_ConsoleAndAPI(t *testing.T) {
	e := start(t)
	ids := e.SetIDCards(t, demo.VillageCode, 4)
	// API, bearer token, admin: full numbers.
	req, _ := http.NewRequest("GET", e.URL+"/api/v1/export?what=households&format=csv&place="+demo.VillageCode, nil)
	req.Header.Set("Authorization", "Bearer "+e.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/csv; charset=utf-8" || !strings.Contains(resp.Header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("API export: %d %v", resp.StatusCode, resp.Header)
	}
	recs, err := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(b, []byte(export.BOM)))).ReadAll()
	if err != nil || len(recs)-1 != demo.TotalHouseholds {
		t.Fatalf("API export rows %d %v", len(recs)-1, err)
	}
	full := 0
	for _, id := range ids {
		if bytes.Contains(b, []byte(id)) {
			full++
		}
	}
	if full != len(ids) {
		t.Errorf("admin export: %d of %d full ID numbers", full, len(ids))
	}
	// Console, supervisor: masked; XLSX downloads as a file.
	c := e.client(t)
	c.login("cun_supervisor", demo.DemoPassword)
	st, body := c.get("/console/export?what=households&format=geojson")
	if st != 200 || regexp.MustCompile(`[1-9]\d{16}[\dX]`).MatchString(body) {
		t.Errorf("supervisor GeoJSON: %d, full ID present: %v", st, regexp.MustCompile(`[1-9]\d{16}[\dX]`).MatchString(body))
	}
	st, body = c.get("/console/export?what=visits&format=xlsx")
	if st != 200 || !strings.HasPrefix(body, "PK") {
		t.Errorf("xlsx: %d", st)
	}
	if st, _ := c.get("/console/export?format=pdf"); st != http.StatusBadRequest {
		t.Errorf("bad format: %d", st)
	}
	// Every export is an audit event, with the user.
	if n := e.Count(t, `SELECT count(*) FROM audit_events WHERE action = 'export'`); n != 3 {
		t.Errorf("export audit events: %d, want 3", n)
	}
	if n := e.Count(t, `SELECT count(*) FROM audit_events WHERE action = 'export' AND actor_name = 'cun_supervisor'`); n != 2 {
		t.Errorf("supervisor's export events: %d", n)
	}
}

func TestRegisterImport_PerRowErrorsThenImport(t *testing.T) {
	e := start(t)
	c := e.client(t)
	c.login("admin", demo.DemoPassword)
	g := demo.VillageCode + "003"
	reg := export.BOM + "户编号,地点编码,姓名,与户主关系,出生年份,身份证号\n" +
		"N1," + g + ",新户主甲,户主,1970,\n" +
		"N1," + g + ",新成员乙,子,1998,\n" +
		"N2,NOPE,新户主丙,户主,1971,\n" +
		"N3," + g + ",新户主丁,户主,1975,123\n"
	upload := func(partial bool) (int, string) {
		var buf bytes.Buffer
		mw := newMultipart(&buf)
		mw.field("csrf", c.csrf)
		if partial {
			mw.field("partial", "1")
		}
		mw.file("file", "花名册.csv", []byte(reg))
		mw.close()
		req, _ := http.NewRequest("POST", e.URL+"/console/households/import", &buf)
		req.Header.Set("Content-Type", mw.contentType())
		resp, err := c.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	before := e.Count(t, `SELECT count(*) FROM households`)
	st, body := upload(false)
	if st != http.StatusUnprocessableEntity || !strings.Contains(body, "register-errors") {
		t.Fatalf("import with errors: %d", st)
	}
	for _, want := range []string{"<td class=\"n\">4</td>", "<td class=\"n\">5</td>", "NOPE"} {
		if !strings.Contains(body, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if n := e.Count(t, `SELECT count(*) FROM households`); n != before {
		t.Fatal("households imported despite errors")
	}
	if _, body = upload(true); !strings.Contains(body, "register-imported") {
		t.Fatal("partial import did not import")
	}
	if n := e.Count(t, `SELECT count(*) FROM households`); n != before+1 {
		t.Fatalf("households %d -> %d, want +1", before, n)
	}
}

func TestNoPinyinAnnotationsInConsoleText(t *testing.T) {
	// An input method can glue a reading onto a character: the character,
	// then its pinyin in brackets.
	ann := regexp.MustCompile(`([\x{4e00}-\x{9fff}])\(([a-z\x{00e0}-\x{01dc}]{1,7})\)`)
	var files []string
	for _, pat := range []string{"templates/*.html", "static/*", "*.go", "../export/*.go", "../sqlstore/console*.go"} {
		m, _ := filepath.Glob(pat)
		files = append(files, m...)
	}
	if len(files) < 10 {
		t.Fatalf("only %d files found", len(files))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if m := ann.FindAllString(string(b), 5); m != nil {
			t.Errorf("%s has pinyin annotations: %v", f, m)
		}
	}
}
