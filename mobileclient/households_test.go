package mobileclient

// Acceptance tests of issue 5 (households over time) on the device side:
// the merge matrix of DESIGN.md rule 6 through real devices and a real
// server, and a property test of random offline interleavings.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"pgregory.net/rapid"

	"fieldsync/server/api"
	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/server/sqlstore"
	"fieldsync/syncproto"
)

// mclock is a settable clock shared by the server and the devices, so
// that hybrid logical clocks are deterministic.
type mclock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *mclock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *mclock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// shifted is a device clock running off the shared clock by d.
func shifted(c *mclock, d time.Duration) func() time.Time {
	return func() time.Time { return c.Now().Add(d) }
}

// apiCall makes one JSON API call and checks the status.
func apiCall(t testing.TB, env *servertest.Env, method, path, token, body string, want int) []byte {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, env.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	return b
}

func apiLogin(t testing.TB, env *servertest.Env, user, pw string) string {
	t.Helper()
	b := apiCall(t, env, "POST", "/api/v1/auth/login", "", `{"username":"`+user+`","password":"`+pw+`"}`, 200)
	var r struct{ Token string }
	if err := json.Unmarshal(b, &r); err != nil || r.Token == "" {
		t.Fatalf("login %s: %s", user, b)
	}
	return r.Token
}

func deviceID(t testing.TB, c *Client) string {
	t.Helper()
	info, err := c.Info()
	if err != nil || info.DeviceID == "" {
		t.Fatalf("device info: %+v %v", info, err)
	}
	return info.DeviceID
}

func member(name string) json.RawMessage {
	b, _ := json.Marshal(syncproto.Member{Name: name})
	return b
}

// jsonOrNull compacts a raw value; absent and null are both "null".
func jsonOrNull(v json.RawMessage) string {
	if syncproto.IsNull(v) {
		return "null"
	}
	return compact(v)
}

// mxServer is the server the merge cases share: a settable clock, signed-in
// supervisors of V1 and V2 and a field worker. Each case gets its own
// household and two new devices.
type mxServer struct {
	env    *servertest.Env
	clk    *mclock
	sup    string // session of a supervisor of V1
	supV2  string // ... of a supervisor of V2
	worker string // ... of a field worker of V1
	n      int
}

const matrixMaxAhead = time.Minute

func newMxServer(t *testing.T) *mxServer {
	t.Helper()
	clk := &mclock{t: time.Now().UTC().Truncate(time.Second)}
	env := servertest.StartWith(t, servertest.Options{
		Store: sqlstore.Config{Now: clk.Now, MaxClockAhead: matrixMaxAhead},
		API:   api.Config{Now: clk.Now},
	})
	return &mxServer{env: env, clk: clk,
		sup:    signedIn(t, env, "sup_v1", domain.RoleSupervisor, "V1"),
		supV2:  signedIn(t, env, "sup_v2", domain.RoleSupervisor, "V2"),
		worker: signedIn(t, env, "worker_v1", domain.RoleFieldWorker, "V1"),
	}
}

// signedIn creates a user and signs in through the real login; the
// password hash has bcrypt's lowest cost to keep the tests quick.
func signedIn(t *testing.T, env *servertest.Env, name string, role domain.Role, places ...string) string {
	t.Helper()
	const pw = "households-pass-1"
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Store.CreateUser(context.Background(), domain.User{Username: name, DisplayName: name, Role: role, PlaceCodes: places, PasswordHash: string(h)}); err != nil {
		t.Fatal(err)
	}
	return apiLogin(t, env, name, pw)
}

// matrix is one merge case: two field workers' devices on V1 (each clock
// optionally skewed from the shared one) and one imported household.
type matrix struct {
	*mxServer
	a, b     *Client
	aID, bID string
	users    map[string]string // device id → username
	hh       string
	m1, m2   string // member ids of the imported household
}

func newMatrix(t *testing.T, s *mxServer, aSkew, bSkew time.Duration) *matrix {
	t.Helper()
	// Move past any HLC the server took from an earlier case's skewed
	// device, so that this case's clocks start from the wall clock.
	s.clk.Add(2 * matrixMaxAhead)
	s.n++
	env := s.env
	ua := env.CreateUser(t, fmt.Sprintf("worker_a%d", s.n), domain.RoleFieldWorker, "V1")
	ub := env.CreateUser(t, fmt.Sprintf("worker_b%d", s.n), domain.RoleFieldWorker, "V1")
	m := &matrix{mxServer: s, hh: newID(), m1: newID(), m2: newID()}
	env.AddHouseholds(t, syncproto.Household{ID: m.hh, PlaceCode: "G11", Fields: map[string]json.RawMessage{
		"head_name":               str("王建国"),
		"poverty_status":          str("lifted"),
		"notes":                   str("imported"),
		"phone":                   str("1300000"),
		"member." + m.m1:          member("王大"),
		"member." + m.m2:          member("王二"),
		"medical_insurance":       str("yes"),
		syncproto.FieldDibaoClass: str("none"),
	}})
	m.a = device(t, env, ua, &Options{Backoff: fastBackoff, Now: shifted(s.clk, aSkew)})
	m.b = device(t, env, ub, &Options{Backoff: fastBackoff, Now: shifted(s.clk, bSkew)})
	m.aID, m.bID = deviceID(t, m.a), deviceID(t, m.b)
	m.users = map[string]string{m.aID: ua.Username, m.bID: ub.Username}
	for name, c := range map[string]*Client{"a": m.a, "b": m.b} {
		if h := mustHousehold(t, c, m.hh); compact(h.Fields["notes"]) != `"imported"` {
			t.Fatalf("%s: first sync brought %s", name, fieldsJSON(h.Fields))
		}
	}
	s.clk.Add(time.Second) // the edits below happen after everything seen so far
	return m
}

func (m *matrix) edit(t *testing.T, c *Client, fields map[string]json.RawMessage) {
	t.Helper()
	if err := c.UpdateHousehold(m.hh, fields); err != nil {
		t.Fatal(err)
	}
}

// syncAll syncs the devices in order, then both again so each has seen
// the other's changes. It returns the reports of the first pass.
func (m *matrix) syncAll(t *testing.T, first, second *Client) (SyncReport, SyncReport) {
	t.Helper()
	r1 := mustSync(t, first)
	r2 := mustSync(t, second)
	mustSync(t, first)
	mustSync(t, second)
	return r1, r2
}

// server returns the server's copy of the household and whether it is
// deleted.
func (m *matrix) server(t *testing.T) (syncproto.Household, bool) {
	t.Helper()
	h, deleted, err := m.env.Store.Household(context.Background(), m.hh)
	if err != nil {
		t.Fatal(err)
	}
	return *h, deleted
}

// want checks one field on the server and on both devices.
func (m *matrix) want(t *testing.T, field, value string) {
	t.Helper()
	h, deleted := m.server(t)
	if deleted {
		t.Fatalf("household deleted on the server")
	}
	if got := jsonOrNull(h.Fields[field]); got != value {
		t.Errorf("server: %s = %s, want %s", field, got, value)
	}
	for name, c := range map[string]*Client{"a": m.a, "b": m.b} {
		if got := jsonOrNull(mustHousehold(t, c, m.hh).Fields[field]); got != value {
			t.Errorf("device %s: %s = %s, want %s", name, field, got, value)
		}
	}
}

// converged checks that both devices equal the server (households,
// visits, nothing pending) and hold the server's conflict records of the
// household with the same states.
func (m *matrix) converged(t *testing.T) {
	t.Helper()
	assertConverged(t, "a", m.a, m.env)
	assertConverged(t, "b", m.b, m.env)
	srv := m.serverConflicts(t)
	want := map[string]string{}
	for _, c := range srv {
		want[c.ID] = c.State + " " + jsonOrNull(c.LosingValue)
	}
	for name, c := range map[string]*Client{"a": m.a, "b": m.b} {
		got := map[string]string{}
		cs, err := c.Conflicts()
		if err != nil {
			t.Fatal(err)
		}
		for _, cf := range cs {
			if cf.HouseholdID == m.hh {
				got[cf.ID] = cf.State + " " + jsonOrNull(cf.LosingValue)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("device %s conflicts = %v, server %v", name, got, want)
		}
	}
}

func (m *matrix) serverConflicts(t *testing.T) []syncproto.Conflict {
	t.Helper()
	cs, err := m.env.Store.Conflicts(context.Background(), m.hh)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// loser checks that a conflict record keeps losing as the losing value of
// field, written by device dev, in the given state, on the server (store
// and GET /api/v1/conflicts) and on both devices. It returns the server's
// record.
func (m *matrix) loser(t *testing.T, field, losing, dev, state string) syncproto.Conflict {
	t.Helper()
	match := func(c syncproto.Conflict) bool {
		return c.HouseholdID == m.hh && c.Field == field && jsonOrNull(c.LosingValue) == losing
	}
	var found *syncproto.Conflict
	for _, c := range m.serverConflicts(t) {
		if match(c) {
			found = &c
			break
		}
	}
	if found == nil {
		t.Fatalf("server: no conflict record keeps %s = %s; have %+v", field, losing, m.serverConflicts(t))
	}
	if found.LosingDevice != dev || found.LosingUser != m.users[dev] {
		t.Errorf("conflict %s: losing device %q user %q, want %q %q", found.ID, found.LosingDevice, found.LosingUser, dev, m.users[dev])
	}
	if found.State != state {
		t.Errorf("conflict %s: state %q, want %q", found.ID, found.State, state)
	}
	if found.LosingHLC.IsZero() || found.CreatedAt.IsZero() {
		t.Errorf("conflict %s: no hlc or time: %+v", found.ID, found)
	}
	var listed []sqlstore.ConflictRow
	if err := json.Unmarshal(apiCall(t, m.env, "GET", "/api/v1/conflicts?place=V1", m.sup, "", 200), &listed); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(listed, func(r sqlstore.ConflictRow) bool { return r.ID == found.ID && match(r.Conflict) }) {
		t.Errorf("GET /api/v1/conflicts does not list %s", found.ID)
	}
	for name, c := range map[string]*Client{"a": m.a, "b": m.b} {
		cs, err := c.Conflicts()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(cs, func(c syncproto.Conflict) bool { return c.ID == found.ID && match(c) && c.State == found.State }) {
			t.Errorf("device %s does not hold conflict %s (%s = %s, %s): %+v", name, found.ID, field, losing, found.State, cs)
		}
	}
	return *found
}

func (m *matrix) noConflicts(t *testing.T) {
	t.Helper()
	if cs := m.serverConflicts(t); len(cs) != 0 {
		t.Errorf("server conflicts = %+v, want none", cs)
	}
	for name, c := range map[string]*Client{"a": m.a, "b": m.b} {
		cs, _ := c.Conflicts()
		for _, cf := range cs {
			if cf.HouseholdID == m.hh {
				t.Errorf("device %s has conflict %+v, want none", name, cf)
			}
		}
	}
}

// pushResult returns the server's stored answer to one device mutation.
func (m *matrix) pushResult(t *testing.T, dev string, seq int64) syncproto.MutationResult {
	t.Helper()
	var body string
	if err := m.env.Store.DB().QueryRow(`SELECT result FROM mutation_results WHERE device_id = ? AND seq = ?`, dev, seq).Scan(&body); err != nil {
		t.Fatalf("result %s/%d: %v", dev, seq, err)
	}
	var r syncproto.MutationResult
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// fieldHLC returns the HLC the server keeps for the last write of a field.
func (m *matrix) fieldHLC(t *testing.T, field string) syncproto.HLC {
	t.Helper()
	var meta string
	if err := m.env.Store.DB().QueryRow(`SELECT field_meta FROM households WHERE id = ?`, m.hh).Scan(&meta); err != nil {
		t.Fatal(err)
	}
	var fm map[string]struct {
		H syncproto.HLC `json:"h"`
	}
	if err := json.Unmarshal([]byte(meta), &fm); err != nil {
		t.Fatal(err)
	}
	return fm[field].H
}

func lastOutboxSeq(t *testing.T, c *Client) int64 {
	t.Helper()
	ob := outbox(t, c)
	if len(ob) == 0 {
		t.Fatal("outbox empty")
	}
	return ob[len(ob)-1].Seq
}

// TestHouseholds_MergeMatrix runs the merge cases of DESIGN.md rule 6
// through two real devices and the real server. Each case checks the
// final state on the server and on both devices, and that the losing
// value is retrievable (store, GET /api/v1/conflicts, both devices).
func TestHouseholds_MergeMatrix(t *testing.T) {
	s := newMxServer(t)
	for _, c := range []struct {
		name string
		run  func(*testing.T, *mxServer)
	}{
		{"disjoint fields", mergeDisjointFields},
		{"same plain field", mergeSamePlainField},
		{"sensitive field", mergeSensitiveField},
		{"members", mergeMembers},
		{"clock one day ahead", mergeClockOneDayAhead},
		{"clock one year behind", mergeClockOneYearBehind},
		{"delete against edit", mergeDeleteAgainstEdit},
	} {
		t.Run(c.name, func(t *testing.T) { c.run(t, s) })
	}
}

func mergeDisjointFields(t *testing.T, s *mxServer) {
	t.Run("move and edit", func(t *testing.T) {
		m := newMatrix(t, s, 0, 0)
		if err := m.a.MoveHousehold(m.hh, "G12"); err != nil {
			t.Fatal(err)
		}
		m.clk.Add(time.Second)
		m.edit(t, m.b, map[string]json.RawMessage{"notes": str("from b")})
		m.syncAll(t, m.b, m.a)
		if h, _ := m.server(t); h.PlaceCode != "G12" {
			t.Errorf("server place = %s", h.PlaceCode)
		}
		for name, c := range map[string]*Client{"a": m.a, "b": m.b} {
			if h := mustHousehold(t, c, m.hh); h.PlaceCode != "G12" {
				t.Errorf("device %s place = %s", name, h.PlaceCode)
			}
		}
		m.want(t, "notes", `"from b"`)
		m.noConflicts(t)
		m.converged(t)
	})
	for _, order := range []string{"a-first", "b-first"} {
		t.Run(order, func(t *testing.T) {
			m := newMatrix(t, s, 0, 0)
			m.edit(t, m.a, map[string]json.RawMessage{"phone": str("1391111"), "notes": str("from a")})
			m.clk.Add(time.Second)
			m.edit(t, m.b, map[string]json.RawMessage{"wubao": str("yes"), "head_name": str("王建国")})
			first, second := m.a, m.b
			if order == "b-first" {
				first, second = m.b, m.a
			}
			r1, r2 := m.syncAll(t, first, second)
			if r1.Conflicts+r2.Conflicts+r1.Rejected+r2.Rejected != 0 {
				t.Errorf("reports: %+v / %+v", r1, r2)
			}
			m.want(t, "phone", `"1391111"`)
			m.want(t, "notes", `"from a"`)
			m.want(t, "wubao", `"yes"`)
			m.want(t, "head_name", `"王建国"`) // sensitive, but changed on one side only
			m.want(t, "poverty_status", `"lifted"`)
			m.noConflicts(t)
			m.converged(t)
		})
	}
}

func mergeSamePlainField(t *testing.T, s *mxServer) {
	cases := []struct {
		name     string
		tie      bool // both edits carry the same HLC
		bFirst   bool // b pushes first
		winner   string
		loserDev string // "a" or "b"
	}{
		// b's edit has the later HLC: it wins whatever the push order.
		{name: "later HLC pushed second", winner: "b"},
		{name: "later HLC pushed first", bFirst: true, winner: "b"},
		// Equal HLCs: the later server version (the edit pushed second) wins.
		{name: "HLC tie, b pushed second", tie: true, winner: "b"},
		{name: "HLC tie, a pushed second", tie: true, bFirst: true, winner: "a"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newMatrix(t, s, 0, 0)
			m.edit(t, m.a, map[string]json.RawMessage{"notes": str("from a")})
			if !tc.tie {
				m.clk.Add(time.Second)
			}
			m.edit(t, m.b, map[string]json.RawMessage{"notes": str("from b")})
			ha, hb := outbox(t, m.a)[0].M.HLC, outbox(t, m.b)[0].M.HLC
			if tc.tie != (ha.Compare(hb) == 0) || (!tc.tie && ha.Compare(hb) >= 0) {
				t.Fatalf("set-up: hlc a %s, b %s (tie %v)", ha, hb, tc.tie)
			}
			first, second := m.a, m.b
			if tc.bFirst {
				first, second = m.b, m.a
			}
			_, r2 := m.syncAll(t, first, second)
			if r2.Conflicts != 1 || r2.Rejected != 0 {
				t.Errorf("second push: %d conflicts, %d rejected; want 1, 0", r2.Conflicts, r2.Rejected)
			}
			win, lose, loseDev := `"from b"`, `"from a"`, m.aID
			if tc.winner == "a" {
				win, lose, loseDev = `"from a"`, `"from b"`, m.bID
			}
			m.want(t, "notes", win)
			c := m.loser(t, "notes", lose, loseDev, "auto_resolved")
			if compact(c.KeptValue) != win {
				t.Errorf("conflict kept %s, want %s", c.KeptValue, win)
			}
			if len(m.serverConflicts(t)) != 1 {
				t.Errorf("conflicts = %+v, want exactly one", m.serverConflicts(t))
			}
			m.converged(t)
		})
	}
}

func mergeSensitiveField(t *testing.T, s *mxServer) {
	cases := []struct {
		field, a, b string
		action      string
		value       string // for action "value"
		want        string // after resolution
	}{
		{field: "head_name", a: `"王建国"`, b: `"王健国"`, action: "keep", want: `"王建国"`},
		{field: "poverty_status", a: `"monitored"`, b: `"poor"`, action: "take", want: `"poor"`},
		{field: "head_name", a: `"王建国"`, b: `"王健国"`, action: "value", value: `"王建国(户主)"`, want: `"王建国(户主)"`},
	}
	for _, tc := range cases {
		t.Run(tc.field+"/"+tc.action, func(t *testing.T) {
			m := newMatrix(t, s, 0, 0)
			m.edit(t, m.a, map[string]json.RawMessage{tc.field: raw(tc.a), "phone": str("1391111")})
			m.clk.Add(time.Second)
			// b's edit is later by the clock, yet a sensitive field is never
			// settled automatically: the current value (a's, pushed first)
			// stays.
			m.edit(t, m.b, map[string]json.RawMessage{tc.field: raw(tc.b), "notes": str("from b")})
			_, r2 := m.syncAll(t, m.a, m.b)
			if r2.Conflicts != 1 || r2.Rejected != 0 {
				t.Errorf("b's push: %d conflicts, %d rejected; want 1, 0", r2.Conflicts, r2.Rejected)
			}
			m.want(t, tc.field, tc.a)
			m.want(t, "phone", `"1391111"`)
			m.want(t, "notes", `"from b"`)
			c := m.loser(t, tc.field, tc.b, m.bID, "open")
			if !c.Sensitive || compact(c.KeptValue) != tc.a {
				t.Errorf("conflict = %+v, want sensitive, kept %s", c, tc.a)
			}
			var open []sqlstore.ConflictRow
			json.Unmarshal(apiCall(t, m.env, "GET", "/api/v1/conflicts?place=G11&state=open", m.sup, "", 200), &open)
			if len(open) != 1 || open[0].ID != c.ID {
				t.Errorf("open conflicts = %+v", open)
			}
			m.converged(t)

			// Only a supervisor over the household's place may settle it.
			path := "/api/v1/conflicts/" + c.ID + "/resolve"
			apiCall(t, m.env, "POST", path, m.worker, `{"action":"keep"}`, 403)
			apiCall(t, m.env, "POST", path, m.supV2, `{"action":"keep"}`, 404)
			apiCall(t, m.env, "POST", path, m.sup, `{"action":"overrule"}`, 422)
			apiCall(t, m.env, "POST", path, m.sup, `{"action":"value","value":"`+strings.Repeat("长", syncproto.MaxFieldValueBytes/3+1)+`"}`, 422)
			apiCall(t, m.env, "POST", path, m.sup, `{"action":"value","value":"x`, 400)
			m.loser(t, tc.field, tc.b, m.bID, "open")

			// A supervisor settles it; the resolution syncs to both devices.
			body := `{"action":"` + tc.action + `"}`
			if tc.action == "value" {
				body = `{"action":"value","value":` + tc.value + `}`
			}
			apiCall(t, m.env, "POST", "/api/v1/conflicts/"+c.ID+"/resolve", m.sup, body, 200)
			apiCall(t, m.env, "POST", "/api/v1/conflicts/"+c.ID+"/resolve", m.sup, body, 409)
			m.clk.Add(time.Second)
			m.syncAll(t, m.a, m.b)
			m.want(t, tc.field, tc.want)
			m.loser(t, tc.field, tc.b, m.bID, "resolved")
			open = nil
			json.Unmarshal(apiCall(t, m.env, "GET", "/api/v1/conflicts?place=V1&state=open", m.sup, "", 200), &open)
			if len(open) != 0 {
				t.Errorf("open conflicts after resolution = %+v", open)
			}
			m.converged(t)
		})
	}
}

func mergeMembers(t *testing.T, s *mxServer) {
	t.Run("add and remove different members", func(t *testing.T) {
		m := newMatrix(t, s, 0, 0)
		m3 := newID()
		m.edit(t, m.a, map[string]json.RawMessage{"member." + m3: member("王三")})
		m.clk.Add(time.Second)
		m.edit(t, m.b, map[string]json.RawMessage{"member." + m.m1: raw("null")})
		m.syncAll(t, m.a, m.b)
		m.want(t, "member."+m.m1, "null")
		m.want(t, "member."+m.m2, compact(member("王二")))
		m.want(t, "member."+m3, compact(member("王三")))
		m.noConflicts(t)
		m.converged(t)
	})
	t.Run("both remove the same member", func(t *testing.T) {
		m := newMatrix(t, s, 0, 0)
		m.edit(t, m.a, map[string]json.RawMessage{"member." + m.m2: raw("null")})
		m.clk.Add(time.Second)
		m.edit(t, m.b, map[string]json.RawMessage{"member." + m.m2: raw("null")})
		m.syncAll(t, m.b, m.a)
		m.want(t, "member."+m.m2, "null")
		m.want(t, "member."+m.m1, compact(member("王大")))
		m.noConflicts(t)
		m.converged(t)
	})
	t.Run("one edits a member the other removes", func(t *testing.T) {
		m := newMatrix(t, s, 0, 0)
		m.edit(t, m.a, map[string]json.RawMessage{"member." + m.m2: member("王小二")})
		m.clk.Add(time.Second)
		m.edit(t, m.b, map[string]json.RawMessage{"member." + m.m2: raw("null")})
		m.syncAll(t, m.b, m.a)
		// The removal has the later HLC; the rename is kept as the loser.
		m.want(t, "member."+m.m2, "null")
		m.loser(t, "member."+m.m2, compact(member("王小二")), m.aID, "auto_resolved")
		m.converged(t)
	})
}

func mergeClockOneDayAhead(t *testing.T, s *mxServer) {
	// The device's HLC is clamped to server now + MaxClockAhead and flagged;
	// its push is never rejected. The skew therefore buys it at most
	// MaxClockAhead: an honest edit made after the clamped time wins, one
	// made inside the window still loses (both deterministic).
	cases := []struct {
		name       string
		honestWait time.Duration // after a's push, before b's offline edit
		honestWins bool
	}{
		{name: "honest edit after the clamp window wins", honestWait: 2 * matrixMaxAhead, honestWins: true},
		{name: "honest edit inside the clamp window loses", honestWait: matrixMaxAhead / 2, honestWins: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newMatrix(t, s, 24*time.Hour, 0)
			m.edit(t, m.a, map[string]json.RawMessage{"notes": str("ahead"), "phone": str("1392222")})
			seq := lastOutboxSeq(t, m.a)
			sent := outbox(t, m.a)[0].M.HLC
			if d := sent.Time().Sub(m.clk.Now()); d < 23*time.Hour {
				t.Fatalf("set-up: device hlc only %v ahead", d)
			}
			pushedAt := m.clk.Now()
			rep := mustSync(t, m.a)
			if rep.Rejected != 0 {
				t.Fatalf("push of the skewed device rejected: %+v", rep.Rejections)
			}
			if r := m.pushResult(t, m.aID, seq); !r.ClockClamped || r.Status != syncproto.StatusApplied {
				t.Errorf("result = %+v, want applied and clock_clamped", r)
			}
			limit := pushedAt.Add(matrixMaxAhead)
			if h := m.fieldHLC(t, "notes"); h.Time().After(limit) {
				t.Errorf("stored hlc %s is after server now + MaxClockAhead (%s)", h, limit)
			}
			m.clk.Add(tc.honestWait)
			m.edit(t, m.b, map[string]json.RawMessage{"notes": str("honest")})
			m.syncAll(t, m.b, m.a)
			m.want(t, "phone", `"1392222"`)
			if tc.honestWins {
				m.want(t, "notes", `"honest"`)
				c := m.loser(t, "notes", `"ahead"`, m.aID, "auto_resolved")
				if c.LosingHLC.Time().After(limit) {
					t.Errorf("conflict keeps unclamped hlc %s", c.LosingHLC)
				}
			} else {
				m.want(t, "notes", `"ahead"`)
				m.loser(t, "notes", `"honest"`, m.bID, "auto_resolved")
			}
			m.converged(t)
		})
	}
}

func mergeClockOneYearBehind(t *testing.T, s *mxServer) {
	// b's clock is a year behind. Its pushes are never rejected and never
	// clamped; its HLC cannot run before what it last saw of the server,
	// so an edit a made after that wins even if b typed its edit later.
	for _, order := range []string{"honest-first", "behind-first"} {
		t.Run(order, func(t *testing.T) {
			m := newMatrix(t, s, 0, -365*24*time.Hour)
			m.edit(t, m.a, map[string]json.RawMessage{"notes": str("honest")})
			m.clk.Add(time.Second)
			m.edit(t, m.b, map[string]json.RawMessage{"notes": str("behind"), "pension": str("yes")})
			visit, err := m.b.RecordVisit(surveyVisit(m.hh, "王建国"))
			if err != nil {
				t.Fatal(err)
			}
			seq := lastOutboxSeq(t, m.b)
			first, second := m.a, m.b
			if order == "behind-first" {
				first, second = m.b, m.a
			}
			r1, r2 := m.syncAll(t, first, second)
			if r1.Rejected+r2.Rejected != 0 {
				t.Fatalf("rejections: %+v %+v", r1.Rejections, r2.Rejections)
			}
			for s := int64(1); s <= seq; s++ {
				if r := m.pushResult(t, m.bID, s); r.ClockClamped || r.Status != syncproto.StatusApplied {
					t.Errorf("b's mutation %d: %+v", s, r)
				}
			}
			m.want(t, "notes", `"honest"`)
			m.want(t, "pension", `"yes"`)
			m.loser(t, "notes", `"behind"`, m.bID, "auto_resolved")
			v, err := m.env.Store.Visit(context.Background(), visit)
			if err != nil {
				t.Fatal(err)
			}
			if age := v.ServerTime.Sub(v.DeviceTime); age < 364*24*time.Hour {
				t.Errorf("visit device time %s, server time %s: not a year apart", v.DeviceTime, v.ServerTime)
			}
			m.converged(t)
		})
	}
}

func mergeDeleteAgainstEdit(t *testing.T, s *mxServer) {
	for _, order := range []string{"delete-first", "edit-first"} {
		t.Run(order, func(t *testing.T) {
			m := newMatrix(t, s, 0, 0)
			if err := m.a.DeleteHousehold(m.hh); err != nil {
				t.Fatal(err)
			}
			m.clk.Add(time.Second)
			m3 := newID()
			edit := map[string]json.RawMessage{
				"notes":          str("edited offline"),
				"head_name":      str("王建国"),
				"member." + m3:   member("王三"),
				"member." + m.m1: raw("null"),
			}
			m.edit(t, m.b, edit)
			first, second := m.a, m.b
			if order == "edit-first" {
				first, second = m.b, m.a
			}
			r1, r2 := m.syncAll(t, first, second)
			if order == "delete-first" {
				// The edit cannot apply to a deleted household: rejected as
				// gone, its values kept.
				if r2.Rejected != 1 || r2.Rejections[0].Code != string(syncproto.CodeGone) {
					t.Errorf("b's report = %+v", r2)
				}
			} else if r1.Rejected+r2.Rejected != 0 {
				t.Errorf("rejections: %+v %+v", r1.Rejections, r2.Rejections)
			}
			if _, deleted := m.server(t); !deleted {
				t.Fatalf("household not deleted on the server")
			}
			for name, c := range map[string]*Client{"a": m.a, "b": m.b} {
				if _, err := c.Household(m.hh); !errors.Is(err, ErrNotFound) {
					t.Errorf("device %s still shows the deleted household: %v", name, err)
				}
			}
			// Nothing lost: every value of the edit is in a conflict record.
			var notes syncproto.Conflict
			for f, v := range edit {
				c := m.loser(t, f, jsonOrNull(v), m.bID, "auto_resolved")
				if f == "notes" {
					notes = c
				}
			}
			m.converged(t)

			// A supervisor who takes the edit's value must not be told it
			// was applied while it lands nowhere: either the household
			// comes back with it, or the resolution is refused.
			t.Run("supervisor takes the edit", func(t *testing.T) {
				b := apiCall(t, m.env, "POST", "/api/v1/conflicts/"+notes.ID+"/resolve", m.sup, `{"action":"take"}`, 200)
				m.syncAll(t, m.a, m.b)
				if h, deleted := m.server(t); deleted || compact(h.Fields["notes"]) != `"edited offline"` {
					t.Errorf("take on a deleted household's conflict answered %s, but the household is deleted=%v (notes %s in the tombstone): the taken value reaches no one",
						b, deleted, h.Fields["notes"])
				}
			})
		})
	}
}

// TestHouseholds_RandomInterleavingsConverge: three devices make random
// offline edits of one household (plain, sensitive and member fields, now
// and then a delete) and sync in random orders for random rounds. After a
// final sync round of every device, all devices equal the server, hold the
// same conflict records, and every value written is either applied (the
// audit log shows it as the value after the change) or kept as the losing
// value of a conflict record.
func TestHouseholds_RandomInterleavingsConverge(t *testing.T) {
	if !flagSet("rapid.checks") && os.Getenv("RAPID_CHECKS") == "" {
		f := flag.Lookup("rapid.checks")
		old := f.Value.String()
		f.Value.Set("20")
		t.Cleanup(func() { f.Value.Set(old) })
	}
	env := servertest.Start(t)
	var devs []*Client
	var devIDs []string
	for i := range 3 {
		u := env.CreateUser(t, fmt.Sprintf("worker%d", i), domain.RoleFieldWorker, "V1")
		c := device(t, env, u, nil)
		devs = append(devs, c)
		devIDs = append(devIDs, deviceID(t, c))
	}
	syncAll := func(rt *rapid.T) {
		for i, c := range devs {
			if _, err := c.Sync(context.Background()); err != nil {
				rt.Fatalf("device %d sync: %v", i, err)
			}
		}
	}
	// What the checks covered, to show the property is not vacuous.
	var stats struct{ checks, writes, conflicts, open, deleted, gone int }
	defer func() {
		t.Logf("%d checks: %d writes, %d conflict records (%d open), %d households deleted, %d edits refused as gone",
			stats.checks, stats.writes, stats.conflicts, stats.open, stats.deleted, stats.gone)
	}()
	rapid.Check(t, func(rt *rapid.T) {
		stats.checks++
		hh, m1, m2, m3 := newID(), newID(), newID(), newID()
		if err := env.Store.ImportHouseholds(context.Background(), []syncproto.Household{{ID: hh, PlaceCode: "G12", Fields: map[string]json.RawMessage{
			"head_name": str("王建国"), "notes": str("imported"), "member." + m1: member("王大"), "member." + m2: member("王二"),
		}}}, 0); err != nil {
			rt.Fatal(err)
		}
		defer func() {
			// Leave no pending work for the next check, even on failure.
			for _, c := range devs {
				c.Sync(context.Background())
				c.Sync(context.Background())
			}
		}()
		syncAll(rt)
		fields := []string{"notes", "phone", "head_name", "member." + m1, "member." + m2, "member." + m3}
		// A delete now and then (rapid favours the first entries).
		var ops []string
		for range 4 {
			ops = append(ops, fields...)
		}
		ops = append(ops, "delete")
		type write struct {
			dev   int
			field string
			value string // compact JSON, "null" for a removal
		}
		var writes []write
		n := 0
		rounds := rapid.IntRange(1, 4).Draw(rt, "rounds")
		for r := range rounds {
			for d, c := range devs {
				edits := rapid.IntRange(0, 3).Draw(rt, fmt.Sprintf("edits r%d d%d", r, d))
				for range edits {
					f := rapid.SampledFrom(ops).Draw(rt, "op")
					if f == "delete" {
						err := c.DeleteHousehold(hh)
						if err != nil && !errors.Is(err, ErrNotFound) {
							rt.Fatal(err)
						}
						continue
					}
					n++
					var v json.RawMessage
					switch {
					case strings.HasPrefix(f, syncproto.MemberPrefix) && rapid.Bool().Draw(rt, "remove member?"):
						v = raw("null")
					case strings.HasPrefix(f, syncproto.MemberPrefix):
						v = member(fmt.Sprintf("成员%d-%d", d, n))
					default:
						v = str(fmt.Sprintf("d%d-w%d", d, n))
					}
					err := c.UpdateHousehold(hh, map[string]json.RawMessage{f: v})
					if errors.Is(err, ErrNotFound) {
						continue // deleted on this device already
					}
					if err != nil {
						rt.Fatal(err)
					}
					writes = append(writes, write{d, f, jsonOrNull(v)})
				}
			}
			order := rapid.Permutation([]int{0, 1, 2}).Draw(rt, "sync order")
			k := rapid.IntRange(0, 3).Draw(rt, "devices syncing")
			for _, d := range order[:k] {
				if _, err := devs[d].Sync(context.Background()); err != nil {
					rt.Fatalf("device %d sync: %v", d, err)
				}
			}
		}
		syncAll(rt)
		syncAll(rt)

		ctx := context.Background()
		srv, deleted, err := env.Store.Household(ctx, hh)
		if err != nil {
			rt.Fatal(err)
		}
		conflicts, err := env.Store.Conflicts(ctx, hh)
		if err != nil {
			rt.Fatal(err)
		}
		stats.writes += len(writes)
		stats.conflicts += len(conflicts)
		if deleted {
			stats.deleted++
		}
		for _, c := range devs {
			rj, _ := c.Rejections()
			for _, r := range rj {
				if r.HouseholdID == hh && r.Code == string(syncproto.CodeGone) {
					stats.gone++
				}
			}
		}
		wantConflicts := map[string]string{}
		for _, c := range conflicts {
			if c.State == "open" {
				stats.open++
			}
			wantConflicts[c.ID] = c.State + " " + c.Field + "=" + jsonOrNull(c.LosingValue)
			if c.Field == syncproto.FieldHeadName && !syncproto.IsNull(c.KeptValue) && (c.State != "open" || !c.Sensitive) {
				rt.Errorf("sensitive clash settled automatically: %+v", c)
			}
		}
		// Convergence: every device equals the server.
		for d, c := range devs {
			h, err := c.Household(hh)
			switch {
			case deleted:
				if !errors.Is(err, ErrNotFound) {
					rt.Errorf("device %d shows household deleted on the server: %v", d, err)
				}
			case err != nil:
				rt.Errorf("device %d: %v", d, err)
			case h.Version != srv.Version || fieldsJSON(h.Fields) != fieldsJSON(srv.Fields) || h.PlaceCode != srv.PlaceCode:
				rt.Errorf("device %d: v%d %s\nserver: v%d %s", d, h.Version, fieldsJSON(h.Fields), srv.Version, fieldsJSON(srv.Fields))
			}
			if p, _ := c.Pending(); p.Mutations != 0 {
				rt.Errorf("device %d: %d mutations pending", d, p.Mutations)
			}
			cs, err := c.Conflicts()
			if err != nil {
				rt.Fatal(err)
			}
			got := map[string]string{}
			for _, cf := range cs {
				if cf.HouseholdID == hh {
					got[cf.ID] = cf.State + " " + cf.Field + "=" + jsonOrNull(cf.LosingValue)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(wantConflicts) {
				rt.Errorf("device %d conflicts:\n%v\nserver:\n%v", d, got, wantConflicts)
			}
		}
		// Nothing lost: each write was applied (the audit log shows it as
		// the value after a change by its device) or is a losing value.
		applied := map[string]bool{} // device|field|value
		rows, err := env.Store.DB().Query(`SELECT device_id, after FROM audit_events WHERE action = 'household.update' AND entity_id = ?`, hh)
		if err != nil {
			rt.Fatal(err)
		}
		for rows.Next() {
			var dev string
			var after sql.NullString
			if err := rows.Scan(&dev, &after); err != nil {
				rt.Fatal(err)
			}
			var a struct {
				Fields map[string]json.RawMessage `json:"fields"`
			}
			json.Unmarshal([]byte(after.String), &a)
			for f, v := range a.Fields {
				applied[dev+"|"+f+"|"+jsonOrNull(v)] = true
			}
		}
		rows.Close()
		kept := map[string]bool{}
		for _, c := range conflicts {
			kept[c.LosingDevice+"|"+c.Field+"|"+jsonOrNull(c.LosingValue)] = true
		}
		for _, w := range writes {
			key := devIDs[w.dev] + "|" + w.field + "|" + w.value
			if !applied[key] && !kept[key] {
				rt.Errorf("write lost: device %d set %s = %s; it was neither applied nor kept in a conflict record", w.dev, w.field, w.value)
			}
		}
	})
}

// flagSet reports whether a flag was given on the command line.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}
