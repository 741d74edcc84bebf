package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/paulmach/orb"

	"fieldsync/server/domain"
	"fieldsync/server/evidence"
	"fieldsync/server/geo"
	"fieldsync/server/store"
	"fieldsync/server/upload"
	"fieldsync/syncproto"
)

// Evidence: blobs, resumable uploads, checks on arrival, completeness.

var _ upload.Store = (*Store)(nil)

// SetEvidenceConfig sets the thresholds of the evidence checks (distance,
// default zone, near-duplicate distance). Unset fields keep their
// defaults. Call it before serving; Config.Evidence sets them at Open.
func (s *Store) SetEvidenceConfig(cfg evidence.Config) {
	c := cfg.WithDefaults()
	s.evCfg.Store(&c)
}

func (s *Store) evidenceConfig() evidence.Config {
	if c := s.evCfg.Load(); c != nil {
		return *c
	}
	return evidence.Config{}.WithDefaults()
}

// --- blobs ---

// MissingBlobs returns, in the order given and without duplicates, the
// hashes that are not present (never verified and stored).
func (s *Store) MissingBlobs(ctx context.Context, sums []string) ([]string, error) {
	missing := []string{}
	seen := map[string]bool{}
	for start := 0; start < len(sums); start += 500 {
		batch := sums[start:min(len(sums), start+500)]
		rows, err := s.readRows(ctx, `SELECT sha256 FROM blobs WHERE sha256 IN (SELECT value FROM json_each(?))`, jsonList(batch))
		if err != nil {
			return nil, fmt.Errorf("missing blobs: %w", err)
		}
		present := map[string]bool{}
		for rows.Next() {
			var sum string
			if err := rows.Scan(&sum); err != nil {
				rows.Close()
				return nil, err
			}
			present[sum] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		for _, sum := range batch {
			if !present[sum] && !seen[sum] {
				seen[sum] = true
				missing = append(missing, sum)
			}
		}
	}
	return missing, nil
}

// BlobPresent implements upload.Store.
func (s *Store) BlobPresent(ctx context.Context, sum string) (bool, error) {
	var ok bool
	if err := s.readRow(ctx, `SELECT EXISTS (SELECT 1 FROM blobs WHERE sha256 = ?)`, sum).Scan(&ok); err != nil {
		return false, fmt.Errorf("blob present: %w", err)
	}
	return ok, nil
}

// BlobRecord is store.BlobRecord.
type BlobRecord = store.BlobRecord

const blobCols = `sha256, size, media_type, stored_at, exif_time, exif_lon, exif_lat, phash, width, height`

func scanBlob(sc interface{ Scan(...any) error }) (BlobRecord, error) {
	var b BlobRecord
	var stored string
	var taken sql.NullString
	var lon, lat sql.NullFloat64
	var phash, w, h sql.NullInt64
	if err := sc.Scan(&b.SHA256, &b.Size, &b.MediaType, &stored, &taken, &lon, &lat, &phash, &w, &h, &b.Analysed); err != nil {
		return b, err
	}
	b.StoredAt = domain.ParseTimestamp(stored)
	b.Taken, _ = evidence.ParseCaptureTime(taken.String)
	if lon.Valid && lat.Valid {
		b.GPS = &orb.Point{lon.Float64, lat.Float64}
	}
	if phash.Valid {
		v := uint64(phash.Int64)
		b.PHash = &v
	}
	b.Width, b.Height = int(w.Int64), int(h.Int64)
	return b, nil
}

// Blob returns a present blob's record (domain.ErrNotFound if absent).
func (s *Store) Blob(ctx context.Context, sum string) (BlobRecord, error) {
	b, err := scanBlob(s.readRow(ctx, `SELECT `+blobCols+`, analyzed_at IS NOT NULL FROM blobs WHERE sha256 = ?`, sum))
	if errors.Is(err, sql.ErrNoRows) {
		return b, fmt.Errorf("blob %s: %w", sum, domain.ErrNotFound)
	}
	if err != nil {
		return b, fmt.Errorf("blob %s: %w", sum, err)
	}
	return b, nil
}

// BlobPlaces lists the places of the visits whose links to a blob are held
// (see holders.go), for deciding who may see it: citing a hash is not
// enough.
func (s *Store) BlobPlaces(ctx context.Context, sum string) ([]string, error) {
	rows, err := s.readRows(ctx, `SELECT DISTINCT v.place_code FROM visit_evidence ve JOIN visits v ON v.id = ve.visit_id
		WHERE ve.sha256 = ? AND ve.held = 1 ORDER BY v.place_code`, sum)
	if err != nil {
		return nil, fmt.Errorf("blob places: %w", err)
	}
	return scanStrings(rows)
}

// --- uploads (upload.Store) ---

// sortableTS formats upload times with a fixed width, so that they
// compare as strings (domain.Timestamp trims trailing zeros).
func sortableTS(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000000Z") }

const uploadCols = `id, device_id, sha256, length, "offset", created_at, expires_at, metadata, state`

func scanUpload(sc interface{ Scan(...any) error }) (upload.Upload, error) {
	var u upload.Upload
	var created, expires, meta, state string
	if err := sc.Scan(&u.ID, &u.DeviceID, &u.SHA256, &u.Length, &u.Offset, &created, &expires, &meta, &state); err != nil {
		return u, err
	}
	u.CreatedAt, u.ExpiresAt = domain.ParseTimestamp(created), domain.ParseTimestamp(expires)
	u.Done = state == "done"
	if err := json.Unmarshal([]byte(meta), &u.Metadata); err != nil {
		return u, fmt.Errorf("upload %s metadata: %w", u.ID, err)
	}
	return u, nil
}

func (s *Store) queryUploads(ctx context.Context, q string, args ...any) ([]upload.Upload, error) {
	rows, err := s.readRows(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("uploads: %w", err)
	}
	defer rows.Close()
	var out []upload.Upload
	for rows.Next() {
		u, err := scanUpload(rows)
		if err != nil {
			return nil, fmt.Errorf("uploads: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// CreateUpload implements upload.Store.
func (s *Store) CreateUpload(ctx context.Context, u upload.Upload) error {
	meta, err := json.Marshal(u.Metadata)
	if err != nil {
		return fmt.Errorf("create upload: %w", err)
	}
	if u.Metadata == nil {
		meta = []byte("{}")
	}
	state := "active"
	if u.Done {
		state = "done"
	}
	insert := func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO uploads(id, device_id, sha256, length, "offset", created_at, expires_at, metadata, state)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			u.ID, u.DeviceID, u.SHA256, u.Length, u.Offset, sortableTS(u.CreatedAt), sortableTS(u.ExpiresAt), string(meta), state)
		return err
	}
	// A new upload's record acknowledges no byte: it is committed without
	// waiting for the disk, and the first acknowledgment of its bytes is
	// a durable commit after it (writeTxUnsynced). An upload answered as
	// complete at its creation is an acknowledgment: that one waits.
	write := s.writeTxUnsynced
	if u.Done || u.Offset > 0 {
		write = s.writeTx
	}
	if err := write(ctx, insert); err != nil {
		return fmt.Errorf("create upload: %w", err)
	}
	return nil
}

// Upload implements upload.Store.
func (s *Store) Upload(ctx context.Context, id string) (upload.Upload, error) {
	u, err := scanUpload(s.readRow(ctx, `SELECT `+uploadCols+` FROM uploads WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return u, fmt.Errorf("upload %s: %w", id, domain.ErrNotFound)
	}
	if err != nil {
		return u, fmt.Errorf("upload %s: %w", id, err)
	}
	return u, nil
}

// UpdateUpload implements upload.Store.
func (s *Store) UpdateUpload(ctx context.Context, id string, offset int64, expires time.Time) error {
	if _, err := s.writeExec(ctx, `UPDATE uploads SET "offset" = ?, expires_at = ? WHERE id = ? AND state = 'active'`,
		offset, sortableTS(expires), id); err != nil {
		return fmt.Errorf("update upload: %w", err)
	}
	return nil
}

// CompleteUpload implements upload.Store: the blob row (kept if already
// there) and the upload's done state are written in one transaction. The
// blob is queued for analysis (analyzed_at NULL) unless b.Meta already
// holds what was read from it.
func (s *Store) CompleteUpload(ctx context.Context, id string, b upload.Blob, expires time.Time) error {
	var held []string
	var fresh bool
	err := s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		held, fresh = nil, false
		var err error
		if fresh, err = insertBlobTx(ctx, tx, b); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE uploads SET state = 'done', "offset" = length, expires_at = ? WHERE id = ?`,
			sortableTS(expires), id); err != nil {
			return fmt.Errorf("complete upload: %w", err)
		}
		// The device sent the bytes and they were verified: it holds the
		// blob, and its visits' links to it count from now on.
		var dev string
		err = tx.QueryRowContext(ctx, `SELECT device_id FROM uploads WHERE id = ?`, id).Scan(&dev)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return nil // no upload (a blob recorded by other means)
		case err != nil:
			return fmt.Errorf("complete upload: %w", err)
		}
		if held, err = holdBlobTx(ctx, tx, dev, b.SHA256, domain.Timestamp(b.StoredAt)); err != nil {
			return err
		}
		if fresh {
			held = nil // a new blob: the analysis worker runs the checks
		}
		return nil
	})
	if err != nil {
		return err
	}
	if fresh {
		s.indexHashes(b.SHA256, nil, hashesOf(b.Meta))
	}
	return s.recheckHeld(ctx, held)
}

// insertBlobTx records a present blob (kept as it is if already there)
// with what was read from it, and its crop hashes; fresh reports a new
// row. After the commit, the caller adds a fresh blob's hashes to the
// near-duplicate index (indexHashes).
func insertBlobTx(ctx context.Context, tx *sql.Tx, b upload.Blob) (fresh bool, err error) {
	taken, lon, lat, phash, w, h := metaArgs(b.Meta)
	var analyzed any
	if !b.Meta.IsZero() {
		analyzed = domain.Timestamp(b.StoredAt)
	}
	q := `INSERT INTO blobs(` + blobCols + `, analyzed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`
	if phash != nil {
		q = `INSERT INTO blobs(` + blobCols + `, analyzed_at, hash_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ` + nextHashSeq + `) ON CONFLICT DO NOTHING`
	}
	res, err := tx.ExecContext(ctx, q, b.SHA256, b.Size, b.MediaType, domain.Timestamp(b.StoredAt), taken, lon, lat, phash, w, h, analyzed)
	if err != nil {
		return false, fmt.Errorf("record blob: %w", err)
	}
	n, _ := res.RowsAffected()
	if n == 0 {
		return false, nil
	}
	return true, writeCropHashesTx(ctx, tx, b.SHA256, b.Meta)
}

// writeCropHashesTx replaces blob sum's crop hashes by m's.
func writeCropHashesTx(ctx context.Context, tx *sql.Tx, sum string, m evidence.Meta) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM blob_crop_hashes WHERE sha256 = ?`, sum); err != nil {
		return fmt.Errorf("crop hashes: %w", err)
	}
	if m.PHash == nil {
		return nil
	}
	for i, h := range m.CropHashes {
		if _, err := tx.ExecContext(ctx, `INSERT INTO blob_crop_hashes(sha256, variant, phash) VALUES (?, ?, ?)`, sum, i+1, int64(h)); err != nil {
			return fmt.Errorf("crop hashes: %w", err)
		}
	}
	// The off-centre crops after the centred ones, at fixed variants.
	for i, h := range m.ShiftHashes {
		if _, err := tx.ExecContext(ctx, `INSERT INTO blob_crop_hashes(sha256, variant, phash) VALUES (?, ?, ?)`, sum, indexedVariants+1+i, int64(h)); err != nil {
			return fmt.Errorf("crop hashes: %w", err)
		}
	}
	return nil
}

// RecordBlobs records blobs that were put into the blob store by other
// means than an upload (the demo data set, an import), in one
// transaction. Blobs already recorded are kept as they are. The new ones
// are queued for analysis (analyzed_at NULL): the upload handler's
// analysis worker reads their EXIF and perceptual hash and runs the
// evidence checks of the visits that reference them, as for an upload.
func (s *Store) RecordBlobs(ctx context.Context, bs []upload.Blob) error {
	return s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for _, b := range bs {
			b.Meta = evidence.Meta{} // read by the analysis worker
			if _, err := insertBlobTx(ctx, tx, b); err != nil {
				return fmt.Errorf("record blob %s: %w", b.SHA256, err)
			}
		}
		return nil
	})
}

// metaArgs returns the blobs columns exif_time, exif_lon, exif_lat, phash,
// width and height for m (nil where m has nothing).
func metaArgs(m evidence.Meta) (taken, lon, lat, phash, w, h any) {
	if t := m.Taken.String(); t != "" {
		taken = t
	}
	if m.GPS != nil {
		lon, lat = m.GPS[0], m.GPS[1]
	}
	if m.PHash != nil {
		phash = int64(*m.PHash)
	}
	if m.Width > 0 && m.Height > 0 {
		w, h = m.Width, m.Height
	}
	return
}

// UnanalysedBlobs implements upload.Store.
func (s *Store) UnanalysedBlobs(ctx context.Context, limit int) ([]upload.Blob, error) {
	rows, err := s.readRows(ctx, `SELECT sha256, size, media_type, stored_at FROM blobs
		WHERE analyzed_at IS NULL ORDER BY stored_at, sha256 LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("unanalysed blobs: %w", err)
	}
	defer rows.Close()
	var out []upload.Blob
	for rows.Next() {
		var b upload.Blob
		var stored string
		if err := rows.Scan(&b.SHA256, &b.Size, &b.MediaType, &stored); err != nil {
			return nil, fmt.Errorf("unanalysed blobs: %w", err)
		}
		b.StoredAt = domain.ParseTimestamp(stored)
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("unanalysed blobs: %w", err)
	}
	return out, nil
}

// BlobAnalysed implements upload.Store.
func (s *Store) BlobAnalysed(ctx context.Context, sum string, m evidence.Meta) error {
	taken, lon, lat, phash, w, h := metaArgs(m)
	var old []uint64
	err := s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		if old, err = blobHashesTx(ctx, tx, sum); err != nil {
			return fmt.Errorf("blob analysed %s: %w", sum, err)
		}
		// Whoever holds the claim: the same bytes give the same result,
		// so an owner whose lease was taken over writes what the new one
		// wrote (instances.go).
		if _, err := tx.ExecContext(ctx, `UPDATE blobs SET exif_time = ?, exif_lon = ?, exif_lat = ?, phash = ?, width = ?, height = ?,
			analyzed_at = ?, analysis_owner = NULL, analysis_lease_until = NULL, hash_seq = `+nextHashSeq+` WHERE sha256 = ?`,
			taken, lon, lat, phash, w, h, s.ts(), sum); err != nil {
			return fmt.Errorf("blob analysed: %w", err)
		}
		return writeCropHashesTx(ctx, tx, sum, m)
	})
	if err != nil {
		return err
	}
	s.indexHashes(sum, old, hashesOf(m))
	return nil
}

// blobHashesTx returns blob sum's indexed perceptual hashes as hashesOf
// orders them (nil: none), or domain.ErrNotFound.
func blobHashesTx(ctx context.Context, tx *sql.Tx, sum string) ([]uint64, error) {
	var full sql.NullInt64
	err := tx.QueryRowContext(ctx, `SELECT phash FROM blobs WHERE sha256 = ?`, sum).Scan(&full)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, domain.ErrNotFound
	} else if err != nil || !full.Valid {
		return nil, err
	}
	out := []uint64{uint64(full.Int64)}
	rows, err := tx.QueryContext(ctx, `SELECT phash FROM blob_crop_hashes WHERE sha256 = ? AND variant <= ? ORDER BY variant`, sum, indexedVariants)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var h int64
		if err := rows.Scan(&h); err != nil {
			return nil, err
		}
		out = append(out, uint64(h))
	}
	return out, rows.Err()
}

// DeleteUpload implements upload.Store.
func (s *Store) DeleteUpload(ctx context.Context, id string) error {
	if _, err := s.writeExec(ctx, `DELETE FROM uploads WHERE id = ?`, id); err != nil {
		return fmt.Errorf("delete upload: %w", err)
	}
	return nil
}

// ActiveUploads implements upload.Store.
func (s *Store) ActiveUploads(ctx context.Context, deviceID string, limit int) ([]upload.Upload, error) {
	return s.queryUploads(ctx, `SELECT `+uploadCols+` FROM uploads WHERE device_id = ? AND state = 'active'
		ORDER BY created_at, id LIMIT ?`, deviceID, max(limit, 0))
}

// ExpiredUploads implements upload.Store.
func (s *Store) ExpiredUploads(ctx context.Context, now time.Time) ([]upload.Upload, error) {
	return s.queryUploads(ctx, `SELECT `+uploadCols+` FROM uploads WHERE expires_at < ?
		UNION SELECT `+uploadCols+` FROM uploads WHERE device_id IN (SELECT id FROM devices WHERE revoked_at IS NOT NULL)
		ORDER BY 1`, sortableTS(now))
}

// DeviceUploads implements upload.Store.
func (s *Store) DeviceUploads(ctx context.Context, deviceID string) ([]upload.Upload, error) {
	return s.queryUploads(ctx, `SELECT `+uploadCols+` FROM uploads WHERE device_id = ? ORDER BY id`, deviceID)
}

// Referenced implements upload.Store: a visit the device pushed names the
// blob, or the device attached it to a visit (evidence.attach).
func (s *Store) Referenced(ctx context.Context, deviceID, sum string) (bool, error) {
	var ok bool
	err := s.readRow(ctx, `SELECT EXISTS (SELECT 1 FROM visit_evidence ve JOIN visits v ON v.id = ve.visit_id
			WHERE ve.sha256 = ? AND v.device_id = ?)
		OR EXISTS (SELECT 1 FROM mutation_results WHERE device_id = ? AND kind = 'evidence.attach'
			AND (result ->> 'status') = 'applied'
			AND (body -> 'evidence_attach' -> 'evidence' ->> 'sha256') = ?)`, sum, deviceID, deviceID, sum).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("referenced: %w", err)
	}
	return ok, nil
}

// BlobArrived implements upload.Store: the checks run again for every
// visit that references the blob.
func (s *Store) BlobArrived(ctx context.Context, sum string) error {
	rows, err := s.readRows(ctx, `SELECT DISTINCT visit_id FROM visit_evidence WHERE sha256 = ? ORDER BY visit_id`, sum)
	if err != nil {
		return fmt.Errorf("blob arrived: %w", err)
	}
	ids, err := scanStrings(rows)
	if err != nil {
		return fmt.Errorf("blob arrived: %w", err)
	}
	var errs []error
	for _, id := range ids {
		errs = append(errs, s.RunEvidenceChecks(ctx, id))
	}
	return errors.Join(errs...)
}

// --- checks ---

// RunEvidenceChecksForPush runs RunEvidenceChecks for every visit that a
// committed push created or attached evidence to. Call it after Push
// returns (the checks are not part of the push's transaction: a failure
// here must not fail the push, and the next blob arrival runs them again).
func (s *Store) RunEvidenceChecksForPush(ctx context.Context, req *syncproto.PushRequest, resp *syncproto.PushResponse) error {
	applied := map[int64]bool{}
	if resp != nil {
		for _, r := range resp.Results {
			if r.Status == syncproto.StatusApplied {
				applied[r.Seq] = true
			}
		}
	}
	// A visit needs the full checks if it references evidence, however
	// it got it (in its creation or by an attach, in this push or not).
	var order []string
	needsFull := map[string]bool{}
	note := func(id string, full bool) {
		if _, ok := needsFull[id]; !ok {
			order = append(order, id)
		}
		needsFull[id] = needsFull[id] || full
	}
	for _, m := range req.Mutations {
		if !applied[m.Seq] {
			continue
		}
		switch {
		case m.Kind == syncproto.KindVisitCreate && m.Visit != nil:
			note(m.Visit.ID, len(m.Visit.Evidence) > 0)
		case m.Kind == syncproto.KindEvidenceAttach && m.EvidenceAttach != nil:
			note(m.EvidenceAttach.VisitID, true)
		}
	}
	var plain, full []string
	for _, id := range order {
		if needsFull[id] {
			full = append(full, id)
		} else {
			plain = append(plain, id)
		}
	}
	errs := []error{s.checkPlainVisits(ctx, plain)}
	for _, id := range full {
		errs = append(errs, s.RunEvidenceChecks(ctx, id))
	}
	return errors.Join(errs...)
}

// checkPlainVisits runs the checks of visits that reference no evidence:
// only the visit's own (place boundary, accuracy), so two queries for the
// whole batch (the visits' facts, their stored flags) and a write only
// for a visit whose flags change.
func (s *Store) checkPlainVisits(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	cfg := s.evidenceConfig()
	facts, err := s.visitFactsOf(ctx, ids)
	if err != nil {
		return fmt.Errorf("evidence checks: %w", err)
	}
	rows, err := s.readRows(ctx, `SELECT visit_id, sha256, flag, detail FROM evidence_flags WHERE visit_id IN (SELECT value FROM json_each(?))`, jsonList(ids))
	if err != nil {
		return fmt.Errorf("evidence checks: %w", err)
	}
	stored := map[string][]evidence.Flag{}
	for rows.Next() {
		var f evidence.Flag
		if err := rows.Scan(&f.VisitID, &f.SHA256, &f.Flag, &f.Detail); err != nil {
			rows.Close()
			return fmt.Errorf("evidence checks: %w", err)
		}
		stored[f.VisitID] = append(stored[f.VisitID], f)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("evidence checks: %w", err)
	}
	var errs []error
	for _, id := range ids {
		v, ok := facts[id]
		if !ok {
			errs = append(errs, fmt.Errorf("evidence checks: visit %s: %w", id, domain.ErrNotFound))
			continue
		}
		flags := evidence.CheckVisit(cfg, v.Visit)
		if sameFlags(flags, stored[id]) {
			continue
		}
		errs = append(errs, s.writeFlags(ctx, id, flags))
	}
	return errors.Join(errs...)
}

func anySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// visitFacts loads what the checks need to know about a visit.
func (s *Store) visitFacts(ctx context.Context, id string) (evidence.Visit, syncproto.FormDef, error) {
	facts, err := s.visitFactsOf(ctx, []string{id})
	if err != nil {
		return evidence.Visit{}, syncproto.FormDef{}, fmt.Errorf("visit %s: %w", id, err)
	}
	f, ok := facts[id]
	if !ok {
		return evidence.Visit{}, syncproto.FormDef{}, fmt.Errorf("visit %s: %w", id, domain.ErrNotFound)
	}
	return f.Visit, *f.form, nil
}

// visitFactsQuery selects what visitFactsOf reads, for the visits whose
// ids are in the JSON array of its one parameter.
const visitFactsQuery = `SELECT v.id, v.household_id, v.place_code, v.form_id, v.form_version, v.lon, v.lat, v.accuracy_m,
		v.device_time, v.device_tz_offset, p.updated_at, COALESCE(v.gps_reason, ''), v.server_time
	FROM visits v LEFT JOIN places p ON p.code = v.place_code WHERE v.id IN (SELECT value FROM json_each(?))`

// visitFact is a visit's facts with its form version.
type visitFact struct {
	evidence.Visit
	form *syncproto.FormDef
}

// visitFactsOf returns the facts of several visits (absent ones are
// missing from the map), with the place's boundary and the form version.
// The rows are read fully and closed before the boundaries and forms are
// looked up: those may need a connection of their own on a cold cache.
func (s *Store) visitFactsOf(ctx context.Context, ids []string) (map[string]visitFact, error) {
	rows, err := s.readRows(ctx, visitFactsQuery, jsonList(ids))
	if err != nil {
		return nil, err
	}
	type raw struct {
		v                    evidence.Visit
		formID, placeUpdated string
		formVersion          int
		hasPlace             bool
	}
	var raws []raw
	for rows.Next() {
		var r raw
		var deviceTime string
		var lon, lat, acc sql.NullFloat64
		var placeUpdated sql.NullString
		var zone sql.NullInt64
		var received string
		if err := rows.Scan(&r.v.ID, &r.v.HouseholdID, &r.v.PlaceCode, &r.formID, &r.formVersion, &lon, &lat, &acc, &deviceTime, &zone, &placeUpdated, &r.v.GPSReason, &received); err != nil {
			rows.Close()
			return nil, err
		}
		if lon.Valid && lat.Valid {
			r.v.Point = &orb.Point{lon.Float64, lat.Float64}
		}
		r.v.AccuracyM = acc.Float64
		r.v.DeviceTime = domain.ParseTimestamp(deviceTime)
		r.v.ReceivedAt = domain.ParseTimestamp(received)
		r.placeUpdated, r.hasPlace = placeUpdated.String, placeUpdated.Valid
		if zone.Valid {
			// The zone the device wrote in device_time ("Z" leaves it nil
			// and the default zone applies).
			r.v.Zone = time.FixedZone("", int(zone.Int64))
		}
		raws = append(raws, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make(map[string]visitFact, len(raws))
	for _, r := range raws {
		if r.hasPlace {
			g, err := s.boundary(ctx, r.v.PlaceCode, r.placeUpdated)
			if err != nil {
				return nil, err
			}
			r.v.Boundary = g
		}
		form, err := s.form(ctx, r.formID, r.formVersion)
		if err != nil {
			return nil, err
		}
		r.v.MaxAccuracyM = form.MaxAccuracyM
		out[r.v.ID] = visitFact{Visit: r.v, form: form}
	}
	return out, nil
}

// boundary returns a place's parsed boundary through the cache, reading it
// on the pool on a miss.
func (s *Store) boundary(ctx context.Context, place, updatedAt string) (orb.Geometry, error) {
	if g, ok := s.boundaries.peek(place, updatedAt); ok {
		return g, nil
	}
	var g orb.Geometry
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		var err error
		g, err = s.boundaries.get(ctx, tx, place, updatedAt)
		return err
	})
	return g, err
}

// form returns a published form version through the cache, reading it on
// the pool on a miss.
func (s *Store) form(ctx context.Context, id string, version int) (*syncproto.FormDef, error) {
	if f := s.peekForm(id, version); f != nil {
		return f, nil
	}
	var f *syncproto.FormDef
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		var err error
		f, err = s.cachedForm(ctx, tx, id, version)
		return err
	})
	return f, err
}

// jsonList encodes a list of values as one JSON array, the single
// parameter of "IN (SELECT value FROM json_each(?))": the SQL text stays
// the same whatever the list's length.
func jsonList[T any](vs []T) string {
	if vs == nil {
		vs = []T{}
	}
	b, err := json.Marshal(vs)
	if err != nil {
		panic(fmt.Sprintf("sqlstore: json list: %v", err)) // strings and numbers always encode
	}
	return string(b)
}

// usesOf lists every attachment of the given blobs to any visit, with the
// visit's household and the blob's perceptual hashes (whole and crops) if
// present.
func (s *Store) usesOf(ctx context.Context, sums []string) ([]evidence.Use, error) {
	if len(sums) == 0 {
		return nil, nil
	}
	var out []evidence.Use
	for start := 0; start < len(sums); start += 500 {
		batch := sums[start:min(len(sums), start+500)]
		rows, err := s.readRows(ctx, `SELECT DISTINCT ve.visit_id, v.household_id, ve.sha256, b.phash
			FROM visit_evidence ve JOIN visits v ON v.id = ve.visit_id LEFT JOIN blobs b ON b.sha256 = ve.sha256
			WHERE ve.sha256 IN (SELECT value FROM json_each(?))`, jsonList(batch))
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var u evidence.Use
			var ph sql.NullInt64
			if err := rows.Scan(&u.VisitID, &u.HouseholdID, &u.SHA256, &ph); err != nil {
				rows.Close()
				return nil, err
			}
			if ph.Valid {
				v := uint64(ph.Int64)
				u.PHash = &v
			}
			out = append(out, u)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, s.addCrops(ctx, out)
}

// addCrops fills the crop hashes (centred and off-centre) of the uses
// that have a whole-picture hash.
func (s *Store) addCrops(ctx context.Context, uses []evidence.Use) error {
	var sums []string
	for _, u := range uses {
		if u.PHash != nil {
			sums = append(sums, u.SHA256)
		}
	}
	slices.Sort(sums)
	sums = slices.Compact(sums)
	type hashes struct{ crops, shifts []uint64 }
	crops := map[string]*hashes{}
	for start := 0; start < len(sums); start += 500 {
		rows, err := s.readRows(ctx, `SELECT sha256, variant, phash FROM blob_crop_hashes
			WHERE sha256 IN (SELECT value FROM json_each(?)) ORDER BY sha256, variant`, jsonList(sums[start:min(len(sums), start+500)]))
		if err != nil {
			return err
		}
		for rows.Next() {
			var sum string
			var variant int
			var h int64
			if err := rows.Scan(&sum, &variant, &h); err != nil {
				rows.Close()
				return err
			}
			c := crops[sum]
			if c == nil {
				c = &hashes{}
				crops[sum] = c
			}
			if variant <= indexedVariants {
				c.crops = append(c.crops, uint64(h))
			} else if variant == indexedVariants+1+len(c.shifts) {
				c.shifts = append(c.shifts, uint64(h)) // in order, none missing
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	for i := range uses {
		if c := crops[uses[i].SHA256]; c != nil {
			uses[i].Crops, uses[i].Shifts = c.crops, c.shifts
		}
	}
	return nil
}

// RunEvidenceChecks runs every evidence check for one visit and stores the
// flags: the visit's own flags are replaced by the current set; flags the
// checks raise on other visits (the other side of a shared or
// near-identical photo) are added. Call it after a push that created the
// visit or attached evidence to it commits (RunEvidenceChecksForPush);
// uploads call it when a blob arrives.
func (s *Store) RunEvidenceChecks(ctx context.Context, visitID string) error {
	cfg := s.evidenceConfig()
	v, _, err := s.visitFacts(ctx, visitID)
	if err != nil {
		return fmt.Errorf("evidence checks: %w", err)
	}
	flags := evidence.CheckVisit(cfg, v)

	rows, err := s.readRows(ctx, `SELECT DISTINCT ve.sha256 FROM visit_evidence ve WHERE ve.visit_id = ? ORDER BY 1`, visitID)
	if err != nil {
		return fmt.Errorf("evidence checks: %w", err)
	}
	sums, err := scanStrings(rows)
	if err != nil {
		return fmt.Errorf("evidence checks: %w", err)
	}
	mySums := map[string]bool{}
	for _, sum := range sums {
		mySums[sum] = true
		b, err := s.Blob(ctx, sum)
		if errors.Is(err, domain.ErrNotFound) {
			continue // not arrived yet: checked again when it does
		}
		if err != nil {
			return fmt.Errorf("evidence checks: %w", err)
		}
		flags = append(flags, evidence.CheckBlob(cfg, v, evidence.Blob{SHA256: sum, GPS: b.GPS, Taken: b.Taken})...)
	}
	uses, err := s.usesOf(ctx, sums)
	if err != nil {
		return fmt.Errorf("evidence checks: %w", err)
	}
	var mine []evidence.Use
	for _, u := range uses {
		if u.VisitID == visitID && u.PHash != nil {
			mine = append(mine, u)
		}
	}
	for _, f := range evidence.SameBlob(uses) {
		if mySums[f.SHA256] {
			flags = append(flags, f)
		}
	}
	if len(mine) > 0 {
		if err := s.refreshNearIndex(ctx); err != nil {
			return fmt.Errorf("evidence checks: %w", err)
		}
	}
	candidates, err := s.usesOf(ctx, s.nearUses(mine, mySums, cfg.NearDuplicateDistance))
	if err != nil {
		return fmt.Errorf("evidence checks: %w", err)
	}
	flags = append(flags, evidence.NearDuplicates(cfg, mine, candidates)...)
	return s.storeFlags(ctx, visitID, flags)
}

// storeFlags replaces visitID's flags with those in flags that are about
// it, and adds (or refreshes) the others.
func (s *Store) storeFlags(ctx context.Context, visitID string, flags []evidence.Flag) error {
	if same, err := s.flagsStored(ctx, visitID, flags); err != nil {
		return err
	} else if same {
		return nil // most visits: no flags before, none now
	}
	return s.writeFlags(ctx, visitID, flags)
}

// writeFlags is storeFlags without the check that anything changed.
func (s *Store) writeFlags(ctx context.Context, visitID string, flags []evidence.Flag) error {
	now := s.ts()
	return s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		keep := map[string]bool{}
		for _, f := range flags {
			if f.VisitID == visitID {
				keep[f.SHA256+"\x00"+f.Flag] = true
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO evidence_flags(visit_id, sha256, flag, detail, created_at) VALUES (?, ?, ?, ?, ?)
					ON CONFLICT (visit_id, sha256, flag) DO UPDATE SET detail = excluded.detail`,
				f.VisitID, f.SHA256, f.Flag, f.Detail, now); err != nil {
				return fmt.Errorf("store flag: %w", err)
			}
		}
		rows, err := tx.QueryContext(ctx, `SELECT sha256, flag FROM evidence_flags WHERE visit_id = ?`, visitID)
		if err != nil {
			return err
		}
		var stale [][2]string
		for rows.Next() {
			var sum, flag string
			if err := rows.Scan(&sum, &flag); err != nil {
				rows.Close()
				return err
			}
			if !keep[sum+"\x00"+flag] {
				stale = append(stale, [2]string{sum, flag})
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, k := range stale {
			if _, err := tx.ExecContext(ctx, `DELETE FROM evidence_flags WHERE visit_id = ? AND sha256 = ? AND flag = ?`, visitID, k[0], k[1]); err != nil {
				return err
			}
		}
		return nil
	})
}

// flagsStored reports whether flags are all about visitID and are exactly
// the flags stored for it, details included (then storeFlags has nothing
// to write).
func (s *Store) flagsStored(ctx context.Context, visitID string, flags []evidence.Flag) (bool, error) {
	for _, f := range flags {
		if f.VisitID != visitID {
			return false, nil
		}
	}
	have, err := s.EvidenceFlags(ctx, visitID)
	if err != nil {
		return false, err
	}
	return sameFlags(flags, have), nil
}

// sameFlags reports whether a and b hold the same flags (visit, blob,
// flag and detail), in any order.
func sameFlags(a, b []evidence.Flag) bool {
	if len(a) != len(b) {
		return false
	}
	key := func(f evidence.Flag) [4]string { return [4]string{f.VisitID, f.SHA256, f.Flag, f.Detail} }
	want := map[[4]string]int{}
	for _, f := range a {
		want[key(f)]++
	}
	for _, f := range b {
		k := key(f)
		if want[k] == 0 {
			return false
		}
		want[k]--
	}
	return true
}

// EvidenceFlags lists a visit's flags (visit flags have sha256 "").
func (s *Store) EvidenceFlags(ctx context.Context, visitID string) ([]evidence.Flag, error) {
	rows, err := s.readRows(ctx, `SELECT visit_id, sha256, flag, detail FROM evidence_flags WHERE visit_id = ? ORDER BY sha256, flag`, visitID)
	if err != nil {
		return nil, fmt.Errorf("evidence flags: %w", err)
	}
	defer rows.Close()
	out := []evidence.Flag{}
	for rows.Next() {
		var f evidence.Flag
		if err := rows.Scan(&f.VisitID, &f.SHA256, &f.Flag, &f.Detail); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// --- completeness ---

// VisitEvidence reports a visit's evidence: slots, references with their
// blobs and flags, and the visit's own flags.
func (s *Store) VisitEvidence(ctx context.Context, visitID string) (evidence.VisitReport, error) {
	r := evidence.VisitReport{VisitID: visitID, Evidence: []evidence.Item{}, Flags: []evidence.Flag{}}
	err := s.readRow(ctx, `SELECT household_id, place_code, form_id, form_version FROM visits WHERE id = ?`, visitID).
		Scan(&r.HouseholdID, &r.PlaceCode, &r.FormID, &r.FormVersion)
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("visit %s: %w", visitID, domain.ErrNotFound)
	}
	if err != nil {
		return r, fmt.Errorf("visit evidence: %w", err)
	}
	form, err := s.form(ctx, r.FormID, r.FormVersion)
	if err != nil {
		return r, fmt.Errorf("visit evidence: %w", err)
	}
	flags, err := s.EvidenceFlags(ctx, visitID)
	if err != nil {
		return r, err
	}
	bySum := map[string][]evidence.Flag{}
	for _, f := range flags {
		if f.SHA256 == "" {
			r.Flags = append(r.Flags, f)
		} else {
			bySum[f.SHA256] = append(bySum[f.SHA256], f)
		}
	}
	rows, err := s.readRows(ctx, `SELECT ve.sha256, ve.slot, ve.size, ve.media_type, b.stored_at
		FROM visit_evidence ve LEFT JOIN blobs b ON b.sha256 = ve.sha256 AND ve.held = 1 WHERE ve.visit_id = ? ORDER BY ve.slot, ve.sha256`, visitID)
	if err != nil {
		return r, fmt.Errorf("visit evidence: %w", err)
	}
	counts := evidence.Counts{}
	for rows.Next() {
		var it evidence.Item
		var stored sql.NullString
		if err := rows.Scan(&it.SHA256, &it.Slot, &it.Size, &it.MediaType, &stored); err != nil {
			rows.Close()
			return r, err
		}
		it.Present = stored.Valid
		c := counts[it.Slot]
		c.Referenced++
		if it.Present {
			c.Present++
		}
		counts[it.Slot] = c
		it.Flags = bySum[it.SHA256]
		if it.Flags == nil {
			it.Flags = []evidence.Flag{}
		}
		r.Evidence = append(r.Evidence, it)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return r, err
	}
	for i := range r.Evidence {
		it := &r.Evidence[i]
		if !it.Present {
			continue
		}
		b, err := s.Blob(ctx, it.SHA256)
		if err != nil {
			return r, err
		}
		st := b.StoredAt
		it.StoredAt, it.Width, it.Height, it.TakenAt = &st, b.Width, b.Height, b.Taken.String()
		it.Size, it.MediaType = b.Size, b.MediaType
		it.AnalysisPending = !b.Analysed
		if b.GPS != nil {
			it.GPS = &syncproto.Point{Lon: b.GPS[0], Lat: b.GPS[1]}
		}
	}
	r.Slots = evidence.Slots(form, counts)
	r.Complete = len(evidence.MissingSlots(r.Slots)) == 0
	return r, nil
}

// EvidenceGaps lists the visits under the given places (nil: everywhere)
// whose evidence is incomplete: some slot of the visit's form version
// holds fewer present blobs than its MinCount. Visits that a later visit
// corrects and rejected visits are left out (their evidence no longer
// matters). At most limit visits are returned, ordered by place, household
// and time; truncated says whether there were more. It reads the same
// gaps as the console's report (gapsCTE).
func (s *Store) EvidenceGaps(ctx context.Context, roots []string, limit int) (gaps []evidence.VisitGap, truncated bool, err error) {
	if limit <= 0 {
		limit = 1000
	}
	sc := consoleScope{all: roots == nil}
	for _, code := range roots {
		var path string
		err := s.readRow(ctx, `SELECT path FROM places WHERE code = ?`, code).Scan(&path)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("evidence gaps: %w", err)
		}
		sc.ranges = append(sc.ranges, [2]string{path, pathEnd(path)})
	}
	gaps = []evidence.VisitGap{}
	cte, args, ok, err := s.gapsCTE(ctx, sc)
	if err != nil || !ok {
		return gaps, false, err
	}
	// The slots' labels, and their order in the form (Missing follows it).
	type slotInfo struct {
		label string
		index int
	}
	slots := map[string]slotInfo{} // form@version/slot ->
	forms, err := s.Forms(ctx, false)
	if err != nil {
		return nil, false, fmt.Errorf("evidence gaps: %w", err)
	}
	for _, f := range forms {
		for i, sl := range f.Slots {
			slots[fmt.Sprintf("%s@%d/%s", f.ID, f.Version, sl.Name)] = slotInfo{sl.Label, i}
		}
	}
	slotOf := func(g *evidence.VisitGap, name string) slotInfo {
		return slots[fmt.Sprintf("%s@%d/%s", g.FormID, g.FormVersion, name)]
	}
	// One visit more than asked for tells whether there are more.
	rows, err := s.readRows(ctx, cte+`, top AS (SELECT DISTINCT g.visit_id, p.path, g.household_id, g.device_time FROM g JOIN places p ON p.code = g.place_code
			ORDER BY p.path, g.household_id, g.device_time, g.visit_id LIMIT ?)
		SELECT g.visit_id, g.household_id, g.place_code, g.form_id, g.form_version, COALESCE(v.device_id, ''), COALESCE(u.username, ''),
			g.device_time, g.review_state, g.slot, g.min_count, g.referenced, g.present
		FROM g JOIN top ON top.visit_id = g.visit_id JOIN visits v ON v.id = g.visit_id LEFT JOIN users u ON u.id = g.user_id
		ORDER BY top.path, g.household_id, g.device_time, g.visit_id, g.slot`, append(args, limit+1)...)
	if err != nil {
		return nil, false, fmt.Errorf("evidence gaps: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var g evidence.VisitGap
		var deviceTime string
		var sl evidence.SlotStatus
		if err := rows.Scan(&g.VisitID, &g.HouseholdID, &g.PlaceCode, &g.FormID, &g.FormVersion, &g.DeviceID, &g.UserName,
			&deviceTime, &g.ReviewState, &sl.Slot, &sl.Need, &sl.Referenced, &sl.Present); err != nil {
			return nil, false, fmt.Errorf("evidence gaps: %w", err)
		}
		sl.Label = slotOf(&g, sl.Slot).label
		if n := len(gaps); n > 0 && gaps[n-1].VisitID == g.VisitID {
			gaps[n-1].Missing = append(gaps[n-1].Missing, sl)
			continue
		}
		g.DeviceTime = domain.ParseTimestamp(deviceTime)
		g.Missing = []evidence.SlotStatus{sl}
		gaps = append(gaps, g)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("evidence gaps: %w", err)
	}
	for i := range gaps {
		g := &gaps[i]
		slices.SortStableFunc(g.Missing, func(a, b evidence.SlotStatus) int { return slotOf(g, a.Slot).index - slotOf(g, b.Slot).index })
	}
	if len(gaps) > limit {
		return gaps[:limit], true, nil
	}
	return gaps, false, nil
}

// boundaryCache holds parsed place boundaries for the evidence checks,
// which run for every visit pushed; reading and parsing the GeoJSON each
// time was a sixth of a push's CPU. An entry is keyed by the place's
// updated_at, which every change of its boundary moves.
type boundaryCache struct {
	mu sync.Mutex
	m  map[string]parsedBoundary // place code →
}

type parsedBoundary struct {
	updatedAt string
	g         orb.Geometry
}

// maxCachedBoundaries bounds the cache (a county has a few thousand
// places; beyond this it starts again).
const maxCachedBoundaries = 10_000

// peek returns the cached boundary of place as of updatedAt, if any.
func (c *boundaryCache) peek(place, updatedAt string) (orb.Geometry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[place]
	if !ok || e.updatedAt != updatedAt {
		return nil, false
	}
	return e.g, true
}

// get returns the parsed boundary of place as of updatedAt (nil when it
// has none or it does not parse).
func (c *boundaryCache) get(ctx context.Context, q querier, place, updatedAt string) (orb.Geometry, error) {
	if g, ok := c.peek(place, updatedAt); ok {
		return g, nil
	}
	var raw sql.NullString
	if err := q.QueryRowContext(ctx, `SELECT boundary, updated_at FROM places WHERE code = ?`, place).Scan(&raw, &updatedAt); err != nil {
		return nil, fmt.Errorf("place %s boundary: %w", place, err)
	}
	var g orb.Geometry
	if raw.Valid && raw.String != "" {
		if pg, err := geo.ParseBoundary(json.RawMessage(raw.String)); err == nil {
			g = pg
		}
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedBoundaries {
		c.m = map[string]parsedBoundary{}
	}
	c.m[place] = parsedBoundary{updatedAt: updatedAt, g: g}
	c.mu.Unlock()
	return g, nil
}
