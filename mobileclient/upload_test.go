package mobileclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"fieldsync/mobileclient/linkproxy"
	"fieldsync/server/api"
	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/syncproto"
)

// Evidence tests run the device library against the real server
// (servertest): the missing-blob check, tus uploads, downloads and the
// completeness list.

// evServer is a real server with a supervisor of V1 who can read evidence.
type evServer struct {
	env *servertest.Env
	sup string // the supervisor's bearer token
}

func startEvidence(t *testing.T, o servertest.Options) *evServer {
	t.Helper()
	env := servertest.StartWith(t, o)
	env.CreateUserWithPassword(t, "supervisor1", domain.RoleSupervisor, "sup-password-1", "V1")
	tok, err := env.API.Login(context.Background(), "supervisor1", "sup-password-1")
	if err != nil {
		t.Fatalf("supervisor login: %v", err)
	}
	return &evServer{env: env, sup: tok.Token}
}

// worker enrolls a device for a new field worker of places, talking to
// serverURL (the server, or a proxy in front of it), and makes its first
// sync.
func (s *evServer) worker(t *testing.T, name, serverURL string, o *Options, places ...string) *Client {
	t.Helper()
	if o == nil {
		o = &Options{Backoff: fastBackoff}
	}
	if o.HTTPClient == nil {
		// Its own connections, with the default 100-continue wait.
		o.HTTPClient = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), Timeout: time.Minute}
	}
	u := s.env.CreateUser(t, name, domain.RoleFieldWorker, places...)
	c := openTest(t, t.TempDir(), serverURL, o)
	if err := c.Enroll(context.Background(), s.env.EnrollCode(t, u.ID), name+"-tablet"); err != nil {
		t.Fatalf("enroll: %v", err)
	}
	mustSync(t, c)
	return c
}

func (s *evServer) present(t *testing.T, sum string) bool {
	t.Helper()
	ok, err := s.env.Store.BlobPresent(context.Background(), sum)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// get fetches path with the supervisor's token.
func (s *evServer) get(t *testing.T, path string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.env.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+s.sup)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// verified checks that the server holds the blob and serves exactly the
// bytes the device prepared (their hash and size), and that the device,
// told so, deleted its prepared copy.
func (s *evServer) verified(t *testing.T, c *Client, ref syncproto.EvidenceRef) {
	t.Helper()
	if !s.present(t, ref.SHA256) {
		t.Errorf("evidence %s (%s) is not present on the server", ref.SHA256[:12], ref.Slot)
		return
	}
	st, got := s.get(t, "/api/v1/evidence/"+ref.SHA256)
	if sum := sha256.Sum256(got); st != http.StatusOK || hex.EncodeToString(sum[:]) != ref.SHA256 || int64(len(got)) != ref.Size {
		t.Errorf("GET evidence %s (%s): status %d, %d bytes of %d, hash %x", ref.SHA256[:12], ref.Slot, st, len(got), ref.Size, sum[:6])
	}
	if p, err := c.EvidenceFile(ref.SHA256); !errors.Is(err, ErrNotFound) {
		t.Errorf("evidence %s (%s): the device's prepared copy is still there (%s, %v) after the server acknowledged it", ref.SHA256[:12], ref.Slot, p, err)
	}
}

// noUploadsLeft checks that the server holds no unfinished upload once
// every device has synced: a creation whose answer a cut lost is resumed
// by the device's next creation, not left open until it expires.
func (s *evServer) noUploadsLeft(t *testing.T) {
	t.Helper()
	var n int
	if err := s.env.Store.DB().QueryRow(`SELECT count(*) FROM uploads WHERE state = 'active'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d uploads left unfinished on the server after every device synced", n)
	}
}

func (s *evServer) gaps(t *testing.T, place string) api.GapsResponse {
	t.Helper()
	st, b := s.get(t, "/api/v1/evidence/gaps?place="+place)
	if st != http.StatusOK {
		t.Fatalf("gaps: %d %s", st, b)
	}
	var g api.GapsResponse
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return g
}

// tusCall is one evidence request a device made.
type tusCall struct {
	method, path, offset, checksum, expect string
	length                                 int64 // request body bytes declared
	status                                 int
	err                                    error
	start, end                             time.Time
}

// recorder passes requests on and notes the evidence ones; after, if
// set, runs after each answered request.
type recorder struct {
	base  http.RoundTripper
	mu    sync.Mutex
	calls []tusCall
	after func(req *http.Request, resp *http.Response)
}

func newRecorder() *recorder {
	return &recorder{base: http.DefaultTransport.(*http.Transport).Clone()}
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := r.base.RoundTrip(req)
	if strings.HasPrefix(req.URL.Path, UploadsPath) || req.URL.Path == MissingPath {
		c := tusCall{method: req.Method, path: req.URL.Path, offset: req.Header.Get("Upload-Offset"),
			checksum: req.Header.Get("Upload-Checksum"), expect: req.Header.Get("Expect"), length: req.ContentLength, err: err, start: start, end: time.Now()}
		if resp != nil {
			c.status = resp.StatusCode
		}
		r.mu.Lock()
		r.calls = append(r.calls, c)
		after := r.after
		r.mu.Unlock()
		if after != nil && err == nil {
			after(req, resp)
		}
	}
	return resp, err
}

func (r *recorder) methods() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.calls {
		if c.path != MissingPath {
			out = append(out, c.method)
		}
	}
	return out
}

func (r *recorder) client() *http.Client { return &http.Client{Transport: r, Timeout: time.Minute} }

// errLinkDown is what cutTransport answers once it has cut.
var errLinkDown = errors.New("test link: down")

// cutTransport lets budget bytes of PATCH bodies through, cuts the PATCH
// that goes over (the server gets exactly budget bytes of it), and then
// refuses every request: the link is gone until the app restarts.
type cutTransport struct {
	base   http.RoundTripper
	budget atomic.Int64
	down   atomic.Bool
}

type cutBody struct {
	rc io.ReadCloser
	t  *cutTransport
}

func (b *cutBody) Read(p []byte) (int, error) {
	left := b.t.budget.Load()
	if left <= 0 {
		b.t.down.Store(true)
		return 0, errLinkDown
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := b.rc.Read(p)
	b.t.budget.Add(-int64(n))
	return n, err
}

func (b *cutBody) Close() error { return b.rc.Close() }

func (ct *cutTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if ct.down.Load() {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, errLinkDown
	}
	if req.Method == http.MethodPatch && req.Body != nil {
		r2 := *req
		r2.Body = &cutBody{rc: req.Body, t: ct}
		r2.GetBody = nil
		req = &r2
	}
	return ct.base.RoundTrip(req)
}

func TestEvidence_UploadsAfterPush(t *testing.T) {
	s := startEvidence(t, servertest.Options{})
	rec := newRecorder()
	c := s.worker(t, "w1", s.env.URL, &Options{Backoff: fastBackoff, HTTPClient: rec.client(), ChunkChecksums: true}, "G11")
	hh := importHouseholds(t, s.env, "G11")[0]
	mustSync(t, c)

	before := prepare(t, c, noisyPhoto(1, 2000, 1500), "before", "image/jpeg")
	after := prepare(t, c, noisyPhoto(2, 1200, 900), "after", "image/jpeg")
	cert := prepare(t, c, certificatePDF(3, 700_000), "certificate", "application/pdf")
	id, err := c.RecordVisit(retrofitVisit(hh, before, after, cert))
	if err != nil {
		t.Fatal(err)
	}
	rep := mustSync(t, c)
	total := before.Size + after.Size + cert.Size
	if rep.Pushed != 1 || rep.BlobsUploaded != 3 || rep.BlobsPresent != 0 || rep.BlobsFailed != 0 || rep.BlobBytesSent != total {
		t.Errorf("report: pushed %d, uploaded %d, present %d, failed %d, blob bytes %d of %d; errors %v",
			rep.Pushed, rep.BlobsUploaded, rep.BlobsPresent, rep.BlobsFailed, rep.BlobBytesSent, total, rep.Errors)
	}
	if rep.BytesSent < total {
		t.Errorf("BytesSent %d leaves out the %d evidence bytes", rep.BytesSent, total)
	}
	for _, ref := range []syncproto.EvidenceRef{before, after, cert} {
		s.verified(t, c, ref)
	}
	// Every PATCH carried its chunk's checksum; big ones waited for 100
	// Continue; chunks were at most 256 KiB.
	patches := 0
	for _, call := range rec.calls {
		if call.method != http.MethodPatch {
			continue
		}
		patches++
		if !strings.HasPrefix(call.checksum, "sha256 ") || call.status != http.StatusNoContent {
			t.Errorf("PATCH %+v", call)
		}
	}
	chunks := 0
	for _, ref := range []syncproto.EvidenceRef{before, after, cert} {
		chunks += int((ref.Size + 256<<10 - 1) / (256 << 10))
	}
	if patches != chunks {
		t.Errorf("%d PATCHes, want %d chunks of 256 KiB", patches, chunks)
	}
	if got := strings.Join(rec.methods()[:1], " "); got != "POST" {
		t.Errorf("first upload request %s, want POST (creation)", got)
	}
	p, _ := c.Pending()
	if p.Uploads != 0 || p.Mutations != 0 {
		t.Errorf("pending after sync: %+v", p)
	}
	for _, u := range uploadStates(t, c) {
		if u.State != UploadDone || u.Offset != u.Size {
			t.Errorf("upload %+v", u)
		}
	}
	// The visit is complete: no gaps.
	if g := s.gaps(t, "V1"); len(g.Visits) != 0 {
		t.Errorf("gaps = %+v", g)
	}
	st, b := s.get(t, "/api/v1/visits/"+id+"/evidence")
	if st != http.StatusOK || !bytes.Contains(b, []byte(before.SHA256)) {
		t.Errorf("visit evidence: %d %s", st, b)
	}
	// Nothing left: the next sync sends no evidence request at all.
	n := len(rec.calls)
	if rep := mustSync(t, c); rep.BlobBytesSent != 0 || len(rec.calls) != n {
		t.Errorf("idle sync sent %d evidence bytes, %d requests", rep.BlobBytesSent, len(rec.calls)-n)
	}
}

func TestEvidence_RecordsOnlyPolicy(t *testing.T) {
	s := startEvidence(t, servertest.Options{})
	c := s.worker(t, "w1", s.env.URL, nil, "G11")
	hh := importHouseholds(t, s.env, "G11")[0]
	mustSync(t, c)
	if err := c.SetUploadPolicy(UploadRecordsOnly); err != nil {
		t.Fatal(err)
	}
	before := prepare(t, c, noisyPhoto(1, 1000, 750), "before", "image/jpeg")
	id, err := c.RecordVisit(retrofitVisit(hh, before))
	if err != nil {
		t.Fatal(err)
	}
	rep := mustSync(t, c)
	if rep.Pushed != 1 || rep.BlobBytesSent != 0 || rep.BlobsUploaded != 0 {
		t.Errorf("records-only sync: %+v", rep)
	}
	// The record is on the server and back on the device, acknowledged;
	// the photo waits, and the server hears about it in the health report.
	if vs, _ := c.Visits(hh); len(vs) != 1 || vs[0].ID != id || vs[0].ServerTime.IsZero() {
		t.Errorf("visit after sync: %+v", vs)
	}
	if s.present(t, before.SHA256) {
		t.Error("the photo was uploaded under records_only")
	}
	p, _ := c.Pending()
	if p.Mutations != 0 || p.Uploads != 1 || p.UploadBytes != before.Size {
		t.Errorf("pending = %+v", p)
	}
	info, _ := c.Info()
	var pendingBlobs int
	if err := s.env.Store.DB().QueryRow(`SELECT json_extract(health, '$.pending_blobs') FROM device_sync WHERE device_id = ?`, info.DeviceID).Scan(&pendingBlobs); err != nil {
		t.Fatal(err)
	} else if pendingBlobs != 1 {
		t.Errorf("server saw pending_blobs %d", pendingBlobs)
	}
	// A better link: the app allows uploads again.
	if err := c.SetUploadPolicy(UploadAll); err != nil {
		t.Fatal(err)
	}
	rep = mustSync(t, c)
	if rep.BlobsUploaded != 1 || rep.BlobBytesSent != before.Size {
		t.Errorf("sync after the policy change: %+v", rep)
	}
	s.verified(t, c, before)
	if p, _ := c.Pending(); p.Uploads != 0 {
		t.Errorf("pending = %+v", p)
	}
	// UploadEvidence sends photos whatever the policy.
	c.SetUploadPolicy(UploadRecordsOnly)
	after := prepare(t, c, noisyPhoto(2, 800, 600), "after", "image/jpeg")
	if _, err := c.AttachEvidence(id, writeFile(t, "a.jpg", noisyPhoto(2, 800, 600)), "after", ""); err != nil {
		t.Fatal(err)
	}
	mustSync(t, c)
	if s.present(t, after.SHA256) {
		t.Error("uploaded under records_only")
	}
	if rep, err := c.UploadEvidence(context.Background()); err != nil || rep.BlobsUploaded != 1 {
		t.Errorf("UploadEvidence: %+v %v", rep, err)
	}
	s.verified(t, c, after)
}

func TestEvidence_SamePhotoUploadsOnce(t *testing.T) {
	s := startEvidence(t, servertest.Options{})
	a := s.worker(t, "wa", s.env.URL, nil, "G11")
	b := s.worker(t, "wb", s.env.URL, nil, "G11")
	hhs := importHouseholds(t, s.env, "G11", "G11", "G11")
	mustSync(t, a)
	mustSync(t, b)
	photo := noisyPhoto(7, 1400, 1000)

	// One device, two visits, one photo: one upload.
	r1 := prepare(t, a, photo, "before", "image/jpeg")
	r2 := prepare(t, a, photo, "after", "image/jpeg")
	if r1.SHA256 != r2.SHA256 {
		t.Fatal("the same photo prepared twice hashes differently")
	}
	if _, err := a.RecordVisit(retrofitVisit(hhs[0], r1)); err != nil {
		t.Fatal(err)
	}
	v2, err := a.RecordVisit(retrofitVisit(hhs[1], r2))
	if err != nil {
		t.Fatal(err)
	}
	rep := mustSync(t, a)
	if rep.BlobsUploaded != 1 || rep.BlobBytesSent != r1.Size {
		t.Errorf("first sync: uploaded %d, %d bytes for a %d-byte photo", rep.BlobsUploaded, rep.BlobBytesSent, r1.Size)
	}
	// Attached once more later: the missing check says the server has it.
	if _, err := a.AttachEvidence(v2, writeFile(t, "p.jpg", photo), "rework", "image/jpeg"); err != nil {
		t.Fatal(err)
	}
	rep = mustSync(t, a)
	if rep.BlobsPresent != 1 || rep.BlobsUploaded != 0 || rep.BlobBytesSent != 0 {
		t.Errorf("re-attached: %+v", rep)
	}
	// Another device with the same photo sends nothing either.
	r3 := prepare(t, b, photo, "before", "image/jpeg")
	if _, err := b.RecordVisit(retrofitVisit(hhs[2], r3)); err != nil {
		t.Fatal(err)
	}
	rep = mustSync(t, b)
	if rep.BlobsPresent != 1 || rep.BlobsUploaded != 0 || rep.BlobBytesSent != 0 {
		t.Errorf("other device: %+v", rep)
	}
	if p, _ := b.Pending(); p.Uploads != 0 {
		t.Errorf("pending: %+v", p)
	}
	s.verified(t, a, r1)
}

func TestEvidence_CorruptLocalFileIsReported(t *testing.T) {
	s := startEvidence(t, servertest.Options{})
	rec := newRecorder()
	c := s.worker(t, "w1", s.env.URL, &Options{Backoff: fastBackoff, HTTPClient: rec.client()}, "G11")
	hh := importHouseholds(t, s.env, "G11")[0]
	mustSync(t, c)
	good := prepare(t, c, noisyPhoto(1, 900, 600), "before", "image/jpeg")
	bad := prepare(t, c, noisyPhoto(2, 900, 600), "after", "image/jpeg")
	if _, err := c.RecordVisit(retrofitVisit(hh, bad, good)); err != nil {
		t.Fatal(err)
	}
	// Storage damages the queued copy.
	p, _ := c.EvidenceFile(bad.SHA256)
	data, _ := os.ReadFile(p)
	data[len(data)/2] ^= 0xff
	os.WriteFile(p, data, 0o600)

	rep := mustSync(t, c)
	if rep.BlobsFailed != 1 || rep.BlobsUploaded != 1 || !strings.Contains(strings.Join(rep.Errors, "\n"), bad.SHA256) {
		t.Errorf("report: %+v", rep)
	}
	if rep.BlobBytesSent != good.Size {
		t.Errorf("%d evidence bytes sent; only the sound file (%d) should go", rep.BlobBytesSent, good.Size)
	}
	u := uploadStates(t, c)[bad.SHA256]
	if u.State != UploadFailed || !strings.Contains(u.Error, ErrCorrupt.Error()) {
		t.Errorf("upload of the damaged file: %+v", u)
	}
	if s.present(t, bad.SHA256) {
		t.Error("the damaged file reached the server")
	}
	s.verified(t, c, good)
	pi, _ := c.Pending()
	if pi.Uploads != 1 || pi.FailedUploads != 1 {
		t.Errorf("pending: %+v", pi)
	}
	// Not retried forever: the next sync leaves it alone.
	n := len(rec.calls)
	rep = mustSync(t, c)
	if rep.BlobsFailed != 0 || len(rec.calls) != n {
		t.Errorf("next sync: %+v, %d evidence requests", rep, len(rec.calls)-n)
	}
	// Preparing the photo again from the app's original repairs the copy
	// and queues it once more.
	g := prepare(t, c, noisyPhoto(2, 900, 600), "after", "image/jpeg")
	vs, _ := c.Visits(hh)
	if _, err := c.AttachEvidence(vs[0].ID, writeFile(t, "again.jpg", noisyPhoto(2, 900, 600)), "rework", ""); err != nil {
		t.Fatal(err)
	}
	if rep := mustSync(t, c); rep.BlobsUploaded != 1 {
		t.Errorf("after repair: %+v", rep)
	}
	s.verified(t, c, g)
}

func TestEvidence_ServerHashMismatchFailsTheUpload(t *testing.T) {
	s := startEvidence(t, servertest.Options{})
	rec := newRecorder()
	c := s.worker(t, "w1", s.env.URL, &Options{Backoff: fastBackoff, HTTPClient: rec.client(), ChunkSize: 64 << 10}, "G11")
	hh := importHouseholds(t, s.env, "G11")[0]
	mustSync(t, c)
	ref := prepare(t, c, certificatePDF(5, 300_000), "certificate", "application/pdf")
	if _, err := c.RecordVisit(retrofitVisit(hh, ref)); err != nil {
		t.Fatal(err)
	}
	// The file changes under the upload after its first chunk arrived:
	// the server's re-hash at the end finds the mismatch.
	var once sync.Once
	rec.after = func(req *http.Request, resp *http.Response) {
		if req.Method == http.MethodPatch && resp.StatusCode == http.StatusNoContent {
			once.Do(func() {
				p, _ := c.EvidenceFile(ref.SHA256)
				f, _ := os.OpenFile(p, os.O_WRONLY, 0)
				f.WriteAt([]byte("tampered"), 250_000)
				f.Close()
			})
		}
	}
	rep := mustSync(t, c)
	if rep.BlobsFailed != 1 || rep.BlobsUploaded != 0 {
		t.Errorf("report: %+v", rep)
	}
	last := rec.calls[len(rec.calls)-1]
	if last.method != http.MethodPatch || last.status != http.StatusUnprocessableEntity {
		t.Errorf("last evidence request %+v, want the final PATCH answered 422", last)
	}
	if u := uploadStates(t, c)[ref.SHA256]; u.State != UploadFailed || !strings.Contains(u.Error, "hash mismatch") {
		t.Errorf("upload: %+v", u)
	}
	if s.present(t, ref.SHA256) {
		t.Error("mismatched bytes stored")
	}
}

func TestEvidence_ResumesAfterAppRestart(t *testing.T) {
	photo := noisyPhoto(11, 1600, 1200) // at the limit: kept as it is
	for _, chunk := range []int{0, 16 << 10} {
		t.Run(fmt.Sprintf("chunk %d", chunk), func(t *testing.T) { resumeAfterRestart(t, photo, chunk) })
	}
}

// resumeAfterRestart uploads photo over a link that dies 400 000 bytes
// into it, restarts the app and syncs again.
func resumeAfterRestart(t *testing.T, photo []byte, chunk int) {
	s := startEvidence(t, servertest.Options{})
	dir := t.TempDir()
	u := s.env.CreateUser(t, "w1", domain.RoleFieldWorker, "G11")
	hh := importHouseholds(t, s.env, "G11")[0]
	const cutAfter = 400_000

	// First run of the app: the link dies 400 000 bytes into the upload.
	ct := &cutTransport{base: http.DefaultTransport.(*http.Transport).Clone()}
	ct.budget.Store(1 << 40)
	c, err := Open(dir, s.env.URL, &Options{Backoff: fastBackoff, HTTPClient: &http.Client{Transport: ct}, ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Enroll(context.Background(), s.env.EnrollCode(t, u.ID), "tablet"); err != nil {
		t.Fatal(err)
	}
	mustSync(t, c)
	ref := prepare(t, c, photo, "before", "image/jpeg")
	if ref.Size != int64(len(photo)) {
		t.Fatalf("photo at the size limit was re-encoded: %d → %d bytes", len(photo), ref.Size)
	}
	if _, err := c.RecordVisit(retrofitVisit(hh, ref)); err != nil {
		t.Fatal(err)
	}
	ct.budget.Store(cutAfter)
	rep1, err := c.Sync(context.Background())
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("sync over the dying link: %v", err)
	}
	if rep1.Pushed != 1 || rep1.BlobsUploaded != 0 {
		t.Errorf("first run: %+v", rep1)
	}
	us := uploadStates(t, c)[ref.SHA256]
	if us.State != UploadPending || us.Offset <= 0 || us.Offset >= ref.Size {
		t.Fatalf("saved upload after the cut: %+v", us)
	}
	var saved string
	c.db.QueryRow(`SELECT upload_url FROM uploads`).Scan(&saved)
	if !strings.HasPrefix(saved, UploadsPath) {
		t.Errorf("saved upload URL %q", saved)
	}
	c.Close()
	// What the server holds now is a lower bound of what it holds when
	// the app restarts: the cut PATCH's handler may still be recording
	// the bytes that reached the server (a loaded machine).
	var serverHad int64
	if err := s.env.Store.DB().QueryRow(`SELECT "offset" FROM uploads WHERE sha256 = ?`, ref.SHA256).Scan(&serverHad); err != nil {
		t.Fatal(err)
	}

	// The app restarts on a good link.
	rec := newRecorder()
	c2 := openTest(t, dir, "", &Options{Backoff: fastBackoff, HTTPClient: rec.client(), ChunkSize: chunk})
	rep2 := mustSync(t, c2)
	if rep2.BlobsUploaded != 1 || rep2.BlobsFailed != 0 {
		t.Errorf("second run: %+v", rep2)
	}
	// No HEAD: a PATCH at the saved offset waits for 100 Continue (the
	// cut PATCH may have landed more), the server refuses it with the
	// offset it holds, and the upload goes on from there.
	if m := rec.methods(); len(m) < 2 || slices.Contains(m, http.MethodHead) {
		t.Errorf("resumed with %v, want PATCHes only", m)
	} else if first, second := rec.calls[1], rec.calls[2]; first.offset != fmt.Sprint(us.Offset) || first.expect != "100-continue" || first.status != http.StatusConflict ||
		second.expect != "" || second.status != http.StatusNoContent {
		t.Errorf("resumed with %+v then %+v; want a PATCH at %d answered 409, then one at %d or later", first, second, us.Offset, serverHad)
	} else if had, err := strconv.ParseInt(second.offset, 10, 64); err != nil || had < serverHad || had >= ref.Size {
		t.Errorf("resumed at %q; the server had at least %d of %d", second.offset, serverHad, ref.Size)
	} else {
		serverHad = had
	}
	s.verified(t, c2, ref)
	// Only what the server lacked was sent again: without per-chunk
	// checksums the server keeps every byte that reached it before the
	// cut, even past the offset the device last saw confirmed.
	if rep2.BlobBytesSent != ref.Size-serverHad {
		t.Errorf("second run sent %d bytes; the server lacked %d", rep2.BlobBytesSent, ref.Size-serverHad)
	}
	sent := rep1.BlobBytesSent + rep2.BlobBytesSent
	ratio := float64(sent) / float64(ref.Size)
	t.Logf("file %d bytes; cut after %d; server had %d at the restart (device saw %d confirmed); sent %d + %d = %d (ratio %.4f)",
		ref.Size, cutAfter, serverHad, us.Offset, rep1.BlobBytesSent, rep2.BlobBytesSent, sent, ratio)
	if float64(sent) > 1.02*float64(ref.Size) {
		t.Errorf("%d bytes sent for %d; want under 1.02×", sent, ref.Size)
	}
}

func TestEvidence_ExpiredUploadStartsAgain(t *testing.T) {
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	s := startEvidence(t, servertest.Options{API: api.Config{Now: now}})
	ct := &cutTransport{base: http.DefaultTransport.(*http.Transport).Clone()}
	ct.budget.Store(1 << 40)
	o := &Options{Backoff: fastBackoff, HTTPClient: &http.Client{Transport: ct}}
	c := s.worker(t, "w1", s.env.URL, o, "G11")
	hh := importHouseholds(t, s.env, "G11")[0]
	mustSync(t, c)
	ref := prepare(t, c, certificatePDF(9, 600_000), "certificate", "application/pdf")
	if _, err := c.RecordVisit(retrofitVisit(hh, ref)); err != nil {
		t.Fatal(err)
	}
	ct.budget.Store(300 << 10)
	if _, err := c.Sync(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("sync over the dying link: %v", err)
	}
	// The cut PATCH's handler may still be recording the bytes that
	// reached the server; if it did so after the clock moved, it would
	// extend the upload's expiry from the new time. Wait for it.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var off int64
		err := s.env.Store.DB().QueryRow(`SELECT "offset" FROM uploads WHERE sha256 = ?`, ref.SHA256).Scan(&off)
		if err == nil && off > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server never recorded the bytes of the cut PATCH: offset %d, %v", off, err)
		}
	}
	// A day and more later, the server has dropped the partial upload.
	skew.Store(int64(25 * time.Hour))
	ct.down.Store(false)
	ct.budget.Store(1 << 40)
	rep := mustSync(t, c)
	if rep.BlobsUploaded != 1 || !strings.Contains(strings.Join(rep.Errors, "\n"), "starting a new upload") {
		t.Errorf("report: %+v", rep)
	}
	s.verified(t, c, ref)
}

func TestEvidence_RevokedDeviceStops(t *testing.T) {
	s := startEvidence(t, servertest.Options{})
	c := s.worker(t, "w1", s.env.URL, nil, "G11")
	hh := importHouseholds(t, s.env, "G11")[0]
	mustSync(t, c)
	c.SetUploadPolicy(UploadRecordsOnly)
	ref := prepare(t, c, noisyPhoto(1, 600, 400), "before", "image/jpeg")
	if _, err := c.RecordVisit(retrofitVisit(hh, ref)); err != nil {
		t.Fatal(err)
	}
	mustSync(t, c)
	info, _ := c.Info()
	if err := s.env.Store.RevokeDevice(context.Background(), info.DeviceID); err != nil {
		t.Fatal(err)
	}
	c.SetUploadPolicy(UploadAll)
	if _, err := c.Sync(context.Background()); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("sync of a revoked device: %v", err)
	}
	if u := uploadStates(t, c)[ref.SHA256]; u.State != UploadPending {
		t.Errorf("upload after 401: %+v", u)
	}
}

// tusFake is a scripted tus server for faults the real one does not make
// on demand. Each request takes the next answer of its method's script;
// an empty script answers as a correct server would.
type tusFake struct {
	mu      sync.Mutex
	offset  int64
	length  int64
	data    []byte
	script  map[string][]int
	seen    []string
	expects []string // the Expect header of each PATCH
	created bool
	// conflictOffset: a 409 carries details.offset, as fieldsync's does.
	conflictOffset bool
}

// keepThen503 in a PATCH script: the body is kept but the answer is 503
// (bytes landed that no answer confirmed, as on a cut).
const keepThen503 = -1

func (f *tusFake) handle(fs *fakeServer, w http.ResponseWriter, r *http.Request, body []byte) any {
	switch {
	case r.URL.Path == MissingPath:
		var req missingRequest
		json.Unmarshal(body, &req)
		return missingResponse{ProtocolVersion: 1, Missing: req.SHA256}
	case !strings.HasPrefix(r.URL.Path, UploadsPath):
		return okHandler(fs, w, r, body)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, r.Method)
	if r.Method == http.MethodPatch {
		f.expects = append(f.expects, r.Header.Get("Expect"))
	}
	if s := f.script[r.Method]; len(s) > 0 {
		f.script[r.Method] = s[1:]
		if s[0] == keepThen503 {
			f.data = append(f.data, body...)
			f.offset += int64(len(body))
			w.Header().Set("Retry-After", "0")
			return syncproto.Errorf(syncproto.CodeUnavailable, "scripted: %d bytes kept, then 503", len(body))
		}
		if s[0] != 0 {
			w.Header().Set("Retry-After", "0")
			code := map[int]syncproto.Code{503: syncproto.CodeUnavailable, 460: syncproto.CodeChecksumMismatch}[s[0]]
			return syncproto.Errorf(code, "scripted %d", s[0])
		}
	}
	switch r.Method {
	case http.MethodPost:
		f.length, _ = parseInt(r.Header.Get("Upload-Length"))
		f.created = true
		w.Header().Set("Location", "http://elsewhere.invalid"+UploadsPath+"0123456789abcdef0123456789abcdef")
		w.Header().Set("Upload-Offset", "0")
		w.WriteHeader(http.StatusCreated)
	case http.MethodHead:
		w.Header().Set("Upload-Offset", fmt.Sprint(f.offset))
		w.Header().Set("Upload-Length", fmt.Sprint(f.length))
		w.WriteHeader(http.StatusOK)
	case http.MethodPatch:
		off, _ := parseInt(r.Header.Get("Upload-Offset"))
		if off != f.offset {
			e := syncproto.Errorf(syncproto.CodeOffsetMismatch, "at %d", f.offset)
			if f.conflictOffset {
				e = e.With("offset", f.offset)
			}
			return withStatus{http.StatusConflict, e}
		}
		f.data = append(f.data, body...)
		f.offset += int64(len(body))
		w.Header().Set("Upload-Offset", fmt.Sprint(f.offset))
		w.WriteHeader(http.StatusNoContent)
	}
	return nil
}

func parseInt(s string) (int64, error) {
	var n int64
	_, err := fmt.Sscan(s, &n)
	return n, err
}

// syncFileThroughFake records a visit with a 3500-byte certificate on a
// device of the fake tus server and syncs it once, in 1000-byte chunks;
// the server must end up with the file.
func syncFileThroughFake(t *testing.T, tf *tusFake, seed byte) (*Client, SyncReport) {
	t.Helper()
	f := newFake(t, tf.handle)
	c := enrolledWithWork(t, f, &Options{Backoff: fastBackoff, ChunkSize: 1000}, 0)
	data := certificatePDF(seed, 3500)
	ref := prepare(t, c, data, "certificate", "application/pdf")
	hh, _ := c.Households("")
	if _, err := c.RecordVisit(retrofitVisit(hh[0].ID, ref)); err != nil {
		t.Fatal(err)
	}
	rep, err := c.Sync(context.Background())
	if err != nil {
		t.Fatalf("sync: %v (%+v)", err, rep)
	}
	if !bytes.Equal(tf.data, data) || rep.BlobsUploaded != 1 {
		t.Errorf("server got %d of %d bytes; report %+v", len(tf.data), len(data), rep)
	}
	return c, rep
}

func TestUpload_RetriesScriptedFaults(t *testing.T) {
	tf := &tusFake{script: map[string][]int{
		http.MethodPost:  {503, 0},
		http.MethodPatch: {0, 503, 460, 0},
	}}
	c, rep := syncFileThroughFake(t, tf, 1)
	// 503 on creation: again; the first PATCH goes through; 503 and 460:
	// the same chunk again at the saved offset (no HEAD).
	want := "POST POST PATCH PATCH PATCH PATCH PATCH PATCH"
	if got := strings.Join(tf.seen, " "); got != want {
		t.Errorf("requests %s\nwant     %s", got, want)
	}
	if rep.Retries != 3 {
		t.Errorf("%d retries: %v", rep.Retries, rep.Errors)
	}
	// The upload was addressed on the device's server, not the host the
	// Location named.
	var saved string
	c.db.QueryRow(`SELECT upload_url FROM uploads`).Scan(&saved)
	if saved != UploadsPath+"0123456789abcdef0123456789abcdef" {
		t.Errorf("saved %q", saved)
	}
}

// TestUpload_ConflictOffset: a PATCH lands bytes no answer confirms. The
// next PATCH, at the saved offset, waits for 100 Continue; the 409 that
// refuses it carries the server's offset, and the upload goes on from
// there without a HEAD. A 409 without an offset (another tus server)
// falls back to HEAD, and so does a 409 saying every byte is there (the
// HEAD finishes the upload).
func TestUpload_ConflictOffset(t *testing.T) {
	for _, tc := range []struct {
		name           string
		conflictOffset bool
		script         []int
		want           string
		expects        []string // Expect of each PATCH
	}{
		{"409 with the offset", true, []int{0, keepThen503}, "POST PATCH PATCH PATCH PATCH PATCH", []string{"", "", "100-continue", "", ""}},
		{"409 without", false, []int{0, keepThen503}, "POST PATCH PATCH PATCH HEAD PATCH PATCH", []string{"", "", "100-continue", "", ""}},
		{"409 at the end", true, []int{0, 0, 0, keepThen503}, "POST PATCH PATCH PATCH PATCH PATCH HEAD", []string{"", "", "", "", "100-continue"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tf := &tusFake{conflictOffset: tc.conflictOffset, script: map[string][]int{http.MethodPatch: tc.script}}
			syncFileThroughFake(t, tf, 2)
			if got := strings.Join(tf.seen, " "); got != tc.want {
				t.Errorf("requests %s\nwant     %s", got, tc.want)
			}
			// Only the PATCH at an offset the 503 may have made stale
			// waited for 100 Continue.
			if !slices.Equal(tf.expects, tc.expects) {
				t.Errorf("Expect headers %q, want %q", tf.expects, tc.expects)
			}
		})
	}
}

func TestWaitsForContinue_Transports(t *testing.T) {
	for _, tc := range []struct {
		name string
		hc   *http.Client
		want bool
	}{
		{"default transport", &http.Client{}, true},
		{"a clone of it", &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}, true},
		{"no ExpectContinueTimeout", &http.Client{Transport: &http.Transport{}}, false},
		{"another RoundTripper", newRecorder().client(), true},
	} {
		if got := waitsForContinue(tc.hc); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestUpload_ServerWithoutEvidenceEndpoints(t *testing.T) {
	f := newFake(t, okHandler) // answers 404 to everything else
	c := enrolledWithWork(t, f, nil, 0)
	ref := prepare(t, c, certificatePDF(1, 500), "certificate", "application/pdf")
	hh, _ := c.Households("")
	if _, err := c.RecordVisit(retrofitVisit(hh[0].ID, ref)); err != nil {
		t.Fatal(err)
	}
	rep, err := c.Sync(context.Background())
	if err != nil || rep.Pushed != 1 {
		t.Fatalf("sync: %v %+v", err, rep)
	}
	if p, _ := c.Pending(); p.Uploads != 1 || p.FailedUploads != 0 {
		t.Errorf("pending: %+v", p)
	}
}

// TestEvidence_EndToEndOverCuttingLink is issue 4's end-to-end test: two
// devices record retrofit inspections with photos and scans offline, then
// sync over links that cut every 256 KiB sent; every file arrives and is
// verified, and the completeness list names exactly the visit still
// missing its certificate.
func TestEvidence_EndToEndOverCuttingLink(t *testing.T) {
	s := startEvidence(t, servertest.Options{})
	upstream := strings.TrimPrefix(s.env.URL, "http://")
	type dev struct {
		name  string
		place string
		point syncproto.Point
		proxy *linkproxy.Proxy
		c     *Client
		refs  []syncproto.EvidenceRef
		hhs   []string
	}
	devs := []*dev{
		{name: "wa", place: "G11", point: syncproto.Point{Lon: 103.15, Lat: 25.15}},
		{name: "wb", place: "G12", point: syncproto.Point{Lon: 103.25, Lat: 25.15}},
	}
	for _, d := range devs {
		p, err := linkproxy.Start(linkproxy.Config{Upstream: upstream, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		d.proxy = p
		d.c = s.worker(t, d.name, p.URL(), nil, d.place)
		d.hhs = importHouseholds(t, s.env, d.place, d.place)
		mustSync(t, d.c)
	}

	// Offline: each device records two inspections. Device b's second
	// visit has no certificate yet; its first gets a rework photo attached
	// after it was recorded.
	var incomplete string
	seed := uint64(100)
	photo := func(c *Client, slot string) syncproto.EvidenceRef {
		seed++
		return prepare(t, c, noisyPhoto(seed, 2000, 1500), slot, "image/jpeg")
	}
	for i, d := range devs {
		for j, hh := range d.hhs {
			refs := []syncproto.EvidenceRef{photo(d.c, "before"), photo(d.c, "after")}
			missingCert := i == 1 && j == 1
			if !missingCert {
				if j == 0 {
					refs = append(refs, prepare(t, d.c, certificatePDF(byte(i), 600_000+i*1000), "certificate", "application/pdf"))
				} else {
					refs = append(refs, photo(d.c, "certificate")) // a photographed certificate
				}
			}
			v := retrofitVisit(hh, refs...)
			v.Point = &d.point
			id, err := d.c.RecordVisit(v)
			if err != nil {
				t.Fatal(err)
			}
			if missingCert {
				incomplete = id
			}
			if i == 1 && j == 0 {
				seed++
				r, err := d.c.AttachEvidence(id, writeFile(t, "rework.jpg", noisyPhoto(seed, 2000, 1500)), "rework", "image/jpeg")
				if err != nil {
					t.Fatal(err)
				}
				refs = append(refs, r)
			}
			d.refs = append(d.refs, refs...)
		}
	}

	// A link appears: one that cuts every 256 KiB sent.
	var fileBytes int64
	for _, d := range devs {
		for _, r := range d.refs {
			fileBytes += r.Size
		}
		if err := d.proxy.SetLink(linkproxy.Link{CutEveryUpBytes: 256 << 10}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	reps := make([]SyncReport, len(devs))
	errs := make([]error, len(devs))
	var wg sync.WaitGroup
	for i, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reps[i], errs[i] = d.c.Sync(context.Background())
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	var blobSent, wireUp, cuts int64
	for i, d := range devs {
		rep := reps[i]
		if errs[i] != nil {
			t.Fatalf("%s: sync: %v (%+v)", d.name, errs[i], rep)
		}
		if rep.BlobsUploaded != len(d.refs) || rep.BlobsFailed != 0 {
			t.Errorf("%s: uploaded %d of %d, failed %d; errors %v", d.name, rep.BlobsUploaded, len(d.refs), rep.BlobsFailed, rep.Errors)
		}
		if p, _ := d.c.Pending(); p.Uploads != 0 || p.Mutations != 0 {
			t.Errorf("%s: pending %+v", d.name, p)
		}
		for _, r := range d.refs {
			s.verified(t, d.c, r)
		}
		st := d.proxy.Stats()
		blobSent += rep.BlobBytesSent
		wireUp += st.BytesUp
		cuts += st.Cuts
		t.Logf("%s: %d files, %d evidence bytes sent, %d retries, %d cuts", d.name, len(d.refs), rep.BlobBytesSent, rep.Retries, st.Cuts)
	}
	if min := fileBytes / (256 << 10); cuts < min {
		t.Errorf("only %d cuts for %d bytes", cuts, fileBytes)
	}
	ratio := float64(blobSent) / float64(fileBytes)
	t.Logf("%d files, %d bytes, over links cut every 256 KiB: %d cuts; evidence bytes handed to the transport %d (re-sent byte ratio %.4f); all bytes that crossed the links up %d (%.4f of the files, headers and records included); %v",
		len(devs[0].refs)+len(devs[1].refs), fileBytes, cuts, blobSent, ratio, wireUp, float64(wireUp)/float64(fileBytes), elapsed.Round(time.Millisecond))
	// Each sync's first cut costs the checksummed chunk it hit (the server
	// drops a chunk that does not arrive whole); after that a device sends
	// 64 KiB chunks without checksums, and a cut costs only the part of
	// a chunk that had not crossed the link: on the link, next to nothing;
	// on the device's count, what was still queued in its socket.
	firstCuts := float64(len(devs) * (256 << 10))
	if limit := 1.02*float64(fileBytes) + firstCuts + float64(cuts*(64<<10)); float64(blobSent) > limit {
		t.Errorf("%d evidence bytes handed to the transport for %d; want at most %.0f", blobSent, fileBytes, limit)
	}
	if limit := 1.02*float64(fileBytes) + firstCuts + 128<<10; float64(wireUp) > limit {
		t.Errorf("%d bytes crossed the links for %d; want at most %.0f", wireUp, fileBytes, limit)
	}

	s.noUploadsLeft(t)

	// The completeness list: exactly the visit without its certificate.
	g := s.gaps(t, "V1")
	if len(g.Visits) != 1 || g.Visits[0].VisitID != incomplete {
		t.Fatalf("gaps: %+v", g)
	}
	var missing []string
	for _, m := range g.Visits[0].Missing {
		missing = append(missing, m.Slot)
	}
	if strings.Join(missing, ",") != "certificate" || len(g.Households) != 1 || g.Households[0].HouseholdID != devs[1].hhs[1] {
		t.Errorf("gap: missing %v; households %+v", missing, g.Households)
	}
}

// TestEvidence_UploadsOverLinkCutEveryTwoSeconds: a 2G link of 50 kbps
// and 800 ms RTT whose connections are cut every 2 s. A new connection
// costs a round trip before its first byte and each answer another, so a
// resume that spends a HEAD before every PATCH never lands a byte before
// the next cut. The device goes straight to PATCH at the offset it saved;
// when a cut PATCH may have landed more than its last answer said, it
// learns the server's offset from the 409 of a PATCH that waited for 100
// Continue (or, with a transport that does not wait, from a HEAD), so
// that every other window moves the upload on. The link is scaled 4× in
// time (200 ms RTT, a cut every 500 ms) and 4× in bandwidth, keeping the
// bytes that fit between two cuts and the ratio of round trip to cut
// interval; the device's backoff is scaled the same way.
func TestEvidence_UploadsOverLinkCutEveryTwoSeconds(t *testing.T) {
	for _, tc := range []struct {
		name string
		base http.RoundTripper
	}{
		// http.DefaultTransport waits up to 1 s for 100 Continue.
		{"transport waits for 100 Continue", http.DefaultTransport.(*http.Transport).Clone()},
		// One without ExpectContinueTimeout sends the body at once.
		{"transport sends bodies at once", &http.Transport{}},
	} {
		t.Run(tc.name, func(t *testing.T) { uploadOverShortLivedLink(t, tc.base) })
	}
}

func uploadOverShortLivedLink(t *testing.T, base http.RoundTripper) {
	const (
		scale    = 4
		maxSteps = 4
	)
	s := startEvidence(t, servertest.Options{})
	p, err := linkproxy.Start(linkproxy.Config{Upstream: strings.TrimPrefix(s.env.URL, "http://"), Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	rec := &recorder{base: base}
	backoff := Backoff{Base: 500 * time.Millisecond / scale, Max: 30 * time.Second / scale, MaxAttempts: 5}
	c := s.worker(t, "w1", p.URL(), &Options{Backoff: backoff, HTTPClient: rec.client()}, "G11")
	hh := importHouseholds(t, s.env, "G11")[0]
	mustSync(t, c)
	// The visit goes on the good link; the photo waits for the weak one.
	if err := c.SetUploadPolicy(UploadRecordsOnly); err != nil {
		t.Fatal(err)
	}
	ref := prepare(t, c, noisyPhoto(21, 300, 225), "before", "image/jpeg")
	if _, err := c.RecordVisit(retrofitVisit(hh, ref)); err != nil {
		t.Fatal(err)
	}
	if rep := mustSync(t, c); rep.Pushed != 1 || rep.BlobBytesSent != 0 {
		t.Fatalf("push on the good link: %+v", rep)
	}
	if ref.Size < 25_000 || ref.Size > 40_000 {
		t.Fatalf("photo of %d bytes, want about 30 KB", ref.Size)
	}

	link := linkproxy.Link{
		UpBytesPerSec:   linkproxy.Kbps(50 * scale),
		DownBytesPerSec: linkproxy.Kbps(50 * scale),
		Latency:         400 * time.Millisecond / scale,
		CutEvery:        2 * time.Second / scale,
	}
	if err := p.SetLink(link); err != nil {
		t.Fatal(err)
	}
	up0 := p.Stats().BytesUp
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	steps, done := 0, false
	var sent int64
	for steps < maxSteps && !done {
		steps++
		rep, err := c.UploadEvidence(ctx)
		sent += rep.BlobBytesSent
		u := uploadStates(t, c)[ref.SHA256]
		t.Logf("step %d: %v; uploaded %d, %d bytes handed to the socket, %d retries; saved offset %d of %d (%v)",
			steps, err, rep.BlobsUploaded, rep.BlobBytesSent, rep.Retries, u.Offset, u.Size, time.Since(start).Round(time.Millisecond))
		switch {
		case err == nil && rep.BlobsUploaded == 1:
			done = true
		case err != nil && !errors.Is(err, ErrUnavailable):
			t.Fatalf("step %d: %v", steps, err)
		}
	}
	elapsed := time.Since(start)
	if err := p.SetLink(linkproxy.Link{}); err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	rec.mu.Lock()
	for _, call := range rec.calls {
		k := call.method
		if call.path == MissingPath {
			k = "missing"
		}
		if call.expect != "" {
			k += " (100-continue)"
		}
		if call.status != 0 {
			k += fmt.Sprintf(" %d", call.status)
		} else if call.err != nil {
			k += " cut"
		}
		count[k]++
	}
	rec.mu.Unlock()
	st := p.Stats()
	t.Logf("%d-byte photo over %v: %d steps, %v, %d cuts; evidence requests %v; %d evidence bytes handed to the socket, %d bytes crossed the link up",
		ref.Size, link, steps, elapsed.Round(time.Millisecond), st.Cuts, count, sent, st.BytesUp-up0)
	if !done {
		t.Fatalf("the upload did not complete in %d upload steps over a link cut every %v with %v RTT", maxSteps, link.CutEvery, 2*link.Latency)
	}
	if u := uploadStates(t, c)[ref.SHA256]; u.State != UploadDone {
		t.Errorf("upload %+v", u)
	}
	s.verified(t, c, ref)
	s.noUploadsLeft(t)
	code, got := s.get(t, "/api/v1/evidence/"+ref.SHA256)
	if sum := sha256.Sum256(got); code != http.StatusOK || hex.EncodeToString(sum[:]) != ref.SHA256 {
		t.Errorf("download: %d, sha256 %x, want %s", code, sum, ref.SHA256)
	}
}

// TestEvidence_SmallFileGoesWithItsCreation: a photo of at most 64 KiB is
// sent in its creation request (creation-with-upload), a round trip less
// on a slow link; a bigger one is created, then PATCHed.
func TestEvidence_SmallFileGoesWithItsCreation(t *testing.T) {
	s := startEvidence(t, servertest.Options{})
	rec := newRecorder()
	c := s.worker(t, "w1", s.env.URL, &Options{Backoff: fastBackoff, HTTPClient: rec.client()}, "G11")
	hh := importHouseholds(t, s.env, "G11")[0]
	mustSync(t, c)
	small := prepare(t, c, noisyPhoto(21, 300, 225), "before", "image/jpeg")
	big := prepare(t, c, noisyPhoto(22, 900, 600), "after", "image/jpeg")
	if small.Size > maxDataOnCreation || big.Size <= maxDataOnCreation {
		t.Fatalf("photos of %d and %d bytes; want one under %d and one over", small.Size, big.Size, maxDataOnCreation)
	}
	if _, err := c.RecordVisit(retrofitVisit(hh, small, big)); err != nil {
		t.Fatal(err)
	}
	rep := mustSync(t, c)
	if rep.BlobsUploaded != 2 {
		t.Fatalf("sync: %+v", rep)
	}
	var posts []int64
	patched := map[string]bool{}
	for _, call := range rec.calls {
		switch call.method {
		case http.MethodPost:
			if call.path != MissingPath {
				posts = append(posts, call.length)
			}
		case http.MethodPatch:
			patched[call.path] = true
		}
	}
	slices.Sort(posts)
	if len(posts) != 2 || posts[0] != 0 || posts[1] != small.Size || len(patched) != 1 {
		t.Errorf("creations with %v body bytes and PATCHes to %d uploads; want one creation carrying the %d-byte photo, one empty, and PATCHes to one upload",
			posts, len(patched), small.Size)
	}
	s.verified(t, c, small)
	s.verified(t, c, big)
}
