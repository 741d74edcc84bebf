package mobileclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"runtime/pprof"
	"testing"
	"time"

	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/syncproto"
)

// benchHouseholds makes n households in place, shaped like a register
// import (a few text fields and a location).
func benchHouseholds(n int, place string) []syncproto.Household {
	hs := make([]syncproto.Household, 0, n)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		hs = append(hs, syncproto.Household{ID: syncproto.NewID(t0), PlaceCode: place, Fields: map[string]json.RawMessage{
			"head_name":      json.RawMessage(fmt.Sprintf(`"户主%06d"`, i)),
			"members_count":  json.RawMessage(`4`),
			"location":       json.RawMessage(fmt.Sprintf(`{"lon":%.6f,"lat":%.6f}`, 103.1+float64(i%1000)*0.00005, 25.1+float64(i/1000)*0.00005)),
			"poverty_status": json.RawMessage(`"lifted"`),
			"address":        json.RawMessage(`"采山坪组"`),
		}})
	}
	return hs
}

// BenchmarkFirstSync10k: a new device's first sync (enrollment excluded)
// against the real server (servertest) with 10,000 households in its
// scope. The device side runs under the pprof label side=device, so
// `go tool pprof -tagfocus=side=device` on a -cpuprofile of this benchmark
// shows the device's share.
func BenchmarkFirstSync10k(b *testing.B) {
	env := servertest.Start(b)
	for i := 0; i < 10; i++ {
		if err := env.Store.ImportHouseholds(context.Background(), benchHouseholds(1000, "G11"), 0); err != nil {
			b.Fatal(err)
		}
	}
	u := env.CreateUser(b, "bench", domain.RoleFieldWorker, "V1")
	ctx := context.Background()
	labels := pprof.Labels("side", "device")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c, err := Open(b.TempDir(), env.URL, &Options{Backoff: fastBackoff})
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Enroll(ctx, env.EnrollCode(b, u.ID), fmt.Sprintf("bench-%d", i)); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		var rep SyncReport
		pprof.Do(ctx, labels, func(ctx context.Context) {
			rep, err = c.Sync(ctx)
		})
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		if n := countHouseholds(b, c); n != 10_000 {
			b.Fatalf("device holds %d households, want 10000 (report %+v)", n, rep)
		}
		c.Close()
		b.StartTimer()
	}
}

// BenchmarkApplyPages10k is the device side of BenchmarkFirstSync10k
// alone: 10,000 household puts applied as pulled pages of 500 ops into a
// new device database (no server, no HTTP, no JSON decoding).
func BenchmarkApplyPages10k(b *testing.B) {
	hs := benchHouseholds(10_000, "G11")
	var pages [][]syncproto.Op
	var ops []syncproto.Op
	ops = append(ops, placeOps(fixturePlaces())...)
	ops = append(ops, formOps()...)
	for i := range hs {
		ops = append(ops, syncproto.Op{Op: syncproto.OpPut, Type: syncproto.EntityHousehold, ID: hs[i].ID, Place: hs[i].PlaceCode, Household: &hs[i]})
		if len(ops) == 500 {
			pages, ops = append(pages, ops), nil
		}
	}
	if len(ops) > 0 {
		pages = append(pages, ops)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c, err := Open(b.TempDir(), "", &Options{Backoff: fastBackoff})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		for j, p := range pages {
			var rep SyncReport
			if err := c.applyPage(ctx, &syncproto.PullResponse{ProtocolVersion: 1, Ops: p, Cursor: fmt.Sprint("c", j)}, &rep); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if n := countHouseholds(b, c); n != 10_000 {
			b.Fatalf("device holds %d households, want 10000", n)
		}
		c.Close()
		b.StartTimer()
	}
}

// BenchmarkApplyLargePage: one pulled page of 5,000 household puts (as
// the server sends it at MaxPullBytes: decoding the JSON included) applied
// into a device database that already holds 20,000 households, the device
// side of a large scope's first sync per page.
func BenchmarkApplyLargePage(b *testing.B) {
	const pageSize, held = 5_000, 20_000
	ctx := context.Background()
	c, err := Open(b.TempDir(), "", &Options{Backoff: fastBackoff})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	base := append(placeOps(fixturePlaces()), formOps()...)
	for i, h := range benchHouseholds(held, "G11") {
		base = append(base, syncproto.Op{Op: syncproto.OpPut, Type: syncproto.EntityHousehold, ID: h.ID, Place: h.PlaceCode, Household: &h})
		if len(base) == pageSize || i == held-1 {
			if err := c.applyPage(ctx, &syncproto.PullResponse{ProtocolVersion: 1, Ops: base, Cursor: fmt.Sprint("seed", i)}, &SyncReport{}); err != nil {
				b.Fatal(err)
			}
			base = nil
		}
	}
	hs := benchHouseholds(pageSize, "G12")
	resp := syncproto.PullResponse{ProtocolVersion: 1, Cursor: "large", HasMore: true}
	for i := range hs {
		resp.Ops = append(resp.Ops, syncproto.Op{Op: syncproto.OpPut, Type: syncproto.EntityHousehold, ID: hs[i].ID, Place: hs[i].PlaceCode, Household: &hs[i]})
	}
	wire, err := json.Marshal(&resp)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		page, err := syncproto.DecodePullResponse(bytes.NewReader(wire))
		if err != nil {
			b.Fatal(err)
		}
		if err := c.applyPage(ctx, page, &SyncReport{}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if n := countHouseholds(b, c); n != held+pageSize {
		b.Fatalf("device holds %d households, want %d", n, held+pageSize)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*pageSize), "µs/household")
}

func countHouseholds(b *testing.B, c *Client) int {
	var n int
	if err := c.db.QueryRow(`SELECT count(*) FROM households WHERE deleted = 0 AND fields <> '{}'`).Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkEncodeBody: one gzip-compressed push body of 20 visits.
func BenchmarkEncodeBody(b *testing.B) {
	req := syncproto.PushRequest{ProtocolVersion: 1, DeviceID: "dev"}
	for i := 0; i < 20; i++ {
		v := surveyVisit(benchHH, fmt.Sprintf("户主%d", i))
		v.ID = syncproto.NewID(time.Now())
		req.Mutations = append(req.Mutations, syncproto.Mutation{Seq: int64(i + 1), Kind: syncproto.KindVisitCreate, Visit: &v})
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodeBody(req, true); err != nil {
			b.Fatal(err)
		}
	}
}

const benchHH = "01JDZX5Q7R8S9T0V1W2X3Y4Z5A"
