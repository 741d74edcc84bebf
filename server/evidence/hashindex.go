package evidence

import (
	"math/bits"
	"sync"
)

// HashIndex finds the stored 64-bit perceptual hashes within a Hamming
// distance of a query without comparing the query with every one of them:
// multi-index hashing (Norouzi, Punjani and Fleet, 2012).
//
// Each hash is cut into four 16-bit bands. Two hashes at most d bits apart
// differ in at most d/4 (rounded down) bits in at least one band, by
// pigeonhole, so a query looks up, in every band, the band values within
// d/4 of its own and compares only the hashes stored under them. With
// d = 8 (the default near-duplicate distance) that is 4 × 137 lookups; the
// answer is exactly the set a full scan finds. Distances of 20 and more
// fall back to a scan.
//
// For each band the hashes are kept sorted by that band's value in one
// array, so the hashes under a band value are contiguous in memory (a
// query touches a few hundred short runs, not thousands of scattered
// entries). Hashes added since the arrays were last sorted wait in a short
// tail that queries scan; the arrays are rebuilt (a counting sort) when
// the tail grows past 1/64 of the index, so an Add costs a few
// microseconds amortised.
//
// Memory per entry: the key, 8 bytes of hash and 4 × 12 bytes of band
// arrays (about 90 bytes with a [32]byte key, 90 MB for a million
// photos), plus 1 MiB of band offsets. It is safe for concurrent use. A
// key is stored once per hash: to change a key's hash, Remove it with the
// old one first.
type HashIndex[K comparable] struct {
	mu     sync.RWMutex
	keys   []K      // by slot
	hashes []uint64 // by slot
	live   []bool   // by slot; false once removed
	n      int      // live slots

	// The sorted part: for band b, sorted[b].hash[off[v]:off[v+1]] are
	// the hashes whose band b is v, and sorted[b].slot their slots.
	sorted [bands]struct {
		off  []uint32
		hash []uint64
		slot []int32
	}
	tail []int32 // slots added since the last sort
	dead int     // removed slots still in the sorted part

	masks [maxBandRadius + 1][]uint16 // masks[c]: every 16-bit value with c bits set
}

const (
	bands         = 4
	bandBits      = 16
	maxBandRadius = 4 // C(16,≤4) = 2517 lookups per band; beyond it a scan is cheaper
	minTail       = 1024
)

// NewHashIndex returns an empty index.
func NewHashIndex[K comparable]() *HashIndex[K] {
	x := &HashIndex[K]{}
	for v := 0; v < 1<<bandBits; v++ {
		if c := bits.OnesCount16(uint16(v)); c <= maxBandRadius {
			x.masks[c] = append(x.masks[c], uint16(v))
		}
	}
	return x
}

func band(h uint64, b int) uint16 { return uint16(h >> (bandBits * b)) }

// Len is the number of entries.
func (x *HashIndex[K]) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.n
}

// find returns key's slot if it is stored with hash h, or -1. The caller
// holds x.mu.
func (x *HashIndex[K]) find(key K, h uint64) int32 {
	for _, s := range x.tail {
		if x.live[s] && x.hashes[s] == h && x.keys[s] == key {
			return s
		}
	}
	if s := &x.sorted[0]; s.off != nil {
		v := band(h, 0)
		for i := s.off[v]; i < s.off[int(v)+1]; i++ {
			if sl := s.slot[i]; s.hash[i] == h && x.live[sl] && x.keys[sl] == key {
				return sl
			}
		}
	}
	return -1
}

// Add stores key with hash h; if it is already stored with h, nothing
// changes.
func (x *HashIndex[K]) Add(key K, h uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.find(key, h) >= 0 {
		return
	}
	slot := int32(len(x.keys))
	x.keys = append(x.keys, key)
	x.hashes = append(x.hashes, h)
	x.live = append(x.live, true)
	x.tail = append(x.tail, slot)
	x.n++
	if len(x.tail) > max(minTail, x.n/64) {
		x.rebuild()
	}
}

// AddNew adds entries whose keys are not in x yet (a store's own rows,
// loaded at open), sorting the bands once at the end: a million Adds
// re-sort them about a hundred times (7.7 s), one AddNew once.
func (x *HashIndex[K]) AddNew(keys []K, hashes []uint64) {
	if len(keys) != len(hashes) {
		panic("evidence: AddNew with unequal lists")
	}
	if len(keys) == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for i, k := range keys {
		x.tail = append(x.tail, int32(len(x.keys)))
		x.keys = append(x.keys, k)
		x.hashes = append(x.hashes, hashes[i])
		x.live = append(x.live, true)
	}
	x.n += len(keys)
	x.rebuild()
}

// Remove deletes key, stored with hash h; it reports whether it was there.
func (x *HashIndex[K]) Remove(key K, h uint64) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	slot := x.find(key, h)
	if slot < 0 {
		return false
	}
	var zero K
	x.keys[slot], x.live[slot] = zero, false
	x.n--
	x.dead++
	if x.dead > max(minTail, x.n/4) {
		x.rebuild()
	}
	return true
}

// rebuild sorts every live slot into the band arrays, drops removed slots
// and empties the tail. The caller holds x.mu for writing.
func (x *HashIndex[K]) rebuild() {
	// Compact the slots first, so that removed entries cost nothing later.
	keys, hashes := make([]K, 0, x.n), make([]uint64, 0, x.n)
	for s, ok := range x.live {
		if ok {
			keys = append(keys, x.keys[s])
			hashes = append(hashes, x.hashes[s])
		}
	}
	live := make([]bool, len(keys))
	for i := range live {
		live[i] = true
	}
	x.keys, x.hashes, x.live, x.tail, x.dead = keys, hashes, live, x.tail[:0], 0
	for b := range x.sorted {
		s := &x.sorted[b]
		if s.off == nil {
			s.off = make([]uint32, 1<<bandBits+1)
		} else {
			clear(s.off)
		}
		for _, h := range hashes {
			s.off[int(band(h, b))+1]++
		}
		for v := 1; v < len(s.off); v++ {
			s.off[v] += s.off[v-1]
		}
		s.hash = growTo(s.hash, len(hashes))
		s.slot = growTo(s.slot, len(hashes))
		fill := make([]uint32, 1<<bandBits)
		copy(fill, s.off)
		for i, h := range hashes {
			v := band(h, b)
			s.hash[fill[v]], s.slot[fill[v]] = h, int32(i)
			fill[v]++
		}
	}
}

func growTo[T any](s []T, n int) []T {
	if cap(s) >= n {
		return s[:n]
	}
	return make([]T, n)
}

// Near calls fn for every entry whose hash is within maxDist bits of h,
// each once, in no particular order. fn must not call back into x.
func (x *HashIndex[K]) Near(h uint64, maxDist int, fn func(key K, hash uint64, dist int)) {
	if maxDist < 0 {
		return
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.n == 0 {
		return
	}
	r := maxDist / bands
	if r > maxBandRadius || x.sorted[0].off == nil {
		for s, e := range x.hashes {
			if d := bits.OnesCount64(h ^ e); d <= maxDist && x.live[s] {
				fn(x.keys[s], e, d)
			}
		}
		return
	}
	for _, s := range x.tail {
		if d := bits.OnesCount64(h ^ x.hashes[s]); d <= maxDist && x.live[s] {
			fn(x.keys[s], x.hashes[s], d)
		}
	}
	for b := 0; b < bands; b++ {
		st := &x.sorted[b]
		q := band(h, b)
		for c := 0; c <= r; c++ {
			for _, m := range x.masks[c] {
				v := q ^ m
				for i := st.off[v]; i < st.off[int(v)+1]; i++ {
					e := st.hash[i]
					d := bits.OnesCount64(h ^ e)
					if d > maxDist || x.seenInEarlierBand(h, e, b, r) {
						continue
					}
					if s := st.slot[i]; x.live[s] {
						fn(x.keys[s], e, d)
					}
				}
			}
		}
	}
}

// seenInEarlierBand reports whether a query for h finds e in a band
// before b already (its band there is within r of h's).
func (x *HashIndex[K]) seenInEarlierBand(h, e uint64, b, r int) bool {
	for e2 := 0; e2 < b; e2++ {
		if bits.OnesCount16(band(e, e2)^band(h, e2)) <= r {
			return true
		}
	}
	return false
}
