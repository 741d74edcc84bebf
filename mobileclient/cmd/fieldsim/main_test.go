package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fieldsync/mobileclient/linkproxy"
)

// TestRun_CountyEveningSmoke is the simulator's smoke run in the test
// suite: `fieldsim run -scenario county-evening -devices 3 -visits 5`,
// called in-process. It checks, in the server's own SQLite file, that
// every visit recorded on the devices is there exactly once.
func TestRun_CountyEveningSmoke(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var out bytes.Buffer
	err := run(context.Background(), []string{"run", "-scenario", "county-evening", "-devices", "3", "-visits", "5",
		"-dir", dir, "-timeout", "2m"}, &out, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, want := range []string{"visits recorded / acknowledged       15 / 15", "exactly once"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	// The server has stopped; read its database directly.
	db, err := openServerDB(filepath.Join(dir, "server"))
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
	cases := []struct {
		name     string
		o        runOptions
		wantCuts bool
	}{
		{"county-evening flaky", runOptions{Scenario: "county-evening", Devices: 3, Visits: 25, Edits: 2, Link: &flaky}, true},
		{"2g-day", runOptions{Scenario: "2g-day", Visits: 8, Edits: 1, Link: &fast2G}, false},
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
		Only: []string{"p6", "p1", "p23"}, WorkDir: t.TempDir(), Timeout: 3 * time.Minute, Seed: 1, MaxSyncs: 5,
		P1Devices: 3, P1Visits: 20, P2Households: 300, P3Pulls: 10, P3Total: 2000, P3Batch: 500, P4Bytes: 50_000,
	}
	rep, err := runBench(context.Background(), o, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for name, v := range map[string]float64{
		"p1": rep.P1VisitsPerS, "p1 raw": rep.P1RawSQLiteRowsPerS, "p2 ms": rep.P2FirstPullMs10k, "p2 bytes": rep.P2FirstPullBytes10k,
		"p3 10k": rep.P3NoopPullP99Ms10k, "p3 1m": rep.P3NoopPullP99Ms1m, "p6": rep.P6BytesPerVisit, "p6 openrosa": rep.P6OpenRosaBytesPerVisit,
	} {
		if v <= 0 {
			t.Errorf("%s = %v\n%s", name, v, out.String())
		}
	}
	if rep.P8Sync20kS != -1 || rep.P4UploadMBsLocal != -1 {
		t.Errorf("sections that did not run must report -1")
	}
}

// TestBenchReport_Keys checks the JSON keys are exactly issue 7's.
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
		"p8_pouchdb_20k_s", "f1_2g_visits_s", "f1_2g_photos_ratio"}
	if len(m) != len(want) {
		t.Fatalf("%d keys, want %d: %v", len(m), len(want), m)
	}
	for _, k := range want {
		if v, ok := m[k]; !ok || v != -1 {
			t.Errorf("key %s: %v, %v", k, v, ok)
		}
	}
}
