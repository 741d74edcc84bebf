package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"fieldsync/mobileclient/linkproxy"
)

// server is a fieldsync server the simulator talks to: one it started as
// a subprocess (or several behind a proxy), or one given by URL.
type server struct {
	url     string // base URL, e.g. http://127.0.0.1:41234 (the proxy's, for several instances)
	addr    string // host:port, loopback
	dataDir string // set when the simulator started it
	// dbPath is its database when the simulator started it: a SQLite file,
	// or a PostgreSQL URL (see isPostgresURL).
	dbPath    string
	pid       int // its process (the first instance), when the simulator started it
	instances int // fieldsync processes behind url
	profile   serverProfile
	admin     *adminAPI
	stop      func() error
	logFile   string
	// dropDB drops the PostgreSQL database startLocal created for it (nil:
	// none); Close leaves it, since a section may start the server again
	// on it.
	dropDB func(context.Context) error
}

// describe says what the server is, for the report's notes.
func (s *server) describe() string {
	switch {
	case !isPostgresURL(s.dbPath):
		return "the fieldsync subprocess (SQLite)"
	case s.instances > 1:
		return fmt.Sprintf("%d fieldsync subprocesses on one PostgreSQL database behind fieldsim's round-robin proxy", s.instances)
	}
	return "the fieldsync subprocess (PostgreSQL)"
}

// Close stops a server the simulator started; it does nothing for one
// given by URL.
func (s *server) Close() error {
	if s == nil || s.stop == nil {
		return nil
	}
	stop := s.stop
	s.stop = nil
	return stop()
}

// localOptions configures a server the simulator starts.
type localOptions struct {
	// Dir is the data folder (created if needed).
	Dir string
	// Seed is what `fieldsync seed` adds after the demo county, before
	// the server starts (bulk imports for the benchmarks).
	Seed seedSpec
	// S3, if its Endpoint is set, stores evidence in that object store
	// instead of Dir/blobs.
	S3 s3Config
	// Profile names the files the server writes its profiles of a timed
	// phase to (see bench.profile); empty: none.
	Profile serverProfile
	// DB, if set, is a PostgreSQL admin URL: the server runs on a fresh
	// database created through it (C collation) instead of a SQLite file
	// in Dir.
	DB string
	// PGURL, if set, is a PostgreSQL database an earlier startLocal with DB
	// created (server.dbPath): the server runs on it again.
	PGURL string
	// Instances is how many fieldsync processes run (default 1). More
	// than one need DB or PGURL: they share the database, the S3 bucket
	// and the partial uploads' folder Dir/uploads, each has its own data
	// folder Dir/instanceN and port, and they sit behind an in-process
	// round-robin reverse proxy that the server's URL names.
	Instances int
}

// serverProfile are the files `fieldsync run` writes profiles to between
// SIGUSR1 and SIGUSR2 (server/cmd/fieldsync/profile.go).
type serverProfile struct {
	CPU, Trace, Mem string
}

func (p serverProfile) env() []string {
	var env []string
	for _, kv := range [][2]string{{"FIELDSYNC_CPUPROFILE", p.CPU}, {"FIELDSYNC_TRACE", p.Trace}, {"FIELDSYNC_MEMPROFILE", p.Mem}} {
		if kv[1] != "" {
			env = append(env, kv[0]+"="+kv[1])
		}
	}
	return env
}

// s3Config is an S3-compatible object store (the server's -s3-* flags).
type s3Config struct {
	Endpoint, AccessKey, SecretKey, Bucket string
}

// startLocal prepares a data folder with the demo county (and o.Seed)
// with `fieldsync seed`, then runs `fieldsync run` on it as a subprocess
// (o.Instances of them on PostgreSQL) on a free loopback port, with its
// warnings and errors in Dir/server.log (Dir/instanceN/server.log).
func startLocal(ctx context.Context, o localOptions) (*server, error) {
	bin, err := fieldsyncBinary(ctx)
	if err != nil {
		return nil, err
	}
	n := max(1, o.Instances)
	if n > 1 && o.DB == "" && o.PGURL == "" {
		return nil, fmt.Errorf("%d instances: %w", n, errNoPostgres)
	}
	if err := os.MkdirAll(o.Dir, 0o750); err != nil {
		return nil, err
	}
	s := &server{dataDir: o.Dir, logFile: filepath.Join(o.Dir, "server.log"), profile: o.Profile, instances: n}
	dbURL := o.PGURL
	if dbURL == "" && o.DB != "" {
		u, drop, err := createPGDatabase(ctx, o.DB, "fieldsim_"+filepath.Base(filepath.Dir(o.Dir)))
		if err != nil {
			return nil, err
		}
		dbURL, s.dropDB = u, drop
	}
	fail := func(err error) (*server, error) {
		if s.dropDB != nil {
			_ = s.dropDB(context.WithoutCancel(ctx))
		}
		return nil, err
	}
	if dbURL == "" {
		if err := copyTemplate(o.Dir); err != nil {
			return nil, err
		}
	}
	spec := o.Seed
	spec.Demo = true
	m, err := seedData(ctx, bin, o.Dir, dbURL, spec)
	if err != nil {
		return fail(err)
	}
	s.dbPath = m.Database
	if dbURL != "" {
		s.dbPath = dbURL
	}
	var procs []*process
	var addrs []string
	stopAll := func() error {
		var errs []error
		for _, p := range procs {
			errs = append(errs, p.stop())
		}
		return errors.Join(errs...)
	}
	for i := 0; i < n; i++ {
		dataDir, logFile := o.Dir, s.logFile
		if n > 1 {
			dataDir = filepath.Join(o.Dir, fmt.Sprintf("instance%d", i))
			logFile = filepath.Join(dataDir, "server.log")
			if err := os.MkdirAll(dataDir, 0o750); err != nil {
				stopAll()
				return fail(err)
			}
		}
		var env []string
		if i == 0 {
			env = o.Profile.env()
		}
		p, addr, err := startInstance(ctx, bin, dataDir, dbURL, filepath.Join(o.Dir, "uploads"), logFile, n > 1, o.S3, env)
		if err != nil {
			stopAll()
			return fail(err)
		}
		procs, addrs = append(procs, p), append(addrs, addr)
	}
	s.pid = procs[0].cmd.Process.Pid
	s.url, s.addr, s.stop = "http://"+addrs[0], addrs[0], stopAll
	if n > 1 {
		px, err := startRoundRobin(addrs)
		if err != nil {
			stopAll()
			return fail(err)
		}
		s.url, s.addr = px.url, px.addr
		s.stop = func() error { return errors.Join(px.close(), stopAll()) }
		s.logFile = filepath.Join(o.Dir, "instance*", "server.log")
	}
	admin, err := login(ctx, s.url, m.Admin.Username, m.Admin.Password)
	if err != nil {
		s.Close()
		return fail(err)
	}
	s.admin = admin
	return s, nil
}

// startInstance runs one `fieldsync run` on dataDir (on the PostgreSQL
// database dbURL with the partial uploads in uploads, when dbURL is set)
// on a free loopback port and waits until it answers /healthz.
func startInstance(ctx context.Context, bin, dataDir, dbURL, uploads, logFile string, trustProxy bool, s3 s3Config, env []string) (*process, string, error) {
	var lastErr error
	for try := 0; try < 3; try++ {
		port, err := freePort()
		if err != nil {
			return nil, "", err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		args := []string{"run", "-data", dataDir, "-addr", addr, "-log-level", "warn"}
		if dbURL != "" {
			args = append(args, "-db", dbURL, "-uploads", uploads)
		}
		if trustProxy {
			// Behind the round-robin proxy, the per-address limits see
			// each device's address through X-Forwarded-For.
			args = append(args, "-trust-proxy")
		}
		cmd := exec.Command(bin, args...)
		cmd.Stdout = io.Discard // the first-start banner
		cmd.Env = append(os.Environ(), env...)
		if s3.Endpoint != "" {
			cmd.Env = append(cmd.Env, "FIELDSYNC_S3_ENDPOINT="+s3.Endpoint, "FIELDSYNC_S3_BUCKET="+s3.Bucket,
				"FIELDSYNC_S3_ACCESS_KEY="+s3.AccessKey, "FIELDSYNC_S3_SECRET_KEY="+s3.SecretKey)
		}
		p, err := startProcess(ctx, "fieldsync", cmd, logFile, 60*time.Second,
			func() bool { return answers("http://" + addr + "/healthz") })
		if err != nil {
			lastErr = err
			continue
		}
		return p, addr, nil
	}
	return nil, "", fmt.Errorf("start server: %w", lastErr)
}

// dataTemplate, when set (by the tests), is a data folder already holding
// the demo county: startLocal copies its database into a new data folder
// instead of loading the demo again.
var dataTemplate string

func copyTemplate(dir string) error {
	if dataTemplate == "" {
		return nil
	}
	dst := serverDBPath(dir)
	if _, err := os.Stat(dst); err == nil {
		return nil // the folder has a database already
	}
	for _, suffix := range []string{"", "-wal"} {
		data, err := os.ReadFile(serverDBPath(dataTemplate) + suffix)
		if errors.Is(err, os.ErrNotExist) && suffix != "" {
			continue
		}
		if err != nil {
			return fmt.Errorf("data template: %w", err)
		}
		if err := os.WriteFile(dst+suffix, data, 0o640); err != nil {
			return err
		}
	}
	return nil
}

// connect uses a server given by URL; only loopback hosts are accepted.
func connect(ctx context.Context, rawURL, user, password string) (*server, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("-server: %w", err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("-server %s: only http:// on loopback is supported (the link proxy sits in the middle)", rawURL)
	}
	host, port := u.Hostname(), u.Port()
	if !linkproxy.IsLoopback(host) {
		return nil, fmt.Errorf("-server %s: %w", rawURL, linkproxy.ErrNotLoopback)
	}
	if port == "" {
		port = "80"
	}
	s := &server{url: strings.TrimRight(u.Scheme+"://"+u.Host+u.Path, "/"), addr: net.JoinHostPort(host, port)}
	if s.admin, err = login(ctx, s.url, user, password); err != nil {
		return nil, err
	}
	return s, nil
}

// adminAPI calls the admin JSON API with a bearer token.
type adminAPI struct {
	base  string
	token string
	hc    *http.Client
}

// apiError is a non-success answer of the admin API.
type apiError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.Method, e.Path, e.Status, e.Body)
}

func login(ctx context.Context, base, user, password string) (*adminAPI, error) {
	a := &adminAPI{base: base, hc: &http.Client{Timeout: 30 * time.Second}}
	var resp struct {
		Token string `json:"token"`
	}
	if err := a.do(ctx, http.MethodPost, "/api/v1/auth/login", map[string]string{"username": user, "password": password}, &resp); err != nil {
		return nil, fmt.Errorf("admin login: %w", err)
	}
	if resp.Token == "" {
		return nil, errors.New("admin login: no token in the answer")
	}
	a.token = resp.Token
	return a, nil
}

func (a *adminAPI) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
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
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return &apiError{Method: method, Path: path, Status: resp.StatusCode, Body: strings.TrimSpace(string(data))}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

// apiUser is the part of a user the simulator needs.
type apiUser struct {
	ID         int64    `json:"id"`
	Username   string   `json:"username"`
	Role       string   `json:"role"`
	PlaceCodes []string `json:"place_codes"`
}

func (a *adminAPI) createUser(ctx context.Context, username, role string, places []string) (apiUser, error) {
	var u apiUser
	err := a.do(ctx, http.MethodPost, "/api/v1/users", map[string]any{
		"username": username, "display_name": username, "role": role, "place_codes": places,
	}, &u)
	return u, err
}

func (a *adminAPI) enrollmentCode(ctx context.Context, userID int64) (string, error) {
	var ec struct {
		Code string `json:"code"`
	}
	if err := a.do(ctx, http.MethodPost, "/api/v1/users/"+strconv.FormatInt(userID, 10)+"/enrollment-codes", struct{}{}, &ec); err != nil {
		return "", err
	}
	return ec.Code, nil
}

func (a *adminAPI) setPlaces(ctx context.Context, userID int64, places []string) error {
	return a.do(ctx, http.MethodPut, "/api/v1/users/"+strconv.FormatInt(userID, 10)+"/places", map[string]any{"place_codes": places}, nil)
}

// apiPlace is a node of the place tree.
type apiPlace struct {
	Code, Name, Level, ParentCode string
}

func (a *adminAPI) places(ctx context.Context) ([]apiPlace, error) {
	var fc struct {
		Features []struct {
			Properties struct {
				Code       string `json:"code"`
				Name       string `json:"name"`
				Level      string `json:"level"`
				ParentCode string `json:"parent_code"`
			} `json:"properties"`
		} `json:"features"`
	}
	if err := a.do(ctx, http.MethodGet, "/api/v1/places", nil, &fc); err != nil {
		return nil, err
	}
	out := make([]apiPlace, 0, len(fc.Features))
	for _, f := range fc.Features {
		p := f.Properties
		out = append(out, apiPlace{Code: p.Code, Name: p.Name, Level: p.Level, ParentCode: p.ParentCode})
	}
	return out, nil
}

// placeTree answers questions about the places the admin sees.
type placeTree struct {
	byCode   map[string]apiPlace
	children map[string][]string
	order    []string
}

func newPlaceTree(ps []apiPlace) *placeTree {
	t := &placeTree{byCode: map[string]apiPlace{}, children: map[string][]string{}}
	for _, p := range ps {
		t.byCode[p.Code] = p
		t.children[p.ParentCode] = append(t.children[p.ParentCode], p.Code)
		t.order = append(t.order, p.Code)
	}
	return t
}

// level lists the codes of a level in the server's order, the demo
// village's first.
func (t *placeTree) level(level string) []string {
	var first, rest []string
	for _, c := range t.order {
		p := t.byCode[c]
		if p.Level != level {
			continue
		}
		if strings.HasPrefix(c, demoVillageCode) {
			first = append(first, c)
		} else {
			rest = append(rest, c)
		}
	}
	return append(first, rest...)
}

// subtree returns code and its descendants.
func (t *placeTree) subtree(code string) map[string]bool {
	out := map[string]bool{}
	var walk func(string)
	walk = func(c string) {
		if out[c] {
			return
		}
		out[c] = true
		for _, k := range t.children[c] {
			walk(k)
		}
	}
	walk(code)
	return out
}

// villageOf returns the village a group belongs to.
func (t *placeTree) villageOf(code string) string {
	for c := code; c != ""; c = t.byCode[c].ParentCode {
		if t.byCode[c].Level == "village" {
			return c
		}
	}
	return ""
}
