// Package outboximport applies a field device's outbox file (see
// syncproto/outboxfile) on the server, for an administrator: the unsent
// work of a revoked or broken tablet. The mutations go through the store's
// push path under the device's own id and sequence numbers, so what the
// server already received is answered from its records and never applied
// twice; the blobs are verified against their SHA-256 and stored through
// the configured blob store, held by the device as if it had uploaded
// them. Importing the same file again changes nothing. The push endpoint
// refuses a revoked device; this path does not, and the audit log records
// who imported.
package outboximport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"
	"time"

	"fieldsync/server/blob"
	"fieldsync/server/domain"
	"fieldsync/server/evidence"
	"fieldsync/server/store"
	"fieldsync/server/upload"
	"fieldsync/syncproto"
	"fieldsync/syncproto/outboxfile"
)

// Store is what an import needs of the database: the outbox-import job
// of the store boundary (every engine implements it).
type Store = store.OutboxImport

// Errors; test with errors.Is.
var (
	// ErrNotAdmin: the account named as the importer is not an administrator.
	ErrNotAdmin = errors.New("outbox import: the importer must be an administrator account")
	// ErrWrongDevice: the file names a device or user this server does not
	// know as such.
	ErrWrongDevice = errors.New("outbox import: the file's device does not match this server")
)

// batch is how many mutations go in one push (syncproto.MaxPushMutations at most).
const batch = 200

// Config says who imports and where blobs go.
type Config struct {
	Store Store
	Blobs blob.Store
	// By is the administrator's username, recorded in the audit log.
	By string
	// Now defaults to time.Now.
	Now func() time.Time
}

// Item is one mutation's or blob's outcome.
type Item struct {
	Seq    int64  // mutation sequence number (0 for a blob)
	Kind   string // mutation kind
	SHA256 string // blob sum
	Code   string // rejection code
	Reason string // rejection reason, in the server's words
}

// Summary is what an import did.
type Summary struct {
	DeviceID   string
	DeviceName string
	Username   string
	Revoked    bool
	// Mutations: applied now, already received before (with Code set if
	// the server refused it then: a refusal is final), refused now.
	Applied, Duplicate []Item
	Rejected           []Item
	// Blobs: stored now, already held, refused.
	BlobsStored, BlobsPresent []Item
	BlobsRejected             []Item
	// Warnings are problems that did not stop the import.
	Warnings []string
}

// Changed reports whether the import changed anything.
func (s *Summary) Changed() bool { return len(s.Applied) > 0 || len(s.BlobsStored) > 0 }

// Print writes the summary in Chinese.
func (s *Summary) Print(w io.Writer) {
	state := "在用"
	if s.Revoked {
		state = "已停用"
	}
	fmt.Fprintf(w, "设备 %s（%s，用户 %s，%s）\n", s.DeviceID, s.DeviceName, s.Username, state)
	before := 0
	for _, d := range s.Duplicate {
		if d.Code != "" {
			before++
		}
	}
	fmt.Fprintf(w, "记录：新接收 %d 条，服务器已有 %d 条（其中此前被拒 %d 条），被拒绝 %d 条\n", len(s.Applied), len(s.Duplicate), before, len(s.Rejected))
	for _, r := range s.Rejected {
		fmt.Fprintf(w, "  被拒绝 #%d %s：%s：%s\n", r.Seq, r.Kind, r.Code, r.Reason)
	}
	fmt.Fprintf(w, "附件：新存入 %d 个，服务器已有 %d 个，被拒绝 %d 个\n", len(s.BlobsStored), len(s.BlobsPresent), len(s.BlobsRejected))
	for _, r := range s.BlobsRejected {
		fmt.Fprintf(w, "  被拒绝 %s：%s\n", r.SHA256, r.Reason)
	}
	for _, x := range s.Warnings {
		fmt.Fprintf(w, "注意：%s\n", x)
	}
	if !s.Changed() {
		fmt.Fprintln(w, "服务器上没有任何改动（这个文件此前已经导入过）。")
	}
}

// ImportFile imports the outbox file at path.
func ImportFile(ctx context.Context, cfg Config, path string) (*Summary, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("outbox import: %w", err)
	}
	defer f.Close()
	s, err := Import(ctx, cfg, f)
	if err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Import reads an outbox file from r and applies it. A file that is not a
// valid outbox file, or names a device this server does not have, changes
// nothing. Otherwise the mutations are pushed (in batches, each committed
// on its own; a second import answers from the records), then the blobs
// are verified and stored; a blob whose bytes do not match its hash, or
// that no visit of the device names, is refused on its own.
func Import(ctx context.Context, cfg Config, r io.Reader) (*Summary, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	admin, err := cfg.Store.UserByName(ctx, cfg.By)
	if err != nil {
		return nil, fmt.Errorf("outbox import: importer %q: %w", cfg.By, err)
	}
	if admin.Role != domain.RoleAdmin || admin.Disabled {
		return nil, fmt.Errorf("%w: %q", ErrNotAdmin, cfg.By)
	}
	file, err := outboxfile.Decode(r)
	if err != nil {
		return nil, fmt.Errorf("outbox import: %w", err)
	}
	dev, err := cfg.Store.DeviceAnyState(ctx, file.DeviceID)
	if errors.Is(err, domain.ErrNotFound) {
		return nil, fmt.Errorf("%w: no device %q", ErrWrongDevice, file.DeviceID)
	}
	if err != nil {
		return nil, fmt.Errorf("outbox import: %w", err)
	}
	if (file.User.ID != 0 && file.User.ID != dev.UserID) || (file.User.Username != "" && file.User.Username != dev.Username) {
		return nil, fmt.Errorf("%w: device %s belongs to %s (id %d), the file says %s (id %d)", ErrWrongDevice,
			dev.ID, dev.Username, dev.UserID, file.User.Username, file.User.ID)
	}
	sum := &Summary{DeviceID: dev.ID, DeviceName: dev.Name, Username: dev.Username, Revoked: dev.RevokedAt != nil}
	if err := pushAll(ctx, cfg, dev, file, sum); err != nil {
		return sum, err
	}
	for i := range file.Blobs {
		if err := importBlob(ctx, cfg, dev, &file.Blobs[i], sum); err != nil {
			return sum, err
		}
	}
	osUser := ""
	if u, err := user.Current(); err == nil {
		osUser = u.Username
	}
	host, _ := os.Hostname()
	details := map[string]any{
		"device_id": dev.ID, "exported_at": file.ExportedAt, "mutations": len(file.Mutations), "blobs": len(file.Blobs),
		"applied": len(sum.Applied), "duplicate": len(sum.Duplicate), "rejected": len(sum.Rejected),
		"blobs_stored": len(sum.BlobsStored), "blobs_present": len(sum.BlobsPresent), "blobs_rejected": len(sum.BlobsRejected),
		"os_user": osUser, "host": host,
	}
	if err := cfg.Store.AuditAs(ctx, domain.Actor{UserID: admin.ID, Name: admin.Username}, "outbox.import", "device", dev.ID, details); err != nil {
		return sum, fmt.Errorf("outbox import: audit: %w", err)
	}
	return sum, nil
}

// pushAll pushes the file's mutations through the store's push path, as
// the device would have, and sorts the answers.
func pushAll(ctx context.Context, cfg Config, dev domain.Device, file *outboxfile.File, sum *Summary) error {
	pv := file.ProtocolVersion
	if pv == 0 {
		pv = 1
	}
	pdev := store.PushDevice{DeviceID: dev.ID, UserID: dev.UserID}
	known := dev.LastSeq // what the server had before this import
	for start := 0; start < len(file.Mutations); start += batch {
		part := file.Mutations[start:min(start+batch, len(file.Mutations))]
		// The request is built as the device builds it and read by the
		// decoder the push endpoint uses.
		body, err := json.Marshal(struct {
			ProtocolVersion int               `json:"protocol_version"`
			DeviceID        string            `json:"device_id"`
			Mutations       []json.RawMessage `json:"mutations"`
		}{pv, dev.ID, part})
		if err != nil {
			return fmt.Errorf("outbox import: %w", err)
		}
		req, err := syncproto.DecodePushRequest(bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("outbox import: mutations from seq %d: %w", start+1, err)
		}
		resp, err := cfg.Store.Push(ctx, pdev, req)
		var gap *store.SequenceGapError
		if errors.As(err, &gap) {
			return fmt.Errorf("outbox import: the server expects seq %d next, the file continues at %d: mutations are missing between them (an older export of this device not imported yet?): %w",
				gap.Expected, gap.Got, err)
		}
		if err != nil {
			return fmt.Errorf("outbox import: push from seq %d: %w", req.Mutations[0].Seq, err)
		}
		if err := cfg.Store.RunEvidenceChecksForPush(ctx, req, resp); err != nil {
			// As after a push: never a failure; the checks run again
			// when a blob arrives.
			sum.Warnings = append(sum.Warnings, fmt.Sprintf("seq %d 起的证据检查未完成：%v", req.Mutations[0].Seq, err))
		}
		kinds := make(map[int64]string, len(req.Mutations))
		for _, m := range req.Mutations {
			kinds[m.Seq] = string(m.Kind)
		}
		for _, r := range resp.Results {
			it := Item{Seq: r.Seq, Kind: kinds[r.Seq]}
			if r.Status == syncproto.StatusRejected {
				it.Code, it.Reason = string(r.Code), r.Message
			}
			switch {
			case r.Seq <= known:
				sum.Duplicate = append(sum.Duplicate, it)
			case r.Status == syncproto.StatusRejected:
				sum.Rejected = append(sum.Rejected, it)
			default:
				sum.Applied = append(sum.Applied, it)
			}
		}
		if len(resp.Results) != len(req.Mutations) {
			return fmt.Errorf("outbox import: %d answers for %d mutations from seq %d", len(resp.Results), len(req.Mutations), req.Mutations[0].Seq)
		}
	}
	return nil
}

// importBlob verifies one blob and stores it for the device.
func importBlob(ctx context.Context, cfg Config, dev domain.Device, b *outboxfile.Blob, sum *Summary) error {
	it := Item{SHA256: b.SHA256}
	refuse := func(format string, args ...any) error {
		it.Reason = fmt.Sprintf(format, args...)
		sum.BlobsRejected = append(sum.BlobsRejected, it)
		return nil
	}
	b.SHA256 = strings.ToLower(b.SHA256)
	if !blob.ValidSum(b.SHA256) {
		return refuse("哈希值格式不对")
	}
	if err := b.Verify(); err != nil {
		return refuse("内容与哈希值不符，文件可能已损坏或被改动（%v）", err)
	}
	ref, err := cfg.Store.Referenced(ctx, dev.ID, b.SHA256)
	if err != nil {
		return fmt.Errorf("outbox import: %w", err)
	}
	if !ref {
		return refuse("服务器上没有本设备的走访记录引用这个附件")
	}
	held, err := cfg.Store.DeviceHoldsBlob(ctx, dev.ID, b.SHA256)
	if err != nil {
		return fmt.Errorf("outbox import: %w", err)
	}
	if held {
		sum.BlobsPresent = append(sum.BlobsPresent, it)
		return nil
	}
	if err := cfg.Blobs.Put(ctx, b.SHA256, b.Size, bytes.NewReader(b.Data)); err != nil {
		if errors.Is(err, blob.ErrHashMismatch) || errors.Is(err, blob.ErrSizeMismatch) {
			return refuse("存储拒绝了这些字节：%v", err)
		}
		return fmt.Errorf("outbox import: blob %s: %w", b.SHA256, err)
	}
	mt := evidence.Sniff(b.Data[:min(len(b.Data), 512)])
	if mt == "" || (strings.HasPrefix(mt, "text/plain") && b.MediaType != "") {
		mt = strings.ToLower(b.MediaType)
	}
	if mt == "" {
		mt = "application/octet-stream"
	}
	rec := upload.Blob{SHA256: b.SHA256, Size: b.Size, MediaType: mt, StoredAt: cfg.Now().UTC()}
	if meta, err := evidence.Analyze(bytes.NewReader(b.Data), b.Size); err == nil {
		rec.Meta = meta // else the server's analysis worker reads it later
	}
	if _, err := cfg.Store.RecordImportedBlob(ctx, dev.ID, rec); err != nil {
		return fmt.Errorf("outbox import: blob %s: %w", b.SHA256, err)
	}
	sum.BlobsStored = append(sum.BlobsStored, it)
	return nil
}
