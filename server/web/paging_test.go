package web_test

import (
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"fieldsync/server/demo"
)

var (
	gapPageRe   = regexp.MustCompile(`id="gap-page" data-page="(\d+)" data-pages="(\d+)"`)
	gapRowRe    = regexp.MustCompile(`href="/console/households/[^"#]+#visit-([^"]+)"`)
	queuePageRe = regexp.MustCompile(`id="queue-page" data-page="(\d+)"`)
	queueRowRe  = regexp.MustCompile(`<tr data-id="([^"]+)"`)
)

// TestPaging_Gaps walks the evidence gaps one page at a time: every visit
// with a gap appears exactly once, and page and limit take any value
// (huge, negative, not a number, SQL) without an error or a change.
func TestPaging_Gaps(t *testing.T) {
	e := start(t)
	c := e.client(t)
	if st := c.login("admin", demo.DemoPassword); st != http.StatusSeeOther {
		t.Fatalf("login: %d", st)
	}
	rep, err := e.Store.ConsoleEvidenceGaps(bg, demo.CountyCode, 100000, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Visits < 25 {
		t.Fatalf("the demo has %d visits with gaps; too few to page", rep.Visits)
	}
	seen := map[string]int{}
	pages := 0
	for page := 1; ; page++ {
		st, body := c.get("/console/gaps?limit=10&page=" + strconv.Itoa(page))
		if st != 200 {
			t.Fatalf("page %d: %d", page, st)
		}
		m := gapPageRe.FindStringSubmatch(body)
		if m == nil || m[1] != strconv.Itoa(page) {
			t.Fatalf("page %d: pager %v", page, m)
		}
		pages, _ = strconv.Atoi(m[2])
		for _, r := range gapRowRe.FindAllStringSubmatch(body, -1) {
			seen[r[1]]++
		}
		if page >= pages {
			break
		}
		if !strings.Contains(body, `id="gap-next"`) {
			t.Fatalf("page %d of %d has no next link", page, pages)
		}
	}
	if len(seen) != rep.Visits || pages != (rep.Visits+9)/10 {
		t.Errorf("walked %d visits on %d pages; the report has %d", len(seen), pages, rep.Visits)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("visit %s on %d pages", id, n)
		}
	}
	visitsBefore := e.Count(t, `SELECT count(*) FROM visits`)
	for _, v := range []struct{ page, limit string }{
		{"0", "0"}, {"-1", "-5"}, {"9223372036854775807", "9223372036854775807"}, {"99999999999999999999999", "1e9"},
		{"1;DROP TABLE visits", "10 OR 1=1"}, {"' OR '1'='1", "%00"}, {"", ""}, {"１", "２０"}, {"0x10", "-0"}, {"2", "1000000"},
	} {
		q := url.Values{"page": {v.page}, "limit": {v.limit}}
		st, body := c.get("/console/gaps?" + q.Encode())
		if st != 200 {
			t.Errorf("page %q limit %q: %d", v.page, v.limit, st)
			continue
		}
		m := gapPageRe.FindStringSubmatch(body)
		if m == nil {
			t.Errorf("page %q limit %q: no pager", v.page, v.limit)
			continue
		}
		if n := len(gapRowRe.FindAllString(body, -1)); n == 0 || n > 50 {
			t.Errorf("page %q limit %q: %d rows", v.page, v.limit, n)
		}
	}
	if after := e.Count(t, `SELECT count(*) FROM visits`); after != visitsBefore {
		t.Errorf("visits %d -> %d", visitsBefore, after)
	}
}

// TestPaging_Review walks the review queue (all states) page by page:
// every visit once, then hostile page values answer a page, never an
// error.
func TestPaging_Review(t *testing.T) {
	e := start(t)
	c := e.client(t)
	if st := c.login("admin", demo.DemoPassword); st != http.StatusSeeOther {
		t.Fatalf("login: %d", st)
	}
	total := e.Count(t, `SELECT count(*) FROM visits`)
	seen := map[string]bool{}
	for page := 1; page < 1000; page++ {
		st, body := c.get("/console/review?state=&page=" + strconv.Itoa(page))
		if st != 200 {
			t.Fatalf("page %d: %d", page, st)
		}
		if page > 1 {
			if m := queuePageRe.FindStringSubmatch(body); m == nil || m[1] != strconv.Itoa(page) {
				t.Fatalf("page %d: pager %v", page, m)
			}
		}
		rows := queueRowRe.FindAllStringSubmatch(body, -1)
		if len(rows) > 50 {
			t.Fatalf("page %d: %d rows", page, len(rows))
		}
		for _, r := range rows {
			if seen[r[1]] {
				t.Fatalf("visit %s on two pages", r[1])
			}
			seen[r[1]] = true
		}
		if !strings.Contains(body, `id="queue-next"`) {
			break
		}
	}
	if len(seen) != total {
		t.Errorf("walked %d visits, database %d", len(seen), total)
	}
	for _, p := range []string{"0", "-3", "9223372036854775807", "99999999999999999999", "1 OR 1=1", "'", "abc", "1e3"} {
		st, body := c.get("/console/review?state=&page=" + url.QueryEscape(p))
		if st != 200 {
			t.Errorf("page %q: %d", p, st)
		}
		if n := len(queueRowRe.FindAllString(body, -1)); n > 50 {
			t.Errorf("page %q: %d rows", p, n)
		}
	}
}
