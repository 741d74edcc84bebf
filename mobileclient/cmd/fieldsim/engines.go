package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// fieldsim bench -engines sqlite,pg1,pg3 runs the same sections (by
// default p1, p2/p3 and p4 with the S3 store) once per setup in one
// process, one after the other on the same machine, and reports the
// figures side by side (issue 15's closing figures):
//
//   - sqlite: one fieldsync subprocess on its SQLite file;
//   - pg1: one fieldsync subprocess on a fresh PostgreSQL database;
//   - pgN: N fieldsync subprocesses on one fresh PostgreSQL database,
//     one S3 bucket and one partial-uploads folder, behind fieldsim's
//     round-robin proxy (rrproxy.go); the devices talk to the proxy.

// engineSetup is one setup of -engines.
type engineSetup struct {
	Name      string `json:"name"`
	Database  string `json:"database"` // "sqlite" or "postgresql"
	Instances int    `json:"instances"`
}

// parseEngine reads sqlite, pg (= pg1) or pgN.
func parseEngine(s string) (engineSetup, error) {
	switch {
	case s == "sqlite":
		return engineSetup{Name: s, Database: "sqlite", Instances: 1}, nil
	case s == "pg":
		return engineSetup{Name: "pg1", Database: "postgresql", Instances: 1}, nil
	case strings.HasPrefix(s, "pg"):
		n, err := strconv.Atoi(strings.TrimPrefix(s, "pg"))
		if err != nil || n < 1 || n > 16 {
			return engineSetup{}, fmt.Errorf("engine %q: want sqlite, pg1 … pg16", s)
		}
		return engineSetup{Name: s, Database: "postgresql", Instances: n}, nil
	}
	return engineSetup{}, fmt.Errorf("engine %q: want sqlite, pg1 … pg16", s)
}

// engineFigures are one setup's figures (issue 7's keys; -1: not
// measured, the notes say why).
type engineFigures struct {
	engineSetup
	P1VisitsPerS       float64           `json:"p1_visits_per_s"`
	P2FirstPullMs10k   float64           `json:"p2_first_pull_ms_10k"`
	P3NoopPullP99Ms10k float64           `json:"p3_noop_pull_p99_ms_10k"`
	P4UploadMBsS3      float64           `json:"p4_upload_mb_s_s3"`
	Seconds            float64           `json:"seconds"`
	Notes              map[string]string `json:"notes"`
	Error              string            `json:"error,omitempty"`
}

// engineReport is the JSON file of `fieldsim bench -engines ... -json`.
type engineReport struct {
	Date     string          `json:"date"`
	Machine  string          `json:"machine"`
	CPUs     int             `json:"cpus"`
	Go       string          `json:"go"`
	Sizes    map[string]int  `json:"sizes"`
	Sections []string        `json:"sections"`
	Engines  []engineFigures `json:"engines"`
}

// engineCmd runs o's sections on each of o.Engines and writes the
// comparison (a table, and o.JSON).
func engineCmd(ctx context.Context, o benchOptions, out io.Writer) error {
	rep, err := runEngines(ctx, o, out)
	if o.JSON != "" {
		data, jerr := json.MarshalIndent(rep, "", "  ")
		if jerr == nil {
			jerr = os.WriteFile(o.JSON, append(data, '\n'), 0o644)
		}
		if jerr != nil {
			return errors.Join(err, jerr)
		}
		fmt.Fprintf(out, "\nwrote %s\n", o.JSON)
	}
	return err
}

// runEngines runs the sections once per setup. A setup that fails keeps
// its figures at -1 and the others still run.
func runEngines(ctx context.Context, o benchOptions, out io.Writer) (engineReport, error) {
	var setups []engineSetup
	for _, e := range o.Engines {
		s, err := parseEngine(e)
		if err != nil {
			return engineReport{}, fmt.Errorf("bench: %w", err)
		}
		if s.Database == "postgresql" && o.DB == "" {
			return engineReport{}, fmt.Errorf("bench: engine %s: %w", s.Name, errNoPostgres)
		}
		setups = append(setups, s)
	}
	if len(o.Only) == 0 {
		o.Only = []string{"p1", "p23", "p4"}
	}
	for _, s := range o.Only {
		if !slices.Contains([]string{"p1", "p23", "p4"}, s) {
			return engineReport{}, fmt.Errorf("bench: -engines compares p1, p2, p3 and p4, not %s", s)
		}
	}
	o.P4S3Only = true // P4 of the comparison is the S3 store's
	o.P3Total = 0     // P3 of the comparison is the no-op pull at the scope's size
	work := o.WorkDir
	if work == "" {
		dir, err := os.MkdirTemp("", "fieldsim-engines-")
		if err != nil {
			return engineReport{}, err
		}
		work = dir
		if !o.Keep {
			defer os.RemoveAll(dir)
		}
	}
	rep := engineReport{
		Date:    time.Now().In(cst).Format("2006-01-02 15:04 MST (UTC-07:00)"),
		Machine: machine(),
		CPUs:    runtime.NumCPU(),
		Go:      runtime.Version(),
		Sizes: map[string]int{"p1_devices": o.P1Devices, "p1_visits_per_device": o.P1Visits, "p2_households": o.P2Households,
			"p3_pulls": o.P3Pulls, "p4_photos": o.P4Photos, "p4_bytes": o.P4Bytes, "p4_uploaders": o.P4Uploaders, "p4_rounds": p4Rounds},
		Sections: o.Only,
	}
	var errs []error
	for _, s := range setups {
		so := o
		so.Engines = nil
		so.WorkDir = filepath.Join(work, s.Name)
		so.DB, so.Instances = "", 1
		if s.Database == "postgresql" {
			so.DB, so.Instances = o.DB, s.Instances
		}
		if err := os.MkdirAll(so.WorkDir, 0o750); err != nil {
			return rep, err
		}
		fmt.Fprintf(out, "\n######## %s: %s, %d instance(s)\n", s.Name, s.Database, s.Instances)
		t0 := time.Now()
		b, err := runSections(ctx, so, out)
		f := engineFigures{engineSetup: s, P1VisitsPerS: b.rep.P1VisitsPerS, P2FirstPullMs10k: b.rep.P2FirstPullMs10k,
			P3NoopPullP99Ms10k: b.rep.P3NoopPullP99Ms10k, P4UploadMBsS3: b.rep.P4UploadMBsS3,
			Seconds: round(time.Since(t0).Seconds()), Notes: map[string]string{}}
		for _, k := range []string{"p1_visits_per_s", "p2_first_pull_ms_10k", "p3_noop_pull_p99_ms_10k", "p4_upload_mb_s_s3"} {
			if n, ok := b.notes[k]; ok {
				f.Notes[k] = n
			}
		}
		if err != nil {
			f.Error = err.Error()
			errs = append(errs, fmt.Errorf("%s: %w", s.Name, err))
		}
		rep.Engines = append(rep.Engines, f)
	}
	printEngines(out, rep)
	return rep, errors.Join(errs...)
}

// printEngines prints the comparison: one row per figure, one column per
// setup, and each PostgreSQL setup ÷ SQLite.
func printEngines(w io.Writer, rep engineReport) {
	fmt.Fprintf(w, "\n== SQLite vs PostgreSQL (%s; %s, %d CPUs)\n", rep.Date, rep.Machine, rep.CPUs)
	t := &table{}
	head := []string{"figure", "unit"}
	for _, e := range rep.Engines {
		head = append(head, e.Name)
	}
	var base *engineFigures
	for i := range rep.Engines {
		if rep.Engines[i].Database == "sqlite" {
			base = &rep.Engines[i]
			break
		}
	}
	if base != nil {
		for _, e := range rep.Engines {
			if e.Database != "sqlite" {
				head = append(head, e.Name+" ÷ sqlite")
			}
		}
	}
	t.add(head...)
	rows := []struct {
		key, unit string
		get       func(engineFigures) float64
	}{
		{"p1_visits_per_s", "visits/s (more is better)", func(e engineFigures) float64 { return e.P1VisitsPerS }},
		{"p2_first_pull_ms_10k", "ms (less is better)", func(e engineFigures) float64 { return e.P2FirstPullMs10k }},
		{"p3_noop_pull_p99_ms_10k", "ms (less is better)", func(e engineFigures) float64 { return e.P3NoopPullP99Ms10k }},
		{"p4_upload_mb_s_s3", "MB/s (more is better)", func(e engineFigures) float64 { return e.P4UploadMBsS3 }},
	}
	for _, r := range rows {
		cells := []string{r.key, r.unit}
		for _, e := range rep.Engines {
			cells = append(cells, fmtFigure(r.get(e)))
		}
		if base != nil {
			for _, e := range rep.Engines {
				if e.Database == "sqlite" {
					continue
				}
				v, c := r.get(e), r.get(*base)
				if v < 0 || c <= 0 {
					cells = append(cells, "-")
				} else {
					cells = append(cells, fmt.Sprintf("%.2f", v/c))
				}
			}
		}
		t.add(cells...)
	}
	t.print(w)
	fmt.Fprintf(w, "sizes: %v\n", rep.Sizes)
	for _, e := range rep.Engines {
		if e.Error != "" {
			fmt.Fprintf(w, "%s FAILED: %s\n", e.Name, firstLine(e.Error))
		}
	}
}

func fmtFigure(v float64) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprintf("%g", v)
}

// machine names the CPU (/proc/cpuinfo's model name) and the memory.
func machine() string {
	model := runtime.GOOS + "/" + runtime.GOARCH
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
				if kb, err := strconv.Atoi(f[1]); err == nil {
					model += fmt.Sprintf(", %.0f GiB RAM", float64(kb)/(1<<20))
				}
			}
		}
	}
	return model
}
