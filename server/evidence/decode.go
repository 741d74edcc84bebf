package evidence

import (
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"io"

	"golang.org/x/sync/semaphore"
)

// Decoding is the memory-hungry part of evidence analysis. Every decode
// first reserves what it will hold (the file's bytes where a decoder needs
// them in memory, and the decoded pixels) from one budget shared by the
// process, so that concurrent photos queue instead of adding up: two 40 MP
// photos arriving at once no longer take hundreds of MiB.
//
// JPEGs, nearly all evidence, are decoded scaled (libjpeg-turbo's DCT
// scaling, 1/2 to 1/8, see decode_libjpeg.go): a 48 MP photo is read as
// 1000×750 pixels, enough for the perceptual hash (which looks at 64×64)
// and for thumbnails. So every accepted JPEG gets its hash and thumbnail
// whatever its pixel count; only absurd sizes (more than MaxScaledPixels
// even at 1/8) are left undecoded. Other formats are decoded in full when
// their pixels fit in MaxDecodeBytes.
const (
	// MaxDecodeBytes is the most one decode may reserve; the budget as
	// a whole is DecodeBudget.
	MaxDecodeBytes = 64 << 20
	// DecodeBudget bounds the memory held by all decodes at once.
	DecodeBudget = 96 << 20
	// MaxScaledPixels bounds the decoded (scaled) image.
	MaxScaledPixels = 12_000_000
	// minDecodedSide is the shorter side a scaled JPEG decode keeps at
	// least (when the photo has it): the perceptual hash, computed from the
	// same scaled image for every photo, and 256-pixel thumbnails need far
	// less.
	minDecodedSide = 512
	// maxJPEGFile is the largest JPEG decoded (its bytes are held while
	// libjpeg reads them).
	maxJPEGFile = 40 << 20
)

var decodeBudget = semaphore.NewWeighted(DecodeBudget)

// errTooBig is returned by decode for images it will not decode.
var errTooBig = errors.New("evidence: image too big to decode")

// jpegScale returns the DCT scale denominator (1, 2, 4 or 8) for a w×h
// JPEG: the largest that keeps the shorter side at least minDecodedSide.
func jpegScale(w, h int) int {
	short := min(w, h)
	d := 1
	for d < 8 && short/(d*2) >= minDecodedSide {
		d *= 2
	}
	return d
}

// decode decodes the image in r (size bytes, described by cfg and format
// as image.DecodeConfig returned them), scaled down if it is a JPEG,
// within the process's decode budget. It waits for budget until ctx ends.
func decode(ctx context.Context, r io.ReaderAt, size int64, cfg image.Config, format string) (image.Image, error) {
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, fmt.Errorf("%w: %dx%d pixels", errTooBig, cfg.Width, cfg.Height)
	}
	if format == "jpeg" && haveScaledJPEG && size <= maxJPEGFile {
		d := jpegScale(cfg.Width, cfg.Height)
		out := int64((cfg.Width+d-1)/d) * int64((cfg.Height+d-1)/d)
		if out <= MaxScaledPixels {
			// The file's bytes, the decoded RGB rows and their RGBA copy.
			need := size + out*3 + out*4 + 1<<20
			if need <= MaxDecodeBytes {
				if err := decodeBudget.Acquire(ctx, need); err != nil {
					return nil, fmt.Errorf("evidence: decode: %w", err)
				}
				img, err := decodeJPEGScaled(r, size, d)
				decodeBudget.Release(need)
				if err == nil {
					return img, nil
				}
				// libjpeg refused it (CMYK, broken, over its memory
				// limit): the full decode below, if it fits, has a say.
			}
		}
	}
	need := int64(cfg.Width) * int64(cfg.Height) * 4 * bytesPerSample(cfg)
	if need > MaxDecodeBytes {
		return nil, fmt.Errorf("%w: %dx%d pixels", errTooBig, cfg.Width, cfg.Height)
	}
	if err := decodeBudget.Acquire(ctx, need); err != nil {
		return nil, fmt.Errorf("evidence: decode: %w", err)
	}
	defer decodeBudget.Release(need)
	img, _, err := image.Decode(io.NewSectionReader(r, 0, size))
	return img, err
}

// bytesPerSample is 2 for 16-bit colour models, else 1.
func bytesPerSample(cfg image.Config) int64 {
	switch cfg.ColorModel {
	case color.RGBA64Model, color.NRGBA64Model, color.Gray16Model:
		return 2
	}
	return 1
}
