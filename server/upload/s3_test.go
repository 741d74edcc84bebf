package upload_test

import (
	"bytes"
	"context"
	"errors"
	"image/jpeg"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"fieldsync/server/api"
	"fieldsync/server/blob"
	"fieldsync/server/blob/s3blob"
	"fieldsync/server/blob/s3blob/s3test"
	"fieldsync/server/evidence"
	"fieldsync/server/evidence/evidencetest"
	"fieldsync/server/servertest"
	"fieldsync/server/upload"
	"fieldsync/server/upload/uploadtest"
)

func s3Store(t *testing.T, cfg s3blob.Config) *s3blob.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	st, err := s3blob.New(ctx, cfg)
	if err != nil {
		t.Fatalf("s3 store: %v", err)
	}
	return st
}

func get(t *testing.T, url, token string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestUpload_S3 uploads a photo into the real S3 server started by the
// test script, then downloads a range of it and its thumbnail.
func TestUpload_S3(t *testing.T) {
	st := s3Store(t, s3test.Config(t))
	env := servertest.StartWith(t, servertest.Options{API: api.Config{Blobs: st}})
	f := fieldOn(t, env)
	ctx := t.Context()
	photo := evidencetest.JPEG(evidencetest.Photo{Seed: 11, Width: 1200, Height: 900, Quality: 95,
		Taken: time.Date(2026, 3, 1, 9, 30, 0, 0, time.FixedZone("", 8*3600)), TakenOffset: true, GPS: &[2]float64{103.1502, 25.1501}})
	f.reference(t, photo)
	loc := f.create(t, photo)
	half := len(photo) / 2
	if p, err := f.cl.Patch(ctx, loc, 0, photo[:half], nil); err != nil || p.Status != http.StatusNoContent {
		t.Fatalf("PATCH 1: %v %+v", err, p)
	}
	if p, err := f.cl.Patch(ctx, loc, int64(half), photo[half:], nil); err != nil || p.Status != http.StatusNoContent || p.Offset() != int64(len(photo)) {
		t.Fatalf("PATCH 2: %v %+v", err, p)
	}
	sum := uploadtest.Sum(photo)
	if info, err := st.Stat(ctx, sum); err != nil || info.Size != int64(len(photo)) {
		t.Fatalf("S3 stat: %v %+v", err, info)
	}
	// The photo is analysed after the upload is answered.
	if err := env.API.Uploads().WaitAnalysed(ctx); err != nil {
		t.Fatal(err)
	}
	rec, err := env.Store.Blob(ctx, sum)
	if err != nil || rec.MediaType != "image/jpeg" || rec.Width != 1200 || rec.GPS == nil || rec.Taken.String() != "2026-03-01T09:30:00+08:00" || rec.PHash == nil {
		t.Fatalf("blob record: %v %+v", err, rec)
	}
	f.download(t, photo)

	// Range requests are served from the S3 object.
	resp, b := get(t, env.URL+"/api/v1/evidence/"+sum, f.dev.Token, map[string]string{"Range": "bytes=100-199"})
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(b, photo[100:200]) || resp.Header.Get("Content-Type") != "image/jpeg" {
		t.Errorf("range: %d %q %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(b))
	}
	// The thumbnail is made once and kept in the blob store.
	resp, b = get(t, env.URL+"/api/v1/evidence/"+sum+"/thumb", f.dev.Token, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/jpeg" {
		t.Fatalf("thumb: %d %s", resp.StatusCode, b)
	}
	img, err := jpeg.Decode(bytes.NewReader(b))
	if err != nil || img.Bounds().Dx() != 256 || img.Bounds().Dy() != 192 {
		t.Fatalf("thumb image: %v %v", err, img.Bounds())
	}
	r, size, err := st.OpenDerived(ctx, evidence.ThumbName(sum, 256))
	if err != nil || size != int64(len(b)) {
		t.Fatalf("cached thumbnail: %v %d", err, size)
	}
	r.Close()
}

// rawServer serves the upload handler directly for one device, with a
// short blob timeout.
func rawServer(t *testing.T, env *servertest.Env, deviceID string, blobs blob.Store, timeout time.Duration) *httptest.Server {
	t.Helper()
	h, err := upload.New(upload.Config{Store: env.Store, Blobs: blobs, Dir: t.TempDir(), BlobTimeout: timeout,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
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
	return srv
}

// TestUpload_S3Outage: with the object store down or hung, the final
// PATCH answers 503 with Retry-After in bounded time, every byte is
// kept, and a HEAD once the store is back finishes the upload.
func TestUpload_S3Outage(t *testing.T) {
	for _, mode := range []string{"stopped", "hung"} {
		t.Run(mode, func(t *testing.T) {
			s3 := s3test.StartServer(t)
			cfg := s3.Config(t)
			cfg.Timeout = 2 * time.Second
			st := s3Store(t, cfg)
			env := servertest.Start(t)
			f := fieldOn(t, env)
			srv := rawServer(t, env, f.dev.ID, st, 3*time.Second)
			cl := &uploadtest.Client{Base: srv.URL, Token: f.dev.Token}
			ctx := t.Context()
			data := f.file(t, 100_000)
			resp, err := cl.Create(ctx, data, nil)
			if err != nil || resp.Status != http.StatusCreated {
				t.Fatalf("create: %v %+v", err, resp)
			}
			loc := resp.Header.Get("Location")
			if p, err := cl.Patch(ctx, loc, 0, data[:60_000], nil); err != nil || p.Status != http.StatusNoContent {
				t.Fatalf("PATCH: %v %+v", err, p)
			}
			if mode == "stopped" {
				s3.Stop()
			} else {
				s3.Pause()
			}
			start := time.Now()
			p, err := cl.Patch(ctx, loc, 60_000, data[60_000:], nil)
			if err != nil || p.Status != http.StatusServiceUnavailable || p.Header.Get("Retry-After") == "" || p.Error.Code != "unavailable" {
				t.Fatalf("final PATCH with S3 %s: %v %+v", mode, err, p)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("503 took %v", d)
			}
			if h, _ := cl.Head(ctx, loc); h.Status != http.StatusServiceUnavailable {
				t.Errorf("HEAD with S3 %s = %d, want 503", mode, h.Status)
			}
			if ok, _ := env.Store.BlobPresent(ctx, uploadtest.Sum(data)); ok {
				t.Fatal("blob recorded while the store is down")
			}
			if mode == "stopped" {
				s3.Start()
			} else {
				s3.Resume()
			}
			var h *uploadtest.Response
			deadline := time.Now().Add(30 * time.Second)
			for {
				h, err = cl.Head(ctx, loc)
				if err == nil && h.Status == http.StatusOK {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("HEAD after S3 came back: %v %+v", err, h)
				}
				time.Sleep(200 * time.Millisecond)
			}
			if h.Offset() != 100_000 {
				t.Fatalf("HEAD offset %d", h.Offset())
			}
			if ok, _ := env.Store.BlobPresent(ctx, uploadtest.Sum(data)); !ok {
				t.Fatal("blob not recorded after the store came back")
			}
			if _, err := st.Stat(ctx, uploadtest.Sum(data)); err != nil {
				t.Fatalf("S3 stat: %v", err)
			}
			if _, err := st.Stat(ctx, uploadtest.Sum(data[:10])); !errors.Is(err, blob.ErrNotFound) {
				t.Fatalf("S3 stat of an absent blob: %v", err)
			}
		})
	}
}
