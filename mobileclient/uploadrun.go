package mobileclient

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"time"
)

// uploadRun is one file's upload in one sync step: the file, its stored
// row and what the requests so far have taught. upload drives it through
// named steps: start (open and check the file), wait (back off after a
// failure), create (POST), resume (HEAD), patch (PATCH a chunk), then
// answer, which sorts the reply and either finishes, restarts, verifies
// the device's copy or goes round again.
//
// After a failure the next PATCH goes straight to the saved offset: no
// HEAD first. On a weak link a HEAD's round trip, on top of a new
// connection's, can take the whole time between two cuts, and no PATCH
// byte would ever land. A cut PATCH may have landed more than its last
// answer said (the server keeps every byte of an unchecksummed PATCH):
// the server then answers 409 offset_mismatch with the offset it holds
// (details.offset), and the upload goes on from there. HEAD is only for
// an offset the device does not know: a 409 without one (another tus
// server), an answer without Upload-Offset, or all bytes there but the
// upload not finished (a HEAD finishes it).
type uploadRun struct {
	u *uploader
	c *Client
	r *uploadRow
	f *os.File

	fails      int  // failed requests since the last progress
	backoff    bool // the last request failed: wait before the next
	cut        bool // ... the link broke mid-exchange: a short pause
	lastErr    error
	retryAfter time.Duration
	recreated  int   // new uploads made after the server forgot one
	best       int64 // the furthest offset the server confirmed
	needHead   bool  // the offset is unknown: HEAD before the next PATCH
	// stale: since the answer that gave the saved offset, a PATCH may
	// have landed bytes no answer confirmed (so it is assumed of a
	// resumed upload, whose last request may have been cut).
	stale bool
	// withData: the last creation carried the whole file.
	withData bool
}

// tusRequest is one tus request as sent and answered.
type tusRequest struct {
	method string
	res    *tusResp
	ex     exchange
	err    error // the transport's error
}

// upload sends one file: create the upload (unless resuming one), then
// PATCH chunks from the offset the server last confirmed. The upload's
// path and confirmed offset are saved after every answer, so an app
// restart or a later sync resumes where the server stands.
func (u *uploader) upload(ctx context.Context, r *uploadRow) error {
	run, err := u.start(r)
	if err != nil {
		return err
	}
	defer run.f.Close()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := run.wait(ctx); err != nil {
			return err
		}
		var req tusRequest
		switch {
		case r.url == "":
			req, err = run.create(ctx)
		case run.needHead || (run.stale && !u.expect):
			req = run.resume(ctx)
		default:
			req, err = run.patch(ctx)
		}
		if err != nil {
			return err
		}
		if done, err := run.answer(ctx, req); done || err != nil {
			return err
		}
	}
}

// start opens the file and checks that it is still what the visit
// references: a file that is not is never sent.
func (u *uploader) start(r *uploadRow) (*uploadRun, error) {
	f, err := os.Open(u.c.localPath(r.rel))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &blobFailure{fmt.Errorf("the device's copy is gone: %w", ErrCorrupt)}
	}
	if err != nil {
		return nil, &keepPending{err}
	}
	if ok, err := readerMatches(f, r.sha, r.size); err != nil {
		f.Close()
		return nil, &keepPending{err}
	} else if !ok {
		f.Close()
		return nil, &blobFailure{fmt.Errorf("the device's copy no longer matches its sha256 (changed after it was queued): %w", ErrCorrupt)}
	}
	return &uploadRun{u: u, c: u.c, r: r, f: f, best: r.offset, stale: true}, nil
}

// wait backs off after a failed request (briefly after a cut), and gives
// up after Backoff.MaxAttempts failures without progress.
func (run *uploadRun) wait(ctx context.Context) error {
	if run.backoff {
		run.backoff = false
		b := run.c.opts.Backoff
		if run.fails >= b.MaxAttempts {
			return fmt.Errorf("%w after %d attempts without progress: %w", ErrUnavailable, run.fails, run.lastErr)
		}
		run.u.cnt.retries++
		run.u.cnt.errors = append(run.u.cnt.errors, fmt.Sprintf("upload %s: attempt %d: %v", run.r.sha[:12], run.fails, run.lastErr))
		d := backoffDelay(b, run.fails, run.retryAfter)
		if run.cut {
			d = min(b.Base, cutPause)
		}
		if err := sleep(ctx, d); err != nil {
			return fmt.Errorf("%w (last error: %v)", err, run.lastErr)
		}
	}
	run.retryAfter, run.cut = 0, false
	return nil
}

// checksum is the Upload-Checksum header value for body.
func checksum(body []byte) string {
	s := sha256.Sum256(body)
	return "sha256 " + base64.StdEncoding.EncodeToString(s[:])
}

// create POSTs a new upload; a small file goes with it.
func (run *uploadRun) create(ctx context.Context) (tusRequest, error) {
	r, u := run.r, run.u
	hdr := map[string]string{
		"Upload-Length":   strconv.FormatInt(r.size, 10),
		"Upload-Metadata": uploadMetadata(r),
	}
	var body []byte
	run.withData = false
	if r.size > 0 && r.size <= maxDataOnCreation && !run.c.linkCutsLately() {
		// A small file goes with its creation (tus creation-with-upload):
		// a round trip less per photo, which on a 2G link is most of a
		// small photo's time. A creation cut mid-body loses its Location,
		// so this is done only for small files and not on a link that cut
		// lately (where the body might never fit between cuts, and
		// PATCHes keep what arrives).
		body = make([]byte, r.size)
		if _, err := run.f.ReadAt(body, 0); err != nil {
			return tusRequest{}, &keepPending{err}
		}
		hdr["Content-Type"] = offsetContentType
		if !u.noChecksum {
			hdr["Upload-Checksum"] = checksum(body)
		}
		run.withData = true
	}
	res, ex, err := u.do(ctx, http.MethodPost, run.c.server+UploadsPath, hdr, body)
	return tusRequest{http.MethodPost, res, ex, err}, nil
}

// resume asks the server where the upload stands (HEAD).
func (run *uploadRun) resume(ctx context.Context) tusRequest {
	res, ex, err := run.u.do(ctx, http.MethodHead, run.c.uploadURL(run.r.url), nil, nil)
	return tusRequest{http.MethodHead, res, ex, err}
}

// patch sends the next chunk from the saved offset.
func (run *uploadRun) patch(ctx context.Context) (tusRequest, error) {
	r, u, c := run.r, run.u, run.c
	size := c.opts.ChunkSize
	if u.cutChunk > 0 {
		size = u.cutChunk
	}
	// A new buffer each time: the transport may still be reading a cut
	// request's body when Do returns.
	chunk := make([]byte, min(int64(size), r.size-r.offset))
	if _, err := run.f.ReadAt(chunk, r.offset); err != nil {
		return tusRequest{}, &keepPending{err}
	}
	hdr := map[string]string{"Upload-Offset": strconv.FormatInt(r.offset, 10), "Content-Type": offsetContentType}
	if !u.noChecksum {
		hdr["Upload-Checksum"] = checksum(chunk)
	}
	if run.stale {
		// A PATCH since the saved offset may have landed more: wait for
		// 100 Continue, so that the server's 409 comes before the body
		// crosses the link. Otherwise (the offset is the server's last
		// answer, or the PATCH since was cut too early to land a byte)
		// the body goes at once: on a link where a round trip is most of
		// the time between cuts, waiting for 100 Continue would leave
		// none for the body.
		hdr["Expect"] = "100-continue"
	}
	sent := u.sent.Load()
	res, ex, err := u.do(ctx, http.MethodPatch, c.uploadURL(r.url), hdr, chunk)
	if ex.continued {
		// The server found the offset right: nothing landed past it
		// before this PATCH.
		run.stale = false
	}
	if hdr["Expect"] != "" && res != nil && res.status == http.StatusConflict && u.sent.Load() > sent {
		// The transport sent the body though the server refused it:
		// check such offsets with a HEAD from now on.
		u.expect = false
	}
	if err != nil {
		// The link cuts: keep what arrives, lose less per cut.
		u.noChecksum = true
		u.cutChunk = min(c.opts.ChunkSize, max(minCutChunk, c.opts.ChunkSize/4))
		if u.mayHaveLanded(ex.bodyFor) {
			run.stale = true
		}
	}
	return tusRequest{http.MethodPatch, res, ex, err}, nil
}

// failed records a failed request: the next one waits.
func (run *uploadRun) failed(method string, err error) {
	run.fails, run.backoff = run.fails+1, true
	run.lastErr = fmt.Errorf("%s: %w", method, err)
}

// setOffset saves the offset the server stands at.
func (run *uploadRun) setOffset(ctx context.Context, off int64) error {
	run.r.offset, run.stale = off, false
	return run.c.saveUpload(ctx, run.r)
}

// restart forgets the upload on the server: the next request creates a
// new one.
func (run *uploadRun) restart(ctx context.Context) error {
	run.r.url, run.r.offset, run.best, run.needHead = "", 0, 0, false
	return run.c.saveUpload(ctx, run.r)
}

// answer sorts req's reply (judge) and acts on it. done is true when the
// upload is over (err nil: the server holds the file); with done false
// and err nil the upload goes on with another request.
func (run *uploadRun) answer(ctx context.Context, req tusRequest) (done bool, err error) {
	r, u, c := run.r, run.u, run.c
	o, jerr := judge(req.method, req.res, req.err)
	switch o {
	case okay:
		return run.finish(ctx, req)
	case transient:
		run.failed(req.method, jerr)
		if req.err != nil {
			// Cut after the request went out: the link was up a moment
			// ago, so try again after only a short pause (a dial that
			// fails backs off). On a link that cuts every few seconds a
			// backoff would eat the time between cuts.
			run.cut = req.ex.wrote
			if run.cut {
				c.lastCut.Store(time.Now().UnixNano())
			}
		}
		if req.res != nil {
			run.retryAfter = parseRetryAfter(req.res.header.Get("Retry-After"))
			if off, ok := errorOffset(req.res, r.size); ok {
				// 460, 413: the server says where it stands.
				if err := run.setOffset(ctx, off); err != nil {
					return true, err
				}
			} else if req.method == http.MethodPatch {
				// An answer such as a 503 may come after bytes landed.
				run.stale = true
			}
		}
		return false, nil
	case resync:
		off, ok := errorOffset(req.res, r.size)
		if !ok {
			// A 409 that does not say where the server stands.
			run.failed(req.method, jerr)
			run.needHead = true
			return false, nil
		}
		// The server holds more (a cut PATCH landed bytes its answer
		// never confirmed) or less than the device saved: go on from
		// there. All bytes there but the upload not finished: HEAD
		// finishes it.
		run.needHead = off == r.size
		if err := run.setOffset(ctx, off); err != nil {
			return true, err
		}
		if off > run.best {
			run.best, run.fails = off, 0
		} else {
			run.failed(req.method, jerr)
		}
		return false, nil
	case recreate:
		if run.recreated++; run.recreated > maxRecreate {
			return true, &keepPending{fmt.Errorf("the server keeps forgetting the upload: %w", jerr)}
		}
		u.cnt.errors = append(u.cnt.errors, fmt.Sprintf("upload %s: %s: %v; starting a new upload", r.sha[:12], req.method, jerr))
		return run.restartOrFail(ctx)
	case mismatch:
		return run.verify(ctx, jerr)
	case refused:
		ok, lerr := c.referencedLocally(ctx, r.sha)
		if lerr != nil {
			return true, lerr
		}
		if ok {
			// The server lost the visit (a restore) or has not applied
			// it yet: the next sync tries again.
			return true, &keepPending{jerr}
		}
		return true, &blobFailure{fmt.Errorf("no visit the server accepted references it: %w", jerr)}
	case stop:
		return true, jerr
	default:
		return true, &blobFailure{jerr}
	}
}

func (run *uploadRun) restartOrFail(ctx context.Context) (bool, error) {
	if err := run.restart(ctx); err != nil {
		return true, err
	}
	return false, nil
}

// verify answers the server's hash mismatch: if the device's copy is
// sound, the upload starts again (at most maxServerMismatches times).
func (run *uploadRun) verify(ctx context.Context, cause error) (bool, error) {
	r := run.r
	if ok, err := readerMatches(run.f, r.sha, r.size); err != nil {
		return true, &keepPending{err}
	} else if !ok {
		return true, &blobFailure{fmt.Errorf("the server found a hash mismatch and the device's copy no longer matches its sha256: %w", ErrCorrupt)}
	}
	r.failures++
	if err := run.restart(ctx); err != nil {
		return true, err
	}
	if r.failures >= maxServerMismatches {
		return true, &blobFailure{fmt.Errorf("the server found a hash mismatch %d times though the device's copy is sound (%v): %w", r.failures, cause, ErrCorrupt)}
	}
	run.u.cnt.errors = append(run.u.cnt.errors, fmt.Sprintf("upload %s: %v; the device's copy is sound, starting again", r.sha[:12], cause))
	return false, nil
}

// finish acts on a success answer: a creation's Location, a HEAD's length
// and every answer's Upload-Offset; done once the server holds all bytes.
func (run *uploadRun) finish(ctx context.Context, req tusRequest) (bool, error) {
	r, c := run.r, run.c
	res := req.res
	switch req.method {
	case http.MethodPost:
		loc := res.header.Get("Location")
		p, err := uploadPath(c.server+UploadsPath, loc)
		if err != nil {
			return true, &keepPending{fmt.Errorf("%w: creation answered Location %q: %v", ErrServer, loc, err)}
		}
		off := int64(0)
		if h := res.header.Get("Upload-Offset"); h != "" {
			if off, err = parseOffset(h, r.size); err != nil {
				return true, &keepPending{fmt.Errorf("%w: creation: %v", ErrServer, err)}
			}
		}
		r.url, run.best, run.needHead, run.fails = p, off, false, 0
		if err := run.setOffset(ctx, off); err != nil {
			return true, err
		}
		if off == r.size {
			if run.withData {
				run.u.rep.BlobsUploaded++
			} else {
				// The server had the blob already.
				run.u.rep.BlobsPresent++
			}
			return true, c.uploadDone(ctx, r)
		}
		return false, nil
	case http.MethodHead:
		if l := res.header.Get("Upload-Length"); l != "" && l != strconv.FormatInt(r.size, 10) {
			// Not the upload we made: start a new one.
			if run.recreated++; run.recreated > maxRecreate {
				return true, &keepPending{fmt.Errorf("%w: upload %s has length %s, the file %d", ErrServer, r.url, l, r.size)}
			}
			return run.restartOrFail(ctx)
		}
	}
	off, err := parseOffset(res.header.Get("Upload-Offset"), r.size)
	if err != nil {
		run.fails, run.backoff = run.fails+1, true
		run.lastErr = fmt.Errorf("%s: %w: %v", req.method, ErrServer, err)
		run.needHead = true
		return false, nil
	}
	run.needHead = false
	if err := run.setOffset(ctx, off); err != nil {
		return true, err
	}
	if off > run.best {
		run.best, run.fails = off, 0
	} else if req.method == http.MethodPatch {
		// Answered, but nothing was kept.
		run.fails, run.backoff = run.fails+1, true
		run.lastErr = fmt.Errorf("PATCH at %d: the server kept nothing", off)
		return false, nil
	}
	if off == r.size {
		run.u.rep.BlobsUploaded++
		return true, c.uploadDone(ctx, r)
	}
	return false, nil
}
