package seed

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"

	"fieldsync/server/domain"
	"fieldsync/server/geo"
	"fieldsync/syncproto"
)

// generator makes register households (as an XLSX import would bring)
// for bulk imports: a head and 1..5 members, a status and allowance
// class, insurance, an address and a location inside the place's bounding
// box. Ids are UUIDv7 from a counter and the seed, so a seed always gives
// the same households.
type generator struct {
	rng *rand.Rand
	n   uint64
}

func newGenerator(seed uint64) *generator {
	return &generator{rng: rand.New(rand.NewPCG(seed, 0x6868))} // "hh"
}

// id makes a UUIDv7 whose time field counts from 2024-01-01.
func (g *generator) id() string {
	ms := uint64(1704067200000) + g.n
	g.n++
	var b [16]byte
	binary.BigEndian.PutUint64(b[8:], g.rng.Uint64())
	ra := g.rng.Uint32()
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	b[6] = 0x70 | byte(ra>>8)&0x0f
	b[7] = byte(ra)
	b[8] = 0x80 | b[8]&0x3f
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

var (
	surnames    = []string{"王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "马", "朱", "罗", "何"}
	givenNames  = []string{"建国", "秀英", "文华", "丽华", "志强", "海燕", "国平", "桂芳", "永华", "小龙", "春梅", "德明", "红梅", "正清"}
	statuses    = []string{"none", "none", "none", "lifted", "lifted", "registered_poor", "marginal", "monitored"}
	dibaoValues = []string{"none", "none", "none", "none", "A", "B", "C"}
	memberRel   = []string{"配偶", "子", "女", "儿媳", "孙子", "孙女", "父亲", "母亲"}
)

// make returns n households in place, spread over the box around
// (lon, lat) of size d degrees.
func (g *generator) make(n int, place, address string, lon, lat, d float64) []syncproto.Household {
	out := make([]syncproto.Household, 0, n)
	pick := func(l []string) string { return l[g.rng.IntN(len(l))] }
	for i := 0; i < n; i++ {
		fields := map[string]json.RawMessage{}
		head := pick(surnames) + pick(givenNames)
		fields[syncproto.FieldHeadName] = jsonValue(head)
		fields[syncproto.FieldLocation] = jsonValue(syncproto.Point{
			Lon: math.Round((lon+g.rng.Float64()*d)*1e6) / 1e6,
			Lat: math.Round((lat+g.rng.Float64()*d)*1e6) / 1e6,
		})
		fields[syncproto.FieldPovertyStatus] = jsonValue(pick(statuses))
		fields[syncproto.FieldDibaoClass] = jsonValue(pick(dibaoValues))
		fields["wubao"] = jsonValue("no")
		fields["pension"] = jsonValue("yes")
		fields["medical_insurance"] = jsonValue("yes")
		fields["address"] = jsonValue(fmt.Sprintf("%s%d号", address, 1+g.rng.IntN(300)))
		fields["income_per_capita"] = jsonValue(math.Round((3000+g.rng.Float64()*12000)*10) / 10)
		members := 1 + g.rng.IntN(5)
		for m := 0; m < members; m++ {
			rel, name := "户主", head
			if m > 0 {
				rel, name = pick(memberRel), pick(surnames)+pick(givenNames)
			}
			fields[syncproto.MemberPrefix+g.id()] = jsonValue(syncproto.Member{Name: name, Relation: rel, BirthYear: 1940 + g.rng.IntN(80)})
		}
		out = append(out, syncproto.Household{ID: g.id(), PlaceCode: place, Fields: fields})
	}
	return out
}

func jsonValue(v any) json.RawMessage {
	b, _ := json.Marshal(v) // plain values only: strings, numbers, points, members
	return b
}

// placeBox returns the south-west corner and the smaller side of a place's
// bounding box (the demo county's centre when it has no boundary).
func placeBox(p domain.Place) (lon, lat, d float64) {
	if len(p.Boundary) > 0 {
		if g, err := geo.ParseBoundary(p.Boundary); err == nil {
			b := g.Bound()
			return b.Min[0], b.Min[1], math.Min(b.Max[0]-b.Min[0], b.Max[1]-b.Min[1])
		}
	}
	return 103.74, 25.0, 0.01
}
