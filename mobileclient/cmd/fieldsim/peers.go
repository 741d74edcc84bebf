package main

import (
	"bytes"
	"context"
	crand "crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"fieldsync/mobileclient/linkproxy"
)

// Peers of the benchmark, pinned, installed into the cache folder on first
// use with their registries' own clients.
const (
	tusdModule     = "github.com/tus/tusd/v2/cmd/tusd"
	tusdVersion    = "v2.9.1"
	pouchdbVersion = "9.0.0"
	pouchSrvVer    = "4.2.0"
)

// defaultCacheDir is where peers are installed: $XDG_CACHE_HOME (or
// ~/.cache)/fieldsync-bench.
func defaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "fieldsync-bench")
	}
	return filepath.Join(os.TempDir(), "fieldsync-bench")
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// process is a peer the benchmark started; only it is ever stopped, by
// its own pid.
type process struct {
	name string
	cmd  *exec.Cmd
	url  string
	logs string
	done chan error
}

// startProcess starts cmd with its output (its standard error only, when
// cmd.Stdout is set) appended to logFile and waits until ready answers
// true (at most wait). The process gets SIGTERM if the simulator dies
// first.
func startProcess(ctx context.Context, name string, cmd *exec.Cmd, logFile string, wait time.Duration, ready func() bool) (*process, error) {
	lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, err
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	}
	if cmd.Stdout == nil {
		cmd.Stdout = lf
	}
	cmd.Stderr = lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logs: logFile, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); lf.Close() }()
	deadline := time.Now().Add(wait)
	for {
		select {
		case err := <-p.done:
			p.done <- err
			return nil, fmt.Errorf("%s exited before it was ready (%v); log %s:\n%s", name, err, logFile, lastLines(logFile, 10))
		default:
		}
		if ready() {
			return p, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.stop()
			return nil, fmt.Errorf("%s not ready in %v; log %s:\n%s", name, wait, logFile, lastLines(logFile, 10))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop asks the process to end (SIGTERM), then kills it after 10 s. It
// signals only the process it started, by pid.
func (p *process) stop() error {
	if p == nil || p.cmd.Process == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		return nil
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		err := <-p.done
		p.done <- err
		return fmt.Errorf("%s did not stop on SIGTERM; killed", p.name)
	}
}

func lastLines(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := splitLines(string(data))
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// answers reports whether GET url answers with a status below 500.
func answers(url string) bool {
	c := &http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode < 500
}

// --- the fieldsync server as a subprocess ---

// moduleRoot finds the fieldsync module the benchmark runs from.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the fieldsync module (run from the repository)")
	}
	return filepath.Dir(mod), nil
}

// buildServer builds the fieldsync binary from this checkout into dir.
func buildServer(ctx context.Context, dir string) (string, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "fieldsync")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./server/cmd/fieldsync")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./server/cmd/fieldsync: %w\n%s", err, out)
	}
	return bin, nil
}

// startServerProcess runs the fieldsync binary on dataDir with the demo
// county, on a free loopback port.
func startServerProcess(ctx context.Context, bin, dataDir string) (*process, string, error) {
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, "", err
	}
	var lastErr error
	for try := 0; try < 3; try++ {
		port, err := freePort()
		if err != nil {
			return nil, "", err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		cmd := exec.Command(bin, "run", "-data", dataDir, "-addr", addr, "-demo", "-log-level", "warn")
		p, err := startProcess(ctx, "fieldsync", cmd, filepath.Join(dataDir, "server.log"), 60*time.Second,
			func() bool { return answers("http://" + addr + "/healthz") })
		if err == nil {
			p.url = "http://" + addr
			return p, addr, nil
		}
		lastErr = err
	}
	return nil, "", lastErr
}

// peakRSS reads a process's peak resident set (VmHWM) in bytes.
func peakRSS(pid int) (int64, error) { return procStatus(pid, "VmHWM:") }

// --- tusd (p4) ---

// ensureTusd installs tusd v2.9.1 into cache/bin with go install (GOBIN),
// unless the binary there is already that version.
func ensureTusd(ctx context.Context, cache string, logf func(string, ...any)) (string, error) {
	binDir := filepath.Join(cache, "bin")
	bin := filepath.Join(binDir, "tusd")
	if out, err := exec.CommandContext(ctx, "go", "version", "-m", bin).Output(); err == nil &&
		bytes.Contains(out, []byte("github.com/tus/tusd/v2\t"+tusdVersion)) {
		return bin, nil
	}
	logf("installing tusd %s into %s (go install, first run only)", tusdVersion, binDir)
	cmd := exec.CommandContext(ctx, "go", "install", tusdModule+"@"+tusdVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+binDir)
	cmd.Dir = os.TempDir() // outside any module: go install pkg@version
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s@%s: %w\n%s", tusdModule, tusdVersion, err, out)
	}
	return bin, nil
}

// startTusd runs tusd with its file store in dir, or with its s3store on
// s3's bucket (which must exist) when s3 is not nil, on a free loopback
// port; its tus endpoint is url + "/files/".
func startTusd(ctx context.Context, bin, dir string, s3 *s3Config) (*process, error) {
	if err := os.MkdirAll(filepath.Join(dir, "uploads"), 0o750); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	args := []string{"-host", "127.0.0.1", "-port", strconv.Itoa(port), "-upload-dir", filepath.Join(dir, "uploads"),
		"-base-path", "/files/", "-verbose=false", "-show-greeting=false", "-disable-download", "-disable-cors"}
	if s3 != nil {
		args = append(args, "-s3-bucket", s3.Bucket, "-s3-endpoint", "http://"+s3.Endpoint, "-s3-object-prefix", "tusd/")
	}
	cmd := exec.Command(bin, args...)
	if s3 != nil {
		cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+s3.AccessKey, "AWS_SECRET_ACCESS_KEY="+s3.SecretKey, "AWS_REGION=us-east-1")
	}
	p, err := startProcess(ctx, "tusd", cmd, filepath.Join(dir, "tusd.log"), 30*time.Second, func() bool {
		req, _ := http.NewRequest(http.MethodOptions, base+"/files/", nil)
		resp, err := (&http.Client{Timeout: time.Second}).Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.Header.Get("Tus-Version") != ""
	})
	if err != nil {
		return nil, err
	}
	p.url = base
	return p, nil
}

// --- PouchDB (p8) ---

//go:embed pouchbench.js
var pouchBenchJS []byte

// ensurePouch installs pouchdb and pouchdb-server into cache/node with npm
// (first run only) and returns the node_modules folder.
func ensurePouch(ctx context.Context, cache string, logf func(string, ...any)) (string, error) {
	if _, err := exec.LookPath("node"); err != nil {
		return "", errors.New("node is not installed")
	}
	dir := filepath.Join(cache, "node")
	mods := filepath.Join(dir, "node_modules")
	if installedVersion(mods, "pouchdb") == pouchdbVersion && installedVersion(mods, "pouchdb-server") == pouchSrvVer {
		return mods, nil
	}
	if _, err := exec.LookPath("npm"); err != nil {
		return "", errors.New("npm is not installed")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", err
	}
	logf("installing pouchdb %s and pouchdb-server %s into %s (npm, first run only)", pouchdbVersion, pouchSrvVer, dir)
	cmd := exec.CommandContext(ctx, "npm", "install", "--prefix", dir, "--no-audit", "--no-fund", "--loglevel=error",
		"pouchdb@"+pouchdbVersion, "pouchdb-server@"+pouchSrvVer)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm install: %w\n%s", err, out)
	}
	return mods, nil
}

func installedVersion(mods, pkg string) string {
	data, err := os.ReadFile(filepath.Join(mods, pkg, "package.json"))
	if err != nil {
		return ""
	}
	var p struct {
		Version string `json:"version"`
	}
	_ = json.Unmarshal(data, &p)
	return p.Version
}

// startPouchServer runs pouchdb-server (LevelDB on disk in dir) on a free
// loopback port.
func startPouchServer(ctx context.Context, mods, dir string) (*process, error) {
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o750); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command("node", filepath.Join(mods, "pouchdb-server", "bin", "pouchdb-server"),
		"--port", strconv.Itoa(port), "--host", "127.0.0.1", "--dir", filepath.Join(dir, "data"),
		"--config", filepath.Join(dir, "config.json"), "--no-stdout-logs", "--no-color")
	cmd.Dir = dir
	p, err := startProcess(ctx, "pouchdb-server", cmd, filepath.Join(dir, "pouchdb-server.log"), 60*time.Second,
		func() bool { return answers(base + "/") })
	if err != nil {
		return nil, err
	}
	p.url = base
	return p, nil
}

// pouchResult is what pouchbench.js prints.
type pouchResult struct {
	Seconds  float64 `json:"seconds"`
	Docs     int     `json:"docs"`
	Written  int     `json:"written"`
	Devices  int     `json:"devices"`
	LoadSecs float64 `json:"load_seconds"`
}

// runPouchBench loads each device's documents (docsFile: JSON lines
// {"device":i,"doc":{...}}) into its own local PouchDB (LevelDB) and times
// all devices replicating into remote at once. The local databases go in
// localDir.
func runPouchBench(ctx context.Context, mods, dir, localDir, docsFile, remote string) (pouchResult, error) {
	script := filepath.Join(dir, "pouchbench.js")
	if err := os.WriteFile(script, pouchBenchJS, 0o640); err != nil {
		return pouchResult{}, err
	}
	cmd := exec.CommandContext(ctx, "node", script, docsFile, remote, localDir)
	cmd.Env = append(os.Environ(), "NODE_PATH="+mods)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return pouchResult{}, fmt.Errorf("node pouchbench.js: %w\n%s", err, stderr.String())
	}
	lines := splitLines(string(out))
	if len(lines) == 0 {
		return pouchResult{}, errors.New("pouchbench.js printed nothing")
	}
	var r pouchResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		return r, fmt.Errorf("pouchbench.js: %w: %s", err, lines[len(lines)-1])
	}
	return r, nil
}

// --- the S3 object store (p4_upload_mb_s_s3) ---

// The object store p4 measures our endpoint's S3 store against: the
// shared test server when the test script's variables name one, else a
// private versitygw (posix backend) the benchmark starts and stops.
const (
	versitygwModule  = "github.com/versity/versitygw/cmd/versitygw"
	versitygwVersion = "v1.8.0"
	envS3Endpoint    = "FIELDSYNC_TEST_S3_ENDPOINT"
	envS3AccessKey   = "FIELDSYNC_TEST_S3_ACCESS_KEY"
	envS3SecretKey   = "FIELDSYNC_TEST_S3_SECRET_KEY"
	envVersitygw     = "FIELDSYNC_TEST_VERSITYGW"
)

// s3Store is an object store for one measurement: its config (with a
// fresh bucket), what it is, and how to clean up.
type s3Store struct {
	cfg  s3Config
	desc string
	stop func()
}

// s3Server is the S3 server of one bench run: its endpoint and root keys,
// what it is, and how to stop it (nothing, for the shared test server).
type s3Server struct {
	endpoint, access, secret string
	desc                     string
	stop                     func()
}

// startS3 returns an S3 store with a fresh bucket (emptied and removed by
// stop) on the bench run's one S3 server (b.s3Server), so that every
// figure measured on S3 (ours, tusd's s3store) uses the same server.
func (b *bench) startS3(ctx context.Context) (*s3Store, error) {
	srv, err := b.s3Server(ctx)
	if err != nil {
		return nil, err
	}
	var rnd [4]byte
	_, _ = crand.Read(rnd[:])
	cfg := s3Config{Endpoint: srv.endpoint, AccessKey: srv.access, SecretKey: srv.secret, Bucket: "fieldsim-p4-" + hex.EncodeToString(rnd[:])}
	return &s3Store{cfg: cfg, desc: srv.desc, stop: func() { removeBucket(cfg) }}, nil
}

// s3Server returns the run's S3 server, starting it on first use: the
// shared test S3 server when the test script's variables name one, else a
// private versitygw under the work folder, stopped by stopS3.
func (b *bench) s3Server(ctx context.Context) (*s3Server, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.s3 != nil {
		return b.s3, nil
	}
	srv, err := startS3Server(ctx, b.o.CacheDir, filepath.Join(b.work, "s3"), b.logf)
	if err != nil {
		return nil, err
	}
	b.s3 = srv
	return srv, nil
}

// stopS3 stops a private S3 server the run started.
func (b *bench) stopS3() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.s3 != nil {
		b.s3.stop()
		b.s3 = nil
	}
}

// startS3Server returns the shared test S3 server, or starts a private
// versitygw under dir.
func startS3Server(ctx context.Context, cache, dir string, logf func(string, ...any)) (*s3Server, error) {
	if ep := os.Getenv(envS3Endpoint); ep != "" {
		host, _, err := net.SplitHostPort(ep)
		if err != nil || !linkproxy.IsLoopback(host) {
			return nil, fmt.Errorf("%s=%s: want a loopback host:port", envS3Endpoint, ep)
		}
		return &s3Server{endpoint: ep, access: os.Getenv(envS3AccessKey), secret: os.Getenv(envS3SecretKey),
			desc: "the shared test S3 server (versitygw, posix) at " + ep, stop: func() {}}, nil
	}
	bin, err := ensureVersitygw(ctx, cache, logf)
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o750); err != nil {
		return nil, err
	}
	var rnd [4]byte
	_, _ = crand.Read(rnd[:])
	access, secret := "fieldsim", "fieldsim-"+hex.EncodeToString(rnd[:])
	var lastErr error
	for try := 0; try < 3; try++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		ep := "127.0.0.1:" + strconv.Itoa(port)
		cmd := exec.Command(bin, "--port", ep, "--access", access, "--secret", secret, "--quiet", "posix", data)
		p, err := startProcess(ctx, "versitygw", cmd, filepath.Join(dir, "versitygw.log"), 30*time.Second,
			func() bool { return answers("http://" + ep + "/") })
		if err != nil {
			lastErr = err
			continue
		}
		return &s3Server{endpoint: ep, access: access, secret: secret,
			desc: "a private versitygw " + versitygwVersion + " (posix backend) at " + ep, stop: func() { _ = p.stop() }}, nil
	}
	return nil, lastErr
}

// s3Client is a client of cfg's server with its root keys.
func s3Client(cfg s3Config) (*minio.Client, error) {
	return minio.New(cfg.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""), Region: "us-east-1"})
}

// ensureVersitygw finds versitygw v1.8.0: $FIELDSYNC_TEST_VERSITYGW, the
// test script's .ci/bin/versitygw, or cache/bin/versitygw, which it
// installs there with go install (GOBIN) when none is that version.
func ensureVersitygw(ctx context.Context, cache string, logf func(string, ...any)) (string, error) {
	var candidates []string
	if p := os.Getenv(envVersitygw); p != "" {
		candidates = append(candidates, p)
	}
	if root, err := moduleRoot(ctx); err == nil {
		candidates = append(candidates, filepath.Join(root, ".ci", "bin", "versitygw"))
	}
	binDir := filepath.Join(cache, "bin")
	bin := filepath.Join(binDir, "versitygw")
	candidates = append(candidates, bin)
	for _, c := range candidates {
		if out, err := exec.CommandContext(ctx, "go", "version", "-m", c).Output(); err == nil &&
			bytes.Contains(out, []byte("github.com/versity/versitygw\t"+versitygwVersion)) {
			return c, nil
		}
	}
	logf("installing versitygw %s into %s (go install, first run only, about a minute)", versitygwVersion, binDir)
	cmd := exec.CommandContext(ctx, "go", "install", versitygwModule+"@"+versitygwVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+binDir)
	cmd.Dir = os.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s@%s: %w\n%s", versitygwModule, versitygwVersion, err, out)
	}
	return bin, nil
}

// removeBucket empties and removes a bucket the benchmark made on a
// shared server, best effort.
func removeBucket(cfg s3Config) {
	cl, err := s3Client(cfg)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if ok, err := cl.BucketExists(ctx, cfg.Bucket); err != nil || !ok {
		return
	}
	for obj := range cl.ListObjects(ctx, cfg.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			return
		}
		_ = cl.RemoveObject(ctx, cfg.Bucket, obj.Key, minio.RemoveObjectOptions{})
	}
	_ = cl.RemoveBucket(ctx, cfg.Bucket)
}
