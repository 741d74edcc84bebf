package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"

	"fieldsync/mobileclient"
	"fieldsync/mobileclient/linkproxy"
	"fieldsync/syncproto"
)

// --- p4: uploads; p5: bytes resent on a link that cuts ---

// p4Rounds is how many rounds each upload endpoint gets; the median
// counts (a 50 MB round is short enough for noise to matter).
const p4Rounds = 3

// p5Photos bounds the photos of the cut-link runs.
const p5Photos = 40

// p4 measures, with the same tus client, the same photos and the same
// concurrency: tusd (filestore), our endpoint with the local blob store
// and our endpoint with the S3 store; then p5, the device library's
// uploads through a link that cuts every 256 KiB. A part that fails
// leaves its figure at -1 and the others still run.
func (b *bench) p4(ctx context.Context) error {
	var errs []error
	fail := func(what string, err error, keys ...string) {
		for _, k := range keys {
			b.note(k, "not measured: "+firstLine(err.Error()))
		}
		b.logf("%s FAILED: %v", what, err)
		errs = append(errs, fmt.Errorf("%s: %w", what, err))
	}
	sets := make([][]Photo, p4Rounds)
	for r := range sets {
		set, err := b.uploadPhotos(ctx, r)
		if err != nil {
			return err
		}
		sets[r] = set
	}
	b.logf("%d rounds of %d photos of %d B (EXIF GPS and time), %d concurrent uploads, one tus client for every endpoint",
		len(sets), b.o.P4Photos, b.o.P4Bytes, b.o.P4Uploaders)
	how := fmt.Sprintf("%d photos × %d B, %d uploaders, fieldsim's tus client (tus.go), median of %d rounds of other photos, MB = 10^6 B",
		b.o.P4Photos, b.o.P4Bytes, b.o.P4Uploaders, len(sets))

	if b.o.P4S3Only {
		if err := b.p4S3(ctx, sets, how); err != nil {
			fail("our endpoint, S3 store", err, "p4_upload_mb_s_s3")
		}
		return errors.Join(errs...)
	}
	if err := b.p4Local(ctx, sets, how, fail); err != nil {
		fail("our endpoint, local store", err, "p4_upload_mb_s_local")
	}
	if err := b.p4S3(ctx, sets, how); err != nil {
		fail("our endpoint, S3 store", err, "p4_upload_mb_s_s3")
	}
	if err := b.p5(ctx); err != nil {
		fail("p5", err, "p5_resent_ratio")
	}
	return errors.Join(errs...)
}

// uploadPhotos returns round r's photos (made once per bench run and
// shared by p4 and p7): b.o.P4Photos photos of b.o.P4Bytes, other pixels
// in every round, since our endpoint stores a blob once and would answer
// a second upload of the same bytes at once.
func (b *bench) uploadPhotos(ctx context.Context, r int) ([]Photo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.photoSets == nil {
		b.photoSets = map[int][]Photo{}
	}
	if set, ok := b.photoSets[r]; ok {
		return set, nil
	}
	set, err := makePhotos(ctx, b.o.P4Photos, b.o.P4Bytes, b.o.Seed+uint64(r)*1_000_003)
	if err != nil {
		return nil, err
	}
	b.photoSets[r] = set
	return set, nil
}

// p4Local measures tusd's filestore and our endpoint with the local blob
// store round by round in turn (set r to tusd, then set r to ours), each
// round from a clean page cache (settleDisk) and with our analysis of the
// previous round finished, so that a slow spell of this shared machine
// falls on both and neither pays for the other's work. Measured one
// endpoint after the other, single runs put the ratio anywhere between
// 0.3 and 1.8 on one tree. A tusd that fails leaves its figure unmeasured
// (fail) and our rounds still run.
func (b *bench) p4Local(ctx context.Context, sets [][]Photo, how string, fail func(string, error, ...string)) error {
	var tusd *process
	bin, err := ensureTusd(ctx, b.o.CacheDir, b.logf)
	if err == nil {
		tusd, err = startTusd(ctx, bin, filepath.Join(b.path("p4"), "tusd"), nil)
	}
	if err != nil {
		fail("tusd", err, "p4_upload_mb_s_tusd")
	} else {
		defer tusd.stop()
	}
	if b.o.Instances > 1 {
		return errors.New("the local blob store is each instance's own folder: several instances need the S3 store")
	}
	srv, err := b.startLocal(ctx, localOptions{Dir: filepath.Join(b.path("p4"), "local", "server"), Profile: b.serverProfile("p4")})
	if err != nil {
		return err
	}
	defer srv.Close()
	ep, err := newOurEndpoint(ctx, srv, b.o.Seed, 241, sets...)
	if err != nil {
		return err
	}
	defer ep.close()
	var theirs, ours rounds
	var analysed []time.Duration
	stop := b.profile("p4", srv)
	defer func() { stop() }()
	for r, set := range sets {
		if tusd != nil {
			if err := theirs.run(tusd.cmd.Process.Pid, func() (float64, time.Duration, error) { return b.tusRound(ctx, tusd.url, set) }); err != nil {
				fail("tusd", err, "p4_upload_mb_s_tusd")
				tusd.stop()
				tusd = nil
			}
		}
		if err := ours.run(srv.pid, func() (float64, time.Duration, error) { return ep.upload(ctx, set, b.o.P4Uploaders) }); err != nil {
			return err
		}
		// The server answers an upload before it analyses the photo
		// (EXIF, perceptual hash) and runs the checks: how long that
		// takes after the round's last answer. It is done before tusd's
		// next round starts.
		t0 := time.Now()
		if err := ep.waitAnalysed(ctx, r+1, 5*time.Minute); err != nil {
			return err
		}
		analysed = append(analysed, time.Since(t0))
	}
	stop()
	stop = func() {}
	b.info("p4 ours (local): the server finished analysing and checking each round's %d photos %v after the round's last upload was answered",
		len(sets[0]), roundAll(analysed))
	b.info("p4 server CPU (user + system) per photo in each round, ms: ours %s; tusd %s", ours.cpuPer(len(sets[0])), theirs.cpuPer(len(sets[0])))
	if tusd != nil {
		b.rep.P4UploadMBsTusd = round(median(theirs.rates))
		b.note("p4_upload_mb_s_tusd", how+", rounds taken in turn with ours, each from a clean page cache")
		b.logf("tusd %s on %s: rounds took %v (%s MB/s)", tusdVersion, tusd.url, roundAll(theirs.took), fmtRates(theirs.rates))
		if err := b.p5Peer(ctx, tusd, sets[0]); err != nil {
			fail("tusd through cuts", err)
		}
	}
	b.rep.P4UploadMBsLocal = round(median(ours.rates))
	b.note("p4_upload_mb_s_local", srv.describe()+", local blob store (the data folder); "+how+", rounds taken in turn with tusd's, each from a clean page cache; every photo then downloaded and re-hashed")
	b.logf("ours (local blob store (the data folder)): rounds took %v (%s MB/s)", roundAll(ours.took), fmtRates(ours.rates))
	n, bytes, err := ep.verify(ctx, sets...)
	if err != nil {
		return err
	}
	b.logf("ours (local): all %d photos (%d B) download whole and hash to their sha256", n, bytes)
	return nil
}

// p5Peer gives p5's peer figures: tusd with fieldsim's tus client through
// a link that cuts every 256 KiB of upstream bytes.
func (b *bench) p5Peer(ctx context.Context, tusd *process, set []Photo) error {
	px, err := linkproxy.Start(linkproxy.Config{Upstream: strings.TrimPrefix(tusd.url, "http://"), Link: linkproxy.Link{CutEveryUpBytes: 256 << 10}})
	if err != nil {
		return err
	}
	defer px.Close()
	cut := newTusClient(px.URL()+"/files/", 1)
	some := set[:min(len(set), p5Photos)]
	for _, p := range some {
		if err := cut.upload(ctx, p.Data, map[string]string{"filename": "p.jpg"}); err != nil {
			return fmt.Errorf("tusd through cuts: %w", err)
		}
	}
	st, fb := px.Stats(), photoBytes(some)
	b.info("p5 peer: tusd with fieldsim's tus client, a cut every 256 KiB, %d photos, %d cuts: bytes the proxy delivered to the server ÷ file bytes = %.4f; body bytes the client handed to its socket ÷ file bytes = %.3f",
		len(some), st.Cuts, float64(st.BytesUp)/float64(fb), float64(cut.sent.Load())/float64(fb))
	return nil
}

// settleDisk writes every dirty page of the machine to disk (sync(2))
// before a timed round, so that no round pays for another's writeback:
// tusd's filestore never fsyncs, and the 50 MB its round leaves in the
// page cache were written back while our next round waited on its own
// fsyncs (ext4 commits a file's fsync with the journal's other dirty
// data). Each round, of every endpoint, starts from a clean page cache.
func settleDisk() { syscall.Sync() }

// rounds collects one endpoint's timed rounds: MB/s, time and, when the
// server's process is known, the CPU time it used.
type rounds struct {
	rates     []float64
	took, cpu []time.Duration
}

// run times one round from a clean page cache (settleDisk); pid, if
// positive, is the server process whose CPU time the round is charged.
func (f *rounds) run(pid int, round func() (float64, time.Duration, error)) error {
	settleDisk()
	var c0 time.Duration
	cerr := errors.New("no process")
	if pid > 0 {
		c0, cerr = procCPU(pid)
	}
	mbps, t, err := round()
	if err != nil {
		return err
	}
	f.rates, f.took = append(f.rates, mbps), append(f.took, t)
	if cerr == nil {
		if c1, err := procCPU(pid); err == nil {
			f.cpu = append(f.cpu, c1-c0)
		}
	}
	return nil
}

// cpuPer lists each round's CPU time per photo, in ms.
func (f *rounds) cpuPer(photos int) string {
	var out []string
	for _, c := range f.cpu {
		out = append(out, fmt.Sprintf("%.2f", float64(c.Microseconds())/1e3/float64(photos)))
	}
	return strings.Join(out, ", ")
}

// tusRound uploads set to tusd at base with a fresh tus client
// (b.o.P4Uploaders at once) and returns the round's MB/s and time.
func (b *bench) tusRound(ctx context.Context, base string, set []Photo) (float64, time.Duration, error) {
	tc := newTusClient(base+"/files/", b.o.P4Uploaders)
	mbps, t, err := uploadAll(ctx, tc, set, b.o.P4Uploaders)
	if err != nil {
		return 0, 0, err
	}
	if sent, want := tc.sent.Load(), photoBytes(set); sent != want {
		return 0, 0, fmt.Errorf("%d body bytes sent for %d bytes of photos on a direct link", sent, want)
	}
	return mbps, t, nil
}

// --- tusds3: tusd's s3store on the S3 server p4's S3 figure uses ---

// tusdS3 measures tusd with its s3store against the run's S3 server (the
// one p4_upload_mb_s_s3 uses; a bucket of its own), with p4's client,
// photos, concurrency and rounds; then checks every photo is an object in
// the bucket.
func (b *bench) tusdS3(ctx context.Context) error {
	sets := make([][]Photo, p4Rounds)
	for r := range sets {
		set, err := b.uploadPhotos(ctx, r)
		if err != nil {
			return err
		}
		sets[r] = set
	}
	bin, err := ensureTusd(ctx, b.o.CacheDir, b.logf)
	if err != nil {
		return err
	}
	st, err := b.startS3(ctx)
	if err != nil {
		return err
	}
	defer st.stop()
	cl, err := s3Client(st.cfg)
	if err != nil {
		return err
	}
	if err := cl.MakeBucket(ctx, st.cfg.Bucket, minio.MakeBucketOptions{}); err != nil {
		return fmt.Errorf("make bucket %s: %w", st.cfg.Bucket, err)
	}
	proc, err := startTusd(ctx, bin, filepath.Join(b.path("tusds3"), "tusd"), &st.cfg)
	if err != nil {
		return err
	}
	defer proc.stop()
	var theirs rounds
	for _, set := range sets {
		if err := theirs.run(0, func() (float64, time.Duration, error) { return b.tusRound(ctx, proc.url, set) }); err != nil {
			return err
		}
	}
	rates, took := theirs.rates, theirs.took
	// Every upload finished is an object (besides its .info) in the bucket.
	objects := 0
	for obj := range cl.ListObjects(ctx, st.cfg.Bucket, minio.ListObjectsOptions{Prefix: "tusd/", Recursive: true}) {
		if obj.Err != nil {
			return fmt.Errorf("list bucket %s: %w", st.cfg.Bucket, obj.Err)
		}
		if !strings.HasSuffix(obj.Key, ".info") {
			objects++
		}
	}
	if want := len(slices.Concat(sets...)); objects != want {
		return fmt.Errorf("tusd s3store: %d objects in the bucket after %d uploads", objects, want)
	}
	b.rep.P4UploadMBsTusdS3 = round(median(rates))
	b.note("p4_upload_mb_s_tusd_s3", fmt.Sprintf("tusd %s -s3-bucket (a bucket of its own) on %s; %d photos × %d B, %d uploaders, fieldsim's tus client, median of %d rounds of p4's photos, MB = 10^6 B",
		tusdVersion, st.desc, b.o.P4Photos, b.o.P4Bytes, b.o.P4Uploaders, len(sets)))
	b.logf("tusd %s s3store on %s: rounds took %v (%s MB/s); %d objects in the bucket", tusdVersion, proc.url, roundAll(took), fmtRates(rates), objects)
	return nil
}

// p4S3 measures our endpoint (/api/v1/uploads/) of a fieldsync subprocess
// with an S3 store, with the tus client and photos tusd got; then it
// downloads every photo back and checks its hash.
func (b *bench) p4S3(ctx context.Context, sets [][]Photo, how string) error {
	s3, err := b.startS3(ctx)
	if err != nil {
		return err
	}
	defer s3.stop()
	srv, err := b.startLocal(ctx, localOptions{Dir: filepath.Join(b.path("p4"), "s3", "server"), S3: s3.cfg})
	if err != nil {
		return err
	}
	defer srv.Close()
	ep, err := newOurEndpoint(ctx, srv, b.o.Seed, 241, sets...)
	if err != nil {
		return err
	}
	defer ep.close()
	var ours rounds
	for _, set := range sets {
		if err := ours.run(0, func() (float64, time.Duration, error) { return ep.upload(ctx, set, b.o.P4Uploaders) }); err != nil {
			return err
		}
	}
	// The server answers an upload before it analyses the photo (EXIF,
	// perceptual hash) and runs the checks: how long that takes after the
	// last answer.
	t0 := time.Now()
	if err := ep.waitAnalysed(ctx, len(sets), 5*time.Minute); err != nil {
		return err
	}
	b.info("p4 ours (s3): the server finished analysing and checking the %d photos %.2f s after the last upload was answered",
		len(slices.Concat(sets...)), time.Since(t0).Seconds())
	b.rep.P4UploadMBsS3 = round(median(ours.rates))
	desc := "S3 store: " + s3.desc
	b.note("p4_upload_mb_s_s3", srv.describe()+", "+desc+"; "+how+"; every photo then downloaded and re-hashed")
	b.logf("ours (%s): rounds took %v (%s MB/s)", desc, roundAll(ours.took), fmtRates(ours.rates))
	n, bytes, err := ep.verify(ctx, sets...)
	if err != nil {
		return err
	}
	b.logf("ours (s3): all %d photos (%d B) download whole and hash to their sha256", n, bytes)
	return nil
}

// p5: the device library (PrepareEvidence, RecordVisit, Push, then the
// upload step Sync runs) sends p5Photos photos through a link proxy that
// cuts the connection after every 256 KiB of upstream bytes. The figure is
// the bytes the proxy delivered upward to the server (everything: request
// lines, headers, the missing-blob check, creations, HEADs, PATCH bodies)
// ÷ the photos' file bytes. For comparison, fieldsim's tus client does the
// same against our endpoint (and against tusd in p4Tusd).
func (b *bench) p5(ctx context.Context) error {
	srv, err := startLocal(ctx, localOptions{Dir: filepath.Join(b.path("p5"), "server")})
	if err != nil {
		return err
	}
	defer srv.Close()
	e, err := newEnv(ctx, srv, envOptions{tag: "p5", seed: b.o.Seed + 5, dir: filepath.Join(b.devices, "p5", "devices"), link: &linkproxy.Link{},
		backoff: fastBackoff, setupWorkers: 1}, b.logf)
	if err != nil {
		return err
	}
	d, err := e.oneDevice(ctx, b.o.MaxSyncs)
	if err != nil {
		return err
	}
	defer d.close()
	n := min(p5Photos, b.o.P4Photos)
	d.work.setPhotos(b.o.P4Bytes, photoForms, n)
	for i := 0; len(d.photos) < n && i < 40*n; i++ {
		if err := d.record(1, 0); err != nil {
			return err
		}
	}
	if len(d.photos) == 0 {
		return errors.New("the device recorded no photos")
	}
	if _, err := syncUntilDone(ctx, d, b.o.MaxSyncs, true); err != nil {
		return err
	}
	var fileBytes int64
	for _, p := range d.photos {
		fileBytes += p.Size
	}
	before := d.proxy.Stats()
	if err := d.proxy.SetLink(linkproxy.Link{CutEveryUpBytes: 256 << 10}); err != nil {
		return err
	}
	out, err := uploadUntilDone(ctx, d, b.o.MaxSyncs)
	if err != nil {
		return err
	}
	after := d.proxy.Stats()
	up := after.BytesUp - before.BytesUp
	b.rep.P5ResentRatio = math.Round(float64(up)/float64(fileBytes)*1e4) / 1e4
	b.note("p5_resent_ratio", fmt.Sprintf("the device library's upload step, %d photos × %d B, link cut after every 256 KiB upstream (%d cuts): bytes the link proxy delivered upward to the server, HTTP included, ÷ file bytes",
		len(d.photos), b.o.P4Bytes, after.Cuts-before.Cuts))
	b.info("p5: the device library handed %.3f × the file bytes to its sockets (the part of a PATCH still in the socket buffers when the link cut is sent again), in %d upload steps, %d retried requests",
		float64(out.BlobBytesSent)/float64(fileBytes), out.Syncs, out.Retries)
	res := &runResult{}
	if err := photoCheck(ctx, srv, []*device{d}, res); err != nil {
		return err
	}
	b.logf("p5: %s", res.Checks[0])

	// The tus client of p4 against our endpoint through the same link.
	cutPhotos, err := makePhotos(ctx, n, b.o.P4Bytes, b.o.Seed+5_000_011)
	if err != nil {
		return err
	}
	ep, err := newOurEndpoint(ctx, srv, b.o.Seed, 242, cutPhotos)
	if err != nil {
		return err
	}
	defer ep.close()
	px, err := linkproxy.Start(linkproxy.Config{Upstream: srv.addr, LocalIP: sourceIP(243), Link: linkproxy.Link{CutEveryUpBytes: 256 << 10}})
	if err != nil {
		return err
	}
	defer px.Close()
	cut := newTusClient(px.URL()+"/api/v1/uploads/", 1)
	cut.header = ep.auth()
	for _, p := range cutPhotos {
		if err := cut.upload(ctx, p.Data, map[string]string{"sha256": p.SHA256, "filetype": "image/jpeg"}); err != nil {
			return fmt.Errorf("tus client through cuts: %w", err)
		}
	}
	st, fb := px.Stats(), photoBytes(cutPhotos)
	b.info("p5 with fieldsim's tus client against our endpoint, same link, %d photos, %d cuts: bytes the proxy delivered to the server ÷ file bytes = %.4f; body bytes the client handed to its socket ÷ file bytes = %.3f",
		len(cutPhotos), st.Cuts, float64(st.BytesUp)/float64(fb), float64(cut.sent.Load())/float64(fb))
	if _, _, err := ep.verify(ctx, cutPhotos); err != nil {
		return err
	}
	return nil
}

// fastBackoff is the device retry policy of loopback measurements that
// count bytes, not time.
var fastBackoff = mobileclient.Backoff{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond}

func median(v []float64) float64 {
	if len(v) == 0 {
		return -1
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func fmtRates(v []float64) string {
	parts := make([]string, len(v))
	for i, r := range v {
		parts[i] = fmt.Sprintf("%.1f", r)
	}
	return strings.Join(parts, ", ")
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

func photoBytes(ps []Photo) int64 {
	var n int64
	for _, p := range ps {
		n += int64(len(p.Data))
	}
	return n
}

func newTusClient(endpoint string, conns int) *tusClient {
	return &tusClient{endpoint: endpoint, hc: &http.Client{Timeout: 2 * time.Minute,
		Transport: &http.Transport{MaxIdleConnsPerHost: max(2, conns), DisableCompression: true}}}
}

// makePhotos makes n photos of size bytes on all CPUs.
func makePhotos(ctx context.Context, n, size int, seed uint64) ([]Photo, error) {
	out := make([]Photo, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.NumCPU())
	at := time.Date(2024, 11, 28, 10, 0, 0, 0, cst)
	for i := 0; i < n; i++ {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			lat, lon := 25.0+float64(i%50)*0.0003, 103.7+float64(i/50)*0.0004
			out[i], errs[i] = NewPhoto(size, lat, lon, at.Add(time.Duration(i)*time.Minute), seed*10_000+uint64(i))
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// ourEndpoint is our tus endpoint as the benchmark's tus client uses it: a
// device enrolled on the wire (its token authorises the uploads) whose
// pushed visits name every photo it will upload, as the server takes an
// upload only for a blob a visit of the device references.
type ourEndpoint struct {
	srv    *server
	w      *wireDevice
	visits [][]string // the visits naming each set's photos
	seq    int64      // the last mutation seq pushed
	clock  syncproto.Clock
}

// newOurEndpoint enrolls a wire device (source address idx) for a new
// worker of the demo village and pushes house retrofit inspections naming
// the photos, three a visit (before, after, certificate).
func newOurEndpoint(ctx context.Context, srv *server, seed uint64, idx int, sets ...[]Photo) (*ourEndpoint, error) {
	ps, err := srv.admin.places(ctx)
	if err != nil {
		return nil, err
	}
	group := demoGroups(newPlaceTree(ps))[0]
	u, err := srv.admin.createUser(ctx, fmt.Sprintf("fieldsim_up%d_%d", idx, time.Now().UnixNano()%1e9), "field_worker", []string{group})
	if err != nil {
		return nil, err
	}
	w, err := enrollWire(ctx, srv, u.ID, idx)
	if err != nil {
		return nil, err
	}
	ep := &ourEndpoint{srv: srv, w: w}
	for r, set := range sets {
		if err := ep.pushRefs(ctx, seed+uint64(r), set); err != nil {
			ep.close()
			return nil, err
		}
	}
	return ep, nil
}

func (ep *ourEndpoint) close() { ep.w.close() }

func (ep *ourEndpoint) auth() map[string]string {
	return map[string]string{"Authorization": "Bearer " + ep.w.token}
}

// pushRefs pushes the visits naming one set of photos (ep.visits gets
// their ids as the set's entry).
func (ep *ourEndpoint) pushRefs(ctx context.Context, seed uint64, photos []Photo) error {
	_, hs, forms, err := ep.w.snapshot(ctx, 1000)
	if err != nil {
		return err
	}
	var form syncproto.FormDef
	for _, f := range forms {
		if f.ID == "house_retrofit_inspection" && f.Version >= form.Version {
			form = f
		}
	}
	if form.ID == "" || len(hs) == 0 {
		return errors.New("no house_retrofit_inspection form or no households in the worker's places")
	}
	slots := []string{"before", "after", "certificate"}
	wl := newWorkload(rand.New(rand.NewPCG(seed, 4)), forms, hs)
	var muts []syncproto.Mutation
	var ids []string
	for i := 0; i < len(photos); i += len(slots) {
		h, _ := wl.household()
		v, _, err := wl.visitWith(h, form)
		if err != nil {
			return err
		}
		v.ID = syncproto.NewID(time.Now())
		for k, p := range photos[i:min(i+len(slots), len(photos))] {
			p.Slot = slots[k]
			v.Evidence = append(v.Evidence, p.Ref())
		}
		ep.seq++
		muts = append(muts, syncproto.Mutation{Seq: ep.seq, Kind: syncproto.KindVisitCreate, HLC: ep.clock.Tick(), Visit: &v})
		ids = append(ids, v.ID)
	}
	ep.visits = append(ep.visits, ids)
	for i := 0; i < len(muts); i += 20 {
		resp, err := ep.w.push(ctx, muts[i:min(i+20, len(muts))])
		if err != nil {
			return err
		}
		for _, r := range resp.Results {
			if r.Status != syncproto.StatusApplied {
				return fmt.Errorf("visit naming the photos rejected: %s %s", r.Code, r.Message)
			}
		}
	}
	return nil
}

// upload sends the photos with workers concurrent uploads of one fresh tus
// client and returns MB/s (10^6 B) of file bytes.
func (ep *ourEndpoint) upload(ctx context.Context, photos []Photo, workers int) (float64, time.Duration, error) {
	tc := newTusClient(ep.srv.url+"/api/v1/uploads/", workers)
	tc.header = ep.auth()
	mbps, took, err := uploadAll(ctx, tc, photos, workers)
	if err != nil {
		return 0, took, err
	}
	if sent, want := tc.sent.Load(), photoBytes(photos); sent != want {
		return 0, took, fmt.Errorf("%d body bytes sent for %d bytes of photos on a direct link", sent, want)
	}
	return mbps, took, nil
}

// waitAnalysed waits until the server has analysed the photos of the
// first sets sets (at most bound).
func (ep *ourEndpoint) waitAnalysed(ctx context.Context, sets int, bound time.Duration) error {
	return waitAnalysed(ctx, ep.w.hc, ep.srv.url, ep.w.token, slices.Concat(ep.visits[:sets]...), bound)
}

// verify downloads every photo with the device's token and re-hashes it.
func (ep *ourEndpoint) verify(ctx context.Context, sets ...[]Photo) (int, int64, error) {
	var refs []syncproto.EvidenceRef
	for _, p := range slices.Concat(sets...) {
		refs = append(refs, p.Ref())
	}
	return verifyBlobs(ctx, ep.w.hc, ep.srv.url, ep.w.token, refs, 4)
}
