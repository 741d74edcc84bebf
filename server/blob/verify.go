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
}

// NewVerifier returns a Verifier over r expecting exactly size bytes.
func NewVerifier(r io.Reader, size int64) *Verifier {
	return &Verifier{r: r, size: size, remaining: size, h: sha256.New()}
}

// Read implements io.Reader.
func (v *Verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if v.remaining <= 0 {
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
	case err == io.EOF:
		return n, io.EOF
	case err != nil:
		v.err = fmt.Errorf("blob: reading source: %w", err)
		return n, v.err
	}
	return n, nil
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
