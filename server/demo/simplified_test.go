package demo_test

import (
	"encoding/json"
	"testing"

	"fieldsync/server/demo"
	"fieldsync/server/servertest"
	"fieldsync/syncproto"
)

// TestSimplifiedChinese_DemoAndTemplates: the demo data set (places,
// households, members, users) and the form templates hold no character
// that exists only in Traditional Chinese.
func TestSimplifiedChinese_DemoAndTemplates(t *testing.T) {
	trad := servertest.TraditionalOnly(t)
	data, err := json.Marshal(demo.Build(1))
	if err != nil {
		t.Fatal(err)
	}
	if got := trad(string(data)); got != "" {
		t.Errorf("demo data set holds Traditional characters: %s", got)
	}
	for _, f := range syncproto.Templates() {
		b, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		if got := trad(string(b)); got != "" {
			t.Errorf("template %s holds Traditional characters: %s", f.ID, got)
		}
	}
	for _, f := range syncproto.HouseholdSchema {
		if got := trad(f.Label); got != "" {
			t.Errorf("household field %s label %q holds Traditional characters: %s", f.Name, f.Label, got)
		}
	}
	// The check itself finds what it must.
	if got := trad("示範縣網格員"); got != "範縣網員" {
		t.Fatalf("the table misses Traditional characters: %q", got)
	}
}
