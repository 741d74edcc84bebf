package mobileclient

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"testing"

	"fieldsync/syncproto"
)

// householdRows returns every households row, all columns, by id.
func householdRows(t *testing.T, q querier) map[string]string {
	t.Helper()
	rows, err := q.QueryContext(context.Background(), `SELECT id, place_code, fields, deleted, has_base, base_place, base_version, base_fields, local_only FROM households`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, place, fields, basePlace, baseFields string
		var deleted, hasBase, localOnly bool
		var baseVersion int64
		if err := rows.Scan(&id, &place, &fields, &deleted, &hasBase, &basePlace, &baseVersion, &baseFields, &localOnly); err != nil {
			t.Fatal(err)
		}
		out[id] = fmt.Sprintf("place=%s fields=%s deleted=%v has_base=%v base_place=%s base_version=%d base_fields=%s local_only=%v",
			place, fields, deleted, hasBase, basePlace, baseVersion, baseFields, localOnly)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkViewMatchesRecompute recomputes every household in ids one by one
// (the reference) inside a transaction that is rolled back, and fails if
// that changes any row: the view recomputeMany left must be the one
// recompute makes.
func checkViewMatchesRecompute(t *testing.T, c *Client, ids []string) {
	t.Helper()
	ctx := context.Background()
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	got := householdRows(t, tx)
	for _, id := range ids {
		if err := recompute(ctx, tx, id); err != nil {
			t.Fatal(err)
		}
	}
	want := householdRows(t, tx)
	for _, id := range sorted(slices.Collect(maps.Keys(want))...) {
		if got[id] != want[id] {
			t.Errorf("household %q:\n got %s\nwant %s", id, got[id], want[id])
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("household %q: got %s, want no row", id, got[id])
		}
	}
}

// TestRecomputeMany_MatchesRecompute: a pulled page touching households in
// every state (plain, with pending outbox mutations, with overlays, local
// only, dropped, unknown, odd field JSON) leaves the view exactly as
// recomputing each household on its own would.
func TestRecomputeMany_MatchesRecompute(t *testing.T) {
	c := openTest(t, t.TempDir(), "", nil)
	plain, updated, moved, deleted, dropped, droppedPending, acked := newID(), newID(), newID(), newID(), newID(), newID(), newID()
	badUTF8, nul := "bad-\xff-id", "nul-\x00-id"
	fields := func(head string) map[string]json.RawMessage {
		return map[string]json.RawMessage{"head_name": str(head), "members_count": raw("3")}
	}
	var hs []syncproto.Op
	for _, id := range []string{plain, updated, moved, deleted, dropped, droppedPending} {
		hs = append(hs, hhOp(id, "G11", 1, fields("h-"+id)))
	}
	seed(t, c, hs...)

	// Applied changes the server has not sent back yet: an overlay on
	// moved, and a creation the server acknowledged (a base for acked).
	if err := c.MoveHousehold(moved, "G12"); err != nil {
		t.Fatal(err)
	}
	ackedID, err := c.CreateHousehold("G21", fields("acked"))
	if err != nil {
		t.Fatal(err)
	}
	ack(t, c, syncproto.StatusApplied, 5)
	// Unpushed mutations.
	if err := c.UpdateHousehold(updated, map[string]json.RawMessage{"head_name": str("local"), "members_count": raw("null")}); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteHousehold(deleted); err != nil {
		t.Fatal(err)
	}
	if err := c.UpdateHousehold(droppedPending, map[string]json.RawMessage{"notes": str("kept")}); err != nil {
		t.Fatal(err)
	}
	localID, err := c.CreateHousehold("G11", fields("local"))
	if err != nil {
		t.Fatal(err)
	}

	odd := map[string]json.RawMessage{
		"head_name":  raw(` "<b>&amp;</b> \u00e9 \u2028" `),
		"members":    raw(`[ {"name" : "a", "age":  3}, null ]`),
		"nothing":    raw(`null`),
		"k\u00e9y<>": raw(`{ "z": 1, "a": [ ] }`),
	}
	ops := []syncproto.Op{
		hhOp(plain, "G12", 2, odd),
		hhOp(updated, "G11", 2, fields("server")),
		hhOp(moved, "G11", 3, fields("moved-server")), // below the overlay's version
		hhOp(deleted, "G11", 2, fields("server")),
		hhOp(ackedID, "G21", 6, fields("acked-server")),
		hhOp(acked, "G21", 1, nil),
		hhOp(badUTF8, "G11", 1, fields("bad")),
		hhOp(nul, "G11", 1, fields("nul")),
		{Op: syncproto.OpDelete, Type: syncproto.EntityHousehold, ID: dropped},
		{Op: syncproto.OpDelete, Type: syncproto.EntityHousehold, ID: droppedPending},
		{Op: syncproto.OpDelete, Type: syncproto.EntityHousehold, ID: localID},
		{Op: syncproto.OpDelete, Type: syncproto.EntityHousehold, ID: "never-seen"},
	}
	page(t, c, "c-2", ops...)
	all := []string{plain, updated, moved, deleted, dropped, droppedPending, ackedID, acked, localID, badUTF8, nul, "never-seen"}
	checkViewMatchesRecompute(t, c, all)

	// Spot checks of what the view shows.
	if n := count(t, c.db, `SELECT count(*) FROM households WHERE id = ?`, dropped); n != 0 {
		t.Errorf("dropped household still has %d rows", n)
	}
	if h := mustHousehold(t, c, plain); h.PlaceCode != "G12" || string(h.Fields["members"]) != `[{"name":"a","age":3},null]` {
		t.Errorf("plain household = %+v", h)
	}
	fieldEq(t, mustHousehold(t, c, updated), "head_name", `"local"`)
	// Out of scope: a pending update alone does not keep it.
	if _, err := c.Household(droppedPending); err == nil {
		t.Errorf("dropped household with a pending update still visible")
	}
	if h := mustHousehold(t, c, moved); h.PlaceCode != "G12" {
		t.Errorf("moved household in %s, want G12 (overlay)", h.PlaceCode)
	}
	if _, err := c.Household(deleted); err == nil {
		t.Errorf("deleted household still visible")
	}
	mustHousehold(t, c, localID)

	// A stale view is rewritten completely, and a reset recomputes
	// everything the same way.
	ctx := context.Background()
	if err := c.withTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE households SET place_code = 'X', fields = '"stale"', deleted = 1, local_only = 1`); err != nil {
			return err
		}
		touched := map[string]bool{}
		for _, id := range all {
			touched[id] = true
		}
		return recomputeMany(ctx, tx, touched)
	}); err != nil {
		t.Fatal(err)
	}
	checkViewMatchesRecompute(t, c, all)
	if err := c.withTx(ctx, func(tx *sql.Tx) error {
		a := newApplier(ctx, tx, &SyncReport{})
		if err := a.reset(); err != nil {
			return err
		}
		return a.finish()
	}); err != nil {
		t.Fatal(err)
	}
	checkViewMatchesRecompute(t, c, all)
	// Only the pending creation has anything left to show.
	if got := householdRows(t, c.db); len(got) != 1 || got[localID] == "" {
		t.Errorf("households after reset: %v", got)
	}
}
