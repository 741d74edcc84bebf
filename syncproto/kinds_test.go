package syncproto

import (
	"strings"
	"testing"
)

// TestMutationKinds_Table: every kind's rule sees its own payload and no
// other, and a kind sent with another kind's payload is refused naming
// the payload it needs.
func TestMutationKinds_Table(t *testing.T) {
	payloads := map[string]func(*Mutation){
		"visit":            func(m *Mutation) { m.Visit = &Visit{} },
		"household":        func(m *Mutation) { m.Household = &Household{} },
		"household_update": func(m *Mutation) { m.HouseholdUpdate = &HouseholdUpdate{} },
		"household_move":   func(m *Mutation) { m.HouseholdMove = &HouseholdMove{} },
		"household_delete": func(m *Mutation) { m.HouseholdDelete = &HouseholdDelete{} },
		"evidence_attach":  func(m *Mutation) { m.EvidenceAttach = &EvidenceAttach{} },
	}
	if len(mutationKinds) != len(payloads) {
		t.Fatalf("%d kinds, %d payloads", len(mutationKinds), len(payloads))
	}
	for kind, rule := range mutationKinds {
		if _, ok := payloads[rule.payload]; !ok {
			t.Fatalf("%s: unknown payload %q", kind, rule.payload)
		}
		for name, other := range payloads {
			m := &Mutation{Kind: kind}
			other(m)
			if got := rule.present(m); got != (name == rule.payload) {
				t.Errorf("%s: present with %s = %v", kind, name, got)
			}
			err := m.Check()
			if err == nil {
				t.Errorf("%s with an empty %s passed", kind, name)
				continue
			}
			if name != rule.payload && !strings.Contains(err.Message, string(kind)+" without "+rule.payload) {
				t.Errorf("%s with %s: %q", kind, name, err.Message)
			}
		}
	}
	if err := (&Mutation{Kind: "visit.delete", Visit: &Visit{}}).Check(); err == nil || !strings.Contains(err.Message, "unknown mutation kind") {
		t.Errorf("unknown kind: %v", err)
	}
	if err := (&Mutation{Kind: KindVisitCreate}).Check(); err == nil || !strings.Contains(err.Message, "exactly one payload") {
		t.Errorf("no payload: %v", err)
	}
}
