// Package blob defines content-addressed evidence storage: photos, scans
// and other files attached to visits are stored once, keyed by the
// lowercase hex SHA-256 of their bytes.
//
// A Store verifies what it is given: Put hashes the bytes while it streams
// them and keeps nothing unless they hash to the promised sum and have the
// promised size, so a present blob is always the blob its key names.
// Derived objects (thumbnails and the like) are stored beside the blobs
// under validated names without content verification.
//
// Implementations live in subpackages: localblob (a folder on disk, the
// embedded default) and s3blob (any S3-compatible object store through
// minio-go). blobtest holds the conformance suite both must pass.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// Info describes a stored blob.
type Info struct {
	// SHA256 is the lowercase hex SHA-256 of the blob's bytes.
	SHA256 string
	// Size is the blob's length in bytes.
	Size int64
}

// Store is content-addressed blob storage. Every method rejects a sum
// that fails ValidSum with ErrBadName, and reports absent blobs with
// errors wrapping ErrNotFound. Errors that mean "the backend cannot be reached right now" wrap
// ErrUnavailable so that callers can answer 503 and ask the client to
// retry later. Implementations are safe for concurrent use.
type Store interface {
	// Stat reports whether the blob is present. ErrNotFound if not.
	Stat(ctx context.Context, sum string) (Info, error)

	// Put streams r into the store. It hashes while streaming and stores
	// nothing (returning ErrHashMismatch or ErrSizeMismatch) if the bytes
	// do not hash to sum or their length differs from size. Putting a
	// blob that is already present is a no-op success; r may then be left
	// unread.
	Put(ctx context.Context, sum string, size int64, r io.Reader) error

	// Open returns a reader over the blob that can Seek (for HTTP Range
	// requests), and the blob's Info. The caller must Close it.
	Open(ctx context.Context, sum string) (io.ReadSeekCloser, Info, error)

	// Delete removes the blob. Deleting an absent blob is not an error.
	Delete(ctx context.Context, sum string) error

	// PutDerived stores a derived object (for example a thumbnail) under
	// a name such as "thumb/<sum>/256.jpg", replacing any object of that
	// name. The content is not verified against a hash, but its length
	// must equal size (else ErrSizeMismatch). Names are checked with
	// ValidDerivedName (else ErrBadName). A name must not be both an
	// object and the parent "folder" of another object.
	PutDerived(ctx context.Context, name string, size int64, r io.Reader) error

	// OpenDerived opens a derived object and reports its size.
	// ErrNotFound if absent, ErrBadName if the name is invalid.
	OpenDerived(ctx context.Context, name string) (io.ReadSeekCloser, int64, error)

	// Check verifies that the store is reachable and writable (used by
	// /healthz).
	Check(ctx context.Context) error
}

// Errors returned (wrapped) by Store implementations; test with errors.Is.
var (
	// ErrNotFound: the blob or derived object is not present.
	ErrNotFound = errors.New("blob: not found")
	// ErrHashMismatch: the bytes given to Put do not hash to the sum.
	ErrHashMismatch = errors.New("blob: sha256 mismatch")
	// ErrSizeMismatch: the bytes given have a different length than promised.
	ErrSizeMismatch = errors.New("blob: size mismatch")
	// ErrBadName: an invalid sum or derived-object name.
	ErrBadName = errors.New("blob: invalid name")
	// ErrUnavailable: the backend cannot be reached now (network error,
	// timeout, server error); the operation may succeed if retried later.
	ErrUnavailable = errors.New("blob: storage unavailable")
	// ErrCannotAdopt: an Adopter cannot take this file by renaming it
	// (another file system); Put it instead.
	ErrCannotAdopt = errors.New("blob: cannot adopt the file")
)

// Adopter is a Store that can take a local file into the store by
// renaming it, without copying or re-reading it. The upload handler uses
// it when the file is already fsynced and verified.
type Adopter interface {
	// Adopt moves the file at path, whose bytes the caller has verified
	// to hash to sum and to be size long and has fsynced, into the store
	// under sum, durably. On success the file is no longer at path (also
	// when the blob was already present: the file is then removed). On
	// ErrCannotAdopt nothing changed.
	Adopt(ctx context.Context, sum string, size int64, path string) error
}

// ValidSum reports whether s is a lowercase hex SHA-256 (64 characters of
// [0-9a-f]).
func ValidSum(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// CheckSum returns nil for a valid sum (ValidSum), else an error that
// wraps ErrBadName. Every Store method that takes a sum starts with it.
func CheckSum(sum string) error {
	if !ValidSum(sum) {
		return fmt.Errorf("%w: %q is not a lowercase hex sha256", ErrBadName, sum)
	}
	return nil
}

// CheckDerivedName returns nil for a valid derived-object name
// (ValidDerivedName), else an error that wraps ErrBadName.
func CheckDerivedName(name string) error {
	if !ValidDerivedName(name) {
		return fmt.Errorf("%w: derived name %q", ErrBadName, name)
	}
	return nil
}

// MaxDerivedNameLen is the longest accepted derived-object name.
const MaxDerivedNameLen = 512

// ValidDerivedName reports whether name may name a derived object: one or
// more "/"-separated segments of [a-z0-9._-], no empty segment (so no
// leading, trailing or doubled "/"), no "..", no segment that is ".",
// and at most MaxDerivedNameLen bytes.
func ValidDerivedName(name string) bool {
	if name == "" || len(name) > MaxDerivedNameLen {
		return false
	}
	segStart := 0
	for i := 0; i <= len(name); i++ {
		if i == len(name) || name[i] == '/' {
			seg := name[segStart:i]
			if seg == "" || seg == "." || seg == ".." {
				return false
			}
			segStart = i + 1
			continue
		}
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
		if c == '.' && i+1 < len(name) && name[i+1] == '.' {
			return false
		}
	}
	return true
}
