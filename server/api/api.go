// Package api is fieldsync's HTTP server (echo v4): the admin JSON API, the
// device enrollment and sync endpoints, health, metrics and the OpenAPI
// document. It holds no state of its own; everything lives behind the
// Store interface defined here, which names the jobs of the store
// boundary (server/store) that it uses.
package api

import (
	"compress/flate"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"golang.org/x/time/rate"

	"fieldsync/server/blob"
	"fieldsync/server/domain"
	"fieldsync/server/geo"
	"fieldsync/server/store"
	"fieldsync/syncproto"
)

// Store is what the HTTP layer needs from storage: the jobs of the store
// boundary that the admin API, sync, review, exports and evidence use
// (store.Store, which every engine implements, has them all).
type Store interface {
	store.Health
	store.Admin
	store.Sessions
	store.Sync
	store.Review
	store.Export
	store.Evidence
}

// Config configures the HTTP server.
type Config struct {
	// Store is required.
	Store Store
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// PublicURL is how devices reach this server; it goes into enrollment
	// QR payloads (default "http://localhost:8080").
	PublicURL string
	// UploadURL is the scheme and host that upload Location headers are
	// built from: the operator's -public-url when one was given. Empty:
	// Location is a path the client resolves against its own request (a
	// defaulted PublicURL such as http://localhost:8080 would send a
	// browser that came by 127.0.0.1 to another origin). Never the
	// request's Host header.
	UploadURL string
	// HealthChecks are extra checks for /healthz (e.g. the blob store),
	// by name.
	HealthChecks map[string]func(context.Context) error
	// MaxBodyBytes bounds request bodies after decompression (default 32 MiB).
	MaxBodyBytes int64
	// SessionTTL is how long a login lasts (default 12 h).
	SessionTTL time.Duration
	// EnrollTTL is how long an enrollment code lives (default 15 min).
	EnrollTTL time.Duration
	// SecureCookies marks the session cookie Secure (set when serving TLS
	// or behind a TLS proxy).
	SecureCookies bool
	// LoginRate and EnrollRate limit attempts per client IP per minute
	// (defaults 10 and 10).
	LoginRate, EnrollRate int
	// Blobs is the evidence blob store (local folder or S3).
	Blobs blob.Store
	// UploadDir holds partial resumable uploads (they survive restarts).
	UploadDir string
	// Evidence tunes uploads and downloads (zero: defaults).
	Evidence EvidenceConfig
	// TrustProxy takes the client address from X-Forwarded-For / X-Real-IP
	// (for rate limits and logs). Leave it off unless a trusted reverse
	// proxy sits in front: anyone can send those headers.
	TrustProxy bool
	// MaxPushes bounds the pushes decoded and in the store at once
	// (default 64, the store's default group size). Bodies are read
	// first, so a slow link never holds a place; the rest wait, holding
	// only their raw bytes, which keeps a herd of devices from multiplying
	// the decoded batches in memory.
	MaxPushes int
	// Now replaces time.Now in tests.
	Now func() time.Time
}

func (c *Config) setDefaults() error {
	if c.Store == nil {
		return errors.New("api: Store required")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.PublicURL == "" {
		c.PublicURL = "http://localhost:8080"
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 32 << 20
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = 12 * time.Hour
	}
	if c.EnrollTTL <= 0 {
		c.EnrollTTL = 15 * time.Minute
	}
	if c.LoginRate <= 0 {
		c.LoginRate = 10
	}
	if c.EnrollRate <= 0 {
		c.EnrollRate = 10
	}
	if c.MaxPushes <= 0 {
		c.MaxPushes = 64
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Server is the HTTP server.
type Server struct {
	cfg    Config
	store  Store
	log    *slog.Logger
	e      *echo.Echo
	routes []route

	evidence *evidenceState

	pushSlots chan struct{} // one token per push being decoded or applied (Config.MaxPushes)
}

// New builds the server and its routes.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, store: cfg.Store, log: cfg.Logger, pushSlots: make(chan struct{}, cfg.MaxPushes)}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	if cfg.TrustProxy {
		e.IPExtractor = echo.ExtractIPFromXFFHeader()
	} else {
		e.IPExtractor = echo.ExtractIPDirect()
	}
	e.HTTPErrorHandler = s.handleError
	e.Use(middleware.RequestID())
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisableStackAll: true, LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
		s.log.Error("panic", "err", err, "stack", string(stack))
		return err
	}}))
	e.Use(middleware.RequestLoggerWithConfig(middleware.RequestLoggerConfig{
		LogStatus: true, LogURI: true, LogMethod: true, LogLatency: true, LogRequestID: true, LogError: true,
		HandleError: true,
		LogValuesFunc: func(c echo.Context, v middleware.RequestLoggerValues) error {
			status, level := v.Status, levelFor(v.Status)
			if errors.Is(c.Request().Context().Err(), context.Canceled) {
				// The client went away (a cut link, a closed app): nothing
				// failed here, and nobody received the status we wrote.
				status, level = StatusClientClosed, slog.LevelInfo
			}
			attrs := []any{"method", v.Method, "uri", v.URI, "status", status, "latency_ms", v.Latency.Milliseconds(), "request_id", v.RequestID}
			if status == StatusClientClosed {
				attrs = append(attrs, "client_cancelled", true)
			}
			if v.Error != nil {
				attrs = append(attrs, "err", v.Error.Error())
			}
			s.log.LogAttrs(c.Request().Context(), level, "request", argsToAttrs(attrs)...)
			return nil
		},
	}))
	e.Use(metricsMiddleware)
	e.Use(decompress)
	uploads := APIPrefix + "/uploads"
	e.Use(middleware.BodyLimitWithConfig(middleware.BodyLimitConfig{Limit: fmt.Sprintf("%dB", cfg.MaxBodyBytes), Skipper: func(c echo.Context) bool {
		// The tus handler bounds every body by its declared Upload-Length.
		return strings.HasPrefix(c.Request().URL.Path, uploads)
	}}))
	e.Use(middleware.GzipWithConfig(middleware.GzipConfig{MinLength: 1024, Skipper: func(c echo.Context) bool {
		p := c.Request().URL.Path
		// Blobs are JPEGs and PDFs already compressed, and downloads need
		// byte ranges over the stored bytes.
		// A push answer is a few hundred bytes, and a gzip writer taken at
		// the start of a push would be held while it waits for its group
		// commit: 200 pushes in flight held 160 MB of them.
		return p == "/metrics" || p == APIPrefix+"/sync/push" || strings.HasPrefix(p, uploads) || strings.HasPrefix(p, APIPrefix+"/evidence/")
	}}))
	s.e = e
	s.register()
	return s, nil
}

// StatusClientClosed is the status logged for a request whose client
// disconnected before the answer (nginx's 499); it is never sent.
const StatusClientClosed = 499

func levelFor(status int) slog.Level {
	switch {
	case status >= 500:
		return slog.LevelError
	case status >= 400:
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

func argsToAttrs(kv []any) []slog.Attr {
	out := make([]slog.Attr, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, slog.Any(kv[i].(string), kv[i+1]))
	}
	return out
}

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler { return s.e }

// Close stops the server's background work (the upload handler's
// analysis worker). Call it after the HTTP server has shut down and
// before the store is closed.
func (s *Server) Close() error {
	if up := s.Uploads(); up != nil {
		return up.Close()
	}
	return nil
}

// Echo returns the echo instance, so other packages (the web console) can
// add their routes to the same server.
func (s *Server) Echo() *echo.Echo { return s.e }

// Routes lists the registered API routes with their documentation.
func (s *Server) Routes() []RouteDoc {
	out := make([]RouteDoc, len(s.routes))
	for i, r := range s.routes {
		out[i] = r.RouteDoc
	}
	return out
}

// errorStatus maps store and package errors to wire codes: the one place
// where that happens.
func errorCode(err error) (syncproto.Code, map[string]any) {
	var pe *syncproto.Error
	if errors.As(err, &pe) {
		return pe.Code, pe.Details
	}
	var gap *store.SequenceGapError
	if errors.As(err, &gap) {
		return syncproto.CodeSequenceGap, map[string]any{"expected": gap.Expected, "got": gap.Got}
	}
	var reused *store.SequenceReusedError
	if errors.As(err, &reused) {
		return syncproto.CodeSequenceReused, map[string]any{"seq": reused.Seq, "last_seq": reused.LastSeq}
	}
	var ve syncproto.ValidationErrors
	switch {
	case errors.As(err, &ve):
		return syncproto.CodeValidation, nil
	case errors.Is(err, geo.ErrInvalidGeometry):
		return syncproto.CodeInvalidGeometry, nil
	case errors.Is(err, domain.ErrNotFound):
		return syncproto.CodeNotFound, nil
	case errors.Is(err, domain.ErrExists), errors.Is(err, domain.ErrUsed):
		return syncproto.CodeConflict, nil
	case errors.Is(err, domain.ErrInvalid):
		return syncproto.CodeValidation, nil
	case errors.Is(err, domain.ErrExpired):
		return syncproto.CodeGone, nil
	case errors.Is(err, domain.ErrRevoked):
		return syncproto.CodeUnauthorized, nil
	case errors.Is(err, domain.ErrForbidden):
		return syncproto.CodeForbidden, nil
	case errors.Is(err, domain.ErrUnavailable):
		return syncproto.CodeUnavailable, nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return syncproto.CodeUnavailable, nil
	case errors.Is(err, gzip.ErrHeader), errors.Is(err, gzip.ErrChecksum), errors.As(err, new(flate.CorruptInputError)),
		errors.Is(err, io.ErrUnexpectedEOF):
		return syncproto.CodeBadRequest, nil
	}
	return syncproto.CodeInternal, nil
}

func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	body := &syncproto.Error{}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		body.Code = syncproto.CodeForStatus(he.Code)
		body.Message = fmt.Sprint(he.Message)
		if he.Code == http.StatusRequestEntityTooLarge {
			body.Code = syncproto.CodeTooLarge
		}
		if he.Code == http.StatusMethodNotAllowed || he.Code == http.StatusNotFound {
			body.Message = http.StatusText(he.Code)
		}
	} else {
		code, details := errorCode(err)
		body.Code, body.Details, body.Message = code, details, err.Error()
		var pe *syncproto.Error
		if errors.As(err, &pe) {
			body.Fields = pe.Fields
			body.Message = pe.Message
		}
		var ve syncproto.ValidationErrors
		if errors.As(err, &ve) {
			body.Fields = ve
		}
		if code == syncproto.CodeInternal {
			s.log.Error("internal error", "err", err, "path", c.Path(), "request_id", c.Response().Header().Get(echo.HeaderXRequestID))
			body.Message = "internal error; see the server log for request " + c.Response().Header().Get(echo.HeaderXRequestID)
		}
	}
	status := body.Code.HTTPStatus()
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		c.Response().Header().Set("Retry-After", strconv.Itoa(5))
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(status)
		return
	}
	_ = c.JSON(status, body)
}

// rateLimiter builds a per-IP limiter of n requests a minute.
func rateLimiter(n int) echo.MiddlewareFunc {
	store := middleware.NewRateLimiterMemoryStoreWithConfig(middleware.RateLimiterMemoryStoreConfig{
		Rate: rate.Limit(float64(n) / 60), Burst: n, ExpiresIn: 10 * time.Minute,
	})
	return middleware.RateLimiterWithConfig(middleware.RateLimiterConfig{
		Store: store,
		DenyHandler: func(c echo.Context, id string, err error) error {
			return syncproto.Errorf(syncproto.CodeRateLimited, "too many attempts; wait a minute")
		},
		ErrorHandler: func(c echo.Context, err error) error {
			return syncproto.Errorf(syncproto.CodeForbidden, "cannot identify client")
		},
	})
}
