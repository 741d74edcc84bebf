package api_test

// Acceptance tests of issue 5 on the server side: the review round trip
// with a real device, layered review by role and place, the audit log
// (every mutation path, append-only) and outbox health (stuck devices).

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"golang.org/x/crypto/bcrypt"

	"fieldsync/mobileclient"
	"fieldsync/server/api"
	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/server/sqlstore"
	"fieldsync/syncproto"
)

const testPassword = "review-pass-1"

// cheapHash is a bcrypt hash of testPassword at the lowest cost, so that
// tests can create many users who sign in through the real login.
var cheapHash = func() string {
	h, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err != nil {
		panic(err)
	}
	return string(h)
}()

// userWithSession creates a user who can sign in and returns it with a session
// token.
func userWithSession(t *testing.T, env *servertest.Env, name string, role domain.Role, places ...string) (domain.User, string) {
	t.Helper()
	u, err := env.Store.CreateUser(context.Background(), domain.User{Username: name, DisplayName: name, Role: role, PlaceCodes: places, PasswordHash: cheapHash})
	if err != nil {
		t.Fatalf("user %s: %v", name, err)
	}
	return u, login(t, env, name, testPassword)
}

// tablet enrolls a real device (the mobileclient library) for u and makes
// its first sync.
func tablet(t *testing.T, env *servertest.Env, u domain.User, o *mobileclient.Options) *mobileclient.Client {
	t.Helper()
	if o == nil {
		o = &mobileclient.Options{}
	}
	if o.Backoff == (mobileclient.Backoff{}) {
		o.Backoff = mobileclient.Backoff{Base: time.Millisecond, Max: 5 * time.Millisecond, MaxAttempts: 3}
	}
	c, err := mobileclient.Open(t.TempDir(), env.URL, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Enroll(context.Background(), env.EnrollCode(t, u.ID), u.Username+"-tablet"); err != nil {
		t.Fatalf("enroll: %v", err)
	}
	syncOK(t, c)
	return c
}

func syncOK(t *testing.T, c *mobileclient.Client) mobileclient.SyncReport {
	t.Helper()
	rep, err := c.Sync(context.Background())
	if err != nil {
		t.Fatalf("sync: %v (%+v)", err, rep)
	}
	if rep.Rejected != 0 {
		t.Fatalf("sync: rejections %+v", rep.Rejections)
	}
	return rep
}

func tabletID(t *testing.T, c *mobileclient.Client) string {
	t.Helper()
	info, err := c.Info()
	if err != nil {
		t.Fatal(err)
	}
	return info.DeviceID
}

func rawStr(s string) json.RawMessage { b, _ := json.Marshal(s); return b }

func newHousehold(t *testing.T, env *servertest.Env, place string) string {
	t.Helper()
	id := syncproto.NewID(time.Now())
	env.AddHouseholds(t, syncproto.Household{ID: id, PlaceCode: place, Fields: map[string]json.RawMessage{
		"head_name": rawStr("王建国"), "notes": rawStr("imported"),
	}})
	return id
}

// retrofitVisit is a valid house_retrofit_inspection visit: a first
// inspection that failed, or a re-inspection that passed.
func retrofitVisit(household string, pass bool, corrects string) syncproto.Visit {
	a := map[string]json.RawMessage{
		"head_name":         rawStr("王建国"),
		"house_grade":       rawStr("C"),
		"retrofit_method":   rawStr("repair"),
		"retrofit_finished": rawStr("yes"),
		"inspection_round":  rawStr("first"),
		"inspection_result": rawStr("fail"),
		"failure_reason":    rawStr("墙体裂缝未修补"),
		"rework_due":        rawStr("2026-12-15"),
		"plaque_installed":  rawStr("no"),
		"inspection_date":   rawStr("2026-11-28"),
	}
	if pass {
		a["inspection_round"], a["inspection_result"], a["plaque_installed"] = rawStr("reinspection"), rawStr("pass"), rawStr("yes")
		a["inspection_date"] = rawStr("2026-12-10")
		delete(a, "failure_reason")
		delete(a, "rework_due")
	}
	return syncproto.Visit{HouseholdID: household, FormID: "house_retrofit_inspection", Answers: a,
		Point: &syncproto.Point{Lon: 103.15, Lat: 25.15}, AccuracyM: 6, CorrectsVisitID: corrects}
}

func surveyVisit(household string) syncproto.Visit {
	return syncproto.Visit{HouseholdID: household, FormID: "household_survey", Answers: map[string]json.RawMessage{
		"head_name":         rawStr("王建国"),
		"members_count":     json.RawMessage("4"),
		"poverty_status":    rawStr("lifted"),
		"dibao_class":       rawStr("none"),
		"wubao":             rawStr("no"),
		"pension":           rawStr("yes"),
		"medical_insurance": rawStr("yes"),
		"income_per_capita": json.RawMessage("8650.5"),
		"member_changes":    json.RawMessage(`["birth"]`),
	}, Point: &syncproto.Point{Lon: 103.15, Lat: 25.15}, AccuracyM: 8}
}

func serverVisit(t *testing.T, env *servertest.Env, id string) *syncproto.Visit {
	t.Helper()
	v, err := env.Store.Visit(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func deviceVisit(t *testing.T, c *mobileclient.Client, household, id string) syncproto.Visit {
	t.Helper()
	vs, err := c.Visits(household)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if v.ID == id {
			return v
		}
	}
	t.Fatalf("device has no visit %s", id)
	return syncproto.Visit{}
}

func postReview(t *testing.T, env *servertest.Env, token, visit, action, reason string, status int, code syncproto.Code) sqlstore.ReviewResult {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"action": action, "reason": reason})
	b := call{method: "POST", path: "/api/v1/visits/" + visit + "/review", token: token, body: string(body), status: status, code: code}.run(t, env)
	var r sqlstore.ReviewResult
	if status == 200 {
		json.Unmarshal(b, &r)
	}
	return r
}

// TestReview_RoundTrip: a failed retrofit inspection is submitted from a
// device, the township supervisor sends it back with a reason, the rework
// task reaches the device, the re-inspection (corrects_visit_id) closes
// the task, and the re-inspection is approved through both review steps
// (township check, county approval), each by the right role and place.
func TestReview_RoundTrip(t *testing.T) {
	env := servertest.Start(t)
	worker, workerTok := userWithSession(t, env, "wangge_li", domain.RoleFieldWorker, "V1")
	_, supV1 := userWithSession(t, env, "sup_village", domain.RoleSupervisor, "V1")
	_, supV2 := userWithSession(t, env, "sup_other_village", domain.RoleSupervisor, "V2")
	_, supT1 := userWithSession(t, env, "sup_township", domain.RoleSupervisor, "T1")
	_, supC1 := userWithSession(t, env, "sup_county", domain.RoleSupervisor, "C1")
	hh := newHousehold(t, env, "G11")
	dev := tablet(t, env, worker, nil)

	first, err := dev.RecordVisit(retrofitVisit(hh, false, ""))
	if err != nil {
		t.Fatal(err)
	}
	syncOK(t, dev)
	if v := serverVisit(t, env, first); v.ReviewState != domain.StateSubmitted {
		t.Fatalf("new visit state %q", v.ReviewState)
	}

	// Layered review, enforced by role and by place.
	postReview(t, env, workerTok, first, "approve", "", 403, syncproto.CodeForbidden) // a field worker cannot review
	postReview(t, env, supV2, first, "approve", "", 404, syncproto.CodeNotFound)      // another village's supervisor does not see it
	postReview(t, env, supV1, first, "approve", "", 403, syncproto.CodeForbidden)     // a village supervisor cannot do the township step
	postReview(t, env, supC1, first, "approve", "", 403, syncproto.CodeForbidden)     // the county does the county step, not the township one
	postReview(t, env, supT1, first, "rework", "", 422, syncproto.CodeValidation)     // a reason is required to send back
	postReview(t, env, supT1, first, "rework", "   ", 422, syncproto.CodeValidation)  // a blank one is no reason
	postReview(t, env, supT1, first, "reject", "", 422, syncproto.CodeValidation)     // ... and to reject
	postReview(t, env, supT1, first, "bounce", "x", 422, syncproto.CodeValidation)    // unknown action
	if v := serverVisit(t, env, first); v.ReviewState != domain.StateSubmitted {
		t.Fatalf("refused reviews changed the visit: %q", v.ReviewState)
	}
	var bulk []struct {
		ID    string           `json:"id"`
		Error *syncproto.Error `json:"error"`
	}
	b := call{method: "POST", path: "/api/v1/visits/review", token: supV1, body: `{"ids":["` + first + `"],"action":"approve"}`, status: 200}.run(t, env)
	if json.Unmarshal(b, &bulk); len(bulk) != 1 || bulk[0].Error == nil || bulk[0].Error.Code != syncproto.CodeForbidden {
		t.Errorf("bulk approve by a village supervisor = %s", b)
	}

	const reason = "墙体裂缝未修补，请整改后复验"
	res := postReview(t, env, supT1, first, "rework", reason, 200, "")
	if res.State != domain.StateNeedsRework || res.TaskID == "" || res.Steps != 2 {
		t.Fatalf("rework = %+v", res)
	}
	postReview(t, env, supT1, first, "rework", reason, 409, syncproto.CodeConflict) // already sent back

	// The task reaches the worker's device through the pull.
	syncOK(t, dev)
	tasks, err := dev.Tasks()
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) != 1 || tasks[0].ID != res.TaskID || tasks[0].Kind != "rework" || tasks[0].VisitID != first ||
		tasks[0].HouseholdID != hh || tasks[0].Reason != reason || tasks[0].State != "open" {
		t.Fatalf("device tasks = %+v", tasks)
	}
	if v := deviceVisit(t, dev, hh, first); v.ReviewState != domain.StateNeedsRework {
		t.Errorf("device shows the visit as %q", v.ReviewState)
	}

	// The re-inspection corrects the first visit and closes the task.
	rework, err := dev.RecordVisit(retrofitVisit(hh, true, first))
	if err != nil {
		t.Fatal(err)
	}
	syncOK(t, dev)
	var state, closedBy string
	if err := env.Store.DB().QueryRow(`SELECT state, COALESCE(closed_by_visit, '') FROM tasks WHERE id = ?`, res.TaskID).Scan(&state, &closedBy); err != nil {
		t.Fatal(err)
	}
	if state != "done" || closedBy != rework {
		t.Errorf("server task: %s closed by %q, want done by %s", state, closedBy, rework)
	}
	if v := serverVisit(t, env, rework); v.CorrectsVisitID != first || v.ReviewState != domain.StateSubmitted {
		t.Errorf("rework visit = %+v", v)
	}
	tasks, _ = dev.Tasks()
	for _, tk := range tasks {
		if tk.ID == res.TaskID && tk.State != "done" {
			t.Errorf("device still shows the task %s as %q", tk.ID, tk.State)
		}
	}

	// The re-inspection goes through both steps.
	postReview(t, env, supV1, rework, "approve", "", 403, syncproto.CodeForbidden)
	r1 := postReview(t, env, supT1, rework, "approve", "", 200, "")
	if r1.State != domain.StateSubmitted || r1.Step != 1 {
		t.Fatalf("township check = %+v, want still submitted at step 1", r1)
	}
	postReview(t, env, supT1, rework, "approve", "", 403, syncproto.CodeForbidden) // the county step is not the township's
	postReview(t, env, supV1, rework, "approve", "", 403, syncproto.CodeForbidden)
	r2 := postReview(t, env, supC1, rework, "approve", "", 200, "")
	if r2.State != domain.StateApproved {
		t.Fatalf("county approval = %+v", r2)
	}
	postReview(t, env, supC1, rework, "approve", "", 409, syncproto.CodeConflict)

	syncOK(t, dev)
	if v := deviceVisit(t, dev, hh, rework); v.ReviewState != domain.StateApproved || v.CorrectsVisitID != first {
		t.Errorf("device shows the rework visit as %+v", v)
	}
	if v := deviceVisit(t, dev, hh, first); v.ReviewState != domain.StateNeedsRework {
		t.Errorf("device shows the first visit as %q", v.ReviewState)
	}
	var got struct {
		Visit   syncproto.Visit  `json:"visit"`
		Reviews []map[string]any `json:"reviews"`
	}
	json.Unmarshal(call{method: "GET", path: "/api/v1/visits/" + rework, token: supT1, status: 200}.run(t, env), &got)
	if len(got.Reviews) != 2 || got.Reviews[0]["step_name"] != "township_check" || got.Reviews[1]["step_name"] != "county_approval" ||
		got.Reviews[0]["user"] != "sup_township" || got.Reviews[1]["user"] != "sup_county" {
		t.Errorf("review history = %+v", got.Reviews)
	}
	var trail []domain.AuditEvent
	json.Unmarshal(call{method: "GET", path: "/api/v1/visits/" + first + "/audit", token: supT1, status: 200}.run(t, env), &trail)
	if acts := auditActions(trail); strings.Join(acts, " ") != "visit.create visit.review.rework" {
		t.Errorf("first visit audit = %v", acts)
	}
	call{method: "GET", path: "/api/v1/visits/" + first + "/audit", token: supV2, status: 404, code: syncproto.CodeNotFound}.run(t, env)
	call{method: "GET", path: "/api/v1/visits/" + first + "/audit", token: workerTok, status: 403, code: syncproto.CodeForbidden}.run(t, env)
}

func auditActions(ev []domain.AuditEvent) []string {
	var out []string
	for _, e := range ev {
		out = append(out, e.Action)
	}
	return out
}

type auditRow struct {
	ID                                      int64
	Action, EntityType, EntityID            string
	DeviceID, Session, ActorName, PlaceCode string
	Raw                                     string // every column, as text
}

func auditRows(t *testing.T, db *sql.DB, afterID int64) []auditRow {
	t.Helper()
	rows, err := db.Query(`SELECT id, action, entity_type, entity_id, device_id, session, actor_name, place_code,
		at || '|' || COALESCE(CAST(actor_user AS TEXT), '') || '|' || actor_name || '|' || device_id || '|' || session || '|' || action || '|' ||
		entity_type || '|' || entity_id || '|' || place_code || '|' || COALESCE(before, '<null>') || '|' || COALESCE(after, '<null>')
		FROM audit_events WHERE id > ? ORDER BY id`, afterID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []auditRow
	for rows.Next() {
		var r auditRow
		if err := rows.Scan(&r.ID, &r.Action, &r.EntityType, &r.EntityID, &r.DeviceID, &r.Session, &r.ActorName, &r.PlaceCode, &r.Raw); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// TestAudit_EveryMutationPathLeavesOne walks every mutation path (through
// the API and through device pushes) and checks that each leaves exactly
// one audit event naming what changed and who did it, visible through
// GET /households/:id/audit and /visits/:id/audit and in the table.
func TestAudit_EveryMutationPathLeavesOne(t *testing.T) {
	env := servertest.Start(t)
	admin := env.AdminToken
	db := env.Store.DB()
	var last int64
	db.QueryRow(`SELECT COALESCE(max(id), 0) FROM audit_events`).Scan(&last)
	// step runs one mutation and checks the events it left.
	step := func(name string, want ...string) []auditRow {
		t.Helper()
		rows := auditRows(t, db, last)
		var got []string
		for _, r := range rows {
			got = append(got, r.Action+" "+r.EntityType+":"+r.EntityID)
			if r.ActorName == "" && r.Action != "device.enroll" {
				t.Errorf("%s: event %d has no actor", name, r.ID)
			}
			last = r.ID
		}
		if strings.Join(got, ", ") != strings.Join(want, ", ") {
			t.Errorf("%s: audit events\n got  %v\n want %v", name, got, want)
		}
		return rows
	}

	call{method: "POST", path: "/api/v1/places/import", token: admin, status: 200,
		body: `{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"code":"V9","name":"观音岩村","level":"village","parent_code":"T1"},"geometry":null}]}`}.run(t, env)
	step("place import", "place.upsert place:V9")

	var u domain.User
	json.Unmarshal(call{method: "POST", path: "/api/v1/users", token: admin, status: 201,
		body: `{"username":"audit_worker","role":"field_worker","place_codes":["V1"]}`}.run(t, env), &u)
	uid := fmt.Sprint(u.ID)
	for _, r := range step("user create", "user.create user:"+uid) {
		if r.Session == "" || r.ActorName != "admin" {
			t.Errorf("user.create actor: %+v", r)
		}
	}
	call{method: "PUT", path: "/api/v1/users/" + uid + "/places", token: admin, status: 200, body: `{"place_codes":["V1","V9"]}`}.run(t, env)
	step("user places", "user.places user:"+uid)

	call{method: "POST", path: "/api/v1/forms", token: admin, status: 201,
		body: `{"id":"audit_form","title":"审计","fields":[{"name":"a","type":"text","label":"甲"}]}`}.run(t, env)
	step("form publish", "form.publish form:audit_form")

	u.Username = "audit_worker"
	dev := tablet(t, env, u, nil)
	devID := tabletID(t, dev)
	step("device enroll", "device.enroll device:"+devID)

	// Device mutations: one event each, naming the device.
	hh, err := dev.CreateHousehold("G11", map[string]json.RawMessage{"head_name": rawStr("李秀英"), "notes": rawStr("new")})
	if err != nil {
		t.Fatal(err)
	}
	syncOK(t, dev)
	for _, r := range step("household create", "household.create household:"+hh) {
		if r.DeviceID != devID || r.ActorName != "audit_worker" || r.PlaceCode != "G11" {
			t.Errorf("household.create actor/place: %+v", r)
		}
	}
	if err := dev.UpdateHousehold(hh, map[string]json.RawMessage{"notes": rawStr("edited")}); err != nil {
		t.Fatal(err)
	}
	syncOK(t, dev)
	step("household update", "household.update household:"+hh)
	if err := dev.MoveHousehold(hh, "G12"); err != nil {
		t.Fatal(err)
	}
	syncOK(t, dev)
	step("household move", "household.move household:"+hh)
	visit, err := dev.RecordVisit(surveyVisit(hh))
	if err != nil {
		t.Fatal(err)
	}
	syncOK(t, dev)
	step("visit create", "visit.create visit:"+visit)

	postReview(t, env, admin, visit, "approve", "", 200, "")
	step("review", "visit.review.approve visit:"+visit)

	// A clash from a second device, settled by a supervisor.
	var u2 domain.User
	json.Unmarshal(call{method: "POST", path: "/api/v1/users", token: admin, status: 201,
		body: `{"username":"audit_worker2","role":"field_worker","place_codes":["V1"]}`}.run(t, env), &u2)
	step("second user", fmt.Sprintf("user.create user:%d", u2.ID))
	dev2 := tablet(t, env, u2, nil)
	dev2ID := tabletID(t, dev2)
	step("second device enroll", "device.enroll device:"+dev2ID)
	if err := dev.UpdateHousehold(hh, map[string]json.RawMessage{"notes": rawStr("from one")}); err != nil {
		t.Fatal(err)
	}
	if err := dev2.UpdateHousehold(hh, map[string]json.RawMessage{"notes": rawStr("from two")}); err != nil {
		t.Fatal(err)
	}
	syncOK(t, dev)
	syncOK(t, dev2)
	step("clashing updates", "household.update household:"+hh, "household.update household:"+hh)
	cs, err := env.Store.Conflicts(context.Background(), hh)
	if err != nil || len(cs) != 1 {
		t.Fatalf("conflicts = %+v %v", cs, err)
	}
	call{method: "POST", path: "/api/v1/conflicts/" + cs[0].ID + "/resolve", token: admin, status: 200, body: `{"action":"keep"}`}.run(t, env)
	step("conflict resolve (keep)", "conflict.resolve conflict:"+cs[0].ID)
	// Taking the other value also changes the household: one event each.
	if err := dev.UpdateHousehold(hh, map[string]json.RawMessage{"phone": rawStr("1391111")}); err != nil {
		t.Fatal(err)
	}
	if err := dev2.UpdateHousehold(hh, map[string]json.RawMessage{"phone": rawStr("1392222")}); err != nil {
		t.Fatal(err)
	}
	syncOK(t, dev)
	syncOK(t, dev2)
	step("clashing updates again", "household.update household:"+hh, "household.update household:"+hh)
	cs, _ = env.Store.Conflicts(context.Background(), hh)
	if len(cs) != 2 || cs[1].Field != "phone" {
		t.Fatalf("conflicts = %+v", cs)
	}
	call{method: "POST", path: "/api/v1/conflicts/" + cs[1].ID + "/resolve", token: admin, status: 200, body: `{"action":"take"}`}.run(t, env)
	for _, r := range step("conflict resolve (take)", "household.resolve household:"+hh, "conflict.resolve conflict:"+cs[1].ID) {
		if r.Session == "" || r.ActorName != "admin" {
			t.Errorf("resolve actor: %+v", r)
		}
	}

	if err := dev.DeleteHousehold(hh); err != nil {
		t.Fatal(err)
	}
	syncOK(t, dev)
	step("household delete", "household.delete household:"+hh)

	call{method: "POST", path: "/api/v1/devices/" + dev2ID + "/revoke", token: admin, status: 204}.run(t, env)
	step("device revoke", "device.revoke device:"+dev2ID)

	// The trails through the API.
	var trail []domain.AuditEvent
	json.Unmarshal(call{method: "GET", path: "/api/v1/households/" + hh + "/audit", token: admin, status: 200}.run(t, env), &trail)
	want := "household.create household.update household.move visit.create visit.review.approve household.update household.update conflict.resolve " +
		"household.update household.update household.resolve conflict.resolve household.delete"
	if got := strings.Join(auditActions(trail), " "); got != want {
		t.Errorf("household trail:\n got  %s\n want %s", got, want)
	}
	for _, e := range trail {
		if e.At.IsZero() || e.EntityID == "" {
			t.Errorf("trail event without time or entity: %+v", e)
		}
		if e.Action == "household.update" && (len(e.Before) == 0 || len(e.After) == 0) {
			t.Errorf("update without before/after: %+v", e)
		}
	}
	trail = nil
	json.Unmarshal(call{method: "GET", path: "/api/v1/visits/" + visit + "/audit", token: admin, status: 200}.run(t, env), &trail)
	if got := strings.Join(auditActions(trail), " "); got != "visit.create visit.review.approve" {
		t.Errorf("visit trail: %s", got)
	}
	// And straight from the table: one event per path and entity.
	for _, q := range [][2]string{
		{"place.upsert", "V9"}, {"user.create", uid}, {"user.places", uid}, {"form.publish", "audit_form"},
		{"device.enroll", devID}, {"device.enroll", dev2ID}, {"device.revoke", dev2ID},
		{"household.create", hh}, {"household.move", hh}, {"household.delete", hh},
		{"visit.create", visit}, {"visit.review.approve", visit}, {"conflict.resolve", cs[0].ID},
		{"conflict.resolve", cs[1].ID}, {"household.resolve", hh},
	} {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM audit_events WHERE action = ? AND entity_id = ?`, q[0], q[1]).Scan(&n); err != nil || n != 1 {
			t.Errorf("%s %s: %d events (%v), want 1", q[0], q[1], n, err)
		}
	}
}

// TestAudit_RowsAreAppendOnly: audit rows cannot be changed, neither
// through the store's API (it has no such method, its read handle is
// read-only, and every store operation leaves earlier rows as they were)
// nor by SQL on a separate writable connection to the database file.
func TestAudit_RowsAreAppendOnly(t *testing.T) {
	env := servertest.Start(t)
	ctx := context.Background()
	u, _ := userWithSession(t, env, "audit_w", domain.RoleFieldWorker, "V1")
	dev := tablet(t, env, u, nil)
	hh := newHousehold(t, env, "G11")
	syncOK(t, dev)
	if err := dev.UpdateHousehold(hh, map[string]json.RawMessage{"notes": rawStr("x")}); err != nil {
		t.Fatal(err)
	}
	syncOK(t, dev)
	before := auditRows(t, env.Store.DB(), 0)
	if len(before) < 5 {
		t.Fatalf("only %d audit rows to protect", len(before))
	}

	t.Run("store API", func(t *testing.T) {
		// The only audit methods append (Audit, AuditAs: an administrator's
		// outbox import) or read.
		st := reflect.TypeOf(env.Store)
		for i := range st.NumMethod() {
			name := st.Method(i).Name
			if strings.Contains(strings.ToLower(name), "audit") && name != "Audit" && name != "AuditAs" && name != "AuditTrail" {
				t.Errorf("store method %s may touch audit rows", name)
			}
		}
		// The handle the store hands out refuses writes.
		for _, q := range []string{`UPDATE audit_events SET action = 'x'`, `DELETE FROM audit_events`} {
			if _, err := env.Store.DB().Exec(q); err == nil {
				t.Errorf("store.DB() ran %q", q)
			}
		}
		// Every kind of store write leaves the earlier rows untouched.
		if err := env.Store.Audit(ctx, "export.csv", "export", "visits", "V1", map[string]any{"rows": 3}); err != nil {
			t.Fatal(err)
		}
		if err := env.Store.ImportHouseholds(ctx, []syncproto.Household{{ID: hh, PlaceCode: "G12", Fields: map[string]json.RawMessage{"head_name": rawStr("重新导入")}}}, 0); err != nil {
			t.Fatal(err)
		}
		if err := env.Store.SetUserPlaces(ctx, u.ID, []string{"V1", "V2"}); err != nil {
			t.Fatal(err)
		}
		var head int64
		env.Store.DB().QueryRow(`SELECT max(seq) FROM changes`).Scan(&head)
		if err := env.Store.PruneLog(ctx, head); err != nil {
			t.Fatal(err)
		}
		if err := env.Store.RevokeDevice(ctx, tabletID(t, dev)); err != nil {
			t.Fatal(err)
		}
		after := auditRows(t, env.Store.DB(), 0)
		if len(after) <= len(before) {
			t.Fatalf("no events appended: %d → %d", len(before), len(after))
		}
		if !reflect.DeepEqual(after[:len(before)], before) {
			t.Errorf("store operations changed earlier audit rows")
		}
		before = after
	})

	t.Run("SQL on a writable connection", func(t *testing.T) {
		w := env.RawDB(t)
		// The connection can write the database, just not audit rows.
		if _, err := w.Exec(`CREATE TABLE scratch(x INTEGER)`); err != nil {
			t.Fatalf("writable connection cannot write: %v", err)
		}
		first := before[0].ID
		for _, q := range []string{
			fmt.Sprintf(`UPDATE audit_events SET action = 'tampered' WHERE id = %d`, first),
			`UPDATE audit_events SET after = NULL`,
			`UPDATE audit_events SET actor_name = 'someone else' WHERE action = 'household.update'`,
			fmt.Sprintf(`DELETE FROM audit_events WHERE id = %d`, first),
			`DELETE FROM audit_events`,
			fmt.Sprintf(`INSERT INTO audit_events(id, at, action, entity_type, entity_id) VALUES (%d, 'x', 'x', 'x', 'x')
				ON CONFLICT(id) DO UPDATE SET action = 'tampered'`, first),
		} {
			_, err := w.Exec(q)
			if err == nil || !strings.Contains(err.Error(), "append-only") {
				t.Errorf("%s: err = %v, want the append-only refusal", q, err)
			}
		}
		if after := auditRows(t, env.Store.DB(), 0); !reflect.DeepEqual(after, before) {
			t.Errorf("audit rows changed by SQL")
		}
	})

	// INSERT OR REPLACE deletes the old row without firing delete triggers
	// (SQLite fires them for REPLACE only with recursive_triggers on), so
	// the two triggers alone do not stop it.
	t.Run("SQL REPLACE of an existing row", func(t *testing.T) {
		servertest.SQLiteOnly(t) // PostgreSQL has no INSERT OR REPLACE
		w, err := sql.Open("sqlite3", "file:"+env.Dir+"/fieldsync.db?_busy_timeout=10000")
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		first := before[0]
		_, err = w.Exec(`INSERT OR REPLACE INTO audit_events(id, at, action, entity_type, entity_id) VALUES (?, '2000-01-01T00:00:00Z', 'forged', 'x', 'x')`, first.ID)
		if err == nil {
			t.Errorf("INSERT OR REPLACE rewrote audit row %d", first.ID)
		}
		if now := auditRows(t, env.Store.DB(), first.ID-1); len(now) == 0 || now[0] != first {
			t.Errorf("audit row %d is now %+v, was %+v", first.ID, now[0], first)
		}
	})
}

// failPushes lets requests through until fail is set; then every push
// fails (a link that carries small pulls but drops push bodies).
type failPushes struct {
	fail   atomic.Bool
	allow  atomic.Int32 // pushes still let through while fail is set
	pushes atomic.Int32
}

func (f *failPushes) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, mobileclient.PushPath) {
		f.pushes.Add(1)
		if f.fail.Load() && f.allow.Add(-1) < 0 {
			if r.Body != nil {
				r.Body.Close()
			}
			return nil, errors.New("push: connection reset")
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}

func listDevices(t *testing.T, env *servertest.Env, token, query string) []domain.Device {
	t.Helper()
	var ds []domain.Device
	if err := json.Unmarshal(call{method: "GET", path: "/api/v1/devices" + query, token: token, status: 200}.run(t, env), &ds); err != nil {
		t.Fatal(err)
	}
	return ds
}

func deviceIDs(ds []domain.Device) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.ID)
	}
	slices.Sort(out)
	return out
}

// TestDevices_StuckListing: a device that recorded visits and whose pushes
// then fail reports its pending items; with no successful sync for N
// hours it shows in GET /api/v1/devices?stuck_hours=N. A healthy device
// and an idle device with nothing pending do not; a supervisor of another
// village does not see it; once its sync goes through it leaves the list.
func TestDevices_StuckListing(t *testing.T) {
	clk := &clock{t: time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC)}
	env := servertest.StartWith(t, servertest.Options{Store: sqlstore.Config{Now: clk.Now}, API: api.Config{Now: clk.Now}})
	ctx := context.Background()
	w1, _ := userWithSession(t, env, "stuck_worker", domain.RoleFieldWorker, "V1")
	w2, _ := userWithSession(t, env, "healthy_worker", domain.RoleFieldWorker, "V1")
	w3, _ := userWithSession(t, env, "idle_worker", domain.RoleFieldWorker, "V1")
	hh := newHousehold(t, env, "G11")
	link := &failPushes{}
	stuck := tablet(t, env, w1, &mobileclient.Options{HTTPClient: &http.Client{Transport: link}, MaxBatch: 2,
		AppVersion: "1.4.2", Now: clk.Now})
	healthy := tablet(t, env, w2, &mobileclient.Options{Now: clk.Now})
	idle := tablet(t, env, w3, &mobileclient.Options{Now: clk.Now})
	stuckID, healthyID, idleID := tabletID(t, stuck), tabletID(t, healthy), tabletID(t, idle)
	env.Store.FlushHealth(ctx)

	// An hour later the stuck device records visits; the first batch goes
	// through (carrying its outbox health), then the link drops pushes.
	clk.Add(time.Hour)
	for range 5 {
		if _, err := stuck.RecordVisit(surveyVisit(hh)); err != nil {
			t.Fatal(err)
		}
	}
	link.fail.Store(true)
	link.allow.Store(1)
	if _, err := stuck.Sync(ctx); !errors.Is(err, mobileclient.ErrUnavailable) {
		t.Fatalf("sync over the failing link = %v", err)
	}
	if p, _ := stuck.Pending(); p.Mutations != 3 {
		t.Fatalf("stuck device has %d pending, want 3", p.Mutations)
	}

	// 30 hours on, the healthy device syncs; the stuck one still cannot.
	clk.Add(29 * time.Hour)
	if _, err := healthy.RecordVisit(surveyVisit(hh)); err != nil {
		t.Fatal(err)
	}
	syncOK(t, healthy)
	if _, err := stuck.Sync(ctx); err == nil {
		t.Fatal("stuck device synced")
	}
	env.Store.FlushHealth(ctx)
	_, sup := userWithSession(t, env, "sup_v1", domain.RoleSupervisor, "V1") // sessions last 12 h: sign in now
	_, supV2 := userWithSession(t, env, "sup_v2", domain.RoleSupervisor, "V2")
	_, workerTok := userWithSession(t, env, "another_worker", domain.RoleFieldWorker, "V1")

	got := listDevices(t, env, sup, "?stuck_hours=24")
	if ids := deviceIDs(got); !slices.Equal(ids, []string{stuckID}) {
		t.Fatalf("stuck devices = %v, want only %s (healthy %s, idle %s)", ids, stuckID, healthyID, idleID)
	}
	var h syncproto.OutboxHealth
	if err := json.Unmarshal(got[0].Health, &h); err != nil || h.PendingMutations < 3 || h.OldestPending.IsZero() || h.AppVersion != "1.4.2" {
		t.Errorf("stuck device health = %s (%v)", got[0].Health, err)
	}
	if got[0].LastSyncOKAt == nil || clk.Now().Sub(*got[0].LastSyncOKAt) < 24*time.Hour {
		t.Errorf("stuck device last sync ok = %v", got[0].LastSyncOKAt)
	}
	if ids := deviceIDs(listDevices(t, env, sup, "?stuck_hours=48")); len(ids) != 0 {
		t.Errorf("stuck for 48 h = %v, want none (its last good sync was 30 h ago)", ids)
	}
	if ids := deviceIDs(listDevices(t, env, sup, "")); len(ids) != 3 {
		t.Errorf("all devices = %v", ids)
	}
	if ids := deviceIDs(listDevices(t, env, supV2, "?stuck_hours=24")); len(ids) != 0 {
		t.Errorf("a V2 supervisor sees stuck devices of V1: %v", ids)
	}
	call{method: "GET", path: "/api/v1/devices?stuck_hours=24", token: workerTok, status: 403, code: syncproto.CodeForbidden}.run(t, env)
	call{method: "GET", path: "/api/v1/devices?stuck_hours=soon", token: sup, status: 400, code: syncproto.CodeBadRequest}.run(t, env)

	// The link comes back: the device drains its outbox and leaves the list.
	link.fail.Store(false)
	syncOK(t, stuck)
	env.Store.FlushHealth(ctx)
	if ids := deviceIDs(listDevices(t, env, sup, "?stuck_hours=24")); len(ids) != 0 {
		t.Errorf("stuck devices after recovery = %v", ids)
	}
	if n := countRows(t, env, `SELECT count(*) FROM visits WHERE device_id = ?`, stuckID); n != 5 {
		t.Errorf("server has %d of the stuck device's visits, want 5", n)
	}
}

func countRows(t *testing.T, env *servertest.Env, q string, args ...any) int {
	t.Helper()
	var n int
	if err := env.Store.DB().QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDevices_PullWithoutPushIsNotASuccessfulSync: a device whose pushes
// fail but whose pulls go through keeps reporting pending mutations that
// get older and older. Its pulls must not count as a successful sync, or a
// supervisor never sees it as stuck.
func TestDevices_PullWithoutPushIsNotASuccessfulSync(t *testing.T) {
	clk := &clock{t: time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC)}
	env := servertest.StartWith(t, servertest.Options{Store: sqlstore.Config{Now: clk.Now}, API: api.Config{Now: clk.Now}})
	ctx := context.Background()
	w, _ := userWithSession(t, env, "pull_only_worker", domain.RoleFieldWorker, "V1")
	hh := newHousehold(t, env, "G11")
	link := &failPushes{}
	dev := tablet(t, env, w, &mobileclient.Options{HTTPClient: &http.Client{Transport: link}, Now: clk.Now})
	id := tabletID(t, dev)
	env.Store.FlushHealth(ctx)

	clk.Add(time.Hour)
	if _, err := dev.RecordVisit(surveyVisit(hh)); err != nil {
		t.Fatal(err)
	}
	link.fail.Store(true)
	// For 30 hours, every few hours: the push fails, a pull succeeds (the
	// app pulls to fetch new tasks, or a newer client pulls first).
	for range 10 {
		if _, err := dev.Sync(ctx); err == nil {
			t.Fatal("push went through")
		}
		if _, err := dev.Pull(ctx); err != nil {
			t.Fatal(err)
		}
		env.Store.FlushHealth(ctx)
		clk.Add(3 * time.Hour)
	}
	_, sup := userWithSession(t, env, "sup_v1", domain.RoleSupervisor, "V1")
	all := listDevices(t, env, sup, "")
	if len(all) != 1 {
		t.Fatalf("devices = %+v", all)
	}
	var h syncproto.OutboxHealth
	json.Unmarshal(all[0].Health, &h)
	if h.PendingMutations != 1 || clk.Now().Sub(h.OldestPending) < 24*time.Hour {
		t.Fatalf("reported health = %s", all[0].Health)
	}
	if ids := deviceIDs(listDevices(t, env, sup, "?stuck_hours=24")); !slices.Equal(ids, []string{id}) {
		t.Errorf("stuck_hours=24 lists %v; the device has had a mutation pending for %v and no push through since, last_sync_ok_at %v",
			ids, clk.Now().Sub(h.OldestPending).Round(time.Hour), all[0].LastSyncOKAt)
	}
}

// failPulls lets pushes through and fails every pull while fail is set.
type failPulls struct{ fail atomic.Bool }

func (f *failPulls) RoundTrip(r *http.Request) (*http.Response, error) {
	if f.fail.Load() && strings.HasSuffix(r.URL.Path, mobileclient.PullPath) {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, errors.New("pull: connection reset")
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestDevices_EverythingPushedIsNotStuck: a device whose last push
// delivered its whole outbox (the pull after it failed, then the worker
// stopped for the weekend) has nothing pending. The health it sent with
// that push counted the mutations the push carried; once they are applied
// the device must not be listed as stuck with them.
func TestDevices_EverythingPushedIsNotStuck(t *testing.T) {
	clk := &clock{t: time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC)}
	env := servertest.StartWith(t, servertest.Options{Store: sqlstore.Config{Now: clk.Now}, API: api.Config{Now: clk.Now}})
	ctx := context.Background()
	w, _ := userWithSession(t, env, "weekend_worker", domain.RoleFieldWorker, "V1")
	hh := newHousehold(t, env, "G11")
	link := &failPulls{}
	dev := tablet(t, env, w, &mobileclient.Options{HTTPClient: &http.Client{Transport: link}, Now: clk.Now})
	env.Store.FlushHealth(ctx)
	clk.Add(time.Hour)
	for range 3 {
		if _, err := dev.RecordVisit(surveyVisit(hh)); err != nil {
			t.Fatal(err)
		}
	}
	link.fail.Store(true)
	if _, err := dev.Sync(ctx); err == nil {
		t.Fatal("pull went through")
	}
	if p, _ := dev.Pending(); p.Mutations != 0 {
		t.Fatalf("device still has %d pending", p.Mutations)
	}
	if n := countRows(t, env, `SELECT count(*) FROM visits`); n != 3 {
		t.Fatalf("server has %d visits", n)
	}
	env.Store.FlushHealth(ctx)
	clk.Add(48 * time.Hour)
	_, sup := userWithSession(t, env, "sup_v1", domain.RoleSupervisor, "V1")
	if got := listDevices(t, env, sup, "?stuck_hours=24"); len(got) != 0 {
		t.Errorf("listed as stuck with health %s, though all %d of its mutations were applied (server last_seq %d)",
			got[0].Health, 3, got[0].LastSeq)
	}
}
