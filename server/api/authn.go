package api

import (
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"fieldsync/server/auth"
	"fieldsync/server/domain"
	"fieldsync/syncproto"
)

// SessionCookie is the name of the console's session cookie.
const SessionCookie = "fieldsync_session"

// CSRFHeader carries the session's CSRF token on cookie-authenticated
// writes.
const CSRFHeader = "X-CSRF-Token"

const principalKey = "fieldsync.principal"

func principal(c echo.Context) *domain.Principal {
	p, _ := c.Get(principalKey).(*domain.Principal)
	return p
}

func unauthorized(msg string) error {
	return syncproto.Errorf(syncproto.CodeUnauthorized, "%s", msg)
}

func forbidden(format string, args ...any) error {
	return syncproto.Errorf(syncproto.CodeForbidden, format, args...)
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if t, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

// authenticate resolves the caller and enforces the route's auth level.
// Sessions come from a bearer token or the session cookie (then writes need
// the CSRF header); devices from a device bearer token.
func (s *Server) authenticate(level string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if level == authNone {
				return next(c)
			}
			ctx := c.Request().Context()
			token := bearer(c.Request())
			if level == authDevice {
				if token == "" {
					return unauthorized("device token required")
				}
				dev, err := s.store.DeviceByToken(ctx, auth.HashToken(token))
				if errors.Is(err, domain.ErrNotFound) || errors.Is(err, domain.ErrRevoked) {
					return unauthorized("device token unknown or revoked")
				}
				if err != nil {
					return err
				}
				u, err := s.store.User(ctx, dev.UserID)
				if err != nil {
					return err
				}
				if u.Disabled {
					return unauthorized("user disabled")
				}
				c.Set(principalKey, &domain.Principal{User: u, DeviceID: dev.ID})
				c.SetRequest(c.Request().WithContext(domain.WithActor(ctx, domain.Actor{UserID: u.ID, Name: u.Username, DeviceID: dev.ID})))
				return next(c)
			}
			viaCookie := false
			if token == "" {
				if ck, err := c.Cookie(SessionCookie); err == nil {
					token, viaCookie = ck.Value, true
				}
			}
			if token == "" {
				return unauthorized("sign in required")
			}
			sess, err := s.store.Session(ctx, auth.HashToken(token))
			if err != nil {
				if errors.Is(err, domain.ErrNotFound) || errors.Is(err, domain.ErrRevoked) || errors.Is(err, domain.ErrExpired) {
					return unauthorized("session unknown, expired or ended")
				}
				return err
			}
			u, err := s.store.User(ctx, sess.UserID)
			if err != nil {
				return err
			}
			if u.Disabled {
				return unauthorized("user disabled")
			}
			if viaCookie && !safeMethod(c.Request().Method) {
				if got := c.Request().Header.Get(CSRFHeader); got == "" || !SameSecret(got, sess.CSRFToken) {
					return forbidden("missing or wrong %s header", CSRFHeader)
				}
			}
			c.Set(principalKey, &domain.Principal{User: u, ViaCookie: viaCookie, CSRFToken: sess.CSRFToken})
			c.SetRequest(c.Request().WithContext(domain.WithActor(ctx, domain.Actor{UserID: u.ID, Name: u.Username, Session: auth.HashToken(token)[:12]})))
			switch level {
			case authAdmin:
				if u.Role != domain.RoleAdmin {
					return forbidden("admin only")
				}
			case authSupervisor:
				if u.Role != domain.RoleAdmin && u.Role != domain.RoleSupervisor {
					return forbidden("supervisors and admins only")
				}
			}
			return next(c)
		}
	}
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// visible returns the set of place codes the user may see, or nil for all
// (admins).
func (s *Server) visible(c echo.Context, u domain.User) (map[string]bool, error) {
	if u.Role == domain.RoleAdmin {
		return nil, nil
	}
	return s.store.Subtree(c.Request().Context(), u.PlaceCodes)
}

// SameSecret compares two secrets (CSRF tokens) in constant time.
func SameSecret(got, want string) bool {
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// IsHTTPS tells whether the client reached us over HTTPS: directly, or,
// with trustProxy, through a reverse proxy that says so in
// X-Forwarded-Proto (the first value, for a chain of proxies).
func IsHTTPS(r *http.Request, trustProxy bool) bool {
	if r.TLS != nil {
		return true
	}
	if !trustProxy {
		return false
	}
	proto, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ",")
	return strings.EqualFold(strings.TrimSpace(proto), "https")
}
