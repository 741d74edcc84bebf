package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"fieldsync/syncproto"
)

// Photo is a generated evidence photo: a JPEG whose EXIF says where and
// when it was taken, as a phone camera's would.
type Photo struct {
	Data     []byte
	SHA256   string
	Slot     string
	Taken    time.Time
	Lat, Lon float64
}

// Ref is the visit's reference to the photo.
func (p Photo) Ref() syncproto.EvidenceRef {
	return syncproto.EvidenceRef{SHA256: p.SHA256, Size: int64(len(p.Data)), MediaType: "image/jpeg", Slot: p.Slot}
}

// NewPhoto makes a photo of exactly size bytes taken at lat, lon and taken.
func NewPhoto(size int, lat, lon float64, taken time.Time, seed uint64) (Photo, error) {
	data, err := MakeJPEG(size, lat, lon, taken, seed)
	if err != nil {
		return Photo{}, err
	}
	sum := sha256.Sum256(data)
	return Photo{Data: data, SHA256: hex.EncodeToString(sum[:]), Taken: taken, Lat: lat, Lon: lon}, nil
}

// photoForms are the forms whose visits carry photos in the scenarios by
// default: a retrofit inspection's before, after and certificate photos
// and a water cellar's progress photo. (The household survey's slots hold
// document scans and a signature.)
var photoForms = []string{"house_retrofit_inspection", "water_cellar_progress"}

// preparePhotos hands a visit's photos to the device library as the app
// does: each photo is a file the camera wrote, PrepareEvidence copies it
// into the client's folder and returns the reference the visit carries;
// RecordVisit then queues the uploads with the visit. done removes the
// camera's files (the app may delete them once the visit is recorded).
func (d *device) preparePhotos(photos []Photo) (refs []syncproto.EvidenceRef, done func(), err error) {
	if len(photos) == 0 {
		return nil, func() {}, nil
	}
	camera := d.dir + "-camera"
	if err := os.MkdirAll(camera, 0o750); err != nil {
		return nil, nil, err
	}
	var files []string
	done = func() {
		for _, f := range files {
			os.Remove(f)
		}
	}
	for i, p := range photos {
		f := filepath.Join(camera, fmt.Sprintf("IMG_%s_%d.jpg", p.Taken.Format("20060102_150405"), i))
		if err := os.WriteFile(f, p.Data, 0o640); err != nil {
			done()
			return nil, nil, err
		}
		files = append(files, f)
		ref, err := d.c.PrepareEvidence(f, p.Slot, "image/jpeg")
		if err != nil {
			done()
			return nil, nil, err
		}
		if ref.SHA256 != p.SHA256 || ref.Size != int64(len(p.Data)) {
			// Not kept byte for byte: the library downscaled it (a photo
			// over Options.MaxPhotoPx); the visit names what is queued.
			d.downscaled++
		}
		refs = append(refs, ref)
	}
	return refs, done, nil
}

// MakeJPEG returns a JPEG of exactly size bytes: a photo-like picture
// (gradient sky and ground with sensor noise) with an EXIF APP1 segment
// carrying GPS latitude/longitude, GPS date and time (UTC) and
// DateTimeOriginal with its offset (China Standard Time, as the phones of
// DOMAIN.md keep it). Random-content COM segments fill the gap between the
// encoded picture and size, so the bytes stay as incompressible as a real
// photo's. The seed fixes the content.
func MakeJPEG(size int, lat, lon float64, taken time.Time, seed uint64) ([]byte, error) {
	if math.IsNaN(lat) || math.IsNaN(lon) || lat < -90 || lat > 90 || lon < -180 || lon > 180 {
		return nil, fmt.Errorf("jpeg: position %v,%v outside WGS84", lat, lon)
	}
	app1 := exifSegment(lat, lon, taken)
	rng := rand.New(rand.NewPCG(seed, 0x6a706567)) // "jpeg"
	// Bytes per pixel of this kind of picture, from a small sample.
	sample, err := encodePicture(96, 72, rng)
	if err != nil {
		return nil, err
	}
	budget := size - len(app1)
	if budget < len(sample) {
		small, err := encodePicture(16, 12, rng)
		if err != nil {
			return nil, err
		}
		if budget < len(small) {
			return nil, fmt.Errorf("jpeg: %d bytes is below the smallest photo (%d)", size, len(small)+len(app1))
		}
		return assemble(small, app1, size, rng)
	}
	bpp := float64(len(sample)) / (96 * 72)
	pixels := float64(budget) * 0.85 / bpp
	for try := 0; try < 6; try++ {
		w := max(16, int(math.Sqrt(pixels*4/3)))
		h := max(12, w*3/4)
		pic, err := encodePicture(w, h, rng)
		if err != nil {
			return nil, err
		}
		if len(pic)+len(app1) <= size {
			return assemble(pic, app1, size, rng)
		}
		pixels *= float64(budget) / float64(len(pic)) * 0.9
	}
	return nil, fmt.Errorf("jpeg: could not fit a picture into %d bytes", size)
}

// NewLargePhoto makes a w×h camera photo (EXIF GPS and times, as
// MakeJPEG's) of whatever size the picture encodes to: the large photos
// of p7photos: about 0.35 B/pixel, 14 MB at 40 MP (a 40 MP camera
// writes 10 to 25 MB).
func NewLargePhoto(w, h int, lat, lon float64, taken time.Time, seed uint64) (Photo, error) {
	if math.IsNaN(lat) || math.IsNaN(lon) || lat < -90 || lat > 90 || lon < -180 || lon > 180 {
		return Photo{}, fmt.Errorf("jpeg: position %v,%v outside WGS84", lat, lon)
	}
	rng := rand.New(rand.NewPCG(seed, 0x6a706567))
	// Less sensor noise than MakeJPEG's small photos: a real 40 MP photo
	// compresses to well under 1 byte per pixel.
	pic, err := encodePictureNoise(w, h, rng, 12, 85)
	if err != nil {
		return Photo{}, err
	}
	app1 := exifSegment(lat, lon, taken)
	data, err := assemble(pic, app1, len(pic)+len(app1), rng)
	if err != nil {
		return Photo{}, err
	}
	sum := sha256.Sum256(data)
	return Photo{Data: data, SHA256: hex.EncodeToString(sum[:]), Taken: taken, Lat: lat, Lon: lon}, nil
}

// encodePicture draws and encodes a w×h picture.
func encodePicture(w, h int, rng *rand.Rand) ([]byte, error) {
	return encodePictureNoise(w, h, rng, 18, 88)
}

// encodePictureNoise draws a w×h picture with sensor noise of standard
// deviation sigma (luma levels) and encodes it at quality.
func encodePictureNoise(w, h int, rng *rand.Rand, sigma float64, quality int) ([]byte, error) {
	img := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	horizon := h * (2 + rng.IntN(3)) / 7
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			base := 200 - 60*y/h // sky
			if y > horizon {
				base = 90 + 40*x/w // ground
			}
			n := int(rng.NormFloat64() * sigma)
			img.Y[img.YOffset(x, y)] = clamp8(base + n)
		}
	}
	for y := 0; y < (h+1)/2; y++ {
		for x := 0; x < (w+1)/2; x++ {
			i := img.COffset(x*2, y*2)
			img.Cb[i] = clamp8(128 + 20 - 40*y*2/h + int(rng.NormFloat64()*6))
			img.Cr[i] = clamp8(128 - 10 + 30*y*2/h + int(rng.NormFloat64()*6))
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: quality}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func clamp8(v int) uint8 { return uint8(max(0, min(255, v))) }

// assemble puts SOI, the EXIF APP1 segment and COM padding before the rest
// of pic, to exactly size bytes.
func assemble(pic, app1 []byte, size int, rng *rand.Rand) ([]byte, error) {
	if len(pic) < 2 || pic[0] != 0xFF || pic[1] != 0xD8 {
		return nil, errors.New("jpeg: encoder output does not start with SOI")
	}
	out := make([]byte, 0, size)
	out = append(out, 0xFF, 0xD8)
	out = append(out, app1...)
	gap := size - len(pic) - len(app1)
	for gap > 0 {
		// A COM segment is marker (2) + length (2) + payload, 4..65537 bytes.
		seg := min(gap, 65537)
		if rest := gap - seg; rest > 0 && rest < 4 {
			seg -= 4
		}
		if seg < 4 {
			return nil, fmt.Errorf("jpeg: cannot pad %d bytes", gap)
		}
		out = append(out, 0xFF, 0xFE, byte((seg-2)>>8), byte(seg-2))
		for i := 0; i < seg-4; i++ {
			out = append(out, byte(rng.Uint32()))
		}
		gap -= seg
	}
	out = append(out, pic[2:]...)
	if len(out) != size {
		return nil, fmt.Errorf("jpeg: assembled %d bytes, want %d", len(out), size)
	}
	return out, nil
}

// EXIF field types.
const (
	tByte     = 1
	tASCII    = 2
	tLong     = 4
	tRational = 5
)

type ifdEntry struct {
	tag   uint16
	typ   uint16
	count uint32
	value []byte // little-endian
}

func asciiEntry(tag uint16, s string) ifdEntry {
	b := append([]byte(s), 0)
	return ifdEntry{tag, tASCII, uint32(len(b)), b}
}

func rationals(tag uint16, vals ...[2]uint32) ifdEntry {
	b := make([]byte, 0, 8*len(vals))
	for _, v := range vals {
		b = binary.LittleEndian.AppendUint32(b, v[0])
		b = binary.LittleEndian.AppendUint32(b, v[1])
	}
	return ifdEntry{tag, tRational, uint32(len(vals)), b}
}

func longEntry(tag uint16, v uint32) ifdEntry {
	return ifdEntry{tag, tLong, 1, binary.LittleEndian.AppendUint32(nil, v)}
}

// dms writes a coordinate as degrees, minutes and seconds (1/10000 s).
func dms(v float64) [][2]uint32 {
	v = math.Abs(v)
	deg := math.Floor(v)
	mins := math.Floor((v - deg) * 60)
	secs := math.Round(((v-deg)*60 - mins) * 60 * 10000)
	return [][2]uint32{{uint32(deg), 1}, {uint32(mins), 1}, {uint32(secs), 10000}}
}

// ifdSize is the bytes an IFD with n entries takes, and its out-of-line
// data.
func ifdSize(es []ifdEntry) (int, int) {
	data := 0
	for _, e := range es {
		if len(e.value) > 4 {
			data += len(e.value) + len(e.value)%2
		}
	}
	return 2 + 12*len(es) + 4, data
}

// writeIFD appends an IFD at offset off (from the TIFF header) followed by
// its data.
func writeIFD(b []byte, off int, es []ifdEntry) []byte {
	head, _ := ifdSize(es)
	dataOff := off + head
	b = binary.LittleEndian.AppendUint16(b, uint16(len(es)))
	var data []byte
	for _, e := range es {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.typ)
		b = binary.LittleEndian.AppendUint32(b, e.count)
		if len(e.value) <= 4 {
			v := make([]byte, 4)
			copy(v, e.value)
			b = append(b, v...)
			continue
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(dataOff+len(data)))
		data = append(data, e.value...)
		if len(e.value)%2 == 1 {
			data = append(data, 0)
		}
	}
	b = binary.LittleEndian.AppendUint32(b, 0) // no next IFD
	return append(b, data...)
}

// cst is China Standard Time, the wall clock the photos are taken on.
var cst = time.FixedZone("CST", 8*3600)

// exifSegment builds an APP1 segment: IFD0 (make, model, date time, the
// Exif and GPS pointers), the Exif IFD (DateTimeOriginal,
// OffsetTimeOriginal) and the GPS IFD (version, latitude, longitude, time
// stamp, date stamp), little-endian TIFF.
func exifSegment(lat, lon float64, taken time.Time) []byte {
	local := taken.In(cst)
	utc := taken.UTC()
	stamp := local.Format("2006:01:02 15:04:05")
	latRef, lonRef := "N", "E"
	if lat < 0 {
		latRef = "S"
	}
	if lon < 0 {
		lonRef = "W"
	}
	exifIFD := []ifdEntry{
		asciiEntry(0x9003, stamp),    // DateTimeOriginal
		asciiEntry(0x9011, "+08:00"), // OffsetTimeOriginal
	}
	gpsIFD := []ifdEntry{
		{0x0000, tByte, 4, []byte{2, 3, 0, 0}}, // GPSVersionID
		asciiEntry(0x0001, latRef),
		rationals(0x0002, dms(lat)...),
		asciiEntry(0x0003, lonRef),
		rationals(0x0004, dms(lon)...),
		rationals(0x0007, [2]uint32{uint32(utc.Hour()), 1}, [2]uint32{uint32(utc.Minute()), 1}, [2]uint32{uint32(utc.Second()), 1}),
		asciiEntry(0x001D, utc.Format("2006:01:02")), // GPSDateStamp
	}
	ifd0 := []ifdEntry{
		asciiEntry(0x010F, "fieldsim"),         // Make
		asciiEntry(0x0110, "simulated tablet"), // Model
		asciiEntry(0x0132, stamp),              // DateTime
		longEntry(0x8769, 0),                   // ExifIFDPointer, set below
		longEntry(0x8825, 0),                   // GPSInfoIFDPointer, set below
	}
	h0, d0 := ifdSize(ifd0)
	he, de := ifdSize(exifIFD)
	exifOff := 8 + h0 + d0
	gpsOff := exifOff + he + de
	ifd0[3] = longEntry(0x8769, uint32(exifOff))
	ifd0[4] = longEntry(0x8825, uint32(gpsOff))
	tiff := []byte{'I', 'I', 42, 0, 8, 0, 0, 0}
	tiff = writeIFD(tiff, 8, ifd0)
	tiff = writeIFD(tiff, exifOff, exifIFD)
	tiff = writeIFD(tiff, gpsOff, gpsIFD)
	payload := append([]byte("Exif\x00\x00"), tiff...)
	seg := []byte{0xFF, 0xE1, byte((len(payload) + 2) >> 8), byte(len(payload) + 2)}
	return append(seg, payload...)
}
