// Package evidencetest makes evidence fixtures for tests: JPEG photos with
// a hand-built EXIF block (capture time and offset, GPS position and time,
// orientation), and deterministic pictures whose perceptual hashes differ
// when their seeds do.
package evidencetest

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/color"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"sort"
	"time"
)

// Photo describes a fixture photo.
type Photo struct {
	// Seed picks the picture; photos with the same seed look alike.
	Seed uint64
	// Width and Height default to 320×240.
	Width, Height int
	// Quality is the JPEG quality (default 85).
	Quality int
	// Taken, if set, is written as DateTimeOriginal (wall clock in
	// Taken's location); with TakenOffset also as OffsetTimeOriginal.
	Taken       time.Time
	TakenOffset bool
	// GPSTime, if set, is written as GPSDateStamp/GPSTimeStamp (UTC).
	GPSTime time.Time
	// GPS, if set, is the position {lon, lat}.
	GPS *[2]float64
	// Orientation, if 1..8, is written as the EXIF orientation.
	Orientation int
	// NoEXIF leaves the EXIF block out altogether.
	NoEXIF bool
}

// CentredCrop encodes the photo's picture cut down to the fraction f of
// each side around its centre (a reused photo, cropped), with p's EXIF.
func CentredCrop(p Photo, f float64) []byte {
	if p.Width <= 0 {
		p.Width = 320
	}
	if p.Height <= 0 {
		p.Height = 240
	}
	if p.Quality <= 0 {
		p.Quality = 85
	}
	w, h := int(float64(p.Width)*f), int(float64(p.Height)*f)
	x0, y0 := (p.Width-w)/2, (p.Height-h)/2
	pic := Picture(p.Seed, p.Width, p.Height).(*image.RGBA).SubImage(image.Rect(x0, y0, x0+w, y0+h))
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, pic, &jpeg.Options{Quality: p.Quality}); err != nil {
		panic(err)
	}
	if p.NoEXIF {
		return buf.Bytes()
	}
	return SpliceEXIF(buf.Bytes(), EXIF(p))
}

// JPEG encodes the photo, with its EXIF block spliced in after SOI.
func JPEG(p Photo) []byte {
	if p.Width <= 0 {
		p.Width = 320
	}
	if p.Height <= 0 {
		p.Height = 240
	}
	if p.Quality <= 0 {
		p.Quality = 85
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, Picture(p.Seed, p.Width, p.Height), &jpeg.Options{Quality: p.Quality}); err != nil {
		panic(err)
	}
	if p.NoEXIF {
		return buf.Bytes()
	}
	return SpliceEXIF(buf.Bytes(), EXIF(p))
}

// Picture draws a deterministic picture: a gradient with a few large
// shapes, all chosen by seed. Low-frequency structure differs between
// seeds, so perceptual hashes do too.
func Picture(seed uint64, w, h int) image.Image {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	c0 := [3]float64{r.Float64() * 255, r.Float64() * 255, r.Float64() * 255}
	c1 := [3]float64{r.Float64() * 255, r.Float64() * 255, r.Float64() * 255}
	angle := r.Float64() * 2 * math.Pi
	dx, dy := math.Cos(angle), math.Sin(angle)
	type disc struct {
		x, y, rad float64
		c         color.RGBA
	}
	var discs []disc
	for range 6 {
		discs = append(discs, disc{
			x: r.Float64() * float64(w), y: r.Float64() * float64(h),
			rad: (0.1 + 0.25*r.Float64()) * float64(min(w, h)),
			c:   color.RGBA{uint8(r.IntN(256)), uint8(r.IntN(256)), uint8(r.IntN(256)), 255},
		})
	}
	for y := range h {
		for x := range w {
			t := (float64(x)/float64(w)-0.5)*dx + (float64(y)/float64(h)-0.5)*dy + 0.5
			t = math.Max(0, math.Min(1, t))
			c := color.RGBA{uint8(c0[0] + (c1[0]-c0[0])*t), uint8(c0[1] + (c1[1]-c0[1])*t), uint8(c0[2] + (c1[2]-c0[2])*t), 255}
			for _, d := range discs {
				if (float64(x)-d.x)*(float64(x)-d.x)+(float64(y)-d.y)*(float64(y)-d.y) < d.rad*d.rad {
					c = d.c
				}
			}
			img.SetRGBA(x, y, c)
		}
	}
	return img
}

// SpliceEXIF inserts an APP1 "Exif" segment holding tiff right after the
// JPEG's SOI marker.
func SpliceEXIF(jpg, tiff []byte) []byte {
	if len(jpg) < 2 || jpg[0] != 0xFF || jpg[1] != 0xD8 {
		panic("evidencetest: not a JPEG")
	}
	payload := append([]byte("Exif\x00\x00"), tiff...)
	if len(payload)+2 > 0xFFFF {
		panic("evidencetest: EXIF too big")
	}
	var out bytes.Buffer
	out.Write(jpg[:2])
	out.Write([]byte{0xFF, 0xE1})
	_ = binary.Write(&out, binary.BigEndian, uint16(len(payload)+2))
	out.Write(payload)
	out.Write(jpg[2:])
	return out.Bytes()
}

// TIFF field types.
const (
	typeASCII    = 2
	typeShort    = 3
	typeLong     = 4
	typeRational = 5
)

type entry struct {
	tag, typ uint16
	count    uint32
	data     []byte // little-endian value bytes
	// ptr, if set, makes this a LONG pointer to the named IFD.
	ptr string
}

type ifd struct {
	name    string
	entries []entry
}

func ascii(tag uint16, s string) entry {
	return entry{tag: tag, typ: typeASCII, count: uint32(len(s) + 1), data: append([]byte(s), 0)}
}

func short(tag uint16, v uint16) entry {
	return entry{tag: tag, typ: typeShort, count: 1, data: binary.LittleEndian.AppendUint16(nil, v)}
}

func rationals(tag uint16, vs ...[2]uint32) entry {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, v[0])
		b = binary.LittleEndian.AppendUint32(b, v[1])
	}
	return entry{tag: tag, typ: typeRational, count: uint32(len(vs)), data: b}
}

// dms turns decimal degrees into degrees, minutes and seconds rationals.
func dms(deg float64) [][2]uint32 {
	deg = math.Abs(deg)
	d := math.Floor(deg)
	m := math.Floor((deg - d) * 60)
	s := ((deg-d)*60 - m) * 60
	return [][2]uint32{{uint32(d), 1}, {uint32(m), 1}, {uint32(math.Round(s * 10000)), 10000}}
}

// EXIF builds the TIFF structure of the photo's EXIF block (little
// endian): IFD0 with orientation and pointers to the EXIF and GPS IFDs.
func EXIF(p Photo) []byte {
	ifd0 := ifd{name: "0"}
	exifIFD := ifd{name: "exif"}
	gps := ifd{name: "gps"}
	if p.Orientation >= 1 && p.Orientation <= 8 {
		ifd0.entries = append(ifd0.entries, short(0x0112, uint16(p.Orientation)))
	}
	if !p.Taken.IsZero() {
		exifIFD.entries = append(exifIFD.entries, ascii(0x9003, p.Taken.Format("2006:01:02 15:04:05")))
		if p.TakenOffset {
			exifIFD.entries = append(exifIFD.entries, ascii(0x9011, p.Taken.Format("-07:00")))
		}
	}
	if p.GPS != nil {
		lon, lat := p.GPS[0], p.GPS[1]
		ns, ew := "N", "E"
		if lat < 0 {
			ns = "S"
		}
		if lon < 0 {
			ew = "W"
		}
		gps.entries = append(gps.entries,
			ascii(0x1, ns), rationals(0x2, dms(lat)...),
			ascii(0x3, ew), rationals(0x4, dms(lon)...))
	}
	if !p.GPSTime.IsZero() {
		t := p.GPSTime.UTC()
		gps.entries = append(gps.entries,
			rationals(0x7, [2]uint32{uint32(t.Hour()), 1}, [2]uint32{uint32(t.Minute()), 1}, [2]uint32{uint32(t.Second()), 1}),
			ascii(0x1D, t.Format("2006:01:02")))
	}
	ifds := []*ifd{&ifd0}
	if len(exifIFD.entries) > 0 {
		ifd0.entries = append(ifd0.entries, entry{tag: 0x8769, typ: typeLong, count: 1, ptr: "exif"})
		ifds = append(ifds, &exifIFD)
	}
	if len(gps.entries) > 0 {
		ifd0.entries = append(ifd0.entries, entry{tag: 0x8825, typ: typeLong, count: 1, ptr: "gps"})
		ifds = append(ifds, &gps)
	}
	// Lay out: header, then each IFD followed by its out-of-line data.
	offsets := map[string]uint32{}
	size := func(d *ifd) uint32 {
		n := uint32(2 + 12*len(d.entries) + 4)
		for _, e := range d.entries {
			if len(e.data) > 4 {
				n += uint32(len(e.data)+1) &^ 1
			}
		}
		return n
	}
	at := uint32(8)
	for _, d := range ifds {
		sort.Slice(d.entries, func(i, j int) bool { return d.entries[i].tag < d.entries[j].tag })
		offsets[d.name] = at
		at += size(d)
	}
	le := binary.LittleEndian
	out := []byte{'I', 'I', 42, 0}
	out = le.AppendUint32(out, 8)
	for _, d := range ifds {
		dataAt := offsets[d.name] + uint32(2+12*len(d.entries)+4)
		var data []byte
		out = le.AppendUint16(out, uint16(len(d.entries)))
		for _, e := range d.entries {
			out = le.AppendUint16(out, e.tag)
			out = le.AppendUint16(out, e.typ)
			out = le.AppendUint32(out, e.count)
			switch {
			case e.ptr != "":
				out = le.AppendUint32(out, offsets[e.ptr])
			case len(e.data) <= 4:
				v := make([]byte, 4)
				copy(v, e.data)
				out = append(out, v...)
			default:
				out = le.AppendUint32(out, dataAt+uint32(len(data)))
				data = append(data, e.data...)
				if len(data)%2 == 1 {
					data = append(data, 0)
				}
			}
		}
		out = le.AppendUint32(out, 0) // no next IFD
		out = append(out, data...)
	}
	return out
}
