package api_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paulmach/orb/geojson"

	"fieldsync/server/api"
	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/server/sqlstore"
	"fieldsync/syncproto"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// call is one declarative HTTP exchange, in the style of tusd's handler
// tests.
type call struct {
	name    string
	method  string
	path    string
	token   string
	body    string
	headers map[string]string
	status  int
	code    syncproto.Code // expected error code, if any
	check   func(t *testing.T, body []byte)
}

func (c call) run(t *testing.T, env *servertest.Env) []byte {
	t.Helper()
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	req, err := http.NewRequest(c.method, env.URL+c.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if c.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range c.headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != c.status {
		t.Fatalf("%s %s: status %d, want %d: %s", c.method, c.path, resp.StatusCode, c.status, b)
	}
	if c.code != "" {
		var e syncproto.Error
		if err := json.Unmarshal(b, &e); err != nil || e.Code != c.code {
			t.Fatalf("%s %s: body %s, want code %s", c.method, c.path, b, c.code)
		}
		if e.Message == "" {
			t.Fatalf("%s %s: error without message", c.method, c.path)
		}
	}
	if c.check != nil {
		c.check(t, b)
	}
	return b
}

func runCalls(t *testing.T, env *servertest.Env, calls []call) {
	t.Helper()
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) { c.run(t, env) })
	}
}

func login(t *testing.T, env *servertest.Env, user, pw string) string {
	t.Helper()
	b := call{method: "POST", path: "/api/v1/auth/login", body: `{"username":"` + user + `","password":"` + pw + `"}`, status: 200}.run(t, env)
	var r struct{ Token string }
	json.Unmarshal(b, &r)
	return r.Token
}

func placeCount(t *testing.T, env *servertest.Env) int {
	t.Helper()
	ps, err := env.Store.Places(context.Background(), nil, false)
	if err != nil {
		t.Fatal(err)
	}
	return len(ps)
}

func TestPlaces_GeoJSONRoundTrip(t *testing.T) {
	env := servertest.Start(t)
	fc := `{"type":"FeatureCollection","features":[
	  {"type":"Feature","properties":{"code":"V9","name":"观音岩村委会","level":"village","parent_code":"T1"},
	   "geometry":{"type":"Polygon","coordinates":[[[103.5,25.3],[103.6,25.3],[103.6,25.4],[103.5,25.4],[103.5,25.3]]]}},
	  {"type":"Feature","properties":{"code":"G91","name":"亚拉坡九公里","level":"group","parent_code":"V9"},
	   "geometry":{"type":"MultiPolygon","coordinates":[[[[103.5,25.3],[103.55,25.3],[103.55,25.35],[103.5,25.3]]],[[[103.56,25.36],[103.58,25.36],[103.58,25.38],[103.56,25.36]]]]}},
	  {"type":"Feature","properties":{"code":"G92","name":"石旮旯","level":"group","parent_code":"V9"},"geometry":null}
	]}`
	call{method: "POST", path: "/api/v1/places/import", token: env.AdminToken, body: fc, status: 200}.run(t, env)
	b := call{method: "GET", path: "/api/v1/places", token: env.AdminToken, status: 200}.run(t, env)
	got, err := geojson.UnmarshalFeatureCollection(b)
	if err != nil {
		t.Fatal(err)
	}
	byCode := map[string]*geojson.Feature{}
	for _, f := range got.Features {
		byCode[f.Properties.MustString("code")] = f
	}
	for code, want := range map[string]string{"V9": "观音岩村委会", "G91": "亚拉坡九公里", "G92": "石旮旯"} {
		f := byCode[code]
		if f == nil {
			t.Fatalf("place %s missing from export", code)
		}
		if f.Properties.MustString("name") != want {
			t.Errorf("%s name = %q, want %q", code, f.Properties.MustString("name"), want)
		}
	}
	if g := byCode["G91"].Geometry; g == nil || g.GeoJSONType() != "MultiPolygon" {
		t.Errorf("G91 geometry = %v", g)
	}
	if byCode["G92"].Geometry != nil {
		t.Errorf("G92 should have no boundary")
	}
	if byCode["G91"].Properties.MustString("parent_code") != "V9" {
		t.Errorf("parent lost")
	}
	// Export → import of the whole collection is a fixed point.
	before := placeCount(t, env)
	call{method: "POST", path: "/api/v1/places/import", token: env.AdminToken, body: string(b), status: 200}.run(t, env)
	b2 := call{method: "GET", path: "/api/v1/places", token: env.AdminToken, status: 200}.run(t, env)
	if placeCount(t, env) != before {
		t.Errorf("re-import changed the place count")
	}
	if !bytes.Equal(b, b2) {
		t.Errorf("export differs after re-importing the export")
	}
}

func TestPlaces_BadGeometryRejected(t *testing.T) {
	env := servertest.Start(t)
	before := placeCount(t, env)
	feature := func(geom string) string {
		return `{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"code":"VX","name":"坏村","level":"village","parent_code":"T1"},"geometry":` + geom + `}]}`
	}
	cases := []call{
		{name: "unclosed ring", body: feature(`{"type":"Polygon","coordinates":[[[103.5,25.3],[103.6,25.3],[103.6,25.4],[103.5,25.4]]]}`), status: 422, code: syncproto.CodeInvalidGeometry},
		{name: "longitude out of range", body: feature(`{"type":"Polygon","coordinates":[[[183.5,25.3],[103.6,25.3],[103.6,25.4],[183.5,25.3]]]}`), status: 422, code: syncproto.CodeInvalidGeometry},
		{name: "latitude out of range", body: feature(`{"type":"Polygon","coordinates":[[[103.5,95.3],[103.6,25.3],[103.6,25.4],[103.5,95.3]]]}`), status: 422, code: syncproto.CodeInvalidGeometry},
		{name: "self-intersecting bowtie", body: feature(`{"type":"Polygon","coordinates":[[[0,0],[1,1],[1,0],[0,1],[0,0]]]}`), status: 422, code: syncproto.CodeInvalidGeometry},
		{name: "too few positions", body: feature(`{"type":"Polygon","coordinates":[[[0,0],[1,1],[0,0]]]}`), status: 422, code: syncproto.CodeInvalidGeometry},
		{name: "not a polygon", body: feature(`{"type":"Point","coordinates":[103.5,25.3]}`), status: 422, code: syncproto.CodeInvalidGeometry},
		{name: "number overflow", body: feature(`{"type":"Polygon","coordinates":[[[1e400,25.3],[103.6,25.3],[103.6,25.4],[1e400,25.3]]]}`), status: 422, code: syncproto.CodeInvalidGeometry},
		{name: "malformed JSON", body: `{"type":"FeatureCollection","features":[`, status: 400, code: syncproto.CodeInvalidJSON},
		{name: "not a feature collection", body: `{"type":"Feature"}`, status: 400, code: syncproto.CodeBadRequest},
		{name: "unknown parent", body: `{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"code":"VY","name":"x","level":"village","parent_code":"NOPE"},"geometry":null}]}`, status: 404, code: syncproto.CodeNotFound},
		{name: "wrong level under parent", body: `{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"code":"VY","name":"x","level":"group","parent_code":"T1"},"geometry":null}]}`, status: 422, code: syncproto.CodeValidation},
		{name: "path-like code", body: `{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"code":"../etc","name":"x","level":"village","parent_code":"T1"},"geometry":null}]}`, status: 422, code: syncproto.CodeValidation},
	}
	for i := range cases {
		cases[i].method, cases[i].path, cases[i].token = "POST", "/api/v1/places/import", env.AdminToken
	}
	runCalls(t, env, cases)
	// One good place and one bad in the same import: nothing is stored.
	mixed := `{"type":"FeatureCollection","features":[
	  {"type":"Feature","properties":{"code":"VOK","name":"好村","level":"village","parent_code":"T1"},"geometry":null},
	  {"type":"Feature","properties":{"code":"VBAD","name":"坏村","level":"village","parent_code":"T1"},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,1],[1,0],[0,1],[0,0]]]}}]}`
	call{method: "POST", path: "/api/v1/places/import", token: env.AdminToken, body: mixed, status: 422, code: syncproto.CodeInvalidGeometry}.run(t, env)
	if n := placeCount(t, env); n != before {
		t.Fatalf("places = %d after rejected imports, want %d", n, before)
	}
}

func TestUsersAndDevices_EnrollmentLifecycle(t *testing.T) {
	clk := &clock{t: time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)}
	env := servertest.StartWith(t, servertest.Options{Store: sqlstore.Config{Now: clk.Now}, API: api.Config{Now: clk.Now}})
	admin := env.AdminToken
	var u domain.User
	b := call{method: "POST", path: "/api/v1/users", token: admin, status: 201,
		body: `{"username":"wangge_li","display_name":"李网格员","role":"field_worker","password":"field-pass-1","place_codes":["V1"]}`}.run(t, env)
	json.Unmarshal(b, &u)
	if u.ID == 0 || u.Role != domain.RoleFieldWorker || len(u.PlaceCodes) != 1 || u.DisplayName != "李网格员" {
		t.Fatalf("created user = %+v", u)
	}
	if strings.Contains(string(b), "password") {
		t.Fatalf("user JSON leaks password: %s", b)
	}
	uid := jsonNum(u.ID)
	runCalls(t, env, []call{
		{name: "duplicate username", method: "POST", path: "/api/v1/users", token: admin, status: 409, code: syncproto.CodeConflict, body: `{"username":"wangge_li","role":"field_worker"}`},
		{name: "bad role", method: "POST", path: "/api/v1/users", token: admin, status: 422, code: syncproto.CodeValidation, body: `{"username":"x1","role":"king"}`},
		{name: "unknown place", method: "POST", path: "/api/v1/users", token: admin, status: 404, code: syncproto.CodeNotFound, body: `{"username":"x2","role":"field_worker","place_codes":["NOPE"]}`},
		{name: "short password", method: "POST", path: "/api/v1/users", token: admin, status: 422, code: syncproto.CodeValidation, body: `{"username":"x3","role":"field_worker","password":"short"}`},
	})
	issue := func() api.EnrollmentCode {
		var ec api.EnrollmentCode
		b := call{method: "POST", path: "/api/v1/users/" + uid + "/enrollment-codes", token: admin, status: 201}.run(t, env)
		json.Unmarshal(b, &ec)
		if len(ec.Code) < 12 || !strings.Contains(ec.QRPayload, "/app/#/enroll?code=") || !strings.Contains(ec.QRPayload, ec.Code) {
			t.Fatalf("enrollment code = %+v", ec)
		}
		return ec
	}
	ec := issue()
	var er api.EnrollResponse
	// Typed codes are forgiving about case and dashes.
	typed := strings.ToLower(strings.ReplaceAll(ec.Code, "-", " "))
	b = call{method: "POST", path: "/api/v1/devices/enroll", body: `{"code":"` + typed + `","name":"tablet-1"}`, status: 201}.run(t, env)
	json.Unmarshal(b, &er)
	if !syncproto.ValidID(er.DeviceID) || len(er.Token) < 22 || er.User.Username != "wangge_li" {
		t.Fatalf("enroll = %+v", er)
	}
	runCalls(t, env, []call{
		{name: "code is single use", method: "POST", path: "/api/v1/devices/enroll", body: `{"code":"` + ec.Code + `"}`, status: 410, code: syncproto.CodeGone},
		{name: "unknown code", method: "POST", path: "/api/v1/devices/enroll", body: `{"code":"AAAA-BBBB-CCCC"}`, status: 401, code: syncproto.CodeUnauthorized},
		{name: "device token works", method: "GET", path: "/api/v1/device", token: er.Token, status: 200, check: func(t *testing.T, b []byte) {
			if !strings.Contains(string(b), er.DeviceID) {
				t.Errorf("device self = %s", b)
			}
		}},
		{name: "device token is not a session", method: "GET", path: "/api/v1/me", token: er.Token, status: 401, code: syncproto.CodeUnauthorized},
		{name: "session is not a device token", method: "GET", path: "/api/v1/device", token: admin, status: 401, code: syncproto.CodeUnauthorized},
		{name: "revoke", method: "POST", path: "/api/v1/devices/" + er.DeviceID + "/revoke", token: admin, status: 204},
		{name: "revoked token gets 401 at once", method: "GET", path: "/api/v1/device", token: er.Token, status: 401, code: syncproto.CodeUnauthorized},
		{name: "revoked token cannot pull", method: "POST", path: "/api/v1/sync/pull", token: er.Token, body: `{"protocol_version":1,"device_id":"` + er.DeviceID + `"}`, status: 401, code: syncproto.CodeUnauthorized},
	})
	// Expiry: a code older than its TTL is refused.
	ec2 := issue()
	clk.Add(16 * time.Minute)
	call{method: "POST", path: "/api/v1/devices/enroll", body: `{"code":"` + ec2.Code + `"}`, status: 410, code: syncproto.CodeGone}.run(t, env)
	// Tokens are stored only as hashes.
	var n int
	if err := env.Store.DB().QueryRow(`SELECT count(*) FROM devices WHERE token_hash = ?`, er.Token).Scan(&n); err != nil || n != 0 {
		t.Fatalf("raw token found in the database")
	}
}

// TestEnroll_AskAgainWithItsToken: a device that chose its token and lost
// the answer asks again with the same code and token and is answered with
// the same device (200); a spent code with any other token, or none, stays
// spent; a revoked device cannot come back this way. Tokens of every
// length from too short to too long, and of wrong characters, are checked.
func TestEnroll_AskAgainWithItsToken(t *testing.T) {
	env := servertest.Start(t)
	admin := env.AdminToken
	var u domain.User
	json.Unmarshal(call{method: "POST", path: "/api/v1/users", token: admin, status: 201,
		body: `{"username":"wangge_zhao","role":"field_worker","place_codes":["V1"]}`}.run(t, env), &u)
	issue := func() string {
		var ec api.EnrollmentCode
		json.Unmarshal(call{method: "POST", path: "/api/v1/users/" + jsonNum(u.ID) + "/enrollment-codes", token: admin, status: 201}.run(t, env), &ec)
		return ec.Code
	}
	enroll := func(code, token string, status int, want syncproto.Code) api.EnrollResponse {
		t.Helper()
		var er api.EnrollResponse
		body, _ := json.Marshal(map[string]string{"code": code, "name": "平板", "token": token})
		json.Unmarshal(call{method: "POST", path: "/api/v1/devices/enroll", body: string(body), status: status, code: want}.run(t, env), &er)
		return er
	}
	devices := func() int {
		var n int
		if err := env.Store.DB().QueryRow(`SELECT count(*) FROM devices`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	for _, n := range []int{32, 43, 64, 128} {
		code, tok := issue(), strings.Repeat("aZ9-_", 26)[:n]
		before := devices()
		first := enroll(code, tok, 201, "")
		if !syncproto.ValidID(first.DeviceID) || first.Token != tok || first.User.Username != "wangge_zhao" {
			t.Fatalf("token of %d characters: enroll = %+v", n, first)
		}
		for range 2 {
			again := enroll(code, tok, 200, "")
			if again.DeviceID != first.DeviceID || again.Token != tok {
				t.Errorf("token of %d characters, asked again: %+v, want device %s", n, again, first.DeviceID)
			}
		}
		enroll(code, tok[:n-1]+"x", 410, syncproto.CodeGone)
		enroll(code, "", 410, syncproto.CodeGone)
		if got := devices(); got != before+1 {
			t.Errorf("token of %d characters: %d devices enrolled, want 1", n, got-before)
		}
		call{method: "GET", path: "/api/v1/device", token: tok, status: 200}.run(t, env)
		// Revoked: the code and token no longer bring it back.
		call{method: "POST", path: "/api/v1/devices/" + first.DeviceID + "/revoke", token: admin, status: 204}.run(t, env)
		enroll(code, tok, 410, syncproto.CodeGone)
		call{method: "GET", path: "/api/v1/device", token: tok, status: 401, code: syncproto.CodeUnauthorized}.run(t, env)
	}

	// A token another device holds: refused, the code stays unspent.
	held := strings.Repeat("H", 43)
	enroll(issue(), held, 201, "")
	code := issue()
	enroll(code, held, 409, syncproto.CodeConflict)
	if er := enroll(code, strings.Repeat("J", 43), 201, ""); er.Token != strings.Repeat("J", 43) {
		t.Errorf("enroll after a refused token: %+v", er)
	}

	// Tokens the server refuses; the code stays unspent.
	code = issue()
	before := devices()
	for _, bad := range []string{"x", strings.Repeat("a", 31), strings.Repeat("a", 129), strings.Repeat("a", 40) + "+/",
		strings.Repeat("a", 40) + "=", strings.Repeat("a", 40) + " ", strings.Repeat("网", 16)} {
		enroll(code, bad, 422, syncproto.CodeValidation)
	}
	if got := devices(); got != before {
		t.Errorf("refused tokens enrolled %d devices", got-before)
	}
	// Without a token the server makes one.
	if er := enroll(code, "", 201, ""); len(er.Token) < 32 || !syncproto.ValidID(er.DeviceID) {
		t.Errorf("enroll without a token: %+v", er)
	}
}

func jsonNum(i int64) string { b, _ := json.Marshal(i); return string(b) }

func TestRoles_FieldWorkerCannotCallAdminEndpoints(t *testing.T) {
	env := servertest.Start(t)
	env.CreateUserWithPassword(t, "worker", domain.RoleFieldWorker, "worker-pass-1", "G11")
	sup := env.CreateUserWithPassword(t, "sup", domain.RoleSupervisor, "sup-pass-12", "V1")
	w := login(t, env, "worker", "worker-pass-1")
	s := login(t, env, "sup", "sup-pass-12")
	form := `{"id":"x_form","title":"测试","fields":[{"name":"a","type":"text","label":"甲"}]}`
	cases := []call{
		{name: "worker create user", method: "POST", path: "/api/v1/users", token: w, body: `{"username":"z","role":"admin"}`, status: 403, code: syncproto.CodeForbidden},
		{name: "worker list users", method: "GET", path: "/api/v1/users", token: w, status: 403, code: syncproto.CodeForbidden},
		{name: "worker import places", method: "POST", path: "/api/v1/places/import", token: w, body: `{"type":"FeatureCollection","features":[]}`, status: 403, code: syncproto.CodeForbidden},
		{name: "worker publish form", method: "POST", path: "/api/v1/forms", token: w, body: form, status: 403, code: syncproto.CodeForbidden},
		{name: "worker list devices", method: "GET", path: "/api/v1/devices", token: w, status: 403, code: syncproto.CodeForbidden},
		{name: "worker issue code", method: "POST", path: "/api/v1/users/1/enrollment-codes", token: w, status: 403, code: syncproto.CodeForbidden},
		{name: "worker reads own places", method: "GET", path: "/api/v1/places/G11", token: w, status: 200},
		{name: "worker cannot read other place", method: "GET", path: "/api/v1/places/G21", token: w, status: 404, code: syncproto.CodeNotFound},
		{name: "supervisor lists users", method: "GET", path: "/api/v1/users", token: s, status: 200},
		{name: "supervisor cannot create users", method: "POST", path: "/api/v1/users", token: s, body: `{"username":"z","role":"admin"}`, status: 403, code: syncproto.CodeForbidden},
		{name: "supervisor sees own subtree", method: "GET", path: "/api/v1/places/G12", token: s, status: 200},
		{name: "supervisor cannot see V2", method: "GET", path: "/api/v1/places/V2", token: s, status: 404, code: syncproto.CodeNotFound},
		{name: "supervisor cannot see user outside", method: "GET", path: "/api/v1/users/1", token: s, status: 404, code: syncproto.CodeNotFound},
		{name: "supervisor sees self", method: "GET", path: "/api/v1/users/" + jsonNum(sup.ID), token: s, status: 200},
		{name: "no token", method: "GET", path: "/api/v1/me", status: 401, code: syncproto.CodeUnauthorized},
		{name: "garbage token", method: "GET", path: "/api/v1/me", token: "nope", status: 401, code: syncproto.CodeUnauthorized},
	}
	runCalls(t, env, cases)
}

func TestSession_CookieWritesNeedCSRF(t *testing.T) {
	env := servertest.Start(t)
	req, _ := http.NewRequest("POST", env.URL+"/api/v1/auth/login", strings.NewReader(`{"username":"admin","password":"`+servertest.AdminPassword+`"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var lr struct {
		CSRFToken string `json:"csrf_token"`
	}
	json.NewDecoder(resp.Body).Decode(&lr)
	resp.Body.Close()
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == api.SessionCookie {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteLaxMode {
		t.Fatalf("session cookie = %+v", cookie)
	}
	ck := map[string]string{"Cookie": api.SessionCookie + "=" + cookie.Value}
	withCSRF := map[string]string{"Cookie": ck["Cookie"], api.CSRFHeader: lr.CSRFToken}
	wrongCSRF := map[string]string{"Cookie": ck["Cookie"], api.CSRFHeader: "forged"}
	body := `{"username":"made_by_cookie","role":"field_worker"}`
	runCalls(t, env, []call{
		{name: "cookie read needs no CSRF", method: "GET", path: "/api/v1/me", headers: ck, status: 200},
		{name: "cookie write without CSRF refused", method: "POST", path: "/api/v1/users", headers: ck, body: body, status: 403, code: syncproto.CodeForbidden},
		{name: "cookie write with wrong CSRF refused", method: "POST", path: "/api/v1/users", headers: wrongCSRF, body: body, status: 403, code: syncproto.CodeForbidden},
		{name: "cookie write with CSRF allowed", method: "POST", path: "/api/v1/users", headers: withCSRF, body: body, status: 201},
		{name: "logout", method: "POST", path: "/api/v1/auth/logout", headers: withCSRF, status: 204},
		{name: "session ended", method: "GET", path: "/api/v1/me", headers: ck, status: 401, code: syncproto.CodeUnauthorized},
	})
}

func TestForms_PublishAndVersioning(t *testing.T) {
	env := servertest.Start(t)
	admin := env.AdminToken
	v1 := `{"id":"fire_safety","title":"消防安全检查","fields":[{"name":"extinguisher","type":"select_one","label":"灭火器","required":true,"choices":[{"value":"yes","label":"有"},{"value":"no","label":"无"}]}]}`
	v2 := `{"id":"fire_safety","title":"消防安全检查","fields":[{"name":"extinguisher","type":"select_one","label":"灭火器","required":true,"choices":[{"value":"yes","label":"有"},{"value":"no","label":"无"}]},{"name":"exits","type":"integer","label":"安全出口","min":0,"max":10}]}`
	version := func(b []byte) int {
		var f syncproto.FormDef
		json.Unmarshal(b, &f)
		return f.Version
	}
	if v := version(call{method: "POST", path: "/api/v1/forms", token: admin, body: v1, status: 201}.run(t, env)); v != 1 {
		t.Fatalf("first publish version = %d", v)
	}
	if v := version(call{method: "POST", path: "/api/v1/forms", token: admin, body: v2, status: 201}.run(t, env)); v != 2 {
		t.Fatalf("second publish version = %d", v)
	}
	b := call{method: "GET", path: "/api/v1/forms/fire_safety/versions/1", token: admin, status: 200}.run(t, env)
	var old syncproto.FormDef
	json.Unmarshal(b, &old)
	if len(old.Fields) != 1 || old.Title != "消防安全检查" {
		t.Fatalf("version 1 changed: %+v", old)
	}
	// The store refuses to rewrite a published version.
	if _, err := env.Store.DB().Exec(`UPDATE forms SET title = 'x' WHERE id = 'fire_safety'`); err == nil {
		t.Fatalf("read-only handle allowed a write")
	}
	runCalls(t, env, []call{
		{name: "latest only", method: "GET", path: "/api/v1/forms?latest=1", token: admin, status: 200, check: func(t *testing.T, b []byte) {
			var fs []syncproto.FormDef
			json.Unmarshal(b, &fs)
			for _, f := range fs {
				if f.ID == "fire_safety" && f.Version != 2 {
					t.Errorf("latest fire_safety = %d", f.Version)
				}
			}
		}},
		{name: "bad definition", method: "POST", path: "/api/v1/forms", token: admin, body: `{"id":"Bad Id","title":"x","fields":[]}`, status: 422, code: syncproto.CodeValidation},
		{name: "missing version", method: "GET", path: "/api/v1/forms/fire_safety/versions/9", token: admin, status: 404, code: syncproto.CodeNotFound},
		{name: "valid answers", method: "POST", path: "/api/v1/forms/fire_safety/versions/2/validate", token: admin, body: `{"extinguisher":"yes","exits":2}`, status: 200},
		{name: "invalid answers", method: "POST", path: "/api/v1/forms/fire_safety/versions/2/validate", token: admin, body: `{"extinguisher":"maybe","exits":2.5}`, status: 422, code: syncproto.CodeValidation, check: func(t *testing.T, b []byte) {
			var e syncproto.Error
			json.Unmarshal(b, &e)
			if len(e.Fields) != 2 || e.Fields[0].Field != "exits" || e.Fields[1].Field != "extinguisher" {
				t.Errorf("field errors = %+v", e.Fields)
			} else if e.Fields[0].Code != syncproto.FieldCodeNotInteger || e.Fields[1].Code != syncproto.FieldCodeUnknownChoice {
				t.Errorf("field error codes = %+v", e.Fields) // the app maps these to Chinese
			}
		}},
		{name: "v1 has no exits field", method: "POST", path: "/api/v1/forms/fire_safety/versions/1/validate", token: admin, body: `{"extinguisher":"yes","exits":2}`, status: 422, code: syncproto.CodeValidation},
	})
}

func TestOpenAPI_EveryRouteDocumented(t *testing.T) {
	env := servertest.Start(t)
	b := call{method: "GET", path: "/openapi.json", status: 200}.run(t, env)
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi doc: %v %s", err, b[:min(200, len(b))])
	}
	n := 0
	for _, r := range env.API.Echo().Routes() {
		if strings.HasSuffix(r.Path, "/*") {
			continue // echo's automatic 404/405 catch-alls
		}
		p := r.Path
		for _, part := range strings.Split(p, "/") {
			if strings.HasPrefix(part, ":") {
				p = strings.Replace(p, part, "{"+part[1:]+"}", 1)
			}
		}
		if _, ok := doc.Paths[p][strings.ToLower(r.Method)]; !ok {
			t.Errorf("route %s %s is not in /openapi.json", r.Method, r.Path)
		}
		n++
	}
	if n < 20 {
		t.Fatalf("only %d routes checked", n)
	}
}

func TestHTTP_GzipAndErrors(t *testing.T) {
	env := servertest.Start(t)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(`{"username":"admin","password":"` + servertest.AdminPassword + `"}`))
	zw.Close()
	req, _ := http.NewRequest("POST", env.URL+"/api/v1/auth/login", &buf)
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("gzip login = %d", resp.StatusCode)
	}
	// Large responses are gzip-compressed when asked for.
	req, _ = http.NewRequest("GET", env.URL+"/openapi.json", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err = http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Errorf("openapi not gzipped")
	}
	runCalls(t, env, []call{
		{name: "unknown route", method: "GET", path: "/api/v1/nope", status: 404, code: syncproto.CodeNotFound},
		{name: "malformed JSON", method: "POST", path: "/api/v1/auth/login", body: `{"username":`, status: 400, code: syncproto.CodeInvalidJSON},
		{name: "request id echoed", method: "GET", path: "/healthz", status: 200, headers: map[string]string{"X-Request-Id": "abc123"}},
		{name: "metrics", method: "GET", path: "/metrics", status: 200, check: func(t *testing.T, b []byte) {
			if !strings.Contains(string(b), "fieldsync_http_requests_total") {
				t.Errorf("metrics missing request counter")
			}
		}},
	})
}
