package web

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"fieldsync/server/domain"
	"fieldsync/server/store"
	"fieldsync/syncproto"
)

// scope is what a user may see: everything (admins) or the subtrees of
// their places.
type scope struct {
	all   bool
	vis   map[string]bool
	roots []domain.Place // the top places the user starts from
}

func (sc *scope) can(code string) bool { return sc.all || sc.vis[code] }

func (c *Console) scopeOf(ctx context.Context, u domain.User) (*scope, error) {
	sc := &scope{}
	if u.Role == domain.RoleAdmin {
		sc.all = true
		ps, err := c.st.Places(ctx, nil, false)
		if err != nil {
			return nil, err
		}
		for _, p := range ps {
			if p.ParentCode == "" {
				sc.roots = append(sc.roots, p)
			}
		}
		return sc, nil
	}
	vis, err := c.st.Subtree(ctx, u.PlaceCodes)
	if err != nil {
		return nil, err
	}
	sc.vis = vis
	var paths []domain.Place
	for _, code := range u.PlaceCodes {
		p, err := c.st.Place(ctx, code)
		if err != nil {
			continue
		}
		paths = append(paths, p)
	}
	sort.Slice(paths, func(i, j int) bool { return paths[i].Path < paths[j].Path })
	for _, p := range paths {
		if n := len(sc.roots); n > 0 && strings.HasPrefix(p.Path, sc.roots[n-1].Path) {
			continue
		}
		sc.roots = append(sc.roots, p)
	}
	return sc, nil
}

// rootCodes are the codes of the user's top places.
func (sc *scope) rootCodes() []string {
	out := make([]string, len(sc.roots))
	for i, p := range sc.roots {
		out[i] = p.Code
	}
	return out
}

// placeOption is a place in a filter's drop-down.
type placeOption struct {
	Code, Name, Level string
	Depth             int
}

// placeOptions lists the places a user may pick, in tree order.
func (c *Console) placeOptions(ctx context.Context, sc *scope) ([]placeOption, error) {
	var roots []string
	if !sc.all {
		roots = sc.rootCodes()
		if len(roots) == 0 {
			return nil, nil
		}
	}
	ps, err := c.st.Places(ctx, roots, false)
	if err != nil {
		return nil, err
	}
	out := make([]placeOption, 0, len(ps))
	for _, p := range ps {
		out = append(out, placeOption{Code: p.Code, Name: p.Name, Level: p.Level, Depth: domain.LevelIndex(p.Level)})
	}
	return out, nil
}

// crumb is one step of a breadcrumb.
type crumb struct {
	Code, Name, Level string
	Link              bool
}

// breadcrumb lists the ancestors of p the user may see, then p.
func (c *Console) breadcrumb(ctx context.Context, sc *scope, p domain.Place) []crumb {
	var out []crumb
	codes := strings.Split(strings.Trim(p.Path, "/"), "/")
	for _, code := range codes[:len(codes)-1] {
		if !sc.can(code) {
			continue
		}
		a, err := c.st.Place(ctx, code)
		if err != nil {
			continue
		}
		out = append(out, crumb{Code: a.Code, Name: a.Name, Level: a.Level, Link: true})
	}
	return append(out, crumb{Code: p.Code, Name: p.Name, Level: p.Level})
}

// notFound is the error for anything outside the user's places.
func notFound(what string) error {
	return syncproto.Errorf(syncproto.CodeNotFound, "%s not found", what)
}

// placeParam resolves the "place" query parameter: the user's only root
// when empty (ok false when there are several to choose from).
func (c *Console) placeParam(ec echo.Context, sc *scope) (domain.Place, bool, error) {
	code := ec.QueryParam("place")
	if code == "" {
		if len(sc.roots) != 1 {
			return domain.Place{}, false, nil
		}
		return sc.roots[0], true, nil
	}
	if !sc.can(code) {
		return domain.Place{}, false, notFound("place " + code)
	}
	p, err := c.st.Place(ec.Request().Context(), code)
	if err != nil {
		return p, false, notFound("place " + code)
	}
	return p, true, nil
}

// placeOrFirstRoot is the ?place= place, else the first of the user's
// places.
func (c *Console) placeOrFirstRoot(ec echo.Context, sc *scope) (domain.Place, error) {
	p, ok, err := c.placeParam(ec, sc)
	if err != nil || ok {
		return p, err
	}
	if len(sc.roots) == 0 {
		return p, notFound("place")
	}
	return sc.roots[0], nil
}

// month returns the bounds of the current month in the console's zone.
func (c *Console) month() (time.Time, time.Time) {
	now := c.cfg.Now().In(c.cfg.Location)
	from := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, c.cfg.Location)
	return from, from.AddDate(0, 1, 0)
}

// --- overview ---

type overviewData struct {
	Place      domain.Place
	Crumbs     []crumb
	Self       store.PlaceProgress
	Children   []store.PlaceProgress
	Roots      []store.PlaceProgress // when the user has several top places
	Cadres     []store.CadreProgress
	Households []store.MapHousehold
	DaysChart  string
	StateChart string
	Period     string            // month, 30d or all (shared with the map)
	PeriodName string            // the period in words, e.g. 本月(2026-12)
	placeNames map[string]string // the cadres' places
}

// PlaceName names one of the cadres' places (its code if unknown).
func (d *overviewData) PlaceName(code string) string {
	if n, ok := d.placeNames[code]; ok {
		return n
	}
	return code
}

func (c *Console) overview(ec echo.Context, v *view) error {
	ctx := ec.Request().Context()
	sc, err := c.scopeOf(ctx, v.User)
	if err != nil {
		return err
	}
	v.Title, v.Nav = v.T("nav.overview"), "overview"
	period := c.period(ec)
	from, to := c.periodBounds(period)
	d := &overviewData{Period: period, PeriodName: c.periodName(v, period)}
	p, ok, err := c.placeParam(ec, sc)
	if err != nil {
		return err
	}
	if !ok {
		for _, r := range sc.roots {
			ps, err := c.st.ConsoleProgress(ctx, r.Code, from, to)
			if err != nil {
				return err
			}
			d.Roots = append(d.Roots, ps[0])
		}
		return c.render(ec, v, "overview", d)
	}
	d.Place = p
	d.Crumbs = c.breadcrumb(ctx, sc, p)
	ps, err := c.st.ConsoleProgress(ctx, p.Code, from, to)
	if err != nil {
		return err
	}
	d.Self = ps[0]
	for _, x := range ps[1:] {
		if x.Depth == 1 {
			d.Children = append(d.Children, x)
		}
	}
	if d.Cadres, err = c.st.ConsoleCadres(ctx, p.Code, from, to); err != nil {
		return err
	}
	d.placeNames = map[string]string{}
	for _, cd := range d.Cadres {
		for _, code := range cd.PlaceCodes {
			if _, ok := d.placeNames[code]; ok {
				continue
			}
			d.placeNames[code] = code
			if pl, err := c.st.Place(ctx, code); err == nil && pl.Name != "" {
				d.placeNames[code] = pl.Name
			}
		}
	}
	now := c.cfg.Now().In(c.cfg.Location)
	dayEnd := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, c.cfg.Location).AddDate(0, 0, 1)
	_, off := now.Zone()
	days, err := c.st.ConsoleVisitsPerDay(ctx, p.Code, dayEnd.AddDate(0, 0, -30), dayEnd, off/60)
	if err != nil {
		return err
	}
	d.DaysChart = daysChart(days, v)
	d.StateChart = stateChart(d.Self, v)
	if len(d.Children) == 0 {
		if d.Households, err = c.st.ConsoleHouseholds(ctx, p.Code, from, 2000); err != nil {
			return err
		}
	}
	v.Title = p.Name + " · " + v.T("nav.overview")
	return c.render(ec, v, "overview", d)
}

// --- map ---

type mapData struct {
	Place   domain.Place
	Crumbs  []crumb
	Period  string
	SVG     string
	Counts  map[string]int
	Visits  int
	Places  int
	Bounded bool
	Grouped bool // one bubble per place instead of every point
}

// periodCookie remembers the period chosen on the overview or the map, so
// that both open on the same one.
const periodCookie = "fieldsync_period"

// validPeriod tells the periods the console offers.
func validPeriod(p string) bool { return p == "month" || p == "30d" || p == "all" }

// period is the page's period: ?period= (then remembered in a cookie), else
// the remembered one, else this month. Anything else is ignored.
func (c *Console) period(ec echo.Context) string {
	if p := ec.QueryParam("period"); validPeriod(p) {
		ec.SetCookie(&http.Cookie{Name: periodCookie, Value: p, Path: Prefix, MaxAge: 365 * 24 * 3600, HttpOnly: true,
			SameSite: http.SameSiteLaxMode, Secure: c.secure(ec)})
		return p
	}
	if ck, err := ec.Cookie(periodCookie); err == nil && validPeriod(ck.Value) {
		return ck.Value
	}
	return "month"
}

// periodBounds are the device-time bounds of a period.
func (c *Console) periodBounds(period string) (time.Time, time.Time) {
	switch period {
	case "month":
		return c.month()
	case "30d":
		now := c.cfg.Now().In(c.cfg.Location)
		dayEnd := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, c.cfg.Location).AddDate(0, 0, 1)
		return now.AddDate(0, 0, -30), dayEnd
	}
	return time.Time{}, time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
}

// periodName says the period in words.
func (c *Console) periodName(v *view, period string) string {
	if period == "month" {
		from, _ := c.month()
		return v.T("period.month", from.Format("2006-01"))
	}
	return v.T("map." + period)
}

func (c *Console) mapPage(ec echo.Context, v *view) error {
	ctx := ec.Request().Context()
	sc, err := c.scopeOf(ctx, v.User)
	if err != nil {
		return err
	}
	v.Title, v.Nav = v.T("nav.map"), "map"
	p, err := c.placeOrFirstRoot(ec, sc)
	if err != nil {
		return err
	}
	period := c.period(ec)
	since, _ := c.periodBounds(period)
	places, err := c.st.Places(ctx, []string{p.Code}, false)
	if err != nil {
		return err
	}
	hs, err := c.st.ConsoleHouseholds(ctx, p.Code, since, 20000)
	if err != nil {
		return err
	}
	vs, err := c.st.ConsoleVisitPoints(ctx, p.Code, since, 5000)
	if err != nil {
		return err
	}
	d := &mapData{Place: p, Crumbs: c.breadcrumb(ctx, sc, p), Period: period, Counts: map[string]int{}, Visits: len(vs), Places: len(places)}
	for _, h := range hs {
		d.Counts[h.Status]++
	}
	d.Grouped = !mapDetailed(hs, vs)
	d.SVG = buildMap(places, hs, vs, p.Code, v)
	v.Title = p.Name + " · " + v.T("nav.map")
	return c.render(ec, v, "map", d)
}

// --- evidence gaps ---

type gapRow struct {
	Place  domain.Place
	Visits int
}

// The gaps page lists this many visits a page by default (?limit= picks
// 10..50), so that it stays under about 1,500 elements.
const (
	gapsPageSize = 30
	gapsPageMin  = 10
	gapsPageMax  = 50
	maxPageParam = 1_000_000
)

// intParam reads an integer query parameter: def when it is absent or not
// a number (also one that overflows), else clamped to [lo, hi]. The value
// goes to SQL only as a bound parameter.
func intParam(ec echo.Context, name string, def, lo, hi int) int {
	n, err := strconv.Atoi(ec.QueryParam(name))
	if err != nil {
		return def
	}
	return min(max(n, lo), hi)
}

// pager is one page of a long list.
type pager struct {
	Page, Pages, Limit int
	Base               string // the page's URL up to the page number
}

func (p pager) Prev() string { return fmt.Sprintf("%s%d", p.Base, p.Page-1) }
func (p pager) Next() string { return fmt.Sprintf("%s%d", p.Base, p.Page+1) }

type gapsData struct {
	Pager    pager
	Place    domain.Place
	Crumbs   []crumb
	Report   *store.EvidenceGapReport
	Children []gapRow
	Forms    map[string]syncproto.FormDef // latest, by id
	Slots    map[string]string            // form.slot -> label
}

func (c *Console) gaps(ec echo.Context, v *view) error {
	ctx := ec.Request().Context()
	sc, err := c.scopeOf(ctx, v.User)
	if err != nil {
		return err
	}
	v.Title, v.Nav = v.T("nav.gaps"), "gaps"
	p, err := c.placeOrFirstRoot(ec, sc)
	if err != nil {
		return err
	}
	limit := intParam(ec, "limit", gapsPageSize, gapsPageMin, gapsPageMax)
	page := intParam(ec, "page", 1, 1, maxPageParam)
	rep, err := c.st.ConsoleEvidenceGaps(ctx, p.Code, limit, (page-1)*limit)
	if err != nil {
		return err
	}
	pages := max(1, (rep.Visits+limit-1)/limit)
	if page > pages { // past the end: the last page
		page = pages
		if rep, err = c.st.ConsoleEvidenceGaps(ctx, p.Code, limit, (page-1)*limit); err != nil {
			return err
		}
	}
	base := fmt.Sprintf("%s/gaps?place=%s&limit=%d&page=", Prefix, url.QueryEscape(p.Code), limit)
	d := &gapsData{Place: p, Crumbs: c.breadcrumb(ctx, sc, p), Report: rep, Pager: pager{Page: page, Pages: pages, Limit: limit, Base: base}}
	d.Forms, d.Slots, err = c.formLabels(ctx, v)
	if err != nil {
		return err
	}
	// Roll the per-place counts up to the children of p.
	places, err := c.st.Places(ctx, []string{p.Code}, false)
	if err != nil {
		return err
	}
	child := map[string]int{}
	for i, pl := range places {
		if pl.ParentCode == p.Code {
			child[pl.Code] = len(d.Children)
			d.Children = append(d.Children, gapRow{Place: places[i]})
		}
	}
	for _, pl := range places {
		n := rep.ByPlace[pl.Code]
		if n == 0 || pl.Code == p.Code {
			continue
		}
		rel := strings.Split(strings.Trim(strings.TrimPrefix(pl.Path, p.Path), "/"), "/")
		if i, ok := child[rel[0]]; ok {
			d.Children[i].Visits += n
		}
	}
	v.Title = p.Name + " · " + v.T("nav.gaps")
	return c.render(ec, v, "gaps", d)
}

// formLabels returns the latest version of every form and the labels of
// their slots ("form.slot" -> label) in the page's language.
func (c *Console) formLabels(ctx context.Context, v *view) (map[string]syncproto.FormDef, map[string]string, error) {
	fs, err := c.st.Forms(ctx, false)
	if err != nil {
		return nil, nil, err
	}
	forms, slots := map[string]syncproto.FormDef{}, map[string]string{}
	for _, f := range fs {
		forms[f.ID] = f
		for _, s := range f.Slots {
			l := s.Label
			if v.En() && s.LabelEn != "" {
				l = s.LabelEn
			}
			slots[f.ID+"."+s.Name] = l
		}
	}
	return forms, slots, nil
}

// FormTitle names a form in the page's language.
func (v *view) FormTitle(forms map[string]syncproto.FormDef, id string) string {
	f, ok := forms[id]
	if !ok {
		return id
	}
	if v.En() && f.TitleEn != "" {
		return f.TitleEn
	}
	return f.Title
}

// redirectBack sends the browser to a console path from the form (or the
// fallback), never elsewhere.
func redirectBack(ec echo.Context, fallback string) error {
	to := ec.FormValue("return")
	if !strings.HasPrefix(to, Prefix+"/") || strings.HasPrefix(to, "//") || strings.Contains(to, "\\") {
		to = fallback
	}
	return ec.Redirect(http.StatusSeeOther, to)
}
