package upload_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"

	"fieldsync/server/blob/localblob"
	"fieldsync/server/upload"
	"fieldsync/server/upload/uploadtest"
	"fieldsync/syncproto"
)

// failingBody yields n bytes of data and then fails: the client's
// transport aborts the request, as when a link drops mid-PATCH.
type failingBody struct {
	r *bytes.Reader
	n int
}

func (b *failingBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, errors.New("injected: link dropped")
	}
	k, err := b.r.Read(p[:min(len(p), b.n)])
	b.n -= k
	return k, err
}

// TestUpload_HashKeptAcrossPatches: an upload in several PATCHes, one of
// them refused for its checksum and sent again and one cut midway, is
// stored whole and right, and the server never reads the partial file
// back to hash it: the hash runs on from PATCH to PATCH. After a restart
// (the hash is only in memory) the last PATCH reads the file back, and
// the result is the same.
func TestUpload_HashKeptAcrossPatches(t *testing.T) {
	f := newField(t)
	ctx := t.Context()
	blobs, err := localblob.New(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := upload.Config{Store: f.env.Store, Blobs: blobs, Dir: dir}
	h, srv := serveUploads(t, f.dev.ID, cfg)
	cl := &uploadtest.Client{Base: srv.URL, Token: f.dev.Token}
	// The first PATCH is big enough to be hashed beside the copy
	// (hashPipe), the others are hashed in line.
	const first, chunk = 1_300_000, 300_000
	data := f.file(t, first+2*chunk+777)
	c, err := cl.Create(ctx, data, nil)
	if err != nil || c.Status != http.StatusCreated {
		t.Fatalf("create: %v %+v", err, c)
	}
	loc := c.Header.Get("Location")
	patch := func(off int64, body []byte, hdr map[string]string) int64 {
		t.Helper()
		p, err := cl.Patch(ctx, loc, off, body, hdr)
		if err != nil || p.Status != http.StatusNoContent {
			t.Fatalf("PATCH at %d: %v %+v", off, err, p)
		}
		return p.Offset()
	}
	off := patch(0, data[:first], nil)
	// A chunk whose checksum is wrong is thrown away; then sent right.
	bad := append([]byte(nil), data[off:off+chunk]...)
	bad[10] ^= 1
	p, err := cl.Patch(ctx, loc, off, bad, map[string]string{"Upload-Checksum": uploadtest.Checksum(data[off : off+chunk])})
	if err != nil || p.Status != 460 {
		t.Fatalf("PATCH with a bad checksum: %v %+v", err, p)
	}
	off = patch(off, data[off:off+chunk], map[string]string{"Upload-Checksum": uploadtest.Checksum(data[off : off+chunk])})
	// A PATCH cut after some of its bytes: the server keeps what came.
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, srv.URL+loc, &failingBody{r: bytes.NewReader(data[off:]), n: chunk / 2})
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(data)) - off
	req.Header.Set("Tus-Resumable", upload.TusVersion)
	req.Header.Set("Authorization", "Bearer "+f.dev.Token)
	req.Header.Set("Content-Type", upload.OffsetContentType)
	req.Header.Set("Upload-Offset", strconv.FormatInt(off, 10))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the cut PATCH was answered %d", resp.StatusCode)
	}
	hd, err := cl.Head(ctx, loc)
	if err != nil || hd.Status != http.StatusOK || hd.Offset() < off {
		t.Fatalf("HEAD after the cut: %v %+v", err, hd)
	}
	off = hd.Offset()
	if off == int64(len(data)) {
		t.Fatal("the cut PATCH delivered everything")
	}
	// The HEAD can overtake the cut PATCH on its way into the server (it
	// came on a new connection before the old one's handler started);
	// then the next PATCH is answered 409 offset_mismatch with the offset
	// the server holds, and the device goes on from there, as here.
	if p, err := cl.Patch(ctx, loc, off, data[off:], nil); err == nil && p.Status == http.StatusConflict && p.Error.Code == syncproto.CodeOffsetMismatch {
		n, ok := p.Error.Details["offset"].(float64)
		if !ok || int64(n) <= off || int64(n) >= int64(len(data)) {
			t.Fatalf("409 after the cut without a usable offset: %+v", p)
		}
		off = int64(n)
	} else if err != nil || p.Status != http.StatusNoContent {
		t.Fatalf("PATCH after the cut: %v %+v", err, p)
	} else {
		off = p.Offset()
	}
	if off != int64(len(data)) {
		off = patch(off, data[off:], nil)
	}
	if off != int64(len(data)) {
		t.Fatalf("offset %d after the last PATCH", off)
	}
	stored(t, blobs, data)
	if n := h.Rehashes(); n != 0 {
		t.Errorf("the server read %d partial files back to hash them; the hash should have run on", n)
	}

	// The same steps with a restart in the middle: the hash is gone, the
	// file is read back, and the blob is as right.
	data2 := f.file(t, 2*chunk+5)
	c, err = cl.Create(ctx, data2, nil)
	if err != nil || c.Status != http.StatusCreated {
		t.Fatalf("create: %v %+v", err, c)
	}
	loc = c.Header.Get("Location")
	off = patch(0, data2[:chunk], nil)
	srv.Close()
	h.Close()
	h2, srv2 := serveUploads(t, f.dev.ID, cfg)
	cl.Base = srv2.URL
	if off = patch(off, data2[off:], nil); off != int64(len(data2)) {
		t.Fatalf("offset %d after the restart", off)
	}
	stored(t, blobs, data2)
	if n := h2.Rehashes(); n != 1 {
		t.Errorf("after a restart the server read %d partial files back, want 1", n)
	}
}

// stored checks that the blob store holds data under its hash.
func stored(t *testing.T, blobs *localblob.Store, data []byte) {
	t.Helper()
	rc, info, err := blobs.Open(t.Context(), uploadtest.Sum(data))
	if err != nil {
		t.Fatalf("blob store: %v", err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil || info.Size != int64(len(data)) || !bytes.Equal(got, data) {
		t.Fatalf("stored blob differs: %d bytes, %v", len(got), err)
	}
}
