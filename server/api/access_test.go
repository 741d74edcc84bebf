package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fieldsync/server/api"
	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/server/sqlstore"
	"fieldsync/syncproto"
)

// TestAccessMatrix is generated over roles × places × endpoints: who may
// read and write what, checked cell by cell against one rule.
func TestAccessMatrix(t *testing.T) {
	clk := &clock{t: time.Now()}
	env := servertest.StartWith(t, servertest.Options{Store: sqlstore.Config{Now: clk.Now}, API: api.Config{Now: clk.Now, SessionTTL: time.Hour}})
	ctx := context.Background()
	hh := map[string]string{"V1": "01JDZX5Q7R8S9T0V1W2X3Y4Z51", "V2": "01JDZX5Q7R8S9T0V1W2X3Y4Z52"}
	env.AddHouseholds(t,
		syncproto.Household{ID: hh["V1"], PlaceCode: "G11", Fields: map[string]json.RawMessage{"head_name": json.RawMessage(`"一"`)}},
		syncproto.Household{ID: hh["V2"], PlaceCode: "G21", Fields: map[string]json.RawMessage{"head_name": json.RawMessage(`"二"`)}})
	type who struct {
		name   string
		role   domain.Role
		places []string
		token  string
		device bool
		user   domain.User
	}
	people := []*who{
		{name: "admin", role: domain.RoleAdmin},
		{name: "sup_t1", role: domain.RoleSupervisor, places: []string{"T1"}},
		{name: "sup_v1", role: domain.RoleSupervisor, places: []string{"V1"}},
		{name: "sup_v2", role: domain.RoleSupervisor, places: []string{"V2"}},
		{name: "worker_v1", role: domain.RoleFieldWorker, places: []string{"V1"}},
		{name: "worker_v2", role: domain.RoleFieldWorker, places: []string{"V2"}},
	}
	for _, p := range people {
		if p.name == "admin" {
			p.token = env.AdminToken
			p.user, _ = env.Store.UserByName(ctx, "admin")
			continue
		}
		p.user = env.CreateUserWithPassword(t, p.name, p.role, p.name+"-password", p.places...)
		p.token = login(t, env, p.name, p.name+"-password")
	}
	for _, name := range []string{"worker_v1", "worker_v2"} {
		var u *who
		for _, p := range people {
			if p.name == name {
				u = p
			}
		}
		_, tok := env.Device(t, u.user.ID)
		people = append(people, &who{name: "device_" + strings.TrimPrefix(name, "worker_"), role: u.role, places: u.places, token: tok, device: true, user: u.user})
	}
	people = append(people, &who{name: "anonymous"})
	// A visit in each village to review.
	visits := map[string]string{}
	for v, id := range hh {
		vid := syncproto.NewID(time.Now())
		visits[v] = vid
		if err := env.Store.ImportVisits(ctx, []sqlstore.ImportedVisit{{Visit: syncproto.Visit{ID: vid, HouseholdID: id, FormID: "water_cellar_progress", FormVersion: 1,
			Answers: waterAnswers(), DeviceTime: time.Now()}}}); err != nil {
			t.Fatal(err)
		}
	}
	sees := func(p *who, village string) bool {
		if p.role == domain.RoleAdmin {
			return true
		}
		for _, pl := range p.places {
			if pl == "T1" || pl == village {
				return true
			}
		}
		return false
	}
	type endpoint struct {
		method, path, body string
		// allowed returns the expected status for a caller and a village.
		want func(p *who, village string) int
	}
	session := func(ok func(p *who, v string) int) func(p *who, v string) int {
		return func(p *who, v string) int {
			if p.token == "" || p.device {
				return 401
			}
			return ok(p, v)
		}
	}
	anyUserPlace := session(func(p *who, v string) int {
		if sees(p, v) {
			return 200
		}
		return 404
	})
	supervisorPlace := session(func(p *who, v string) int {
		if p.role == domain.RoleFieldWorker {
			return 403
		}
		if sees(p, v) {
			return 200
		}
		return 404
	})
	adminOnly := session(func(p *who, v string) int {
		if p.role != domain.RoleAdmin {
			return 403
		}
		return 200
	})
	deviceOnly := func(p *who, v string) int {
		if !p.device {
			return 401
		}
		return 200
	}
	endpoints := []endpoint{
		{"GET", "/api/v1/places/G%s1", "", anyUserPlace},
		{"GET", "/api/v1/households?place=%s", "", anyUserPlace},
		{"GET", "/api/v1/households/{hh:%s}", "", anyUserPlace},
		{"GET", "/api/v1/households/{hh:%s}/audit", "", supervisorPlace},
		{"GET", "/api/v1/visits?place=%s", "", supervisorPlace},
		{"GET", "/api/v1/visits/{visit:%s}", "", anyUserPlace},
		{"GET", "/api/v1/visits/{visit:%s}/audit", "", supervisorPlace},
		{"GET", "/api/v1/conflicts?place=%s", "", supervisorPlace},
		{"GET", "/api/v1/users", "", session(func(p *who, v string) int {
			if p.role == domain.RoleFieldWorker {
				return 403
			}
			return 200
		})},
		{"GET", "/api/v1/devices", "", session(func(p *who, v string) int {
			if p.role == domain.RoleFieldWorker {
				return 403
			}
			return 200
		})},
		{"POST", "/api/v1/places/import", `{"type":"FeatureCollection","features":[]}`, adminOnly},
		{"POST", "/api/v1/forms/water_cellar_progress/versions/1/validate", `{}`, session(func(p *who, v string) int { return 422 })},
		{"GET", "/api/v1/me", "", session(func(p *who, v string) int { return 200 })},
		{"GET", "/api/v1/device", "", deviceOnly},
		{"POST", "/api/v1/visits/{visit:%s}/review", `{"action":"reject","reason":"矩阵测试"}`, session(func(p *who, v string) int {
			switch {
			case p.role == domain.RoleFieldWorker:
				return 403
			case !sees(p, v):
				return 404
			}
			return 200
		})},
	}
	cells := 0
	for _, ep := range endpoints {
		for _, village := range []string{"V1", "V2"} {
			path := ep.path
			switch {
			case strings.Contains(path, "{hh:%s}"):
				path = strings.Replace(path, "{hh:%s}", hh[village], 1)
			case strings.Contains(path, "{visit:%s}"):
				path = strings.Replace(path, "{visit:%s}", visits[village], 1)
			case strings.Contains(path, "G%s1"):
				path = strings.Replace(path, "G%s1", "G"+village[1:]+"1", 1)
			case strings.Contains(path, "%s"):
				path = fmt.Sprintf(path, village)
			}
			for _, p := range people {
				want := ep.want(p, village)
				cells++
				name := fmt.Sprintf("%s %s as %s", ep.method, path, p.name)
				req, _ := http.NewRequest(ep.method, env.URL+path, strings.NewReader(ep.body))
				if p.token != "" {
					req.Header.Set("Authorization", "Bearer "+p.token)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if strings.HasSuffix(ep.path, "/review") && want == 200 && resp.StatusCode == 409 {
					want = 409 // already rejected by an earlier allowed caller
				}
				if resp.StatusCode != want {
					t.Errorf("%s: %d, want %d", name, resp.StatusCode, want)
				}
			}
		}
	}
	// Devices: push only into their places, never pull outside them.
	for _, p := range people {
		if !p.device {
			continue
		}
		dev := sqlstore.PushDevice{DeviceID: deviceIDOf(t, env, p.token), UserID: p.user.ID}
		var ms []syncproto.Mutation
		for i, village := range []string{"V1", "V2"} {
			ms = append(ms, syncproto.Mutation{Seq: int64(i + 1), Kind: syncproto.KindHouseholdUpdate, HLC: syncproto.HLC{WallMs: time.Now().UnixMilli()},
				HouseholdUpdate: &syncproto.HouseholdUpdate{HouseholdID: hh[village], BaseVersion: 1, Fields: map[string]json.RawMessage{"notes": json.RawMessage(`"x"`)}}})
		}
		resp, err := env.Store.Push(ctx, dev, &syncproto.PushRequest{ProtocolVersion: 1, DeviceID: dev.DeviceID, Mutations: ms})
		if err != nil {
			t.Fatal(err)
		}
		for i, village := range []string{"V1", "V2"} {
			cells++
			own := sees(p, village)
			r := resp.Results[i]
			if own && r.Status != syncproto.StatusApplied || !own && r.Code != syncproto.CodeOutOfScope {
				t.Errorf("%s push into %s: %+v", p.name, village, r)
			}
		}
		cursor := ""
		for page := 0; page < 100; page++ {
			pr, err := env.Store.Pull(ctx, dev, &syncproto.PullRequest{ProtocolVersion: 1, DeviceID: dev.DeviceID, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			for _, op := range pr.Ops {
				if op.Household != nil && !sees(p, "V"+op.Household.PlaceCode[1:2]) {
					t.Errorf("%s pulled household %s of %s", p.name, op.Household.ID, op.Household.PlaceCode)
				}
				if op.Visit != nil && !sees(p, "V"+op.Visit.PlaceCode[1:2]) {
					t.Errorf("%s pulled visit of %s", p.name, op.Visit.PlaceCode)
				}
			}
			cursor = pr.Cursor
			if !pr.HasMore {
				break
			}
		}
		cells++
	}
	// Expired sessions are refused on the very next request.
	clk.Add(2 * time.Hour)
	for _, p := range people {
		if p.token == "" || p.device {
			continue
		}
		cells++
		call{method: "GET", path: "/api/v1/me", token: p.token, status: 401, code: syncproto.CodeUnauthorized}.run(t, env)
	}
	t.Logf("%d matrix cells", cells)
}

func deviceIDOf(t *testing.T, env *servertest.Env, token string) string {
	t.Helper()
	b := call{method: "GET", path: "/api/v1/device", token: token, status: 200}.run(t, env)
	var r struct {
		DeviceID string `json:"device_id"`
	}
	json.Unmarshal(b, &r)
	return r.DeviceID
}

// TestSecrets_StoredOnlyAsHashes reads the database files byte by byte:
// no token, enrollment code or password appears in them.
func TestSecrets_StoredOnlyAsHashes(t *testing.T) {
	servertest.SQLiteOnly(t) // it reads the database files; PostgreSQL keeps the same columns
	env := servertest.Start(t)
	u := env.CreateUserWithPassword(t, "secretive", domain.RoleFieldWorker, "correct horse battery", "V1")
	sess := login(t, env, "secretive", "correct horse battery")
	code := env.EnrollCode(t, u.ID)
	_, devTok := env.Device(t, u.ID)
	env.Store.FlushHealth(context.Background())
	var all []byte
	for _, suffix := range []string{"", "-wal"} {
		b, _ := os.ReadFile(filepath.Join(env.Dir, "fieldsync.db"+suffix))
		all = append(all, b...)
	}
	if len(all) < 4096 {
		t.Fatal("database files not found")
	}
	for name, secret := range map[string]string{"password": "correct horse battery", "session token": sess, "enrollment code": code,
		"normalized code": strings.ReplaceAll(code, "-", ""), "device token": devTok, "admin password": servertest.AdminPassword, "admin token": env.AdminToken} {
		if bytes.Contains(all, []byte(secret)) {
			t.Errorf("%s stored in clear", name)
		}
	}
	var hash string
	env.Store.DB().QueryRow(`SELECT password_hash FROM users WHERE username = 'secretive'`).Scan(&hash)
	if !strings.HasPrefix(hash, "$2") {
		t.Errorf("password hash %q is not bcrypt", hash)
	}
}

// TestRateLimits: login and enrollment attempts are limited per client
// and answered 429 with Retry-After.
func TestRateLimits(t *testing.T) {
	env := servertest.StartWith(t, servertest.Options{API: api.Config{LoginRate: 3, EnrollRate: 3}})
	for _, path := range []string{"/api/v1/auth/login", "/api/v1/devices/enroll"} {
		got429 := false
		for i := 0; i < 6; i++ {
			resp, err := http.Post(env.URL+path, "application/json", strings.NewReader(`{"username":"admin","password":"wrong","code":"nope"}`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode == 429 {
				got429 = true
				if resp.Header.Get("Retry-After") == "" {
					t.Errorf("%s: 429 without Retry-After", path)
				}
				break
			}
			if i >= 3 {
				t.Errorf("%s: attempt %d not limited (%d)", path, i+1, resp.StatusCode)
			}
		}
		if !got429 {
			t.Errorf("%s never rate limited", path)
		}
	}
}

// waterAnswers is a valid answer set for the water-cellar template.
func waterAnswers() map[string]json.RawMessage {
	return map[string]json.RawMessage{"site_name": json.RawMessage(`"塘子 1号水窖"`), "capacity_m3": json.RawMessage(`24`),
		"stage": json.RawMessage(`"planned"`), "due_date": json.RawMessage(`"2026-11-30"`)}
}
