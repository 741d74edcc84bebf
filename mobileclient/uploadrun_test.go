package mobileclient

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"fieldsync/syncproto"
)

// TestUploadRun_Steps drives uploadRun.answer one reply at a time and
// checks the state each leaves: the steps of an upload, tested apart from
// any server.
func TestUploadRun_Steps(t *testing.T) {
	ctx := context.Background()
	c := openTest(t, t.TempDir(), "http://127.0.0.1:1", nil)
	const size = 1000
	file := filepath.Join(t.TempDir(), "f")
	data := []byte(strings.Repeat("x", size))
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	newRun := func(url string, offset int64) *uploadRun {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		u := &uploader{c: c, cnt: &counters{}, rep: &SyncReport{}}
		return &uploadRun{u: u, c: c, r: &uploadRow{sha: strings.Repeat("ab", 32), size: size, url: url, offset: offset}, f: f, best: offset, stale: true}
	}
	reply := func(method string, status int, hdr map[string]string, perr *syncproto.Error) tusRequest {
		h := http.Header{}
		for k, v := range hdr {
			h.Set(k, v)
		}
		if perr == nil {
			perr = &syncproto.Error{Code: "x", Message: http.StatusText(status)}
		}
		return tusRequest{method: method, res: &tusResp{status: status, header: h, err: perr}}
	}

	t.Run("create answered with an offset", func(t *testing.T) {
		run := newRun("", 0)
		done, err := run.answer(ctx, reply(http.MethodPost, 201, map[string]string{"Location": "/api/v1/uploads/abc", "Upload-Offset": "0"}, nil))
		if done || err != nil || run.r.url != "/api/v1/uploads/abc" || run.stale || run.r.offset != 0 {
			t.Errorf("done %v err %v state %+v row %+v", done, err, run, run.r)
		}
	})
	t.Run("create with the whole file finishes", func(t *testing.T) {
		run := newRun("", 0)
		run.withData = true
		done, err := run.answer(ctx, reply(http.MethodPost, 201, map[string]string{"Location": "/api/v1/uploads/abc", "Upload-Offset": "1000"}, nil))
		if !done || err != nil || run.u.rep.BlobsUploaded != 1 {
			t.Errorf("done %v err %v report %+v", done, err, run.u.rep)
		}
	})
	t.Run("patch progress resets the failures", func(t *testing.T) {
		run := newRun("/u/1", 100)
		run.fails = 3
		done, err := run.answer(ctx, reply(http.MethodPatch, 204, map[string]string{"Upload-Offset": "600"}, nil))
		if done || err != nil || run.r.offset != 600 || run.best != 600 || run.fails != 0 || run.backoff {
			t.Errorf("done %v err %v run %+v", done, err, run)
		}
	})
	t.Run("patch that kept nothing backs off", func(t *testing.T) {
		run := newRun("/u/1", 600)
		done, err := run.answer(ctx, reply(http.MethodPatch, 204, map[string]string{"Upload-Offset": "600"}, nil))
		if done || err != nil || !run.backoff || run.fails != 1 {
			t.Errorf("done %v err %v run %+v", done, err, run)
		}
	})
	t.Run("answer without an offset asks with HEAD", func(t *testing.T) {
		run := newRun("/u/1", 600)
		if done, err := run.answer(ctx, reply(http.MethodPatch, 204, nil, nil)); done || err != nil || !run.needHead || !run.backoff {
			t.Errorf("done %v err %v run %+v", done, err, run)
		}
	})
	t.Run("409 with the server's offset goes on from there", func(t *testing.T) {
		run := newRun("/u/1", 100)
		perr := &syncproto.Error{Code: syncproto.CodeOffsetMismatch, Details: map[string]any{"offset": float64(700)}}
		done, err := run.answer(ctx, reply(http.MethodPatch, 409, nil, perr))
		if done || err != nil || run.r.offset != 700 || run.stale || run.needHead || run.fails != 0 {
			t.Errorf("done %v err %v run %+v", done, err, run)
		}
		// All bytes there: HEAD finishes it.
		perr.Details = map[string]any{"offset": float64(size)}
		if done, err := run.answer(ctx, reply(http.MethodPatch, 409, nil, perr)); done || err != nil || !run.needHead {
			t.Errorf("at the end: done %v err %v run %+v", done, err, run)
		}
	})
	t.Run("409 without an offset", func(t *testing.T) {
		run := newRun("/u/1", 100)
		if done, err := run.answer(ctx, reply(http.MethodPatch, 409, nil, nil)); done || err != nil || !run.needHead || run.fails != 1 {
			t.Errorf("done %v err %v run %+v", done, err, run)
		}
	})
	t.Run("a forgotten upload starts again, a bounded number of times", func(t *testing.T) {
		run := newRun("/u/1", 500)
		for i := 1; i <= maxRecreate; i++ {
			run.r.url, run.r.offset = "/u/1", 500
			if done, err := run.answer(ctx, reply(http.MethodHead, 404, nil, nil)); done || err != nil || run.r.url != "" || run.r.offset != 0 {
				t.Fatalf("recreate %d: done %v err %v row %+v", i, done, err, run.r)
			}
		}
		done, err := run.answer(ctx, reply(http.MethodHead, 410, nil, nil))
		var kp *keepPending
		if !done || !errors.As(err, &kp) {
			t.Errorf("after %d recreations: done %v err %v", maxRecreate, done, err)
		}
	})
	t.Run("HEAD of another upload's length", func(t *testing.T) {
		run := newRun("/u/1", 500)
		if done, err := run.answer(ctx, reply(http.MethodHead, 200, map[string]string{"Upload-Length": "999", "Upload-Offset": "0"}, nil)); done || err != nil || run.r.url != "" {
			t.Errorf("done %v err %v row %+v", done, err, run.r)
		}
	})
	t.Run("hash mismatch with a sound copy starts again, then fails", func(t *testing.T) {
		run := newRun("/u/1", 500)
		// The row's sha is not the file's: the device's copy is not sound.
		done, err := run.answer(ctx, reply(http.MethodPatch, 422, nil, &syncproto.Error{Code: syncproto.CodeHashMismatch}))
		var bf *blobFailure
		if !done || !errors.As(err, &bf) || !errors.Is(err, ErrCorrupt) {
			t.Errorf("unsound copy: done %v err %v", done, err)
		}
		run = newRun("/u/1", 500)
		sum := sha256.Sum256(data)
		run.r.sha = hex.EncodeToString(sum[:])
		if done, err := run.answer(ctx, reply(http.MethodPatch, 422, nil, &syncproto.Error{Code: syncproto.CodeHashMismatch})); done || err != nil || run.r.url != "" || run.r.failures != 1 {
			t.Errorf("first mismatch: done %v err %v row %+v", done, err, run.r)
		}
		if done, err := run.answer(ctx, reply(http.MethodPatch, 422, nil, &syncproto.Error{Code: syncproto.CodeHashMismatch})); !done || !errors.As(err, &bf) {
			t.Errorf("second mismatch: done %v err %v", done, err)
		}
	})
	t.Run("transient with Retry-After and a cut", func(t *testing.T) {
		run := newRun("/u/1", 500)
		run.stale = false
		req := reply(http.MethodPatch, 503, map[string]string{"Retry-After": "7"}, nil)
		if done, err := run.answer(ctx, req); done || err != nil || !run.backoff || run.retryAfter.Seconds() != 7 || !run.stale {
			t.Errorf("503: done %v err %v run %+v", done, err, run)
		}
		cut := tusRequest{method: http.MethodPatch, ex: exchange{wrote: true}, err: errors.New("connection reset")}
		if done, err := run.answer(ctx, cut); done || err != nil || !run.cut || !c.linkCutsLately() {
			t.Errorf("cut: done %v err %v run %+v", done, err, run)
		}
	})
	t.Run("stop and final answers end the upload", func(t *testing.T) {
		for status, want := range map[int]error{401: ErrUnauthorized, 412: ErrUnsupportedVersion, 400: ErrServer} {
			run := newRun("/u/1", 0)
			if done, err := run.answer(ctx, reply(http.MethodPatch, status, nil, nil)); !done || !errors.Is(err, want) {
				t.Errorf("%d: done %v err %v", status, done, err)
			}
		}
	})
	t.Run("wait gives up after the attempts", func(t *testing.T) {
		run := newRun("/u/1", 0)
		run.backoff, run.fails, run.lastErr = true, c.opts.Backoff.MaxAttempts, errors.New("down")
		if err := run.wait(ctx); !errors.Is(err, ErrUnavailable) {
			t.Errorf("wait: %v", err)
		}
	})
}
