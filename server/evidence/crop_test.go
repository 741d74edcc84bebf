package evidence_test

import (
	"bytes"
	"image"
	"image/jpeg"
	"strings"
	"testing"

	"fieldsync/server/evidence"
	"fieldsync/server/evidence/evidencetest"

	"golang.org/x/image/draw"
)

// transformed returns photo p cropped to the fraction f of each side
// (anchored at (ax, ay): 0.5, 0.5 is centred, 0, 0 the top-left corner),
// resized to width w and re-encoded at quality q.
func transformed(t testing.TB, p evidencetest.Photo, f, ax, ay float64, w, q int) []byte {
	t.Helper()
	src, err := jpeg.Decode(bytes.NewReader(evidencetest.JPEG(p)))
	if err != nil {
		t.Fatal(err)
	}
	b := src.Bounds()
	cw, ch := int(float64(b.Dx())*f), int(float64(b.Dy())*f)
	x0, y0 := b.Min.X+int(float64(b.Dx()-cw)*ax), b.Min.Y+int(float64(b.Dy()-ch)*ay)
	h := w * ch / cw
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.CatmullRom.Scale(dst, dst.Bounds(), src, image.Rect(x0, y0, x0+cw, y0+ch), draw.Src, nil)
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, dst, &jpeg.Options{Quality: q}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func use(t testing.TB, data []byte) evidence.Use {
	m := analyze(t, data)
	if m.PHash == nil || len(m.CropHashes) != len(evidence.CropFractions) {
		t.Fatalf("hashes: %+v", m)
	}
	return evidence.Use{PHash: m.PHash, Crops: m.CropHashes, Shifts: m.ShiftHashes}
}

// TestUseDistance_Crops: a reused photo cropped (centred) by up to 20%,
// also resized and re-encoded, stays within the near-duplicate distance of
// its original in both directions; the whole-picture hashes alone do not.
func TestUseDistance_Crops(t *testing.T) {
	limit := evidence.DefaultNearDuplicateDistance
	wholeMissed := 0
	for seed := uint64(1); seed <= 6; seed++ {
		p := evidencetest.Photo{Seed: seed, Width: 640, Height: 480}
		orig := use(t, evidencetest.JPEG(p))
		for _, f := range []float64{0.95, 0.9, 0.85, 0.8} {
			c := use(t, transformed(t, p, f, 0.5, 0.5, 480, 60))
			d1, _ := evidence.UseDistance(orig, c)
			d2, _ := evidence.UseDistance(c, orig)
			if d1 != d2 {
				t.Errorf("seed %d crop %.2f: distance %d one way, %d the other", seed, f, d1, d2)
			}
			if d1 > limit {
				t.Errorf("seed %d, centred crop to %.0f%%: distance %d > %d", seed, f*100, d1, limit)
			}
			if evidence.Distance(*orig.PHash, *c.PHash) > limit {
				wholeMissed++
			}
		}
		other := use(t, evidencetest.JPEG(evidencetest.Photo{Seed: seed + 50, Width: 640, Height: 480}))
		if d, _ := evidence.UseDistance(orig, other); d <= limit {
			t.Errorf("seed %d vs %d: distance %d", seed, seed+50, d)
		}
	}
	if wholeMissed == 0 {
		t.Errorf("whole-picture hashes alone caught every crop: the crop fixtures are too mild to test anything")
	}
	if _, ok := evidence.UseDistance(evidence.Use{}, evidence.Use{}); ok {
		t.Errorf("distance between photos without hashes")
	}
}

// BenchmarkNearDuplicate_RecallAndFalsePositives measures, for the
// perceptual hashes with their crops (UseDistance at the default
// distance): the recall on transformed copies of 50 pictures (centred,
// corner and side crops of 5-20%, resizing, re-encoding at quality 40) and the
// share of pairs flagged among 10,000 unrelated pictures (compared with
// 200 originals: 2,000,000 pairs).
func BenchmarkNearDuplicate_RecallAndFalsePositives(b *testing.B) {
	limit := evidence.DefaultNearDuplicateDistance
	type transform struct {
		name           string
		f, ax, ay      float64
		width, quality int
	}
	transforms := []transform{
		{"re-encoded q40", 1, .5, .5, 640, 40},
		{"resized to 50%", 1, .5, .5, 320, 85},
		{"enlarged 2x", 1, .5, .5, 1280, 85},
		{"centred crop 5%", .95, .5, .5, 608, 85},
		{"centred crop 10%", .9, .5, .5, 576, 85},
		{"centred crop 20%", .8, .5, .5, 512, 85},
		{"corner crop 5%", .95, 0, 0, 608, 85},
		{"corner crop 10%", .9, 0, 0, 576, 85},
		{"side crop 10%", .9, 1, .5, 576, 85},
		{"corner crop 10% bottom-right", .9, 1, 1, 576, 85},
		{"corner crop 7.5% top-right", .925, 1, 0, 592, 85},
		{"side crop 10% top", .9, .5, 0, 576, 85},
		{"side crop 5% left", .95, 0, .5, 608, 85},
	}
	for b.Loop() {
		found := map[string]int{}
		wholeFound := map[string]int{}
		const pictures = 50
		for seed := uint64(1000); seed < 1000+pictures; seed++ {
			p := evidencetest.Photo{Seed: seed, Width: 640, Height: 480}
			orig := use(b, evidencetest.JPEG(p))
			for _, tr := range transforms {
				c := use(b, transformed(b, p, tr.f, tr.ax, tr.ay, tr.width, tr.quality))
				if d, _ := evidence.UseDistance(orig, c); d <= limit {
					found[tr.name]++
				}
				if evidence.Distance(*orig.PHash, *c.PHash) <= limit {
					wholeFound[tr.name]++
				}
			}
		}
		for _, tr := range transforms {
			b.ReportMetric(float64(found[tr.name])/pictures, "recall:"+strings.ReplaceAll(tr.name, " ", "_"))
			b.ReportMetric(float64(wholeFound[tr.name])/pictures, "recall-whole-only:"+strings.ReplaceAll(tr.name, " ", "_"))
		}
		var originals, unrelated []evidence.Use
		for seed := uint64(20000); seed < 20200; seed++ {
			originals = append(originals, use(b, evidencetest.JPEG(evidencetest.Photo{Seed: seed, Width: 160, Height: 120})))
		}
		for seed := uint64(40000); seed < 50000; seed++ {
			unrelated = append(unrelated, use(b, evidencetest.JPEG(evidencetest.Photo{Seed: seed, Width: 160, Height: 120})))
		}
		fp, fpWhole := 0, 0
		for _, o := range originals {
			for _, u := range unrelated {
				if d, _ := evidence.UseDistance(o, u); d <= limit {
					fp++
				}
				if evidence.Distance(*o.PHash, *u.PHash) <= limit {
					fpWhole++
				}
			}
		}
		pairs := float64(len(originals) * len(unrelated))
		b.ReportMetric(float64(fp)/pairs, "false-positive-pairs")
		b.ReportMetric(float64(fpWhole)/pairs, "false-positive-pairs-whole-only")
	}
}
