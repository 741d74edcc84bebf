package demo

import (
	"cmp"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/paulmach/orb"
	"github.com/paulmach/orb/planar"
)

// RefYear is the year the demo data set describes (ages are relative to it).
const RefYear = 2024

// idEpochMs is 2024-01-01T00:00:00Z: demo ids carry it plus a counter as
// their UUIDv7 timestamp, so they sort in generation order.
const idEpochMs = 1704067200000

// idGen makes deterministic UUIDv7 strings: the timestamp field is a
// counter (so ids are unique whatever the random bits), the rest comes
// from the seeded generator.
type idGen struct {
	rng *rand.Rand
	n   uint64
}

func (g *idGen) next() string {
	ms := uint64(idEpochMs) + g.n
	g.n++
	var b [16]byte
	binary.BigEndian.PutUint64(b[8:], g.rng.Uint64())
	ra := g.rng.Uint32()
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	b[6] = 0x70 | byte(ra>>8)&0x0f // version 7
	b[7] = byte(ra)
	b[8] = 0x80 | b[8]&0x3f // RFC 9562 variant
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// pool is a set of households with an exact people total.
type pool struct {
	households, people int
	weights            []float64 // household size 1..len(weights)
}

var (
	poolExit = pool{ProposedExit, ProposedExitPeople,
		[]float64{3, 7, 12, 20, 24, 18, 10, 6}}
	poolPoor = pool{RegisteredPoor - ProposedExit, RegisteredPoorPeople - ProposedExitPeople,
		[]float64{5, 8, 12, 19, 22, 18, 10, 6}}
	poolOther = pool{TotalHouseholds - RegisteredPoor, TotalPeople - RegisteredPoorPeople,
		[]float64{6, 12, 16, 24, 20, 12, 6, 4}}
)

const maxHouseholdSize = 10

// sizes draws household sizes for the pool and nudges them until they add
// up to its people total exactly.
func (p pool) sizes(rng *rand.Rand) []int {
	total := 0.0
	for _, w := range p.weights {
		total += w
	}
	out := make([]int, p.households)
	sum := 0
	for i := range out {
		r := rng.Float64() * total
		size := len(p.weights)
		for k, w := range p.weights {
			if r < w {
				size = k + 1
				break
			}
			r -= w
		}
		out[i] = size
		sum += size
	}
	for sum != p.people {
		i := rng.IntN(len(out))
		switch {
		case sum < p.people && out[i] < maxHouseholdSize:
			out[i]++
			sum++
		case sum > p.people && out[i] > 1:
			out[i]--
			sum--
		}
	}
	return out
}

// groupCounts splits TotalHouseholds over n groups, unevenly, each group
// at least 30 households.
func groupCounts(rng *rand.Rand, n int) []int {
	weights := make([]float64, n)
	total := 0.0
	for i := range weights {
		weights[i] = 0.55 + rng.Float64()
		total += weights[i]
	}
	const floor = 30
	spare := TotalHouseholds - floor*n
	counts := make([]int, n)
	sum := 0
	for i, w := range weights {
		counts[i] = floor + int(float64(spare)*w/total)
		sum += counts[i]
	}
	for i := 0; sum < TotalHouseholds; i = (i + 1) % n {
		counts[i]++
		sum++
	}
	return counts
}

func buildHouseholds(rng *rand.Rand, ids *idGen, places []Place, groups []groupInfo) []Household {
	names := make(map[string]string, len(places))
	for _, p := range places {
		names[p.Code] = p.Name
	}
	var demo []groupInfo
	for _, g := range groups {
		if g.village == VillageCode {
			demo = append(demo, g)
		}
	}
	counts := groupCounts(rng, len(demo))

	// Decide which households are poor, and their sizes, before placing
	// them, so the totals are exact.
	kind := make([]string, TotalHouseholds) // "exit", "poor", "other"
	for i, j := range rng.Perm(TotalHouseholds) {
		switch {
		case i < poolExit.households:
			kind[j] = "exit"
		case i < poolExit.households+poolPoor.households:
			kind[j] = "poor"
		default:
			kind[j] = "other"
		}
	}
	sizesBy := map[string][]int{"exit": poolExit.sizes(rng), "poor": poolPoor.sizes(rng), "other": poolOther.sizes(rng)}
	// Among ordinary households: a few monitored and marginal ones.
	otherStatus := make([]string, poolOther.households)
	for i := range otherStatus {
		otherStatus[i] = StatusNone
	}
	for n, j := range rng.Perm(poolOther.households)[:MonitoredHouseholds+9] {
		if n < MonitoredHouseholds {
			otherStatus[j] = StatusMonitored
		} else {
			otherStatus[j] = StatusMarginal
		}
	}
	next := map[string]int{}

	out := make([]Household, 0, TotalHouseholds)
	wubaoLeft := 8
	for gi, g := range demo {
		clan := ""
		if base, ok := strings.CutSuffix(g.name, "家寨"); ok {
			clan = base
		}
		addrPrefix := names[CountyCode] + names[TownshipCode] + names[VillageCode] + g.name + "村民小组"
		for k := 0; k < counts[gi]; k++ {
			idx := len(out)
			kd := kind[idx]
			size := sizesBy[kd][next[kd]]
			status := StatusRegisteredPoor
			if kd == "other" {
				status = otherStatus[next[kd]]
			}
			next[kd]++

			h := Household{ID: ids.next(), PlaceCode: g.code}
			h.Members = makeMembers(rng, ids, size, clan, kd != "other")
			h.HeadName = h.Members[0].Name
			h.Lon, h.Lat = pointIn(rng, g.poly)

			attrs := map[string]any{
				"poverty_status":    status,
				"dibao_class":       "none",
				"wubao":             "no",
				"pension":           "yes",
				"medical_insurance": "yes",
				"address":           fmt.Sprintf("%s%d号", addrPrefix, k+1),
			}
			switch kd {
			case "exit":
				attrs["proposed_exit"] = true
				attrs["income_per_capita"] = roundTen(5600 + rng.Float64()*3800)
			case "poor":
				attrs["proposed_exit"] = false
				attrs["income_per_capita"] = roundTen(3600 + rng.Float64()*2400)
			default:
				attrs["income_per_capita"] = roundTen(7000 + rng.Float64()*11000)
			}
			r := rng.Float64()
			switch {
			case kd != "other" && r < 0.07:
				attrs["dibao_class"] = "A"
			case kd != "other" && r < 0.23:
				attrs["dibao_class"] = "B"
			case kd != "other" && r < 0.36, status == StatusMonitored, status == StatusMarginal && r < 0.5:
				attrs["dibao_class"] = "C"
			}
			if kd != "other" && size == 1 && RefYear-h.Members[0].BirthYear >= 62 && wubaoLeft > 0 {
				attrs["wubao"] = "yes"
				attrs["dibao_class"] = "A"
				wubaoLeft--
			}
			if rng.Float64() < 0.012 {
				attrs["pension"] = "no"
			}
			if rng.Float64() < 0.004 {
				attrs["medical_insurance"] = "no"
			}
			h.Attrs = attrs
			out = append(out, h)
		}
	}
	return out
}

func roundTen(v float64) float64 { return math.Round(v/10) * 10 }

// pointIn draws a point strictly inside poly: inside, and at least ~30 m
// from its border in the four axis directions.
func pointIn(rng *rand.Rand, poly orb.Polygon) (lon, lat float64) {
	const margin = 0.0003
	b := poly.Bound()
	for {
		p := orb.Point{
			round7(b.Min[0] + rng.Float64()*(b.Max[0]-b.Min[0])),
			round7(b.Min[1] + rng.Float64()*(b.Max[1]-b.Min[1])),
		}
		if planar.PolygonContains(poly, p) &&
			planar.PolygonContains(poly, orb.Point{p[0] - margin, p[1]}) &&
			planar.PolygonContains(poly, orb.Point{p[0] + margin, p[1]}) &&
			planar.PolygonContains(poly, orb.Point{p[0], p[1] - margin}) &&
			planar.PolygonContains(poly, orb.Point{p[0], p[1] + margin}) {
			return p[0], p[1]
		}
	}
}

// pickSurname favours the common surnames at the head of the list.
func pickSurname(rng *rand.Rand) string {
	r := rng.Float64()
	return surnames[int(r*r*float64(len(surnames)))]
}

func givenName(rng *rand.Rand, male bool, birthYear int) string {
	var list []string
	switch {
	case birthYear < 1965 && male:
		list = maleOld
	case birthYear < 1965:
		list = femaleOld
	case birthYear < 1995 && male:
		list = maleMiddle
	case birthYear < 1995:
		list = femaleMiddle
	case male:
		list = maleYoung
	default:
		list = femaleYoung
	}
	return list[rng.IntN(len(list))]
}

// makeMembers makes a plausible household of n people, the head first.
// clan, if set, is the surname most heads of the group share.
func makeMembers(rng *rand.Rand, ids *idGen, n int, clan string, poor bool) []Member {
	headAge := 28 + rng.IntN(48) // 28..75
	if n == 1 {
		headAge = 45 + rng.IntN(40)
	} else if poor && rng.Float64() < 0.3 {
		headAge = 55 + rng.IntN(25)
	}
	headYear := RefYear - headAge
	headMale := rng.Float64() < 0.82
	surname := pickSurname(rng)
	if clan != "" && rng.Float64() < 0.6 {
		surname = clan
	}
	ms := make([]Member, 0, n)
	add := func(family string, male bool, year int, relation string) string {
		if year > RefYear {
			year = RefYear - rng.IntN(2)
		}
		name := family + givenName(rng, male, year)
		ms = append(ms, Member{ID: ids.next(), Name: name, Relation: relation, BirthYear: year})
		return name
	}
	add(surname, headMale, headYear, "户主")
	family := surname // the children's surname
	if len(ms) < n && rng.Float64() < 0.9 {
		spouseSurname := pickSurname(rng)
		if !headMale {
			family = spouseSurname
		}
		add(spouseSurname, !headMale, headYear-3+rng.IntN(9), "配偶")
	}
	if len(ms) < n && headAge < 45 && rng.Float64() < 0.35 {
		// A parent of the head lives with the family.
		year := headYear - 22 - rng.IntN(9)
		if rng.Float64() < 0.5 {
			add(surname, true, year, "父亲")
		} else {
			add(pickSurname(rng), false, year, "母亲")
		}
	}
	if len(ms)+2 <= n && headAge >= 55 {
		// An adult son with his wife and their children.
		sonYear := headYear + 22 + rng.IntN(9)
		add(family, true, sonYear, "子")
		add(pickSurname(rng), false, sonYear-2+rng.IntN(5), "儿媳")
		start := len(ms)
		for len(ms) < n {
			male := rng.Float64() < 0.52
			rel := "孙女"
			if male {
				rel = "孙子"
			}
			add(family, male, sonYear+21+rng.IntN(12), rel)
		}
		sortByAge(ms[start:])
		return ms
	}
	start := len(ms)
	for len(ms) < n {
		male := rng.Float64() < 0.52
		rel := "女"
		if male {
			rel = "子"
		}
		add(family, male, headYear+20+rng.IntN(16), rel)
	}
	sortByAge(ms[start:])
	return ms
}

// sortByAge orders siblings eldest first.
func sortByAge(ms []Member) {
	slices.SortStableFunc(ms, func(a, b Member) int { return cmp.Compare(a.BirthYear, b.BirthYear) })
}
