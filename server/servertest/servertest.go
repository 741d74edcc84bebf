// Package servertest starts a real fieldsync server for tests: an
// httptest server over the real HTTP handler and a SQLite store in a temp
// dir, with a small place tree and the form templates published.
package servertest

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paulmach/orb"

	"fieldsync/server/api"
	"fieldsync/server/auth"
	"fieldsync/server/blob/localblob"
	"fieldsync/server/domain"
	"fieldsync/server/geo"
	"fieldsync/server/sqlstore"
	"fieldsync/syncproto"
)

// Env is a running test server.
type Env struct {
	URL    string
	Dir    string
	Store  *sqlstore.Store
	API    *api.Server
	Server *httptest.Server
	// AdminToken is a bearer token of the user "admin" (password
	// AdminPassword).
	AdminToken string
}

// AdminPassword is the test admin's password.
const AdminPassword = "admin-password"

// Options tweak Start.
type Options struct {
	// Store overrides store settings (Path is always set by Start).
	Store sqlstore.Config
	// API overrides API settings (Store is always set by Start).
	API api.Config
	// HTTPServer, if set, configures the http.Server before it starts
	// (timeouts).
	HTTPServer func(*http.Server)
	// Dir is the data folder (default a new temp dir). Starting on a
	// folder that already holds a database restarts the same server; a new
	// database is seeded with the fixture places, forms and admin.
	Dir string
}

// square returns a closed counter-clockwise square polygon.
func square(lon, lat, d float64) json.RawMessage {
	return geo.Marshal(orb.Polygon{{{lon, lat}, {lon + d, lat}, {lon + d, lat + d}, {lon, lat + d}, {lon, lat}}})
}

// Places is the fixture tree: C1 → T1 → V1 (G11, G12), V2 (G21).
func Places() []domain.Place {
	return []domain.Place{
		{Code: "C1", Name: "示范县", Level: "county", Boundary: square(103.0, 25.0, 1)},
		{Code: "T1", Name: "青山镇", Level: "township", ParentCode: "C1", Boundary: square(103.1, 25.1, 0.5)},
		{Code: "V1", Name: "石门村", Level: "village", ParentCode: "T1", Boundary: square(103.1, 25.1, 0.2)},
		{Code: "V2", Name: "白沙村", Level: "village", ParentCode: "T1", Boundary: square(103.35, 25.1, 0.2)},
		{Code: "G11", Name: "采山坪", Level: "group", ParentCode: "V1", Boundary: square(103.1, 25.1, 0.1)},
		{Code: "G12", Name: "杨家寨", Level: "group", ParentCode: "V1", Boundary: square(103.2, 25.1, 0.1)},
		{Code: "G21", Name: "马家寨", Level: "group", ParentCode: "V2", Boundary: square(103.35, 25.1, 0.1)},
	}
}

// Start runs a server until the test ends.
func Start(t testing.TB) *Env { return StartWith(t, Options{}) }

// StartWith runs a server with options until the test ends.
func StartWith(t testing.TB, o Options) *Env {
	t.Helper()
	ctx := context.Background()
	dir := o.Dir
	if dir == "" {
		dir = t.TempDir()
	}
	cfg := StoreConfig(t, dir, o.Store)
	st, err := sqlstore.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("servertest: open store: %v", err)
	}
	acfg := o.API
	acfg.Store = st
	if acfg.Blobs == nil {
		blobs, err := localblob.New(filepath.Join(dir, "blobs"))
		if err != nil {
			t.Fatalf("servertest: blobs: %v", err)
		}
		acfg.Blobs = blobs
	}
	if acfg.UploadDir == "" {
		acfg.UploadDir = filepath.Join(dir, "uploads")
	}
	if acfg.Logger == nil {
		acfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	// Tests log in and enroll far more often than people do.
	if acfg.LoginRate == 0 {
		acfg.LoginRate = 1000
	}
	if acfg.EnrollRate == 0 {
		acfg.EnrollRate = 1000
	}
	srv, err := api.New(acfg)
	if err != nil {
		t.Fatalf("servertest: api: %v", err)
	}
	hs := httptest.NewUnstartedServer(srv.Handler())
	if o.HTTPServer != nil {
		o.HTTPServer(hs.Config)
	}
	hs.Start()
	env := &Env{URL: hs.URL, Dir: dir, Store: st, API: srv, Server: hs}
	t.Cleanup(func() {
		hs.Close()
		srv.Close()
		st.Close()
	})
	if users, err := st.Users(ctx); err != nil {
		t.Fatalf("servertest: %v", err)
	} else if len(users) == 0 {
		env.seed(t)
	}
	tok, err := srv.Login(ctx, "admin", AdminPassword)
	if err != nil {
		t.Fatalf("servertest: admin login: %v", err)
	}
	env.AdminToken = tok.Token
	return env
}

func (e *Env) seed(t testing.TB) {
	ctx := context.Background()
	if err := e.Store.UpsertPlaces(ctx, Places()); err != nil {
		t.Fatalf("servertest: places: %v", err)
	}
	for _, f := range syncproto.Templates() {
		if _, err := e.Store.PublishForm(ctx, f, 0); err != nil {
			t.Fatalf("servertest: form %s: %v", f.ID, err)
		}
	}
	e.CreateUserWithPassword(t, "admin", domain.RoleAdmin, AdminPassword)
}

// CreateUser adds a user with places (and no password).
func (e *Env) CreateUser(t testing.TB, name string, role domain.Role, places ...string) domain.User {
	t.Helper()
	u, err := e.Store.CreateUser(context.Background(), domain.User{Username: name, DisplayName: name, Role: role, PlaceCodes: places})
	if err != nil {
		t.Fatalf("servertest: user %s: %v", name, err)
	}
	return u
}

// CreateUserWithPassword adds a user who can sign in.
func (e *Env) CreateUserWithPassword(t testing.TB, name string, role domain.Role, password string, places ...string) domain.User {
	t.Helper()
	h, err := auth.HashPassword(password)
	if err != nil {
		t.Fatal(err)
	}
	u, err := e.Store.CreateUser(context.Background(), domain.User{Username: name, DisplayName: name, Role: role, PlaceCodes: places, PasswordHash: h})
	if err != nil {
		t.Fatalf("servertest: user %s: %v", name, err)
	}
	return u
}

// EnrollCode issues a one-time enrollment code for a user.
func (e *Env) EnrollCode(t testing.TB, userID int64) string {
	t.Helper()
	ec, err := e.API.IssueEnrollmentCode(context.Background(), userID, 0)
	if err != nil {
		t.Fatalf("servertest: enrollment code: %v", err)
	}
	return ec.Code
}

// SetPlaces reassigns a user's places.
func (e *Env) SetPlaces(t testing.TB, userID int64, places ...string) {
	t.Helper()
	if err := e.Store.SetUserPlaces(context.Background(), userID, places); err != nil {
		t.Fatalf("servertest: set places: %v", err)
	}
}

// AddHouseholds imports households directly (as a register import would).
func (e *Env) AddHouseholds(t testing.TB, hs ...syncproto.Household) {
	t.Helper()
	if err := e.Store.ImportHouseholds(context.Background(), hs, 0); err != nil {
		t.Fatalf("servertest: households: %v", err)
	}
}

// Device enrolls a new device for a user through the HTTP API and returns
// its id and bearer token.
func (e *Env) Device(t testing.TB, userID int64) (deviceID, token string) {
	t.Helper()
	code := e.EnrollCode(t, userID)
	body := strings.NewReader(`{"code":"` + code + `","name":"test device"}`)
	resp, err := http.Post(e.URL+"/api/v1/devices/enroll", "application/json", body)
	if err != nil {
		t.Fatalf("servertest: enroll: %v", err)
	}
	defer resp.Body.Close()
	var er api.EnrollResponse
	if err := json.NewDecoder(resp.Body).Decode(&er); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("servertest: enroll: %d %v", resp.StatusCode, err)
	}
	return er.DeviceID, er.Token
}

// Stop shuts the server down (as a crash or an operator would) before the
// test ends; starting again on e.Dir brings it back.
func (e *Env) Stop() {
	e.Server.Close()
	e.API.Close()
	e.Store.Close()
}
