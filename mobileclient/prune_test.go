package mobileclient

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"fieldsync/server/servertest"
	"fieldsync/syncproto"
)

// preparedFiles lists the files in the client's evidence folder.
func preparedFiles(t *testing.T, c *Client) []string {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(c.dir, EvidenceDir))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	slices.Sort(out)
	return out
}

func sortedNames(s ...string) []string { slices.Sort(s); return s }

// TestEvidence_PreparedCopyDeletedOnceAcknowledged: once the server has
// acknowledged a blob (a finished upload, or "present" when asked), the
// device deletes its prepared copy and keeps the blob's hash, size and
// type in the upload queue. A file prepared for a visit not yet recorded,
// and one whose upload waits (records-only policy), stay.
func TestEvidence_PreparedCopyDeletedOnceAcknowledged(t *testing.T) {
	s := startEvidence(t, servertest.Options{})
	c := s.worker(t, "w1", s.env.URL, nil, "G11")
	hh := importHouseholds(t, s.env, "G11")[0]
	mustSync(t, c)

	photo := noisyPhoto(1, 1000, 750)
	before := prepare(t, c, photo, "before", "image/jpeg")
	cert := prepare(t, c, certificatePDF(3, 200_000), "certificate", "application/pdf")
	id, err := c.RecordVisit(retrofitVisit(hh, before, cert))
	if err != nil {
		t.Fatal(err)
	}
	// Prepared, its visit not recorded yet: not queued.
	later := prepare(t, c, noisyPhoto(2, 800, 600), "after", "image/jpeg")
	if got, want := preparedFiles(t, c), sortedNames(before.SHA256, cert.SHA256, later.SHA256); !slices.Equal(got, want) {
		t.Fatalf("before the sync the folder holds %v, want %v", got, want)
	}
	if rep := mustSync(t, c); rep.BlobsUploaded != 2 {
		t.Fatalf("sync: %+v", rep)
	}
	s.verified(t, c, before)
	s.verified(t, c, cert)
	if got := preparedFiles(t, c); !slices.Equal(got, []string{later.SHA256}) {
		t.Fatalf("after the uploads the folder holds %v, want only the unrecorded %s", got, later.SHA256[:12])
	}
	ups := uploadStates(t, c)
	for _, ref := range []syncproto.EvidenceRef{before, cert} {
		u := ups[ref.SHA256]
		if u.State != UploadDone || u.Size != ref.Size || u.MediaType != ref.MediaType || u.Path != "" {
			t.Errorf("upload record of %s after its copy was deleted: %+v", ref.Slot, u)
		}
	}

	// Waiting uploads keep their files.
	if err := c.SetUploadPolicy(UploadRecordsOnly); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AttachEvidence(id, writeFile(t, "after.jpg", noisyPhoto(2, 800, 600)), "after", ""); err != nil {
		t.Fatal(err)
	}
	mustSync(t, c)
	if got := preparedFiles(t, c); !slices.Equal(got, []string{later.SHA256}) {
		t.Fatalf("with uploads held back the folder holds %v, want %s", got, later.SHA256[:12])
	}
	if p, err := c.EvidenceFile(later.SHA256); err != nil {
		t.Fatalf("the waiting upload's copy: %s %v", p, err)
	}
	if err := c.SetUploadPolicy(UploadAll); err != nil {
		t.Fatal(err)
	}
	if rep := mustSync(t, c); rep.BlobsUploaded != 1 {
		t.Fatalf("sync: %+v", rep)
	}
	s.verified(t, c, later)

	// The same photo attached again: copied once more, then the server
	// says it has it, and the copy goes without being sent.
	if _, err := c.AttachEvidence(id, writeFile(t, "again.jpg", photo), "rework", ""); err != nil {
		t.Fatal(err)
	}
	if got := preparedFiles(t, c); !slices.Equal(got, []string{before.SHA256}) {
		t.Fatalf("after attaching the photo again the folder holds %v", got)
	}
	if rep := mustSync(t, c); rep.BlobsPresent != 1 || rep.BlobBytesSent != 0 {
		t.Fatalf("sync of a blob the server has: %+v", rep)
	}
	if got := preparedFiles(t, c); len(got) != 0 {
		t.Fatalf("the folder holds %v after the server said it has the blob", got)
	}
}

// TestEvidence_AcknowledgedCopiesPrunedOnOpen: a crash between the
// server's acknowledgement (recorded) and the deletion of the prepared
// copy leaves the copy; the next Open deletes it, and leaves the copies
// of uploads still waiting, of failed ones and of files no visit records
// yet.
func TestEvidence_AcknowledgedCopiesPrunedOnOpen(t *testing.T) {
	s := startEvidence(t, servertest.Options{})
	c := s.worker(t, "w1", s.env.URL, nil, "G11")
	hh := importHouseholds(t, s.env, "G11")[0]
	mustSync(t, c)

	photo := noisyPhoto(1, 900, 600)
	done := prepare(t, c, photo, "before", "image/jpeg")
	if _, err := c.RecordVisit(retrofitVisit(hh, done)); err != nil {
		t.Fatal(err)
	}
	if rep := mustSync(t, c); rep.BlobsUploaded != 1 {
		t.Fatalf("sync: %+v", rep)
	}
	if err := c.SetUploadPolicy(UploadRecordsOnly); err != nil {
		t.Fatal(err)
	}
	waiting := prepare(t, c, noisyPhoto(2, 900, 600), "before", "image/jpeg")
	if _, err := c.RecordVisit(retrofitVisit(hh, waiting)); err != nil {
		t.Fatal(err)
	}
	mustSync(t, c)
	unrecorded := prepare(t, c, certificatePDF(4, 50_000), "certificate", "application/pdf")
	// The crash: the upload of done was recorded as done, its copy not
	// deleted yet.
	if err := os.WriteFile(filepath.Join(c.dir, EvidenceDir, done.SHA256), photo, 0o600); err != nil {
		t.Fatal(err)
	}
	// A stray that is not a prepared file is left alone too.
	if err := os.WriteFile(filepath.Join(c.dir, EvidenceDir, "notes.txt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := c.dir
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	c2 := openTest(t, dir, s.env.URL, nil)
	want := sortedNames(waiting.SHA256, unrecorded.SHA256, "notes.txt")
	if got := preparedFiles(t, c2); !slices.Equal(got, want) {
		t.Fatalf("after reopening the folder holds %v, want %v", got, want)
	}
	if _, err := c2.EvidenceFile(done.SHA256); !errors.Is(err, ErrNotFound) {
		t.Errorf("EvidenceFile of the acknowledged blob: %v", err)
	}
	if u := uploadStates(t, c2)[done.SHA256]; u.State != UploadDone || u.Size != done.Size || u.MediaType != done.MediaType {
		t.Errorf("upload record after pruning: %+v", u)
	}
	// The waiting one still uploads from its copy.
	if err := c2.SetUploadPolicy(UploadAll); err != nil {
		t.Fatal(err)
	}
	if rep := mustSync(t, c2); rep.BlobsUploaded != 1 {
		t.Fatalf("sync after reopening: %+v", rep)
	}
	s.verified(t, c2, waiting)
	if got := preparedFiles(t, c2); !slices.Equal(got, sortedNames(unrecorded.SHA256, "notes.txt")) {
		t.Fatalf("in the end the folder holds %v", got)
	}
}
