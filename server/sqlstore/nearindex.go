package sqlstore

import (
	"context"
	"encoding/hex"
	"fmt"

	"fieldsync/server/evidence"
)

// blobKey is a blob's SHA-256 as the near-duplicate index keys it (32
// bytes, not 64 hex characters: the index holds every photo's hashes).
type blobKey [32]byte

// hashKey is one indexed hash: a blob and which of its hashes (0: the
// whole picture, i: its centred crop evidence.CropFractions[i-1]).
type hashKey struct {
	sum     blobKey
	variant uint8
}

func keyOf(sum string) (blobKey, bool) {
	var k blobKey
	if len(sum) != 2*len(k) {
		return k, false
	}
	_, err := hex.Decode(k[:], []byte(sum))
	return k, err == nil
}

// hashesOf lists m's perceptual hashes in variant order: the whole
// picture's, then its crops' (nil if it has none).
func hashesOf(m evidence.Meta) []uint64 {
	if m.PHash == nil {
		return nil
	}
	return append([]uint64{*m.PHash}, m.CropHashes...)
}

// loadNearIndex fills the near-duplicate index from every blob that has a
// perceptual hash, and its crop hashes. Open calls it; afterwards the
// index follows this instance's writes (insertBlobTx's callers and
// BlobAnalysed) once they commit, and, on PostgreSQL, other instances'
// writes too: refreshNearIndex adds the hashes recorded since (hash_seq).
func (s *Store) loadNearIndex(ctx context.Context) error {
	idx, seq, err := buildNearIndex(ctx, s.w)
	if err != nil {
		return err
	}
	s.nearMu.Lock()
	s.near.Store(idx)
	s.nearSeq = seq
	s.nearMu.Unlock()
	return nil
}

// buildNearIndex reads every photo's hashes through q into a new index,
// and the highest hash_seq that it includes (read first: a row written
// meanwhile has a higher one, and refreshNearIndex adds it again, which
// changes nothing).
func buildNearIndex(ctx context.Context, q querier) (*evidence.HashIndex[hashKey], int64, error) {
	var seq int64
	if err := q.QueryRowContext(ctx, `SELECT COALESCE(max(hash_seq), 0) FROM blobs`).Scan(&seq); err != nil {
		return nil, 0, fmt.Errorf("sqlstore: load photo hashes: %w", err)
	}
	idx := evidence.NewHashIndex[hashKey]()
	for _, query := range []string{
		`SELECT sha256, 0, phash FROM blobs WHERE phash IS NOT NULL`,
		`SELECT c.sha256, c.variant, c.phash FROM blob_crop_hashes c JOIN blobs b ON b.sha256 = c.sha256 WHERE b.phash IS NOT NULL`,
	} {
		if err := loadHashes(ctx, q, idx, query); err != nil {
			return nil, 0, fmt.Errorf("sqlstore: load photo hashes: %w", err)
		}
	}
	return idx, seq, nil
}

func loadHashes(ctx context.Context, q querier, idx *evidence.HashIndex[hashKey], query string) error {
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	// In chunks (AddNew sorts once per chunk): the rows are the table's,
	// so no key is in the index twice.
	const chunk = 100_000
	var keys []hashKey
	var hs []uint64
	for rows.Next() {
		var sum string
		var variant uint8
		var ph int64
		if err := rows.Scan(&sum, &variant, &ph); err != nil {
			return err
		}
		if k, ok := keyOf(sum); ok {
			keys, hs = append(keys, hashKey{k, variant}), append(hs, uint64(ph))
		}
		if len(keys) == chunk {
			idx.AddNew(keys, hs)
			keys, hs = keys[:0], hs[:0]
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	idx.AddNew(keys, hs)
	return nil
}

// indexHashes records in the near-duplicate index that blob sum now has
// the hashes now (hashesOf's order; nil: none) instead of old.
func (s *Store) indexHashes(sum string, old, now []uint64) {
	k, ok := keyOf(sum)
	if !ok {
		return
	}
	near := s.near.Load()
	for i, h := range old {
		if i >= len(now) || now[i] != h {
			near.Remove(hashKey{k, uint8(i)}, h)
		}
	}
	for i, h := range now {
		near.Add(hashKey{k, uint8(i)}, h)
	}
}

// nearHashes returns the blobs, except those in skip, with a hash near
// one of the given photos' (each given as hashesOf lists them): a whole
// picture is compared with every indexed hash, a crop only with whole
// pictures, as evidence.UseDistance does. It reads the in-memory index;
// it used to scan every photo's hash in the database for every new photo.
func (s *Store) nearHashes(photos [][]uint64, skip map[string]bool, maxDist int) []string {
	near := s.near.Load()
	seen := map[blobKey]bool{}
	var out []string
	for _, hs := range photos {
		for v, h := range hs {
			near.Near(h, maxDist, func(k hashKey, _ uint64, _ int) {
				if (v > 0 && k.variant > 0) || seen[k.sum] {
					return
				}
				seen[k.sum] = true
				if sum := hex.EncodeToString(k.sum[:]); !skip[sum] {
					out = append(out, sum)
				}
			})
		}
	}
	return out
}
