package mobileclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"fieldsync/syncproto"
)

// EvidenceDir is the folder, inside the client's folder, that holds the
// evidence files queued for upload, each named by its SHA-256.
const EvidenceDir = "evidence"

// Upload policies (SetUploadPolicy).
const (
	// UploadAll: Sync uploads evidence after pushing records (default).
	UploadAll = "all"
	// UploadRecordsOnly: Sync pushes and pulls records only; evidence
	// waits in the queue (Pending counts it) for a better link.
	UploadRecordsOnly = "records_only"
)

// Upload states.
const (
	UploadPending = "pending"
	UploadDone    = "done"
	UploadFailed  = "failed"
)

// maxPhotoSource bounds the size of a photo file read to be downscaled.
const maxPhotoSource = 256 << 20

// evidenceRel is the path of an evidence file relative to the client's
// folder, with forward slashes as stored in the uploads table.
func evidenceRel(sum string) string { return path.Join(EvidenceDir, sum) }

func (c *Client) localPath(rel string) string { return filepath.Join(c.dir, filepath.FromSlash(rel)) }

// dropPrepared deletes the prepared copy (EvidenceDir/<sum>) of a blob
// whose upload is done: the server acknowledged it. It holds the write
// lock and checks the state under it, so that it never deletes the file
// of an upload queued again meanwhile (queueUpload, under the same lock,
// needs the file). An absent file is not an error.
func (c *Client) dropPrepared(ctx context.Context, sum string) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if err := c.check(); err != nil {
		return err
	}
	var state, rel string
	err := c.db.QueryRowContext(ctx, `SELECT state, path FROM uploads WHERE sha256 = ?`, sum).Scan(&state, &rel)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("uploads: %w", err)
	}
	if state != UploadDone || rel != evidenceRel(sum) {
		return nil
	}
	if err := os.Remove(c.localPath(rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// prunePrepared deletes the prepared copies of blobs whose upload is done,
// which a crash between the server's acknowledgement and the deletion
// (uploadDone) leaves behind. It looks only at the files in the folder
// (normally those still waiting to upload), not at every upload ever
// made. Files that no upload row names yet (prepared, the visit not yet
// recorded) and those of pending or failed uploads stay.
func (c *Client) prunePrepared(ctx context.Context) error {
	entries, err := os.ReadDir(filepath.Join(c.dir, EvidenceDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if !e.Type().IsRegular() || !syncproto.ValidSHA256(e.Name()) {
			continue
		}
		if err := c.dropPrepared(ctx, e.Name()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeTempEvidence deletes half-written evidence files left by a crash.
func removeTempEvidence(dir string) {
	tmps, _ := filepath.Glob(filepath.Join(dir, EvidenceDir, ".tmp-*"))
	for _, t := range tmps {
		_ = os.Remove(t)
	}
}

// PrepareEvidence readies a file the app made (a photo, a scan, a
// signature) to be attached to a visit's evidence slot, and returns the
// reference to put in syncproto.Visit.Evidence before RecordVisit (which
// queues the upload in the same transaction as the visit).
//
// mediaType is what the app says the file is ("" to let the bytes tell).
// For a JPEG or PNG the bytes decide: a photo whose long side is over
// Options.MaxPhotoPx is downscaled and re-encoded as JPEG, keeping its
// EXIF capture time and GPS; a smaller JPEG or PNG is kept byte for byte.
// Other files (a PDF) are kept as they are, up to
// syncproto.MaxEvidenceBytes. The result is hashed and copied into the
// client's folder (EvidenceDir/<sha256>), so the app may delete its file
// once the visit is recorded. That copy is deleted in its turn once the
// server has acknowledged the upload (or said it holds the blob already);
// the upload queue keeps its hash, size and media type (Uploads).
//
// Errors wrap ErrInvalid for an empty slot, a file that is empty, too big
// or not what its media type says; file system errors are returned as
// they are.
func (c *Client) PrepareEvidence(file, slot, mediaType string) (syncproto.EvidenceRef, error) {
	ref, err := c.prepareEvidence(file, slot, mediaType)
	if err != nil {
		return syncproto.EvidenceRef{}, fmt.Errorf("prepare evidence: %w", err)
	}
	return ref, nil
}

func (c *Client) prepareEvidence(file, slot, mediaType string) (syncproto.EvidenceRef, error) {
	if err := c.check(); err != nil {
		return syncproto.EvidenceRef{}, err
	}
	if slot == "" || len(slot) > 64 {
		return syncproto.EvidenceRef{}, fmt.Errorf("slot %q: %w", slot, ErrInvalid)
	}
	declared := ""
	if strings.TrimSpace(mediaType) != "" {
		mt, _, err := mime.ParseMediaType(mediaType)
		if err != nil || !strings.Contains(mt, "/") || len(mt) > 100 {
			return syncproto.EvidenceRef{}, fmt.Errorf("media type %q: %w", mediaType, ErrInvalid)
		}
		declared = mt
	}
	src, err := os.Open(file)
	if err != nil {
		return syncproto.EvidenceRef{}, err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return syncproto.EvidenceRef{}, err
	}
	if !fi.Mode().IsRegular() || fi.Size() == 0 {
		return syncproto.EvidenceRef{}, fmt.Errorf("%s is empty or not a file: %w", filepath.Base(file), ErrInvalid)
	}
	head := make([]byte, 512)
	n, err := io.ReadFull(src, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return syncproto.EvidenceRef{}, err
	}
	sniffed, _, _ := mime.ParseMediaType(http.DetectContentType(head[:n]))
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return syncproto.EvidenceRef{}, err
	}
	folder := filepath.Join(c.dir, EvidenceDir)
	if err := os.MkdirAll(folder, 0o700); err != nil {
		return syncproto.EvidenceRef{}, err
	}
	var (
		sum  string
		size int64
		mt   string
	)
	switch {
	case sniffed == "image/jpeg" || sniffed == "image/png":
		// A photo: the bytes decide its type, whatever the app said.
		if fi.Size() > maxPhotoSource {
			return syncproto.EvidenceRef{}, fmt.Errorf("photo of %d bytes: %w", fi.Size(), ErrInvalid)
		}
		data, err := io.ReadAll(src)
		if err != nil {
			return syncproto.EvidenceRef{}, err
		}
		out, outType, err := processPhoto(data, sniffed, c.opts.MaxPhotoPx, c.opts.PhotoQuality)
		if err != nil {
			return syncproto.EvidenceRef{}, err
		}
		if int64(len(out)) > syncproto.MaxEvidenceBytes {
			return syncproto.EvidenceRef{}, fmt.Errorf("photo of %d bytes after downscaling: %w", len(out), ErrInvalid)
		}
		if sum, size, err = storeEvidence(folder, bytes.NewReader(out)); err != nil {
			return syncproto.EvidenceRef{}, err
		}
		mt = outType
	case declared == "image/jpeg" || declared == "image/png":
		return syncproto.EvidenceRef{}, fmt.Errorf("%s is not a %s (its bytes look like %s): %w", filepath.Base(file), declared, sniffed, ErrInvalid)
	default:
		if fi.Size() > syncproto.MaxEvidenceBytes {
			return syncproto.EvidenceRef{}, fmt.Errorf("file of %d bytes, at most %d: %w", fi.Size(), syncproto.MaxEvidenceBytes, ErrInvalid)
		}
		if sum, size, err = storeEvidence(folder, io.LimitReader(src, syncproto.MaxEvidenceBytes+1)); err != nil {
			return syncproto.EvidenceRef{}, err
		}
		if size > syncproto.MaxEvidenceBytes { // grew while we read it
			_ = os.Remove(filepath.Join(folder, sum))
			return syncproto.EvidenceRef{}, fmt.Errorf("file of %d bytes: %w", size, ErrInvalid)
		}
		mt = declared
		if mt == "" {
			mt = sniffed
		}
	}
	return syncproto.EvidenceRef{SHA256: sum, Size: size, MediaType: mt, Slot: slot}, nil
}

// storeEvidence writes r to folder/<sha256 of r> through a synced
// temporary file and returns the sum and size. A file already there with
// the same content is kept; one with other content (damaged) is replaced.
func storeEvidence(folder string, r io.Reader) (string, int64, error) {
	tmp, err := os.CreateTemp(folder, ".tmp-*")
	if err != nil {
		return "", 0, err
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), r)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	final := filepath.Join(folder, sum)
	if ok, _ := fileMatches(final, sum, n); ok {
		return sum, n, nil
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", 0, err
	}
	if d, err := os.Open(folder); err == nil { // make the rename durable
		_ = d.Sync()
		d.Close()
	}
	return sum, n, nil
}

// fileMatches reports whether the file at p has the given size and
// SHA-256.
func fileMatches(p, sum string, size int64) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	return readerMatches(f, sum, size)
}

func readerMatches(f *os.File, sum string, size int64) (bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	if fi.Size() != size {
		return false, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		return false, err
	}
	return hex.EncodeToString(h.Sum(nil)) == sum, nil
}

// queueUpload puts a prepared evidence file into the upload queue, inside
// the transaction that records the visit or attachment referencing it. A
// reference whose file is not in the evidence folder (not made by
// PrepareEvidence: a blob the server has from elsewhere) queues nothing.
// Queuing a blob already queued, uploaded or failed makes it pending again:
// the next Sync asks the server whether it has it (cheap) before sending
// anything.
func (c *Client) queueUpload(ctx context.Context, tx *sql.Tx, e syncproto.EvidenceRef) error {
	rel := evidenceRel(e.SHA256)
	fi, err := os.Stat(c.localPath(rel))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("evidence %s: %w", e.SHA256, err)
	}
	if fi.Size() != e.Size {
		return fmt.Errorf("evidence %s: size %d, the file has %d bytes: %w", e.SHA256, e.Size, fi.Size(), ErrInvalid)
	}
	now := ts(c.now())
	_, err = tx.ExecContext(ctx, `INSERT INTO uploads(sha256, path, size, media_type, state, created_at, updated_at)
		VALUES (?, ?, ?, ?, 'pending', ?, ?)
		ON CONFLICT(sha256) DO UPDATE SET state = 'pending', error = '', failures = 0, upload_url = '', offset = 0,
			updated_at = excluded.updated_at
		WHERE uploads.state <> 'pending'`,
		e.SHA256, rel, e.Size, e.MediaType, now, now)
	if err != nil {
		return fmt.Errorf("uploads: %w", err)
	}
	return nil
}

// AttachEvidence prepares a file as PrepareEvidence does and attaches it to
// a visit already on the device (recorded here, or pulled): it queues an
// evidence.attach mutation and the upload in one transaction, and adds the
// reference to the local copy of the visit. Attaching the same file to the
// same slot again does nothing. When the visit's form is on the device,
// the slot and media type are checked against it (ErrInvalid).
func (c *Client) AttachEvidence(visitID, file, slot, mediaType string) (syncproto.EvidenceRef, error) {
	ref, err := c.prepareEvidence(file, slot, mediaType)
	if err != nil {
		return ref, fmt.Errorf("attach evidence: %w", err)
	}
	ctx := context.Background()
	err = c.withTx(ctx, func(tx *sql.Tx) error {
		var body string
		err := tx.QueryRowContext(ctx, `SELECT body FROM visits WHERE id = ?`, visitID).Scan(&body)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("visit %s: %w", visitID, ErrNotFound)
		}
		if err != nil {
			return err
		}
		var v syncproto.Visit
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			return fmt.Errorf("visit %s: %w", visitID, err)
		}
		if slices.ContainsFunc(v.Evidence, func(e syncproto.EvidenceRef) bool { return e.SHA256 == ref.SHA256 && e.Slot == ref.Slot }) {
			return nil
		}
		form, err := loadForm(ctx, tx, v.FormID, v.FormVersion)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return err
		default:
			if err := checkSlot(form, ref); err != nil {
				return err
			}
		}
		m := syncproto.Mutation{Seq: 1, Kind: syncproto.KindEvidenceAttach,
			EvidenceAttach: &syncproto.EvidenceAttach{VisitID: visitID, Evidence: ref}}
		if err := checkMutation(&m); err != nil {
			return err
		}
		if err := c.enqueue(ctx, tx, &m, visitID, v.HouseholdID); err != nil {
			return err
		}
		if err := c.queueUpload(ctx, tx, ref); err != nil {
			return err
		}
		v.Evidence = append(v.Evidence, ref)
		nb, err := json.Marshal(v)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE visits SET body = ? WHERE id = ?`, string(nb), visitID)
		return err
	})
	if err != nil {
		return ref, fmt.Errorf("attach evidence: %w", err)
	}
	return ref, nil
}

// checkSlot checks an evidence reference against its form's slots.
func checkSlot(form *syncproto.FormDef, e syncproto.EvidenceRef) error {
	s, ok := form.Slot(e.Slot)
	if !ok {
		return fmt.Errorf("evidence slot %q is not in form %s@%d: %w", e.Slot, form.ID, form.Version, ErrInvalid)
	}
	if !s.Accepts(e.MediaType) {
		return fmt.Errorf("slot %q does not accept %s: %w", e.Slot, e.MediaType, ErrInvalid)
	}
	return nil
}

// EvidenceFile returns the path of the device's copy of an evidence file
// (to show a queued photo), or an error wrapping ErrNotFound. Once the
// server holds the blob the copy is deleted: ErrNotFound (the app shows
// the server's copy, GET /api/v1/evidence/<sha256>, or its own original).
func (c *Client) EvidenceFile(sum string) (string, error) {
	if err := c.check(); err != nil {
		return "", err
	}
	if !syncproto.ValidSHA256(sum) {
		return "", fmt.Errorf("evidence %q: %w", sum, ErrNotFound)
	}
	p := c.localPath(evidenceRel(sum))
	if _, err := os.Stat(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("evidence %s: %w", sum, ErrNotFound)
		}
		return "", err
	}
	return p, nil
}

// UploadInfo is one evidence file of the upload queue.
type UploadInfo struct {
	SHA256    string
	Size      int64
	MediaType string
	// State is UploadPending, UploadDone or UploadFailed; Error says why an
	// upload failed (or what the last attempt ran into).
	State string
	Error string
	// Offset is how many bytes the server has confirmed.
	Offset int64
	// Path is the device's copy of the file; empty once State is
	// UploadDone (the copy is deleted when the server holds the blob).
	Path     string
	QueuedAt time.Time
}

// Uploads returns the upload queue, oldest first: what waits, what
// arrived, and what failed and why.
func (c *Client) Uploads() ([]UploadInfo, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	rows, err := c.db.Query(`SELECT sha256, size, media_type, state, error, offset, path, created_at FROM uploads ORDER BY created_at, sha256`)
	if err != nil {
		return nil, fmt.Errorf("uploads: %w", err)
	}
	defer rows.Close()
	var out []UploadInfo
	for rows.Next() {
		var u UploadInfo
		var rel, created string
		if err := rows.Scan(&u.SHA256, &u.Size, &u.MediaType, &u.State, &u.Error, &u.Offset, &rel, &created); err != nil {
			return nil, fmt.Errorf("uploads: %w", err)
		}
		if u.State != UploadDone {
			u.Path = c.localPath(rel)
		}
		u.QueuedAt = parseTS(created)
		out = append(out, u)
	}
	return out, rows.Err()
}

// SetUploadPolicy sets the device's bandwidth policy, kept across
// restarts: UploadAll (Sync uploads evidence after the records) or
// UploadRecordsOnly (Sync moves records only; photos wait for a better
// link, e.g. until the app sees Wi-Fi and sets UploadAll again).
func (c *Client) SetUploadPolicy(policy string) error {
	if policy != UploadAll && policy != UploadRecordsOnly {
		return fmt.Errorf("upload policy %q: want %q or %q: %w", policy, UploadAll, UploadRecordsOnly, ErrInvalid)
	}
	ctx := context.Background()
	return c.withTx(ctx, func(tx *sql.Tx) error { return setMeta(ctx, tx, metaUploadPol, policy) })
}

// UploadPolicy returns the bandwidth policy (UploadAll unless set).
func (c *Client) UploadPolicy() (string, error) {
	if err := c.check(); err != nil {
		return "", err
	}
	return c.uploadPolicy(context.Background())
}

func (c *Client) uploadPolicy(ctx context.Context) (string, error) {
	p, _, err := getMeta(ctx, c.db, metaUploadPol)
	if err != nil {
		return "", err
	}
	if p == "" {
		p = UploadAll
	}
	return p, nil
}

// dropLocalEvidence removes a rejected attachment from the local copy of
// its visit.
func dropLocalEvidence(ctx context.Context, tx *sql.Tx, a *syncproto.EvidenceAttach) error {
	var body string
	err := tx.QueryRowContext(ctx, `SELECT body FROM visits WHERE id = ?`, a.VisitID).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	var v syncproto.Visit
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		return fmt.Errorf("visit %s: %w", a.VisitID, err)
	}
	i := slices.IndexFunc(v.Evidence, func(e syncproto.EvidenceRef) bool {
		return e.SHA256 == a.Evidence.SHA256 && e.Slot == a.Evidence.Slot
	})
	if i < 0 {
		return nil
	}
	v.Evidence = slices.Delete(v.Evidence, i, i+1)
	nb, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE visits SET body = ? WHERE id = ?`, string(nb), a.VisitID)
	return err
}
