// Package linkproxy emulates one device's network link inside a test or
// simulator process: a TCP proxy listening on 127.0.0.1 that forwards each
// accepted connection to a loopback server, shaping and breaking it on the
// way.
//
// What a Link can do, per direction where it says so:
//
//   - bandwidth: a token bucket per direction (device → server is "up",
//     server → device is "down"), shared by every connection of the proxy,
//     as the connections of one phone share its radio;
//   - latency: a one-way delay added to every chunk in each direction
//     (pipelined, so it does not lower throughput), plus one round trip
//     before a new connection's first byte, as a TCP handshake would cost;
//   - stalls: every StallEvery the link carries nothing for StallFor;
//   - loss, approximated as connection cuts: at exact multiples of an
//     upstream byte count ("cut every 256 KiB"), at random byte offsets
//     drawn from a seeded generator, or every CutEvery of wall time;
//   - resets: a chosen fraction of cuts is delivered as a TCP RST
//     (SetLinger(0)) instead of a FIN;
//   - dropped responses: every Nth request whose first bytes match a
//     prefix reaches the server and is answered, and the connection is cut
//     as the first byte of the answer arrives, so the server has committed
//     what the device never hears about.
//
// Everything is bounded: connections (MaxConns), chunks in flight per
// direction, dial time; every wait ends when the connection or the proxy
// closes, and Close returns after every goroutine has ended. Only loopback
// addresses are accepted, for the listener, the upstream server and the
// source address of upstream connections. Given the same Seed and the same
// byte stream, the random cut offsets are the same.
package linkproxy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The package's errors.
var (
	// ErrNotLoopback: an address that is not a loopback address.
	ErrNotLoopback = errors.New("linkproxy: not a loopback address")
	// ErrInvalid: a Link or Config that cannot be used.
	ErrInvalid = errors.New("linkproxy: invalid configuration")
)

// Link describes the emulated link. The zero Link forwards without delay,
// limit or fault.
type Link struct {
	// UpBytesPerSec and DownBytesPerSec cap each direction (0: no cap).
	UpBytesPerSec   int64
	DownBytesPerSec int64
	// Latency is the one-way delay (half the round trip time).
	Latency time.Duration
	// StallEvery and StallFor: at StallEvery, 2×StallEvery, ... after the
	// link was set, nothing moves for StallFor (StallFor < StallEvery).
	StallEvery time.Duration
	StallFor   time.Duration
	// CutEvery cuts every open connection at CutPhase, CutPhase+CutEvery,
	// ... after the link was set (CutPhase 0 means CutEvery).
	CutEvery time.Duration
	CutPhase time.Duration
	// CutEveryUpBytes cuts the connection that carries upstream byte
	// number N, 2N, 3N, ... of the proxy's life (counted from SetLink),
	// after delivering exactly that byte.
	CutEveryUpBytes int64
	// CutRandomBytes cuts at random offsets of the bytes crossing the link
	// (both directions together), uniformly 1..2×CutRandomBytes apart.
	CutRandomBytes int64
	// ResetRatio is the fraction of cuts sent as RST instead of FIN
	// (0: all FIN, 1: all RST).
	ResetRatio float64
	// DropResponseEvery drops the answer of every Nth request that starts
	// with DropMatch (every request if DropMatch is empty).
	DropResponseEvery int
	DropMatch         string
}

// Validate reports whether the link can be used.
func (l Link) Validate() error {
	switch {
	case l.UpBytesPerSec < 0 || l.DownBytesPerSec < 0:
		return fmt.Errorf("%w: negative bandwidth", ErrInvalid)
	case l.Latency < 0 || l.StallEvery < 0 || l.StallFor < 0 || l.CutEvery < 0 || l.CutPhase < 0:
		return fmt.Errorf("%w: negative duration", ErrInvalid)
	case l.StallFor > 0 && l.StallFor >= l.StallEvery:
		return fmt.Errorf("%w: StallFor must be below StallEvery", ErrInvalid)
	case l.CutEveryUpBytes < 0 || l.CutRandomBytes < 0:
		return fmt.Errorf("%w: negative cut distance", ErrInvalid)
	case l.ResetRatio < 0 || l.ResetRatio > 1 || l.ResetRatio != l.ResetRatio:
		return fmt.Errorf("%w: ResetRatio outside [0, 1]", ErrInvalid)
	case l.DropResponseEvery < 0:
		return fmt.Errorf("%w: negative DropResponseEvery", ErrInvalid)
	case len(l.DropMatch) > maxHead:
		return fmt.Errorf("%w: DropMatch longer than %d bytes", ErrInvalid, maxHead)
	}
	return nil
}

// Kbps converts kilobits per second to the bytes per second a Link takes.
func Kbps(k float64) int64 { return int64(k * 1000 / 8) }

// Config configures a Proxy.
type Config struct {
	// Upstream is the server's host:port; the host must be a loopback IP
	// or "localhost".
	Upstream string
	// LocalIP, if set, is the loopback source address of upstream
	// connections (e.g. 127.0.3.7), so that the server sees each emulated
	// device at its own address.
	LocalIP net.IP
	// Link is the initial link; SetLink changes it.
	Link Link
	// Seed makes random cut offsets and RST choices reproducible.
	Seed uint64
	// MaxConns bounds open connections; more are refused (default 64).
	MaxConns int
	// MaxChunk bounds the bytes read and forwarded at once (default 16 KiB;
	// shaped directions use smaller chunks).
	MaxChunk int
	// InFlight bounds the chunks queued per direction (default 64).
	InFlight int
	// DialTimeout bounds an upstream connect (default 5 s).
	DialTimeout time.Duration
}

// Stats are the proxy's counters.
type Stats struct {
	// BytesUp and BytesDown count bytes delivered to the server and to
	// the device.
	BytesUp, BytesDown int64
	// Conns counts accepted connections; Refused those over MaxConns or
	// whose upstream dial failed.
	Conns, Refused int64
	// Cuts counts connections the proxy cut on purpose (every cause);
	// Resets counts those of them sent as RST; DroppedResponses those cut
	// as an answer arrived.
	Cuts, Resets, DroppedResponses int64
}

type linkState struct {
	Link
	epoch time.Time
}

// Proxy is a running link emulator. Its methods are safe for concurrent
// use.
type Proxy struct {
	cfg    Config
	ln     net.Listener
	link   atomic.Pointer[linkState]
	up     bucket
	down   bucket
	relink chan struct{}
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex // guards the fields below
	rng       *rand.Rand
	conns     map[*conn]struct{}
	upTotal   int64 // upstream bytes admitted since SetLink
	allTotal  int64 // bytes admitted both ways since SetLink
	nextUpCut int64
	nextRand  int64
	matched   int64 // requests matching DropMatch since SetLink
	closed    bool

	bytesUp, bytesDown, nConns, refused, cuts, resets, dropped atomic.Int64
}

// maxHead is how many first bytes of a request are kept to match DropMatch.
const maxHead = 64

// IsLoopback reports whether host (an IP or "localhost") is loopback.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Start listens on 127.0.0.1 (a free port) and serves until Close.
func Start(cfg Config) (*Proxy, error) {
	host, _, err := net.SplitHostPort(cfg.Upstream)
	if err != nil {
		return nil, fmt.Errorf("%w: upstream %q: %v", ErrInvalid, cfg.Upstream, err)
	}
	if !IsLoopback(host) {
		return nil, fmt.Errorf("upstream %q: %w", cfg.Upstream, ErrNotLoopback)
	}
	if cfg.LocalIP != nil && !cfg.LocalIP.IsLoopback() {
		return nil, fmt.Errorf("local IP %v: %w", cfg.LocalIP, ErrNotLoopback)
	}
	if err := cfg.Link.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 64
	}
	if cfg.MaxChunk <= 0 {
		cfg.MaxChunk = 16 << 10
	}
	if cfg.InFlight <= 0 {
		cfg.InFlight = 64
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("linkproxy: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		cfg: cfg, ln: ln, ctx: ctx, cancel: cancel,
		relink: make(chan struct{}, 1),
		rng:    rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x6c696e6b70726f78)), // "linkprox"
		conns:  map[*conn]struct{}{},
	}
	p.SetLink(cfg.Link)
	p.wg.Add(2)
	go p.acceptLoop()
	go p.cutLoop()
	return p, nil
}

// Addr is the proxy's listen address (127.0.0.1:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is "http://" + Addr, for HTTP clients that should go through the link.
func (p *Proxy) URL() string { return "http://" + p.Addr() }

// Link returns the current link.
func (p *Proxy) Link() Link { return p.link.Load().Link }

// SetLink changes the link for every connection, open or new. Time-based
// stalls and cuts and the byte counts for cut offsets start again from now.
// An invalid link is refused and the old one kept.
func (p *Proxy) SetLink(l Link) error {
	if err := l.Validate(); err != nil {
		return err
	}
	now := time.Now()
	p.mu.Lock()
	p.link.Store(&linkState{Link: l, epoch: now})
	p.upTotal, p.allTotal, p.matched = 0, 0, 0
	p.nextUpCut = l.CutEveryUpBytes
	p.nextRand = 0
	if l.CutRandomBytes > 0 {
		p.nextRand = p.randomGap(l.CutRandomBytes)
	}
	p.mu.Unlock()
	p.up.set(l.UpBytesPerSec, now)
	p.down.set(l.DownBytesPerSec, now)
	select {
	case p.relink <- struct{}{}:
	default:
	}
	return nil
}

// randomGap draws the distance to the next random cut; p.mu held.
func (p *Proxy) randomGap(mean int64) int64 { return 1 + p.rng.Int64N(2*mean) }

// coin reports true with probability ratio; p.mu held. The generator is
// consulted only for ratios strictly between 0 and 1.
func (p *Proxy) coin(ratio float64) bool {
	switch {
	case ratio <= 0:
		return false
	case ratio >= 1:
		return true
	}
	return p.rng.Float64() < ratio
}

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	return Stats{
		BytesUp: p.bytesUp.Load(), BytesDown: p.bytesDown.Load(),
		Conns: p.nConns.Load(), Refused: p.refused.Load(),
		Cuts: p.cuts.Load(), Resets: p.resets.Load(), DroppedResponses: p.dropped.Load(),
	}
}

// OpenConns returns the number of connections currently open.
func (p *Proxy) OpenConns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// CutAll cuts every open connection now (RST or FIN as ResetRatio says)
// and returns how many it cut.
func (p *Proxy) CutAll() int {
	p.mu.Lock()
	ratio := p.link.Load().ResetRatio
	type victim struct {
		c     *conn
		reset bool
	}
	vs := make([]victim, 0, len(p.conns))
	for c := range p.conns {
		vs = append(vs, victim{c, p.coin(ratio)})
	}
	p.mu.Unlock()
	n := 0
	for _, v := range vs {
		if v.c.kill(v.reset, linkCut) {
			n++
		}
	}
	return n
}

// Close stops listening, cuts every connection and waits for every
// goroutine of the proxy to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	conns := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	if already {
		p.wg.Wait()
		return nil
	}
	p.cancel()
	err := p.ln.Close()
	for _, c := range conns {
		c.kill(false, noCut)
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			if p.ctx.Err() != nil {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// A transient accept error (too many files): back off briefly.
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		c := &conn{p: p, client: nc, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed || len(p.conns) >= p.cfg.MaxConns {
			p.mu.Unlock()
			p.refused.Add(1)
			nc.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.nConns.Add(1)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			c.serve()
			p.mu.Lock()
			delete(p.conns, c)
			p.mu.Unlock()
		}()
	}
}

// cutLoop performs the time-based cuts of the current link.
func (p *Proxy) cutLoop() {
	defer p.wg.Done()
	for {
		ls := p.link.Load()
		var timer *time.Timer
		var fire <-chan time.Time
		if ls.CutEvery > 0 {
			timer = time.NewTimer(time.Until(ls.nextCut(time.Now())))
			fire = timer.C
		}
		select {
		case <-p.ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case <-p.relink:
			if timer != nil {
				timer.Stop()
			}
		case <-fire:
			p.CutAll()
		}
	}
}

// nextCut is the first time-based cut strictly after now.
func (ls *linkState) nextCut(now time.Time) time.Time {
	phase := ls.CutPhase
	if phase <= 0 {
		phase = ls.CutEvery
	}
	first := ls.epoch.Add(phase)
	if now.Before(first) {
		return first
	}
	k := now.Sub(first)/ls.CutEvery + 1
	return first.Add(k * ls.CutEvery)
}

// stallWait is how long a chunk read at now must wait for a stall to end.
func (ls *linkState) stallWait(now time.Time) time.Duration {
	if ls.StallEvery <= 0 || ls.StallFor <= 0 {
		return 0
	}
	elapsed := now.Sub(ls.epoch)
	if elapsed < ls.StallEvery {
		return 0
	}
	if pos := elapsed % ls.StallEvery; pos < ls.StallFor {
		return ls.StallFor - pos
	}
	return 0
}

// admit decides how many of n bytes read in a direction may cross before a
// byte-offset cut, and whether the connection is cut after them.
func (p *Proxy) admit(up bool, n int) (k int, cut, reset bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ls := p.link.Load()
	limit := int64(n)
	upHit, randHit := false, false
	if up && ls.CutEveryUpBytes > 0 {
		if d := p.nextUpCut - p.upTotal; d <= limit {
			limit, upHit = d, true
		}
	}
	if ls.CutRandomBytes > 0 {
		if d := p.nextRand - p.allTotal; d <= limit {
			if d < limit {
				upHit = false
			}
			limit, randHit = d, true
		}
	}
	if up {
		p.upTotal += limit
	}
	p.allTotal += limit
	if upHit {
		p.nextUpCut += ls.CutEveryUpBytes
	}
	if randHit {
		p.nextRand += p.randomGap(ls.CutRandomBytes)
	}
	cut = upHit || randHit
	if cut {
		reset = p.coin(ls.ResetRatio)
	}
	return int(limit), cut, reset
}

// matchDrop counts a response whose request began with head and reports
// whether to drop it, and whether as RST.
func (p *Proxy) matchDrop(head []byte) (drop, reset bool) {
	ls := p.link.Load()
	if ls.DropResponseEvery <= 0 {
		return false, false
	}
	if len(head) < len(ls.DropMatch) || string(head[:len(ls.DropMatch)]) != ls.DropMatch {
		return false, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.matched++
	if p.matched%int64(ls.DropResponseEvery) != 0 {
		return false, false
	}
	return true, p.coin(ls.ResetRatio)
}

// chunkSize is the read size for a direction shaped to rate bytes/s:
// about 50 ms of traffic, at least 256 bytes.
func (p *Proxy) chunkSize(rate int64) int {
	if rate <= 0 {
		return p.cfg.MaxChunk
	}
	return int(min(int64(p.cfg.MaxChunk), max(256, rate/20)))
}

// sleep waits d, or until done or the proxy closes; false if cut short.
func (p *Proxy) sleep(d time.Duration, done <-chan struct{}) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	case <-p.ctx.Done():
		return false
	}
}

func (p *Proxy) dial() (net.Conn, error) {
	d := net.Dialer{Timeout: p.cfg.DialTimeout}
	if p.cfg.LocalIP != nil {
		d.LocalAddr = &net.TCPAddr{IP: p.cfg.LocalIP}
	}
	return d.DialContext(p.ctx, "tcp", p.cfg.Upstream)
}

// String describes the link briefly, for logs.
func (l Link) String() string {
	if l == (Link{}) {
		return "direct"
	}
	s := ""
	add := func(k, v string) {
		if s != "" {
			s += " "
		}
		s += k + "=" + v
	}
	if l.UpBytesPerSec > 0 || l.DownBytesPerSec > 0 {
		add("up", strconv.FormatInt(l.UpBytesPerSec*8/1000, 10)+"kbps")
		add("down", strconv.FormatInt(l.DownBytesPerSec*8/1000, 10)+"kbps")
	}
	if l.Latency > 0 {
		add("rtt", (2 * l.Latency).String())
	}
	if l.StallEvery > 0 {
		add("stall", l.StallFor.String()+"/"+l.StallEvery.String())
	}
	if l.CutEvery > 0 {
		add("cut-every", l.CutEvery.String())
	}
	if l.CutEveryUpBytes > 0 {
		add("cut-every-up-bytes", strconv.FormatInt(l.CutEveryUpBytes, 10))
	}
	if l.CutRandomBytes > 0 {
		add("cut-random-bytes", strconv.FormatInt(l.CutRandomBytes, 10))
	}
	if l.ResetRatio > 0 {
		add("reset-ratio", strconv.FormatFloat(l.ResetRatio, 'g', 3, 64))
	}
	if l.DropResponseEvery > 0 {
		add("drop-response-every", strconv.Itoa(l.DropResponseEvery))
	}
	return s
}
