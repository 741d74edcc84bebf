package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"fieldsync/server/domain"
	"fieldsync/syncproto"
)

// PublishForm stores def as the next version of its form and returns it
// with the version set. Earlier versions are never changed (a trigger
// refuses updates of published rows).
func (s *Store) PublishForm(ctx context.Context, def syncproto.FormDef, by int64) (syncproto.FormDef, error) {
	if err := def.Check(); err != nil {
		return def, fmt.Errorf("form %s: %w: %w", def.ID, domain.ErrInvalid, err)
	}
	err := s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var cur sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT max(version) FROM forms WHERE id = ?`, def.ID).Scan(&cur); err != nil {
			return err
		}
		def.Version = int(cur.Int64) + 1
		body, err := json.Marshal(def)
		if err != nil {
			return err
		}
		var byArg any
		if by > 0 {
			byArg = by
		}
		now := s.ts()
		if _, err := tx.ExecContext(ctx, `INSERT INTO forms(id, version, title, definition, published_at, published_by) VALUES (?, ?, ?, ?, ?, ?)`,
			def.ID, def.Version, def.Title, string(body), now, byArg); err != nil {
			return fmt.Errorf("form %s: %w", def.ID, err)
		}
		if _, err = logChange(tx, now, "form", fmt.Sprintf("%s@%d", def.ID, def.Version), "", "put"); err != nil {
			return err
		}
		return audit(ctx, tx, now, "form.publish", "form", def.ID, "", nil, map[string]any{"version": def.Version, "title": def.Title})
	})
	return def, err
}

// Form returns one version of a form (version 0: the latest).
func (s *Store) Form(ctx context.Context, id string, version int) (syncproto.FormDef, error) {
	var def syncproto.FormDef
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		var err error
		def, err = formBy(ctx, tx, id, version)
		return err
	})
	return def, err
}

// formCache holds parsed form versions. Published versions never change,
// so an entry never goes stale.
type formCache struct {
	mu sync.RWMutex
	m  map[string]*syncproto.FormDef
}

// peekForm returns a form version if it is already in the cache (no
// database access), else nil.
func (s *Store) peekForm(id string, version int) *syncproto.FormDef {
	s.forms.mu.RLock()
	defer s.forms.mu.RUnlock()
	return s.forms.m[fmt.Sprintf("%s@%d", id, version)]
}

// cachedForm returns a published form version, parsed once.
func (s *Store) cachedForm(ctx context.Context, q querier, id string, version int) (*syncproto.FormDef, error) {
	key := fmt.Sprintf("%s@%d", id, version)
	s.forms.mu.RLock()
	f := s.forms.m[key]
	s.forms.mu.RUnlock()
	if f != nil {
		return f, nil
	}
	def, err := formBy(ctx, q, id, version)
	if err != nil {
		return nil, err
	}
	s.forms.mu.Lock()
	if s.forms.m == nil {
		s.forms.m = map[string]*syncproto.FormDef{}
	}
	s.forms.m[key] = &def
	s.forms.mu.Unlock()
	return &def, nil
}

func formBy(ctx context.Context, q querier, id string, version int) (syncproto.FormDef, error) {
	var body string
	var err error
	if version <= 0 {
		err = q.QueryRowContext(ctx, `SELECT definition FROM forms WHERE id = ? ORDER BY version DESC LIMIT 1`, id).Scan(&body)
	} else {
		err = q.QueryRowContext(ctx, `SELECT definition FROM forms WHERE id = ? AND version = ?`, id, version).Scan(&body)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return syncproto.FormDef{}, fmt.Errorf("form %s@%d: %w", id, version, domain.ErrNotFound)
	}
	if err != nil {
		return syncproto.FormDef{}, err
	}
	var def syncproto.FormDef
	if err := json.Unmarshal([]byte(body), &def); err != nil {
		return def, fmt.Errorf("form %s: stored definition: %w", id, err)
	}
	return def, nil
}

// Forms lists every version of every form (latestOnly: the newest of each).
func (s *Store) Forms(ctx context.Context, latestOnly bool) ([]syncproto.FormDef, error) {
	q := `SELECT definition FROM forms ORDER BY id, version`
	if latestOnly {
		q = `SELECT definition FROM forms f WHERE version = (SELECT max(version) FROM forms g WHERE g.id = f.id) ORDER BY id`
	}
	rows, err := s.readRows(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("forms: %w", err)
	}
	defer rows.Close()
	var out []syncproto.FormDef
	for rows.Next() {
		var body string
		if err := rows.Scan(&body); err != nil {
			return nil, err
		}
		var def syncproto.FormDef
		if err := json.Unmarshal([]byte(body), &def); err != nil {
			return nil, err
		}
		out = append(out, def)
	}
	return out, rows.Err()
}
