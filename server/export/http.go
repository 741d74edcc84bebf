package export

import (
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"fieldsync/server/domain"
	"fieldsync/syncproto"
)

// ParseRequest reads an export request from query parameters: what,
// format, place, form, state, from, to, lang, mask. from and to are dates
// (YYYY-MM-DD, both inclusive, local days in loc) or RFC 3339 times (to
// exclusive).
func ParseRequest(q url.Values, loc *time.Location) (Request, error) {
	if loc == nil {
		loc = time.Local
	}
	r := Request{What: q.Get("what"), Format: q.Get("format"), Place: q.Get("place"), FormID: q.Get("form"),
		State: q.Get("state"), Lang: q.Get("lang")}
	r.Mask, _ = strconv.ParseBool(q.Get("mask"))
	var err error
	if r.From, err = parseDay(q.Get("from"), loc, false); err != nil {
		return r, err
	}
	if r.To, err = parseDay(q.Get("to"), loc, true); err != nil {
		return r, err
	}
	return r, r.Validate()
}

func parseDay(s string, loc *time.Location, end bool) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseInLocation("2006-01-02", s, loc); err == nil {
		if end {
			d = d.AddDate(0, 0, 1)
		}
		return d, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %q is not a date YYYY-MM-DD or an RFC 3339 time", ErrBadRequest, s)
	}
	return t, nil
}

// HTTPError turns export errors into wire errors.
func HTTPError(err error) error {
	switch {
	case errors.Is(err, ErrBadRequest):
		return syncproto.Errorf(syncproto.CodeBadRequest, "%v", err)
	case errors.Is(err, ErrForbidden):
		return syncproto.Errorf(syncproto.CodeForbidden, "%v", err)
	}
	return err
}

// lazyWriter sends the response headers with the first byte, so that an
// error before any output can still become an error response.
type lazyWriter struct {
	c      echo.Context
	start  func()
	wrote  bool
	failed bool
}

func (l *lazyWriter) Write(p []byte) (int, error) {
	if !l.wrote {
		l.wrote = true
		l.start()
	}
	n, err := l.c.Response().Write(p)
	if err != nil {
		l.failed = true
	}
	return n, err
}

// Handler serves GET exports (query as ParseRequest reads it). The
// request must already be authenticated by middleware that puts a
// domain.Actor with the user's id into the request context, as the API's
// and the console's session checks do; only supervisors and admins may
// export. It can be registered in the API's route table:
//
//	add(http.MethodGet, p+"/export", authSupervisor, "export", "...", export.Handler(store, export.Options{Source: "api"}))
func Handler(st Store, o Options) echo.HandlerFunc {
	return func(c echo.Context) error {
		ctx := c.Request().Context()
		a := domain.ActorFrom(ctx)
		if a.UserID == 0 || a.DeviceID != "" {
			return syncproto.Errorf(syncproto.CodeUnauthorized, "sign in as a supervisor or admin to export")
		}
		u, err := st.User(ctx, a.UserID)
		if err != nil {
			return err
		}
		if u.Role != domain.RoleAdmin && u.Role != domain.RoleSupervisor {
			return syncproto.Errorf(syncproto.CodeForbidden, "exports are for supervisors and admins")
		}
		r, err := ParseRequest(c.QueryParams(), o.Location)
		if err != nil {
			return HTTPError(err)
		}
		loc := o.Location
		if loc == nil {
			loc = time.Local
		}
		name := FileName(r, time.Now().In(loc))
		lw := &lazyWriter{c: c, start: func() {
			h := c.Response().Header()
			h.Set(echo.HeaderContentType, ContentType(r.Format))
			h.Set(echo.HeaderContentDisposition, mime.FormatMediaType("attachment", map[string]string{"filename": name}))
			h.Set("Cache-Control", "no-store")
			h.Set("X-Content-Type-Options", "nosniff")
			c.Response().WriteHeader(http.StatusOK)
		}}
		res, err := Run(ctx, st, lw, u, r, o)
		if err != nil {
			if !lw.wrote {
				return HTTPError(err)
			}
			// Headers are gone: cut the connection so the client sees a
			// failed download rather than a short file.
			slog.Error("export failed mid-stream", "err", err, "export", res.ID, "rows", res.Rows)
			panic(http.ErrAbortHandler)
		}
		if !lw.wrote {
			lw.start() // an empty body (cannot happen for the formats above, but be safe)
		}
		return nil
	}
}
