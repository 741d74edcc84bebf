// Package geo validates and converts place boundaries: GeoJSON Polygon or
// MultiPolygon geometries in WGS84, read and written with paulmach/orb.
package geo

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/paulmach/orb"
	"github.com/paulmach/orb/geojson"
	"github.com/paulmach/orb/planar"
)

// Geometry errors; every error from this package wraps ErrInvalidGeometry.
var (
	ErrInvalidGeometry = errors.New("invalid geometry")
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidGeometry, fmt.Sprintf(format, args...))
}

// MaxVertices bounds one boundary (all rings of all polygons of a
// MultiPolygon together), to keep imports and pulls sane.
const MaxVertices = 100_000

// MaxRingVertices bounds one ring, so that every ring accepted has been
// checked for crossing itself (the check's worst case grows with the
// square of the ring). A village boundary traced by hand has hundreds.
const MaxRingVertices = 10_000

// ParseBoundary decodes a GeoJSON geometry and validates it as a boundary.
func ParseBoundary(raw json.RawMessage) (orb.Geometry, error) {
	g, err := geojson.UnmarshalGeometry(raw)
	if err != nil {
		return nil, invalid("not a GeoJSON geometry: %v", err)
	}
	if err := ValidateBoundary(g.Geometry()); err != nil {
		return nil, err
	}
	return g.Geometry(), nil
}

// ValidateBoundary checks that g is a Polygon or MultiPolygon with closed
// rings of at least four positions, finite WGS84 coordinates, and no ring
// that crosses itself.
func ValidateBoundary(g orb.Geometry) error {
	switch g := g.(type) {
	case orb.Polygon:
		return validatePolygon(g, "")
	case orb.MultiPolygon:
		if len(g) == 0 {
			return invalid("empty MultiPolygon")
		}
		n := 0
		for i, p := range g {
			for _, r := range p {
				n += len(r)
			}
			if n > MaxVertices {
				return invalid("polygon %d: more than %d vertices in the whole MultiPolygon", i, MaxVertices)
			}
			if err := validatePolygon(p, fmt.Sprintf("polygon %d: ", i)); err != nil {
				return err
			}
		}
		return nil
	case nil:
		return invalid("no geometry")
	default:
		return invalid("boundary must be Polygon or MultiPolygon, got %s", g.GeoJSONType())
	}
}

func validatePolygon(p orb.Polygon, where string) error {
	if len(p) == 0 {
		return invalid("%sempty polygon", where)
	}
	n := 0
	for ri, ring := range p {
		n += len(ring)
		if n > MaxVertices {
			return invalid("%smore than %d vertices", where, MaxVertices)
		}
		if len(ring) > MaxRingVertices {
			return invalid("%sring %d has %d positions; at most %d", where, ri, len(ring), MaxRingVertices)
		}
		if len(ring) < 4 {
			return invalid("%sring %d has %d positions; at least 4 needed", where, ri, len(ring))
		}
		for _, pt := range ring {
			if err := ValidPoint(pt); err != nil {
				return fmt.Errorf("%sring %d: %w", where, ri, err)
			}
		}
		if !ring.Closed() {
			return invalid("%sring %d is not closed (first and last positions differ)", where, ri)
		}
		if i, j, ok := selfIntersection(ring); ok {
			return invalid("%sring %d crosses itself (segments %d and %d)", where, ri, i, j)
		}
		if planar.Area(ring) == 0 {
			return invalid("%sring %d has zero area", where, ri)
		}
	}
	return nil
}

// ValidPoint checks a WGS84 position.
func ValidPoint(pt orb.Point) error {
	lon, lat := pt[0], pt[1]
	if math.IsNaN(lon) || math.IsNaN(lat) || math.IsInf(lon, 0) || math.IsInf(lat, 0) {
		return invalid("coordinate is NaN or infinite")
	}
	if lon < -180 || lon > 180 || lat < -90 || lat > 90 {
		return invalid("coordinate (%g, %g) outside WGS84 range", lon, lat)
	}
	return nil
}

// selfIntersection finds two non-adjacent segments of a closed ring that
// touch or cross, and returns their indexes (lower first). Every ring is
// checked, whatever its size (ValidateBoundary refuses rings above
// MaxRingVertices): segments sorted by their west end are compared only
// with those whose longitude spans overlap, which makes ordinary
// boundaries near n log n; the worst case stays n².
func selfIntersection(r orb.Ring) (int, int, bool) {
	n := len(r) - 1 // segments
	if n < 3 {
		return 0, 0, false
	}
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	west := func(i int) float64 { return math.Min(r[i][0], r[i+1][0]) }
	east := func(i int) float64 { return math.Max(r[i][0], r[i+1][0]) }
	sort.Slice(order, func(a, b int) bool { return west(order[a]) < west(order[b]) })
	for a, i := range order {
		e := east(i)
		for _, j := range order[a+1:] {
			if west(j) > e {
				break // sorted: no later segment reaches back to i
			}
			lo, hi := min(i, j), max(i, j)
			if hi == lo+1 || (lo == 0 && hi == n-1) {
				continue // adjacent segments share an end
			}
			if segmentsIntersect(r[lo], r[lo+1], r[hi], r[hi+1]) {
				return lo, hi, true
			}
		}
	}
	return 0, 0, false
}

func orient(a, b, c orb.Point) float64 {
	return (b[0]-a[0])*(c[1]-a[1]) - (b[1]-a[1])*(c[0]-a[0])
}

func onSegment(a, b, p orb.Point) bool {
	return math.Min(a[0], b[0]) <= p[0] && p[0] <= math.Max(a[0], b[0]) &&
		math.Min(a[1], b[1]) <= p[1] && p[1] <= math.Max(a[1], b[1])
}

func segmentsIntersect(p1, p2, q1, q2 orb.Point) bool {
	d1 := orient(q1, q2, p1)
	d2 := orient(q1, q2, p2)
	d3 := orient(p1, p2, q1)
	d4 := orient(p1, p2, q2)
	if ((d1 > 0 && d2 < 0) || (d1 < 0 && d2 > 0)) && ((d3 > 0 && d4 < 0) || (d3 < 0 && d4 > 0)) {
		return true
	}
	return (d1 == 0 && onSegment(q1, q2, p1)) || (d2 == 0 && onSegment(q1, q2, p2)) ||
		(d3 == 0 && onSegment(p1, p2, q1)) || (d4 == 0 && onSegment(p1, p2, q2))
}

// Bound returns the bounding box of g.
func Bound(g orb.Geometry) orb.Bound { return g.Bound() }

// Contains reports whether pt lies inside the boundary (planar test).
func Contains(g orb.Geometry, pt orb.Point) bool {
	switch g := g.(type) {
	case orb.Polygon:
		return planar.PolygonContains(g, pt)
	case orb.MultiPolygon:
		return planar.MultiPolygonContains(g, pt)
	}
	return false
}

// Marshal returns the GeoJSON of a geometry.
func Marshal(g orb.Geometry) json.RawMessage {
	b, _ := geojson.NewGeometry(g).MarshalJSON()
	return b
}

// DistanceM returns the great-circle distance between two points in metres.
func DistanceM(a, b orb.Point) float64 {
	const r = 6371008.8
	la1, la2 := a[1]*math.Pi/180, b[1]*math.Pi/180
	dla := la2 - la1
	dlo := (b[0] - a[0]) * math.Pi / 180
	h := math.Sin(dla/2)*math.Sin(dla/2) + math.Cos(la1)*math.Cos(la2)*math.Sin(dlo/2)*math.Sin(dlo/2)
	return 2 * r * math.Asin(math.Min(1, math.Sqrt(h)))
}
