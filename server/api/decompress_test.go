package api

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/labstack/echo/v4"
)

// TestDecompress: gzip bodies of every size on both sides of
// maxBufferedGzip, with and without a Content-Length, several members,
// and broken streams, read through decompress by a real server: the
// handler gets exactly the original bytes, or the read error echo's
// middleware gave (a bad header, a truncated stream); 50 requests at
// once each get their own bytes (the pooled readers are not shared).
func TestDecompress(t *testing.T) {
	e := echo.New()
	e.Use(decompress)
	e.POST("/", func(c echo.Context) error {
		b, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return c.String(http.StatusBadRequest, "error: "+err.Error())
		}
		// A second read after the end keeps saying so.
		if n, err := c.Request().Body.Read(make([]byte, 1)); n != 0 || err == nil {
			return c.String(http.StatusInternalServerError, fmt.Sprintf("read after the end: %d %v", n, err))
		}
		return c.String(http.StatusOK, fmt.Sprintf("%d %s", len(b), sum(b)))
	})
	srv := httptest.NewServer(e)
	defer srv.Close()

	post := func(t *testing.T, body []byte, gz, chunked bool) (int, string) {
		t.Helper()
		var r io.Reader = bytes.NewReader(body)
		if chunked {
			r = struct{ io.Reader }{r} // no length known: chunked
		}
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/", r)
		if err != nil {
			t.Fatal(err)
		}
		if gz {
			req.Header.Set("Content-Encoding", "gzip")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	for _, n := range []int{0, 1, 1000, 64 << 10, maxBufferedGzip - 100, maxBufferedGzip + 100, 3 << 20} {
		for _, kind := range []string{"random", "text"} {
			data := random(n)
			if kind == "text" {
				data = bytes.Repeat([]byte("户主杨绍华,改造完成;"), n/20+1)[:n]
			}
			for _, chunked := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s %d chunked=%v", kind, n, chunked), func(t *testing.T) {
					st, got := post(t, gzipped(data), true, chunked)
					if want := fmt.Sprintf("%d %s", len(data), sum(data)); st != http.StatusOK || got != want {
						t.Fatalf("%d %q, want %q", st, got, want)
					}
				})
			}
		}
	}
	t.Run("not compressed", func(t *testing.T) {
		if st, got := post(t, []byte("plain"), false, false); st != 200 || got != "5 "+sum([]byte("plain")) {
			t.Fatalf("%d %q", st, got)
		}
	})
	t.Run("empty body said to be gzip", func(t *testing.T) {
		for _, chunked := range []bool{false, true} {
			if st, got := post(t, nil, true, chunked); st != 200 || got != "0 "+sum(nil) {
				t.Fatalf("chunked=%v: %d %q", chunked, st, got)
			}
		}
	})
	t.Run("two members", func(t *testing.T) {
		a, b := []byte("第一段"), random(5000)
		st, got := post(t, append(gzipped(a), gzipped(b)...), true, false)
		if all := append(append([]byte(nil), a...), b...); st != 200 || got != fmt.Sprintf("%d %s", len(all), sum(all)) {
			t.Fatalf("%d %q", st, got)
		}
	})
	for name, body := range map[string][]byte{
		"not gzip":      []byte("plain text, not gzip"),
		"truncated":     gzipped(random(200_000))[:50_000],
		"bad crc":       corruptTrailer(gzipped([]byte("杨绍华"))),
		"big truncated": gzipped(random(2 << 20))[:maxBufferedGzip+10],
	} {
		t.Run(name, func(t *testing.T) {
			for _, chunked := range []bool{false, true} {
				if st, got := post(t, body, true, chunked); st != http.StatusBadRequest || !strings.HasPrefix(got, "error: ") {
					t.Fatalf("chunked=%v: %d %q", chunked, st, got)
				}
			}
		})
	}
	t.Run("50 at once", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan string, 50)
		for i := range 50 {
			data := bytes.Repeat([]byte(fmt.Sprintf("第%d台设备;", i)), 100+i*97)
			if i%5 == 0 {
				data = random(maxBufferedGzip + i*1000)
			}
			body := gzipped(data)
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, got := post(t, body, true, i%2 == 0)
				if want := fmt.Sprintf("%d %s", len(data), sum(data)); st != 200 || got != want {
					errs <- fmt.Sprintf("request %d: %d %q, want %q", i, st, got, want)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	})
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func corruptTrailer(b []byte) []byte {
	b = append([]byte(nil), b...)
	b[len(b)-8] ^= 0xff // the CRC-32 of the data
	return b
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}
