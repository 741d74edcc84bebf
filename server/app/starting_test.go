package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fieldsync/mobileclient"
	"fieldsync/server/auth"
	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/server/servertest/pgtest"
	"fieldsync/server/sqlstore"
	"fieldsync/syncproto"
)

// seedPostgres gives the database at dbURL the test places, the form
// templates, an admin (password adminPW) and a field worker on G11.
func seedPostgres(t *testing.T, dbURL, adminPW string) (workerID int64) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, sqlstore.Config{PostgresURL: dbURL})
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
	defer st.Close()
	if err := st.UpsertPlaces(ctx, servertest.Places()); err != nil {
		t.Fatal(err)
	}
	for _, f := range syncproto.Templates() {
		if _, err := st.PublishForm(ctx, f, 0); err != nil {
			t.Fatal(err)
		}
	}
	h, err := auth.HashPassword(adminPW)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateUser(ctx, domain.User{Username: "admin", DisplayName: "管理员", Role: domain.RoleAdmin, PasswordHash: h}); err != nil {
		t.Fatal(err)
	}
	w, err := st.CreateUser(ctx, domain.User{Username: "wangge", DisplayName: "网格员", Role: domain.RoleFieldWorker, PlaceCodes: []string{"G11"}})
	if err != nil {
		t.Fatal(err)
	}
	return w.ID
}

// healthz returns /healthz's status code and body.
func healthz(base string) (int, map[string]any, http.Header, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(base + "/healthz")
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return resp.StatusCode, nil, resp.Header, fmt.Errorf("healthz body: %w", err)
	}
	return resp.StatusCode, body, resp.Header, nil
}

// listenAddr waits for Run's "listening" log line and returns its address.
func listenAddr(t *testing.T, logs *servertest.SyncBuffer, done <-chan error) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		s := logs.String()
		if i := strings.Index(s, `"listen":"`); i >= 0 {
			rest := s[i+len(`"listen":"`):]
			return "http://" + rest[:strings.Index(rest, `"`)]
		}
		select {
		case err := <-done:
			t.Fatalf("Run ended before listening: %v\n%s", err, s)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("Run did not listen:\n%s", logs.String())
	return ""
}

// TestRun_PostgresDownAtStart: an instance started while its PostgreSQL
// is down listens anyway, says on /healthz (503) and in its log (with the
// URL, password redacted) that the database is unreachable, retries, and
// once PostgreSQL is up opens the store and serves: healthz 200, an admin
// login, a device enrolled and a push applied. Stopping it while it waits
// is a clean exit.
func TestRun_PostgresDownAtStart(t *testing.T) {
	pg := pgtest.StartServer(t)
	u, err := url.Parse(pg.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	const adminPW = "admin-pw-123456"
	workerID := seedPostgres(t, u.String(), adminPW)
	// Trust authentication ignores the password, which lets the test check
	// that it never shows.
	u.User = url.UserPassword("fieldsync", "pg-s3cret-pw")
	dbURL := u.String()
	if err := pg.Stop(false); err != nil {
		t.Fatal(err)
	}
	oldFirst, oldMax := firstRetry, maxRetry
	firstRetry, maxRetry = 50*time.Millisecond, 400*time.Millisecond
	t.Cleanup(func() { firstRetry, maxRetry = oldFirst, oldMax })

	start := func(ctx context.Context, logs *servertest.SyncBuffer, ready chan<- string) <-chan error {
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, Config{DataDir: filepath.Join(t.TempDir(), "data"), DB: dbURL, Addr: "127.0.0.1:0",
				Logger: slog.New(slog.NewJSONHandler(logs, nil)), Out: io.Discard,
				Ready: func(a string) { ready <- a }})
		}()
		return done
	}

	// Stopped while waiting: a clean exit, no error.
	{
		var logs servertest.SyncBuffer
		ctx, cancel := context.WithCancel(context.Background())
		done := start(ctx, &logs, make(chan string, 1))
		listenAddr(t, &logs, done)
		waitUntil(t, "a retry log line", func() bool { return strings.Contains(logs.String(), "无法连接 PostgreSQL 数据库") })
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("stopped while waiting for the database: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not stop while waiting for the database")
		}
	}

	var logs servertest.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan string, 1)
	done := start(ctx, &logs, ready)
	base := listenAddr(t, &logs, done)
	var body map[string]any
	waitUntil(t, "healthz to say the database is unreachable", func() bool {
		code, b, hdr, err := healthz(base)
		body = b
		if err != nil || code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
			return false
		}
		checks, _ := b["checks"].(map[string]any)
		db, _ := checks["database"].(string)
		return b["status"] == "down" && strings.Contains(db, "数据库不可达")
	})
	raw, _ := json.Marshal(body)
	if !strings.Contains(string(raw), "fieldsync:xxxxx@"+pg.Addr()) || strings.Contains(string(raw), "pg-s3cret-pw") {
		t.Errorf("healthz body does not name the redacted URL, or shows the password: %s", raw)
	}
	// Any other request: 503, with the API's error shape.
	resp, err := http.Post(base+"/api/v1/auth/login", "application/json", strings.NewReader(`{"username":"admin","password":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	var perr syncproto.Error
	json.NewDecoder(resp.Body).Decode(&perr)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || perr.Code != syncproto.CodeUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("login while starting: %d %+v", resp.StatusCode, perr)
	}
	// The log line: Chinese, the redacted URL, the error.
	var line map[string]any
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "无法连接 PostgreSQL 数据库") {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if line == nil || line["db"] != "postgres://fieldsync:xxxxx@"+pg.Addr()+u.Path+"?sslmode=disable" ||
		!strings.Contains(fmt.Sprint(line["err"]), "connect") || line["retry_in"] == nil {
		t.Fatalf("retry log line %v in\n%s", line, logs.String())
	}
	if strings.Contains(logs.String(), "pg-s3cret-pw") {
		t.Fatalf("the log shows the password:\n%s", logs.String())
	}

	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-ready:
		base = "http://" + a
	case err := <-done:
		t.Fatalf("Run ended: %v\n%s", err, logs.String())
	case <-time.After(2 * time.Minute):
		t.Fatalf("not serving two minutes after PostgreSQL came back:\n%s", logs.String())
	}
	code, body, _, err := healthz(base)
	if err != nil || code != http.StatusOK || body["status"] != "ok" {
		t.Fatalf("healthz once PostgreSQL is up: %d %v %v", code, body, err)
	}
	if !strings.Contains(logs.String(), "已连接 PostgreSQL 数据库") {
		t.Errorf("no log line saying the database was reached:\n%s", logs.String())
	}

	// Sign in, enroll a device, push.
	var login struct {
		Token string `json:"token"`
	}
	postJSON(t, base+"/api/v1/auth/login", "", `{"username":"admin","password":"`+adminPW+`"}`, http.StatusOK, &login)
	var ec struct {
		Code string `json:"code"`
	}
	postJSON(t, base+fmt.Sprintf("/api/v1/users/%d/enrollment-codes", workerID), login.Token, `{}`, http.StatusCreated, &ec)
	dev, err := mobileclient.Open(t.TempDir(), base, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if err := dev.Enroll(ctx, ec.Code, "平板"); err != nil {
		t.Fatalf("enroll: %v", err)
	}
	if _, err := dev.Sync(ctx); err != nil { // the first pull brings the places
		t.Fatalf("first sync: %v", err)
	}
	hh, err := dev.CreateHousehold("G11", map[string]json.RawMessage{"head_name": json.RawMessage(`"张三"`)})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := dev.Sync(ctx)
	if err != nil || rep.Pushed != 1 || rep.Rejected != 0 {
		t.Fatalf("sync: %+v %v", rep, err)
	}
	var n int
	if err := pgtest.Open(t, dbURL).QueryRow(`SELECT count(*) FROM households WHERE id = $1`, hh).Scan(&n); err != nil || n != 1 {
		t.Fatalf("household %s in PostgreSQL: %d %v", hh, n, err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// TestRun_PostgresMissingDatabaseEndsStart: an error that waiting cannot
// mend (a database that does not exist) ends the start at once, naming
// the database without its password.
func TestRun_PostgresMissingDatabaseEndsStart(t *testing.T) {
	u, err := url.Parse(pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/fs_no_such_database"
	u.User = url.UserPassword(u.User.Username(), "pg-s3cret-pw")
	var logs servertest.SyncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = Run(ctx, Config{DataDir: filepath.Join(t.TempDir(), "data"), DB: u.String(), Addr: "127.0.0.1:0",
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Out: io.Discard})
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "fs_no_such_database") ||
		strings.Contains(err.Error(), "pg-s3cret-pw") || strings.HasPrefix(err.Error(), "serve") {
		t.Fatalf("Run on a missing database: %v", err)
	}
	if strings.Contains(logs.String(), "无法连接 PostgreSQL 数据库") {
		t.Errorf("retried an error that waiting cannot mend:\n%s", logs.String())
	}
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func postJSON(t *testing.T, u, token, body string, want int, out any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
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
		t.Fatalf("POST %s: %d %s", u, resp.StatusCode, b)
	}
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(out); err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
}
