package blob

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Verifier wraps a reader, hashing and counting the bytes that pass
// through it. It yields at most size bytes; if the source ends early, Read
// fails with an error wrapping ErrSizeMismatch. After the consumer has
// finished, Finish checks the length, that the source holds no extra
// bytes, and the hash.
//
// Store implementations use it to verify while streaming; a Verifier is
// not safe for concurrent use.
type Verifier struct {
	r         io.Reader
	size      int64
	remaining int64
	h         hash.Hash
	err       error

	gated   bool   // check before the last bytes are yielded
	want    string // the hash a gated Verifier checks ("" for none)
	checked bool   // the gate's check ran (and passed)
}

// NewVerifier returns a Verifier over r expecting exactly size bytes.
func NewVerifier(r io.Reader, size int64) *Verifier {
	return &Verifier{r: r, size: size, remaining: size, h: sha256.New()}
}

// NewGatedVerifier returns a Verifier that checks the whole source before
// it yields the last of its size bytes: the read that would complete them
// first makes sure the source holds nothing more and, if sum is not empty,
// that the bytes hash to sum, and on a mismatch returns the error instead
// of those final bytes. A consumer that commits only a complete body (an
// HTTP PUT with a Content-Length, an S3 multipart upload completed after
// its last part) therefore never commits bytes that do not match, and a
// store can write straight to the final, content-addressed key.
func NewGatedVerifier(r io.Reader, size int64, sum string) *Verifier {
	v := NewVerifier(r, size)
	v.gated, v.want = true, sum
	return v
}

// Read implements io.Reader.
func (v *Verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if v.remaining <= 0 {
		if v.gated && !v.checked { // size 0: nothing to withhold, check anyway
			if err := v.check(); err != nil {
				return 0, err
			}
		}
		return 0, io.EOF
	}
	if int64(len(p)) > v.remaining {
		p = p[:v.remaining]
	}
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.remaining -= int64(n)
	switch {
	case err == io.EOF && v.remaining > 0:
		v.err = fmt.Errorf("%w: got %d of %d bytes", ErrSizeMismatch, v.size-v.remaining, v.size)
		return n, v.err
	case err != nil && err != io.EOF:
		v.err = fmt.Errorf("blob: reading source: %w", err)
		return n, v.err
	}
	if v.remaining == 0 && v.gated {
		if cerr := v.check(); cerr != nil {
			return 0, cerr // the final bytes are never handed on
		}
	}
	return n, err
}

// check runs a gated Verifier's end-of-source checks once all size bytes
// were read: nothing more in the source, and the hash.
func (v *Verifier) check() error {
	var one [1]byte
	n, err := io.ReadFull(v.r, one[:])
	switch {
	case n > 0:
		v.err = fmt.Errorf("%w: source is longer than %d bytes", ErrSizeMismatch, v.size)
	case err != nil && !errors.Is(err, io.EOF):
		v.err = fmt.Errorf("blob: reading source: %w", err)
	case v.want != "" && v.Sum() != v.want:
		v.err = fmt.Errorf("%w: got %s, want %s", ErrHashMismatch, v.Sum(), v.want)
	}
	v.checked = v.err == nil
	return v.err
}

// Err returns the first error Read met (a short source or a read error),
// or nil. Callers whose consumer (an HTTP client, say) hides the reader's
// error should check Err first when the consumer fails.
func (v *Verifier) Err() error { return v.err }

// Sum returns the lowercase hex SHA-256 of the bytes read so far.
func (v *Verifier) Sum() string { return hex.EncodeToString(v.h.Sum(nil)) }

// Finish reads any bytes the consumer left (up to size), then checks that
// exactly size bytes were read, that the source has nothing more, and, if
// sum is not empty, that the bytes hash to sum. It returns nil or an
// error wrapping ErrSizeMismatch, ErrHashMismatch or the source's read
// error.
func (v *Verifier) Finish(sum string) error {
	if v.err == nil && v.remaining > 0 {
		if _, err := io.Copy(io.Discard, v); err != nil {
			return err
		}
	}
	if v.err != nil {
		return v.err
	}
	if v.checked && (sum == "" || sum == v.want) {
		return nil
	}
	var one [1]byte
	n, err := io.ReadFull(v.r, one[:])
	if n > 0 {
		v.err = fmt.Errorf("%w: source is longer than %d bytes", ErrSizeMismatch, v.size)
		return v.err
	}
	if err != nil && !errors.Is(err, io.EOF) {
		v.err = fmt.Errorf("blob: reading source: %w", err)
		return v.err
	}
	if sum != "" {
		if got := v.Sum(); got != sum {
			v.err = fmt.Errorf("%w: got %s, want %s", ErrHashMismatch, got, sum)
			return v.err
		}
	}
	return nil
}
