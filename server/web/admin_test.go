package web_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"fieldsync/server/demo"
	"fieldsync/server/web"
)

func TestAdmin_UsersPlacesAndEnrollment(t *testing.T) {
	e := start(t)
	c := e.client(t)
	c.login("admin", demo.DemoPassword)
	group := demo.VillageCode + "002"
	// Create a field worker with two places (one picked, one typed).
	st, loc := c.post("/console/users", url.Values{"csrf": {c.csrf}, "username": {"wangge_sun"}, "display_name": {"孙网格员"},
		"role": {"field_worker"}, "place": {group}, "places": {demo.VillageCode + "003"}})
	if st != http.StatusSeeOther || !strings.Contains(loc, "/console/users") {
		t.Fatalf("create user: %d %s", st, loc)
	}
	u, err := e.Store.UserByName(bg, "wangge_sun")
	if err != nil || u.DisplayName != "孙网格员" || strings.Join(u.PlaceCodes, ",") != group+","+demo.VillageCode+"003" {
		t.Fatalf("created user: %+v %v", u, err)
	}
	// The users page names her places (the code on hover), not just codes.
	_, page := c.get("/console/users")
	for _, code := range u.PlaceCodes {
		p, err := e.Store.Place(bg, code)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(page, `<span title="`+code+`">`+p.Name+`</span>`) {
			t.Errorf("users page does not name place %s as %s", code, p.Name)
		}
	}
	// A duplicate or a bad role is a form error, not a crash.
	if st, body := c.post("/console/users", url.Values{"csrf": {c.csrf}, "username": {"wangge_sun"}, "role": {"field_worker"}}); st != http.StatusUnprocessableEntity || !strings.Contains(body, "error-msg") {
		t.Errorf("duplicate user: %d", st)
	}
	if st, _ := c.post("/console/users", url.Values{"csrf": {c.csrf}, "username": {"x"}, "role": {"king"}}); st != http.StatusUnprocessableEntity {
		t.Errorf("bad role: %d", st)
	}
	// Reassign places.
	if st, _ := c.post(fmt.Sprintf("/console/users/%d/places", u.ID), url.Values{"csrf": {c.csrf}, "places": {group}}); st != http.StatusSeeOther {
		t.Errorf("set places: %d", st)
	}
	u, _ = e.Store.UserByName(bg, "wangge_sun")
	if strings.Join(u.PlaceCodes, ",") != group {
		t.Errorf("places after update: %v", u.PlaceCodes)
	}
	// An enrollment code, shown as a QR PNG, that a device can redeem.
	st, body := c.post(fmt.Sprintf("/console/users/%d/enroll", u.ID), url.Values{"csrf": {c.csrf}})
	if st != 200 {
		t.Fatalf("enroll: %d", st)
	}
	m := regexp.MustCompile(`src="data:image/png;base64,([^"]+)"`).FindStringSubmatch(body)
	code := regexp.MustCompile(`id="enroll-code">([^<]+)<`).FindStringSubmatch(body)
	if m == nil || code == nil {
		t.Fatal("no QR image or code on the page")
	}
	raw, _ := base64.StdEncoding.DecodeString(html.UnescapeString(m[1]))
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil || img.Bounds().Dx() < 200 || img.Bounds().Dx() > 1000 || img.Bounds().Dx() != img.Bounds().Dy() {
		t.Fatalf("QR PNG: %v %v", err, img)
	}
	// The QR carries the field app's URL on this server (the host the
	// admin's browser used) with the code; the page shows it too.
	link := regexp.MustCompile(`id="enroll-url">([^<]+)<`).FindStringSubmatch(body)
	if want := e.URL + "/app/#/enroll?code=" + url.QueryEscape(code[1]); link == nil || html.UnescapeString(link[1]) != want {
		t.Errorf("enrollment URL %q, want %q", link, want)
	}
	resp, err := http.Post(e.URL+"/api/v1/devices/enroll", "application/json", strings.NewReader(`{"code":"`+code[1]+`","name":"孙的平板"}`))
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("enroll with the shown code: %v %d", err, resp.StatusCode)
	}
	resp.Body.Close()
}

func TestAdmin_ImportPlaceBoundaries(t *testing.T) {
	e := start(t)
	c := e.client(t)
	c.login("admin", demo.DemoPassword)
	c.get("/console/places")
	upload := func(name, body string) (int, string) {
		var buf bytes.Buffer
		mw := newMultipart(&buf)
		mw.field("csrf", c.csrf)
		mw.file("file", name, []byte(body))
		mw.close()
		req, _ := http.NewRequest("POST", e.URL+"/console/places/import", &buf)
		req.Header.Set("Content-Type", mw.contentType())
		resp, err := c.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	good := `{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"code":"` + demo.OtherVillageCode + `004","name":"新寨","level":"group","parent_code":"` + demo.OtherVillageCode + `"},
		"geometry":{"type":"Polygon","coordinates":[[[103.80,25.00],[103.81,25.00],[103.81,25.01],[103.80,25.01],[103.80,25.00]]]}}]}`
	if st, _ := upload("places.geojson", good); st != http.StatusSeeOther {
		t.Fatalf("import: %d", st)
	}
	p, err := e.Store.Place(bg, demo.OtherVillageCode+"004")
	if err != nil || p.Name != "新寨" || len(p.Boundary) == 0 {
		t.Fatalf("imported place: %+v %v", p, err)
	}
	bad := strings.Replace(good, "[103.80,25.00]]]", "[103.81,25.01]]]", 1) // ring not closed
	st, body := upload("bad.geojson", bad)
	if st != http.StatusUnprocessableEntity || !strings.Contains(body, "import-error") {
		t.Errorf("bad geometry: %d", st)
	}
}

func TestReview_BulkActionsAndReasons(t *testing.T) {
	e := start(t)
	c := e.client(t)
	c.login("admin", demo.DemoPassword)
	ids := e.VisitIDs(t, "v.form_id = 'water_cellar_progress' AND v.review_state = 'submitted'")
	if len(ids) < 4 {
		t.Fatalf("%d water-cellar visits", len(ids))
	}
	st, body := c.get("/console/review?form=water_cellar_progress")
	if st != 200 || strings.Count(body, `name="ids"`) != len(ids) {
		t.Fatalf("queue: %d, %d rows for %d visits", st, strings.Count(body, `name="ids"`), len(ids))
	}
	// Rework without a reason is refused and changes nothing.
	c.post("/console/review", url.Values{"csrf": {c.csrf}, "ids": {ids[0]}, "action": {"rework"}})
	if n := e.Count(t, `SELECT count(*) FROM visits WHERE id = ? AND review_state = 'submitted'`, ids[0]); n != 1 {
		t.Error("rework without a reason went through")
	}
	// Approve three at once, one of them twice (the second fails).
	req, _ := http.NewRequest("POST", e.URL+"/console/review", strings.NewReader(url.Values{"csrf": {c.csrf}, "action": {"approve"},
		"ids": {ids[0], ids[1], ids[2], ids[2]}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Done    int `json:"done"`
		Results []struct {
			ID, State, Error string
		} `json:"results"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if out.Done != 3 || len(out.Results) != 4 || out.Results[3].Error == "" || out.Results[0].State != "approved" {
		t.Fatalf("bulk approve: %+v", out)
	}
	if n := e.Count(t, `SELECT count(*) FROM visits WHERE id IN (?, ?, ?) AND review_state = 'approved'`, ids[0], ids[1], ids[2]); n != 3 {
		t.Errorf("approved %d of 3", n)
	}
	// Reject with a reason, from the form; the flash says what happened.
	st, loc := c.post("/console/review", url.Values{"csrf": {c.csrf}, "ids": {ids[3]}, "action": {"reject"}, "reason": {"重复登记"},
		"return": {"/console/review?state=rejected"}})
	if st != http.StatusSeeOther || !strings.HasSuffix(loc, "/console/review?state=rejected") {
		t.Fatalf("reject: %d %s", st, loc)
	}
	_, body = c.get("/console/review?state=rejected")
	if !strings.Contains(body, `id="flash"`) || !strings.Contains(body, ids[3]) {
		t.Error("rejected visit not listed with a flash")
	}
	// A return address outside the console is ignored.
	_, loc = c.post("/console/review", url.Values{"csrf": {c.csrf}, "ids": {ids[3]}, "action": {"approve"}, "return": {"https://evil.example/"}})
	if strings.Contains(loc, "evil") {
		t.Errorf("open redirect: %s", loc)
	}
}

func TestOverviewAndGaps_MatchTheDatabase(t *testing.T) {
	e := start(t)
	// Evidence for one retrofit visit: two of its three required photos.
	v := e.VisitIDs(t, "v.form_id = 'house_retrofit_inspection' AND v.review_state = 'approved'")[0]
	for i, slot := range []string{"before", "after"} {
		sha := strings.Repeat(fmt.Sprint(i+1), 64)
		e.AddBlob(t, sha, 0, 0)
		e.AttachEvidence(t, v, slot, sha)
	}
	c := e.client(t)
	c.login("zhen_supervisor", demo.DemoPassword)
	_, body := c.get("/console/overview")
	awaiting := e.Count(t, `SELECT count(*) FROM visits WHERE review_state = 'submitted' AND place_code LIKE ?`, demo.TownshipCode+"%")
	hh := e.Count(t, `SELECT count(*) FROM households WHERE deleted = 0 AND place_code LIKE ?`, demo.TownshipCode+"%")
	for id, want := range map[string]int{"stat-awaiting": awaiting, "stat-households": hh} {
		if !strings.Contains(body, fmt.Sprintf(`id="%s">%d<`, id, want)) {
			t.Errorf("overview %s: want %d", id, want)
		}
	}
	_, body = c.get("/console/gaps?place=" + demo.VillageCode)
	gaps := e.Count(t, `SELECT count(*) FROM visits v WHERE v.place_code LIKE ? AND v.review_state <> 'rejected'
		AND v.form_id IN ('house_retrofit_inspection', 'household_survey', 'water_cellar_progress', 'dropout_followup')`, demo.VillageCode+"%")
	if !strings.Contains(body, fmt.Sprintf(`id="gap-visits">%d<`, gaps)) {
		t.Errorf("gaps: want %d visits with gaps", gaps)
	}
	// The partly documented visit lacks exactly its certificate.
	_, body = c.get("/console/households/" + householdOf(t, e, v))
	if !strings.Contains(body, "缺少佐证:") || strings.Contains(body, "改造前照片、") {
		t.Error("household page: missing evidence not shown as the certificate only")
	}
}

func householdOf(t *testing.T, e *env, visit string) string {
	var h string
	if err := e.Store.DB().QueryRow(`SELECT household_id FROM visits WHERE id = ?`, visit).Scan(&h); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestMount_ChecksItsConfig(t *testing.T) {
	e := start(t)
	for _, bad := range []string{"ftp://tiles.example.org/{z}/{x}/{y}.png", "https://tiles.example.org/tile.png", "not a url {z}{x}{y}"} {
		if _, err := web.Mount(e.API, web.Config{Store: e.Store, TileURL: bad}); err == nil {
			t.Errorf("tile URL %q accepted", bad)
		}
	}
	if _, err := web.Mount(e.API, web.Config{}); err == nil {
		t.Error("no store accepted")
	}
	// Security headers on console pages.
	resp, err := http.Get(e.URL + "/console/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("headers: %v", resp.Header)
	}
	// Static assets are embedded and cacheable when versioned.
	resp, err = http.Get(e.URL + "/console/static/console.js?v=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "initMap") || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") {
		t.Errorf("static: %d %v", resp.StatusCode, resp.Header)
	}
}
