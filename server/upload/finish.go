package upload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"fieldsync/server/blob"
	"fieldsync/server/domain"
	"fieldsync/server/evidence"
	"fieldsync/syncproto"
)

// finish verifies a fully received upload and stores it: take the hash
// of the whole file kept while it was received (hashStates), or read the
// partial file back to hash it; on a mismatch discard everything; else move the
// file into the blob store (a rename when the store can adopt the file,
// else a verified copy), record the blob and mark the upload done, and
// wake the analysis worker, which reads EXIF and the perceptual hash and
// runs the evidence checks after the client has its answer (analyse.go).
// It goes on when the client has gone away (bounded by the configured
// timeouts). The caller holds the lock.
//
// If storing or recording fails, the verified marker (okPath) is written
// before the answer, so that the bytes are never asked for again: the
// upload keeps its full offset and the next HEAD, PATCH or
// creation-with-upload retry finishes it from the partial file or, when
// the store already adopted that file, from the stored blob. On success no
// marker is written (a file made, fsynced and removed for every upload
// cost a third of an upload's time on disk). A crash after the store
// adopted the file and before the record was committed then leaves the
// upload without its partial file and without a marker: it reports
// offset 0 and the client sends the bytes again (the blob store already
// holds them and keeps one copy); the client was never told the upload
// succeeded.
func (h *Handler) finish(ctx context.Context, u Upload) (Upload, error) {
	ctx, cancel := detached(ctx, h.cfg.BlobTimeout+h.cfg.DBTimeout)
	defer cancel()
	if mt, ok := h.verified(u); ok {
		return h.finishVerified(ctx, u, mt, true)
	}
	path := h.partPath(u.ID)
	f, err := os.Open(path)
	if err != nil {
		return u, fmt.Errorf("upload: finish %s: %w", u.ID, err)
	}
	defer f.Close()
	var sum []byte
	if whole, _ := h.hashes.take(u.ID, u.Length); whole != nil {
		sum = whole.Sum(nil)
	}
	if sum != nil && hex.EncodeToString(sum) != u.SHA256 {
		// The hash kept while receiving says the bytes are wrong: read
		// them back before anything is thrown away.
		sum = nil
	}
	if sum == nil {
		h.rehashes.Add(1)
		hs := sha256.New()
		buf := getBuf()
		_, err := io.CopyBuffer(hs, struct{ io.Reader }{f}, *buf)
		putBuf(buf)
		if err != nil {
			return u, fmt.Errorf("upload: finish %s: %w", u.ID, err)
		}
		sum = hs.Sum(nil)
	}
	if got := hex.EncodeToString(sum); got != u.SHA256 {
		if err := h.discard(ctx, u); err != nil {
			h.cfg.Logger.Error("upload: discarding mismatched upload", "upload", u.ID, "err", err)
		}
		return u, syncproto.Errorf(syncproto.CodeHashMismatch,
			"the %d bytes received hash to %s, not to the declared sha256 %s; nothing was stored, start a new upload", u.Length, got, u.SHA256).
			With("sha256", got)
	}
	head := make([]byte, min(u.Length, 512))
	if _, err := f.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
		return u, fmt.Errorf("upload: finish %s: %w", u.ID, err)
	}
	mt := mediaType(evidence.Sniff(head), u.Metadata[MetaFiletype])
	f.Close()
	return h.finishVerified(ctx, u, mt, false)
}

// verified reports whether the upload's bytes were verified (its marker
// exists), and the media type recorded with them.
func (h *Handler) verified(u Upload) (string, bool) {
	// The marker may be another instance's (a shared uploads folder): the
	// file, not this process's set, is the authority.
	b, err := os.ReadFile(h.okPath(u.ID))
	if err != nil {
		return "", false
	}
	h.okMu.Lock()
	h.ok[u.ID] = struct{}{}
	h.okMu.Unlock()
	return string(b), true
}

// mark writes the verified marker of an upload whose bytes were verified
// but could not be stored or recorded yet.
func (h *Handler) mark(u Upload, mt string) {
	if err := writeSynced(h.okPath(u.ID), mt); err != nil {
		_ = os.Remove(h.okPath(u.ID)) // never leave a half-written marker
		h.cfg.Logger.Error("upload: writing the verified marker; the next request checks the bytes again", "upload", u.ID, "err", err)
		return
	}
	h.okMu.Lock()
	h.ok[u.ID] = struct{}{}
	h.okMu.Unlock()
}

// unmark removes the verified marker.
func (h *Handler) unmark(id string) error {
	h.okMu.Lock()
	delete(h.ok, id)
	h.okMu.Unlock()
	if err := os.Remove(h.okPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// markedIDs lists the uploads with a verified marker.
func (h *Handler) markedIDs() []string {
	h.okMu.Lock()
	seen := make(map[string]bool, len(h.ok))
	ids := make([]string, 0, len(h.ok))
	for id := range h.ok {
		ids = append(ids, id)
		seen[id] = true
	}
	h.okMu.Unlock()
	// Markers other instances wrote in a shared uploads folder: one
	// listing of the folder, which holds only unfinished uploads.
	names, _ := filepath.Glob(filepath.Join(h.cfg.Dir, "*.ok"))
	for _, n := range names {
		id := strings.TrimSuffix(filepath.Base(n), ".ok")
		if ValidID(id) && !seen[id] {
			ids = append(ids, id)
		}
	}
	return ids
}

// finishVerified stores (if it is not stored yet) and records an upload
// whose bytes were verified; marked says whether its marker is written
// (else it is written when storing or recording fails).
func (h *Handler) finishVerified(ctx context.Context, u Upload, mt string, marked bool) (Upload, error) {
	keep := func() {
		if !marked {
			h.mark(u, mt)
			marked = true
		}
	}
	path := h.partPath(u.ID)
	if _, err := os.Stat(path); err == nil {
		if err := h.store(ctx, u, path); err != nil {
			switch {
			case errors.Is(err, blob.ErrHashMismatch), errors.Is(err, blob.ErrSizeMismatch):
				// We hashed the file: it changed under us, or the store
				// holds something else under this sum. Keep nothing.
				h.cfg.Logger.Error("upload: blob store refused verified bytes", "upload", u.ID, "sha256", u.SHA256, "err", err)
				if derr := h.discard(ctx, u); derr != nil {
					h.cfg.Logger.Error("upload: discarding", "upload", u.ID, "err", derr)
				}
				return u, syncproto.Errorf(syncproto.CodeHashMismatch, "the blob store refused the bytes (%v); nothing was stored, start a new upload", err)
			default:
				keep()
				h.cfg.Logger.Warn("upload: blob store unavailable; the upload stays complete on disk", "upload", u.ID, "err", err)
				return u, syncproto.Wrap(syncproto.CodeUnavailable, fmt.Errorf("storing the blob: %w; all bytes are kept, retry (HEAD) later", err))
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		keep()
		return u, fmt.Errorf("upload: finish %s: %w", u.ID, err)
	} else {
		// The store adopted the file before the record failed: the blob
		// must be there, whole.
		bctx, cancel := context.WithTimeout(ctx, h.cfg.BlobTimeout)
		info, err := h.cfg.Blobs.Stat(bctx, u.SHA256)
		cancel()
		switch {
		case errors.Is(err, blob.ErrNotFound) || (err == nil && info.Size != u.Length):
			// Neither the file nor the blob: start again from 0.
			h.cfg.Logger.Error("upload: verified upload lost its bytes", "upload", u.ID, "sha256", u.SHA256, "err", err)
			_ = h.unmark(u.ID)
			return u, syncproto.Errorf(syncproto.CodeOffsetMismatch, "the bytes of upload %s were lost; send them again from offset 0", u.ID).With("offset", 0)
		case err != nil:
			return u, syncproto.Wrap(syncproto.CodeUnavailable, fmt.Errorf("checking the stored blob: %w; retry (HEAD) later", err))
		}
	}
	now := h.cfg.Now().UTC()
	b := Blob{SHA256: u.SHA256, Size: u.Length, MediaType: mt, StoredAt: now}
	expires := now.Add(h.cfg.TTL)
	if err := h.cfg.Store.CompleteUpload(ctx, u.ID, b, expires); err != nil {
		keep()
		h.cfg.Logger.Warn("upload: recording a stored blob failed; the next request on the upload retries", "upload", u.ID, "err", err)
		return u, syncproto.Wrap(syncproto.CodeUnavailable, fmt.Errorf("recording the blob: %w; the bytes are stored, retry (HEAD) later", err)).
			With("offset", u.Length)
	}
	u.Done, u.Offset, u.ExpiresAt = true, u.Length, expires
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		h.cfg.Logger.Warn("upload: removing partial file", "upload", u.ID, "err", err)
	}
	if marked {
		if err := h.unmark(u.ID); err != nil {
			h.cfg.Logger.Warn("upload: removing the verified marker", "upload", u.ID, "err", err)
		}
	}
	h.wakeAnalyser()
	return u, nil
}

// store puts the verified, fsynced partial file at path into the blob
// store: adopted by a rename when the store can, else copied.
func (h *Handler) store(ctx context.Context, u Upload, path string) error {
	bctx, cancel := context.WithTimeout(ctx, h.cfg.BlobTimeout)
	defer cancel()
	if a, ok := h.cfg.Blobs.(blob.Adopter); ok {
		err := a.Adopt(bctx, u.SHA256, u.Length, path)
		if !errors.Is(err, blob.ErrCannotAdopt) {
			return err
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("upload: finish %s: %w", u.ID, err)
	}
	defer f.Close()
	return h.cfg.Blobs.Put(bctx, u.SHA256, u.Length, f)
}

// mediaType picks the type to serve a blob with. The bytes decide when
// they can (a JPEG is a JPEG whatever the client said); the declared type
// is used only where sniffing cannot tell: binary formats it does not know,
// and text formats for plain text.
func mediaType(sniffed, declared string) string {
	declared = strings.ToLower(declared)
	switch {
	case sniffed == "":
		if declared != "" {
			return declared
		}
		return "application/octet-stream"
	case strings.HasPrefix(sniffed, "text/plain"):
		if strings.HasPrefix(declared, "text/") || declared == "application/json" || declared == "application/xml" {
			return declared
		}
	}
	return sniffed
}

// fail writes an error response: a syncproto.Error body (none for HEAD)
// with the status of its code; 412 for a wrong Tus-Resumable; 503 with
// Retry-After when storage is unavailable.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, body := h.errorBody(w, r, err)
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests || status == http.StatusInsufficientStorage {
		w.Header().Set("Retry-After", "5")
	}
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func (h *Handler) errorBody(w http.ResponseWriter, r *http.Request, err error) (int, *syncproto.Error) {
	var pe *syncproto.Error
	switch {
	case errors.Is(err, errPrecondition):
		// tus requires 412; the body's code says what is wrong.
		return http.StatusPreconditionFailed, syncproto.Errorf(syncproto.CodeUnsupportedVersion, "%v", err).
			With("tus_version", TusVersion)
	case errors.As(err, &pe):
		return pe.Code.HTTPStatus(), pe
	case errors.Is(err, blob.ErrUnavailable), errors.Is(err, domain.ErrUnavailable),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, syncproto.Errorf(syncproto.CodeUnavailable, "%v; retry later", err)
	case errors.Is(err, domain.ErrNotFound):
		return http.StatusNotFound, syncproto.Errorf(syncproto.CodeNotFound, "%v", err)
	}
	rid := w.Header().Get("X-Request-Id")
	h.cfg.Logger.Error("upload: internal error", "err", err, "method", r.Method, "path", r.URL.Path, "request_id", rid)
	return http.StatusInternalServerError, syncproto.Errorf(syncproto.CodeInternal, "internal error; see the server log for request %s", rid)
}

// locks serialises requests on one upload, in the order they arrived
// (see Preflight). A request that arrived later takes over from a PATCH
// still reading (its stop func ends the read), then waits for it to
// record what it received; a request that arrived earlier never cuts off
// a later one.
type locks struct {
	mu    sync.Mutex
	m     map[string]*held
	queue map[string][]*ticket
	seq   atomic.Int64
	// shared, if set, also takes the upload's lock across instances
	// (Store.LockUpload) once this process's lock is held, so that a
	// PATCH that lands on another instance waits for the one still
	// writing.
	shared func(ctx context.Context, id string) (func(), error)
}

type held struct {
	stop func()
	seq  int64
	done chan struct{}
}

// ticket is a request's place in an upload's queue.
type ticket struct {
	id   string
	seq  int64
	gone chan struct{} // closed once it holds the lock or has left
	once sync.Once
}

type ticketKey struct{}

func (l *locks) arrive(id string) *ticket {
	tk := &ticket{id: id, seq: l.seq.Add(1), gone: make(chan struct{})}
	l.mu.Lock()
	if l.queue == nil {
		l.queue = map[string][]*ticket{}
	}
	l.queue[id] = append(l.queue[id], tk)
	l.mu.Unlock()
	return tk
}

// leave takes a ticket out of its queue (idempotent).
func (l *locks) leave(tk *ticket) {
	tk.once.Do(func() {
		l.mu.Lock()
		q := l.queue[tk.id]
		for i, o := range q {
			if o == tk {
				q = append(q[:i:i], q[i+1:]...)
				break
			}
		}
		if len(q) == 0 {
			delete(l.queue, tk.id)
		} else {
			l.queue[tk.id] = q
		}
		l.mu.Unlock()
		close(tk.gone)
	})
}

func (l *locks) acquire(ctx context.Context, id string, stop func(), wait time.Duration) (func(), error) {
	start := time.Now()
	release, err := l.acquireLocal(ctx, id, stop, wait)
	if err != nil || l.shared == nil {
		return release, err
	}
	sctx, cancel := context.WithTimeout(ctx, max(wait-time.Since(start), time.Millisecond))
	defer cancel()
	unlock, err := l.shared(sctx, id)
	if err != nil {
		release()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, syncproto.Errorf(syncproto.CodeUnavailable, "upload %s is in use on another server instance; retry shortly (%v)", id, err)
	}
	return func() { unlock(); release() }, nil
}

func (l *locks) acquireLocal(ctx context.Context, id string, stop func(), wait time.Duration) (func(), error) {
	tk, _ := ctx.Value(ticketKey{}).(*ticket)
	if tk != nil && tk.id != id {
		tk = nil
	}
	seq := l.seq.Add(1)
	if tk != nil {
		seq = tk.seq
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	busy := func() error {
		return syncproto.Errorf(syncproto.CodeUnavailable, "another request on upload %s is still running; retry shortly", id)
	}
	// First let the requests that arrived earlier go.
	for {
		l.mu.Lock()
		var earlier *ticket
		for _, o := range l.queue[id] {
			if o.seq < seq {
				earlier = o
				break
			}
		}
		l.mu.Unlock()
		if earlier == nil {
			break
		}
		select {
		case <-earlier.gone:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			return nil, busy()
		}
	}
	for {
		l.mu.Lock()
		cur := l.m[id]
		if cur == nil {
			me := &held{stop: stop, seq: seq, done: make(chan struct{})}
			l.m[id] = me
			l.mu.Unlock()
			if tk != nil {
				l.leave(tk)
			}
			return func() {
				l.mu.Lock()
				delete(l.m, id)
				l.mu.Unlock()
				close(me.done)
			}, nil
		}
		l.mu.Unlock()
		if cur.stop != nil && seq > cur.seq {
			cur.stop()
		}
		select {
		case <-cur.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			return nil, busy()
		}
	}
}

func (l *locks) busy(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m[id] != nil
}

// ExpireUploads deletes expired uploads (unfinished ones with their
// partial files, finished ones' records), the uploads of revoked devices,
// and partial files that no upload owns. It returns how many uploads and
// stray files it removed. Uploads in use right now are left for the next
// run.
func (h *Handler) ExpireUploads(ctx context.Context) (int, error) {
	h.lastSweep.Store(h.cfg.Now().UnixNano())
	// One instance sweeps at a time (the others skip this round).
	release, ok, err := h.cfg.Store.TrySingleton(ctx, "upload-sweep")
	if err != nil || !ok {
		return 0, err
	}
	defer release()
	us, err := h.cfg.Store.ExpiredUploads(ctx, h.cfg.Now().UTC())
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, u := range us {
		if h.locks.busy(u.ID) {
			continue
		}
		if err := h.discardLocked(ctx, u); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	entries, err := os.ReadDir(h.cfg.Dir)
	if err != nil {
		return n, errors.Join(append(errs, fmt.Errorf("upload: %w", err))...)
	}
	for _, e := range entries {
		name := e.Name()
		id := strings.TrimSuffix(strings.TrimSuffix(name, ".part"), ".chk")
		if id == name || !ValidID(id) || h.locks.busy(id) {
			continue
		}
		if _, err := h.cfg.Store.Upload(ctx, id); !errors.Is(err, domain.ErrNotFound) {
			if err != nil {
				errs = append(errs, err)
			}
			continue
		}
		// Uploads are recorded before their file is made and forgotten
		// after it is removed, so a file without a record is a leftover.
		if err := os.Remove(filepath.Join(h.cfg.Dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// Janitor runs ExpireUploads every interval (default 10 min) until ctx
// ends. The server's main starts it.
func (h *Handler) Janitor(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = 10 * time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := h.ExpireUploads(ctx); err != nil && ctx.Err() == nil {
				h.cfg.Logger.Warn("upload: janitor", "err", err)
			}
		}
	}
}

// sweepEvery is how often creations trigger a background ExpireUploads,
// so that expired partials go even when nobody runs the Janitor.
const sweepEvery = 10 * time.Minute

func (h *Handler) maybeSweep() {
	last := time.Unix(0, h.lastSweep.Load())
	if h.cfg.Now().Sub(last) < min(sweepEvery, h.cfg.TTL) || !h.sweeping.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer h.sweeping.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := h.ExpireUploads(ctx); err != nil {
			h.cfg.Logger.Warn("upload: sweep", "err", err)
		}
	}()
}
