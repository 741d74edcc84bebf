package mobileclient

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"

	"golang.org/x/image/draw"
)

// maxDecodePixels bounds the pictures PrepareEvidence decodes to
// downscale (about 100 megapixels, 400 MB as RGBA): a bigger one is
// refused rather than risk the app being killed for memory.
const maxDecodePixels = 100 << 20

// processPhoto returns the bytes to queue for a photo and their media type.
// A JPEG whose long side is at most maxPx is kept byte for byte, and so is
// such a PNG (a signature or a scan with sharp edges stays lossless). A
// bigger photo is downscaled so that its long side is maxPx and encoded as
// JPEG; the original's EXIF block (capture time, GPS, orientation: the
// pixels are not rotated, so the orientation tag stays right) and ICC
// colour profile are copied into it, with the EXIF pixel dimensions set to
// the new size.
func processPhoto(data []byte, mediaType string, maxPx, quality int) ([]byte, string, error) {
	var cfg image.Config
	var err error
	switch mediaType {
	case "image/jpeg":
		cfg, err = jpeg.DecodeConfig(bytes.NewReader(data))
	case "image/png":
		cfg, err = png.DecodeConfig(bytes.NewReader(data))
	default:
		return nil, "", fmt.Errorf("%s is not a photo type: %w", mediaType, ErrInvalid)
	}
	if err != nil {
		return nil, "", fmt.Errorf("not a readable %s: %v: %w", mediaType, err, ErrInvalid)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, "", fmt.Errorf("%s of %d×%d pixels: %w", mediaType, cfg.Width, cfg.Height, ErrInvalid)
	}
	if max(cfg.Width, cfg.Height) <= maxPx {
		return data, mediaType, nil
	}
	if int64(cfg.Width)*int64(cfg.Height) > maxDecodePixels {
		return nil, "", fmt.Errorf("%d×%d pixels is too big to downscale on the device: %w", cfg.Width, cfg.Height, ErrInvalid)
	}
	var src image.Image
	if mediaType == "image/jpeg" {
		src, err = jpeg.Decode(bytes.NewReader(data))
	} else {
		src, err = png.Decode(bytes.NewReader(data))
	}
	if err != nil {
		return nil, "", fmt.Errorf("decoding %s: %v: %w", mediaType, err, ErrInvalid)
	}
	w, h := scaledSize(src.Bounds().Dx(), src.Bounds().Dy(), maxPx)
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	op := draw.Src
	if mediaType == "image/png" {
		// Transparent pixels become white, not black, in a JPEG.
		draw.Draw(dst, dst.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
		op = draw.Over
	}
	// BiLinear (not ApproxBiLinear) widens its kernel when shrinking, so
	// fine detail does not alias.
	draw.BiLinear.Scale(dst, dst.Bounds(), src, src.Bounds(), op, nil)
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, dst, &jpeg.Options{Quality: quality}); err != nil {
		return nil, "", fmt.Errorf("encoding JPEG: %w", err)
	}
	var keep [][]byte
	if mediaType == "image/jpeg" {
		exif, icc := metadataSegments(data)
		if exif != nil {
			patchEXIFSize(exif[exifHeaderLen:], w, h)
			keep = append(keep, exif)
		}
		keep = append(keep, icc...)
	}
	return spliceSegments(buf.Bytes(), keep), "image/jpeg", nil
}

// scaledSize fits w×h into maxPx on the long side, keeping the aspect.
func scaledSize(w, h, maxPx int) (int, int) {
	if w >= h {
		return maxPx, max(1, int((int64(h)*int64(maxPx)+int64(w)/2)/int64(w)))
	}
	return max(1, int((int64(w)*int64(maxPx)+int64(h)/2)/int64(h))), maxPx
}

// JPEG markers and segment prefixes.
const (
	markerSOS  = 0xDA
	markerEOI  = 0xD9
	markerAPP1 = 0xE1
	markerAPP2 = 0xE2
)

var (
	exifPrefix = []byte("Exif\x00\x00")
	iccPrefix  = []byte("ICC_PROFILE\x00")
)

// exifHeaderLen is the length of an EXIF APP1 segment before its TIFF
// structure: marker (2), length (2), "Exif\0\0" (6).
const exifHeaderLen = 4 + 6

// metadataSegments returns copies of the first EXIF APP1 segment and of
// every ICC profile APP2 segment of a JPEG, whole (marker and length
// included), from the header segments before the image data. A malformed
// header ends the walk: what was found so far is returned.
func metadataSegments(jpg []byte) (exif []byte, icc [][]byte) {
	if len(jpg) < 4 || jpg[0] != 0xFF || jpg[1] != 0xD8 {
		return nil, nil
	}
	i := 2
	for i+4 <= len(jpg) {
		if jpg[i] != 0xFF {
			return exif, icc
		}
		m := jpg[i+1]
		if m == 0xFF { // fill byte
			i++
			continue
		}
		if m == markerSOS || m == markerEOI {
			return exif, icc
		}
		if m == 0x01 || (m >= 0xD0 && m <= 0xD7) { // no length
			i += 2
			continue
		}
		n := int(binary.BigEndian.Uint16(jpg[i+2:]))
		if n < 2 || i+2+n > len(jpg) {
			return exif, icc
		}
		seg := jpg[i : i+2+n]
		payload := seg[4:]
		switch {
		case m == markerAPP1 && exif == nil && bytes.HasPrefix(payload, exifPrefix):
			exif = bytes.Clone(seg)
		case m == markerAPP2 && bytes.HasPrefix(payload, iccPrefix):
			icc = append(icc, bytes.Clone(seg))
		}
		i += 2 + n
	}
	return exif, icc
}

// spliceSegments inserts whole segments right after a JPEG's SOI marker
// (image/jpeg writes no APP0, so EXIF comes first, as the EXIF standard
// wants).
func spliceSegments(jpg []byte, segs [][]byte) []byte {
	if len(segs) == 0 {
		return jpg
	}
	n := len(jpg)
	for _, s := range segs {
		n += len(s)
	}
	out := make([]byte, 0, n)
	out = append(out, jpg[:2]...)
	for _, s := range segs {
		out = append(out, s...)
	}
	return append(out, jpg[2:]...)
}

// TIFF tags patched to the new size.
const (
	tagImageWidth   = 0x0100
	tagImageLength  = 0x0101
	tagExifIFD      = 0x8769
	tagPixelXDim    = 0xA002
	tagPixelYDim    = 0xA003
	tiffTypeShort   = 3
	tiffTypeLong    = 4
	tiffEntryLength = 12
)

// patchEXIFSize sets, in place, the pixel dimensions an EXIF block
// declares (ImageWidth/ImageLength in IFD0, PixelXDimension and
// PixelYDimension in the EXIF IFD) to w×h, where they are single SHORT or
// LONG values that can hold the new size. Anything it cannot parse is left
// as it is.
func patchEXIFSize(tiff []byte, w, h int) {
	if len(tiff) < 8 {
		return
	}
	var bo binary.ByteOrder
	switch string(tiff[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return
	}
	if bo.Uint16(tiff[2:]) != 42 {
		return
	}
	vals := map[uint16]uint32{tagImageWidth: uint32(w), tagImageLength: uint32(h), tagPixelXDim: uint32(w), tagPixelYDim: uint32(h)}
	patchIFD(tiff, bo, bo.Uint32(tiff[4:]), vals, true)
}

func patchIFD(t []byte, bo binary.ByteOrder, off uint32, vals map[uint16]uint32, follow bool) {
	if uint64(off)+2 > uint64(len(t)) {
		return
	}
	n := int(bo.Uint16(t[off:]))
	for i := 0; i < n; i++ {
		e := int(off) + 2 + tiffEntryLength*i
		if e+tiffEntryLength > len(t) {
			return
		}
		tag, typ, count := bo.Uint16(t[e:]), bo.Uint16(t[e+2:]), bo.Uint32(t[e+4:])
		val := t[e+8 : e+12]
		if count != 1 {
			continue
		}
		if tag == tagExifIFD && follow && typ == tiffTypeLong {
			patchIFD(t, bo, bo.Uint32(val), vals, false)
			continue
		}
		v, ok := vals[tag]
		if !ok {
			continue
		}
		switch {
		case typ == tiffTypeShort && v <= 0xFFFF:
			bo.PutUint16(val, uint16(v))
		case typ == tiffTypeLong:
			bo.PutUint32(val, v)
		}
	}
}
