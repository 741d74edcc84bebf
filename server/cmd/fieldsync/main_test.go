package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRun_StartsServesAndShutsDown runs the binary's run path on a temp
// data folder, waits for /healthz, then cancels (as SIGTERM does) and
// expects a clean exit. A second start on the same folder must not print
// the first-start banner again.
func TestRun_StartsServesAndShutsDown(t *testing.T) {
	dir := t.TempDir()
	start := func() (string, *syncBuffer, context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		var out, errb syncBuffer
		done := make(chan error, 1)
		go func() { done <- run(ctx, []string{"run", "-data", dir, "-addr", "127.0.0.1:0"}, &out, &errb) }()
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if i := strings.Index(errb.String(), `"addr":"127.0.0.1:`); i >= 0 {
				rest := errb.String()[i+len(`"addr":"`):]
				return "http://" + rest[:strings.Index(rest, `"`)], &out, cancel, done
			}
			select {
			case err := <-done:
				t.Fatalf("run exited early: %v\n%s", err, errb.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
		t.Fatalf("server did not start: %s", errb.String())
		return "", nil, nil, nil
	}
	url, out, cancel, done := start()
	resp, err := http.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var health struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	json.NewDecoder(resp.Body).Decode(&health)
	resp.Body.Close()
	if resp.StatusCode != 200 || health.Status != "ok" || health.Checks["database"] != "ok" || health.Checks["blobs"] != "ok" {
		t.Fatalf("healthz = %d %+v", resp.StatusCode, health)
	}
	if !strings.Contains(out.String(), "Sign in:   admin / ") {
		t.Errorf("first start did not print the admin login:\n%s", out.String())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no clean shutdown")
	}
	_, out2, cancel2, done2 := start()
	cancel2()
	if err := <-done2; err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out2.String(), "Sign in") {
		t.Errorf("second start printed the banner again")
	}
}

func TestRun_UnknownCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"frobnicate"}, &out, &errb); err == nil {
		t.Fatal("want error")
	}
}
