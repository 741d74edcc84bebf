package mobileclient

import (
	"bytes"
	"compress/gzip"
	"fmt"
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
