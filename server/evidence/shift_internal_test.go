package evidence

import (
	"bytes"
	"image"
	"image/draw"
	"image/jpeg"
	"math"
	"testing"

	"github.com/corona10/goimagehash"

	"fieldsync/server/evidence/evidencetest"
)

// shiftHashesByPicture is what shiftHashes computes, the long way: each
// crop of the shrunk copy box-filtered to a 64×64 RGBA picture, hashed by
// goimagehash.PerceptionHash.
func shiftHashesByPicture(t *testing.T, img image.Image) []uint64 {
	t.Helper()
	src := shrink(img, shiftSide)
	b := src.Bounds()
	at := func(lo int, f float64, n int) int { return lo + int(math.Round(f*float64(n))) }
	var out []uint64
	dst := image.NewRGBA(image.Rect(0, 0, hashSide, hashSide))
	for _, c := range ShiftCrops {
		r := image.Rect(at(b.Min.X, c.X0, b.Dx()), at(b.Min.Y, c.Y0, b.Dy()), at(b.Min.X, c.X1, b.Dx()), at(b.Min.Y, c.Y1, b.Dy()))
		if r.Dx() < 8 || r.Dy() < 8 {
			return nil
		}
		areaScale(dst, src, r)
		h, err := goimagehash.PerceptionHash(dst)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.GetHash())
	}
	return out
}

// TestShiftHashes_SameAsPerceptionHash: the off-centre crop hashes,
// computed from a summed-area table straight into grey levels with a
// partial DCT, have the very bits goimagehash.PerceptionHash gives for
// the box-filtered crops: for decoded JPEGs (YCbCr) and RGBA pictures,
// larger and smaller than the shrunk copy, landscape, portrait and odd
// sizes, and a picture that does not start at (0, 0).
func TestShiftHashes_SameAsPerceptionHash(t *testing.T) {
	sizes := [][2]int{{640, 480}, {320, 240}, {333, 251}, {240, 320}, {128, 96}, {90, 70}, {40, 30}}
	n := 0
	for i, sz := range sizes {
		for seed := uint64(1); seed <= 3; seed++ {
			data := evidencetest.JPEG(evidencetest.Photo{Seed: seed + uint64(10*i), Width: sz[0], Height: sz[1]})
			dec, err := jpeg.Decode(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			rgba := image.NewRGBA(dec.Bounds())
			draw.Draw(rgba, rgba.Rect, dec, dec.Bounds().Min, draw.Src)
			moved := image.NewRGBA(dec.Bounds().Add(image.Pt(7, 3)))
			draw.Draw(moved, moved.Rect, dec, dec.Bounds().Min, draw.Src)
			for name, img := range map[string]image.Image{"decoded": dec, "rgba": rgba, "moved": moved} {
				got, want := shiftHashes(img), shiftHashesByPicture(t, img)
				if len(got) != len(want) {
					t.Fatalf("%dx%d seed %d %s: %d hashes, want %d", sz[0], sz[1], seed, name, len(got), len(want))
				}
				for k := range got {
					if got[k] != want[k] {
						t.Errorf("%dx%d seed %d %s crop %d: %016x, PerceptionHash gives %016x", sz[0], sz[1], seed, name, k, got[k], want[k])
					}
				}
				n += len(got)
			}
		}
	}
	if n < 1000 { // 7 sizes, 3 seeds, 3 pictures, 16 crops
		t.Fatalf("only %d hashes compared", n)
	}
}
