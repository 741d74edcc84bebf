package mobileclient

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"fieldsync/syncproto"
)

// TestEncodeBody_SameBytesAsSyncproto: pooled writers and buffers give
// exactly the bytes of syncproto.Encode (gzip at gzip.BestCompression),
// call after call and from many goroutines at once, and a returned body is
// never overwritten by a later call.
func TestEncodeBody_SameBytesAsSyncproto(t *testing.T) {
	bodies := []any{
		syncproto.PullRequest{ProtocolVersion: 1, DeviceID: "dev", Cursor: "c<&>"},
		enrollRequest{Code: "code", Name: "tablet"},
	}
	big := syncproto.PushRequest{ProtocolVersion: 1, DeviceID: "dev"}
	for i := 0; i < 200; i++ {
		v := surveyVisit(benchHH, fmt.Sprintf("户主%d", i))
		v.ID = syncproto.NewID(time.Now())
		big.Mutations = append(big.Mutations, syncproto.Mutation{Seq: int64(i + 1), Kind: syncproto.KindVisitCreate, Visit: &v})
	}
	bodies = append(bodies, big)
	// Push bodies are written by hand (encodeJSON): the same bytes, for
	// the outbox's bodies in both protocol forms, with and without
	// health, and for no mutations at all.
	var rows []outboxRow
	for i, m := range big.Mutations {
		if i%3 == 1 {
			m.Visit.Evidence = []syncproto.EvidenceRef{{SHA256: strings.Repeat("ab", 32), Size: 1, MediaType: "image/jpeg", Slot: "photo"}}
		}
		if i%5 == 2 {
			m.Visit.GPSReason = "山谷里<没有>信号 & 雨"
		}
		m.HLC = syncproto.HLC{WallMs: 1700000000000 + int64(i), Counter: uint16(i)}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, outboxRow{seq: m.Seq, kind: string(m.Kind), entity: m.Visit.ID, body: string(b)})
	}
	health := &syncproto.OutboxHealth{PendingMutations: 3, PendingBytes: 1 << 20, OldestPending: time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC), AppVersion: "网页<1>"}
	bodies = append(bodies,
		pushBody{ProtocolVersion: 1, DeviceID: "dev<1>", Mutations: pushMutations(rows, 1), Health: health},
		pushBody{ProtocolVersion: 2, DeviceID: "设备", Mutations: pushMutations(rows, 2)},
		pushBody{ProtocolVersion: 2, DeviceID: "d", Mutations: pushMutations(rows[:1], 2), Health: &syncproto.OutboxHealth{}},
		pushBody{ProtocolVersion: 2, DeviceID: "d", Mutations: []json.RawMessage{}},
		pushBody{ProtocolVersion: 2, DeviceID: "d"})
	var want [][2][]byte
	for _, v := range bodies {
		var plain, gz bytes.Buffer
		if err := syncproto.Encode(&plain, v, false); err != nil {
			t.Fatal(err)
		}
		zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
		zw.Write(plain.Bytes())
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		want = append(want, [2][]byte{plain.Bytes(), gz.Bytes()})
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			var kept [][]byte
			for round := 0; round < 8; round++ {
				for i, v := range bodies {
					for k, gz := range []bool{false, true} {
						got, err := encodeBody(v, gz)
						if err != nil {
							errs <- err
							return
						}
						if !bytes.Equal(got, want[i][k]) {
							errs <- fmt.Errorf("body %d gzip %v: %d bytes differ from syncproto.Encode's %d", i, gz, len(got), len(want[i][k]))
							return
						}
						if round == 0 {
							kept = append(kept, got)
						}
					}
				}
			}
			for j, b := range kept {
				if !bytes.Equal(b, want[j/2][j%2]) {
					errs <- fmt.Errorf("body %d changed after later calls", j)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if _, err := encodeBody(map[string]any{"bad": func() {}}, true); err == nil {
		t.Error("encodeBody of a func: no error")
	}
}
