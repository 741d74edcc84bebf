// Package blobtest is the conformance suite every blob.Store
// implementation must pass. Call Run from the implementation's tests:
//
//	func TestConformance(t *testing.T) {
//		blobtest.Run(t, func(t *testing.T) blob.Store { return newStore(t) })
//	}
//
// newStore is called once per subtest and must return an empty store.
package blobtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"fieldsync/server/blob"
)

// Sum returns the lowercase hex SHA-256 of data.
func Sum(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

// Data returns n deterministic pseudo-random bytes derived from seed.
func Data(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// GenReader returns a reader of n deterministic pseudo-random bytes,
// generated as they are read (never all held in memory).
func GenReader(seed uint64, n int64) io.Reader {
	return &genReader{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), left: n}
}

// GenSum returns the SHA-256 of the n bytes GenReader(seed, n) yields.
func GenSum(seed uint64, n int64) string {
	h := sha256.New()
	if _, err := io.Copy(h, GenReader(seed, n)); err != nil {
		panic(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

type genReader struct {
	r    *rand.Rand
	left int64
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	for i := range p {
		p[i] = byte(g.r.Uint32())
	}
	g.left -= int64(len(p))
	return len(p), nil
}

// onlyReader hides every method but Read (no WriterTo, Seeker, ReaderAt),
// so stores see a plain stream as they would from a network body.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// Stream wraps b as a plain io.Reader.
func Stream(b []byte) io.Reader { return onlyReader{bytes.NewReader(b)} }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func mustPut(t *testing.T, s blob.Store, data []byte) string {
	t.Helper()
	sum := Sum(data)
	if err := s.Put(ctx(t), sum, int64(len(data)), Stream(data)); err != nil {
		t.Fatalf("Put(%d bytes): %v", len(data), err)
	}
	return sum
}

func readAll(t *testing.T, rc io.ReadCloser) []byte {
	t.Helper()
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return b
}

func wantNotFound(t *testing.T, s blob.Store, sum string) {
	t.Helper()
	if info, err := s.Stat(ctx(t), sum); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Stat(%s) = %+v, %v; want ErrNotFound", sum, info, err)
	}
}

// Run runs the conformance suite. newStore must return a fresh, empty
// store each time it is called.
func Run(t *testing.T, newStore func(t *testing.T) blob.Store) {
	t.Run("RoundTrip", func(t *testing.T) {
		s := newStore(t)
		data := Data(1, 100_000)
		sum := mustPut(t, s, data)

		info, err := s.Stat(ctx(t), sum)
		if err != nil {
			t.Fatalf("Stat: %v", err)
		}
		if info.SHA256 != sum || info.Size != int64(len(data)) {
			t.Fatalf("Stat = %+v, want {%s %d}", info, sum, len(data))
		}

		rc, info, err := s.Open(ctx(t), sum)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if info.SHA256 != sum || info.Size != int64(len(data)) {
			t.Fatalf("Open info = %+v, want {%s %d}", info, sum, len(data))
		}
		if got := readAll(t, rc); !bytes.Equal(got, data) {
			t.Fatalf("Open read %d bytes, not byte-identical to the %d put", len(got), len(data))
		}
	})

	t.Run("SeekRange", func(t *testing.T) {
		s := newStore(t)
		data := Data(2, 70_000)
		sum := mustPut(t, s, data)
		rc, _, err := s.Open(ctx(t), sum)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer rc.Close()
		// Read a little first so Seek has to move an open stream.
		head := make([]byte, 10)
		if _, err := io.ReadFull(rc, head); err != nil || !bytes.Equal(head, data[:10]) {
			t.Fatalf("first read = %v, %v", head, err)
		}
		for _, rg := range []struct{ off, n int64 }{{50_000, 1000}, {123, 4567}, {69_990, 10}} {
			pos, err := rc.Seek(rg.off, io.SeekStart)
			if err != nil || pos != rg.off {
				t.Fatalf("Seek(%d) = %d, %v", rg.off, pos, err)
			}
			got := make([]byte, rg.n)
			if _, err := io.ReadFull(rc, got); err != nil {
				t.Fatalf("read range %d+%d: %v", rg.off, rg.n, err)
			}
			if !bytes.Equal(got, data[rg.off:rg.off+rg.n]) {
				t.Fatalf("range %d+%d differs", rg.off, rg.n)
			}
		}
		end, err := rc.Seek(0, io.SeekEnd)
		if err != nil || end != int64(len(data)) {
			t.Fatalf("Seek(0, End) = %d, %v; want %d", end, err, len(data))
		}
		if n, err := rc.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("read at end = %d, %v; want 0, EOF", n, err)
		}
	})

	t.Run("EmptyBlob", func(t *testing.T) {
		s := newStore(t)
		sum := mustPut(t, s, nil)
		rc, info, err := s.Open(ctx(t), sum)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if info.Size != 0 {
			t.Fatalf("size %d, want 0", info.Size)
		}
		if got := readAll(t, rc); len(got) != 0 {
			t.Fatalf("read %d bytes, want 0", len(got))
		}
	})

	t.Run("PutTwiceIsNoop", func(t *testing.T) {
		s := newStore(t)
		data := Data(3, 5000)
		sum := mustPut(t, s, data)
		// The second Put of a present blob succeeds and need not read r.
		if err := s.Put(ctx(t), sum, int64(len(data)), Stream(data)); err != nil {
			t.Fatalf("second Put: %v", err)
		}
		rc, _, err := s.Open(ctx(t), sum)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if got := readAll(t, rc); !bytes.Equal(got, data) {
			t.Fatal("content changed after second Put")
		}
	})

	t.Run("WrongHashStoresNothing", func(t *testing.T) {
		s := newStore(t)
		data := Data(4, 20_000)
		other := Sum(append([]byte("x"), data...))
		err := s.Put(ctx(t), other, int64(len(data)), Stream(data))
		if !errors.Is(err, blob.ErrHashMismatch) {
			t.Fatalf("Put with wrong sum = %v, want ErrHashMismatch", err)
		}
		wantNotFound(t, s, other)
		wantNotFound(t, s, Sum(data))
		// A later correct upload of the same sum still works.
		mustPut(t, s, data)
	})

	t.Run("WrongSize", func(t *testing.T) {
		s := newStore(t)
		data := Data(5, 20_000)
		sum := Sum(data)
		for _, size := range []int64{int64(len(data)) - 1, int64(len(data)) + 1, 0, int64(len(data)) * 3} {
			err := s.Put(ctx(t), sum, size, Stream(data))
			if !errors.Is(err, blob.ErrSizeMismatch) {
				t.Fatalf("Put(size %d of %d) = %v, want ErrSizeMismatch", size, len(data), err)
			}
			wantNotFound(t, s, sum)
		}
		if err := s.Put(ctx(t), sum, -1, Stream(data)); err == nil {
			t.Fatal("Put with negative size succeeded")
		}
		wantNotFound(t, s, sum)
	})

	t.Run("Missing", func(t *testing.T) {
		s := newStore(t)
		sum := Sum([]byte("never stored"))
		wantNotFound(t, s, sum)
		if rc, _, err := s.Open(ctx(t), sum); !errors.Is(err, blob.ErrNotFound) {
			if rc != nil {
				rc.Close()
			}
			t.Fatalf("Open(missing) = %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx(t), sum); err != nil {
			t.Fatalf("Delete(missing) = %v, want nil", err)
		}
	})

	t.Run("InvalidSum", func(t *testing.T) {
		s := newStore(t)
		data := []byte("hello")
		good := Sum(data)
		for _, bad := range []string{
			"", "abc", strings.ToUpper(good), good + "0", good[:63],
			"../" + good[3:], good[:62] + "/x", good[:63] + "g", strings.Repeat(" ", 64),
		} {
			if err := s.Put(ctx(t), bad, int64(len(data)), Stream(data)); !errors.Is(err, blob.ErrBadName) {
				t.Errorf("Put(%q) = %v, want ErrBadName", bad, err)
			}
			if _, err := s.Stat(ctx(t), bad); !errors.Is(err, blob.ErrBadName) {
				t.Errorf("Stat(%q) = %v, want ErrBadName", bad, err)
			}
			if rc, _, err := s.Open(ctx(t), bad); !errors.Is(err, blob.ErrBadName) {
				if rc != nil {
					rc.Close()
				}
				t.Errorf("Open(%q) = %v, want ErrBadName", bad, err)
			}
			if err := s.Delete(ctx(t), bad); !errors.Is(err, blob.ErrBadName) {
				t.Errorf("Delete(%q) = %v, want ErrBadName", bad, err)
			}
		}
	})

	t.Run("Derived", func(t *testing.T) {
		s := newStore(t)
		src := Sum([]byte("source photo"))
		name := "thumb/" + src + "/256.jpg"
		data := Data(6, 3000)
		if err := s.PutDerived(ctx(t), name, int64(len(data)), Stream(data)); err != nil {
			t.Fatalf("PutDerived: %v", err)
		}
		rc, size, err := s.OpenDerived(ctx(t), name)
		if err != nil {
			t.Fatalf("OpenDerived: %v", err)
		}
		if size != int64(len(data)) {
			t.Fatalf("OpenDerived size %d, want %d", size, len(data))
		}
		if got := readAll(t, rc); !bytes.Equal(got, data) {
			t.Fatal("derived content differs")
		}

		// Replacing works.
		data2 := Data(7, 1000)
		if err := s.PutDerived(ctx(t), name, int64(len(data2)), Stream(data2)); err != nil {
			t.Fatalf("PutDerived replace: %v", err)
		}
		rc, size, err = s.OpenDerived(ctx(t), name)
		if err != nil {
			t.Fatalf("OpenDerived after replace: %v", err)
		}
		if got := readAll(t, rc); size != int64(len(data2)) || !bytes.Equal(got, data2) {
			t.Fatal("derived content not replaced")
		}

		// A wrong size stores nothing and keeps the previous object.
		if err := s.PutDerived(ctx(t), name, int64(len(data)+5), Stream(data)); !errors.Is(err, blob.ErrSizeMismatch) {
			t.Fatalf("PutDerived short source = %v, want ErrSizeMismatch", err)
		}
		if err := s.PutDerived(ctx(t), name, int64(len(data)-5), Stream(data)); !errors.Is(err, blob.ErrSizeMismatch) {
			t.Fatalf("PutDerived long source = %v, want ErrSizeMismatch", err)
		}
		rc, _, err = s.OpenDerived(ctx(t), name)
		if err != nil {
			t.Fatalf("OpenDerived after failed puts: %v", err)
		}
		if got := readAll(t, rc); !bytes.Equal(got, data2) {
			t.Fatal("failed PutDerived changed the stored object")
		}

		// Seek works on derived objects too.
		rc, _, err = s.OpenDerived(ctx(t), name)
		if err != nil {
			t.Fatalf("OpenDerived: %v", err)
		}
		if _, err := rc.Seek(500, io.SeekStart); err != nil {
			t.Fatalf("Seek: %v", err)
		}
		if got := readAll(t, rc); !bytes.Equal(got, data2[500:]) {
			t.Fatal("derived range read differs")
		}

		if rc, _, err := s.OpenDerived(ctx(t), "thumb/"+src+"/1024.jpg"); !errors.Is(err, blob.ErrNotFound) {
			if rc != nil {
				rc.Close()
			}
			t.Fatalf("OpenDerived(missing) = %v, want ErrNotFound", err)
		}
		// A derived object does not make a blob present.
		wantNotFound(t, s, src)
	})

	t.Run("DerivedBadNames", func(t *testing.T) {
		s := newStore(t)
		for _, bad := range []string{
			"", "/thumb/a.jpg", "thumb/../../etc/passwd", "..", "thumb/..", "a/./b", ".",
			"thumb//a.jpg", "thumb/", "Thumb/a.jpg", "thumb/a b.jpg", "thumb\\a.jpg",
			"thumb/a..jpg", "thumb/é.jpg", "thumb/a\x00.jpg", strings.Repeat("a", blob.MaxDerivedNameLen+1),
		} {
			if err := s.PutDerived(ctx(t), bad, 1, Stream([]byte("x"))); !errors.Is(err, blob.ErrBadName) {
				t.Errorf("PutDerived(%q) = %v, want ErrBadName", bad, err)
			}
			if rc, _, err := s.OpenDerived(ctx(t), bad); !errors.Is(err, blob.ErrBadName) {
				if rc != nil {
					rc.Close()
				}
				t.Errorf("OpenDerived(%q) = %v, want ErrBadName", bad, err)
			}
		}
		for _, good := range []string{"a", "thumb/x/256.jpg", "exif/abc.json", "a-b_c.d/e"} {
			if !blob.ValidDerivedName(good) {
				t.Errorf("ValidDerivedName(%q) = false", good)
			}
		}
	})

	t.Run("Delete", func(t *testing.T) {
		s := newStore(t)
		a := mustPut(t, s, Data(8, 1000))
		b := mustPut(t, s, Data(9, 1000))
		if err := s.Delete(ctx(t), a); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		wantNotFound(t, s, a)
		if _, err := s.Stat(ctx(t), b); err != nil {
			t.Fatalf("Delete removed another blob: %v", err)
		}
		if err := s.Delete(ctx(t), a); err != nil {
			t.Fatalf("second Delete = %v, want nil", err)
		}
		// It can be stored again.
		mustPut(t, s, Data(8, 1000))
	})

	t.Run("ConcurrentPutsSameBlob", func(t *testing.T) {
		s := newStore(t)
		data := Data(10, 200_000)
		sum := Sum(data)
		const n = 8
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				errs[i] = s.Put(ctx(t), sum, int64(len(data)), Stream(data))
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("Put #%d: %v", i, err)
			}
		}
		rc, info, err := s.Open(ctx(t), sum)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if got := readAll(t, rc); info.Size != int64(len(data)) || !bytes.Equal(got, data) {
			t.Fatal("content differs after concurrent puts")
		}
	})

	t.Run("ConcurrentPutsDifferentBlobs", func(t *testing.T) {
		s := newStore(t)
		const n = 8
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				data := Data(uint64(100+i), 10_000+i)
				errs[i] = s.Put(ctx(t), Sum(data), int64(len(data)), Stream(data))
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("Put #%d: %v", i, err)
			}
			data := Data(uint64(100+i), 10_000+i)
			if info, err := s.Stat(ctx(t), Sum(data)); err != nil || info.Size != int64(len(data)) {
				t.Fatalf("Stat #%d = %+v, %v", i, info, err)
			}
		}
	})

	t.Run("LargeStreamed", func(t *testing.T) {
		s := newStore(t)
		const size = 5<<20 + 12345 // a little over 5 MiB
		const seed = 11
		sum := GenSum(seed, size)
		if err := s.Put(ctx(t), sum, size, GenReader(seed, size)); err != nil {
			t.Fatalf("Put large: %v", err)
		}
		rc, info, err := s.Open(ctx(t), sum)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer rc.Close()
		if info.Size != size {
			t.Fatalf("size %d, want %d", info.Size, size)
		}
		h := sha256.New()
		n, err := io.Copy(h, rc)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); n != size || got != sum {
			t.Fatalf("read back %d bytes hashing to %s, want %d bytes %s", n, got, size, sum)
		}
		// A range near the end.
		if _, err := rc.Seek(size-100, io.SeekStart); err != nil {
			t.Fatalf("Seek: %v", err)
		}
		tail, err := io.ReadAll(rc)
		if err != nil || len(tail) != 100 {
			t.Fatalf("tail read = %d bytes, %v", len(tail), err)
		}
		all, err := io.ReadAll(GenReader(seed, size))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(tail, all[size-100:]) {
			t.Fatal("tail differs")
		}
	})

	t.Run("LargeWrongHash", func(t *testing.T) {
		s := newStore(t)
		const size = 3<<20 + 7
		sum := GenSum(12, size)
		// Same length, different bytes.
		err := s.Put(ctx(t), sum, size, GenReader(13, size))
		if !errors.Is(err, blob.ErrHashMismatch) {
			t.Fatalf("Put = %v, want ErrHashMismatch", err)
		}
		wantNotFound(t, s, sum)
	})

	t.Run("SourceError", func(t *testing.T) {
		s := newStore(t)
		data := Data(14, 10_000)
		sum := Sum(data)
		boom := errors.New("source broke")
		r := io.MultiReader(bytes.NewReader(data[:5000]), errReader{boom})
		err := s.Put(ctx(t), sum, int64(len(data)), r)
		if err == nil {
			t.Fatal("Put with failing source succeeded")
		}
		if !errors.Is(err, boom) {
			t.Fatalf("Put error %v does not wrap the source's error", err)
		}
		wantNotFound(t, s, sum)
	})

	t.Run("CancelledContext", func(t *testing.T) {
		s := newStore(t)
		c, cancel := context.WithCancel(t.Context())
		cancel()
		data := Data(15, 1000)
		if err := s.Put(c, Sum(data), int64(len(data)), Stream(data)); err == nil {
			t.Fatal("Put with cancelled context succeeded")
		}
		wantNotFound(t, s, Sum(data))
	})

	t.Run("Check", func(t *testing.T) {
		s := newStore(t)
		if err := s.Check(ctx(t)); err != nil {
			t.Fatalf("Check: %v", err)
		}
	})
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
