package mobileclient

import (
	"context"
	"database/sql"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"fieldsync/syncproto"
)

// fastBackoff keeps retry tests quick.
var fastBackoff = Backoff{Base: time.Millisecond, Max: 5 * time.Millisecond, MaxAttempts: 4}

func openTest(t *testing.T, dir, server string, o *Options) *Client {
	t.Helper()
	if o == nil {
		o = &Options{Backoff: fastBackoff}
	}
	c, err := Open(dir, server, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func raw(s string) json.RawMessage { return json.RawMessage(s) }

func str(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

// fixturePlaces is the server's test tree: C1 → T1 → V1 (G11, G12), V2 (G21).
func fixturePlaces() []syncproto.Place {
	return []syncproto.Place{
		{Code: "C1", Name: "C1", Level: "county"},
		{Code: "T1", Name: "T1", Level: "township", ParentCode: "C1"},
		{Code: "V1", Name: "V1", Level: "village", ParentCode: "T1"},
		{Code: "V2", Name: "V2", Level: "village", ParentCode: "T1"},
		{Code: "G11", Name: "G11", Level: "group", ParentCode: "V1"},
		{Code: "G12", Name: "G12", Level: "group", ParentCode: "V1"},
		{Code: "G21", Name: "G21", Level: "group", ParentCode: "V2"},
	}
}

func placeOps(ps []syncproto.Place) []syncproto.Op {
	var ops []syncproto.Op
	for i := range ps {
		ops = append(ops, syncproto.Op{Op: syncproto.OpPut, Type: syncproto.EntityPlace, ID: ps[i].Code, PlaceData: &ps[i]})
	}
	return ops
}

func formOps() []syncproto.Op {
	var ops []syncproto.Op
	for _, f := range syncproto.Templates() {
		ops = append(ops, syncproto.Op{Op: syncproto.OpPut, Type: syncproto.EntityForm, ID: f.ID + "@1", Form: &f})
	}
	return ops
}

func hhOp(id, place string, version int64, fields map[string]json.RawMessage) syncproto.Op {
	return syncproto.Op{Op: syncproto.OpPut, Type: syncproto.EntityHousehold, ID: id, Place: place,
		Household: &syncproto.Household{ID: id, PlaceCode: place, Fields: fields, Version: version}}
}

// page applies ops as one pulled page.
func page(t *testing.T, c *Client, cursor string, ops ...syncproto.Op) {
	t.Helper()
	var rep SyncReport
	if err := c.applyPage(context.Background(), &syncproto.PullResponse{ProtocolVersion: 1, Ops: ops, Cursor: cursor}, &rep); err != nil {
		t.Fatalf("applyPage: %v", err)
	}
}

// seed gives c the fixture places, the form templates and households.
func seed(t *testing.T, c *Client, hs ...syncproto.Op) {
	t.Helper()
	ops := append(placeOps(fixturePlaces()), formOps()...)
	page(t, c, "c-seed", append(ops, hs...)...)
}

// surveyAnswers are valid answers for household_survey@1.
func surveyAnswers(head string) map[string]json.RawMessage {
	return map[string]json.RawMessage{
		"head_name":         str(head),
		"members_count":     raw("4"),
		"poverty_status":    str("lifted"),
		"dibao_class":       str("none"),
		"wubao":             str("no"),
		"pension":           str("yes"),
		"medical_insurance": str("yes"),
		"income_per_capita": raw("8650.5"),
		"member_changes":    raw(`["birth"]`),
	}
}

func surveyVisit(householdID, head string) syncproto.Visit {
	return syncproto.Visit{
		HouseholdID: householdID,
		FormID:      "household_survey",
		FormVersion: 1,
		Answers:     surveyAnswers(head),
		Point:       &syncproto.Point{Lon: 103.15, Lat: 25.15},
		AccuracyM:   8,
	}
}

type outboxEntry struct {
	Seq  int64
	Kind string
	M    syncproto.Mutation
}

func outbox(t *testing.T, c *Client) []outboxEntry {
	t.Helper()
	rows, err := c.db.Query(`SELECT seq, kind, body FROM outbox ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []outboxEntry
	for rows.Next() {
		var e outboxEntry
		var body string
		if err := rows.Scan(&e.Seq, &e.Kind, &body); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(body), &e.M); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func count(t *testing.T, db *sql.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func mustHousehold(t *testing.T, c *Client, id string) syncproto.Household {
	t.Helper()
	h, err := c.Household(id)
	if err != nil {
		t.Fatalf("Household(%s): %v", id, err)
	}
	return h
}

func fieldEq(t *testing.T, h syncproto.Household, name, want string) {
	t.Helper()
	got := string(h.Fields[name])
	if want == "" {
		if _, ok := h.Fields[name]; ok {
			t.Errorf("household %s: field %s = %s, want absent", h.ID, name, got)
		}
		return
	}
	if got != want {
		t.Errorf("household %s: field %s = %s, want %s", h.ID, name, got, want)
	}
}

// ack answers the first n outbox rows as the server would, with the given
// status for all and household versions from version.
func ack(t *testing.T, c *Client, status string, version int64) SyncReport {
	t.Helper()
	batch, err := c.loadBatch(context.Background(), c.opts.MaxBatch)
	if err != nil {
		t.Fatal(err)
	}
	resp := &syncproto.PushResponse{ProtocolVersion: 1}
	for i, r := range batch {
		res := syncproto.MutationResult{Seq: r.seq, Status: status}
		if status == syncproto.StatusRejected {
			res.Code, res.Message = syncproto.CodeValidation, "nope"
		} else if r.kind != string(syncproto.KindVisitCreate) {
			res.Version = version + int64(i)
		}
		resp.Results = append(resp.Results, res)
		resp.LastSeq = r.seq
	}
	var rep SyncReport
	if _, err := c.savePush(context.Background(), batch, resp, &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

func join(s []string) string { return strings.Join(s, " ") }

func sorted(s ...string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
