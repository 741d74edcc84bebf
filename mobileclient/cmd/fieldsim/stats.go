package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// percentile returns the p-quantile (0..1) of ds, nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p+0.999999) - 1
	return s[max(0, min(len(s)-1, i))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// table prints rows of cells as aligned columns.
type table struct {
	rows [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) print(w io.Writer) {
	var widths []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for _, r := range t.rows {
		var b strings.Builder
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-len([]rune(c))+2))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// printResult prints a scenario's report.
func printResult(w io.Writer, r *runResult) {
	fmt.Fprintf(w, "\n== %s  (link: %s)\n", r.Scenario, r.Link)
	t := &table{}
	t.add("devices", fmt.Sprint(r.Devices))
	t.add("visits recorded / acknowledged", fmt.Sprintf("%d / %d", r.Visits, r.Acked))
	t.add("household edits", fmt.Sprint(r.Edits))
	if r.Photos > 0 {
		t.add("photos attached / uploaded / already there", fmt.Sprintf("%d (%d B) / %d / %d", r.Photos, r.PhotoBytes, r.BlobsUploaded, r.BlobsPresent))
		t.add("photo bytes sent ÷ photo bytes", fmt.Sprintf("%.3f", float64(r.BlobBytesSent)/float64(max(1, r.PhotoBytes))))
	}
	switch r.Scenario {
	case "county-evening":
		t.add("evening sync, all devices", r.Elapsed.Round(time.Millisecond).String())
		t.add("acknowledged visits/s", fmt.Sprintf("%.1f", r.VisitsPerSec))
		t.add("one device's sync p50 / p99", fmt.Sprintf("%.0f ms / %.0f ms", ms(r.SyncP50), ms(r.SyncP99)))
	case "2g-day":
		t.add("seconds until all visits acknowledged", fmt.Sprintf("%.2f", r.Elapsed.Seconds()))
		if r.PhotoTime > 0 && r.PhotoRaw > 0 {
			t.add("photo upload time / raw link time", fmt.Sprintf("%.2f s / %.2f s = %.2f", r.PhotoTime.Seconds(), r.PhotoRaw.Seconds(), r.PhotoTime.Seconds()/r.PhotoRaw.Seconds()))
		}
		t.add("whole evening sync (push, photos, pull)", fmt.Sprintf("%.2f s", r.FullSync.Seconds()))
	case "reassign":
		t.add("sync after the move", r.Elapsed.Round(time.Millisecond).String())
	}
	t.add("syncs / retried requests / rejected", fmt.Sprintf("%d / %d / %d", r.Syncs, r.Retries, r.Rejected))
	t.add("body bytes sent / received", fmt.Sprintf("%d / %d", r.BytesSent, r.BytesReceived))
	if r.LinkStats.Conns > 0 {
		s := r.LinkStats
		t.add("link: bytes up / down", fmt.Sprintf("%d / %d", s.BytesUp, s.BytesDown))
		t.add("link: connections / cuts / resets / dropped answers", fmt.Sprintf("%d / %d / %d / %d", s.Conns, s.Cuts, s.Resets, s.DroppedResponses))
	}
	t.print(w)
	for _, c := range r.Checks {
		fmt.Fprintln(w, "check: "+c)
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:  "+n)
	}
}
