package syncproto

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// sampleBatch is a realistic push of n household-survey visits: Chinese
// answers, a GPS point, two evidence references each.
func sampleBatch(n int) PushRequest {
	t0 := time.Date(2026, 11, 28, 9, 0, 0, 0, time.FixedZone("CST", 8*3600))
	req := PushRequest{ProtocolVersion: ProtocolVersion, DeviceID: "01JDZX5Q7R8S9T0V1W2X3Y4Z5A"}
	for i := 0; i < n; i++ {
		at := t0.Add(time.Duration(i) * 17 * time.Minute)
		ans := map[string]json.RawMessage{
			"head_name":         json.RawMessage(fmt.Sprintf(`"王建%s"`, string(rune('国'+i)))),
			"members_count":     json.RawMessage(fmt.Sprint(3 + i%4)),
			"poverty_status":    json.RawMessage(`"lifted"`),
			"dibao_class":       json.RawMessage(`"none"`),
			"wubao":             json.RawMessage(`"no"`),
			"pension":           json.RawMessage(`"yes"`),
			"medical_insurance": json.RawMessage(`"yes"`),
			"income_per_capita": json.RawMessage(fmt.Sprintf("%d.5", 5200+i*37)),
			"notes":             json.RawMessage(`"房屋已加固,饮水正常"`),
		}
		req.Mutations = append(req.Mutations, Mutation{
			Seq: int64(100 + i), Kind: KindVisitCreate, HLC: HLC{WallMs: at.UnixMilli(), Counter: uint16(i % 3)},
			Visit: &Visit{
				ID: NewID(at), HouseholdID: NewID(at.Add(-time.Hour * 24 * 400)), FormID: "household_survey", FormVersion: 1,
				Answers: ans, Point: &Point{Lon: 103.71234 + float64(i)*0.0003, Lat: 25.04321 + float64(i)*0.0002}, AccuracyM: 6.5, DeviceTime: at,
				Evidence: []EvidenceRef{
					{SHA256: fakeSum(i, 1), Size: 245_000 + int64(i), MediaType: "image/jpeg", Slot: "household_register"},
					{SHA256: fakeSum(i, 2), Size: 12_000, MediaType: "image/png", Slot: "household_head_signature"},
				},
			},
		})
	}
	return req
}

// fakeSum is a realistic (incompressible) SHA-256 hex string.
func fakeSum(i, j int) string {
	s := sha256.Sum256([]byte(fmt.Sprint(i, "/", j)))
	return hex.EncodeToString(s[:])
}

func gzipLen(b []byte) int {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.Len()
}

// BenchmarkWireBytesPerVisit reports compressed bytes per visit in a batch
// of 20, for the JSON encoding we use and for CBOR as the alternative we
// weighed.
func BenchmarkWireBytesPerVisit(b *testing.B) {
	req := sampleBatch(20)
	var jsonPer, cborPer, rawPer float64
	for i := 0; i < b.N; i++ {
		var jb bytes.Buffer
		if err := Encode(&jb, req, true); err != nil {
			b.Fatal(err)
		}
		jsonPer = float64(jb.Len()) / 20
		plain, _ := json.Marshal(req)
		rawPer = float64(len(plain)) / 20
		cb, err := cbor.Marshal(req)
		if err != nil {
			b.Fatal(err)
		}
		cborPer = float64(gzipLen(cb)) / 20
	}
	b.ReportMetric(jsonPer, "json_gzip_B/visit")
	b.ReportMetric(cborPer, "cbor_gzip_B/visit")
	b.ReportMetric(rawPer, "json_plain_B/visit")
}

func TestWireSizeSane(t *testing.T) {
	var jb bytes.Buffer
	if err := Encode(&jb, sampleBatch(20), true); err != nil {
		t.Fatal(err)
	}
	zr, _ := gzip.NewReader(&jb)
	back, err := DecodePushRequest(zr)
	if err != nil || len(back.Mutations) != 20 || back.Mutations[19].Visit.Evidence[1].Slot != "household_head_signature" {
		t.Fatalf("round trip: %v", err)
	}
}
