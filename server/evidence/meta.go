// Package evidence reads what a piece of evidence says about itself (EXIF
// capture time and GPS, pixel size, a perceptual hash), makes thumbnails,
// and holds the checks that run when evidence or a visit arrives: photo
// far from the visit point, photo taken on another day, visit point
// outside its place, poor GPS accuracy, the same bytes or a near-identical
// photo attached to two households.
//
// Everything here is pure: functions take bytes or facts and return
// results, with no database and no HTTP. sqlstore gathers the facts and
// stores the flags; server/upload calls Analyze when a blob arrives.
package evidence

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // decoders for Analyze and Thumbnail
	_ "image/jpeg"
	_ "image/png"
	"io"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/corona10/goimagehash"
	"github.com/corona10/goimagehash/etcs"
	"github.com/corona10/goimagehash/transforms"
	"github.com/paulmach/orb"
	"github.com/rwcarlsen/goexif/exif"
	"github.com/rwcarlsen/goexif/tiff"
	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp" // WebP decoder
)

// exifWindow is how far into a file Analyze looks for EXIF (a JPEG's
// APP1 segment is at most 64 KiB and comes first).
const exifWindow = 256 << 10

// ErrNotImage is returned by Thumbnail for content that is not an image
// it can decode.
var ErrNotImage = errors.New("evidence: not a decodable image")

// Meta is what a blob says about itself.
type Meta struct {
	// MediaType is sniffed from the first bytes (http.DetectContentType);
	// "" when it is only application/octet-stream.
	MediaType string
	// Width and Height are the stored pixel dimensions (0 if not an image).
	Width, Height int
	// Orientation is the EXIF orientation (1..8), 0 if absent.
	Orientation int
	// Taken is the capture time from EXIF; zero if absent.
	Taken CaptureTime
	// GPS is the EXIF position; nil if absent or invalid.
	GPS *orb.Point
	// PHash is the 64-bit perceptual hash; nil if not computed (not an
	// image, or too big to decode: see decode).
	PHash *uint64
	// CropHashes are the perceptual hashes of the picture's centred
	// crops, one per CropFractions entry (empty when PHash is nil): a
	// reused photo cropped by up to about 20% hashes near one of them.
	CropHashes []uint64
	// ShiftHashes are the perceptual hashes of the picture's off-centre
	// crops, one per ShiftCrops entry (empty when PHash is nil): a reused
	// photo cropped by up to 10% on one side or at a corner hashes near
	// one of them, or its own hashes near one of the original's.
	ShiftHashes []uint64
}

// IsZero reports whether m holds nothing (the blob was not analysed).
func (m Meta) IsZero() bool {
	return m.MediaType == "" && m.Width == 0 && m.Height == 0 && m.Orientation == 0 &&
		m.Taken == (CaptureTime{}) && m.GPS == nil && m.PHash == nil && len(m.CropHashes) == 0 && len(m.ShiftHashes) == 0
}

// CropFractions are the sides, as fractions of the picture's, of the
// centred crops whose hashes Meta.CropHashes holds. Their order is
// stored (variant 1, 2, ...): append, never reorder.
var CropFractions = [...]float64{0.9, 0.8}

// Shift is an off-centre crop whose hash Meta.ShiftHashes holds: the part
// [X0,X1]×[Y0,Y1] of the picture (fractions of its sides), compared with
// the other photo's hash of variant Against (0: its whole picture, i: its
// centred crop CropFractions[i-1]).
type Shift struct {
	X0, Y0, X1, Y1 float64
	Against        int
}

// ShiftCrops are the off-centre crops whose hashes Meta.ShiftHashes
// holds, in stored order (variants len(CropFractions)+1, ...): append,
// never reorder.
//
// A photo cropped by up to 10% off centre is found both ways. If b is such
// a crop of a, the 90% crop of a at b's place (anchored at a corner or a
// side, or centred) hashes near b's whole picture: the first eight. And b
// holds, where a's centred 80% crop lies in it under the same
// assumption, a part that hashes near a's 80% crop: the last eight. The
// first kind finds a stored crop of a new photo, the second a stored
// original of a new crop, both through the hashes the near-duplicate
// index already holds (whole pictures and centred crops), so the index
// does not grow.
var ShiftCrops = shiftCrops()

func shiftCrops() []Shift {
	type span struct{ lo, hi float64 }
	// Per axis: the 90% crop kept at the start, in the middle, at the end.
	outer := [3]span{{0, .9}, {.05, .95}, {.1, 1}}
	// Per axis: where the original's centred 80% ([.1, .9]) lies in a
	// 90% crop of it kept at the end, in the middle, at the start.
	inner := [3]span{{.1 / .9, 1}, {.05 / .9, .85 / .9}, {0, .8 / .9}}
	var out []Shift
	for _, k := range []struct {
		sp      [3]span
		against int
	}{{outer, 0}, {inner, 2}} {
		for y := range 3 {
			for x := range 3 {
				if x == 1 && y == 1 {
					continue // centred: the centred crops cover it
				}
				out = append(out, Shift{k.sp[x].lo, k.sp[y].lo, k.sp[x].hi, k.sp[y].hi, k.against})
			}
		}
	}
	return out
}

// CaptureTime is when a photo was taken, as EXIF tells it. Cameras record
// wall-clock time, often without saying which zone: such a time is
// Floating, and is compared with the visit day on the wall clock.
type CaptureTime struct {
	// Time is the instant, when Floating is false; when Floating is true
	// only its wall-clock fields count (and its location is UTC).
	Time     time.Time
	Floating bool
}

// IsZero reports whether there is no capture time.
func (c CaptureTime) IsZero() bool { return c.Time.IsZero() }

const floatingLayout = "2006-01-02T15:04:05"

// String encodes the capture time for storage: RFC 3339 with an offset, or
// "2006-01-02T15:04:05" for a floating time, or "" for none.
func (c CaptureTime) String() string {
	switch {
	case c.IsZero():
		return ""
	case c.Floating:
		return c.Time.Format(floatingLayout)
	}
	return c.Time.Format(time.RFC3339)
}

// ParseCaptureTime reads what String wrote.
func ParseCaptureTime(s string) (CaptureTime, error) {
	if s == "" {
		return CaptureTime{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return CaptureTime{Time: t}, nil
	}
	t, err := time.Parse(floatingLayout, s)
	if err != nil {
		return CaptureTime{}, fmt.Errorf("evidence: capture time %q: %w", s, err)
	}
	return CaptureTime{Time: t, Floating: true}, nil
}

// Sniff returns the media type that the first bytes of a blob (up to 512)
// show, by http.DetectContentType, or "" when they show nothing more
// specific than application/octet-stream.
func Sniff(head []byte) string {
	if mt := http.DetectContentType(head); mt != "application/octet-stream" {
		return mt
	}
	return ""
}

// Analyze reads a blob's metadata from r (size bytes). It never fails on
// content it cannot understand: unknown formats, broken EXIF or images too
// big to decode give a Meta with fewer fields. Only read errors are
// returned.
func Analyze(r io.ReaderAt, size int64) (Meta, error) {
	var m Meta
	head := make([]byte, min(size, 512))
	if _, err := r.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
		return m, fmt.Errorf("evidence: read: %w", err)
	}
	m.MediaType = Sniff(head)
	if !strings.HasPrefix(m.MediaType, "image/") {
		return m, nil
	}
	win := make([]byte, min(size, exifWindow))
	if n, err := r.ReadAt(win, 0); err != nil && !errors.Is(err, io.EOF) {
		return m, fmt.Errorf("evidence: read: %w", err)
	} else {
		win = win[:n]
	}
	readEXIF(win, &m)
	cfg, format, err := image.DecodeConfig(io.NewSectionReader(r, 0, size))
	if err != nil {
		return m, nil // not an image we can decode; keep what we have
	}
	m.Width, m.Height = cfg.Width, cfg.Height
	img, err := decode(context.Background(), r, size, cfg, format)
	if err != nil {
		return m, nil
	}
	if h, err := goimagehash.PerceptionHash(img); err == nil {
		v := h.GetHash()
		m.PHash = &v
		m.CropHashes = cropHashes(img)
		m.ShiftHashes = shiftHashes(img)
	}
	return m, nil
}

// Hashes returns the perceptual hashes Analyze gives a decoded picture:
// the whole picture's and its centred crops' (see Meta.CropHashes), as a
// Use for UseDistance.
func Hashes(img image.Image) (Use, error) {
	h, err := goimagehash.PerceptionHash(img)
	if err != nil {
		return Use{}, fmt.Errorf("evidence: hash: %w", err)
	}
	v := h.GetHash()
	return Use{PHash: &v, Crops: cropHashes(img), Shifts: shiftHashes(img)}, nil
}

// cropHashes hashes img's centred crops (CropFractions), or returns nil
// if one fails.
func cropHashes(img image.Image) []uint64 {
	sub, ok := img.(interface {
		SubImage(image.Rectangle) image.Image
	})
	if !ok {
		return nil
	}
	b := img.Bounds()
	out := make([]uint64, 0, len(CropFractions))
	for _, f := range CropFractions {
		w, h := int(float64(b.Dx())*f), int(float64(b.Dy())*f)
		if w < 8 || h < 8 {
			return nil
		}
		x0, y0 := b.Min.X+(b.Dx()-w)/2, b.Min.Y+(b.Dy()-h)/2
		hh, err := goimagehash.PerceptionHash(sub.SubImage(image.Rect(x0, y0, x0+w, y0+h)))
		if err != nil {
			return nil
		}
		out = append(out, hh.GetHash())
	}
	return out
}

// shiftHashes hashes img's off-centre crops (ShiftCrops), or returns nil
// if one fails. It gives the hashes goimagehash.PerceptionHash gives for
// each crop of the shrunk copy box-filtered to its 64×64 (areaScale), and
// computes them the way it does (grey levels, 64×64 DCT, the 8×8 lowest
// frequencies above their median), but from a summed-area table of the
// copy, straight into grey levels, and with the DCT of only the eight
// columns it keeps: handed over as pictures, sixteen crops cost five
// times the rest of a photo's analysis (resizing goroutines, kernel
// weights, per-pixel colour conversion; the demo county took 48 s to
// start instead of 10), box-filtered they still cost twice it.
// TestShiftHashes_SameAsPerceptionHash checks the two give the same bits.
func shiftHashes(img image.Image) []uint64 {
	src := shrink(img, shiftSide)
	b := src.Bounds()
	at := func(lo int, f float64, n int) int { return lo + int(math.Round(f*float64(n))) }
	out := make([]uint64, 0, len(ShiftCrops))
	sums := newBoxSums(src)
	pixels := make([]float64, hashSide*hashSide)
	for _, c := range ShiftCrops {
		r := image.Rect(at(b.Min.X, c.X0, b.Dx()), at(b.Min.Y, c.Y0, b.Dy()), at(b.Min.X, c.X1, b.Dx()), at(b.Min.Y, c.Y1, b.Dy()))
		if r.Dx() < 8 || r.Dy() < 8 {
			return nil
		}
		sums.grey(pixels, r)
		out = append(out, phash64(pixels))
	}
	return out
}

// boxSums is a summed-area table of an RGBA picture's red, green and blue:
// s[3*(y*(w+1)+x)+c] is the sum of channel c over the pixels left of x and
// above y (relative to the picture's corner).
type boxSums struct {
	min  image.Point
	w, h int
	s    []uint32
}

func newBoxSums(img *image.RGBA) *boxSums {
	b := img.Rect
	w, h := b.Dx(), b.Dy()
	t := &boxSums{min: b.Min, w: w, h: h, s: make([]uint32, 3*(w+1)*(h+1))}
	for y := range h {
		row := img.Pix[img.PixOffset(b.Min.X, b.Min.Y+y):]
		above := t.s[3*y*(w+1) : 3*(y+1)*(w+1)]
		here := t.s[3*(y+1)*(w+1) : 3*(y+2)*(w+1)]
		var r, g, bl uint32
		for x := range w {
			p := row[4*x : 4*x+3 : 4*x+3]
			r, g, bl = r+uint32(p[0]), g+uint32(p[1]), bl+uint32(p[2])
			k := 3 * (x + 1)
			here[k], here[k+1], here[k+2] = above[k]+r, above[k+1]+g, above[k+2]+bl
		}
	}
	return t
}

// grey fills pixels (hashSide×hashSide, row by row) with the grey levels
// goimagehash reads from the rectangle r of the picture scaled to
// hashSide×hashSide by areaScale: each channel the truncated mean of the
// pixels a cell covers, then 0.299 R + 0.587 G + 0.114 B.
func (t *boxSums) grey(pixels []float64, r image.Rectangle) {
	r = r.Sub(t.min).Intersect(image.Rect(0, 0, t.w, t.h))
	rw, rh := r.Dx(), r.Dy()
	if rw == 0 || rh == 0 {
		clear(pixels)
		return
	}
	var xs [hashSide + 1]int // cell x's columns are [xs[x], xe[x])
	var xe [hashSide]int
	for x := range hashSide {
		xs[x] = r.Min.X + x*rw/hashSide
		xe[x] = max(xs[x]+1, r.Min.X+(x+1)*rw/hashSide)
	}
	stride := 3 * (t.w + 1)
	for y := range hashSide {
		y0 := r.Min.Y + y*rh/hashSide
		y1 := max(y0+1, r.Min.Y+(y+1)*rh/hashSide)
		top, bottom := t.s[y0*stride:(y0+1)*stride], t.s[y1*stride:(y1+1)*stride]
		for x := range hashSide {
			a, e := 3*xs[x], 3*xe[x]
			n := uint32((xe[x] - xs[x]) * (y1 - y0))
			cr := (bottom[e] - bottom[a] - top[e] + top[a]) / n
			cg := (bottom[e+1] - bottom[a+1] - top[e+1] + top[a+1]) / n
			cb := (bottom[e+2] - bottom[a+2] - top[e+2] + top[a+2]) / n
			pixels[y*hashSide+x] = 0.299*float64(cr) + 0.587*float64(cg) + 0.114*float64(cb)
		}
	}
}

// phash64 is goimagehash.PerceptionHash's hash of a hashSide×hashSide
// picture of grey levels (pixels, which it overwrites): the same DCT, but
// only of the eight columns whose lowest eight frequencies it keeps.
func phash64(pixels []float64) uint64 {
	for i := range hashSide {
		transforms.DCT1DFast64(pixels[i*hashSide : (i+1)*hashSide])
	}
	var col [hashSide]float64
	for i := range 8 {
		for j := range hashSide {
			col[j] = pixels[i+j*hashSide]
		}
		transforms.DCT1DFast64(col[:])
		for j := range hashSide {
			pixels[i+j*hashSide] = col[j]
		}
	}
	flat := transforms.FlattenPixelsFast64(pixels, 8, 8)
	median := etcs.MedianOfPixelsFast64(flat)
	var h uint64
	for i, p := range flat {
		if p > median {
			h |= 1 << uint(64-i-1)
		}
	}
	return h
}

// hashSide is the side of the picture goimagehash's perceptual hash
// takes its DCT of.
const hashSide = 64

// shiftSide is the shorter side of the copy that shiftHashes crops: the
// hash looks at 64×64 pixels anyway, and sixteen hashes of a 1000-pixel
// decode took 108 ms a photo against 25 ms for the rest of the analysis
// (34 ms in all from this copy; the same recall).
const shiftSide = 128

// shrink returns an RGBA copy of img whose shorter side is side pixels
// (each pixel the mean of those it covers), or img as RGBA if it is not
// larger.
func shrink(img image.Image, side int) *image.RGBA {
	b := img.Bounds()
	short := min(b.Dx(), b.Dy())
	src, ok := img.(*image.RGBA)
	if !ok {
		if short <= side {
			src = image.NewRGBA(b)
			draw.Draw(src, b, img, b.Min, draw.Src)
			return src
		}
		dst := image.NewRGBA(image.Rect(0, 0, b.Dx()*side/short, b.Dy()*side/short))
		draw.BiLinear.Scale(dst, dst.Bounds(), img, b, draw.Src, nil)
		return dst
	}
	if short <= side {
		return src
	}
	dst := image.NewRGBA(image.Rect(0, 0, b.Dx()*side/short, b.Dy()*side/short))
	areaScale(dst, src, b)
	return dst
}

// areaScale fills dst with the rectangle r of src scaled to dst's size:
// each pixel of dst is the mean of the pixels of r it covers (a box
// filter; a pixel that covers less than one source pixel takes the
// nearest).
func areaScale(dst, src *image.RGBA, r image.Rectangle) {
	r = r.Intersect(src.Rect)
	dw, dh, rw, rh := dst.Rect.Dx(), dst.Rect.Dy(), r.Dx(), r.Dy()
	if dw == 0 || dh == 0 || rw == 0 || rh == 0 {
		return
	}
	for y := range dh {
		y0 := r.Min.Y + y*rh/dh
		y1 := max(y0+1, r.Min.Y+(y+1)*rh/dh)
		for x := range dw {
			x0 := r.Min.X + x*rw/dw
			x1 := max(x0+1, r.Min.X+(x+1)*rw/dw)
			var sr, sg, sb, sa, n uint32
			for yy := y0; yy < y1; yy++ {
				i := src.PixOffset(x0, yy)
				for range x1 - x0 {
					p := src.Pix[i : i+4 : i+4]
					sr, sg, sb, sa = sr+uint32(p[0]), sg+uint32(p[1]), sb+uint32(p[2]), sa+uint32(p[3])
					i += 4
				}
				n += uint32(x1 - x0)
			}
			o := dst.PixOffset(dst.Rect.Min.X+x, dst.Rect.Min.Y+y)
			dst.Pix[o], dst.Pix[o+1], dst.Pix[o+2], dst.Pix[o+3] = uint8(sr/n), uint8(sg/n), uint8(sb/n), uint8(sa/n)
		}
	}
}

// Tags goexif does not name; read from the EXIF sub-IFD by number.
const (
	tagOffsetTimeOriginal exif.FieldName = "OffsetTimeOriginal" // 0x9011
	tagOffsetTime         exif.FieldName = "OffsetTime"         // 0x9010
)

// readEXIF fills m from the EXIF block of the JPEG whose first bytes are
// head, ignoring anything malformed. goexif is not hardened against
// hostile input: the IFD chain is checked first (goexif loops forever on
// a cycle of two), and panics are contained.
func readEXIF(head []byte, m *Meta) {
	defer func() { _ = recover() }()
	tb := jpegEXIF(head)
	if tb == nil || !tiffChainOK(tb) {
		return
	}
	x, err := exif.Decode(io.MultiReader(strings.NewReader("Exif\x00\x00"), bytes.NewReader(tb)))
	if x == nil || (err != nil && exif.IsCriticalError(err)) {
		return
	}
	loadOffsetTags(x)
	if tag, err := x.Get(exif.Orientation); err == nil {
		if v, err := tag.Int(0); err == nil && v >= 1 && v <= 8 {
			m.Orientation = v
		}
	}
	if lat, lon, err := x.LatLong(); err == nil {
		p := orb.Point{lon, lat}
		if validPoint(p) && !(lat == 0 && lon == 0) {
			m.GPS = &p
		}
	}
	m.Taken = captureTime(x)
}

// jpegEXIF returns the TIFF structure inside the first APP1 "Exif"
// segment of a JPEG, or nil. It stops at the start of the image data.
func jpegEXIF(b []byte) []byte {
	if len(b) < 4 || b[0] != 0xFF || b[1] != 0xD8 {
		return nil
	}
	i := 2
	for i+4 <= len(b) {
		if b[i] != 0xFF {
			return nil
		}
		m := b[i+1]
		switch {
		case m == 0xFF: // fill byte
			i++
			continue
		case m == 0xD9 || m == 0xDA: // end of image, start of scan
			return nil
		case m == 0x01 || (m >= 0xD0 && m <= 0xD7): // markers without a length
			i += 2
			continue
		}
		n := int(b[i+2])<<8 | int(b[i+3])
		if n < 2 || i+2+n > len(b) {
			return nil
		}
		seg := b[i+4 : i+2+n]
		if m == 0xE1 && len(seg) >= 6 && string(seg[:6]) == "Exif\x00\x00" {
			return seg[6:]
		}
		i += 2 + n
	}
	return nil
}

// tiffChainOK checks that a TIFF header is sound and its chain of IFDs is
// short, in bounds and free of cycles.
func tiffChainOK(t []byte) bool {
	if len(t) < 8 {
		return false
	}
	var order binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		order = binary.LittleEndian
	case "MM":
		order = binary.BigEndian
	default:
		return false
	}
	if order.Uint16(t[2:4]) != 42 {
		return false
	}
	seen := map[uint32]bool{}
	for off := order.Uint32(t[4:8]); off != 0; {
		if len(seen) >= 4 || seen[off] || off > math.MaxInt32 || int64(off)+2 > int64(len(t)) {
			return false
		}
		seen[off] = true
		next := int64(off) + 2 + 12*int64(order.Uint16(t[off:]))
		if next+4 > int64(len(t)) {
			return false
		}
		off = order.Uint32(t[next:])
	}
	return true
}

func validPoint(p orb.Point) bool {
	return !math.IsNaN(p[0]) && !math.IsNaN(p[1]) && !math.IsInf(p[0], 0) && !math.IsInf(p[1], 0) &&
		p[0] >= -180 && p[0] <= 180 && p[1] >= -90 && p[1] <= 90
}

// loadOffsetTags reads OffsetTimeOriginal and OffsetTime (EXIF 2.31) from
// the EXIF sub-IFD, which goexif leaves out.
func loadOffsetTags(x *exif.Exif) {
	ptr, err := x.Get(exif.ExifIFDPointer)
	if err != nil {
		return
	}
	off, err := ptr.Int64(0)
	if err != nil || off <= 0 || off >= int64(len(x.Raw)) {
		return
	}
	rd := bytes.NewReader(x.Raw)
	if _, err := rd.Seek(off, io.SeekStart); err != nil {
		return
	}
	dir, _, err := tiff.DecodeDir(rd, x.Tiff.Order)
	if err != nil {
		return
	}
	x.LoadTags(dir, map[uint16]exif.FieldName{0x9011: tagOffsetTimeOriginal, 0x9010: tagOffsetTime}, false)
}

func stringTag(x *exif.Exif, name exif.FieldName) string {
	tag, err := x.Get(name)
	if err != nil || tag.Format() != tiff.StringVal {
		return ""
	}
	s, err := tag.StringVal()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.TrimRight(s, "\x00"))
}

// parseOffset reads "+08:00" / "-05:30"; ok false for anything else.
func parseOffset(s string) (int, bool) {
	if len(s) != 6 || (s[0] != '+' && s[0] != '-') || s[3] != ':' {
		return 0, false
	}
	t, err := time.Parse("15:04", s[1:])
	if err != nil {
		return 0, false
	}
	secs := t.Hour()*3600 + t.Minute()*60
	if secs > 14*3600 {
		return 0, false
	}
	if s[0] == '-' {
		secs = -secs
	}
	return secs, true
}

const exifLayout = "2006:01:02 15:04:05"

// captureTime picks the best capture time the EXIF offers:
// DateTimeOriginal with OffsetTimeOriginal (an instant), else the GPS
// date and time (UTC, an instant), else DateTimeOriginal or DateTime on
// its own (floating wall-clock time).
func captureTime(x *exif.Exif) CaptureTime {
	wall := stringTag(x, exif.DateTimeOriginal)
	offs := stringTag(x, tagOffsetTimeOriginal)
	if wall == "" {
		wall = stringTag(x, exif.DateTime)
		offs = stringTag(x, tagOffsetTime)
	}
	var wt time.Time
	if wall != "" {
		if t, err := time.Parse(exifLayout, wall); err == nil && t.Year() >= 1990 {
			wt = t
		}
	}
	if !wt.IsZero() {
		if secs, ok := parseOffset(offs); ok {
			return CaptureTime{Time: time.Date(wt.Year(), wt.Month(), wt.Day(), wt.Hour(), wt.Minute(), wt.Second(), 0, time.FixedZone("", secs))}
		}
	}
	if t, ok := gpsTime(x); ok {
		return CaptureTime{Time: t}
	}
	if !wt.IsZero() {
		return CaptureTime{Time: wt, Floating: true}
	}
	return CaptureTime{}
}

// gpsTime reads GPSDateStamp ("2006:01:02") and GPSTimeStamp (three
// rationals, UTC).
func gpsTime(x *exif.Exif) (time.Time, bool) {
	ds := stringTag(x, exif.GPSDateStamp)
	if ds == "" {
		return time.Time{}, false
	}
	d, err := time.Parse("2006:01:02", ds)
	if err != nil || d.Year() < 1990 {
		return time.Time{}, false
	}
	tag, err := x.Get(exif.GPSTimeStamp)
	if err != nil || tag.Count < 3 {
		return time.Time{}, false
	}
	var hms [3]float64
	for i := range hms {
		n, dd, err := tag.Rat2(i)
		if err != nil || dd == 0 {
			return time.Time{}, false
		}
		hms[i] = float64(n) / float64(dd)
	}
	if hms[0] < 0 || hms[0] >= 24 || hms[1] < 0 || hms[1] >= 60 || hms[2] < 0 || hms[2] >= 61 {
		return time.Time{}, false
	}
	secs := hms[0]*3600 + hms[1]*60 + hms[2]
	return d.Add(time.Duration(secs * float64(time.Second))).UTC(), true
}
