package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// Proof of possession (migration 0009). Knowing a blob's hash is not
// enough to see it: a visit's link to a blob counts (it fills the slot,
// and lets those who see the visit download the blob) only once the
// visit's device holds the blob: it sent the bytes and the server
// verified them, or the server told it the blob was already stored
// because a held link in its own scope names it (so it could download the
// blob anyway). blob_holders records the devices; visit_evidence.held
// marks the links that count (a trigger sets it for links pushed by a
// device that already holds the blob).

// holdBlobTx records that the device holds the blob and marks its visits'
// links to it held. It returns the visits whose links it marked.
func holdBlobTx(ctx context.Context, tx *sql.Tx, deviceID, sum, now string) ([]string, error) {
	if _, err := tx.ExecContext(ctx, `INSERT INTO blob_holders(sha256, device_id, since) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`, sum, deviceID, now); err != nil {
		return nil, fmt.Errorf("hold blob: %w", err)
	}
	// The links to the blob not held yet (a few: the visits naming it),
	// by whose visit they are on.
	rows, err := tx.QueryContext(ctx, `SELECT DISTINCT ve.visit_id, v.device_id FROM visit_evidence ve JOIN visits v ON v.id = ve.visit_id
		WHERE ve.sha256 = ? AND ve.held = 0 ORDER BY 1`, sum)
	if err != nil {
		return nil, fmt.Errorf("hold blob: %w", err)
	}
	var ids []string
	others := false
	for rows.Next() {
		var id, dev string
		if err := rows.Scan(&id, &dev); err != nil {
			rows.Close()
			return nil, fmt.Errorf("hold blob: %w", err)
		}
		if dev == deviceID {
			ids = append(ids, id)
		} else {
			others = true
		}
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("hold blob: %w", err)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("hold blob: %w", err)
	}
	// Links this device made on others' visits, by evidence.attach. The
	// search reads the device's mutation results (all of them: kind is
	// not indexed), so it runs only when another device's visit has an
	// unheld link to the blob: not on every upload, whose cost would
	// then grow with everything the device ever pushed.
	var attached []string
	if others {
		attached, err = queryStrings(ctx, tx, `SELECT DISTINCT ve.visit_id FROM visit_evidence ve
		WHERE ve.sha256 = ? AND ve.held = 0 AND ve.visit_id IN (
			SELECT (body -> 'evidence_attach' ->> 'visit_id') FROM mutation_results
			WHERE device_id = ? AND kind = 'evidence.attach' AND (result ->> 'status') = 'applied'
			AND (body -> 'evidence_attach' -> 'evidence' ->> 'sha256') = ?) ORDER BY 1`, sum, deviceID, sum)
		if err != nil {
			return nil, fmt.Errorf("hold blob: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE visit_evidence SET held = 1 WHERE sha256 = ? AND held = 0
		AND visit_id IN (SELECT id FROM visits WHERE device_id = ?)`, sum, deviceID); err != nil {
		return nil, fmt.Errorf("hold blob: %w", err)
	}
	for _, id := range attached {
		if _, err := tx.ExecContext(ctx, `UPDATE visit_evidence SET held = 1 WHERE sha256 = ? AND visit_id = ?`, sum, id); err != nil {
			return nil, fmt.Errorf("hold blob: %w", err)
		}
	}
	return append(ids, attached...), nil
}

// holdAttachedLink marks a link that a device has just attached to a
// visit (possibly another device's) held if the device holds the blob
// (the trigger of migration 0009 looks only at the visit's device).
func holdAttachedLink(ctx context.Context, x interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
}, deviceID, visitID, sum string) error {
	if _, err := x.ExecContext(ctx, `UPDATE visit_evidence SET held = 1 WHERE visit_id = ? AND sha256 = ? AND held = 0
		AND EXISTS (SELECT 1 FROM blob_holders WHERE sha256 = ? AND device_id = ?)`, visitID, sum, sum, deviceID); err != nil {
		return fmt.Errorf("hold attached link: %w", err)
	}
	return nil
}

// recheckHeld runs the evidence checks of visits whose links became held.
func (s *Store) recheckHeld(ctx context.Context, visitIDs []string) error {
	var errs []error
	for _, id := range visitIDs {
		errs = append(errs, s.RunEvidenceChecks(ctx, id))
	}
	return errors.Join(errs...)
}

// deviceScope returns the places the device's user may see.
func (s *Store) deviceScope(ctx context.Context, deviceID string) (map[string]bool, error) {
	var userID int64
	err := s.readRow(ctx, `SELECT user_id FROM devices WHERE id = ? AND revoked_at IS NULL`, deviceID).Scan(&userID)
	if errors.Is(err, sql.ErrNoRows) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, err
	}
	roots, err := userPlaces(ctx, s.r, userID)
	if err != nil {
		return nil, err
	}
	return subtree(ctx, s.r, roots)
}

// heldBlobPlaces maps each present blob of sums to the places of the
// visits whose links to it are held.
func (s *Store) heldBlobPlaces(ctx context.Context, sums []string) (map[string][]string, error) {
	list, err := json.Marshal(sums)
	if err != nil {
		return nil, err
	}
	rows, err := s.readRows(ctx, `SELECT DISTINCT ve.sha256, v.place_code
		FROM visit_evidence ve JOIN visits v ON v.id = ve.visit_id JOIN blobs b ON b.sha256 = ve.sha256
		WHERE ve.held = 1 AND ve.sha256 IN (SELECT value FROM json_each(?))`, string(list))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var sum, place string
		if err := rows.Scan(&sum, &place); err != nil {
			return nil, err
		}
		out[sum] = append(out[sum], place)
	}
	return out, rows.Err()
}

// MissingBlobsFor answers /evidence/missing for a device: the hashes of
// sums (in order, without duplicates) that are not present as far as the
// device may know, that is all but the present blobs that a held link in
// the device's scope names. The device is recorded as holding those
// (it may download them), so that its own links to them count without
// an upload. Whether any other blob exists is not told.
func (s *Store) MissingBlobsFor(ctx context.Context, deviceID string, sums []string) ([]string, error) {
	scope, err := s.deviceScope(ctx, deviceID)
	if err != nil {
		return nil, fmt.Errorf("missing blobs: %w", err)
	}
	places, err := s.heldBlobPlaces(ctx, sums)
	if err != nil {
		return nil, fmt.Errorf("missing blobs: %w", err)
	}
	missing := []string{}
	var have []string
	seen := map[string]bool{}
	for _, sum := range sums {
		if seen[sum] {
			continue
		}
		seen[sum] = true
		visible := false
		for _, pl := range places[sum] {
			if scope[pl] {
				visible = true
				break
			}
		}
		if visible {
			have = append(have, sum)
		} else {
			missing = append(missing, sum)
		}
	}
	if len(have) > 0 {
		var held []string
		now := s.ts()
		err := s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
			held = nil
			for _, sum := range have {
				ids, err := holdBlobTx(ctx, tx, deviceID, sum, now)
				if err != nil {
					return err
				}
				held = append(held, ids...)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("missing blobs: %w", err)
		}
		if err := s.recheckHeld(ctx, held); err != nil {
			return nil, fmt.Errorf("missing blobs: %w", err)
		}
	}
	return missing, nil
}

// ClaimPresentBlob implements upload.Store.
func (s *Store) ClaimPresentBlob(ctx context.Context, deviceID, sum string) (bool, error) {
	missing, err := s.MissingBlobsFor(ctx, deviceID, []string{sum})
	if err != nil {
		return false, err
	}
	return len(missing) == 0, nil
}
