package sqlstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	sqlite3 "github.com/mattn/go-sqlite3"

	"fieldsync/server/domain"
	"fieldsync/server/merge"
	"fieldsync/server/store"
	"fieldsync/syncproto"
)

// PushDevice is store.PushDevice.
type PushDevice = store.PushDevice

// pushJob is one unit of work for the single writer: a push, or (fn set)
// any other write transaction (writeTx).
type pushJob struct {
	ctx  context.Context // the caller's: its values are kept, its cancellation is not
	fn   func(ctx context.Context, tx *sql.Tx) error
	dev  PushDevice
	req  *syncproto.PushRequest
	pre  []*mutationPrep // work done before queueing, by index in req.Mutations
	resp *syncproto.PushResponse
	err  error
	done chan struct{}
	// unsynced: commit without waiting for the disk (writeTxUnsynced).
	unsynced bool
}

// Push applies a batch of mutations from one device and returns the
// per-mutation results once they are committed. Concurrent pushes are
// group-committed: the single writer applies up to MaxGroup of them in one
// transaction (each in its own savepoint) and answers all after one fsync.
func (s *Store) Push(ctx context.Context, dev PushDevice, req *syncproto.PushRequest) (*syncproto.PushResponse, error) {
	// What does not depend on the database's state (compacting answers,
	// the content hash, validating answers against an immutable form
	// version) is done here, in the request's goroutine, so the single
	// writer does only what must be serialised.
	j := &pushJob{ctx: ctx, dev: dev, req: req, done: make(chan struct{}), pre: s.preparePush(req)}
	if err := s.queueWrite(j); err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	return j.resp, j.err
}

// queueWrite hands a job to the single writer and waits for it. Once
// queued it waits for the answer even if the client went away: the job
// may already be applied, and the answer must match what landed.
func (s *Store) queueWrite(j *pushJob) error {
	select {
	case s.pushes <- j:
	case <-j.ctx.Done():
		return j.ctx.Err()
	case <-s.done:
		return fmt.Errorf("store closed: %w", domain.ErrUnavailable)
	}
	<-j.done
	return nil
}

func (s *Store) writerLoop() {
	defer s.wg.Done()
	for {
		var first *pushJob
		select {
		case <-s.done:
			s.failQueued()
			return
		case first = <-s.pushes:
		}
		group := []*pushJob{first}
		if !s.cfg.DisableGroupCommit {
		fill:
			for len(group) < s.cfg.MaxGroup {
				select {
				case j := <-s.pushes:
					group = append(group, j)
				default:
					break fill
				}
			}
		}
		// Jobs that need no fsync go first, in a commit of their own
		// that does not wait for the disk; queued together, the jobs
		// have no order among them. A group without them (every push)
		// is not copied.
		if slices.ContainsFunc(group, func(j *pushJob) bool { return j.unsynced }) {
			var unsynced, synced []*pushJob
			for _, j := range group {
				if j.unsynced {
					unsynced = append(unsynced, j)
				} else {
					synced = append(synced, j)
				}
			}
			s.commitGroup(unsynced, false)
			group = synced
		}
		if len(group) > 0 {
			s.commitGroup(group, true)
		}
	}
}

func (s *Store) failQueued() {
	for {
		select {
		case j := <-s.pushes:
			j.err = fmt.Errorf("push: store closed: %w", domain.ErrUnavailable)
			close(j.done)
		default:
			return
		}
	}
}

// errTxLost says SQLite ended the group transaction under a job (it rolls
// back the whole transaction on an interrupt, a full disk, an I/O error):
// nothing of that attempt is committed.
var errTxLost = errors.New("the group transaction was rolled back")

// commitGroup applies a group of jobs in one transaction and answers each.
// If the transaction is lost under a job, every answer of that attempt is
// void (nothing was committed): that job is answered with its error and the
// others are retried once in a fresh transaction. Answers are given only
// after the commit, so each one matches what landed.
func (s *Store) commitGroup(group []*pushJob, synced bool) {
	ctx := context.Background()
	jobs := group
	for attempt := 1; ; attempt++ {
		lost, err := s.runGroup(ctx, jobs, synced)
		if lost < 0 {
			for _, j := range jobs {
				if err != nil && j.err == nil {
					j.err, j.resp = err, nil
				}
			}
			break
		}
		culprit := jobs[lost]
		culprit.resp = nil
		culprit.err = fmt.Errorf("write: %w: %w", domain.ErrUnavailable, errors.Join(errTxLost, culprit.err))
		rest := make([]*pushJob, 0, len(jobs)-1)
		rest = append(rest, jobs[:lost]...)
		rest = append(rest, jobs[lost+1:]...)
		if attempt == 2 {
			for _, j := range rest {
				j.err, j.resp = fmt.Errorf("write: %w: %w twice", domain.ErrUnavailable, errTxLost), nil
			}
			break
		}
		jobs = rest
	}
	for _, j := range group {
		close(j.done)
	}
	s.prepareWanted(ctx)
}

// runGroup runs jobs in one transaction on the writer's connection and
// commits, waiting for the disk unless synced is false
// (writeTxUnsynced). It returns the index of the job under which the
// transaction was lost (rolled back by SQLite), or -1 with the commit's
// outcome.
func (s *Store) runGroup(ctx context.Context, jobs []*pushJob, synced bool) (lost int, err error) {
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return -1, fmt.Errorf("push: writer connection: %w", err)
	}
	defer conn.Close()
	if !synced && !s.pg {
		restore, err := unsyncedCommits(ctx, conn)
		if err != nil {
			return -1, fmt.Errorf("push: %w", err)
		}
		defer restore()
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return -1, fmt.Errorf("push: begin: %w", err)
	}
	if err := s.lockWrites(ctx, tx); err != nil {
		_ = tx.Rollback()
		return -1, fmt.Errorf("push: %w", err)
	}
	if !synced && s.pg {
		if _, err := tx.ExecContext(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
			_ = tx.Rollback()
			return -1, fmt.Errorf("push: %w", err)
		}
	}
	for i, j := range jobs {
		j.err, j.resp = nil, nil
		if err := j.ctx.Err(); err != nil {
			j.err = err // the caller left before its turn: skipped
			continue
		}
		if released := s.runJob(tx, i, j); !released || !inTransaction(conn) {
			_ = tx.Rollback()
			return i, errTxLost
		}
	}
	if err := tx.Commit(); err != nil {
		return -1, fmt.Errorf("push: commit: %w", err)
	}
	return -1, nil
}

// runJob runs one job in its own savepoint of the group transaction, with
// a context detached from the caller's cancellation and bounded by the
// writer's deadline. It reports whether the job's savepoint was released:
// if not, the savepoint (and so the group transaction) is gone.
//
// A push on SQLite runs its statements with no deadline on the context
// and checks the deadline before each mutation instead: a context that
// can be done costs go-sqlite3 a goroutine (and the writer a wake-up) per
// statement, about a third of the writer's time per visit under load,
// while a push's statements are lookups and inserts by key in a
// transaction that already holds the write lock. Other jobs, and every
// job on PostgreSQL (where a statement can wait on a row lock), keep the
// deadline on their context.
func (s *Store) runJob(tx *sql.Tx, i int, j *pushJob) (released bool) {
	deadline := time.Now().Add(s.cfg.WriteTimeout)
	ctx, cancel := context.WithoutCancel(j.ctx), context.CancelFunc(func() {})
	if j.fn != nil || s.pg {
		ctx, cancel = context.WithDeadline(ctx, deadline)
	}
	defer cancel()
	sp := "push" + strconv.Itoa(i)
	if _, err := tx.Exec(`SAVEPOINT ` + sp); err != nil {
		j.err = fmt.Errorf("push: savepoint: %w", err)
		return false
	}
	var resp *syncproto.PushResponse
	var err error
	if j.fn != nil {
		err = j.fn(ctx, tx)
	} else {
		resp, err = s.applyPush(ctx, tx, j.dev, j.req, j.pre, deadline)
	}
	if err != nil {
		_, _ = tx.Exec(`ROLLBACK TO ` + sp)
		j.err = err
	} else {
		j.resp = resp
	}
	if _, err := tx.Exec(`RELEASE ` + sp); err != nil {
		if j.err == nil {
			j.err, j.resp = fmt.Errorf("push: release: %w", err), nil
		}
		return false
	}
	return true
}

// inTransaction reports whether the writer's connection is still inside
// a transaction (SQLite's autocommit flag is off).
func inTransaction(c *sql.Conn) bool {
	if pgInTx, ok := pgTxActive(c); ok {
		return pgInTx
	}
	active := true
	_ = c.Raw(func(dc any) error {
		if sc, ok := dc.(*sqlite3.SQLiteConn); ok {
			active = !sc.AutoCommit()
		}
		return nil
	})
	return active
}

// unsyncedCommits sets the SQLite writer connection's commits not to wait
// for the disk (synchronous=NORMAL: in WAL mode a commit then appends to
// the log without an fsync; the next FULL commit's fsync of the log
// covers it). The returned func sets synchronous=FULL again, as the
// connection was opened (DSN); if that fails the connection is thrown
// away, so that no later commit is acknowledged without its fsync.
func unsyncedCommits(ctx context.Context, conn *sql.Conn) (restore func(), err error) {
	if _, err := conn.ExecContext(ctx, `PRAGMA synchronous = NORMAL`); err != nil {
		return nil, fmt.Errorf("unsynced commit: %w", err)
	}
	return func() {
		if _, err := conn.ExecContext(context.Background(), `PRAGMA synchronous = FULL`); err != nil {
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}, nil
}

// SequenceGapError is store.SequenceGapError.
type SequenceGapError = store.SequenceGapError

// SequenceReusedError is store.SequenceReusedError.
type SequenceReusedError = store.SequenceReusedError

// errWriterDeadline says a push outlived the writer's deadline
// (Config.WriteTimeout) before its last mutation: nothing of it is kept.
var errWriterDeadline = fmt.Errorf("%w: the push outlived the writer's deadline: %w", domain.ErrUnavailable, context.DeadlineExceeded)

// applyPush applies one push in the group transaction. Before each
// mutation it checks the writer's deadline (see runJob).
func (s *Store) applyPush(ctx context.Context, rawTx *sql.Tx, dev PushDevice, req *syncproto.PushRequest, pre []*mutationPrep, deadline time.Time) (*syncproto.PushResponse, error) {
	tx := cachedTx{tx: rawTx, s: s}
	var lastSeq int64
	err := tx.QueryRowContext(ctx, `SELECT last_seq FROM device_sync WHERE device_id = ?`, dev.DeviceID).Scan(&lastSeq)
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := tx.ExecContext(ctx, `INSERT INTO device_sync(device_id) VALUES (?)`, dev.DeviceID); err != nil {
			return nil, fmt.Errorf("push: device state: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("push: device state: %w", err)
	}
	if first := req.Mutations[0].Seq; first > lastSeq+1 {
		return nil, &SequenceGapError{Expected: lastSeq + 1, Got: first}
	}
	resp := &syncproto.PushResponse{ProtocolVersion: syncproto.ProtocolVersion}
	var scope map[string]bool
	now := s.ts()
	// The visits' audit events are written together, before any other
	// kind of mutation and at the end, so they keep their order.
	var audits []auditRow
	actx := domain.WithActor(ctx, domain.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID})
	flush := func() error {
		err := auditRows(actx, tx, audits)
		audits = audits[:0]
		return err
	}
	for i, m := range req.Mutations {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("push: mutation %d: %w", m.Seq, errWriterDeadline)
		}
		if m.Kind != syncproto.KindVisitCreate && len(audits) > 0 {
			if err := flush(); err != nil {
				return nil, fmt.Errorf("push: %w", err)
			}
		}
		p := &mutationPrep{}
		if i < len(pre) && pre[i] != nil {
			p = pre[i]
		}
		if m.Seq <= lastSeq {
			var body, pushed string
			var digest sql.NullString
			err := tx.QueryRowContext(ctx, `SELECT result, digest, body FROM mutation_results WHERE device_id = ? AND seq = ?`, dev.DeviceID, m.Seq).Scan(&body, &digest, &pushed)
			if err != nil {
				return nil, fmt.Errorf("push: stored result %d: %w", m.Seq, err)
			}
			// A replay of the same mutation gets the stored answer; the
			// same number with other content is refused, not acked and
			// dropped. Rows applied before digests were kept match.
			if digest.Valid && !p.sameAs(m, digest.String, pushed) {
				return nil, &SequenceReusedError{Seq: m.Seq, LastSeq: lastSeq}
			}
			var r syncproto.MutationResult
			if err := json.Unmarshal([]byte(body), &r); err != nil {
				return nil, fmt.Errorf("push: stored result %d: %w", m.Seq, err)
			}
			resp.Results = append(resp.Results, r)
			continue
		}
		if scope == nil {
			roots, err := userPlaces(ctx, tx, dev.UserID)
			if err != nil {
				return nil, fmt.Errorf("push: scope: %w", err)
			}
			if scope, err = subtree(ctx, tx, roots); err != nil {
				return nil, fmt.Errorf("push: scope: %w", err)
			}
		}
		r, err := s.applyOne(ctx, rawTx, dev, scope, m, p.visit, &audits)
		if err != nil {
			return nil, err
		}
		rb, _ := json.Marshal(r)
		digest := p.digestOf(m)
		if _, err := tx.ExecContext(ctx, `INSERT INTO mutation_results(device_id, seq, kind, result, body, applied_at, digest) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			dev.DeviceID, m.Seq, string(m.Kind), string(rb), p.body, now, digest); err != nil {
			return nil, fmt.Errorf("push: store result: %w", err)
		}
		resp.Results = append(resp.Results, r)
		lastSeq = m.Seq
	}
	if err := flush(); err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	var health, appVersion any
	if req.Health != nil {
		// The device measured its outbox before sending this batch; every
		// mutation in it now has an answer and leaves the outbox.
		h := *req.Health
		h.PendingMutations = max(0, h.PendingMutations-len(req.Mutations))
		if h.PendingMutations == 0 && h.PendingBlobs == 0 {
			h.OldestPending = time.Time{}
		}
		hb, _ := json.Marshal(h)
		health = string(hb)
		appVersion = req.Health.AppVersion
	}
	if _, err := tx.ExecContext(ctx, `UPDATE device_sync SET last_seq = ?, last_push_at = ?,
			health = COALESCE(?, health), health_at = CASE WHEN CAST(? AS TEXT) IS NULL THEN health_at ELSE ? END,
			app_version = COALESCE(NULLIF(?, ''), app_version) WHERE device_id = ?`,
		lastSeq, now, health, health, now, appVersion, dev.DeviceID); err != nil {
		return nil, fmt.Errorf("push: device state: %w", err)
	}
	resp.LastSeq = lastSeq
	resp.ServerHLC = s.clock.Tick()
	return resp, nil
}

// rejection is a mutation that can never apply. keep, if set, runs after
// the mutation's savepoint is rolled back: what must survive a rejection
// (the losing values of an edit against a deleted household) is written
// there.
type rejection struct {
	e    *syncproto.Error
	keep func() error
}

func (r rejection) Error() string { return r.e.Error() }

func reject(code syncproto.Code, format string, args ...any) error {
	return rejection{e: syncproto.Errorf(code, format, args...)}
}

// applyOne applies one mutation inside its own savepoint. A rejection rolls
// the savepoint back and becomes a rejected result; any other error fails
// the whole push.
//
// A visit's audit event goes to audits (written by the caller) when it is
// not nil.
func (s *Store) applyOne(ctx context.Context, tx *sql.Tx, dev PushDevice, scope map[string]bool, m syncproto.Mutation, pre *visitPrep, audits *[]auditRow) (syncproto.MutationResult, error) {
	res := syncproto.MutationResult{Seq: m.Seq, Status: syncproto.StatusApplied}
	if perr := m.Check(); perr != nil {
		res.Status, res.Code, res.Message = syncproto.StatusRejected, perr.Code, perr.Message
		return res, nil
	}
	hlc, clamped := syncproto.ClampHLC(m.HLC, s.now(), s.cfg.MaxClockAhead)
	if hlc.IsZero() {
		hlc = s.clock.Tick()
	} else {
		s.clock.Observe(hlc)
	}
	res.ClockClamped = clamped
	x := cachedTx{tx: tx, s: s}
	// A visit is rejected only before its first write (see visitCreate),
	// so it needs no savepoint; other kinds may write, then reject.
	savepoint := m.Kind != syncproto.KindVisitCreate
	if savepoint {
		if _, err := x.ExecContext(ctx, `SAVEPOINT m`); err != nil {
			return res, fmt.Errorf("push: savepoint: %w", err)
		}
	}
	actx := domain.WithActor(ctx, domain.Actor{UserID: dev.UserID, DeviceID: dev.DeviceID})
	a := &applier{s: s, ctx: actx, tx: tx, x: x, pre: pre, dev: dev, scope: scope, hlc: hlc, now: s.ts(), res: &res, audits: audits}
	var err error
	switch m.Kind {
	case syncproto.KindVisitCreate:
		err = a.visitCreate(m.Visit)
	case syncproto.KindHouseholdCreate:
		err = a.householdCreate(m.Household)
	case syncproto.KindHouseholdUpdate:
		err = a.householdUpdate(m.HouseholdUpdate)
	case syncproto.KindHouseholdMove:
		err = a.householdMove(m.HouseholdMove)
	case syncproto.KindHouseholdDelete:
		err = a.householdDelete(m.HouseholdDelete)
	case syncproto.KindEvidenceAttach:
		err = a.evidenceAttach(m.EvidenceAttach)
	}
	var rj rejection
	if errors.As(err, &rj) {
		if savepoint {
			if _, rerr := x.ExecContext(ctx, `ROLLBACK TO m`); rerr != nil {
				return res, fmt.Errorf("push: rollback mutation: %w", rerr)
			}
		}
		if rj.keep != nil {
			if kerr := rj.keep(); kerr != nil {
				return res, fmt.Errorf("push: mutation %d: %w", m.Seq, kerr)
			}
		}
		res = syncproto.MutationResult{Seq: m.Seq, Status: syncproto.StatusRejected, Code: rj.e.Code, Message: rj.e.Message, ClockClamped: clamped}
		err = nil
	}
	if err != nil {
		return res, fmt.Errorf("push: mutation %d: %w", m.Seq, err)
	}
	if savepoint {
		if _, err := x.ExecContext(ctx, `RELEASE m`); err != nil {
			return res, fmt.Errorf("push: release: %w", err)
		}
	}
	return res, nil
}

type applier struct {
	s     *Store
	ctx   context.Context
	tx    *sql.Tx
	x     cachedTx // tx through the writer's statement cache
	pre   *visitPrep
	dev   PushDevice
	scope map[string]bool
	hlc   syncproto.HLC
	now   string
	res   *syncproto.MutationResult
	// audits, if set, collects visit.create audit events for the push to
	// write together (auditRows); else each is written at once.
	audits *[]auditRow
}

func contentHash(v any) string {
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func compactAnswers(in map[string]json.RawMessage) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(in))
	for k, v := range in {
		if len(v) > 0 && !bytes.ContainsAny(v, " \t\r\n") {
			// Already compact (values come from a decoded document,
			// so they are valid JSON): most are.
			out[k] = v
			continue
		}
		var b bytes.Buffer
		if json.Compact(&b, v) == nil {
			out[k] = b.Bytes()
		} else {
			out[k] = v
		}
	}
	return out
}

type householdRow struct {
	id, place string
	fields    map[string]json.RawMessage
	meta      map[string]merge.FieldMeta
	version   int64
	deleted   bool
}

func (a *applier) household(id string) (*householdRow, error) {
	h := &householdRow{id: id}
	var fields, meta string
	err := a.x.QueryRowContext(a.ctx, `SELECT place_code, fields, field_meta, version, deleted FROM households WHERE id = ?`, id).
		Scan(&h.place, &fields, &meta, &h.version, &h.deleted)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, reject(syncproto.CodeUnknownEntity, "household %s does not exist", id)
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(fields), &h.fields); err != nil {
		return nil, fmt.Errorf("household %s fields: %w", id, err)
	}
	if err := json.Unmarshal([]byte(meta), &h.meta); err != nil {
		return nil, fmt.Errorf("household %s meta: %w", id, err)
	}
	return h, nil
}

func (a *applier) inScope(place string) error {
	if !a.scope[place] {
		return reject(syncproto.CodeOutOfScope, "place %s is outside this device's places", place)
	}
	return nil
}

// visitPrep is the part of applying a visit that does not depend on the
// database: its compacted answers, its content hash and, when its form
// version was already known, the outcome of validating the answers.
type visitPrep struct {
	answers   map[string]json.RawMessage
	hash      string
	validated bool
	invalid   error
	audit     json.RawMessage // the visit.create audit event's "after"
	answersJS string          // answers as stored (visits.answers)
}

// mutationPrep is what Push works out for one mutation before it queues
// for the writer: nothing in it depends on the database's state.
type mutationPrep struct {
	body   string     // the mutation as pushed (mutation_results.body)
	digest string     // bodyDigest of body
	visit  *visitPrep // visit.create only
}

// digestOf returns the digest stored with the mutation's result (the
// bodyDigest of its body), working out its body and digest first if
// preparePush did not.
func (p *mutationPrep) digestOf(m syncproto.Mutation) string {
	if p.body == "" {
		p.body = mutationBody(m)
	}
	if p.digest == "" {
		p.digest = bodyDigest(p.body)
	}
	return p.digest
}

// sameAs reports whether m is the mutation whose result was stored with
// digest and body: the same body (the usual replay: the same outbox entry
// encoded the same way), or the same canonical JSON (mutationDigest). The
// canonical comparison also covers the rows stored before digests of the
// body were kept, whose digest is mutationDigest(body).
func (p *mutationPrep) sameAs(m syncproto.Mutation, digest, body string) bool {
	if digest == p.digestOf(m) {
		return true
	}
	return mutationDigest(body) == mutationDigest(p.body)
}

// bodyDigest is the SHA-256 (hex) of a mutation body as kept. Bodies are
// the server's own encoding of the decoded mutation (mutationBody), so a
// replay of the same outbox entry has the same one; sameAs falls back to
// the canonical comparison for anything else.
func bodyDigest(body string) string {
	sum := sha256.Sum256([]byte(body))
	return hex.EncodeToString(sum[:])
}

// mutationBody is the JSON kept of a mutation as pushed (json.Marshal's
// bytes, written without reflection for a visit).
func mutationBody(m syncproto.Mutation) string {
	b, _ := syncproto.MarshalMutation(&m)
	return string(b)
}

// mutationDigest is the SHA-256 (hex) of a mutation body in canonical
// JSON: decoded and encoded again, so keys are sorted and insignificant
// space is gone, and the same mutation pushed in either protocol form
// (or with its answers spaced otherwise) has the same digest.
func mutationDigest(body string) string {
	canon := []byte(body)
	dec := json.NewDecoder(strings.NewReader(body))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) == nil {
		if b, err := json.Marshal(v); err == nil {
			canon = b
		}
	}
	sum := sha256.Sum256(canon)
	return hex.EncodeToString(sum[:])
}

func prepareVisit(v *syncproto.Visit) *visitPrep {
	pushed := *v
	pushed.Answers = compactAnswers(v.Answers)
	pushed.PlaceCode, pushed.DeviceID, pushed.UserName, pushed.ReviewState = "", "", "", ""
	pushed.ServerTime = time.Time{}
	// json.Marshal's bytes of the same values in a map (sorted keys).
	after, _ := json.Marshal(struct {
		Corrects    string `json:"corrects"`
		Evidence    int    `json:"evidence"`
		Form        string `json:"form"`
		HouseholdID string `json:"household_id"`
	}{v.CorrectsVisitID, len(v.Evidence), v.FormID + "@" + strconv.Itoa(v.FormVersion), v.HouseholdID})
	// Both as json.Marshal writes them, without its reflection and with
	// the answers encoded once: a third of a push's preparation went to
	// encoding each visit three times.
	enc, answers, _ := syncproto.EncodeVisit(&pushed)
	sum := sha256.Sum256(enc)
	return &visitPrep{answers: pushed.Answers, hash: hex.EncodeToString(sum[:]), audit: after, answersJS: string(answers)}
}

// preparePush prepares a push's mutations outside the writer: each one's
// body as kept, and for visits the compacted answers, content hash, audit
// detail and, when the form version is cached, the validation outcome
// (form versions are immutable, so it holds when the writer applies the
// visit).
func (s *Store) preparePush(req *syncproto.PushRequest) []*mutationPrep {
	out := make([]*mutationPrep, len(req.Mutations))
	for i, m := range req.Mutations {
		p := &mutationPrep{body: mutationBody(m)}
		p.digest = bodyDigest(p.body)
		if m.Kind == syncproto.KindVisitCreate && m.Visit != nil {
			v := prepareVisit(m.Visit)
			if f := s.peekForm(m.Visit.FormID, m.Visit.FormVersion); f != nil {
				v.validated, v.invalid = true, f.ValidateAnswers(v.answers)
			}
			p.visit = v
		}
		out[i] = p
	}
	return out
}

// visitCreate applies a visit. Every rejection comes before its first
// write: applyOne runs it without a savepoint.
//
// A visit whose id exists is no write: the same visit again (re-queued
// after a device crash) applies as it did, a different one is a
// duplicate_id. That is found by the insert itself (ON CONFLICT DO
// NOTHING), not by a read before it, a read the writer made for every
// visit; a rejection found before the insert gives way to it
// (visitExisting), so the answers are those of the check first.
func (a *applier) visitCreate(v *syncproto.Visit) error {
	p := a.pre
	if p == nil {
		p = prepareVisit(v)
	}
	place, err := a.checkVisit(v, p)
	if err != nil {
		var rj rejection
		if errors.As(err, &rj) {
			if known, kerr := a.visitExisting(v.ID, p.hash); known {
				return kerr
			}
		}
		return err
	}
	var lon, lat any
	if v.Point != nil {
		lon, lat = v.Point.Lon, v.Point.Lat
	}
	var corrects any
	if v.CorrectsVisitID != "" {
		corrects = v.CorrectsVisitID
	}
	res, err := a.x.ExecContext(a.ctx, `INSERT INTO visits(id, household_id, place_code, device_id, user_id, form_id, form_version, answers,
			lon, lat, accuracy_m, device_time, device_tz_offset, server_time, hlc, corrects_visit_id, content_hash, gps_reason)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
		v.ID, v.HouseholdID, place, a.dev.DeviceID, a.dev.UserID, v.FormID, v.FormVersion, p.answersJS,
		lon, lat, v.AccuracyM, domain.Timestamp(v.DeviceTime), zoneOffset(v.DeviceTime), a.now, a.hlc.String(), corrects, p.hash, nullString(v.GPSReason))
	if err != nil {
		return fmt.Errorf("insert visit: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("insert visit: %w", err)
	} else if n == 0 {
		_, err := a.visitExisting(v.ID, p.hash)
		return err
	}
	for _, e := range v.Evidence {
		if err := a.insertEvidence(v.ID, e); err != nil {
			return err
		}
	}
	if v.CorrectsVisitID != "" {
		if err := a.closeTasks(v.CorrectsVisitID, v.ID, place); err != nil {
			return err
		}
	}
	if _, err = logChange(a.x, a.now, "visit", v.ID, place, "put"); err != nil {
		return err
	}
	if a.audits != nil {
		*a.audits = append(*a.audits, auditRow{at: a.now, action: "visit.create", entityType: "visit", entityID: v.ID, place: place, after: p.audit})
		return nil
	}
	return audit(a.ctx, a.x, a.now, "visit.create", "visit", v.ID, place, nil, p.audit)
}

// visitExisting answers for a visit whose id may exist: known reports
// whether it does, and err is nil for the same content (the same visit
// again) or a duplicate_id rejection.
func (a *applier) visitExisting(id, hash string) (known bool, err error) {
	var existing string
	err = a.x.QueryRowContext(a.ctx, `SELECT content_hash FROM visits WHERE id = ?`, id).Scan(&existing)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return true, err
	case existing == hash:
		return true, nil // the same visit again, e.g. re-queued after a device crash
	}
	return true, reject(syncproto.CodeDuplicateID, "visit %s exists with different content", id)
}

// checkVisit makes every check of a new visit against the database and
// returns its household's place.
func (a *applier) checkVisit(v *syncproto.Visit, p *visitPrep) (place string, err error) {
	// A visit needs only the household's place, not its fields.
	h := &householdRow{id: v.HouseholdID}
	err = a.x.QueryRowContext(a.ctx, `SELECT place_code, deleted FROM households WHERE id = ?`, v.HouseholdID).Scan(&h.place, &h.deleted)
	if errors.Is(err, sql.ErrNoRows) {
		return "", reject(syncproto.CodeUnknownEntity, "household %s does not exist", v.HouseholdID)
	}
	if err != nil {
		return "", err
	}
	if h.deleted {
		return "", reject(syncproto.CodeGone, "household %s was deleted", v.HouseholdID)
	}
	if err := a.inScope(h.place); err != nil {
		return "", err
	}
	form, err := a.s.cachedForm(a.ctx, a.tx, v.FormID, v.FormVersion)
	if errors.Is(err, domain.ErrNotFound) {
		return "", reject(syncproto.CodeUnknownEntity, "form %s version %d does not exist; forms here: %s", v.FormID, v.FormVersion, a.knownForms())
	}
	if err != nil {
		return "", err
	}
	invalid := p.invalid
	if !p.validated {
		invalid = form.ValidateAnswers(p.answers)
	}
	if invalid != nil {
		return "", reject(syncproto.CodeValidation, "%v", invalid)
	}
	for _, e := range v.Evidence {
		if _, ok := form.Slot(e.Slot); !ok {
			return "", reject(syncproto.CodeValidation, "evidence slot %q is not in form %s@%d", e.Slot, v.FormID, v.FormVersion)
		}
	}
	if v.CorrectsVisitID != "" {
		var hh string
		err := a.x.QueryRowContext(a.ctx, `SELECT household_id FROM visits WHERE id = ?`, v.CorrectsVisitID).Scan(&hh)
		if errors.Is(err, sql.ErrNoRows) {
			return "", reject(syncproto.CodeUnknownEntity, "corrected visit %s does not exist", v.CorrectsVisitID)
		}
		if err != nil {
			return "", err
		}
		if hh != v.HouseholdID {
			return "", reject(syncproto.CodeValidation, "corrected visit %s belongs to another household", v.CorrectsVisitID)
		}
	}
	return h.place, nil
}

func (a *applier) insertEvidence(visitID string, e syncproto.EvidenceRef) error {
	_, err := a.x.ExecContext(a.ctx, `INSERT INTO visit_evidence(visit_id, slot, sha256, size, media_type) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		visitID, e.Slot, e.SHA256, e.Size, e.MediaType)
	if err != nil {
		return fmt.Errorf("insert evidence: %w", err)
	}
	return nil
}

// closeTasks marks the open tasks of a corrected visit done.
func (a *applier) closeTasks(correctedID, byVisit, place string) error {
	ids, err := queryStrings(a.ctx, a.tx, `SELECT id FROM tasks WHERE visit_id = ? AND state = 'open'`, correctedID)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if _, err := a.x.ExecContext(a.ctx, `UPDATE tasks SET state = 'done', closed_by_visit = ?, updated_at = ? WHERE id = ?`, byVisit, a.now, id); err != nil {
			return err
		}
		if _, err := logChange(a.x, a.now, "task", id, place, "put"); err != nil {
			return err
		}
	}
	return nil
}

func locationOf(fields map[string]json.RawMessage) (lon, lat any) {
	v, ok := fields[syncproto.FieldLocation]
	if !ok || syncproto.IsNull(v) {
		return nil, nil
	}
	var p syncproto.Point
	if json.Unmarshal(v, &p) != nil || !p.Valid() {
		return nil, nil
	}
	return p.Lon, p.Lat
}

func (a *applier) householdCreate(h *syncproto.Household) error {
	fields := compactAnswers(h.Fields)
	for k, v := range fields {
		if syncproto.IsNull(v) {
			delete(fields, k)
		}
	}
	hash := contentHash(struct {
		Place  string
		Fields map[string]json.RawMessage
	}{h.PlaceCode, fields})
	var createdBy sql.NullString
	var existingPlace string
	err := a.x.QueryRowContext(a.ctx, `SELECT created_by_device, place_code FROM households WHERE id = ?`, h.ID).Scan(&createdBy, &existingPlace)
	if err == nil {
		// A replay of the same creation (device re-queued it) is a no-op;
		// anything else is a clashing id.
		if createdBy.String == a.dev.DeviceID+":"+hash {
			return nil
		}
		return reject(syncproto.CodeDuplicateID, "household %s already exists", h.ID)
	} else if !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	var level string
	if err := a.x.QueryRowContext(a.ctx, `SELECT level FROM places WHERE code = ?`, h.PlaceCode).Scan(&level); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return reject(syncproto.CodeUnknownEntity, "place %s does not exist", h.PlaceCode)
		}
		return err
	}
	if err := a.inScope(h.PlaceCode); err != nil {
		return err
	}
	seq, err := logChange(a.x, a.now, "household", h.ID, h.PlaceCode, "put")
	if err != nil {
		return err
	}
	meta := map[string]merge.FieldMeta{}
	for k := range fields {
		meta[k] = merge.FieldMeta{HLC: a.hlc, Version: seq, Device: a.dev.DeviceID, UserID: a.dev.UserID}
	}
	meta["place_code"] = merge.FieldMeta{HLC: a.hlc, Version: seq, Device: a.dev.DeviceID, UserID: a.dev.UserID}
	fb, _ := json.Marshal(fields)
	mb, _ := json.Marshal(meta)
	lon, lat := locationOf(fields)
	if _, err := a.x.ExecContext(a.ctx, `INSERT INTO households(id, place_code, fields, field_meta, version, lon, lat, created_by_device, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		h.ID, h.PlaceCode, string(fb), string(mb), seq, lon, lat, a.dev.DeviceID+":"+hash, a.now, a.now); err != nil {
		return fmt.Errorf("insert household: %w", err)
	}
	a.res.Version = seq
	return audit(a.ctx, a.x, a.now, "household.create", "household", h.ID, h.PlaceCode, nil, fields)
}

func (a *applier) householdUpdate(u *syncproto.HouseholdUpdate) error {
	h, err := a.household(u.HouseholdID)
	if err != nil {
		return err
	}
	if err := a.inScope(h.place); err != nil {
		return err
	}
	if h.deleted {
		// A delete won against this edit: keep every value the edit carried
		// as a conflict record so it can be retrieved, and report it.
		return rejection{
			e: syncproto.Errorf(syncproto.CodeGone, "household %s was deleted; the edit is kept in %d conflict record(s)", h.id, len(u.Fields)),
			keep: func() error {
				for _, f := range sortedRaw(u.Fields) {
					c := merge.Conflict{Field: f, Losing: u.Fields[f], State: merge.StateAutoResolved,
						LosingMeta: merge.FieldMeta{HLC: a.hlc, Device: a.dev.DeviceID, UserID: a.dev.UserID}}
					if err := a.recordConflict(h, c); err != nil {
						return err
					}
				}
				return nil
			},
		}
	}
	seq, err := logChange(a.x, a.now, "household", h.id, h.place, "put")
	if err != nil {
		return err
	}
	before := map[string]json.RawMessage{}
	for f := range u.Fields {
		before[f] = h.fields[f]
	}
	out := merge.Apply(h.fields, h.meta, merge.Edit{
		Fields: compactAnswers(u.Fields), Base: u.BaseVersion, HLC: a.hlc, Device: a.dev.DeviceID, UserID: a.dev.UserID,
		Version: seq, Sensitive: syncproto.SensitiveField,
	})
	for f, v := range out.Set {
		if syncproto.IsNull(v) {
			delete(h.fields, f)
		} else {
			h.fields[f] = v
		}
		h.meta[f] = out.Meta[f]
	}
	for _, c := range out.Conflicts {
		if err := a.recordConflict(h, c); err != nil {
			return err
		}
	}
	a.res.Conflicts = len(out.Conflicts)
	if err := a.saveHousehold(h, seq); err != nil {
		return err
	}
	after := map[string]json.RawMessage{}
	for f := range u.Fields {
		after[f] = h.fields[f]
	}
	return audit(a.ctx, a.x, a.now, "household.update", "household", h.id, h.place, before,
		map[string]any{"fields": after, "base_version": u.BaseVersion, "conflicts": len(out.Conflicts)})
}

func (a *applier) saveHousehold(h *householdRow, seq int64) error {
	fb, _ := json.Marshal(h.fields)
	mb, _ := json.Marshal(h.meta)
	lon, lat := locationOf(h.fields)
	if _, err := a.x.ExecContext(a.ctx, `UPDATE households SET place_code = ?, fields = ?, field_meta = ?, version = ?, lon = ?, lat = ?, deleted = ?, updated_at = ? WHERE id = ?`,
		h.place, string(fb), string(mb), seq, lon, lat, h.deleted, a.now, h.id); err != nil {
		return fmt.Errorf("update household: %w", err)
	}
	a.res.Version = seq
	return nil
}

func (a *applier) recordConflict(h *householdRow, c merge.Conflict) error {
	id := syncproto.NewID(a.s.now())
	var kept, losing any
	if c.Kept != nil {
		kept = string(c.Kept)
	}
	if c.Losing != nil {
		losing = string(c.Losing)
	}
	if _, err := a.x.ExecContext(a.ctx, `INSERT INTO conflicts(id, household_id, place_code, field, kept_value, losing_value, losing_device, losing_user_id, losing_hlc, state, sensitive, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		id, h.id, h.place, c.Field, kept, losing, c.LosingMeta.Device, c.LosingMeta.UserID, c.LosingMeta.HLC.String(), c.State, c.Sensitive, a.now); err != nil {
		return fmt.Errorf("insert conflict: %w", err)
	}
	_, err := logChange(a.x, a.now, "conflict", id, h.place, "put")
	return err
}

func (a *applier) householdMove(mv *syncproto.HouseholdMove) error {
	h, err := a.household(mv.HouseholdID)
	if err != nil {
		return err
	}
	if h.deleted {
		return reject(syncproto.CodeGone, "household %s was deleted", h.id)
	}
	if err := a.inScope(h.place); err != nil {
		return err
	}
	if mv.PlaceCode == h.place {
		return nil
	}
	var level string
	if err := a.x.QueryRowContext(a.ctx, `SELECT level FROM places WHERE code = ?`, mv.PlaceCode).Scan(&level); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return reject(syncproto.CodeUnknownEntity, "place %s does not exist", mv.PlaceCode)
		}
		return err
	}
	// The target must be in the device's scope too: a worker may move a
	// household between her own places, never into another village or up
	// to the county.
	if !a.scope[mv.PlaceCode] {
		return reject(syncproto.CodeOutOfScope, "目标地点 %s 不在本设备负责的范围内 (target place %s is outside this device's places)", mv.PlaceCode, mv.PlaceCode)
	}
	if m, ok := h.meta["place_code"]; ok && m.Version > mv.BaseVersion && m.HLC.Compare(a.hlc) > 0 {
		// Someone moved it later than this device did: theirs stays.
		place, _ := json.Marshal(h.place)
		target, _ := json.Marshal(mv.PlaceCode)
		a.res.Conflicts = 1
		return a.recordConflict(h, merge.Conflict{Field: "place_code", Kept: place, Losing: target, State: merge.StateAutoResolved,
			LosingMeta: merge.FieldMeta{HLC: a.hlc, Device: a.dev.DeviceID, UserID: a.dev.UserID}})
	}
	old := h.place
	if _, err := logChange(a.x, a.now, "household", h.id, old, "moved_out"); err != nil {
		return err
	}
	seq, err := logChange(a.x, a.now, "household", h.id, mv.PlaceCode, "put")
	if err != nil {
		return err
	}
	h.place = mv.PlaceCode
	h.meta["place_code"] = merge.FieldMeta{HLC: a.hlc, Version: seq, Device: a.dev.DeviceID, UserID: a.dev.UserID}
	if err := moveHouseholdDependents(a.ctx, a.x, a.now, h.id, old, h.place); err != nil {
		return err
	}
	if err := a.saveHousehold(h, seq); err != nil {
		return err
	}
	return audit(a.ctx, a.x, a.now, "household.move", "household", h.id, h.place, map[string]string{"place_code": old}, map[string]string{"place_code": h.place})
}

func (a *applier) householdDelete(d *syncproto.HouseholdDelete) error {
	h, err := a.household(d.HouseholdID)
	if err != nil {
		return err
	}
	if err := a.inScope(h.place); err != nil {
		return err
	}
	if h.deleted {
		return nil
	}
	seq, err := logChange(a.x, a.now, "household", h.id, h.place, "moved_out")
	if err != nil {
		return err
	}
	// Edits made after the device's base are kept in conflict records: the
	// delete wins, but nothing is lost.
	for f, m := range h.meta {
		if m.Version > d.BaseVersion && f != "place_code" {
			if err := a.recordConflict(h, merge.Conflict{Field: f, Kept: nil, Losing: h.fields[f], LosingMeta: m, State: merge.StateAutoResolved}); err != nil {
				return err
			}
			a.res.Conflicts++
		}
	}
	h.deleted = true
	if err := a.saveHousehold(h, seq); err != nil {
		return err
	}
	return audit(a.ctx, a.x, a.now, "household.delete", "household", h.id, h.place, h.fields, nil)
}

func (a *applier) evidenceAttach(e *syncproto.EvidenceAttach) error {
	var place, formID string
	var formVersion int
	err := a.x.QueryRowContext(a.ctx, `SELECT place_code, form_id, form_version FROM visits WHERE id = ?`, e.VisitID).Scan(&place, &formID, &formVersion)
	if errors.Is(err, sql.ErrNoRows) {
		return reject(syncproto.CodeUnknownEntity, "visit %s does not exist", e.VisitID)
	}
	if err != nil {
		return err
	}
	if err := a.inScope(place); err != nil {
		return err
	}
	form, err := a.s.cachedForm(a.ctx, a.tx, formID, formVersion)
	if err != nil {
		return err
	}
	if _, ok := form.Slot(e.Evidence.Slot); !ok {
		return reject(syncproto.CodeValidation, "evidence slot %q is not in form %s@%d", e.Evidence.Slot, formID, formVersion)
	}
	if err := a.insertEvidence(e.VisitID, e.Evidence); err != nil {
		return err
	}
	if err := holdAttachedLink(a.ctx, a.tx, a.dev.DeviceID, e.VisitID, e.Evidence.SHA256); err != nil {
		return err
	}
	if _, err = logChange(a.x, a.now, "visit", e.VisitID, place, "put"); err != nil {
		return err
	}
	return audit(a.ctx, a.x, a.now, "evidence.attach", "visit", e.VisitID, place, nil, e.Evidence)
}

// isUniqueErr reports a UNIQUE (or primary key) constraint failure, on
// either engine.
func isUniqueErr(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	return err != nil && strings.Contains(err.Error(), "UNIQUE")
}

func sortedRaw(m map[string]json.RawMessage) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// zoneOffset is the zone offset a device wrote in a time, in seconds, or
// nil for UTC ("Z").
func zoneOffset(t time.Time) any {
	if t.Location() == time.UTC {
		return nil
	}
	_, off := t.Zone()
	return off
}

// knownForms lists the forms a device may use, each at its latest
// version ("water_cellar_progress@2, ..."), for a rejection that names an
// unknown one; at most 20.
func (a *applier) knownForms() string {
	ids, err := queryStrings(a.ctx, a.x, `SELECT id || '@' || max(version) FROM forms GROUP BY id ORDER BY id LIMIT 21`)
	if err != nil || len(ids) == 0 {
		return "none"
	}
	if len(ids) > 20 {
		ids = append(ids[:20], "...")
	}
	return strings.Join(ids, ", ")
}

// nullString stores "" as NULL.
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}
