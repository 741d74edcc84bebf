package sqlstore_test

import (
	"testing"

	"fieldsync/server/domain"
	"fieldsync/server/servertest"
)

// TestUpsertPlaces_ReparentCodeWithWildcards: moving a place whose code
// holds "_" (a LIKE wildcard) rewrites the paths of its own subtree only,
// not those of a sibling whose code the wildcard would match.
func TestUpsertPlaces_ReparentCodeWithWildcards(t *testing.T) {
	env := servertest.Start(t)
	path := func(code string) string {
		t.Helper()
		var p string
		if err := env.Store.DB().QueryRow(`SELECT path FROM places WHERE code = ?`, code).Scan(&p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if err := env.Store.UpsertPlaces(ctx, []domain.Place{
		{Code: "C2", Name: "另一县", Level: "county"},
		{Code: "T_1", Name: "甲镇", Level: "township", ParentCode: "C1"},
		{Code: "TX1", Name: "乙镇", Level: "township", ParentCode: "C1"},
		{Code: "V_1", Name: "甲村", Level: "village", ParentCode: "T_1"},
		{Code: "V9", Name: "乙村", Level: "village", ParentCode: "TX1"},
	}); err != nil {
		t.Fatal(err)
	}
	if err := env.Store.UpsertPlaces(ctx, []domain.Place{{Code: "T_1", Name: "甲镇", Level: "township", ParentCode: "C2"}}); err != nil {
		t.Fatal(err)
	}
	for code, want := range map[string]string{
		"T_1": "/C2/T_1/", "V_1": "/C2/T_1/V_1/", // moved with its parent
		"TX1": "/C1/TX1/", "V9": "/C1/TX1/V9/", // untouched
	} {
		if got := path(code); got != want {
			t.Errorf("path of %s = %q, want %q", code, got, want)
		}
	}
}
