package linkproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// chunk is a piece of one direction's byte stream on its way.
type chunk struct {
	data  []byte
	at    time.Time // when it may be delivered
	cut   bool      // cut the connection once it is delivered
	reset bool      // ... with an RST
}

// conn is one proxied connection: the device side (client) and the server
// side, with a reader and a writer goroutine per direction.
type conn struct {
	p      *Proxy
	client net.Conn
	done   chan struct{} // closed by kill
	once   sync.Once

	mu        sync.Mutex // guards the fields below
	server    net.Conn
	killed    bool
	inRequest bool   // request bytes went up since the last answer began
	head      []byte // the first bytes of the current request
}

func (c *conn) serve() {
	server, err := c.p.dial()
	if err != nil {
		c.p.refused.Add(1)
		c.kill(false, noCut)
		return
	}
	c.mu.Lock()
	if c.killed {
		c.mu.Unlock()
		server.Close()
		return
	}
	c.server = server
	c.mu.Unlock()
	// A new connection pays a round trip (the TCP handshake) first.
	if lat := c.p.link.Load().Latency; lat > 0 && !c.p.sleep(2*lat, c.done) {
		c.kill(false, noCut)
		return
	}
	inflight := c.p.cfg.InFlight
	upQ, downQ := make(chan chunk, inflight), make(chan chunk, inflight)
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); c.read(true, c.client, upQ) }()
	go func() { defer wg.Done(); c.write(true, server, upQ) }()
	go func() { defer wg.Done(); c.read(false, server, downQ) }()
	go func() { defer wg.Done(); c.write(false, c.client, downQ) }()
	wg.Wait()
	c.kill(false, noCut)
}

// read moves bytes from src into q, applying cuts, stalls, the bandwidth
// and the latency of its direction. It closes q when src ends or the
// connection is cut.
func (c *conn) read(up bool, src net.Conn, q chan<- chunk) {
	defer close(q)
	b := &c.p.down
	if up {
		b = &c.p.up
	}
	for {
		ls := c.p.link.Load()
		rate := ls.DownBytesPerSec
		if up {
			rate = ls.UpBytesPerSec
		}
		buf := make([]byte, c.p.chunkSize(rate))
		n, err := src.Read(buf)
		if n > 0 {
			if up {
				c.requestBytes(buf[:n])
			} else if drop, reset := c.responseStart(); drop {
				// The server has answered, so it has committed: lose the
				// answer and the connection.
				c.kill(reset, dropCut)
				return
			}
			k, cut, reset := c.p.admit(up, n)
			if w := c.p.link.Load().stallWait(time.Now()); w > 0 && !c.p.sleep(w, c.done) {
				return
			}
			if w := b.reserve(k, time.Now()); w > 0 && !c.p.sleep(w, c.done) {
				return
			}
			ch := chunk{data: buf[:k], at: time.Now().Add(c.p.link.Load().Latency), cut: cut, reset: reset}
			select {
			case q <- ch:
			case <-c.done:
				return
			}
			if cut {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				c.kill(false, noCut)
			}
			return
		}
	}
}

// write delivers q's chunks to dst when they are due. When q ends without
// a cut, it half-closes dst, passing the end of the stream on.
func (c *conn) write(up bool, dst net.Conn, q <-chan chunk) {
	count := &c.p.bytesDown
	if up {
		count = &c.p.bytesUp
	}
	for ch := range q {
		if !c.p.sleep(time.Until(ch.at), c.done) {
			return
		}
		n, err := dst.Write(ch.data)
		count.Add(int64(n))
		if err != nil {
			c.kill(false, noCut)
			return
		}
		if ch.cut {
			c.kill(ch.reset, linkCut)
			return
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

// requestBytes notes upstream bytes: the first ones after an answer began
// start a new request.
func (c *conn) requestBytes(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.inRequest {
		c.inRequest = true
		c.head = c.head[:0]
	}
	if room := maxHead - len(c.head); room > 0 {
		c.head = append(c.head, b[:min(len(b), room)]...)
	}
}

// responseStart notes downstream bytes; the first ones after a request are
// its answer, which the link may drop.
func (c *conn) responseStart() (drop, reset bool) {
	c.mu.Lock()
	if !c.inRequest {
		c.mu.Unlock()
		return false, false
	}
	c.inRequest = false
	head := append([]byte(nil), c.head...)
	c.mu.Unlock()
	return c.p.matchDrop(head)
}

// Why a connection is killed: an end that is no fault of the link, a cut
// the link made on purpose, or a cut that drops an answer.
type cause int

const (
	noCut cause = iota
	linkCut
	dropCut
)

// kill closes both sides once, with an RST when reset is set, counting
// the cut (before anyone can see it) by its cause. It reports whether
// this call closed the connection.
func (c *conn) kill(reset bool, why cause) bool {
	did := false
	c.once.Do(func() {
		did = true
		c.mu.Lock()
		c.killed = true
		server := c.server
		c.mu.Unlock()
		if why != noCut {
			c.p.cuts.Add(1)
			if reset {
				c.p.resets.Add(1)
			}
			if why == dropCut {
				c.p.dropped.Add(1)
			}
		}
		for _, nc := range []net.Conn{c.client, server} {
			if nc == nil {
				continue
			}
			if tc, ok := nc.(*net.TCPConn); ok && reset {
				_ = tc.SetLinger(0)
			}
			_ = nc.Close()
		}
		close(c.done)
	})
	return did
}
