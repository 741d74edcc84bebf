package syncproto

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// TestWritePullResponse_SameAsEncode checks that a response written from
// its pre-encoded ops decodes to the same response as one encoded whole,
// and that ops not matching EncodedOps are encoded as usual.
func TestWritePullResponse_SameAsEncode(t *testing.T) {
	seq := int64(41)
	ops := []Op{
		{Op: OpScopeEnter, Place: "5301"},
		{Op: OpPut, Type: EntityHousehold, ID: "h1", Place: "5301", Household: &Household{ID: "h1", PlaceCode: "5301",
			Fields: map[string]json.RawMessage{"户主": json.RawMessage(`"张三 <&>"`), "members": json.RawMessage(`[{"n":1}]`)}, Version: 3}},
		{Op: OpDelete, Type: EntityVisit, ID: "v9", Seq: 7},
	}
	var enc []json.RawMessage
	for _, op := range ops {
		b, err := json.Marshal(op)
		if err != nil {
			t.Fatal(err)
		}
		enc = append(enc, b)
	}
	for _, tc := range []struct {
		name string
		resp PullResponse
	}{
		{"pre-encoded", PullResponse{ProtocolVersion: ProtocolVersion, Ops: ops, EncodedOps: enc, Cursor: "c1", HasMore: true, LastSeq: &seq}},
		{"no ops", PullResponse{ProtocolVersion: ProtocolVersion, Ops: []Op{}, EncodedOps: []json.RawMessage{}, Cursor: "c2"}},
		{"encoded ops missing", PullResponse{ProtocolVersion: ProtocolVersion, Ops: ops, Cursor: "c3"}},
		{"encoded ops short", PullResponse{ProtocolVersion: ProtocolVersion, Ops: ops, EncodedOps: enc[:1], Cursor: "c4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got, want bytes.Buffer
			if err := WritePullResponse(&got, &tc.resp); err != nil {
				t.Fatal(err)
			}
			if err := Encode(&want, &tc.resp, false); err != nil {
				t.Fatal(err)
			}
			if !json.Valid(got.Bytes()) {
				t.Fatalf("not JSON: %s", got.Bytes())
			}
			g, err := DecodePullResponse(&got)
			if err != nil {
				t.Fatal(err)
			}
			w, err := DecodePullResponse(&want)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(g, w) {
				t.Errorf("written %+v\nencoded %+v", g, w)
			}
			if len(g.Ops) != len(tc.resp.Ops) {
				t.Errorf("%d ops, want %d", len(g.Ops), len(tc.resp.Ops))
			}
		})
	}
}
