package mobileclient

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"fieldsync/syncproto"
)

// enqueue gives m the next sequence number and a new HLC and appends it to
// the outbox, inside tx (the same transaction as the local effect).
func (c *Client) enqueue(ctx context.Context, tx *sql.Tx, m *syncproto.Mutation, entityID, householdID string) error {
	seq, err := nextSeq(ctx, tx)
	if err != nil {
		return err
	}
	m.Seq = seq
	m.HLC = c.clock.Tick()
	if err := saveHLC(ctx, tx, m.HLC); err != nil {
		return err
	}
	body, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("outbox: encode: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO outbox(seq, kind, entity_id, household_id, body, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		seq, string(m.Kind), entityID, householdID, string(body), ts(c.now())); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	return nil
}

// nextSeq hands out the next sequence number: one more than any number
// ever handed out (kept in device_meta, and never below what the outbox and
// results hold), so a number is never reused, even after the outbox emptied.
func nextSeq(ctx context.Context, tx *sql.Tx) (int64, error) {
	var last int64
	err := tx.QueryRowContext(ctx, `SELECT max(
			COALESCE((SELECT CAST(value AS INTEGER) FROM device_meta WHERE key = 'last_seq'), 0),
			COALESCE((SELECT max(seq) FROM outbox), 0),
			COALESCE((SELECT max(seq) FROM results), 0))`).Scan(&last)
	if err != nil {
		return 0, fmt.Errorf("outbox: next seq: %w", err)
	}
	next := last + 1
	if err := setMeta(ctx, tx, metaLastSeq, fmt.Sprint(next)); err != nil {
		return 0, err
	}
	return next, nil
}

// localHousehold is the view row of one household.
type localHousehold struct {
	place   string
	deleted bool
	hasBase bool
	version int64
}

func loadLocal(ctx context.Context, q querier, id string) (localHousehold, bool, error) {
	var h localHousehold
	err := q.QueryRowContext(ctx, `SELECT place_code, deleted, has_base, base_version FROM households WHERE id = ?`, id).
		Scan(&h.place, &h.deleted, &h.hasBase, &h.version)
	if errors.Is(err, sql.ErrNoRows) {
		return h, false, nil
	}
	if err != nil {
		return h, false, fmt.Errorf("household %s: %w", id, err)
	}
	return h, true, nil
}

// visibleHousehold returns the household if the local view shows it.
func visibleHousehold(ctx context.Context, q querier, id string) (localHousehold, error) {
	h, found, err := loadLocal(ctx, q, id)
	if err != nil {
		return h, err
	}
	if !found || h.deleted {
		return h, fmt.Errorf("household %s: %w", id, ErrNotFound)
	}
	return h, nil
}

func placeKnown(ctx context.Context, q querier, code string) error {
	var n int
	if err := q.QueryRowContext(ctx, `SELECT count(*) FROM places WHERE code = ?`, code).Scan(&n); err != nil {
		return fmt.Errorf("place %s: %w", code, err)
	}
	if n == 0 {
		return fmt.Errorf("place %s: %w", code, ErrNotFound)
	}
	return nil
}

func checkMutation(m *syncproto.Mutation) error {
	if perr := m.Check(); perr != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, perr)
	}
	return nil
}

// GPSWarning is what RecordVisit returns (wrapping ErrWeakGPS), before
// writing anything, for a visit that has no GPS point or one less accurate
// than its form allows. The server accepts such a visit but flags it for
// review, so the worker should wait for a better fix or say why she
// cannot: record it again with AcceptNoGPS(reason).
type GPSWarning struct {
	NoFix     bool    // no point at all
	AccuracyM float64 // the point's accuracy (when NoFix is false)
	LimitM    float64 // the form's max_accuracy_m (0: not known on the device)
}

func (w *GPSWarning) Error() string {
	if w.NoFix {
		return "visit has no GPS point; record it with a reason (AcceptNoGPS) or wait for a fix"
	}
	return fmt.Sprintf("visit GPS accuracy %.0f m is worse than the form's limit of %.0f m; record it with a reason (AcceptNoGPS) or wait for a better fix", w.AccuracyM, w.LimitM)
}

// Unwrap makes errors.Is(err, ErrWeakGPS) hold.
func (w *GPSWarning) Unwrap() error { return ErrWeakGPS }

// VisitOption changes how RecordVisit records a visit.
type VisitOption func(*visitOptions)

type visitOptions struct {
	acceptWeakGPS bool
	reason        string
}

// AcceptNoGPS acknowledges a GPSWarning: the visit is recorded without a
// GPS fix within the form's limit, carrying reason (trimmed; it may be
// empty, at most syncproto.MaxGPSReasonRunes code points) as its
// gps_reason, which supervisors see with the review flag.
func AcceptNoGPS(reason string) VisitOption {
	return func(o *visitOptions) { o.acceptWeakGPS, o.reason = true, strings.TrimSpace(reason) }
}

// gpsWarning tells whether v's position calls for a warning under form
// (nil: not on the device; then only a missing point does).
func gpsWarning(v *syncproto.Visit, form *syncproto.FormDef) *GPSWarning {
	if v.Point == nil {
		w := &GPSWarning{NoFix: true}
		if form != nil {
			w.LimitM = form.MaxAccuracyM
		}
		return w
	}
	if form != nil && form.MaxAccuracyM > 0 && v.AccuracyM > form.MaxAccuracyM {
		return &GPSWarning{AccuracyM: v.AccuracyM, LimitM: form.MaxAccuracyM}
	}
	return nil
}

// RecordVisit queues a visit. An empty ID gets a new one and a zero
// DeviceTime the device's current time. When the form (FormID, FormVersion;
// version 0 means the newest version on the device) is in the local copy,
// the answers and evidence slots are checked against it, and an invalid
// visit is refused with an error wrapping ErrInvalid (and
// syncproto.ValidationErrors) without queuing anything. The household must
// be in the local view. Evidence references made by PrepareEvidence are
// queued for upload in the same transaction. It returns the visit id.
//
// A visit without a GPS point, or with an accuracy worse than its form's
// max_accuracy_m, is refused with a *GPSWarning (ErrWeakGPS) unless it is
// acknowledged: opts hold AcceptNoGPS, whose reason the visit then
// carries, or v already states a GPSReason.
func (c *Client) RecordVisit(v syncproto.Visit, opts ...VisitOption) (string, error) {
	ctx := context.Background()
	var o visitOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.reason != "" {
		v.GPSReason = o.reason
	}
	now := c.now()
	if v.ID == "" {
		v.ID = syncproto.NewID(now)
	}
	if v.DeviceTime.IsZero() {
		v.DeviceTime = now.Truncate(time.Millisecond)
	}
	v.DeviceTime = v.DeviceTime.UTC()
	// The position to 7 decimals (about 1 cm) and its accuracy to 1 cm: a
	// phone's reading carries digits no GPS measures, and each would cost
	// bytes in every push.
	if v.Point != nil {
		v.Point = &syncproto.Point{Lon: roundTo(v.Point.Lon, 1e7), Lat: roundTo(v.Point.Lat, 1e7)}
	}
	v.AccuracyM = roundTo(v.AccuracyM, 100)
	// Server-set fields never travel in a push.
	v.PlaceCode, v.DeviceID, v.UserName, v.ReviewState = "", "", "", ""
	v.ServerTime = time.Time{}
	v.Answers = maps.Clone(v.Answers)
	if v.Answers == nil {
		v.Answers = map[string]json.RawMessage{}
	}
	err := c.withTx(ctx, func(tx *sql.Tx) error {
		h, err := visibleHousehold(ctx, tx, v.HouseholdID)
		if err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM visits WHERE id = ?`, v.ID).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("visit %s already exists: %w", v.ID, ErrInvalid)
		}
		if v.FormVersion == 0 {
			err := tx.QueryRowContext(ctx, `SELECT COALESCE(max(version), 0) FROM forms WHERE id = ?`, v.FormID).Scan(&v.FormVersion)
			if err != nil {
				return err
			}
			if v.FormVersion == 0 {
				return fmt.Errorf("form %q is not on the device; give its version: %w", v.FormID, ErrInvalid)
			}
		}
		form, err := loadForm(ctx, tx, v.FormID, v.FormVersion)
		switch {
		case errors.Is(err, ErrNotFound):
			// Unknown here: the server decides.
			form = nil
		case err != nil:
			return err
		default:
			if err := form.ValidateAnswers(v.Answers); err != nil {
				return fmt.Errorf("visit: %w: %w", ErrInvalid, err)
			}
			for _, e := range v.Evidence {
				if err := checkSlot(form, e); err != nil {
					return fmt.Errorf("visit: %w", err)
				}
			}
		}
		m := syncproto.Mutation{Seq: 1, Kind: syncproto.KindVisitCreate, Visit: &v}
		if err := checkMutation(&m); err != nil {
			return err
		}
		if w := gpsWarning(&v, form); w != nil && !o.acceptWeakGPS && v.GPSReason == "" {
			return w
		}
		if err := c.enqueue(ctx, tx, &m, v.ID, v.HouseholdID); err != nil {
			return err
		}
		for _, e := range v.Evidence {
			if err := c.queueUpload(ctx, tx, e); err != nil {
				return err
			}
		}
		local := v
		local.PlaceCode = h.place
		body, _ := json.Marshal(local)
		_, err = tx.ExecContext(ctx, `INSERT INTO visits(id, household_id, place_code, device_time, body, review_state, local_only)
			VALUES (?, ?, ?, ?, ?, '', 1)`, v.ID, v.HouseholdID, h.place, ts(v.DeviceTime), string(body))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("record visit: %w", err)
	}
	return v.ID, nil
}

// roundTo rounds x to the nearest multiple of 1/scale (NaN and infinities
// stay as they are).
func roundTo(x, scale float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return x
	}
	return math.Round(x*scale) / scale
}

func checkFields(fields map[string]json.RawMessage) error {
	if perr := syncproto.CheckHouseholdFields(fields); perr != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, perr)
	}
	return nil
}

// CreateHousehold queues a new household in a place of the local copy and
// returns its id. Null fields are dropped.
func (c *Client) CreateHousehold(placeCode string, fields map[string]json.RawMessage) (string, error) {
	ctx := context.Background()
	fields = maps.Clone(fields)
	if fields == nil {
		fields = map[string]json.RawMessage{}
	}
	for k, v := range fields {
		if syncproto.IsNull(v) {
			delete(fields, k)
		}
	}
	if err := checkFields(fields); err != nil {
		return "", fmt.Errorf("create household: %w", err)
	}
	id := syncproto.NewID(c.now())
	err := c.withTx(ctx, func(tx *sql.Tx) error {
		if err := placeKnown(ctx, tx, placeCode); err != nil {
			return err
		}
		m := syncproto.Mutation{Seq: 1, Kind: syncproto.KindHouseholdCreate,
			Household: &syncproto.Household{ID: id, PlaceCode: placeCode, Fields: fields}}
		if err := checkMutation(&m); err != nil {
			return err
		}
		if err := c.enqueue(ctx, tx, &m, id, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO households(id, place_code, local_only) VALUES (?, ?, 1)`, id, placeCode); err != nil {
			return err
		}
		return recompute(ctx, tx, id)
	})
	if err != nil {
		return "", fmt.Errorf("create household: %w", err)
	}
	return id, nil
}

// UpdateHousehold queues a change of some fields (a null value removes a
// field or member) and applies it to the local view at once. The mutation
// names the household version the device last saw from the server.
func (c *Client) UpdateHousehold(id string, fields map[string]json.RawMessage) error {
	ctx := context.Background()
	fields = maps.Clone(fields)
	if len(fields) == 0 {
		return fmt.Errorf("update household: no fields: %w", ErrInvalid)
	}
	if err := checkFields(fields); err != nil {
		return fmt.Errorf("update household: %w", err)
	}
	err := c.withTx(ctx, func(tx *sql.Tx) error {
		h, err := visibleHousehold(ctx, tx, id)
		if err != nil {
			return err
		}
		m := syncproto.Mutation{Seq: 1, Kind: syncproto.KindHouseholdUpdate,
			HouseholdUpdate: &syncproto.HouseholdUpdate{HouseholdID: id, BaseVersion: h.version, Fields: fields}}
		return c.queueHouseholdChange(ctx, tx, id, &m)
	})
	if err != nil {
		return fmt.Errorf("update household: %w", err)
	}
	return nil
}

// MoveHousehold queues a move of the household to another place of the
// local copy. Moving to the place it is in does nothing.
func (c *Client) MoveHousehold(id, placeCode string) error {
	ctx := context.Background()
	err := c.withTx(ctx, func(tx *sql.Tx) error {
		h, err := visibleHousehold(ctx, tx, id)
		if err != nil {
			return err
		}
		if h.place == placeCode {
			return nil
		}
		if err := placeKnown(ctx, tx, placeCode); err != nil {
			return err
		}
		m := syncproto.Mutation{Seq: 1, Kind: syncproto.KindHouseholdMove,
			HouseholdMove: &syncproto.HouseholdMove{HouseholdID: id, BaseVersion: h.version, PlaceCode: placeCode}}
		return c.queueHouseholdChange(ctx, tx, id, &m)
	})
	if err != nil {
		return fmt.Errorf("move household: %w", err)
	}
	return nil
}

// DeleteHousehold queues the deletion of a household; the local view hides
// it at once.
func (c *Client) DeleteHousehold(id string) error {
	ctx := context.Background()
	err := c.withTx(ctx, func(tx *sql.Tx) error {
		h, err := visibleHousehold(ctx, tx, id)
		if err != nil {
			return err
		}
		m := syncproto.Mutation{Seq: 1, Kind: syncproto.KindHouseholdDelete,
			HouseholdDelete: &syncproto.HouseholdDelete{HouseholdID: id, BaseVersion: h.version}}
		return c.queueHouseholdChange(ctx, tx, id, &m)
	})
	if err != nil {
		return fmt.Errorf("delete household: %w", err)
	}
	return nil
}

// queueHouseholdChange checks a household mutation, queues it and
// recomputes the household's local view, inside the caller's transaction.
func (c *Client) queueHouseholdChange(ctx context.Context, tx *sql.Tx, id string, m *syncproto.Mutation) error {
	if err := checkMutation(m); err != nil {
		return err
	}
	if err := c.enqueue(ctx, tx, m, id, id); err != nil {
		return err
	}
	return recompute(ctx, tx, id)
}

// recomputeMany does what recompute does for every household in ids, with
// a shortcut for the common case (a pull of households the device has not
// changed): one query finds the households that have unpushed household
// mutations or applied-but-not-yet-pulled changes (results.overlay); only
// those go through recompute. For the rest the view is the server's copy
// as it stands, set by one UPDATE (has_base = 1) and one DELETE
// (has_base = 0: nothing left to show) for all of them at once.
//
// The shortcut copies base_fields verbatim where recompute re-encodes it.
// That is the same text: base_fields is only ever written as json.Marshal
// of a map[string]json.RawMessage (sorted keys, compact values), which a
// decode and re-encode reproduces byte for byte.
func recomputeMany(ctx context.Context, tx *sql.Tx, ids map[string]bool) error {
	switch len(ids) {
	case 0:
		return nil
	case 1:
		for id := range ids {
			return recompute(ctx, tx, id)
		}
	}
	rows, err := tx.QueryContext(ctx, `SELECT household_id FROM outbox WHERE kind LIKE 'household.%'
		UNION SELECT household_id FROM results WHERE overlay = 1`)
	if err != nil {
		return fmt.Errorf("recompute: pending: %w", err)
	}
	pending := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("recompute: pending: %w", err)
		}
		pending[id] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("recompute: pending: %w", err)
	}
	plain := make([]string, 0, len(ids))
	for id := range ids {
		// An id that is not valid UTF-8 (or holds a NUL) might not survive
		// the JSON list unchanged.
		if pending[id] || !utf8.ValidString(id) || strings.IndexByte(id, 0) >= 0 {
			if err := recompute(ctx, tx, id); err != nil {
				return err
			}
			continue
		}
		plain = append(plain, id)
	}
	if len(plain) == 0 {
		return nil
	}
	list, err := json.Marshal(plain)
	if err != nil {
		return fmt.Errorf("recompute: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE households SET place_code = base_place, fields = base_fields, deleted = 0, local_only = 0
		WHERE has_base = 1 AND id IN (SELECT value FROM json_each(?))`, string(list)); err != nil {
		return fmt.Errorf("recompute: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM households WHERE has_base = 0 AND id IN (SELECT value FROM json_each(?))`, string(list)); err != nil {
		return fmt.Errorf("recompute: %w", err)
	}
	return nil
}

// recompute rebuilds the local view of one household: the server's copy
// (base), then the applied changes not yet pulled back (results.overlay),
// then the unpushed outbox mutations, in sequence order. A household with
// neither a base nor a pending creation disappears from the view.
func recompute(ctx context.Context, tx *sql.Tx, id string) error {
	var (
		hasBase   bool
		basePlace string
		baseJSON  string
	)
	err := tx.QueryRowContext(ctx, `SELECT has_base, base_place, base_fields FROM households WHERE id = ?`, id).
		Scan(&hasBase, &basePlace, &baseJSON)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("recompute %s: %w", id, err)
	}
	exists, place, deleted, localOnly := hasBase, basePlace, false, false
	fields := map[string]json.RawMessage{}
	if hasBase {
		if err := json.Unmarshal([]byte(baseJSON), &fields); err != nil {
			return fmt.Errorf("recompute %s: base fields: %w", id, err)
		}
		if fields == nil {
			fields = map[string]json.RawMessage{}
		}
	}
	apply := func(body string, pending bool) error {
		var m syncproto.Mutation
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			return fmt.Errorf("recompute %s: mutation: %w", id, err)
		}
		switch {
		case m.Kind == syncproto.KindHouseholdCreate && m.Household != nil:
			if !exists {
				exists, place = true, m.Household.PlaceCode
				localOnly = pending
				for k, v := range m.Household.Fields {
					if !syncproto.IsNull(v) {
						fields[k] = v
					}
				}
			}
		case m.Kind == syncproto.KindHouseholdUpdate && m.HouseholdUpdate != nil:
			for k, v := range m.HouseholdUpdate.Fields {
				if syncproto.IsNull(v) {
					delete(fields, k)
				} else {
					fields[k] = v
				}
			}
		case m.Kind == syncproto.KindHouseholdMove && m.HouseholdMove != nil:
			place = m.HouseholdMove.PlaceCode
		case m.Kind == syncproto.KindHouseholdDelete:
			deleted = true
		}
		return nil
	}
	for _, src := range []struct {
		q       string
		pending bool
	}{
		{`SELECT body FROM results WHERE household_id = ? AND overlay = 1 ORDER BY seq`, false},
		{`SELECT body FROM outbox WHERE household_id = ? AND kind LIKE 'household.%' ORDER BY seq`, true},
	} {
		rows, err := tx.QueryContext(ctx, src.q, id)
		if err != nil {
			return fmt.Errorf("recompute %s: %w", id, err)
		}
		var bodies []string
		for rows.Next() {
			var b string
			if err := rows.Scan(&b); err != nil {
				rows.Close()
				return err
			}
			bodies = append(bodies, b)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, b := range bodies {
			if err := apply(b, src.pending); err != nil {
				return err
			}
		}
	}
	if !exists {
		_, err := tx.ExecContext(ctx, `DELETE FROM households WHERE id = ?`, id)
		return err
	}
	fb, err := json.Marshal(fields)
	if err != nil {
		return fmt.Errorf("recompute %s: %w", id, err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO households(id, place_code, fields, deleted, local_only) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT(id) DO UPDATE SET place_code = excluded.place_code, fields = excluded.fields,
			deleted = excluded.deleted, local_only = excluded.local_only`,
		id, place, string(fb), deleted, localOnly && !hasBase)
	if err != nil {
		return fmt.Errorf("recompute %s: %w", id, err)
	}
	return nil
}
