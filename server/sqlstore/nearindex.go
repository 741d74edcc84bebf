package sqlstore

import (
	"context"
	"encoding/hex"
	"fmt"

	"fieldsync/server/evidence"
)

// blobKey is a blob's SHA-256 as the near-duplicate index keys it (32
// bytes, not 64 hex characters: the index holds every photo's hash).
type blobKey [32]byte

func keyOf(sum string) (blobKey, bool) {
	var k blobKey
	if len(sum) != 2*len(k) {
		return k, false
	}
	_, err := hex.Decode(k[:], []byte(sum))
	return k, err == nil
}

// loadNearIndex fills the near-duplicate index from every blob that has a
// perceptual hash. Open calls it; afterwards the index follows the writes
// (CompleteUpload and BlobAnalysed) once they commit. It is per process,
// which is right while one process owns the database (the data folder's
// lock).
func (s *Store) loadNearIndex(ctx context.Context) error {
	s.near = evidence.NewHashIndex[blobKey]()
	rows, err := s.w.QueryContext(ctx, `SELECT sha256, phash FROM blobs WHERE phash IS NOT NULL`)
	if err != nil {
		return fmt.Errorf("sqlstore: load photo hashes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var sum string
		var ph int64
		if err := rows.Scan(&sum, &ph); err != nil {
			return fmt.Errorf("sqlstore: load photo hashes: %w", err)
		}
		if k, ok := keyOf(sum); ok {
			s.near.Add(k, uint64(ph))
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sqlstore: load photo hashes: %w", err)
	}
	return nil
}

// indexHash records in the near-duplicate index that blob sum now has the
// perceptual hash now (nil: none) instead of old (nil: none).
func (s *Store) indexHash(sum string, old, now *uint64) {
	k, ok := keyOf(sum)
	if !ok {
		return
	}
	if old != nil && (now == nil || *old != *now) {
		s.near.Remove(k, *old)
	}
	if now != nil {
		s.near.Add(k, *now)
	}
}

// nearHashes returns the blobs whose perceptual hash is within maxDist of
// any of hashes, except those in skip, from the in-memory index (it used
// to scan every photo's hash in the database for every new photo).
func (s *Store) nearHashes(hashes []uint64, skip map[string]bool, maxDist int) []string {
	seen := map[blobKey]bool{}
	var out []string
	for _, h := range hashes {
		s.near.Near(h, maxDist, func(k blobKey, _ uint64, _ int) {
			if seen[k] {
				return
			}
			seen[k] = true
			if sum := hex.EncodeToString(k[:]); !skip[sum] {
				out = append(out, sum)
			}
		})
	}
	return out
}
