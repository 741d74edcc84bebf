package sqlstore

// Read queries of the supervisor web console and the exports: progress by
// place (a few grouped queries over a subtree, rolled up in Go), map
// layers, evidence gaps, a household's evidence, and streaming iterators
// over visits and households for CSV/XLSX/GeoJSON exports.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"fieldsync/server/domain"
	"fieldsync/server/store"
	"fieldsync/syncproto"
)

// ConsoleTargetPerCadre is store.ConsoleTargetPerCadre.
const ConsoleTargetPerCadre = store.ConsoleTargetPerCadre

// consoleBound formats t as a lower/upper bound for comparisons with stored
// timestamps (RFC 3339, UTC). The bound has no fraction and no zone, so it
// sorts before every stored time within its second.
func consoleBound(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05") }

// consoleScope is a set of place subtrees as path ranges, for SQL.
type consoleScope struct {
	all    bool
	ranges [][2]string
}

// consoleScopeOf resolves root place codes to path ranges; nil roots is
// everything. Unknown codes are skipped; nested roots collapse.
func (s *Store) consoleScopeOf(ctx context.Context, roots []string) (consoleScope, error) {
	if roots == nil {
		return consoleScope{all: true}, nil
	}
	var paths []string
	for _, c := range roots {
		var p string
		err := s.readRow(ctx, `SELECT path FROM places WHERE code = ?`, c).Scan(&p)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return consoleScope{}, err
		}
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var sc consoleScope
	for _, p := range paths {
		if n := len(sc.ranges); n > 0 && strings.HasPrefix(p, sc.ranges[n-1][0]) {
			continue
		}
		sc.ranges = append(sc.ranges, [2]string{p, pathEnd(p)})
	}
	return sc, nil
}

// placeIn returns an SQL condition "col IN (codes of the scope)" and its
// arguments.
func (sc consoleScope) placeIn(col string) (string, []any) {
	if sc.all {
		return "1=1", nil
	}
	if len(sc.ranges) == 0 {
		return "0=1", nil
	}
	// One parameter, a JSON array of [low, high) path ranges: the SQL
	// text is the same for every scope.
	return col + ` IN (SELECT pl.code FROM json_each(?) r JOIN places pl
		ON pl.path >= (r.value ->> 0) AND pl.path < (r.value ->> 1))`, []any{jsonList(sc.ranges)}
}

// consoleRequired returns a CTE "req(form_id, form_version, slot,
// min_count)" of every evidence slot that requires at least one blob, over
// every published form version, and its arguments. ok is false when no
// form requires evidence.
func (s *Store) consoleRequired(ctx context.Context) (cte string, args []any, ok bool, err error) {
	forms, err := s.Forms(ctx, false)
	if err != nil {
		return "", nil, false, err
	}
	var vals [][]any
	for _, f := range forms {
		for _, sl := range f.Slots {
			if sl.MinCount > 0 {
				vals = append(vals, []any{f.ID, f.Version, sl.Name, sl.MinCount})
			}
		}
	}
	if len(vals) == 0 {
		return "", nil, false, nil
	}
	// One parameter, a JSON array of [form_id, form_version, slot,
	// min_count]: the SQL text is the same whatever the forms.
	return `req(form_id, form_version, slot, min_count) AS MATERIALIZED (SELECT r.value ->> 0, CAST(r.value ->> 1 AS INTEGER),
		r.value ->> 2, CAST(r.value ->> 3 AS INTEGER) FROM json_each(?) r)`, []any{jsonList(vals)}, true, nil
}

// consoleIncomplete is an SQL condition, true for a visit v some of whose
// required slots (the req CTE) hold fewer present blobs than required.
const consoleIncomplete = `EXISTS (SELECT 1 FROM req WHERE req.form_id = v.form_id AND req.form_version = v.form_version
	AND req.min_count > (SELECT count(*) FROM visit_evidence ve JOIN blobs b ON b.sha256 = ve.sha256 AND ve.held = 1 WHERE ve.visit_id = v.id AND ve.slot = req.slot))`

// consoleLive is an SQL condition for visits whose evidence still matters:
// not rejected and not corrected by a later visit.
const consoleLive = `v.review_state <> 'rejected' AND v.id NOT IN (SELECT corrects_visit_id FROM visits WHERE corrects_visit_id IS NOT NULL)`

// PlaceProgress is store.PlaceProgress.
type PlaceProgress = store.PlaceProgress

// ConsoleProgress returns the progress of root and of every place under
// it, in tree order, each figure rolled up over its subtree. monthFrom and
// monthTo bound "this month" (device time). It runs a handful of grouped
// queries over the subtree, whatever its size.
func (s *Store) ConsoleProgress(ctx context.Context, root string, monthFrom, monthTo time.Time) ([]PlaceProgress, error) {
	rp, err := s.Place(ctx, root)
	if err != nil {
		return nil, err
	}
	places, err := s.queryPlaces(ctx, `SELECT `+placeCols+` FROM places WHERE path >= ? AND path < ? ORDER BY path`, rp.Path, pathEnd(rp.Path))
	if err != nil {
		return nil, err
	}
	own := make(map[string]*PlaceProgress, len(places))
	for _, p := range places {
		own[p.Code] = &PlaceProgress{}
	}
	sc := consoleScope{ranges: [][2]string{{rp.Path, pathEnd(rp.Path)}}}
	in, inArgs := sc.placeIn("place_code")
	vin, _ := sc.placeIn("v.place_code")
	get := func(code string) *PlaceProgress {
		if p := own[code]; p != nil {
			return p
		}
		p := &PlaceProgress{}
		own[code] = p
		return p
	}
	scan := func(q string, args []any, fn func(rows *Rows) error) error {
		rows, err := s.readRows(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("console progress: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			if err := fn(rows); err != nil {
				return err
			}
		}
		return rows.Err()
	}
	// Households.
	if err := scan(`SELECT place_code, count(*) FROM households WHERE deleted = 0 AND `+in+` GROUP BY place_code`, inArgs, func(rows *Rows) error {
		var code string
		var n int
		if err := rows.Scan(&code, &n); err != nil {
			return err
		}
		get(code).Households = n
		return nil
	}); err != nil {
		return nil, err
	}
	// Visits: states, this month, evidence completeness, in one pass.
	from, to := consoleBound(monthFrom), consoleBound(monthTo)
	req, reqArgs, haveReq, err := s.consoleRequired(ctx)
	if err != nil {
		return nil, err
	}
	complete := `CASE WHEN ` + consoleLive + ` THEN 1 ELSE 0 END`
	q := ""
	var args []any
	if haveReq {
		complete = `CASE WHEN ` + consoleLive + ` AND NOT ` + consoleIncomplete + ` THEN 1 ELSE 0 END`
		q = `WITH ` + req + ` `
		args = append(args, reqArgs...)
	}
	q += `SELECT v.place_code, count(*),
			sum(CASE WHEN v.review_state = 'submitted' THEN 1 ELSE 0 END), sum(CASE WHEN v.review_state = 'needs_rework' THEN 1 ELSE 0 END), sum(CASE WHEN v.review_state = 'approved' THEN 1 ELSE 0 END), sum(CASE WHEN v.review_state = 'rejected' THEN 1 ELSE 0 END),
			sum(CASE WHEN v.device_time >= ? AND v.device_time < ? THEN 1 ELSE 0 END),
			count(DISTINCT CASE WHEN v.device_time >= ? AND v.device_time < ? THEN v.household_id END),
			sum(CASE WHEN ` + consoleLive + ` THEN 1 ELSE 0 END),
			sum(` + complete + `)
		FROM visits v WHERE ` + vin + ` GROUP BY v.place_code`
	args = append(args, from, to, from, to)
	args = append(args, inArgs...)
	if err := scan(q, args, func(rows *Rows) error {
		var code string
		var p PlaceProgress
		if err := rows.Scan(&code, &p.Visits, &p.Submitted, &p.NeedsRework, &p.Approved, &p.Rejected,
			&p.VisitsThisMonth, &p.VisitedThisMonth, &p.EvidenceVisits, &p.EvidenceComplete); err != nil {
			return err
		}
		get(code).Add(&p)
		return nil
	}); err != nil {
		return nil, err
	}
	// Open conflicts.
	if err := scan(`SELECT place_code, count(*) FROM conflicts WHERE state = 'open' AND `+in+` GROUP BY place_code`, inArgs, func(rows *Rows) error {
		var code string
		var n int
		if err := rows.Scan(&code, &n); err != nil {
			return err
		}
		get(code).OpenConflicts += n
		return nil
	}); err != nil {
		return nil, err
	}
	// Open rework tasks.
	if err := scan(`SELECT place_code, count(*) FROM tasks WHERE state = 'open' AND kind = 'rework' AND `+in+` GROUP BY place_code`, inArgs, func(rows *Rows) error {
		var code string
		var n int
		if err := rows.Scan(&code, &n); err != nil {
			return err
		}
		get(code).OpenRework += n
		return nil
	}); err != nil {
		return nil, err
	}
	// Flagged visits.
	if err := scan(`SELECT v.place_code, count(*) FROM visits v WHERE `+vin+` AND v.review_state <> 'rejected'
			AND EXISTS (SELECT 1 FROM evidence_flags f WHERE f.visit_id = v.id) GROUP BY v.place_code`, inArgs, func(rows *Rows) error {
		var code string
		var n int
		if err := rows.Scan(&code, &n); err != nil {
			return err
		}
		get(code).Flagged += n
		return nil
	}); err != nil {
		return nil, err
	}
	// Roll up along paths.
	byCode := make(map[string]domain.Place, len(places))
	for _, p := range places {
		byCode[p.Code] = p
	}
	total := make(map[string]*PlaceProgress, len(places))
	for _, p := range places {
		total[p.Code] = &PlaceProgress{Place: p, Depth: strings.Count(strings.TrimPrefix(p.Path, rp.Path), "/")}
	}
	for code, st := range own {
		pl, ok := byCode[code]
		if !ok {
			continue
		}
		for _, anc := range pathCodes(strings.TrimPrefix(pl.Path, rp.Path)) {
			total[anc].Add(st)
		}
		total[rp.Code].Add(st)
	}
	// Cadres: field workers with an assigned place in each subtree.
	rows, err := s.readRows(ctx, `SELECT up.user_id, p.path FROM user_places up JOIN users u ON u.id = up.user_id JOIN places p ON p.code = up.place_code
		WHERE u.role = 'field_worker' AND u.disabled = 0 AND p.path >= ? AND p.path < ?`, rp.Path, pathEnd(rp.Path))
	if err != nil {
		return nil, fmt.Errorf("console progress: cadres: %w", err)
	}
	cadreAt := map[string]map[int64]bool{}
	for rows.Next() {
		var uid int64
		var path string
		if err := rows.Scan(&uid, &path); err != nil {
			rows.Close()
			return nil, err
		}
		codes := append(pathCodes(strings.TrimPrefix(path, rp.Path)), rp.Code)
		for _, c := range codes {
			if cadreAt[c] == nil {
				cadreAt[c] = map[int64]bool{}
			}
			cadreAt[c][uid] = true
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]PlaceProgress, 0, len(places))
	for _, p := range places {
		t := total[p.Code]
		t.Cadres = len(cadreAt[p.Code])
		t.Target = ConsoleTargetPerCadre * t.Cadres
		t.EvidenceGaps = t.EvidenceVisits - t.EvidenceComplete
		out = append(out, *t)
	}
	return out, nil
}

// pathCodes splits "a/b/c/" into [a b c].
func pathCodes(rel string) []string {
	rel = strings.Trim(rel, "/")
	if rel == "" {
		return nil
	}
	return strings.Split(rel, "/")
}

// CadreProgress is store.CadreProgress.
type CadreProgress = store.CadreProgress

// ConsoleCadres lists the field workers assigned inside root's subtree with
// the visits they made (device time) in [from, to).
func (s *Store) ConsoleCadres(ctx context.Context, root string, from, to time.Time) ([]CadreProgress, error) {
	rp, err := s.Place(ctx, root)
	if err != nil {
		return nil, err
	}
	rows, err := s.readRows(ctx, `SELECT u.id, u.username, u.display_name, group_concat(up.place_code, ','),
			(SELECT count(*) FROM visits v WHERE v.user_id = u.id AND v.device_time >= ? AND v.device_time < ?)
		FROM users u JOIN user_places up ON up.user_id = u.id JOIN places p ON p.code = up.place_code
		WHERE u.role = 'field_worker' AND u.disabled = 0 AND p.path >= ? AND p.path < ?
		GROUP BY u.id ORDER BY u.username`, consoleBound(from), consoleBound(to), rp.Path, pathEnd(rp.Path))
	if err != nil {
		return nil, fmt.Errorf("console cadres: %w", err)
	}
	defer rows.Close()
	out := []CadreProgress{}
	for rows.Next() {
		var c CadreProgress
		var codes string
		if err := rows.Scan(&c.UserID, &c.Username, &c.DisplayName, &codes, &c.Visits); err != nil {
			return nil, err
		}
		c.PlaceCodes = strings.Split(codes, ",")
		sort.Strings(c.PlaceCodes)
		c.Target = ConsoleTargetPerCadre
		out = append(out, c)
	}
	return out, rows.Err()
}

// DayCount is store.DayCount.
type DayCount = store.DayCount

// ConsoleVisitsPerDay counts the visits (device time) under root per local
// day in [from, to); offsetMinutes is the local zone's offset from UTC.
// Days without visits are included with 0.
func (s *Store) ConsoleVisitsPerDay(ctx context.Context, root string, from, to time.Time, offsetMinutes int) ([]DayCount, error) {
	rp, err := s.Place(ctx, root)
	if err != nil {
		return nil, err
	}
	sc := consoleScope{ranges: [][2]string{{rp.Path, pathEnd(rp.Path)}}}
	in, inArgs := sc.placeIn("place_code")
	mod := fmt.Sprintf("%+d minutes", offsetMinutes)
	args := append([]any{mod, consoleBound(from), consoleBound(to)}, inArgs...)
	rows, err := s.readRows(ctx, `SELECT date(device_time, ?) AS d, count(*) FROM visits
		WHERE device_time >= ? AND device_time < ? AND `+in+` GROUP BY d ORDER BY d`, args...)
	if err != nil {
		return nil, fmt.Errorf("console visits per day: %w", err)
	}
	defer rows.Close()
	got := map[string]int{}
	for rows.Next() {
		var d sql.NullString
		var n int
		if err := rows.Scan(&d, &n); err != nil {
			return nil, err
		}
		got[d.String] += n
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	zone := time.FixedZone("", offsetMinutes*60)
	var out []DayCount
	for d := from.In(zone); d.Before(to); d = d.AddDate(0, 0, 1) {
		day := d.Format("2006-01-02")
		out = append(out, DayCount{Day: day, Count: got[day]})
	}
	return out, nil
}

// Household statuses on the map, the most urgent first.
const (
	MapFlagged     = store.MapFlagged
	MapNeedsRework = store.MapNeedsRework
	MapVisited     = store.MapVisited
	MapNotVisited  = store.MapNotVisited
)

// MapHousehold is store.MapHousehold.
type MapHousehold = store.MapHousehold

// ConsoleHouseholds lists the households under root (not deleted) with
// their map status: visited means a visit (device time) since since (zero:
// ever); flagged and needs rework do not depend on the period. At most
// limit rows (default 20000), by place and id.
func (s *Store) ConsoleHouseholds(ctx context.Context, root string, since time.Time, limit int) ([]MapHousehold, error) {
	rp, err := s.Place(ctx, root)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 20000
	}
	sc := consoleScope{ranges: [][2]string{{rp.Path, pathEnd(rp.Path)}}}
	in, inArgs := sc.placeIn("place_code")
	vin, _ := sc.placeIn("v.place_code")
	hin, _ := sc.placeIn("h.place_code")
	var args []any
	args = append(args, consoleBound(since))
	args = append(args, inArgs...) // visits
	args = append(args, inArgs...) // flags
	args = append(args, inArgs...) // tasks
	args = append(args, inArgs...) // households
	rows, err := s.readRows(ctx, `SELECT h.id, h.place_code, COALESCE((h.fields ->> 'head_name'), ''), h.lon, h.lat,
			COALESCE(vs.n, 0), COALESCE(vs.last, ''), fl.household_id IS NOT NULL, tk.household_id IS NOT NULL
		FROM households h
		LEFT JOIN (SELECT v.household_id, count(*) AS n, max(v.device_time) AS last FROM visits v
			WHERE v.device_time >= ? AND v.review_state <> 'rejected' AND `+vin+` GROUP BY v.household_id) vs ON vs.household_id = h.id
		LEFT JOIN (SELECT DISTINCT v.household_id FROM visits v JOIN evidence_flags f ON f.visit_id = v.id
			WHERE v.review_state <> 'rejected' AND `+vin+`) fl ON fl.household_id = h.id
		LEFT JOIN (SELECT DISTINCT household_id FROM tasks WHERE state = 'open' AND kind = 'rework' AND `+in+`) tk ON tk.household_id = h.id
		WHERE h.deleted = 0 AND `+hin+`
		ORDER BY h.place_code, h.id LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("console households: %w", err)
	}
	defer rows.Close()
	out := []MapHousehold{}
	for rows.Next() {
		var h MapHousehold
		var lon, lat sql.NullFloat64
		var flagged, rework bool
		if err := rows.Scan(&h.ID, &h.PlaceCode, &h.HeadName, &lon, &lat, &h.Visits, &h.LastVisit, &flagged, &rework); err != nil {
			return nil, err
		}
		h.Lon, h.Lat, h.HasPoint = lon.Float64, lat.Float64, lon.Valid && lat.Valid
		switch {
		case flagged:
			h.Status = MapFlagged
		case rework:
			h.Status = MapNeedsRework
		case h.Visits > 0:
			h.Status = MapVisited
		default:
			h.Status = MapNotVisited
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// MapVisit is store.MapVisit.
type MapVisit = store.MapVisit

// ConsoleVisitPoints lists the newest visits with a point under root since
// since (device time), at most limit (default 5000).
func (s *Store) ConsoleVisitPoints(ctx context.Context, root string, since time.Time, limit int) ([]MapVisit, error) {
	rp, err := s.Place(ctx, root)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 5000
	}
	sc := consoleScope{ranges: [][2]string{{rp.Path, pathEnd(rp.Path)}}}
	vin, inArgs := sc.placeIn("v.place_code")
	args := append([]any{consoleBound(since)}, inArgs...)
	rows, err := s.readRows(ctx, `SELECT v.id, v.household_id, v.form_id, v.lon, v.lat, COALESCE(v.accuracy_m, 0), v.review_state, v.device_time
		FROM visits v WHERE v.lon IS NOT NULL AND v.lat IS NOT NULL AND v.device_time >= ? AND `+vin+`
		ORDER BY v.device_time DESC, v.id LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("console visit points: %w", err)
	}
	defer rows.Close()
	out := []MapVisit{}
	for rows.Next() {
		var v MapVisit
		var dt string
		if err := rows.Scan(&v.ID, &v.HouseholdID, &v.FormID, &v.Lon, &v.Lat, &v.AccuracyM, &v.State, &dt); err != nil {
			return nil, err
		}
		v.DeviceTime = domain.ParseTimestamp(dt)
		out = append(out, v)
	}
	return out, rows.Err()
}

// SlotGap is store.SlotGap.
type SlotGap = store.SlotGap

// VisitEvidenceGap is store.VisitEvidenceGap.
type VisitEvidenceGap = store.VisitEvidenceGap

// GapSummary is store.GapSummary.
type GapSummary = store.GapSummary

// EvidenceGapReport is store.EvidenceGapReport.
type EvidenceGapReport = store.EvidenceGapReport

// ConsoleEvidenceGaps reports the visits under root whose required
// evidence slots (form slots with a MinCount) hold fewer present blobs than
// required, and exactly what each lacks. Rejected visits and visits a
// later visit corrects are left out. Items is one page of the visits,
// newest first: at most limit (default 500) after skipping offset
// (negative: 0).
func (s *Store) ConsoleEvidenceGaps(ctx context.Context, root string, limit, offset int) (*EvidenceGapReport, error) {
	rp, err := s.Place(ctx, root)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 500
	}
	offset = max(offset, 0)
	rep := &EvidenceGapReport{ByPlace: map[string]int{}, BySlot: []GapSummary{}, Items: []VisitEvidenceGap{}}
	gaps, args, ok, err := s.gapsCTE(ctx, consoleScope{ranges: [][2]string{{rp.Path, pathEnd(rp.Path)}}})
	if err != nil || !ok {
		return rep, err
	}
	// Summaries, in one statement so that the gaps are worked out once.
	rows, err := s.readRows(ctx, gaps+`
		SELECT 'total', '', '', count(DISTINCT visit_id), count(DISTINCT household_id) FROM g
		UNION ALL SELECT 'place', place_code, '', count(DISTINCT visit_id), 0 FROM g GROUP BY place_code
		UNION ALL SELECT 'slot', form_id, slot, count(DISTINCT visit_id), count(DISTINCT household_id) FROM g GROUP BY form_id, slot`, args...)
	if err != nil {
		return nil, fmt.Errorf("console gaps: %w", err)
	}
	for rows.Next() {
		var kind, a, b string
		var n1, n2 int
		if err := rows.Scan(&kind, &a, &b, &n1, &n2); err != nil {
			rows.Close()
			return nil, err
		}
		switch kind {
		case "total":
			rep.Visits, rep.Households = n1, n2
		case "place":
			rep.ByPlace[a] = n1
		case "slot":
			rep.BySlot = append(rep.BySlot, GapSummary{FormID: a, Slot: b, Visits: n1, Households: n2})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	sort.Slice(rep.BySlot, func(i, j int) bool {
		if rep.BySlot[i].FormID != rep.BySlot[j].FormID {
			return rep.BySlot[i].FormID < rep.BySlot[j].FormID
		}
		return rep.BySlot[i].Slot < rep.BySlot[j].Slot
	})
	// Items: the newest visits with gaps, with every slot they lack.
	rows, err = s.readRows(ctx, gaps+`, top AS (SELECT DISTINCT visit_id, device_time FROM g ORDER BY device_time DESC, visit_id LIMIT ? OFFSET ?)
		SELECT g.visit_id, g.household_id, COALESCE((h.fields ->> 'head_name'), ''), g.place_code, p.name, g.form_id, g.form_version,
			COALESCE(u.username, ''), g.device_time, g.review_state, g.slot, g.min_count, g.referenced, g.present
		FROM g JOIN top ON top.visit_id = g.visit_id JOIN households h ON h.id = g.household_id JOIN places p ON p.code = g.place_code
		LEFT JOIN users u ON u.id = g.user_id
		ORDER BY g.device_time DESC, g.visit_id, g.slot`, append(args, limit, offset)...)
	if err != nil {
		return nil, fmt.Errorf("console gaps: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var it VisitEvidenceGap
		var dt string
		var sg SlotGap
		if err := rows.Scan(&it.VisitID, &it.HouseholdID, &it.HeadName, &it.PlaceCode, &it.PlaceName, &it.FormID, &it.FormVersion,
			&it.UserName, &dt, &it.State, &sg.Slot, &sg.MinCount, &sg.Referenced, &sg.Present); err != nil {
			return nil, err
		}
		if n := len(rep.Items); n > 0 && rep.Items[n-1].VisitID == it.VisitID {
			rep.Items[n-1].Missing = append(rep.Items[n-1].Missing, sg)
			continue
		}
		it.DeviceTime = domain.ParseTimestamp(dt)
		it.Missing = []SlotGap{sg}
		rep.Items = append(rep.Items, it)
	}
	rep.Truncated = rep.Visits > offset+len(rep.Items)
	return rep, rows.Err()
}

// gapsCTE returns "WITH req AS ..., g AS ..." and its arguments: g has a
// row per required slot that a live visit under sc (not rejected, not
// corrected) fills with fewer present blobs than the slot's MinCount,
// with columns visit_id, household_id, place_code, form_id, form_version,
// device_time, review_state, user_id, slot, min_count, referenced and
// present. Both gap reports (the console's page and the API's list) are
// read from it. ok is false when no form requires evidence.
func (s *Store) gapsCTE(ctx context.Context, sc consoleScope) (cte string, args []any, ok bool, err error) {
	req, reqArgs, ok, err := s.consoleRequired(ctx)
	if err != nil || !ok {
		return "", nil, false, err
	}
	vin, inArgs := sc.placeIn("v.place_code")
	cte = `WITH ` + req + `, g AS MATERIALIZED (SELECT * FROM (
		SELECT v.id AS visit_id, v.household_id, v.place_code, v.form_id, v.form_version, v.device_time, v.review_state, v.user_id,
			req.slot, req.min_count,
			(SELECT count(*) FROM visit_evidence ve WHERE ve.visit_id = v.id AND ve.slot = req.slot) AS referenced,
			(SELECT count(*) FROM visit_evidence ve JOIN blobs b ON b.sha256 = ve.sha256 AND ve.held = 1 WHERE ve.visit_id = v.id AND ve.slot = req.slot) AS present
		FROM visits v CROSS JOIN req -- visits outside: req is a handful of rows
		WHERE req.form_id = v.form_id AND req.form_version = v.form_version AND ` + vin + ` AND ` + consoleLive + `) AS gv WHERE present < min_count)`
	return cte, append(append([]any{}, reqArgs...), inArgs...), true, nil
}

// BlobMeta is store.BlobMeta.
type BlobMeta = store.BlobMeta

// ConsoleFlag is store.ConsoleFlag.
type ConsoleFlag = store.ConsoleFlag

// ConsoleHouseholdEvidence returns, for every visit of a household, the
// blobs its evidence names (present or not, with EXIF position) and its
// evidence flags.
func (s *Store) ConsoleHouseholdEvidence(ctx context.Context, householdID string) (map[string]BlobMeta, map[string][]ConsoleFlag, error) {
	blobs := map[string]BlobMeta{}
	rows, err := s.readRows(ctx, `SELECT DISTINCT ve.sha256, b.sha256 IS NOT NULL, COALESCE(b.media_type, ve.media_type), COALESCE(b.size, ve.size),
			COALESCE(b.exif_time, ''), b.exif_lon, b.exif_lat
		FROM visits v JOIN visit_evidence ve ON ve.visit_id = v.id LEFT JOIN blobs b ON b.sha256 = ve.sha256 AND ve.held = 1
		WHERE v.household_id = ?`, householdID)
	if err != nil {
		return nil, nil, fmt.Errorf("console household evidence: %w", err)
	}
	for rows.Next() {
		var m BlobMeta
		var lon, lat sql.NullFloat64
		if err := rows.Scan(&m.SHA256, &m.Present, &m.MediaType, &m.Size, &m.ExifTime, &lon, &lat); err != nil {
			rows.Close()
			return nil, nil, err
		}
		if lon.Valid && lat.Valid {
			m.ExifLon, m.ExifLat = &lon.Float64, &lat.Float64
		}
		blobs[m.SHA256] = m
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	flags := map[string][]ConsoleFlag{}
	rows, err = s.readRows(ctx, `SELECT f.visit_id, f.sha256, f.flag, f.detail FROM evidence_flags f JOIN visits v ON v.id = f.visit_id
		WHERE v.household_id = ? ORDER BY f.visit_id, f.sha256, f.flag`, householdID)
	if err != nil {
		return nil, nil, fmt.Errorf("console household flags: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var f ConsoleFlag
		if err := rows.Scan(&f.VisitID, &f.SHA256, &f.Flag, &f.Detail); err != nil {
			return nil, nil, err
		}
		flags[f.VisitID] = append(flags[f.VisitID], f)
	}
	return blobs, flags, rows.Err()
}

// ConsoleVisitFlags returns the evidence flag names of each of the given
// visits (one query).
func (s *Store) ConsoleVisitFlags(ctx context.Context, visitIDs []string) (map[string][]string, error) {
	out := map[string][]string{}
	if len(visitIDs) == 0 {
		return out, nil
	}
	rows, err := s.readRows(ctx, `SELECT visit_id, flag FROM evidence_flags WHERE visit_id IN (SELECT value FROM json_each(?))
		GROUP BY visit_id, flag ORDER BY visit_id, flag`, jsonList(visitIDs))
	if err != nil {
		return nil, fmt.Errorf("console visit flags: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, flag string
		if err := rows.Scan(&id, &flag); err != nil {
			return nil, err
		}
		out[id] = append(out[id], flag)
	}
	return out, rows.Err()
}

// ConsoleFlagNames lists the evidence flag names that occur.
func (s *Store) ConsoleFlagNames(ctx context.Context) ([]string, error) {
	rows, err := s.readRows(ctx, `SELECT DISTINCT flag FROM evidence_flags ORDER BY flag`)
	if err != nil {
		return nil, fmt.Errorf("console flag names: %w", err)
	}
	out, err := scanStrings(rows)
	if err != nil {
		return nil, fmt.Errorf("console flag names: %w", err)
	}
	return out, nil
}

// ExportFilter is store.ExportFilter.
type ExportFilter = store.ExportFilter

func (s *Store) exportWhere(ctx context.Context, f ExportFilter, visits bool) (string, []any, error) {
	sc, err := s.consoleScopeOf(ctx, f.Roots)
	if err != nil {
		return "", nil, err
	}
	if !visits {
		cond, args := sc.placeIn("h.place_code")
		return "h.deleted = 0 AND " + cond, args, nil
	}
	cond, args := sc.placeIn("v.place_code")
	if f.FormID != "" {
		cond += " AND v.form_id = ?"
		args = append(args, f.FormID)
	}
	if f.State != "" {
		cond += " AND v.review_state = ?"
		args = append(args, f.State)
	}
	if !f.From.IsZero() {
		cond += " AND v.server_time >= ?"
		args = append(args, consoleBound(f.From))
	}
	if !f.To.IsZero() {
		cond += " AND v.server_time < ?"
		args = append(args, consoleBound(f.To))
	}
	return cond, args, nil
}

// ExportVisit is store.ExportVisit.
type ExportVisit = store.ExportVisit

// CountExport counts the rows an export would hold (for progress bars).
func (s *Store) CountExport(ctx context.Context, what string, f ExportFilter) (int, error) {
	visits := what == "visits"
	cond, args, err := s.exportWhere(ctx, f, visits)
	if err != nil {
		return 0, err
	}
	q := `SELECT count(*) FROM households h WHERE ` + cond
	if visits {
		q = `SELECT count(*) FROM visits v WHERE ` + cond
	}
	var n int
	if err := s.readRow(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count export: %w", err)
	}
	return n, nil
}

// ExportVisits streams the visits f selects to fn, ordered by form, form
// version, server time and id, one row at a time (nothing is collected in
// memory). fn must not keep the row: it is reused.
func (s *Store) ExportVisits(ctx context.Context, f ExportFilter, fn func(*ExportVisit) error) error {
	cond, args, err := s.exportWhere(ctx, f, true)
	if err != nil {
		return err
	}
	// The rows stream to a client for as long as it reads: the exports'
	// share of the read pool (see readGate).
	rows, err := s.readRows(bulk(ctx), `SELECT v.id, v.household_id, COALESCE((h.fields ->> 'head_name'), ''), v.place_code, p.name,
			v.form_id, v.form_version, v.answers, v.lon, v.lat, COALESCE(v.accuracy_m, 0), v.device_time, v.server_time,
			v.review_state, v.review_step, COALESCE(u.username, ''), COALESCE(v.device_id, ''), COALESCE(v.corrects_visit_id, ''),
			(SELECT count(*) FROM visit_evidence ve WHERE ve.visit_id = v.id),
			(SELECT count(*) FROM visit_evidence ve JOIN blobs b ON b.sha256 = ve.sha256 AND ve.held = 1 WHERE ve.visit_id = v.id),
			COALESCE((SELECT group_concat(flag, ',') FROM (SELECT DISTINCT flag FROM evidence_flags ef WHERE ef.visit_id = v.id ORDER BY flag) AS f), ''),
			COALESCE(v.gps_reason, '')
		FROM visits v JOIN households h ON h.id = v.household_id JOIN places p ON p.code = v.place_code LEFT JOIN users u ON u.id = v.user_id
		WHERE `+cond+` ORDER BY v.form_id, v.form_version, v.server_time, v.id`, args...)
	if err != nil {
		return fmt.Errorf("export visits: %w", err)
	}
	defer rows.Close()
	var v ExportVisit
	var answers []byte
	for rows.Next() {
		var lon, lat sql.NullFloat64
		var dt, st, flags string
		if err := rows.Scan(&v.ID, &v.HouseholdID, &v.HeadName, &v.PlaceCode, &v.PlaceName, &v.FormID, &v.FormVersion, &answers,
			&lon, &lat, &v.AccuracyM, &dt, &st, &v.State, &v.ReviewStep, &v.UserName, &v.DeviceID, &v.CorrectsVisitID,
			&v.Evidence, &v.EvidencePresent, &flags, &v.GPSReason); err != nil {
			return fmt.Errorf("export visits: %w", err)
		}
		v.Answers = answers
		v.HasPoint, v.Lon, v.Lat = lon.Valid && lat.Valid, lon.Float64, lat.Float64
		v.DeviceTime, v.ServerTime = domain.ParseTimestamp(dt), domain.ParseTimestamp(st)
		v.Flags = v.Flags[:0]
		if flags != "" {
			v.Flags = append(v.Flags, strings.Split(flags, ",")...)
		}
		if err := fn(&v); err != nil {
			return err
		}
	}
	return rows.Err()
}

// ExportHousehold is store.ExportHousehold.
type ExportHousehold = store.ExportHousehold

// ExportHouseholds streams the households under f.Roots (not deleted) to
// fn, by place path and id. fn must not keep the row: it is reused.
func (s *Store) ExportHouseholds(ctx context.Context, f ExportFilter, fn func(*ExportHousehold) error) error {
	cond, args, err := s.exportWhere(ctx, f, false)
	if err != nil {
		return err
	}
	rows, err := s.readRows(bulk(ctx), `SELECT h.id, h.place_code, p.name, h.fields, h.lon, h.lat, h.version, h.updated_at,
			(SELECT count(*) FROM visits v WHERE v.household_id = h.id),
			COALESCE((SELECT max(server_time) FROM visits v WHERE v.household_id = h.id), '')
		FROM households h JOIN places p ON p.code = h.place_code
		WHERE `+cond+` ORDER BY p.path, h.id`, args...)
	if err != nil {
		return fmt.Errorf("export households: %w", err)
	}
	defer rows.Close()
	var h ExportHousehold
	var fields []byte
	for rows.Next() {
		var lon, lat sql.NullFloat64
		var upd, last string
		if err := rows.Scan(&h.ID, &h.PlaceCode, &h.PlaceName, &fields, &lon, &lat, &h.Version, &upd, &h.Visits, &last); err != nil {
			return fmt.Errorf("export households: %w", err)
		}
		h.Fields = nil
		if err := json.Unmarshal(fields, &h.Fields); err != nil {
			return fmt.Errorf("export households: household %s: %w", h.ID, err)
		}
		h.HasPoint, h.Lon, h.Lat = lon.Valid && lat.Valid, lon.Float64, lat.Float64
		h.UpdatedAt = domain.ParseTimestamp(upd)
		h.LastVisit = time.Time{}
		if last != "" {
			h.LastVisit = domain.ParseTimestamp(last)
		}
		if err := fn(&h); err != nil {
			return err
		}
	}
	return rows.Err()
}

// ConsoleExportForms lists the form versions (id, version) the visits f
// selects use, so an export can lay out one sheet per form.
func (s *Store) ConsoleExportForms(ctx context.Context, f ExportFilter) ([]syncproto.FormDef, error) {
	cond, args, err := s.exportWhere(ctx, f, true)
	if err != nil {
		return nil, err
	}
	rows, err := s.readRows(ctx, `SELECT DISTINCT v.form_id, v.form_version FROM visits v WHERE `+cond+` ORDER BY v.form_id, v.form_version`, args...)
	if err != nil {
		return nil, fmt.Errorf("export forms: %w", err)
	}
	type key struct {
		id string
		v  int
	}
	var keys []key
	for rows.Next() {
		var k key
		if err := rows.Scan(&k.id, &k.v); err != nil {
			rows.Close()
			return nil, err
		}
		keys = append(keys, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]syncproto.FormDef, 0, len(keys))
	for _, k := range keys {
		def, err := s.form(ctx, k.id, k.v)
		if err != nil {
			return nil, err
		}
		out = append(out, *def)
	}
	return out, nil
}
