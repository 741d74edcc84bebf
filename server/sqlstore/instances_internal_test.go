package sqlstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"fieldsync/server/evidence"
	"fieldsync/server/servertest/pgtest"
	"fieldsync/server/upload"
)

// TestNearIndex_RefreshMissesNoConcurrentWrite: two instances record
// photo hashes concurrently (uploads with their hashes, and analyses)
// while a third refreshes its index in a loop; after a last refresh the
// third's index holds every photo. A hash_seq that did not follow commit
// order would let a refresh move past a row that committed later.
func TestNearIndex_RefreshMissesNoConcurrentWrite(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	var st [3]*Store
	for i := range st {
		s, err := Open(ctx, Config{PostgresURL: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		st[i] = s
	}
	sumOf := func(w, i int) string {
		h := sha256.Sum256(fmt.Appendf(nil, "writer %d photo %d", w, i))
		return hex.EncodeToString(h[:])
	}
	const perWriter = 120
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := range 2 {
		for lane := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := lane; i < perWriter; i += 3 {
					ph := uint64(w*perWriter + i + 1)
					m := evidence.Meta{MediaType: "image/jpeg", PHash: &ph, CropHashes: []uint64{^ph}}
					b := upload.Blob{SHA256: sumOf(w, i), Size: 1, MediaType: "image/jpeg", StoredAt: time.Now()}
					var err error
					if i%2 == 0 {
						b.Meta = m
						err = st[w].CompleteUpload(ctx, "no-upload", b, time.Now())
					} else if err = st[w].RecordBlobs(ctx, []upload.Blob{b}); err == nil {
						err = st[w].BlobAnalysed(ctx, b.SHA256, m)
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
	}
	refreshed := make(chan int)
	go func() {
		n := 0
		for !stop.Load() {
			if err := st[2].refreshNearIndex(ctx); err != nil {
				t.Error(err)
				break
			}
			n++
		}
		refreshed <- n
	}()
	wg.Wait()
	stop.Store(true)
	rounds := <-refreshed
	if err := st[2].refreshNearIndex(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d refreshes during the writes", rounds)
	for w := range 2 {
		for i := range perWriter {
			ph := uint64(w*perWriter + i + 1)
			got := st[2].nearHashes([][]uint64{{ph}}, nil, 0)
			if len(got) != 1 || got[0] != sumOf(w, i) {
				t.Errorf("writer %d photo %d: index finds %v", w, i, got)
			}
		}
	}
	if n := st[2].near.Load().Len(); n != 2*2*perWriter {
		t.Errorf("index holds %d hashes, want %d (whole and one crop per photo)", n, 2*2*perWriter)
	}
}
