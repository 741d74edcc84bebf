package sqlstore

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"fieldsync/server/domain"
	"fieldsync/syncproto"
)

// healthBuffer collects what pulls report about devices (outbox health,
// last pull, last complete sync) and writes it in one transaction a
// second, so a no-op pull costs no fsync. What it holds is observation,
// not acknowledged data: a crash loses at most the last second of it.
type healthBuffer struct {
	mu      sync.Mutex
	pending map[string]healthUpdate
}

type healthUpdate struct {
	at       time.Time
	health   *syncproto.OutboxHealth
	complete bool
}

func (s *Store) notePull(deviceID string, h *syncproto.OutboxHealth, complete bool) {
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	if s.health.pending == nil {
		s.health.pending = map[string]healthUpdate{}
	}
	u := s.health.pending[deviceID]
	u.at = s.now()
	if h != nil {
		u.health = h
	}
	u.complete = u.complete || complete
	s.health.pending[deviceID] = u
}

func (s *Store) healthLoop() {
	defer s.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			s.FlushHealth(context.Background())
			return
		case <-t.C:
			s.FlushHealth(context.Background())
		}
	}
}

// FlushHealth writes buffered device observations now.
func (s *Store) FlushHealth(ctx context.Context) error {
	s.health.mu.Lock()
	pending := s.health.pending
	s.health.pending = nil
	s.health.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := s.lockWrites(ctx, tx); err != nil {
		return err
	}
	for id, u := range pending {
		at := domain.Timestamp(u.at)
		var health, appVersion any
		if u.health != nil {
			b, _ := json.Marshal(u.health)
			health, appVersion = string(b), u.health.AppVersion
		}
		var ok any
		if u.complete {
			ok = at
		}
		if _, err := tx.ExecContext(ctx, `UPDATE device_sync SET last_pull_at = ?, last_sync_ok_at = COALESCE(?, last_sync_ok_at),
				health = COALESCE(?, health), health_at = CASE WHEN CAST(? AS TEXT) IS NULL THEN health_at ELSE ? END,
				app_version = COALESCE(NULLIF(?, ''), app_version) WHERE device_id = ?`,
			at, ok, health, health, at, appVersion, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET last_seen_at = ? WHERE id = ?`, at, id); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// StuckDevices lists live devices that report pending work which is older
// than d, or that have not completed a sync for longer than d. A device
// whose pulls succeed while its pushes fail is stuck too: its oldest
// pending item keeps ageing.
func (s *Store) StuckDevices(ctx context.Context, userIDs []int64, d time.Duration) ([]domain.Device, error) {
	all, err := s.Devices(ctx, userIDs)
	if err != nil {
		return nil, err
	}
	cutoff := s.now().Add(-d)
	out := []domain.Device{}
	for _, dev := range all {
		if dev.RevokedAt != nil || len(dev.Health) == 0 {
			continue
		}
		var h syncproto.OutboxHealth
		if json.Unmarshal(dev.Health, &h) != nil || h.PendingMutations+h.PendingBlobs == 0 {
			continue
		}
		oldPending := !h.OldestPending.IsZero() && h.OldestPending.Before(cutoff)
		if oldPending || dev.LastSyncOKAt == nil || dev.LastSyncOKAt.Before(cutoff) {
			out = append(out, dev)
		}
	}
	return out, nil
}
