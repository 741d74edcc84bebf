package evidence_test

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/jpeg"
	"image/png"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"

	"fieldsync/server/evidence"
	"fieldsync/server/evidence/evidencetest"
)

// upscaled returns the JPEG photo p enlarged to w×h (nearest neighbour,
// 4:2:0 like a camera's), re-encoded at quality 80.
func upscaled(t *testing.T, p evidencetest.Photo, w, h int) []byte {
	t.Helper()
	src, err := jpeg.Decode(bytes.NewReader(evidencetest.JPEG(p)))
	if err != nil {
		t.Fatal(err)
	}
	s, ok := src.(*image.YCbCr)
	if !ok {
		t.Fatalf("fixture decodes as %T", src)
	}
	sb := s.Bounds()
	dst := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	for y := range h {
		sy := sb.Min.Y + y*sb.Dy()/h
		for x := range w {
			sx := sb.Min.X + x*sb.Dx()/w
			dst.Y[dst.YOffset(x, y)] = s.Y[s.YOffset(sx, sy)]
			if x%2 == 0 && y%2 == 0 {
				co, so := dst.COffset(x, y), s.COffset(sx, sy)
				dst.Cb[co], dst.Cr[co] = s.Cb[so], s.Cr[so]
			}
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, dst, &jpeg.Options{Quality: 80}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestAnalyze_LargePhotoIsHashed: a reused photo enlarged to 8000×6000
// (48 MP, above the old 40 MP limit that skipped decoding altogether)
// still gets its perceptual hash, near the original's, and a thumbnail.
// With libjpeg the decode is scaled (1/8 here) and stays small.
func TestAnalyze_LargePhotoIsHashed(t *testing.T) {
	orig := evidencetest.Photo{Seed: 7, Width: 640, Height: 480}
	big := upscaled(t, orig, 8000, 6000)
	m := analyze(t, big)
	if m.Width != 8000 || m.Height != 6000 {
		t.Fatalf("size %dx%d", m.Width, m.Height)
	}
	if m.PHash == nil {
		t.Fatal("48 MP photo: no perceptual hash (the near-duplicate check is dodged)")
	}
	a := analyze(t, evidencetest.JPEG(orig))
	if d := evidence.Distance(*a.PHash, *m.PHash); d > evidence.DefaultNearDuplicateDistance {
		t.Errorf("48 MP enlargement vs original: distance %d > %d", d, evidence.DefaultNearDuplicateDistance)
	}
	th, err := evidence.Thumbnail(bytes.NewReader(big), 256)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(th))
	if err != nil || cfg.Width != 256 || cfg.Height != 192 {
		t.Errorf("thumbnail %dx%d, %v", cfg.Width, cfg.Height, err)
	}
}

// TestAnalyze_ScaledHashesAgree: the same picture at sizes that decode at
// every DCT scale (1, 1/2, 1/4, 1/8) hashes within the near-duplicate
// distance of itself, and not of other pictures.
func TestAnalyze_ScaledHashesAgree(t *testing.T) {
	for _, seed := range []uint64{3, 7, 11} {
		base := analyze(t, evidencetest.JPEG(evidencetest.Photo{Seed: seed, Width: 640, Height: 480}))
		other := analyze(t, evidencetest.JPEG(evidencetest.Photo{Seed: seed + 100, Width: 640, Height: 480}))
		for _, w := range []int{1200, 2400, 4800} {
			m := analyze(t, upscaled(t, evidencetest.Photo{Seed: seed, Width: 640, Height: 480}, w, w*3/4))
			if m.PHash == nil {
				t.Fatalf("seed %d at %d px: no hash", seed, w)
			}
			if d := evidence.Distance(*base.PHash, *m.PHash); d > evidence.DefaultNearDuplicateDistance {
				t.Errorf("seed %d at %d px: distance %d to itself", seed, w, d)
			}
			if d := evidence.Distance(*other.PHash, *m.PHash); d <= evidence.DefaultNearDuplicateDistance {
				t.Errorf("seed %d at %d px: distance %d to another picture", seed, w, d)
			}
		}
	}
}

// TestAnalyze_HugeDeclaredSize: files that declare absurd pixel counts
// (a 65,000 × 65,000 JPEG or PNG header over a few bytes) give metadata
// without a hash and cost no large allocation.
func TestAnalyze_HugeDeclaredSize(t *testing.T) {
	var pngBuf bytes.Buffer
	if err := png.Encode(&pngBuf, image.NewGray(image.Rect(0, 0, 1, 1))); err != nil {
		t.Fatal(err)
	}
	p := pngBuf.Bytes()
	// IHDR width and height at bytes 16..23, then its CRC again.
	p[16], p[17], p[18], p[19] = 0, 0, 0xfd, 0xe8
	p[20], p[21], p[22], p[23] = 0, 0, 0xfd, 0xe8
	binary.BigEndian.PutUint32(p[29:33], crc32.ChecksumIEEE(p[12:29]))
	j := evidencetest.JPEG(evidencetest.Photo{Seed: 1, NoEXIF: true})
	// SOF0 height and width follow its marker, length and precision.
	for i := 0; i+9 < len(j); i++ {
		if j[i] == 0xff && j[i+1] == 0xc0 {
			j[i+5], j[i+6], j[i+7], j[i+8] = 0xfd, 0xe8, 0xfd, 0xe8
			break
		}
	}
	for name, data := range map[string][]byte{"png": p, "jpeg": j} {
		m := analyze(t, data)
		if m.PHash != nil || m.Width != 65000 {
			t.Errorf("%s: %+v", name, m)
		}
		if _, err := evidence.Thumbnail(bytes.NewReader(data), 256); err == nil {
			t.Errorf("%s: thumbnail of a 65000×65000 image made", name)
		}
	}
}

// BenchmarkAnalyze_Two48MPAtOnce analyses two 48 MP photos at the same
// time, as two finished uploads would, and reports the process's peak RSS
// during the analysis (Linux: VmHWM after resetting it through
// /proc/self/clear_refs).
func BenchmarkAnalyze_Two48MPAtOnce(b *testing.B) {
	t := &testing.T{}
	photos := [][]byte{
		upscaled(t, evidencetest.Photo{Seed: 7, Width: 640, Height: 480}, 8000, 6000),
		upscaled(t, evidencetest.Photo{Seed: 8, Width: 640, Height: 480}, 8000, 6000),
	}
	runtime.GC()
	debug.FreeOSMemory()
	peak := 0.0
	for b.Loop() {
		_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
		var wg sync.WaitGroup
		for _, p := range photos {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if m, err := evidence.Analyze(bytes.NewReader(p), int64(len(p))); err != nil || m.PHash == nil {
					b.Errorf("analyse: %v, %+v", err, m)
				}
			}()
		}
		wg.Wait()
		peak = max(peak, vmHWM())
	}
	b.ReportMetric(peak/(1<<20), "peakRSS-MiB")
	b.ReportMetric(float64(len(photos[0]))/(1<<20), "file-MiB")
}

// vmHWM is the process's peak resident set in bytes (0 if unknown).
func vmHWM() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return kb * 1024
		}
	}
	return 0
}
