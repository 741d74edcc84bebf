package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"fieldsync/mobileclient"
	"fieldsync/mobileclient/linkproxy"
	"fieldsync/syncproto"
)

// runOptions configures one scenario run.
type runOptions struct {
	Scenario string
	// Devices, Visits (per device) and Edits (household edits per device).
	Devices, Visits, Edits int
	// Link is each device's link for the measured phase (nil: no proxy).
	Link *linkproxy.Link
	// ServerURL, if set, is a running server (loopback) to use instead of
	// starting one; AdminUser and AdminPassword sign in to it.
	ServerURL, AdminUser, AdminPassword string
	Seed                                uint64
	// Timeout bounds the whole run.
	Timeout time.Duration
	// MaxSyncs bounds the syncs one device tries in one phase.
	MaxSyncs int
	// SetupWorkers bounds devices set up at once.
	SetupWorkers int
	// WorkDir holds the server's data folder ("server") and the devices'
	// ("devices"); a temp folder, removed afterwards, when empty.
	WorkDir string
	// PhotoBytes > 0 attaches generated JPEG photos (EXIF GPS and time)
	// of that size to each required evidence slot of the visits of
	// PhotoForms (empty: photoForms; "all": every form), at most MaxPhotos
	// per device (0: no bound), through PrepareEvidence and RecordVisit;
	// Sync uploads them and the run checks each one on the server.
	PhotoBytes int
	PhotoForms []string
	MaxPhotos  int
	// ReqTimeout bounds one HTTP request of a device.
	ReqTimeout time.Duration
	// Backoff is the devices' retry policy (zero: the library's default).
	Backoff mobileclient.Backoff
	// Out receives progress and the report.
	Out io.Writer
}

func (o *runOptions) setDefaults() {
	if o.Devices <= 0 {
		o.Devices = 1
	}
	if o.Visits < 0 {
		o.Visits = 0
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.MaxSyncs <= 0 {
		o.MaxSyncs = 10
	}
	if o.SetupWorkers <= 0 {
		o.SetupWorkers = 8
	}
	if o.ReqTimeout <= 0 {
		o.ReqTimeout = 2 * time.Minute
	}
	if o.AdminUser == "" {
		o.AdminUser = "admin"
	}
	if o.AdminPassword == "" {
		o.AdminPassword = demoPassword
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
}

// runResult is what a scenario measured and checked.
type runResult struct {
	Scenario string
	Link     string
	Devices  int
	// Visits were recorded on the devices; Acked of them were acknowledged.
	Visits, Acked, Edits int
	// Elapsed is the measured phase (county-evening: the evening sync of
	// every device; 2g-day: until all visits were acknowledged).
	Elapsed time.Duration
	// VisitsPerSec is Acked / Elapsed.
	VisitsPerSec float64
	// SyncP50 and SyncP99 are per-device sync durations (county-evening).
	SyncP50, SyncP99 time.Duration
	// FullSync is the 2g-day evening sync including the pull.
	FullSync time.Duration
	Syncs    int
	Retries  int
	Rejected int
	// Bytes on the wire (request and response bodies), every attempt.
	BytesSent, BytesReceived int64
	// Photos were attached to visits (PhotoBytes their file bytes);
	// BlobsUploaded of them were uploaded by the syncs, BlobsPresent were
	// on the server already; BlobBytesSent counts photo bytes handed to
	// the transport, every attempt.
	Photos                      int
	PhotoBytes                  int64
	BlobsUploaded, BlobsPresent int
	BlobBytesSent               int64
	// PhotoTime is, in 2g-day, how long the upload step took for all
	// photos after the visits were acknowledged; PhotoRaw is the link's
	// raw time for the photo bytes at its upstream rate.
	PhotoTime, PhotoRaw time.Duration
	LinkStats           linkproxy.Stats
	// ServerDir is the server's data folder when the simulator ran it.
	ServerDir string
	// Checks lists what was verified.
	Checks []string
	// Notes are things worth knowing that are not failures.
	Notes []string
}

func (r *runResult) addLink(s linkproxy.Stats) {
	r.LinkStats.BytesUp += s.BytesUp
	r.LinkStats.BytesDown += s.BytesDown
	r.LinkStats.Conns += s.Conns
	r.LinkStats.Refused += s.Refused
	r.LinkStats.Cuts += s.Cuts
	r.LinkStats.Resets += s.Resets
	r.LinkStats.DroppedResponses += s.DroppedResponses
}

func (r *runResult) addSync(o syncOutcome) {
	r.Syncs += o.Syncs
	r.Retries += o.Retries
	r.Rejected += o.Rejected
	r.BytesSent += o.BytesSent
	r.BytesReceived += o.BytesReceived
	r.BlobsUploaded += o.BlobsUploaded
	r.BlobsPresent += o.BlobsPresent
	r.BlobBytesSent += o.BlobBytesSent
}

// photoFormsOf resolves runOptions.PhotoForms (nil: every form).
func photoFormsOf(forms []string) []string {
	switch {
	case len(forms) == 0:
		return photoForms
	case slices.Contains(forms, "all"):
		return nil
	}
	return forms
}

// setPhotos makes the devices' workloads attach photos as o says.
func setPhotos(devs []*device, o *runOptions) {
	for _, d := range devs {
		if d.work != nil {
			d.work.setPhotos(o.PhotoBytes, photoFormsOf(o.PhotoForms), o.MaxPhotos)
		}
	}
}

// countPhotos adds up the photos the devices attached.
func countPhotos(devs []*device, res *runResult) {
	res.Photos, res.PhotoBytes = 0, 0
	for _, d := range devs {
		res.Photos += len(d.photos)
		for _, p := range d.photos {
			res.PhotoBytes += p.Size
		}
		if d.downscaled > 0 {
			res.Notes = append(res.Notes, fmt.Sprintf("device %d: the library downscaled %d photos (over Options.MaxPhotoPx)", d.idx, d.downscaled))
		}
	}
}

// scenarios are the named presets of `fieldsim run`.
var scenarios = map[string]func(context.Context, *env, *runOptions) (*runResult, error){
	"county-evening": countyEvening,
	"2g-day":         twoGDay,
	"reassign":       reassign,
}

// env is what a run has set up: a server and a fleet factory.
type env struct {
	srv   *server
	fleet *fleet
	tree  *placeTree
	work  string
	logf  func(format string, args ...any)
}

// oneDevice enrolls one device for a worker of the first demo group and
// takes its first sync; the caller closes it.
func (e *env) oneDevice(ctx context.Context, maxSyncs int) (*device, error) {
	devs, err := e.fleet.makeFleet(ctx, 1, demoGroups(e.tree)[:1], maxSyncs)
	if err != nil {
		return nil, err
	}
	return devs[0], nil
}

// runScenario runs one named scenario end to end: server, devices,
// workload, measurement, checks.
func runScenario(ctx context.Context, o runOptions) (*runResult, error) {
	o.setDefaults()
	fn, ok := scenarios[o.Scenario]
	if !ok {
		return nil, fmt.Errorf("unknown scenario %q (county-evening, 2g-day, reassign)", o.Scenario)
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	work := o.WorkDir
	if work == "" {
		dir, err := os.MkdirTemp("", "fieldsim-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		work = dir
	}
	logf := func(format string, args ...any) { fmt.Fprintf(o.Out, format+"\n", args...) }
	e, err := setupEnv(ctx, o, work, logf)
	if err != nil {
		return nil, err
	}
	defer e.srv.Close()
	res, err := fn(ctx, e, &o)
	if res != nil {
		res.Scenario = o.Scenario
		res.ServerDir = e.srv.dataDir
		if e.srv.logFile != "" {
			if n := tailLog(e.srv.logFile, o.Out); n > 0 {
				res.Notes = append(res.Notes, fmt.Sprintf("the server logged %d warnings or errors (%s)", n, e.srv.logFile))
			}
		}
	}
	if err != nil {
		return res, fmt.Errorf("%s: %w", o.Scenario, err)
	}
	return res, nil
}

func setupEnv(ctx context.Context, o runOptions, work string, logf func(string, ...any)) (*env, error) {
	var srv *server
	var err error
	if o.ServerURL != "" {
		srv, err = connect(ctx, o.ServerURL, o.AdminUser, o.AdminPassword)
	} else {
		logf("starting a server on %s (demo county)", filepath.Join(work, "server"))
		srv, err = startLocal(ctx, localOptions{Dir: filepath.Join(work, "server"), Seed: otherVillageHouseholds(40)})
	}
	if err != nil {
		return nil, err
	}
	e, err := newEnv(ctx, srv, envOptions{tag: "r", seed: o.Seed, dir: filepath.Join(work, "devices"), link: o.Link,
		backoff: o.Backoff, reqTimeout: o.ReqTimeout, setupWorkers: o.SetupWorkers}, logf)
	if err != nil {
		srv.Close()
		return nil, err
	}
	e.work = work
	return e, nil
}

// envOptions configures newEnv's fleet.
type envOptions struct {
	tag          string // starts the run id, so fleets on one server never clash
	seed         uint64
	dir          string
	link         *linkproxy.Link
	backoff      mobileclient.Backoff
	reqTimeout   time.Duration
	setupWorkers int
}

// newEnv reads the server's place tree and makes a fleet factory for it.
func newEnv(ctx context.Context, srv *server, o envOptions, logf func(string, ...any)) (*env, error) {
	ps, err := srv.admin.places(ctx)
	if err != nil {
		return nil, err
	}
	if o.reqTimeout <= 0 {
		o.reqTimeout = 2 * time.Minute
	}
	rng := rand.New(rand.NewPCG(o.seed, uint64(time.Now().UnixNano())))
	f := &fleet{
		srv: srv, dir: o.dir, runID: fmt.Sprintf("%s%06x", o.tag, rng.Uint32()&0xffffff),
		seed: o.seed, link: o.link, backoff: o.backoff, reqTimeout: o.reqTimeout, setupWorkers: max(1, o.setupWorkers),
	}
	return &env{srv: srv, fleet: f, tree: newPlaceTree(ps), logf: logf}, nil
}

// tailLog copies the last lines of the server log to w and returns how
// many lines it has.
func tailLog(path string, w io.Writer) int {
	data, err := os.ReadFile(path)
	if err != nil || len(data) == 0 {
		return 0
	}
	lines := splitLines(string(data))
	from := max(0, len(lines)-5)
	fmt.Fprintf(w, "server log (%d lines, last %d):\n", len(lines), len(lines)-from)
	for _, l := range lines[from:] {
		fmt.Fprintln(w, "  "+l)
	}
	return len(lines)
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// groups lists the villager groups devices are assigned to: every group
// on a server the simulator started (it gives the demo's empty second
// village households), the demo village's groups first on another.
func (e *env) groups() ([]string, error) {
	gs := e.tree.level("group")
	if e.srv.dataDir == "" {
		gs = demoGroups(e.tree)
	}
	if len(gs) == 0 {
		return nil, errors.New("the server has no places of level group")
	}
	return gs, nil
}

// countyEvening: many devices come online at once after a day offline.
// Every device was set up and synced in the morning; during the day each
// records its visits and household edits offline; in the evening all of
// them sync at the same moment. It reports acknowledged visits per second
// over the whole herd and the p50/p99 of one device's sync.
func countyEvening(ctx context.Context, e *env, o *runOptions) (*runResult, error) {
	res := &runResult{Link: linkName(o.Link), Devices: o.Devices}
	groups, err := e.groups()
	if err != nil {
		return nil, err
	}
	e.logf("morning: %d devices enroll and take their places' copy (link %s)", o.Devices, res.Link)
	devs, err := e.fleet.makeFleet(ctx, o.Devices, groups, o.MaxSyncs)
	if err != nil {
		return nil, err
	}
	defer closeAll(devs)
	setPhotos(devs, o)
	e.logf("day: each device records %d visits and %d household edits offline%s", o.Visits, o.Edits, photoNote(o))
	if err := forEach(ctx, devs, o.SetupWorkers, func(ctx context.Context, d *device) error {
		return d.record(o.Visits, o.Edits)
	}); err != nil {
		return res, err
	}
	for _, d := range devs {
		res.Visits += len(d.visits)
		res.Edits += d.edits
		d.proxyReset()
	}
	countPhotos(devs, res)
	e.logf("evening: %d devices sync at once", len(devs))
	outs, elapsed, err := herdSync(ctx, devs, o.MaxSyncs, false)
	res.Elapsed = elapsed
	var took []time.Duration
	for i, out := range outs {
		res.addSync(out)
		res.addLink(devs[i].linkStats())
		took = append(took, out.Took)
	}
	res.SyncP50, res.SyncP99 = percentile(took, 0.50), percentile(took, 0.99)
	if err != nil {
		return res, err
	}
	if err := ackCheck(devs, res); err != nil {
		return res, err
	}
	res.VisitsPerSec = float64(res.Acked) / elapsed.Seconds()
	if err := serverCheck(ctx, e, devs, groups, o, res); err != nil {
		return res, err
	}
	if err := photoCheck(ctx, e.srv, devs, res); err != nil {
		return res, err
	}
	return res, nil
}

func photoNote(o *runOptions) string {
	if o.PhotoBytes <= 0 {
		return ", no photos"
	}
	forms := "every form"
	if f := photoFormsOf(o.PhotoForms); f != nil {
		forms = strings.Join(f, ", ")
	}
	bound := ""
	if o.MaxPhotos > 0 {
		bound = fmt.Sprintf(", at most %d per device", o.MaxPhotos)
	}
	return fmt.Sprintf(", photos of %d B in the required slots of %s%s", o.PhotoBytes, forms, bound)
}

// photoCheck verifies on the server that every photo the devices attached
// arrived whole: it downloads each (GET /api/v1/evidence/{sha256}, as the
// admin) and hashes what comes back.
func photoCheck(ctx context.Context, srv *server, devs []*device, res *runResult) error {
	var refs []syncproto.EvidenceRef
	for _, d := range devs {
		refs = append(refs, d.photos...)
	}
	if len(refs) == 0 {
		return nil
	}
	n, bytes, err := srv.admin.verifyBlobs(ctx, refs, 4)
	if err != nil {
		return fmt.Errorf("photos on the server: %w", err)
	}
	res.Checks = append(res.Checks, fmt.Sprintf("server: each of the %d photos (%d B) downloads whole and hashes to its sha256", n, bytes))
	var visits []string
	for _, d := range devs {
		for _, v := range d.visits {
			if len(v.Evidence) > 0 {
				visits = append(visits, v.ID)
			}
		}
	}
	t0 := time.Now()
	if err := waitAnalysed(ctx, srv.admin.hc, srv.admin.base, srv.admin.token, visits, 5*time.Minute); err != nil {
		return fmt.Errorf("photos on the server: %w", err)
	}
	res.Checks = append(res.Checks, fmt.Sprintf("server: the photos of all %d visits with photos analysed and checked (%.1f s after the downloads)", len(visits), time.Since(t0).Seconds()))
	return nil
}

// proxyReset starts the device's link afresh (its byte counts and time
// schedule), so that the measured phase sees the whole link profile.
func (d *device) proxyReset() {
	if d.proxy != nil {
		_ = d.proxy.SetLink(d.proxy.Link())
	}
}

// herdSync syncs every device at once (Push only with pushOnly) and
// returns each device's outcome and the wall time until the last one
// finished.
func herdSync(ctx context.Context, devs []*device, maxSyncs int, pushOnly bool) ([]syncOutcome, time.Duration, error) {
	outs := make([]syncOutcome, len(devs))
	errs := make([]error, len(devs))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			outs[i], errs[i] = syncUntilDone(ctx, d, maxSyncs, pushOnly)
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(t0)
	var failed []error
	for i, err := range errs {
		if err != nil {
			failed = append(failed, fmt.Errorf("device %d: %w", devs[i].idx, err))
		}
	}
	if len(failed) > 0 {
		return outs, elapsed, fmt.Errorf("%d of %d devices did not finish: %w", len(failed), len(devs), failed[0])
	}
	return outs, elapsed, nil
}

// ackCheck counts acknowledged visits: with an empty outbox, every
// recorded visit that was not rejected.
func ackCheck(devs []*device, res *runResult) error {
	res.Acked = 0
	for _, d := range devs {
		p, err := d.c.Pending()
		if err != nil {
			return err
		}
		if p.Mutations > 0 {
			return fmt.Errorf("device %d: %d mutations never acknowledged", d.idx, p.Mutations)
		}
		rej, err := d.c.Rejections()
		if err != nil {
			return err
		}
		rejected := map[string]bool{}
		for _, r := range rej {
			if r.Kind == string(syncproto.KindVisitCreate) {
				rejected[r.EntityID] = true
			}
		}
		for _, v := range d.visits {
			if !rejected[v.ID] {
				res.Acked++
			}
		}
		if len(rejected) > 0 {
			return fmt.Errorf("device %d: %d visits rejected, e.g. %s", d.idx, len(rejected), firstRejection(rej))
		}
	}
	res.Checks = append(res.Checks, fmt.Sprintf("devices: all %d visits acknowledged, outboxes empty, no rejections", res.Acked))
	return nil
}

func firstRejection(rs []mobileclient.Result) string {
	if len(rs) == 0 {
		return ""
	}
	return rs[0].Code + ": " + rs[0].Message
}

// serverCheck verifies on the server that every visit is there exactly
// once: in its database when the simulator runs it, else through an
// auditor device.
func serverCheck(ctx context.Context, e *env, devs []*device, places []string, o *runOptions, res *runResult) error {
	if e.srv.dataDir != "" {
		n, err := checkVisitsExactlyOnce(ctx, e.srv.dbPath, devs)
		if err != nil {
			return err
		}
		res.Checks = append(res.Checks, fmt.Sprintf("server database: each of the %d visits exactly once, from its device, nothing extra", n))
		return nil
	}
	n, err := checkVisitsThroughAuditor(ctx, e.fleet, devs, usedPlaces(devs, places), o.MaxSyncs)
	if err != nil {
		return err
	}
	res.Checks = append(res.Checks, fmt.Sprintf("auditor device: sees all %d visits with their household and form", n))
	return nil
}

func usedPlaces(devs []*device, fallback []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, d := range devs {
		if !seen[d.place] {
			seen[d.place] = true
			out = append(out, d.place)
		}
	}
	if len(out) == 0 {
		return fallback
	}
	slices.Sort(out)
	return out
}

// weak2G is issue 7's weak link with its first time-based cut at a
// seeded moment, as a real link does not start its troubles when the
// sync starts.
func weak2G(base *linkproxy.Link, seed uint64) linkproxy.Link {
	l := *linkProfiles["2g"]
	if base != nil {
		l = *base
	}
	if l.CutEvery > 0 && l.CutPhase == 0 {
		r := rand.New(rand.NewPCG(seed, 0x3267)) // "2g"
		l.CutPhase = time.Duration(1 + r.Int64N(int64(l.CutEvery)))
	}
	return l
}

// twoGDay: one device's day over a weak link. The device takes its copy
// in the morning on a good link, records the day's visits and edits
// offline, then syncs over the weak link; it reports the seconds until
// every visit was acknowledged (the push), then the whole sync.
func twoGDay(ctx context.Context, e *env, o *runOptions) (*runResult, error) {
	weak := weak2G(o.Link, o.Seed)
	res := &runResult{Link: weak.String(), Devices: 1}
	groups, err := e.groups()
	if err != nil {
		return nil, err
	}
	morning := linkproxy.Link{}
	e.fleet.link = &morning
	devs, err := e.fleet.makeFleet(ctx, 1, groups[:1], o.MaxSyncs)
	if err != nil {
		return nil, err
	}
	defer closeAll(devs)
	d := devs[0]
	setPhotos(devs, o)
	if err := d.record(o.Visits, o.Edits); err != nil {
		return res, err
	}
	res.Visits, res.Edits = len(d.visits), d.edits
	countPhotos(devs, res)
	if err := d.proxy.SetLink(weak); err != nil {
		return res, err
	}
	e.logf("evening: 1 device syncs %d visits, %d edits and %d photos (%d B) over %s (first cut at %v)",
		res.Visits, res.Edits, res.Photos, res.PhotoBytes, res.Link, weak.CutPhase.Round(time.Second))
	t0 := time.Now()
	push, err := syncUntilDone(ctx, d, o.MaxSyncs, true)
	res.Elapsed = time.Since(t0)
	res.addSync(push)
	if err != nil {
		res.addLink(d.linkStats())
		return res, err
	}
	if res.Photos > 0 {
		// The photos go next, as Sync sends them (after the records):
		// the upload step alone, timed.
		up, err := uploadUntilDone(ctx, d, o.MaxSyncs)
		res.PhotoTime = up.Took
		res.addSync(up)
		if err != nil {
			res.addLink(d.linkStats())
			return res, err
		}
		res.PhotoRaw = time.Duration(float64(res.PhotoBytes) / float64(max(1, weak.UpBytesPerSec)) * float64(time.Second))
	}
	pull, err := syncUntilDone(ctx, d, o.MaxSyncs, false)
	res.FullSync = time.Since(t0)
	res.addSync(pull)
	res.addLink(d.linkStats())
	if err != nil {
		return res, err
	}
	if err := ackCheck(devs, res); err != nil {
		return res, err
	}
	res.VisitsPerSec = float64(res.Acked) / res.Elapsed.Seconds()
	raw := float64(res.BytesSent+res.BytesReceived) / float64(max(1, weak.UpBytesPerSec))
	res.Notes = append(res.Notes, fmt.Sprintf("the sync moved %d body bytes: %.1f s of raw link time at %s",
		res.BytesSent+res.BytesReceived, raw, formatRate(weak.UpBytesPerSec)))
	if err := serverCheck(ctx, e, devs, groups[:1], o, res); err != nil {
		return res, err
	}
	if err := photoCheck(ctx, e.srv, devs, res); err != nil {
		return res, err
	}
	return res, nil
}

func formatRate(bps int64) string {
	return fmt.Sprintf("%.0f kbps", float64(bps)*8/1000)
}

// reassign: a worker moves to another village. The device works in its
// first group and syncs; the admin changes the worker's places to another
// village (PUT /api/v1/users/{id}/places); the device syncs and must then
// hold exactly the new village's households, and nothing of the old one.
// A visit recorded just before the move (still in the outbox) is pushed
// after it; its outcome is reported.
func reassign(ctx context.Context, e *env, o *runOptions) (*runResult, error) {
	res := &runResult{Link: linkName(o.Link), Devices: 1}
	groups, err := e.groups()
	if err != nil {
		return nil, err
	}
	from := groups[0]
	oldVillage := e.tree.villageOf(from)
	target := ""
	for _, v := range e.tree.level("village") {
		if v != oldVillage {
			target = v
			break
		}
	}
	if target == "" {
		return nil, errors.New("the server has only one village: nowhere to move to")
	}
	devs, err := e.fleet.makeFleet(ctx, 1, []string{from}, o.MaxSyncs)
	if err != nil {
		return nil, err
	}
	defer closeAll(devs)
	d := devs[0]
	before, err := d.c.Households("")
	if err != nil {
		return res, err
	}
	e.logf("device works in group %s (%d households), moves to village %s", from, len(before), target)
	if err := d.record(o.Visits, o.Edits); err != nil {
		return res, err
	}
	out, err := syncUntilDone(ctx, d, o.MaxSyncs, false)
	res.addSync(out)
	if err != nil {
		return res, err
	}
	// One more visit, recorded before the move and pushed after it.
	if err := d.record(1, 0); err != nil {
		return res, err
	}
	late := d.visits[len(d.visits)-1].ID
	res.Visits, res.Edits = len(d.visits), d.edits
	if err := e.srv.admin.setPlaces(ctx, d.userID, []string{target}); err != nil {
		return res, err
	}
	t0 := time.Now()
	out, err = syncUntilDone(ctx, d, o.MaxSyncs, false)
	res.Elapsed = time.Since(t0)
	res.addSync(out)
	res.addLink(d.linkStats())
	if err != nil {
		return res, err
	}
	after, err := d.c.Households("")
	if err != nil {
		return res, err
	}
	have := map[string]bool{}
	for _, h := range after {
		have[h.ID] = true
	}
	// What the new village holds, seen by a fresh device (a full copy,
	// not a rescope), and in the database when the simulator runs it.
	aud, err := e.fleet.auditor(ctx, 901, []string{target}, o.MaxSyncs)
	if err != nil {
		return res, fmt.Errorf("auditor: %w", err)
	}
	defer aud.close()
	fresh, err := aud.c.Households("")
	if err != nil {
		return res, err
	}
	want := map[string]bool{}
	for _, h := range fresh {
		want[h.ID] = true
	}
	if len(want) == 0 {
		res.Notes = append(res.Notes, "the new village has no households on this server, so the check below is weak")
	}
	if err := sameSet(have, want); err != nil {
		return res, fmt.Errorf("after the move the device holds %d households, a fresh device of the village %d: %w", len(have), len(want), err)
	}
	res.Checks = append(res.Checks, fmt.Sprintf("device holds exactly the %d households a fresh device of village %s gets", len(have), target))
	if e.srv.dataDir != "" {
		db, err := householdsOnServer(ctx, e.srv.dbPath, e.tree.subtree(target))
		if err != nil {
			return res, err
		}
		if err := sameSet(have, db); err != nil {
			return res, fmt.Errorf("device vs server database: %w", err)
		}
		res.Checks = append(res.Checks, fmt.Sprintf("... and exactly the %d live households of %s in the server database", len(db), target))
	}
	for _, h := range before {
		if have[h.ID] {
			return res, fmt.Errorf("household %s of the old group is still on the device", h.ID)
		}
	}
	res.Checks = append(res.Checks, fmt.Sprintf("none of the %d households of group %s is left on the device", len(before), from))
	places, err := d.c.Places()
	if err != nil {
		return res, err
	}
	for _, p := range places {
		if p.Code == from {
			return res, fmt.Errorf("the old group %s is still in the device's places", from)
		}
	}
	rej, err := d.c.Rejections()
	if err != nil {
		return res, err
	}
	outcome := "applied"
	for _, r := range rej {
		if r.EntityID == late {
			outcome = "rejected: " + r.Code + ": " + r.Message
		}
	}
	res.Notes = append(res.Notes, "the visit recorded before the move and pushed after it was "+outcome)
	for _, r := range rej {
		if r.EntityID != late {
			return res, fmt.Errorf("unexpected rejection of %s %s: %s", r.Kind, r.EntityID, r.Message)
		}
	}
	res.Acked = len(d.visits)
	if outcome != "applied" {
		res.Acked--
	}
	return res, nil
}

func sameSet(got, want map[string]bool) error {
	var missing, extra int
	for id := range want {
		if !got[id] {
			missing++
		}
	}
	for id := range got {
		if !want[id] {
			extra++
		}
	}
	if missing+extra > 0 {
		return fmt.Errorf("%d missing, %d extra", missing, extra)
	}
	return nil
}
