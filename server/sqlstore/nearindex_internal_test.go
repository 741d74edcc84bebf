package sqlstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"fieldsync/server/evidence"
	"fieldsync/server/upload"
)

// TestNearIndex_FollowsWritesAndReopen checks that the in-memory
// near-duplicate index answers as a scan of the blobs table would: after
// uploads, after a re-analysis moves a photo's hash, and after the store is
// closed and opened again (the index is rebuilt from the database).
func TestNearIndex_FollowsWritesAndReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "near.db")
	open := func() *Store {
		s, err := Open(ctx, Config{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	r := rand.New(rand.NewPCG(7, 8))
	sumOf := func(i int) string {
		h := sha256.Sum256(fmt.Appendf(nil, "photo %d", i))
		return hex.EncodeToString(h[:])
	}
	base := r.Uint64()
	store := func(s *Store, i int, ph uint64) {
		m := evidence.Meta{MediaType: "image/jpeg", PHash: &ph}
		if err := s.CompleteUpload(ctx, "no-upload", upload.Blob{SHA256: sumOf(i), Size: 1, MediaType: "image/jpeg", StoredAt: time.Now(), Meta: m}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	// Half the photos cluster near base, so that queries find many.
	for i := range 400 {
		ph := r.Uint64()
		if i%2 == 0 {
			ph = base ^ (1<<r.IntN(64) | 1<<r.IntN(64) | 1<<r.IntN(64))
		}
		store(s, i, ph)
	}
	// Uploading the same bytes again (INSERT OR IGNORE) keeps the stored hash.
	store(s, 0, ^base)

	scan := func(s *Store, hs []uint64, maxDist int) []string {
		rows, err := s.w.QueryContext(ctx, `SELECT sha256, phash FROM blobs WHERE phash IS NOT NULL`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var sum string
			var ph int64
			if err := rows.Scan(&sum, &ph); err != nil {
				t.Fatal(err)
			}
			for _, h := range hs {
				if bits.OnesCount64(h^uint64(ph)) <= maxDist {
					out = append(out, sum)
					break
				}
			}
		}
		slices.Sort(out)
		return out
	}
	check := func(s *Store, when string) {
		t.Helper()
		for q := range 60 {
			hs := []uint64{base ^ 1<<r.IntN(64), r.Uint64()}
			d := []int{0, 3, 8, 12, 25}[q%5]
			got := s.nearHashes(whole(hs...), nil, d)
			slices.Sort(got)
			if want := scan(s, hs, d); !slices.Equal(got, want) {
				t.Fatalf("%s: query %x within %d: index %d blobs, table %d", when, hs, d, len(got), len(want))
			}
		}
	}
	check(s, "after uploads")
	if n := len(s.nearHashes(whole(base), nil, 6)); n < 100 {
		t.Fatalf("only %d of the clustered photos found", n)
	}

	// Re-analysis gives photo 0 a far hash: it leaves base's neighbourhood.
	far := ^base
	if err := s.BlobAnalysed(ctx, sumOf(0), evidence.Meta{MediaType: "image/jpeg", PHash: &far}); err != nil {
		t.Fatal(err)
	}
	if got := s.nearHashes(whole(far), nil, 0); !slices.Equal(got, []string{sumOf(0)}) {
		t.Errorf("after re-analysis, the new hash finds %v", got)
	}
	if got := s.nearHashes(whole(base), map[string]bool{}, 6); slices.Contains(got, sumOf(0)) {
		t.Errorf("after re-analysis, the old hash still finds photo 0")
	}
	// A re-analysis that finds no hash drops the photo from the index.
	if err := s.BlobAnalysed(ctx, sumOf(2), evidence.Meta{MediaType: "image/jpeg"}); err != nil {
		t.Fatal(err)
	}
	check(s, "after re-analysis")
	if err := s.BlobAnalysed(ctx, sumOf(9999), evidence.Meta{}); err == nil {
		t.Errorf("re-analysis of an unknown blob succeeded")
	}
	// skip leaves out the caller's own photos.
	if got := s.nearHashes(whole(far), map[string]bool{sumOf(0): true}, 0); len(got) != 0 {
		t.Errorf("skipped photo returned: %v", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open()
	defer s.Close()
	check(s, "after reopening")
	if s.near.Load().Len() != 399 {
		t.Errorf("reopened index holds %d photos, want 399", s.near.Load().Len())
	}
}

// whole lists hashes as photos with only a whole-picture hash each.
func whole(hs ...uint64) [][]uint64 {
	out := make([][]uint64, len(hs))
	for i, h := range hs {
		out[i] = []uint64{h}
	}
	return out
}
