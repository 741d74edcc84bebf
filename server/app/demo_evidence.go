package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/paulmach/orb"

	"fieldsync/server/blob"
	"fieldsync/server/demo"
	"fieldsync/server/geo"
	"fieldsync/server/sqlstore"
	"fieldsync/server/upload"
	"fieldsync/syncproto"
)

// The demo's evidence. Every demo visit carries the photos and scans its
// form asks for: generated JPEGs with the EXIF a phone camera writes
// (capture time with its offset, GPS position). Most are clean: taken a
// few minutes before the visit, a few metres from its point. A few in
// every form are not, in the ways the evidence checks look for:
//
//   - far: the photo's GPS is 5 to 15 km from the visit point;
//   - other day: the photo was taken 2 to 9 days before the visit;
//   - missing: a required slot is left empty;
//   - not uploaded: a required slot names a photo the device never sent;
//   - reused: the same file as the previous visit's (another household);
//   - near duplicate: the previous visit's photo, retouched and re-saved;
//
// and a few visits have no GPS point, a poor accuracy, or a point outside
// their villager group. The blobs go into the configured blob store and
// are recorded unanalysed: the upload handler's analysis worker reads
// their EXIF and perceptual hashes and runs the real checks, which raise
// the flags.

// demoSlotKind says what a demo form's evidence slots hold.
var demoSlotKind = map[string][]struct {
	slot string
	kind int
}{
	"house_retrofit_inspection": {{"before", demo.PictureScene}, {"after", demo.PictureScene}, {"certificate", demo.PictureDocument}},
	"water_cellar_progress":     {{"progress", demo.PictureScene}},
	"household_survey":          {{"household_register", demo.PictureDocument}, {"id_card", demo.PictureDocument}, {"household_head_signature", demo.PictureDocument}},
}

// demoFlaw is what is wrong with a demo visit's evidence.
type demoFlaw int

const (
	flawNone demoFlaw = iota
	flawFar
	flawOtherDay
	flawMissing
	flawReused
	flawNearDuplicate
	flawNotUploaded
)

// demoFlawPeriod: in each form, one visit in period has each flaw (at
// offsets period/7, 2·period/7, ...), so most visits are clean.
var demoFlawPeriod = map[string]int{"house_retrofit_inspection": 70, "water_cellar_progress": 21, "household_survey": 42}

// DemoEvidenceStats counts what the demo's evidence holds.
type DemoEvidenceStats struct {
	Photos        int // distinct files stored
	Visits        int // visits with evidence planned
	Clean         int // visits with every photo clean
	Far           int
	OtherDay      int
	Missing       int
	NotUploaded   int
	Reused        int
	NearDuplicate int
	NoGPS         int
	PoorAccuracy  int
	Outside       int
	ClockSkew     int // received before the tablet's clock said it was recorded
	// Screened counts the seeds hashed to pick distinct pictures: 0
	// while demo.PhotoSet's committed list for DemoSeed covers the demo
	// (hashing them at every start is what made it slow).
	Screened int
}

type demoPhoto struct {
	spec demo.PhotoSpec
	data []byte
	ref  syncproto.EvidenceRef
}

func newDemoPhoto(spec demo.PhotoSpec, data []byte, slot string) demoPhoto {
	sum := sha256.Sum256(data)
	return demoPhoto{spec: spec, data: data, ref: syncproto.EvidenceRef{SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), MediaType: "image/jpeg", Slot: slot}}
}

// demoEvidence gives the demo visits their evidence (changing vs in
// place), puts the blobs into the blob store and records them for
// analysis. Call it before the visits are imported.
// It returns the visits that reference no stored blob: the analysis
// worker never reaches them, so their checks are run once they are
// imported.
func demoEvidence(ctx context.Context, st *sqlstore.Store, blobs blob.Store, ds *demo.Dataset, vs []sqlstore.ImportedVisit) (DemoEvidenceStats, []string, error) {
	var stats DemoEvidenceStats
	var checkNow []string
	rng := rand.New(rand.NewPCG(DemoSeed, 0x65766964656e6365)) // "evidence"
	photos := demo.NewPhotoSet(DemoSeed)
	households := map[string]demo.Household{}
	for _, h := range ds.Households {
		households[h.ID] = h
	}
	boundaries := map[string]orb.Geometry{}
	for _, p := range ds.Places {
		boundaries[p.Code] = p.Boundary
	}
	cst := time.FixedZone("CST", 8*3600)
	index := map[string]int{}            // visits seen per form
	previous := map[string][]demoPhoto{} // the previous visit's photos, per form
	stored := map[string]demoPhoto{}     // sha256 → photo to store
	for i := range vs {
		v := &vs[i].Visit
		slots, ok := demoSlotKind[v.FormID]
		if !ok {
			continue
		}
		h := households[v.HouseholdID]
		k := index[v.FormID]
		index[v.FormID]++
		period := demoFlawPeriod[v.FormID]
		flaw := flawNone
		if off := k % period; off%(period/7) == 0 && off > 0 {
			flaw = demoFlaw(off / (period / 7))
		}
		if (flaw == flawReused || flaw == flawNearDuplicate) && len(previous[v.FormID]) == 0 {
			flaw = flawNone
		}
		// Visit-level flaws, in the first visits of two forms.
		if v.FormID != "water_cellar_progress" {
			switch k {
			case 1:
				v.Point = nil
				stats.NoGPS++
			case 2:
				v.AccuracyM = 3 * formMaxAccuracy(ds, v.FormID)
				stats.PoorAccuracy++
			case 3:
				v.Point = outside(boundaries[v.PlaceCode], h, rng)
				stats.Outside++
			case 4:
				// A tablet whose clock runs two days fast: the server
				// received the visit an hour after it was really made.
				v.ServerTime = v.DeviceTime.Add(-47 * time.Hour)
				stats.ClockSkew++
			}
		}
		// Where and when the photos were taken, by default.
		at := orb.Point{h.Lon, h.Lat}
		if v.Point != nil {
			at = orb.Point{v.Point.Lon, v.Point.Lat}
		}
		clean := func() demo.PhotoSpec {
			gps := [2]float64{at[0] + (rng.Float64()-0.5)*0.0006, at[1] + (rng.Float64()-0.5)*0.0006}
			return demo.PhotoSpec{Taken: v.DeviceTime.In(cst).Add(-time.Duration(1+rng.IntN(40)) * time.Minute).Truncate(time.Second), GPS: &gps}
		}
		var mine []demoPhoto
		flawed := rng.IntN(len(slots)) // the slot a photo flaw is in
		if flaw == flawMissing || flaw == flawNotUploaded {
			flawed = len(slots) - 1 // the certificate, the signature, the only photo
		}
		for j, s := range slots {
			spec := clean()
			spec.Kind = s.kind
			f := flawNone
			if j == flawed {
				f = flaw
			}
			switch f {
			case flawMissing:
				continue
			case flawFar:
				a, d := rng.Float64()*2*math.Pi, 0.05+0.1*rng.Float64()
				spec.GPS = &[2]float64{at[0] + d*math.Cos(a), at[1] + d*math.Sin(a)}
			case flawOtherDay:
				spec.Taken = spec.Taken.AddDate(0, 0, -(2 + rng.IntN(8)))
			case flawReused:
				p := previous[v.FormID][min(j, len(previous[v.FormID])-1)]
				p.ref.Slot = s.slot
				mine = append(mine, p)
				continue
			case flawNearDuplicate:
				p := previous[v.FormID][min(j, len(previous[v.FormID])-1)]
				spec = p.spec
				spec.Quality, spec.Shade = 60, 10+rng.IntN(10)
				data, err := demo.PhotoJPEG(spec)
				if err != nil {
					return stats, nil, err
				}
				mine = append(mine, newDemoPhoto(spec, data, s.slot))
				continue
			}
			spec, data, err := photos.New(spec)
			if err != nil {
				return stats, nil, err
			}
			p := newDemoPhoto(spec, data, s.slot)
			if f == flawNotUploaded {
				v.Evidence = append(v.Evidence, p.ref) // named, never sent
				continue
			}
			mine = append(mine, p)
		}
		for _, p := range mine {
			v.Evidence = append(v.Evidence, p.ref)
			stored[p.ref.SHA256] = p
		}
		previous[v.FormID] = mine
		if len(mine) == 0 {
			checkNow = append(checkNow, v.ID)
		}
		stats.Visits++
		switch flaw {
		case flawNone:
			stats.Clean++
		case flawFar:
			stats.Far++
		case flawOtherDay:
			stats.OtherDay++
		case flawMissing:
			stats.Missing++
		case flawNotUploaded:
			stats.NotUploaded++
		case flawReused:
			stats.Reused++
		case flawNearDuplicate:
			stats.NearDuplicate++
		}
	}
	stats.Photos = len(stored)
	stats.Screened = photos.Screened()
	return stats, checkNow, storeDemoBlobs(ctx, st, blobs, stored)
}

// storeDemoBlobs puts the photos into the blob store (which verifies
// their hashes), a few at a time, and records them for analysis.
func storeDemoBlobs(ctx context.Context, st *sqlstore.Store, blobs blob.Store, photos map[string]demoPhoto) error {
	now := time.Now().UTC()
	recs := make([]upload.Blob, 0, len(photos))
	work := make(chan demoPhoto)
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				if err := blobs.Put(ctx, p.ref.SHA256, p.ref.Size, bytes.NewReader(p.data)); err != nil {
					errs <- fmt.Errorf("demo photo %s: %w", p.ref.SHA256, err)
					return
				}
			}
		}()
	}
	var failed error
feed:
	for _, p := range photos {
		recs = append(recs, upload.Blob{SHA256: p.ref.SHA256, Size: p.ref.Size, MediaType: p.ref.MediaType, StoredAt: now})
		select {
		case work <- p:
		case failed = <-errs:
			break feed
		}
	}
	close(work)
	wg.Wait()
	if failed == nil {
		select {
		case failed = <-errs:
		default:
		}
	}
	if failed != nil {
		return failed
	}
	return st.RecordBlobs(ctx, recs)
}

func formMaxAccuracy(ds *demo.Dataset, id string) float64 {
	for _, f := range ds.Forms {
		if f.ID == id && f.MaxAccuracyM > 0 {
			return f.MaxAccuracyM
		}
	}
	return 50
}

// outside returns a point 1 to 3 km from the household that is outside
// its villager group's boundary (the worker recorded the visit at home).
func outside(boundary orb.Geometry, h demo.Household, rng *rand.Rand) *syncproto.Point {
	for d := 0.01; ; d += 0.01 {
		a := rng.Float64() * 2 * math.Pi
		p := orb.Point{h.Lon + d*math.Cos(a), h.Lat + d*math.Sin(a)}
		if boundary == nil || !geo.Contains(boundary, p) || d > 0.3 {
			return &syncproto.Point{Lon: p[0], Lat: p[1]}
		}
	}
}
