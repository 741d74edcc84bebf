package rrproxy_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"fieldsync/server/servertest/rrproxy"
)

// TestProxy_RoundRobinSkipsRefusedAndDown: requests go to each backend
// in turn, a POST body reaches its backend whole, a backend that refuses
// connections is skipped (its request goes to the next, body included),
// and one marked down gets nothing; the observer sees every answer.
func TestProxy_RoundRobinSkipsRefusedAndDown(t *testing.T) {
	var backends []string
	for i := range 2 {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%d:%s:%s", i, r.Header.Get("X-Forwarded-For"), b)
		}))
		t.Cleanup(srv.Close)
		backends = append(backends, srv.URL)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	backends = append(backends, dead)

	var mu sync.Mutex
	seen := map[int]int{}
	p, err := rrproxy.Start(backends, func(i int, _ *http.Request, _ *http.Response) {
		mu.Lock()
		seen[i]++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	post := func(body string) string {
		t.Helper()
		resp, err := http.Post(p.URL()+"/x", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		return string(b)
	}
	for i := range 9 {
		got := post(fmt.Sprintf("请求%d", i))
		if !strings.HasSuffix(got, fmt.Sprintf(":127.0.0.1:请求%d", i)) {
			t.Fatalf("request %d answered %q", i, got)
		}
	}
	c := p.Counts()
	if c[0]+c[1] != 9 || c[2] != 0 || c[0] < 3 || c[1] < 3 || p.Refused() < 2 {
		t.Fatalf("counts %v, refused %d", c, p.Refused())
	}
	if seen[0] != int(c[0]) || seen[1] != int(c[1]) {
		t.Fatalf("observer saw %v, counts %v", seen, c)
	}
	p.SetDown(0, true)
	for range 4 {
		if got := post("x"); !strings.HasPrefix(got, "1:") {
			t.Fatalf("with backend 0 down: %q", got)
		}
	}
	p.SetDown(1, true)
	resp, err := http.Get(p.URL() + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("every backend down: %d", resp.StatusCode)
	}
}
