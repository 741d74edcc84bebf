package app

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fieldsync/server/blob/localblob"
	"fieldsync/server/evidence"
	"fieldsync/server/sqlstore"
	"fieldsync/server/upload"
)

// TestDemo_Evidence: the demo's visits carry evidence that the real
// analysis worker reads from the blob store; every kind of flag is raised
// by the real checks, most visits are clean, and the gap report lists the
// visits whose required evidence is missing.
func TestDemo_Evidence(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlstore.Open(ctx, sqlstore.Config{Path: filepath.Join(dir, "d.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	blobs, err := localblob.New(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	start := time.Now()
	stats, err := LoadDemoWithEvidence(ctx, st, blobs, &out)
	if err != nil {
		t.Fatal(err)
	}
	loaded := time.Since(start)
	if !strings.Contains(out.String(), "示范证据") {
		t.Errorf("the load does not say what evidence it made:\n%s", out.String())
	}
	t.Logf("evidence: %+v", stats)
	up, err := upload.New(upload.Config{Store: st, Blobs: blobs, Dir: filepath.Join(dir, "uploads")})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := up.WaitAnalysed(wctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("loaded in %v, analysed %d photos in %v more", loaded, stats.Photos, time.Since(start)-loaded)

	q := func(sql string, args ...any) int {
		t.Helper()
		var n int
		if err := st.DB().QueryRow(sql, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Every photo is in the blob store and was analysed: EXIF time and
	// GPS read, a perceptual hash.
	if n := q(`SELECT count(*) FROM blobs`); n != stats.Photos || n < 500 {
		t.Fatalf("%d blobs recorded, %d photos made", n, stats.Photos)
	}
	if n := q(`SELECT count(*) FROM blobs WHERE analyzed_at IS NULL OR exif_time IS NULL OR exif_lat IS NULL OR phash IS NULL OR width != 320`); n != 0 {
		t.Fatalf("%d blobs without their EXIF, size or hash read", n)
	}
	rows, err := st.DB().Query(`SELECT sha256, size FROM blobs`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var sum string
		var size int64
		if err := rows.Scan(&sum, &size); err != nil {
			t.Fatal(err)
		}
		if info, err := blobs.Stat(ctx, sum); err != nil || info.Size != size {
			t.Fatalf("blob %s: %v, %+v", sum, err, info)
		}
	}
	rows.Close()
	// Every kind of flag, from the checks.
	for _, f := range evidence.Flags {
		if n := q(`SELECT count(*) FROM evidence_flags WHERE flag = ?`, f); n == 0 {
			t.Errorf("no %s flag", f)
		}
	}
	// Most visits are clean; the near duplicates and reused photos are
	// the planted ones (each pair flags both sides), not accidents.
	withEv := q(`SELECT count(DISTINCT visit_id) FROM visit_evidence`)
	flagged := q(`SELECT count(DISTINCT visit_id) FROM evidence_flags`)
	if withEv < 400 || flagged*4 > withEv {
		t.Errorf("%d of %d visits with evidence are flagged; most must be clean", flagged, withEv)
	}
	if n := q(`SELECT count(*) FROM evidence_flags WHERE flag = 'near_duplicate_other_household'`); n > 2*stats.NearDuplicate {
		t.Errorf("%d near-duplicate flags for %d planted near-duplicates", n, stats.NearDuplicate)
	}
	if n := q(`SELECT count(DISTINCT sha256) FROM evidence_flags WHERE flag = 'same_photo_other_household'`); n != stats.Reused {
		t.Errorf("%d photos flagged as reused, %d planted", n, stats.Reused)
	}
	// The pictures came from demo.PhotoSet's committed list: the start
	// hashed none to pick them.
	if stats.Screened != 0 {
		t.Errorf("%d seeds screened at the start: demo.PhotoSet's list does not cover the demo (its counts in server/demo/photoseeds_test.go, then go generate ./server/demo)", stats.Screened)
	}
	// Every flaw is there, and most visits are clean.
	if stats.Far == 0 || stats.OtherDay == 0 || stats.Missing == 0 || stats.NotUploaded == 0 || stats.Reused == 0 ||
		stats.NearDuplicate == 0 || stats.NoGPS == 0 || stats.PoorAccuracy == 0 || stats.Outside == 0 || stats.Clean*10 < stats.Visits*7 {
		t.Errorf("stats %+v", stats)
	}
	// The gap report lists the visits with missing evidence, and only
	// those.
	gaps, _, err := st.EvidenceGaps(ctx, nil, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(gaps) != stats.Missing+stats.NotUploaded {
		t.Errorf("%d visits in the gap report, %d missing + %d not uploaded planted", len(gaps), stats.Missing, stats.NotUploaded)
	}
	for _, g := range gaps {
		if len(g.Missing) == 0 {
			t.Errorf("gap %+v names no missing slot", g)
		}
	}
}
