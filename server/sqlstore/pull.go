package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"fieldsync/server/domain"
	"fieldsync/syncproto"
)

// Snapshot stages, in order.
const (
	stagePlaces = iota
	stageForms
	stageHouseholds
	stageVisits
	stageConflicts
	stageTasks
	stageDone
)

// logPage is how many change rows one query reads.
const logPage = 500

// Pull returns the next page of ops for a device. See syncproto/doc.go for
// the rules; in short: a first or reset cursor starts a full copy of the
// device's places; a scope change since the cursor sends scope_leave for
// places that left and a copy of places that entered; then the change log
// is replayed from the cursor, filtered to the device's places.
func (s *Store) Pull(ctx context.Context, dev PushDevice, req *syncproto.PullRequest) (*syncproto.PullResponse, error) {
	req.MaxBytes = min(max(req.MaxBytes, syncproto.MinPullBytes), syncproto.MaxPullBytes)
	cur, err := syncproto.DecodeCursor(s.cursorKey, req.Cursor)
	if err != nil {
		return nil, err
	}
	if req.Cursor != "" && cur.Device != dev.DeviceID {
		return nil, syncproto.Errorf(syncproto.CodeInvalidCursor, "cursor was issued to another device")
	}
	release, err := s.gate.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("pull: %w", err)
	}
	defer release()
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("pull: begin: %w", err)
	}
	defer tx.Rollback()
	p := &puller{s: s, ctx: ctx, tx: tx, budget: req.MaxBytes, emitted: map[string]bool{}}
	// The head comes from AUTOINCREMENT's counter, not max(seq): a pruned
	// log may be empty while its sequence goes on.
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0)`).Scan(&p.maxSeq); err != nil {
		return nil, fmt.Errorf("pull: head: %w", err)
	}
	floor, err := s.logFloor(ctx, tx)
	if err != nil {
		return nil, err
	}
	var lastSeq int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE((SELECT last_seq FROM device_sync WHERE device_id = ?), 0)`, dev.DeviceID).Scan(&lastSeq); err != nil {
		return nil, fmt.Errorf("pull: device state: %w", err)
	}
	roots, err := userPlaces(ctx, tx, dev.UserID)
	if err != nil {
		return nil, fmt.Errorf("pull: scope: %w", err)
	}
	if p.scope, err = subtree(ctx, tx, roots); err != nil {
		return nil, fmt.Errorf("pull: scope: %w", err)
	}
	epoch, err := s.currentEpoch(ctx, tx)
	if err != nil {
		return nil, fmt.Errorf("pull: %w", err)
	}
	fresh := syncproto.Cursor{Epoch: epoch, Device: dev.DeviceID, Seq: p.maxSeq, Roots: roots,
		Snap: &syncproto.Snapshot{Roots: roots, Full: true}}
	switch {
	case req.Cursor == "":
		cur = fresh
	case cur.Epoch != epoch || cur.Seq > p.maxSeq || cur.Seq < floor:
		// Another server epoch (a restore), a cursor from the future, or
		// one older than the retained log: start over, never drift.
		p.add(syncproto.Op{Op: syncproto.OpReset})
		cur = fresh
	case !slices.Equal(cur.Roots, roots):
		if err := p.rescope(&cur, roots); err != nil {
			return nil, err
		}
	}
	if cur.Snap != nil {
		if err := p.snapshot(&cur); err != nil {
			return nil, err
		}
	}
	if cur.Snap == nil && !p.full {
		if err := p.replay(&cur); err != nil {
			return nil, err
		}
	}
	resp := &syncproto.PullResponse{
		ProtocolVersion: syncproto.ProtocolVersion,
		Ops:             p.ops,
		EncodedOps:      p.enc,
		Cursor:          syncproto.EncodeCursor(s.cursorKey, cur),
		HasMore:         p.full,
		ServerHLC:       s.clock.Tick(),
		LastSeq:         &lastSeq,
	}
	if resp.Ops == nil {
		resp.Ops = []syncproto.Op{}
	}
	s.notePull(dev.DeviceID, req.Health, !resp.HasMore)
	return resp, nil
}

func (s *Store) logFloor(ctx context.Context, q querier) (int64, error) {
	var v string
	err := q.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'log_floor'`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("pull: log floor: %w", err)
	}
	var f int64
	fmt.Sscan(v, &f)
	return f, nil
}

// PruneLog drops change-log rows up to and including seq. Devices whose
// cursor is older get a reset and a clean copy.
func (s *Store) PruneLog(ctx context.Context, seq int64) error {
	return s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM changes WHERE seq <= ?`, seq); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO meta(key, value) VALUES ('log_floor', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`, fmt.Sprint(seq))
		return err
	})
}

type puller struct {
	s       *Store
	ctx     context.Context
	tx      *sql.Tx
	maxSeq  int64
	scope   map[string]bool
	budget  int
	used    int
	ops     []syncproto.Op
	enc     []json.RawMessage // ops[i] encoded
	full    bool
	emitted map[string]bool
	copySeq int64 // the cursor's seq when the copy continues
}

// add appends op if it fits the page budget (the first op always fits) and
// reports whether it did; once one does not fit the page is full.
func (p *puller) add(op syncproto.Op) bool {
	if p.full {
		return false
	}
	b, _ := syncproto.MarshalOp(&op)
	if len(p.ops) > 0 && p.used+len(b) > p.budget {
		p.full = true
		return false
	}
	p.used += len(b) + 1
	p.ops = append(p.ops, op)
	p.enc = append(p.enc, b)
	return true
}

// force appends op whatever the page budget.
func (p *puller) force(op syncproto.Op) {
	b, _ := json.Marshal(op)
	p.used += len(b) + 1
	p.ops = append(p.ops, op)
	p.enc = append(p.enc, b)
}

// topmost returns the codes in set whose parent is not in set.
func (p *puller) topmost(set map[string]bool) ([]string, error) {
	var out []string
	for _, c := range sortedKeys(set) {
		var parent sql.NullString
		if err := p.tx.QueryRowContext(p.ctx, `SELECT parent_code FROM places WHERE code = ?`, c).Scan(&parent); err != nil {
			return nil, err
		}
		if !parent.Valid || !set[parent.String] {
			out = append(out, c)
		}
	}
	return out, nil
}

// rescope handles a change of the device's assigned places since cur.
func (p *puller) rescope(cur *syncproto.Cursor, roots []string) error {
	old, err := subtree(p.ctx, p.tx, cur.Roots)
	if err != nil {
		return err
	}
	lost, gained := map[string]bool{}, map[string]bool{}
	for c := range old {
		if !p.scope[c] {
			lost[c] = true
		}
	}
	for c := range p.scope {
		if !old[c] {
			gained[c] = true
		}
	}
	lostTop, err := p.topmost(lost)
	if err != nil {
		return err
	}
	gainedTop, err := p.topmost(gained)
	if err != nil {
		return err
	}
	// Scope ops are tiny and must travel together with the new cursor, so
	// they ignore the page budget.
	for _, c := range lostTop {
		p.force(syncproto.Op{Op: syncproto.OpScopeLeave, Place: c})
	}
	for _, c := range gainedTop {
		p.force(syncproto.Op{Op: syncproto.OpScopeEnter, Place: c})
	}
	cur.Roots = roots
	if len(gainedTop) > 0 {
		snapRoots := gainedTop
		full := false
		if cur.Snap != nil {
			// A copy was under way: restart it over both sets of places.
			snapRoots = append(append([]string{}, cur.Snap.Roots...), gainedTop...)
			full = cur.Snap.Full
		}
		cur.Snap = &syncproto.Snapshot{Roots: snapRoots, Full: full}
	}
	if cur.Snap != nil {
		// Drop snapshot roots that left the scope.
		var keep []string
		for _, r := range cur.Snap.Roots {
			if p.scope[r] {
				keep = append(keep, r)
			}
		}
		cur.Snap.Roots = keep
		if len(keep) == 0 {
			cur.Snap = nil
		}
	}
	return nil
}

// snapshot continues a paged copy of cur.Snap's places.
func (p *puller) snapshot(cur *syncproto.Cursor) error {
	sn := cur.Snap
	// Rows changed after the cursor's seq come in the replay that follows
	// the copy; copying them too would send them twice.
	p.copySeq = cur.Seq
	set, err := subtree(p.ctx, p.tx, sn.Roots)
	if err != nil {
		return err
	}
	places := sortedKeys(set)
	for sn.Stage < stageDone && !p.full {
		var last string
		var n int
		var err error
		switch sn.Stage {
		case stagePlaces:
			last, n, err = p.snapPlaces(sn)
		case stageForms:
			if sn.Full {
				last, n, err = p.snapForms(sn.After)
			}
		case stageHouseholds:
			last, n, err = p.snapHouseholds(places, sn.After)
		case stageVisits:
			last, n, err = p.snapRows(places, sn.After, syncproto.EntityVisit,
				`SELECT id FROM visits x WHERE place_code = ? AND NOT EXISTS (SELECT 1 FROM changes c WHERE c.place_code = x.place_code AND c.seq > ? AND c.entity_type = 'visit' AND c.entity_id = x.id) AND id > ? ORDER BY id LIMIT ?`)
		case stageConflicts:
			last, n, err = p.snapRows(places, sn.After, syncproto.EntityConflict,
				`SELECT id FROM conflicts x WHERE place_code = ? AND state = 'open' AND NOT EXISTS (SELECT 1 FROM changes c WHERE c.place_code = x.place_code AND c.seq > ? AND c.entity_type = 'conflict' AND c.entity_id = x.id) AND id > ? ORDER BY id LIMIT ?`)
		case stageTasks:
			last, n, err = p.snapRows(places, sn.After, syncproto.EntityTask,
				`SELECT id FROM tasks x WHERE place_code = ? AND state = 'open' AND NOT EXISTS (SELECT 1 FROM changes c WHERE c.place_code = x.place_code AND c.seq > ? AND c.entity_type = 'task' AND c.entity_id = x.id) AND id > ? ORDER BY id LIMIT ?`)
		}
		if err != nil {
			return fmt.Errorf("pull: snapshot: %w", err)
		}
		_ = n
		if p.full {
			sn.After = last
			return nil
		}
		sn.Stage++
		sn.After = ""
	}
	if sn.Stage >= stageDone {
		cur.Snap = nil
	}
	return nil
}

// snapPlaces sends the snapshot roots' subtrees and their ancestors.
// After is the last place path sent.
func (p *puller) snapPlaces(sn *syncproto.Snapshot) (string, int, error) {
	ps, err := p.s.placesTx(p.ctx, p.tx, sn.Roots)
	if err != nil {
		return "", 0, err
	}
	last := sn.After
	for _, pl := range ps {
		if pl.Path <= sn.After {
			continue
		}
		if !p.add(placeOp(pl, 0)) {
			return last, 0, nil
		}
		last = pl.Path
	}
	return last, len(ps), nil
}

func placeOp(pl domain.Place, seq int64) syncproto.Op {
	return syncproto.Op{Op: syncproto.OpPut, Type: syncproto.EntityPlace, ID: pl.Code, Place: pl.Code, Seq: seq,
		PlaceData: &syncproto.Place{Code: pl.Code, Name: pl.Name, Level: pl.Level, ParentCode: pl.ParentCode, Boundary: pl.Boundary}}
}

func (p *puller) snapForms(after string) (string, int, error) {
	rows, err := p.tx.QueryContext(p.ctx, `SELECT id || '@' || printf('%08d', version), definition FROM forms ORDER BY 1`)
	if err != nil {
		return "", 0, err
	}
	defer rows.Close()
	last := after
	for rows.Next() {
		var key, body string
		if err := rows.Scan(&key, &body); err != nil {
			return "", 0, err
		}
		if key <= after {
			continue
		}
		var def syncproto.FormDef
		if err := json.Unmarshal([]byte(body), &def); err != nil {
			return "", 0, err
		}
		if !p.add(syncproto.Op{Op: syncproto.OpPut, Type: syncproto.EntityForm, ID: fmt.Sprintf("%s@%d", def.ID, def.Version), Form: &def}) {
			return last, 0, nil
		}
		last = key
	}
	return last, 0, rows.Err()
}

// snapRows walks places in code order and entities in id order; the
// position is "<place>\x00<id>".
func (p *puller) snapRows(places []string, after string, typ syncproto.EntityType, q string) (string, int, error) {
	afterPlace, afterID, _ := strings.Cut(after, "\x00")
	last := after
	for _, pl := range places {
		if pl < afterPlace {
			continue
		}
		from := ""
		if pl == afterPlace {
			from = afterID
		}
		for {
			ids, err := p.ids(q, pl, from)
			if err != nil {
				return "", 0, err
			}
			for _, id := range ids {
				op, ok, err := p.entityOp(typ, id, 0)
				if err != nil {
					return "", 0, err
				}
				if ok && !p.add(op) {
					return last, 0, nil
				}
				last = pl + "\x00" + id
				from = id
			}
			if len(ids) < 200 {
				break
			}
		}
	}
	return last, 0, nil
}

// snapHouseholds is snapRows for households: a first sync is mostly
// households, so each query reads a batch of them whole rather than their
// ids followed by one query per household, and reading stops at the row
// that no longer fits the page.
func (p *puller) snapHouseholds(places []string, after string) (string, int, error) {
	afterPlace, afterID, _ := strings.Cut(after, "\x00")
	last := after
	for _, pl := range places {
		if pl < afterPlace {
			continue
		}
		from := ""
		if pl == afterPlace {
			from = afterID
		}
		for {
			n, err := p.households(pl, &from, &last)
			if err != nil {
				return "", 0, err
			}
			if p.full {
				return last, 0, nil
			}
			if n < snapBatch {
				break
			}
		}
	}
	return last, 0, nil
}

// snapBatch is how many households one query of a copy reads at most.
const snapBatch = 256

// households adds the next batch of a place's households to the page, in
// id order after *from, leaving out those changed after the copy's seq
// (the replay sends them). It moves *from and *last past each household
// sent and reports how many rows it read.
func (p *puller) households(place string, from, last *string) (int, error) {
	rows, err := p.tx.QueryContext(p.ctx, `SELECT id, fields, version FROM households x WHERE place_code = ? AND deleted = 0
		AND NOT EXISTS (SELECT 1 FROM changes c WHERE c.place_code = x.place_code AND c.seq > ? AND c.entity_type = 'household' AND c.entity_id = x.id)
		AND id > ? ORDER BY id LIMIT ?`, place, p.copySeq, *from, snapBatch)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		n++
		h := &syncproto.Household{PlaceCode: place}
		var fields string
		if err := rows.Scan(&h.ID, &fields, &h.Version); err != nil {
			return n, err
		}
		key := string(syncproto.EntityHousehold) + "/" + h.ID
		if !p.emitted[key] && p.scope[place] {
			if err := json.Unmarshal([]byte(fields), &h.Fields); err != nil {
				return n, fmt.Errorf("household %s: fields: %w", h.ID, err)
			}
			p.emitted[key] = true
			if !p.add(syncproto.Op{Op: syncproto.OpPut, Type: syncproto.EntityHousehold, ID: h.ID, Place: place, Household: h}) {
				return n, nil
			}
		}
		*last = place + "\x00" + h.ID
		*from = h.ID
	}
	return n, rows.Err()
}

func (p *puller) ids(q, place, after string) ([]string, error) {
	return queryStrings(p.ctx, p.tx, q, place, p.copySeq, after, 200)
}

// replay sends change-log entries after cur.Seq in the device's places.
func (p *puller) replay(cur *syncproto.Cursor) error {
	// The device's places and "" (changes for everyone), as one JSON
	// array parameter: the SQL text is the same for every scope size.
	places := jsonList(append(sortedKeys(p.scope), ""))
	for !p.full && cur.Seq < p.maxSeq {
		rows, err := p.tx.QueryContext(p.ctx, `SELECT seq, entity_type, entity_id, place_code, kind FROM changes
			WHERE seq > ? AND seq <= ? AND place_code IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT ?`, cur.Seq, p.maxSeq, places, logPage)
		if err != nil {
			return fmt.Errorf("pull: log: %w", err)
		}
		type change struct {
			seq               int64
			typ, id, place, k string
		}
		var batch []change
		for rows.Next() {
			var c change
			if err := rows.Scan(&c.seq, &c.typ, &c.id, &c.place, &c.k); err != nil {
				rows.Close()
				return err
			}
			batch = append(batch, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(batch) == 0 {
			cur.Seq = p.maxSeq
			break
		}
		for _, c := range batch {
			if c.place != "" && !p.scope[c.place] {
				cur.Seq = c.seq
				continue
			}
			op, ok, err := p.entityOp(syncproto.EntityType(c.typ), c.id, c.seq)
			if err != nil {
				return err
			}
			if ok && !p.add(op) {
				return nil // cur.Seq stays before c: it comes in the next page
			}
			cur.Seq = c.seq
		}
		if len(batch) < logPage {
			cur.Seq = p.maxSeq
			break
		}
	}
	return nil
}

// entityOp builds the op for an entity's current state as the device
// should see it: a put when it is in scope, a delete when it left the
// scope or is gone. ok is false when the op is a duplicate in this page.
func (p *puller) entityOp(typ syncproto.EntityType, id string, seq int64) (syncproto.Op, bool, error) {
	key := string(typ) + "/" + id
	if p.emitted[key] {
		return syncproto.Op{}, false, nil
	}
	del := syncproto.Op{Op: syncproto.OpDelete, Type: typ, ID: id, Seq: seq}
	var op syncproto.Op
	switch typ {
	case syncproto.EntityPlace:
		pl, err := scanPlace(p.tx.QueryRowContext(p.ctx, `SELECT `+placeCols+` FROM places WHERE code = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			op = del
		} else if err != nil {
			return op, false, err
		} else {
			op = placeOp(pl, seq)
		}
	case syncproto.EntityForm:
		fid, ver, _ := strings.Cut(id, "@")
		var v int
		fmt.Sscan(ver, &v)
		def, err := formBy(p.ctx, p.tx, fid, v)
		if err != nil {
			return op, false, err
		}
		op = syncproto.Op{Op: syncproto.OpPut, Type: typ, ID: id, Seq: seq, Form: &def}
	case syncproto.EntityHousehold:
		h, deleted, err := loadHousehold(p.ctx, p.tx, id)
		if errors.Is(err, domain.ErrNotFound) || (err == nil && (deleted || !p.scope[h.PlaceCode])) {
			op = del
		} else if err != nil {
			return op, false, err
		} else {
			op = syncproto.Op{Op: syncproto.OpPut, Type: typ, ID: id, Place: h.PlaceCode, Seq: seq, Household: h}
		}
	case syncproto.EntityVisit:
		v, err := loadVisit(p.ctx, p.tx, id)
		if errors.Is(err, domain.ErrNotFound) || (err == nil && !p.scope[v.PlaceCode]) {
			op = del
		} else if err != nil {
			return op, false, err
		} else {
			op = syncproto.Op{Op: syncproto.OpPut, Type: typ, ID: id, Place: v.PlaceCode, Seq: seq, Visit: v}
		}
	case syncproto.EntityConflict:
		c, place, err := loadConflict(p.ctx, p.tx, id)
		if errors.Is(err, domain.ErrNotFound) || (err == nil && !p.scope[place]) {
			op = del
		} else if err != nil {
			return op, false, err
		} else {
			op = syncproto.Op{Op: syncproto.OpPut, Type: typ, ID: id, Place: place, Seq: seq, Conflict: c}
		}
	case syncproto.EntityTask:
		t, place, err := loadTask(p.ctx, p.tx, id)
		if errors.Is(err, domain.ErrNotFound) || (err == nil && !p.scope[place]) {
			op = del
		} else if err != nil {
			return op, false, err
		} else {
			op = syncproto.Op{Op: syncproto.OpPut, Type: typ, ID: id, Place: place, Seq: seq, Task: t}
		}
	default:
		return op, false, nil
	}
	p.emitted[key] = true
	return op, true, nil
}

func (s *Store) placesTx(ctx context.Context, q querier, roots []string) ([]domain.Place, error) {
	seen := map[string]bool{}
	var out []domain.Place
	for _, root := range roots {
		var path string
		if err := q.QueryRowContext(ctx, `SELECT path FROM places WHERE code = ?`, root).Scan(&path); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			return nil, err
		}
		codes := strings.Split(strings.Trim(path, "/"), "/")
		args := []any{path, pathEnd(path)}
		// The subtree and the root's ancestors (the codes on its path
		// before its own), these as one JSON array parameter.
		args = append(args, jsonList(codes[:len(codes)-1]))
		rows, err := q.QueryContext(ctx, `SELECT `+placeCols+` FROM places WHERE (path >= ? AND path < ?)
			OR code IN (SELECT value FROM json_each(?))`, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			pl, err := scanPlace(rows)
			if err != nil {
				rows.Close()
				return nil, err
			}
			if !seen[pl.Code] {
				seen[pl.Code] = true
				out = append(out, pl)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(out, func(a, b domain.Place) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

func loadHousehold(ctx context.Context, q querier, id string) (*syncproto.Household, bool, error) {
	h := &syncproto.Household{ID: id}
	var fields string
	var deleted bool
	err := q.QueryRowContext(ctx, `SELECT place_code, fields, version, deleted FROM households WHERE id = ?`, id).Scan(&h.PlaceCode, &fields, &h.Version, &deleted)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, fmt.Errorf("household %s: %w", id, domain.ErrNotFound)
	}
	if err != nil {
		return nil, false, err
	}
	if err := json.Unmarshal([]byte(fields), &h.Fields); err != nil {
		return nil, false, err
	}
	return h, deleted, nil
}

func loadVisit(ctx context.Context, q querier, id string) (*syncproto.Visit, error) {
	v := &syncproto.Visit{ID: id}
	var answers, deviceTime, serverTime string
	var lon, lat sql.NullFloat64
	var acc sql.NullFloat64
	var corrects, deviceID, userName, reason sql.NullString
	err := q.QueryRowContext(ctx, `SELECT v.household_id, v.place_code, v.form_id, v.form_version, v.answers, v.lon, v.lat, v.accuracy_m,
			v.device_time, v.server_time, v.corrects_visit_id, v.review_state, v.device_id, u.username, v.gps_reason
		FROM visits v LEFT JOIN users u ON u.id = v.user_id WHERE v.id = ?`, id).
		Scan(&v.HouseholdID, &v.PlaceCode, &v.FormID, &v.FormVersion, &answers, &lon, &lat, &acc, &deviceTime, &serverTime, &corrects, &v.ReviewState, &deviceID, &userName, &reason)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("visit %s: %w", id, domain.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(answers), &v.Answers); err != nil {
		return nil, err
	}
	if lon.Valid && lat.Valid {
		v.Point = &syncproto.Point{Lon: lon.Float64, Lat: lat.Float64}
	}
	v.AccuracyM = acc.Float64
	v.DeviceTime = domain.ParseTimestamp(deviceTime)
	v.ServerTime = domain.ParseTimestamp(serverTime)
	v.CorrectsVisitID = corrects.String
	v.DeviceID = deviceID.String
	v.UserName = userName.String
	v.GPSReason = reason.String
	rows, err := q.QueryContext(ctx, `SELECT slot, sha256, size, media_type FROM visit_evidence WHERE visit_id = ? ORDER BY slot, sha256`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var e syncproto.EvidenceRef
		if err := rows.Scan(&e.Slot, &e.SHA256, &e.Size, &e.MediaType); err != nil {
			return nil, err
		}
		v.Evidence = append(v.Evidence, e)
	}
	return v, rows.Err()
}

func loadConflict(ctx context.Context, q querier, id string) (*syncproto.Conflict, string, error) {
	c := &syncproto.Conflict{ID: id}
	var place, hlc, created string
	var kept, losing, dev, user sql.NullString
	err := q.QueryRowContext(ctx, `SELECT c.household_id, c.place_code, c.field, c.kept_value, c.losing_value, c.losing_device, u.username,
			c.losing_hlc, c.state, c.sensitive, c.created_at
		FROM conflicts c LEFT JOIN users u ON u.id = c.losing_user_id WHERE c.id = ?`, id).
		Scan(&c.HouseholdID, &place, &c.Field, &kept, &losing, &dev, &user, &hlc, &c.State, &c.Sensitive, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "", fmt.Errorf("conflict %s: %w", id, domain.ErrNotFound)
	}
	if err != nil {
		return nil, "", err
	}
	if kept.Valid {
		c.KeptValue = json.RawMessage(kept.String)
	}
	if losing.Valid {
		c.LosingValue = json.RawMessage(losing.String)
	}
	c.LosingDevice, c.LosingUser = dev.String, user.String
	c.LosingHLC, _ = syncproto.ParseHLC(hlc)
	c.CreatedAt = domain.ParseTimestamp(created)
	return c, place, nil
}

func loadTask(ctx context.Context, q querier, id string) (*syncproto.Task, string, error) {
	t := &syncproto.Task{ID: id}
	var place, created string
	err := q.QueryRowContext(ctx, `SELECT kind, visit_id, household_id, place_code, reason, state, created_at FROM tasks WHERE id = ?`, id).
		Scan(&t.Kind, &t.VisitID, &t.HouseholdID, &place, &t.Reason, &t.State, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "", fmt.Errorf("task %s: %w", id, domain.ErrNotFound)
	}
	if err != nil {
		return nil, "", err
	}
	t.CreatedAt = domain.ParseTimestamp(created)
	return t, place, nil
}
