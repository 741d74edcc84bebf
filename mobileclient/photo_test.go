package mobileclient

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rwcarlsen/goexif/exif"

	"fieldsync/server/evidence/evidencetest"
)

// writeFile writes data to a new file in a temp dir (the app's own file)
// and returns its path.
func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func sumHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// taken is the capture time of the fixture photos: 10:00 China time on
// the visit day of the e2e visits.
var taken = time.Date(2026, 3, 1, 10, 0, 0, 0, time.FixedZone("", 8*3600))

// gpsAt is the fixture photos' position, inside group G11.
var gpsAt = [2]float64{103.1512, 25.1487}

// noisyPhoto is a JPEG with EXIF capture time and GPS whose pixels carry
// sensor-like noise, so that it compresses like a real photo (hundreds of
// KB at 1600 px) rather than like a flat drawing.
func noisyPhoto(seed uint64, w, h int) []byte {
	img := evidencetest.Picture(seed, w, h).(*image.RGBA)
	r := rand.New(rand.NewPCG(seed, 7))
	for i := 0; i < len(img.Pix); i += 4 {
		for k := 0; k < 3; k++ {
			v := int(img.Pix[i+k]) + r.IntN(49) - 24
			img.Pix[i+k] = uint8(max(0, min(255, v)))
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
		panic(err)
	}
	g := gpsAt
	return evidencetest.SpliceEXIF(buf.Bytes(), evidencetest.EXIF(evidencetest.Photo{Taken: taken, GPS: &g, GPSTime: taken}))
}

func readEXIF(t *testing.T, data []byte) *exif.Exif {
	t.Helper()
	x, err := exif.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("EXIF: %v", err)
	}
	return x
}

func checkTakenAndGPS(t *testing.T, data []byte) {
	t.Helper()
	x := readEXIF(t, data)
	tm, err := x.DateTime()
	if err != nil || !tm.Equal(time.Date(2026, 3, 1, 10, 0, 0, 0, time.Local)) {
		t.Errorf("DateTimeOriginal = %v, %v", tm, err)
	}
	lat, lon, err := x.LatLong()
	if err != nil || math.Abs(lat-gpsAt[1]) > 1e-5 || math.Abs(lon-gpsAt[0]) > 1e-5 {
		t.Errorf("GPS = %v, %v (%v), want %v", lat, lon, err, gpsAt)
	}
}

func TestPrepareEvidence_DownscaleKeepsEXIF(t *testing.T) {
	for _, tc := range []struct {
		name       string
		w, h       int
		orient     int
		wantW      int
		wantH      int
		maxPx      int
		wantOrient int
	}{
		{"landscape", 2400, 1800, 1, 1600, 1200, 0, 1},
		{"portrait, rotated by EXIF", 1500, 2000, 6, 1200, 1600, 0, 6},
		{"custom limit", 1000, 500, 0, 640, 320, 640, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := gpsAt
			src := evidencetest.JPEG(evidencetest.Photo{Seed: 3, Width: tc.w, Height: tc.h, Taken: taken, GPS: &g, GPSTime: taken, Orientation: tc.orient})
			c := openTest(t, t.TempDir(), "", &Options{Backoff: fastBackoff, MaxPhotoPx: tc.maxPx})
			file := writeFile(t, "IMG_0001.JPG", src)
			ref, err := c.PrepareEvidence(file, "before", "image/jpeg")
			if err != nil {
				t.Fatal(err)
			}
			// The app may delete its file: the client keeps its own copy.
			os.Remove(file)
			p, err := c.EvidenceFile(ref.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			out, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if ref.SHA256 != sumHex(out) || ref.Size != int64(len(out)) || ref.MediaType != "image/jpeg" || ref.Slot != "before" {
				t.Errorf("ref %+v does not describe the stored file (%d bytes)", ref, len(out))
			}
			cfg, err := jpeg.DecodeConfig(bytes.NewReader(out))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Width != tc.wantW || cfg.Height != tc.wantH {
				t.Errorf("downscaled to %d×%d, want %d×%d", cfg.Width, cfg.Height, tc.wantW, tc.wantH)
			}
			if len(out) >= len(src) {
				t.Errorf("downscaled file %d bytes, original %d", len(out), len(src))
			}
			checkTakenAndGPS(t, out)
			x := readEXIF(t, out)
			o, err := x.Get(exif.Orientation)
			if tc.wantOrient == 0 {
				if err == nil {
					t.Errorf("orientation %v appeared", o)
				}
			} else if v, _ := o.Int(0); err != nil || v != tc.wantOrient {
				t.Errorf("orientation = %v (%v), want %d", o, err, tc.wantOrient)
			}
		})
	}
}

func TestPrepareEvidence_SmallJPEGKeptByteIdentical(t *testing.T) {
	g := gpsAt
	src := evidencetest.JPEG(evidencetest.Photo{Seed: 4, Width: 1600, Height: 900, Taken: taken, GPS: &g})
	c := openTest(t, t.TempDir(), "", nil)
	// The app says nothing of the type: the bytes tell.
	ref, err := c.PrepareEvidence(writeFile(t, "a.jpg", src), "after", "")
	if err != nil {
		t.Fatal(err)
	}
	if ref.SHA256 != sumHex(src) || ref.Size != int64(len(src)) || ref.MediaType != "image/jpeg" {
		t.Errorf("ref = %+v, want the original's sum %s", ref, sumHex(src))
	}
	p, _ := c.EvidenceFile(ref.SHA256)
	if got, _ := os.ReadFile(p); !bytes.Equal(got, src) {
		t.Error("stored copy differs from the original")
	}
	// Preparing the same file again is idempotent.
	again, err := c.PrepareEvidence(writeFile(t, "b.jpg", src), "after", "image/jpeg")
	if err != nil || again != ref {
		t.Errorf("again: %+v %v", again, err)
	}
	if tmps, _ := filepath.Glob(filepath.Join(c.dir, EvidenceDir, ".tmp-*")); len(tmps) != 0 {
		t.Errorf("temporary files left: %v", tmps)
	}
}

func pngImage(w, h int, alpha bool) []byte {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			a := uint8(255)
			if alpha && x < w/2 {
				a = 0
			}
			img.SetNRGBA(x, y, color.NRGBA{uint8(x), uint8(y), 90, a})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func TestPrepareEvidence_Kinds(t *testing.T) {
	c := openTest(t, t.TempDir(), "", &Options{Backoff: fastBackoff, MaxPhotoPx: 400})
	small := pngImage(300, 120, true)
	big := pngImage(800, 200, true)
	pdf := append([]byte("%PDF-1.7\n"), bytes.Repeat([]byte("signed certificate "), 500)...)
	for _, tc := range []struct {
		name, file, declared string
		data                 []byte
		wantType             string
		same                 bool // stored byte for byte
		wantW, wantH         int
		err                  error
	}{
		{"small PNG signature kept lossless", "sig.png", "image/png", small, "image/png", true, 0, 0, nil},
		{"big PNG becomes a JPEG", "scan.png", "image/png", big, "image/jpeg", false, 400, 100, nil},
		{"PDF scan kept", "cert.pdf", "application/pdf", pdf, "application/pdf", true, 0, 0, nil},
		{"PDF type sniffed", "cert", "", pdf, "application/pdf", true, 0, 0, nil},
		{"the bytes decide a photo's type", "mislabelled.pdf", "application/pdf", small, "image/png", true, 0, 0, nil},
		{"not a JPEG", "x.jpg", "image/jpeg", []byte("hello, not a picture"), "", false, 0, 0, ErrInvalid},
		{"broken JPEG", "y.jpg", "image/jpeg", []byte("\xff\xd8\xff\xe0 broken"), "", false, 0, 0, ErrInvalid},
		{"empty file", "z.pdf", "application/pdf", nil, "", false, 0, 0, ErrInvalid},
		{"bad media type", "w.pdf", "pdf", pdf, "", false, 0, 0, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref, err := c.PrepareEvidence(writeFile(t, tc.file, tc.data), "certificate", tc.declared)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ref.MediaType != tc.wantType {
				t.Errorf("media type %s, want %s", ref.MediaType, tc.wantType)
			}
			p, _ := c.EvidenceFile(ref.SHA256)
			got, _ := os.ReadFile(p)
			if tc.same != bytes.Equal(got, tc.data) {
				t.Errorf("stored byte for byte: %v, want %v", !tc.same, tc.same)
			}
			if tc.wantW > 0 {
				cfg, err := jpeg.DecodeConfig(bytes.NewReader(got))
				if err != nil || cfg.Width != tc.wantW || cfg.Height != tc.wantH {
					t.Errorf("%d×%d (%v), want %d×%d", cfg.Width, cfg.Height, err, tc.wantW, tc.wantH)
				}
				// Transparent pixels turned white, not black.
				img, _ := jpeg.Decode(bytes.NewReader(got))
				if r, g, b, _ := img.At(10, 50).RGBA(); r < 0xe000 || g < 0xe000 || b < 0xe000 {
					t.Errorf("transparent area is %x %x %x, want white", r>>8, g>>8, b>>8)
				}
			}
		})
	}
	if _, err := c.PrepareEvidence(filepath.Join(t.TempDir(), "nope.jpg"), "before", "image/jpeg"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := c.PrepareEvidence(writeFile(t, "ok.pdf", pdf), "", "application/pdf"); !errors.Is(err, ErrInvalid) {
		t.Errorf("no slot: %v", err)
	}
}

// exifWithSize is a little-endian EXIF block with a capture time and the
// pixel dimensions a camera writes (PixelXDimension as LONG,
// PixelYDimension as SHORT).
func exifWithSize(w, h int) []byte {
	le := binary.LittleEndian
	b := []byte{'I', 'I', 42, 0}
	b = le.AppendUint32(b, 8)
	entry := func(b []byte, tag, typ uint16, count, val uint32) []byte {
		b = le.AppendUint16(b, tag)
		b = le.AppendUint16(b, typ)
		b = le.AppendUint32(b, count)
		return le.AppendUint32(b, val)
	}
	// IFD0 at 8: ExifIFD pointer; 2+12+4 = 18 bytes, so the EXIF IFD is at 26.
	b = le.AppendUint16(b, 1)
	b = entry(b, 0x8769, 4, 1, 26)
	b = le.AppendUint32(b, 0)
	// EXIF IFD at 26: 3 entries, 2+36+4 = 42 bytes, so the time is at 68.
	b = le.AppendUint16(b, 3)
	b = entry(b, 0x9003, 2, 20, 68)
	b = entry(b, 0xA002, 4, 1, uint32(w))
	b = entry(b, 0xA003, 3, 1, uint32(h))
	b = le.AppendUint32(b, 0)
	return append(b, "2026:03:01 10:00:00\x00"...)
}

func TestPrepareEvidence_FixesEXIFPixelSize(t *testing.T) {
	var buf bytes.Buffer
	jpeg.Encode(&buf, evidencetest.Picture(9, 2000, 1000), &jpeg.Options{Quality: 80})
	src := evidencetest.SpliceEXIF(buf.Bytes(), exifWithSize(2000, 1000))
	if v, _ := readEXIF(t, src).Get(exif.PixelXDimension); v == nil {
		t.Fatal("fixture has no PixelXDimension")
	}
	c := openTest(t, t.TempDir(), "", nil)
	ref, err := c.PrepareEvidence(writeFile(t, "p.jpg", src), "before", "image/jpeg")
	if err != nil {
		t.Fatal(err)
	}
	p, _ := c.EvidenceFile(ref.SHA256)
	out, _ := os.ReadFile(p)
	x := readEXIF(t, out)
	for _, f := range []struct {
		name exif.FieldName
		want int
	}{{exif.PixelXDimension, 1600}, {exif.PixelYDimension, 800}} {
		tag, err := x.Get(f.name)
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		if v, _ := tag.Int(0); v != f.want {
			t.Errorf("%s = %d, want %d", f.name, v, f.want)
		}
	}
	if tm, err := x.DateTime(); err != nil || tm.Hour() != 10 {
		t.Errorf("DateTimeOriginal = %v %v", tm, err)
	}
}

func TestMetadataSegments_Malformed(t *testing.T) {
	for _, b := range [][]byte{nil, []byte("\xff\xd8"), []byte("\xff\xd8\xff\xe1\x00"), []byte("\xff\xd8\xff\xe1\xff\xff Exif"), []byte("not a jpeg at all")} {
		if exif, icc := metadataSegments(b); exif != nil || icc != nil {
			t.Errorf("%q: %q %q", b, exif, icc)
		}
	}
	// A truncated IFD is left alone.
	ex := exifWithSize(10, 10)
	patchEXIFSize(ex[:30], 5, 5)
	patchEXIFSize([]byte("MM\x00\x2a\xff\xff\xff\xff"), 1, 1)
	patchEXIFSize(nil, 1, 1)
}

func TestScaledSize(t *testing.T) {
	for _, tc := range []struct{ w, h, max, ww, wh int }{
		{4000, 3000, 1600, 1600, 1200},
		{3000, 4000, 1600, 1200, 1600},
		{5000, 2, 1600, 1600, 1},
		{1601, 1601, 1600, 1600, 1600},
	} {
		if w, h := scaledSize(tc.w, tc.h, tc.max); w != tc.ww || h != tc.wh {
			t.Errorf("%d×%d into %d: %d×%d, want %d×%d", tc.w, tc.h, tc.max, w, h, tc.ww, tc.wh)
		}
	}
}

// FuzzMetadataSegments feeds the JPEG header walk and the EXIF size patch
// arbitrary bytes: they must never panic or read out of bounds.
func FuzzMetadataSegments(f *testing.F) {
	g := gpsAt
	f.Add(evidencetest.JPEG(evidencetest.Photo{Seed: 1, Width: 16, Height: 16, Taken: taken, GPS: &g, Orientation: 6}))
	f.Add(evidencetest.SpliceEXIF(evidencetest.JPEG(evidencetest.Photo{Seed: 2, Width: 8, Height: 8, NoEXIF: true}), exifWithSize(8, 8)))
	f.Add([]byte("\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08"))
	f.Fuzz(func(t *testing.T, b []byte) {
		exif, icc := metadataSegments(b)
		if exif != nil {
			if len(exif) < exifHeaderLen {
				t.Fatalf("EXIF segment of %d bytes", len(exif))
			}
			patchEXIFSize(exif[exifHeaderLen:], 1600, 1200)
		}
		for _, s := range icc {
			if !bytes.HasPrefix(s[4:], iccPrefix) {
				t.Fatal("not an ICC segment")
			}
		}
		patchEXIFSize(b, 3, 4)
	})
}
