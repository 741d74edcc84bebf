package sqlstore

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"

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

// nearIndex is the near-duplicate index: one evidence.HashIndex per
// variant (whole picture, each centred crop), so that a query that only
// wants one variant (a centred crop is compared with whole pictures, an
// off-centre crop with the variant evidence.ShiftCrops names) scans that
// variant's hashes only. It is safe for concurrent use.
type nearIndex struct {
	byVariant [indexedVariants + 1]*evidence.HashIndex[hashKey]
}

func newNearIndex() *nearIndex {
	x := &nearIndex{}
	for v := range x.byVariant {
		x.byVariant[v] = evidence.NewHashIndex[hashKey]()
	}
	return x
}

// of returns the index of k's variant, or nil for a variant not indexed.
func (x *nearIndex) of(k hashKey) *evidence.HashIndex[hashKey] {
	if int(k.variant) >= len(x.byVariant) {
		return nil
	}
	return x.byVariant[k.variant]
}

// Add stores key with hash h (see evidence.HashIndex.Add).
func (x *nearIndex) Add(k hashKey, h uint64) {
	if idx := x.of(k); idx != nil {
		idx.Add(k, h)
	}
}

// Remove deletes key, stored with hash h.
func (x *nearIndex) Remove(k hashKey, h uint64) bool {
	if idx := x.of(k); idx != nil {
		return idx.Remove(k, h)
	}
	return false
}

// AddNew adds entries whose keys are not in x yet (see
// evidence.HashIndex.AddNew).
func (x *nearIndex) AddNew(keys []hashKey, hs []uint64) {
	var byV [indexedVariants + 1]struct {
		keys []hashKey
		hs   []uint64
	}
	for i, k := range keys {
		if int(k.variant) < len(byV) {
			byV[k.variant].keys = append(byV[k.variant].keys, k)
			byV[k.variant].hs = append(byV[k.variant].hs, hs[i])
		}
	}
	for v, b := range byV {
		x.byVariant[v].AddNew(b.keys, b.hs)
	}
}

// Len is the number of indexed hashes.
func (x *nearIndex) Len() int {
	n := 0
	for _, idx := range x.byVariant {
		n += idx.Len()
	}
	return n
}

// Near calls fn for every indexed hash of variant v (all variants if v is
// negative) within maxDist of h.
func (x *nearIndex) Near(v int, h uint64, maxDist int, fn func(k hashKey, hash uint64, dist int)) {
	for i, idx := range x.byVariant {
		if v < 0 || v == i {
			idx.Near(h, maxDist, fn)
		}
	}
}

func keyOf(sum string) (blobKey, bool) {
	var k blobKey
	if len(sum) != 2*len(k) {
		return k, false
	}
	_, err := hex.Decode(k[:], []byte(sum))
	return k, err == nil
}

// indexedVariants is the highest variant the index holds: the whole
// picture (0) and its centred crops. The off-centre crops
// (evidence.ShiftCrops, variants indexedVariants+1, ...) are stored with
// them in blob_crop_hashes but only ever queried with, so the index keeps
// three hashes a photo.
const indexedVariants = len(evidence.CropFractions)

// hashesOf lists m's indexed perceptual hashes in variant order: the whole
// picture's, then its centred crops' (nil if it has none).
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
func buildNearIndex(ctx context.Context, q querier) (*nearIndex, int64, error) {
	var seq int64
	if err := q.QueryRowContext(ctx, `SELECT COALESCE(max(hash_seq), 0) FROM blobs`).Scan(&seq); err != nil {
		return nil, 0, fmt.Errorf("sqlstore: load photo hashes: %w", err)
	}
	idx := newNearIndex()
	for _, query := range []string{
		`SELECT sha256, 0, phash FROM blobs WHERE phash IS NOT NULL`,
		`SELECT c.sha256, c.variant, c.phash FROM blob_crop_hashes c JOIN blobs b ON b.sha256 = c.sha256 WHERE b.phash IS NOT NULL AND c.variant <= ?`,
	} {
		if err := loadHashes(ctx, q, idx, query, indexedVariants); err != nil {
			return nil, 0, fmt.Errorf("sqlstore: load photo hashes: %w", err)
		}
	}
	return idx, seq, nil
}

func loadHashes(ctx context.Context, q querier, idx *nearIndex, query string, args ...any) error {
	rows, err := q.QueryContext(ctx, query, args[:strings.Count(query, "?")]...)
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

// nearHashes is nearUses for photos given as hashesOf lists them (no
// off-centre crops).
func (s *Store) nearHashes(photos [][]uint64, skip map[string]bool, maxDist int) []string {
	uses := make([]evidence.Use, 0, len(photos))
	for _, hs := range photos {
		if len(hs) > 0 {
			uses = append(uses, evidence.Use{PHash: &hs[0], Crops: hs[1:]})
		}
	}
	return s.nearUses(uses, skip, maxDist)
}

// nearUses returns the blobs, except those in skip, with a hash near
// one of the given photos': a whole picture is compared with every indexed
// hash, a centred crop only with whole pictures, and an off-centre crop
// only with the variant evidence.ShiftCrops names (within
// evidence.ShiftPenalty less), as evidence.UseDistance does from the
// query's side. It reads the in-memory index; it used to
// scan every photo's hash in the database for every new photo.
func (s *Store) nearUses(photos []evidence.Use, skip map[string]bool, maxDist int) []string {
	near := s.near.Load()
	seen := map[blobKey]bool{}
	var out []string
	query := func(h uint64, maxDist, variant int) {
		near.Near(variant, h, maxDist, func(k hashKey, _ uint64, _ int) {
			if seen[k.sum] {
				return
			}
			seen[k.sum] = true
			if sum := hex.EncodeToString(k.sum[:]); !skip[sum] {
				out = append(out, sum)
			}
		})
	}
	for _, u := range photos {
		if u.PHash == nil {
			continue
		}
		query(*u.PHash, maxDist, -1)
		for _, h := range u.Crops {
			query(h, maxDist, 0)
		}
		// An off-centre crop's match counts evidence.ShiftPenalty further.
		if maxDist < evidence.ShiftPenalty {
			continue
		}
		for i, h := range u.Shifts {
			if i < len(evidence.ShiftCrops) {
				query(h, maxDist-evidence.ShiftPenalty, evidence.ShiftCrops[i].Against)
			}
		}
	}
	return out
}
