package evidence

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

// scanNear is the reference: every stored hash compared with the query.
func scanNear(stored map[int]uint64, h uint64, maxDist int) []int {
	var out []int
	for k, s := range stored {
		if maxDist >= 0 && bits.OnesCount64(h^s) <= maxDist {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func indexNear(t testing.TB, x *HashIndex[int], h uint64, maxDist int) []int {
	var out []int
	x.Near(h, maxDist, func(k int, got uint64, d int) {
		if d != bits.OnesCount64(h^got) {
			t.Fatalf("entry %d: distance %d reported, %d real", k, d, bits.OnesCount64(h^got))
		}
		out = append(out, k)
	})
	slices.Sort(out)
	for i := 1; i < len(out); i++ {
		if out[i] == out[i-1] {
			t.Fatalf("entry %d reported twice for %016x", out[i], h)
		}
	}
	return out
}

// flip returns h with n distinct random bits flipped, chosen among the
// bits in allowed.
func flip(r *rand.Rand, h uint64, n int, allowed uint64) uint64 {
	pos := []int{}
	for b := 0; b < 64; b++ {
		if allowed&(1<<b) != 0 {
			pos = append(pos, b)
		}
	}
	r.Shuffle(len(pos), func(i, j int) { pos[i], pos[j] = pos[j], pos[i] })
	for _, b := range pos[:min(n, len(pos))] {
		h ^= 1 << b
	}
	return h
}

// hashSets are the stored sets the index must answer exactly as a scan
// does: random ones, and ones built to defeat a banded index (all the
// difference in one band, differences spread evenly so that every band
// sits exactly on its radius, huge buckets of one band value, and
// clusters at exactly the distance limit and one beyond it).
func hashSets(r *rand.Rand) map[string][]uint64 {
	sets := map[string][]uint64{}
	random := make([]uint64, 3000)
	for i := range random {
		random[i] = r.Uint64()
	}
	sets["random"] = random

	base := r.Uint64()
	var oneBand, spread, bucket, boundary []uint64
	for i := 0; i < 2000; i++ {
		oneBand = append(oneBand, flip(r, base, r.IntN(17), 0xffff<<(16*r.IntN(4))))
		// Every band differs by 2 or 3 bits: distances 8..12 around base.
		h := base
		for b := 0; b < 4; b++ {
			h = flip(r, h, 2+r.IntN(2), 0xffff<<(16*b))
		}
		spread = append(spread, h)
		bucket = append(bucket, base&0xffff|r.Uint64()&^0xffff)
		boundary = append(boundary, flip(r, base, 7+r.IntN(4), ^uint64(0)))
	}
	sets["one band"] = oneBand
	sets["spread over bands"] = spread
	sets["one huge bucket"] = bucket
	sets["at the limit"] = boundary
	sets["empty"] = nil
	sets["duplicates"] = []uint64{base, base, base, ^base, 0, 0, ^uint64(0)}
	return sets
}

func TestHashIndex_EqualsScan(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for name, set := range hashSets(r) {
		t.Run(name, func(t *testing.T) {
			x := NewHashIndex[int]()
			stored := map[int]uint64{}
			for i, h := range set {
				x.Add(i, h)
				x.Add(i, h) // idempotent
				stored[i] = h
			}
			if x.Len() != len(stored) {
				t.Fatalf("Len %d, want %d", x.Len(), len(stored))
			}
			// Queries: stored hashes, their near neighbours, and random ones.
			var queries []uint64
			for i := 0; i < 60 && i < len(set); i++ {
				h := set[r.IntN(len(set))]
				queries = append(queries, h, flip(r, h, r.IntN(12), ^uint64(0)))
			}
			for i := 0; i < 20; i++ {
				queries = append(queries, r.Uint64())
			}
			for _, q := range queries {
				for _, d := range []int{-1, 0, 1, 3, 4, 7, 8, 9, 12, 16, 19, 20, 32, 64} {
					want := scanNear(stored, q, d)
					if got := indexNear(t, x, q, d); !slices.Equal(got, want) {
						t.Fatalf("query %016x within %d: index found %d entries, scan %d\nindex %v\nscan  %v", q, d, len(got), len(want), got, want)
					}
				}
			}
		})
	}
}

// TestHashIndex_AddNew: entries loaded in bulk (as at open), then added
// and removed one by one, answer as a scan does.
func TestHashIndex_AddNew(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	base := r.Uint64()
	x := NewHashIndex[int]()
	stored := map[int]uint64{}
	for chunk := range 3 {
		var keys []int
		var hs []uint64
		for i := range 1500 {
			k := chunk*1500 + i
			h := flip(r, base, r.IntN(16), ^uint64(0))
			keys, hs = append(keys, k), append(hs, h)
			stored[k] = h
		}
		x.AddNew(keys, hs)
	}
	x.AddNew(nil, nil)
	for k := 5000; k < 5100; k++ {
		stored[k] = flip(r, base, r.IntN(16), ^uint64(0))
		x.Add(k, stored[k])
	}
	for k := 0; k < 300; k++ {
		if !x.Remove(k, stored[k]) {
			t.Fatalf("Remove(%d) found nothing", k)
		}
		delete(stored, k)
	}
	if x.Len() != len(stored) {
		t.Fatalf("Len %d, want %d", x.Len(), len(stored))
	}
	for q := range 200 {
		h := flip(r, base, r.IntN(10), ^uint64(0))
		d := []int{0, 4, 8, 12}[q%4]
		if got, want := indexNear(t, x, h, d), scanNear(stored, h, d); !slices.Equal(got, want) {
			t.Fatalf("query %016x within %d: index %d, scan %d", h, d, len(got), len(want))
		}
	}
}

func TestHashIndex_RemoveAndReuse(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	x := NewHashIndex[int]()
	stored := map[int]uint64{}
	base := r.Uint64()
	for round := 0; round < 8000; round++ {
		k := r.IntN(300)
		if h, ok := stored[k]; ok && r.IntN(2) == 0 {
			if !x.Remove(k, h) {
				t.Fatalf("Remove(%d) found nothing", k)
			}
			delete(stored, k)
			if x.Remove(k, h) {
				t.Fatalf("Remove(%d) twice succeeded", k)
			}
			continue
		}
		if h, ok := stored[k]; ok {
			x.Remove(k, h) // a re-analysed blob: its hash moves
		}
		h := flip(r, base, r.IntN(20), ^uint64(0))
		x.Add(k, h)
		stored[k] = h
		if round%97 == 0 {
			q := flip(r, base, r.IntN(6), ^uint64(0))
			if got, want := indexNear(t, x, q, 8), scanNear(stored, q, 8); !slices.Equal(got, want) {
				t.Fatalf("round %d: index %v, scan %v", round, got, want)
			}
		}
	}
	if x.Len() != len(stored) {
		t.Fatalf("Len %d, want %d", x.Len(), len(stored))
	}
	if limit := x.n + max(minTail, x.n/4) + 1; len(x.keys) > limit {
		t.Errorf("%d slots for %d keys (limit %d): removed slots are never dropped", len(x.keys), x.n, limit)
	}
}

// BenchmarkHashIndex_Near is one near-duplicate query (distance 8) against
// n stored random hashes, beside the full scan it replaces.
func BenchmarkHashIndex_Near(b *testing.B) {
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		r := rand.New(rand.NewPCG(5, 6))
		x := NewHashIndex[[32]byte]()
		all := make([]uint64, n)
		for i := range all {
			all[i] = r.Uint64()
			var k [32]byte
			k[0], k[1], k[2], k[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
			x.Add(k, all[i])
		}
		queries := make([]uint64, 1024)
		for i := range queries {
			queries[i] = flip(r, all[r.IntN(n)], r.IntN(9), ^uint64(0))
		}
		b.Run(fmt.Sprintf("index/n=%d", n), func(b *testing.B) {
			found := 0
			for i := 0; b.Loop(); i++ {
				x.Near(queries[i%len(queries)], DefaultNearDuplicateDistance, func([32]byte, uint64, int) { found++ })
			}
			if found < b.N {
				b.Fatalf("found %d near entries for %d queries of stored neighbours", found, b.N)
			}
		})
		b.Run(fmt.Sprintf("scan/n=%d", n), func(b *testing.B) {
			found := 0
			for i := 0; b.Loop(); i++ {
				q := queries[i%len(queries)]
				for _, h := range all {
					if bits.OnesCount64(q^h) <= DefaultNearDuplicateDistance {
						found++
					}
				}
			}
			if found < b.N {
				b.Fatalf("found %d", found)
			}
		})
	}
}

// BenchmarkHashIndex_Build loads n random hashes as opening a store does
// (AddNew in chunks of 100,000) and reports the heap bytes per entry.
func BenchmarkHashIndex_Build(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			r := rand.New(rand.NewPCG(9, 10))
			var x *HashIndex[[32]byte]
			for b.Loop() {
				x = NewHashIndex[[32]byte]()
				var keys [][32]byte
				var hs []uint64
				for i := range n {
					var k [32]byte
					k[0], k[1], k[2], k[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
					keys, hs = append(keys, k), append(hs, r.Uint64())
					if len(keys) == 100_000 || i == n-1 {
						x.AddNew(keys, hs)
						keys, hs = keys[:0], hs[:0]
					}
				}
			}
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(ms.HeapAlloc)/float64(n), "heapB/entry")
			if x.Len() != n {
				b.Fatalf("Len %d", x.Len())
			}
		})
	}
}
