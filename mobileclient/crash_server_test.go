package mobileclient

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
)

// serverProc is the real fieldsync binary running as a subprocess.
type serverProc struct {
	t    *testing.T
	bin  string
	dir  string
	addr string
	cmd  *exec.Cmd
	log  *os.File
	// exited is closed when the running process has ended (after Wait).
	exited chan struct{}
}

func buildServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "fieldsync")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "fieldsync/server/cmd/fieldsync")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build server: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (p *serverProc) start(extra ...string) {
	p.t.Helper()
	args := append([]string{"run", "-data", p.dir, "-addr", p.addr, "-log-level", "warn"}, extra...)
	p.cmd = exec.Command(p.bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	exited, cmd := make(chan struct{}), p.cmd
	p.exited = exited
	go func() { _ = cmd.Wait(); close(exited) }()
	// A test that fails (here or later) must not leave the server running:
	// one left from a failed start went on analysing the demo's photos
	// under -race for an hour.
	p.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	// The first start loads the demo county with its 1,223 photos (about
	// 15 s alone; 94 s under -race on a quiet machine, and more than 3
	// minutes once on a loaded one). A server that stops is a failure at
	// once; one that is still starting after 10 minutes is taken as hung.
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + p.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-exited:
			p.t.Fatalf("server exited while starting (%v); log in %s", cmd.ProcessState, p.log.Name())
		case <-time.After(20 * time.Millisecond):
		}
	}
	p.t.Fatalf("server did not come up in 10 minutes; log in %s", p.log.Name())
}

func (p *serverProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

func (p *serverProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.exited
}

// adminCall makes an admin API call on the subprocess server.
func adminCall(t *testing.T, base, token, method, path, body string, out any) {
	t.Helper()
	req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b := bufio.NewScanner(resp.Body)
		b.Scan()
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b.Text())
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCrash_ServerKilledUnderLoad runs the real server binary, has devices
// record and sync visits through it, and kills it with SIGKILL at random
// moments, restarting it on the same data folder each time. Afterwards:
// every visit any device was told was received is on the server exactly
// once, the change log has no gap, and every device converges.
//
// FIELDSYNC_CRASH_KILLS sets the number of kills (default 10; the long run
// is FIELDSYNC_CRASH_KILLS=100).
func TestCrash_ServerKilledUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server binary")
	}
	kills := 10
	if v := os.Getenv("FIELDSYNC_CRASH_KILLS"); v != "" {
		kills, _ = strconv.Atoi(v)
	}
	ctx := context.Background()
	logf, err := os.Create(filepath.Join(t.TempDir(), "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	p := &serverProc{t: t, bin: buildServer(t), dir: t.TempDir(), addr: freeAddr(t), log: logf}
	p.start("-demo")
	base := "http://" + p.addr
	var login struct{ Token string }
	adminCall(t, base, "", "POST", "/api/v1/auth/login", `{"username":"admin","password":"demo-1234"}`, &login)
	var users []struct {
		ID       int64  `json:"id"`
		Username string `json:"username"`
	}
	adminCall(t, base, login.Token, "GET", "/api/v1/users", "", &users)
	type dev struct {
		c      *Client
		hh     []string
		mu     sync.Mutex
		acked  []string // visits the server answered "applied"
		queued []string // visits recorded, maybe not yet acknowledged
	}
	var devs []*dev
	for _, u := range users {
		if !strings.HasPrefix(u.Username, "wangge_") {
			continue
		}
		for k := 0; k < 2; k++ {
			var ec struct{ Code string }
			adminCall(t, base, login.Token, "POST", fmt.Sprintf("/api/v1/users/%d/enrollment-codes", u.ID), "", &ec)
			c := openTest(t, t.TempDir(), base, &Options{Backoff: Backoff{Base: 5 * time.Millisecond, Max: 50 * time.Millisecond, MaxAttempts: 3},
				HTTPClient: &http.Client{Timeout: 5 * time.Second}})
			if err := c.Enroll(ctx, ec.Code, fmt.Sprintf("%s-%d", u.Username, k)); err != nil {
				t.Fatal(err)
			}
			mustSync(t, c)
			hs, err := c.Households("")
			if err != nil || len(hs) == 0 {
				t.Fatalf("device has no households: %v", err)
			}
			d := &dev{c: c}
			for _, h := range hs[:min(20, len(hs))] {
				d.hh = append(d.hh, h.ID)
			}
			devs = append(devs, d)
		}
	}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	t.Logf("seed-free run: %d devices, %d kills", len(devs), kills)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, d := range devs {
		wg.Add(1)
		go func(i int, d *dev) {
			defer wg.Done()
			for n := 0; n < 100000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				for k := 0; k < 2; k++ {
					id, err := d.c.RecordVisit(surveyVisit(d.hh[(n+k+i)%len(d.hh)], "王建国"))
					if err != nil {
						t.Errorf("record: %v", err)
						return
					}
					d.mu.Lock()
					d.queued = append(d.queued, id)
					d.mu.Unlock()
				}
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := d.c.Sync(sctx)
				cancel()
				if err == nil {
					// Everything recorded before this sync was answered.
					d.mu.Lock()
					d.acked = append(d.acked[:0], d.queued...)
					d.mu.Unlock()
				} else {
					time.Sleep(30 * time.Millisecond)
				}
			}
		}(i, d)
	}
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(p.dir, "fieldsync.db")+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	missing := func() []string {
		var out []string
		for _, d := range devs {
			d.mu.Lock()
			acked := append([]string(nil), d.acked...)
			d.mu.Unlock()
			for _, id := range acked {
				var n int
				if err := db.QueryRow(`SELECT count(*) FROM visits WHERE id = ?`, id).Scan(&n); err != nil || n != 1 {
					out = append(out, id)
				}
			}
		}
		return out
	}
	for k := 0; k < kills; k++ {
		time.Sleep(time.Duration(150+rng.Intn(900)) * time.Millisecond)
		p.kill()
		// Acknowledged means durable: with the server dead, every visit a
		// device was told about is already in the file.
		if m := missing(); len(m) > 0 {
			t.Fatalf("kill %d: %d acknowledged visits not in the database, e.g. %s", k+1, len(m), m[0])
		}
		p.start()
	}
	close(stop)
	wg.Wait()
	for _, d := range devs {
		ok := false
		for try := 0; try < 20 && !ok; try++ {
			_, err := d.c.Sync(ctx)
			ok = err == nil
		}
		if !ok {
			t.Fatal("a device could not finish its final sync")
		}
		d.mu.Lock()
		d.acked = append(d.acked[:0], d.queued...)
		d.mu.Unlock()
	}
	if m := missing(); len(m) > 0 {
		t.Fatalf("after the final sync %d visits are missing, e.g. %s", len(m), m[0])
	}
	total := 0
	for _, d := range devs {
		total += len(d.queued)
	}
	var onServer int
	db.QueryRow(`SELECT count(*) FROM visits WHERE device_id IS NOT NULL`).Scan(&onServer)
	if onServer != total {
		t.Fatalf("server holds %d device visits, devices recorded %d", onServer, total)
	}
	var cnt, lo, hi int64
	db.QueryRow(`SELECT count(*), min(seq), max(seq) FROM changes`).Scan(&cnt, &lo, &hi)
	if hi-lo+1 != cnt {
		t.Fatalf("change log has gaps: %d rows between %d and %d", cnt, lo, hi)
	}
	// Converged: each device's households equal the server's.
	for i, d := range devs {
		hs, err := d.c.Households("")
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hs {
			var version int64
			var fields string
			if err := db.QueryRow(`SELECT version, fields FROM households WHERE id = ?`, h.ID).Scan(&version, &fields); err != nil {
				t.Fatalf("device %d household %s: %v", i, h.ID, err)
			}
			if version != h.Version {
				t.Errorf("device %d household %s at v%d, server v%d", i, h.ID, h.Version, version)
			}
		}
		if p, _ := d.c.Pending(); p.Mutations != 0 {
			t.Errorf("device %d still has %d pending", i, p.Mutations)
		}
	}
	t.Logf("survived %d kills; %d visits from %d devices, all acknowledged visits durable, change log %d..%d without gaps", kills, total, len(devs), lo, hi)
	p.stop()
}
