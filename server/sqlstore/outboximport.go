package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"fieldsync/server/domain"
	"fieldsync/server/upload"
)

// What an administrator's import of a device's outbox file needs
// (server/outboximport): the device whatever its state, and a way to record
// the blobs the file carried as held by that device.

// DeviceAnyState returns a device by id, revoked or not, with its user's
// name and the last sequence number the server applied for it.
func (s *Store) DeviceAnyState(ctx context.Context, id string) (domain.Device, error) {
	var d domain.Device
	var created string
	var revoked sql.NullString
	err := s.readRow(ctx, `SELECT d.id, d.user_id, u.username, d.name, d.created_at, d.revoked_at, COALESCE(ds.last_seq, 0)
		FROM devices d JOIN users u ON u.id = d.user_id LEFT JOIN device_sync ds ON ds.device_id = d.id WHERE d.id = ?`, id).
		Scan(&d.ID, &d.UserID, &d.Username, &d.Name, &created, &revoked, &d.LastSeq)
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("device %s: %w", id, domain.ErrNotFound)
	}
	if err != nil {
		return d, fmt.Errorf("device %s: %w", id, err)
	}
	d.CreatedAt = domain.ParseTimestamp(created)
	d.RevokedAt = nullTime(revoked)
	return d, nil
}

// DeviceHoldsBlob reports whether the blob is recorded and the device
// holds it (it sent the bytes, or was told they were there).
func (s *Store) DeviceHoldsBlob(ctx context.Context, deviceID, sum string) (bool, error) {
	var ok bool
	err := s.readRow(ctx, `SELECT EXISTS (SELECT 1 FROM blobs b JOIN blob_holders h ON h.sha256 = b.sha256
		WHERE b.sha256 = ? AND h.device_id = ?)`, sum, deviceID).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("blob held: %w", err)
	}
	return ok, nil
}

// RecordImportedBlob records a blob already put into the blob store whose
// bytes came, verified, from the device's outbox file: the blob row (kept
// if already there) and the device as its holder, in one transaction, as
// CompleteUpload does for an upload. The evidence checks of the visits
// whose links became held run afterwards. fresh reports a new blob row.
func (s *Store) RecordImportedBlob(ctx context.Context, deviceID string, b upload.Blob) (fresh bool, err error) {
	var held []string
	err = s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		held = nil
		var err error
		if fresh, err = insertBlobTx(ctx, tx, b); err != nil {
			return err
		}
		if held, err = holdBlobTx(ctx, tx, deviceID, b.SHA256, domain.Timestamp(b.StoredAt)); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	if fresh {
		s.indexHashes(b.SHA256, nil, hashesOf(b.Meta))
		// Every visit naming a new blob: its checks have not run with it.
		return true, s.BlobArrived(ctx, b.SHA256)
	}
	return false, s.recheckHeld(ctx, held)
}

// AuditAs records an event not tied to a store change (an administrator's
// import) under the given actor.
func (s *Store) AuditAs(ctx context.Context, actor domain.Actor, action, entityType, entityID string, details any) error {
	return s.Audit(domain.WithActor(ctx, actor), action, entityType, entityID, "", details)
}
