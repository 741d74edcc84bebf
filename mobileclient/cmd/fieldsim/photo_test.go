package main

import (
	"bytes"
	"image/jpeg"
	"math"
	"testing"
	"time"

	"github.com/rwcarlsen/goexif/exif"
)

func TestMakeJPEG_Sizes(t *testing.T) {
	taken := time.Date(2024, 11, 28, 10, 15, 30, 0, cst)
	cases := []struct {
		name     string
		size     int
		lat, lon float64
	}{
		{"small", 4 << 10, 25.0123, 103.7456},
		{"phone photo", 250_000, 25.04321, 103.71234},
		{"large", 1 << 20, 24.5, 102.25},
		{"southwest", 60_000, -33.8688, -70.6693},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data, err := MakeJPEG(tc.size, tc.lat, tc.lon, taken, 42)
			if err != nil {
				t.Fatal(err)
			}
			if len(data) != tc.size {
				t.Fatalf("got %d bytes, want %d", len(data), tc.size)
			}
			if _, err := jpeg.Decode(bytes.NewReader(data)); err != nil {
				t.Fatalf("not a decodable JPEG: %v", err)
			}
			x, err := exif.Decode(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("exif: %v", err)
			}
			lat, lon, err := x.LatLong()
			if err != nil {
				t.Fatalf("exif GPS: %v", err)
			}
			if math.Abs(lat-tc.lat) > 1e-6 || math.Abs(lon-tc.lon) > 1e-6 {
				t.Fatalf("exif GPS %v,%v, want %v,%v", lat, lon, tc.lat, tc.lon)
			}
			tag, err := x.Get(exif.DateTimeOriginal)
			if err != nil {
				t.Fatalf("DateTimeOriginal: %v", err)
			}
			if s, _ := tag.StringVal(); s != "2024:11:28 10:15:30" {
				t.Fatalf("DateTimeOriginal %q", s)
			}
			ds, err := x.Get(exif.GPSDateStamp)
			if err != nil {
				t.Fatal(err)
			}
			if s, _ := ds.StringVal(); s != "2024:11:28" {
				t.Fatalf("GPSDateStamp %q", s)
			}
		})
	}
}

func TestMakeJPEG_Deterministic(t *testing.T) {
	at := time.Date(2024, 6, 1, 8, 0, 0, 0, time.UTC)
	a, _ := MakeJPEG(50_000, 25, 103, at, 7)
	b, _ := MakeJPEG(50_000, 25, 103, at, 7)
	c, _ := MakeJPEG(50_000, 25, 103, at, 8)
	if !bytes.Equal(a, b) || bytes.Equal(a, c) {
		t.Fatal("same seed must give the same bytes, another seed others")
	}
	if _, err := MakeJPEG(100, 25, 103, at, 1); err == nil {
		t.Fatal("a 100-byte photo was made")
	}
	if _, err := MakeJPEG(50_000, 95, 103, at, 1); err == nil {
		t.Fatal("latitude 95 accepted")
	}
}
