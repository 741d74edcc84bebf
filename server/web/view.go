package web

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"fieldsync/server/domain"
	"fieldsync/server/export"

	"fieldsync/server/api"
)

// view is what every page template gets.
type view struct {
	c        *Console
	Lang     string // "zh" or "en"
	User     domain.User
	IsAdmin  bool
	SignedIn bool
	CSRF     string
	Title    string
	Nav      string
	Flash    string
	// FlashError shows Flash as an error, not as a success.
	FlashError bool
	Path       string // request path with query, for the language switch
	Status     int
	Assets     string
	TileURL    string
	Data       any
	Now        time.Time
}

func (c *Console) newView(ec echo.Context, s *session) *view {
	v := &view{c: c, Lang: "zh", Status: http.StatusOK, Assets: c.assetVersion, TileURL: c.cfg.TileURL, Now: c.cfg.Now().In(c.cfg.Location)}
	if l := ec.QueryParam("lang"); l == "en" || l == "zh" {
		v.Lang = l
		ec.SetCookie(&http.Cookie{Name: langCookie, Value: l, Path: "/", MaxAge: 365 * 24 * 3600, HttpOnly: true,
			SameSite: http.SameSiteLaxMode, Secure: c.secure(ec)})
	} else if ck, err := ec.Cookie(langCookie); err == nil && (ck.Value == "en" || ck.Value == "zh") {
		v.Lang = ck.Value
	}
	q := ec.Request().URL.Query()
	q.Del("lang")
	v.Path = ec.Request().URL.Path
	if enc := q.Encode(); enc != "" {
		v.Path += "?" + enc
	}
	if s != nil {
		v.User, v.CSRF, v.SignedIn = s.user, s.csrf, true
		v.IsAdmin = s.user.Role == domain.RoleAdmin
	}
	if ck, err := ec.Cookie(flashCookie); err == nil && ck.Value != "" {
		if msg, err := url.QueryUnescape(ck.Value); err == nil {
			v.Flash = msg
			if rest, ok := strings.CutPrefix(msg, flashErrorMark); ok {
				v.Flash, v.FlashError = rest, true
			}
		}
		ec.SetCookie(&http.Cookie{Name: flashCookie, Value: "", Path: Prefix, MaxAge: -1, HttpOnly: true})
	}
	return v
}

func (c *Console) secure(ec echo.Context) bool {
	return c.cfg.SecureCookies || api.IsHTTPS(ec.Request(), c.cfg.TrustProxy)
}

// flashErrorMark starts the flash cookie of an error.
const flashErrorMark = "!"

// flashError shows msg on the next page as an error.
func (c *Console) flashError(ec echo.Context, msg string) { c.flash(ec, flashErrorMark+msg) }

// flash shows msg on the next page.
func (c *Console) flash(ec echo.Context, msg string) {
	ec.SetCookie(&http.Cookie{Name: flashCookie, Value: url.QueryEscape(msg), Path: Prefix, MaxAge: 60, HttpOnly: true,
		SameSite: http.SameSiteLaxMode, Secure: c.secure(ec)})
}

// T translates a message key; extra arguments fill its %-verbs.
func (v *view) T(key string, args ...any) string {
	m, ok := messages[key]
	if !ok {
		return "‹" + key + "›"
	}
	s := m[0]
	if v.Lang == "en" {
		s = m[1]
	}
	if len(args) > 0 {
		return fmt.Sprintf(s, args...)
	}
	return s
}

// LangURL is the current page in another language.
func (v *view) LangURL(lang string) string {
	sep := "?"
	if strings.Contains(v.Path, "?") {
		sep = "&"
	}
	return v.Path + sep + "lang=" + lang
}

// En reports whether the page is in English.
func (v *view) En() bool { return v.Lang == "en" }

// State names a review state.
func (v *view) State(s string) string { return export.StateLabel(s, v.En()) }

// Level names a place level.
func (v *view) Level(l string) string { return v.T("level." + l) }

// Role names a role.
func (v *view) Role(r domain.Role) string { return v.T("role." + string(r)) }

// FlagName names an evidence flag.
func (v *view) FlagName(f string) string {
	if _, ok := messages["flag."+f]; ok {
		return v.T("flag." + f)
	}
	return f
}

// Time formats a time in the console's zone, with the zone's offset
// (2026-11-28 14:03 +08:00), so that a time read off the screen or a
// screenshot is never taken for another zone's.
func (v *view) Time(t any) string {
	tt := asTime(t)
	if tt.IsZero() {
		return "—"
	}
	return tt.In(v.c.cfg.Location).Format(TimeLayout)
}

// TimeLayout is how the console writes a time.
const TimeLayout = "2006-01-02 15:04 -07:00"

// asTime reads a template value that is a time.Time, a *time.Time or a
// stored timestamp string; anything else (nil, "") is the zero time.
func asTime(t any) time.Time {
	switch x := t.(type) {
	case time.Time:
		return x
	case *time.Time:
		if x != nil {
			return *x
		}
	case string:
		if x != "" {
			return domain.ParseTimestamp(x)
		}
	}
	return time.Time{}
}

// Ago says how long ago t was, roughly.
func (v *view) Ago(t any) string {
	tt := asTime(t)
	if tt.IsZero() {
		return "—"
	}
	d := v.Now.Sub(tt)
	switch {
	case d < time.Minute:
		return v.T("ago.now")
	case d < time.Hour:
		return v.T("ago.min", int(d.Minutes()))
	case d < 48*time.Hour:
		return v.T("ago.hour", int(d.Hours()))
	}
	return v.T("ago.day", int(d.Hours()/24))
}

var funcs = template.FuncMap{
	"pct": func(a, b int) int {
		if b <= 0 {
			return 0
		}
		p := a * 100 / b
		if p > 100 {
			return 100
		}
		return p
	},
	"add":  func(a, b int) int { return a + b },
	"sub":  func(a, b int) int { return a - b },
	"join": strings.Join,
	"raw":  func(s string) template.HTML { return template.HTML(s) }, // only for SVG built in Go from numbers and escaped text
	"short": func(s string) string {
		if len(s) > 10 {
			return s[:10] + "…"
		}
		return s
	},
	"indent": func(n int) string { return strings.Repeat("\u00a0\u00a0", n) },
	// bar draws a progress bar of n out of total, named by label for
	// screen readers (the numbers are shown beside it).
	"bar": func(label string, n, total int) template.HTML {
		p := 0
		if total > 0 {
			p = min(100, n*100/total)
		}
		cls := "low"
		switch {
		case p >= 90:
			cls = "good"
		case p >= 50:
			cls = "mid"
		}
		return template.HTML(fmt.Sprintf(`<span class="bar %s" role="progressbar" aria-label="%s" aria-valuenow="%d" aria-valuemin="0" aria-valuemax="100"><span style="width:%d%%"></span></span><span class="num">%d/%d</span>`, cls, template.HTMLEscapeString(label), p, p, n, total))
	},
}

// parseTemplates parses layout.html with each page.
func (c *Console) parseTemplates() error {
	c.pages = map[string]*template.Template{}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return err
	}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return fmt.Errorf("web: template %s: %w", n, err)
		}
		c.pages[base] = t
	}
	return nil
}

// render executes a page into the response.
func (c *Console) render(ec echo.Context, v *view, page string, data any) error {
	t := c.pages[page]
	if t == nil {
		return fmt.Errorf("web: no page %q", page)
	}
	v.Data = data
	if v.Nav == "" {
		v.Nav = page
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, v); err != nil {
		return fmt.Errorf("web: render %s: %w", page, err)
	}
	h := ec.Response().Header()
	h.Set("Cache-Control", "no-store")
	h.Set(echo.HeaderContentType, "text/html; charset=utf-8")
	if v.Lang == "en" {
		h.Set("Content-Language", "en")
	} else {
		h.Set("Content-Language", "zh-CN")
	}
	return ec.HTMLBlob(v.Status, buf.Bytes())
}

// assetHash versions the embedded static files.
func assetHash() string {
	h := sha256.New()
	var names []string
	fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, p)
		}
		return nil
	})
	sort.Strings(names)
	for _, n := range names {
		b, _ := staticFS.ReadFile(n)
		h.Write([]byte(n))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}
