package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"fieldsync/server/domain"
	"fieldsync/server/merge"
	"fieldsync/server/store"
	"fieldsync/syncproto"
)

// ImportHouseholds adds or replaces households from a register (the demo
// data, an XLSX/CSV import) in one transaction. Each import is a change
// that devices in scope receive.
func (s *Store) ImportHouseholds(ctx context.Context, hs []syncproto.Household, by int64) error {
	now := s.ts()
	hlc := s.clock.Tick()
	return s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for _, h := range hs {
			if !syncproto.ValidID(h.ID) {
				return fmt.Errorf("household %q: id is not a ULID or UUID: %w", h.ID, domain.ErrInvalid)
			}
			if perr := syncproto.CheckHouseholdFields(h.Fields); perr != nil {
				return fmt.Errorf("household %s: %w: %w", h.ID, domain.ErrInvalid, perr)
			}
			var one int
			if err := tx.QueryRowContext(ctx, `SELECT 1 FROM places WHERE code = ?`, h.PlaceCode).Scan(&one); err != nil {
				return fmt.Errorf("household %s: place %s: %w", h.ID, h.PlaceCode, domain.ErrNotFound)
			}
			// A household already known under another place moves: it and
			// its visits, conflicts and tasks leave the old place's devices.
			var old string
			switch err := tx.QueryRowContext(ctx, `SELECT place_code FROM households WHERE id = ?`, h.ID).Scan(&old); {
			case errors.Is(err, sql.ErrNoRows):
			case err != nil:
				return fmt.Errorf("household %s: %w", h.ID, err)
			case old != h.PlaceCode:
				if _, err := logChange(tx, now, "household", h.ID, old, "moved_out"); err != nil {
					return err
				}
			}
			seq, err := logChange(tx, now, "household", h.ID, h.PlaceCode, "put")
			if err != nil {
				return err
			}
			if old != "" && old != h.PlaceCode {
				if err := moveHouseholdDependents(ctx, tx, now, h.ID, old, h.PlaceCode); err != nil {
					return err
				}
			}
			meta := map[string]merge.FieldMeta{"place_code": {HLC: hlc, Version: seq, UserID: by}}
			for k := range h.Fields {
				meta[k] = merge.FieldMeta{HLC: hlc, Version: seq, UserID: by}
			}
			fb, _ := json.Marshal(h.Fields)
			mb, _ := json.Marshal(meta)
			lon, lat := locationOf(h.Fields)
			if _, err := tx.ExecContext(ctx, `INSERT INTO households(id, place_code, fields, field_meta, version, lon, lat, created_at, updated_at)
					VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
					ON CONFLICT(id) DO UPDATE SET place_code = excluded.place_code, fields = excluded.fields, field_meta = excluded.field_meta,
						version = excluded.version, lon = excluded.lon, lat = excluded.lat, deleted = 0, updated_at = excluded.updated_at`,
				h.ID, h.PlaceCode, string(fb), string(mb), seq, lon, lat, now, now); err != nil {
				return fmt.Errorf("household %s: %w", h.ID, err)
			}
			if err := audit(ctx, tx, now, "household.import", "household", h.ID, h.PlaceCode, nil, h.Fields); err != nil {
				return err
			}
		}
		return nil
	})
}

// Household returns the server's current copy of a household and whether
// it is deleted.
func (s *Store) Household(ctx context.Context, id string) (*syncproto.Household, bool, error) {
	var h *syncproto.Household
	var deleted bool
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		var err error
		h, deleted, err = loadHousehold(ctx, tx, id)
		return err
	})
	return h, deleted, err
}

// Visit returns one visit.
func (s *Store) Visit(ctx context.Context, id string) (*syncproto.Visit, error) {
	var v *syncproto.Visit
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		var err error
		v, err = loadVisit(ctx, tx, id)
		return err
	})
	return v, err
}

// Conflicts lists conflict records of a household.
func (s *Store) Conflicts(ctx context.Context, householdID string) ([]syncproto.Conflict, error) {
	out := []syncproto.Conflict{}
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		ids, err := queryStrings(ctx, tx, `SELECT id FROM conflicts WHERE household_id = ? ORDER BY created_at, id`, householdID)
		if err != nil {
			return err
		}
		for _, id := range ids {
			c, _, err := loadConflict(ctx, tx, id)
			if err != nil {
				return err
			}
			out = append(out, *c)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DB returns a read-only handle for tests and tools. It bypasses the read
// gate (Config.PoolWait, the background share): the server's own code reads
// through the Store's methods.
func (s *Store) DB() *sql.DB { return s.r }

// HouseholdRow is store.HouseholdRow.
type HouseholdRow = store.HouseholdRow

// Households lists the households of the given places (not deleted), by id.
func (s *Store) Households(ctx context.Context, places map[string]bool, limit int) ([]HouseholdRow, error) {
	codes := sortedKeys(places)
	out := []HouseholdRow{}
	if limit <= 0 || limit > 20000 {
		limit = 5000
	}
	for _, c := range codes {
		rows, err := s.readRows(ctx, `SELECT h.id, h.place_code, h.fields, h.version, p.name,
				(SELECT count(*) FROM visits v WHERE v.household_id = h.id), COALESCE((SELECT max(server_time) FROM visits v WHERE v.household_id = h.id), '')
			FROM households h JOIN places p ON p.code = h.place_code WHERE h.place_code = ? AND h.deleted = 0 ORDER BY h.id`, c)
		if err != nil {
			return nil, fmt.Errorf("households: %w", err)
		}
		for rows.Next() {
			var r HouseholdRow
			var fields string
			if err := rows.Scan(&r.ID, &r.PlaceCode, &fields, &r.Version, &r.PlaceName, &r.Visits, &r.LastVisitAt); err != nil {
				rows.Close()
				return nil, err
			}
			if err := json.Unmarshal([]byte(fields), &r.Fields); err != nil {
				rows.Close()
				return nil, err
			}
			out = append(out, r)
			if len(out) >= limit {
				rows.Close()
				return out, nil
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// HouseholdVisits lists a household's visits, newest first.
func (s *Store) HouseholdVisits(ctx context.Context, id string) ([]syncproto.Visit, error) {
	out := []syncproto.Visit{}
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		ids, err := queryStrings(ctx, tx, `SELECT id FROM visits WHERE household_id = ? ORDER BY server_time DESC, id`, id)
		if err != nil {
			return err
		}
		for _, v := range ids {
			vis, err := loadVisit(ctx, tx, v)
			if err != nil {
				return err
			}
			out = append(out, *vis)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ImportedVisit is store.ImportedVisit.
type ImportedVisit = store.ImportedVisit

// ImportVisits stores visits in one transaction. Their answers are checked
// against their form version like pushed visits.
func (s *Store) ImportVisits(ctx context.Context, vs []ImportedVisit) error {
	now := s.ts()
	return s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for _, iv := range vs {
			v := iv.Visit
			if !syncproto.ValidID(v.ID) {
				return fmt.Errorf("visit %q: bad id: %w", v.ID, domain.ErrInvalid)
			}
			var place string
			if err := tx.QueryRowContext(ctx, `SELECT place_code FROM households WHERE id = ?`, v.HouseholdID).Scan(&place); err != nil {
				return fmt.Errorf("visit %s: household %s: %w", v.ID, v.HouseholdID, domain.ErrNotFound)
			}
			form, err := s.cachedForm(ctx, tx, v.FormID, v.FormVersion)
			if err != nil {
				return fmt.Errorf("visit %s: %w", v.ID, err)
			}
			if err := form.ValidateAnswers(v.Answers); err != nil {
				return fmt.Errorf("visit %s: %w: %w", v.ID, domain.ErrInvalid, err)
			}
			state := iv.State
			if state == "" {
				state = domain.StateSubmitted
			}
			answers, _ := json.Marshal(v.Answers)
			var lon, lat any
			if v.Point != nil {
				lon, lat = v.Point.Lon, v.Point.Lat
			}
			var userID any
			if iv.UserID > 0 {
				userID = iv.UserID
			}
			serverTime := v.ServerTime
			if serverTime.IsZero() {
				serverTime = v.DeviceTime
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO visits(id, household_id, place_code, user_id, form_id, form_version, answers,
					lon, lat, accuracy_m, device_time, device_tz_offset, server_time, hlc, review_state, review_step, content_hash, gps_reason)
					VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				v.ID, v.HouseholdID, place, userID, v.FormID, v.FormVersion, string(answers), lon, lat, v.AccuracyM,
				domain.Timestamp(v.DeviceTime), zoneOffset(v.DeviceTime), domain.Timestamp(serverTime), syncproto.HLC{WallMs: v.DeviceTime.UnixMilli()}.String(),
				state, iv.Step, contentHash(v), nullString(v.GPSReason)); err != nil {
				return fmt.Errorf("visit %s: %w", v.ID, err)
			}
			for _, e := range v.Evidence {
				// An imported link is held: no device made it, the importer
				// vouches for it (and puts the blob in the store itself).
				if _, err := tx.ExecContext(ctx, `INSERT INTO visit_evidence(visit_id, slot, sha256, size, media_type, held) VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT DO NOTHING`,
					v.ID, e.Slot, e.SHA256, e.Size, e.MediaType); err != nil {
					return err
				}
			}
			if _, err := logChange(tx, now, "visit", v.ID, place, "put"); err != nil {
				return err
			}
			if state == domain.StateNeedsRework && iv.TaskReason != "" {
				tid := syncproto.NewID(v.DeviceTime)
				if _, err := tx.ExecContext(ctx, `INSERT INTO tasks(id, kind, visit_id, household_id, place_code, user_id, reason, state, created_at, updated_at)
					VALUES (?, 'rework', ?, ?, ?, ?, ?, 'open', ?, ?)`, tid, v.ID, v.HouseholdID, place, userID, iv.TaskReason, now, now); err != nil {
					return err
				}
				if _, err := logChange(tx, now, "task", tid, place, "put"); err != nil {
					return err
				}
			}
			if err := audit(ctx, tx, now, "visit.import", "visit", v.ID, place, nil, map[string]any{"form": v.FormID, "state": state}); err != nil {
				return err
			}
		}
		return nil
	})
}
