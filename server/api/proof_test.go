package api_test

import (
	"bytes"
	"context"
	"io/fs"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fieldsync/server/api"
	"fieldsync/server/evidence"
	"fieldsync/server/evidence/evidencetest"
	"fieldsync/server/upload/uploadtest"
	"fieldsync/syncproto"
)

// TestEvidence_ProofOfPossession: worker B (another village) who learned
// the hash of worker A's photo cites it in her own visit. She is not told
// it exists, cannot download it (nor can her supervisor through her
// visit), and her slot does not count as filled, until she sends the real
// bytes; then it all works and the blob is still stored once. A colleague
// in A's own group, who may see A's visit anyway, is told it is there and
// needs no upload.
func TestEvidence_ProofOfPossession(t *testing.T) {
	f := newEvField(t)
	ctx := t.Context()
	photo := evidencetest.JPEG(evidencetest.Photo{Seed: 9, Width: 640, Height: 480})
	sum := uploadtest.Sum(photo)
	f.w1.PushVisit(t, uploadtest.Visit(syncproto.NewID(time.Now()), f.hh1, uploadtest.Ref(photo, "progress")))
	f.upload(t, photo)

	// B cites the hash she learned.
	visitB := syncproto.NewID(time.Now())
	f.w2.PushVisit(t, uploadtest.Visit(visitB, f.hh2, uploadtest.Ref(photo, "progress")))
	missing := func(dev string, token string) []string {
		t.Helper()
		var resp api.MissingResponse
		if st := uploadtest.DoJSON(t, f.env.URL, token, http.MethodPost, "/api/v1/evidence/missing",
			map[string]any{"protocol_version": 1, "sha256": []string{sum}}, &resp); st != 200 {
			t.Fatalf("missing as %s: %d", dev, st)
		}
		return resp.Missing
	}
	report := func() evidence.VisitReport {
		t.Helper()
		var rep evidence.VisitReport
		if st := uploadtest.DoJSON(t, f.env.URL, f.sup2, http.MethodGet, "/api/v1/visits/"+visitB+"/evidence", nil, &rep); st != 200 {
			t.Fatalf("report: %d", st)
		}
		return rep
	}
	if got := missing("B", f.w2.Token); len(got) != 1 || got[0] != sum {
		t.Errorf("B is told the blob exists: missing %v", got)
	}
	for _, tc := range []struct{ who, token string }{{"B's device", f.w2.Token}, {"B's supervisor", f.sup2}} {
		for _, p := range []string{"/api/v1/evidence/" + sum, "/api/v1/evidence/" + sum + "/thumb"} {
			if g := fetch(t, f.env, http.MethodGet, p, tc.token, nil); g.status != http.StatusNotFound {
				t.Errorf("%s GET %s: %d, want 404", tc.who, p, g.status)
			}
		}
	}
	if rep := report(); rep.Complete || len(rep.Slots) != 1 || rep.Slots[0].Present != 0 {
		t.Errorf("B's slot counts the photo she never sent: %+v", rep)
	}
	clB := &uploadtest.Client{Base: f.env.URL, Token: f.w2.Token}
	c, err := clB.Create(ctx, photo, nil)
	if err != nil || c.Status != http.StatusCreated || c.Offset() != 0 {
		t.Fatalf("B's creation must ask for the bytes (offset 0): %v %+v", err, c)
	}
	// Bytes that do not hash right prove nothing.
	fake := bytes.Repeat([]byte{1}, len(photo))
	if p, err := clB.Patch(ctx, c.Header.Get("Location"), 0, fake, nil); err != nil || p.Status != http.StatusUnprocessableEntity {
		t.Fatalf("fake bytes: %v %+v", err, p)
	}
	if rep := report(); rep.Complete {
		t.Errorf("complete after fake bytes: %+v", rep)
	}

	// She sends the real bytes: now it works.
	c, err = clB.Create(ctx, photo, nil)
	if err != nil || c.Status != http.StatusCreated || c.Offset() != 0 {
		t.Fatalf("create: %v %+v", err, c)
	}
	if p, err := clB.Patch(ctx, c.Header.Get("Location"), 0, photo, nil); err != nil || p.Status != http.StatusNoContent || p.Offset() != int64(len(photo)) {
		t.Fatalf("PATCH: %v %+v", err, p)
	}
	if got := missing("B", f.w2.Token); len(got) != 0 {
		t.Errorf("missing after the upload: %v", got)
	}
	for _, tc := range []struct{ who, token string }{{"B's device", f.w2.Token}, {"B's supervisor", f.sup2}} {
		if g := fetch(t, f.env, http.MethodGet, "/api/v1/evidence/"+sum, tc.token, nil); g.status != 200 || !bytes.Equal(g.body, photo) {
			t.Errorf("%s download after the upload: %d", tc.who, g.status)
		}
	}
	if rep := report(); !rep.Complete {
		t.Errorf("B's slot after her upload: %+v", rep)
	}
	// Stored once.
	n := 0
	_ = filepath.WalkDir(filepath.Join(f.env.Dir, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(filepath.Base(p), sum) && !strings.Contains(p, "thumb") {
			n++
		}
		return nil
	})
	if n != 1 {
		t.Errorf("%d copies of the blob in the store", n)
	}

	// A colleague in A's group may see A's visit: told it is there, her
	// slot is filled without an upload.
	w3 := uploadtest.NewDevice(t, f.env, "worker3", "G11")
	visitC := syncproto.NewID(time.Now())
	w3.PushVisit(t, uploadtest.Visit(visitC, f.hh1, uploadtest.Ref(photo, "progress")))
	if got := missing("colleague", w3.Token); len(got) != 0 {
		t.Errorf("colleague: missing %v", got)
	}
	if err := f.env.API.Uploads().WaitAnalysed(context.Background()); err != nil {
		t.Fatal(err)
	}
	var rep evidence.VisitReport
	if st := uploadtest.DoJSON(t, f.env.URL, f.sup1, http.MethodGet, "/api/v1/visits/"+visitC+"/evidence", nil, &rep); st != 200 || !rep.Complete {
		t.Errorf("colleague's visit: %d %+v", st, rep)
	}
}

// TestEvidence_ProofOfPossession_AttachByColleague: a colleague attaches
// a photo to a worker's visit (evidence.attach) and uploads it: the link
// counts although the visit is another device's. One who already holds
// the blob attaches it and it counts at once.
func TestEvidence_ProofOfPossession_AttachByColleague(t *testing.T) {
	for _, tc := range []struct {
		name        string
		uploadFirst bool
	}{{"AttachThenUpload", false}, {"UploadThenAttach", true}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newEvField(t)
			ctx := t.Context()
			photo := evidencetest.JPEG(evidencetest.Photo{Seed: 11, Width: 320, Height: 240})
			visit := syncproto.NewID(time.Now())
			f.w1.PushVisit(t, uploadtest.Visit(visit, f.hh1))
			w3 := uploadtest.NewDevice(t, f.env, "worker3", "G11")
			cl3 := &uploadtest.Client{Base: f.env.URL, Token: w3.Token}
			upload := func() {
				c, err := cl3.Create(ctx, photo, nil)
				if err != nil || c.Status != http.StatusCreated || c.Offset() != 0 {
					t.Fatalf("create: %v %+v", err, c)
				}
				if p, err := cl3.Patch(ctx, c.Header.Get("Location"), 0, photo, nil); err != nil || p.Status != http.StatusNoContent {
					t.Fatalf("PATCH: %v %+v", err, p)
				}
			}
			attach := func() {
				w3.Push(t, syncproto.Mutation{Kind: syncproto.KindEvidenceAttach,
					EvidenceAttach: &syncproto.EvidenceAttach{VisitID: visit, Evidence: uploadtest.Ref(photo, "progress")}})
			}
			if tc.uploadFirst {
				// w3 holds it through a visit of her own first.
				w3.PushVisit(t, uploadtest.Visit(syncproto.NewID(time.Now()), f.hh1, uploadtest.Ref(photo, "progress")))
				upload()
				attach()
			} else {
				attach()
				upload()
			}
			var rep evidence.VisitReport
			if st := uploadtest.DoJSON(t, f.env.URL, f.sup1, http.MethodGet, "/api/v1/visits/"+visit+"/evidence", nil, &rep); st != 200 || !rep.Complete {
				t.Errorf("visit with the attached photo: %d %+v", st, rep)
			}
		})
	}
}
