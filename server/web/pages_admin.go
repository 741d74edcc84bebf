package web

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	qrcode "github.com/skip2/go-qrcode"

	"fieldsync/server/api"
	"fieldsync/server/auth"
	"fieldsync/server/domain"
	"fieldsync/server/export"
	"fieldsync/syncproto"
)

func as(err error, target any) bool { return errors.As(err, target) }

// --- sign in / out ---

// loginToken returns the pre-session CSRF token of the sign-in form,
// setting its cookie when needed (double submit).
func (c *Console) loginToken(ec echo.Context) string {
	if ck, err := ec.Cookie(loginCSRFCookie); err == nil && len(ck.Value) >= 32 {
		return ck.Value
	}
	tok := auth.NewToken()
	ec.SetCookie(&http.Cookie{Name: loginCSRFCookie, Value: tok, Path: Prefix + "/login", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: c.secure(ec), MaxAge: 3600})
	return tok
}

func (c *Console) loginPage(ec echo.Context, v *view) error {
	if s, err := c.currentSession(ec); err == nil && s != nil && s.user.Role != domain.RoleFieldWorker {
		return ec.Redirect(http.StatusSeeOther, safeNext(ec.QueryParam("next")))
	}
	v.Title = v.T("login.title")
	return c.render(ec, v, "login", map[string]any{"Token": c.loginToken(ec), "Next": safeNext(ec.QueryParam("next"))})
}

func safeNext(next string) string {
	if !strings.HasPrefix(next, Prefix+"/") || strings.HasPrefix(next, "//") || strings.Contains(next, "\\") || strings.HasPrefix(next, Prefix+"/login") {
		return Prefix + "/overview"
	}
	return next
}

func (c *Console) login(ec echo.Context, v *view) error {
	v.Title = v.T("login.title")
	data := map[string]any{"Next": safeNext(ec.FormValue("next")), "Username": ec.FormValue("username")}
	ck, err := ec.Cookie(loginCSRFCookie)
	if err != nil || ck.Value == "" || !api.SameSecret(ec.FormValue(csrfField), ck.Value) || !sameOrigin(ec.Request()) {
		v.Status = http.StatusForbidden
		data["Error"], data["Token"] = v.T("err.csrf"), c.loginToken(ec)
		return c.render(ec, v, "login", data)
	}
	data["Token"] = ck.Value
	ctx := ec.Request().Context()
	resp, err := c.api.Login(ctx, strings.TrimSpace(ec.FormValue("username")), ec.FormValue("password"))
	if err != nil {
		var pe *syncproto.Error
		if !as(err, &pe) || pe.Code != syncproto.CodeUnauthorized {
			return err
		}
		v.Status = http.StatusUnauthorized
		data["Error"] = v.T("login.wrong")
		return c.render(ec, v, "login", data)
	}
	if resp.User.Role != domain.RoleAdmin && resp.User.Role != domain.RoleSupervisor {
		_ = c.st.RevokeSession(ctx, auth.HashToken(resp.Token))
		v.Status = http.StatusForbidden
		data["Error"] = v.T("err.fieldworker")
		return c.render(ec, v, "login", data)
	}
	exp := domain.ParseTimestamp(resp.ExpiresAt)
	ec.SetCookie(&http.Cookie{Name: api.SessionCookie, Value: resp.Token, Path: "/", HttpOnly: true, Secure: c.secure(ec),
		SameSite: http.SameSiteLaxMode, Expires: exp, MaxAge: int(time.Until(exp).Seconds())})
	ec.SetCookie(&http.Cookie{Name: loginCSRFCookie, Value: "", Path: Prefix + "/login", MaxAge: -1, HttpOnly: true})
	return ec.Redirect(http.StatusSeeOther, data["Next"].(string))
}

func (c *Console) logout(ec echo.Context, v *view) error {
	if ck, err := ec.Cookie(api.SessionCookie); err == nil {
		_ = c.st.RevokeSession(ec.Request().Context(), auth.HashToken(ck.Value))
	}
	ec.SetCookie(&http.Cookie{Name: api.SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: c.secure(ec), SameSite: http.SameSiteLaxMode})
	return ec.Redirect(http.StatusSeeOther, Prefix+"/login")
}

// --- devices ---

type deviceRow struct {
	domain.Device
	Health  syncproto.OutboxHealth
	Pending int
	Stuck   bool
}

func (c *Console) visibleUserIDs(ctx context.Context, sc *scope) ([]int64, []domain.User, error) {
	us, err := c.st.Users(ctx)
	if err != nil {
		return nil, nil, err
	}
	if sc.all {
		return nil, us, nil
	}
	ids := []int64{}
	var vis []domain.User
	for _, u := range us {
		for _, p := range u.PlaceCodes {
			if sc.vis[p] {
				ids = append(ids, u.ID)
				vis = append(vis, u)
				break
			}
		}
	}
	return ids, vis, nil
}

// visibleDevices lists the devices of the users u may see.
func (c *Console) visibleDevices(ctx context.Context, u domain.User) ([]domain.Device, error) {
	sc, err := c.scopeOf(ctx, u)
	if err != nil {
		return nil, err
	}
	ids, _, err := c.visibleUserIDs(ctx, sc)
	if err != nil {
		return nil, err
	}
	return c.st.Devices(ctx, ids)
}

func (c *Console) devices(ec echo.Context, v *view) error {
	ctx := ec.Request().Context()
	v.Title, v.Nav = v.T("nav.devices"), "devices"
	ds, err := c.visibleDevices(ctx, v.User)
	if err != nil {
		return err
	}
	var rows []deviceRow
	now := c.cfg.Now()
	for _, d := range ds {
		r := deviceRow{Device: d}
		if len(d.Health) > 0 {
			_ = json.Unmarshal(d.Health, &r.Health)
		}
		r.Pending = r.Health.PendingMutations + r.Health.PendingBlobs
		if d.RevokedAt == nil && r.Pending > 0 && (d.LastSyncOKAt == nil || now.Sub(*d.LastSyncOKAt) > 24*time.Hour) {
			r.Stuck = true
		}
		rows = append(rows, r)
	}
	sort.SliceStable(rows, func(i, j int) bool {
		if (rows[i].RevokedAt == nil) != (rows[j].RevokedAt == nil) {
			return rows[i].RevokedAt == nil
		}
		return rows[i].Stuck && !rows[j].Stuck
	})
	return c.render(ec, v, "devices", rows)
}

func (c *Console) revokeDevice(ec echo.Context, v *view) error {
	ctx := ec.Request().Context()
	id := ec.Param("id")
	ds, err := c.visibleDevices(ctx, v.User)
	if err != nil {
		return err
	}
	var dev *domain.Device
	for i := range ds {
		if ds[i].ID == id {
			dev = &ds[i]
		}
	}
	if dev == nil {
		return notFound("device")
	}
	if err := c.st.RevokeDevice(ctx, id); err != nil {
		return err
	}
	c.flash(ec, v.T("dev.revoked", dev.Name, dev.Username))
	return redirectBack(ec, Prefix+"/devices")
}

// --- users ---

type usersData struct {
	Users  []domain.User
	Places []placeOption
	Error  string
	Form   map[string]string
}

// PlaceName names a place code of the admin's tree (the code itself for
// one outside it).
func (d *usersData) PlaceName(code string) string {
	for _, p := range d.Places {
		if p.Code == code {
			return p.Name
		}
	}
	return code
}

func (c *Console) users(ec echo.Context, v *view) error {
	return c.renderUsers(ec, v, "", nil)
}

func (c *Console) renderUsers(ec echo.Context, v *view, errMsg string, form map[string]string) error {
	ctx := ec.Request().Context()
	v.Title, v.Nav = v.T("nav.users"), "users"
	us, err := c.st.Users(ctx)
	if err != nil {
		return err
	}
	sc, err := c.scopeOf(ctx, v.User)
	if err != nil {
		return err
	}
	ps, err := c.placeOptions(ctx, sc)
	if err != nil {
		return err
	}
	if errMsg != "" {
		v.Status = http.StatusUnprocessableEntity
	}
	return c.render(ec, v, "users", &usersData{Users: us, Places: ps, Error: errMsg, Form: form})
}

func splitCodes(s string, extra []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, c := range append(strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '，' || r == '\n' }), extra...) {
		c = strings.TrimSpace(c)
		if c != "" && !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}

func (c *Console) createUser(ec echo.Context, v *view) error {
	ctx := ec.Request().Context()
	form := map[string]string{"username": ec.FormValue("username"), "display_name": ec.FormValue("display_name"),
		"role": ec.FormValue("role"), "places": ec.FormValue("places")}
	params, _ := ec.FormParams()
	u := domain.User{Username: strings.TrimSpace(form["username"]), DisplayName: strings.TrimSpace(form["display_name"]),
		Role: domain.Role(form["role"]), PlaceCodes: splitCodes(form["places"], params["place"])}
	if !u.Role.Valid() {
		return c.renderUsers(ec, v, v.T("users.badrole"), form)
	}
	if pw := ec.FormValue("password"); pw != "" {
		h, err := auth.HashPassword(pw)
		if err != nil {
			return c.renderUsers(ec, v, err.Error(), form)
		}
		u.PasswordHash = h
	}
	if u.PlaceCodes == nil {
		u.PlaceCodes = []string{}
	}
	created, err := c.st.CreateUser(ctx, u)
	if err != nil {
		if statusOf(err) < 500 {
			return c.renderUsers(ec, v, err.Error(), form)
		}
		return err
	}
	c.flash(ec, v.T("users.created", created.Username))
	return ec.Redirect(http.StatusSeeOther, Prefix+"/users")
}

func userIDParam(ec echo.Context) (int64, error) {
	id, err := strconv.ParseInt(ec.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, syncproto.Errorf(syncproto.CodeBadRequest, "bad user id")
	}
	return id, nil
}

func (c *Console) setUserPlaces(ec echo.Context, v *view) error {
	id, err := userIDParam(ec)
	if err != nil {
		return err
	}
	params, _ := ec.FormParams()
	codes := splitCodes(ec.FormValue("places"), params["place"])
	if codes == nil {
		codes = []string{}
	}
	if err := c.st.SetUserPlaces(ec.Request().Context(), id, codes); err != nil {
		if statusOf(err) < 500 {
			return c.renderUsers(ec, v, err.Error(), nil)
		}
		return err
	}
	c.flash(ec, v.T("users.placesset"))
	return ec.Redirect(http.StatusSeeOther, Prefix+"/users")
}

type enrollData struct {
	User domain.User
	Code api.EnrollmentCode
	QR   template.URL // data: URI of a PNG
}

func (c *Console) enroll(ec echo.Context, v *view) error {
	id, err := userIDParam(ec)
	if err != nil {
		return err
	}
	ctx := ec.Request().Context()
	u, err := c.st.User(ctx, id)
	if err != nil {
		return notFound("user")
	}
	code, err := c.api.IssueEnrollmentCode(ctx, id, v.User.ID)
	if err != nil {
		return err
	}
	code.QRPayload = auth.EnrollmentPayload(c.serverURL(ec), code.Code)
	png, err := qrcode.Encode(code.QRPayload, qrcode.Medium, 320)
	if err != nil {
		return fmt.Errorf("web: QR code: %w", err)
	}
	v.Title, v.Nav = v.T("enroll.title"), "users"
	return c.render(ec, v, "enroll", &enrollData{User: u, Code: code, QR: template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png))})
}

// serverURL is the server's URL as a tablet should reach it: the
// operator's public URL, or the scheme and host the admin's browser used.
func (c *Console) serverURL(ec echo.Context) string {
	if c.cfg.PublicURL != "" {
		return c.cfg.PublicURL
	}
	r := ec.Request()
	scheme := "http"
	if r.TLS != nil || (c.cfg.TrustProxy && strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")) {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// --- places and imports ---

type placeRow struct {
	domain.Place
	Depth       int
	HasBoundary bool
}

type placesData struct {
	Places   []placeRow
	Message  string
	Register *export.RegisterResult
	Imported int
	Partial  bool
	Error    string
}

func (c *Console) places(ec echo.Context, v *view) error {
	return c.renderPlaces(ec, v, &placesData{})
}

func (c *Console) renderPlaces(ec echo.Context, v *view, d *placesData) error {
	v.Title, v.Nav = v.T("nav.places"), "places"
	ps, err := c.st.Places(ec.Request().Context(), nil, false)
	if err != nil {
		return err
	}
	for _, p := range ps {
		d.Places = append(d.Places, placeRow{Place: p, Depth: domain.LevelIndex(p.Level), HasBoundary: len(p.Boundary) > 0})
	}
	if d.Error != "" {
		v.Status = http.StatusUnprocessableEntity
	}
	return c.render(ec, v, "places", d)
}

func uploaded(ec echo.Context) (io.ReadCloser, string, error) {
	fh, err := ec.FormFile("file")
	if err != nil {
		return nil, "", syncproto.Errorf(syncproto.CodeBadRequest, "choose a file")
	}
	if fh.Size > maxUploadBytes {
		return nil, "", syncproto.Errorf(syncproto.CodeTooLarge, "file larger than %d MB", maxUploadBytes>>20)
	}
	f, err := fh.Open()
	if err != nil {
		return nil, "", err
	}
	return f, fh.Filename, nil
}

func (c *Console) importPlaces(ec echo.Context, v *view) error {
	f, _, err := uploaded(ec)
	if err != nil {
		return c.renderPlaces(ec, v, &placesData{Error: err.Error()})
	}
	defer f.Close()
	ps, err := api.ParsePlaces(io.LimitReader(f, maxUploadBytes))
	if err == nil {
		err = c.st.UpsertPlaces(ec.Request().Context(), ps)
	}
	if err != nil {
		if statusOf(err) >= 500 {
			return err
		}
		msg := err.Error()
		var pe *syncproto.Error
		if as(err, &pe) {
			msg = pe.Message
		}
		return c.renderPlaces(ec, v, &placesData{Error: v.T("places.importfailed") + " " + msg})
	}
	c.flash(ec, v.T("places.imported", len(ps)))
	return ec.Redirect(http.StatusSeeOther, Prefix+"/places")
}

// importRegister reads a household register (XLSX or CSV) and imports it:
// all or nothing, unless "partial" asks to import the valid households and
// report the rest.
func (c *Console) importRegister(ec echo.Context, v *view) error {
	ctx := ec.Request().Context()
	f, _, err := uploaded(ec)
	if err != nil {
		return c.renderPlaces(ec, v, &placesData{Error: err.Error()})
	}
	defer f.Close()
	sc, err := c.scopeOf(ctx, v.User)
	if err != nil {
		return err
	}
	known := map[string]string{}
	ps, err := c.st.Places(ctx, nil, false)
	if err != nil {
		return err
	}
	for _, p := range ps {
		known[p.Code] = p.Level
	}
	res, err := export.ParseRegister(f, export.RegisterOptions{Now: c.cfg.Now(), Place: func(code string) (bool, string) {
		level, ok := known[code]
		switch {
		case !ok || !sc.can(code):
			return false, v.T("reg.noplace", code)
		case level != "group" && level != "village":
			return false, v.T("reg.level", code)
		}
		return true, ""
	}})
	if err != nil {
		if statusOf(err) >= 500 {
			return err
		}
		return c.renderPlaces(ec, v, &placesData{Error: v.T("reg.failed") + " " + err.Error()})
	}
	d := &placesData{Register: res, Partial: ec.FormValue("partial") != ""}
	if len(res.Errors) == 0 || d.Partial {
		if len(res.Households) > 0 {
			if err := c.st.ImportHouseholds(ctx, res.Households, v.User.ID); err != nil {
				if statusOf(err) >= 500 {
					return err
				}
				d.Error = err.Error()
				return c.renderPlaces(ec, v, d)
			}
		}
		d.Imported = len(res.Households)
	}
	if len(res.Errors) > 0 {
		v.Status = http.StatusUnprocessableEntity
	}
	return c.renderPlaces(ec, v, d)
}

// --- forms ---

func (c *Console) forms(ec echo.Context, v *view) error {
	v.Title, v.Nav = v.T("nav.forms"), "forms"
	fs, err := c.st.Forms(ec.Request().Context(), false)
	if err != nil {
		return err
	}
	// Newest version first within each form.
	sort.SliceStable(fs, func(i, j int) bool {
		if fs[i].ID != fs[j].ID {
			return fs[i].ID < fs[j].ID
		}
		return fs[i].Version > fs[j].Version
	})
	return c.render(ec, v, "forms", fs)
}

// Label picks a label in the page's language.
func (v *view) Label(zh, en string) string {
	if v.En() && en != "" {
		return en
	}
	return zh
}

// --- export ---

type exportData struct {
	Places []placeOption
	Forms  []syncproto.FormDef
	States []string
	Masked bool
	Query  map[string]string
}

func (c *Console) exportPage(ec echo.Context, v *view) error {
	if ec.QueryParam("format") != "" {
		return export.Handler(c.st, export.Options{Location: c.cfg.Location, Source: "console"})(ec)
	}
	ctx := ec.Request().Context()
	v.Title, v.Nav = v.T("nav.export"), "export"
	sc, err := c.scopeOf(ctx, v.User)
	if err != nil {
		return err
	}
	d := &exportData{Masked: !export.FullIDs(v.User), States: []string{domain.StateSubmitted, domain.StateNeedsRework, domain.StateApproved, domain.StateRejected},
		Query: map[string]string{"place": ec.QueryParam("place"), "form": ec.QueryParam("form"), "what": ec.QueryParam("what")}}
	if d.Places, err = c.placeOptions(ctx, sc); err != nil {
		return err
	}
	if d.Forms, err = c.st.Forms(ctx, true); err != nil {
		return err
	}
	return c.render(ec, v, "export", d)
}
