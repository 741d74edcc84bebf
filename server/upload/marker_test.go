package upload_test

import (
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"fieldsync/server/blob/localblob"
	"fieldsync/server/upload"
	"fieldsync/server/upload/uploadtest"
)

// TestUpload_MarkerOnlyWhenRecordFails: a stored and recorded upload
// leaves nothing in the partial folder; one whose record failed leaves
// its verified marker, which a restarted server finds: a new creation of
// the same bytes is answered with the earlier upload, complete, and HEAD
// finishes it, without the bytes being sent again.
func TestUpload_MarkerOnlyWhenRecordFails(t *testing.T) {
	f := newField(t)
	ctx := t.Context()
	blobs, err := localblob.New(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st := &flakyRecord{Store: f.env.Store}
	cfg := upload.Config{Store: st, Blobs: blobs, Dir: dir}
	h, srv := serveUploads(t, f.dev.ID, cfg)
	cl := &uploadtest.Client{Base: srv.URL, Token: f.dev.Token}
	send := func(data []byte) (string, *uploadtest.Response) {
		t.Helper()
		c, err := cl.Create(ctx, data, nil)
		if err != nil || c.Status != http.StatusCreated {
			t.Fatalf("create: %v %+v", err, c)
		}
		p, err := cl.Patch(ctx, c.Header.Get("Location"), 0, data, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.Header.Get("Location"), p
	}
	files := func() []string {
		t.Helper()
		es, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range es {
			names = append(names, e.Name())
		}
		return names
	}

	if _, p := send(f.file(t, 100_000)); p.Status != http.StatusNoContent {
		t.Fatalf("PATCH: %+v", p)
	}
	if left := files(); len(left) != 0 {
		t.Fatalf("a completed upload left %v", left)
	}

	st.fail.Store(1)
	data := f.file(t, 150_000)
	loc, p := send(data)
	if p.Status != http.StatusServiceUnavailable {
		t.Fatalf("PATCH with a failing record: %+v", p)
	}
	if left := files(); len(left) != 1 || filepath.Ext(left[0]) != ".ok" {
		t.Fatalf("after a failed record the partial folder holds %v, want the verified marker", left)
	}
	srv.Close()
	h.Close()

	_, srv2 := serveUploads(t, f.dev.ID, cfg)
	cl.Base = srv2.URL
	c, err := cl.Create(ctx, data, nil)
	if err != nil || c.Status != http.StatusCreated || c.Header.Get("Location") != loc || c.Offset() != int64(len(data)) {
		t.Fatalf("creation after the restart: want %s complete, got %v %+v", loc, err, c)
	}
	if ok, err := f.env.Store.BlobPresent(ctx, uploadtest.Sum(data)); err != nil || !ok {
		t.Fatalf("blob not recorded: %v %v", ok, err)
	}
	stored(t, blobs, data)
	if hd, err := cl.Head(ctx, loc); err != nil || hd.Status != http.StatusOK || hd.Offset() != int64(len(data)) {
		t.Fatalf("HEAD: %v %+v", err, hd)
	}
	if left := files(); len(left) != 0 {
		t.Fatalf("after completion the partial folder holds %v", left)
	}
}

// TestUpload_ExpiryRecordedOncePerTTLStep: PATCHes move an upload's
// expiry on, but the database is written only once the expiry would move
// by more than a 24th of the TTL; every answer names the recorded expiry,
// and an upload in use never comes near it.
func TestUpload_ExpiryRecordedOncePerTTLStep(t *testing.T) {
	f := newField(t)
	ctx := t.Context()
	blobs, err := localblob.New(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	_, srv := serveUploads(t, f.dev.ID, upload.Config{Store: f.env.Store, Blobs: blobs, TTL: 24 * time.Hour, Now: clock})
	cl := &uploadtest.Client{Base: srv.URL, Token: f.dev.Token}
	data := f.file(t, 40_000)
	c, err := cl.Create(ctx, data, nil)
	if err != nil || c.Status != http.StatusCreated {
		t.Fatalf("create: %v %+v", err, c)
	}
	loc := c.Header.Get("Location")
	id := filepath.Base(loc)
	created := clock()
	step := func(off int, wantExpiry time.Time) {
		t.Helper()
		p, err := cl.Patch(ctx, loc, int64(off), data[off:off+10_000], nil)
		if err != nil || p.Status != http.StatusNoContent {
			t.Fatalf("PATCH at %d: %v %+v", off, err, p)
		}
		u, err := f.env.Store.Upload(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !u.ExpiresAt.Equal(wantExpiry) {
			t.Errorf("after the PATCH at %d the recorded expiry is %v, want %v", off, u.ExpiresAt, wantExpiry)
		}
		if got := p.Header.Get("Upload-Expires"); got != wantExpiry.Format(http.TimeFormat) {
			t.Errorf("after the PATCH at %d Upload-Expires is %q, want %v", off, got, wantExpiry)
		}
	}
	advance(10 * time.Minute)
	step(0, created.Add(24*time.Hour)) // moved by 10 minutes: not recorded
	advance(50 * time.Minute)
	step(10_000, created.Add(24*time.Hour)) // by an hour: still not
	advance(time.Minute)
	step(20_000, clock().Add(24*time.Hour)) // by more: recorded
}
