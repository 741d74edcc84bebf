package main

// fieldsim bench measures issue 7's figures in one run, each next to its
// comparison, on this machine:
//
//   - p1: 200 devices (one worker each, over the demo village's groups)
//     record 100 visits each offline, then push at once, batches of 20,
//     over HTTP to a fieldsync subprocess; acknowledged visits ÷ wall
//     time. The raw limit copies the visits table's columns and indexes
//     into a fresh SQLite file beside the server's and inserts the same
//     rows, 20 per transaction, with the server's SQLite settings
//     (sqliteDSN), in the simulator's process.
//   - p2: 10,000 households imported with `fieldsync seed` into one group;
//     a fresh device's first Sync: wall time, and SyncReport's bytes.
//   - p3: a wire-level device of that worker pulls with a cursor at the
//     head, 2000 times (after 20 unmeasured); then the server stops, 990k
//     households are imported outside the worker's places in batches of
//     20k, the server restarts on the same folder and the same device and
//     cursor pull 2000 times again. p99 of each.
//   - p4: 200 photos of 250 KB (generated JPEGs with EXIF GPS and time),
//     8 concurrent uploads of one small tus client (tus.go) against tusd
//     v2.9.1 (go install, filestore, a subprocess on loopback), our
//     endpoint /api/v1/uploads/ on a fieldsync subprocess with the local
//     blob store, and the same with the S3 store (the test script's shared
//     versitygw, or a private one the bench installs and starts). Our
//     endpoint takes an upload only for a blob a visit of the device
//     names, so a wire device first pushes retrofit inspections naming
//     every photo; its token authorises the uploads. Median of 3 rounds,
//     other photos each round; every photo is then downloaded back and
//     re-hashed.
//   - p5: one real device (mobileclient) records visits with 40 photos of
//     250 KB (PrepareEvidence, RecordVisit), pushes them, then runs the
//     upload step through a link proxy that cuts the connection after
//     every 256 KiB of upstream bytes: bytes the proxy delivered upward to
//     the server (HTTP included) ÷ file bytes. fieldsim's tus client
//     against our endpoint and against tusd on the same link: printed.
//   - p6: one real push of 20 household-survey visits with references to
//     the form's three required photos: gzip body ÷ 20. OpenRosa: each
//     visit as Collect's instance XML, gzipped alone (one submission per
//     request is how OpenRosa sends them).
//   - p7: the p1 workload and then the p4 upload workload against the
//     fieldsync binary run as a subprocess with -demo (the demo county
//     with its photos); its VmHWM.
//   - p8: 20 devices × 1,000 visits pushed at once to a fieldsync
//     subprocess;
//     the same visits as documents in 20 local PouchDBs replicated at once
//     into pouchdb-server on loopback.
//   - f1: the 2g-day scenario (30 visits, 5 edits, 50 kbps, 800 ms RTT, a
//     cut every 2 minutes at a seeded phase), median of 3 trials: seconds
//     until every visit is acknowledged; then the upload step sends the
//     day's photos (2 of 250 KB, few to bound the run): its time ÷ the
//     photo bytes at 6250 B/s.
//
// and issue 17's, each in a section of its own:
//
//   - tusds3: tusd v2.9.1 with its s3store on the S3 server p4's S3 figure
//     uses (one per run, a bucket each), p4's client, photos and rounds.
//   - p2l: p2's first pull with 100,000 households in the scope.
//   - p7photos: a fresh fieldsync subprocess's VmHWM while two 40 MP
//     camera JPEGs are uploaded at once and analysed.
//   - neardup: the near-duplicate index's Go benchmarks in server/evidence
//     (run with go test as a subprocess): one check at 1M stored hashes,
//     recall on transformed copies and false positives among unrelated
//     pictures.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// benchReport is the JSON file of `fieldsim bench --json FILE`: exactly
// the keys of issues 7 and 17, each a number; -1 means not measured (the table
// says why).
type benchReport struct {
	P1VisitsPerS            float64 `json:"p1_visits_per_s"`
	P1RawSQLiteRowsPerS     float64 `json:"p1_raw_sqlite_rows_per_s"`
	P2FirstPullMs10k        float64 `json:"p2_first_pull_ms_10k"`
	P2FirstPullBytes10k     float64 `json:"p2_first_pull_bytes_10k"`
	P3NoopPullP99Ms10k      float64 `json:"p3_noop_pull_p99_ms_10k"`
	P3NoopPullP99Ms1m       float64 `json:"p3_noop_pull_p99_ms_1m"`
	P4UploadMBsLocal        float64 `json:"p4_upload_mb_s_local"`
	P4UploadMBsS3           float64 `json:"p4_upload_mb_s_s3"`
	P4UploadMBsTusd         float64 `json:"p4_upload_mb_s_tusd"`
	P5ResentRatio           float64 `json:"p5_resent_ratio"`
	P6BytesPerVisit         float64 `json:"p6_bytes_per_visit"`
	P6OpenRosaBytesPerVisit float64 `json:"p6_openrosa_bytes_per_visit"`
	P7RSSMBPeak             float64 `json:"p7_rss_mb_peak"`
	P8Sync20kS              float64 `json:"p8_sync_20k_s"`
	P8PouchDB20kS           float64 `json:"p8_pouchdb_20k_s"`
	F12GVisitsS             float64 `json:"f1_2g_visits_s"`
	F12GPhotosRatio         float64 `json:"f1_2g_photos_ratio"`
	// Issue 17's additions.
	P4UploadMBsTusdS3     float64 `json:"p4_upload_mb_s_tusd_s3"`
	P2FirstPullMs100k     float64 `json:"p2_first_pull_ms_100k"`
	P2FirstPullBytes100k  float64 `json:"p2_first_pull_bytes_100k"`
	P7RSSMBPeakPhotos     float64 `json:"p7_rss_mb_peak_photos"`
	NeardupCheckUs1m      float64 `json:"neardup_check_us_1m"`
	NeardupRecall         float64 `json:"neardup_recall"`
	NeardupFalsePositives float64 `json:"neardup_false_positives"`
}

func newBenchReport() benchReport {
	return benchReport{-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
		-1, -1, -1, -1, -1, -1, -1}
}

// benchOptions sizes the benchmark; the defaults are issue 7's.
type benchOptions struct {
	JSON     string
	CacheDir string
	WorkDir  string
	// DeviceDir is where the simulated phones' folders go (see
	// bench.devices); "" puts them in the work folder.
	DeviceDir string
	Keep      bool
	Only      []string
	Skip      []string
	Timeout   time.Duration
	Seed      uint64

	P1Devices, P1Visits int // p1 and p7: devices, visits per device
	P2Households        int
	P2Large             int // p2l: households of the large first pull (0: skip)
	P3Pulls, P3Total    int
	P3Batch             int
	P4Photos, P4Bytes   int
	P4Uploaders         int
	P8Devices, P8Visits int // p8: devices, visits in all
	F1Visits, F1Edits   int
	F1Trials            int
	F1Photos            int // f1: photos of the 2G day
	F1PhotoBytes        int // f1: bytes per photo
	// P7PhotoW and P7PhotoH are the pixels of p7photos' two photos.
	P7PhotoW, P7PhotoH int
	// NeardupBenchtime is go test's -benchtime for the near-duplicate
	// index's 1M case (neardup); "" means 1s.
	NeardupBenchtime string
	MaxSyncs         int
	// CPUProfile, if set, is the prefix of CPU profiles of the timed
	// phases, two per phase: PREFIX.p1 (the simulator: devices, wire
	// clients) and PREFIX.p1.server (the fieldsync subprocess), and so
	// for p2 (the first pull), p4 (our endpoint, local store) and p8.
	CPUProfile string
	// Trace, if set, is the prefix of execution traces of the same phases.
	Trace string
	// MemProfile, if set, is the prefix of heap profiles written at the
	// end of the same phases (alloc_space shows what the phase allocated).
	MemProfile string
	// DB, if set, is a PostgreSQL admin URL: the sections' servers run on
	// PostgreSQL, each on a fresh database created through it (p7 and p5
	// stay on SQLite).
	DB string
	// Instances is how many fieldsync processes share one PostgreSQL
	// database behind the round-robin proxy (default 1; more need DB).
	Instances int
	// Engines, if set, runs the sections once per setup (sqlite, pg1,
	// pgN: N instances) and reports them side by side (engines.go).
	Engines []string
	// P4S3Only has p4 measure only our endpoint with the S3 store (no
	// tusd, no local store, no p5).
	P4S3Only bool
}

// The sections of the benchmark, in the order they run.
var benchSections = []string{"p6", "f1", "p1", "p7", "p7photos", "p8", "p4", "tusds3", "p23", "p2l", "neardup"}

type bench struct {
	o    benchOptions
	rep  benchReport
	work string
	// devices holds the simulated phones' folders: by default on tmpfs
	// (-device-dir), since 200 phones have 200 flash chips, not a share
	// of the server's disk and its journal.
	devices string
	out     io.Writer
	notes   map[string]string // metric → how it was measured, or why not
	extra   []string          // informational lines
	rss     *rssSampler       // set while p7 samples the server
	// drops drop the PostgreSQL databases the sections created.
	drops []func(context.Context) error

	mu        sync.Mutex
	photoSets map[int][]Photo // p4's photos by round (uploadPhotos)
	s3        *s3Server       // the run's S3 server (s3Server), once started
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.out, "  "+format+"\n", args...)
}

func (b *bench) note(key, how string) { b.notes[key] = how }

func (b *bench) info(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	b.extra = append(b.extra, line)
	b.logf("%s", line)
}

func (b *bench) path(section string) string { return filepath.Join(b.work, section) }

// defaultDeviceDir is /dev/shm when it is a writable folder, else "".
func defaultDeviceDir() string {
	const shm = "/dev/shm"
	f, err := os.CreateTemp(shm, ".fieldsim-probe-")
	if err != nil {
		return ""
	}
	f.Close()
	os.Remove(f.Name())
	return shm
}

// profile starts a CPU profile and an execution trace of a timed phase
// when -cpuprofile or -trace is set, in the simulator and in srv (a
// fieldsync subprocess started with b.serverProfile; nil: none); the
// returned func stops them.
func (b *bench) profile(section string, srv *server) func() {
	var stops []func()
	if srv != nil {
		stops = append(stops, b.profileServer(srv))
	}
	if b.o.CPUProfile != "" {
		if f, err := os.Create(b.o.CPUProfile + "." + section); err != nil {
			b.logf("cpuprofile: %v", err)
		} else if err := pprof.StartCPUProfile(f); err != nil {
			b.logf("cpuprofile: %v", err)
			f.Close()
		} else {
			stops = append(stops, func() { pprof.StopCPUProfile(); f.Close(); b.logf("CPU profile of the timed phase: %s", f.Name()) })
		}
	}
	if b.o.Trace != "" {
		if f, err := os.Create(b.o.Trace + "." + section); err != nil {
			b.logf("trace: %v", err)
		} else if err := trace.Start(f); err != nil {
			b.logf("trace: %v", err)
			f.Close()
		} else {
			stops = append(stops, func() { trace.Stop(); f.Close(); b.logf("execution trace of the timed phase: %s", f.Name()) })
		}
	}
	if b.o.MemProfile != "" {
		stops = append(stops, func() {
			f, err := os.Create(b.o.MemProfile + "." + section)
			if err != nil {
				b.logf("memprofile: %v", err)
				return
			}
			defer f.Close()
			if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
				b.logf("memprofile: %v", err)
			}
			b.logf("heap profile at the end of the timed phase: %s", f.Name())
		})
	}
	return func() {
		for _, s := range stops {
			s()
		}
	}
}

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fieldsim bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o benchOptions
	var only, skip string
	fs.StringVar(&o.JSON, "json", "", "write the report (issue 7's keys) to this file")
	fs.StringVar(&o.CacheDir, "cache-dir", defaultCacheDir(), "where peers (tusd, PouchDB) are installed")
	fs.StringVar(&o.WorkDir, "dir", "", "work folder (default: a temp folder, removed unless -keep)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the work folder")
	fs.StringVar(&o.DeviceDir, "device-dir", defaultDeviceDir(), "where the simulated phones' databases go (tmpfs by default: each phone has its own flash, not a share of the server's disk); empty: the work folder")
	fs.StringVar(&only, "only", "", "run only these sections (comma-separated: "+strings.Join(benchSections, ",")+")")
	fs.StringVar(&skip, "skip", "", "skip these sections")
	fs.DurationVar(&o.Timeout, "timeout", 90*time.Minute, "bound of the whole benchmark")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of workloads and links")
	fs.IntVar(&o.P1Devices, "p1-devices", 200, "p1/p7: concurrent devices")
	fs.IntVar(&o.P1Visits, "p1-visits", 100, "p1/p7: visits per device (pushed in batches of 20)")
	fs.IntVar(&o.P2Households, "p2-households", 10_000, "p2/p3: households in the device's scope")
	fs.IntVar(&o.P2Large, "p2-large", 100_000, "p2l: households in the scope of the large first pull (0: skip it)")
	fs.IntVar(&o.P3Pulls, "p3-pulls", 2000, "p3: no-op pulls timed per database size (a p99 of 200 is the second slowest: one scheduler hiccup)")
	fs.IntVar(&o.P3Total, "p3-total", 1_000_000, "p3: households in the database for the large case (0: skip it)")
	fs.IntVar(&o.P3Batch, "p3-batch", 20_000, "p3: households per ImportHouseholds call")
	fs.IntVar(&o.P4Photos, "p4-photos", 200, "p4: photos uploaded")
	fs.IntVar(&o.P4Bytes, "p4-bytes", 250_000, "p4: bytes per photo")
	fs.IntVar(&o.P4Uploaders, "p4-uploaders", 8, "p4: concurrent uploads")
	fs.IntVar(&o.P8Devices, "p8-devices", 20, "p8: devices")
	fs.IntVar(&o.P8Visits, "p8-visits", 20_000, "p8: visits in all")
	fs.IntVar(&o.F1Visits, "f1-visits", 30, "f1: visits of the 2G day")
	fs.IntVar(&o.F1Edits, "f1-edits", 5, "f1: household edits of the 2G day")
	fs.IntVar(&o.F1Trials, "f1-trials", 3, "f1: trials (the median is reported)")
	fs.IntVar(&o.F1Photos, "f1-photos", 2, "f1: photos of the 2G day (on retrofit and water-cellar visits; few: a 250 KB photo takes 40 s at 50 kbps)")
	fs.IntVar(&o.F1PhotoBytes, "f1-photo-bytes", 250_000, "f1: bytes per photo (issue 17: 250 KB; the earlier runs used -f1-photos 5 -f1-photo-bytes 30000); 0: no photos")
	var p7dims string
	fs.StringVar(&p7dims, "p7-photo-size", "7300x5500", "p7photos: pixels of the two photos uploaded and analysed at once (WxH)")
	fs.StringVar(&o.NeardupBenchtime, "neardup-benchtime", "1s", "neardup: go test -benchtime of the near-duplicate index's 1M case")
	fs.IntVar(&o.MaxSyncs, "max-syncs", 10, "syncs a device tries in one phase before giving up")
	fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write CPU profiles of the timed phases to PREFIX.<section> (the simulator) and PREFIX.<section>.server (the fieldsync subprocess)")
	fs.StringVar(&o.Trace, "trace", "", "write execution traces of the timed phases to PREFIX.<section> and PREFIX.<section>.server")
	fs.StringVar(&o.MemProfile, "memprofile", "", "write heap profiles at the end of the timed phases to PREFIX.<section> and PREFIX.<section>.server")
	var engines string
	fs.StringVar(&o.DB, "db", "", "PostgreSQL admin URL (postgres://user@host:port/postgres?sslmode=disable): servers run on PostgreSQL, a fresh database each (C collation); empty: SQLite")
	fs.IntVar(&o.Instances, "instances", 1, "fieldsync processes on the -db database behind an in-process round-robin proxy (more than 1 needs -db)")
	fs.StringVar(&engines, "engines", "", "run the sections on each of these setups and compare them (sqlite, pg1, pg3: N instances on PostgreSQL; needs -db for pgN); -json then writes the comparison")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected arguments %v", fs.Args())
	}
	if _, err := fmt.Sscanf(p7dims, "%dx%d", &o.P7PhotoW, &o.P7PhotoH); err != nil || o.P7PhotoW < 16 || o.P7PhotoH < 16 {
		return fmt.Errorf("bench: -p7-photo-size %q: want WxH, at least 16x16", p7dims)
	}
	o.Only, o.Skip, o.Engines = sectionAliases(splitList(only)), sectionAliases(splitList(skip)), splitList(engines)
	for _, s := range append(slices.Clone(o.Only), o.Skip...) {
		if !slices.Contains(benchSections, s) {
			return fmt.Errorf("bench: unknown section %q (%s)", s, strings.Join(benchSections, ","))
		}
	}
	if o.Instances > 1 && o.DB == "" {
		return fmt.Errorf("bench: -instances %d: %w", o.Instances, errNoPostgres)
	}
	if len(o.Engines) > 0 {
		return engineCmd(ctx, o, stdout)
	}
	rep, err := runBench(ctx, o, stdout)
	if o.JSON != "" {
		data, jerr := json.MarshalIndent(rep, "", "  ")
		if jerr == nil {
			jerr = os.WriteFile(o.JSON, append(data, '\n'), 0o644)
		}
		if jerr != nil {
			return errors.Join(err, jerr)
		}
		fmt.Fprintf(stdout, "\nwrote %s\n", o.JSON)
	}
	return err
}

// sectionAliases maps p2 and p3 to the section that measures them (p23).
func sectionAliases(names []string) []string {
	var out []string
	for _, n := range names {
		if n == "p2" || n == "p3" {
			n = "p23"
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// startLocal starts a section's server on the bench's database setup
// (SQLite, or -db with -instances) and remembers a PostgreSQL database it
// created, to drop at the end unless -keep.
func (b *bench) startLocal(ctx context.Context, o localOptions) (*server, error) {
	if o.PGURL == "" {
		o.DB = b.o.DB
	}
	if o.DB != "" || o.PGURL != "" {
		o.Instances = max(1, b.o.Instances)
	}
	srv, err := startLocal(ctx, o)
	if err != nil {
		return nil, err
	}
	if srv.dropDB != nil {
		b.mu.Lock()
		b.drops = append(b.drops, srv.dropDB)
		b.mu.Unlock()
	}
	return srv, nil
}

// dropDatabases drops the PostgreSQL databases the sections created,
// unless -keep.
func (b *bench) dropDatabases() {
	if b.o.Keep {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, drop := range b.drops {
		if err := drop(ctx); err != nil {
			b.logf("%v", err)
		}
	}
	b.drops = nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// runBench runs the selected sections and prints the table. A section
// that fails leaves its figures at -1 and the others still run.
func runBench(ctx context.Context, o benchOptions, out io.Writer) (benchReport, error) {
	b, err := runSections(ctx, o, out)
	return b.rep, err
}

// runSections runs the selected sections and prints the table; it returns
// the bench with its figures and notes.
func runSections(ctx context.Context, o benchOptions, out io.Writer) (*bench, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	b := &bench{o: o, rep: newBenchReport(), out: out, notes: map[string]string{}}
	defer b.dropDatabases()
	defer b.stopS3()
	work := o.WorkDir
	if work == "" {
		dir, err := os.MkdirTemp("", "fieldsim-bench-")
		if err != nil {
			return b, err
		}
		work = dir
		if !o.Keep {
			defer os.RemoveAll(dir)
		}
	}
	b.work = work
	b.devices = filepath.Join(work, "phones")
	if o.DeviceDir != "" {
		dir, err := os.MkdirTemp(o.DeviceDir, "fieldsim-phones-")
		if err != nil {
			return b, fmt.Errorf("bench: -device-dir: %w", err)
		}
		b.devices = dir
		if !o.Keep {
			defer os.RemoveAll(dir)
		}
	}
	fmt.Fprintf(out, "fieldsim bench: simulated phones' databases in %s\n", b.devices)
	fmt.Fprintf(out, "fieldsim bench: %s, %d CPUs, Go %s; work folder %s\n", runtime.GOOS+"/"+runtime.GOARCH, runtime.NumCPU(), runtime.Version(), work)
	if o.DB != "" {
		fmt.Fprintf(out, "fieldsim bench: servers on PostgreSQL (%s), %d instance(s) each\n", redactURL(o.DB), max(1, o.Instances))
	}
	run := map[string]func(context.Context) error{
		"p6": b.p6, "f1": b.f1, "p1": b.p1, "p7": b.p7, "p7photos": b.p7Photos, "p8": b.p8, "p4": b.p4, "tusds3": b.tusdS3,
		"p23": b.p23, "p2l": b.p2Large, "neardup": b.neardup,
	}
	var failed []string
	for _, name := range benchSections {
		if (len(o.Only) > 0 && !slices.Contains(o.Only, name)) || slices.Contains(o.Skip, name) {
			continue
		}
		if ctx.Err() != nil {
			failed = append(failed, name+": "+ctx.Err().Error())
			break
		}
		fmt.Fprintf(out, "\n== %s\n", name)
		t0 := time.Now()
		if err := run[name](ctx); err != nil {
			fmt.Fprintf(out, "  %s FAILED: %v\n", name, err)
			failed = append(failed, name+": "+err.Error())
		}
		fmt.Fprintf(out, "  (%s took %v)\n", name, time.Since(t0).Round(time.Second))
	}
	b.printTable(out)
	if len(failed) > 0 {
		return b, fmt.Errorf("bench: %d section(s) failed: %s", len(failed), strings.Join(failed, "; "))
	}
	return b, nil
}

// round keeps a figure readable: 2 decimals, or 3 significant digits
// below 1.
func round(v float64) float64 {
	if v < 0 || v == 0 {
		return v
	}
	if v < 1 {
		p := math.Pow(10, 2-math.Floor(math.Log10(v)))
		return math.Round(v*p) / p
	}
	return math.Round(v*100) / 100
}

func (b *bench) printTable(w io.Writer) {
	r := b.rep
	val := func(v float64) string {
		if v < 0 {
			return "-"
		}
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	// ratioPrec gives a ÷ c with prec decimals ("-" when not measured).
	ratioPrec := func(a, c float64, prec int) string {
		if a < 0 || c <= 0 {
			return "-"
		}
		return strconv.FormatFloat(a/c, 'f', prec, 64)
	}
	ratio := func(a, c float64) string { return ratioPrec(a, c, 2) }
	goal := func(ok bool, have bool, s string) string {
		switch {
		case !have:
			return s
		case ok:
			return s + "  ok"
		}
		return s + "  SHORT"
	}
	t := &table{}
	t.add("metric", "value", "unit", "comparison / goal", "how")
	row := func(key string, v float64, unit, cmp string) {
		t.add(key, val(v), unit, cmp, b.notes[key])
	}
	p1ok := r.P1VisitsPerS >= 0 && r.P1RawSQLiteRowsPerS > 0
	// ok and SHORT judge issue 17's floors where it set one (p1, p4 local,
	// p8: near its bound, so to three decimals), the earlier issues' goals
	// elsewhere.
	row("p1_visits_per_s", r.P1VisitsPerS, "visits/s", goal(p1ok && r.P1VisitsPerS >= 0.6*r.P1RawSQLiteRowsPerS, p1ok,
		"÷ raw = "+ratio(r.P1VisitsPerS, r.P1RawSQLiteRowsPerS)+" (issue 17 floor ≥ 0.6, goal 1.0)"))
	row("p1_raw_sqlite_rows_per_s", r.P1RawSQLiteRowsPerS, "rows/s", "the limit")
	row("p2_first_pull_ms_10k", r.P2FirstPullMs10k, "ms", "")
	row("p2_first_pull_bytes_10k", r.P2FirstPullBytes10k, "bytes", perUnit(r.P2FirstPullBytes10k, float64(b.o.P2Households), "B/household"))
	row("p2_first_pull_ms_100k", r.P2FirstPullMs100k, "ms", goal(r.P2FirstPullMs100k >= 0 && r.P2FirstPullMs100k <= 10_000, r.P2FirstPullMs100k >= 0,
		"issue 17 floor ≤ 10000 ms"))
	row("p2_first_pull_bytes_100k", r.P2FirstPullBytes100k, "bytes", goal(r.P2FirstPullBytes100k >= 0 && r.P2FirstPullBytes100k <= 15e6, r.P2FirstPullBytes100k >= 0,
		perUnit(r.P2FirstPullBytes100k, float64(b.o.P2Large), "B/household")+" (issue 17 floor ≤ 15 MB)"))
	row("p3_noop_pull_p99_ms_10k", r.P3NoopPullP99Ms10k, "ms", "")
	p3ok := r.P3NoopPullP99Ms1m >= 0 && r.P3NoopPullP99Ms10k > 0
	row("p3_noop_pull_p99_ms_1m", r.P3NoopPullP99Ms1m, "ms", goal(p3ok && r.P3NoopPullP99Ms1m <= 1.5*r.P3NoopPullP99Ms10k, p3ok,
		"1m ÷ 10k = "+ratio(r.P3NoopPullP99Ms1m, r.P3NoopPullP99Ms10k)+" (goal ≤ 1.5)"))
	p4ok := r.P4UploadMBsLocal >= 0 && r.P4UploadMBsTusd > 0
	row("p4_upload_mb_s_local", r.P4UploadMBsLocal, "MB/s", goal(p4ok && r.P4UploadMBsLocal >= 0.8*r.P4UploadMBsTusd, p4ok,
		"÷ tusd = "+ratio(r.P4UploadMBsLocal, r.P4UploadMBsTusd)+" (issue 17 floor ≥ 0.8, goal 1.0)"))
	s3ok := r.P4UploadMBsS3 >= 0 && r.P4UploadMBsTusdS3 > 0
	row("p4_upload_mb_s_s3", r.P4UploadMBsS3, "MB/s", goal(s3ok && r.P4UploadMBsS3 >= r.P4UploadMBsTusdS3, s3ok,
		"÷ tusd s3 = "+ratio(r.P4UploadMBsS3, r.P4UploadMBsTusdS3)+" (issue 17 floor ≥ 1.0)"))
	row("p4_upload_mb_s_tusd", r.P4UploadMBsTusd, "MB/s", "peer: tusd "+tusdVersion+", filestore (never fsyncs)")
	row("p4_upload_mb_s_tusd_s3", r.P4UploadMBsTusdS3, "MB/s", "peer: tusd "+tusdVersion+", s3store on the same S3 server")
	row("p5_resent_ratio", r.P5ResentRatio, "", goal(r.P5ResentRatio >= 0 && r.P5ResentRatio <= 1.02, r.P5ResentRatio >= 0, "goal ≤ 1.02"))
	row("p6_bytes_per_visit", r.P6BytesPerVisit, "B", goal(r.P6BytesPerVisit >= 0 && r.P6BytesPerVisit <= 250, r.P6BytesPerVisit >= 0,
		"÷ OpenRosa = "+ratio(r.P6BytesPerVisit, r.P6OpenRosaBytesPerVisit)+" (goal ≤ 250 B)"))
	row("p6_openrosa_bytes_per_visit", r.P6OpenRosaBytesPerVisit, "B", "peer: ODK Collect instance XML")
	row("p7_rss_mb_peak", r.P7RSSMBPeak, "MiB", goal(r.P7RSSMBPeak >= 0 && r.P7RSSMBPeak <= 150, r.P7RSSMBPeak >= 0, "goal ≤ 150"))
	row("p7_rss_mb_peak_photos", r.P7RSSMBPeakPhotos, "MiB", goal(r.P7RSSMBPeakPhotos >= 0 && r.P7RSSMBPeakPhotos <= 120, r.P7RSSMBPeakPhotos >= 0,
		"issue 17 floor ≤ 120"))
	p8ok := r.P8Sync20kS >= 0 && r.P8PouchDB20kS > 0
	row("p8_sync_20k_s", r.P8Sync20kS, "s", goal(p8ok && r.P8Sync20kS <= 0.3*r.P8PouchDB20kS, p8ok,
		"÷ PouchDB = "+ratioPrec(r.P8Sync20kS, r.P8PouchDB20kS, 3)+" (issue 17 floor ≤ 0.3, goal 0.2)"))
	row("p8_pouchdb_20k_s", r.P8PouchDB20kS, "s", "peer: pouchdb "+pouchdbVersion+" → pouchdb-server "+pouchSrvVer)
	row("f1_2g_visits_s", r.F12GVisitsS, "s", "")
	row("f1_2g_photos_ratio", r.F12GPhotosRatio, "", goal(r.F12GPhotosRatio >= 0 && r.F12GPhotosRatio <= 1.1, r.F12GPhotosRatio >= 0,
		"issue 17 floor ≤ 1.1 (250 KB photos)"))
	row("neardup_check_us_1m", r.NeardupCheckUs1m, "µs", goal(r.NeardupCheckUs1m >= 0 && r.NeardupCheckUs1m <= 1000, r.NeardupCheckUs1m >= 0,
		"issue 17 floor ≤ 1000 µs"))
	row("neardup_recall", r.NeardupRecall, "", "transformed copies found (crops ≤ 10%, resizing, re-encoding)")
	row("neardup_false_positives", r.NeardupFalsePositives, "", "share of unrelated pairs flagged")
	fmt.Fprintln(w, "\n== report")
	t.print(w)
	if len(b.extra) > 0 {
		fmt.Fprintln(w, "\nalso measured:")
		for _, l := range b.extra {
			fmt.Fprintln(w, "  "+l)
		}
	}
}

func perUnit(v, n float64, unit string) string {
	if v < 0 || n <= 0 {
		return ""
	}
	return fmt.Sprintf("%.0f %s", v/n, unit)
}

// serverProfile names the files a section's server writes its profiles
// of the timed phase to: PREFIX.SECTION.server for each profile asked for.
func (b *bench) serverProfile(section string) serverProfile {
	name := func(prefix string) string {
		if prefix == "" {
			return ""
		}
		if abs, err := filepath.Abs(prefix); err == nil {
			prefix = abs
		}
		return prefix + "." + section + ".server"
	}
	return serverProfile{CPU: name(b.o.CPUProfile), Trace: name(b.o.Trace), Mem: name(b.o.MemProfile)}
}

// profileServer has a fieldsync subprocess started with profile files
// profile from now on (SIGUSR1); the function it returns ends that
// (SIGUSR2) and waits, at most 30 s, until the server has written them.
func (b *bench) profileServer(srv *server) func() {
	files := []string{srv.profile.CPU, srv.profile.Trace, srv.profile.Mem}
	files = slices.DeleteFunc(files, func(f string) bool { return f == "" })
	if len(files) == 0 || srv.pid <= 0 {
		return func() {}
	}
	for _, f := range files {
		os.Remove(f) // a file that appears is this phase's
	}
	if err := syscall.Kill(srv.pid, syscall.SIGUSR1); err != nil {
		b.logf("server profile: %v", err)
		return func() {}
	}
	return func() {
		if err := syscall.Kill(srv.pid, syscall.SIGUSR2); err != nil {
			b.logf("server profile: %v", err)
			return
		}
		deadline := time.Now().Add(30 * time.Second)
		for _, f := range files {
			for {
				if _, err := os.Stat(f); err == nil {
					b.logf("profile of the fieldsync subprocess in the timed phase: %s", f)
					break
				}
				if time.Now().After(deadline) {
					b.logf("server profile: %s not written in 30 s (see %s)", f, srv.logFile)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
}
