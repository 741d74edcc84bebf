package sqlstore_test

import (
	"testing"

	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/syncproto"
)

// TestPull_RegisterImportMovesHouseholdWithVisits: a register import that
// puts a known household under another place moves it like a device's
// household.move does: the old place's device gets deletes for it and its
// visits, the new place's device gets them.
func TestPull_RegisterImportMovesHouseholdWithVisits(t *testing.T) {
	env := servertest.Start(t)
	const hh = "01JDZX5Q7R8S9T0V1W2X3Y4Z5B"
	env.AddHouseholds(t, household(hh, "G11", "搬家户"))
	a := newDevice(t, env, env.CreateUser(t, "a", domain.RoleFieldWorker, "V1"))
	b := newDevice(t, env, env.CreateUser(t, "b", domain.RoleFieldWorker, "V2"))
	var visits []string
	for range 3 {
		m := visitMut(a, hh)
		visits = append(visits, m.Visit.ID)
		if r := a.push(m); r.Results[0].Status != syncproto.StatusApplied {
			t.Fatalf("visit: %+v", r.Results[0])
		}
	}
	_, ca := a.pullAll("", 0)
	_, cb := b.pullAll("", 0)

	env.AddHouseholds(t, household(hh, "G21", "搬家户"))

	opsA, _ := a.pullAll(ca, 0)
	opsB, _ := b.pullAll(cb, 0)
	byA, byB := opsByType(opsA), opsByType(opsB)
	if len(byA["delete/household"]) != 1 || len(byA["delete/visit"]) != 3 || len(byA["put/visit"]) != 0 {
		t.Fatalf("old place's device after the import: %+v", opsA)
	}
	got := map[string]bool{}
	for _, op := range byB["put/visit"] {
		got[op.ID] = true
	}
	for _, v := range visits {
		if !got[v] {
			t.Errorf("new place's device did not receive visit %s: %+v", v, opsB)
		}
	}
	if len(byB["put/household"]) != 1 {
		t.Fatalf("new place's device: %+v", opsB)
	}
}
