package sqlstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"fieldsync/server/evidence"
	"fieldsync/server/evidence/evidencetest"
	"fieldsync/server/servertest"
	"fieldsync/server/sqlstore"
	"fieldsync/server/upload"
	"fieldsync/server/upload/uploadtest"
	"fieldsync/syncproto"
)

// arrive records data as a present blob (what a finished upload does) and
// runs the checks of the visits that reference it.
func arrive(t *testing.T, env *servertest.Env, data []byte) {
	t.Helper()
	meta, err := evidence.Analyze(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	sum := uploadtest.Sum(data)
	b := upload.Blob{SHA256: sum, Size: int64(len(data)), MediaType: meta.MediaType, StoredAt: time.Now(), Meta: meta}
	if err := env.Store.CompleteUpload(ctx, "no-such-upload", b, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := env.Store.BlobArrived(ctx, sum); err != nil {
		t.Fatal(err)
	}
}

// flagsOf lists a visit's flags as "flag" (visit flags) or "flag@sum[:6]".
func flagsOf(t *testing.T, env *servertest.Env, visitID string) string {
	t.Helper()
	fs, err := env.Store.EvidenceFlags(ctx, visitID)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range fs {
		if f.Detail == "" || f.VisitID != visitID {
			t.Errorf("flag %+v", f)
		}
		s := f.Flag
		if f.SHA256 != "" {
			s += "@" + f.SHA256[:6]
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func at(sum string, flags ...string) string {
	var out []string
	for _, f := range flags {
		out = append(out, f+"@"+sum[:6])
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

var cst = time.FixedZone("", 8*3600)

// onVisitDay is 09:30 China time on the day uploadtest.Visit is recorded.
var onVisitDay = time.Date(2026, 3, 1, 9, 30, 0, 0, cst)

func TestEvidenceChecks_PerFlag(t *testing.T) {
	env := servertest.Start(t)
	dev := uploadtest.NewDevice(t, env, "worker", "G11", "G12")
	hh := syncproto.NewID(time.Now())
	uploadtest.Household(t, env, hh, "G11")
	seed := uint64(100)
	photo := func(p evidencetest.Photo) []byte {
		seed++
		p.Seed = seed
		return evidencetest.JPEG(p)
	}
	gps := func(lon, lat float64) *[2]float64 { return &[2]float64{lon, lat} }
	tests := []struct {
		name  string
		photo evidencetest.Photo
		edit  func(v *syncproto.Visit)
		want  func(sum string) string
	}{
		{"clean: near, same day, inside, accurate",
			evidencetest.Photo{GPS: gps(103.1505, 25.1505), Taken: onVisitDay, TakenOffset: true}, nil,
			func(string) string { return "" }},
		{"no EXIF at all", evidencetest.Photo{NoEXIF: true}, nil, func(string) string { return "" }},
		{"photo 1 km from the visit point",
			evidencetest.Photo{GPS: gps(103.16, 25.15), Taken: onVisitDay, TakenOffset: true}, nil,
			func(s string) string { return at(s, evidence.FlagGPSFar) }},
		{"photo 150 m from the visit point",
			evidencetest.Photo{GPS: gps(103.1515, 25.15)}, nil,
			func(string) string { return "" }},
		{"photo taken the day before",
			evidencetest.Photo{Taken: onVisitDay.AddDate(0, 0, -1), TakenOffset: true}, nil,
			func(s string) string { return at(s, evidence.FlagOtherDay) }},
		{"photo time without zone, same wall-clock day",
			evidencetest.Photo{Taken: time.Date(2026, 3, 1, 23, 50, 0, 0, time.UTC)}, nil,
			func(string) string { return "" }},
		{"photo GPS time (UTC) on the visit day in China",
			evidencetest.Photo{GPSTime: time.Date(2026, 2, 28, 17, 0, 0, 0, time.UTC)}, nil,
			func(string) string { return "" }},
		// 20:00 and 08:00 on 1 March in UTC-5 are 09:00 on 2 March and
		// 21:00 on 1 March in China: the device's own zone decides.
		{"same day in the zone the device gave",
			evidencetest.Photo{Taken: time.Date(2026, 3, 1, 8, 0, 0, 0, time.FixedZone("", -5*3600)), TakenOffset: true},
			func(v *syncproto.Visit) {
				v.DeviceTime = time.Date(2026, 3, 1, 20, 0, 0, 0, time.FixedZone("", -5*3600))
			},
			func(string) string { return "" }},
		{"device gave UTC: the day is China's",
			evidencetest.Photo{Taken: time.Date(2026, 3, 1, 8, 0, 0, 0, time.FixedZone("", -5*3600)), TakenOffset: true},
			func(v *syncproto.Visit) { v.DeviceTime = time.Date(2026, 3, 2, 1, 0, 0, 0, time.UTC) },
			func(s string) string { return at(s, evidence.FlagOtherDay) }},
		{"visit point outside the household's place",
			evidencetest.Photo{}, func(v *syncproto.Visit) { v.Point = &syncproto.Point{Lon: 103.25, Lat: 25.15} },
			func(string) string { return evidence.FlagOutsidePlace }},
		{"accuracy worse than the form allows",
			evidencetest.Photo{}, func(v *syncproto.Visit) { v.AccuracyM = 31 },
			func(string) string { return evidence.FlagPoorAccuracy }},
		{"accuracy at the form's limit",
			evidencetest.Photo{}, func(v *syncproto.Visit) { v.AccuracyM = 30 },
			func(string) string { return "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := photo(tt.photo)
			id := syncproto.NewID(time.Now())
			v := uploadtest.Visit(id, hh, uploadtest.Ref(data, "progress"))
			if tt.edit != nil {
				tt.edit(&v)
			}
			dev.PushVisit(t, v)
			arrive(t, env, data)
			if got, want := flagsOf(t, env, id), tt.want(uploadtest.Sum(data)); got != want {
				t.Errorf("flags = %q, want %q", got, want)
			}
		})
	}
}

func TestEvidenceChecks_AcrossHouseholds(t *testing.T) {
	env := servertest.Start(t)
	dev := uploadtest.NewDevice(t, env, "worker", "G11")
	h1, h2, h3 := syncproto.NewID(time.Now()), syncproto.NewID(time.Now()), syncproto.NewID(time.Now())
	for _, h := range []string{h1, h2, h3} {
		uploadtest.Household(t, env, h, "G11")
	}
	push := func(hh string, refs ...[]byte) string {
		id := syncproto.NewID(time.Now())
		var rs []syncproto.EvidenceRef
		for _, r := range refs {
			rs = append(rs, uploadtest.Ref(r, "progress"))
		}
		m := syncproto.Mutation{Kind: syncproto.KindVisitCreate, Visit: ptr(uploadtest.Visit(id, hh, rs...))}
		req := dev.Push(t, m)
		// What the API's push handler does once the push has committed.
		m.Seq = req.Results[0].Seq
		if err := env.Store.RunEvidenceChecksForPush(ctx, &syncproto.PushRequest{Mutations: []syncproto.Mutation{m}}, req); err != nil {
			t.Fatal(err)
		}
		return id
	}

	// The same photo on two visits of one household is fine.
	same := evidencetest.JPEG(evidencetest.Photo{Seed: 1})
	a1 := push(h1, same)
	a2 := push(h1, same)
	if got := flagsOf(t, env, a1) + flagsOf(t, env, a2); got != "" {
		t.Errorf("one household: %q", got)
	}
	// Attached to a second household: both sides are flagged, before the
	// photo has even arrived.
	b1 := push(h2, same)
	want := at(uploadtest.Sum(same), evidence.FlagSameBlob)
	for _, id := range []string{a1, a2, b1} {
		if got := flagsOf(t, env, id); got != want {
			t.Errorf("visit %s: %q, want %q", id, got, want)
		}
	}
	arrive(t, env, same)
	if got := flagsOf(t, env, b1); got != want {
		t.Errorf("after arrival: %q", got)
	}

	// Near-identical photos (re-encoded, resized) on two households: both
	// flagged; a different picture is not.
	orig := evidencetest.JPEG(evidencetest.Photo{Seed: 7, Width: 640, Height: 480})
	copyOf := evidencetest.JPEG(evidencetest.Photo{Seed: 7, Width: 480, Height: 360, Quality: 50})
	other := evidencetest.JPEG(evidencetest.Photo{Seed: 8, Width: 640, Height: 480})
	n1 := push(h1, orig)
	arrive(t, env, orig)
	n3 := push(h3, other)
	arrive(t, env, other)
	// The copy's visit arrives after the photo it copies is present, and
	// its own photo arrives later still.
	n2 := push(h2, copyOf)
	if got := flagsOf(t, env, n2); got != "" {
		t.Errorf("before its photo arrived: %q", got)
	}
	arrive(t, env, copyOf)
	if got, want := flagsOf(t, env, n1), at(uploadtest.Sum(orig), evidence.FlagNearDuplicate); got != want {
		t.Errorf("original: %q, want %q", got, want)
	}
	if got, want := flagsOf(t, env, n2), at(uploadtest.Sum(copyOf), evidence.FlagNearDuplicate); got != want {
		t.Errorf("copy: %q, want %q", got, want)
	}
	if got := flagsOf(t, env, n3); got != "" {
		t.Errorf("different picture: %q", got)
	}

	// A copy cropped by 20% around the centre (its whole-picture hash is
	// far from the original's) is found through the crop hashes, both
	// when it arrives after the original and when the original comes last.
	cropSrc := evidencetest.Photo{Seed: 21, Width: 640, Height: 480}
	cropped := evidencetest.CentredCrop(cropSrc, 0.8)
	if m, _ := evidence.Analyze(bytes.NewReader(cropped), int64(len(cropped))); m.PHash == nil {
		t.Fatal("cropped copy: no hash")
	} else if o, _ := evidence.Analyze(bytes.NewReader(evidencetest.JPEG(cropSrc)), 1<<20); evidence.Distance(*m.PHash, *o.PHash) <= evidence.DefaultNearDuplicateDistance {
		t.Fatalf("the fixture crop is near its original without crop hashes (distance %d): it tests nothing", evidence.Distance(*m.PHash, *o.PHash))
	}
	c1 := push(h3, cropped)
	arrive(t, env, cropped)
	c2 := push(h1, evidencetest.JPEG(cropSrc))
	arrive(t, env, evidencetest.JPEG(cropSrc))
	if got, want := flagsOf(t, env, c1), at(uploadtest.Sum(cropped), evidence.FlagNearDuplicate); got != want {
		t.Errorf("cropped copy: %q, want %q", got, want)
	}
	if got, want := flagsOf(t, env, c2), at(uploadtest.Sum(evidencetest.JPEG(cropSrc)), evidence.FlagNearDuplicate); got != want {
		t.Errorf("original of the crop: %q, want %q", got, want)
	}

	// A visit whose photo is already present gets its checks when it is
	// pushed (no upload follows).
	far := evidencetest.JPEG(evidencetest.Photo{Seed: 9, GPS: &[2]float64{103.2, 25.2}})
	first := push(h1, far)
	arrive(t, env, far)
	later := push(h1, far)
	if got, want := flagsOf(t, env, later), at(uploadtest.Sum(far), evidence.FlagGPSFar); got != want || flagsOf(t, env, first) != want {
		t.Errorf("visit pushed after its photo: %q / %q, want %q", got, flagsOf(t, env, first), want)
	}
}

func ptr[T any](v T) *T { return &v }

// TestEvidenceChecks_OffCentreCrops: a copy cropped by 10% at a corner or
// on one side, on another household, is flagged through the off-centre
// crop hashes, both when the crop arrives after its original (the new
// photo is a crop of a stored one) and when the original arrives last (the
// stored photo is a crop of the new one); an unrelated picture is not.
func TestEvidenceChecks_OffCentreCrops(t *testing.T) {
	env := servertest.Start(t)
	dev := uploadtest.NewDevice(t, env, "worker", "G11")
	h1, h2, h3 := syncproto.NewID(time.Now()), syncproto.NewID(time.Now()), syncproto.NewID(time.Now())
	for _, h := range []string{h1, h2, h3} {
		uploadtest.Household(t, env, h, "G11")
	}
	push := func(hh string, data []byte) string {
		id := syncproto.NewID(time.Now())
		m := syncproto.Mutation{Kind: syncproto.KindVisitCreate, Visit: ptr(uploadtest.Visit(id, hh, uploadtest.Ref(data, "progress")))}
		req := dev.Push(t, m)
		m.Seq = req.Results[0].Seq
		if err := env.Store.RunEvidenceChecksForPush(ctx, &syncproto.PushRequest{Mutations: []syncproto.Mutation{m}}, req); err != nil {
			t.Fatal(err)
		}
		return id
	}
	hashes := func(data []byte) evidence.Use {
		m, err := evidence.Analyze(bytes.NewReader(data), int64(len(data)))
		if err != nil || m.PHash == nil || len(m.ShiftHashes) != len(evidence.ShiftCrops) {
			t.Fatalf("hashes: %+v, %v", m, err)
		}
		return evidence.Use{PHash: m.PHash, Crops: m.CropHashes, Shifts: m.ShiftHashes}
	}
	limit := evidence.DefaultNearDuplicateDistance
	var checked [][2]string // visit, photo: flagged
	seed := uint64(30)
	for _, crop := range []struct {
		name   string
		ax, ay float64
	}{{"corner", 0, 0}, {"side", 1, 0.5}} {
		for _, cropFirst := range []bool{false, true} {
			// The next picture whose crop the whole picture and centred
			// crops miss (most of them).
			var orig, cropped []byte
			for tries := 0; ; tries++ {
				seed++
				src := evidencetest.Photo{Seed: seed, Width: 640, Height: 480}
				orig, cropped = evidencetest.JPEG(src), evidencetest.Crop(src, 0.9, crop.ax, crop.ay)
				o, c := hashes(orig), hashes(cropped)
				o.Shifts, c.Shifts = nil, nil
				if d, _ := evidence.UseDistance(o, c); d > limit {
					break
				}
				if tries == 10 {
					t.Fatalf("%s crop: 10 pictures near their crop without off-centre hashes: the fixture tests nothing", crop.name)
				}
			}
			if d, _ := evidence.UseDistance(hashes(orig), hashes(cropped)); d > limit {
				t.Fatalf("%s crop, seed %d: distance %d > %d", crop.name, seed, d, limit)
			}
			var vo, vc string
			if cropFirst {
				vc = push(h2, cropped)
				arrive(t, env, cropped)
				vo = push(h1, orig)
				arrive(t, env, orig)
			} else {
				vo = push(h1, orig)
				arrive(t, env, orig)
				vc = push(h2, cropped)
				arrive(t, env, cropped)
			}
			for _, vp := range [][2]any{{vo, orig}, {vc, cropped}} {
				id, data := vp[0].(string), vp[1].([]byte)
				if got, want := flagsOf(t, env, id), at(uploadtest.Sum(data), evidence.FlagNearDuplicate); got != want {
					t.Errorf("%s crop (crop first %v), visit of %s: %q, want %q", crop.name, cropFirst, map[bool]string{true: "the original", false: "the crop"}[id == vo], got, want)
				}
				checked = append(checked, [2]string{id, uploadtest.Sum(data)})
			}
		}
	}
	// An unrelated picture, on a third household, is flagged by none.
	other := evidencetest.JPEG(evidencetest.Photo{Seed: 99, Width: 640, Height: 480})
	vx := push(h3, other)
	arrive(t, env, other)
	if got := flagsOf(t, env, vx); got != "" {
		t.Errorf("unrelated picture: %q", got)
	}
	for _, c := range checked {
		if got, want := flagsOf(t, env, c[0]), at(c[1], evidence.FlagNearDuplicate); got != want {
			t.Errorf("after the unrelated picture, visit %s: %q, want %q", c[0], got, want)
		}
	}
}

func TestEvidenceChecks_RerunReplacesOwnFlags(t *testing.T) {
	env := servertest.Start(t)
	dev := uploadtest.NewDevice(t, env, "worker", "G11")
	hh := syncproto.NewID(time.Now())
	uploadtest.Household(t, env, hh, "G11")
	data := evidencetest.JPEG(evidencetest.Photo{Seed: 3, GPS: &[2]float64{103.16, 25.15}})
	id := syncproto.NewID(time.Now())
	dev.PushVisit(t, uploadtest.Visit(id, hh, uploadtest.Ref(data, "progress")))
	arrive(t, env, data)
	want := at(uploadtest.Sum(data), evidence.FlagGPSFar)
	if got := flagsOf(t, env, id); got != want {
		t.Fatalf("flags %q", got)
	}
	// A wider limit: running the checks again drops the flag.
	env.Store.SetEvidenceConfig(evidence.Config{MaxDistanceM: 5000})
	if err := env.Store.RunEvidenceChecks(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got := flagsOf(t, env, id); got != "" {
		t.Errorf("after widening: %q", got)
	}
	if err := env.Store.RunEvidenceChecks(ctx, syncproto.NewID(time.Now())); err == nil {
		t.Errorf("checks of an unknown visit succeeded")
	}
}

func TestUploadsStore(t *testing.T) {
	env := servertest.Start(t)
	st := env.Store
	now := time.Now().UTC()
	u := upload.Upload{ID: strings.Repeat("a", 32), DeviceID: "dev", SHA256: strings.Repeat("b", 64), Length: 10,
		CreatedAt: now, ExpiresAt: now.Add(time.Hour), Metadata: map[string]string{"filename": "a.jpg"}}
	if err := st.CreateUpload(ctx, u); err != nil {
		t.Fatal(err)
	}
	got, err := st.Upload(ctx, u.ID)
	if err != nil || got.Length != 10 || got.Done || got.Metadata["filename"] != "a.jpg" || !got.ExpiresAt.Equal(u.ExpiresAt.Truncate(time.Nanosecond)) {
		t.Fatalf("upload %+v %v", got, err)
	}
	if err := st.UpdateUpload(ctx, u.ID, 4, now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if a, err := st.ActiveUploads(ctx, "dev", 100); err != nil || len(a) != 1 || a[0].ID != u.ID || a[0].Offset != 4 {
		t.Errorf("active = %+v %v", a, err)
	}
	// Expiry compares times, not strings: 10:00:00.5 is after 10:00:00.
	exp, err := st.ExpiredUploads(ctx, now.Add(2*time.Hour).Add(-time.Millisecond))
	if err != nil || len(exp) != 0 {
		t.Errorf("expired early: %v %v", exp, err)
	}
	exp, err = st.ExpiredUploads(ctx, now.Add(2*time.Hour).Add(time.Millisecond))
	if err != nil || len(exp) != 1 || exp[0].Offset != 4 {
		t.Errorf("expired: %+v %v", exp, err)
	}
	if err := st.DeleteUpload(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Upload(ctx, u.ID); err == nil {
		t.Errorf("deleted upload found")
	}
	if missing, err := st.MissingBlobs(ctx, []string{u.SHA256, u.SHA256}); err != nil || len(missing) != 1 {
		t.Errorf("missing %v %v", missing, err)
	}
}

// TestActiveUploads_Limits: a device's unfinished uploads, oldest first,
// at most limit of them, over limits from none to more than there are;
// finished uploads and other devices' are not listed.
func TestActiveUploads_Limits(t *testing.T) {
	env := servertest.Start(t)
	st := env.Store
	now := time.Now().UTC()
	mk := func(i int, dev string) upload.Upload {
		u := upload.Upload{ID: fmt.Sprintf("%032x", 1000+i), DeviceID: dev, SHA256: fmt.Sprintf("%064x", i), Length: 10,
			CreatedAt: now.Add(time.Duration(i) * time.Second), ExpiresAt: now.Add(time.Hour)}
		if err := st.CreateUpload(ctx, u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	const n = 9
	var want []string
	// Created newest first, so that the order is the store's doing.
	for i := n - 1; i >= 0; i-- {
		want = append([]string{mk(i, "dev").ID}, want...)
	}
	mk(50, "other")
	done := mk(-1, "dev")
	if err := st.CompleteUpload(ctx, done.ID, upload.Blob{SHA256: done.SHA256, Size: 10, MediaType: "image/jpeg", StoredAt: now}, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int{-1, 0, 1, 2, n - 1, n, n + 1, 1000, 1 << 30} {
		got, err := st.ActiveUploads(ctx, "dev", limit)
		if err != nil {
			t.Fatalf("limit %d: %v", limit, err)
		}
		ids := make([]string, len(got))
		for i, u := range got {
			ids[i] = u.ID
		}
		if w := want[:min(max(limit, 0), n)]; !slices.Equal(ids, w) {
			t.Errorf("limit %d: %v, want %v", limit, ids, w)
		}
	}
}

// TestEvidenceChecks_PlainVisitsOfAPush: visits without evidence are
// checked together after their push: the ones outside their place or
// with poor accuracy are flagged, the others not; checking again changes
// nothing, and a fixed boundary clears the flag.
func TestEvidenceChecks_PlainVisitsOfAPush(t *testing.T) {
	env := servertest.Start(t)
	dev := uploadtest.NewDevice(t, env, "worker", "G11")
	hh := syncproto.NewID(time.Now())
	uploadtest.Household(t, env, hh, "G11")
	var muts []syncproto.Mutation
	var ids []string
	for _, change := range []func(*syncproto.Visit){
		func(*syncproto.Visit) {},
		func(v *syncproto.Visit) { v.Point = &syncproto.Point{Lon: 103.25, Lat: 25.15} },
		func(v *syncproto.Visit) { v.AccuracyM = 31 },
		func(v *syncproto.Visit) { v.Point, v.AccuracyM = &syncproto.Point{Lon: 103.25, Lat: 25.15}, 50 },
	} {
		v := uploadtest.Visit(syncproto.NewID(time.Now()), hh)
		change(&v)
		ids = append(ids, v.ID)
		muts = append(muts, syncproto.Mutation{Kind: syncproto.KindVisitCreate, Visit: &v})
	}
	resp := dev.Push(t, muts...)
	for i := range muts {
		muts[i].Seq = resp.Results[i].Seq
	}
	req := &syncproto.PushRequest{Mutations: muts}
	if err := env.Store.RunEvidenceChecksForPush(ctx, req, resp); err != nil {
		t.Fatal(err)
	}
	want := []string{"", evidence.FlagOutsidePlace, evidence.FlagPoorAccuracy, evidence.FlagPoorAccuracy + "," + evidence.FlagOutsidePlace} // sorted
	check := func(when string) {
		t.Helper()
		for i, id := range ids {
			var got []string
			fs, err := env.Store.EvidenceFlags(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range fs {
				got = append(got, f.Flag)
			}
			slices.Sort(got)
			if g := strings.Join(got, ","); g != want[i] {
				t.Errorf("%s: visit %d flags %q, want %q", when, i, g, want[i])
			}
		}
	}
	check("after the push")
	if err := env.Store.RunEvidenceChecksForPush(ctx, req, resp); err != nil {
		t.Fatal(err)
	}
	check("checked again")

	// The place's boundary grows to take the far point in: the flag goes.
	places := servertest.Places()
	for i := range places {
		if places[i].Code == "G11" {
			places[i].Boundary = json.RawMessage(`{"type":"Polygon","coordinates":[[[103.0,25.0],[103.4,25.0],[103.4,25.4],[103.0,25.4],[103.0,25.0]]]}`)
		}
	}
	if err := env.Store.UpsertPlaces(ctx, places); err != nil {
		t.Fatal(err)
	}
	if err := env.Store.RunEvidenceChecksForPush(ctx, req, resp); err != nil {
		t.Fatal(err)
	}
	want = []string{"", "", evidence.FlagPoorAccuracy, evidence.FlagPoorAccuracy}
	check("after the boundary changed")
}

// TestEvidenceChecks_AttachInTheSamePush: a visit pushed without evidence
// and given a photo by an evidence.attach later in the same push gets the
// photo's checks too.
func TestEvidenceChecks_AttachInTheSamePush(t *testing.T) {
	env := servertest.Start(t)
	dev := uploadtest.NewDevice(t, env, "worker", "G11")
	hh := syncproto.NewID(time.Now())
	uploadtest.Household(t, env, hh, "G11")
	far := evidencetest.JPEG(evidencetest.Photo{Seed: 12, GPS: &[2]float64{103.2, 25.2}})
	arrive(t, env, far)
	v := uploadtest.Visit(syncproto.NewID(time.Now()), hh)
	muts := []syncproto.Mutation{
		{Kind: syncproto.KindVisitCreate, Visit: &v},
		{Kind: syncproto.KindEvidenceAttach, EvidenceAttach: &syncproto.EvidenceAttach{VisitID: v.ID, Evidence: uploadtest.Ref(far, "progress")}},
	}
	resp := dev.Push(t, muts...)
	for i := range muts {
		muts[i].Seq = resp.Results[i].Seq
	}
	if err := env.Store.RunEvidenceChecksForPush(ctx, &syncproto.PushRequest{Mutations: muts}, resp); err != nil {
		t.Fatal(err)
	}
	if got, want := flagsOf(t, env, v.ID), at(uploadtest.Sum(far), evidence.FlagGPSFar); got != want {
		t.Errorf("flags %q, want %q", got, want)
	}
}

// TestVisit_GPSReason: a visit's stated reason for a missing or poor fix
// is stored, read back with the visit, quoted in its GPS flag and
// exported; a visit without one keeps none.
func TestVisit_GPSReason(t *testing.T) {
	ctx := context.Background()
	env := servertest.Start(t)
	dev := uploadtest.NewDevice(t, env, "worker", "G11")
	hh := syncproto.NewID(time.Now())
	uploadtest.Household(t, env, hh, "G11")
	noFix := uploadtest.Visit(syncproto.NewID(time.Now()), hh)
	noFix.Point, noFix.AccuracyM, noFix.GPSReason = nil, 0, "山谷里没有信号"
	poor := uploadtest.Visit(syncproto.NewID(time.Now()), hh)
	poor.AccuracyM, poor.GPSReason = 31, "树林太密，等了五分钟"
	silent := uploadtest.Visit(syncproto.NewID(time.Now()), hh)
	silent.Point = nil
	muts := []syncproto.Mutation{{Kind: syncproto.KindVisitCreate, Visit: &noFix}, {Kind: syncproto.KindVisitCreate, Visit: &poor},
		{Kind: syncproto.KindVisitCreate, Visit: &silent}}
	resp := dev.Push(t, muts...)
	for i := range muts {
		muts[i].Seq = resp.Results[i].Seq
	}
	if err := env.Store.RunEvidenceChecksForPush(ctx, &syncproto.PushRequest{Mutations: muts}, resp); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		v          syncproto.Visit
		flag, want string
	}{
		{noFix, evidence.FlagNoGPS, "采集员说明：山谷里没有信号"},
		{poor, evidence.FlagPoorAccuracy, "采集员说明：树林太密，等了五分钟"},
		{silent, evidence.FlagNoGPS, "采集员未说明原因"},
	} {
		var stored *string
		if err := env.Store.DB().QueryRow(`SELECT gps_reason FROM visits WHERE id = ?`, c.v.ID).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if (stored == nil) != (c.v.GPSReason == "") || (stored != nil && *stored != c.v.GPSReason) {
			t.Errorf("%s: stored reason %v, sent %q", c.v.ID, stored, c.v.GPSReason)
		}
		fs, err := env.Store.EvidenceFlags(ctx, c.v.ID)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, f := range fs {
			found = found || (f.Flag == c.flag && strings.Contains(f.Detail, c.want))
		}
		if !found {
			t.Errorf("%s: flags %+v, want %s saying %q", c.v.ID, fs, c.flag, c.want)
		}
	}
	rows, err := env.Store.Visits(ctx, sqlstore.VisitFilter{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range rows {
		got[r.ID] = r.GPSReason
	}
	exported := map[string]string{}
	if err := env.Store.ExportVisits(ctx, sqlstore.ExportFilter{}, func(v *sqlstore.ExportVisit) error {
		exported[v.ID] = v.GPSReason
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []syncproto.Visit{noFix, poor, silent} {
		if got[v.ID] != v.GPSReason || exported[v.ID] != v.GPSReason {
			t.Errorf("%s: read back %q, exported %q, sent %q", v.ID, got[v.ID], exported[v.ID], v.GPSReason)
		}
	}
}
