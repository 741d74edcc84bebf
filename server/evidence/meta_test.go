package evidence_test

import (
	"bytes"
	"image"
	"image/jpeg"
	"math"
	"testing"
	"time"

	"fieldsync/server/evidence"
	"fieldsync/server/evidence/evidencetest"
)

func analyze(t testing.TB, b []byte) evidence.Meta {
	t.Helper()
	m, err := evidence.Analyze(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("Analyze: %v", err)
	}
	return m
}

func TestAnalyze_EXIF(t *testing.T) {
	cst := time.FixedZone("", 8*3600)
	taken := time.Date(2026, 3, 1, 9, 15, 30, 0, cst)
	tests := []struct {
		name       string
		photo      evidencetest.Photo
		wantTaken  string
		wantGPS    *[2]float64
		wantOrient int
	}{
		{name: "time with offset and GPS", photo: evidencetest.Photo{Seed: 1, Taken: taken, TakenOffset: true, GPS: &[2]float64{103.15, 25.15}},
			wantTaken: "2026-03-01T09:15:30+08:00", wantGPS: &[2]float64{103.15, 25.15}},
		{name: "floating time", photo: evidencetest.Photo{Seed: 1, Taken: taken},
			wantTaken: "2026-03-01T09:15:30"},
		{name: "GPS time beats floating time", photo: evidencetest.Photo{Seed: 1, Taken: taken, GPSTime: taken},
			wantTaken: "2026-03-01T01:15:30Z"},
		{name: "southern and western hemispheres", photo: evidencetest.Photo{Seed: 1, GPS: &[2]float64{-70.5, -33.25}},
			wantGPS: &[2]float64{-70.5, -33.25}},
		{name: "orientation", photo: evidencetest.Photo{Seed: 1, Orientation: 6}, wantOrient: 6},
		{name: "no EXIF", photo: evidencetest.Photo{Seed: 1, NoEXIF: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := analyze(t, evidencetest.JPEG(tt.photo))
			if m.MediaType != "image/jpeg" || m.Width != 320 || m.Height != 240 {
				t.Errorf("type/size = %q %dx%d", m.MediaType, m.Width, m.Height)
			}
			if m.PHash == nil {
				t.Errorf("no perceptual hash")
			}
			if got := m.Taken.String(); got != tt.wantTaken {
				t.Errorf("taken = %q, want %q", got, tt.wantTaken)
			}
			switch {
			case tt.wantGPS == nil && m.GPS != nil:
				t.Errorf("GPS = %v, want none", *m.GPS)
			case tt.wantGPS != nil && m.GPS == nil:
				t.Errorf("no GPS, want %v", *tt.wantGPS)
			case tt.wantGPS != nil:
				if math.Abs(m.GPS[0]-tt.wantGPS[0]) > 1e-6 || math.Abs(m.GPS[1]-tt.wantGPS[1]) > 1e-6 {
					t.Errorf("GPS = %v, want %v", *m.GPS, *tt.wantGPS)
				}
			}
			if m.Orientation != tt.wantOrient {
				t.Errorf("orientation = %d, want %d", m.Orientation, tt.wantOrient)
			}
		})
	}
}

func TestAnalyze_NotImage(t *testing.T) {
	m := analyze(t, []byte("%PDF-1.4\n%âãÏÓ\n1 0 obj\n"))
	if m.MediaType != "application/pdf" || m.PHash != nil || m.Width != 0 {
		t.Errorf("pdf meta = %+v", m)
	}
	m = analyze(t, []byte{0, 1, 2, 3, 0xFF, 0xD8})
	if m.MediaType != "" {
		t.Errorf("binary media type = %q", m.MediaType)
	}
	// A JPEG header with nothing behind it: sniffed, but no size or hash.
	m = analyze(t, []byte{0xFF, 0xD8, 0xFF, 0xE0, 0, 16})
	if m.MediaType != "image/jpeg" || m.PHash != nil {
		t.Errorf("truncated jpeg meta = %+v", m)
	}
}

func TestAnalyze_PerceptualHash(t *testing.T) {
	hash := func(p evidencetest.Photo) uint64 {
		m := analyze(t, evidencetest.JPEG(p))
		if m.PHash == nil {
			t.Fatalf("no hash for %+v", p)
		}
		return *m.PHash
	}
	a := hash(evidencetest.Photo{Seed: 7})
	reencoded := hash(evidencetest.Photo{Seed: 7, Quality: 40, Width: 640, Height: 480})
	if d := evidence.Distance(a, reencoded); d > evidence.DefaultNearDuplicateDistance {
		t.Errorf("same picture re-encoded: distance %d > %d", d, evidence.DefaultNearDuplicateDistance)
	}
	for seed := uint64(8); seed < 14; seed++ {
		if d := evidence.Distance(a, hash(evidencetest.Photo{Seed: seed})); d <= evidence.DefaultNearDuplicateDistance {
			t.Errorf("seed 7 vs %d: distance %d, want > %d", seed, d, evidence.DefaultNearDuplicateDistance)
		}
	}
}

func TestCaptureTime_RoundTrip(t *testing.T) {
	for _, s := range []string{"", "2026-03-01T09:15:30+08:00", "2026-03-01T09:15:30", "2026-03-01T01:15:30Z"} {
		c, err := evidence.ParseCaptureTime(s)
		if err != nil || c.String() != s {
			t.Errorf("%q: got %q, %v", s, c.String(), err)
		}
	}
	if _, err := evidence.ParseCaptureTime("yesterday"); err == nil {
		t.Errorf("bad time accepted")
	}
}

func TestThumbnail(t *testing.T) {
	tests := []struct {
		name  string
		photo evidencetest.Photo
		w, h  int
	}{
		{"landscape", evidencetest.Photo{Seed: 3, Width: 800, Height: 600}, 256, 192},
		{"rotated by EXIF", evidencetest.Photo{Seed: 3, Width: 800, Height: 600, Orientation: 6}, 192, 256},
		{"small stays small", evidencetest.Photo{Seed: 3, Width: 100, Height: 50}, 100, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := evidence.Thumbnail(bytes.NewReader(evidencetest.JPEG(tt.photo)), evidence.ThumbSize)
			if err != nil {
				t.Fatal(err)
			}
			img, err := jpeg.Decode(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			if got := img.Bounds().Size(); got != (image.Point{tt.w, tt.h}) {
				t.Errorf("size %v, want %dx%d", got, tt.w, tt.h)
			}
		})
	}
	if _, err := evidence.Thumbnail(bytes.NewReader([]byte("not an image")), 256); err == nil {
		t.Errorf("thumbnail of text succeeded")
	}
}

// cyclicTIFF has two empty IFDs that point at each other.
var cyclicTIFF = []byte("II*\x00\x08\x00\x00\x00" + "\x00\x00\x0e\x00\x00\x00" + "\x00\x00\x08\x00\x00\x00")

func TestAnalyze_HostileEXIF(t *testing.T) {
	done := make(chan evidence.Meta)
	go func() {
		b := evidencetest.SpliceEXIF(evidencetest.JPEG(evidencetest.Photo{Seed: 1, NoEXIF: true}), cyclicTIFF)
		m, _ := evidence.Analyze(bytes.NewReader(b), int64(len(b)))
		done <- m
	}()
	select {
	case m := <-done:
		if m.Width != 320 || m.PHash == nil {
			t.Errorf("image behind bad EXIF not analysed: %+v", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Analyze hangs on an IFD cycle")
	}
}

// FuzzAnalyze: no input makes Analyze fail or panic.
func FuzzAnalyze(f *testing.F) {
	f.Add(evidencetest.JPEG(evidencetest.Photo{Seed: 1, Width: 16, Height: 16, Taken: time.Now(), TakenOffset: true, GPS: &[2]float64{1, 2}}))
	f.Add(evidencetest.SpliceEXIF([]byte{0xFF, 0xD8, 0xFF, 0xD9}, []byte("II*\x00\x08\x00\x00\x00\xff\xff")))
	f.Add([]byte("MM\x00*"))
	f.Add(evidencetest.SpliceEXIF([]byte{0xFF, 0xD8, 0xFF, 0xD9}, cyclicTIFF))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := evidence.Analyze(bytes.NewReader(b), int64(len(b))); err != nil {
			t.Fatalf("Analyze: %v", err)
		}
		_, _ = evidence.Thumbnail(bytes.NewReader(b), 32)
	})
}
