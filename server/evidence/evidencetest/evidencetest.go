// Package evidencetest makes evidence fixtures for tests: JPEG photos with
// an EXIF block written by exifenc (capture time and offset, GPS position
// and time, orientation), and deterministic pictures whose perceptual
// hashes differ when their seeds do.
package evidencetest

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"time"

	"fieldsync/server/evidence/exifenc"
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
func CentredCrop(p Photo, f float64) []byte { return Crop(p, f, 0.5, 0.5) }

// Crop encodes the photo's picture cut down to the fraction f of each
// side, the part kept anchored at (ax, ay): 0.5, 0.5 is centred, 0, 0 the
// top-left corner, 1, 0.5 the right side. p's EXIF is kept.
func Crop(p Photo, f, ax, ay float64) []byte {
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
	x0, y0 := int(float64(p.Width-w)*ax), int(float64(p.Height-h)*ay)
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
// JPEG's SOI marker (exifenc.Splice; it panics on what is not a JPEG).
func SpliceEXIF(jpg, tiff []byte) []byte {
	out, err := exifenc.Splice(jpg, tiff)
	if err != nil {
		panic("evidencetest: " + err.Error())
	}
	return out
}

// EXIF builds the TIFF structure of the photo's EXIF block (exifenc.TIFF).
func EXIF(p Photo) []byte {
	return exifenc.TIFF(exifenc.Tags{Taken: p.Taken, TakenOffset: p.TakenOffset, GPSTime: p.GPSTime, GPS: p.GPS, Orientation: p.Orientation})
}
