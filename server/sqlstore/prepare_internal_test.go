package sqlstore

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"fieldsync/syncproto"
)

// TestPrepareVisit_SameAsReflective: the content hash, stored answers,
// audit detail and kept body that preparePush writes without reflection
// are the bytes the reflective encoder wrote for them, so that hashes and
// digests stored before still match a replay.
func TestPrepareVisit_SameAsReflective(t *testing.T) {
	shanghai := time.FixedZone("CST", 8*3600)
	for i, v := range []syncproto.Visit{
		{ID: "01JV", HouseholdID: "01JH", FormID: "household_survey", FormVersion: 2, DeviceTime: time.Date(2026, 12, 7, 9, 0, 0, 1, shanghai),
			Answers: map[string]json.RawMessage{"head_name": json.RawMessage(`"户主"`), "n": json.RawMessage(`3`)}},
		{ID: "v<&>", HouseholdID: `h"1`, FormID: "表单", FormVersion: 10, CorrectsVisitID: "old<1>", GPSReason: "山谷里没有信号",
			Point: &syncproto.Point{Lon: 103.25, Lat: 25.0001}, AccuracyM: 35.5, DeviceTime: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
			Evidence: []syncproto.EvidenceRef{{SHA256: "ab", Size: 10, MediaType: "image/jpeg", Slot: "photo"}},
			Answers:  map[string]json.RawMessage{"note": json.RawMessage("{ \"a\" :\n [1, 2] }"), "x": json.RawMessage(`"<b>"`), "e": json.RawMessage(`[]`)}},
		{ID: "v3", Answers: nil},
	} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			p := prepareVisit(&v)
			pushed := v
			pushed.Answers = compactAnswers(v.Answers)
			whole, _ := json.Marshal(pushed)
			sum := sha256.Sum256(whole)
			if want := hex.EncodeToString(sum[:]); p.hash != want {
				t.Errorf("hash %s, reflective %s", p.hash, want)
			}
			answers, _ := json.Marshal(pushed.Answers)
			if p.answersJS != string(answers) {
				t.Errorf("answers %s, reflective %s", p.answersJS, answers)
			}
			after, _ := json.Marshal(map[string]any{"household_id": v.HouseholdID, "form": fmt.Sprintf("%s@%d", v.FormID, v.FormVersion),
				"corrects": v.CorrectsVisitID, "evidence": len(v.Evidence)})
			if string(p.audit) != string(after) {
				t.Errorf("audit %s, reflective %s", p.audit, after)
			}
			m := syncproto.Mutation{Seq: 3, Kind: syncproto.KindVisitCreate, HLC: syncproto.HLC{WallMs: 1765000000000}, Visit: &v}
			body, _ := json.Marshal(m)
			if got := mutationBody(m); got != string(body) {
				t.Errorf("body %s, reflective %s", got, body)
			}
		})
	}
}
