package evidence

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/jpeg"
	"io"

	"golang.org/x/image/draw"
)

// ThumbSize is the long side, in pixels, of the thumbnails the server
// serves.
const ThumbSize = 256

// ThumbName is the derived-object name of a blob's thumbnail.
func ThumbName(sum string, size int) string {
	return fmt.Sprintf("thumb/%s/%d.jpg", sum, size)
}

// Thumbnail decodes the image in r (JPEG, PNG, GIF or WebP), turns it
// upright according to its EXIF orientation, scales it to fit size×size
// (never up) and encodes it as a JPEG. Images too big to decode (see decode) and content
// that is not a decodable image give ErrNotImage.
func Thumbnail(r io.ReadSeeker, size int) ([]byte, error) {
	if size <= 0 {
		size = ThumbSize
	}
	var m Meta
	head, err := io.ReadAll(io.LimitReader(r, exifWindow))
	if err != nil {
		return nil, fmt.Errorf("evidence: thumbnail: %w", err)
	}
	readEXIF(head, &m)
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("evidence: thumbnail: %w", err)
	}
	cfg, format, err := image.DecodeConfig(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotImage, err)
	}
	end, err := r.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("evidence: thumbnail: %w", err)
	}
	ra, ok := r.(io.ReaderAt)
	if !ok {
		ra = readerAt{r}
	}
	src, err := decode(context.Background(), ra, end, cfg, format)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotImage, err)
	}
	b := src.Bounds()
	w, h := b.Dx(), b.Dy()
	if w > size || h > size {
		if w >= h {
			w, h = size, max(1, h*size/w)
		} else {
			w, h = max(1, w*size/h), size
		}
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.CatmullRom.Scale(dst, dst.Bounds(), src, b, draw.Src, nil)
	out := orient(dst, m.Orientation)
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, out, &jpeg.Options{Quality: 80}); err != nil {
		return nil, fmt.Errorf("evidence: thumbnail: %w", err)
	}
	return buf.Bytes(), nil
}

// orient applies an EXIF orientation (2..8) so that the image is upright.
func orient(src *image.RGBA, o int) image.Image {
	if o < 2 || o > 8 {
		return src
	}
	b := src.Bounds()
	w, h := b.Dx(), b.Dy()
	dw, dh := w, h
	if o >= 5 {
		dw, dh = h, w
	}
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			var dx, dy int
			switch o {
			case 2: // mirrored horizontally
				dx, dy = w-1-x, y
			case 3: // rotated 180
				dx, dy = w-1-x, h-1-y
			case 4: // mirrored vertically
				dx, dy = x, h-1-y
			case 5: // transposed
				dx, dy = y, x
			case 6: // rotated 90 clockwise to display
				dx, dy = h-1-y, x
			case 7: // transversed
				dx, dy = h-1-y, w-1-x
			case 8: // rotated 90 counter-clockwise to display
				dx, dy = y, w-1-x
			}
			dst.SetRGBA(dx, dy, src.RGBAAt(b.Min.X+x, b.Min.Y+y))
		}
	}
	return dst
}

// readerAt reads a seekable stream at offsets (not concurrently).
type readerAt struct{ r io.ReadSeeker }

func (a readerAt) ReadAt(p []byte, off int64) (int, error) {
	if _, err := a.r.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	return io.ReadFull(a.r, p)
}
