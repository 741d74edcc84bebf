//go:build !cgo || nolibjpeg

package evidence

import (
	"errors"
	"image"
	"io"
)

// haveScaledJPEG is false in builds without libjpeg (no cgo, or the
// nolibjpeg tag): JPEGs are decoded in full by image/jpeg, within the
// decode budget, so those over about 16 MP get no perceptual hash or
// thumbnail.
const haveScaledJPEG = false

func decodeJPEGScaled(io.ReaderAt, int64, int) (image.Image, error) {
	return nil, errors.New("evidence: built without libjpeg")
}
