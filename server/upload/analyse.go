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
// therefore loses nothing; the worker finds them again when it starts.
// Several instances may share the database: a worker claims a batch
// (Store.ClaimBlobsForAnalysis) before it analyses it, holding each blob
// for a lease no other instance takes it during, and recording the
// analysis ends the claim. If the instance dies, its claims expire after
// the lease and another instance's worker, which looks at the queue at
// least every analysePoll, takes them over. A worker that runs short of
// lease, or stops, gives back the blobs it has not reached.
//
// A blob whose analysis fails (the blob store is down) is given back with
// a growing delay before any instance tries it again, while the others go
// on.

// analyseBatch is how many blobs the worker claims from the queue at once.
const analyseBatch = 16

// analysePoll is how often an idle worker looks at the queue anyway: for
// blobs whose claim another instance left to expire, or whose retry delay
// ran out.
const analysePoll = 30 * time.Second

// Bounds of the delay before a failed analysis is retried.
const (
	analyseRetryMin = time.Second
	analyseRetryMax = 10 * time.Minute
)

// maxRetryEntries bounds the worker's memory of failed blobs (for their
// growing delays); past it the memory starts again.
const maxRetryEntries = 10_000

// analyser is the state of the handler's analysis worker.
type analyser struct {
	wake   chan struct{} // capacity 1: "there may be work"
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	mu    sync.Mutex
	busy  int                      // blobs taken but not yet analysed and checked
	retry map[string]analyseFailed // sha256 → when to try again
	// stranded are claims a release could not give back (the database
	// was away); the next pass gives them back first.
	stranded []string
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
		wait := analysePoll
		if !next.IsZero() {
			wait = min(wait, time.Until(next))
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-h.an.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// analyseLease is how long a claim holds a blob: long enough to wait for
// uploads (AnalyseDelay) and read, analyse and record one blob (a blob
// store call and two database calls), with a minute to spare. An
// instance that dies holds its blobs that long.
func (h *Handler) analyseLease() time.Duration {
	return h.cfg.AnalyseDelay + h.analyseBound() + time.Minute
}

// analyseBound is the longest the analysis of one blob may take.
func (h *Handler) analyseBound() time.Duration { return h.cfg.BlobTimeout + 2*h.cfg.DBTimeout }

// analysePass analyses queued blobs until none is left to claim; it
// returns when the earliest of its failed ones is due again (zero: none).
func (h *Handler) analysePass(ctx context.Context) time.Time {
	for ctx.Err() == nil {
		h.releaseStranded(ctx)
		// Look before claiming: a claim is a write.
		queued, err := h.cfg.Store.UnanalysedBlobs(ctx, 1)
		if err == nil && len(queued) == 0 {
			return h.nextRetry()
		}
		lease := h.analyseLease()
		deadline := h.cfg.Now().Add(lease)
		var claimed []Blob
		if err == nil {
			claimed, err = h.cfg.Store.ClaimBlobsForAnalysis(ctx, analyseBatch, lease)
		}
		if err != nil {
			if ctx.Err() == nil {
				h.cfg.Logger.Warn("upload: analysis queue", "err", err)
			}
			return time.Now().Add(analyseRetryMin)
		}
		if len(claimed) == 0 {
			return h.nextRetry() // held by others, or waiting for a retry
		}
		h.an.mu.Lock()
		h.an.busy += len(claimed)
		h.an.mu.Unlock()
		for i, b := range claimed {
			h.yieldToUploads(ctx, b)
			if ctx.Err() != nil || h.cfg.Now().Add(h.analyseBound()).After(deadline) {
				// Stopping, or short of lease: give the rest back so that
				// any instance takes them at once.
				h.release(ctx, claimed[i:], 0)
				h.uncount(len(claimed) - i)
				break
			}
			err := h.analyse(ctx, b)
			if err != nil && ctx.Err() != nil {
				h.release(ctx, claimed[i:], 0)
				h.uncount(len(claimed) - i)
				break
			}
			var delay time.Duration
			h.an.mu.Lock()
			if err == nil {
				delete(h.an.retry, b.SHA256)
			} else {
				if len(h.an.retry) >= maxRetryEntries {
					clear(h.an.retry)
				}
				f := h.an.retry[b.SHA256]
				f.delay = min(max(2*f.delay, analyseRetryMin), analyseRetryMax)
				f.at = time.Now().Add(f.delay)
				h.an.retry[b.SHA256] = f
				delay = f.delay
			}
			h.an.mu.Unlock()
			if err != nil {
				h.cfg.Logger.Warn("upload: analysing a blob failed; retrying later", "sha256", b.SHA256, "retry_in", delay, "err", err)
				h.release(ctx, []Blob{b}, delay)
			}
			h.uncount(1)
		}
	}
	return time.Time{}
}

// release gives claimed blobs back: any instance may claim them again
// after retryIn (0: at once).
func (h *Handler) release(ctx context.Context, bs []Blob, retryIn time.Duration) {
	sums := make([]string, len(bs))
	for i, b := range bs {
		sums[i] = b.SHA256
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.DBTimeout)
	defer cancel()
	if err := h.cfg.Store.ReleaseBlobClaims(rctx, sums, retryIn); err != nil {
		// The database is away: give them back on the next pass (their
		// lease would free them too, but only minutes later).
		h.cfg.Logger.Warn("upload: giving analysis claims back", "blobs", len(sums), "err", err)
		h.an.mu.Lock()
		if len(h.an.stranded)+len(sums) <= maxStranded {
			h.an.stranded = append(h.an.stranded, sums...)
		}
		h.an.mu.Unlock()
	}
}

// maxStranded bounds the claims kept for giving back later; beyond it
// their leases free them.
const maxStranded = 4096

// releaseStranded gives back the claims a failed release left (release),
// before the worker claims again.
func (h *Handler) releaseStranded(ctx context.Context) {
	h.an.mu.Lock()
	sums := h.an.stranded
	h.an.stranded = nil
	h.an.mu.Unlock()
	if len(sums) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, h.cfg.DBTimeout)
	defer cancel()
	if err := h.cfg.Store.ReleaseBlobClaims(rctx, sums, 0); err != nil {
		h.an.mu.Lock()
		if len(h.an.stranded)+len(sums) <= maxStranded {
			h.an.stranded = append(h.an.stranded, sums...)
		}
		h.an.mu.Unlock()
	}
}

// uncount ends the worker's count of n claimed blobs (WaitAnalysed).
func (h *Handler) uncount(n int) {
	h.an.mu.Lock()
	h.an.busy -= n
	h.an.mu.Unlock()
}

// nextRetry returns when the earliest failed blob is due again (zero:
// none), forgetting those long past (another instance may have analysed
// them).
func (h *Handler) nextRetry() time.Time {
	h.an.mu.Lock()
	defer h.an.mu.Unlock()
	var next time.Time
	now := time.Now()
	for sum, f := range h.an.retry {
		if now.Sub(f.at) > 2*analyseRetryMax {
			delete(h.an.retry, sum)
			continue
		}
		if f.at.After(now) && (next.IsZero() || f.at.Before(next)) {
			next = f.at
		}
	}
	return next
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
