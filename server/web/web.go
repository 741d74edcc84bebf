// Package web is fieldsync's supervisor console: server-rendered pages
// (html/template) with a little vanilla JavaScript, every asset embedded
// with go:embed (no CDN, no web fonts, no map tiles unless a tile URL is
// configured), in Simplified Chinese by default and English on request
// (?lang=en, remembered in a cookie).
//
// The console mounts on the API server's echo instance and shares its
// session model: signing in calls api.Server.Login, so the session cookie
// (fieldsync_session) is the same one the JSON API accepts, and every
// write carries the session's CSRF token (a hidden form field or the
// X-CSRF-Token header). Sign-in attempts are rate limited per client.
// Supervisors see only the places under theirs; field workers cannot use
// the console; users, places and imports are for admins.
//
// Pages, under /console/: login, overview (progress by place, drill-down
// county → township → village → group), map, households/:id, review,
// gaps (evidence gaps), devices, users, places, forms, export.
package web

import (
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"golang.org/x/time/rate"

	"fieldsync/server/api"
	"fieldsync/server/auth"
	"fieldsync/server/domain"
	"fieldsync/server/export"
	"fieldsync/server/geo"
	"fieldsync/server/store"
	"fieldsync/syncproto"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Prefix is where the console lives.
const Prefix = "/console"

// Cookie names.
const (
	langCookie       = "fieldsync_lang"
	flashCookie      = "fieldsync_flash"
	loginCSRFCookie  = "fieldsync_login_csrf"
	csrfField        = "csrf"
	maxUploadBytes   = 20 << 20
	defaultLoginRate = 10
)

// Store is what the console reads and writes: administration, sessions,
// the review pages, exports and its own read models, each a job of the
// store boundary (store.Store, which every engine implements, has them
// all).
type Store interface {
	store.Admin
	store.Sessions
	store.Review
	store.Export
	store.Console
}

// Config configures the console.
type Config struct {
	// Store is required; it must be the API server's store.
	Store Store
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// TileURL, if set, draws a tile layer under the map, e.g.
	// "https://tiles.example.org/{z}/{x}/{y}.png". Empty: no tiles (the
	// map works without them).
	TileURL string
	// SecureCookies marks cookies Secure (serving TLS or behind a TLS
	// proxy).
	SecureCookies bool
	// TrustProxy honours X-Forwarded-Proto: a request the proxy received
	// over HTTPS gets Secure cookies (only behind a trusted reverse proxy).
	TrustProxy bool
	// LoginRate limits sign-in attempts per client IP per minute (default
	// 10).
	LoginRate int
	// PublicURL, if set (the operator's -public-url), is the server URL the
	// enrollment QR carries; empty: the URL the admin's browser used.
	PublicURL string
	// Location is the time zone pages show and "this month" uses (default
	// time.Local; the fieldsync binary passes its -tz, Asia/Shanghai).
	Location *time.Location
	// Now replaces time.Now in tests.
	Now func() time.Time
}

// Console is the mounted web console.
type Console struct {
	cfg   Config
	st    Store
	api   *api.Server
	log   *slog.Logger
	pages map[string]*template.Template
	// assetVersion busts browser caches when the embedded assets change.
	assetVersion string
	tileOrigin   string
}

// Mount adds the console's routes (and, unless the API already has one,
// GET /api/v1/export) to the API server's echo instance.
func Mount(srv *api.Server, cfg Config) (*Console, error) {
	if cfg.Store == nil || srv == nil {
		return nil, errors.New("web: Store and API server required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LoginRate <= 0 {
		cfg.LoginRate = defaultLoginRate
	}
	if cfg.Location == nil {
		cfg.Location = time.Local
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Console{cfg: cfg, st: cfg.Store, api: srv, log: cfg.Logger}
	if cfg.TileURL != "" {
		u, err := url.Parse(cfg.TileURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			!strings.Contains(cfg.TileURL, "{z}") || !strings.Contains(cfg.TileURL, "{x}") || !strings.Contains(cfg.TileURL, "{y}") {
			return nil, fmt.Errorf("web: tile URL %q must be http(s) with {z}, {x} and {y}", cfg.TileURL)
		}
		c.tileOrigin = u.Scheme + "://" + u.Host
	}
	if err := c.parseTemplates(); err != nil {
		return nil, err
	}
	c.assetVersion = assetHash()
	c.routes(srv.Echo())
	return c, nil
}

func (c *Console) routes(e *echo.Echo) {
	g := e.Group(Prefix, c.headers)
	// Every page answers HEAD as GET (link checkers and audits ask HEAD
	// first); the HTTP server sends no body for a HEAD.
	get := func(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) {
		g.GET(path, h, m...)
		g.HEAD(path, h, m...)
	}
	sub, _ := fs.Sub(staticFS, "static")
	get("/static/*", echo.WrapHandler(http.StripPrefix(Prefix+"/static/", cacheForever(http.FileServer(http.FS(sub))))))
	// The server's root is where a newcomer lands: send her to the console.
	e.GET("/", func(ec echo.Context) error { return ec.Redirect(http.StatusFound, Prefix+"/") })
	e.HEAD("/", func(ec echo.Context) error { return ec.Redirect(http.StatusFound, Prefix+"/") })
	get("", func(ec echo.Context) error { return ec.Redirect(http.StatusFound, Prefix+"/overview") })
	get("/", func(ec echo.Context) error { return ec.Redirect(http.StatusFound, Prefix+"/overview") })
	get("/login", c.page(c.loginPage, roleNone))
	g.POST("/login", c.page(c.login, roleNone), loginLimiter(c.cfg.LoginRate, c))
	g.POST("/logout", c.page(c.logout, roleConsole))

	get("/overview", c.page(c.overview, roleConsole))
	get("/map", c.page(c.mapPage, roleConsole))
	get("/households/:id", c.page(c.household, roleConsole))
	get("/review", c.page(c.reviewPage, roleConsole))
	g.POST("/review", c.page(c.review, roleConsole))
	get("/gaps", c.page(c.gaps, roleConsole))
	get("/devices", c.page(c.devices, roleConsole))
	g.POST("/devices/:id/revoke", c.page(c.revokeDevice, roleConsole))
	get("/forms", c.page(c.forms, roleConsole))
	get("/export", c.page(c.exportPage, roleConsole))

	get("/users", c.page(c.users, roleAdmin))
	g.POST("/users", c.page(c.createUser, roleAdmin))
	g.POST("/users/:id/places", c.page(c.setUserPlaces, roleAdmin))
	g.POST("/users/:id/enroll", c.page(c.enroll, roleAdmin))
	get("/places", c.page(c.places, roleAdmin))
	g.POST("/places/import", c.page(c.importPlaces, roleAdmin))
	g.POST("/households/import", c.page(c.importRegister, roleAdmin))

	// The API export, unless the API's own route table has one.
	for _, r := range e.Routes() {
		if r.Method == http.MethodGet && r.Path == api.APIPrefix+"/export" {
			return
		}
	}
	e.GET(api.APIPrefix+"/export", export.Handler(c.st, export.Options{Location: c.cfg.Location, Source: "api"}), c.apiAuth)
}

// cacheForever marks versioned static assets cacheable.
func cacheForever(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("v") != "" {
			w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			w.Header().Set("Cache-Control", "no-cache")
		}
		h.ServeHTTP(w, r)
	})
}

// headers sets the console's security headers.
func (c *Console) headers(next echo.HandlerFunc) echo.HandlerFunc {
	img := "'self' data:"
	if c.tileOrigin != "" {
		img += " " + c.tileOrigin
	}
	csp := "default-src 'self'; img-src " + img + "; style-src 'self' 'unsafe-inline'; script-src 'self'; object-src 'none'; " +
		"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
	return func(ec echo.Context) error {
		h := ec.Response().Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		return next(ec)
	}
}

// loginLimiter limits sign-in attempts per client IP.
func loginLimiter(n int, c *Console) echo.MiddlewareFunc {
	store := middleware.NewRateLimiterMemoryStoreWithConfig(middleware.RateLimiterMemoryStoreConfig{
		Rate: rate.Limit(float64(n) / 60), Burst: n, ExpiresIn: 10 * time.Minute,
	})
	return middleware.RateLimiterWithConfig(middleware.RateLimiterConfig{
		Store: store,
		DenyHandler: func(ec echo.Context, id string, err error) error {
			ec.Response().Header().Set("Retry-After", "60")
			v := c.newView(ec, nil)
			v.Status = http.StatusTooManyRequests
			return c.render(ec, v, "login", map[string]any{"Error": v.T("login.ratelimited"), "Token": c.loginToken(ec)})
		},
		ErrorHandler: func(ec echo.Context, err error) error {
			return echo.NewHTTPError(http.StatusForbidden, "cannot identify client")
		},
	})
}

// Access levels of pages.
type access int

const (
	roleNone    access = iota // the sign-in page
	roleConsole               // supervisors and admins
	roleAdmin                 // admins
)

// session is a signed-in console user.
type session struct {
	user      domain.User
	csrf      string
	tokenHash string
}

// currentSession resolves the session cookie (or a bearer token, for
// API-style calls of the export).
func (c *Console) currentSession(ec echo.Context) (*session, error) {
	token := ""
	if h := ec.Request().Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		token = strings.TrimSpace(strings.TrimPrefix(h, "Bearer "))
	} else if ck, err := ec.Cookie(api.SessionCookie); err == nil {
		token = ck.Value
	}
	if token == "" {
		return nil, nil
	}
	ctx := ec.Request().Context()
	th := auth.HashToken(token)
	sess, err := c.st.Session(ctx, th)
	if err != nil {
		if errors.Is(err, domain.ErrNotFound) || errors.Is(err, domain.ErrRevoked) || errors.Is(err, domain.ErrExpired) {
			return nil, nil
		}
		return nil, err
	}
	u, err := c.st.User(ctx, sess.UserID)
	if err != nil {
		if errors.Is(err, domain.ErrNotFound) {
			return nil, nil
		}
		return nil, err
	}
	if u.Disabled {
		return nil, nil
	}
	return &session{user: u, csrf: sess.CSRFToken, tokenHash: th}, nil
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// sameOrigin refuses cross-site writes whose Origin or Referer names
// another host (a second line behind the CSRF token).
func sameOrigin(r *http.Request) bool {
	check := func(raw string) bool {
		u, err := url.Parse(raw)
		return err == nil && u.Host == r.Host
	}
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		return check(o)
	}
	if ref := r.Header.Get("Referer"); ref != "" {
		return check(ref)
	}
	return true
}

// apiAuth authenticates GET /api/v1/export like the API does: a bearer
// session token or the session cookie.
func (c *Console) apiAuth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ec echo.Context) error {
		s, err := c.currentSession(ec)
		if err != nil {
			return err
		}
		if s == nil {
			return syncproto.Errorf(syncproto.CodeUnauthorized, "sign in required")
		}
		c.withActor(ec, s)
		return next(ec)
	}
}

func (c *Console) withActor(ec echo.Context, s *session) {
	r := ec.Request()
	ec.SetRequest(r.WithContext(domain.WithActor(r.Context(), domain.Actor{UserID: s.user.ID, Name: s.user.Username, Session: s.tokenHash[:12]})))
}

// handler is a console page handler.
type handler func(ec echo.Context, v *view) error

// page wraps a handler: session, role and CSRF checks, the actor for the
// audit log, and HTML error pages.
func (c *Console) page(h handler, level access) echo.HandlerFunc {
	return func(ec echo.Context) error {
		var s *session
		if level != roleNone {
			var err error
			if s, err = c.currentSession(ec); err != nil {
				return c.fail(ec, nil, err)
			}
			if s == nil {
				if safeMethod(ec.Request().Method) {
					return ec.Redirect(http.StatusSeeOther, Prefix+"/login?next="+url.QueryEscape(ec.Request().URL.RequestURI()))
				}
				return c.fail(ec, nil, syncproto.Errorf(syncproto.CodeUnauthorized, "sign in required"))
			}
		}
		v := c.newView(ec, s)
		if s != nil {
			if s.user.Role != domain.RoleAdmin && s.user.Role != domain.RoleSupervisor {
				return c.fail(ec, v, syncproto.Errorf(syncproto.CodeForbidden, "%s", v.T("err.fieldworker")))
			}
			if level == roleAdmin && s.user.Role != domain.RoleAdmin {
				return c.fail(ec, v, syncproto.Errorf(syncproto.CodeForbidden, "%s", v.T("err.adminonly")))
			}
			if !safeMethod(ec.Request().Method) {
				got := ec.Request().Header.Get(api.CSRFHeader)
				if got == "" {
					got = ec.FormValue(csrfField)
				}
				if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) != 1 || !sameOrigin(ec.Request()) {
					return c.fail(ec, v, syncproto.Errorf(syncproto.CodeForbidden, "%s", v.T("err.csrf")))
				}
			}
			c.withActor(ec, s)
		}
		if err := h(ec, v); err != nil {
			return c.fail(ec, v, err)
		}
		return nil
	}
}

// statusOf maps an error to an HTTP status and a message a person can
// read.
func statusOf(err error) int {
	var pe *syncproto.Error
	if errors.As(err, &pe) {
		return pe.Code.HTTPStatus()
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		return he.Code
	}
	switch {
	case errors.Is(err, domain.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, domain.ErrForbidden), errors.Is(err, export.ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, domain.ErrInvalid), errors.Is(err, export.ErrBadRequest), errors.Is(err, geo.ErrInvalidGeometry):
		return http.StatusUnprocessableEntity
	case errors.Is(err, domain.ErrExists), errors.Is(err, domain.ErrUsed):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

func (c *Console) fail(ec echo.Context, v *view, err error) error {
	status := statusOf(err)
	msg := err.Error()
	var pe *syncproto.Error
	if errors.As(err, &pe) {
		msg = pe.Message
	}
	if status >= 500 {
		c.log.Error("console error", "err", err, "path", ec.Request().URL.Path)
		msg = "internal error; see the server log"
	}
	if ec.Response().Committed {
		return nil
	}
	if v == nil {
		v = c.newView(ec, nil)
	}
	v.Status = status
	v.Title = v.T("err.title")
	if strings.Contains(ec.Request().Header.Get("Accept"), "application/json") && !strings.Contains(ec.Request().Header.Get("Accept"), "text/html") {
		return ec.JSON(status, map[string]any{"code": syncproto.CodeForStatus(status), "message": msg})
	}
	return c.render(ec, v, "error", map[string]any{"Message": msg, "Status": status, "StatusText": http.StatusText(status)})
}
