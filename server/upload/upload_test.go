package upload_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"fieldsync/server/api"
	"fieldsync/server/blob"
	"fieldsync/server/blob/localblob"
	"fieldsync/server/servertest"
	"fieldsync/server/upload"
	"fieldsync/server/upload/uploadtest"
	"fieldsync/syncproto"
)

// field is a running server with one field device in group G11 and a
// household there.
type field struct {
	env *servertest.Env
	dev *uploadtest.Device
	cl  *uploadtest.Client
	hh  string
}

func newField(t *testing.T) *field {
	t.Helper()
	return fieldOn(t, servertest.Start(t))
}

func fieldOn(t *testing.T, env *servertest.Env) *field {
	t.Helper()
	dev := uploadtest.NewDevice(t, env, "worker-"+strconv.Itoa(rand.IntN(1e9)), "G11")
	hh := syncproto.NewID(time.Now())
	uploadtest.Household(t, env, hh, "G11")
	return &field{env: env, dev: dev, cl: &uploadtest.Client{Base: env.URL, Token: dev.Token}, hh: hh}
}

// file makes n random bytes and pushes a visit that references them.
func (f *field) file(t *testing.T, n int) []byte {
	t.Helper()
	data := randomBytes(n)
	f.reference(t, data)
	return data
}

func (f *field) reference(t *testing.T, data []byte) {
	t.Helper()
	f.dev.PushVisit(t, uploadtest.Visit(syncproto.NewID(time.Now()), f.hh, uploadtest.Ref(data, "progress")))
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func (f *field) create(t *testing.T, data []byte) string {
	t.Helper()
	resp, err := f.cl.Create(t.Context(), data, nil)
	if err != nil || resp.Status != http.StatusCreated {
		t.Fatalf("create: %v %+v %s", err, resp, respBody(resp))
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "/api/v1/uploads/") {
		t.Fatalf("Location %q", loc)
	}
	return f.env.URL + loc
}

func respBody(r *uploadtest.Response) string {
	if r == nil {
		return ""
	}
	return string(r.Body)
}

func (f *field) uploadDir() string { return filepath.Join(f.env.Dir, "uploads") }

// partials lists the files in the upload folder.
func (f *field) partials(t *testing.T) []string {
	t.Helper()
	es, err := os.ReadDir(f.uploadDir())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

func (f *field) blobs(t *testing.T) blob.Store {
	t.Helper()
	s, err := localblob.New(filepath.Join(f.env.Dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// present checks the blob is recorded, in the store, and downloads
// byte-identical.
func (f *field) present(t *testing.T, data []byte) {
	t.Helper()
	sum := uploadtest.Sum(data)
	if ok, err := f.env.Store.BlobPresent(t.Context(), sum); err != nil || !ok {
		t.Fatalf("blob %s not recorded: %v", sum, err)
	}
	f.download(t, data)
}

func (f *field) download(t *testing.T, data []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.env.URL+"/api/v1/evidence/"+uploadtest.Sum(data), nil)
	req.Header.Set("Authorization", "Bearer "+f.dev.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) {
		t.Fatalf("download: %d, %d bytes (want %d, identical %v)", resp.StatusCode, len(got), len(data), bytes.Equal(got, data))
	}
}

// absent checks nothing of the blob was kept.
func (f *field) absent(t *testing.T, sum string) {
	t.Helper()
	if ok, err := f.env.Store.BlobPresent(t.Context(), sum); err != nil || ok {
		t.Errorf("blob %s recorded (%v)", sum, err)
	}
	if _, err := f.blobs(t).Stat(t.Context(), sum); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("blob %s in the store (%v)", sum, err)
	}
}

func TestUpload_Options(t *testing.T) {
	f := newField(t)
	for _, path := range []string{"/api/v1/uploads/", "/api/v1/uploads"} {
		req, _ := http.NewRequest(http.MethodOptions, f.env.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		if resp.StatusCode != http.StatusNoContent || h.Get("Tus-Resumable") != "1.0.0" || h.Get("Tus-Version") != "1.0.0" ||
			h.Get("Tus-Extension") != "creation,creation-with-upload,checksum,expiration,termination" ||
			h.Get("Tus-Max-Size") != strconv.Itoa(syncproto.MaxEvidenceBytes) || h.Get("Tus-Checksum-Algorithm") != "sha256" {
			t.Errorf("OPTIONS %s: %d %v", path, resp.StatusCode, h)
		}
	}
}

func TestUpload_CreateHeadPatchComplete(t *testing.T) {
	f := newField(t)
	ctx := t.Context()
	data := f.file(t, 300_000)
	resp, err := f.cl.Create(ctx, data, nil)
	if err != nil || resp.Status != http.StatusCreated {
		t.Fatalf("create: %v %d %s", err, resp.Status, resp.Body)
	}
	loc := resp.Header.Get("Location")
	exp, err := http.ParseTime(resp.Header.Get("Upload-Expires"))
	if err != nil || exp.Before(time.Now().Add(23*time.Hour)) || resp.Header.Get("Tus-Resumable") != "1.0.0" {
		t.Errorf("create headers: %v", resp.Header)
	}
	h, err := f.cl.Head(ctx, loc)
	if err != nil || h.Status != http.StatusOK || h.Offset() != 0 || h.Header.Get("Upload-Length") != "300000" ||
		h.Header.Get("Cache-Control") != "no-store" || !strings.Contains(h.Header.Get("Upload-Metadata"), "sha256 ") {
		t.Fatalf("HEAD: %v %+v", err, h)
	}
	p, err := f.cl.Patch(ctx, loc, 0, data[:100_000], nil)
	if err != nil || p.Status != http.StatusNoContent || p.Offset() != 100_000 || p.Header.Get("Upload-Expires") == "" {
		t.Fatalf("PATCH 1: %v %+v", err, p)
	}
	p, err = f.cl.Patch(ctx, loc, 100_000, data[100_000:], map[string]string{"Upload-Checksum": uploadtest.Checksum(data[100_000:])})
	if err != nil || p.Status != http.StatusNoContent || p.Offset() != 300_000 {
		t.Fatalf("PATCH 2: %v %+v", err, p)
	}
	f.present(t, data)
	if got := f.partials(t); len(got) != 0 {
		t.Errorf("partial files left: %v", got)
	}
	// The finished upload still answers HEAD with the full offset.
	if h, err := f.cl.Head(ctx, loc); err != nil || h.Status != http.StatusOK || h.Offset() != 300_000 {
		t.Errorf("HEAD after completion: %v %+v", err, h)
	}
	// The missing check no longer lists it.
	var m struct{ Missing []string }
	if st := f.dev.JSON(t, http.MethodPost, "/api/v1/evidence/missing", map[string]any{"protocol_version": 1, "sha256": []string{uploadtest.Sum(data)}}, &m); st != 200 || len(m.Missing) != 0 {
		t.Errorf("missing = %d %v", st, m.Missing)
	}

	// Uploading the same bytes again: complete at creation, and a client
	// that PATCHes from 0 anyway is told the upload is complete.
	again, err := f.cl.Create(ctx, data, nil)
	if err != nil || again.Status != http.StatusCreated || again.Offset() != 300_000 || again.Header.Get("Location") == "" {
		t.Fatalf("create of a present blob: %v %+v", err, again)
	}
	p, err = f.cl.Patch(ctx, again.Header.Get("Location"), 0, data[:65536], nil)
	if err != nil || p.Status != http.StatusNoContent || p.Offset() != 300_000 {
		t.Fatalf("PATCH of a present blob: %v %+v", err, p)
	}
}

// TestUpload_Location: Location comes from the configured public URL (or
// is a path), never from the Host or X-Forwarded-* headers a client or a
// proxy sent; and Uppy-style metadata with a relativePath is accepted.
func TestUpload_Location(t *testing.T) {
	for _, tc := range []struct {
		name, public, want string
	}{
		{"PublicURL", "https://fieldsync.example.org/", "https://fieldsync.example.org/api/v1/uploads/"},
		{"PublicURLWithPrefix", "https://example.org/fs", "https://example.org/fs/api/v1/uploads/"},
		{"NoPublicURL", "", "/api/v1/uploads/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := fieldOn(t, servertest.StartWith(t, servertest.Options{API: api.Config{PublicURL: tc.public, UploadURL: tc.public}}))
			data := f.file(t, 1000)
			meta := upload.EncodeMetadata(map[string]string{
				upload.MetaSHA256: uploadtest.Sum(data), upload.MetaFilename: "IMG_0001.JPG", upload.MetaFiletype: "image/jpeg",
				"relativePath": "DCIM/100CAMERA/IMG_0001.JPG", "windowsPath": `D:\DCIM\IMG_0001.JPG`,
			})
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, f.env.URL+"/api/v1/uploads/", nil)
			req.Host = "attacker.example"
			req.Header.Set("X-Forwarded-Proto", "http")
			req.Header.Set("X-Forwarded-Host", "attacker.example")
			req.Header.Set("Tus-Resumable", upload.TusVersion)
			req.Header.Set("Authorization", "Bearer "+f.dev.Token)
			req.Header.Set("Upload-Length", "1000")
			req.Header.Set("Upload-Metadata", meta)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			loc := resp.Header.Get("Location")
			if resp.StatusCode != http.StatusCreated || !strings.HasPrefix(loc, tc.want) || !upload.ValidID(strings.TrimPrefix(loc, tc.want)) {
				t.Fatalf("create: %d Location %q, want %s<id>; %s", resp.StatusCode, loc, tc.want, body)
			}
			id := strings.TrimPrefix(loc, tc.want)
			h, err := f.cl.Head(t.Context(), "/api/v1/uploads/"+id)
			if err != nil || h.Status != http.StatusOK {
				t.Fatalf("HEAD: %v %+v", err, h)
			}
			got, err := upload.ParseMetadata(h.Header.Get("Upload-Metadata"))
			if err != nil || got["relativePath"] != "DCIM/100CAMERA/IMG_0001.JPG" || got["windowsPath"] != `D:\DCIM\IMG_0001.JPG` {
				t.Errorf("metadata kept: %v %v", got, err)
			}
		})
	}
}

func TestUpload_CreationWithUpload(t *testing.T) {
	f := newField(t)
	ctx := t.Context()
	data := f.file(t, 50_000)
	hdr := map[string]string{
		"Upload-Length": strconv.Itoa(len(data)), "Upload-Metadata": uploadtest.Meta(data),
		"Content-Type": upload.OffsetContentType, "Upload-Checksum": uploadtest.Checksum(data[:20_000]),
	}
	resp, err := f.cl.Do(ctx, http.MethodPost, "/api/v1/uploads/", hdr, bytes.NewReader(data[:20_000]))
	if err != nil || resp.Status != http.StatusCreated || resp.Offset() != 20_000 {
		t.Fatalf("creation-with-upload: %v %+v", err, resp)
	}
	loc := resp.Header.Get("Location")
	if p, err := f.cl.Patch(ctx, loc, 20_000, data[20_000:], nil); err != nil || p.Offset() != 50_000 {
		t.Fatalf("PATCH: %v %+v", err, p)
	}
	f.present(t, data)

	// All of it in the creation request.
	data2 := f.file(t, 10_000)
	hdr = map[string]string{"Upload-Length": "10000", "Upload-Metadata": uploadtest.Meta(data2), "Content-Type": upload.OffsetContentType}
	resp, err = f.cl.Do(ctx, http.MethodPost, "/api/v1/uploads", hdr, bytes.NewReader(data2))
	if err != nil || resp.Status != http.StatusCreated || resp.Offset() != 10_000 {
		t.Fatalf("creation with all data: %v %+v", err, resp)
	}
	f.present(t, data2)
}

// TestUpload_CreateAgainResumes: a device that creates an upload again
// for a file it is already uploading (the first creation's answer was
// lost: a cut link, or a database that failed after committing) is
// given the earlier upload and where it stands, so that no second upload
// lingers unfinished. Another file, or another device, gets an upload of
// its own.
func TestUpload_CreateAgainResumes(t *testing.T) {
	f := newField(t)
	ctx := t.Context()
	active := func(dev string) []upload.Upload {
		t.Helper()
		a, err := f.env.Store.ActiveUploads(ctx, dev, 100)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	withBody := func(data, body []byte) *uploadtest.Response {
		t.Helper()
		hdr := map[string]string{"Upload-Length": strconv.Itoa(len(data)), "Upload-Metadata": uploadtest.Meta(data),
			"Content-Type": upload.OffsetContentType}
		resp, err := f.cl.Do(ctx, http.MethodPost, "/api/v1/uploads/", hdr, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	for _, sent := range []int{0, 1, 99_999, 199_999} {
		data := f.file(t, 200_000)
		loc := f.create(t, data)
		if sent > 0 {
			if p, err := f.cl.Patch(ctx, loc, 0, data[:sent], nil); err != nil || p.Offset() != int64(sent) {
				t.Fatalf("PATCH %d bytes: %v %+v", sent, err, p)
			}
		}
		// Created again without data, then with all of it: the earlier
		// upload at the offset it holds; the data is kept only where
		// the earlier upload held nothing.
		again, err := f.cl.Create(ctx, data, nil)
		if err != nil || again.Status != http.StatusCreated || f.env.URL+again.Header.Get("Location") != loc ||
			again.Offset() != int64(sent) || again.Header.Get("Upload-Expires") == "" {
			t.Fatalf("%d bytes sent, created again: %v %+v, want %s at %d", sent, err, again, loc, sent)
		}
		if n := len(active(f.dev.ID)); n != 1 {
			t.Errorf("%d bytes sent, created again: %d active uploads, want 1", sent, n)
		}
		resp := withBody(data, data)
		if resp.Status != http.StatusCreated || f.env.URL+resp.Header.Get("Location") != loc {
			t.Fatalf("%d bytes sent, created again with all data: %+v, want %s", sent, resp, loc)
		}
		off := resp.Offset()
		if want := int64(sent); sent == 0 {
			if off != int64(len(data)) {
				t.Errorf("created again with all data on an empty upload: offset %d, want %d", off, len(data))
			}
		} else if off != want {
			t.Errorf("%d bytes sent, created again with all data: offset %d, want %d (the data dropped)", sent, off, want)
		}
		if off < int64(len(data)) {
			if p, err := f.cl.Patch(ctx, loc, off, data[off:], nil); err != nil || p.Offset() != int64(len(data)) {
				t.Fatalf("PATCH the rest: %v %+v", err, p)
			}
		}
		f.present(t, data)
		if a := active(f.dev.ID); len(a) != 0 {
			t.Errorf("%d bytes sent: active uploads left: %+v", sent, a)
		}
	}

	// Another file is another upload; so is the same file from another
	// device.
	a, b := f.file(t, 30_000), f.file(t, 30_000)
	locA, locB := f.create(t, a), f.create(t, b)
	if locA == locB {
		t.Errorf("two files, one upload %s", locA)
	}
	other := fieldOn(t, f.env)
	other.reference(t, a)
	if got := other.create(t, a); got == locA {
		t.Errorf("another device's creation was given this device's upload %s", got)
	}
	if n, m := len(active(f.dev.ID)), len(active(other.dev.ID)); n != 2 || m != 1 {
		t.Errorf("active uploads: %d and %d, want 2 and 1", n, m)
	}
}

func TestUpload_Termination(t *testing.T) {
	f := newField(t)
	ctx := t.Context()
	data := f.file(t, 40_000)
	loc := f.create(t, data)
	if p, err := f.cl.Patch(ctx, loc, 0, data[:10_000], nil); err != nil || p.Status != http.StatusNoContent {
		t.Fatalf("PATCH: %v %+v", err, p)
	}
	d, err := f.cl.Do(ctx, http.MethodDelete, loc, nil, nil)
	if err != nil || d.Status != http.StatusNoContent {
		t.Fatalf("DELETE: %v %+v", err, d)
	}
	if h, _ := f.cl.Head(ctx, loc); h.Status != http.StatusNotFound {
		t.Errorf("HEAD after DELETE = %d", h.Status)
	}
	if got := f.partials(t); len(got) != 0 {
		t.Errorf("partial files left: %v", got)
	}
	f.absent(t, uploadtest.Sum(data))
}

func TestUpload_MethodOverride(t *testing.T) {
	f := newField(t)
	ctx := t.Context()
	data := f.file(t, 20_000)
	loc := f.create(t, data)
	resp, err := f.cl.Do(ctx, http.MethodPost, loc, map[string]string{
		"X-HTTP-Method-Override": "PATCH", "Upload-Offset": "0", "Content-Type": upload.OffsetContentType}, bytes.NewReader(data))
	if err != nil || resp.Status != http.StatusNoContent || resp.Offset() != 20_000 {
		t.Fatalf("POST with X-HTTP-Method-Override: %v %+v", err, resp)
	}
	f.present(t, data)
}

// chunked hides a reader's length, so the request has no Content-Length.
type chunked struct{ r io.Reader }

func (c chunked) Read(p []byte) (int, error) { return c.r.Read(p) }

func TestUpload_BadInput(t *testing.T) {
	f := newField(t)
	other := fieldOn(t, f.env)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	type result struct {
		status int
		code   syncproto.Code
		// offset is what HEAD must answer afterwards (-1: the upload is
		// gone, or was never made).
		offset int64
	}
	tests := []struct {
		name string
		run  func(t *testing.T, data []byte) (*uploadtest.Response, string)
		want result
	}{
		{"wrong final hash", func(t *testing.T, data []byte) (*uploadtest.Response, string) {
			loc := f.create(t, data)
			wrong := bytes.Clone(data)
			wrong[len(wrong)-1] ^= 0xFF
			r, _ := f.cl.Patch(t.Context(), loc, 0, wrong, nil)
			return r, loc
		}, result{422, syncproto.CodeHashMismatch, -1}},
		{"wrong chunk checksum", func(t *testing.T, data []byte) (*uploadtest.Response, string) {
			loc := f.create(t, data)
			if r, _ := f.cl.Patch(t.Context(), loc, 0, data[:1000], map[string]string{"Upload-Checksum": uploadtest.Checksum(data[:1000])}); r.Status != 204 {
				t.Fatalf("good chunk: %+v", r)
			}
			r, _ := f.cl.Patch(t.Context(), loc, 1000, data[1000:3000], map[string]string{"Upload-Checksum": uploadtest.Checksum(data[:2000])})
			return r, loc
		}, result{460, syncproto.CodeChecksumMismatch, 1000}},
		{"unsupported checksum algorithm", func(t *testing.T, data []byte) (*uploadtest.Response, string) {
			loc := f.create(t, data)
			r, _ := f.cl.Patch(t.Context(), loc, 0, data[:1000], map[string]string{"Upload-Checksum": "md5 " + b64("0123456789abcdef")})
			return r, loc
		}, result{400, syncproto.CodeBadRequest, 0}},
		{"offset mismatch", func(t *testing.T, data []byte) (*uploadtest.Response, string) {
			loc := f.create(t, data)
			r, _ := f.cl.Patch(t.Context(), loc, 5, data[5:100], nil)
			return r, loc
		}, result{409, syncproto.CodeOffsetMismatch, 0}},
		{"PATCH past the declared length", func(t *testing.T, data []byte) (*uploadtest.Response, string) {
			loc := f.create(t, data)
			r, _ := f.cl.Patch(t.Context(), loc, 0, append(bytes.Clone(data), 1, 2, 3), nil)
			return r, loc
		}, result{413, syncproto.CodeTooLarge, 0}},
		{"PATCH past the declared length, no Content-Length", func(t *testing.T, data []byte) (*uploadtest.Response, string) {
			loc := f.create(t, data)
			r, _ := f.cl.Do(t.Context(), http.MethodPatch, loc, map[string]string{"Upload-Offset": "0", "Content-Type": upload.OffsetContentType},
				chunked{bytes.NewReader(append(bytes.Clone(data), make([]byte, 70_000)...))})
			return r, loc
		}, result{413, syncproto.CodeTooLarge, 0}},
		{"wrong Content-Type", func(t *testing.T, data []byte) (*uploadtest.Response, string) {
			loc := f.create(t, data)
			r, _ := f.cl.Patch(t.Context(), loc, 0, data, map[string]string{"Content-Type": "application/octet-stream"})
			return r, loc
		}, result{415, syncproto.CodeUnsupportedMedia, 0}},
		{"declared length over the maximum", func(t *testing.T, data []byte) (*uploadtest.Response, string) {
			r, _ := f.cl.Create(t.Context(), data, map[string]string{"Upload-Length": strconv.Itoa(syncproto.MaxEvidenceBytes + 1)})
			return r, ""
		}, result{413, syncproto.CodeTooLarge, -1}},
		{"unreferenced hash", func(t *testing.T, data []byte) (*uploadtest.Response, string) {
			r, _ := f.cl.Create(t.Context(), randomBytes(len(data)), nil)
			return r, ""
		}, result{403, syncproto.CodeForbidden, -1}},
		{"hash referenced by another device only", func(t *testing.T, data []byte) (*uploadtest.Response, string) {
			r, _ := other.cl.Create(t.Context(), data, nil)
			return r, ""
		}, result{403, syncproto.CodeForbidden, -1}},
		{"another device's upload", func(t *testing.T, data []byte) (*uploadtest.Response, string) {
			loc := f.create(t, data)
			r, _ := other.cl.Patch(t.Context(), loc, 0, data, nil)
			return r, loc
		}, result{404, syncproto.CodeNotFound, 0}},
		{"revoked token mid-upload", func(t *testing.T, data []byte) (*uploadtest.Response, string) {
			g := fieldOn(t, f.env)
			data = g.file(t, len(data))
			loc := g.create(t, data)
			if r, _ := g.cl.Patch(t.Context(), loc, 0, data[:2000], nil); r.Status != 204 {
				t.Fatalf("first PATCH: %+v", r)
			}
			if st := uploadtest.DoJSON(t, f.env.URL, f.env.AdminToken, http.MethodPost, "/api/v1/devices/"+g.dev.ID+"/revoke", nil, nil); st != 204 {
				t.Fatalf("revoke: %d", st)
			}
			r, _ := g.cl.Patch(t.Context(), loc, 2000, data[2000:], nil)
			if h, _ := g.cl.Head(t.Context(), loc); h.Status != 401 {
				t.Errorf("HEAD with the revoked token = %d", h.Status)
			}
			if r.Header.Get("Tus-Resumable") != "1.0.0" {
				t.Errorf("401 without Tus-Resumable")
			}
			return r, ""
		}, result{401, syncproto.CodeUnauthorized, -1}},
		{"wrong Tus-Resumable", func(t *testing.T, data []byte) (*uploadtest.Response, string) {
			r, _ := f.cl.Create(t.Context(), data, map[string]string{"Tus-Resumable": "0.2.2"})
			if r.Header.Get("Tus-Version") != "1.0.0" {
				t.Errorf("412 without Tus-Version")
			}
			return r, ""
		}, result{412, syncproto.CodeUnsupportedVersion, -1}},
		{"no sha256 in the metadata", func(t *testing.T, data []byte) (*uploadtest.Response, string) {
			r, _ := f.cl.Create(t.Context(), data, map[string]string{"Upload-Metadata": "filename " + b64("a.jpg")})
			return r, ""
		}, result{400, syncproto.CodeBadRequest, -1}},
		{"deferred length", func(t *testing.T, data []byte) (*uploadtest.Response, string) {
			r, _ := f.cl.Create(t.Context(), data, map[string]string{"Upload-Length": "", "Upload-Defer-Length": "1"})
			return r, ""
		}, result{400, syncproto.CodeBadRequest, -1}},
	}
	for _, bad := range []struct{ name, meta string }{
		{"path-like filename", "filename " + b64("../../etc/passwd")},
		{"filename with a folder", "filename " + b64("DCIM/100/a.jpg")},
		{"windows path", "filename " + b64(`C:\photos\a.jpg`)},
		{"dot-dot", "filename " + b64("..")},
		{"path-like filetype", "filetype " + b64("image/../../x")},
		{"huge value", "filename " + b64(strings.Repeat("照", 200))},
		{"huge header", strings.Repeat("k", 5000)},
		{"control characters", "filename " + b64("a\x00.jpg")},
		{"not base64", "filename !!!"},
		{"duplicate key", "filename " + b64("a") + ",filename " + b64("b")},
		{"too many pairs", strings.Repeat("a,", 20) + "b"},
	} {
		tests = append(tests, struct {
			name string
			run  func(t *testing.T, data []byte) (*uploadtest.Response, string)
			want result
		}{"metadata: " + bad.name, func(t *testing.T, data []byte) (*uploadtest.Response, string) {
			r, _ := f.cl.Create(t.Context(), data, map[string]string{"Upload-Metadata": uploadtest.Meta(data) + "," + bad.meta})
			return r, ""
		}, result{400, syncproto.CodeBadRequest, -1}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.partials(t)
			data := f.file(t, 10_000)
			resp, loc := tt.run(t, data)
			if resp == nil {
				t.Fatal("no response")
			}
			if resp.Status != tt.want.status || (resp.Error.Code != tt.want.code && tt.want.status != 0) {
				t.Fatalf("got %d %q (%s), want %d %q", resp.Status, resp.Error.Code, resp.Body, tt.want.status, tt.want.code)
			}
			if resp.Header.Get("Tus-Resumable") != "1.0.0" {
				t.Errorf("response without Tus-Resumable")
			}
			f.absent(t, uploadtest.Sum(data))
			if loc != "" {
				h, err := f.cl.Head(t.Context(), loc)
				switch {
				case err != nil:
					t.Fatal(err)
				case tt.want.offset < 0 && h.Status != http.StatusNotFound:
					t.Errorf("HEAD after = %d, want 404", h.Status)
				case tt.want.offset >= 0 && (h.Status != http.StatusOK || h.Offset() != tt.want.offset):
					t.Errorf("HEAD after = %d offset %d, want offset %d", h.Status, h.Offset(), tt.want.offset)
				}
				// The partial file holds exactly the accepted bytes.
				id := loc[strings.LastIndex(loc, "/")+1:]
				fi, err := os.Stat(filepath.Join(f.uploadDir(), id+".part"))
				switch {
				case tt.want.offset < 0 && err == nil:
					t.Errorf("partial file left behind")
				case tt.want.offset >= 0 && (err != nil && tt.want.offset > 0 || err == nil && fi.Size() != tt.want.offset):
					t.Errorf("partial file: %v, size %d, want %d", err, sizeOf(fi), tt.want.offset)
				}
				if tt.want.offset >= 0 {
					if d, _ := f.cl.Do(t.Context(), http.MethodDelete, loc, nil, nil); d.Status != 204 {
						t.Errorf("cleanup DELETE = %d", d.Status)
					}
				}
			}
			if after := f.partials(t); strings.Join(after, ",") != strings.Join(before, ",") {
				t.Errorf("upload folder changed: %v -> %v", before, after)
			}
		})
	}
}

func sizeOf(fi os.FileInfo) int64 {
	if fi == nil {
		return -1
	}
	return fi.Size()
}

func TestUpload_ExpireUploads(t *testing.T) {
	var skew atomic.Int64
	env := servertest.StartWith(t, servertest.Options{API: apiConfigNow(&skew)})
	f := fieldOn(t, env)
	ctx := t.Context()
	data := f.file(t, 30_000)
	loc := f.create(t, data)
	if p, _ := f.cl.Patch(ctx, loc, 0, data[:5000], nil); p.Status != 204 {
		t.Fatalf("PATCH: %+v", p)
	}
	done := f.file(t, 1000)
	doneLoc := f.create(t, done)
	if p, _ := f.cl.Patch(ctx, doneLoc, 0, done, nil); p.Status != 204 {
		t.Fatalf("PATCH: %+v", p)
	}
	// A stray partial file that no upload owns (a crash between removing
	// a record and its file).
	stray := filepath.Join(f.uploadDir(), strings.Repeat("ab", 16)+".part")
	if err := os.WriteFile(stray, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	up := env.API.Uploads()
	if n, err := up.ExpireUploads(ctx); err != nil || n != 1 {
		t.Fatalf("ExpireUploads now = %d, %v; want the stray file only", n, err)
	}
	if h, _ := f.cl.Head(ctx, loc); h.Status != 200 || h.Offset() != 5000 {
		t.Fatalf("HEAD before expiry: %+v", h)
	}
	skew.Store(int64(25 * time.Hour))
	if h, _ := f.cl.Head(ctx, loc); h.Status != http.StatusGone {
		t.Errorf("HEAD after expiry = %d, want 410", h.Status)
	}
	if n, err := up.ExpireUploads(ctx); err != nil || n != 1 {
		t.Fatalf("ExpireUploads later = %d, %v; want the finished upload's record", n, err)
	}
	if got := f.partials(t); len(got) != 0 {
		t.Errorf("files left: %v", got)
	}
	if h, _ := f.cl.Head(ctx, loc); h.Status != http.StatusNotFound {
		t.Errorf("HEAD after the janitor = %d, want 404", h.Status)
	}
	f.present(t, done) // expiring an upload record never touches its blob
}

func TestUpload_JanitorPurgesRevokedDevices(t *testing.T) {
	f := newField(t)
	ctx := t.Context()
	data := f.file(t, 20_000)
	loc := f.create(t, data)
	if p, _ := f.cl.Patch(ctx, loc, 0, data[:5000], nil); p.Status != 204 {
		t.Fatalf("PATCH: %+v", p)
	}
	if err := f.env.Store.RevokeDevice(ctx, f.dev.ID); err != nil {
		t.Fatal(err)
	}
	if n, err := f.env.API.Uploads().ExpireUploads(ctx); err != nil || n != 1 {
		t.Fatalf("ExpireUploads = %d, %v", n, err)
	}
	if got := f.partials(t); len(got) != 0 {
		t.Errorf("files left: %v", got)
	}
}

func TestUpload_Janitor(t *testing.T) {
	f := newField(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { f.env.API.Uploads().Janitor(ctx, 10*time.Millisecond); close(done) }()
	stray := filepath.Join(f.uploadDir(), strings.Repeat("cd", 16)+".part")
	if err := os.WriteFile(stray, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(stray); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the janitor did not remove a stray partial file")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}

// apiConfigNow returns an API config whose clock runs *skew ahead.
func apiConfigNow(skew *atomic.Int64) api.Config {
	return api.Config{Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }}
}
