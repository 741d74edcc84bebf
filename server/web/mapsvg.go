package web

import (
	"encoding/json"
	"fmt"
	"html"
	"math"
	"sort"
	"strings"

	"github.com/paulmach/orb"
	"github.com/paulmach/orb/geojson"

	"fieldsync/server/domain"
	"fieldsync/server/store"
)

// Maps are drawn as inline SVG in Web Mercator (so that an optional tile
// layer lines up): x, y are zoom-0 world pixels (0..256) shifted to the
// map's corner and scaled so the map is mapWidth units wide.

const mapWidth = 1000.0

func mercX(lon float64) float64 { return (lon + 180) / 360 * 256 }
func mercY(lat float64) float64 {
	lat = math.Max(-85.05112878, math.Min(85.05112878, lat))
	r := lat * math.Pi / 180
	return (1 - math.Log(math.Tan(r)+1/math.Cos(r))/math.Pi) / 2 * 256
}

// proj maps lon/lat to SVG units.
type proj struct {
	x0, y0, scale float64 // world-pixel origin and units per world pixel
	w, h          float64
}

func newProj(b orb.Bound) proj {
	if b.IsEmpty() || b.Max[0]-b.Min[0] < 1e-6 {
		b = b.Pad(0.002)
	}
	x0, x1 := mercX(b.Min[0]), mercX(b.Max[0])
	y0, y1 := mercY(b.Max[1]), mercY(b.Min[1])
	padX, padY := (x1-x0)*0.04, (y1-y0)*0.04
	x0, x1, y0, y1 = x0-padX, x1+padX, y0-padY, y1+padY
	scale := mapWidth / (x1 - x0)
	h := (y1 - y0) * scale
	if h > mapWidth*1.4 { // very tall: fit the height instead
		scale = mapWidth * 1.4 / (y1 - y0)
		h = mapWidth * 1.4
	}
	return proj{x0: x0, y0: y0, scale: scale, w: (x1 - x0) * scale, h: h}
}

func (p proj) xy(lon, lat float64) (float64, float64) {
	return (mercX(lon) - p.x0) * p.scale, (mercY(lat) - p.y0) * p.scale
}

// meters converts a distance at lat to SVG units.
func (p proj) meters(m, lat float64) float64 {
	return m * 256 / (40075016.686 * math.Cos(lat*math.Pi/180)) * p.scale
}

func f1(v float64) string { return fmt.Sprintf("%.1f", v) }

// pathD draws a polygon or multipolygon.
func (p proj) pathD(g orb.Geometry) string {
	var b strings.Builder
	ring := func(r orb.Ring) {
		for i, pt := range r {
			x, y := p.xy(pt[0], pt[1])
			if i == 0 {
				b.WriteString("M")
			} else {
				b.WriteString("L")
			}
			b.WriteString(f1(x) + "," + f1(y))
		}
		b.WriteString("Z")
	}
	switch g := g.(type) {
	case orb.Polygon:
		for _, r := range g {
			ring(r)
		}
	case orb.MultiPolygon:
		for _, poly := range g {
			for _, r := range poly {
				ring(r)
			}
		}
	}
	return b.String()
}

func boundary(pl domain.Place) orb.Geometry {
	if len(pl.Boundary) == 0 {
		return nil
	}
	g, err := geojson.UnmarshalGeometry(pl.Boundary)
	if err != nil {
		return nil
	}
	return g.Geometry()
}

var statusOrder = []string{store.MapNotVisited, store.MapVisited, store.MapNeedsRework, store.MapFlagged}

// mapDetailLimit bounds the households and visits a map draws one by one
// (about three elements each); with more, the map draws one bubble per
// place that holds households, so that the page stays under about 1,500
// elements whatever the size of the county. A villager group is drawn in
// detail.
const mapDetailLimit = 330

// mapDetailed tells whether a map of hs and vs draws every point.
func mapDetailed(hs []store.MapHousehold, vs []store.MapVisit) bool {
	n := len(vs)
	for _, h := range hs {
		if h.HasPoint {
			n++
		}
	}
	return n <= mapDetailLimit
}

// mapBubble is the households of one place, drawn as one circle.
type mapBubble struct {
	code, name string
	lon, lat   float64 // the mean of the points
	n          int
	counts     map[string]int
}

// worst is the bubble's colour: flagged, then needs rework, then visited
// when at least half are, else not visited.
func (b *mapBubble) worst() string {
	switch {
	case b.counts[store.MapFlagged] > 0:
		return store.MapFlagged
	case b.counts[store.MapNeedsRework] > 0:
		return store.MapNeedsRework
	case 2*b.counts[store.MapVisited] >= b.n:
		return store.MapVisited
	}
	return store.MapNotVisited
}

// bubbles groups the households with a point by their place, in place order.
func bubbles(places []domain.Place, hs []store.MapHousehold) []*mapBubble {
	by := map[string]*mapBubble{}
	for _, h := range hs {
		if !h.HasPoint {
			continue
		}
		b := by[h.PlaceCode]
		if b == nil {
			b = &mapBubble{code: h.PlaceCode, name: h.PlaceCode, counts: map[string]int{}}
			by[h.PlaceCode] = b
		}
		b.n++
		b.lon += h.Lon
		b.lat += h.Lat
		b.counts[h.Status]++
	}
	out := make([]*mapBubble, 0, len(by))
	for _, pl := range places {
		if b := by[pl.Code]; b != nil {
			b.name = pl.Name
			out = append(out, b)
			delete(by, pl.Code)
		}
	}
	rest := make([]string, 0, len(by))
	for code := range by {
		rest = append(rest, code)
	}
	sort.Strings(rest)
	for _, code := range rest {
		out = append(out, by[code])
	}
	for _, b := range out {
		b.lon /= float64(b.n)
		b.lat /= float64(b.n)
	}
	return out
}

// buildMap draws the places under root, the households coloured by status
// and the visits with their accuracy circles; with many households, one
// bubble per place instead (see mapDetailLimit).
func buildMap(places []domain.Place, hs []store.MapHousehold, vs []store.MapVisit, root string, v *view) string {
	b := orb.Bound{Min: orb.Point{math.Inf(1), math.Inf(1)}, Max: orb.Point{math.Inf(-1), math.Inf(-1)}}
	geoms := make([]orb.Geometry, len(places))
	for i, pl := range places {
		geoms[i] = boundary(pl)
		if geoms[i] != nil && (pl.Code == root || b.Min[0] == math.Inf(1)) {
			b = b.Union(geoms[i].Bound())
		}
	}
	for _, h := range hs {
		if h.HasPoint {
			b = b.Extend(orb.Point{h.Lon, h.Lat})
		}
	}
	if math.IsInf(b.Min[0], 0) {
		b = orb.Bound{Min: orb.Point{103.7, 25.0}, Max: orb.Point{103.8, 25.1}}
	}
	p := newProj(b)
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg id="map" class="map" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %s %s" data-x0="%g" data-y0="%g" data-scale="%g" role="img" aria-label="%s">`,
		f1(p.w), f1(p.h), p.x0, p.y0, p.scale, html.EscapeString(v.T("nav.map")))
	sb.WriteString(`<rect class="sea" x="-100000" y="-100000" width="200000" height="200000"/><g id="tiles"></g><g class="places">`)
	// Larger places first, so smaller ones draw on top.
	order := make([]int, len(places))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(i, j int) bool {
		return domain.LevelIndex(places[order[i]].Level) < domain.LevelIndex(places[order[j]].Level)
	})
	for _, i := range order {
		pl, g := places[i], geoms[i]
		if g == nil {
			continue
		}
		fmt.Fprintf(&sb, `<path class="pl lv-%s" d="%s" data-code="%s"><title>%s (%s)</title></path>`,
			html.EscapeString(pl.Level), p.pathD(g), html.EscapeString(pl.Code), html.EscapeString(pl.Name), html.EscapeString(v.Level(pl.Level)))
	}
	// Label the places one level below the root (the root itself when it
	// has none), so that names do not pile up.
	labelParent := root
	hasChildren := false
	for _, pl := range places {
		hasChildren = hasChildren || pl.ParentCode == root
	}
	sb.WriteString(`</g><g class="labels">`)
	for i, pl := range places {
		g := geoms[i]
		if g == nil || (hasChildren && pl.ParentCode != labelParent) || (!hasChildren && pl.Code != root) {
			continue
		}
		c := g.Bound().Center()
		x, y := p.xy(c[0], c[1])
		fmt.Fprintf(&sb, `<text class="lbl lv-%s" x="%s" y="%s">%s</text>`, html.EscapeString(pl.Level), f1(x), f1(y), html.EscapeString(pl.Name))
	}
	if !mapDetailed(hs, vs) {
		sb.WriteString(`</g><g class="bubbles">`)
		for _, bu := range bubbles(places, hs) {
			x, y := p.xy(bu.lon, bu.lat)
			r := 6 + 1.2*math.Sqrt(float64(bu.n))
			title := v.T("map.bubble", bu.name, bu.n, bu.counts[store.MapVisited], bu.counts[store.MapNeedsRework], bu.counts[store.MapFlagged])
			fmt.Fprintf(&sb, `<a href="%s/map?place=%s"><circle class="agg pt st-%s" cx="%s" cy="%s" r="%s" data-r="%s" data-code="%s" data-n="%d" data-flagged="%d" data-rework="%d" data-visited="%d"><title>%s</title></circle></a>`,
				Prefix, html.EscapeString(bu.code), bu.worst(), f1(x), f1(y), f1(r), f1(r), html.EscapeString(bu.code), bu.n,
				bu.counts[store.MapFlagged], bu.counts[store.MapNeedsRework], bu.counts[store.MapVisited], html.EscapeString(title))
		}
		sb.WriteString(`</g></svg>`)
		return sb.String()
	}
	sb.WriteString(`</g><g class="visits">`)
	for _, vi := range vs {
		x, y := p.xy(vi.Lon, vi.Lat)
		r := math.Max(p.meters(vi.AccuracyM, vi.Lat), 0.3)
		fmt.Fprintf(&sb, `<circle class="acc" cx="%s" cy="%s" r="%s" data-m="%g"><title>%s · ±%.0f m</title></circle><circle class="vp pt" cx="%s" cy="%s" r="1.6" data-r="1.6"/>`,
			f1(x), f1(y), f1(r), vi.AccuracyM, html.EscapeString(v.Time(vi.DeviceTime)), vi.AccuracyM, f1(x), f1(y))
	}
	sb.WriteString(`</g><g class="households">`)
	// Draw by status so the urgent ones end up on top.
	byStatus := map[string][]store.MapHousehold{}
	for _, h := range hs {
		if h.HasPoint {
			byStatus[h.Status] = append(byStatus[h.Status], h)
		}
	}
	for _, st := range statusOrder {
		for _, h := range byStatus[st] {
			x, y := p.xy(h.Lon, h.Lat)
			fmt.Fprintf(&sb, `<a href="%s/households/%s"><circle class="hh pt st-%s" cx="%s" cy="%s" r="4" data-r="4" data-id="%s"><title>%s · %s</title></circle></a>`,
				Prefix, html.EscapeString(h.ID), st, f1(x), f1(y), html.EscapeString(h.ID), html.EscapeString(h.HeadName), html.EscapeString(v.T("status."+st)))
		}
	}
	sb.WriteString(`</g></svg>`)
	return sb.String()
}

// miniMap draws a household's place, its location, the visit points with
// accuracy circles, and the EXIF points of their photos joined to the
// visit point.
type miniPoint struct {
	Lon, Lat, AccuracyM float64
	Label               string
}

type miniLink struct {
	From, To miniPoint
}

func buildMiniMap(place domain.Place, home *miniPoint, visits []miniPoint, exif []miniLink, v *view) string {
	g := boundary(place)
	b := orb.Bound{Min: orb.Point{math.Inf(1), math.Inf(1)}, Max: orb.Point{math.Inf(-1), math.Inf(-1)}}
	ext := func(lon, lat float64) { b = b.Extend(orb.Point{lon, lat}) }
	if home != nil {
		ext(home.Lon, home.Lat)
	}
	for _, vp := range visits {
		ext(vp.Lon, vp.Lat)
	}
	for _, l := range exif {
		ext(l.To.Lon, l.To.Lat)
	}
	switch {
	case !math.IsInf(b.Min[0], 0):
		// Frame the points with about 250 m around them; the place's
		// border shows where it comes near.
		b = b.Pad(0.0025)
	case g != nil:
		b = g.Bound()
	default:
		return ""
	}
	p := newProj(b)
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg class="minimap" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %s %s" role="img" aria-label="%s">`, f1(p.w), f1(p.h), html.EscapeString(v.T("hh.minimap")))
	if g != nil {
		fmt.Fprintf(&sb, `<path class="pl lv-%s" d="%s"><title>%s</title></path>`, html.EscapeString(place.Level), p.pathD(g), html.EscapeString(place.Name))
	}
	for _, l := range exif {
		x1, y1 := p.xy(l.From.Lon, l.From.Lat)
		x2, y2 := p.xy(l.To.Lon, l.To.Lat)
		fmt.Fprintf(&sb, `<line class="exifline" x1="%s" y1="%s" x2="%s" y2="%s"/><rect class="exif" x="%s" y="%s" width="20" height="20"><title>%s</title></rect>`,
			f1(x1), f1(y1), f1(x2), f1(y2), f1(x2-10), f1(y2-10), html.EscapeString(l.To.Label))
	}
	for _, vp := range visits {
		x, y := p.xy(vp.Lon, vp.Lat)
		fmt.Fprintf(&sb, `<circle class="acc" cx="%s" cy="%s" r="%s"/><circle class="vp" cx="%s" cy="%s" r="11"><title>%s</title></circle>`,
			f1(x), f1(y), f1(math.Max(p.meters(vp.AccuracyM, vp.Lat), 1)), f1(x), f1(y), html.EscapeString(vp.Label))
	}
	if home != nil {
		x, y := p.xy(home.Lon, home.Lat)
		fmt.Fprintf(&sb, `<circle class="home" cx="%s" cy="%s" r="22"><title>%s</title></circle>`, f1(x), f1(y), html.EscapeString(home.Label))
	}
	sb.WriteString(`</svg>`)
	return sb.String()
}

// pointOf reads a {lon,lat} JSON value.
func pointOf(raw json.RawMessage) (float64, float64, bool) {
	var pt struct{ Lon, Lat *float64 }
	if json.Unmarshal(raw, &pt) != nil || pt.Lon == nil || pt.Lat == nil {
		return 0, 0, false
	}
	return *pt.Lon, *pt.Lat, true
}
