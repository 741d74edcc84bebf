package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"fieldsync/mobileclient"
	"fieldsync/syncproto"
)

// --- p1: durably acknowledged visits per second, and the raw limit ---

// p1Batch is p1's (and p7's) push batch, fixed as issue 7 defines p1 and
// as the raw limit inserts its rows; p8 leaves the device library's batch
// to adapt, as on a tablet.
const p1Batch = 20

func (b *bench) p1(ctx context.Context) error {
	srv, err := b.startServer(ctx, "p1")
	if err != nil {
		return err
	}
	defer srv.Close()
	h, err := b.pushHerd(ctx, srv, "p1", b.o.P1Devices, b.o.P1Visits, p1Batch)
	if err != nil {
		return err
	}
	defer h.close()
	b.rep.P1VisitsPerS = round(float64(h.acked) / h.elapsed.Seconds())
	b.note("p1_visits_per_s", fmt.Sprintf("%d devices × %d visits, batches of 20, over HTTP to %s", b.o.P1Devices, b.o.P1Visits, srv.describe()))
	if _, err := checkVisitsExactlyOnce(ctx, srv.dbPath, h.devs); err != nil {
		return err
	}
	if hwm, err := peakRSS(os.Getpid()); err == nil {
		b.info("p1: peak RSS of the simulator (%d devices) %.0f MiB", b.o.P1Devices, float64(hwm)/(1<<20))
	}
	if hwm, err := peakRSS(srv.pid); err == nil {
		b.info("p1: peak RSS of the fieldsync subprocess %.0f MiB", float64(hwm)/(1<<20))
	}
	if isPostgresURL(srv.dbPath) {
		b.note("p1_raw_sqlite_rows_per_s", "not measured: the raw limit copies a SQLite table; the server runs on PostgreSQL")
		return nil
	}
	var ids []string
	for _, d := range h.devs {
		id, err := d.deviceID()
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	rate, n, err := rawInsert(ctx, srv.dbPath, filepath.Join(b.path("p1"), "raw"), ids)
	if err != nil {
		return fmt.Errorf("raw insert: %w", err)
	}
	b.rep.P1RawSQLiteRowsPerS = round(rate)
	b.note("p1_raw_sqlite_rows_per_s", fmt.Sprintf("the same %d rows, same table and indexes, 20 per transaction, the server's SQLite settings (WAL, synchronous=FULL), one writer", n))
	return nil
}

// rawInsert copies the visits table's columns and indexes (without its
// foreign keys and checks) into a fresh database next to the server's and
// inserts the given devices' visit rows there, 20 per transaction, with
// the server's connection settings. It returns rows per second.
func rawInsert(ctx context.Context, serverDB, dir string, deviceIDs []string) (float64, int, error) {
	src, err := openServerDB(serverDB)
	if err != nil {
		return 0, 0, err
	}
	defer src.Close()
	type column struct {
		name, typ string
		notNull   bool
		dflt      sql.NullString
		pk        int
	}
	rs, err := src.QueryContext(ctx, `SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info('visits')`)
	if err != nil {
		return 0, 0, err
	}
	var cols []column
	for rs.Next() {
		var c column
		if err := rs.Scan(&c.name, &c.typ, &c.notNull, &c.dflt, &c.pk); err != nil {
			rs.Close()
			return 0, 0, err
		}
		cols = append(cols, c)
	}
	rs.Close()
	if len(cols) == 0 {
		return 0, 0, errors.New("no visits table")
	}
	var defs, names []string
	for _, c := range cols {
		d := c.name + " " + c.typ
		if c.notNull {
			d += " NOT NULL"
		}
		if c.dflt.Valid {
			d += " DEFAULT " + c.dflt.String
		}
		if c.pk == 1 {
			d += " PRIMARY KEY"
		}
		defs = append(defs, d)
		names = append(names, c.name)
	}
	ddl := []string{"CREATE TABLE visits (" + strings.Join(defs, ", ") + ") STRICT"}
	is, err := src.QueryContext(ctx, `SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'visits' AND sql IS NOT NULL`)
	if err != nil {
		return 0, 0, err
	}
	for is.Next() {
		var s string
		if err := is.Scan(&s); err != nil {
			is.Close()
			return 0, 0, err
		}
		ddl = append(ddl, s)
	}
	is.Close()
	var rows [][]any
	for chunk := range slices.Chunk(deviceIDs, 500) {
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		q := `SELECT ` + strings.Join(names, ", ") + ` FROM visits WHERE device_id IN (?` + strings.Repeat(",?", len(chunk)-1) + `) ORDER BY rowid`
		vr, err := src.QueryContext(ctx, q, args...)
		if err != nil {
			return 0, 0, err
		}
		for vr.Next() {
			vals := make([]any, len(names))
			ptrs := make([]any, len(names))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := vr.Scan(ptrs...); err != nil {
				vr.Close()
				return 0, 0, err
			}
			rows = append(rows, vals)
		}
		vr.Close()
	}
	if len(rows) == 0 {
		return 0, 0, errors.New("no visit rows to copy")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return 0, 0, err
	}
	path := filepath.Join(dir, "raw.db")
	db, err := sql.Open("sqlite3", sqliteDSN(path, false))
	if err != nil {
		return 0, 0, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, s := range ddl {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return 0, 0, fmt.Errorf("%s: %w", s, err)
		}
	}
	ins, err := db.PrepareContext(ctx, `INSERT INTO visits (`+strings.Join(names, ", ")+`) VALUES (?`+strings.Repeat(",?", len(names)-1)+`)`)
	if err != nil {
		return 0, 0, err
	}
	defer ins.Close()
	t0 := time.Now()
	for i := 0; i < len(rows); i += 20 {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return 0, 0, err
		}
		st := tx.StmtContext(ctx, ins)
		for _, r := range rows[i:min(i+20, len(rows))] {
			if _, err := st.ExecContext(ctx, r...); err != nil {
				tx.Rollback()
				return 0, 0, err
			}
		}
		if err := tx.Commit(); err != nil {
			return 0, 0, err
		}
	}
	took := time.Since(t0)
	return float64(len(rows)) / took.Seconds(), len(rows), nil
}

// --- p7: the server's peak RSS ---

// p7 runs the p1 workload and then the p4 upload workload (round 0's
// photos, the same tus client and concurrency) against the fieldsync
// binary built from this checkout and run as a subprocess with -demo (the
// demo county with its photos, analysed at the first start, as a user's
// first run), and reads its VmHWM.
func (b *bench) p7(ctx context.Context) error {
	dir := b.path("p7")
	bin, err := fieldsyncBinary(ctx)
	if err != nil {
		return err
	}
	photos, err := b.uploadPhotos(ctx, 0)
	if err != nil {
		return err
	}
	proc, addr, err := startServerProcess(ctx, bin, filepath.Join(dir, "server"))
	if err != nil {
		return err
	}
	defer proc.stop()
	admin, err := login(ctx, proc.url, demoAdmin, demoPassword)
	if err != nil {
		return err
	}
	srv := &server{url: proc.url, addr: addr, admin: admin}
	b.rss = startRSSSampler(proc.cmd.Process.Pid, 50*time.Millisecond)
	stopRSS := func() string {
		if b.rss == nil {
			return ""
		}
		phases := b.rss.stop()
		b.rss = nil
		return phases
	}
	defer stopRSS()
	h, err := b.pushHerd(ctx, srv, "p7", b.o.P1Devices, b.o.P1Visits, p1Batch)
	if err != nil {
		return err
	}
	h.close()
	b.info("p7: the subprocess server took the p1 workload at %.0f visits/s", float64(h.acked)/h.elapsed.Seconds())
	b.rss.setPhase("p4 set-up")
	ep, err := newOurEndpoint(ctx, srv, b.o.Seed, 244, photos)
	if err != nil {
		return fmt.Errorf("p4 workload: %w", err)
	}
	defer ep.close()
	b.rss.setPhase("p4 uploads")
	mbps, took, err := ep.upload(ctx, photos, b.o.P4Uploaders)
	if err != nil {
		return fmt.Errorf("p4 workload: %w", err)
	}
	b.info("p7: the subprocess server (local blob store) took the p4 workload at %.1f MB/s (%d photos in %v)", mbps, len(photos), took.Round(time.Millisecond))
	phases := stopRSS()
	hwm, err := peakRSS(proc.cmd.Process.Pid)
	if err != nil {
		return err
	}
	b.info("p7: peak RSS by phase (MiB, sampled every 50 ms): %s", phases)
	if m, err := goMemory(ctx, proc.url); err == nil {
		b.info("p7: after the run, the server's Go runtime holds %.0f MiB from the OS (heap in use %.0f MiB), its RSS is %.0f MiB: the rest is C memory (SQLite) and freed-but-kept pages",
			m["go_memstats_sys_bytes"]/(1<<20), m["go_memstats_heap_inuse_bytes"]/(1<<20), m["process_resident_memory_bytes"]/(1<<20))
	}
	if _, _, err := ep.verify(ctx, photos); err != nil {
		return fmt.Errorf("p4 workload: %w", err)
	}
	b.rep.P7RSSMBPeak = round(float64(hwm) / (1 << 20))
	b.note("p7_rss_mb_peak", fmt.Sprintf("VmHWM of the fieldsync binary (subprocess, local blob store) through the p1 workload (%d devices × %d visits) and then the p4 workload (%d photos × %d B, %d uploaders)",
		b.o.P1Devices, b.o.P1Visits, len(photos), b.o.P4Bytes, b.o.P4Uploaders))
	if err := proc.stop(); err != nil {
		b.info("p7: %v", err)
	}
	return nil
}

// --- p7photos: the server's peak RSS while two large photos are analysed ---

// p7Photos uploads two large camera photos (b.o.P7PhotoW × P7PhotoH, 40 MP
// by default) at once to a fresh fieldsync subprocess (SQLite, local blob
// store) and waits until the server has analysed both (hash, thumbnail);
// the figure is its VmHWM over uploads and analysis, the peak having been
// reset (clear_refs) once the demo's own photos were analysed.
func (b *bench) p7Photos(ctx context.Context) error {
	w, h := b.o.P7PhotoW, b.o.P7PhotoH
	if w <= 0 || h <= 0 {
		w, h = 7300, 5500
	}
	t0 := time.Now()
	at := time.Date(2024, 11, 28, 11, 0, 0, 0, cst)
	var photos []Photo
	for i := range 2 {
		p, err := NewLargePhoto(w, h, 25.01+float64(i)*0.001, 103.71, at.Add(time.Duration(i)*time.Minute), b.o.Seed*100+77+uint64(i))
		if err != nil {
			return err
		}
		photos = append(photos, p)
	}
	b.logf("made 2 photos of %d×%d (%.1f MP; %d and %d B) in %v", w, h, float64(w*h)/1e6, len(photos[0].Data), len(photos[1].Data),
		time.Since(t0).Round(time.Millisecond))
	srv, err := startLocal(ctx, localOptions{Dir: filepath.Join(b.path("p7photos"), "server")})
	if err != nil {
		return err
	}
	defer srv.Close()
	if srv.pid <= 0 || isPostgresURL(srv.dbPath) {
		return errors.New("p7photos needs a SQLite server subprocess")
	}
	ep, err := newOurEndpoint(ctx, srv, b.o.Seed, 245, photos)
	if err != nil {
		return err
	}
	defer ep.close()
	// The demo's photos are analysed at the first start: wait until the
	// server is idle, then count from there.
	if err := waitBlobsAnalysed(ctx, srv.dbPath, nil, 5*time.Minute); err != nil {
		return fmt.Errorf("the demo's photos: %w", err)
	}
	before, err := peakRSS(srv.pid)
	if err != nil {
		return err
	}
	if err := resetPeakRSS(srv.pid); err != nil {
		return err
	}
	idle, err := procStatus(srv.pid, "VmRSS:")
	if err != nil {
		return err
	}
	sampler := startRSSSampler(srv.pid, 20*time.Millisecond)
	sampler.setPhase("uploads")
	t0 = time.Now()
	if _, _, err := ep.upload(ctx, photos, len(photos)); err != nil {
		sampler.stop()
		return err
	}
	up := time.Since(t0)
	sampler.setPhase("analysis")
	hashes := []string{photos[0].SHA256, photos[1].SHA256}
	err = ep.waitAnalysed(ctx, 1, 5*time.Minute)
	if err == nil {
		err = waitBlobsAnalysed(ctx, srv.dbPath, hashes, time.Minute)
	}
	phases := sampler.stop()
	if err != nil {
		return err
	}
	took := time.Since(t0)
	hwm, err := peakRSS(srv.pid)
	if err != nil {
		return err
	}
	decoded, err := blobsHashed(ctx, srv.dbPath, hashes)
	if err != nil {
		return err
	}
	b.rep.P7RSSMBPeakPhotos = round(float64(hwm) / (1 << 20))
	b.note("p7_rss_mb_peak_photos", fmt.Sprintf("VmHWM of a fresh fieldsync subprocess (SQLite, local blob store), reset once the demo's photos were analysed, while 2 photos of %d×%d (%.0f and %.0f MB, EXIF GPS and time) are uploaded at once and analysed; %d of 2 got a perceptual hash",
		w, h, float64(len(photos[0].Data))/1e6, float64(len(photos[1].Data))/1e6, decoded))
	b.info("p7photos: RSS %.0f MiB when idle (peak %.0f MiB before the reset); uploads answered in %.2f s, both analysed %.2f s after the start; peak by phase (MiB, sampled every 20 ms): %s",
		float64(idle)/(1<<20), float64(before)/(1<<20), up.Seconds(), took.Seconds(), phases)
	if decoded != len(hashes) {
		b.info("p7photos: the server analysed the photos without a perceptual hash for %d of them (not decoded)", len(hashes)-decoded)
	}
	return nil
}

// resetPeakRSS resets a process's VmHWM to its current RSS (writing 5 to
// /proc/PID/clear_refs; Linux 4.0 and later). Only processes the
// benchmark started are ever passed.
func resetPeakRSS(pid int) error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("reset peak RSS: %w", err)
	}
	return nil
}

// waitBlobsAnalysed polls the server's database (read-only) until no blob
// is waiting for analysis (hashes nil) or every blob of hashes is stored
// and analysed, at most bound.
func waitBlobsAnalysed(ctx context.Context, dbPath string, hashes []string, bound time.Duration) error {
	db, err := openServerDB(dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	for {
		pending := 0
		if hashes == nil {
			err = db.QueryRowContext(ctx, `SELECT count(*) FROM blobs WHERE analyzed_at IS NULL`).Scan(&pending)
		} else {
			for _, h := range hashes {
				var done int
				err = db.QueryRowContext(ctx, db.q(`SELECT count(*) FROM blobs WHERE sha256 = ? AND analyzed_at IS NOT NULL`), h).Scan(&done)
				if err != nil {
					break
				}
				pending += 1 - done
			}
		}
		if err != nil {
			return fmt.Errorf("blobs waiting for analysis: %w", err)
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d blob(s) still waiting for analysis: %w", pending, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// blobsHashed counts the blobs of hashes that have a perceptual hash.
func blobsHashed(ctx context.Context, dbPath string, hashes []string) (int, error) {
	db, err := openServerDB(dbPath)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	n := 0
	for _, h := range hashes {
		var c int
		if err := db.QueryRowContext(ctx, db.q(`SELECT count(*) FROM blobs WHERE sha256 = ? AND phash IS NOT NULL`), h).Scan(&c); err != nil {
			return 0, err
		}
		n += c
	}
	return n, nil
}

// --- p8: 20,000 visits from 20 devices, ours and PouchDB's ---

func (b *bench) p8(ctx context.Context) error {
	srv, err := b.startServer(ctx, "p8")
	if err != nil {
		return err
	}
	defer srv.Close()
	per := b.o.P8Visits / max(1, b.o.P8Devices)
	h, err := b.pushHerd(ctx, srv, "p8", b.o.P8Devices, per, 0)
	if err != nil {
		return err
	}
	defer h.close()
	b.rep.P8Sync20kS = round(h.elapsed.Seconds())
	b.note("p8_sync_20k_s", fmt.Sprintf("%d devices push %d visits each at once (mobileclient Sync, its adaptive batch: 20, doubling while pushes answer within %v, up to %d) until acknowledged", b.o.P8Devices, per, mobileclient.GrowBatchWithin, mobileclient.GrownBatch))
	if _, err := checkVisitsExactlyOnce(ctx, srv.dbPath, h.devs); err != nil {
		return err
	}
	srv.Close() // free the CPU for the peer
	docs := filepath.Join(b.path("p8"), "docs.jsonl")
	if err := writeDocs(docs, h.devs); err != nil {
		return err
	}
	h.close()
	secs, err := b.pouch(ctx, docs)
	if err != nil {
		b.note("p8_pouchdb_20k_s", "not measured: "+firstLine(err.Error()))
		return fmt.Errorf("pouchdb: %w", err)
	}
	b.rep.P8PouchDB20kS = round(secs)
	b.note("p8_pouchdb_20k_s", fmt.Sprintf("the same visits as documents in %d local PouchDBs (LevelDB), replicate.to pouchdb-server (LevelDB) at once, default batch_size 100", b.o.P8Devices))
	return nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// writeDocs writes every device's visits as PouchDB documents, one JSON
// line {"device":n,"doc":{...}} each.
func writeDocs(path string, devs []*device) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	type doc struct {
		ID   string `json:"_id"`
		Type string `json:"type"`
		syncproto.Visit
	}
	enc := json.NewEncoder(w)
	for _, d := range devs {
		for _, v := range d.visits {
			if err := enc.Encode(struct {
				Device int `json:"device"`
				Doc    doc `json:"doc"`
			}{d.idx, doc{ID: v.ID, Type: "visit", Visit: v}}); err != nil {
				f.Close()
				return err
			}
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (b *bench) pouch(ctx context.Context, docs string) (float64, error) {
	mods, err := ensurePouch(ctx, b.o.CacheDir, b.logf)
	if err != nil {
		return 0, err
	}
	dir := filepath.Join(b.path("p8"), "pouchdb")
	proc, err := startPouchServer(ctx, mods, dir)
	if err != nil {
		return 0, err
	}
	defer proc.stop()
	b.logf("pouchdb-server on %s; replicating", proc.url)
	// The local PouchDBs are the phones: beside ours (bench.devices).
	r, err := runPouchBench(ctx, mods, dir, filepath.Join(b.devices, "p8", "pouchdb-local"), docs, proc.url+"/visits")
	if err != nil {
		return 0, err
	}
	b.logf("PouchDB: %d documents from %d devices replicated in %.2f s (local load %.1f s)", r.Docs, r.Devices, r.Seconds, r.LoadSecs)
	return r.Seconds, nil
}
