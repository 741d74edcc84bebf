package app

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"fieldsync/server/sqlstore"
)

func TestLoadDemo_RetrofitCycleAndCounts(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, sqlstore.Config{Path: filepath.Join(t.TempDir(), "d.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := LoadDemo(ctx, st, io.Discard); err != nil {
		t.Fatal(err)
	}
	// Loading twice is a no-op.
	if err := LoadDemo(ctx, st, io.Discard); err != nil {
		t.Fatal(err)
	}
	q := func(sql string, args ...any) int {
		var n int
		if err := st.DB().QueryRow(sql, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	checks := []struct {
		what string
		got  int
		want int
	}{
		{"households", q(`SELECT count(*) FROM households`), 875},
		{"retrofit inspections", q(`SELECT count(*) FROM visits WHERE form_id = 'house_retrofit_inspection'`), DemoRetrofitHouses},
		{"passed", q(`SELECT count(*) FROM visits WHERE form_id = 'house_retrofit_inspection' AND review_state = 'approved' AND json_extract(answers, '$.inspection_result') = 'pass'`), DemoRetrofitPassed},
		{"rework", q(`SELECT count(*) FROM visits WHERE form_id = 'house_retrofit_inspection' AND review_state = 'needs_rework'`), DemoRetrofitRework},
		{"open rework tasks", q(`SELECT count(*) FROM tasks WHERE kind = 'rework' AND state = 'open'`), DemoRetrofitRework},
		{"water cellars built", q(`SELECT count(*) FROM visits WHERE form_id = 'water_cellar_progress' AND json_extract(answers, '$.stage') = 'built'`), DemoCellarsBuilt},
		{"people", q(`SELECT count(*) FROM households h, json_each(h.fields) f WHERE f.key LIKE 'member.%'`), 3876},
		{"users", q(`SELECT count(*) FROM users`), 5},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.what, c.got, c.want)
		}
	}
}

// TestLoadDemo_OnAFolderWithData: -demo on a data folder whose admin was
// made at a first start without it says that admin keeps its password
// (it is not demo-1234), and a second load says it changed nothing.
func TestLoadDemo_OnAFolderWithData(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var first strings.Builder
	cfg := Config{DataDir: dir, Out: &first}
	cfg.setDefaults()
	st, err := OpenStore(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := firstStart(ctx, st, cfg); err != nil {
		t.Fatal(err)
	}
	var load strings.Builder
	if err := LoadDemo(ctx, st, &load); err != nil {
		t.Fatal(err)
	}
	out := load.String()
	created, kept, _ := strings.Cut(out, "这些账号此前已存在")
	if !strings.Contains(kept, "admin") || strings.Contains(created, "admin（") {
		t.Fatalf("load does not say that admin kept its password:\n%s", out)
	}
	if !strings.Contains(created, "wangge_li") || !strings.Contains(created, "demo-1234") {
		t.Fatalf("load does not name the new demo accounts and their password:\n%s", out)
	}
	var again strings.Builder
	if err := LoadDemo(ctx, st, &again); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(again.String(), "没有重复加载") {
		t.Fatalf("second load says: %q", again.String())
	}
}
