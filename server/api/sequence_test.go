package api_test

import (
	"encoding/json"
	"strings"
	"testing"

	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/syncproto"
)

// TestPush_SequenceReused: a sequence number the server applied, pushed
// again with different content (a device restored from a backup), gets
// 409 sequence_reused with the server's last seq, and changes nothing. The
// same mutation again (also spaced otherwise) is a replay: the stored
// answer.
func TestPush_SequenceReused(t *testing.T) {
	env := servertest.Start(t)
	const hh = "01JDZX5Q7R8S9T0V1W2X3Y4Z5A"
	env.AddHouseholds(t, syncproto.Household{ID: hh, PlaceCode: "G11", Fields: map[string]json.RawMessage{}})
	worker := env.CreateUser(t, "worker", domain.RoleFieldWorker, "V1")
	devID, token := env.Device(t, worker.ID)
	visit := func(seq, id, spacing string) string {
		return `{"seq":` + seq + `,"kind":"visit.create","hlc":"1764345600000-0001","visit":{"id":"` + id + `","household_id":"` + hh +
			`","form_id":"water_cellar_progress","form_version":1,"answers":{"site_name":` + spacing + `"塘子1号水窖","capacity_m3":24,"stage":"built","due_date":"2026-11-30"},"device_time":"2026-11-28T09:00:00Z"}}`
	}
	push := func(muts ...string) string {
		return `{"protocol_version":1,"device_id":"` + devID + `","mutations":[` + strings.Join(muts, ",") + `]}`
	}
	const a, b, c = "01JDZX5Q7R8S9T0V1W2X3Y4Z5B", "01JDZX5Q7R8S9T0V1W2X3Y4Z5C", "01JDZX5Q7R8S9T0V1W2X3Y4Z5D"
	var first []byte
	applied := func(t *testing.T, body []byte) {
		var r syncproto.PushResponse
		if err := json.Unmarshal(body, &r); err != nil || r.LastSeq != 2 || len(r.Results) != 2 {
			t.Fatalf("answer %s", body)
		}
		for _, res := range r.Results {
			if res.Status != syncproto.StatusApplied {
				t.Fatalf("answer %s", body)
			}
		}
	}
	first = call{name: "first", method: "POST", path: "/api/v1/sync/push", token: token, body: push(visit("1", a, ""), visit("2", b, "")), status: 200, check: applied}.run(t, env)
	runCalls(t, env, []call{
		{name: "replay answers the same", method: "POST", path: "/api/v1/sync/push", token: token, body: push(visit("1", a, ""), visit("2", b, "")), status: 200,
			check: func(t *testing.T, body []byte) {
				var x, y syncproto.PushResponse
				_ = json.Unmarshal(first, &x)
				_ = json.Unmarshal(body, &y)
				xs, _ := json.Marshal(x.Results)
				ys, _ := json.Marshal(y.Results)
				if string(xs) != string(ys) {
					t.Fatalf("replay answered %s, first %s", ys, xs)
				}
			}},
		{name: "replay spaced otherwise", method: "POST", path: "/api/v1/sync/push", token: token, body: push(visit("1", a, "  "), visit("2", b, "\n")), status: 200, check: applied},
		{name: "reused seq", method: "POST", path: "/api/v1/sync/push", token: token, body: push(visit("2", c, ""), visit("3", "01JDZX5Q7R8S9T0V1W2X3Y4Z5E", "")), status: 409, code: syncproto.CodeSequenceReused,
			check: func(t *testing.T, body []byte) {
				var e syncproto.Error
				if err := json.Unmarshal(body, &e); err != nil {
					t.Fatal(err)
				}
				if last, _ := e.Details["last_seq"].(float64); last != 2 {
					t.Fatalf("details %v, want last_seq 2", e.Details)
				}
				if seq, _ := e.Details["seq"].(float64); seq != 2 {
					t.Fatalf("details %v, want seq 2", e.Details)
				}
			}},
		{name: "reused seq after a replayed one", method: "POST", path: "/api/v1/sync/push", token: token, body: push(visit("1", a, ""), visit("2", c, "")), status: 409, code: syncproto.CodeSequenceReused},
		{name: "renumbered after last_seq", method: "POST", path: "/api/v1/sync/push", token: token, body: push(visit("3", c, "")), status: 200},
	})
	var n int
	if err := env.Store.DB().QueryRow(`SELECT count(*) FROM visits`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("visits stored: %d (%v), want 3", n, err)
	}
	if err := env.Store.DB().QueryRow(`SELECT count(*) FROM visits WHERE id = '01JDZX5Q7R8S9T0V1W2X3Y4Z5E'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("a refused push stored a visit")
	}
}
