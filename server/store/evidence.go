package store

import (
	"time"

	"github.com/paulmach/orb"

	"fieldsync/server/evidence"
)

// BlobRecord is a present blob as recorded.
type BlobRecord struct {
	SHA256    string
	Size      int64
	MediaType string
	StoredAt  time.Time
	Taken     evidence.CaptureTime
	GPS       *orb.Point
	PHash     *uint64
	Width     int
	Height    int
	// Analysed: the metadata above was read (see upload's analysis
	// worker); until then the checks that need it have not run.
	Analysed bool
}

// Upload is one resumable upload as the database keeps it.
type Upload struct {
	ID        string
	DeviceID  string
	SHA256    string
	Length    int64
	Offset    int64
	CreatedAt time.Time
	ExpiresAt time.Time
	Metadata  map[string]string
	// Done: verified and stored; the record stays until ExpiresAt so that
	// a client can still ask for its offset.
	Done bool
}

// Blob is a verified blob as recorded when an upload completes; Meta is
// filled in by server/upload's analysis worker afterwards.
type Blob struct {
	SHA256    string
	Size      int64
	MediaType string
	StoredAt  time.Time
	Meta      evidence.Meta
}
