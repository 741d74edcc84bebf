package geo

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/paulmach/orb"
)

// circle is a closed counter-clockwise ring of n distinct positions.
func circle(lon, lat, r float64, n int) orb.Ring {
	ring := make(orb.Ring, 0, n+1)
	for i := range n {
		a := 2 * math.Pi * float64(i) / float64(n)
		ring = append(ring, orb.Point{lon + r*math.Cos(a), lat + r*math.Sin(a)})
	}
	return append(ring, ring[0])
}

// twisted is circle with two positions swapped halfway round: the ring
// crosses itself there and nowhere else.
func twisted(n int) orb.Ring {
	r := circle(103, 25, 0.1, n)
	r[n/2], r[n/2+1] = r[n/2+1], r[n/2]
	return r
}

func TestValidateBoundary_Limits(t *testing.T) {
	// Eleven polygons of 9,500 positions each: each is within the ring and
	// polygon limits, but together they pass MaxVertices.
	var many orb.MultiPolygon
	for i := range 11 {
		many = append(many, orb.Polygon{circle(100+float64(i), 25, 0.4, 9_499)})
	}
	var few orb.MultiPolygon
	for i := range 3 {
		few = append(few, orb.Polygon{circle(100+float64(i), 25, 0.4, 9_499)})
	}
	for _, tc := range []struct {
		name string
		g    orb.Geometry
		ok   bool
	}{
		{"multipolygon within the total", few, true},
		{"multipolygon over the total", many, false},
		{"large ring that crosses itself", orb.Polygon{twisted(8_000)}, false},
		{"large ring, simple", orb.Polygon{circle(103, 25, 0.1, 8_000)}, true},
		{"ring over the ring limit", orb.Polygon{circle(103, 25, 0.1, MaxRingVertices+10)}, false},
		{"small ring that crosses itself", orb.Polygon{twisted(12)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateBoundary(tc.g)
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrInvalidGeometry) {
				t.Fatalf("accepted or wrong error: %v", err)
			}
		})
	}
}

// bruteIntersects is the plain all-pairs check the sweep must agree with.
func bruteIntersects(r orb.Ring) bool {
	n := len(r) - 1
	for i := 0; i < n; i++ {
		for j := i + 1; j < n; j++ {
			if j == i+1 || (i == 0 && j == n-1) {
				continue
			}
			if segmentsIntersect(r[i], r[i+1], r[j], r[j+1]) {
				return true
			}
		}
	}
	return false
}

// TestSelfIntersection_SameAsAllPairs: on random rings (many of them
// crossing themselves, some with shared longitudes), the sweep finds a
// crossing exactly when the all-pairs check does.
func TestSelfIntersection_SameAsAllPairs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	crossing := 0
	for trial := range 3000 {
		n := 3 + rng.IntN(12)
		ring := make(orb.Ring, 0, n+1)
		for range n {
			// A coarse grid makes vertical segments and shared ends common.
			ring = append(ring, orb.Point{float64(rng.IntN(6)), float64(rng.IntN(6))})
		}
		ring = append(ring, ring[0])
		_, _, got := selfIntersection(ring)
		want := bruteIntersects(ring)
		if got != want {
			t.Fatalf("trial %d: ring %v: sweep %v, all pairs %v", trial, ring, got, want)
		}
		if want {
			crossing++
		}
	}
	if crossing == 0 || crossing == 3000 {
		t.Fatalf("%d of 3000 rings cross: the test set does not vary", crossing)
	}
}
