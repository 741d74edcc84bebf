package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// --- neardup: the near-duplicate index's check at 1M hashes ---

// The Go benchmarks of server/evidence that neardup runs, through go test
// (a subprocess, as the server binary is built): fieldsim imports nothing
// under server.
const (
	neardupPkg = "./server/evidence/"
	// neardupIndexBench is one query of the index (and of the full scan it
	// replaced) against 1,000,000 stored random hashes.
	neardupIndexBench = `^BenchmarkHashIndex_Near$/^(index|scan)$/^n=1000000$`
	// neardupRecallBench reports recall per transform and the share of
	// unrelated pairs flagged (b.ReportMetric).
	neardupRecallBench = `^BenchmarkNearDuplicate_RecallAndFalsePositives$`
)

// neardupRecallSkip names the transforms beyond what issue 17 asks the
// check to survive (crops up to 10%): shown, not in neardup_recall.
var neardupRecallSkip = []string{"recall:centred_crop_20%"}

func (b *bench) neardup(ctx context.Context) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(b.path("neardup"), 0o750); err != nil {
		return err
	}
	bin := filepath.Join(b.path("neardup"), "evidence.test")
	build := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, neardupPkg)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go test -c %s: %w\n%s", neardupPkg, err, out)
	}
	benchtime := b.o.NeardupBenchtime
	if benchtime == "" {
		benchtime = "1s"
	}
	res, err := runGoBench(ctx, bin, filepath.Join(root, neardupPkg), neardupIndexBench, benchtime)
	if err != nil {
		return err
	}
	index, ok := res["BenchmarkHashIndex_Near/index/n=1000000"]
	if !ok || index["ns/op"] <= 0 {
		return fmt.Errorf("go test -bench %s: no ns/op for the index at 1M in %v", neardupIndexBench, res)
	}
	b.rep.NeardupCheckUs1m = round(index["ns/op"] / 1e3)
	b.note("neardup_check_us_1m", fmt.Sprintf("go test -bench %s -benchtime %s %s (a subprocess): one index query (the default distance) against 1,000,000 random stored hashes, ns/op ÷ 1000",
		neardupIndexBench, benchtime, neardupPkg))
	if scan, ok := res["BenchmarkHashIndex_Near/scan/n=1000000"]; ok {
		b.info("neardup: the full scan it replaces takes %.0f µs per query at 1M hashes (index %.1f µs)", scan["ns/op"]/1e3, index["ns/op"]/1e3)
	}

	res, err = runGoBench(ctx, bin, filepath.Join(root, neardupPkg), neardupRecallBench, "1x")
	if err != nil {
		return err
	}
	m, ok := res["BenchmarkNearDuplicate_RecallAndFalsePositives"]
	if !ok {
		return fmt.Errorf("go test -bench %s: no result in %v", neardupRecallBench, res)
	}
	// neardup_recall pools the transforms issue 17 asks the check to
	// survive (every one has the same 50 pictures): their mean.
	fp, sum, n, lowest, lowestName, all := -1.0, 0.0, 0, 2.0, "", []string{}
	for unit, v := range m {
		switch {
		case strings.HasPrefix(unit, "recall:"):
			name := strings.TrimPrefix(unit, "recall:")
			all = append(all, fmt.Sprintf("%s %.2f", name, v))
			if slices.Contains(neardupRecallSkip, unit) {
				continue
			}
			sum, n = sum+v, n+1
			if v < lowest {
				lowest, lowestName = v, name
			}
		case unit == "false-positive-pairs":
			fp = v
		}
	}
	if n == 0 || fp < 0 {
		return fmt.Errorf("go test -bench %s: no recall or false-positive metrics in %v", neardupRecallBench, m)
	}
	recall := sum / float64(n)
	b.rep.NeardupRecall = round(recall)
	b.rep.NeardupFalsePositives = fp
	b.note("neardup_recall", fmt.Sprintf("go test -bench %s -benchtime 1x: copies of 50 pictures found as near duplicates (UseDistance, the default distance), pooled over %d transforms (crops ≤ 10%%: centred, corner, side; resizing; re-encoding at q40); the lowest: %s %.2f", neardupRecallBench, n, lowestName, lowest))
	b.note("neardup_false_positives", "the same run: share of 2,000,000 pairs (200 originals × 10,000 unrelated pictures) flagged as near duplicates")
	slices.Sort(all)
	b.info("neardup: recall by transform: %s; unrelated pairs flagged: %g (%.0f of 2,000,000)", strings.Join(all, ", "), fp, fp*2e6)
	return nil
}

// runGoBench runs a test binary's benchmarks matching pattern in dir and
// returns each benchmark's metrics by unit (ns/op, and what
// b.ReportMetric added), keyed by its name without the -CPUS suffix.
func runGoBench(ctx context.Context, bin, dir, pattern, benchtime string) (map[string]map[string]float64, error) {
	cmd := exec.CommandContext(ctx, bin, "-test.run", "^$", "-test.bench", pattern, "-test.benchtime", benchtime)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s -test.bench %s: %w\n%s%s", filepath.Base(bin), pattern, err, out, stderr.String())
	}
	res := parseGoBench(out)
	if len(res) == 0 {
		return nil, errors.New("no benchmark results in:\n" + string(out))
	}
	return res, nil
}

// parseGoBench reads go test -bench output lines: name, iterations, then
// value-unit pairs.
func parseGoBench(out []byte) map[string]map[string]float64 {
	res := map[string]map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		name := f[0]
		if i := strings.LastIndex(name, "-"); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		m := map[string]float64{}
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				m[f[i+1]] = v
			}
		}
		res[name] = m
	}
	return res
}
