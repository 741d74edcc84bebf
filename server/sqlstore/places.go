package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"

	"fieldsync/server/domain"
	"fieldsync/server/geo"
)

// ValidPlaceCode reports whether code is a usable place code.
func ValidPlaceCode(code string) bool {
	if len(code) == 0 || len(code) > 32 {
		return false
	}
	for _, c := range code {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// UpsertPlaces imports places in one transaction: all or nothing. Parents
// must exist already or come in the same batch; a child is one level below
// its parent (a group or grid may hang directly under a village).
func (s *Store) UpsertPlaces(ctx context.Context, places []domain.Place) error {
	for _, p := range places {
		if !ValidPlaceCode(p.Code) {
			return fmt.Errorf("place %q: bad code: %w", p.Code, domain.ErrInvalid)
		}
		if strings.TrimSpace(p.Name) == "" || len(p.Name) > 200 {
			return fmt.Errorf("place %s: name required (≤200 bytes): %w", p.Code, domain.ErrInvalid)
		}
		if domain.LevelIndex(p.Level) < 0 {
			return fmt.Errorf("place %s: level %q not one of %v: %w", p.Code, p.Level, domain.Levels, domain.ErrInvalid)
		}
		if len(p.Boundary) > 0 && string(p.Boundary) != "null" {
			if _, err := geo.ParseBoundary(p.Boundary); err != nil {
				return fmt.Errorf("place %s: %w", p.Code, err)
			}
		}
	}
	sorted := append([]domain.Place(nil), places...)
	sort.SliceStable(sorted, func(i, j int) bool {
		return domain.LevelIndex(sorted[i].Level) < domain.LevelIndex(sorted[j].Level)
	})
	now := s.ts()
	return s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for _, p := range sorted {
			path := "/" + p.Code + "/"
			if p.ParentCode != "" {
				var ppath, plevel string
				err := tx.QueryRowContext(ctx, `SELECT path, level FROM places WHERE code = ?`, p.ParentCode).Scan(&ppath, &plevel)
				if errors.Is(err, sql.ErrNoRows) {
					return fmt.Errorf("place %s: parent %s: %w", p.Code, p.ParentCode, domain.ErrNotFound)
				}
				if err != nil {
					return err
				}
				if domain.LevelIndex(p.Level) != domain.LevelIndex(plevel)+1 {
					return fmt.Errorf("place %s (%s) cannot sit under %s (%s): %w", p.Code, p.Level, p.ParentCode, plevel, domain.ErrInvalid)
				}
				if strings.Contains(ppath, "/"+p.Code+"/") {
					return fmt.Errorf("place %s: would be its own ancestor: %w", p.Code, domain.ErrInvalid)
				}
				path = ppath + p.Code + "/"
			} else if p.Level != domain.Levels[0] {
				return fmt.Errorf("place %s: only a county may have no parent: %w", p.Code, domain.ErrInvalid)
			}
			var boundary any
			var minLon, minLat, maxLon, maxLat any
			if len(p.Boundary) > 0 && string(p.Boundary) != "null" {
				g, _ := geo.ParseBoundary(p.Boundary)
				b := g.Bound()
				boundary = string(geo.Marshal(g))
				minLon, minLat, maxLon, maxLat = b.Min[0], b.Min[1], b.Max[0], b.Max[1]
			}
			var oldPath, oldName, oldParent string
			err := tx.QueryRowContext(ctx, `SELECT path, name, COALESCE(parent_code, '') FROM places WHERE code = ?`, p.Code).Scan(&oldPath, &oldName, &oldParent)
			var before any
			if err == nil {
				before = map[string]string{"name": oldName, "parent_code": oldParent}
			}
			switch {
			case errors.Is(err, sql.ErrNoRows):
				_, err = tx.ExecContext(ctx, `INSERT INTO places(code, name, level, parent_code, path, boundary, min_lon, min_lat, max_lon, max_lat, created_at, updated_at)
					VALUES (?, ?, ?, NULLIF(?, ''), ?, ?, ?, ?, ?, ?, ?, ?)`,
					p.Code, p.Name, p.Level, p.ParentCode, path, boundary, minLon, minLat, maxLon, maxLat, now, now)
			case err == nil:
				_, err = tx.ExecContext(ctx, `UPDATE places SET name = ?, level = ?, parent_code = NULLIF(?, ''), path = ?, boundary = ?,
					min_lon = ?, min_lat = ?, max_lon = ?, max_lat = ?, updated_at = ? WHERE code = ?`,
					p.Name, p.Level, p.ParentCode, path, boundary, minLon, minLat, maxLon, maxLat, now, p.Code)
				if err == nil && oldPath != path {
					// A plain prefix comparison, not LIKE: a code may hold
					// % or _, which LIKE would read as wildcards.
					_, err = tx.ExecContext(ctx, `UPDATE places SET path = ?1 || substr(path, length(?2) + 1)
						WHERE substr(path, 1, length(?2)) = ?2 AND code != ?3`,
						path, oldPath, p.Code)
				}
			}
			if err != nil {
				return fmt.Errorf("place %s: %w", p.Code, err)
			}
			if _, err := logChange(tx, now, "place", p.Code, p.Code, "put"); err != nil {
				return err
			}
			after := map[string]any{"name": p.Name, "parent_code": p.ParentCode, "level": p.Level, "has_boundary": boundary != nil}
			if err := audit(ctx, tx, now, "place.upsert", "place", p.Code, p.Code, before, after); err != nil {
				return err
			}
		}
		return nil
	})
}

const placeCols = `code, name, level, COALESCE(parent_code, ''), path, COALESCE(boundary, ''), updated_at`

func scanPlace(sc interface{ Scan(...any) error }) (domain.Place, error) {
	var p domain.Place
	var boundary, updated string
	if err := sc.Scan(&p.Code, &p.Name, &p.Level, &p.ParentCode, &p.Path, &boundary, &updated); err != nil {
		return p, err
	}
	if boundary != "" {
		p.Boundary = []byte(boundary)
	}
	p.UpdatedAt = domain.ParseTimestamp(updated)
	return p, nil
}

// Place returns one place.
func (s *Store) Place(ctx context.Context, code string) (domain.Place, error) {
	p, err := scanPlace(s.readRow(ctx, `SELECT `+placeCols+` FROM places WHERE code = ?`, code))
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("place %s: %w", code, domain.ErrNotFound)
	}
	return p, err
}

// Places lists places in tree order. With roots set, only those places'
// subtrees; with withAncestors, also the ancestors of the roots (a device
// needs them to draw its place names).
func (s *Store) Places(ctx context.Context, roots []string, withAncestors bool) ([]domain.Place, error) {
	if roots == nil {
		return s.queryPlaces(ctx, `SELECT `+placeCols+` FROM places ORDER BY path`)
	}
	seen := map[string]bool{}
	var out []domain.Place
	for _, root := range roots {
		rp, err := s.Place(ctx, root)
		if errors.Is(err, domain.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		ps, err := s.queryPlaces(ctx, `SELECT `+placeCols+` FROM places WHERE path >= ? AND path < ? ORDER BY path`, rp.Path, pathEnd(rp.Path))
		if err != nil {
			return nil, err
		}
		if withAncestors {
			codes := strings.Split(strings.Trim(rp.Path, "/"), "/")
			for _, c := range codes[:len(codes)-1] {
				if !seen[c] {
					a, err := s.Place(ctx, c)
					if err == nil {
						seen[c] = true
						out = append(out, a)
					}
				}
			}
		}
		for _, p := range ps {
			if !seen[p.Code] {
				seen[p.Code] = true
				out = append(out, p)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func (s *Store) queryPlaces(ctx context.Context, q string, args ...any) ([]domain.Place, error) {
	rows, err := s.readRows(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("places: %w", err)
	}
	defer rows.Close()
	var out []domain.Place
	for rows.Next() {
		p, err := scanPlace(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// Subtree returns the codes of root and all its descendants.
func (s *Store) Subtree(ctx context.Context, roots []string) (map[string]bool, error) {
	var out map[string]bool
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = subtree(ctx, tx, roots)
		return err
	})
	return out, err
}

type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func subtree(ctx context.Context, q querier, roots []string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, root := range roots {
		var path string
		err := q.QueryRowContext(ctx, `SELECT path FROM places WHERE code = ?`, root).Scan(&path)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, err
		}
		rows, err := q.QueryContext(ctx, `SELECT code FROM places WHERE path >= ? AND path < ?`, path, pathEnd(path))
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var c string
			if err := rows.Scan(&c); err != nil {
				rows.Close()
				return nil, err
			}
			out[c] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// pathEnd is the exclusive upper bound of the subtree at path: every path
// that starts with path sorts in [path, pathEnd(path)). A path ends in
// "/", so the bound replaces that slash with "0", the next byte; the bound
// stays valid UTF-8, which PostgreSQL requires of text.
func pathEnd(path string) string {
	if strings.HasSuffix(path, "/") {
		return path[:len(path)-1] + "0"
	}
	return path + "\U0010FFFF"
}
