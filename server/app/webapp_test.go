package app

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"fieldsync/mobileclient/webapp"
)

func appServer(t *testing.T) (*httptest.Server, *AppFiles) {
	t.Helper()
	e := echo.New()
	a, err := MountApp(e)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return srv, a
}

// TestApp_Headers: every answer under /app/ carries the strict CSP, the
// right content type and revalidation (no long caching of unversioned
// files), and sw.js carries the app version.
func TestApp_Headers(t *testing.T) {
	srv, a := appServer(t)
	cases := []struct {
		path, ctype string
		status      int
	}{
		{"/app/", "text/html; charset=utf-8", 200},
		{"/app/index.html", "text/html; charset=utf-8", 200},
		{"/app/js/app.js", "text/javascript; charset=utf-8", 200},
		{"/app/sw.js", "text/javascript; charset=utf-8", 200},
		{"/app/manifest.webmanifest", "application/manifest+json", 200},
		{"/app/app.css", "text/css; charset=utf-8", 200},
		{"/app/icon.svg", "image/svg+xml", 200},
		{"/app/vendor/tus.min.js", "text/javascript; charset=utf-8", 200},
		{"/app/nope.js", "", 404},
		{"/app/../go.mod", "", 404},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.path, "/", "_"), func(t *testing.T) {
			res, err := http.Get(srv.URL + c.path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != c.status {
				t.Fatalf("status %d, want %d", res.StatusCode, c.status)
			}
			if got := res.Header.Get("Content-Security-Policy"); got != AppCSP {
				t.Errorf("CSP %q", got)
			}
			if c.status != 200 {
				return
			}
			if got := res.Header.Get("Content-Type"); got != c.ctype {
				t.Errorf("Content-Type %q, want %q", got, c.ctype)
			}
			if got := res.Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control %q, want no-cache", got)
			}
			if res.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Error("no nosniff")
			}
			etag := res.Header.Get("ETag")
			if etag == "" {
				t.Fatal("no ETag")
			}
			req, _ := http.NewRequest("GET", srv.URL+c.path, nil)
			req.Header.Set("If-None-Match", etag)
			res2, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res2.Body.Close()
			if res2.StatusCode != http.StatusNotModified {
				t.Errorf("revalidation: %d, want 304", res2.StatusCode)
			}
			if c.path == "/app/sw.js" {
				if strings.Contains(string(body), webapp.VersionPlaceholder) || !strings.Contains(string(body), a.Version) {
					t.Errorf("sw.js does not carry version %s", a.Version)
				}
			}
		})
	}
	for _, s := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' blob: data:", "connect-src 'self'", "worker-src 'self'", "manifest-src 'self'"} {
		if !strings.Contains(AppCSP, s+";") && !strings.HasSuffix(AppCSP, s) {
			t.Errorf("CSP lacks %q", s)
		}
	}
	if strings.Contains(AppCSP, "unsafe") {
		t.Error("CSP allows unsafe-*")
	}
}

// TestApp_NoInlineScriptsOrStyles: no HTML file has an inline script,
// event handler attribute or inline style (the CSP would block them).
func TestApp_NoInlineScriptsOrStyles(t *testing.T) {
	inline := regexp.MustCompile(`(?is)<script\b[^>]*>\s*[^<\s]`)
	handler := regexp.MustCompile(`(?i)\son[a-z]+\s*=`)
	style := regexp.MustCompile(`(?i)<style\b|\sstyle\s*=`)
	n := 0
	err := fs.WalkDir(webapp.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".html") {
			return err
		}
		n++
		b, err := fs.ReadFile(webapp.FS(), p)
		if err != nil {
			return err
		}
		s := string(b)
		for _, m := range regexp.MustCompile(`(?is)<script\b[^>]*>`).FindAllString(s, -1) {
			if !strings.Contains(m, "src=") {
				t.Errorf("%s: script without src: %s", p, m)
			}
		}
		if inline.MatchString(s) {
			t.Errorf("%s: inline script", p)
		}
		if handler.MatchString(s) {
			t.Errorf("%s: inline event handler", p)
		}
		if style.MatchString(s) {
			t.Errorf("%s: inline style", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no HTML files")
	}
}

// TestApp_ShellListComplete: the service worker caches every file the
// app loads (so it works offline), and only files that exist.
func TestApp_ShellListComplete(t *testing.T) {
	_, a := appServer(t)
	sw, err := fs.ReadFile(webapp.FS(), "sw.js")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile(`(?s)const SHELL = \[(.*?)\];`).FindSubmatch(sw)
	if block == nil {
		t.Fatal("no SHELL list in sw.js")
	}
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile(`'([^']*)'`).FindAllSubmatch(block[1], -1) {
		listed[string(m[1])] = true
	}
	var want []string
	for _, p := range a.Paths() {
		if p == "sw.js" || strings.HasSuffix(p, ".md") || strings.HasSuffix(p, ".txt") {
			continue
		}
		want = append(want, p)
		if !listed[p] {
			t.Errorf("sw.js SHELL lacks %s", p)
		}
	}
	for p := range listed {
		if p == "./" {
			continue
		}
		if _, ok := a.files[p]; !ok {
			t.Errorf("sw.js SHELL lists %s, which is not served", p)
		}
	}
	sort.Strings(want)
	if len(want) < 10 {
		t.Fatalf("only %d shell files: %v", len(want), want)
	}
}

// TestApp_VendorPinned: the vendored tus-js-client is the pinned 4.3.1
// browser build, with its licence.
func TestApp_VendorPinned(t *testing.T) {
	b, err := fs.ReadFile(webapp.FS(), "vendor/tus.min.js")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != "8cbb1b63fccc3bba0ae73ad1deb160ce046c3750851d0c3e94921ae3ef070eb8" {
		t.Errorf("vendor/tus.min.js sha256 %s; update vendor/README.md and this test together", got)
	}
	lic, err := fs.ReadFile(webapp.FS(), "vendor/LICENSE-tus-js-client.txt")
	if err != nil || !strings.Contains(string(lic), "MIT License") {
		t.Errorf("licence missing: %v", err)
	}
	readme, err := fs.ReadFile(webapp.FS(), "vendor/README.md")
	if err != nil || !strings.Contains(string(readme), "4.3.1") {
		t.Errorf("vendor README missing or without the version: %v", err)
	}
}

// TestApp_ShellSizeBudget: the app shell, as the service worker caches it,
// stays within 300 KB compressed (gzip -9 of each file, summed), so a
// first load over 2G stays bearable. The figure is logged.
func TestApp_ShellSizeBudget(t *testing.T) {
	_, a := appServer(t)
	var raw, gz int
	for _, p := range a.Paths() {
		if strings.HasSuffix(p, ".md") || strings.HasSuffix(p, ".txt") {
			continue // not part of the shell
		}
		f := a.files[p]
		var buf bytes.Buffer
		w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		w.Write(f.data)
		w.Close()
		raw += len(f.data)
		gz += buf.Len()
	}
	t.Logf("app shell: %d files, %d bytes, %d bytes gzip -9", len(a.Paths()), raw, gz)
	if gz > 300*1024 {
		t.Errorf("app shell is %d bytes compressed; the budget is 300 KB", gz)
	}
}

func webappFS() fs.FS { return webapp.FS() }
