package upload

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"fieldsync/server/domain"
	"fieldsync/server/evidence"
)

// The analysis worker. Decoding a photo for its perceptual hash costs
// more CPU than receiving, verifying and storing it (about two thirds of
// an upload's CPU when it ran inside the final PATCH), so an upload is
// answered as soon as its bytes are verified, stored and recorded, and one
// background worker per handler then reads the blob's EXIF, size and
// perceptual hash (evidence.Analyze), records them and runs the evidence
// checks of every visit that references the blob (Store.BlobArrived).
//
// Analysis yields to uploads: while a request is receiving bytes, the
// worker waits, for at most Config.AnalyseDelay (default 10 s) after the
// blob was stored, so that a burst of uploads is answered at the speed of
// the disk and analysed just after.
//
// The queue is the database: blobs whose analyzed_at is NULL. A restart
// therefore loses nothing; the worker finds them again when it starts. A
// blob whose analysis fails (the blob store is down) is retried with a
// growing delay, while the others go on.

// analyseBatch is how many blobs the worker takes from the queue at once.
const analyseBatch = 16

// Bounds of the delay before a failed analysis is retried.
const (
	analyseRetryMin = time.Second
	analyseRetryMax = 10 * time.Minute
)

// analyser is the state of the handler's analysis worker.
type analyser struct {
	wake   chan struct{} // capacity 1: "there may be work"
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	mu    sync.Mutex
	busy  int                      // blobs taken but not yet analysed and checked
	retry map[string]analyseFailed // sha256 → when to try again
}

type analyseFailed struct {
	at    time.Time
	delay time.Duration
}

// startAnalyser starts the worker; Close stops it.
func (h *Handler) startAnalyser() {
	ctx, cancel := context.WithCancel(context.Background())
	h.an = &analyser{wake: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{}), retry: map[string]analyseFailed{}}
	go func() {
		defer close(h.an.done)
		h.analyseLoop(domain.Background(ctx))
	}()
}

// wakeAnalyser tells the worker that a blob may be waiting.
func (h *Handler) wakeAnalyser() {
	select {
	case h.an.wake <- struct{}{}:
	default:
	}
}

// Close stops the analysis worker and waits for it; blobs it did not
// reach stay queued in the database for the next start. Idempotent.
func (h *Handler) Close() error {
	h.an.once.Do(h.an.cancel)
	<-h.an.done
	return nil
}

// WaitAnalysed blocks until every blob recorded before the call has been
// analysed and its visits checked, or until ctx ends. Blobs that keep
// failing are waited for too.
func (h *Handler) WaitAnalysed(ctx context.Context) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		// The queue first, then the worker: a blob leaves the queue only
		// while the worker counts it as busy.
		queued, err := h.cfg.Store.UnanalysedBlobs(ctx, 1)
		if err != nil {
			return err
		}
		h.an.mu.Lock()
		busy := h.an.busy
		h.an.mu.Unlock()
		if len(queued) == 0 && busy == 0 {
			return nil
		}
		h.wakeAnalyser()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (h *Handler) analyseLoop(ctx context.Context) {
	for {
		next := h.analysePass(ctx)
		var timer <-chan time.Time
		if !next.IsZero() {
			timer = time.After(time.Until(next))
		}
		select {
		case <-ctx.Done():
			return
		case <-h.an.wake:
		case <-timer:
		}
	}
}

// analysePass analyses queued blobs until none is due; it returns when
// the earliest failed one is due again (zero: none).
func (h *Handler) analysePass(ctx context.Context) time.Time {
	for ctx.Err() == nil {
		h.an.mu.Lock()
		waiting := len(h.an.retry)
		h.an.mu.Unlock()
		queued, err := h.cfg.Store.UnanalysedBlobs(ctx, analyseBatch+waiting)
		if err != nil {
			if ctx.Err() == nil {
				h.cfg.Logger.Warn("upload: analysis queue", "err", err)
			}
			return time.Now().Add(analyseRetryMin)
		}
		now := time.Now()
		var due []Blob
		var next time.Time
		h.an.mu.Lock()
		for _, b := range queued {
			if f, ok := h.an.retry[b.SHA256]; ok && now.Before(f.at) {
				if next.IsZero() || f.at.Before(next) {
					next = f.at
				}
				continue
			}
			due = append(due, b)
		}
		h.an.busy += len(due)
		h.an.mu.Unlock()
		if len(due) == 0 {
			return next
		}
		for _, b := range due {
			h.yieldToUploads(ctx, b)
			err := h.analyse(ctx, b)
			h.an.mu.Lock()
			h.an.busy--
			if err == nil {
				delete(h.an.retry, b.SHA256)
			} else if ctx.Err() == nil {
				f := h.an.retry[b.SHA256]
				f.delay = min(max(2*f.delay, analyseRetryMin), analyseRetryMax)
				f.at = time.Now().Add(f.delay)
				h.an.retry[b.SHA256] = f
				h.cfg.Logger.Warn("upload: analysing a blob failed; retrying later", "sha256", b.SHA256, "retry_in", f.delay, "err", err)
			}
			h.an.mu.Unlock()
		}
	}
	return time.Time{}
}

// yieldToUploads waits while requests are receiving bytes, until b has
// waited AnalyseDelay since it was stored.
func (h *Handler) yieldToUploads(ctx context.Context, b Blob) {
	deadline := b.StoredAt.Add(h.cfg.AnalyseDelay)
	for h.receiving.Load() > 0 && h.cfg.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// analyse reads one blob's metadata, records it and runs the checks of
// the visits that reference it.
func (h *Handler) analyse(ctx context.Context, b Blob) error {
	bctx, cancel := context.WithTimeout(ctx, h.cfg.BlobTimeout)
	defer cancel()
	rc, info, err := h.cfg.Blobs.Open(bctx, b.SHA256)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer rc.Close()
	ra, ok := rc.(*os.File)
	var r io.ReaderAt = ra
	if !ok {
		// A remote object: read it once rather than with many ranged
		// requests (uploads are at most MaxSize bytes; one at a time).
		data, err := io.ReadAll(io.LimitReader(rc, info.Size))
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		r = bytes.NewReader(data)
	}
	meta, err := evidence.Analyze(r, info.Size)
	if err != nil {
		return err
	}
	// ctx is domain.Background: a bounded share of the store's read pool.
	dctx, dcancel := context.WithTimeout(ctx, h.cfg.DBTimeout)
	defer dcancel()
	if err := h.cfg.Store.BlobAnalysed(dctx, b.SHA256, meta); err != nil {
		return err
	}
	if err := h.cfg.Store.BlobArrived(dctx, b.SHA256); err != nil {
		// The metadata is recorded; the checks run again when a visit
		// naming the blob is pushed or re-checked.
		h.cfg.Logger.Error("upload: evidence checks", "sha256", b.SHA256, "err", err)
	}
	return nil
}
