package app

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"fieldsync/mobileclient/webapp"
)

// AppPrefix is where the field app is served.
const AppPrefix = "/app/"

// AppCSP is the field app's Content-Security-Policy: no inline scripts or
// styles, everything from the server itself; photos are shown from blob:
// URLs and data: images.
const AppCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; " +
	"connect-src 'self'; worker-src 'self'; manifest-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

// appFile is one file of the field app, ready to serve.
type appFile struct {
	data  []byte
	ctype string
	etag  string
}

// AppFiles is the field app as served: every embedded file by its path
// under /app/, with sw.js carrying the app version.
type AppFiles struct {
	Version string
	files   map[string]appFile
}

// appContentTypes are the types the app's files are served with; a file
// of any other kind is refused at start, so nothing is served sniffed.
var appContentTypes = map[string]string{
	".html":        "text/html; charset=utf-8",
	".js":          "text/javascript; charset=utf-8",
	".mjs":         "text/javascript; charset=utf-8",
	".css":         "text/css; charset=utf-8",
	".webmanifest": "application/manifest+json",
	".json":        "application/json",
	".svg":         "image/svg+xml",
	".png":         "image/png",
	".md":          "text/plain; charset=utf-8",
	".txt":         "text/plain; charset=utf-8",
}

// LoadAppFiles reads the embedded field app and versions it: the version
// is a hash of every file, written into sw.js so that a changed app
// installs a new service worker.
func LoadAppFiles(fsys fs.FS) (*AppFiles, error) {
	raw := map[string][]byte{}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		raw[p] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("app files: %w", err)
	}
	if _, ok := raw["index.html"]; !ok {
		return nil, fmt.Errorf("app files: no index.html")
	}
	names := make([]string, 0, len(raw))
	for p := range raw {
		names = append(names, p)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, p := range names {
		fmt.Fprintf(h, "%s\x00%d\x00", p, len(raw[p]))
		h.Write(raw[p])
	}
	a := &AppFiles{Version: hex.EncodeToString(h.Sum(nil))[:16], files: map[string]appFile{}}
	for _, p := range names {
		ext := path.Ext(p)
		ct, ok := appContentTypes[ext]
		if !ok {
			if ct = mime.TypeByExtension(ext); ct == "" {
				return nil, fmt.Errorf("app files: %s: no content type for %q", p, ext)
			}
		}
		data := raw[p]
		if p == "sw.js" {
			data = bytes.ReplaceAll(data, []byte(webapp.VersionPlaceholder), []byte(a.Version))
		}
		sum := sha256.Sum256(data)
		a.files[p] = appFile{data: data, ctype: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return a, nil
}

// Paths lists the served files (relative to /app/), sorted.
func (a *AppFiles) Paths() []string {
	out := make([]string, 0, len(a.files))
	for p := range a.files {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// ServeHTTP serves one file of the app. Every answer carries the strict
// CSP. Files are revalidated on every use (no-cache with an ETag): the
// service worker, not the HTTP cache, decides when a device moves to a
// new version.
func (a *AppFiles) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", AppCSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "same-origin")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p, ok := strings.CutPrefix(r.URL.Path, AppPrefix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if p == "" {
		p = "index.html"
	}
	f, ok := a.files[p]
	if !ok {
		http.NotFound(w, r)
		return
	}
	hd.Set("Content-Type", f.ctype)
	hd.Set("Cache-Control", "no-cache")
	hd.Set("ETag", f.etag)
	if p == "sw.js" {
		hd.Set("Service-Worker-Allowed", AppPrefix)
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.data))
}

// MountApp serves the field app at /app/ on the echo instance.
func MountApp(e *echo.Echo) (*AppFiles, error) {
	a, err := LoadAppFiles(webapp.FS())
	if err != nil {
		return nil, err
	}
	h := echo.WrapHandler(a)
	e.GET("/app", func(c echo.Context) error { return c.Redirect(http.StatusMovedPermanently, AppPrefix) })
	e.GET(AppPrefix+"*", h)
	e.HEAD(AppPrefix+"*", h)
	return a, nil
}
