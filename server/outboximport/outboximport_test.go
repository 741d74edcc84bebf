package outboximport_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"fieldsync/server/blob/localblob"
	"fieldsync/server/blob/s3blob"
	"fieldsync/server/blob/s3blob/s3test"
	"fieldsync/server/domain"
	"fieldsync/server/evidence/evidencetest"
	"fieldsync/server/outboximport"
	"fieldsync/server/servertest"
	"fieldsync/server/sqlstore"
	"fieldsync/syncproto"
	"fieldsync/syncproto/outboxfile"
)

var bg = context.Background()

var waterOnce = sync.OnceValue(func() map[string]json.RawMessage {
	f, ok := syncproto.Template("water_cellar_progress")
	if !ok {
		panic("template")
	}
	out := map[string]json.RawMessage{}
	for _, fd := range f.Fields {
		if !fd.Required {
			continue
		}
		switch fd.Type {
		case syncproto.FieldText:
			out[fd.Name] = json.RawMessage(`"村口 1号水窖"`)
		case syncproto.FieldDecimal, syncproto.FieldInteger:
			out[fd.Name] = json.RawMessage(`24`)
		case syncproto.FieldSelectOne:
			out[fd.Name] = json.RawMessage(fmt.Sprintf("%q", fd.Choices[0].Value))
		case syncproto.FieldDate:
			out[fd.Name] = json.RawMessage(`"2026-11-30"`)
		case syncproto.FieldSelectMany:
			out[fd.Name] = json.RawMessage(fmt.Sprintf("[%q]", fd.Choices[0].Value))
		case syncproto.FieldGeopoint:
			out[fd.Name] = json.RawMessage(`{"lon":103.1,"lat":25.1}`)
		default:
			panic("unhandled required field type " + string(fd.Type))
		}
	}
	return out
})

// fixture is a server with a worker's device that pushed one visit (seq 1)
// and then was revoked, and the outbox file of its unsent work: seq 1
// again (its answer was lost), two new visits with a photo each, and one
// visit the server refuses.
type fixture struct {
	env      *servertest.Env
	cfg      outboximport.Config
	devID    string
	file     outboxfile.File
	visitIDs []string // the visits in the file that should land (3)
	photos   [][]byte
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	env := servertest.Start(t)
	worker := env.CreateUser(t, "wangge_zhao", domain.RoleFieldWorker, "G11")
	hh := syncproto.NewID(time.Now())
	env.AddHouseholds(t, syncproto.Household{ID: hh, PlaceCode: "G11", Fields: map[string]json.RawMessage{"head_name": json.RawMessage(`"赵大山"`)}})
	devID, _ := env.Device(t, worker.ID)
	blobs, err := localblob.New(filepath.Join(env.Dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{env: env, devID: devID, cfg: outboximport.Config{Store: env.Store, Blobs: blobs, By: "admin"}}
	var clock syncproto.Clock
	mut := func(seq int64, v syncproto.Visit) json.RawMessage {
		b, err := json.Marshal(syncproto.Mutation{Seq: seq, Kind: syncproto.KindVisitCreate, HLC: clock.Tick(), Visit: &v})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	visit := func(i int, ev ...syncproto.EvidenceRef) syncproto.Visit {
		return syncproto.Visit{ID: syncproto.NewID(time.Now()), HouseholdID: hh, FormID: "water_cellar_progress", FormVersion: 1,
			Answers: waterOnce(), Point: &syncproto.Point{Lon: 103.15, Lat: 25.15}, AccuracyM: 8, DeviceTime: time.Date(2026, 12, 6, 9, i, 0, 0, time.UTC),
			Evidence: ev}
	}
	taken := time.Date(2026, 12, 6, 10, 30, 0, 0, time.FixedZone("CST", 8*3600))
	var refs []syncproto.EvidenceRef
	for i := range 3 {
		jpg := evidencetest.JPEG(evidencetest.Photo{Seed: uint64(40 + i), Taken: taken, TakenOffset: true, GPS: &[2]float64{103.15, 25.15}})
		s := sha256.Sum256(jpg)
		f.photos = append(f.photos, jpg)
		refs = append(refs, syncproto.EvidenceRef{SHA256: hex.EncodeToString(s[:]), Size: int64(len(jpg)), MediaType: "image/jpeg", Slot: "progress"})
	}
	first := mut(1, visit(0, refs[0]))
	// The device pushed seq 1 but never heard the answer.
	if _, err := env.Store.Push(bg, pushDev(env, devID), &syncproto.PushRequest{ProtocolVersion: 1, DeviceID: devID, Mutations: []syncproto.Mutation{decodeMut(t, first)}}); err != nil {
		t.Fatal(err)
	}
	if err := env.Store.RevokeDevice(bg, devID); err != nil {
		t.Fatal(err)
	}
	bad := visit(3)
	bad.Answers = map[string]json.RawMessage{"capacity_m3": json.RawMessage(`"abc"`)}
	v1, v2 := visit(1, refs[1]), visit(2, refs[2])
	f.visitIDs = []string{decodeMut(t, first).Visit.ID, v1.ID, v2.ID}
	f.file = outboxfile.File{Format: outboxfile.Format, Version: outboxfile.Version, ExportedAt: time.Now(), DeviceID: devID,
		User: outboxfile.User{ID: worker.ID, Username: worker.Username}, Revoked: true, ProtocolVersion: 1,
		Mutations: []json.RawMessage{first, mut(2, v1), mut(3, v2), mut(4, bad)}}
	for i, r := range refs {
		f.file.Blobs = append(f.file.Blobs, outboxfile.Blob{SHA256: r.SHA256, Size: r.Size, MediaType: r.MediaType, VisitID: f.visitIDs[i], Slot: r.Slot, Data: f.photos[i]})
	}
	return f
}

func pushDev(env *servertest.Env, id string) sqlstore.PushDevice {
	dev, err := env.Store.DeviceAnyState(bg, id)
	if err != nil {
		panic(err)
	}
	return sqlstore.PushDevice{DeviceID: dev.ID, UserID: dev.UserID}
}

func decodeMut(t *testing.T, raw json.RawMessage) syncproto.Mutation {
	t.Helper()
	var m syncproto.Mutation
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func (f *fixture) encode(t *testing.T) []byte {
	t.Helper()
	b, err := json.Marshal(f.file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (f *fixture) count(t *testing.T, q string, args ...any) int {
	t.Helper()
	var n int
	if err := f.env.Store.DB().QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// state is what the server holds of the device's work.
func (f *fixture) state(t *testing.T) string {
	return fmt.Sprintf("visits %d, evidence links held %d, blobs %d, holders %d, results %d, last_seq %d",
		f.count(t, `SELECT count(*) FROM visits WHERE device_id = ?`, f.devID),
		f.count(t, `SELECT count(*) FROM visit_evidence ve JOIN visits v ON v.id = ve.visit_id WHERE v.device_id = ? AND ve.held = 1`, f.devID),
		f.count(t, `SELECT count(*) FROM blobs`),
		f.count(t, `SELECT count(*) FROM blob_holders WHERE device_id = ?`, f.devID),
		f.count(t, `SELECT count(*) FROM mutation_results WHERE device_id = ?`, f.devID),
		f.count(t, `SELECT last_seq FROM device_sync WHERE device_id = ?`, f.devID))
}

func TestImportOutbox_HappyThenTwice(t *testing.T) {
	f := newFixture(t)
	file := filepath.Join(t.TempDir(), "outbox.json")
	if err := os.WriteFile(file, f.encode(t), 0o600); err != nil {
		t.Fatal(err)
	}
	sum, err := outboximport.ImportFile(bg, f.cfg, file)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Applied) != 2 || len(sum.Duplicate) != 1 || len(sum.Rejected) != 1 || len(sum.BlobsStored) != 3 || len(sum.BlobsRejected) != 0 {
		t.Fatalf("first import: %+v", sum)
	}
	if sum.Rejected[0].Seq != 4 || sum.Rejected[0].Code != string(syncproto.CodeValidation) || !strings.Contains(sum.Rejected[0].Reason, "capacity_m3") {
		t.Errorf("rejection: %+v", sum.Rejected[0])
	}
	var out bytes.Buffer
	sum.Print(&out)
	for _, want := range []string{"新接收 2 条", "服务器已有 1 条", "被拒绝 1 条", "新存入 3 个", "已停用", "#4"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	want := "visits 3, evidence links held 3, blobs 3, holders 3, results 4, last_seq 4"
	if got := f.state(t); got != want {
		t.Fatalf("after the import: %s, want %s", got, want)
	}
	for i, id := range f.visitIDs {
		if n := f.count(t, `SELECT count(*) FROM visit_evidence WHERE visit_id = ? AND held = 1 AND slot = 'progress'`, id); n != 1 {
			t.Errorf("visit %d: %d held progress photos", i, n)
		}
	}
	// Stored bytes are the photos, and their EXIF was read.
	for i, p := range f.photos {
		s := sha256.Sum256(p)
		rc, info, err := f.cfg.Blobs.Open(bg, hex.EncodeToString(s[:]))
		if err != nil {
			t.Fatalf("blob %d: %v", i, err)
		}
		rc.Close()
		if info.Size != int64(len(p)) {
			t.Errorf("blob %d: %d bytes", i, info.Size)
		}
	}
	if n := f.count(t, `SELECT count(*) FROM blobs WHERE analyzed_at IS NOT NULL AND exif_lat IS NOT NULL`); n != 3 {
		t.Errorf("%d blobs analysed with GPS, want 3", n)
	}
	// The audit log says who imported.
	var actor, after string
	if err := f.env.Store.DB().QueryRow(`SELECT actor_name, after FROM audit_events WHERE action = 'outbox.import' AND entity_id = ?`, f.devID).Scan(&actor, &after); err != nil {
		t.Fatal(err)
	}
	if actor != "admin" || !strings.Contains(after, `"applied":2`) {
		t.Errorf("audit: %s %s", actor, after)
	}

	// Twice: nothing changes.
	sum2, err := outboximport.ImportFile(bg, f.cfg, file)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum2.Applied) != 0 || len(sum2.Duplicate) != 4 || len(sum2.Rejected) != 0 || len(sum2.BlobsStored) != 0 || len(sum2.BlobsPresent) != 3 || sum2.Changed() {
		t.Errorf("second import: %+v", sum2)
	}
	out.Reset()
	sum2.Print(&out)
	if !strings.Contains(out.String(), "没有任何改动") || !strings.Contains(out.String(), "此前被拒 1 条") {
		t.Errorf("second summary:\n%s", out.String())
	}
	if got := f.state(t); got != want {
		t.Errorf("after the second import: %s, want %s", got, want)
	}
}

func TestImportOutbox_TamperedPhotoRefused(t *testing.T) {
	f := newFixture(t)
	f.file.Blobs[1].Data = append([]byte(nil), f.file.Blobs[1].Data...)
	f.file.Blobs[1].Data[len(f.file.Blobs[1].Data)/2] ^= 0xff // same size, other bytes
	sum, err := outboximport.Import(bg, f.cfg, bytes.NewReader(f.encode(t)))
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.BlobsRejected) != 1 || sum.BlobsRejected[0].SHA256 != f.file.Blobs[1].SHA256 || !strings.Contains(sum.BlobsRejected[0].Reason, "哈希值不符") {
		t.Fatalf("blobs refused: %+v", sum.BlobsRejected)
	}
	if len(sum.BlobsStored) != 2 || len(sum.Applied) != 2 {
		t.Errorf("the rest: %+v", sum)
	}
	if _, err := f.cfg.Blobs.Stat(bg, f.file.Blobs[1].SHA256); err == nil {
		t.Error("the tampered photo was stored")
	}
	if n := f.count(t, `SELECT count(*) FROM blobs WHERE sha256 = ?`, f.file.Blobs[1].SHA256); n != 0 {
		t.Error("the tampered photo was recorded")
	}
	// A blob no visit of the device names is refused too.
	other := evidencetest.JPEG(evidencetest.Photo{Seed: 99})
	s := sha256.Sum256(other)
	f.file.Blobs = []outboxfile.Blob{{SHA256: hex.EncodeToString(s[:]), Size: int64(len(other)), Data: other}}
	sum, err = outboximport.Import(bg, f.cfg, bytes.NewReader(f.encode(t)))
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.BlobsRejected) != 1 || !strings.Contains(sum.BlobsRejected[0].Reason, "没有本设备的走访记录引用") {
		t.Errorf("unreferenced blob: %+v", sum.BlobsRejected)
	}
}

func TestImportOutbox_BadFilesChangeNothing(t *testing.T) {
	f := newFixture(t)
	before := f.state(t)
	good := f.encode(t)
	edit := func(fn func(*outboxfile.File)) []byte {
		var c outboxfile.File
		if err := json.Unmarshal(good, &c); err != nil {
			t.Fatal(err)
		}
		fn(&c)
		b, _ := json.Marshal(c)
		return b
	}
	cases := []struct {
		name string
		body []byte
		want error
		text string
	}{
		{"NotJSON", []byte("PK\x03\x04 a zip?"), outboxfile.ErrInvalid, "invalid character"},
		{"Truncated", good[:len(good)/2], outboxfile.ErrInvalid, "unexpected EOF"},
		{"WrongFormat", edit(func(c *outboxfile.File) { c.Format = "something-else" }), outboxfile.ErrInvalid, "format"},
		{"NewerVersion", edit(func(c *outboxfile.File) { c.Version = 9 }), outboxfile.ErrInvalid, "version 9"},
		{"NoDevice", edit(func(c *outboxfile.File) { c.DeviceID = "" }), outboxfile.ErrInvalid, "device_id"},
		{"SeqHole", edit(func(c *outboxfile.File) { c.Mutations = append(c.Mutations[:1], c.Mutations[2:]...) }), outboxfile.ErrInvalid, "does not follow"},
		{"UnknownDevice", edit(func(c *outboxfile.File) { c.DeviceID = "01JUNKNOWNDEVICE000000000" }), outboximport.ErrWrongDevice, "no device"},
		{"OtherUser", edit(func(c *outboxfile.File) { c.User.Username = "someone_else" }), outboximport.ErrWrongDevice, "someone_else"},
		{"GapOnServer", edit(func(c *outboxfile.File) { c.Mutations = c.Mutations[2:] }), nil, "expects seq 2"},
		{"BadBlobSum", edit(func(c *outboxfile.File) { c.Blobs[0].SHA256 = "xyz" }), outboxfile.ErrInvalid, "sha256"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := outboximport.Import(bg, f.cfg, bytes.NewReader(c.body))
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) || !strings.Contains(err.Error(), c.text) {
				t.Errorf("error %v, want %v containing %q", err, c.want, c.text)
			}
			if got := f.state(t); got != before {
				t.Errorf("changed: %s, was %s", got, before)
			}
		})
	}
	t.Run("NotAnAdmin", func(t *testing.T) {
		cfg := f.cfg
		cfg.By = "wangge_zhao"
		if _, err := outboximport.Import(bg, cfg, bytes.NewReader(good)); !errors.Is(err, outboximport.ErrNotAdmin) {
			t.Errorf("import by a field worker: %v", err)
		}
		if got := f.state(t); got != before {
			t.Errorf("changed: %s", got)
		}
	})
}

// TestImportOutbox_S3 imports into the S3 blob store (the real server the
// test script starts): the photos land there, verified, once.
func TestImportOutbox_S3(t *testing.T) {
	f := newFixture(t)
	s3, err := s3blob.New(bg, s3test.Config(t))
	if err != nil {
		t.Fatal(err)
	}
	f.cfg.Blobs = s3
	for round := range 2 {
		sum, err := outboximport.Import(bg, f.cfg, bytes.NewReader(f.encode(t)))
		if err != nil {
			t.Fatal(err)
		}
		if stored := len(sum.BlobsStored); (round == 0 && stored != 3) || (round == 1 && (stored != 0 || len(sum.BlobsPresent) != 3)) {
			t.Errorf("round %d: %+v", round, sum)
		}
	}
	for i, b := range f.file.Blobs {
		info, err := s3.Stat(bg, b.SHA256)
		if err != nil || info.Size != b.Size {
			t.Errorf("blob %d in S3: %+v %v", i, info, err)
		}
	}
	if got, want := f.state(t), "visits 3, evidence links held 3, blobs 3, holders 3, results 4, last_seq 4"; got != want {
		t.Errorf("server: %s, want %s", got, want)
	}
}

// TestImportOutbox_ManyBatches imports more mutations than one push
// carries: they go in order, in several pushes, each applied once.
func TestImportOutbox_ManyBatches(t *testing.T) {
	f := newFixture(t)
	var clock syncproto.Clock
	tmpl := decodeMut(t, f.file.Mutations[1])
	f.file.Blobs = nil
	f.file.Mutations = f.file.Mutations[:1] // seq 1, already on the server
	for seq := int64(2); seq <= 451; seq++ {
		v := *tmpl.Visit
		v.ID, v.Evidence = syncproto.NewID(time.Now()), nil
		b, _ := json.Marshal(syncproto.Mutation{Seq: seq, Kind: syncproto.KindVisitCreate, HLC: clock.Tick(), Visit: &v})
		f.file.Mutations = append(f.file.Mutations, b)
	}
	body := f.encode(t)
	sum, err := outboximport.Import(bg, f.cfg, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Applied) != 450 || len(sum.Duplicate) != 1 || len(sum.Rejected) != 0 {
		t.Fatalf("applied %d, duplicate %d, rejected %+v", len(sum.Applied), len(sum.Duplicate), sum.Rejected)
	}
	for i, it := range sum.Applied {
		if it.Seq != int64(i+2) {
			t.Fatalf("answer %d is seq %d", i, it.Seq)
		}
	}
	sum, err = outboximport.Import(bg, f.cfg, bytes.NewReader(body))
	if err != nil || sum.Changed() || len(sum.Duplicate) != 451 {
		t.Fatalf("second import: %v, %d applied, %d duplicate", err, len(sum.Applied), len(sum.Duplicate))
	}
	if n := f.count(t, `SELECT count(*) FROM visits WHERE device_id = ?`, f.devID); n != 451 {
		t.Errorf("%d visits, want 451", n)
	}
}
