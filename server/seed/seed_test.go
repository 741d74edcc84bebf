package seed

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"fieldsync/server/app"
	"fieldsync/server/demo"
	"fieldsync/server/sqlstore"
)

func TestParseSpec_Invalid(t *testing.T) {
	cases := map[string]string{
		"unknown field":   `{"demo": true, "househlds": []}`,
		"not JSON":        `{"demo": `,
		"place no name":   `{"places": [{"code": "1", "level": "group"}]}`,
		"bad level":       `{"places": [{"code": "1", "name": "一组", "level": "street"}]}`,
		"no place":        `{"households": [{"count": 3}]}`,
		"negative count":  `{"households": [{"place": "1", "count": -1}]}`,
		"too many":        `{"households": [{"place": "1", "count": 10000001}]}`,
		"batch too large": `{"households": [{"place": "1", "count": 3, "batch": 100001}]}`,
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseSpec(strings.NewReader(in)); !errors.Is(err, ErrSpec) {
				t.Fatalf("err %v, want ErrSpec", err)
			}
		})
	}
	s, err := ParseSpec(strings.NewReader(`{"demo": true, "households": [{"place": "1", "count": 3, "seed": 9}]}`))
	if err != nil || !s.Demo || len(s.Households) != 1 || s.Households[0].Seed != 9 {
		t.Fatalf("valid spec: %+v, %v", s, err)
	}
}

func openStore(t *testing.T) *sqlstore.Store {
	t.Helper()
	st, err := app.OpenStore(context.Background(), app.Config{DataDir: filepath.Join(t.TempDir(), "data")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func countIn(t *testing.T, st *sqlstore.Store, place string) int {
	t.Helper()
	var n int
	if err := st.DB().QueryRow(`SELECT count(*) FROM households WHERE place_code = ?`, place).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRun_DemoPlacesHouseholds prepares the demo county, a new group with
// 120 households in batches of 50, and 7 households in each group of the
// demo's empty village; then runs again to see what repeats and what adds.
func TestRun_DemoPlacesHouseholds(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	group := demo.OtherVillageCode + "901"
	spec := Spec{
		Demo:   true,
		Places: []Place{{Code: group, Name: "测试组", Level: "group", ParentCode: demo.OtherVillageCode}},
		Households: []Households{
			{Place: group, Count: 120, Seed: 1, Batch: 50},
			{Place: demo.OtherVillageCode, EachEmptyGroup: true, Count: 7, Seed: 2},
		},
	}
	m, err := Run(ctx, st, spec, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if m.Admin == nil || m.Admin.Username != "admin" || m.Admin.Password != demo.DemoPassword {
		t.Fatalf("admin %+v", m.Admin)
	}
	if m.Demo == nil || m.Demo.Village != demo.VillageCode || m.Demo.OtherVillage != demo.OtherVillageCode {
		t.Fatalf("demo places %+v", m.Demo)
	}
	if n := countIn(t, st, group); n != 120 {
		t.Fatalf("%d households in the new group, want 120", n)
	}
	// The new group is not empty: the second entry fills the demo's
	// groups of that village only.
	if len(m.Imported) != 1+demo.OtherVillageGroupCount {
		t.Fatalf("imports %+v, want 1 + %d", m.Imported, demo.OtherVillageGroupCount)
	}
	for _, imp := range m.Imported[1:] {
		if imp.Count != 7 || countIn(t, st, imp.Place) != 7 {
			t.Fatalf("import %+v", imp)
		}
	}
	want := 875 + 120 + 7*demo.OtherVillageGroupCount
	if m.HouseholdsTotal != want {
		t.Fatalf("%d households in all, want %d", m.HouseholdsTotal, want)
	}

	// Again: the same seed gives the same ids (replaced, not added), the
	// filled groups are skipped, and the demo is not loaded twice.
	m, err = Run(ctx, st, spec, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if m.HouseholdsTotal != want || len(m.Imported) != 1 {
		t.Fatalf("second run: %d households, imports %+v", m.HouseholdsTotal, m.Imported)
	}
	// Another seed adds new households.
	m, err = Run(ctx, st, Spec{Households: []Households{{Place: group, Count: 30, Seed: 3}}}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if m.HouseholdsTotal != want+30 || countIn(t, st, group) != 150 {
		t.Fatalf("third run: %d households in all", m.HouseholdsTotal)
	}
}

func TestRun_UnknownPlace(t *testing.T) {
	st := openStore(t)
	_, err := Run(context.Background(), st, Spec{Households: []Households{{Place: "999", Count: 1}}}, io.Discard)
	if err == nil {
		t.Fatal("households for a place that does not exist were accepted")
	}
	m, err := Run(context.Background(), st, Spec{}, io.Discard)
	if err != nil || m.Admin != nil || m.Demo != nil || m.HouseholdsTotal != 0 {
		t.Fatalf("an empty spec on an empty folder: %+v, %v", m, err)
	}
}

func TestGenerator_Deterministic(t *testing.T) {
	a := newGenerator(5).make(50, "1", "一组", 103.7, 25, 0.01)
	b := newGenerator(5).make(50, "1", "一组", 103.7, 25, 0.01)
	c := newGenerator(6).make(50, "1", "一组", 103.7, 25, 0.01)
	ids := map[string]bool{}
	for i := range a {
		if a[i].ID != b[i].ID || string(a[i].Fields["head_name"]) != string(b[i].Fields["head_name"]) {
			t.Fatalf("household %d differs with the same seed", i)
		}
		ids[a[i].ID] = true
	}
	for _, h := range c {
		if ids[h.ID] {
			t.Fatalf("seeds 5 and 6 share id %s", h.ID)
		}
	}
}
