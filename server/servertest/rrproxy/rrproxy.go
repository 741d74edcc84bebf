// Package rrproxy is a small round-robin HTTP load balancer for tests that
// run several fieldsync instances behind one address: every request goes
// to the next backend in turn (no stickiness, so consecutive requests of
// one client, and the PATCHes of one upload, land on different
// instances), a backend whose connection is refused is skipped for that
// request, and a backend can be marked down by the test.
//
// It counts requests per backend and hands each answer to an observer,
// which lets a test see which instance served which request.
package rrproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrNoBackend is the error when every backend is down or refuses.
var ErrNoBackend = errors.New("rrproxy: no backend accepts connections")

// Observer is called with every answer a backend gave (after its headers
// arrived): the backend's index, the request and the response.
type Observer func(backend int, req *http.Request, resp *http.Response)

// Proxy is a running round-robin proxy. Its methods are safe for
// concurrent use.
type Proxy struct {
	srv      *httptest.Server
	backends []*url.URL
	down     []atomic.Bool
	counts   []atomic.Int64
	next     atomic.Uint64
	refused  atomic.Int64
	failed   atomic.Int64
	observe  Observer
	tr       *http.Transport
	stopOnce sync.Once
}

// Start starts a proxy on a loopback port in front of backends (base
// URLs such as http://127.0.0.1:8080). observe may be nil. Clients'
// addresses go to the backends in X-Forwarded-For.
func Start(backends []string, observe Observer) (*Proxy, error) {
	if len(backends) == 0 {
		return nil, errors.New("rrproxy: no backends")
	}
	p := &Proxy{observe: observe, down: make([]atomic.Bool, len(backends)), counts: make([]atomic.Int64, len(backends))}
	for _, b := range backends {
		u, err := url.Parse(b)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("rrproxy: backend %q: %v", b, err)
		}
		p.backends = append(p.backends, u)
	}
	p.tr = &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetXForwarded()
			r.Out.Host = r.In.Host
		},
		Transport: roundTripper{p},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "rrproxy: "+err.Error(), http.StatusBadGateway)
		},
		FlushInterval: -1,
	}
	p.srv = httptest.NewServer(rp)
	return p, nil
}

// URL is the proxy's base URL.
func (p *Proxy) URL() string { return p.srv.URL }

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.srv.Listener.Addr().String() }

// Close stops the proxy and closes its connections.
func (p *Proxy) Close() {
	p.stopOnce.Do(func() {
		p.srv.CloseClientConnections()
		p.srv.Close()
		p.tr.CloseIdleConnections()
	})
}

// SetDown marks backend i down (true: skipped) or up again.
func (p *Proxy) SetDown(i int, down bool) { p.down[i].Store(down) }

// Counts returns how many requests each backend was sent (answered or
// not; refused connections not counted).
func (p *Proxy) Counts() []int64 {
	out := make([]int64, len(p.counts))
	for i := range p.counts {
		out[i] = p.counts[i].Load()
	}
	return out
}

// Refused counts connections a backend refused (each skipped).
func (p *Proxy) Refused() int64 { return p.refused.Load() }

// Failed counts requests sent to a backend that ended without an answer
// (the backend died or dropped the connection): the client got a 502.
func (p *Proxy) Failed() int64 { return p.failed.Load() }

// roundTripper picks the backend of each request.
type roundTripper struct{ p *Proxy }

func (rt roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	p := rt.p
	n := len(p.backends)
	start := int(p.next.Add(1) % uint64(n))
	// The body is handed to the transport behind a wrapper that the
	// transport cannot close, so that a request whose connection was
	// refused (nothing read from the body) can go to the next backend.
	var body *guardedBody
	if req.Body != nil && req.Body != http.NoBody {
		body = &guardedBody{r: req.Body}
		defer req.Body.Close()
	}
	var lastErr error = ErrNoBackend
	for k := range n {
		i := (start + k) % n
		if p.down[i].Load() {
			continue
		}
		out := req.Clone(req.Context())
		b := p.backends[i]
		out.URL.Scheme, out.URL.Host = b.Scheme, b.Host
		if body != nil {
			out.Body = body
		}
		resp, err := p.tr.RoundTrip(out)
		if err != nil {
			if refused(err) && (body == nil || body.n.Load() == 0) {
				p.refused.Add(1)
				lastErr = err
				continue
			}
			p.counts[i].Add(1)
			p.failed.Add(1)
			return nil, err
		}
		p.counts[i].Add(1)
		if p.observe != nil {
			p.observe(i, req, resp)
		}
		return resp, nil
	}
	return nil, lastErr
}

// refused reports whether err is a refused (or reset at dial) connection.
func refused(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, context.Canceled)
}

// guardedBody counts what was read and ignores Close (the proxy closes
// the incoming body itself).
type guardedBody struct {
	r io.Reader
	n atomic.Int64
}

func (g *guardedBody) Read(b []byte) (int, error) {
	n, err := g.r.Read(b)
	g.n.Add(int64(n))
	return n, err
}

func (g *guardedBody) Close() error { return nil }
