package upload

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"testing"
)

// TestHashStates_OnlyAtTheirOffset: a kept state goes on only from the
// offset it stands at; taking it at another offset forgets it; a PATCH at
// 0 starts afresh; the map stays bounded.
func TestHashStates_OnlyAtTheirOffset(t *testing.T) {
	data := bytes.Repeat([]byte("田野同步"), 1000)
	var s hashStates
	h, before := s.take("a", 0)
	if h == nil || before != nil {
		t.Fatal("no fresh hash at offset 0")
	}
	h.Write(data[:1000])
	s.put("a", 1000, h)
	if h, _ := s.take("a", 999); h != nil {
		t.Fatal("a state at 1000 went on from 999")
	}
	if h, _ := s.take("a", 1000); h != nil {
		t.Fatal("a state taken at the wrong offset was kept")
	}
	h, _ = s.take("a", 0)
	h.Write(data[:1000])
	s.put("a", 1000, h)
	h, before = s.take("a", 1000)
	if h == nil || before == nil {
		t.Fatal("state at 1000 not found")
	}
	// A discarded chunk puts back the state it started from.
	h.Write([]byte("junk"))
	s.putState("a", 1000, before)
	h, _ = s.take("a", 1000)
	h.Write(data[1000:])
	if got, want := h.Sum(nil), sha256.Sum256(data); !bytes.Equal(got, want[:]) {
		t.Fatal("hash across takes differs from the hash of the whole")
	}
	for i := range maxHashStates + 50 {
		hh, _ := s.take(string(rune(i)), 0)
		s.put(string(rune(i)), 1, hh)
	}
	if n := len(s.m); n > maxHashStates {
		t.Fatalf("%d states kept, bound %d", n, maxHashStates)
	}
}

// TestHashPipe_SameAsInline: buffers of any size handed to the pipe hash
// to what hashing them in turn gives, into every hash given.
func TestHashPipe_SameAsInline(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 3*copyBufSize+12345)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	want := sha256.Sum256(data)
	for _, big := range []bool{true, false} {
		a, b := sha256.New(), sha256.New()
		p := newHashPipe(big, a, nil, b)
		for off := 0; off < len(data); {
			buf := p.next()
			k := copy(buf[:1+r.IntN(len(buf))], data[off:])
			p.hash(buf[:k])
			off += k
		}
		p.close()
		if !bytes.Equal(a.Sum(nil), want[:]) || !bytes.Equal(b.Sum(nil), want[:]) {
			t.Fatalf("big %v: the pipe's hashes differ from the data's", big)
		}
	}
	// Without a hash it hands out a small buffer and hashes nothing.
	q := newHashPipe(true, nil, nil)
	if len(q.next()) != smallBufSize {
		t.Fatal("no small buffer")
	}
	q.hash(q.next()[:10])
	q.close()
}
