package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pgregory.net/rapid"

	"fieldsync/server/api"
	"fieldsync/server/blob/localblob"
	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/server/sqlstore"
	"fieldsync/server/upload/uploadtest"
	"fieldsync/syncproto"
)

// Tests that no request may crash or hang the server (issue 13, items 1
// and 2): thousands of distinct list queries, random list parameters, and
// herds of pushing devices.

// hclient is an HTTP client for load from many goroutines: errors are
// returned, never t.Fatal'd.
type hclient struct {
	base string
	tr   *http.Transport
	cl   *http.Client
}

func newHClient(base string, timeout time.Duration) *hclient {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 5 * time.Second}
	return &hclient{base: base, tr: tr, cl: &http.Client{Transport: tr, Timeout: timeout}}
}

func (h *hclient) do(ctx context.Context, method, path, token string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := h.cl.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// pushDev is an enrolled device that pushes over HTTP from any goroutine.
type pushDev struct {
	id, token string
	seq       int64
}

func newPushDev(t *testing.T, env *servertest.Env, name string, places ...string) *pushDev {
	t.Helper()
	u := env.CreateUser(t, name, domain.RoleFieldWorker, places...)
	id, tok := env.Device(t, u.ID)
	return &pushDev{id: id, token: tok}
}

// visits makes n visit.create mutations (sequence numbers filled in) of
// households hhs, round robin.
func (d *pushDev) visits(n int, hhs []string) []syncproto.Mutation {
	ms := make([]syncproto.Mutation, n)
	for i := range ms {
		d.seq++
		v := uploadtest.Visit(syncproto.NewID(time.Now()), hhs[(int(d.seq)+i)%len(hhs)])
		ms[i] = syncproto.Mutation{Seq: d.seq, Kind: syncproto.KindVisitCreate, Visit: &v}
	}
	return ms
}

// push sends ms and checks that every mutation is answered as applied.
func (d *pushDev) push(ctx context.Context, h *hclient, ms []syncproto.Mutation) error {
	req := syncproto.PushRequest{ProtocolVersion: syncproto.ProtocolVersion, DeviceID: d.id, Mutations: ms}
	st, body, err := h.do(ctx, http.MethodPost, "/api/v1/sync/push", d.token, req)
	if err != nil {
		return fmt.Errorf("push of %d: %w", len(ms), err)
	}
	if st != http.StatusOK {
		return fmt.Errorf("push of %d: status %d: %s", len(ms), st, body)
	}
	var resp syncproto.PushResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		return fmt.Errorf("push of %d: %w", len(ms), err)
	}
	if len(resp.Results) != len(ms) {
		return fmt.Errorf("push of %d: %d results", len(ms), len(resp.Results))
	}
	for _, r := range resp.Results {
		if r.Status != syncproto.StatusApplied {
			return fmt.Errorf("push of %d: seq %d %s %s", len(ms), r.Seq, r.Code, r.Message)
		}
	}
	return nil
}

func (d *pushDev) pull(ctx context.Context, h *hclient, cursor string) (string, error) {
	req := syncproto.PullRequest{ProtocolVersion: syncproto.ProtocolVersion, DeviceID: d.id, Cursor: cursor, MaxBytes: syncproto.MinPullBytes}
	st, body, err := h.do(ctx, http.MethodPost, "/api/v1/sync/pull", d.token, req)
	if err != nil {
		return cursor, err
	}
	if st != http.StatusOK {
		return cursor, fmt.Errorf("pull: status %d: %s", st, body)
	}
	var resp syncproto.PullResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		return cursor, err
	}
	return resp.Cursor, nil
}

const supervisorPassword = "zhen-supervisor-2026"

// supervisor creates zhen_supervisor (places: T1) and signs in.
func supervisor(t *testing.T, env *servertest.Env) string {
	t.Helper()
	env.CreateUserWithPassword(t, "zhen_supervisor", domain.RoleSupervisor, supervisorPassword, "T1")
	tok, err := env.API.Login(context.Background(), "zhen_supervisor", supervisorPassword)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

func households(t *testing.T, env *servertest.Env, places ...string) []string {
	t.Helper()
	var ids []string
	for _, p := range places {
		id := syncproto.NewID(time.Now())
		uploadtest.Household(t, env, id, p)
		ids = append(ids, id)
	}
	return ids
}

// sizeStep is the step from list size n to the next one tested: 1 (every
// size), or under the race detector 1 up to 100 and 10 beyond.
func sizeStep(n int) int {
	if raceEnabled && n >= 100 {
		return 10
	}
	return 1
}

func heapAlloc() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestServer_ThousandsOfDistinctQueries: one server, 3,000 distinct limits
// (with offsets and page sizes) on every list endpoint that takes one, an
// IN-list of every length the evidence check allows, push batches of every
// size 1..300 (fewer under the race detector: see raceEnabled). Each distinct value used to make a distinct SQL text; past
// 512 of them the statement cache recursed into itself and the process
// died of a stack overflow. The server answers /healthz afterwards and its
// heap stays bounded.
func TestServer_ThousandsOfDistinctQueries(t *testing.T) {
	env := servertest.Start(t)
	ctx := context.Background()
	h := newHClient(env.URL, 30*time.Second)
	defer h.tr.CloseIdleConnections()
	sup := supervisor(t, env)
	hhs := households(t, env, "G11", "G12", "G21")
	d := newPushDev(t, env, "worker", "T1")

	if err := d.push(ctx, h, d.visits(6, hhs)); err != nil {
		t.Fatal(err)
	}
	before := heapAlloc()
	// 3,000 distinct limits, offsets and page sizes on each list
	// endpoint, from 4 clients at once. Under the race detector, 600 in
	// all, spread over the endpoints (with the IN-lists and batches below,
	// still far more than the 512 distinct SQL texts that killed the
	// server before the fix).
	distinct, every := 3000, true
	if raceEnabled {
		distinct, every = 600, false
	}
	paths := []string{"/api/v1/visits", "/api/v1/households", "/api/v1/evidence/gaps"}
	var failed atomic.Value
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1))
				if i > distinct || failed.Load() != nil {
					return
				}
				for j, p := range paths {
					if !every && i%len(paths) != j {
						continue
					}
					q := url.Values{"limit": {fmt.Sprint(i)}, "offset": {fmt.Sprint(i * 7)}, "page": {fmt.Sprint(i)}, "page_size": {fmt.Sprint(i)}}
					if i%3 == 0 {
						q.Set("place", []string{"T1", "V1", "G11", "G12", "V2", "G21"}[i%6])
					}
					st, body, err := h.do(ctx, http.MethodGet, p+"?"+q.Encode(), sup, nil)
					if err != nil || st != http.StatusOK {
						failed.Store(fmt.Sprintf("GET %s?%s: %d %v %.200s", p, q.Encode(), st, err, body))
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f != nil {
		t.Fatal(f)
	}

	// IN-lists of every length the missing-blobs check allows, and one
	// more (refused with a documented 413).
	sums := make([]string, api.MaxMissingQuery+1)
	for i := range sums {
		sums[i] = fmt.Sprintf("%064x", i+1)
	}
	for n := 1; n <= len(sums); n += sizeStep(n) {
		req := api.MissingRequest{ProtocolVersion: syncproto.ProtocolVersion, SHA256: sums[:n]}
		st, body, err := h.do(ctx, http.MethodPost, "/api/v1/evidence/missing", d.token, req)
		want := http.StatusOK
		if n > api.MaxMissingQuery {
			want = http.StatusRequestEntityTooLarge
		}
		if err != nil || st != want {
			t.Fatalf("missing of %d: %d %v %.200s", n, st, err, body)
		}
	}

	// Push batches of every size 1..300: 300 visits pushed once in
	// batches of 1..24, then every prefix again (a replay is answered
	// from the stored results, and the checks after the push read the
	// batch's visits as one list).
	var all []syncproto.Mutation
	for n := 1; len(all) < 300; n++ {
		ms := d.visits(min(n, 300-len(all)), hhs)
		if err := d.push(ctx, h, ms); err != nil {
			t.Fatal(err)
		}
		all = append(all, ms...)
	}
	for n := 1; n <= len(all); n += sizeStep(n) {
		if err := d.push(ctx, h, all[:n]); err != nil {
			t.Fatalf("replayed batch: %v", err)
		}
	}

	if st, body, err := h.do(ctx, http.MethodGet, "/healthz", "", nil); err != nil || st != http.StatusOK {
		t.Fatalf("healthz: %d %v %s", st, err, body)
	}
	after := heapAlloc()
	const slack = 64 << 20
	if after > before+slack {
		t.Errorf("heap grew from %d to %d bytes over the distinct queries", before, after)
	}
	read, write := env.Store.CachedStatements()
	if read > 100 || write > 100 {
		t.Errorf("statement caches hold %d read and %d write statements; the query texts should be constant", read, write)
	}
}

// listEndpoint is a list endpoint and the query parameters it reads (or
// that clients send it anyway).
type listEndpoint struct {
	path   string
	params []string
}

var listEndpoints = []listEndpoint{
	{"/api/v1/places", []string{"place"}},
	{"/api/v1/users", []string{"limit", "offset", "page"}},
	{"/api/v1/devices", []string{"stuck_hours", "limit", "page"}},
	{"/api/v1/forms", []string{"latest", "limit"}},
	{"/api/v1/households", []string{"place", "limit", "offset", "page"}},
	{"/api/v1/visits", []string{"place", "form", "state", "flag", "from", "to", "limit", "offset", "page"}},
	{"/api/v1/conflicts", []string{"place", "state", "limit", "offset"}},
	{"/api/v1/evidence/gaps", []string{"place", "limit", "offset", "page"}},
	{"/api/v1/export", []string{"what", "format", "place", "form", "state", "from", "to", "lang", "mask", "limit"}},
}

// paramValue draws a value for a list parameter: often a sensible one,
// sometimes a hostile one.
func paramValue(rt *rapid.T, name string) string {
	hostile := rapid.SampledFrom([]string{"", "-1", "0", "9223372036854775807", "99999999999999999999", "1e9", "abc", "%", "_",
		"' OR 1=1 --", "\x00", "石门村", "../../etc", "null", "[]", "{}", "2026-13-45", "NaN", " 5"}).Draw(rt, name+"_hostile")
	if rapid.IntRange(0, 3).Draw(rt, name+"_kind") == 0 {
		return hostile
	}
	switch name {
	case "limit", "offset", "page", "stuck_hours":
		return fmt.Sprint(rapid.IntRange(-10, 100_000).Draw(rt, name))
	case "place":
		return rapid.SampledFrom([]string{"C1", "T1", "V1", "V2", "G11", "G12", "G21", "NOPE"}).Draw(rt, name)
	case "state":
		return rapid.SampledFrom([]string{"submitted", "approved", "needs_rework", "rejected", "open", "resolved", "auto_resolved"}).Draw(rt, name)
	case "from", "to":
		day := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, rapid.IntRange(-400, 400).Draw(rt, name))
		return rapid.SampledFrom([]string{day.Format(time.RFC3339), day.Format("2006-01-02"), day.Format("2006-01")}).Draw(rt, name+"_fmt")
	case "what":
		return rapid.SampledFrom([]string{"visits", "households"}).Draw(rt, name)
	case "format":
		return rapid.SampledFrom([]string{"csv", "xlsx", "geojson"}).Draw(rt, name)
	case "form":
		return rapid.SampledFrom([]string{uploadtest.WaterCellarForm, "household_visit"}).Draw(rt, name)
	case "latest", "mask":
		return rapid.SampledFrom([]string{"1", "0", "true"}).Draw(rt, name)
	case "lang":
		return rapid.SampledFrom([]string{"zh", "en"}).Draw(rt, name)
	}
	return hostile
}

// TestListEndpoints_RandomQueries drives every list endpoint with random
// query parameters as a signed-in supervisor. The server stays alive, and
// every answer is a 2xx or a documented 4xx: an error body whose code is
// one of syncproto's, with that code's status. Never a 5xx.
func TestListEndpoints_RandomQueries(t *testing.T) {
	env := servertest.Start(t)
	ctx := context.Background()
	h := newHClient(env.URL, 30*time.Second)
	defer h.tr.CloseIdleConnections()
	sup := supervisor(t, env)
	hhs := households(t, env, "G11", "G12", "G21")
	d := newPushDev(t, env, "worker", "T1")
	if err := d.push(ctx, h, d.visits(6, hhs)); err != nil {
		t.Fatal(err)
	}
	codes := map[syncproto.Code]bool{}
	for _, c := range syncproto.Codes() {
		codes[c] = true
	}
	rapid.Check(t, func(rt *rapid.T) {
		ep := rapid.SampledFrom(listEndpoints).Draw(rt, "endpoint")
		q := url.Values{}
		for _, p := range ep.params {
			if rapid.Bool().Draw(rt, "send_"+p) {
				q.Set(p, paramValue(rt, p))
			}
		}
		path := ep.path + "?" + q.Encode()
		st, body, err := h.do(ctx, http.MethodGet, path, sup, nil)
		if err != nil {
			rt.Fatalf("GET %s: %v", path, err)
		}
		switch {
		case st >= 200 && st < 300:
		case st >= 400 && st < 500:
			var e syncproto.Error
			if err := json.Unmarshal(body, &e); err != nil || !codes[e.Code] || e.Code.HTTPStatus() != st {
				rt.Fatalf("GET %s: %d with an undocumented body %.300s", path, st, body)
			}
		default:
			rt.Fatalf("GET %s: %d %.300s", path, st, body)
		}
	})
	if st, _, err := h.do(ctx, http.MethodGet, "/healthz", "", nil); err != nil || st != http.StatusOK {
		t.Fatalf("healthz after the random queries: %d %v", st, err)
	}
}

// healthPoller asks /healthz every few milliseconds and notes any answer
// that took more than healthWait or was not a 200.
type healthPoller struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	bad  []string
	n    int
	max  time.Duration
}

// healthWait is how long a health check may take while the herd runs: a
// check stuck behind the writer or a full pool waits for the whole round
// (many seconds), while one that merely queued for a core of a loaded
// 2-core CI machine under -race once took 1.14 s.
const healthWait = 5 * time.Second

func pollHealth(base string) *healthPoller {
	p := &healthPoller{stop: make(chan struct{}), done: make(chan struct{})}
	h := newHClient(base, 0)
	go func() {
		defer close(p.done)
		defer h.tr.CloseIdleConnections()
		for i := 0; i < 100_000; i++ {
			select {
			case <-p.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), healthWait)
			start := time.Now()
			st, _, err := h.do(ctx, http.MethodGet, "/healthz", "", nil)
			cancel()
			p.mu.Lock()
			p.n++
			p.max = max(p.max, time.Since(start))
			if err != nil || st != http.StatusOK {
				p.bad = append(p.bad, fmt.Sprintf("healthz after %s: %d %v", time.Since(start).Round(time.Millisecond), st, err))
			}
			p.mu.Unlock()
		}
	}()
	return p
}

// end stops the poller and returns what went wrong.
func (p *healthPoller) end() []string {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bad
}

// rawServer is a server restarted on a data folder without
// servertest's sign-in of the admin (a bcrypt hash costs seconds under
// the race detector).
type rawServer struct {
	URL   string
	hs    *httptest.Server
	srv   *api.Server
	store *sqlstore.Store
}

func restart(t *testing.T, dir string, cfg sqlstore.Config) *rawServer {
	t.Helper()
	st, err := sqlstore.Open(context.Background(), servertest.StoreConfig(t, dir, cfg))
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := localblob.New(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Config{Store: st, Blobs: blobs, UploadDir: filepath.Join(dir, "uploads"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), LoginRate: 1000, EnrollRate: 1000})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	r := &rawServer{URL: hs.URL, hs: hs, srv: srv, store: st}
	t.Cleanup(r.stop)
	return r
}

func (r *rawServer) stop() {
	r.hs.Close()
	r.srv.Close()
	r.store.Close()
}

// enrollMany creates n field workers of T1 and enrolls a device for each,
// 32 at a time (their transactions share group commits).
func enrollMany(t *testing.T, env *servertest.Env, prefix string, n int) []*pushDev {
	t.Helper()
	ctx := context.Background()
	h := newHClient(env.URL, 30*time.Second)
	defer h.tr.CloseIdleConnections()
	devs := make([]*pushDev, n)
	errs := make(chan error, n)
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				u, err := env.Store.CreateUser(ctx, domain.User{Username: fmt.Sprintf("%s%d", prefix, i), DisplayName: "测试", Role: domain.RoleFieldWorker, PlaceCodes: []string{"T1"}})
				if err != nil {
					errs <- err
					return
				}
				code, err := env.API.IssueEnrollmentCode(ctx, u.ID, 0)
				if err != nil {
					errs <- err
					return
				}
				st, body, err := h.do(ctx, http.MethodPost, "/api/v1/devices/enroll", "", map[string]string{"code": code.Code, "name": "test"})
				var er api.EnrollResponse
				if err == nil && st == http.StatusCreated {
					err = json.Unmarshal(body, &er)
				} else if err == nil {
					err = fmt.Errorf("enroll: %d %s", st, body)
				}
				if err != nil {
					errs <- err
					return
				}
				devs[i] = &pushDev{id: er.DeviceID, token: er.Token}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return devs
}

// hangGuard fails the whole test binary with every goroutine's stack when
// done is not closed within d: a hung server cannot be shut down, so the
// test could not end otherwise.
func hangGuard(t *testing.T, what string, d time.Duration, done <-chan struct{}) {
	select {
	case <-done:
	case <-time.After(d):
		_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		// Panic in a goroutine of its own: the test's cleanups would wait
		// for the hung handlers.
		msg := fmt.Sprintf("%s: %s did not finish within %s: the server hangs", t.Name(), what, d)
		go panic(msg)
		select {}
	}
}

// TestPushHerd_NoHang: pushing devices and pullers on freshly started
// servers with a small read pool, 20 times; then 200 pushing devices while
// supervisors page the review queue, the households and the exports, and
// uploads run. Every push is answered, /healthz answers within a second
// throughout, and no goroutine is left over. The push handlers used to
// hold a pooled read connection (the rows of the visits' facts) while the
// boundary cache, cold on a fresh server, waited for another: four pushes
// took the whole pool and every request, /healthz included, waited for
// ever.
func TestPushHerd_NoHang(t *testing.T) {
	goroutinesBefore := runtime.NumGoroutine()
	ctx := context.Background()

	// Each round restarts the server on the same data folder: a freshly
	// started process (cold caches, a new small pool: 1 to 4 read
	// connections, so that a few pushes, or one, holding a connection
	// while waiting for another are enough to show a hang), with the
	// devices enrolled once. The households are in every place of the
	// devices' scope, so the checks after the first pushes meet cold
	// boundaries.
	dir := t.TempDir()
	opts := servertest.Options{Dir: dir, Store: sqlstore.Config{PoolWait: 10 * time.Second}}
	env := servertest.StartWith(t, opts)
	hhs := households(t, env, "T1", "V1", "V2", "G11", "G12", "G21")
	devs := enrollMany(t, env, "w", 20+4)
	pullers := devs[20:]
	env.Stop()
	for round := 0; round < 20; round++ {
		cfg := opts.Store
		cfg.Readers = 1 + round%4
		env := restart(t, dir, cfg)
		h := newHClient(env.URL, 0)
		pushers := devs[:6+(round*5)%15]
		health := pollHealth(env.URL)
		errs := make(chan error, len(devs))
		done := make(chan struct{})
		var wg sync.WaitGroup
		for _, d := range pushers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 2 {
					if err := d.push(ctx, h, d.visits(3, hhs)); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		for _, d := range pullers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cursor := ""
				for range 2 {
					c, err := d.pull(ctx, h, cursor)
					if err != nil {
						errs <- err
						return
					}
					cursor = c
				}
			}()
		}
		go func() { wg.Wait(); close(done) }()
		hangGuard(t, fmt.Sprintf("round %d (%d pushers, %d pullers)", round, len(pushers), len(pullers)), 30*time.Second, done)
		bad := health.end()
		close(errs)
		for err := range errs {
			t.Errorf("round %d: %v", round, err)
		}
		if len(bad) > 0 {
			t.Errorf("round %d: %d of the health checks failed: %v", round, len(bad), bad[0])
		}
		h.tr.CloseIdleConnections()
		env.stop()
		if t.Failed() {
			return
		}
	}

	// 200 devices while supervisors page the lists and exports, and
	// uploads run.
	env = servertest.StartWith(t, servertest.Options{Store: sqlstore.Config{Readers: 4}})
	h := newHClient(env.URL, 0)
	sup := supervisor(t, env)
	hhs = households(t, env, "G11", "G12", "G21")
	const herd = 200
	devs = enrollMany(t, env, "herd", herd)
	uploader := newPushDev(t, env, "uploader", "T1")
	health := pollHealth(env.URL)
	errs := make(chan error, herd+16)
	stop := make(chan struct{})
	var pushes, pages, uploads sync.WaitGroup
	for i, d := range devs {
		pushes.Add(1)
		go func() {
			defer pushes.Done()
			// The devices come online over a second, as a herd does
			// after an outage, rather than in the same microsecond.
			time.Sleep(time.Duration(i) * time.Second / herd)
			if err := d.push(ctx, h, d.visits(2, hhs)); err != nil {
				errs <- err
			}
		}()
	}
	pagePaths := []string{"/api/v1/visits?limit=%d", "/api/v1/households?limit=%d", "/api/v1/evidence/gaps?limit=%d",
		"/api/v1/export?what=visits&format=csv&place=T1&x=%d", "/api/v1/export?what=households&format=geojson&x=%d"}
	for s := 0; s < 3; s++ {
		pages.Add(1)
		go func() {
			defer pages.Done()
			for i := 0; i < 200; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p := fmt.Sprintf(pagePaths[(s+i)%len(pagePaths)], 1+i*7+s)
				st, body, err := h.do(ctx, http.MethodGet, p, sup, nil)
				if err != nil || st != http.StatusOK {
					errs <- fmt.Errorf("GET %s: %d %v %.200s", p, st, err, body)
					return
				}
			}
		}()
	}
	uploads.Add(1)
	go func() {
		defer uploads.Done()
		cl := &uploadtest.Client{Base: env.URL, Token: uploader.token, HTTP: h.cl}
		for i := 0; i < 20; i++ {
			select {
			case <-stop:
				return
			default:
			}
			photo := []byte(fmt.Sprintf("photo %d of the herd test, not a real JPEG %s", i, time.Now()))
			v := uploadtest.Visit(syncproto.NewID(time.Now()), hhs[i%len(hhs)], uploadtest.Ref(photo, "progress"))
			uploader.seq++
			if err := uploader.push(ctx, h, []syncproto.Mutation{{Seq: uploader.seq, Kind: syncproto.KindVisitCreate, Visit: &v}}); err != nil {
				errs <- err
				return
			}
			r, err := cl.Create(ctx, photo, nil)
			if err != nil || r.Status != http.StatusCreated {
				errs <- fmt.Errorf("upload create: %v %+v", err, r)
				return
			}
			if p, err := cl.Patch(ctx, r.Header.Get("Location"), 0, photo, nil); err != nil || p.Status != http.StatusNoContent {
				errs <- fmt.Errorf("upload patch: %v %+v", err, p)
				return
			}
		}
	}()
	done := make(chan struct{})
	go func() { pushes.Wait(); close(done) }()
	hangGuard(t, fmt.Sprintf("%d pushing devices with supervisors and uploads", herd), 90*time.Second, done)
	close(stop)
	pages.Wait()
	uploads.Wait()
	bad := health.end()
	t.Logf("%d health checks during the herd, the slowest %s", health.n, health.max)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(bad) > 0 {
		t.Errorf("%d health checks failed or took over a second, e.g. %s", len(bad), bad[0])
	}
	var n int
	if err := env.Store.DB().QueryRow(`SELECT count(*) FROM visits`).Scan(&n); err != nil || n < 2*herd {
		t.Errorf("%d visits stored (%v), want at least %d", n, err, 2*herd)
	}
	h.tr.CloseIdleConnections()
	env.Stop()

	// Leak check: every goroutine the servers and clients started ends.
	var now int
	for i := 0; i < 100; i++ {
		if now = runtime.NumGoroutine(); now <= goroutinesBefore {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	buf := new(bytes.Buffer)
	_ = pprof.Lookup("goroutine").WriteTo(buf, 1)
	t.Errorf("%d goroutines before, %d after the herds:\n%s", goroutinesBefore, now, buf)
}
