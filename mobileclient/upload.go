package mobileclient

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"fieldsync/syncproto"
)

// The evidence endpoints.
const (
	// MissingPath answers which of a list of blob hashes the server lacks.
	MissingPath = "/api/v1/evidence/missing"
	// UploadsPath is the tus 1.0 upload collection.
	UploadsPath = "/api/v1/uploads/"
)

const (
	tusVersion        = "1.0.0"
	offsetContentType = "application/offset+octet-stream"
	// maxMissingQuery is the most hashes one missing-blob request asks
	// about (the server's limit).
	maxMissingQuery = 1000
	// maxServerMismatches: a second hash mismatch reported by the server
	// while the device's copy is sound fails the upload.
	maxServerMismatches = 2
	// minCutChunk is the smallest PATCH on a link that cuts.
	minCutChunk = 16 << 10
	// maxDataOnCreation is the largest file sent with its creation
	// request.
	maxDataOnCreation = 64 << 10
	// maxRecreate bounds new uploads made for one file in one sync after
	// the server forgot the previous one (404, 410).
	maxRecreate = 3
)

type missingRequest struct {
	ProtocolVersion int      `json:"protocol_version"`
	SHA256          []string `json:"sha256"`
}

type missingResponse struct {
	ProtocolVersion int      `json:"protocol_version"`
	Missing         []string `json:"missing"`
}

// uploadRow is one pending upload as stored.
type uploadRow struct {
	sha, rel, mediaType string
	url                 string // the upload's path on the server, "" before creation
	size, offset        int64
	failures            int
}

// blobFailure: this upload can never succeed as queued; it is marked
// failed and not tried again.
type blobFailure struct{ err error }

func (e *blobFailure) Error() string { return e.err.Error() }
func (e *blobFailure) Unwrap() error { return e.err }

// keepPending: this upload cannot go on now but may later; it stays
// pending and the step moves on to the next file.
type keepPending struct{ err error }

func (e *keepPending) Error() string { return e.err.Error() }
func (e *keepPending) Unwrap() error { return e.err }

// maybeUpload runs the upload step unless the app asked to keep the link
// for records.
func (c *Client) maybeUpload(ctx context.Context, cr credentials, rep *SyncReport) error {
	p, err := c.uploadPolicy(ctx)
	if err != nil {
		return fmt.Errorf("uploads: %w", err)
	}
	if p == UploadRecordsOnly {
		return nil
	}
	return c.uploadStep(ctx, cr, rep)
}

// UploadEvidence runs only the evidence upload step of Sync, whatever the
// upload policy (for an app's "send photos now").
func (c *Client) UploadEvidence(ctx context.Context) (SyncReport, error) {
	var rep SyncReport
	release, err := c.acquire(ctx)
	if err != nil {
		return rep, fmt.Errorf("upload evidence: %w", err)
	}
	defer release()
	cr, err := c.creds(ctx)
	if err != nil {
		return rep, fmt.Errorf("upload evidence: %w", err)
	}
	if err := c.uploadStep(ctx, cr, &rep); err != nil {
		return rep, fmt.Errorf("upload evidence: %w", err)
	}
	return rep, nil
}

// pendingUploads lists the pending uploads, oldest first, leaving out
// those a mutation still in the outbox references: the server accepts an
// upload only for a blob a pushed visit names.
func (c *Client) pendingUploads(ctx context.Context) ([]uploadRow, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT sha256, path, media_type, upload_url, size, offset, failures FROM uploads u
		WHERE state = 'pending' AND NOT EXISTS (SELECT 1 FROM outbox o WHERE instr(o.body, u.sha256) > 0)
		ORDER BY created_at, sha256`)
	if err != nil {
		return nil, fmt.Errorf("uploads: %w", err)
	}
	defer rows.Close()
	var out []uploadRow
	for rows.Next() {
		var r uploadRow
		if err := rows.Scan(&r.sha, &r.rel, &r.mediaType, &r.url, &r.size, &r.offset, &r.failures); err != nil {
			return nil, fmt.Errorf("uploads: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// uploadStep asks the server which pending blobs it lacks, marks the
// others done, and uploads the missing ones one by one. A file that can
// never be uploaded is marked failed and reported (BlobsFailed, Errors);
// the step goes on with the next. It stops at 401 (ErrUnauthorized), 426
// or 412 (ErrUnsupportedVersion), or when a file made no progress for
// Backoff.MaxAttempts tries in a row (ErrUnavailable): what was confirmed
// is saved and the next sync resumes from there.
func (c *Client) uploadStep(ctx context.Context, cr credentials, rep *SyncReport) error {
	var cnt counters
	u := &uploader{c: c, cr: cr, cnt: &cnt, rep: rep, noChecksum: !c.opts.ChunkChecksums, expect: waitsForContinue(c.opts.HTTPClient)}
	defer func() {
		n := u.sent.Load()
		cnt.sent += n
		rep.BlobBytesSent += n
		rep.add(&cnt)
	}()
	rows, err := c.pendingUploads(ctx)
	if err != nil || len(rows) == 0 {
		return err
	}
	sums := make([]string, len(rows))
	for i, r := range rows {
		sums[i] = r.sha
	}
	missing, err := c.missingBlobs(ctx, cr, sums, &cnt)
	var se *syncproto.Error
	if errors.As(err, &se) && se.Code == syncproto.CodeNotFound {
		// A server without evidence endpoints: records still sync.
		cnt.errors = append(cnt.errors, fmt.Sprintf("the server takes no evidence uploads (%v); %d files wait", err, len(rows)))
		return nil
	}
	if err != nil {
		return err
	}
	for i := range rows {
		r := &rows[i]
		if !missing[r.sha] {
			if err := c.uploadDone(ctx, r); err != nil {
				return err
			}
			rep.BlobsPresent++
			continue
		}
		err := u.upload(ctx, r)
		var fail *blobFailure
		var keep *keepPending
		switch {
		case err == nil:
		case errors.As(err, &fail):
			rep.BlobsFailed++
			cnt.errors = append(cnt.errors, fmt.Sprintf("evidence %s failed: %v", r.sha, err))
			if err := c.uploadFailed(ctx, r, err); err != nil {
				return err
			}
		case errors.As(err, &keep):
			cnt.errors = append(cnt.errors, fmt.Sprintf("evidence %s waits: %v", r.sha, err))
			if err := c.uploadNote(ctx, r, err); err != nil {
				return err
			}
		default:
			return fmt.Errorf("evidence %s: %w", r.sha, err)
		}
	}
	return nil
}

// missingBlobs asks the server which of sums it lacks.
func (c *Client) missingBlobs(ctx context.Context, cr credentials, sums []string, cnt *counters) (map[string]bool, error) {
	out := map[string]bool{}
	for start := 0; start < len(sums); start += maxMissingQuery {
		batch := sums[start:min(len(sums), start+maxMissingQuery)]
		body, err := encodeBody(missingRequest{ProtocolVersion: syncproto.ProtocolVersion, SHA256: batch}, true)
		if err != nil {
			return nil, err
		}
		data, err := c.call(ctx, request{name: "evidence missing", path: MissingPath, body: body, gzip: true, token: cr.token}, cnt)
		if err != nil {
			return nil, err
		}
		var resp missingResponse
		if err := json.Unmarshal(data, &resp); err != nil {
			return nil, fmt.Errorf("evidence missing: %w: %v", ErrServer, err)
		}
		for _, s := range resp.Missing {
			out[s] = true
		}
	}
	return out, nil
}

// uploader runs the uploads of one upload step.
type uploader struct {
	c   *Client
	cr  credentials
	cnt *counters
	rep *SyncReport
	// sent counts PATCH body bytes the transport took (atomic: a cut
	// request's body may still be read as Do returns).
	sent atomic.Int64
	// noChecksum is set once a PATCH was cut in this step. The server
	// discards a checksummed chunk that arrives only in part (tus
	// checksum semantics), so on a link that cuts, every cut would cost a
	// whole chunk, and a link that cuts more often than a chunk's length
	// would never get one through. Without the header the server keeps
	// every byte that arrived; the SHA-256 of the whole file, which it
	// checks before it stores anything, still guards the content.
	noChecksum bool
	// cutChunk, once set by a cut, replaces Options.ChunkSize for the rest
	// of the step: the part of a PATCH still queued on the device when the
	// link drops is sent again, so smaller PATCHes lose less on a link
	// that cuts (and have their offset saved more often).
	cutChunk int
	// quickest is the shortest time seen from the headers of a request
	// without a body going out (a HEAD, or a PATCH waiting for 100
	// Continue) to the first byte of its answer: a round trip (and, on a
	// new connection, whatever its set-up costs before the server reads).
	quickest time.Duration
	// expect: the transport holds a body back until 100 Continue (see
	// waitsForContinue), so a PATCH at an offset that may be stale can ask
	// for it; otherwise such an offset is checked with a HEAD.
	expect bool
}

// waitsForContinue reports whether hc's transport waits for 100 Continue
// before it sends the body of a request with "Expect: 100-continue": an
// http.Transport with an ExpectContinueTimeout (http.DefaultTransport has
// one); any other RoundTripper is assumed to, until a refused PATCH shows
// that its body went anyway.
func waitsForContinue(hc *http.Client) bool {
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	if t, ok := rt.(*http.Transport); ok {
		return t.ExpectContinueTimeout > 0
	}
	return true
}

// A cut PATCH whose body had gone for less than half the quickest round
// trip, less landSlack, cannot have landed a byte: bytes take half a round
// trip to arrive. The judgement is made only on slow links (a quickest
// round trip of slowLink or more), where it matters, and where the
// server's own time (a lock, a read) is small beside the link's; on a
// fast link every cut PATCH is taken to have landed bytes, and checking
// the offset costs next to nothing.
const (
	landSlack = 25 * time.Millisecond
	slowLink  = 100 * time.Millisecond
)

// cutPause is the wait (at most Backoff.Base) before the request after a
// cut: time for the server to finish the request the cut ended and record
// what of it arrived, so that the next request on the upload, which may
// reach the server on its new connection first, finds the offset it
// reached.
const cutPause = 20 * time.Millisecond

// exchange is what one request's trace tells.
type exchange struct {
	// wrote: the request's headers went out on a connection (an error
	// then is the link breaking mid-exchange, not a dial failing).
	wrote bool
	// bodyFor is how long the body was going before the answer or the
	// error (from the headers, or from 100 Continue when the request
	// waited for it and got it).
	bodyFor time.Duration
	// continued: the server answered 100 Continue, so it found the
	// request's Upload-Offset right (a tus server checks it before it
	// reads the body).
	continued bool
}

// mayHaveLanded reports whether a cut PATCH whose body was going for d
// may have delivered bytes to the server.
func (u *uploader) mayHaveLanded(d time.Duration) bool {
	return u.quickest < slowLink || d+landSlack >= u.quickest/2
}

// tusResp is a tus answer: status, headers and the decoded error body
// (made from the status when there is none, as for HEAD).
type tusResp struct {
	status int
	header http.Header
	err    *syncproto.Error
}

// outcome sorts a tus answer.
type outcome int

const (
	okay      outcome = iota
	transient         // network error, 5xx, 429, 460: back off, go on
	recreate          // 404, 410: the server forgot the upload
	resync            // 409: go on from the offset it carries, or HEAD
	mismatch          // 422: the bytes received do not hash to the sum
	refused           // 403: the server will not take this blob from us
	stop              // 401, 412, 426: stop the step
	final             // any other 4xx: the upload fails
)

func judge(method string, res *tusResp, err error) (outcome, error) {
	if err != nil {
		return transient, err
	}
	s := res.status
	switch {
	case s >= 200 && s < 300:
		return okay, nil
	case s == http.StatusUnauthorized:
		return stop, fmt.Errorf("%w: %w", ErrUnauthorized, res.err)
	case s == http.StatusPreconditionFailed || s == http.StatusUpgradeRequired:
		return stop, fmt.Errorf("%w: HTTP %d: %w", ErrUnsupportedVersion, s, res.err)
	case s == http.StatusNotFound || s == http.StatusGone:
		return recreate, fmt.Errorf("HTTP %d: %w", s, res.err)
	case s == http.StatusConflict:
		return resync, fmt.Errorf("HTTP %d: %w", s, res.err)
	case s == 460 || s == http.StatusTooManyRequests || s >= 500:
		return transient, fmt.Errorf("HTTP %d: %w", s, res.err)
	case s == http.StatusUnprocessableEntity && (method == http.MethodHead || res.err.Code == syncproto.CodeHashMismatch):
		return mismatch, fmt.Errorf("HTTP %d: %w", s, res.err)
	case s == http.StatusForbidden:
		return refused, fmt.Errorf("HTTP %d: %w", s, res.err)
	}
	return final, fmt.Errorf("%w: HTTP %d: %w", ErrServer, s, res.err)
}

// cutMemory is how long a cut upload request makes the device treat the
// link as one that cuts.
const cutMemory = 10 * time.Minute

// linkCutsLately reports whether an upload request lost its connection
// mid-way in the last cutMemory.
func (c *Client) linkCutsLately() bool {
	last := c.lastCut.Load()
	return last != 0 && time.Since(time.Unix(0, last)) < cutMemory
}

// errorOffset reads the offset an error answer carries (details.offset of
// 409 offset_mismatch, 460, 413).
func errorOffset(res *tusResp, size int64) (int64, bool) {
	if res == nil || res.err == nil {
		return 0, false
	}
	if _, ok := res.err.Details["offset"]; !ok {
		return 0, false
	}
	n := detailInt(res.err.Details, "offset")
	if n < 0 || n > size {
		return 0, false
	}
	return n, true
}

// do sends one tus request with the device's credentials, and notes
// what its trace tells (see exchange, uploader.quickest).
func (u *uploader) do(ctx context.Context, method, target string, hdr map[string]string, body []byte) (*tusResp, exchange, error) {
	// The trace's callbacks may run on the transport's goroutines.
	var (
		mu                  sync.Mutex
		wrote, cont, answer time.Time
	)
	note := func(t *time.Time) func() {
		return func() {
			mu.Lock()
			if t.IsZero() {
				*t = time.Now()
			}
			mu.Unlock()
		}
	}
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteHeaders:         note(&wrote),
		Got100Continue:       note(&cont),
		GotFirstResponseByte: note(&answer),
	})
	var ex exchange
	_, waits := hdr["Expect"]
	light := method == http.MethodHead || waits
	done := func() exchange {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if wrote.IsZero() {
			return ex
		}
		ex.wrote = true
		if !answer.IsZero() {
			now = answer
		}
		// The first answer of a request that sent no body yet (a 100
		// Continue is one) times a round trip.
		first := answer
		if !cont.IsZero() && (first.IsZero() || cont.Before(first)) {
			first = cont
		}
		if light && !first.IsZero() {
			if d := first.Sub(wrote); u.quickest <= 0 || d < u.quickest {
				u.quickest = d
			}
		}
		from := wrote
		if !cont.IsZero() {
			from, ex.continued = cont, true
		}
		if body != nil {
			ex.bodyFor = max(0, now.Sub(from))
		}
		return ex
	}
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return nil, ex, err
	}
	if body != nil {
		req.ContentLength = int64(len(body))
		req.Body = io.NopCloser(&countedBody{r: bytes.NewReader(body), n: &u.sent})
		req.GetBody = func() (io.ReadCloser, error) {
			return io.NopCloser(&countedBody{r: bytes.NewReader(body), n: &u.sent}), nil
		}
	}
	req.Header.Set("Tus-Resumable", tusVersion)
	req.Header.Set("Fieldsync-Protocol", strconv.Itoa(syncproto.ProtocolVersion))
	req.Header.Set("User-Agent", u.c.userAgent())
	req.Header.Set("Authorization", "Bearer "+u.cr.token)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := u.c.opts.HTTPClient.Do(req)
	if err != nil {
		ex := done()
		ex.wrote = ex.wrote && ctx.Err() == nil
		return nil, ex, err
	}
	defer resp.Body.Close()
	cr := &countingReader{r: resp.Body}
	data, err := io.ReadAll(io.LimitReader(cr, 1<<20))
	u.cnt.received += cr.n
	if err != nil {
		return nil, done(), fmt.Errorf("read response: %w", err)
	}
	res := &tusResp{status: resp.StatusCode, header: resp.Header}
	if resp.StatusCode >= 300 {
		res.err = parseError(resp.StatusCode, data)
	}
	return res, done(), nil
}

// countedBody counts the bytes the transport reads.
type countedBody struct {
	r *bytes.Reader
	n *atomic.Int64
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// uploadMetadata is the tus Upload-Metadata of a file: its SHA-256 (which
// the server requires), media type and a file name.
func uploadMetadata(r *uploadRow) string {
	enc := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	name := r.sha
	switch r.mediaType {
	case "image/jpeg":
		name += ".jpg"
	case "image/png":
		name += ".png"
	case "application/pdf":
		name += ".pdf"
	}
	meta := "filename " + enc(name) + ",sha256 " + enc(r.sha)
	if r.mediaType != "" {
		meta = "filename " + enc(name) + ",filetype " + enc(r.mediaType) + ",sha256 " + enc(r.sha)
	}
	return meta
}

// uploadPath keeps the path (and query) of the Location a creation
// answered, resolved against the creation URL. Uploads are always
// addressed on the server the device syncs with: the token never goes to
// another host, and a server reached under a new address (or behind a
// proxy that rewrote Host) is still found.
func uploadPath(creation, loc string) (string, error) {
	if loc == "" {
		return "", errors.New("no Location")
	}
	base, err := url.Parse(creation)
	if err != nil {
		return "", err
	}
	l, err := base.Parse(loc)
	if err != nil {
		return "", err
	}
	p := l.RequestURI()
	if !strings.HasPrefix(p, "/") || len(p) > 2048 {
		return "", errors.New("not a usable path")
	}
	return p, nil
}

// uploadURL addresses a saved upload path on the server's origin.
func (c *Client) uploadURL(p string) string {
	u, err := url.Parse(c.server)
	if err != nil || u.Host == "" {
		return c.server + p
	}
	return u.Scheme + "://" + u.Host + p
}

func parseOffset(h string, size int64) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(h), 10, 64)
	if err != nil || n < 0 || n > size {
		return 0, fmt.Errorf("Upload-Offset %q outside 0..%d", h, size)
	}
	return n, nil
}

// referencedLocally reports whether a mutation the server applied, or one
// still queued, references the blob.
func (c *Client) referencedLocally(ctx context.Context, sum string) (bool, error) {
	var ok bool
	err := c.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM results WHERE status = 'applied' AND instr(body, ?) > 0)
		OR EXISTS (SELECT 1 FROM outbox WHERE instr(body, ?) > 0)`, sum, sum).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("uploads: %w", err)
	}
	return ok, nil
}

// saveUpload records an upload's path, confirmed offset and mismatch
// count.
func (c *Client) saveUpload(ctx context.Context, r *uploadRow) error {
	return c.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE uploads SET upload_url = ?, offset = ?, failures = ?, updated_at = ?
			WHERE sha256 = ? AND state = 'pending'`, r.url, r.offset, r.failures, ts(c.now()), r.sha)
		return err
	})
}

// uploadDone records that the server holds the blob (it verified and
// stored the upload, or had it already) and deletes the device's prepared
// copy: the row keeps its hash, size and media type.
func (c *Client) uploadDone(ctx context.Context, r *uploadRow) error {
	done := false
	err := c.withTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE uploads SET state = 'done', offset = size, error = '', updated_at = ?
			WHERE sha256 = ? AND state = 'pending'`, ts(c.now()), r.sha)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		done = n > 0
		return err
	})
	if err != nil || !done {
		return err
	}
	// A copy that cannot be deleted now is deleted at the next Open.
	_ = c.dropPrepared(ctx, r.sha)
	return nil
}

func (c *Client) uploadFailed(ctx context.Context, r *uploadRow, cause error) error {
	return c.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE uploads SET state = 'failed', error = ?, updated_at = ?
			WHERE sha256 = ? AND state = 'pending'`, cause.Error(), ts(c.now()), r.sha)
		return err
	})
}

// uploadNote records why a pending upload could not go on.
func (c *Client) uploadNote(ctx context.Context, r *uploadRow, cause error) error {
	return c.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE uploads SET error = ?, updated_at = ? WHERE sha256 = ? AND state = 'pending'`,
			cause.Error(), ts(c.now()), r.sha)
		return err
	})
}
