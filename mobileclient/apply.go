package mobileclient

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"fieldsync/syncproto"
)

// errBadOp marks a pulled op the device cannot apply (a put without its
// payload, say); the whole page is refused and its cursor not saved.
var errBadOp = fmt.Errorf("%w: malformed op", ErrServer)

// applier applies pulled ops inside one transaction. Households whose base
// changed are recomputed once, at the end.
type applier struct {
	ctx     context.Context
	tx      *sql.Tx
	rep     *SyncReport
	touched map[string]bool
	// stmts holds the statements prepared in tx, by query: a page repeats
	// the same few statements hundreds of times, and parsing them each
	// time cost more than running them. The transaction closes them.
	stmts map[string]*sql.Stmt
	// households holds household puts not yet written: they go in by
	// multi-row upserts of up to householdBatch rows, written before any
	// other op so that ops still take effect in page order.
	households []baseRow
	// overlays says whether results held overlaid rows when the page
	// began (nil: not asked yet). Applying a page only clears them, so
	// when there were none there is nothing to clear per household.
	overlays *bool
}

// baseRow is the server's copy of a household, as stored.
type baseRow struct {
	id, place string
	version   int64
	fields    string
}

// householdBatch is how many households one upsert writes (5 parameters
// each, far below SQLite's limit of 32766).
const householdBatch = 200

func newApplier(ctx context.Context, tx *sql.Tx, rep *SyncReport) *applier {
	return &applier{ctx: ctx, tx: tx, rep: rep, touched: map[string]bool{}, stmts: map[string]*sql.Stmt{}}
}

func (a *applier) exec(q string, args ...any) error {
	st := a.stmts[q]
	if st == nil {
		var err error
		if st, err = a.tx.PrepareContext(a.ctx, q); err != nil {
			return err
		}
		a.stmts[q] = st
	}
	if _, err := st.ExecContext(a.ctx, args...); err != nil {
		return err
	}
	return nil
}

// apply applies one op. Unknown op kinds and entity types are ignored
// (a newer server may send more than this device understands).
func (a *applier) apply(op *syncproto.Op) error {
	if op.Op == syncproto.OpPut && op.Type == syncproto.EntityHousehold {
		if op.Household == nil {
			return errBadOp
		}
		return a.putHousehold(op)
	}
	if err := a.flush(); err != nil {
		return err
	}
	switch op.Op {
	case syncproto.OpPut:
		return a.put(op)
	case syncproto.OpDelete:
		return a.del(op)
	case syncproto.OpScopeEnter:
		// The places' entities follow as puts.
		a.rep.ScopeEntered++
		return nil
	case syncproto.OpScopeLeave:
		if op.Place == "" {
			return fmt.Errorf("scope_leave without place: %w", errBadOp)
		}
		a.rep.ScopeLeft++
		return a.leave(op.Place)
	case syncproto.OpReset:
		a.rep.Resets++
		return a.reset()
	}
	return nil
}

func jsonText(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

// entityTable is the device's copy of one kind of pulled entity: a table
// keyed by key, whose other columns cols a put replaces. Its upsert text
// is built once from these constant names.
type entityTable struct {
	name      string
	key, cols []string
	upsert    string
}

func newEntityTable(name string, key []string, cols ...string) *entityTable {
	all := append(append([]string{}, key...), cols...)
	set := make([]string, len(cols))
	for i, c := range cols {
		set[i] = c + " = excluded." + c
	}
	return &entityTable{name: name, key: key, cols: cols,
		upsert: "INSERT INTO " + name + "(" + strings.Join(all, ", ") + ") VALUES (" +
			strings.TrimSuffix(strings.Repeat("?, ", len(all)), ", ") + ") ON CONFLICT(" +
			strings.Join(key, ", ") + ") DO UPDATE SET " + strings.Join(set, ", ")}
}

// The plain entity tables (households keep a base and an overlay: see
// putHousehold). local_only = 0: the server's copy replaces a visit
// recorded here.
var (
	placesTable    = newEntityTable("places", []string{"code"}, "name", "level", "parent_code", "boundary")
	formsTable     = newEntityTable("forms", []string{"id", "version"}, "definition")
	visitsTable    = newEntityTable("visits", []string{"id"}, "household_id", "place_code", "device_time", "body", "review_state", "local_only")
	conflictsTable = newEntityTable("conflicts", []string{"id"}, "household_id", "place_code", "state", "body")
	tasksTable     = newEntityTable("tasks", []string{"id"}, "household_id", "visit_id", "place_code", "state", "body")
)

// upsert writes one row of t: the key's values, then cols' in order.
func (a *applier) upsert(t *entityTable, args ...any) error {
	if len(args) != len(t.key)+len(t.cols) {
		return fmt.Errorf("%s: %d values for %d columns", t.name, len(args), len(t.key)+len(t.cols))
	}
	return a.exec(t.upsert, args...)
}

// entityID is an op's entity id: the entity's own, else the op's; ""
// means the op is malformed.
func entityID(own *string, op *syncproto.Op) string {
	if *own == "" {
		*own = op.ID
	}
	return *own
}

func (a *applier) put(op *syncproto.Op) error {
	switch op.Type {
	case syncproto.EntityPlace:
		p := op.PlaceData
		if p == nil || p.Code == "" {
			return errBadOp
		}
		return a.upsert(placesTable, p.Code, p.Name, p.Level, p.ParentCode, string(p.Boundary))
	case syncproto.EntityForm:
		f := op.Form
		if f == nil || f.ID == "" {
			return errBadOp
		}
		def, err := jsonText(f)
		if err != nil {
			return err
		}
		return a.upsert(formsTable, f.ID, f.Version, def)
	case syncproto.EntityHousehold:
		if op.Household == nil {
			return errBadOp
		}
		return a.putHousehold(op)
	case syncproto.EntityVisit:
		v := op.Visit
		if v == nil || entityID(&v.ID, op) == "" {
			return errBadOp
		}
		if v.PlaceCode == "" {
			v.PlaceCode = op.Place
		}
		body, err := jsonText(v)
		if err != nil {
			return err
		}
		return a.upsert(visitsTable, v.ID, v.HouseholdID, v.PlaceCode, ts(v.DeviceTime), body, v.ReviewState, 0)
	case syncproto.EntityConflict:
		cf := op.Conflict
		if cf == nil || entityID(&cf.ID, op) == "" {
			return errBadOp
		}
		body, err := jsonText(cf)
		if err != nil {
			return err
		}
		return a.upsert(conflictsTable, cf.ID, cf.HouseholdID, op.Place, cf.State, body)
	case syncproto.EntityTask:
		t := op.Task
		if t == nil || entityID(&t.ID, op) == "" {
			return errBadOp
		}
		body, err := jsonText(t)
		if err != nil {
			return err
		}
		return a.upsert(tasksTable, t.ID, t.HouseholdID, t.VisitID, op.Place, t.State, body)
	}
	return nil
}

// putHousehold stores the server's copy of a household as its base; the
// device's own unsent changes stay overlaid on it until the server's copy
// includes them.
func (a *applier) putHousehold(op *syncproto.Op) error {
	h := op.Household
	id := h.ID
	if id == "" {
		id = op.ID
	}
	if id == "" {
		return errBadOp
	}
	place := h.PlaceCode
	if place == "" {
		place = op.Place
	}
	fields := h.Fields
	if fields == nil {
		fields = map[string]json.RawMessage{}
	}
	fb, err := fieldsText(fields)
	if err != nil {
		return err
	}
	a.households = append(a.households, baseRow{id: id, place: place, version: h.Version, fields: fb})
	a.touched[id] = true
	if len(a.households) >= householdBatch {
		return a.flush()
	}
	return nil
}

// flush writes the household puts held back, in their order (a later put
// of the same household in the batch wins, as it would one by one).
func (a *applier) flush() error {
	rows := a.households
	if len(rows) == 0 {
		return nil
	}
	a.households = a.households[:0]
	q := `INSERT INTO households(id, place_code, has_base, base_place, base_version, base_fields) VALUES ` +
		strings.TrimSuffix(strings.Repeat("(?, ?, 1, ?, ?, ?), ", len(rows)), ", ") + `
		ON CONFLICT(id) DO UPDATE SET has_base = 1, base_place = excluded.base_place,
			base_version = excluded.base_version, base_fields = excluded.base_fields`
	args := make([]any, 0, 5*len(rows))
	for _, r := range rows {
		args = append(args, r.id, r.place, r.place, r.version, r.fields)
	}
	if err := a.exec(q, args...); err != nil {
		return err
	}
	if a.overlays == nil {
		var has bool
		if err := a.tx.QueryRowContext(a.ctx, `SELECT EXISTS (SELECT 1 FROM results WHERE overlay = 1)`).Scan(&has); err != nil {
			return err
		}
		a.overlays = &has
	}
	if !*a.overlays {
		return nil
	}
	// Applied changes the server copy now includes stop overlaying it.
	for _, r := range rows {
		if err := a.exec(`UPDATE results SET overlay = 0 WHERE household_id = ? AND overlay = 1 AND version <= ?`, r.id, r.version); err != nil {
			return err
		}
	}
	return nil
}

func (a *applier) del(op *syncproto.Op) error {
	id := op.ID
	switch op.Type {
	case syncproto.EntityPlace:
		if id == "" {
			id = op.Place
		}
		return a.exec(`DELETE FROM places WHERE code = ?`, id)
	case syncproto.EntityForm:
		fid, ver, ok := strings.Cut(id, "@")
		if !ok {
			return a.exec(`DELETE FROM forms WHERE id = ?`, id)
		}
		v, err := strconv.Atoi(ver)
		if err != nil {
			return fmt.Errorf("form id %q: %w", id, errBadOp)
		}
		return a.exec(`DELETE FROM forms WHERE id = ? AND version = ?`, fid, v)
	case syncproto.EntityHousehold:
		return a.dropBase(id)
	case syncproto.EntityVisit:
		return a.exec(`DELETE FROM visits WHERE id = ?`, id)
	case syncproto.EntityConflict:
		return a.exec(`DELETE FROM conflicts WHERE id = ?`, id)
	case syncproto.EntityTask:
		return a.exec(`DELETE FROM tasks WHERE id = ?`, id)
	}
	return nil
}

// dropBase forgets the server's copy of a household (deleted, or out of
// scope). The recompute at the end keeps it only if the outbox still
// creates it; unpushed edits stay in the outbox either way.
func (a *applier) dropBase(id string) error {
	if err := a.exec(`UPDATE households SET has_base = 0, base_place = '', base_version = 0, base_fields = '{}' WHERE id = ?`, id); err != nil {
		return err
	}
	if err := a.exec(`UPDATE results SET overlay = 0 WHERE household_id = ? AND overlay = 1`, id); err != nil {
		return err
	}
	a.touched[id] = true
	return nil
}

// leave drops everything held under place and its descendants: places,
// households (by the server's place), visits, conflicts, tasks. The device's
// own unacknowledged households and visits stay, and so does the outbox.
func (a *applier) leave(place string) error {
	rows, err := a.tx.QueryContext(a.ctx, subtreeCTE+` SELECT id FROM households WHERE has_base = 1 AND base_place IN (SELECT code FROM sub)`, place)
	if err != nil {
		return err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, id := range ids {
		if err := a.dropBase(id); err != nil {
			return err
		}
	}
	for _, q := range []string{
		`DELETE FROM visits WHERE local_only = 0 AND place_code IN (SELECT code FROM sub)`,
		`DELETE FROM conflicts WHERE place_code IN (SELECT code FROM sub)`,
		`DELETE FROM tasks WHERE place_code IN (SELECT code FROM sub)`,
		// Places last: the subtree is computed from them.
		`DELETE FROM places WHERE code IN (SELECT code FROM sub)`,
	} {
		if err := a.exec(subtreeCTE+" "+q, place); err != nil {
			return err
		}
	}
	return nil
}

// reset drops the whole local copy except the device's own unacknowledged
// households and visits; the outbox and the results stay.
func (a *applier) reset() error {
	rows, err := a.tx.QueryContext(a.ctx, `SELECT id FROM households`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		a.touched[id] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, q := range []string{
		`DELETE FROM places`,
		`DELETE FROM forms`,
		`DELETE FROM conflicts`,
		`DELETE FROM tasks`,
		`DELETE FROM visits WHERE local_only = 0`,
		`UPDATE households SET has_base = 0, base_place = '', base_version = 0, base_fields = '{}'`,
		`UPDATE results SET overlay = 0 WHERE overlay = 1`,
	} {
		if err := a.exec(q); err != nil {
			return err
		}
	}
	return nil
}

// finish recomputes the local view of every household whose base changed.
func (a *applier) finish() error {
	if err := a.flush(); err != nil {
		return err
	}
	if err := recomputeMany(a.ctx, a.tx, a.touched); err != nil {
		return err
	}
	a.touched = map[string]bool{}
	return nil
}
