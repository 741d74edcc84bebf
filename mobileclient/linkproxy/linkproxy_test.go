package linkproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// startEcho runs a TCP echo server on loopback.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// startSink runs a TCP server that reads each connection to its end and
// reports how many bytes it got.
func startSink(t *testing.T) (string, <-chan int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int64, 100)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				got <- n
			}()
		}
	}()
	return ln.Addr().String(), got
}

func startProxy(t *testing.T, cfg Config) *Proxy {
	t.Helper()
	p, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func recv(t *testing.T, ch <-chan int64) int64 {
	t.Helper()
	select {
	case n := <-ch:
		return n
	case <-time.After(5 * time.Second):
		t.Fatal("sink got nothing in 5 s")
		return 0
	}
}

// roundTrip writes msg and reads as many bytes back.
func roundTrip(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	errc := make(chan error, 1)
	go func() { _, err := c.Write(msg); errc <- err }()
	back := make([]byte, len(msg))
	if _, err := io.ReadFull(c, back); err != nil {
		t.Fatalf("read back: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(back, msg) {
		t.Fatal("echo differs from what was sent")
	}
}

// waitStats returns the proxy's counters once ok holds, or after 2 s: a
// writer counts its bytes just after its write returns, which may be
// after the other end has read them.
func waitStats(p *Proxy, ok func(Stats) bool) Stats {
	st := p.Stats()
	for deadline := time.Now().Add(2 * time.Second); !ok(st) && time.Now().Before(deadline); st = p.Stats() {
		time.Sleep(5 * time.Millisecond)
	}
	return st
}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

func TestLink_Validate(t *testing.T) {
	cases := []struct {
		name string
		link Link
		ok   bool
	}{
		{"zero", Link{}, true},
		{"2g", Link{UpBytesPerSec: Kbps(50), DownBytesPerSec: Kbps(50), Latency: 400 * time.Millisecond, CutEvery: 2 * time.Minute}, true},
		{"negative bandwidth", Link{UpBytesPerSec: -1}, false},
		{"negative latency", Link{Latency: -time.Second}, false},
		{"stall as long as its period", Link{StallEvery: time.Second, StallFor: time.Second}, false},
		{"stall without period", Link{StallFor: time.Second}, false},
		{"reset ratio above 1", Link{ResetRatio: 1.5}, false},
		{"negative cut bytes", Link{CutEveryUpBytes: -5}, false},
		{"negative drop", Link{DropResponseEvery: -1}, false},
		{"long match", Link{DropResponseEvery: 1, DropMatch: strings.Repeat("x", maxHead+1)}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.link.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestStart_LoopbackOnly(t *testing.T) {
	echo := startEcho(t)
	_, port, _ := net.SplitHostPort(echo)
	cases := []struct {
		name     string
		upstream string
		local    net.IP
		want     error
	}{
		{"ipv4 loopback", echo, nil, nil},
		{"localhost", "localhost:" + port, nil, nil},
		{"other loopback source", echo, net.IPv4(127, 0, 9, 9), nil},
		{"documentation address", "192.0.2.1:80", nil, ErrNotLoopback},
		{"host name", "example.com:80", nil, ErrNotLoopback},
		{"any address", "0.0.0.0:80", nil, ErrNotLoopback},
		{"non-loopback source", echo, net.IPv4(10, 0, 0, 1), ErrNotLoopback},
		{"no port", "127.0.0.1", nil, ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Start(Config{Upstream: tc.upstream, LocalIP: tc.local})
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("Start = %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			defer p.Close()
			if host, _, _ := net.SplitHostPort(p.Addr()); host != "127.0.0.1" {
				t.Fatalf("listens on %s", p.Addr())
			}
			roundTrip(t, dial(t, p), []byte("ping"))
		})
	}
}

func TestProxy_SourceAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	from := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		from <- c.RemoteAddr().(*net.TCPAddr).IP.String()
		c.Close()
	}()
	p := startProxy(t, Config{Upstream: ln.Addr().String(), LocalIP: net.IPv4(127, 0, 3, 7)})
	dial(t, p)
	select {
	case ip := <-from:
		if ip != "127.0.3.7" {
			t.Fatalf("server saw %s, want 127.0.3.7", ip)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no upstream connection")
	}
}

// TestProxy_Shaping times transfers through links that slow them down.
func TestProxy_Shaping(t *testing.T) {
	cases := []struct {
		name     string
		link     Link
		size     int
		wait     time.Duration // before sending (to land in a stall)
		min, max time.Duration // of the echo round trip
	}{
		{"direct", Link{}, 64 << 10, 0, 0, 2 * time.Second},
		// 48 KiB up at 64 KiB/s less a 6.4 KiB burst: ≥ 0.63 s.
		{"bandwidth up", Link{UpBytesPerSec: 64 << 10}, 48 << 10, 0, 600 * time.Millisecond, 3 * time.Second},
		// The same bytes must come back down at 64 KiB/s too; both
		// directions pipeline, so about the same time.
		{"bandwidth both", Link{UpBytesPerSec: 64 << 10, DownBytesPerSec: 64 << 10}, 48 << 10, 0, 600 * time.Millisecond, 3 * time.Second},
		// One byte, two one-way delays.
		{"latency", Link{Latency: 60 * time.Millisecond}, 1, 0, 120 * time.Millisecond, 2 * time.Second},
		// Sent 20 ms into a 300 ms stall that starts at 400 ms.
		{"stall", Link{StallEvery: 400 * time.Millisecond, StallFor: 300 * time.Millisecond}, 1, 420 * time.Millisecond, 250 * time.Millisecond, 2 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, Config{Upstream: startEcho(t), Link: tc.link})
			c := dial(t, p)
			if tc.link.Latency > 0 {
				roundTrip(t, c, []byte("x")) // pay the handshake first
			}
			time.Sleep(tc.wait)
			msg := payload(tc.size)
			start := time.Now()
			roundTrip(t, c, msg)
			took := time.Since(start)
			if took < tc.min || took > tc.max {
				t.Fatalf("round trip took %v, want [%v, %v]", took, tc.min, tc.max)
			}
			want := int64(tc.size)
			st := waitStats(p, func(s Stats) bool { return s.BytesUp >= want && s.BytesDown >= want })
			if st.BytesUp < want || st.BytesDown < want {
				t.Fatalf("stats %+v: want at least %d each way", st, want)
			}
		})
	}
}

func TestProxy_LatencyHandshake(t *testing.T) {
	p := startProxy(t, Config{Upstream: startEcho(t), Link: Link{Latency: 50 * time.Millisecond}})
	start := time.Now()
	roundTrip(t, dial(t, p), []byte("x"))
	// One round trip for the handshake and one for the echo.
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Fatalf("first round trip on a new connection took %v, want ≥ 200ms", took)
	}
}

// TestProxy_CutEveryUpBytes checks that cuts land exactly on multiples of
// the upstream byte count, across connections.
func TestProxy_CutEveryUpBytes(t *testing.T) {
	const every = 256 << 10
	sink, got := startSink(t)
	p := startProxy(t, Config{Upstream: sink, Link: Link{CutEveryUpBytes: every}})
	for i, size := range []int{1 << 20, 300 << 10, 100 << 10} {
		c := dial(t, p)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Write(payload(size))
		if size > every && err == nil {
			// The cut may land after the kernel took all bytes; the read
			// sees it then.
			_, err = c.Read(make([]byte, 1))
		}
		c.Close()
		n := recv(t, got)
		want := int64(min(size, every))
		if i == 2 {
			want = int64(size) // 100 KiB of the next 256 KiB: no cut
		}
		if n != want {
			t.Fatalf("connection %d: server got %d bytes, want %d (client err %v)", i, n, want, err)
		}
	}
	st := p.Stats()
	if st.Cuts != 2 || st.Resets != 0 || st.BytesUp != 2*every+100<<10 {
		t.Fatalf("stats %+v, want 2 cuts, no reset, %d bytes up", st, 2*every+100<<10)
	}
}

// TestProxy_RandomCuts checks that random cut offsets depend only on the
// seed and the byte stream.
func TestProxy_RandomCuts(t *testing.T) {
	run := func(seed uint64) []int64 {
		sink, got := startSink(t)
		p := startProxy(t, Config{Upstream: sink, Seed: seed, Link: Link{CutRandomBytes: 20 << 10}})
		var out []int64
		for i := 0; i < 6; i++ {
			c := dial(t, p)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			_, _ = c.Write(payload(64 << 10))
			c.Close()
			out = append(out, recv(t, got))
		}
		if st := p.Stats(); st.Cuts < 3 {
			t.Fatalf("seed %d: %d cuts in 384 KiB with a mean gap of 20 KiB", seed, st.Cuts)
		}
		return out
	}
	a, b, c := run(7), run(7), run(8)
	if !equal(a, b) {
		t.Fatalf("same seed, different cuts: %v vs %v", a, b)
	}
	if equal(a, c) {
		t.Fatalf("different seeds, same cuts: %v", a)
	}
	for _, n := range a {
		if n > 64<<10 {
			t.Fatalf("delivered %d of 64 KiB", n)
		}
	}
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestProxy_Reset(t *testing.T) {
	cases := []struct {
		name      string
		ratio     float64
		wantReset bool
	}{
		{"fin", 0, false},
		{"rst", 1, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, Config{Upstream: startEcho(t), Link: Link{CutEveryUpBytes: 10, ResetRatio: tc.ratio}})
			c := dial(t, p)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(payload(100)); err != nil {
				t.Fatal(err)
			}
			// The 10 bytes before the cut may come back; then the end.
			_, err := io.ReadAll(c)
			isReset := errors.Is(err, syscall.ECONNRESET)
			if isReset != tc.wantReset {
				t.Fatalf("read error %v; want reset=%v", err, tc.wantReset)
			}
			st := p.Stats()
			if st.Cuts != 1 || (st.Resets == 1) != tc.wantReset {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestProxy_CutEveryTime(t *testing.T) {
	p := startProxy(t, Config{Upstream: startEcho(t), Link: Link{CutEvery: 150 * time.Millisecond}})
	c := dial(t, p)
	roundTrip(t, c, []byte("hello"))
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if err == nil {
		t.Fatal("idle connection was not cut")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("cut after %v, want about 150ms", took)
	}
	if st := p.Stats(); st.Cuts < 1 {
		t.Fatalf("stats %+v", st)
	}
	// The link keeps working for new connections.
	roundTrip(t, dial(t, p), []byte("again"))
}

// TestProxy_DropResponse checks that a dropped answer was committed by a
// real HTTP server and never reached the client.
func TestProxy_DropResponse(t *testing.T) {
	var commits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/commit" {
			commits.Add(1)
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	p := startProxy(t, Config{Upstream: srv.Listener.Addr().String(), Link: Link{DropResponseEvery: 2, DropMatch: "POST /commit"}})
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	type step struct {
		method, path string
		wantOK       bool
	}
	steps := []step{
		{"POST", "/commit", true},
		{"GET", "/other", true},
		{"POST", "/commit", false}, // 2nd match: dropped
		{"POST", "/other", true},
		{"POST", "/commit", true},
		{"POST", "/commit", false}, // 4th match
	}
	for i, s := range steps {
		req, _ := http.NewRequest(s.method, p.URL()+s.path, strings.NewReader("body"))
		resp, err := client.Do(req)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if (err == nil) != s.wantOK {
			t.Fatalf("step %d %s %s: err %v, want ok=%v", i, s.method, s.path, err, s.wantOK)
		}
	}
	if n := commits.Load(); n != 4 {
		t.Fatalf("server committed %d, want 4 (dropped answers still commit)", n)
	}
	if st := p.Stats(); st.DroppedResponses != 2 || st.Cuts != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// TestProxy_HTTP runs a real HTTP server through a shaped link with random
// cuts; a retrying client gets every body intact.
func TestProxy_HTTP(t *testing.T) {
	body := payload(100 << 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(body)
	}))
	defer srv.Close()
	p := startProxy(t, Config{Upstream: srv.Listener.Addr().String(), Seed: 3,
		Link: Link{DownBytesPerSec: 1 << 20, Latency: 5 * time.Millisecond, CutRandomBytes: 150 << 10, ResetRatio: 0.5}})
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	ok, failed := 0, 0
	for attempt := 0; ok < 5 && attempt < 50; attempt++ {
		resp, err := client.Get(p.URL() + "/blob")
		if err == nil {
			var got []byte
			got, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && !bytes.Equal(got, body) {
				t.Fatal("body changed on the way")
			}
		}
		if err != nil {
			failed++
			continue
		}
		ok++
	}
	if ok < 5 {
		t.Fatalf("only %d of 5 downloads succeeded (%d failed)", ok, failed)
	}
	st := waitStats(p, func(s Stats) bool { return s.BytesDown >= 5*int64(len(body)) })
	if st.Cuts == 0 || int64(failed) > st.Cuts {
		t.Fatalf("stats %+v, %d failed requests", st, failed)
	}
	if st.BytesDown < 5*int64(len(body)) {
		t.Fatalf("stats %+v: fewer bytes down than delivered", st)
	}
}

func TestProxy_SetLink(t *testing.T) {
	p := startProxy(t, Config{Upstream: startEcho(t), Link: Link{UpBytesPerSec: 8 << 10}})
	c := dial(t, p)
	if err := p.SetLink(Link{ResetRatio: 2}); err == nil {
		t.Fatal("invalid link accepted")
	}
	if err := p.SetLink(Link{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	roundTrip(t, c, payload(64<<10)) // 8 s at the old rate
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("took %v after the link was lifted", took)
	}
	if p.Link() != (Link{}) {
		t.Fatalf("Link() = %v", p.Link())
	}
}

func TestProxy_MaxConns(t *testing.T) {
	p := startProxy(t, Config{Upstream: startEcho(t), MaxConns: 2})
	a, b := dial(t, p), dial(t, p)
	roundTrip(t, a, []byte("a"))
	roundTrip(t, b, []byte("b"))
	c := dial(t, p)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("third connection was served")
	}
	if st := p.Stats(); st.Refused != 1 || st.Conns != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestProxy_Close(t *testing.T) {
	p, err := Start(Config{Upstream: startEcho(t), Link: Link{Latency: time.Hour / 4, UpBytesPerSec: 1}})
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	for i := 0; i < 3; i++ {
		c := dial(t, p)
		c.Write([]byte("stuck in a long wait"))
		conns = append(conns, c)
	}
	time.Sleep(50 * time.Millisecond)
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Close did not return")
	}
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("connection still open after Close")
		}
	}
	if c, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("still accepting after Close")
	}
	if p.OpenConns() != 0 {
		t.Fatalf("%d connections left", p.OpenConns())
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestLink_String(t *testing.T) {
	l := Link{UpBytesPerSec: Kbps(50), DownBytesPerSec: Kbps(50), Latency: 400 * time.Millisecond, CutEvery: 2 * time.Minute}
	if got := l.String(); got != "up=50kbps down=50kbps rtt=800ms cut-every=2m0s" {
		t.Fatalf("String = %q", got)
	}
	if (Link{}).String() != "direct" {
		t.Fatal("zero link is not direct")
	}
}
