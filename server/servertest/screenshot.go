package servertest

import (
	"bytes"
	"cmp"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// SaveScreenshot keeps a browser test's PNG screenshot under name when
// FIELDSYNC_SCREENSHOTS is set: "1" means the test package's
// testdata/screenshots folder (the README's pictures: server/web's for
// the console, server/app's for the field app), anything else names a
// folder. The PNG is re-encoded with the best compression, so committed
// pictures stay small. Failures are logged, never fatal: screenshots are
// documentation, not a check.
func SaveScreenshot(t testing.TB, name string, shot []byte) {
	t.Helper()
	dir := os.Getenv("FIELDSYNC_SCREENSHOTS")
	if dir == "" {
		return
	}
	if dir == "1" {
		dir = filepath.Join("testdata", "screenshots") // go test runs in the package's folder
	}
	if img, err := png.Decode(bytes.NewReader(shot)); err == nil {
		var buf bytes.Buffer
		if err := (&png.Encoder{CompressionLevel: png.BestCompression}).Encode(&buf, paletted(img)); err == nil && buf.Len() < len(shot) {
			shot = buf.Bytes()
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return
	}
	if err := os.WriteFile(filepath.Join(dir, name), shot, 0o644); err != nil {
		t.Logf("screenshot %s: %v", name, err)
	}
}

// paletted redraws a screenshot with its 256 commonest colours (the
// others go to the nearest of them): a user interface has few colours, so
// only the edges of anti-aliased text change, and the PNG shrinks.
func paletted(img image.Image) image.Image {
	b := img.Bounds()
	counts := map[color.RGBA]int{}
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, a := img.At(x, y).RGBA()
			counts[color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(bl >> 8), uint8(a >> 8)}]++
		}
	}
	cols := make([]color.RGBA, 0, len(counts))
	for c := range counts {
		cols = append(cols, c)
	}
	slices.SortFunc(cols, func(a, b color.RGBA) int {
		return cmp.Or(cmp.Compare(counts[b], counts[a]), cmp.Compare(a.R, b.R), cmp.Compare(a.G, b.G), cmp.Compare(a.B, b.B))
	})
	pal := make(color.Palette, 0, 256)
	for _, c := range cols[:min(256, len(cols))] {
		pal = append(pal, c)
	}
	out := image.NewPaletted(b, pal)
	index := map[color.RGBA]uint8{}
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, a := img.At(x, y).RGBA()
			c := color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(bl >> 8), uint8(a >> 8)}
			i, ok := index[c]
			if !ok {
				i = uint8(pal.Index(c))
				index[c] = i
			}
			out.SetColorIndex(x, y, i)
		}
	}
	return out
}
