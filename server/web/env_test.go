package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"fieldsync/server/api"
	"fieldsync/server/blob/localblob"
	"fieldsync/server/demo"
	"fieldsync/server/export/exporttest"
	"fieldsync/server/web"
	"fieldsync/syncproto"
)

var bg = context.Background()

// env is the demo county behind the real API server with the console
// mounted, on an httptest server.
type env struct {
	*exporttest.Env
	URL        string
	API        *api.Server
	AdminToken string
}

type envOpts struct {
	loginRate int
	tileURL   string
}

func start(t *testing.T, o ...envOpts) *env {
	t.Helper()
	ex := exporttest.Demo(t)
	blobs, err := localblob.New(filepath.Join(ex.Dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := api.New(api.Config{Store: ex.Store, Logger: quiet, Blobs: blobs, UploadDir: filepath.Join(ex.Dir, "uploads"),
		LoginRate: 1000, EnrollRate: 1000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	rate, tiles := 1000, ""
	if len(o) > 0 {
		if o[0].loginRate > 0 {
			rate = o[0].loginRate
		}
		tiles = o[0].tileURL
	}
	shanghai, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := web.Mount(srv, web.Config{Store: ex.Store, Logger: quiet, LoginRate: rate, TileURL: tiles, Location: shanghai}); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	tok, err := srv.Login(bg, "admin", demo.DemoPassword)
	if err != nil {
		t.Fatal(err)
	}
	return &env{Env: ex, URL: hs.URL, API: srv, AdminToken: tok.Token}
}

// apiGET calls the JSON API with a bearer token.
func (e *env) apiGET(t *testing.T, token, path string, v any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", e.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		json.NewDecoder(resp.Body).Decode(v)
	}
	return resp.StatusCode
}

// enrollDevice enrolls a device for a user through the API.
func (e *env) enrollDevice(t *testing.T, username, name string) (id, token string) {
	t.Helper()
	ec, err := e.API.IssueEnrollmentCode(bg, e.UserID(t, username), 0)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(e.URL+"/api/v1/devices/enroll", "application/json", strings.NewReader(`{"code":"`+ec.Code+`","name":"`+name+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var er api.EnrollResponse
	if err := json.NewDecoder(resp.Body).Decode(&er); err != nil || resp.StatusCode != 201 {
		t.Fatalf("enroll: %d %v", resp.StatusCode, err)
	}
	return er.DeviceID, er.Token
}

// addOtherTownship puts a household with a submitted visit in the demo's
// second township (outside zhen_supervisor's places).
func (e *env) addOtherTownship(t *testing.T) (householdID, visitID string) {
	t.Helper()
	householdID = "01J00000000000000000000777"
	if err := e.Store.ImportHouseholds(bg, []syncproto.Household{{ID: householdID, PlaceCode: demo.OtherVillageCode + "001",
		Fields: map[string]json.RawMessage{"head_name": json.RawMessage(`"龙潭乡户主"`), "location": json.RawMessage(`{"lon":103.8,"lat":25.01}`),
			"id_card_no": json.RawMessage(`"` + exporttest.IDCard(42) + `"`)}}}, 0); err != nil {
		t.Fatal(err)
	}
	hs := e.Households(t, demo.OtherVillageCode)
	e.BulkVisits(t, hs, 1, e.UserID(t, "wangge_zhao"), mustTime("2026-01-05T03:00:00Z"))
	ids := e.VisitIDs(t, "v.household_id = ?", householdID)
	return householdID, ids[0]
}

// client is a cookie-keeping browser stand-in for plain HTTP tests.
type client struct {
	t    *testing.T
	e    *env
	http *http.Client
	csrf string
}

func (e *env) client(t *testing.T) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: t, e: e, http: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

var csrfInput = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (c *client) get(path string) (int, string) {
	c.t.Helper()
	resp, err := c.http.Get(c.e.URL + path)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if m := csrfInput.FindStringSubmatch(string(b)); m != nil {
		c.csrf = m[1]
	}
	return resp.StatusCode, string(b)
}

func (c *client) post(path string, form url.Values, hdr ...string) (int, string) {
	c.t.Helper()
	req, _ := http.NewRequest("POST", c.e.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b) + resp.Header.Get("Location")
}

// login signs in through the console's form and returns the status.
func (c *client) login(user, pw string) int {
	c.t.Helper()
	c.get("/console/login")
	status, _ := c.post("/console/login", url.Values{"csrf": {c.csrf}, "username": {user}, "password": {pw}, "next": {"/console/overview"}})
	if status == http.StatusSeeOther {
		c.get("/console/overview") // picks up the session's CSRF token
	}
	return status
}

// multipartBody builds a multipart/form-data body.
type multipartBody struct{ w *multipart.Writer }

func newMultipart(buf *bytes.Buffer) *multipartBody {
	return &multipartBody{w: multipart.NewWriter(buf)}
}

func (m *multipartBody) field(k, v string) { m.w.WriteField(k, v) }

func (m *multipartBody) file(field, name string, data []byte) {
	fw, _ := m.w.CreateFormFile(field, name)
	fw.Write(data)
}

func (m *multipartBody) close()              { m.w.Close() }
func (m *multipartBody) contentType() string { return m.w.FormDataContentType() }
