package demo

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"fieldsync/server/evidence"
	"fieldsync/server/evidence/exifenc"
)

// Photo sizes of the demo's evidence: small, so that a -demo start stays
// fast, and large enough to look like a photo in the console.
const (
	PhotoWidth  = 320
	PhotoHeight = 240
)

// Picture kinds: what a demo photo shows.
const (
	// PictureScene is an outdoor photo: sky, hills, ground, a house or a
	// water cellar, trees.
	PictureScene = iota
	// PictureDocument is a photographed paper: a page with ruled lines, a
	// stamp, on a table.
	PictureDocument
)

// PhotoSpec describes one demo photo.
type PhotoSpec struct {
	Kind int
	Seed uint64
	// Quality is the JPEG quality (default 80).
	Quality int
	// Shade, when not 0, brightens (>0) or darkens (<0) the picture by
	// that many levels: with another Quality it makes a near-duplicate of
	// the same Seed (a re-encoded, retouched copy).
	Shade int
	// Taken and GPS, when set, are written to the EXIF block as
	// DateTimeOriginal with OffsetTimeOriginal and as the GPS position
	// ({lon, lat}), the way a phone camera writes them.
	Taken time.Time
	GPS   *[2]float64
}

// PhotoJPEG draws and encodes a demo photo. It is deterministic: the same
// spec gives the same bytes. No text is drawn (no fonts needed).
func PhotoJPEG(s PhotoSpec) ([]byte, error) {
	return encodePhoto(picture(s), s)
}

// picture draws the picture of a spec.
func picture(s PhotoSpec) *image.RGBA {
	var img *image.RGBA
	if s.Kind == PictureDocument {
		img = drawDocument(s.Seed, PhotoWidth, PhotoHeight)
	} else {
		img = drawScene(s.Seed, PhotoWidth, PhotoHeight)
	}
	light(img, s.Seed)
	if s.Shade != 0 {
		shade(img, s.Shade)
	}
	return img
}

// encodePhoto encodes img as a JPEG with the spec's quality and EXIF.
func encodePhoto(img image.Image, s PhotoSpec) ([]byte, error) {
	q := s.Quality
	if q <= 0 {
		q = 80
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: q}); err != nil {
		return nil, fmt.Errorf("demo photo: %w", err)
	}
	if s.Taken.IsZero() && s.GPS == nil {
		return buf.Bytes(), nil
	}
	out, err := exifenc.Splice(buf.Bytes(), exifenc.TIFF(exifenc.Tags{Taken: s.Taken, TakenOffset: !s.Taken.IsZero(), GPS: s.GPS}))
	if err != nil {
		return nil, fmt.Errorf("demo photo: %w", err)
	}
	return out, nil
}

// MinPhotoDistance is the smallest distance (evidence.UseDistance: whole
// pictures, their centred crops and their off-centre crops) between the
// perceptual hashes of two pictures of a PhotoSet: comfortably above the
// evidence checks' near-duplicate distance (8), so that two different demo
// photos are never taken for copies of each other.
const MinPhotoDistance = 12

//go:generate go test -run ^TestPhotoSeeds$ -update

// maxSeedsTried bounds the seeds a PhotoSet tries for one picture.
const maxSeedsTried = 1000

// PhotoSet hands out demo photos whose pictures all differ, as real
// photos of different houses do: a picture whose perceptual hashes
// (evidence.Hashes, every one the near-duplicate check compares) come
// within MinPhotoDistance of an earlier one's is skipped for the next
// seed. The hashes are bounded by the number of photos asked for.
//
// Hashing a picture with its sixteen off-centre crops costs several times
// drawing it, and the synthetic pictures often come near each other
// through those crops: screening tries some 4,500 seeds for the demo's
// 1,222 photos (20 s or more at every demo start, minutes under the
// race detector). So a set started at the demo's seed (listedStart) screens
// nothing while its committed list lasts: for each kind it hands out the
// next listed picture of that kind (listedPhotos, screened in the same
// way, scenes and documents in turn, every one against all earlier ones;
// photoseeds_test.go checks the list and makes it anew). Whatever order
// the kinds are asked in, no two listed pictures are near. Beyond the
// list, and for any other start, the set screens, against every listed
// picture too.
type PhotoSet struct {
	next   uint64
	hashes []evidence.Use
	// listed is the committed list if the set started at its seed, and
	// cursor the index in it from which each kind looks for its next
	// picture.
	listed []listedPhoto
	cursor map[int]int
	// screened counts the seeds hashed to pick pictures.
	screened int
}

// listedPhoto is a picture of the committed list (photoseeds.go): its
// kind, its seed, and its hashes as evidence.Hashes gives them (the whole
// picture's, then Use.Crops, then Use.Shifts).
type listedPhoto struct {
	Kind   int
	Seed   uint64
	Hashes []uint64
}

// use returns p's hashes as a Use, or false if their number does not fit
// the evidence package's crops (a list made before they changed).
func (p listedPhoto) use() (evidence.Use, bool) {
	nc, ns := len(evidence.CropFractions), len(evidence.ShiftCrops)
	if len(p.Hashes) != 1+nc+ns {
		return evidence.Use{}, false
	}
	h := p.Hashes[0]
	return evidence.Use{PHash: &h, Crops: p.Hashes[1 : 1+nc : 1+nc], Shifts: p.Hashes[1+nc:]}, true
}

// NewPhotoSet starts a set at a seed.
func NewPhotoSet(seed uint64) *PhotoSet { return newPhotoSet(seed, listedStart, listedPhotos) }

// newPhotoSet starts a set at seed that hands out list if it was
// screened from that seed (listStart) for the evidence package's crops.
func newPhotoSet(seed, listStart uint64, list []listedPhoto) *PhotoSet {
	ps := &PhotoSet{next: seed}
	stale := slices.ContainsFunc(list, func(p listedPhoto) bool {
		_, ok := p.use()
		return !ok
	})
	if seed == listStart && len(list) > 0 && !stale {
		ps.listed, ps.cursor = list, map[int]int{}
	}
	return ps
}

// Screened returns how many seeds the set has hashed to pick its
// pictures: 0 while a listed set hands out its committed list.
func (ps *PhotoSet) Screened() int { return ps.screened }

// New draws a new distinct picture of s.Kind (s.Seed is chosen by the
// set) and encodes it with s's EXIF. It returns the spec with its seed,
// which PhotoJPEG turns into the same picture again (with a Shade and
// another Quality: a near-duplicate).
func (ps *PhotoSet) New(s PhotoSpec) (PhotoSpec, []byte, error) {
	if ps.listed != nil {
		for i := ps.cursor[s.Kind]; i < len(ps.listed); i++ {
			if ps.listed[i].Kind == s.Kind {
				ps.cursor[s.Kind] = i + 1
				s.Seed = ps.listed[i].Seed
				b, err := encodePhoto(picture(s), s)
				return s, b, err
			}
		}
		ps.cursor[s.Kind] = len(ps.listed)
		// The list has no more pictures of this kind: screen from its
		// last seed on, against every listed picture (those not handed
		// out yet may still be).
		if ps.hashes == nil {
			ps.next = ps.listed[len(ps.listed)-1].Seed + 1
			ps.hashes = make([]evidence.Use, 0, len(ps.listed)+1)
			for _, p := range ps.listed {
				u, _ := p.use()
				ps.hashes = append(ps.hashes, u)
			}
		}
	}
	s, _, err := ps.screen(s)
	if err != nil {
		return s, nil, err
	}
	b, err := encodePhoto(picture(s), s)
	return s, b, err
}

// screen picks the next seed whose picture of s.Kind is at least
// MinPhotoDistance from every accepted one, and accepts it: it returns
// the spec with that seed and the picture's hashes.
func (ps *PhotoSet) screen(s PhotoSpec) (PhotoSpec, evidence.Use, error) {
	for range maxSeedsTried {
		s.Seed = ps.next
		ps.next++
		ps.screened++
		v, err := evidence.Hashes(picture(s))
		if err != nil {
			return s, evidence.Use{}, fmt.Errorf("demo photo: %w", err)
		}
		if slices.ContainsFunc(ps.hashes, func(o evidence.Use) bool {
			d, _ := evidence.UseDistance(o, v)
			return d < MinPhotoDistance
		}) {
			continue
		}
		ps.hashes = append(ps.hashes, v)
		return s, v, nil
	}
	return s, evidence.Use{}, fmt.Errorf("demo photo: no distinct picture after %d seeds", maxSeedsTried)
}

func rgb(r *rand.Rand, lo, hi int) color.RGBA {
	c := func() uint8 { return uint8(lo + r.IntN(hi-lo+1)) }
	return color.RGBA{c(), c(), c(), 255}
}

func fill(img *image.RGBA, rect image.Rectangle, c color.RGBA) {
	draw.Draw(img, rect, &image.Uniform{c}, image.Point{}, draw.Src)
}

// fillPoly fills a polygon (even-odd scanlines).
func fillPoly(img *image.RGBA, pts [][2]float64, c color.RGBA) {
	b := img.Bounds()
	minY, maxY := math.Inf(1), math.Inf(-1)
	for _, p := range pts {
		minY, maxY = math.Min(minY, p[1]), math.Max(maxY, p[1])
	}
	for y := max(b.Min.Y, int(minY)); y <= min(b.Max.Y-1, int(maxY)); y++ {
		fy := float64(y) + 0.5
		var xs []float64
		for i := range pts {
			a, e := pts[i], pts[(i+1)%len(pts)]
			if (a[1] <= fy) != (e[1] <= fy) {
				xs = append(xs, a[0]+(fy-a[1])/(e[1]-a[1])*(e[0]-a[0]))
			}
		}
		for i := 1; i < len(xs); i++ {
			for j := i; j > 0 && xs[j] < xs[j-1]; j-- {
				xs[j], xs[j-1] = xs[j-1], xs[j]
			}
		}
		for i := 0; i+1 < len(xs); i += 2 {
			x0, x1 := max(b.Min.X, int(xs[i])), min(b.Max.X, int(xs[i+1]))
			if x1 > x0 {
				fill(img, image.Rect(x0, y, x1, y+1), c)
			}
		}
	}
}

func fillDisc(img *image.RGBA, cx, cy, rad float64, c color.RGBA) {
	var pts [][2]float64
	for i := range 24 {
		a := float64(i) * 2 * math.Pi / 24
		pts = append(pts, [2]float64{cx + rad*math.Cos(a), cy + rad*math.Sin(a)})
	}
	fillPoly(img, pts, c)
}

// drawScene draws a house or a water cellar in a hilly landscape. Layout,
// colours, hill line and the sizes of everything come from the seed, so
// perceptual hashes of different seeds differ.
func drawScene(seed uint64, w, h int) *image.RGBA {
	r := rand.New(rand.NewPCG(seed, 0x7363656e65)) // "scene"
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	fw, fh := float64(w), float64(h)
	// Sky: a vertical gradient in bands.
	top, bottom := rgb(r, 60, 200), rgb(r, 120, 250)
	for i := range 8 {
		t := float64(i) / 7
		c := color.RGBA{uint8(float64(top.R) + t*float64(int(bottom.R)-int(top.R))), uint8(float64(top.G) + t*float64(int(bottom.G)-int(top.G))),
			uint8(float64(top.B) + t*float64(int(bottom.B)-int(top.B))), 255}
		fill(img, image.Rect(0, i*h/8, w, (i+1)*h/8), c)
	}
	// Hills: two ridges of random height and slope.
	for range 2 {
		y0, y1 := fh*(0.2+0.5*r.Float64()), fh*(0.2+0.5*r.Float64())
		mid := fh * (0.1 + 0.6*r.Float64())
		fillPoly(img, [][2]float64{{0, y0}, {fw * r.Float64(), mid}, {fw, y1}, {fw, fh}, {0, fh}}, rgb(r, 30, 150))
	}
	// Ground: a field at a random height.
	g := fh * (0.55 + 0.3*r.Float64())
	fill(img, image.Rect(0, int(g), w, h), rgb(r, 40, 180))
	// The subject: a house (walls, roof, door, window) or a round cellar.
	hw := fw * (0.25 + 0.35*r.Float64())
	hx := r.Float64() * (fw - hw)
	hh := hw * (0.5 + 0.4*r.Float64())
	if r.IntN(3) == 0 {
		fillPoly(img, [][2]float64{{hx, g}, {hx + hw, g}, {hx + hw*0.9, g + hh*0.4}, {hx + hw*0.1, g + hh*0.4}}, rgb(r, 90, 200))
		fillDisc(img, hx+hw/2, g, hw/2, rgb(r, 100, 220))
		fillDisc(img, hx+hw/2, g, hw/2.6, rgb(r, 10, 90))
	} else {
		wall := rgb(r, 120, 250)
		fill(img, image.Rect(int(hx), int(g-hh), int(hx+hw), int(g+fh*0.03)), wall)
		over := hw * 0.1
		fillPoly(img, [][2]float64{{hx - over, g - hh}, {hx + hw/2, g - hh - hw*(0.2+0.3*r.Float64())}, {hx + hw + over, g - hh}}, rgb(r, 20, 160))
		dx := hx + hw*(0.1+0.5*r.Float64())
		fill(img, image.Rect(int(dx), int(g-hh*0.55), int(dx+hw*0.18), int(g)), rgb(r, 20, 110))
		wx := hx + hw*(0.1+0.6*r.Float64())
		fill(img, image.Rect(int(wx), int(g-hh*0.85), int(wx+hw*0.2), int(g-hh*0.6)), rgb(r, 150, 255))
	}
	// Trees and a sun or moon.
	for range 1 + r.IntN(4) {
		tx, ty := r.Float64()*fw, g-fh*0.05+r.Float64()*fh*0.2
		fill(img, image.Rect(int(tx-3), int(ty), int(tx+3), int(ty+fh*0.12)), rgb(r, 40, 100))
		fillDisc(img, tx, ty, fh*(0.04+0.08*r.Float64()), rgb(r, 10, 120))
	}
	fillDisc(img, r.Float64()*fw, fh*0.15*r.Float64()+20, 12+r.Float64()*30, rgb(r, 200, 255))
	return img
}

// drawDocument draws a photographed paper: a pale sheet, slightly turned,
// on a table, with ruled lines, a filled-in block and a red stamp.
func drawDocument(seed uint64, w, h int) *image.RGBA {
	r := rand.New(rand.NewPCG(seed, 0x646f63)) // "doc"
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	fw, fh := float64(w), float64(h)
	// The table: two tones split at a random slant.
	fill(img, img.Bounds(), rgb(r, 40, 160))
	fillPoly(img, [][2]float64{{0, fh * r.Float64()}, {fw, fh * r.Float64()}, {fw, fh}, {0, fh}}, rgb(r, 40, 160))
	// The sheet: a quadrilateral, turned by a few degrees.
	cx, cy := fw*(0.35+0.3*r.Float64()), fh*(0.4+0.2*r.Float64())
	sw, sh := fw*(0.35+0.25*r.Float64()), fh*(0.55+0.3*r.Float64())
	a := (r.Float64() - 0.5) * 0.5
	rot := func(x, y float64) [2]float64 {
		return [2]float64{cx + x*math.Cos(a) - y*math.Sin(a), cy + x*math.Sin(a) + y*math.Cos(a)}
	}
	fillPoly(img, [][2]float64{rot(-sw/2, -sh/2), rot(sw/2, -sh/2), rot(sw/2, sh/2), rot(-sw/2, sh/2)}, rgb(r, 215, 255))
	// Ruled lines and a darker block (a photo or a table of figures).
	ink := rgb(r, 30, 110)
	for i := 1; i < 10; i++ {
		y := -sh/2 + sh*float64(i)/10
		x0, x1 := -sw/2+sw*0.08, sw/2-sw*(0.08+0.4*r.Float64())
		fillPoly(img, [][2]float64{rot(x0, y), rot(x1, y), rot(x1, y+2.5), rot(x0, y+2.5)}, ink)
	}
	bx, by := -sw/2+sw*(0.1+0.4*r.Float64()), -sh/2+sh*(0.1+0.5*r.Float64())
	bw, bh := sw*(0.2+0.2*r.Float64()), sh*(0.1+0.2*r.Float64())
	fillPoly(img, [][2]float64{rot(bx, by), rot(bx+bw, by), rot(bx+bw, by+bh), rot(bx, by+bh)}, rgb(r, 60, 200))
	// The stamp.
	p := rot(sw*(0.1+0.25*r.Float64()), sh*(0.15+0.25*r.Float64()))
	fillDisc(img, p[0], p[1], fh*0.07, color.RGBA{200, 30, 40, 255})
	fillDisc(img, p[0], p[1], fh*0.055, rgb(r, 215, 255))
	return img
}

// light lays a strong light falloff from a random direction over the
// picture, as the sun or a lamp would. It is the largest structure of the
// picture, and it differs between seeds, so their perceptual hashes do.
func light(img *image.RGBA, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0x6c69676874)) // "light"
	b := img.Bounds()
	a := r.Float64() * 2 * math.Pi
	dx, dy := math.Cos(a)/float64(b.Dx()), math.Sin(a)/float64(b.Dy())
	k := 0.45 + 0.4*r.Float64()
	cx, cy := float64(b.Dx())/2, float64(b.Dy())/2
	for y := b.Min.Y; y < b.Max.Y; y++ {
		i := img.PixOffset(b.Min.X, y)
		for x := b.Min.X; x < b.Max.X; x++ {
			t := (float64(x)-cx)*dx + (float64(y)-cy)*dy // about -0.7..0.7
			f := int(256 * (1 + k*t*1.4))
			for j := range 3 {
				img.Pix[i+j] = uint8(max(0, min(255, int(img.Pix[i+j])*f>>8)))
			}
			i += 4
		}
	}
}

// shade adds d to every colour channel, clamped.
func shade(img *image.RGBA, d int) {
	for i := 0; i < len(img.Pix); i += 4 {
		for j := range 3 {
			img.Pix[i+j] = uint8(max(0, min(255, int(img.Pix[i+j])+d)))
		}
	}
}
