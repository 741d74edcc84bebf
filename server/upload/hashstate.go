package upload

import (
	"crypto/sha256"
	"encoding"
	"hash"
	"sync"
)

// hashStates keeps, per upload, the SHA-256 state of the bytes of its
// partial file, and how many bytes that is, so that a PATCH goes on
// hashing where the previous one stopped and the last one has the hash of
// the whole file without reading it back. A state is used only by a PATCH
// that starts exactly at its offset; anything that changes the file
// otherwise (a chunk thrown away, a failed write, a file cut back, a
// restart) leaves no state or one at another offset, and finish then
// reads the file. The map is bounded: when full, an arbitrary state is
// dropped (that upload's finish reads its file).
type hashStates struct {
	mu sync.Mutex
	m  map[string]hashState
}

type hashState struct {
	off   int64
	state []byte // sha256's MarshalBinary
}

// maxHashStates bounds hashStates (each about 150 bytes).
const maxHashStates = 4096

// take removes the upload's state and returns a hash that goes on from
// it if it stands at off (a new hash for off 0), with the state it
// started from (nil for a new one); else nil.
func (s *hashStates) take(id string, off int64) (hash.Hash, []byte) {
	s.mu.Lock()
	st, ok := s.m[id]
	delete(s.m, id)
	s.mu.Unlock()
	h := sha256.New()
	switch {
	case off == 0:
		return h, nil
	case !ok || st.off != off:
		return nil, nil
	}
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(st.state); err != nil {
		return nil, nil
	}
	return h, st.state
}

// put records the state of h, which has hashed the file's first off
// bytes.
func (s *hashStates) put(id string, off int64, h hash.Hash) {
	b, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return
	}
	s.putState(id, off, b)
}

// putState records a state taken earlier (state nil: none).
func (s *hashStates) putState(id string, off int64, state []byte) {
	if state == nil && off != 0 {
		return
	}
	if state == nil {
		b, err := sha256.New().(encoding.BinaryMarshaler).MarshalBinary()
		if err != nil {
			return
		}
		state = b
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]hashState{}
	}
	if _, ok := s.m[id]; !ok && len(s.m) >= maxHashStates {
		for k := range s.m {
			delete(s.m, k)
			break
		}
	}
	s.m[id] = hashState{off: off, state: state}
}

// drop forgets the upload's state.
func (s *hashStates) drop(id string) {
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
}

// Buffers that request bodies and partial files are copied through: a
// small one for most PATCHes (a device sends 256 KiB or less, and on a
// slow link a read brings a few KiB: the buffer is held as long as the
// PATCH lasts, so hundreds of slow uploads must not hold big ones), and
// two big ones that take turns (hashPipe) for PATCHes of more than
// bigBody bytes, which come over fast links.
const (
	smallBufSize = 64 << 10
	copyBufSize  = 256 << 10
	bigBody      = 1 << 20
)

var (
	smallPool = sync.Pool{New: func() any { b := make([]byte, smallBufSize); return &b }}
	bigPool   = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}
)

func getBuf() *[]byte { return smallPool.Get().(*[]byte) }
func putBuf(b *[]byte) {
	if len(*b) == copyBufSize {
		bigPool.Put(b)
	} else {
		smallPool.Put(b)
	}
}

// hashPipe hashes what a copy wrote. For a big body (see bigBody) it
// hashes each buffer in a goroutine of its own while the copy reads and
// writes the next one: two big pooled buffers take turns. Otherwise it
// hands out one small buffer and hashes in line.
type hashPipe struct {
	hs   []hash.Hash
	bufs [2]*[]byte
	cur  int
	in   chan []byte   // nil: hashing in line
	out  chan struct{} // a buffer sent in has been hashed
	busy bool          // a buffer is being hashed
	done chan struct{}
}

func newHashPipe(big bool, hs ...hash.Hash) *hashPipe {
	p := &hashPipe{}
	for _, h := range hs {
		if h != nil {
			p.hs = append(p.hs, h)
		}
	}
	if !big || len(p.hs) == 0 {
		p.bufs[0] = getBuf()
		return p
	}
	p.bufs[0], p.bufs[1] = bigPool.Get().(*[]byte), bigPool.Get().(*[]byte)
	p.in, p.out, p.done = make(chan []byte), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(p.done)
		for b := range p.in {
			for _, h := range p.hs {
				h.Write(b)
			}
			p.out <- struct{}{}
		}
	}()
	return p
}

// next returns the buffer to read into: one that is not being hashed.
func (p *hashPipe) next() []byte {
	return *p.bufs[p.cur]
}

// hash hashes b (a slice of the buffer next returned): in line, or by
// handing it to the hashing goroutine once the buffer before it is done
// and turning to the other buffer.
func (p *hashPipe) hash(b []byte) {
	if p.in == nil {
		for _, h := range p.hs {
			h.Write(b)
		}
		return
	}
	if p.busy {
		<-p.out
	}
	p.in <- b
	p.busy = true
	p.cur = 1 - p.cur
}

// close waits until every buffer handed over is hashed and gives the
// buffers back to the pool.
func (p *hashPipe) close() {
	if p.in != nil {
		if p.busy {
			<-p.out
		}
		close(p.in)
		<-p.done
	}
	for _, b := range p.bufs {
		if b != nil {
			putBuf(b)
		}
	}
}
