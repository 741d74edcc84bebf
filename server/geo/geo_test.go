package geo

import (
	"encoding/json"
	"errors"
	"math"
	"testing"

	"github.com/paulmach/orb"
)

func TestParseBoundary(t *testing.T) {
	cases := []struct {
		name string
		json string
		ok   bool
	}{
		{"square", `{"type":"Polygon","coordinates":[[[103,25],[104,25],[104,26],[103,26],[103,25]]]}`, true},
		{"with hole", `{"type":"Polygon","coordinates":[[[0,0],[10,0],[10,10],[0,10],[0,0]],[[2,2],[2,4],[4,4],[4,2],[2,2]]]}`, true},
		{"multipolygon", `{"type":"MultiPolygon","coordinates":[[[[0,0],[1,0],[1,1],[0,0]]],[[[2,2],[3,2],[3,3],[2,2]]]]}`, true},
		{"unclosed", `{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1]]]}`, false},
		{"bowtie", `{"type":"Polygon","coordinates":[[[0,0],[1,1],[1,0],[0,1],[0,0]]]}`, false},
		{"spike touching itself", `{"type":"Polygon","coordinates":[[[0,0],[2,0],[2,2],[1,0],[0,2],[0,0]]]}`, false},
		{"lon out of range", `{"type":"Polygon","coordinates":[[[0,0],[181,0],[181,1],[0,0]]]}`, false},
		{"lat out of range", `{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,-91],[0,0]]]}`, false},
		{"too few points", `{"type":"Polygon","coordinates":[[[0,0],[1,0],[0,0]]]}`, false},
		{"zero area", `{"type":"Polygon","coordinates":[[[0,0],[1,0],[2,0],[0,0]]]}`, false},
		{"point", `{"type":"Point","coordinates":[0,0]}`, false},
		{"empty multipolygon", `{"type":"MultiPolygon","coordinates":[]}`, false},
		{"not json", `{`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseBoundary(json.RawMessage(c.json))
			if (err == nil) != c.ok {
				t.Fatalf("err = %v, want ok=%v", err, c.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidGeometry) {
				t.Fatalf("error does not wrap ErrInvalidGeometry: %v", err)
			}
		})
	}
}

func TestValidPointNaNInf(t *testing.T) {
	for _, p := range []orb.Point{{math.NaN(), 0}, {0, math.Inf(1)}, {math.Inf(-1), 0}} {
		if ValidPoint(p) == nil {
			t.Errorf("%v accepted", p)
		}
	}
	if ValidateBoundary(orb.Polygon{{{0, 0}, {1, 0}, {math.NaN(), 1}, {0, 0}}}) == nil {
		t.Error("NaN polygon accepted")
	}
}

func TestContainsAndDistance(t *testing.T) {
	sq := orb.Polygon{{{103, 25}, {104, 25}, {104, 26}, {103, 26}, {103, 25}}}
	if !Contains(sq, orb.Point{103.5, 25.5}) || Contains(sq, orb.Point{105, 25.5}) {
		t.Fatal("contains")
	}
	// One degree of latitude is about 111.2 km.
	if d := DistanceM(orb.Point{103, 25}, orb.Point{103, 26}); math.Abs(d-111195) > 200 {
		t.Fatalf("distance %f", d)
	}
}

func FuzzParseBoundary(f *testing.F) {
	f.Add([]byte(`{"type":"Polygon","coordinates":[[[103,25],[104,25],[104,26],[103,26],[103,25]]]}`))
	f.Add([]byte(`{"type":"MultiPolygon","coordinates":[[[[0,0],[1,0],[1,1],[0,0]]]]}`))
	f.Add([]byte(`{"type":"Polygon","coordinates":[[[0,0],[1,1],[1,0],[0,1],[0,0]]]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := ParseBoundary(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidGeometry) {
				t.Fatalf("unwrapped error %v", err)
			}
			return
		}
		// Whatever is accepted re-validates after a round trip.
		if _, err := ParseBoundary(Marshal(g)); err != nil {
			t.Fatalf("accepted boundary fails after round trip: %v", err)
		}
	})
}
