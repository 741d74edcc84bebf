package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"fieldsync/mobileclient"
	"fieldsync/server/blob/s3blob"
	"fieldsync/server/blob/s3blob/s3test"
	"fieldsync/server/evidence/evidencetest"
	"fieldsync/server/servertest/pgtest"
	"fieldsync/server/servertest/rrproxy"
	"fieldsync/syncproto"
)

// The cluster tests run three `fieldsync run` processes on one PostgreSQL
// database, one S3 bucket (the shared versitygw) and one shared folder of
// partial uploads, behind a round-robin proxy (servertest/rrproxy), and
// drive a herd of real devices (mobileclient) through the proxy: enroll,
// record visits with photos, sync (push, tus uploads in several PATCHes,
// pull), over and over. In the middle of the herd something breaks (an
// instance is killed with SIGKILL, or PostgreSQL restarts); at the end
// every device syncs once more and the test checks, in PostgreSQL and in
// the bucket, that nothing was lost, duplicated or left half done.

// clusterDevices is the size of the herd: FIELDSYNC_CLUSTER_DEVICES, else
// defaultClusterDevices.
func clusterDevices(t *testing.T) int {
	if v := os.Getenv("FIELDSYNC_CLUSTER_DEVICES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 3 {
			t.Fatalf("FIELDSYNC_CLUSTER_DEVICES=%q: want a number ≥ 3", v)
		}
		return n
	}
	if raceEnabled {
		return raceClusterDevices
	}
	return defaultClusterDevices
}

// defaultClusterDevices: the 200 devices of the acceptance test. On the
// 2-core test machine (shared with other work) the whole test, herd of
// 200 with 3 rounds of photo visits included, takes about two minutes
// (see the figures the test logs). Under the race detector every device
// library call is several times slower: raceClusterDevices then.
const (
	defaultClusterDevices = 200
	raceClusterDevices    = 60
)

// clusterRounds is how many visits (each with two photos) every device
// records, one per round, syncing after each.
const clusterRounds = 3

// uploadsPath is where tus uploads live; the POST creating one goes to it.
const uploadsPath = "/api/v1/uploads"

// node is one `fieldsync run` process of the cluster, on a fixed loopback
// port so that it can come back on the same address after a kill.
type node struct {
	idx       int
	bin       string
	args      []string
	addr, log string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan error
}

func (n *node) base() string { return "http://" + n.addr }

// start starts the process and waits until its /healthz answers 200. It
// may run on any goroutine (it reports, never fails the test itself).
func (n *node) start() error {
	logf, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(n.bin, append([]string{"run", "-addr", n.addr}, n.args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	n.mu.Lock()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		resp, err := hc.Get(n.base() + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("instance %d exited at start: %v\n%s", n.idx, err, tailFile(n.log, 30))
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("instance %d: /healthz not ok within 2 minutes\n%s", n.idx, tailFile(n.log, 30))
}

// kill sends SIGKILL (no shutdown at all) and waits for the process.
func (n *node) kill() error {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill instance %d: %w", n.idx, err)
	}
	<-done
	done <- nil
	return nil
}

// stop ends the process with SIGTERM (SIGKILL after 30 s); for cleanup.
func (n *node) stop() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case err := <-done:
		done <- err
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		done <- err
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		done <- <-done
	}
}

func tailFile(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// uploadTrack follows tus uploads through the proxy: which instance
// created each upload (its POST) and which took each of its PATCHes.
type uploadTrack struct {
	mu      sync.Mutex
	created map[string]int // upload path → backend of its POST
	posts   int
	patches int            // PATCHes answered 204
	moved   int            // of them, on another instance than the POST
	movedBy map[string]int // upload path → PATCHes moved
}

func newUploadTrack() *uploadTrack {
	return &uploadTrack{created: map[string]int{}, movedBy: map[string]int{}}
}

func (u *uploadTrack) observe(backend int, req *http.Request, resp *http.Response) {
	switch {
	case req.Method == http.MethodPost && strings.TrimSuffix(req.URL.Path, "/") == uploadsPath && resp.StatusCode == http.StatusCreated:
		loc, err := url.Parse(resp.Header.Get("Location"))
		if err != nil || loc.Path == "" {
			return
		}
		u.mu.Lock()
		u.created[loc.Path] = backend
		u.posts++
		u.mu.Unlock()
	case req.Method == http.MethodPatch && strings.HasPrefix(req.URL.Path, uploadsPath+"/") && resp.StatusCode == http.StatusNoContent:
		u.mu.Lock()
		u.patches++
		if b, ok := u.created[req.URL.Path]; ok && b != backend {
			u.moved++
			u.movedBy[req.URL.Path]++
		}
		u.mu.Unlock()
	}
}

// cluster is N instances behind the proxy, and what they share.
type cluster struct {
	dbURL  string
	s3     s3blob.Config
	nodes  []*node
	proxy  *rrproxy.Proxy
	track  *uploadTrack
	admin  struct{ user, password string }
	groups []string // villager groups with households, devices' places
	// checked is set once verify's checks outside the exactly-once
	// subtest passed: the instances' logs are shown only when something
	// else failed.
	checked atomic.Bool
}

// startCluster seeds the database (the demo county without photos,
// migrated), installs the analysis counter (see countAnalyses), and starts
// n instances and the proxy.
func startCluster(t *testing.T, dbURL string, n int) *cluster {
	t.Helper()
	ctx := context.Background()
	c := &cluster{dbURL: dbURL, s3: s3test.Config(t), track: newUploadTrack()} // skips (or fails) without S3
	bin := fieldsyncBinary(t)
	var out, errb syncBuffer
	if err := run(ctx, []string{"seed", "-db", dbURL, "-data", t.TempDir()}, &out, &errb); err != nil {
		t.Fatalf("seed: %v\n%s", err, errb.String())
	}
	var m struct {
		Admin struct{ Username, Password string } `json:"admin"`
		Demo  struct {
			Village string `json:"village"`
		} `json:"demo"`
	}
	if err := json.Unmarshal([]byte(out.String()), &m); err != nil || m.Admin.Password == "" || m.Demo.Village == "" {
		t.Fatalf("seed manifest: %v\n%s", err, out.String())
	}
	c.admin.user, c.admin.password = m.Admin.Username, m.Admin.Password
	db := pgtest.Open(t, dbURL)
	rows, err := db.QueryContext(ctx, `SELECT p.code FROM places p WHERE p.level = 'group' AND p.parent_code = $1
		AND EXISTS (SELECT 1 FROM households h WHERE h.place_code = p.code) ORDER BY p.code`, m.Demo.Village)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var code string
		if err := rows.Scan(&code); err != nil {
			t.Fatal(err)
		}
		c.groups = append(c.groups, code)
	}
	rows.Close()
	if len(c.groups) == 0 {
		t.Fatal("the demo village has no groups with households")
	}
	installAnalysisCounter(t, db)

	uploads := t.TempDir()
	var backends []string
	for i := range n {
		port, err := freeLoopbackPort()
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		nd := &node{idx: i, bin: bin, addr: "127.0.0.1:" + strconv.Itoa(port), log: filepath.Join(dir, "fieldsync.log"),
			args: []string{"-db", dbURL, "-data", filepath.Join(dir, "data"), "-uploads", uploads, "-trust-proxy", "-log-level", "warn",
				"-s3-endpoint", c.s3.Endpoint, "-s3-access-key", c.s3.AccessKey, "-s3-secret-key", c.s3.SecretKey, "-s3-bucket", c.s3.Bucket}}
		c.nodes = append(c.nodes, nd)
		backends = append(backends, nd.base())
	}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			nd.stop()
		}
		if t.Failed() && !c.checked.Load() {
			for _, nd := range c.nodes {
				t.Logf("instance %d log (tail):\n%s", nd.idx, tailFile(nd.log, 25))
			}
		}
	})
	var wg sync.WaitGroup
	for _, nd := range c.nodes { // started together: they migrate (nothing left) and start at once
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := nd.start(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	c.proxy, err = rrproxy.Start(backends, c.track.observe)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.proxy.Close)
	return c
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// installAnalysisCounter adds a trigger to the test's database that
// records every committed write of a blob's analysis (analyzed_at set),
// so that the test can count analyses per blob.
func installAnalysisCounter(t *testing.T, db *sql.DB) {
	t.Helper()
	_, err := db.Exec(`
		CREATE TABLE test_analyses (sha256 TEXT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp());
		CREATE FUNCTION test_count_analysis() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO test_analyses(sha256) VALUES (NEW.sha256);
			RETURN NEW;
		END $$;
		CREATE TRIGGER test_count_analysis_update AFTER UPDATE OF analyzed_at ON blobs
			FOR EACH ROW WHEN (NEW.analyzed_at IS NOT NULL) EXECUTE FUNCTION test_count_analysis();
		CREATE TRIGGER test_count_analysis_insert AFTER INSERT ON blobs
			FOR EACH ROW WHEN (NEW.analyzed_at IS NOT NULL) EXECUTE FUNCTION test_count_analysis();`)
	if err != nil {
		t.Fatalf("analysis counter: %v", err)
	}
}

// adminClient calls the admin API through the proxy.
type adminClient struct {
	base, token string
	hc          *http.Client
}

func (a *adminClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	var lastErr error
	for try := range 5 { // a 502 while an instance is away is retried
		if try > 0 {
			time.Sleep(time.Duration(try) * 200 * time.Millisecond)
			if in != nil {
				b, _ := json.Marshal(in)
				body = bytes.NewReader(b)
			}
		}
		req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		if a.token != "" {
			req.Header.Set("Authorization", "Bearer "+a.token)
		}
		resp, err := a.hc.Do(req)
		if err != nil {
			lastErr = err
			continue
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			lastErr = err
			continue
		}
		if resp.StatusCode >= 500 {
			lastErr = fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, data)
			continue
		}
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, data)
		}
		if out != nil {
			return json.Unmarshal(data, out)
		}
		return nil
	}
	return lastErr
}

func (c *cluster) login(t *testing.T) *adminClient {
	t.Helper()
	a := &adminClient{base: c.proxy.URL(), hc: &http.Client{Timeout: 30 * time.Second}}
	var resp struct {
		Token string `json:"token"`
	}
	if err := a.do(context.Background(), http.MethodPost, "/api/v1/auth/login",
		map[string]string{"username": c.admin.user, "password": c.admin.password}, &resp); err != nil || resp.Token == "" {
		t.Fatalf("admin login through the proxy: %v", err)
	}
	a.token = resp.Token
	return a
}

// device is one simulated tablet: its own store, its own source address
// (so that the per-address limits see devices apart, as in the field),
// talking to the proxy.
type device struct {
	idx     int
	userID  int64
	place   string
	c       *mobileclient.Client
	hc      *http.Client
	rng     *rand.Rand
	camera  string
	hh      []syncproto.Household
	visits  []string
	photos  []syncproto.EvidenceRef
	syncErr int
}

func newDevice(t *testing.T, base string, idx int, userID int64, place string) *device {
	t.Helper()
	dir := t.TempDir()
	local := net.IPv4(127, 2, byte(idx/250), byte(idx%250+1))
	d := &device{idx: idx, userID: userID, place: place, rng: rand.New(rand.NewPCG(uint64(idx), 7)), camera: filepath.Join(dir, "camera")}
	d.hc = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: local}}).DialContext,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     30 * time.Second,
	}}
	var err error
	d.c, err = mobileclient.Open(filepath.Join(dir, "device"), base, &mobileclient.Options{
		HTTPClient: d.hc,
		AppVersion: "cluster-test",
		// Several PATCHes per photo: 64 KiB chunks for photos of up to
		// 300 KB.
		ChunkSize: 64 << 10,
		Backoff:   mobileclient.Backoff{Base: 200 * time.Millisecond, Max: 2 * time.Second, MaxAttempts: 6},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.c.Close(); d.hc.CloseIdleConnections() })
	if err := os.MkdirAll(d.camera, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

// photo is a small picture (cheap to analyse) with an EXIF block, padded
// with incompressible COM segments to size bytes when size is larger.
func photo(seed uint64, size int, taken time.Time, gps [2]float64) []byte {
	jpg := evidencetest.JPEG(evidencetest.Photo{Seed: seed, Width: 320, Height: 240, Taken: taken, TakenOffset: true, GPSTime: taken, GPS: &gps})
	// After SOI and the APP1 (EXIF) segment that JPEG puts first.
	at := 4 + (int(jpg[4])<<8 | int(jpg[5])) // its length, big-endian
	r := rand.New(rand.NewPCG(seed, 11))
	var pad []byte
	for len(jpg)+len(pad) < size {
		n := min(65533, size-len(jpg)-len(pad)-4)
		if n < 1 {
			break
		}
		seg := make([]byte, 4+n)
		seg[0], seg[1] = 0xFF, 0xFE
		seg[2], seg[3] = byte((n+2)>>8), byte(n+2)
		for i := 4; i < len(seg); i++ {
			seg[i] = byte(r.Uint32())
		}
		pad = append(pad, seg...)
	}
	out := append([]byte{}, jpg[:at]...)
	out = append(out, pad...)
	return append(out, jpg[at:]...)
}

// recordVisit records a house_retrofit_inspection visit with a "before"
// and an "after" photo; every third device takes a 300 KB "before" photo
// (5 PATCHes of 64 KiB), the others about 20 KB.
func (d *device) recordVisit(round int) error {
	h := d.hh[d.rng.IntN(len(d.hh))]
	taken := time.Now().Add(-time.Duration(d.rng.IntN(3600)) * time.Second).Truncate(time.Second)
	gps := [2]float64{103.72 + d.rng.Float64()*0.05, 25.002 + d.rng.Float64()*0.015}
	var refs []syncproto.EvidenceRef
	for k, slot := range []string{"before", "after"} {
		size := 0
		if k == 0 && d.idx%3 == 0 {
			size = 300_000
		}
		data := photo(uint64(d.idx)<<20|uint64(round)<<4|uint64(k), size, taken, gps)
		f := filepath.Join(d.camera, fmt.Sprintf("IMG_%d_%d.jpg", round, k))
		if err := os.WriteFile(f, data, 0o600); err != nil {
			return err
		}
		ref, err := d.c.PrepareEvidence(f, slot, "image/jpeg")
		os.Remove(f)
		if err != nil {
			return fmt.Errorf("prepare evidence: %w", err)
		}
		refs = append(refs, ref)
	}
	q := func(s string) json.RawMessage { b, _ := json.Marshal(s); return b }
	id, err := d.c.RecordVisit(syncproto.Visit{
		HouseholdID: h.ID,
		FormID:      "house_retrofit_inspection",
		Answers: map[string]json.RawMessage{
			"head_name": q("杨绍华"), "house_grade": q("C"), "retrofit_method": q("repair"), "retrofit_finished": q("yes"),
			"inspection_round": q("first"), "inspection_result": q("pass"), "plaque_installed": q("yes"),
			"inspection_date": q(taken.In(time.FixedZone("CST", 8*3600)).Format("2006-01-02")),
		},
		Point:      &syncproto.Point{Lon: gps[0], Lat: gps[1]},
		AccuracyM:  6,
		DeviceTime: taken,
		Evidence:   refs,
	})
	if err != nil {
		return fmt.Errorf("record visit: %w", err)
	}
	d.visits = append(d.visits, id)
	d.photos = append(d.photos, refs...)
	return nil
}

// settled reports whether the device has nothing left for the server.
func (d *device) settled() (mobileclient.PendingInfo, bool, error) {
	p, err := d.c.Pending()
	return p, err == nil && p.Mutations == 0 && p.Uploads == 0 && p.Rejected == 0, err
}

// herdOptions says what breaks in the middle of the herd.
type herdOptions struct {
	// disrupt runs once half the round syncs are done; recover once three
	// quarters are (either may be nil). Both run beside the herd, on
	// another goroutine: they report with t.Error, never t.Fatal.
	disrupt, recover func(t *testing.T)
}

// herdFigures are what the herd measured.
type herdFigures struct {
	devices, visits, photos int
	setupTook, finalTook    time.Duration // users, enrollment, first syncs; final syncs
	roundsTook              time.Duration
	syncErrors              int
	disruptAt               time.Time
	firstOKAfter            time.Duration // disruption → first sync begun after it that succeeded
	failedAfter             int           // syncs begun after the disruption that failed
}

// runHerd enrolls n devices through the proxy, then runs clusterRounds
// rounds of one visit with photos and a sync per device, all devices at
// once, with o's disruption in the middle; then every device syncs until
// it has nothing left.
func (c *cluster) runHerd(t *testing.T, n int, o herdOptions) ([]*device, herdFigures) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	setupStart := time.Now()
	admin := c.login(t)
	runID := strconv.FormatInt(time.Now().UnixNano()%1e6, 36)
	devs := make([]*device, n)
	for i := range devs {
		place := c.groups[i%len(c.groups)]
		var u struct {
			ID int64 `json:"id"`
		}
		if err := admin.do(ctx, http.MethodPost, "/api/v1/users", map[string]any{
			"username": fmt.Sprintf("cluster_%s_%03d", runID, i), "display_name": fmt.Sprintf("网格员%03d", i),
			"role": "field_worker", "place_codes": []string{place},
		}, &u); err != nil {
			t.Fatalf("user %d: %v", i, err)
		}
		devs[i] = newDevice(t, c.proxy.URL(), i, u.ID, place)
	}
	// Enrollment and first sync, 16 at a time.
	forAll := func(workers int, fn func(d *device) error) error {
		sem := make(chan struct{}, workers)
		errs := make(chan error, len(devs))
		var wg sync.WaitGroup
		for _, d := range devs {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if err := fn(d); err != nil {
					errs <- fmt.Errorf("device %d: %w", d.idx, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		return <-errs
	}
	err := forAll(16, func(d *device) error {
		var ec struct {
			Code string `json:"code"`
		}
		if err := admin.do(ctx, http.MethodPost, fmt.Sprintf("/api/v1/users/%d/enrollment-codes", d.userID), struct{}{}, &ec); err != nil {
			return err
		}
		if err := d.c.Enroll(ctx, ec.Code, fmt.Sprintf("平板%03d", d.idx)); err != nil {
			return err
		}
		if _, err := d.c.Sync(ctx); err != nil {
			return fmt.Errorf("first sync: %w", err)
		}
		hh, err := d.c.Households("")
		if err != nil {
			return err
		}
		if len(hh) == 0 {
			return errors.New("no households after the first sync")
		}
		d.hh = hh
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The rounds: every device at once (bounded at 64 in flight).
	var f herdFigures
	f.devices, f.setupTook = n, time.Since(setupStart)
	total := int64(n * clusterRounds)
	var finished atomic.Int64
	var disruptNanos atomic.Int64 // unix nanos of the disruption; 0 before
	var firstOK atomic.Int64      // unix nanos of the first good sync begun after it
	var failedAfter, syncErrs atomic.Int64
	var wg sync.WaitGroup
	bg := make(chan struct{})
	go func() { // the disruption and the recovery, beside the herd
		defer close(bg)
		wait := func(k int64) bool {
			for finished.Load() < k {
				select {
				case <-ctx.Done():
					return false
				case <-time.After(20 * time.Millisecond):
				}
			}
			return true
		}
		if !wait(total/2) || o.disrupt == nil {
			return
		}
		disruptNanos.Store(time.Now().UnixNano())
		o.disrupt(t)
		if !wait(total*3/4) || o.recover == nil {
			return
		}
		o.recover(t)
	}()
	start := time.Now()
	sem := make(chan struct{}, 64)
	var recErr atomic.Value
	for _, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range clusterRounds {
				sem <- struct{}{}
				err := d.recordVisit(r)
				if err != nil {
					<-sem
					recErr.Store(fmt.Errorf("device %d: %w", d.idx, err))
					return
				}
				began := time.Now().UnixNano()
				_, err = d.c.Sync(ctx)
				<-sem
				dis := disruptNanos.Load()
				if err != nil {
					d.syncErr++
					syncErrs.Add(1)
					if dis != 0 && began > dis {
						failedAfter.Add(1)
					}
				} else if dis != 0 && began > dis {
					firstOK.CompareAndSwap(0, time.Now().UnixNano())
				}
				finished.Add(1)
			}
		}()
	}
	wg.Wait()
	f.roundsTook = time.Since(start)
	<-bg
	if err, ok := recErr.Load().(error); ok {
		t.Fatal(err)
	}
	if o.disrupt != nil && disruptNanos.Load() == 0 {
		t.Fatal("the herd ended before the disruption")
	}
	if dis := disruptNanos.Load(); dis != 0 {
		f.disruptAt = time.Unix(0, dis)
		if ok := firstOK.Load(); ok != 0 {
			f.firstOKAfter = time.Duration(ok - dis)
		}
	}
	f.syncErrors, f.failedAfter = int(syncErrs.Load()), int(failedAfter.Load())

	// The final syncs: each device until nothing is left (a few tries).
	finalStart := time.Now()
	err = forAll(32, func(d *device) error {
		var last error
		for range 5 {
			_, last = d.c.Sync(ctx)
			p, ok, err := d.settled()
			if err != nil {
				return err
			}
			if ok {
				return nil
			}
			if last == nil {
				last = fmt.Errorf("after a sync without error: %+v", p)
			}
		}
		us, _ := d.c.Uploads()
		return fmt.Errorf("not settled after 5 final syncs: %v; uploads %+v", last, us)
	})
	f.finalTook = time.Since(finalStart)
	if err != nil {
		t.Error(err)
	}
	for _, d := range devs {
		f.visits += len(d.visits)
		f.photos += len(d.photos)
	}
	return devs, f
}

// verify checks PostgreSQL and the bucket after the herd (see the
// acceptance of issue 15) and returns the per-blob analysis counts.
func (c *cluster) verify(t *testing.T, devs []*device) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ro := c.dbURL + "&default_transaction_read_only=on"
	db := pgtest.Open(t, ro)

	// Every device's visits, each present once, with its two photos; and
	// no visit the devices did not record.
	want := map[string]bool{}
	blobs := map[string]int64{}
	for _, d := range devs {
		for _, id := range d.visits {
			want[id] = true
		}
		for _, p := range d.photos {
			blobs[p.SHA256] = p.Size
		}
	}
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	rows, err := db.QueryContext(ctx, `SELECT v.id, count(*), (SELECT count(*) FROM visit_evidence e WHERE e.visit_id = v.id)
		FROM visits v WHERE v.form_id = 'house_retrofit_inspection' AND v.device_id IS NOT NULL GROUP BY v.id`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for rows.Next() {
		var id string
		var n, ev int
		if err := rows.Scan(&id, &n, &ev); err != nil {
			t.Fatal(err)
		}
		got[id] = true
		switch {
		case !want[id]:
			t.Errorf("visit %s in PostgreSQL was recorded by no device", id)
		case n != 1:
			t.Errorf("visit %s present %d times", id, n)
		case ev != 2:
			t.Errorf("visit %s has %d evidence rows, want 2", id, ev)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	missing := 0
	for id := range want {
		if !got[id] {
			missing++
			if missing <= 5 {
				t.Errorf("acknowledged visit %s is missing from PostgreSQL", id)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged visits are missing", missing, len(want))
	}
	// Each push answered once: one stored result per device and seq.
	var dupResults int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT device_id, seq FROM mutation_results
		GROUP BY device_id, seq HAVING count(*) > 1) d`).Scan(&dupResults); err != nil {
		t.Fatal(err)
	}
	if dupResults != 0 {
		t.Errorf("%d mutations have more than one stored result", dupResults)
	}

	// Every blob: recorded in PostgreSQL with its size, and in the bucket
	// with bytes that hash to its name.
	store, err := s3blob.New(ctx, c.s3)
	if err != nil {
		t.Fatal(err)
	}
	for sum, size := range blobs {
		var dbSize int64
		if err := db.QueryRowContext(ctx, `SELECT size FROM blobs WHERE sha256 = $1`, sum).Scan(&dbSize); err != nil || dbSize != size {
			t.Errorf("blob %s: size %d in PostgreSQL (%v), want %d", sum, dbSize, err, size)
			continue
		}
		rc, info, err := store.Open(ctx, sum)
		if err != nil {
			t.Errorf("blob %s not in the bucket: %v", sum, err)
			continue
		}
		h := sha256.New()
		n, err := io.Copy(h, rc)
		rc.Close()
		if err != nil || n != size || info.Size != size || hex.EncodeToString(h.Sum(nil)) != sum {
			t.Errorf("blob %s in the bucket: %d bytes (info %d), hash %x, %v", sum, n, info.Size, h.Sum(nil), err)
		}
	}
	// No upload left active.
	var active int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM uploads WHERE state = 'active'`).Scan(&active); err != nil {
		t.Fatal(err)
	}
	if active != 0 {
		t.Errorf("%d uploads still active in PostgreSQL after every device settled", active)
	}

	// Analysis finishes: every blob analysed (waiting for the workers).
	deadline := time.Now().Add(2 * time.Minute)
	var unanalysed int
	for {
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM blobs WHERE analyzed_at IS NULL`).Scan(&unanalysed); err != nil {
			t.Fatal(err)
		}
		if unanalysed == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if unanalysed != 0 {
		t.Fatalf("%d blobs still unanalysed 2 minutes after the herd", unanalysed)
	}
	t.Logf("analysis: all %d blobs analysed %v after the checks began", len(blobs), time.Since(deadline.Add(-2*time.Minute)).Round(time.Millisecond))
	c.checked.Store(!t.Failed())
	// ... and exactly once: one committed analysis per blob.
	t.Run("AnalysedExactlyOnce", func(t *testing.T) {
		rows, err := db.QueryContext(ctx, `SELECT sha256, count(*) FROM test_analyses GROUP BY sha256`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		counts := map[string]int{}
		extra := 0
		for rows.Next() {
			var sum string
			var n int
			if err := rows.Scan(&sum, &n); err != nil {
				t.Fatal(err)
			}
			counts[sum] = n
			if n > 1 {
				extra += n - 1
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		never := 0
		for sum := range blobs {
			if counts[sum] == 0 {
				never++
			}
		}
		if never > 0 || extra > 0 {
			t.Errorf("of %d blobs, %d were never analysed and %d analyses were repeated (%d blobs analysed more than once)",
				len(blobs), never, extra, moreThanOnce(counts))
		}
	})
}

func moreThanOnce(counts map[string]int) int {
	n := 0
	for _, c := range counts {
		if c > 1 {
			n++
		}
	}
	return n
}

// logFigures logs what the herd measured, and the proxy's counts.
func (c *cluster) logFigures(t *testing.T, f herdFigures) {
	t.Helper()
	c.track.mu.Lock()
	posts, patches, moved, movedUploads := c.track.posts, c.track.patches, c.track.moved, len(c.track.movedBy)
	c.track.mu.Unlock()
	t.Logf("herd: %d devices, %d visits with %d photos in %v of rounds: %.1f visits/s through the proxy",
		f.devices, f.visits, f.photos, f.roundsTook.Round(time.Millisecond), float64(f.visits)/f.roundsTook.Seconds())
	t.Logf("uploads: %d created (POST), %d PATCHes answered, %d of them on another instance than their POST (%d uploads moved)",
		posts, patches, moved, movedUploads)
	t.Logf("phases: setup (users, enrollment, first sync through the proxy) %v, rounds %v, final syncs %v",
		f.setupTook.Round(time.Millisecond), f.roundsTook.Round(time.Millisecond), f.finalTook.Round(time.Millisecond))
	t.Logf("proxy: requests per instance %v, refused connections skipped %d, requests cut without an answer (502) %d",
		c.proxy.Counts(), c.proxy.Refused(), c.proxy.Failed())
	if !f.disruptAt.IsZero() {
		t.Logf("disruption: %d round syncs failed in all, %d of those begun after it; first good sync begun after it finished %v after it",
			f.syncErrors, f.failedAfter, f.firstOKAfter.Round(time.Millisecond))
	}
	if moved == 0 {
		t.Errorf("no PATCH landed on another instance than its upload's POST: the cross-instance path was not exercised")
	}
}

// TestCluster_ThreeInstancesKillOne: three instances behind the
// round-robin proxy and a herd of devices with photos; in the middle one
// instance is killed with SIGKILL, and later started again on the same
// data folder. Every acknowledged visit is in PostgreSQL once, every
// photo is in the bucket and hashes to its name, no upload is left
// unfinished (some of their PATCHes went to another instance than their
// POST), and every photo is analysed exactly once.
func TestCluster_ThreeInstancesKillOne(t *testing.T) {
	c := startCluster(t, pgtest.NewDatabase(t), 3)
	victim := c.nodes[1]
	var killedAt time.Time
	devs, f := c.runHerd(t, clusterDevices(t), herdOptions{
		disrupt: func(t *testing.T) {
			killedAt = time.Now()
			if err := victim.kill(); err != nil {
				t.Error(err)
				return
			}
			t.Logf("instance 1 killed (SIGKILL) in the middle of the herd")
		},
		recover: func(t *testing.T) {
			began := time.Now()
			if err := victim.start(); err != nil {
				t.Error(err)
				return
			}
			t.Logf("instance 1 started again on its data folder %v after the kill; healthy after %v",
				began.Sub(killedAt).Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
		},
	})
	c.logFigures(t, f)
	c.verify(t, devs)
}

// TestCluster_PostgresRestart: the same herd on a private PostgreSQL that
// restarts (pg_ctl restart -m fast) in the middle of it: the instances
// reconnect, the devices retry, and nothing is lost or duplicated.
func TestCluster_PostgresRestart(t *testing.T) {
	srv := pgtest.StartServer(t)
	c := startCluster(t, srv.NewDatabase(t), 3)
	devs, f := c.runHerd(t, clusterDevices(t), herdOptions{
		disrupt: func(t *testing.T) {
			began := time.Now()
			if err := srv.Restart(); err != nil {
				t.Errorf("restart PostgreSQL: %v", err)
				return
			}
			t.Logf("PostgreSQL restarted in the middle of the herd (%v)", time.Since(began).Round(time.Millisecond))
		},
	})
	c.logFigures(t, f)
	c.verify(t, devs)
}
