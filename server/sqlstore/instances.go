package sqlstore

// Several instances on one database (PostgreSQL). What each Store keeps in
// memory, and why it stays right when other instances write:
//
//   - The analysis queue is the blobs table: an instance claims blobs with
//     a lease (ClaimBlobsForAnalysis) before it analyses them, so each is
//     analysed once; a claim whose instance died expires and is taken over.
//   - Periodic sweeps take a cluster-wide lock (TrySingleton:
//     pg_try_advisory_lock), so one instance at a time runs each.
//   - The epoch is read again by every pull on PostgreSQL, in the pull's
//     own snapshot (currentEpoch): a NewEpoch on any instance resets the
//     cursors that every instance answers from then on. A changed epoch
//     means the database was replaced (a restore), so it also drops the
//     caches below and rebuilds the near-duplicate index.
//   - The cursor key is made once, by whichever instance started first
//     (INSERT ... ON CONFLICT DO NOTHING, then read back), and never
//     changes: every instance holds the same one.
//   - The form cache holds published form versions, which never change (a
//     trigger refuses updates), keyed by id and version: another
//     instance's new version is a new key, read from the database.
//   - The boundary cache is keyed by place and the place's updated_at,
//     which the checks read from the database each time and every edit
//     of a place moves: another instance's edit is a cache miss.
//   - The near-duplicate index is loaded at Open and follows this
//     instance's writes at once; on PostgreSQL, refreshNearIndex adds the
//     hashes other instances recorded (hash_seq, commit-ordered) before
//     each near-duplicate query. An entry left stale by another
//     instance's re-analysis that moved a hash only makes that blob a
//     candidate: candidates are compared with their hashes as stored.
//   - The evidence thresholds (SetEvidenceConfig) come from each
//     instance's configuration: start every instance with the same.

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"fieldsync/server/domain"
	"fieldsync/server/sqlstore/pgsql"
	"fieldsync/server/upload"
)

// newInstanceID names this Store in analysis claims: the host and a
// random part (several Stores may share a host and a process).
func newInstanceID() string {
	host, _ := os.Hostname()
	if len(host) > 64 {
		host = host[:64]
	}
	return host + "/" + randomHex(8)
}

// releaseStaleClaims gives back, when the store opens, the analysis
// claims of an earlier run of this instance: on SQLite every claim (one
// process owns the database, so any claim is a dead process's); on
// PostgreSQL those under this instance's id (Config.InstanceID).
// Claims given back with a retry delay (no owner) keep their delay.
func (s *Store) releaseStaleClaims(ctx context.Context) error {
	q, args := `UPDATE blobs SET analysis_owner = NULL, analysis_lease_until = NULL
		WHERE analysis_owner IS NOT NULL AND analyzed_at IS NULL`, []any(nil)
	if s.pg {
		q, args = q+` AND analysis_owner = ?`, []any{s.instance}
	}
	if _, err := s.w.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("sqlstore: release stale analysis claims: %w", err)
	}
	return nil
}

// Instance returns this Store's id as analysis claims name it.
func (s *Store) Instance() string { return s.instance }

// The claim: the oldest free (or expired) unanalysed blobs. On
// PostgreSQL the rows are locked (SKIP LOCKED: a row another transaction
// is claiming is left to it); writes are serialised by the writer lock as
// well, so either alone would keep two instances from claiming one blob.
const (
	claimBlobsSQL = `UPDATE blobs SET analysis_owner = ?, analysis_lease_until = ?
		WHERE sha256 IN (SELECT sha256 FROM blobs WHERE analyzed_at IS NULL
			AND (analysis_lease_until IS NULL OR analysis_lease_until < ?)
			ORDER BY stored_at, sha256 LIMIT ?)
		RETURNING sha256, size, media_type, stored_at`
	claimBlobsPG = `UPDATE blobs SET analysis_owner = ?, analysis_lease_until = ?
		WHERE sha256 IN (SELECT sha256 FROM blobs WHERE analyzed_at IS NULL
			AND (analysis_lease_until IS NULL OR analysis_lease_until < ?)
			ORDER BY stored_at, sha256 LIMIT ? FOR UPDATE SKIP LOCKED)
		RETURNING sha256, size, media_type, stored_at`
)

// ClaimBlobsForAnalysis implements upload.Store: up to limit unanalysed
// blobs that no instance holds, or whose lease has passed, oldest first,
// now held by this Store until lease has passed. Lease times are the
// store clock's (Config.Now); instances' clocks must agree to well within
// a lease.
func (s *Store) ClaimBlobsForAnalysis(ctx context.Context, limit int, lease time.Duration) ([]upload.Blob, error) {
	if limit <= 0 {
		return nil, nil
	}
	q := claimBlobsSQL
	if s.pg {
		q = claimBlobsPG
	}
	var out []upload.Blob
	err := s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		out = out[:0] // the writer may run a job again
		now := s.now()
		rows, err := tx.QueryContext(ctx, q, s.instance, sortableTS(now.Add(lease)), sortableTS(now), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var b upload.Blob
			var stored string
			if err := rows.Scan(&b.SHA256, &b.Size, &b.MediaType, &stored); err != nil {
				return err
			}
			b.StoredAt = domain.ParseTimestamp(stored)
			out = append(out, b)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("claim blobs for analysis: %w", err)
	}
	slices.SortFunc(out, func(a, b upload.Blob) int {
		if c := a.StoredAt.Compare(b.StoredAt); c != 0 {
			return c
		}
		return strings.Compare(a.SHA256, b.SHA256)
	})
	return out, nil
}

// ReleaseBlobClaims implements upload.Store: this Store's claims on sums
// (those not analysed meanwhile) end; any instance may claim them again
// after retryIn (0: at once).
func (s *Store) ReleaseBlobClaims(ctx context.Context, sums []string, retryIn time.Duration) error {
	if len(sums) == 0 {
		return nil
	}
	var until any
	if retryIn > 0 {
		until = sortableTS(s.now().Add(retryIn))
	}
	if _, err := s.writeExec(ctx, `UPDATE blobs SET analysis_owner = NULL, analysis_lease_until = ?
		WHERE sha256 IN (SELECT value FROM json_each(?)) AND analysis_owner = ? AND analyzed_at IS NULL`,
		until, jsonList(sums), s.instance); err != nil {
		return fmt.Errorf("release blob claims: %w", err)
	}
	return nil
}

// singletonClass is the first key of TrySingleton's advisory locks (the
// two-key form, whose key space is apart from the migrations' one-key
// lock); the second is a hash of the name.
const singletonClass int32 = 0x66736a62 // "fsjb"

func singletonKey(name string) int32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return int32(h.Sum32())
}

// TrySingleton implements store.Singletons. On PostgreSQL it takes the
// session advisory lock (singletonClass, hash of name) with
// pg_try_advisory_lock on a connection of its own, held until release
// (or until the connection ends: an instance that dies lets go). On
// SQLite one process owns the database, and ok is always true.
func (s *Store) TrySingleton(ctx context.Context, name string) (release func(), ok bool, err error) {
	if !s.pg {
		return func() {}, true, nil
	}
	db, err := pgsql.Open(s.cfg.PostgresURL, pgsql.Options{MaxConns: 1})
	if err != nil {
		return nil, false, fmt.Errorf("singleton %s: %w", name, err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, false, fmt.Errorf("singleton %s: %w: %w", name, domain.ErrUnavailable, err)
	}
	key := singletonKey(name)
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock(?, ?)`, singletonClass, key).Scan(&ok); err != nil || !ok {
		conn.Close()
		db.Close()
		if err != nil {
			return nil, false, fmt.Errorf("singleton %s: %w", name, err)
		}
		return nil, false, nil
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var released bool
			_ = conn.QueryRowContext(uctx, `SELECT pg_advisory_unlock(?, ?)`, singletonClass, key).Scan(&released)
			conn.Close() // ending the session releases the lock anyway
			db.Close()
		})
	}, true, nil
}

// currentEpoch returns the epoch that a pull reading through q must use:
// on PostgreSQL the database's, read in q's snapshot (another instance
// may have started a new one); on SQLite this process's own, which is the
// database's (one process owns it).
func (s *Store) currentEpoch(ctx context.Context, q querier) (string, error) {
	if !s.pg {
		return s.Epoch(), nil
	}
	var e string
	if err := q.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'epoch'`).Scan(&e); err != nil {
		return "", fmt.Errorf("epoch: %w", err)
	}
	s.noteEpoch(e)
	return e, nil
}

// noteEpoch records the database's epoch; a change after the first (the
// database was replaced under this instance) drops what this instance
// keeps of the old one: parsed forms and boundaries, and the
// near-duplicate index (rebuilt by the next refreshNearIndex).
func (s *Store) noteEpoch(e string) {
	s.epochMu.Lock()
	changed := s.epoch != "" && s.epoch != e
	s.epoch = e
	s.epochMu.Unlock()
	if !changed {
		return
	}
	s.forms.mu.Lock()
	s.forms.m = nil
	s.forms.mu.Unlock()
	s.boundaries.mu.Lock()
	s.boundaries.m = nil
	s.boundaries.mu.Unlock()
	s.nearMu.Lock()
	s.nearReload = s.pg
	s.nearMu.Unlock()
}

// nextHashSeq is the hash_seq of a write of a blob's hashes (see
// refreshNearIndex).
const nextHashSeq = `(SELECT COALESCE(max(hash_seq), 0) + 1 FROM blobs)`

// nearRefreshBatch bounds the rows one refresh query reads, and
// nearRefreshRounds the queries one refresh runs (the rest waits for the
// next refresh).
const (
	nearRefreshBatch  = 1000
	nearRefreshRounds = 20
)

// refreshNearIndex adds to the near-duplicate index, on PostgreSQL, the
// photo hashes that any instance recorded since the last refresh. Writes
// are serialised (every write transaction takes the sync_head row lock
// first, and runs at READ COMMITTED) and each write of a blob's hashes
// sets its hash_seq to the table's highest plus one, so hash_seq follows
// commit order: a row committed after a refresh read up to n has a
// hash_seq above n, and the next refresh finds it. On SQLite this process
// is the only writer and indexHashes keeps the index current.
func (s *Store) refreshNearIndex(ctx context.Context) error {
	if !s.pg {
		return nil
	}
	s.nearMu.Lock()
	defer s.nearMu.Unlock()
	if s.nearReload {
		var idx *nearIndex
		var seq int64
		err := s.readTx(ctx, func(tx *sql.Tx) error {
			var err error
			idx, seq, err = buildNearIndex(ctx, tx)
			return err
		})
		if err != nil {
			return err
		}
		s.near.Store(idx)
		s.nearSeq, s.nearReload = seq, false
		return nil
	}
	near := s.near.Load()
	for range nearRefreshRounds {
		type row struct {
			key hashKey
			h   uint64
		}
		var rows []row
		seq := s.nearSeq
		n := 0
		err := s.readTx(ctx, func(tx *sql.Tx) error {
			rows, seq, n = rows[:0], s.nearSeq, 0
			rs, err := tx.QueryContext(ctx, `SELECT sha256, hash_seq, phash FROM blobs
				WHERE hash_seq > ? AND phash IS NOT NULL ORDER BY hash_seq LIMIT ?`, s.nearSeq, nearRefreshBatch)
			if err != nil {
				return err
			}
			var sums []string
			for rs.Next() {
				var sum string
				var hs, ph int64
				if err := rs.Scan(&sum, &hs, &ph); err != nil {
					rs.Close()
					return err
				}
				n++
				seq = max(seq, hs)
				if k, ok := keyOf(sum); ok {
					rows = append(rows, row{hashKey{k, 0}, uint64(ph)})
					sums = append(sums, sum)
				}
			}
			rs.Close()
			if err := rs.Err(); err != nil {
				return err
			}
			if len(sums) == 0 {
				return nil
			}
			rs, err = tx.QueryContext(ctx, `SELECT sha256, variant, phash FROM blob_crop_hashes
				WHERE sha256 IN (SELECT value FROM json_each(?)) AND variant <= ?`, jsonList(sums), indexedVariants)
			if err != nil {
				return err
			}
			defer rs.Close()
			for rs.Next() {
				var sum string
				var variant uint8
				var ph int64
				if err := rs.Scan(&sum, &variant, &ph); err != nil {
					return err
				}
				if k, ok := keyOf(sum); ok {
					rows = append(rows, row{hashKey{k, variant}, uint64(ph)})
				}
			}
			return rs.Err()
		})
		if err != nil {
			return fmt.Errorf("near-duplicate index: %w", err)
		}
		for _, r := range rows {
			near.Add(r.key, r.h) // already there with this hash: nothing changes
		}
		s.nearSeq = seq
		if n < nearRefreshBatch {
			return nil
		}
	}
	return nil
}
