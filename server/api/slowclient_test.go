package api_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"fieldsync/server/servertest"
	"fieldsync/server/upload"
	"fieldsync/server/upload/uploadtest"
	"fieldsync/syncproto"
)

// slowReader hands out its bytes a few at a time, pausing between reads.
type slowReader struct {
	r     *bytes.Reader
	step  int
	pause time.Duration
}

func (s *slowReader) Read(p []byte) (int, error) {
	if s.r.Len() == 0 {
		return 0, io.EOF
	}
	time.Sleep(s.pause)
	return s.r.Read(p[:min(len(p), s.step)])
}

// TestSlowClients_Cut: a client that trickles its headers or its body
// (slowloris) is cut off at the server's timeouts, while an upload body
// that comes slowly but steadily gets the time its length needs.
func TestSlowClients_Cut(t *testing.T) {
	const readTimeout = time.Second
	env := servertest.StartWith(t, servertest.Options{
		HTTPServer: func(hs *http.Server) {
			hs.ReadHeaderTimeout = 300 * time.Millisecond
			hs.ReadTimeout = readTimeout
			hs.IdleTimeout = time.Second
		},
	})
	addr := strings.TrimPrefix(env.URL, "http://")

	t.Run("headers never finished", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n"); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c) // returns when the server closes
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("connection held %v with unfinished headers", d)
		}
	})

	t.Run("idle keep-alive closed", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c)
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("idle connection held %v", d)
		}
	})

	t.Run("body trickled to an ordinary endpoint is cut", func(t *testing.T) {
		body := []byte(`{"username":"admin","password":"` + servertest.AdminPassword + `"}` + strings.Repeat(" ", 200))
		req, _ := http.NewRequest("POST", env.URL+"/api/v1/auth/login", &slowReader{r: bytes.NewReader(body), step: 10, pause: 200 * time.Millisecond})
		req.ContentLength = int64(len(body))
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Fatalf("a body trickled over %v was read to the end", time.Since(start))
			}
		}
		if d := time.Since(start); d > 4*time.Second {
			t.Fatalf("trickled body held the connection %v", d)
		}
	})

	t.Run("slow steady upload completes", func(t *testing.T) {
		dev := uploadtest.NewDevice(t, env, "slow-worker", "G11")
		cl := &uploadtest.Client{Base: env.URL, Token: dev.Token}
		data := make([]byte, 3000)
		rand.Read(data)
		hh := syncproto.NewID(time.Now())
		uploadtest.Household(t, env, hh, "G11")
		dev.PushVisit(t, uploadtest.Visit(syncproto.NewID(time.Now()), hh, uploadtest.Ref(data, "progress")))
		cr, err := cl.Create(t.Context(), data, nil)
		if err != nil || cr.Status != http.StatusCreated {
			t.Fatalf("create: %v %+v", err, cr)
		}
		// 3000 bytes at ~1500 B/s: two seconds, twice the read timeout;
		// the upload handler moves the read deadline as bytes arrive.
		req, _ := http.NewRequest(http.MethodPatch, cr.Header.Get("Location"), &slowReader{r: bytes.NewReader(data), step: 150, pause: 100 * time.Millisecond})
		if !strings.HasPrefix(req.URL.String(), "http") {
			req, _ = http.NewRequest(http.MethodPatch, env.URL+cr.Header.Get("Location"), &slowReader{r: bytes.NewReader(data), step: 150, pause: 100 * time.Millisecond})
		}
		req.ContentLength = int64(len(data))
		req.Header.Set("Tus-Resumable", upload.TusVersion)
		req.Header.Set("Authorization", "Bearer "+dev.Token)
		req.Header.Set("Content-Type", "application/offset+octet-stream")
		req.Header.Set("Upload-Offset", "0")
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("slow upload cut after %v: %v", time.Since(start), err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Upload-Offset") != strconv.Itoa(len(data)) {
			t.Fatalf("slow upload: %s offset %s", resp.Status, resp.Header.Get("Upload-Offset"))
		}
		if d := time.Since(start); d < readTimeout {
			t.Fatalf("upload took %v; the test needs it slower than the read timeout", d)
		}
	})
}
