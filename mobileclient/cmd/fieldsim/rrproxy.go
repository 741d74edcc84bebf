package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"time"
)

// rrProxy is the load balancer in front of several fieldsync instances:
// an in-process reverse proxy on a loopback port that sends each request
// to the next instance in turn (no stickiness: a tus upload's PATCHes
// land on any instance). It keeps the client's Host header and adds
// X-Forwarded-For, which the instances honour with -trust-proxy.
type rrProxy struct {
	url, addr string
	srv       *http.Server
	tr        *http.Transport
}

// startRoundRobin starts a round-robin proxy to the given host:port
// backends.
func startRoundRobin(backends []string) (*rrProxy, error) {
	if len(backends) == 0 {
		return nil, errors.New("round-robin proxy: no backends")
	}
	targets := make([]*url.URL, len(backends))
	for i, b := range backends {
		targets[i] = &url.URL{Scheme: "http", Host: b}
	}
	var next atomic.Uint64
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 512,
		DisableCompression:  true, // pass bodies through as they are
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			t := targets[(next.Add(1)-1)%uint64(len(targets))]
			pr.SetURL(t)
			pr.SetXForwarded()
			pr.Out.Host = pr.In.Host
		},
		Transport: tr,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &rrProxy{addr: ln.Addr().String(), tr: tr, srv: &http.Server{Handler: rp, ReadHeaderTimeout: 30 * time.Second}}
	p.url = "http://" + p.addr
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// close stops the proxy (at most 5 s for requests in flight).
func (p *rrProxy) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := p.srv.Shutdown(ctx)
	p.tr.CloseIdleConnections()
	if errors.Is(err, context.DeadlineExceeded) {
		return p.srv.Close()
	}
	return err
}
