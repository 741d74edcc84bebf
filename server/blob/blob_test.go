package blob_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"testing"
	"testing/iotest"

	"fieldsync/server/blob"
)

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func TestValidSum(t *testing.T) {
	good := sum([]byte("x"))
	tests := []struct {
		in   string
		want bool
	}{
		{good, true},
		{strings.Repeat("0", 64), true},
		{strings.ToUpper(good), false},
		{good[:63], false},
		{good + "a", false},
		{good[:63] + "g", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := blob.ValidSum(tt.in); got != tt.want {
			t.Errorf("ValidSum(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestValidDerivedName(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"thumb/" + sum(nil) + "/256.jpg", true},
		{"a", true},
		{"a.b-c_d/e", true},
		{".hidden", true},
		{"", false},
		{"/a", false},
		{"a/", false},
		{"a//b", false},
		{"..", false},
		{"a/../b", false},
		{"a..b", false},
		{".", false},
		{"a/./b", false},
		{"A", false},
		{"a b", false},
		{"a\\b", false},
		{strings.Repeat("a", blob.MaxDerivedNameLen), true},
		{strings.Repeat("a", blob.MaxDerivedNameLen+1), false},
	}
	for _, tt := range tests {
		if got := blob.ValidDerivedName(tt.in); got != tt.want {
			t.Errorf("ValidDerivedName(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func FuzzValidDerivedName(f *testing.F) {
	for _, s := range []string{"thumb/x/256.jpg", "../a", "a//b", "/a", "a/.", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if !blob.ValidDerivedName(name) {
			return
		}
		if path.Clean(name) != name || path.IsAbs(name) || strings.Contains(name, "..") {
			t.Fatalf("accepted unclean name %q", name)
		}
		for _, c := range []byte(name) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("/._-", c) >= 0) {
				t.Fatalf("accepted byte %q in %q", c, name)
			}
		}
	})
}

func TestVerifier_OK(t *testing.T) {
	data := []byte("hello, field")
	v := blob.NewVerifier(iotest.OneByteReader(bytes.NewReader(data)), int64(len(data)))
	got, err := io.ReadAll(v)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
	if err := v.Finish(sum(data)); err != nil {
		t.Fatalf("Finish: %v", err)
	}
}

func TestVerifier_Mismatch(t *testing.T) {
	data := []byte("hello, field")
	tests := []struct {
		name string
		size int64
		sum  string
		want error
	}{
		{"Short", int64(len(data)) + 1, sum(data), blob.ErrSizeMismatch},
		{"Long", int64(len(data)) - 1, sum(data[:len(data)-1]), blob.ErrSizeMismatch},
		{"Hash", int64(len(data)), sum([]byte("other")), blob.ErrHashMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := blob.NewVerifier(bytes.NewReader(data), tt.size)
			_, _ = io.ReadAll(v)
			if err := v.Finish(tt.sum); !errors.Is(err, tt.want) {
				t.Fatalf("Finish = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestVerifier_FinishDrains(t *testing.T) {
	data := []byte("partly read")
	v := blob.NewVerifier(bytes.NewReader(data), int64(len(data)))
	if _, err := v.Read(make([]byte, 3)); err != nil {
		t.Fatal(err)
	}
	if err := v.Finish(sum(data)); err != nil {
		t.Fatalf("Finish: %v", err)
	}
}

func TestVerifier_SourceError(t *testing.T) {
	boom := errors.New("boom")
	v := blob.NewVerifier(iotest.ErrReader(boom), 10)
	if _, err := io.ReadAll(v); !errors.Is(err, boom) {
		t.Fatalf("ReadAll = %v, want boom", err)
	}
	if !errors.Is(v.Err(), boom) || !errors.Is(v.Finish(""), boom) {
		t.Fatalf("Err = %v", v.Err())
	}
}

// A gated Verifier never hands on the bytes that complete a source that
// does not match: a consumer committing only whole bodies commits nothing.
func TestGatedVerifier(t *testing.T) {
	data := []byte("hello, field worker")
	tests := []struct {
		name string
		src  []byte
		size int64
		sum  string
		want error
	}{
		{"OK", data, int64(len(data)), sum(data), nil},
		{"OKNoSum", data, int64(len(data)), "", nil},
		{"Empty", nil, 0, sum(nil), nil},
		{"EmptyWrongSum", nil, 0, sum(data), blob.ErrHashMismatch},
		{"Short", data, int64(len(data)) + 1, sum(data), blob.ErrSizeMismatch},
		{"Long", data, int64(len(data)) - 1, sum(data[:len(data)-1]), blob.ErrSizeMismatch},
		{"LongNoSum", data, int64(len(data)) - 1, "", blob.ErrSizeMismatch},
		{"Hash", data, int64(len(data)), sum([]byte("other")), blob.ErrHashMismatch},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/oneByte=%v", tt.name, oneByte), func(t *testing.T) {
				var r io.Reader = bytes.NewReader(tt.src)
				if oneByte {
					r = iotest.OneByteReader(r)
				}
				v := blob.NewGatedVerifier(r, tt.size, tt.sum)
				got, err := io.ReadAll(v)
				if tt.want == nil {
					if err != nil || int64(len(got)) != tt.size || !bytes.Equal(got, tt.src[:tt.size]) {
						t.Fatalf("ReadAll = %d bytes, %v; want all %d", len(got), err, tt.size)
					}
					if err := v.Finish(tt.sum); err != nil {
						t.Fatalf("Finish: %v", err)
					}
					return
				}
				if !errors.Is(err, tt.want) {
					t.Fatalf("ReadAll error = %v, want %v", err, tt.want)
				}
				if tt.size > 0 && int64(len(got)) >= tt.size {
					t.Fatalf("handed on %d of %d bytes of a mismatching source", len(got), tt.size)
				}
				if err := v.Finish(tt.sum); !errors.Is(err, tt.want) {
					t.Fatalf("Finish = %v, want %v", err, tt.want)
				}
			})
		}
	}
}
