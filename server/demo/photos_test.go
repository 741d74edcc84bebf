package demo

import (
	"bytes"
	"math"
	"testing"
	"time"

	"fieldsync/server/evidence"
)

// TestDemoPhotos_EXIFAndLikeness: a demo photo says where and when it was
// taken as a camera's EXIF would; the same spec gives the same bytes; a
// retouched copy is a near duplicate by the checks' measure, and the
// pictures of a PhotoSet are not.
func TestDemoPhotos_EXIFAndLikeness(t *testing.T) {
	taken := time.Date(2026, 11, 28, 14, 3, 0, 0, time.FixedZone("CST", 8*3600))
	gps := [2]float64{103.71, 25.02}
	ps := NewPhotoSet(7)
	var hashes []uint64
	for i := range 40 {
		spec := PhotoSpec{Kind: i % 2, Taken: taken, GPS: &gps}
		spec, data, err := ps.New(spec)
		if err != nil {
			t.Fatal(err)
		}
		again, err := PhotoJPEG(spec)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("photo %d: not deterministic (%v)", i, err)
		}
		m, err := evidence.Analyze(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		if m.MediaType != "image/jpeg" || m.Width != PhotoWidth || m.Height != PhotoHeight || m.PHash == nil {
			t.Fatalf("photo %d: %+v", i, m)
		}
		if m.GPS == nil || math.Abs(m.GPS[0]-gps[0]) > 1e-6 || math.Abs(m.GPS[1]-gps[1]) > 1e-6 {
			t.Fatalf("photo %d: GPS %v, want %v", i, m.GPS, gps)
		}
		if m.Taken.Floating || !m.Taken.Time.Equal(taken) {
			t.Fatalf("photo %d: taken %+v, want %v", i, m.Taken, taken)
		}
		for j, h := range hashes {
			if d := evidence.Distance(h, *m.PHash); d <= evidence.DefaultNearDuplicateDistance {
				t.Errorf("photos %d and %d look alike (distance %d)", j, i, d)
			}
		}
		hashes = append(hashes, *m.PHash)
		if i < 4 {
			spec.Quality, spec.Shade = 60, 15
			copyData, err := PhotoJPEG(spec)
			if err != nil {
				t.Fatal(err)
			}
			c, _ := evidence.Analyze(bytes.NewReader(copyData), int64(len(copyData)))
			if bytes.Equal(copyData, data) || c.PHash == nil || evidence.Distance(*c.PHash, *m.PHash) > evidence.DefaultNearDuplicateDistance {
				t.Errorf("photo %d: the retouched copy is not a near duplicate", i)
			}
		}
	}
}
