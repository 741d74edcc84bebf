package sqlstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"path/filepath"
	"runtime"
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

// BenchmarkNearIndex_PhotoCheck is the index part of one photo's
// near-duplicate check (nearUses) against n stored photos, each indexed
// with its whole picture and centred crops: querying with the whole
// picture and centred crops only (as before the off-centre crops), and
// with the off-centre crops too. It reports the index's heap bytes per
// photo.
func BenchmarkNearIndex_PhotoCheck(b *testing.B) {
	// 333,334 photos are a million indexed hashes.
	for _, n := range []int{10_000, 100_000, 333_334, 1_000_000} {
		r := rand.New(rand.NewPCG(11, 12))
		var ms0, ms1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms0)
		idx := newNearIndex()
		var keys []hashKey
		var hs []uint64
		for i := range n {
			var k blobKey
			k[0], k[1], k[2], k[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
			for v := range indexedVariants + 1 {
				keys, hs = append(keys, hashKey{k, uint8(v)}), append(hs, r.Uint64())
			}
			if len(keys) >= 100_000 || i == n-1 {
				idx.AddNew(keys, hs)
				keys, hs = keys[:0], hs[:0]
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&ms1)
		s := &Store{}
		s.near.Store(idx)
		photos := make([]evidence.Use, 256)
		for i := range photos {
			u := evidence.Use{PHash: ptrTo(r.Uint64())}
			for range indexedVariants {
				u.Crops = append(u.Crops, r.Uint64())
			}
			for range evidence.ShiftCrops {
				u.Shifts = append(u.Shifts, r.Uint64())
			}
			photos[i] = u
		}
		for _, withShifts := range []bool{false, true} {
			name := fmt.Sprintf("centred-only/photos=%d", n)
			if withShifts {
				name = fmt.Sprintf("with-off-centre/photos=%d", n)
			}
			b.Run(name, func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					u := photos[i%len(photos)]
					if !withShifts {
						u.Shifts = nil
					}
					s.nearUses([]evidence.Use{u}, nil, evidence.DefaultNearDuplicateDistance)
				}
				b.ReportMetric(float64(ms1.HeapAlloc-ms0.HeapAlloc)/float64(n), "heapB/photo")
			})
		}
		runtime.KeepAlive(idx)
	}
}

func ptrTo[T any](v T) *T { return &v }

// TestNearIndex_OffCentreQueriesMatchScan: nearUses, given photos with
// centred and off-centre crop hashes, finds exactly the stored photos a
// scan of blob_crop_hashes finds by evidence.UseDistance's comparisons from
// the query's side (whole with any indexed hash, centred crop with whole,
// off-centre crop with the variant evidence.ShiftCrops names, within
// evidence.ShiftPenalty less), and the off-centre hashes stay out of the
// index.
func TestNearIndex_OffCentreQueriesMatchScan(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Config{Path: filepath.Join(t.TempDir(), "shift.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := rand.New(rand.NewPCG(13, 14))
	base := r.Uint64()
	near := func() uint64 { return base ^ (1<<r.IntN(64) | 1<<r.IntN(64) | 1<<r.IntN(64) | 1<<r.IntN(64)) }
	randMeta := func() evidence.Meta {
		m := evidence.Meta{MediaType: "image/jpeg", PHash: ptrTo(near())}
		for range evidence.CropFractions {
			m.CropHashes = append(m.CropHashes, near())
		}
		for range evidence.ShiftCrops {
			m.ShiftHashes = append(m.ShiftHashes, near())
		}
		return m
	}
	const photos = 300
	for i := range photos {
		sum := sha256.Sum256(fmt.Appendf(nil, "shift photo %d", i))
		if err := s.CompleteUpload(ctx, "no-upload", upload.Blob{SHA256: hex.EncodeToString(sum[:]), Size: 1, MediaType: "image/jpeg", StoredAt: time.Now(), Meta: randMeta()}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.near.Load().Len(); n != photos*(1+len(evidence.CropFractions)) {
		t.Fatalf("index holds %d hashes, want %d (whole and centred crops only)", n, photos*(1+len(evidence.CropFractions)))
	}
	stored := map[string]map[int]uint64{}
	rows, err := s.w.QueryContext(ctx, `SELECT b.sha256, 0, b.phash FROM blobs b UNION ALL SELECT sha256, variant, phash FROM blob_crop_hashes`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var sum string
		var v int
		var h int64
		if err := rows.Scan(&sum, &v, &h); err != nil {
			t.Fatal(err)
		}
		if stored[sum] == nil {
			stored[sum] = map[int]uint64{}
		}
		stored[sum][v] = uint64(h)
	}
	rows.Close()
	if n := len(stored); n != photos {
		t.Fatalf("%d photos stored", n)
	}
	scan := func(q evidence.Use, d int) []string {
		var out []string
		for sum, hs := range stored {
			hit := false
			for v := 0; v <= indexedVariants; v++ {
				hit = hit || evidence.Distance(*q.PHash, hs[v]) <= d
			}
			for _, c := range q.Crops {
				hit = hit || evidence.Distance(c, hs[0]) <= d
			}
			for i, h := range q.Shifts {
				hit = hit || evidence.Distance(h, hs[evidence.ShiftCrops[i].Against]) <= d-evidence.ShiftPenalty
			}
			if hit {
				out = append(out, sum)
			}
		}
		slices.Sort(out)
		return out
	}
	found := 0
	for q := range 40 {
		m := randMeta()
		u := evidence.Use{PHash: m.PHash, Crops: m.CropHashes, Shifts: m.ShiftHashes}
		if q%2 == 1 {
			u.PHash, u.Crops = ptrTo(^base), []uint64{^base, ^base} // only the off-centre crops are near
		}
		d := []int{0, 1, 4, 6, 8}[q%5]
		got := s.nearUses([]evidence.Use{u}, nil, d)
		slices.Sort(got)
		if want := scan(u, d); !slices.Equal(got, want) {
			t.Fatalf("query %d within %d: index %d photos, scan %d", q, d, len(got), len(want))
		}
		found += len(got)
	}
	if found == 0 {
		t.Fatalf("no query found anything: the test tests nothing")
	}
}
