package localblob_test

import (
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
	p := filepath.Join(s.Dir(), "sha256", sum[:2], sum[2:4], sum)
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
