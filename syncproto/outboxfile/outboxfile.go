// Package outboxfile defines the file a field device writes when it can no
// longer sync (its token was revoked, or the tablet is failing): its unsent
// outbox mutations, exactly as it would have pushed them (sequence numbers,
// ids, HLCs), and the evidence it has not uploaded, as base64 with its
// SHA-256 and its visit and slot. An administrator imports the file on the
// server with `fieldsync import-outbox FILE`.
//
// The field app (mobileclient/webapp/js/export.js) writes it; the server
// reads it with Decode. Both sides follow this type; Version changes when
// the format does in a way an older reader would misread.
package outboxfile

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Format is the value of File.Format.
const Format = "fieldsync-outbox"

// Version is the format version this package writes and reads.
const Version = 1

// Limits a reader applies.
const (
	// MaxFileBytes bounds a whole file (JSON with base64 blobs).
	MaxFileBytes = 2 << 30
	// MaxMutations bounds the mutations in one file.
	MaxMutations = 100000
	// MaxBlobs bounds the blobs in one file.
	MaxBlobs = 20000
	// MaxBlobBytes bounds one blob (syncproto.MaxEvidenceBytes).
	MaxBlobBytes = 64 << 20
)

// ErrInvalid is wrapped by every error Decode returns for a file that is
// not a valid outbox file.
var ErrInvalid = errors.New("not a valid outbox file")

// File is one device's unsent work.
type File struct {
	// Format is always "fieldsync-outbox".
	Format string `json:"format"`
	// Version is the format version (1).
	Version int `json:"version"`
	// ExportedAt is when the device wrote the file (device clock).
	ExportedAt time.Time `json:"exported_at"`
	// Server is the origin the device was enrolled with.
	Server string `json:"server,omitempty"`
	// DeviceID is the device's id; the mutations are that device's.
	DeviceID string `json:"device_id"`
	// DeviceName is the name the device was enrolled with.
	DeviceName string `json:"device_name,omitempty"`
	// User is the worker the device was enrolled for, as the device knew her.
	User User `json:"user"`
	// Revoked says the device had been told its token was revoked.
	Revoked bool `json:"revoked,omitempty"`
	// AppVersion is the app's version.
	AppVersion string `json:"app_version,omitempty"`
	// ProtocolVersion is the syncproto version of the mutations.
	ProtocolVersion int `json:"protocol_version"`
	// LastSeq is the last sequence number the server had acknowledged, as
	// far as the device knew.
	LastSeq int64 `json:"last_seq"`
	// Mutations are the outbox rows' push bodies (syncproto.Mutation as
	// JSON), in sequence order, untouched.
	Mutations []json.RawMessage `json:"mutations"`
	// Blobs are the evidence files not yet uploaded.
	Blobs []Blob `json:"blobs"`
}

// User is the device's worker.
type User struct {
	ID          int64  `json:"id"`
	Username    string `json:"username"`
	DisplayName string `json:"display_name,omitempty"`
}

// Blob is one evidence file.
type Blob struct {
	// SHA256 is the lowercase hex SHA-256 of Data.
	SHA256 string `json:"sha256"`
	// Size is len(Data).
	Size int64 `json:"size"`
	// MediaType is the type the device recorded (image/jpeg, ...).
	MediaType string `json:"media_type,omitempty"`
	// VisitID and Slot link the blob to the visit (and the evidence slot
	// or photo field) that references it, where the device knows them.
	VisitID string `json:"visit_id,omitempty"`
	Slot    string `json:"slot,omitempty"`
	// Data is the file's bytes (base64 in JSON).
	Data []byte `json:"data"`
}

// Verify reports whether Data has the declared size and hash.
func (b *Blob) Verify() error {
	if int64(len(b.Data)) != b.Size {
		return fmt.Errorf("size %d, declared %d", len(b.Data), b.Size)
	}
	sum := sha256.Sum256(b.Data)
	if got := hex.EncodeToString(sum[:]); got != b.SHA256 {
		return fmt.Errorf("bytes hash to %s, declared %s", got, b.SHA256)
	}
	return nil
}

// mutationHead is what Decode reads of each mutation.
type mutationHead struct {
	Seq  int64  `json:"seq"`
	Kind string `json:"kind"`
}

// Decode reads and checks a file: format and version, device id, and
// mutations in strictly increasing, gapless sequence order. It does not
// verify the blobs' hashes (see Blob.Verify): a damaged photo is refused on
// its own, not with the whole file.
func Decode(r io.Reader) (*File, error) {
	lr := &io.LimitedReader{R: r, N: MaxFileBytes + 1}
	dec := json.NewDecoder(lr)
	var f File
	if err := dec.Decode(&f); err != nil {
		if lr.N <= 0 {
			return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalid, int64(MaxFileBytes))
		}
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: more data after the file's JSON object", ErrInvalid)
	}
	if f.Format != Format {
		return nil, fmt.Errorf("%w: format %q, want %q", ErrInvalid, f.Format, Format)
	}
	if f.Version != Version {
		return nil, fmt.Errorf("%w: format version %d, this reader knows %d", ErrInvalid, f.Version, Version)
	}
	if f.DeviceID == "" {
		return nil, fmt.Errorf("%w: device_id missing", ErrInvalid)
	}
	if len(f.Mutations) > MaxMutations {
		return nil, fmt.Errorf("%w: %d mutations, at most %d", ErrInvalid, len(f.Mutations), MaxMutations)
	}
	if len(f.Blobs) > MaxBlobs {
		return nil, fmt.Errorf("%w: %d blobs, at most %d", ErrInvalid, len(f.Blobs), MaxBlobs)
	}
	var prev int64
	for i, raw := range f.Mutations {
		var h mutationHead
		if err := json.Unmarshal(raw, &h); err != nil {
			return nil, fmt.Errorf("%w: mutation %d: %w", ErrInvalid, i, err)
		}
		if h.Seq < 1 || h.Kind == "" {
			return nil, fmt.Errorf("%w: mutation %d: seq %d, kind %q", ErrInvalid, i, h.Seq, h.Kind)
		}
		if i > 0 && h.Seq != prev+1 {
			return nil, fmt.Errorf("%w: mutation %d: seq %d does not follow %d", ErrInvalid, i, h.Seq, prev)
		}
		prev = h.Seq
	}
	for i, b := range f.Blobs {
		if len(b.SHA256) != 64 {
			return nil, fmt.Errorf("%w: blob %d: sha256 %q", ErrInvalid, i, b.SHA256)
		}
		if b.Size < 0 || b.Size > MaxBlobBytes {
			return nil, fmt.Errorf("%w: blob %d: size %d", ErrInvalid, i, b.Size)
		}
	}
	return &f, nil
}
