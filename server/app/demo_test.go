package app

import (
	"context"
	"io"
	"path/filepath"
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
