package demo

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/paulmach/orb"
)

// VillageGroupNames are the 14 villager groups of the village committee in
// the reports, in the order they are laid out (west to east, south row
// first). The last one carries the village's own name.
var VillageGroupNames = []string{
	"采山坪", "杨家寨", "马家寨", "塘子", "箐脚", "观音岩", "石旮旯",
	"谷地", "茅草坪", "亚拉坡", "亚拉坡九公里", "岩头", "黄泥坡", "石门",
}

// OtherVillageGroupNames are the groups of the second, synthetic village.
var OtherVillageGroupNames = []string{"上寨", "下寨", "大坪子"}

// Grid geometry, in degrees. One cell is about 1.2 km by 1.1 km at 25°N.
const (
	originLon = 103.700
	originLat = 25.000
	cellLon   = 0.012
	cellLat   = 0.010
	// otherLon is where the second township's village starts.
	otherLon = originLon + 7*cellLon + 0.040
)

type groupInfo struct {
	code, name, village string
	poly                orb.Polygon
}

// buildPlaces returns the place tree (parents first) and the villager
// groups of both villages, demo village first.
func buildPlaces(rng *rand.Rand) ([]Place, []groupInfo) {
	demoGroups := gridGroups(rng, VillageCode, VillageGroupNames, 7, 2, originLon, originLat)
	otherGroups := gridGroups(rng, OtherVillageCode, OtherVillageGroupNames, 3, 1, otherLon, originLat+0.004)

	village := octagon(groupsBound(demoGroups).Pad(0.002), 0.002)
	otherVillage := octagon(groupsBound(otherGroups).Pad(0.002), 0.002)
	township := octagon(village.Bound().Pad(0.008), 0.006)
	otherTownship := octagon(otherVillage.Bound().Pad(0.008), 0.006)
	county := octagon(township.Bound().Union(otherTownship.Bound()).Pad(0.02), 0.015)

	places := []Place{
		{Code: CountyCode, Name: "示范县", Level: LevelCounty, Boundary: county},
		{Code: TownshipCode, Name: "青山镇", Level: LevelTownship, ParentCode: CountyCode, Boundary: township},
		{Code: OtherTownshipCode, Name: "龙潭乡", Level: LevelTownship, ParentCode: CountyCode, Boundary: otherTownship},
		{Code: VillageCode, Name: "石门村委会", Level: LevelVillage, ParentCode: TownshipCode, Boundary: village},
		{Code: OtherVillageCode, Name: "龙潭村委会", Level: LevelVillage, ParentCode: OtherTownshipCode, Boundary: otherVillage},
	}
	groups := append(demoGroups, otherGroups...)
	for _, g := range groups {
		places = append(places, Place{Code: g.code, Name: g.name, Level: LevelGroup, ParentCode: g.village, Boundary: g.poly})
	}
	return places, groups
}

// gridGroups tiles cols×rows cells with jittered shared corners and
// jittered shared edge midpoints, so neighbouring groups share their
// borders exactly and never overlap. Each cell is an octagon-ish simple
// polygon, counter-clockwise.
func gridGroups(rng *rand.Rand, villageCode string, names []string, cols, rows int, lon0, lat0 float64) []groupInfo {
	if len(names) != cols*rows {
		panic(fmt.Sprintf("demo: %d names for a %dx%d grid", len(names), cols, rows))
	}
	jit := func(scale float64) float64 { return (rng.Float64()*2 - 1) * scale }
	corner := make([][]orb.Point, cols+1)
	for i := range corner {
		corner[i] = make([]orb.Point, rows+1)
		for j := range corner[i] {
			corner[i][j] = orb.Point{
				round7(lon0 + float64(i)*cellLon + jit(0.2*cellLon)),
				round7(lat0 + float64(j)*cellLat + jit(0.2*cellLat)),
			}
		}
	}
	// mid bends the edge a-b at its midpoint, perpendicular to it, by at
	// most 12% of its length.
	mid := func(a, b orb.Point) orb.Point {
		dx, dy := b[0]-a[0], b[1]-a[1]
		t := jit(0.12)
		return orb.Point{round7((a[0]+b[0])/2 - dy*t), round7((a[1]+b[1])/2 + dx*t)}
	}
	// horiz[i][j] bends corner[i][j]-corner[i+1][j]; vert[i][j] bends
	// corner[i][j]-corner[i][j+1].
	horiz := make([][]orb.Point, cols)
	for i := range horiz {
		horiz[i] = make([]orb.Point, rows+1)
		for j := range horiz[i] {
			horiz[i][j] = mid(corner[i][j], corner[i+1][j])
		}
	}
	vert := make([][]orb.Point, cols+1)
	for i := range vert {
		vert[i] = make([]orb.Point, rows)
		for j := range vert[i] {
			vert[i][j] = mid(corner[i][j], corner[i][j+1])
		}
	}
	out := make([]groupInfo, 0, cols*rows)
	for j := 0; j < rows; j++ {
		for i := 0; i < cols; i++ {
			ring := orb.Ring{
				corner[i][j], horiz[i][j], corner[i+1][j], vert[i+1][j],
				corner[i+1][j+1], horiz[i][j+1], corner[i][j+1], vert[i][j],
				corner[i][j],
			}
			n := len(out)
			out = append(out, groupInfo{
				code:    fmt.Sprintf("%s%03d", villageCode, n+1),
				name:    names[n],
				village: villageCode,
				poly:    orb.Polygon{ring},
			})
		}
	}
	return out
}

func groupsBound(gs []groupInfo) orb.Bound {
	b := gs[0].poly.Bound()
	for _, g := range gs[1:] {
		b = b.Union(g.poly.Bound())
	}
	return b
}

// octagon is the bound with its corners cut by c (c must be below twice
// any padding the bound got, so what it was padded around stays inside).
func octagon(b orb.Bound, c float64) orb.Polygon {
	x0, y0, x1, y1 := round7(b.Min[0]), round7(b.Min[1]), round7(b.Max[0]), round7(b.Max[1])
	c = round7(c)
	ring := orb.Ring{
		{x0 + c, y0}, {x1 - c, y0}, {x1, y0 + c}, {x1, y1 - c},
		{x1 - c, y1}, {x0 + c, y1}, {x0, y1 - c}, {x0, y0 + c},
	}
	for i := range ring {
		ring[i] = orb.Point{round7(ring[i][0]), round7(ring[i][1])}
	}
	ring = append(ring, ring[0])
	return orb.Polygon{ring}
}

// round7 rounds to 1e-7 degrees (about 1 cm), what GeoJSON output keeps.
func round7(v float64) float64 { return math.Round(v*1e7) / 1e7 }
