package web_test

import (
	"html"
	"net/http"
	"strings"
	"testing"

	"fieldsync/server/demo"
)

// TestConsole_ShowsGPSReason: a visit's stated reason for saving without
// a GPS fix shows on the review queue and on the household's page, where
// it is escaped like any text a device sends.
func TestConsole_ShowsGPSReason(t *testing.T) {
	e := start(t)
	c := e.client(t)
	if st := c.login("admin", demo.DemoPassword); st != http.StatusSeeOther {
		t.Fatalf("login: %d", st)
	}
	var id, hh string
	if err := e.Store.DB().QueryRow(`SELECT id, household_id FROM visits WHERE review_state = 'submitted' ORDER BY server_time DESC, id LIMIT 1`).Scan(&id, &hh); err != nil {
		t.Fatal(err)
	}
	reason := `山谷里没有信号<script>alert(1)</script>`
	e.Exec(t, `UPDATE visits SET gps_reason = ? WHERE id = ?`, reason, id)
	want := "无定位原因" + ":" + html.EscapeString(reason)
	for _, p := range []string{"/console/review", "/console/households/" + hh} {
		st, body := c.get(p)
		if st != 200 {
			t.Fatalf("%s: %d", p, st)
		}
		if !strings.Contains(body, html.EscapeString(reason)) || strings.Contains(body, "<script>alert(1)") {
			t.Errorf("%s: the reason is missing or not escaped", p)
		}
		if !strings.Contains(body, `class="gpsreason"`) {
			t.Errorf("%s: no gpsreason element (want %q)", p, want)
		}
	}
	// The exports carry it in their own column.
	st, body := c.get("/console/export?format=csv&what=visits")
	if st != 200 || !strings.Contains(body, "无定位原因") || !strings.Contains(body, "山谷里没有信号<script>") {
		t.Errorf("CSV export: %d, header or reason missing", st)
	}
}
