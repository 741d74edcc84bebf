package mobileclient

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"fieldsync/syncproto"
)

// FuzzApplyPage feeds arbitrary pull responses to the op applier: it must
// never panic, and whatever it does it never touches the outbox; a refused
// page changes nothing.
func FuzzApplyPage(f *testing.F) {
	hh := newID()
	seeds := []syncproto.PullResponse{
		{Cursor: "a", Ops: placeOps(fixturePlaces())},
		{Cursor: "b", Ops: []syncproto.Op{{Op: syncproto.OpReset}, hhOp(hh, "G11", 3, map[string]json.RawMessage{"head_name": str("x")})}},
		{Cursor: "c", Ops: []syncproto.Op{{Op: syncproto.OpScopeLeave, Place: "V1"}, {Op: syncproto.OpDelete, Type: syncproto.EntityHousehold, ID: hh}}},
		{Cursor: "d", Ops: []syncproto.Op{{Op: syncproto.OpPut, Type: syncproto.EntityVisit, ID: "x"}}},
	}
	for _, s := range seeds {
		b, _ := json.Marshal(s)
		f.Add(b)
	}
	c, err := Open(f.TempDir(), "", nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { c.Close() })
	ctx := context.Background()
	var rep SyncReport
	if err := c.applyPage(ctx, &syncproto.PullResponse{Cursor: "seed", Ops: append(placeOps(fixturePlaces()), hhOp(hh, "G11", 1, map[string]json.RawMessage{"head_name": str("a")}))}, &rep); err != nil {
		f.Fatal(err)
	}
	if err := c.UpdateHousehold(hh, map[string]json.RawMessage{"notes": str("mine")}); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		resp, err := syncproto.DecodePullResponse(bytes.NewReader(data))
		if err != nil {
			return
		}
		before, _, _ := getMeta(ctx, c.db, metaCursor)
		err = c.applyPage(ctx, resp, &SyncReport{})
		after, _, _ := getMeta(ctx, c.db, metaCursor)
		if err != nil && after != before {
			t.Fatalf("refused page moved the cursor")
		}
		if err == nil && after != resp.Cursor {
			t.Fatalf("cursor %q, want %q", after, resp.Cursor)
		}
		if n := count(t, c.db, `SELECT count(*) FROM outbox`); n != 1 {
			t.Fatalf("outbox has %d rows", n)
		}
	})
}
