package upload_test

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"fieldsync/server/servertest"
	"fieldsync/server/upload/uploadtest"
)

// cutProxy is a TCP proxy in front of the server that closes the
// connection it is forwarding when the bytes sent from clients to the
// server reach the next cut point: a link that drops mid-request. It
// counts every byte that crossed it towards the server.
type cutProxy struct {
	ln     net.Listener
	target string

	mu   sync.Mutex
	sent int64   // client-to-server bytes forwarded, all connections
	cuts []int64 // ascending cut points in sent bytes
	done int     // cuts made
}

func newCutProxy(t *testing.T, target string, cuts []int64) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(cuts, func(i, j int) bool { return cuts[i] < cuts[j] })
	p := &cutProxy{ln: ln, target: target, cuts: cuts}
	go p.serve()
	t.Cleanup(func() { ln.Close() })
	return p
}

func (p *cutProxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *cutProxy) stats() (sent int64, cuts int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent, p.done
}

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

func (p *cutProxy) handle(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	closeBoth := func() { client.Close(); server.Close() }
	go func() { _, _ = io.Copy(client, server); closeBoth() }()
	buf := make([]byte, 16<<10)
	for {
		n, err := client.Read(buf)
		for n > 0 {
			p.mu.Lock()
			k := int64(n)
			cut := false
			if len(p.cuts) > 0 && p.sent+k >= p.cuts[0] {
				k, cut = max(0, p.cuts[0]-p.sent), true
				p.cuts = p.cuts[1:]
				p.done++
			}
			p.sent += k
			p.mu.Unlock()
			if k > 0 {
				if _, werr := server.Write(buf[:k]); werr != nil {
					closeBoth()
					return
				}
			}
			if cut {
				closeBoth()
				return
			}
			n = 0
		}
		if err != nil {
			closeBoth()
			return
		}
	}
}

// resumeClient talks through the proxy without reusing connections, so a
// cut only ever hits the request it interrupts. Big PATCHes wait for 100
// Continue: the client resumes the instant a cut happens, sometimes
// before the server has even started on the request that was cut, and a
// PATCH from the offset HEAD gave then must not send its body for
// nothing.
func resumeClient(base, token string) *uploadtest.Client {
	return &uploadtest.Client{Base: base, Token: token, HTTP: &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true, ExpectContinueTimeout: 10 * time.Second},
		Timeout:   30 * time.Second,
	}}
}

func TestUpload_ResumeAfterCuts(t *testing.T) {
	const size = 4 << 20
	for _, tc := range []struct {
		name  string
		cuts  int
		chunk int // 0: one PATCH for the rest; else checksummed chunks
	}{
		{"one PATCH per attempt, 6 random cuts", 6, 0},
		{"checksummed 256 KiB chunks, 4 random cuts", 4, 256 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newField(t)
			data := f.file(t, size)
			loc := f.create(t, data)
			cuts := make([]int64, tc.cuts)
			for i := range cuts {
				cuts[i] = 1 + rand.Int64N(size-1)
			}
			t.Logf("cuts at %v", cuts)
			p := newCutProxy(t, strings.TrimPrefix(f.env.URL, "http://"), cuts)
			cl := resumeClient(p.URL(), f.dev.Token)
			url := p.URL() + loc[len(f.env.URL):]
			st, err := cl.Upload(t.Context(), url, data, tc.chunk, 20)
			if err != nil {
				t.Fatalf("upload: %v (stats %+v)", err, st)
			}
			for _, e := range st.Errors {
				t.Log(e)
			}
			sent, done := p.stats()
			f.present(t, data)
			ratio := float64(sent) / size
			perRequest := float64(sent-size) / float64(st.Requests)
			t.Logf("file %d bytes; %d cuts; %d requests; %d bytes crossed the link (ratio %.4f, %.0f bytes per request beyond the file); %d body bytes handed to the transport (ratio %.4f)",
				size, done, st.Requests, sent, ratio, perRequest, st.BodyBytes, float64(st.BodyBytes)/size)
			if done < tc.cuts {
				t.Errorf("only %d of %d cuts happened", done, tc.cuts)
			}
			// 1 KiB per request is generous for our headers (~400 bytes).
			limit := 1.02*size + float64(st.Requests)*1024
			if tc.chunk > 0 {
				// A cut checksummed chunk is sent again whole.
				limit += float64(done * tc.chunk)
			}
			if float64(sent) > limit {
				t.Errorf("%d bytes sent for a %d-byte file; want < %.0f", sent, size, limit)
			}
			if got := f.partials(t); len(got) != 0 {
				t.Errorf("partial files left: %v", got)
			}
		})
	}
}

// slowBody hands out data in pieces, signalling after each, and blocks
// before giving anything past stopAt until released.
type slowBody struct {
	data    []byte
	off     int
	stopAt  int
	reached chan struct{}
	release chan struct{}
}

func (b *slowBody) Read(p []byte) (int, error) {
	if b.off == b.stopAt {
		close(b.reached)
		<-b.release
		return 0, errors.New("client gave up")
	}
	if b.off >= len(b.data) {
		return 0, io.EOF
	}
	n := copy(p, b.data[b.off:min(len(b.data), b.stopAt, b.off+8192)])
	b.off += n
	return n, nil
}

func TestUpload_ServerRestartMidUpload(t *testing.T) {
	env := servertest.Start(t)
	f := fieldOn(t, env)
	const size = 1 << 20
	data := f.file(t, size)
	loc := f.create(t, data)
	id := loc[strings.LastIndex(loc, "/")+1:]
	part := filepath.Join(f.uploadDir(), id+".part")

	// A PATCH that sends 300 000 bytes, then hangs: the server goes down
	// while it is in the middle of receiving.
	body := &slowBody{data: data, stopAt: 300_000, reached: make(chan struct{}), release: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPatch, loc, body)
		req.Header.Set("Tus-Resumable", "1.0.0")
		req.Header.Set("Authorization", "Bearer "+f.dev.Token)
		req.Header.Set("Upload-Offset", "0")
		req.Header.Set("Content-Type", "application/offset+octet-stream")
		req.ContentLength = size
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-body.reached
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Stat(part); err == nil && fi.Size() == 300_000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server did not write the bytes it received")
		}
		time.Sleep(5 * time.Millisecond)
	}
	env.Server.CloseClientConnections()
	env.Stop()
	close(body.release)
	<-errc

	env2 := servertest.StartWith(t, servertest.Options{Dir: env.Dir})
	f2 := &field{env: env2, dev: f.dev, cl: &uploadtest.Client{Base: env2.URL, Token: f.dev.Token}, hh: f.hh}
	loc2 := env2.URL + "/api/v1/uploads/" + id
	h, err := f2.cl.Head(t.Context(), loc2)
	if err != nil || h.Status != http.StatusOK || h.Offset() != 300_000 {
		t.Fatalf("HEAD after restart: %v %+v", err, h)
	}
	if p, err := f2.cl.Patch(t.Context(), loc2, 300_000, data[300_000:], nil); err != nil || p.Status != http.StatusNoContent || p.Offset() != size {
		t.Fatalf("PATCH after restart: %v %+v", err, p)
	}
	f2.present(t, data)
}

func TestUpload_NewRequestTakesOverAStalledPatch(t *testing.T) {
	f := newField(t)
	const size = 200_000
	data := f.file(t, size)
	loc := f.create(t, data)
	// The first PATCH stalls after 50 000 bytes without closing: a dead
	// link the server has not noticed.
	body := &slowBody{data: data, stopAt: 50_000, reached: make(chan struct{}), release: make(chan struct{})}
	defer close(body.release)
	go func() {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPatch, loc, body)
		req.Header.Set("Tus-Resumable", "1.0.0")
		req.Header.Set("Authorization", "Bearer "+f.dev.Token)
		req.Header.Set("Upload-Offset", "0")
		req.Header.Set("Content-Type", "application/offset+octet-stream")
		req.ContentLength = size
		if resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	<-body.reached
	time.Sleep(50 * time.Millisecond) // let the bytes reach the server
	start := time.Now()
	h, err := f.cl.Head(t.Context(), loc)
	if err != nil || h.Status != http.StatusOK || h.Offset() != 50_000 {
		t.Fatalf("HEAD: %v %+v", err, h)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("HEAD waited %v for the stalled PATCH", d)
	}
	if p, err := f.cl.Patch(t.Context(), loc, 50_000, data[50_000:], nil); err != nil || p.Offset() != size {
		t.Fatalf("PATCH: %v %+v", err, p)
	}
	f.present(t, data)
}
