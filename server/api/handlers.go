package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/paulmach/orb/geojson"

	"fieldsync/server/auth"
	"fieldsync/server/domain"
	"fieldsync/server/store"
	"fieldsync/syncproto"
)

// bind decodes a JSON body into v with a clear error.
func bind(c echo.Context, v any) error {
	dec := json.NewDecoder(c.Request().Body)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) || errors.Is(err, echo.ErrStatusRequestEntityTooLarge) || strings.Contains(strings.ToLower(err.Error()), "too large") {
			return syncproto.Errorf(syncproto.CodeTooLarge, "body too large")
		}
		return syncproto.Errorf(syncproto.CodeInvalidJSON, "body: %v", err)
	}
	return nil
}

func (s *Server) healthz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 5e9)
	defer cancel()
	checks := map[string]string{}
	status := "ok"
	if err := s.store.Ping(ctx); err != nil {
		checks["database"] = err.Error()
		status = "down"
	} else {
		checks["database"] = "ok"
	}
	for name, check := range s.cfg.HealthChecks {
		if err := check(ctx); err != nil {
			checks[name] = err.Error()
			if status == "ok" {
				status = "degraded"
			}
		} else {
			checks[name] = "ok"
		}
	}
	code := http.StatusOK
	if status == "down" {
		code = http.StatusServiceUnavailable
	}
	return c.JSON(code, map[string]any{"status": status, "checks": checks, "protocol_version": syncproto.ProtocolVersion})
}

// --- auth ---

type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

type loginResponse struct {
	Token     string      `json:"token"`
	CSRFToken string      `json:"csrf_token"`
	ExpiresAt string      `json:"expires_at"`
	User      domain.User `json:"user"`
}

func (s *Server) login(c echo.Context) error {
	var req loginRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	resp, err := s.Login(c.Request().Context(), req.Username, req.Password)
	if err != nil {
		return err
	}
	c.SetCookie(&http.Cookie{Name: SessionCookie, Value: resp.Token, Path: "/", HttpOnly: true,
		Secure: s.cfg.SecureCookies || IsHTTPS(c.Request(), s.cfg.TrustProxy), SameSite: http.SameSiteLaxMode, MaxAge: int(s.cfg.SessionTTL.Seconds())})
	return c.JSON(http.StatusOK, resp)
}

// Login checks a password and opens a session. The web console uses it
// too.
func (s *Server) Login(ctx context.Context, username, password string) (loginResponse, error) {
	u, err := s.store.UserByName(ctx, username)
	if err != nil && !errors.Is(err, domain.ErrNotFound) {
		return loginResponse{}, err
	}
	if err := auth.CheckPassword(u.PasswordHash, password); err != nil || u.Disabled {
		return loginResponse{}, unauthorized("wrong username or password")
	}
	token := auth.NewToken()
	sess := domain.Session{UserID: u.ID, CSRFToken: auth.NewToken(), ExpiresAt: s.cfg.Now().Add(s.cfg.SessionTTL)}
	if err := s.store.CreateSession(ctx, auth.HashToken(token), sess); err != nil {
		return loginResponse{}, err
	}
	return loginResponse{Token: token, CSRFToken: sess.CSRFToken, ExpiresAt: domain.Timestamp(sess.ExpiresAt), User: u}, nil
}

func (s *Server) logout(c echo.Context) error {
	token := bearer(c.Request())
	if token == "" {
		if ck, err := c.Cookie(SessionCookie); err == nil {
			token = ck.Value
		}
	}
	if err := s.store.RevokeSession(c.Request().Context(), auth.HashToken(token)); err != nil {
		return err
	}
	c.SetCookie(&http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true})
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) me(c echo.Context) error {
	p := principal(c)
	return c.JSON(http.StatusOK, map[string]any{"user": p.User, "csrf_token": p.CSRFToken})
}

// --- places ---

func placeFeature(p domain.Place) (*geojson.Feature, error) {
	f := &geojson.Feature{Type: "Feature", Properties: geojson.Properties{
		"code": p.Code, "name": p.Name, "level": p.Level,
	}}
	f.ID = p.Code
	if p.ParentCode != "" {
		f.Properties["parent_code"] = p.ParentCode
	}
	if len(p.Boundary) > 0 {
		g, err := geojson.UnmarshalGeometry(p.Boundary)
		if err != nil {
			return nil, fmt.Errorf("place %s boundary: %w", p.Code, err)
		}
		f.Geometry = g.Geometry()
	}
	return f, nil
}

func (s *Server) listPlaces(c echo.Context) error {
	p := principal(c)
	var roots []string
	if p.User.Role != domain.RoleAdmin {
		roots = p.User.PlaceCodes
		if roots == nil {
			roots = []string{}
		}
	}
	places, err := s.store.Places(c.Request().Context(), roots, true)
	if err != nil {
		return err
	}
	fc := geojson.NewFeatureCollection()
	for _, pl := range places {
		f, err := placeFeature(pl)
		if err != nil {
			return err
		}
		fc.Append(f)
	}
	return c.JSON(http.StatusOK, fc)
}

func (s *Server) getPlace(c echo.Context) error {
	p := principal(c)
	pl, err := s.store.Place(c.Request().Context(), c.Param("code"))
	if err != nil {
		return err
	}
	vis, err := s.visible(c, p.User)
	if err != nil {
		return err
	}
	if vis != nil && !vis[pl.Code] {
		return syncproto.Errorf(syncproto.CodeNotFound, "place %s not found", pl.Code)
	}
	f, err := placeFeature(pl)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, f)
}

// ParsePlaces reads a GeoJSON FeatureCollection of places: each feature's
// properties carry code, name, level and parent_code; its geometry is the
// boundary (Polygon, MultiPolygon or null).
func ParsePlaces(r io.Reader) ([]domain.Place, error) {
	body, err := io.ReadAll(r)
	if err != nil {
		return nil, syncproto.Errorf(syncproto.CodeBadRequest, "read body: %v", err)
	}
	var raw struct {
		Type     string `json:"type"`
		Features []struct {
			Type       string          `json:"type"`
			Properties map[string]any  `json:"properties"`
			Geometry   json.RawMessage `json:"geometry"`
		} `json:"features"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, syncproto.Errorf(syncproto.CodeInvalidJSON, "not GeoJSON: %v", err)
	}
	if raw.Type != "FeatureCollection" {
		return nil, syncproto.Errorf(syncproto.CodeBadRequest, "want a GeoJSON FeatureCollection, got type %q", raw.Type)
	}
	if len(raw.Features) > 100_000 {
		return nil, syncproto.Errorf(syncproto.CodeTooLarge, "%d features; at most 100000 per import", len(raw.Features))
	}
	out := make([]domain.Place, 0, len(raw.Features))
	for i, f := range raw.Features {
		str := func(k string) string {
			v, _ := f.Properties[k].(string)
			return v
		}
		p := domain.Place{Code: str("code"), Name: str("name"), Level: str("level"), ParentCode: str("parent_code")}
		if p.Code == "" {
			return nil, syncproto.Errorf(syncproto.CodeValidation, "feature %d: properties.code required", i)
		}
		if len(f.Geometry) > 0 && string(f.Geometry) != "null" {
			p.Boundary = f.Geometry
		}
		out = append(out, p)
	}
	return out, nil
}

func (s *Server) importPlaces(c echo.Context) error {
	places, err := ParsePlaces(c.Request().Body)
	if err != nil {
		return err
	}
	if err := s.store.UpsertPlaces(c.Request().Context(), places); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"imported": len(places)})
}

// --- users ---

type createUserRequest struct {
	Username    string   `json:"username"`
	DisplayName string   `json:"display_name"`
	Role        string   `json:"role"`
	Password    string   `json:"password"`
	PlaceCodes  []string `json:"place_codes"`
}

func (s *Server) createUser(c echo.Context) error {
	var req createUserRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	u := domain.User{Username: req.Username, DisplayName: req.DisplayName, Role: domain.Role(req.Role), PlaceCodes: req.PlaceCodes}
	if !u.Role.Valid() {
		return syncproto.Errorf(syncproto.CodeValidation, "role must be admin, supervisor or field_worker")
	}
	if req.Password != "" {
		h, err := auth.HashPassword(req.Password)
		if err != nil {
			return syncproto.Errorf(syncproto.CodeValidation, "%v", err)
		}
		u.PasswordHash = h
	}
	u, err := s.store.CreateUser(c.Request().Context(), u)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, u)
}

func (s *Server) listUsers(c echo.Context) error {
	p := principal(c)
	us, err := s.store.Users(c.Request().Context())
	if err != nil {
		return err
	}
	vis, err := s.visible(c, p.User)
	if err != nil {
		return err
	}
	out := []domain.User{}
	for _, u := range us {
		if vis == nil || anyIn(u.PlaceCodes, vis) || u.ID == p.User.ID {
			out = append(out, u)
		}
	}
	return c.JSON(http.StatusOK, out)
}

func anyIn(codes []string, set map[string]bool) bool {
	for _, c := range codes {
		if set[c] {
			return true
		}
	}
	return false
}

func paramID(c echo.Context) (int64, error) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, syncproto.Errorf(syncproto.CodeBadRequest, "bad user id %q", c.Param("id"))
	}
	return id, nil
}

func (s *Server) getUser(c echo.Context) error {
	id, err := paramID(c)
	if err != nil {
		return err
	}
	u, err := s.store.User(c.Request().Context(), id)
	if err != nil {
		return err
	}
	p := principal(c)
	vis, err := s.visible(c, p.User)
	if err != nil {
		return err
	}
	if vis != nil && !anyIn(u.PlaceCodes, vis) && u.ID != p.User.ID {
		return syncproto.Errorf(syncproto.CodeNotFound, "user %d not found", id)
	}
	return c.JSON(http.StatusOK, u)
}

func (s *Server) setUserPlaces(c echo.Context) error {
	id, err := paramID(c)
	if err != nil {
		return err
	}
	var req struct {
		PlaceCodes []string `json:"place_codes"`
	}
	if err := bind(c, &req); err != nil {
		return err
	}
	if err := s.store.SetUserPlaces(c.Request().Context(), id, req.PlaceCodes); err != nil {
		return err
	}
	u, err := s.store.User(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, u)
}

// EnrollmentCode is what an admin gets to hand to a device.
type EnrollmentCode struct {
	Code      string `json:"code"`
	ExpiresAt string `json:"expires_at"`
	QRPayload string `json:"qr_payload"`
	UserID    int64  `json:"user_id"`
}

// IssueEnrollmentCode creates a one-time code for userID.
func (s *Server) IssueEnrollmentCode(ctx context.Context, userID, by int64) (EnrollmentCode, error) {
	if _, err := s.store.User(ctx, userID); err != nil {
		return EnrollmentCode{}, err
	}
	code := auth.NewEnrollmentCode()
	exp := s.cfg.Now().Add(s.cfg.EnrollTTL)
	if err := s.store.CreateEnrollmentCode(ctx, auth.HashToken(auth.NormalizeCode(code)), userID, by, exp); err != nil {
		return EnrollmentCode{}, err
	}
	return EnrollmentCode{Code: code, ExpiresAt: domain.Timestamp(exp), QRPayload: auth.EnrollmentPayload(s.cfg.PublicURL, code), UserID: userID}, nil
}

func (s *Server) createEnrollmentCode(c echo.Context) error {
	id, err := paramID(c)
	if err != nil {
		return err
	}
	ec, err := s.IssueEnrollmentCode(c.Request().Context(), id, principal(c).User.ID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, ec)
}

// --- devices ---

type enrollRequest struct {
	Code string `json:"code"`
	Name string `json:"name"`
	// Token, if set, is the device token the device chose (32 to 128
	// characters of base64url). Asking again with the same code and token
	// answers with the same device: a device whose answer was lost on a
	// weak link is not locked out by its own spent code.
	Token string `json:"token"`
}

// validDeviceToken reports whether a device-chosen token is 32 to 128
// characters of base64url (auth.NewToken makes 43).
func validDeviceToken(t string) bool {
	if len(t) < 32 || len(t) > 128 {
		return false
	}
	for _, c := range []byte(t) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// EnrollResponse gives a device its id and token. The server keeps only
// the token's hash: the token is answered to the device that enrolled (or
// again to the device that chose it and asks with it), never shown to
// anyone else.
type EnrollResponse struct {
	DeviceID        string      `json:"device_id"`
	Token           string      `json:"token"`
	User            domain.User `json:"user"`
	ProtocolVersion int         `json:"protocol_version"`
}

func (s *Server) enroll(c echo.Context) error {
	var req enrollRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	if len(req.Name) > 100 {
		return syncproto.Errorf(syncproto.CodeValidation, "device name longer than 100 bytes")
	}
	token := req.Token
	if token == "" {
		token = auth.NewToken()
	} else if !validDeviceToken(token) {
		return syncproto.Errorf(syncproto.CodeValidation, "token must be 32 to 128 characters of base64url")
	}
	id := syncproto.NewID(s.cfg.Now())
	dev, err := s.store.Enroll(c.Request().Context(), auth.HashToken(auth.NormalizeCode(req.Code)), domain.Device{ID: id, Name: req.Name}, auth.HashToken(token))
	switch {
	case errors.Is(err, domain.ErrNotFound):
		return syncproto.Errorf(syncproto.CodeUnauthorized, "unknown enrollment code")
	case errors.Is(err, domain.ErrUsed):
		return syncproto.Errorf(syncproto.CodeGone, "enrollment code already used")
	case errors.Is(err, domain.ErrExpired):
		return syncproto.Errorf(syncproto.CodeGone, "enrollment code expired")
	case err != nil:
		return err
	}
	u, err := s.store.User(c.Request().Context(), dev.UserID)
	if err != nil {
		return err
	}
	status := http.StatusCreated
	if dev.ID != id {
		status = http.StatusOK // enrolled before with this token
	}
	return c.JSON(status, EnrollResponse{DeviceID: dev.ID, Token: token, User: u, ProtocolVersion: syncproto.ProtocolVersion})
}

func (s *Server) listDevices(c echo.Context) error {
	p := principal(c)
	var stuck time.Duration
	if h := c.QueryParam("stuck_hours"); h != "" {
		n, err := strconv.ParseFloat(h, 64)
		if err != nil || n < 0 {
			return syncproto.Errorf(syncproto.CodeBadRequest, "stuck_hours must be a number of hours")
		}
		stuck = time.Duration(n * float64(time.Hour))
	}
	var userIDs []int64
	if p.User.Role != domain.RoleAdmin {
		vis, err := s.visible(c, p.User)
		if err != nil {
			return err
		}
		us, err := s.store.Users(c.Request().Context())
		if err != nil {
			return err
		}
		userIDs = []int64{}
		for _, u := range us {
			if anyIn(u.PlaceCodes, vis) {
				userIDs = append(userIDs, u.ID)
			}
		}
	}
	var ds []domain.Device
	var err error
	if c.QueryParam("stuck_hours") != "" {
		ds, err = s.store.StuckDevices(c.Request().Context(), userIDs, stuck)
	} else {
		ds, err = s.store.Devices(c.Request().Context(), userIDs)
	}
	if err != nil {
		return err
	}
	if ds == nil {
		ds = []domain.Device{}
	}
	return c.JSON(http.StatusOK, ds)
}

func (s *Server) revokeDevice(c echo.Context) error {
	p := principal(c)
	id := c.Param("id")
	if p.User.Role != domain.RoleAdmin {
		ds, err := s.store.Devices(c.Request().Context(), nil)
		if err != nil {
			return err
		}
		vis, err := s.visible(c, p.User)
		if err != nil {
			return err
		}
		allowed := false
		for _, d := range ds {
			if d.ID == id {
				u, err := s.store.User(c.Request().Context(), d.UserID)
				if err != nil {
					return err
				}
				allowed = anyIn(u.PlaceCodes, vis)
			}
		}
		if !allowed {
			return syncproto.Errorf(syncproto.CodeNotFound, "device %s not found", id)
		}
	}
	if err := s.store.RevokeDevice(c.Request().Context(), id); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) deviceSelf(c echo.Context) error {
	p := principal(c)
	return c.JSON(http.StatusOK, map[string]any{"device_id": p.DeviceID, "user": p.User, "protocol_version": syncproto.ProtocolVersion})
}

// --- forms ---

func (s *Server) listForms(c echo.Context) error {
	fs, err := s.store.Forms(c.Request().Context(), c.QueryParam("latest") == "1")
	if err != nil {
		return err
	}
	if fs == nil {
		fs = []syncproto.FormDef{}
	}
	return c.JSON(http.StatusOK, fs)
}

func (s *Server) publishForm(c echo.Context) error {
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return syncproto.Errorf(syncproto.CodeTooLarge, "body: %v", err)
	}
	def, err := syncproto.ParseFormDef(body)
	if err != nil {
		return syncproto.Errorf(syncproto.CodeValidation, "%v", err)
	}
	out, err := s.store.PublishForm(c.Request().Context(), *def, principal(c).User.ID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, out)
}

func (s *Server) formParam(c echo.Context) (syncproto.FormDef, error) {
	v, err := strconv.Atoi(c.Param("version"))
	if err != nil || v < 1 {
		return syncproto.FormDef{}, syncproto.Errorf(syncproto.CodeBadRequest, "bad version %q", c.Param("version"))
	}
	return s.store.Form(c.Request().Context(), c.Param("id"), v)
}

func (s *Server) getForm(c echo.Context) error {
	def, err := s.formParam(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, def)
}

func (s *Server) validateAnswers(c echo.Context) error {
	def, err := s.formParam(c)
	if err != nil {
		return err
	}
	var answers map[string]json.RawMessage
	if err := bind(c, &answers); err != nil {
		return err
	}
	if err := def.ValidateAnswers(answers); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"valid": true})
}

// --- sync ---

func (s *Server) checkDevice(c echo.Context, deviceID string) (store.PushDevice, error) {
	p := principal(c)
	if deviceID != p.DeviceID {
		return store.PushDevice{}, forbidden("device_id %q does not match the token's device", deviceID)
	}
	return store.PushDevice{DeviceID: p.DeviceID, UserID: p.User.ID}, nil
}

// postPushChecksTimeout bounds the evidence checks that run after a push
// commits, before it is answered.
const postPushChecksTimeout = 30 * time.Second

func (s *Server) push(c echo.Context) error {
	// The body is read before a place is taken (see Config.MaxPushes);
	// decoding checks its size again.
	raw, err := io.ReadAll(io.LimitReader(c.Request().Body, syncproto.MaxMessageBytes+1))
	if err != nil {
		return syncproto.Wrap(syncproto.CodeBadRequest, fmt.Errorf("read body: %w", err))
	}
	select {
	case s.pushSlots <- struct{}{}:
	case <-c.Request().Context().Done():
		return c.Request().Context().Err()
	}
	defer func() { <-s.pushSlots }()
	req, err := syncproto.DecodePushRequest(bytes.NewReader(raw))
	raw = nil //nolint:ineffassign // the bytes may go before the push is applied
	if err != nil {
		return err
	}
	dev, err := s.checkDevice(c, req.DeviceID)
	if err != nil {
		return err
	}
	resp, err := s.store.Push(c.Request().Context(), dev, req)
	if err != nil {
		return err
	}
	// Checks on arrival (EXIF distance, place polygon, GPS accuracy,
	// reused photos) run after the commit: they never fail a push, and a
	// blob's arrival runs them again. They are background work: bounded
	// in time (a client that leaves does not stop them, a deadline does)
	// and in their share of the read pool (domain.Background).
	if ev := s.ev(); ev != nil {
		cctx, cancel := context.WithTimeout(domain.Background(context.WithoutCancel(c.Request().Context())), postPushChecksTimeout)
		err := ev.store.RunEvidenceChecksForPush(cctx, req, resp)
		cancel()
		if err != nil {
			s.log.Warn("evidence checks after push", "device", dev.DeviceID, "err", err)
		}
	}
	return c.JSON(http.StatusOK, resp)
}

func (s *Server) pull(c echo.Context) error {
	req, err := syncproto.DecodePullRequest(c.Request().Body)
	if err != nil {
		return err
	}
	dev, err := s.checkDevice(c, req.DeviceID)
	if err != nil {
		return err
	}
	resp, err := s.store.Pull(c.Request().Context(), dev, req)
	if err != nil {
		return err
	}
	// The store encoded each op to fill its page by bytes; those bytes
	// go out as they are, through a buffer (the gzip writer under it
	// would otherwise take one small write per op).
	c.Response().Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	c.Response().WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(c.Response(), 32<<10)
	if err := syncproto.WritePullResponse(bw, resp); err != nil {
		return fmt.Errorf("pull: answer: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("pull: answer: %w", err)
	}
	return nil
}
