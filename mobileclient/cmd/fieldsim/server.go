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
// a subprocess, or one given by URL.
type server struct {
	url     string // base URL, e.g. http://127.0.0.1:41234
	addr    string // host:port, loopback
	dataDir string // set when the simulator started it
	dbPath  string // its SQLite file, when the simulator started it
	pid     int    // its process, when the simulator started it
	profile serverProfile
	admin   *adminAPI
	stop    func() error
	logFile string
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
// on a free loopback port, with its warnings and errors in
// Dir/server.log.
func startLocal(ctx context.Context, o localOptions) (*server, error) {
	bin, err := fieldsyncBinary(ctx)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o750); err != nil {
		return nil, err
	}
	if err := copyTemplate(o.Dir); err != nil {
		return nil, err
	}
	spec := o.Seed
	spec.Demo = true
	m, err := seedData(ctx, bin, o.Dir, spec)
	if err != nil {
		return nil, err
	}
	s := &server{dataDir: o.Dir, dbPath: m.Database, logFile: filepath.Join(o.Dir, "server.log"), profile: o.Profile}
	var lastErr error
	for try := 0; try < 3; try++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		cmd := exec.Command(bin, "run", "-data", o.Dir, "-addr", addr, "-log-level", "warn")
		cmd.Stdout = io.Discard // the first-start banner
		cmd.Env = append(os.Environ(), o.Profile.env()...)
		if o.S3.Endpoint != "" {
			cmd.Env = append(cmd.Env, "FIELDSYNC_S3_ENDPOINT="+o.S3.Endpoint, "FIELDSYNC_S3_BUCKET="+o.S3.Bucket,
				"FIELDSYNC_S3_ACCESS_KEY="+o.S3.AccessKey, "FIELDSYNC_S3_SECRET_KEY="+o.S3.SecretKey)
		}
		p, err := startProcess(ctx, "fieldsync", cmd, s.logFile, 60*time.Second,
			func() bool { return answers("http://" + addr + "/healthz") })
		if err != nil {
			lastErr = err
			continue
		}
		s.url, s.addr, s.pid = "http://"+addr, addr, p.cmd.Process.Pid
		s.stop = p.stop
		break
	}
	if s.stop == nil {
		return nil, fmt.Errorf("start server: %w", lastErr)
	}
	admin, err := login(ctx, s.url, m.Admin.Username, m.Admin.Password)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.admin = admin
	return s, nil
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
