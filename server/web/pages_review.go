package web

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"fieldsync/server/domain"
	"fieldsync/server/store"
	"fieldsync/syncproto"
)

type reviewRow struct {
	store.VisitRow
	FormTitle string
	FlagNames []string
	Summary   string
}

type reviewData struct {
	Filter  url.Values
	Places  []placeOption
	Forms   []syncproto.FormDef
	Flags   []string
	States  []string
	Rows    []reviewRow
	Limit   int
	Page    int
	Prev    string // the previous page's URL, if any
	Next    string // the next page's URL, if any
	Return  string
	FormMap map[string]syncproto.FormDef
}

// reviewLimit is the rows of one page of the queue: it keeps the page
// under about 1,500 elements (?page= walks the rest).
const reviewLimit = 50

// dayBound converts a YYYY-MM-DD date in the console's zone to a stored
// timestamp bound; end moves it to the next day (inclusive "to").
func (c *Console) dayBound(s string, end bool) (string, error) {
	if s == "" {
		return "", nil
	}
	d, err := time.ParseInLocation("2006-01-02", s, c.cfg.Location)
	if err != nil {
		return "", syncproto.Errorf(syncproto.CodeBadRequest, "date %q: want YYYY-MM-DD", s)
	}
	if end {
		d = d.AddDate(0, 0, 1)
	}
	return d.UTC().Format("2006-01-02T15:04:05"), nil
}

func (c *Console) reviewPage(ec echo.Context, v *view) error {
	ctx := ec.Request().Context()
	sc, err := c.scopeOf(ctx, v.User)
	if err != nil {
		return err
	}
	v.Title, v.Nav = v.T("nav.review"), "review"
	q := ec.QueryParams()
	state := q.Get("state")
	if _, ok := q["state"]; !ok {
		state = domain.StateSubmitted
		q.Set("state", state)
	}
	page := intParam(ec, "page", 1, 1, maxPageParam)
	// One row more than a page tells whether a next page exists.
	f := store.VisitFilter{FormID: q.Get("form"), State: state, Flag: q.Get("flag"), Limit: reviewLimit + 1, Offset: (page - 1) * reviewLimit}
	if f.From, err = c.dayBound(q.Get("from"), false); err != nil {
		return err
	}
	if f.To, err = c.dayBound(q.Get("to"), true); err != nil {
		return err
	}
	if place := q.Get("place"); place != "" {
		if !sc.can(place) {
			return notFound("place " + place)
		}
		if f.Places, err = c.st.Subtree(ctx, []string{place}); err != nil {
			return err
		}
	} else if !sc.all {
		f.Places = sc.vis
	}
	d := &reviewData{Filter: q, Limit: reviewLimit, Page: page, States: []string{domain.StateSubmitted, domain.StateNeedsRework, domain.StateApproved, domain.StateRejected},
		Return: ec.Request().URL.RequestURI()}
	if d.Places, err = c.placeOptions(ctx, sc); err != nil {
		return err
	}
	if d.Forms, err = c.st.Forms(ctx, true); err != nil {
		return err
	}
	d.FormMap = map[string]syncproto.FormDef{}
	for _, fd := range d.Forms {
		d.FormMap[fd.ID] = fd
	}
	names, err := c.st.ConsoleFlagNames(ctx)
	if err != nil {
		return err
	}
	d.Flags = mergeFlags(names)
	rows, err := c.st.Visits(ctx, f)
	if err != nil {
		return err
	}
	pageURL := func(n int) string {
		pq := url.Values{}
		for k, vs := range q {
			pq[k] = vs
		}
		pq.Set("page", fmt.Sprint(n))
		return Prefix + "/review?" + pq.Encode()
	}
	if len(rows) > reviewLimit {
		rows = rows[:reviewLimit]
		d.Next = pageURL(page + 1)
	}
	if page > 1 {
		d.Prev = pageURL(page - 1)
	}
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	flags, err := c.st.ConsoleVisitFlags(ctx, ids)
	if err != nil {
		return err
	}
	for _, r := range rows {
		rr := reviewRow{VisitRow: r, FormTitle: v.FormTitle(d.FormMap, r.FormID), FlagNames: flags[r.ID]}
		if fd, ok := d.FormMap[r.FormID]; ok {
			var parts []string
			for i := range fd.Fields {
				raw, ok := r.Answers[fd.Fields[i].Name]
				if !ok || syncproto.IsNull(raw) || fd.Fields[i].Name == "head_name" {
					continue
				}
				parts = append(parts, answerText(&fd.Fields[i], raw, v.En(), v.User.Role != domain.RoleAdmin))
				if len(parts) == 3 {
					break
				}
			}
			rr.Summary = strings.Join(parts, " · ")
		}
		d.Rows = append(d.Rows, rr)
	}
	return c.render(ec, v, "review", d)
}

// knownFlags are the evidence checks' flags (server/evidence), listed in
// the filter even before any is raised.
var knownFlags = []string{"gps_far_from_visit", "taken_other_day", "visit_outside_place", "poor_gps_accuracy", "same_photo_other_household", "near_duplicate_other_household"}

func mergeFlags(found []string) []string {
	out := append([]string{}, knownFlags...)
	for _, f := range found {
		dup := false
		for _, k := range out {
			dup = dup || k == f
		}
		if !dup {
			out = append(out, f)
		}
	}
	return out
}

// review applies one action to the chosen visits (one or many) through
// the API server's Review, so the checks and the audit are the API's.
func (c *Console) review(ec echo.Context, v *view) error {
	ctx := ec.Request().Context()
	form, err := ec.FormParams()
	if err != nil {
		return syncproto.Errorf(syncproto.CodeBadRequest, "form: %v", err)
	}
	ids := form["ids"]
	action := form.Get("action")
	reason := strings.TrimSpace(form.Get("reason"))
	if len(ids) == 0 {
		c.flashError(ec, v.T("rv.none"))
		return redirectBack(ec, Prefix+"/review")
	}
	if len(ids) > 500 {
		return syncproto.Errorf(syncproto.CodeValidation, "at most 500 visits at once")
	}
	switch action {
	case domain.ReviewApprove, domain.ReviewRework, domain.ReviewReject:
	default:
		return syncproto.Errorf(syncproto.CodeValidation, "unknown action %q", action)
	}
	if action != domain.ReviewApprove && reason == "" {
		c.flashError(ec, v.T("rv.needreason"))
		return redirectKeepingSelection(ec, ids)
	}
	ok, failed := 0, []string{}
	type result struct {
		ID    string `json:"id"`
		State string `json:"state,omitempty"`
		Error string `json:"error,omitempty"`
	}
	var results []result
	for _, id := range ids {
		res, err := c.api.Review(ctx, v.User, id, action, reason)
		if err != nil {
			msg := err.Error()
			var pe *syncproto.Error
			if as(err, &pe) {
				msg = pe.Message
			}
			failed = append(failed, fmt.Sprintf("%s: %s", shortID(id), msg))
			results = append(results, result{ID: id, Error: msg})
			continue
		}
		ok++
		results = append(results, result{ID: id, State: res.State})
	}
	if strings.Contains(ec.Request().Header.Get("Accept"), "application/json") {
		return ec.JSON(http.StatusOK, map[string]any{"done": ok, "results": results})
	}
	msg := v.T("rv.done", v.T("act."+action), ok)
	if len(failed) > 0 {
		if len(failed) > 5 {
			failed = append(failed[:5], "…")
		}
		msg += " " + v.T("rv.failed", len(ids)-ok) + " " + strings.Join(failed, "; ")
		c.flashError(ec, msg)
		var keep []string
		for _, r := range results {
			if r.Error != "" {
				keep = append(keep, r.ID)
			}
		}
		return redirectKeepingSelection(ec, keep)
	}
	c.flash(ec, msg)
	return redirectBack(ec, Prefix+"/review")
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[len(id)-8:]
	}
	return id
}

// maxKeptSelection bounds the visits a review page re-selects after an
// error (they travel in the URL).
const maxKeptSelection = 100

// redirectKeepingSelection goes back to the review page with ids still
// ticked, so that a supervisor whose bulk action failed fixes it (adds
// the reason) without picking the visits again.
func redirectKeepingSelection(ec echo.Context, ids []string) error {
	to := ec.FormValue("return")
	if !strings.HasPrefix(to, Prefix+"/review") || strings.HasPrefix(to, "//") || strings.Contains(to, "\\") {
		to = Prefix + "/review"
	}
	u, err := url.Parse(to)
	if err != nil || len(ids) == 0 || len(ids) > maxKeptSelection {
		return redirectBack(ec, Prefix+"/review")
	}
	q := u.Query()
	q.Set("sel", strings.Join(ids, ","))
	u.RawQuery = q.Encode()
	return ec.Redirect(http.StatusSeeOther, u.RequestURI())
}

// Selected tells whether the review page shows visit id ticked.
func (d *reviewData) Selected(id string) bool {
	for _, s := range strings.Split(d.Filter.Get("sel"), ",") {
		if s == id {
			return true
		}
	}
	return false
}
