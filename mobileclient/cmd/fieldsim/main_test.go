package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fieldsync/mobileclient/linkproxy"
)

// TestRun_CountyEveningSmoke is the simulator's smoke run in the test
// suite: `fieldsim run -scenario county-evening -devices 3 -visits 5` with
// a small photo per device, called in-process. It checks, in the server's
// own SQLite file, that every visit recorded on the devices is there
// exactly once, and that the photos arrived with the EXIF GPS and time
// the server reads from them (the run itself downloads each photo back
// and re-hashes it).
func TestRun_CountyEveningSmoke(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var out bytes.Buffer
	err := run(context.Background(), []string{"run", "-scenario", "county-evening", "-devices", "3", "-visits", "5",
		"-photo-bytes", "6000", "-photos", "1", "-dir", dir, "-timeout", "2m"}, &out, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, want := range []string{"visits recorded / acknowledged              15 / 15", "exactly once", "downloads whole and hashes to its sha256"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	// The server has stopped; read its database directly.
	db, err := openServerDB(serverDBPath(filepath.Join(dir, "server")))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var total, distinct, devices int
	err = db.QueryRow(`SELECT count(*), count(DISTINCT v.id), count(DISTINCT v.device_id) FROM visits v
		JOIN devices d ON d.id = v.device_id WHERE d.name LIKE 'fieldsim-%'`).Scan(&total, &distinct, &devices)
	if err != nil {
		t.Fatal(err)
	}
	if total != 15 || distinct != 15 || devices != 3 {
		t.Fatalf("server holds %d visit rows (%d distinct) from %d devices, want 15 (15) from 3", total, distinct, devices)
	}
	var refs, present, gps, taken int
	err = db.QueryRow(`SELECT count(*), count(b.sha256), count(b.exif_lat), count(b.exif_time) FROM visit_evidence ve
		JOIN visits v ON v.id = ve.visit_id JOIN devices d ON d.id = v.device_id
		LEFT JOIN blobs b ON b.sha256 = ve.sha256 AND b.size = ve.size WHERE d.name LIKE 'fieldsim-%'`).Scan(&refs, &present, &gps, &taken)
	if err != nil {
		t.Fatal(err)
	}
	if refs < 2 || refs > 3 || present != refs || gps != refs || taken != refs {
		t.Fatalf("photos: %d referenced (want 2 or 3), %d present, %d with EXIF GPS, %d with EXIF time", refs, present, gps, taken)
	}
}

// TestScenarios_Faults runs the scenarios in small sizes, county-evening
// over a link that cuts, resets, stalls and drops committed answers.
func TestScenarios_Faults(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	t.Parallel()
	flaky := *linkProfiles["flaky"]
	flaky.CutRandomBytes = 16 << 10
	flaky.DropResponseEvery = 2
	flaky.StallEvery, flaky.StallFor = 300*time.Millisecond, 100*time.Millisecond
	fast2G := *linkProfiles["2g"]
	fast2G.CutEvery = 2 * time.Second
	// Photos need longer spells between cuts: after a cut the library asks
	// for the offset (HEAD, a new connection: two round trips, 1.6 s here)
	// before it sends more, so a link that cuts every 2 s never lets a
	// PATCH body through.
	photo2G := *linkProfiles["2g"]
	photo2G.CutEvery = 6 * time.Second
	cases := []struct {
		name     string
		o        runOptions
		wantCuts bool
	}{
		{"county-evening flaky", runOptions{Scenario: "county-evening", Devices: 3, Visits: 25, Edits: 2, Link: &flaky,
			PhotoBytes: 40_000, MaxPhotos: 2}, true},
		{"2g-day", runOptions{Scenario: "2g-day", Visits: 8, Edits: 1, Link: &fast2G}, false},
		{"2g-day photos", runOptions{Scenario: "2g-day", Visits: 4, Edits: 1, Link: &photo2G, PhotoBytes: 8_000, MaxPhotos: 2}, false},
		{"reassign", runOptions{Scenario: "reassign", Visits: 2, Edits: 1, Link: &linkproxy.Link{}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			tc.o.Out, tc.o.Timeout, tc.o.WorkDir, tc.o.Seed = &out, 2*time.Minute, t.TempDir(), 5
			tc.o.Backoff.Base, tc.o.Backoff.Max = 20*time.Millisecond, 200*time.Millisecond
			res, err := runScenario(context.Background(), tc.o)
			if res != nil {
				printResult(&out, res)
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			if res.Acked == 0 || len(res.Checks) < 2 {
				t.Fatalf("nothing checked:\n%s", out.String())
			}
			if tc.wantCuts && res.LinkStats.Cuts == 0 {
				t.Fatalf("the flaky link never cut:\n%s", out.String())
			}
			if tc.o.PhotoBytes > 0 && (res.Photos == 0 || res.BlobsUploaded+res.BlobsPresent != res.Photos) {
				t.Fatalf("%d photos attached, %d uploaded, %d present:\n%s", res.Photos, res.BlobsUploaded, res.BlobsPresent, out.String())
			}
			t.Log("\n" + out.String())
		})
	}
}

// TestBench_Mini runs the benchmark sections that need no peer (tusd,
// node, the go tool) at toy sizes, so the bench command keeps working.
func TestBench_Mini(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	t.Parallel()
	var out bytes.Buffer
	o := benchOptions{
		Only: []string{"p6", "p1", "p7photos", "p23", "p2l"}, WorkDir: t.TempDir(), Timeout: 4 * time.Minute, Seed: 1, MaxSyncs: 5,
		P1Devices: 3, P1Visits: 20, P2Households: 300, P2Large: 700, P3Pulls: 10, P3Total: 2000, P3Batch: 500, P4Bytes: 50_000,
		P7PhotoW: 1600, P7PhotoH: 1200,
	}
	o.CPUProfile = filepath.Join(o.WorkDir, "cpu")
	rep, err := runBench(context.Background(), o, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for name, v := range map[string]float64{
		"p1": rep.P1VisitsPerS, "p1 raw": rep.P1RawSQLiteRowsPerS, "p2 ms": rep.P2FirstPullMs10k, "p2 bytes": rep.P2FirstPullBytes10k,
		"p3 10k": rep.P3NoopPullP99Ms10k, "p3 1m": rep.P3NoopPullP99Ms1m, "p6": rep.P6BytesPerVisit, "p6 openrosa": rep.P6OpenRosaBytesPerVisit,
		"p2 large ms": rep.P2FirstPullMs100k, "p2 large bytes": rep.P2FirstPullBytes100k, "p7 photos": rep.P7RSSMBPeakPhotos,
	} {
		if v <= 0 {
			t.Errorf("%s = %v\n%s", name, v, out.String())
		}
	}
	if rep.P8Sync20kS != -1 || rep.P4UploadMBsLocal != -1 {
		t.Errorf("sections that did not run must report -1")
	}
	// -cpuprofile: the fieldsync subprocess profiled its timed phases too.
	if rep.P2FirstPullBytes100k <= rep.P2FirstPullBytes10k {
		t.Errorf("the first pull of 700 households took %v B, of 300 %v B\n%s", rep.P2FirstPullBytes100k, rep.P2FirstPullBytes10k, out.String())
	}
	if !strings.Contains(out.String(), "2 got a perceptual hash") {
		t.Errorf("p7photos: the server did not hash both photos\n%s", out.String())
	}
	for _, f := range []string{"cpu.p1.server", "cpu.p2.server", "cpu.p2l.server"} {
		data, err := os.ReadFile(filepath.Join(o.WorkDir, f))
		if err != nil || len(data) < 2 || data[0] != 0x1f || data[1] != 0x8b {
			t.Errorf("server CPU profile %s: %d bytes, %v\n%s", f, len(data), err, out.String())
		}
	}
}

// TestBench_MiniEngines runs the SQLite vs PostgreSQL comparison (p1,
// p2/p3 and p4 on the S3 store, on sqlite, pg1 and pg3 behind the
// round-robin proxy) at toy sizes, and checks every figure of every setup
// was measured. It needs the test script's PostgreSQL and S3 server.
func TestBench_MiniEngines(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	pg := os.Getenv("FIELDSYNC_TEST_PG_URL")
	if pg == "" || os.Getenv(envS3Endpoint) == "" {
		if os.Getenv("FIELDSYNC_REQUIRE_S3") == "1" {
			t.Fatal("FIELDSYNC_TEST_PG_URL or " + envS3Endpoint + " is not set (run through bash .ci/test)")
		}
		t.Skip("needs FIELDSYNC_TEST_PG_URL and " + envS3Endpoint + " (bash .ci/test sets them)")
	}
	t.Parallel()
	var out bytes.Buffer
	dir := t.TempDir()
	o := benchOptions{
		Engines: []string{"sqlite", "pg1", "pg3"}, DB: pg, JSON: filepath.Join(dir, "engines.json"),
		WorkDir: dir, DeviceDir: "", CacheDir: t.TempDir(), Timeout: 2 * time.Minute, Seed: 1, MaxSyncs: 5,
		P1Devices: 3, P1Visits: 10, P2Households: 200, P3Pulls: 10, P4Photos: 3, P4Bytes: 20_000, P4Uploaders: 2,
	}
	if err := engineCmd(context.Background(), o, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	data, err := os.ReadFile(o.JSON)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Engines []map[string]any `json:"engines"`
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range rep.Engines {
		names = append(names, fmt.Sprint(e["name"]))
		for _, k := range []string{"p1_visits_per_s", "p2_first_pull_ms_10k", "p3_noop_pull_p99_ms_10k", "p4_upload_mb_s_s3"} {
			if v, ok := e[k].(float64); !ok || v <= 0 {
				t.Errorf("%s: %s = %v\n%s", e["name"], k, e[k], out.String())
			}
		}
	}
	if strings.Join(names, ",") != "sqlite,pg1,pg3" {
		t.Errorf("engines in the JSON: %v", names)
	}
	if !strings.Contains(out.String(), "== SQLite vs PostgreSQL") {
		t.Errorf("no comparison table:\n%s", out.String())
	}
	t.Log("\n" + out.String())
}

// TestBench_Uploads runs p4's measurements at toy sizes: tusd's filestore
// and our endpoint with the local store in turn (installing tusd into the
// user's cache folder on first use, as the bench does), our endpoint with
// S3 when the test script provides one, and p5.
func TestBench_Uploads(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	t.Parallel()
	var out bytes.Buffer
	b := &bench{o: benchOptions{Seed: 3, MaxSyncs: 5, P4Photos: 4, P4Bytes: 30_000, P4Uploaders: 2, CacheDir: defaultCacheDir()},
		rep: newBenchReport(), out: &out, notes: map[string]string{}, work: t.TempDir(), devices: t.TempDir()}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	sets := [][]Photo{}
	for r := 0; r < 2; r++ {
		set, err := b.uploadPhotos(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		sets = append(sets, set)
	}
	failed := func(what string, err error, keys ...string) { t.Errorf("%s: %v (%v)", what, err, keys) }
	if err := b.p4Local(ctx, sets, "test", failed); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if b.rep.P4UploadMBsTusd <= 0 || !strings.Contains(b.notes["p4_upload_mb_s_local"], "in turn") {
		t.Errorf("tusd %v, note %q", b.rep.P4UploadMBsTusd, b.notes["p4_upload_mb_s_local"])
	}
	if os.Getenv(envS3Endpoint) != "" {
		if err := b.p4S3(ctx, sets, "test"); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		if b.rep.P4UploadMBsS3 <= 0 {
			t.Errorf("p4 s3 = %v", b.rep.P4UploadMBsS3)
		}
	}
	if err := b.p5(ctx); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if b.rep.P4UploadMBsLocal <= 0 || b.rep.P5ResentRatio < 1 {
		t.Fatalf("p4 local %v, p5 %v\n%s", b.rep.P4UploadMBsLocal, b.rep.P5ResentRatio, out.String())
	}
	t.Log("\n" + out.String())
}

// TestBench_TusdS3 runs the tusd s3store peer at toy sizes on the test
// script's S3 server (installing tusd into the user's cache folder on
// first use, as the bench does).
func TestBench_TusdS3(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	if os.Getenv(envS3Endpoint) == "" {
		if os.Getenv("FIELDSYNC_REQUIRE_S3") == "1" {
			t.Fatal(envS3Endpoint + " is not set (run through bash .ci/test)")
		}
		t.Skip("needs " + envS3Endpoint + " (bash .ci/test sets it)")
	}
	t.Parallel()
	var out bytes.Buffer
	b := &bench{o: benchOptions{Seed: 4, P4Photos: 4, P4Bytes: 30_000, P4Uploaders: 2, CacheDir: defaultCacheDir()},
		rep: newBenchReport(), out: &out, notes: map[string]string{}, work: t.TempDir(), devices: t.TempDir()}
	defer b.stopS3()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if err := b.tusdS3(ctx); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if b.rep.P4UploadMBsTusdS3 <= 0 || !strings.Contains(b.notes["p4_upload_mb_s_tusd_s3"], os.Getenv(envS3Endpoint)) {
		t.Errorf("tusd s3 = %v, note %q\n%s", b.rep.P4UploadMBsTusdS3, b.notes["p4_upload_mb_s_tusd_s3"], out.String())
	}
	t.Log("\n" + out.String())
}

// TestBench_Neardup runs the near-duplicate index's benchmarks through go
// test (a few iterations) and checks the figures were parsed.
func TestBench_Neardup(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	t.Parallel()
	var out bytes.Buffer
	b := &bench{o: benchOptions{NeardupBenchtime: "20x"}, rep: newBenchReport(), out: &out, notes: map[string]string{}, work: t.TempDir()}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if err := b.neardup(ctx); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	r := b.rep
	if r.NeardupCheckUs1m <= 0 || r.NeardupRecall < 0 || r.NeardupRecall > 1 || r.NeardupFalsePositives < 0 || r.NeardupFalsePositives > 1 {
		t.Errorf("check %v µs, recall %v, false positives %v\n%s", r.NeardupCheckUs1m, r.NeardupRecall, r.NeardupFalsePositives, out.String())
	}
	t.Log("\n" + out.String())
}

func TestParseGoBench(t *testing.T) {
	out := []byte(`goos: linux
BenchmarkHashIndex_Near/index/n=1000000-2         	    2000	     41234 ns/op
BenchmarkHashIndex_Near/scan/n=1000000            	     100	   1234567 ns/op
BenchmarkNearDuplicate_RecallAndFalsePositives-16 	       1	9876543210 ns/op	         0.0001000 false-positive-pairs	         0.9800 recall:re-encoded_q40
PASS
`)
	got := parseGoBench(out)
	if v := got["BenchmarkHashIndex_Near/index/n=1000000"]["ns/op"]; v != 41234 {
		t.Errorf("index ns/op = %v (%v)", v, got)
	}
	if v := got["BenchmarkHashIndex_Near/scan/n=1000000"]["ns/op"]; v != 1234567 {
		t.Errorf("scan ns/op = %v (%v)", v, got)
	}
	m := got["BenchmarkNearDuplicate_RecallAndFalsePositives"]
	if m["false-positive-pairs"] != 0.0001 || m["recall:re-encoded_q40"] != 0.98 {
		t.Errorf("metrics %v", m)
	}
	if len(got) != 3 {
		t.Errorf("%d benchmarks: %v", len(got), got)
	}
}

// TestBenchReport_Keys checks the JSON keys are exactly issues 7's and 17's.
func TestBenchReport_Keys(t *testing.T) {
	data, err := json.Marshal(newBenchReport())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]float64
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	want := []string{"p1_visits_per_s", "p1_raw_sqlite_rows_per_s", "p2_first_pull_ms_10k", "p2_first_pull_bytes_10k",
		"p3_noop_pull_p99_ms_10k", "p3_noop_pull_p99_ms_1m", "p4_upload_mb_s_local", "p4_upload_mb_s_s3", "p4_upload_mb_s_tusd",
		"p5_resent_ratio", "p6_bytes_per_visit", "p6_openrosa_bytes_per_visit", "p7_rss_mb_peak", "p8_sync_20k_s",
		"p8_pouchdb_20k_s", "f1_2g_visits_s", "f1_2g_photos_ratio",
		"p4_upload_mb_s_tusd_s3", "p2_first_pull_ms_100k", "p2_first_pull_bytes_100k", "p7_rss_mb_peak_photos",
		"neardup_check_us_1m", "neardup_recall", "neardup_false_positives"}
	if len(m) != len(want) {
		t.Fatalf("%d keys, want %d: %v", len(m), len(want), m)
	}
	for _, k := range want {
		if v, ok := m[k]; !ok || v != -1 {
			t.Errorf("key %s: %v, %v", k, v, ok)
		}
	}
}
