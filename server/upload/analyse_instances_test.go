package upload_test

import (
	"bytes"
	"context"
	"database/sql"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"fieldsync/server/blob/localblob"
	"fieldsync/server/evidence"
	"fieldsync/server/evidence/evidencetest"
	"fieldsync/server/servertest/pgtest"
	"fieldsync/server/sqlstore"
	"fieldsync/server/upload"
	"fieldsync/server/upload/uploadtest"
)

// countingStore is a real store that counts the analyses recorded through
// it, per blob.
type countingStore struct {
	*sqlstore.Store
	mu     *sync.Mutex
	counts map[string]int
}

func (c countingStore) BlobAnalysed(ctx context.Context, sum string, m evidence.Meta) error {
	c.mu.Lock()
	c.counts[sum]++
	c.mu.Unlock()
	return c.Store.BlobAnalysed(ctx, sum, m)
}

// TestAnalysis_ThreeInstancesEachBlobOnce: three instances (a store and an
// upload handler each) on one PostgreSQL database and one blob store
// analyse 60 queued photos, ten of them claimed by an instance that died
// (its lease has passed): every photo is analysed exactly once, and none
// is left claimed.
func TestAnalysis_ThreeInstancesEachBlobOnce(t *testing.T) {
	ctx := t.Context()
	url := pgtest.NewDatabase(t)
	blobs, err := localblob.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var stores []*sqlstore.Store
	for range 3 {
		st, err := sqlstore.Open(ctx, sqlstore.Config{PostgresURL: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		stores = append(stores, st)
	}
	var bs []upload.Blob
	for i := range 60 {
		data := evidencetest.JPEG(evidencetest.Photo{Seed: uint64(1000 + i), Width: 64, Height: 48})
		sum := uploadtest.Sum(data)
		if err := blobs.Put(ctx, sum, int64(len(data)), bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		bs = append(bs, upload.Blob{SHA256: sum, Size: int64(len(data)), MediaType: "image/jpeg", StoredAt: time.Now().Add(-time.Minute)})
	}
	if err := stores[0].RecordBlobs(ctx, bs); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	past := time.Now().Add(-time.Minute).UTC().Format("2006-01-02T15:04:05.000000000Z")
	for _, b := range bs[20:30] {
		if _, err := db.ExecContext(ctx, `UPDATE blobs SET analysis_owner = 'dead', analysis_lease_until = $1 WHERE sha256 = $2`, past, b.SHA256); err != nil {
			t.Fatal(err)
		}
	}

	var mu sync.Mutex
	counts := map[string]int{}
	var hs []*upload.Handler
	for _, st := range stores {
		h, err := upload.New(upload.Config{Store: countingStore{Store: st, mu: &mu, counts: counts}, Blobs: blobs, Dir: t.TempDir(),
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		hs = append(hs, h)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, h := range hs {
		if err := h.WaitAnalysed(wctx); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i, b := range bs {
		if counts[b.SHA256] != 1 {
			t.Errorf("photo %d analysed %d times, want once", i, counts[b.SHA256])
		}
	}
	var claimed, pending int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE analysis_owner IS NOT NULL OR analysis_lease_until IS NOT NULL),
		count(*) FILTER (WHERE analyzed_at IS NULL OR phash IS NULL) FROM blobs`).Scan(&claimed, &pending); err != nil {
		t.Fatal(err)
	}
	if claimed != 0 || pending != 0 {
		t.Errorf("%d blobs still claimed, %d without analysis", claimed, pending)
	}
}
