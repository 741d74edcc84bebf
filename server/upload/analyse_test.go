package upload_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"fieldsync/server/api"
	"fieldsync/server/blob/localblob"
	"fieldsync/server/evidence"
	"fieldsync/server/evidence/evidencetest"
	"fieldsync/server/servertest"
	"fieldsync/server/sqlstore"
	"fieldsync/server/upload"
	"fieldsync/server/upload/uploadtest"
	"fieldsync/syncproto"
)

// farPhoto is a JPEG whose EXIF position is kilometres from the fixture
// visit's point (so its analysis raises exif_gps_far).
func farPhoto(seed uint64) []byte {
	return evidencetest.JPEG(evidencetest.Photo{Seed: seed, GPS: &[2]float64{103.19, 25.19}})
}

func (f *field) blobRecord(t *testing.T, data []byte) sqlstore.BlobRecord {
	t.Helper()
	b, err := f.env.Store.Blob(t.Context(), uploadtest.Sum(data))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// visitFlags is the flags of one visit's evidence item.
func (f *field) itemFlags(t *testing.T, visitID string, data []byte) (evidence.Item, []string) {
	t.Helper()
	rep, err := f.env.Store.VisitEvidence(t.Context(), visitID)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range rep.Evidence {
		if it.SHA256 == uploadtest.Sum(data) {
			var names []string
			for _, fl := range it.Flags {
				names = append(names, fl.Flag)
			}
			return it, names
		}
	}
	t.Fatalf("visit %s does not reference the blob", visitID)
	return evidence.Item{}, nil
}

// TestAnalysis_YieldsToUploads: a photo stored while another upload is
// still receiving is answered at once and analysed only once nothing is
// receiving; until then the evidence report says the analysis is pending.
func TestAnalysis_YieldsToUploads(t *testing.T) {
	f := fieldOn(t, servertest.StartWith(t, servertest.Options{API: api.Config{Evidence: api.EvidenceConfig{AnalyseDelay: time.Hour}}}))
	ctx := t.Context()

	// A: an upload whose PATCH keeps receiving.
	slow := f.file(t, 100_000)
	loc := f.create(t, slow)
	pr, pw := io.Pipe()
	patched := make(chan error, 1)
	go func() {
		hdr := map[string]string{"Upload-Offset": "0", "Content-Type": upload.OffsetContentType, "Content-Length": strconv.Itoa(len(slow))}
		resp, err := f.cl.Do(ctx, http.MethodPatch, loc, hdr, pr)
		if err == nil && resp.Status != http.StatusNoContent {
			err = io.ErrUnexpectedEOF
		}
		patched <- err
	}()
	if _, err := pw.Write(slow[:1000]); err != nil {
		t.Fatal(err)
	}

	// B: a photo uploaded whole meanwhile.
	photo := farPhoto(41)
	visitID := syncproto.NewID(time.Now())
	f.dev.PushVisit(t, uploadtest.Visit(visitID, f.hh, uploadtest.Ref(photo, "progress")))
	if _, err := f.cl.Upload(ctx, f.create(t, photo), photo, 1<<20, 0); err != nil {
		t.Fatal(err)
	}
	f.present(t, photo)
	time.Sleep(200 * time.Millisecond)
	if b := f.blobRecord(t, photo); b.Analysed || b.Width != 0 {
		t.Fatalf("analysed while an upload was receiving: %+v", b)
	}
	if it, flags := f.itemFlags(t, visitID, photo); !it.AnalysisPending || it.MediaType != "image/jpeg" || len(flags) != 0 {
		t.Fatalf("before analysis: item %+v flags %v", it, flags)
	}

	// A finishes: B is analysed and checked.
	if _, err := pw.Write(slow[1000:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-patched; err != nil {
		t.Fatalf("slow PATCH: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := f.env.API.Uploads().WaitAnalysed(wctx); err != nil {
		t.Fatal(err)
	}
	if b := f.blobRecord(t, photo); !b.Analysed || b.Width != 320 || b.GPS == nil || b.PHash == nil {
		t.Fatalf("after analysis: %+v", b)
	}
	if it, flags := f.itemFlags(t, visitID, photo); it.AnalysisPending || len(flags) != 1 || flags[0] != evidence.FlagGPSFar {
		t.Fatalf("after analysis: item %+v flags %v", it, flags)
	}
	f.present(t, slow)
}

// TestAnalysis_AfterRestart: a blob recorded but not analysed when the
// server stopped (the queue is the database) is analysed and checked
// when it starts again.
func TestAnalysis_AfterRestart(t *testing.T) {
	env := servertest.Start(t)
	f := fieldOn(t, env)
	ctx := t.Context()
	photo := farPhoto(42)
	visitID := syncproto.NewID(time.Now())
	f.dev.PushVisit(t, uploadtest.Visit(visitID, f.hh, uploadtest.Ref(photo, "progress")))
	env.Stop()

	// What a crash right after the upload's answer leaves: the blob in
	// the store and recorded, its analysis not done.
	st, err := sqlstore.Open(ctx, servertest.StoreConfig(t, env.Dir, sqlstore.Config{}))
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := localblob.New(filepath.Join(env.Dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	sum := uploadtest.Sum(photo)
	if err := blobs.Put(ctx, sum, int64(len(photo)), bytes.NewReader(photo)); err != nil {
		t.Fatal(err)
	}
	if err := st.CompleteUpload(ctx, "00000000000000000000000000000000", upload.Blob{SHA256: sum, Size: int64(len(photo)), MediaType: "image/jpeg", StoredAt: time.Now()}, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if b, err := st.Blob(ctx, sum); err != nil || b.Analysed {
		t.Fatalf("recorded blob: %+v %v", b, err)
	}
	st.Close()

	// Nothing asks: the worker finds the blob when it starts.
	f.env = servertest.StartWith(t, servertest.Options{Dir: env.Dir})
	deadline := time.Now().Add(30 * time.Second)
	b := f.blobRecord(t, photo)
	for !b.Analysed && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		b = f.blobRecord(t, photo)
	}
	if !b.Analysed || b.Width != 320 || b.GPS == nil {
		t.Fatalf("after restart: %+v", b)
	}
	// The checks ran after the metadata was recorded.
	if err := f.env.API.Uploads().WaitAnalysed(ctx); err != nil {
		t.Fatal(err)
	}
	if it, flags := f.itemFlags(t, visitID, photo); it.AnalysisPending || len(flags) != 1 || flags[0] != evidence.FlagGPSFar {
		t.Fatalf("after restart: item %+v flags %v", it, flags)
	}
}
