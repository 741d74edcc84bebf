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

// ConflictRow is store.ConflictRow.
type ConflictRow = store.ConflictRow

// ListConflicts lists conflicts in places (nil: all) with state ("" any).
func (s *Store) ListConflicts(ctx context.Context, places map[string]bool, state string) ([]ConflictRow, error) {
	q := `SELECT c.id, c.place_code, COALESCE((h.fields ->> 'head_name'), ''), COALESCE(c.resolution, '')
		FROM conflicts c JOIN households h ON h.id = c.household_id WHERE 1=1`
	var args []any
	if state != "" {
		q += ` AND c.state = ?`
		args = append(args, state)
	}
	if places != nil {
		codes := sortedKeys(places)
		if len(codes) == 0 {
			return []ConflictRow{}, nil
		}
		q += ` AND c.place_code IN (SELECT value FROM json_each(?))`
		args = append(args, jsonList(codes))
	}
	rows, err := s.readRows(ctx, q+` ORDER BY c.created_at DESC, c.id LIMIT 2000`, args...)
	if err != nil {
		return nil, fmt.Errorf("conflicts: %w", err)
	}
	var heads []ConflictRow
	for rows.Next() {
		var r ConflictRow
		if err := rows.Scan(&r.ID, &r.PlaceCode, &r.HeadName, &r.Resolution); err != nil {
			rows.Close()
			return nil, err
		}
		heads = append(heads, r)
	}
	rows.Close()
	out := make([]ConflictRow, 0, len(heads))
	err = s.readTx(ctx, func(tx *sql.Tx) error {
		for _, h := range heads {
			c, _, err := loadConflict(ctx, tx, h.ID)
			if err != nil {
				return err
			}
			h.Conflict = *c
			out = append(out, h)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Conflict resolutions.
const (
	ResolveKeep  = store.ResolveKeep
	ResolveTake  = store.ResolveTake
	ResolveValue = store.ResolveValue
)

// ResolveConflict settles a conflict. Taking the other value or entering a
// new one is a household change like any other: it gets a new version and
// reaches every device in scope.
func (s *Store) ResolveConflict(ctx context.Context, id string, by domain.User, action string, value json.RawMessage) (ConflictRow, error) {
	var out ConflictRow
	if action != ResolveKeep && action != ResolveTake && action != ResolveValue {
		return out, fmt.Errorf("resolve: action must be keep, take or value: %w", domain.ErrInvalid)
	}
	now := s.ts()
	err := s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		c, place, err := loadConflict(ctx, tx, id)
		if err != nil {
			return err
		}
		if c.State == "resolved" {
			return fmt.Errorf("conflict %s already resolved: %w", id, domain.ErrExists)
		}
		var set json.RawMessage
		switch action {
		case ResolveTake:
			set = c.LosingValue
			if set == nil {
				set = json.RawMessage("null")
			}
		case ResolveValue:
			if !json.Valid(value) {
				return fmt.Errorf("resolve: value is not JSON: %w", domain.ErrInvalid)
			}
			if perr := syncproto.CheckHouseholdFields(map[string]json.RawMessage{c.Field: value}); perr != nil {
				return fmt.Errorf("resolve: %w: %w", domain.ErrInvalid, perr)
			}
			set = value
		}
		if set != nil && c.Field != "place_code" {
			a := &applier{s: s, ctx: ctx, tx: tx, x: cachedTx{tx: tx, s: s}, dev: PushDevice{UserID: by.ID}, hlc: s.clock.Tick(), now: now, res: &syncproto.MutationResult{}}
			h, err := a.household(c.HouseholdID)
			if err != nil {
				return fmt.Errorf("resolve: %w", err)
			}
			before := map[string]json.RawMessage{c.Field: h.fields[c.Field]}
			restored := h.deleted
			// Taking a value that lost to a delete brings the household
			// back: a supervisor's decision must land somewhere visible.
			h.deleted = false
			seq, err := logChange(tx, now, "household", h.id, h.place, "put")
			if err != nil {
				return err
			}
			if syncproto.IsNull(set) {
				delete(h.fields, c.Field)
			} else {
				h.fields[c.Field] = set
			}
			h.meta[c.Field] = merge.FieldMeta{HLC: a.hlc, Version: seq, UserID: by.ID}
			if err := a.saveHousehold(h, seq); err != nil {
				return err
			}
			if err := audit(ctx, tx, now, "household.resolve", "household", h.id, h.place, before, map[string]any{c.Field: set, "restored": restored}); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE conflicts SET state = 'resolved', resolution = ?, resolved_by = ?, resolved_at = ? WHERE id = ?`,
			action, by.ID, now, id); err != nil {
			return err
		}
		if _, err := logChange(tx, now, "conflict", id, place, "put"); err != nil {
			return err
		}
		return audit(ctx, tx, now, "conflict.resolve", "conflict", id, place, map[string]any{"state": c.State},
			map[string]any{"state": "resolved", "resolution": action, "field": c.Field, "value": set})
	})
	if err != nil {
		return out, err
	}
	var c *syncproto.Conflict
	var place string
	err = s.readTx(ctx, func(tx *sql.Tx) error {
		var err error
		c, place, err = loadConflict(ctx, tx, id)
		return err
	})
	if err != nil {
		return out, err
	}
	return ConflictRow{Conflict: *c, PlaceCode: place, Resolution: action}, nil
}

// ConflictPlace returns the place of a conflict (for access checks).
func (s *Store) ConflictPlace(ctx context.Context, id string) (string, error) {
	var place string
	err := s.readRow(ctx, `SELECT place_code FROM conflicts WHERE id = ?`, id).Scan(&place)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("conflict %s: %w", id, domain.ErrNotFound)
	}
	return place, err
}
