package upload_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"fieldsync/server/blob"
	"fieldsync/server/blob/localblob"
	"fieldsync/server/upload"
	"fieldsync/server/upload/uploadtest"
)

// flakyRecord is the real store, except that its next CompleteUpload
// calls fail (a database write that fails after the blob was stored).
type flakyRecord struct {
	upload.Store
	fail atomic.Int32
}

func (s *flakyRecord) CompleteUpload(ctx context.Context, id string, b upload.Blob, expires time.Time) error {
	if s.fail.Add(-1) >= 0 {
		return errors.New("injected: recording the blob failed")
	}
	return s.Store.CompleteUpload(ctx, id, b, expires)
}

// copyOnly hides a store's Adopt, so uploads are copied into it.
type copyOnly struct{ blob.Store }

// serveUploads runs a bare upload handler for one device.
func serveUploads(t *testing.T, deviceID string, cfg upload.Config) (*upload.Handler, *httptest.Server) {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	h, err := upload.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r, done, ok := h.Preflight(w, r)
		defer done()
		if !ok {
			return
		}
		id := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
		switch r.Method {
		case http.MethodPost:
			h.Create(w, r, deviceID)
		case http.MethodHead:
			h.Head(w, r, deviceID, id)
		case http.MethodPatch:
			h.Patch(w, r, deviceID, id)
		case http.MethodDelete:
			h.Delete(w, r, deviceID, id)
		}
	}))
	t.Cleanup(srv.Close)
	return h, srv
}

// TestUpload_RecordFailsAfterStore: the bytes are verified and stored,
// then recording the blob fails. The client is told to retry, and the
// retry (a HEAD, a PATCH without the bytes, or a new creation) finishes
// the upload: the
// bytes are never asked for again.
func TestUpload_RecordFailsAfterStore(t *testing.T) {
	for _, tc := range []struct {
		name  string
		adopt bool
		retry string
	}{
		{"Adopted_HEAD", true, "HEAD"},
		{"Adopted_PATCH", true, "PATCH"},
		{"Copied_HEAD", false, "HEAD"},
		{"Copied_PATCH", false, "PATCH"},
		{"Adopted_POST", true, "POST"},
		{"Copied_POST", false, "POST"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newField(t)
			ctx := t.Context()
			lb, err := localblob.New(filepath.Join(t.TempDir(), "blobs"))
			if err != nil {
				t.Fatal(err)
			}
			var blobs blob.Store = lb
			if !tc.adopt {
				blobs = copyOnly{lb}
			}
			st := &flakyRecord{Store: f.env.Store}
			st.fail.Store(1)
			_, srv := serveUploads(t, f.dev.ID, upload.Config{Store: st, Blobs: blobs})
			cl := &uploadtest.Client{Base: srv.URL, Token: f.dev.Token}
			data := f.file(t, 200_000)
			sum := uploadtest.Sum(data)
			c, err := cl.Create(ctx, data, nil)
			if err != nil || c.Status != http.StatusCreated {
				t.Fatalf("create: %v %+v", err, c)
			}
			loc := c.Header.Get("Location")
			p, err := cl.Patch(ctx, loc, 0, data, nil)
			if err != nil || p.Status < 500 || p.Header.Get("Retry-After") == "" {
				t.Fatalf("PATCH with a failing record: want 5xx with Retry-After, got %v %+v", err, p)
			}
			if ok, err := f.env.Store.BlobPresent(ctx, sum); err != nil || ok {
				t.Fatalf("blob recorded although the record failed: %v %v", ok, err)
			}
			switch tc.retry {
			case "HEAD":
				h, err := cl.Head(ctx, loc)
				if err != nil || h.Status != http.StatusOK || h.Offset() != int64(len(data)) {
					t.Fatalf("HEAD retry: %v %+v", err, h)
				}
			case "POST":
				// A client that lost the Location creates again: the
				// earlier upload is named, complete.
				c, err := cl.Create(ctx, data, nil)
				if err != nil || c.Status != http.StatusCreated || c.Offset() != int64(len(data)) || c.Header.Get("Location") != loc {
					t.Fatalf("POST retry: %v %+v", err, c)
				}
			case "PATCH":
				// A client that only knows offset 0 sends nothing new: the
				// server has it all.
				p, err := cl.Patch(ctx, loc, 0, nil, nil)
				if err != nil || p.Status != http.StatusNoContent || p.Offset() != int64(len(data)) {
					t.Fatalf("PATCH retry: %v %+v", err, p)
				}
			}
			if ok, err := f.env.Store.BlobPresent(ctx, sum); err != nil || !ok {
				t.Fatalf("blob not recorded after the retry: %v %v", ok, err)
			}
			rc, info, err := lb.Open(ctx, sum)
			if err != nil {
				t.Fatalf("blob store: %v", err)
			}
			got, _ := io.ReadAll(rc)
			rc.Close()
			if info.Size != int64(len(data)) || !bytes.Equal(got, data) {
				t.Fatalf("stored blob differs (%d bytes)", len(got))
			}
			if h, err := cl.Head(ctx, loc); err != nil || h.Status != http.StatusOK || h.Offset() != int64(len(data)) {
				t.Fatalf("HEAD after completion: %v %+v", err, h)
			}
		})
	}
}
