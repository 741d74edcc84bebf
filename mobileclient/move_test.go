package mobileclient

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"fieldsync/server/domain"
	"fieldsync/server/servertest"
)

// localCopy lists what a device holds: every household with its place,
// every visit, conflict and task, one line each, sorted.
func localCopy(t *testing.T, c *Client) []string {
	t.Helper()
	hs, err := c.Households("")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, h := range hs {
		out = append(out, "household "+h.ID+" in "+h.PlaceCode)
		vs, err := c.Visits(h.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vs {
			out = append(out, "visit "+v.ID+" of "+v.HouseholdID)
		}
	}
	cs, err := c.Conflicts()
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range cs {
		out = append(out, "conflict "+x.ID+" on "+x.HouseholdID+" "+x.Field)
	}
	ts, err := c.Tasks()
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range ts {
		out = append(out, "task "+x.ID+" "+x.State+" for "+x.VisitID)
	}
	slices.Sort(out)
	return out
}

// TestE2E_HouseholdMoveCarriesItsHistory: a household that moves from one
// villager group to another takes its visits, open rework task and
// conflicts with it: the old group's device drops them, the new group's
// device receives them, and each ends with exactly what a fresh device of
// the same worker pulls.
func TestE2E_HouseholdMoveCarriesItsHistory(t *testing.T) {
	env := servertest.Start(t)
	ua := env.CreateUser(t, "wangge_g11", domain.RoleFieldWorker, "G11")
	ub := env.CreateUser(t, "wangge_g12", domain.RoleFieldWorker, "G12")
	um := env.CreateUser(t, "cun_ganbu", domain.RoleFieldWorker, "V1")
	sup := signedIn(t, env, "zhen_sup", domain.RoleSupervisor, "V1")
	hs := importHouseholds(t, env, "G11", "G11", "G12")
	moving, staying := hs[0], hs[1]

	a := device(t, env, ua, nil)
	b := device(t, env, ub, nil)
	m := device(t, env, um, nil)

	var movingVisits []string
	for range 4 {
		id, err := a.RecordVisit(surveyVisit(moving, "王建国"))
		if err != nil {
			t.Fatal(err)
		}
		movingVisits = append(movingVisits, id)
	}
	if _, err := a.RecordVisit(surveyVisit(staying, "王建国")); err != nil {
		t.Fatal(err)
	}
	mustSync(t, a)
	mustSync(t, m)
	// A conflict on the moving household: both edit one field offline.
	if err := a.UpdateHousehold(moving, map[string]json.RawMessage{"phone": str("13900000001")}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	if err := m.UpdateHousehold(moving, map[string]json.RawMessage{"phone": str("13900000002")}); err != nil {
		t.Fatal(err)
	}
	mustSync(t, a)
	mustSync(t, m)
	// A rework task on one of its visits.
	apiCall(t, env, http.MethodPost, "/api/v1/visits/"+movingVisits[0]+"/review", sup,
		`{"action":"rework","reason":"照片不清楚，请重拍"}`, http.StatusOK)
	mustSync(t, a)
	mustSync(t, b)
	mustSync(t, m)
	before := localCopy(t, a)
	if !slices.ContainsFunc(before, func(s string) bool { return strings.HasPrefix(s, "conflict ") }) ||
		!slices.ContainsFunc(before, func(s string) bool { return strings.HasPrefix(s, "task ") }) {
		t.Fatalf("set-up made no conflict or no task on device A: %v", before)
	}

	if err := m.MoveHousehold(moving, "G12"); err != nil {
		t.Fatal(err)
	}
	mustSync(t, m)
	mustSync(t, a)
	mustSync(t, b)

	gotA, gotB := localCopy(t, a), localCopy(t, b)
	for _, l := range gotA {
		if strings.Contains(l, moving) {
			t.Errorf("old group's device still holds %q", l)
		}
	}
	for _, id := range movingVisits {
		if !slices.Contains(gotB, "visit "+id+" of "+moving) {
			t.Errorf("new group's device lacks visit %s", id)
		}
	}
	freshA, freshB := device(t, env, ua, nil), device(t, env, ub, nil)
	for _, tc := range []struct {
		name       string
		got, fresh []string
	}{{"old group (G11)", gotA, localCopy(t, freshA)}, {"new group (G12)", gotB, localCopy(t, freshB)}} {
		if !slices.Equal(tc.got, tc.fresh) {
			t.Errorf("%s: device copy differs from a fresh pull:\n device: %s\n fresh:  %s", tc.name,
				strings.Join(tc.got, "\n         "), strings.Join(tc.fresh, "\n         "))
		}
	}
	if n := len(gotB); n < 1+4+1 {
		t.Fatalf("new group's device holds %d rows: %v", n, gotB)
	}
}
