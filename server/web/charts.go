package web

import (
	"fmt"
	"html"
	"math"
	"strings"

	"fieldsync/server/store"
)

// daysChart draws visits per day as a small bar chart.
func daysChart(days []store.DayCount, v *view) string {
	// pad leaves room under the axis for the date ticks, descenders
	// included (a browser test measures that no label leaves the chart).
	const w, h, pad = 300.0, 64.0, 16.0
	maxN := 1
	total := 0
	for _, d := range days {
		maxN = max(maxN, d.Count)
		total += d.Count
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg class="chart bars" viewBox="0 0 %g %g" role="img" aria-label="%s">`, w, h+pad, html.EscapeString(v.T("ov.perday", total)))
	bw := w / float64(max(1, len(days)))
	for i, d := range days {
		bh := math.Max(float64(d.Count)/float64(maxN)*h, 0)
		if d.Count > 0 {
			bh = math.Max(bh, 1.5)
		}
		fmt.Fprintf(&sb, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s: %d</title></rect>`,
			float64(i)*bw+0.5, h-bh, math.Max(bw-1, 0.5), bh, d.Day, d.Count)
	}
	fmt.Fprintf(&sb, `<line x1="0" y1="%g" x2="%g" y2="%g" class="axis"/>`, h, w, h)
	if len(days) > 0 {
		fmt.Fprintf(&sb, `<text x="0" y="%g" class="tick">%s</text><text x="%g" y="%g" class="tick" text-anchor="end">%s</text>`,
			h+pad-4, days[0].Day[5:], w, h+pad-4, days[len(days)-1].Day[5:])
	}
	fmt.Fprintf(&sb, `<text x="%g" y="10" class="tick" text-anchor="end">%d</text>`, w, maxN)
	sb.WriteString(`</svg>`)
	return sb.String()
}

// stateChart draws the review states of a place's visits as a donut.
func stateChart(p store.PlaceProgress, v *view) string {
	parts := []struct {
		cls   string
		label string
		n     int
	}{
		{"s-approved", v.State("approved"), p.Approved},
		{"s-submitted", v.State("submitted"), p.Submitted},
		{"s-rework", v.State("needs_rework"), p.NeedsRework},
		{"s-rejected", v.State("rejected"), p.Rejected},
	}
	total := 0
	for _, x := range parts {
		total += x.n
	}
	const r = 30.0
	circ := 2 * math.Pi * r
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg class="chart donut" viewBox="0 0 200 80" role="img" aria-label="%s">`, html.EscapeString(v.T("ov.states")))
	fmt.Fprintf(&sb, `<circle cx="40" cy="40" r="%g" class="ring"/>`, r)
	off := 0.0
	y := 14.0
	for _, x := range parts {
		if total > 0 && x.n > 0 {
			l := float64(x.n) / float64(total) * circ
			fmt.Fprintf(&sb, `<circle cx="40" cy="40" r="%g" class="seg %s" stroke-dasharray="%.2f %.2f" stroke-dashoffset="%.2f" transform="rotate(-90 40 40)"><title>%s: %d</title></circle>`,
				r, x.cls, l, circ-l, -off, html.EscapeString(x.label), x.n)
			off += l
		}
		fmt.Fprintf(&sb, `<rect x="90" y="%g" width="9" height="9" class="key %s"/><text x="104" y="%g" class="tick">%s %d</text>`, y-8, x.cls, y, html.EscapeString(x.label), x.n)
		y += 17
	}
	fmt.Fprintf(&sb, `<text x="40" y="44" text-anchor="middle" class="big">%d</text>`, total)
	sb.WriteString(`</svg>`)
	return sb.String()
}
