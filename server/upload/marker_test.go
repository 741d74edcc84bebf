package upload_test

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

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
