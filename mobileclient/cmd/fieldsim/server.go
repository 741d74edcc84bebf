package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"fieldsync/mobileclient/linkproxy"
	"fieldsync/server/app"
	"fieldsync/server/blob/s3blob"
	"fieldsync/server/demo"
	"fieldsync/server/sqlstore"
)

// server is a fieldsync server the simulator talks to: one it started in
// this process, or one given by URL.
type server struct {
	url     string // base URL, e.g. http://127.0.0.1:41234
	addr    string // host:port, loopback
	dataDir string // set when the simulator started it (in-process)
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

// localOptions configures an in-process server.
type localOptions struct {
	// Dir is the data folder (created if needed).
	Dir string
	// Prepare runs on the store after the demo county is loaded and before
	// the server starts serving (bulk imports for the benchmarks).
	Prepare func(ctx context.Context, st *sqlstore.Store) error
	// Quiet drops the server's log; otherwise warnings and errors go to
	// Dir/server.log.
	Quiet bool
	// S3, if its Endpoint is set, stores evidence in that object store
	// instead of Dir/blobs.
	S3 s3blob.Config
}

// startLocal starts a full server in this process with app.Run on a data
// folder holding the demo county, listening on 127.0.0.1.
func startLocal(ctx context.Context, o localOptions) (*server, error) {
	if err := os.MkdirAll(o.Dir, 0o750); err != nil {
		return nil, err
	}
	if err := copyTemplate(o.Dir); err != nil {
		return nil, err
	}
	if err := prepareData(ctx, o.Dir, o.Prepare); err != nil {
		return nil, err
	}
	s := &server{dataDir: o.Dir}
	var logw io.Writer = io.Discard
	var logf *os.File
	if !o.Quiet {
		var err error
		s.logFile = filepath.Join(o.Dir, "server.log")
		if logf, err = os.OpenFile(s.logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640); err != nil {
			return nil, err
		}
		logw = logf
	}
	runCtx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- app.Run(runCtx, app.Config{
			DataDir: o.Dir,
			Addr:    "127.0.0.1:0",
			S3:      o.S3,
			Logger:  slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelWarn})),
			Out:     io.Discard,
			Ready:   func(addr string) { ready <- addr },
		})
	}()
	closeLog := func() {
		if logf != nil {
			logf.Close()
		}
	}
	select {
	case addr := <-ready:
		s.addr = addr
	case err := <-errc:
		cancel()
		closeLog()
		return nil, fmt.Errorf("start server: %w", err)
	case <-ctx.Done():
		cancel()
		<-errc
		closeLog()
		return nil, ctx.Err()
	case <-time.After(60 * time.Second):
		cancel()
		<-errc
		closeLog()
		return nil, errors.New("start server: not ready in 60 s")
	}
	s.url = "http://" + s.addr
	s.stop = func() error {
		cancel()
		var err error
		select {
		case err = <-errc:
		case <-time.After(60 * time.Second):
			err = errors.New("server did not stop in 60 s")
		}
		closeLog()
		return err
	}
	admin, err := login(ctx, s.url, "admin", demo.DemoPassword)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.admin = admin
	return s, nil
}

// prepareData loads the demo county into a data folder and runs prepare.
func prepareData(ctx context.Context, dir string, prepare func(context.Context, *sqlstore.Store) error) error {
	st, err := app.OpenStore(ctx, app.Config{DataDir: dir})
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	if err := app.LoadDemo(ctx, st, io.Discard); err != nil {
		return fmt.Errorf("demo data: %w", err)
	}
	if prepare != nil {
		if err := prepare(ctx, st); err != nil {
			return fmt.Errorf("prepare data: %w", err)
		}
	}
	return nil
}

// dataTemplate, when set (by the tests), is a data folder already holding
// the demo county: startLocal copies its database into a new data folder
// instead of loading the demo again (which hashes five passwords, slow
// under the race detector).
var dataTemplate string

func copyTemplate(dir string) error {
	if dataTemplate == "" {
		return nil
	}
	dst := app.DBPath(dir)
	if _, err := os.Stat(dst); err == nil {
		return nil // the folder has a database already
	}
	for _, suffix := range []string{"", "-wal"} {
		data, err := os.ReadFile(app.DBPath(dataTemplate) + suffix)
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
		if strings.HasPrefix(c, demo.VillageCode) {
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
