package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"fieldsync/mobileclient"
)

// --- p2 and p3: the first pull of 10k households, no-op pulls at 10k and 1M ---

// Places the benchmark adds under the demo's second village.
const (
	benchScopeGroup = demoOtherVillageCode + "901" // the device's 10k households
	benchFillGroup  = demoOtherVillageCode + "902" // the rest of the 1M, outside the scope
)

func (b *bench) p23(ctx context.Context) error {
	dir := filepath.Join(b.path("p23"), "server")
	spec := seedSpec{
		Places: []seedPlace{
			{Code: benchScopeGroup, Name: "万户测试组", Level: "group", ParentCode: demoOtherVillageCode},
			{Code: benchFillGroup, Name: "百万户填充组", Level: "group", ParentCode: demoOtherVillageCode},
		},
		Households: []seedHouseholds{{Place: benchScopeGroup, Count: b.o.P2Households, Seed: b.o.Seed + 23, Batch: 5000}},
	}
	t0 := time.Now()
	srv, err := b.startLocal(ctx, localOptions{Dir: dir, Seed: spec, Profile: b.serverProfile("p2")})
	if err != nil {
		return err
	}
	b.logf("imported %d households into %s and started the server in %v", b.o.P2Households, benchScopeGroup, time.Since(t0).Round(time.Millisecond))
	defer func() { srv.Close() }()
	e, err := b.env(ctx, srv, "p23", "p2", b.o.Seed)
	if err != nil {
		return err
	}
	fp, err := b.firstPull(ctx, srv, e, "p2", benchScopeGroup, b.o.P2Households, "10k")
	if err != nil {
		return err
	}
	rep, u := fp.rep, fp.user
	b.rep.P2FirstPullMs10k = round(ms(fp.took))
	b.rep.P2FirstPullBytes10k = float64(rep.BytesSent + rep.BytesReceived)
	b.note("p2_first_pull_ms_10k", fmt.Sprintf("first Sync of a fresh mobileclient device (applying into its SQLite included), %d pages", rep.Pages))
	b.note("p2_first_pull_bytes_10k", fmt.Sprintf("SyncReport bytes on the wire (gzip bodies): %d received + %d sent", rep.BytesReceived, rep.BytesSent))
	if rep.Retries > 0 {
		b.info("p2: the first sync retried %d requests: %v", rep.Retries, rep.Errors)
	}

	// p3 at 10k: a wire device of the same worker, at the head of the log.
	w, err := enrollWire(ctx, srv, u.ID, 240)
	if err != nil {
		return err
	}
	defer w.close()
	cursor, _, err := w.pullAll(ctx, "", 10_000)
	if err != nil {
		return err
	}
	lat10k, err := w.noopPulls(ctx, cursor, 20, b.o.P3Pulls)
	if err != nil {
		return err
	}
	b.rep.P3NoopPullP99Ms10k = round(ms(percentile(lat10k, 0.99)))
	total, err := countHouseholds(ctx, srv.dbPath)
	if err != nil {
		return err
	}
	b.note("p3_noop_pull_p99_ms_10k", fmt.Sprintf("p99 of %d pulls over HTTP with nothing new (after 20 unmeasured), %d households in the database", len(lat10k), total))
	b.logf("no-op pull at %d households: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms (%d pulls)", total,
		ms(percentile(lat10k, 0.5)), ms(percentile(lat10k, 0.9)), ms(percentile(lat10k, 0.99)), ms(percentile(lat10k, 1)), len(lat10k))
	if b.o.P3Total <= 0 {
		b.note("p3_noop_pull_p99_ms_1m", "skipped (-p3-total 0)")
		return nil
	}

	// p3 at 1M: stop, import the rest outside the worker's places, restart
	// (on the same PostgreSQL database, when on PostgreSQL).
	var pgURL string
	if isPostgresURL(srv.dbPath) {
		pgURL = srv.dbPath
	}
	if err := srv.Close(); err != nil {
		return err
	}
	rest := b.o.P3Total - total
	if rest > 0 {
		b.logf("importing %d more households (batches of %d) to reach %d", rest, b.o.P3Batch, b.o.P3Total)
		t0 := time.Now()
		bin, err := fieldsyncBinary(ctx)
		if err != nil {
			return err
		}
		// Another seed than the scope's: a seed always gives the same ids.
		m, err := seedData(ctx, bin, dir, pgURL, seedSpec{Households: []seedHouseholds{{Place: benchFillGroup, Count: rest, Seed: b.o.Seed + 2300, Batch: max(1, b.o.P3Batch)}}})
		if err != nil {
			return err
		}
		b.info("p3: imported %d households with fieldsync seed (ImportHouseholds) in %v (%.0f/s), %d in the database",
			rest, time.Since(t0).Round(time.Second), float64(rest)/time.Since(t0).Seconds(), m.HouseholdsTotal)
	}
	if srv, err = b.startLocal(ctx, localOptions{Dir: dir, PGURL: pgURL}); err != nil {
		return err
	}
	w.base = srv.url
	cursor, ops, err := w.pullAll(ctx, cursor, 10_000)
	if err != nil {
		return err
	}
	if ops != 0 {
		return fmt.Errorf("catching up after the import outside the scope brought %d ops", ops)
	}
	lat1m, err := w.noopPulls(ctx, cursor, 20, b.o.P3Pulls)
	if err != nil {
		return err
	}
	b.rep.P3NoopPullP99Ms1m = round(ms(percentile(lat1m, 0.99)))
	total, err = countHouseholds(ctx, srv.dbPath)
	if err != nil {
		return err
	}
	b.note("p3_noop_pull_p99_ms_1m", fmt.Sprintf("the same device and cursor, %d households in the database", total))
	b.logf("no-op pull at %d households: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms (%d pulls)", total,
		ms(percentile(lat1m, 0.5)), ms(percentile(lat1m, 0.9)), ms(percentile(lat1m, 0.99)), ms(percentile(lat1m, 1)), len(lat1m))
	if fi, err := os.Stat(srv.dbPath); err == nil && pgURL == "" {
		b.info("p3: the 1M database file is %.0f MiB", float64(fi.Size())/(1<<20))
	}
	return nil
}

// firstPulled is a fresh device's first Sync (firstPull).
type firstPulled struct {
	rep  mobileclient.SyncReport
	took time.Duration
	user apiUser
}

// firstPull creates a field worker of group (which holds want
// households), enrolls a fresh mobileclient device for it and times its
// first Sync (the server's pages and the device's apply), profiled as
// section; it checks the device then holds every household.
func (b *bench) firstPull(ctx context.Context, srv *server, e *env, section, group string, want int, tag string) (firstPulled, error) {
	var fp firstPulled
	u, err := srv.admin.createUser(ctx, "fieldsim_"+e.fleet.runID+"_"+tag, "field_worker", []string{group})
	if err != nil {
		return fp, err
	}
	fp.user = u
	d, err := e.fleet.newDevice(0, u.ID, group)
	if err != nil {
		return fp, err
	}
	defer d.close()
	code, err := srv.admin.enrollmentCode(ctx, u.ID)
	if err != nil {
		return fp, err
	}
	if err := d.c.Enroll(ctx, code, d.name); err != nil {
		return fp, err
	}
	stop := b.profile(section, srv)
	t0 := time.Now()
	rep, err := d.c.Sync(ctx)
	fp.took = time.Since(t0)
	stop()
	if err != nil {
		return fp, fmt.Errorf("first sync: %w", err)
	}
	fp.rep = rep
	hs, err := d.c.Households("")
	if err != nil {
		return fp, err
	}
	if len(hs) != want {
		return fp, fmt.Errorf("the device holds %d households after its first sync, want %d", len(hs), want)
	}
	return fp, nil
}

// --- p2l: the first pull of a large scope (issue 17: 100k households) ---

// benchLargeGroup holds p2l's households.
const benchLargeGroup = demoOtherVillageCode + "903"

func (b *bench) p2Large(ctx context.Context) error {
	n := b.o.P2Large
	if n <= 0 {
		b.note("p2_first_pull_ms_100k", "skipped (-p2-large 0)")
		b.note("p2_first_pull_bytes_100k", "skipped (-p2-large 0)")
		return nil
	}
	batch := b.o.P3Batch
	if batch <= 0 {
		batch = 20_000
	}
	spec := seedSpec{
		Places:     []seedPlace{{Code: benchLargeGroup, Name: "十万户测试组", Level: "group", ParentCode: demoOtherVillageCode}},
		Households: []seedHouseholds{{Place: benchLargeGroup, Count: n, Seed: b.o.Seed + 2200, Batch: min(n, batch)}},
	}
	t0 := time.Now()
	srv, err := b.startLocal(ctx, localOptions{Dir: filepath.Join(b.path("p2l"), "server"), Seed: spec, Profile: b.serverProfile("p2l")})
	if err != nil {
		return err
	}
	defer srv.Close()
	b.logf("imported %d households into %s and started the server in %v", n, benchLargeGroup, time.Since(t0).Round(time.Millisecond))
	e, err := b.env(ctx, srv, "p2l", "p2l", b.o.Seed)
	if err != nil {
		return err
	}
	fp, err := b.firstPull(ctx, srv, e, "p2l", benchLargeGroup, n, "large")
	if err != nil {
		return err
	}
	rep := fp.rep
	b.rep.P2FirstPullMs100k = round(ms(fp.took))
	b.rep.P2FirstPullBytes100k = float64(rep.BytesSent + rep.BytesReceived)
	b.note("p2_first_pull_ms_100k", fmt.Sprintf("as p2 10k with %d households in the scope: first Sync of a fresh device (server pages + device apply), %d pages", n, rep.Pages))
	b.note("p2_first_pull_bytes_100k", fmt.Sprintf("SyncReport bytes on the wire (gzip bodies): %d received + %d sent", rep.BytesReceived, rep.BytesSent))
	b.logf("first sync of %d households: %.2f s, %d pages, %d B on the wire (%.0f B/household)", n, fp.took.Seconds(), rep.Pages,
		rep.BytesSent+rep.BytesReceived, float64(rep.BytesSent+rep.BytesReceived)/float64(n))
	if rep.Retries > 0 {
		b.info("p2l: the first sync retried %d requests: %v", rep.Retries, rep.Errors)
	}
	return nil
}

func countHouseholds(ctx context.Context, dbPath string) (int, error) {
	db, err := openServerDB(dbPath)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var n int
	err = db.QueryRowContext(ctx, `SELECT count(*) FROM households`).Scan(&n)
	return n, err
}
