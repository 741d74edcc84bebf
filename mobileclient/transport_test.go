package mobileclient

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"fieldsync/syncproto"
)

// fakeServer answers the device API from a handler the test supplies, and
// records what it received.
type fakeServer struct {
	*httptest.Server
	mu       sync.Mutex
	pushes   []*syncproto.PushRequest
	pulls    []*syncproto.PullRequest
	wireSent int64 // response bytes written (after compression)
	wireRecv int64 // request bytes read (before decompression)
	headers  []http.Header
}

// withStatus answers v with an HTTP status other than 200.
type withStatus struct {
	code int
	v    any
}

type fakeHandler func(f *fakeServer, w http.ResponseWriter, r *http.Request, body []byte) any

func newFake(t *testing.T, h fakeHandler) *fakeServer {
	f := &fakeServer{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wire, _ := io.ReadAll(r.Body)
		body := wire
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(wire))
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			body, _ = io.ReadAll(zr)
		}
		f.mu.Lock()
		f.wireRecv += int64(len(wire))
		f.headers = append(f.headers, r.Header.Clone())
		switch r.URL.Path {
		case PushPath:
			req, err := syncproto.DecodePushRequest(bytes.NewReader(body))
			if err != nil {
				t.Errorf("fake: bad push: %v", err)
			}
			f.pushes = append(f.pushes, req)
		case PullPath:
			req, err := syncproto.DecodePullRequest(bytes.NewReader(body))
			if err != nil {
				t.Errorf("fake: bad pull: %v", err)
			}
			f.pulls = append(f.pulls, req)
		}
		f.mu.Unlock()
		out := h(f, w, r, body)
		if out == nil {
			return
		}
		code := 200
		if ws, ok := out.(withStatus); ok {
			code, out = ws.code, ws.v
		}
		if e, ok := out.(*syncproto.Error); ok {
			code = e.Code.HTTPStatus()
		}
		var buf bytes.Buffer
		if r.Header.Get("Accept-Encoding") == "gzip" {
			w.Header().Set("Content-Encoding", "gzip")
			syncproto.Encode(&buf, out, true)
		} else {
			syncproto.Encode(&buf, out, false)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		f.mu.Lock()
		f.wireSent += int64(buf.Len())
		f.mu.Unlock()
		w.Write(buf.Bytes())
	}))
	t.Cleanup(f.Close)
	return f
}

// okHandler applies every pushed mutation and answers pulls with nothing.
func okHandler(f *fakeServer, w http.ResponseWriter, r *http.Request, body []byte) any {
	switch r.URL.Path {
	case PushPath:
		f.mu.Lock()
		req := f.pushes[len(f.pushes)-1]
		f.mu.Unlock()
		resp := &syncproto.PushResponse{ProtocolVersion: 1, ServerHLC: syncproto.HLC{WallMs: time.Now().UnixMilli()}}
		for _, m := range req.Mutations {
			resp.Results = append(resp.Results, syncproto.MutationResult{Seq: m.Seq, Status: syncproto.StatusApplied, Version: m.Seq + 100})
			resp.LastSeq = m.Seq
		}
		return resp
	case PullPath:
		return &syncproto.PullResponse{ProtocolVersion: 1, Ops: []syncproto.Op{}, Cursor: "cur"}
	case EnrollPath:
		return withStatus{http.StatusCreated, map[string]any{"device_id": "dev-1", "token": "tok-1", "user": map[string]any{"username": "worker1"}, "protocol_version": 1}}
	}
	return syncproto.Errorf(syncproto.CodeNotFound, "no route")
}

// enrolledWithWork returns a client of f with a local copy and n queued
// visits.
func enrolledWithWork(t *testing.T, f *fakeServer, o *Options, n int) *Client {
	t.Helper()
	c := openTest(t, t.TempDir(), f.URL, o)
	ctx := context.Background()
	if err := setMeta(ctx, c.db, metaDeviceID, "dev-1"); err != nil {
		t.Fatal(err)
	}
	if err := setMeta(ctx, c.db, metaToken, "tok-1"); err != nil {
		t.Fatal(err)
	}
	hh := newID()
	seed(t, c, hhOp(hh, "G11", 1, map[string]json.RawMessage{"head_name": str("a")}))
	for i := 0; i < n; i++ {
		if _, err := c.RecordVisit(surveyVisit(hh, "a")); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func TestEnroll_SavesIdentity(t *testing.T) {
	f := newFake(t, okHandler)
	dir := t.TempDir()
	c := openTest(t, dir, f.URL, nil)
	if _, err := c.Sync(context.Background()); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("Sync before enroll = %v", err)
	}
	if err := c.Enroll(context.Background(), "ABCD-EFGH", "tablet"); err != nil {
		t.Fatal(err)
	}
	if err := c.Enroll(context.Background(), "ABCD-EFGH", "tablet"); !errors.Is(err, ErrAlreadyEnrolled) {
		t.Fatalf("second Enroll = %v", err)
	}
	c.Close()
	// The server URL is remembered.
	c = openTest(t, dir, "", nil)
	info, err := c.Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.DeviceID != "dev-1" || info.Username != "worker1" || info.ServerURL != f.URL || !info.Enrolled {
		t.Fatalf("Info = %+v", info)
	}
	if _, err := c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if got := f.headers[len(f.headers)-1].Get("Authorization"); got != "Bearer tok-1" {
		t.Errorf("Authorization = %q", got)
	}
}

func TestEnroll_Refused(t *testing.T) {
	f := newFake(t, func(f *fakeServer, w http.ResponseWriter, r *http.Request, body []byte) any {
		return syncproto.Errorf(syncproto.CodeGone, "enrollment code already used")
	})
	c := openTest(t, t.TempDir(), f.URL, nil)
	err := c.Enroll(context.Background(), "X", "tablet")
	var se *syncproto.Error
	if !errors.Is(err, ErrServer) || !errors.As(err, &se) || se.Code != syncproto.CodeGone {
		t.Fatalf("Enroll = %v", err)
	}
	if info, _ := c.Info(); info.Enrolled {
		t.Fatal("enrolled after refusal")
	}
}

func TestSync_BatchesGzipHealthAndCounts(t *testing.T) {
	f := newFake(t, okHandler)
	c := enrolledWithWork(t, f, &Options{MaxBatch: 3, AppVersion: "1.2.3", Backoff: fastBackoff}, 7)
	rep, err := c.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Pushed != 7 || rep.Batches != 3 || rep.Rejected != 0 || rep.Pages != 1 {
		t.Errorf("report = %+v", rep)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pushes) != 3 {
		t.Fatalf("%d pushes", len(f.pushes))
	}
	next := int64(1)
	for i, p := range f.pushes {
		if p.DeviceID != "dev-1" || p.ProtocolVersion != syncproto.MaxProtocolVersion {
			t.Errorf("push %d: %+v", i, p)
		}
		for _, m := range p.Mutations {
			if m.Seq != next {
				t.Errorf("push %d: seq %d, want %d", i, m.Seq, next)
			}
			next++
		}
		if p.Health == nil || p.Health.AppVersion != "1.2.3" || p.Health.PendingMutations != 7-3*i || p.Health.OldestPending.IsZero() {
			t.Errorf("push %d health = %+v", i, p.Health)
		}
	}
	for i, h := range f.headers {
		if h.Get("Content-Encoding") != "gzip" || h.Get("Content-Type") != "application/json" || h.Get("Authorization") != "Bearer tok-1" {
			t.Errorf("request %d headers: %v", i, h)
		}
	}
	if rep.BytesSent != f.wireRecv || rep.BytesReceived != f.wireSent {
		t.Errorf("bytes sent/received = %d/%d, server saw %d/%d", rep.BytesSent, rep.BytesReceived, f.wireRecv, f.wireSent)
	}
	if p, _ := c.Pending(); p.Mutations != 0 || p.LastSyncAt.IsZero() {
		t.Errorf("Pending after sync = %+v", p)
	}
	if n := count(t, c.db, `SELECT count(*) FROM visits WHERE local_only = 1`); n != 0 {
		t.Errorf("%d visits still local_only after applied", n)
	}
}

// TestPush_CompactForm: pushes go in the compact form of protocol version
// 2 (no kinds, no seq after the first, hashes in base64url), and the
// server reads exactly the mutations the outbox holds.
func TestPush_CompactForm(t *testing.T) {
	var raw [][]byte
	f := newFake(t, func(f *fakeServer, w http.ResponseWriter, r *http.Request, body []byte) any {
		if r.URL.Path == PushPath {
			f.mu.Lock()
			raw = append(raw, body)
			f.mu.Unlock()
		}
		return okHandler(f, w, r, body)
	})
	c := enrolledWithWork(t, f, &Options{Backoff: fastBackoff}, 2)
	ref := prepare(t, c, certificatePDF(4, 900), "certificate", "application/pdf")
	hh, _ := c.Households("")
	id, err := c.RecordVisit(retrofitVisit(hh[0].ID, ref))
	if err != nil {
		t.Fatal(err)
	}
	// Every other kind of mutation too.
	if _, err := c.AttachEvidence(id, writeFile(t, "rework.jpg", noisyPhoto(5, 200, 150)), "rework", "image/jpeg"); err != nil {
		t.Fatal(err)
	}
	nh, err := c.CreateHousehold("G11", map[string]json.RawMessage{"head_name": str("赵")})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.UpdateHousehold(nh, map[string]json.RawMessage{"notes": str(`say "hlc":"x"`)}); err != nil {
		t.Fatal(err)
	}
	if err := c.MoveHousehold(nh, "G12"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteHousehold(nh); err != nil {
		t.Fatal(err)
	}
	var queued []syncproto.Mutation
	for _, e := range outbox(t, c) {
		queued = append(queued, e.M)
	}
	// Bodies without evidence are cut, not decoded and encoded again.
	rows, err := c.loadBatch(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	cut := 0
	for _, r := range rows {
		if b := string(compactBody(r, false)); !strings.Contains(r.body, `"sha256"`) {
			if cut++; "{"+b[1:] != b || !strings.HasSuffix(r.body, b[1:]) {
				t.Errorf("seq %d (%s): %s from %s", r.seq, r.kind, b, r.body)
			}
		}
	}
	if cut < 5 {
		t.Errorf("%d bodies without evidence", cut)
	}
	if rep, err := c.Push(context.Background()); err != nil || rep.Pushed != len(queued) {
		t.Fatalf("push: %v %+v", err, rep)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(raw) != 1 || len(f.pushes) != 1 {
		t.Fatalf("%d pushes", len(raw))
	}
	wire := string(raw[0])
	if !strings.HasPrefix(wire, `{"protocol_version":2,`) || strings.Contains(wire, `"kind"`) || strings.Count(wire, `"seq"`) != 1 ||
		strings.Contains(wire, ref.SHA256) || !strings.Contains(wire, base64.RawURLEncoding.EncodeToString(mustHex(t, ref.SHA256))) {
		t.Errorf("push body not in the compact form:\n%s", wire)
	}
	if h := f.headers[len(f.headers)-1].Get("Fieldsync-Protocol"); h != "2" {
		t.Errorf("Fieldsync-Protocol %q", h)
	}
	if !reflect.DeepEqual(f.pushes[0].Mutations, queued) {
		t.Errorf("the server read\n%+v\nthe outbox held\n%+v", f.pushes[0].Mutations, queued)
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPush_VersionOneServer: a server of protocol version 1 refuses a
// compact push with 426; the device pushes the same batch in the version 1
// form, and goes on in that form.
func TestPush_VersionOneServer(t *testing.T) {
	var versions []int
	f := newFake(t, func(f *fakeServer, w http.ResponseWriter, r *http.Request, body []byte) any {
		if r.URL.Path == PushPath {
			var req struct {
				V int `json:"protocol_version"`
			}
			json.Unmarshal(body, &req)
			f.mu.Lock()
			versions = append(versions, req.V)
			f.mu.Unlock()
			if req.V != 1 {
				return syncproto.Errorf(syncproto.CodeUnsupportedVersion, "protocol_version %d not supported; this server speaks 1..1", req.V).With("min", 1).With("max", 1)
			}
		}
		return okHandler(f, w, r, body)
	})
	c := enrolledWithWork(t, f, &Options{Backoff: fastBackoff}, 3)
	rep, err := c.Sync(context.Background())
	if err != nil || rep.Pushed != 3 {
		t.Fatalf("sync: %v %+v", err, rep)
	}
	hh, _ := c.Households("")
	if _, err := c.RecordVisit(surveyVisit(hh[0].ID, "b")); err != nil {
		t.Fatal(err)
	}
	if rep, err := c.Sync(context.Background()); err != nil || rep.Pushed != 1 {
		t.Fatalf("second sync: %v %+v", err, rep)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if fmt.Sprint(versions) != "[2 1 1]" {
		t.Errorf("push versions %v, want [2 1 1]", versions)
	}
	// A server that refuses version 2 for another reason (it needs a newer
	// one) is not retried in version 1.
	err = fmt.Errorf("push: %w: %w", ErrUnsupportedVersion, syncproto.Errorf(syncproto.CodeUnsupportedVersion, "x").With("min", 3).With("max", 3))
	if refusedVersion(err, 2) {
		t.Error("a server of version 3 taken for one of version 1")
	}
}

func TestSync_RetriesTransientErrors(t *testing.T) {
	var calls atomic.Int32
	f := newFake(t, func(f *fakeServer, w http.ResponseWriter, r *http.Request, body []byte) any {
		switch calls.Add(1) {
		case 1:
			return syncproto.Errorf(syncproto.CodeUnavailable, "busy")
		case 2:
			w.Header().Set("Retry-After", "0")
			return syncproto.Errorf(syncproto.CodeRateLimited, "slow down")
		case 3:
			// Not a fieldsync error at all: a proxy's page.
			w.WriteHeader(502)
			w.Write([]byte("<html>bad gateway</html>"))
			return nil
		}
		return okHandler(f, w, r, body)
	})
	c := enrolledWithWork(t, f, nil, 2)
	rep, err := c.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Retries != 3 || len(rep.Errors) != 3 || rep.Pushed != 2 {
		t.Errorf("report = %+v", rep)
	}
}

func TestSync_GivesUpAfterMaxAttempts(t *testing.T) {
	var calls atomic.Int32
	f := newFake(t, func(f *fakeServer, w http.ResponseWriter, r *http.Request, body []byte) any {
		calls.Add(1)
		return syncproto.Errorf(syncproto.CodeInternal, "boom")
	})
	c := enrolledWithWork(t, f, &Options{Backoff: Backoff{Base: time.Millisecond, Max: 2 * time.Millisecond, MaxAttempts: 3}}, 1)
	_, err := c.Sync(context.Background())
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Sync = %v, want ErrUnavailable", err)
	}
	if calls.Load() != 3 {
		t.Errorf("%d attempts, want 3", calls.Load())
	}
	if p, _ := c.Pending(); p.Mutations != 1 {
		t.Errorf("outbox lost: %+v", p)
	}
}

func TestSync_NetworkErrorRetried(t *testing.T) {
	f := newFake(t, okHandler)
	var n atomic.Int32
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if n.Add(1) <= 2 {
			return nil, errors.New("connection reset by peer")
		}
		return http.DefaultTransport.RoundTrip(r)
	})}
	c := enrolledWithWork(t, f, &Options{HTTPClient: hc, Backoff: fastBackoff}, 1)
	rep, err := c.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Retries != 2 || rep.Pushed != 1 {
		t.Errorf("report = %+v", rep)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestSync_ContextCancelStopsBackoff(t *testing.T) {
	f := newFake(t, func(f *fakeServer, w http.ResponseWriter, r *http.Request, body []byte) any {
		return syncproto.Errorf(syncproto.CodeUnavailable, "down")
	})
	c := enrolledWithWork(t, f, &Options{Backoff: Backoff{Base: time.Hour, Max: time.Hour, MaxAttempts: 5}}, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Sync(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sync = %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("backoff ignored the context")
	}
}

func TestSync_FatalErrors(t *testing.T) {
	tests := []struct {
		name  string
		err   *syncproto.Error
		is    error
		check func(t *testing.T, err error)
	}{
		{"revoked", syncproto.Errorf(syncproto.CodeUnauthorized, "device revoked"), ErrUnauthorized, nil},
		{"old protocol", syncproto.Errorf(syncproto.CodeUnsupportedVersion, "no").With("min", 2).With("max", 3), ErrUnsupportedVersion, nil},
		{"sequence gap", syncproto.Errorf(syncproto.CodeSequenceGap, "gap").With("expected", 42).With("got", 1), ErrSequenceGap,
			func(t *testing.T, err error) {
				var gap *SequenceGapError
				if !errors.As(err, &gap) || gap.Expected != 42 || gap.Sent != 1 {
					t.Errorf("gap = %+v", gap)
				}
				var se *syncproto.Error
				if !errors.As(err, &se) || se.Code != syncproto.CodeSequenceGap {
					t.Errorf("server error not wrapped: %v", err)
				}
			}},
		{"forbidden", syncproto.Errorf(syncproto.CodeForbidden, "device_id mismatch"), ErrServer, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			f := newFake(t, func(f *fakeServer, w http.ResponseWriter, r *http.Request, body []byte) any {
				calls.Add(1)
				return tt.err
			})
			c := enrolledWithWork(t, f, nil, 2)
			_, err := c.Sync(context.Background())
			if !errors.Is(err, tt.is) {
				t.Fatalf("Sync = %v, want %v", err, tt.is)
			}
			if calls.Load() != 1 {
				t.Errorf("%d attempts, want 1 (no retry)", calls.Load())
			}
			if tt.check != nil {
				tt.check(t, err)
			}
			if p, _ := c.Pending(); p.Mutations != 2 {
				t.Errorf("outbox changed: %+v", p)
			}
		})
	}
}

func TestSync_ServerAheadAnswersStoredResults(t *testing.T) {
	// The server already applied seqs 1..3 (the device crashed before
	// saving the answer) and now answers a smaller batch with last_seq 3.
	f := newFake(t, func(f *fakeServer, w http.ResponseWriter, r *http.Request, body []byte) any {
		if r.URL.Path != PushPath {
			return okHandler(f, w, r, body)
		}
		f.mu.Lock()
		req := f.pushes[len(f.pushes)-1]
		f.mu.Unlock()
		resp := &syncproto.PushResponse{ProtocolVersion: 1, LastSeq: max(3, req.Mutations[len(req.Mutations)-1].Seq)}
		for _, m := range req.Mutations {
			resp.Results = append(resp.Results, syncproto.MutationResult{Seq: m.Seq, Status: syncproto.StatusApplied})
		}
		return resp
	})
	c := enrolledWithWork(t, f, &Options{MaxBatch: 2, Backoff: fastBackoff}, 3)
	rep, err := c.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Seq 3 is not dropped on last_seq alone: it is pushed again and its
	// own result saved.
	if rep.Pushed != 3 || rep.Batches != 2 {
		t.Errorf("report = %+v", rep)
	}
	if n := count(t, c.db, `SELECT count(*) FROM results`); n != 3 {
		t.Errorf("%d results saved", n)
	}
}

func TestPull_PagesUntilDone(t *testing.T) {
	h := newID()
	f := newFake(t, func(f *fakeServer, w http.ResponseWriter, r *http.Request, body []byte) any {
		f.mu.Lock()
		n := len(f.pulls)
		cur := f.pulls[n-1].Cursor
		f.mu.Unlock()
		switch cur {
		case "":
			return &syncproto.PullResponse{ProtocolVersion: 1, Ops: placeOps(fixturePlaces()), Cursor: "p1", HasMore: true}
		case "p1":
			return &syncproto.PullResponse{ProtocolVersion: 1, Ops: []syncproto.Op{hhOp(h, "G11", 1, map[string]json.RawMessage{"head_name": str("x")})}, Cursor: "p2"}
		}
		return syncproto.Errorf(syncproto.CodeInvalidCursor, "?")
	})
	c := openTest(t, t.TempDir(), f.URL, nil)
	ctx := context.Background()
	setMeta(ctx, c.db, metaDeviceID, "dev-1")
	setMeta(ctx, c.db, metaToken, "tok-1")
	rep, err := c.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Pages != 2 || rep.PulledOps != 8 || rep.Pushed != 0 {
		t.Errorf("report = %+v", rep)
	}
	mustHousehold(t, c, h)
	if cur, _, _ := getMeta(ctx, c.db, metaCursor); cur != "p2" {
		t.Errorf("cursor = %q", cur)
	}
	f.mu.Lock()
	if f.pulls[0].MaxBytes != syncproto.DefaultPullBytes || f.pulls[0].Health == nil {
		t.Errorf("pull request = %+v", f.pulls[0])
	}
	f.mu.Unlock()

	// A cursor the server no longer accepts: the local copy is dropped and
	// a fresh pull starts from the beginning.
	setMeta(ctx, c.db, metaCursor, "stale")
	rep, err = c.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Resets != 1 || rep.Pages != 2 {
		t.Errorf("report after invalid cursor = %+v", rep)
	}
	mustHousehold(t, c, h)
}

func TestClose_RefusesUse(t *testing.T) {
	c := openTest(t, t.TempDir(), "", nil)
	c.Close()
	if _, err := c.Places(); !errors.Is(err, ErrClosed) {
		t.Errorf("Places after Close = %v", err)
	}
	if _, err := c.Sync(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync after Close = %v", err)
	}
	if _, err := c.CreateHousehold("G11", nil); !errors.Is(err, ErrClosed) {
		t.Errorf("CreateHousehold after Close = %v", err)
	}
}

func TestBackoffDelay_Bounds(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Max: time.Second, MaxAttempts: 10}
	for n := 1; n <= 40; n++ {
		bound := min(b.Max, b.Base<<min(n-1, 20))
		for i := 0; i < 50; i++ {
			if d := backoffDelay(b, n, 0); d < 0 || d > bound {
				t.Fatalf("retry %d: delay %v outside [0, %v]", n, d, bound)
			}
		}
	}
	if d := backoffDelay(b, 1, 500*time.Millisecond); d < 500*time.Millisecond {
		t.Errorf("Retry-After not honoured: %v", d)
	}
	if d := backoffDelay(b, 1, time.Hour); d != b.Max {
		t.Errorf("Retry-After not capped: %v", d)
	}
}

func TestSync_HalvesBatchOnTooLarge(t *testing.T) {
	f := newFake(t, func(f *fakeServer, w http.ResponseWriter, r *http.Request, body []byte) any {
		if r.URL.Path == PushPath {
			f.mu.Lock()
			n := len(f.pushes[len(f.pushes)-1].Mutations)
			f.mu.Unlock()
			if n > 2 {
				return syncproto.Errorf(syncproto.CodeTooLarge, "body too large")
			}
		}
		return okHandler(f, w, r, body)
	})
	c := enrolledWithWork(t, f, &Options{MaxBatch: 10, Backoff: fastBackoff}, 5)
	rep, err := c.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// 5 refused, 2 refused, then 2+2+1 in batches of at most 2.
	if rep.Pushed != 5 || rep.Batches != 3 {
		t.Errorf("report = %+v", rep)
	}
}

// TestPull_RefusedPageDropsThePageAhead: the next page is asked for while
// a page is applied; when that page is refused, the page ahead is not
// applied and the saved cursor stays the one before, so the next sync asks
// again from there and applies the pages in order.
func TestPull_RefusedPageDropsThePageAhead(t *testing.T) {
	h1, h2 := newID(), newID()
	var mu sync.Mutex
	broken := true
	f := newFake(t, func(f *fakeServer, w http.ResponseWriter, r *http.Request, body []byte) any {
		f.mu.Lock()
		cur := f.pulls[len(f.pulls)-1].Cursor
		f.mu.Unlock()
		mu.Lock()
		bad := broken
		mu.Unlock()
		switch cur {
		case "":
			return &syncproto.PullResponse{ProtocolVersion: 1, Ops: placeOps(fixturePlaces()), Cursor: "p1", HasMore: true}
		case "p1":
			ops := []syncproto.Op{hhOp(h1, "G11", 1, map[string]json.RawMessage{"head_name": str("a")})}
			if bad {
				ops = append(ops, syncproto.Op{Op: syncproto.OpPut, Type: syncproto.EntityVisit, ID: newID()}) // no payload
			}
			return &syncproto.PullResponse{ProtocolVersion: 1, Ops: ops, Cursor: "p2", HasMore: true}
		case "p2":
			return &syncproto.PullResponse{ProtocolVersion: 1, Ops: []syncproto.Op{hhOp(h2, "G11", 1, map[string]json.RawMessage{"head_name": str("b")})}, Cursor: "p3"}
		}
		return syncproto.Errorf(syncproto.CodeInvalidCursor, "?")
	})
	c := openTest(t, t.TempDir(), f.URL, nil)
	ctx := context.Background()
	setMeta(ctx, c.db, metaDeviceID, "dev-1")
	setMeta(ctx, c.db, metaToken, "tok-1")
	if _, err := c.Sync(ctx); !errors.Is(err, ErrServer) {
		t.Fatalf("Sync = %v, want ErrServer (a refused page)", err)
	}
	if cur, _, _ := getMeta(ctx, c.db, metaCursor); cur != "p1" {
		t.Errorf("cursor after the refused page = %q, want p1", cur)
	}
	for _, id := range []string{h1, h2} {
		if _, err := c.Household(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("household %s of a page not applied is shown (%v)", id, err)
		}
	}
	mu.Lock()
	broken = false
	mu.Unlock()
	rep, err := c.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Pages != 2 || rep.PulledOps != 2 {
		t.Errorf("report = %+v, want pages p1 and p2", rep)
	}
	mustHousehold(t, c, h1)
	mustHousehold(t, c, h2)
	if cur, _, _ := getMeta(ctx, c.db, metaCursor); cur != "p3" {
		t.Errorf("cursor = %q, want p3", cur)
	}
}
