package mobileclient

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"fieldsync/syncproto"
)

// The sync endpoints.
const (
	PushPath = "/api/v1/sync/push"
	PullPath = "/api/v1/sync/pull"
)

// SyncReport says what one Sync (or Push, or Pull) sent and received.
type SyncReport struct {
	// Pushed counts mutations the server answered (applied or rejected).
	Pushed int
	// Rejected counts those of them it rejected.
	Rejected int
	// Conflicts counts fields of applied household changes that clashed.
	Conflicts int
	// Batches counts push requests that got an answer.
	Batches int
	// PulledOps counts ops applied from pulled pages; Pages the pages.
	PulledOps int
	Pages     int
	// ScopeEntered and ScopeLeft count scope ops; Resets counts reset ops.
	ScopeEntered int
	ScopeLeft    int
	Resets       int
	// BytesSent and BytesReceived count request and response bodies on
	// the wire (compressed), every attempt included.
	BytesSent     int64
	BytesReceived int64
	// Retries counts attempts that failed and were retried; Errors holds
	// their messages.
	Retries int
	Errors  []string
	// Rejections are the rejected mutations of this sync.
	Rejections []Result
	// Resent counts acknowledged mutations sent again because the server
	// had lost them (it was restored from a backup).
	Resent int
	// Renumbered counts unsent mutations given new sequence numbers
	// because the server had applied their numbers with other content
	// (this device's database was restored from a backup).
	Renumbered int
	// ClockClamped counts mutations whose timestamp ran ahead of the
	// server's clock: the device clock is wrong and the app should say so.
	ClockClamped int
	// BlobsUploaded counts evidence files whose last byte the server
	// confirmed in this sync; BlobsPresent those it had already (the
	// missing-blob check or the upload's creation said so), sent not at
	// all; BlobsFailed those that can never be uploaded as queued (Uploads
	// says why; Errors too). BlobBytesSent counts the evidence bytes handed
	// to the transport, every attempt and cut included (they are in
	// BytesSent as well).
	BlobsUploaded int
	BlobsPresent  int
	BlobsFailed   int
	BlobBytesSent int64

	serverLastSeq *int64
}

func (r *SyncReport) add(cnt *counters) {
	r.BytesSent += cnt.sent
	r.BytesReceived += cnt.received
	r.Retries += cnt.retries
	r.Errors = append(r.Errors, cnt.errors...)
	*cnt = counters{}
}

func (c *Client) acquire(ctx context.Context) (func(), error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	select {
	case c.syncSem <- struct{}{}:
		return func() { <-c.syncSem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Sync pushes the whole outbox, then uploads the queued evidence the
// server lacks (unless the upload policy is UploadRecordsOnly), then pulls
// until the server has nothing more. The report is filled as far as the
// sync got, also on error.
func (c *Client) Sync(ctx context.Context) (SyncReport, error) {
	var rep SyncReport
	release, err := c.acquire(ctx)
	if err != nil {
		return rep, fmt.Errorf("sync: %w", err)
	}
	defer release()
	cr, err := c.creds(ctx)
	if err != nil {
		return rep, fmt.Errorf("sync: %w", err)
	}
	if err := c.push(ctx, cr, &rep); err != nil {
		return rep, fmt.Errorf("sync: %w", err)
	}
	// Evidence travels after the records that reference it (DESIGN.md
	// rule 7). An upload that ran out of attempts on a bad link does not
	// keep the records from coming in: the pull still runs, and the error
	// is returned at the end.
	upErr := c.maybeUpload(ctx, cr, &rep)
	if upErr != nil && !errors.Is(upErr, ErrUnavailable) {
		return rep, fmt.Errorf("sync: %w", upErr)
	}
	if err := c.pull(ctx, cr, &rep); err != nil {
		return rep, fmt.Errorf("sync: %w", err)
	}
	if n, err := c.resendLost(ctx, rep.serverLastSeq); err != nil {
		return rep, fmt.Errorf("sync: %w", err)
	} else if n > 0 {
		// The server lost acknowledged mutations (a restore): they are
		// back in the outbox; push them and pull their effects.
		rep.Resent += n
		if err := c.push(ctx, cr, &rep); err != nil {
			return rep, fmt.Errorf("sync: %w", err)
		}
		if upErr == nil {
			// Uploads the server refused for want of the lost visits.
			if upErr = c.maybeUpload(ctx, cr, &rep); upErr != nil && !errors.Is(upErr, ErrUnavailable) {
				return rep, fmt.Errorf("sync: %w", upErr)
			}
		}
		if err := c.pull(ctx, cr, &rep); err != nil {
			return rep, fmt.Errorf("sync: %w", err)
		}
	}
	if upErr != nil {
		return rep, fmt.Errorf("sync: %w", upErr)
	}
	if err := c.withTx(ctx, func(tx *sql.Tx) error {
		return setMeta(ctx, tx, metaLastSyncAt, ts(c.now()))
	}); err != nil {
		return rep, fmt.Errorf("sync: %w", err)
	}
	return rep, nil
}

// Push sends the whole outbox without pulling.
func (c *Client) Push(ctx context.Context) (SyncReport, error) {
	var rep SyncReport
	release, err := c.acquire(ctx)
	if err != nil {
		return rep, fmt.Errorf("push: %w", err)
	}
	defer release()
	cr, err := c.creds(ctx)
	if err != nil {
		return rep, fmt.Errorf("push: %w", err)
	}
	return rep, c.push(ctx, cr, &rep)
}

// Pull pulls until the server has nothing more, without pushing.
func (c *Client) Pull(ctx context.Context) (SyncReport, error) {
	var rep SyncReport
	release, err := c.acquire(ctx)
	if err != nil {
		return rep, fmt.Errorf("pull: %w", err)
	}
	defer release()
	cr, err := c.creds(ctx)
	if err != nil {
		return rep, fmt.Errorf("pull: %w", err)
	}
	return rep, c.pull(ctx, cr, &rep)
}

// outboxRow is one queued mutation as stored.
type outboxRow struct {
	seq       int64
	kind      string
	entity    string
	household string
	body      string
	created   string
}

// pushBody is syncproto.PushRequest with the mutations kept as encoded
// bytes: those stored in the outbox, or their compact form.
type pushBody struct {
	ProtocolVersion int                     `json:"protocol_version"`
	DeviceID        string                  `json:"device_id"`
	Mutations       []json.RawMessage       `json:"mutations"`
	Health          *syncproto.OutboxHealth `json:"health,omitempty"`
}

// pushMutations encodes a batch for a push of the given protocol version:
// the outbox bodies as they are for version 1; for version 2 their compact
// form (syncproto.Mutation.Compact: no kind, no seq after the first, hashes
// in base64url), which the server expands back to the same mutations.
func pushMutations(batch []outboxRow, version int) []json.RawMessage {
	out := make([]json.RawMessage, len(batch))
	for i, r := range batch {
		out[i] = json.RawMessage(r.body)
		if version >= 2 {
			out[i] = compactBody(r, i == 0 || batch[i-1].seq+1 != r.seq)
		}
	}
	return out
}

// payloadKeys names the payload field of each mutation kind.
var payloadKeys = map[string]string{
	string(syncproto.KindVisitCreate):     "visit",
	string(syncproto.KindHouseholdCreate): "household",
	string(syncproto.KindHouseholdUpdate): "household_update",
	string(syncproto.KindHouseholdMove):   "household_move",
	string(syncproto.KindHouseholdDelete): "household_delete",
	string(syncproto.KindEvidenceAttach):  "evidence_attach",
}

// compactBody is the compact form of an outbox row's mutation. A body
// without evidence references, as enqueue writes it
// ({"seq":N,"kind":"K","hlc":"...","<K's payload>":...), only loses its
// seq (unless keepSeq) and kind, cut from the bytes: no decoding, as a
// device pushes thousands of them. Any other is decoded and re-encoded
// (syncproto.Mutation.Compact); one that does not decode as its row's
// mutation goes as it is (valid in version 2 too).
func compactBody(r outboxRow, keepSeq bool) json.RawMessage {
	body := r.body
	if !strings.Contains(body, `"sha256"`) {
		seqPart := `{"seq":` + strconv.FormatInt(r.seq, 10) + `,`
		rest, ok := strings.CutPrefix(body, seqPart+`"kind":"`+r.kind+`",`)
		// Then "hlc":"<18 characters>", and the kind's payload.
		const hlcLen = len(`"hlc":"0000000000000-0000",`)
		if key := payloadKeys[r.kind]; ok && key != "" && len(rest) > hlcLen && strings.HasPrefix(rest, `"hlc":"`) &&
			strings.HasPrefix(rest[hlcLen:], `"`+key+`":{`) {
			if keepSeq {
				return json.RawMessage(seqPart + rest)
			}
			return json.RawMessage("{" + rest)
		}
	}
	var m syncproto.Mutation
	if json.Unmarshal([]byte(body), &m) != nil || m.Seq != r.seq {
		return json.RawMessage(body)
	}
	b, err := json.Marshal(m.Compact(keepSeq))
	if err != nil {
		return json.RawMessage(body)
	}
	return b
}

// refusedVersion reports whether err is a server's refusal of a request in
// protocol version v because it speaks only older versions.
func refusedVersion(err error, v int) bool {
	var se *syncproto.Error
	if !errors.Is(err, ErrUnsupportedVersion) || !errors.As(err, &se) {
		return false
	}
	if _, ok := se.Details["max"]; !ok {
		return true
	}
	return detailInt(se.Details, "max") < int64(v)
}

func (c *Client) loadBatch(ctx context.Context, limit int) ([]outboxRow, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT seq, kind, entity_id, household_id, body, created_at FROM outbox ORDER BY seq LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	defer rows.Close()
	var out []outboxRow
	size := 0
	for rows.Next() {
		var r outboxRow
		if err := rows.Scan(&r.seq, &r.kind, &r.entity, &r.household, &r.body, &r.created); err != nil {
			return nil, fmt.Errorf("outbox: %w", err)
		}
		if len(out) > 0 && (size+len(r.body) > c.opts.MaxPushBytes || r.seq != out[len(out)-1].seq+1) {
			// Over the size cap, or a hole (never made by this package):
			// send what is contiguous.
			break
		}
		size += len(r.body)
		out = append(out, r)
	}
	return out, rows.Err()
}

func (c *Client) health(ctx context.Context) *syncproto.OutboxHealth {
	p, err := pendingInfo(ctx, c.db)
	if err != nil {
		return nil
	}
	return &syncproto.OutboxHealth{
		PendingMutations: p.Mutations,
		PendingBlobs:     p.Uploads,
		PendingBytes:     p.Bytes + p.UploadBytes,
		OldestPending:    p.OldestAt.Truncate(time.Second),
		AppVersion:       c.opts.AppVersion,
	}
}

func (c *Client) push(ctx context.Context, cr credentials, rep *SyncReport) error {
	var cnt counters
	defer rep.add(&cnt)
	limit := c.opts.MaxBatch
	requeued := false
	renumbered := 0
	for {
		batch, err := c.loadBatch(ctx, limit)
		if err != nil {
			return fmt.Errorf("push: %w", err)
		}
		if len(batch) == 0 {
			return nil
		}
		version := syncproto.MaxProtocolVersion
		if c.pushV1.Load() {
			version = syncproto.ProtocolVersion
		}
		req := pushBody{ProtocolVersion: version, DeviceID: cr.deviceID, Health: c.health(ctx), Mutations: pushMutations(batch, version)}
		sent := c.now()
		body, err := encodeBody(req, true)
		if err != nil {
			return fmt.Errorf("push: %w", err)
		}
		data, err := c.call(ctx, request{name: "push", path: PushPath, body: body, gzip: true, token: cr.token, version: version}, &cnt)
		if err != nil {
			if version > syncproto.ProtocolVersion && refusedVersion(err, version) {
				// A server of protocol version 1: push to it in that form.
				c.pushV1.Store(true)
				cnt.errors = append(cnt.errors, fmt.Sprintf("the server takes no version %d push (%v); pushing in the version %d form", version, err, syncproto.ProtocolVersion))
				continue
			}
			var gap *SequenceGapError
			if errors.As(err, &gap) {
				gap.Sent = batch[0].seq
				if gap.Expected >= 1 && gap.Expected < batch[0].seq && !requeued {
					// The server is behind what it acknowledged (it was
					// restored from a backup): send the lost mutations
					// again from the saved results, then carry on.
					requeued = true
					n, rerr := c.requeueLost(ctx, gap.Expected, batch[0].seq)
					if rerr == nil {
						cnt.errors = append(cnt.errors, fmt.Sprintf("server was behind: re-sent %d acknowledged mutations from seq %d", n, gap.Expected))
						continue
					}
					return fmt.Errorf("%w (%v)", err, rerr)
				}
			}
			var reused *SequenceReusedError
			if errors.As(err, &reused) && renumbered < 3 {
				// The server applied these numbers from another copy of
				// this device (a restored backup): number the unsent
				// mutations after its last seq and push them again.
				renumbered++
				n, rerr := c.renumberOutbox(ctx, reused.Seq, reused.LastSeq)
				if rerr != nil {
					return fmt.Errorf("%w (%v)", err, rerr)
				}
				rep.Renumbered += n
				cnt.errors = append(cnt.errors, fmt.Sprintf("the server had applied seq %d and on from another copy of this device: renumbered %d unsent mutations after seq %d", reused.Seq, n, reused.LastSeq))
				continue
			}
			var se *syncproto.Error
			if errors.As(err, &se) && se.Code == syncproto.CodeTooLarge && len(batch) > 1 {
				// The server (or a proxy) refuses bodies this big: halve the
				// batch for the rest of this push.
				limit = len(batch) / 2
				cnt.errors = append(cnt.errors, err.Error())
				continue
			}
			return err
		}
		resp, err := syncproto.DecodePushResponse(bytes.NewReader(data))
		if err != nil {
			return fmt.Errorf("push: %w: %w", ErrServer, err)
		}
		if resp.ProtocolVersion != 0 && !syncproto.SupportsVersion(resp.ProtocolVersion) {
			return fmt.Errorf("push: answer in protocol %d: %w", resp.ProtocolVersion, ErrUnsupportedVersion)
		}
		n, err := c.savePush(ctx, batch, resp, rep)
		if err != nil {
			return fmt.Errorf("push: %w", err)
		}
		rep.Batches++
		if n == 0 {
			return fmt.Errorf("push: %w: no result for seq %d (server last_seq %d)", ErrServer, batch[0].seq, resp.LastSeq)
		}
		if c.opts.growBatch && len(batch) == limit && c.now().Sub(sent) < GrowBatchWithin {
			limit = min(2*limit, GrownBatch)
		}
	}
}

// savePush saves the results of one push and drops the answered outbox
// rows, in one transaction, with the local effects of the answers.
func (c *Client) savePush(ctx context.Context, batch []outboxRow, resp *syncproto.PushResponse, rep *SyncReport) (int, error) {
	bySeq := make(map[int64]outboxRow, len(batch))
	for _, r := range batch {
		bySeq[r.seq] = r
	}
	var saved []Result
	err := c.withTx(ctx, func(tx *sql.Tx) error {
		saved = saved[:0]
		now := ts(c.now())
		touched := map[string]bool{}
		for _, res := range resp.Results {
			row, ok := bySeq[res.Seq]
			if !ok || res.Seq > resp.LastSeq {
				continue
			}
			delete(bySeq, res.Seq) // a result counts once
			switch res.Status {
			case syncproto.StatusApplied, syncproto.StatusRejected:
			default:
				return fmt.Errorf("%w: seq %d: unknown status %q", ErrServer, res.Seq, res.Status)
			}
			// The body is decoded only for the kinds whose answer needs
			// it (a visit's does not: about a third of this loop's time
			// went to decoding every visit's answers).
			var m syncproto.Mutation
			switch kind := syncproto.MutationKind(row.kind); kind {
			case syncproto.KindHouseholdCreate, syncproto.KindEvidenceAttach:
				if err := json.Unmarshal([]byte(row.body), &m); err != nil {
					return fmt.Errorf("outbox %d: %w", row.seq, err)
				}
			default:
				m.Kind = kind
			}
			overlay := false
			applied := res.Status == syncproto.StatusApplied
			switch m.Kind {
			case syncproto.KindVisitCreate:
				q := `DELETE FROM visits WHERE id = ? AND local_only = 1`
				if applied {
					q = `UPDATE visits SET local_only = 0 WHERE id = ?`
				}
				if _, err := tx.ExecContext(ctx, q, row.entity); err != nil {
					return err
				}
			case syncproto.KindHouseholdCreate:
				if applied && res.Version > 0 && m.Household != nil {
					// The server keeps the creation as sent: that is the
					// base, at the version it answered.
					fields := map[string]json.RawMessage{}
					for k, v := range m.Household.Fields {
						if !syncproto.IsNull(v) {
							fields[k] = v
						}
					}
					fb, _ := json.Marshal(fields)
					if _, err := tx.ExecContext(ctx, `UPDATE households SET has_base = 1, base_place = ?, base_fields = ?, base_version = ?
						WHERE id = ? AND (has_base = 0 OR base_version < ?)`,
						m.Household.PlaceCode, string(fb), res.Version, row.entity, res.Version); err != nil {
						return err
					}
				}
				touched[row.household] = true
			case syncproto.KindEvidenceAttach:
				if !applied && m.EvidenceAttach != nil {
					// The server never attached it: neither does the
					// local copy of the visit.
					if err := dropLocalEvidence(ctx, tx, m.EvidenceAttach); err != nil {
						return err
					}
				}
			case syncproto.KindHouseholdUpdate, syncproto.KindHouseholdMove, syncproto.KindHouseholdDelete:
				// Keep showing an applied change until a pull brings the
				// version it made.
				overlay = applied && res.Version > 0
				touched[row.household] = true
			}
			if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO results(seq, kind, entity_id, household_id, status, code, message, version, conflicts, overlay, body, queued_at, answered_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				row.seq, row.kind, row.entity, row.household, res.Status, string(res.Code), res.Message, res.Version, res.Conflicts, overlay,
				row.body, row.created, now); err != nil {
				return fmt.Errorf("results: %w", err)
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE seq = ?`, row.seq); err != nil {
				return fmt.Errorf("outbox: %w", err)
			}
			saved = append(saved, Result{Seq: row.seq, Kind: row.kind, EntityID: row.entity, HouseholdID: row.household,
				Status: res.Status, Code: string(res.Code), Message: res.Message, Version: res.Version, Conflicts: res.Conflicts,
				ClockClamped: res.ClockClamped, Mutation: row.body, QueuedAt: parseTS(row.created), AnsweredAt: parseTS(now)})
		}
		for id := range touched {
			if err := recompute(ctx, tx, id); err != nil {
				return err
			}
		}
		return c.observe(ctx, tx, resp.ServerHLC)
	})
	if err != nil {
		return 0, err
	}
	for _, r := range saved {
		rep.Pushed++
		rep.Conflicts += r.Conflicts
		if r.ClockClamped {
			rep.ClockClamped++
		}
		if r.Status == syncproto.StatusRejected {
			rep.Rejected++
			rep.Rejections = append(rep.Rejections, r)
		}
	}
	return len(saved), nil
}

// observe merges a server HLC into the clock and persists the result.
func (c *Client) observe(ctx context.Context, tx *sql.Tx, h syncproto.HLC) error {
	if h.IsZero() {
		return nil
	}
	return saveHLC(ctx, tx, c.clock.Observe(h))
}

// pulledPage is the answer to one pull request, decoded.
type pulledPage struct {
	cursor string // the cursor the request carried
	resp   *syncproto.PullResponse
	cnt    counters
	err    error
}

// fetchPage sends one pull request with body and decodes its answer.
func (c *Client) fetchPage(ctx context.Context, cr credentials, cursor string, body []byte) pulledPage {
	pg := pulledPage{cursor: cursor}
	data, err := c.call(ctx, request{name: "pull", path: PullPath, body: body, gzip: true, token: cr.token}, &pg.cnt)
	if err != nil {
		pg.err = err
		return pg
	}
	resp, err := syncproto.DecodePullResponse(bytes.NewReader(data))
	if err != nil {
		pg.err = fmt.Errorf("pull: %w: %w", ErrServer, err)
		return pg
	}
	if resp.ProtocolVersion != 0 && !syncproto.SupportsVersion(resp.ProtocolVersion) {
		pg.err = fmt.Errorf("pull: answer in protocol %d: %w", resp.ProtocolVersion, ErrUnsupportedVersion)
		return pg
	}
	pg.resp = resp
	return pg
}

// pullBody encodes the pull request for cursor.
func (c *Client) pullBody(ctx context.Context, cr credentials, cursor string) ([]byte, error) {
	req := syncproto.PullRequest{ProtocolVersion: syncproto.ProtocolVersion, DeviceID: cr.deviceID,
		Cursor: cursor, MaxBytes: c.opts.PullBytes, Health: c.health(ctx)}
	body, err := encodeBody(req, true)
	if err != nil {
		return nil, fmt.Errorf("pull: %w", err)
	}
	return body, nil
}

// pull pulls pages until the server has no more. While a page is applied,
// the next one (asked for with the cursor the page carries, the one its
// apply saves) is already on its way: the server builds it and the device
// decodes it at the same time as the device writes the page before. A page
// that fails to apply drops the one under way, so the cursor rules hold:
// pages are applied in order, each with its own cursor.
func (c *Client) pull(ctx context.Context, cr credentials, rep *SyncReport) error {
	var cnt counters
	defer rep.add(&cnt)
	restarted := false
	var ahead chan pulledPage // the next page, asked for already
	stopAhead := func() {}
	defer func() {
		stopAhead()
		if ahead != nil {
			pg := <-ahead
			cnt.merge(&pg.cnt)
		}
	}()
	for {
		var pg pulledPage
		if ahead != nil {
			pg = <-ahead
			ahead = nil
			stopAhead()
		} else {
			cursor, _, err := getMeta(ctx, c.db, metaCursor)
			if err != nil {
				return fmt.Errorf("pull: %w", err)
			}
			body, err := c.pullBody(ctx, cr, cursor)
			if err != nil {
				return err
			}
			pg = c.fetchPage(ctx, cr, cursor, body)
		}
		cnt.merge(&pg.cnt)
		cursor := pg.cursor
		if err := pg.err; err != nil {
			var se *syncproto.Error
			if !restarted && cursor != "" && errors.As(err, &se) && se.Code == syncproto.CodeInvalidCursor {
				// The server cannot use the saved cursor (a new key, say):
				// drop the local copy as a reset would and start over.
				restarted = true
				rep.Resets++
				if err := c.withTx(ctx, func(tx *sql.Tx) error {
					a := newApplier(ctx, tx, rep)
					if err := a.reset(); err != nil {
						return err
					}
					if err := a.finish(); err != nil {
						return err
					}
					return setMeta(ctx, tx, metaCursor, "")
				}); err != nil {
					return fmt.Errorf("pull: %w", err)
				}
				continue
			}
			return err
		}
		resp := pg.resp
		stalled := resp.HasMore && len(resp.Ops) == 0 && resp.Cursor == cursor
		if resp.HasMore && !stalled {
			body, err := c.pullBody(ctx, cr, resp.Cursor)
			if err != nil {
				return err
			}
			actx, cancel := context.WithCancel(ctx)
			ch := make(chan pulledPage, 1)
			go func(next string) { ch <- c.fetchPage(actx, cr, next, body) }(resp.Cursor)
			ahead, stopAhead = ch, cancel
		}
		if err := c.applyPage(ctx, resp, rep); err != nil {
			return fmt.Errorf("pull: %w", err)
		}
		rep.Pages++
		if resp.LastSeq != nil {
			rep.serverLastSeq = resp.LastSeq
		}
		if !resp.HasMore {
			return nil
		}
		if stalled {
			return fmt.Errorf("pull: %w: has_more without progress", ErrServer)
		}
	}
}

// applyPage applies a pulled page and saves its cursor in one transaction.
func (c *Client) applyPage(ctx context.Context, resp *syncproto.PullResponse, rep *SyncReport) error {
	var local SyncReport
	err := c.withTx(ctx, func(tx *sql.Tx) error {
		local = SyncReport{}
		a := newApplier(ctx, tx, &local)
		for i := range resp.Ops {
			if err := a.apply(&resp.Ops[i]); err != nil {
				return fmt.Errorf("op %d (%s %s %s): %w", i, resp.Ops[i].Op, resp.Ops[i].Type, resp.Ops[i].ID, err)
			}
		}
		if err := a.finish(); err != nil {
			return err
		}
		if err := setMeta(ctx, tx, metaCursor, resp.Cursor); err != nil {
			return err
		}
		return c.observe(ctx, tx, resp.ServerHLC)
	})
	if err != nil {
		return err
	}
	rep.PulledOps += len(resp.Ops)
	rep.ScopeEntered += local.ScopeEntered
	rep.ScopeLeft += local.ScopeLeft
	rep.Resets += local.Resets
	return nil
}

// requeueLost puts the mutations with seq in [from, to) back into the
// outbox from the saved results, in one transaction. It fails if any of
// them is no longer known: then the gap cannot be closed from here.
func (c *Client) requeueLost(ctx context.Context, from, to int64) (int, error) {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT seq, kind, entity_id, household_id, body, queued_at FROM results WHERE seq >= ? AND seq < ? ORDER BY seq`, from, to)
	if err != nil {
		return 0, err
	}
	var lost []outboxRow
	for rows.Next() {
		var r outboxRow
		if err := rows.Scan(&r.seq, &r.kind, &r.entity, &r.household, &r.body, &r.created); err != nil {
			rows.Close()
			return 0, err
		}
		lost = append(lost, r)
	}
	rows.Close()
	if int64(len(lost)) != to-from {
		return 0, fmt.Errorf("requeue: %d of %d lost mutations are still known: %w", len(lost), to-from, ErrSequenceGap)
	}
	for _, r := range lost {
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO outbox(seq, kind, entity_id, household_id, body, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
			r.seq, r.kind, r.entity, r.household, r.body, r.created); err != nil {
			return 0, err
		}
	}
	return len(lost), tx.Commit()
}

// renumberOutbox gives the outbox rows numbered from on new numbers after
// serverLast (the server applied from..serverLast with other content), in
// order and in one transaction, with the seq inside each body; the rows
// before from are replays of what the server has and keep theirs. The
// device's last handed-out number moves past the new ones.
func (c *Client) renumberOutbox(ctx context.Context, from, serverLast int64) (int, error) {
	if from < 1 || serverLast < from {
		return 0, fmt.Errorf("renumber: %w: seq %d reused, but the server's last seq is %d", ErrServer, from, serverLast)
	}
	shift := serverLast + 1 - from
	n := 0
	err := c.withTx(ctx, func(tx *sql.Tx) error {
		n = 0
		rows, err := tx.QueryContext(ctx, `SELECT seq, body FROM outbox WHERE seq >= ? ORDER BY seq DESC`, from)
		if err != nil {
			return err
		}
		var moved []outboxRow
		for rows.Next() {
			var r outboxRow
			if err := rows.Scan(&r.seq, &r.body); err != nil {
				rows.Close()
				return err
			}
			moved = append(moved, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		// Highest first: each row moves up past the rows still to move.
		var top int64
		for _, r := range moved {
			var m syncproto.Mutation
			if err := json.Unmarshal([]byte(r.body), &m); err != nil {
				return fmt.Errorf("outbox %d: %w", r.seq, err)
			}
			m.Seq = r.seq + shift
			body, err := json.Marshal(m)
			if err != nil {
				return fmt.Errorf("outbox %d: %w", r.seq, err)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE outbox SET seq = ?, body = ? WHERE seq = ?`, m.Seq, string(body), r.seq); err != nil {
				return fmt.Errorf("outbox %d: %w", r.seq, err)
			}
			top = max(top, m.Seq)
			n++
		}
		last, _, err := getMeta(ctx, tx, metaLastSeq)
		if err != nil {
			return err
		}
		if cur, _ := strconv.ParseInt(last, 10, 64); cur < top {
			return setMeta(ctx, tx, metaLastSeq, strconv.FormatInt(top, 10))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("renumber: %w", err)
	}
	return n, nil
}

// resendLost compares the server's last_seq for this device with the
// answers the device holds. If the server holds less than it once
// acknowledged, the lost mutations go back into the outbox.
func (c *Client) resendLost(ctx context.Context, serverLastSeq *int64) (int, error) {
	if serverLastSeq == nil {
		return 0, nil // the server did not say
	}
	serverLast := *serverLastSeq
	var answered sql.NullInt64
	if err := c.db.QueryRowContext(ctx, `SELECT max(seq) FROM results`).Scan(&answered); err != nil {
		return 0, err
	}
	if !answered.Valid || serverLast >= answered.Int64 {
		return 0, nil
	}
	return c.requeueLost(ctx, serverLast+1, answered.Int64+1)
}
