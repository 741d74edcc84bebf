package pgsql

import "testing"

func TestRebind(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`SELECT 1`, `SELECT 1`},
		{`SELECT ? , ?`, `SELECT $1 , $2`},
		{`WHERE a = ? AND b = '?' AND "c?" = ?`, `WHERE a = $1 AND b = '?' AND "c?" = $2`},
		{`WHERE a = 'it''s ?' AND b = ?`, `WHERE a = 'it''s ?' AND b = $1`},
		{"SELECT ? -- why?\n, ?", "SELECT $1 -- why?\n, $2"},
		{`UPDATE t SET p = ?1 || substr(p, length(?2) + 1) WHERE p >= ?2`, `UPDATE t SET p = $1 || substr(p, length($2) + 1) WHERE p >= $2`},
		{`SELECT '?`, `SELECT '?`}, // unterminated quote: left as is
		{`SELECT ?`, `SELECT $1`},
	} {
		if got := Rebind(c.in); got != c.want {
			t.Errorf("Rebind(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestRewrite_TableAndPlaceholders(t *testing.T) {
	got := Rewrite(`SELECT value FROM json_each(?) WHERE x = ?`)
	want := `SELECT value FROM json_array_elements_text(CAST($1 AS json)) WHERE x = $2`
	if got != want {
		t.Fatalf("Rewrite = %q, want %q", got, want)
	}
	// The cache answers the same the second time.
	if again := Rewrite(`SELECT value FROM json_each(?) WHERE x = ?`); again != want {
		t.Fatalf("cached Rewrite = %q", again)
	}
	if got := Rewrite(`SELECT group_concat(flag, ',') FROM f`); got != `SELECT string_agg(flag, ',') FROM f` {
		t.Fatalf("group_concat: %q", got)
	}
}

func TestIsURL(t *testing.T) {
	for in, want := range map[string]bool{
		"postgres://u@h/db": true, "postgresql://h/db": true, "sqlite:data/x.db": false, "data/x.db": false, "": false,
	} {
		if IsURL(in) != want {
			t.Errorf("IsURL(%q) = %v", in, !want)
		}
	}
}
