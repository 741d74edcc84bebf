package web_test

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"fieldsync/server/demo"
)

var reviewIDs = regexp.MustCompile(`name="ids" value="([^"]+)"`)

// TestReview_ErrorsShowAsErrorsAndKeepTheSelection: a bulk rework without
// a reason is an error (red, role=alert), not a success banner, and the
// visits stay ticked; a good action is a success.
func TestReview_ErrorsShowAsErrorsAndKeepTheSelection(t *testing.T) {
	e := start(t)
	c := e.client(t)
	if st := c.login("cun_supervisor", demo.DemoPassword); st != http.StatusSeeOther {
		t.Fatalf("login: %d", st)
	}
	_, page := c.get("/console/review")
	ids := reviewIDs.FindAllStringSubmatch(page, 3)
	if len(ids) < 3 {
		t.Fatalf("review queue shows %d visits", len(ids))
	}
	a, b, other := ids[0][1], ids[1][1], ids[2][1]

	st, loc := c.post("/console/review", url.Values{"csrf": {c.csrf}, "action": {"rework"}, "ids": {a, b}, "return": {"/console/review"}})
	if st != http.StatusSeeOther {
		t.Fatalf("rework without reason: %d", st)
	}
	_, page = c.get(loc[strings.Index(loc, "/console/"):])
	if !strings.Contains(page, `class="flash error" role="alert"`) {
		t.Fatalf("rework without a reason not shown as an error:\n%s", flashOf(page))
	}
	for _, id := range []string{a, b} {
		if !strings.Contains(page, `value="`+id+`" aria-label="`+id+`" checked`) {
			t.Errorf("visit %s not kept selected after the error", id)
		}
	}
	if strings.Contains(page, `value="`+other+`" aria-label="`+other+`" checked`) {
		t.Errorf("visit %s selected though it was not", other)
	}

	st, loc = c.post("/console/review", url.Values{"csrf": {c.csrf}, "action": {"rework"}, "reason": {"照片不清楚，请重拍"}, "ids": {a}, "return": {"/console/review"}})
	if st != http.StatusSeeOther {
		t.Fatalf("rework with reason: %d", st)
	}
	_, page = c.get(loc[strings.Index(loc, "/console/"):])
	if !strings.Contains(page, `class="flash" role="status"`) || strings.Contains(page, "flash error") {
		t.Fatalf("a good action not shown as a success:\n%s", flashOf(page))
	}
}

func flashOf(page string) string {
	if i := strings.Index(page, `id="flash"`); i >= 0 {
		return page[max(0, i-60):min(len(page), i+300)]
	}
	return "(no flash)"
}
