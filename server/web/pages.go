package web

import (
	"context"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"fieldsync/server/domain"
	"fieldsync/server/sqlstore"
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
	Self       sqlstore.PlaceProgress
	Children   []sqlstore.PlaceProgress
	Roots      []sqlstore.PlaceProgress // when the user has several top places
	Cadres     []sqlstore.CadreProgress
	Households []sqlstore.MapHousehold
	DaysChart  string
	StateChart string
	Month      string
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
	v.Title = v.T("nav.overview")
	from, to := c.month()
	d := &overviewData{Month: from.Format("2006-01")}
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
}

func (c *Console) periodSince(period string) time.Time {
	switch period {
	case "month":
		from, _ := c.month()
		return from
	case "30d":
		return c.cfg.Now().AddDate(0, 0, -30)
	}
	return time.Time{}
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
	period := ec.QueryParam("period")
	if period != "month" && period != "30d" {
		period = "all"
	}
	since := c.periodSince(period)
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
	d.SVG = buildMap(places, hs, vs, p.Code, v)
	v.Title = p.Name + " · " + v.T("nav.map")
	return c.render(ec, v, "map", d)
}

// --- evidence gaps ---

type gapRow struct {
	Place  domain.Place
	Visits int
}

type gapsData struct {
	Place    domain.Place
	Crumbs   []crumb
	Report   *sqlstore.EvidenceGapReport
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
	rep, err := c.st.ConsoleEvidenceGaps(ctx, p.Code, 300)
	if err != nil {
		return err
	}
	d := &gapsData{Place: p, Crumbs: c.breadcrumb(ctx, sc, p), Report: rep}
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
