package localblob_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"fieldsync/server/blob"
	"fieldsync/server/blob/blobtest"
	"fieldsync/server/blob/localblob"
)

func newStore(t *testing.T) *localblob.Store {
	t.Helper()
	s, err := localblob.New(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store { return newStore(t) })
}

func TestLayout(t *testing.T) {
	s := newStore(t)
	data := []byte("layout check")
	sum := blobtest.Sum(data)
	if err := s.Put(t.Context(), sum, int64(len(data)), blobtest.Stream(data)); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(s.Dir(), "sha256", sum[:2], sum)
	got, err := os.ReadFile(p)
	if err != nil || string(got) != string(data) {
		t.Fatalf("read %s = %q, %v", p, got, err)
	}
	if err := s.PutDerived(t.Context(), "thumb/x/1.jpg", 2, blobtest.Stream([]byte("hi"))); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "derived", "thumb", "x", "1.jpg")); err != nil {
		t.Fatal(err)
	}
	// Failed and finished writes leave nothing in tmp/.
	_ = s.Put(t.Context(), blobtest.Sum([]byte("other")), int64(len(data)), blobtest.Stream(data))
	ents, err := os.ReadDir(filepath.Join(s.Dir(), "tmp"))
	if err != nil || len(ents) != 0 {
		t.Fatalf("tmp/ holds %v (err %v), want nothing", ents, err)
	}
}

func TestNew_Empty(t *testing.T) {
	if _, err := localblob.New(""); err == nil {
		t.Fatal("New(\"\") succeeded")
	}
}

func TestAdopt(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	data := blobtest.Data(7, 70_000)
	sum := blobtest.Sum(data)

	// A wrong size is refused and the file stays.
	p := write("a.part", data)
	if err := s.Adopt(ctx, sum, int64(len(data))+1, p); !errors.Is(err, blob.ErrSizeMismatch) {
		t.Fatalf("adopt with a wrong size: %v", err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the refused file is gone: %v", err)
	}
	if _, err := s.Stat(ctx, sum); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("stored after a refusal: %v", err)
	}

	// Adopted: moved into place, readable through Open.
	if err := s.Adopt(ctx, sum, int64(len(data)), p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the adopted file is still at its old path: %v", err)
	}
	rc, info, err := s.Open(ctx, sum)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if info.Size != int64(len(data)) || !bytes.Equal(got, data) {
		t.Fatalf("adopted blob: %d bytes, identical %v", info.Size, bytes.Equal(got, data))
	}

	// Adopting a present blob again removes the new copy and keeps the
	// stored one.
	p2 := write("b.part", data)
	if err := s.Adopt(ctx, sum, int64(len(data)), p2); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p2); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the duplicate file stays: %v", err)
	}
	if info, err := s.Stat(ctx, sum); err != nil || info.Size != int64(len(data)) {
		t.Fatalf("after a duplicate adoption: %+v %v", info, err)
	}
	if err := s.Adopt(ctx, "../../etc", 1, p2); !errors.Is(err, blob.ErrBadName) {
		t.Fatalf("bad name: %v", err)
	}
}

// TestPut_FolderRemovedBehindItsBack: a folder the store made and
// remembers, removed by someone else, is made again.
func TestPut_FolderRemovedBehindItsBack(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	data := []byte("first")
	sum := blobtest.Sum(data)
	if err := s.Put(ctx, sum, int64(len(data)), blobtest.Stream(data)); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(s.Dir(), "sha256", sum[:2])); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, sum, int64(len(data)), blobtest.Stream(data)); err != nil {
		t.Fatalf("put after its folder was removed: %v", err)
	}
	if info, err := s.Stat(ctx, sum); err != nil || info.Size != int64(len(data)) {
		t.Fatalf("stat: %+v %v", info, err)
	}
}

// TestLegacyLayout: a blob kept by the two-byte layout (sha256/ab/cd/sum)
// is found, read, counts as present for Put and Adopt, and is deleted.
func TestLegacyLayout(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	data := blobtest.Data(9, 5000)
	sum := blobtest.Sum(data)
	old := filepath.Join(s.Dir(), "sha256", sum[:2], sum[2:4], sum)
	if err := os.MkdirAll(filepath.Dir(old), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(old, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if info, err := s.Stat(ctx, sum); err != nil || info.Size != int64(len(data)) {
		t.Fatalf("stat: %+v %v", info, err)
	}
	rc, _, err := s.Open(ctx, sum)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, data) {
		t.Fatal("open read other bytes")
	}
	if err := s.Put(ctx, sum, int64(len(data)), blobtest.Stream(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "sha256", sum[:2], sum)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("put copied a present legacy blob: %v", err)
	}
	if err := s.Delete(ctx, sum); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, sum); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}
