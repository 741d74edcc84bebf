package exifenc_test

import (
	"bytes"
	"errors"
	"image"
	"image/jpeg"
	"math"
	"testing"
	"time"

	"fieldsync/server/evidence"
	"fieldsync/server/evidence/exifenc"
)

// TestRoundTrip: what exifenc writes, server/evidence reads back.
func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, image.NewGray(image.Rect(0, 0, 16, 16)), nil); err != nil {
		t.Fatal(err)
	}
	taken := time.Date(2026, 11, 28, 14, 3, 5, 0, time.FixedZone("", 8*3600))
	gps := [2]float64{103.712345, -25.054321}
	data, err := exifenc.Splice(buf.Bytes(), exifenc.TIFF(exifenc.Tags{Taken: taken, TakenOffset: true, GPS: &gps, Orientation: 6}))
	if err != nil {
		t.Fatal(err)
	}
	m, err := evidence.Analyze(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if !m.Taken.Time.Equal(taken) || m.Taken.Floating || m.Orientation != 6 || m.GPS == nil ||
		math.Abs(m.GPS[0]-gps[0]) > 1e-6 || math.Abs(m.GPS[1]-gps[1]) > 1e-6 {
		t.Fatalf("read back %+v (GPS %v)", m, m.GPS)
	}
	if _, err := exifenc.Splice([]byte("GIF89a"), nil); !errors.Is(err, exifenc.ErrNotJPEG) {
		t.Errorf("splice into a GIF: %v", err)
	}
	if _, err := exifenc.Splice(buf.Bytes(), make([]byte, 70000)); !errors.Is(err, exifenc.ErrTooBig) {
		t.Errorf("splice 70 kB: %v", err)
	}
}
