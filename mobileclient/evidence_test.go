package mobileclient

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"fieldsync/server/evidence/evidencetest"
	"fieldsync/syncproto"
)

// retrofitVisit is a valid house_retrofit_inspection visit at a point in
// group G11 on the fixture photos' day, with evidence refs.
func retrofitVisit(householdID string, refs ...syncproto.EvidenceRef) syncproto.Visit {
	return syncproto.Visit{
		HouseholdID: householdID,
		FormID:      "house_retrofit_inspection",
		FormVersion: 1,
		Answers: map[string]json.RawMessage{
			"head_name":         str("杨绍华"),
			"house_grade":       str("C"),
			"retrofit_method":   str("repair"),
			"retrofit_finished": str("yes"),
			"inspection_round":  str("first"),
			"inspection_result": str("pass"),
			"plaque_installed":  str("yes"),
			"inspection_date":   str("2026-03-01"),
		},
		Point:      &syncproto.Point{Lon: gpsAt[0], Lat: gpsAt[1]},
		AccuracyM:  6,
		DeviceTime: taken,
		Evidence:   refs,
	}
}

// certificatePDF is a scanned inspection certificate of n bytes.
func certificatePDF(seed byte, n int) []byte {
	b := []byte("%PDF-1.7\n")
	for len(b) < n {
		b = append(b, "验收单 "[len(b)%3], seed, byte(len(b)))
	}
	return b[:n]
}

func prepare(t *testing.T, c *Client, data []byte, slot, mediaType string) syncproto.EvidenceRef {
	t.Helper()
	ref, err := c.PrepareEvidence(writeFile(t, "f", data), slot, mediaType)
	if err != nil {
		t.Fatalf("PrepareEvidence(%s): %v", slot, err)
	}
	return ref
}

func uploadStates(t *testing.T, c *Client) map[string]UploadInfo {
	t.Helper()
	us, err := c.Uploads()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]UploadInfo{}
	for _, u := range us {
		out[u.SHA256] = u
	}
	return out
}

func TestRecordVisit_QueuesPreparedEvidence(t *testing.T) {
	c := openTest(t, t.TempDir(), "", nil)
	hh := newID()
	seed(t, c, hhOp(hh, "G11", 1, map[string]json.RawMessage{"head_name": str("杨绍华")}))
	g := gpsAt
	before := prepare(t, c, evidencetest.JPEG(evidencetest.Photo{Seed: 1, Taken: taken, GPS: &g}), "before", "image/jpeg")
	after := prepare(t, c, evidencetest.JPEG(evidencetest.Photo{Seed: 2, Taken: taken, GPS: &g}), "after", "image/jpeg")
	cert := prepare(t, c, certificatePDF(1, 5000), "certificate", "application/pdf")

	// Refused visits queue nothing.
	bad := retrofitVisit(hh, before, syncproto.EvidenceRef{SHA256: after.SHA256, Size: after.Size, MediaType: "image/jpeg", Slot: "selfie"})
	if _, err := c.RecordVisit(bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("visit with an unknown slot: %v", err)
	}
	wrongSize := before
	wrongSize.Size++
	if _, err := c.RecordVisit(retrofitVisit(hh, wrongSize)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("ref with the wrong size: %v", err)
	}
	if n := count(t, c.db, `SELECT count(*) FROM uploads`); n != 0 {
		t.Fatalf("%d uploads queued by refused visits", n)
	}
	if n := len(outbox(t, c)); n != 0 {
		t.Fatalf("%d mutations queued by refused visits", n)
	}

	// A reference the device has no file for (uploaded from elsewhere) is
	// sent as a reference only.
	elsewhere := syncproto.EvidenceRef{SHA256: strings.Repeat("ab", 32), Size: 10, MediaType: "image/jpeg", Slot: "rework"}
	id, err := c.RecordVisit(retrofitVisit(hh, before, after, cert, elsewhere))
	if err != nil {
		t.Fatal(err)
	}
	ob := outbox(t, c)
	if len(ob) != 1 || len(ob[0].M.Visit.Evidence) != 4 || ob[0].M.Visit.ID != id {
		t.Fatalf("outbox = %+v", ob)
	}
	ups := uploadStates(t, c)
	if len(ups) != 3 {
		t.Fatalf("uploads = %+v", ups)
	}
	for _, ref := range []syncproto.EvidenceRef{before, after, cert} {
		u := ups[ref.SHA256]
		if u.State != UploadPending || u.Size != ref.Size || u.MediaType != ref.MediaType || u.Offset != 0 ||
			u.Path != filepath.Join(c.dir, EvidenceDir, ref.SHA256) {
			t.Errorf("upload %s = %+v", ref.Slot, u)
		}
	}
	p, err := c.Pending()
	if err != nil {
		t.Fatal(err)
	}
	if p.Uploads != 3 || p.UploadBytes != before.Size+after.Size+cert.Size || p.FailedUploads != 0 {
		t.Errorf("pending = %+v", p)
	}
	if h := c.health(t.Context()); h.PendingBlobs != 3 || h.PendingBytes < p.UploadBytes {
		t.Errorf("health = %+v", h)
	}
}

func TestAttachEvidence_Local(t *testing.T) {
	c := openTest(t, t.TempDir(), "", nil)
	hh := newID()
	seed(t, c, hhOp(hh, "G11", 1, map[string]json.RawMessage{"head_name": str("杨绍华")}))
	before := prepare(t, c, evidencetest.JPEG(evidencetest.Photo{Seed: 1}), "before", "image/jpeg")
	id, err := c.RecordVisit(retrofitVisit(hh, before))
	if err != nil {
		t.Fatal(err)
	}
	ack(t, c, syncproto.StatusApplied, 0)

	certFile := writeFile(t, "cert.pdf", certificatePDF(2, 3000))
	if _, err := c.AttachEvidence(newID(), certFile, "certificate", "application/pdf"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown visit: %v", err)
	}
	if _, err := c.AttachEvidence(id, certFile, "selfie", "application/pdf"); !errors.Is(err, ErrInvalid) {
		t.Errorf("slot not in the form: %v", err)
	}
	if _, err := c.AttachEvidence(id, certFile, "after", "application/pdf"); !errors.Is(err, ErrInvalid) {
		t.Errorf("a PDF in a photo slot: %v", err)
	}
	if n := len(outbox(t, c)); n != 0 {
		t.Fatalf("refused attachments queued %d mutations", n)
	}
	ref, err := c.AttachEvidence(id, certFile, "certificate", "application/pdf")
	if err != nil {
		t.Fatal(err)
	}
	// The app's file may go now.
	os.Remove(certFile)
	ob := outbox(t, c)
	if len(ob) != 1 || ob[0].Kind != string(syncproto.KindEvidenceAttach) || ob[0].M.EvidenceAttach.VisitID != id || ob[0].M.EvidenceAttach.Evidence != ref {
		t.Fatalf("outbox = %+v", ob)
	}
	if u := uploadStates(t, c)[ref.SHA256]; u.State != UploadPending || u.Size != ref.Size {
		t.Errorf("upload = %+v", u)
	}
	vs, _ := c.Visits(hh)
	if len(vs) != 1 || len(vs[0].Evidence) != 2 || vs[0].Evidence[1] != ref {
		t.Fatalf("local visit = %+v", vs)
	}
	// The same file in the same slot again changes nothing.
	if again, err := c.AttachEvidence(id, writeFile(t, "cert.pdf", certificatePDF(2, 3000)), "certificate", "application/pdf"); err != nil || again != ref {
		t.Errorf("again: %+v %v", again, err)
	}
	if n := len(outbox(t, c)); n != 1 {
		t.Errorf("%d mutations after attaching twice", n)
	}
	// A rejected attachment leaves the local visit.
	ack(t, c, syncproto.StatusRejected, 0)
	vs, _ = c.Visits(hh)
	if len(vs[0].Evidence) != 1 || vs[0].Evidence[0] != before {
		t.Errorf("after the rejection: %+v", vs[0].Evidence)
	}
}

func TestSetUploadPolicy(t *testing.T) {
	dir := t.TempDir()
	c := openTest(t, dir, "", nil)
	if p, err := c.UploadPolicy(); err != nil || p != UploadAll {
		t.Errorf("default policy %q %v", p, err)
	}
	if err := c.SetUploadPolicy("wifi_only"); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown policy: %v", err)
	}
	if err := c.SetUploadPolicy(UploadRecordsOnly); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c = openTest(t, dir, "", nil)
	if p, _ := c.UploadPolicy(); p != UploadRecordsOnly {
		t.Errorf("policy after reopening: %q", p)
	}
}

func TestOptions_EvidenceDefaults(t *testing.T) {
	var o Options
	if err := o.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if o.MaxPhotoPx != 1600 || o.PhotoQuality != 85 || o.ChunkSize != 256<<10 {
		t.Errorf("defaults: %d px, quality %d, chunk %d", o.MaxPhotoPx, o.PhotoQuality, o.ChunkSize)
	}
	for _, bad := range []Options{{MaxPhotoPx: -1}, {PhotoQuality: 101}, {ChunkSize: -1}} {
		if err := bad.setDefaults(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}
