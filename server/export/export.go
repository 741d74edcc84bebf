// Package export writes fieldsync's data out for other departments
// ("collect once, share with many"), and reads household registers in:
//
//   - CSV in UTF-8 with a byte-order mark, so Excel opens Chinese text
//     correctly;
//   - XLSX through excelize's streaming writer, one sheet per form, with
//     typed cells (numbers, dates, times);
//   - GeoJSON FeatureCollections of visits or households (paulmach/orb).
//
// Exports stream: rows go from one SQLite cursor to the writer one at a
// time, so a 100,000-visit export runs in bounded memory (XLSX sheets
// spill to temporary files inside excelize). ID-card numbers are masked
// (first six and last four characters kept) unless the user's role allows
// a full export: only admins do. Every export is recorded as an audit
// event before the first byte leaves.
//
// ParseRegister reads a household register (花名册) from XLSX or CSV into
// households, with an error report per spreadsheet row.
package export

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"fieldsync/server/domain"
	"fieldsync/server/store"
	"fieldsync/syncproto"
)

// Errors.
var (
	ErrBadRequest = errors.New("export: bad request")
	ErrForbidden  = errors.New("export: not allowed")
)

// Formats and subjects.
const (
	FormatCSV     = "csv"
	FormatXLSX    = "xlsx"
	FormatGeoJSON = "geojson"

	WhatVisits     = "visits"
	WhatHouseholds = "households"
)

// Store is what exports need from storage: the export job of the store
// boundary (every engine implements it).
type Store = store.Export

// Request is what a user asks to export.
type Request struct {
	What   string // visits (default) or households
	Format string // csv, xlsx or geojson
	Place  string // a place code; "" is everything the user may see
	FormID string // visits only
	State  string // visits only: submitted, approved, needs_rework, rejected
	// From and To bound the visits' server time, [From, To).
	From, To time.Time
	// Lang is "en" for English column headers; anything else is Chinese.
	Lang string
	// Mask masks ID-card numbers even when the role would allow them.
	Mask bool
}

// Options tune how an export is written.
type Options struct {
	// Location is the zone times are shown in (default time.Local).
	Location *time.Location
	// Progress, if set, is called with the rows written so far, every
	// ProgressEvery rows (default 1000) and at the end.
	Progress      func(done int)
	ProgressEvery int
	// Total, if set, is called once with the number of rows before any is
	// written.
	Total func(total int)
	// Source names where the export was asked for in the audit event
	// ("console", "api", "cli").
	Source string
}

// Result describes a finished export.
type Result struct {
	ID       string `json:"id"` // the audit event's entity id
	Rows     int    `json:"rows"`
	Masked   bool   `json:"masked"`
	FileName string `json:"file_name"`
}

// Validate checks a request's fields.
func (r *Request) Validate() error {
	if r.What == "" {
		r.What = WhatVisits
	}
	switch r.What {
	case WhatVisits, WhatHouseholds:
	default:
		return fmt.Errorf("%w: what must be visits or households", ErrBadRequest)
	}
	switch r.Format {
	case FormatCSV, FormatXLSX, FormatGeoJSON:
	default:
		return fmt.Errorf("%w: format must be csv, xlsx or geojson", ErrBadRequest)
	}
	switch r.State {
	case "", domain.StateSubmitted, domain.StateApproved, domain.StateNeedsRework, domain.StateRejected:
	default:
		return fmt.Errorf("%w: unknown state %q", ErrBadRequest, r.State)
	}
	if !r.From.IsZero() && !r.To.IsZero() && !r.From.Before(r.To) {
		return fmt.Errorf("%w: from must be before to", ErrBadRequest)
	}
	return nil
}

// ContentType is the media type of a format.
func ContentType(format string) string {
	switch format {
	case FormatCSV:
		return "text/csv; charset=utf-8"
	case FormatXLSX:
		return "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
	case FormatGeoJSON:
		return "application/geo+json"
	}
	return "application/octet-stream"
}

// FileName is the download name of an export made at t.
func FileName(r Request, t time.Time) string {
	ext := r.Format
	if ext == FormatGeoJSON {
		ext = "geojson"
	}
	place := ""
	if r.Place != "" {
		place = "-" + r.Place
	}
	return fmt.Sprintf("fieldsync-%s%s-%s.%s", r.What, place, t.Format("20060102-1504"), ext)
}

// Filter resolves a request to a store filter for user u: a non-admin sees
// only the subtrees of their places, and a place outside them is
// ErrForbidden.
func Filter(ctx context.Context, st Store, u domain.User, r Request) (store.ExportFilter, error) {
	f := store.ExportFilter{FormID: r.FormID, State: r.State, From: r.From, To: r.To}
	if r.What == WhatHouseholds {
		f.FormID, f.State, f.From, f.To = "", "", time.Time{}, time.Time{}
	}
	switch {
	case u.Role == domain.RoleAdmin && r.Place == "":
		f.Roots = nil
	case u.Role == domain.RoleAdmin:
		f.Roots = []string{r.Place}
	case u.Role != domain.RoleSupervisor:
		return f, fmt.Errorf("%w: exports are for supervisors and admins", ErrForbidden)
	case r.Place == "":
		f.Roots = append([]string{}, u.PlaceCodes...)
	default:
		vis, err := st.Subtree(ctx, u.PlaceCodes)
		if err != nil {
			return f, err
		}
		if !vis[r.Place] {
			return f, fmt.Errorf("%w: place %s is outside your places", ErrForbidden, r.Place)
		}
		f.Roots = []string{r.Place}
	}
	return f, nil
}

// FullIDs reports whether u may export ID-card numbers unmasked.
func FullIDs(u domain.User) bool { return u.Role == domain.RoleAdmin }

// Run checks what u may export, records the export in the audit log and
// streams it to w.
func Run(ctx context.Context, st Store, w io.Writer, u domain.User, r Request, o Options) (Result, error) {
	if err := r.Validate(); err != nil {
		return Result{}, err
	}
	f, err := Filter(ctx, st, u, r)
	if err != nil {
		return Result{}, err
	}
	loc := o.Location
	if loc == nil {
		loc = time.Local
	}
	total, err := st.CountExport(ctx, r.What, f)
	if err != nil {
		return Result{}, err
	}
	res := Result{ID: syncproto.NewID(time.Now()), Masked: r.Mask || !FullIDs(u), FileName: FileName(r, time.Now().In(loc))}
	details := map[string]any{"what": r.What, "format": r.Format, "place": r.Place, "form": r.FormID, "state": r.State,
		"masked": res.Masked, "rows": total, "user": u.Username, "source": o.Source}
	if !r.From.IsZero() {
		details["from"] = domain.Timestamp(r.From)
	}
	if !r.To.IsZero() {
		details["to"] = domain.Timestamp(r.To)
	}
	if err := st.Audit(ctx, "export", "export", res.ID, r.Place, details); err != nil {
		return res, fmt.Errorf("export: audit: %w", err)
	}
	if o.Total != nil {
		o.Total(total)
	}
	n, err := Write(ctx, st, w, f, r, res.Masked, o)
	res.Rows = n
	return res, err
}

// Write streams the rows f selects in r's format to w, without audit or
// access checks (Run does those).
func Write(ctx context.Context, st Store, w io.Writer, f store.ExportFilter, r Request, mask bool, o Options) (int, error) {
	if o.Location == nil {
		o.Location = time.Local
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = 1000
	}
	x := &writer{ctx: ctx, st: st, f: f, r: r, mask: mask, o: o, en: r.Lang == "en"}
	forms, err := st.Forms(ctx, true)
	if err != nil {
		return 0, err
	}
	for _, fd := range forms {
		if fd.ID == "household_survey" {
			x.survey = fd
		}
	}
	switch r.Format {
	case FormatCSV:
		err = x.csv(w)
	case FormatXLSX:
		err = x.xlsx(w)
	case FormatGeoJSON:
		err = x.geojson(w)
	default:
		err = fmt.Errorf("%w: format %q", ErrBadRequest, r.Format)
	}
	if o.Progress != nil {
		o.Progress(x.rows)
	}
	return x.rows, err
}

// writer holds one export's state.
type writer struct {
	ctx    context.Context
	st     Store
	f      store.ExportFilter
	r      Request
	mask   bool
	o      Options
	en     bool
	survey syncproto.FormDef // household_survey, for household choice labels
	rows   int
}

func (x *writer) row() {
	x.rows++
	if x.o.Progress != nil && x.rows%x.o.ProgressEvery == 0 {
		x.o.Progress(x.rows)
	}
}

// --- masking ---

var idLike = regexp.MustCompile(`\b[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]\b|\b[1-9]\d{14}\b`)

// MaskID masks an ID-card number: the first six (the region) and the last
// four characters stay, the rest (the birth date and sequence) become '*'.
// Values of ten characters or fewer keep only their first character.
func MaskID(s string) string {
	s = strings.TrimSpace(s)
	n := utf8.RuneCountInString(s)
	if n == 0 {
		return ""
	}
	r := []rune(s)
	if n <= 10 {
		return string(r[:1]) + strings.Repeat("*", n-1)
	}
	return string(r[:6]) + strings.Repeat("*", n-10) + string(r[n-4:])
}

// MaskText masks every ID-card number inside free text.
func MaskText(s string) string {
	if !strings.ContainsAny(s, "0123456789") {
		return s
	}
	return idLike.ReplaceAllStringFunc(s, MaskID)
}

// isIDField reports whether a field holds an ID-card number by its name.
func isIDField(name string) bool {
	return strings.Contains(name, "id_card") || strings.Contains(name, "idcard") || name == "sfz" || strings.HasSuffix(name, "_id_no")
}

// maskRaw masks ID-card numbers inside a JSON value (strings anywhere in
// it); field names the ID fields whose whole string values are masked.
func maskRaw(field string, raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || !strings.ContainsAny(string(raw), "0123456789") {
		return raw
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return raw
	}
	v = maskAny(isIDField(field), v)
	b, err := json.Marshal(v)
	if err != nil {
		return raw
	}
	return b
}

func maskAny(whole bool, v any) any {
	switch t := v.(type) {
	case string:
		if whole {
			return MaskID(t)
		}
		return MaskText(t)
	case []any:
		for i := range t {
			t[i] = maskAny(whole, t[i])
		}
		return t
	case map[string]any:
		for k := range t {
			t[k] = maskAny(whole || isIDField(k), t[k])
		}
		return t
	}
	return v
}
