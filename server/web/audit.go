package web

import (
	"context"
	"encoding/json"
	"slices"
	"strings"

	"fieldsync/server/domain"
	"fieldsync/syncproto"
)

// auditRow is one audit event told as a sentence ("李网格员 于 2026-11-28
// 14:03 +08:00 修改了 户主、电话"), with the stored JSON one click away.
type auditRow struct {
	domain.AuditEvent
	Sentence string
}

// auditRows tells each event as a sentence. Place codes in moves are
// named (the code stays in the hover title of the page's place links).
func (c *Console) auditRows(ctx context.Context, v *view, events []domain.AuditEvent) []auditRow {
	names := map[string]string{}
	name := func(code string) string {
		if code == "" {
			return "—"
		}
		if n, ok := names[code]; ok {
			return n
		}
		n := code
		if p, err := c.st.Place(ctx, code); err == nil && p.Name != "" {
			n = p.Name
		}
		names[code] = n
		return n
	}
	out := make([]auditRow, 0, len(events))
	for _, e := range events {
		who := e.ActorName
		if who == "" {
			who = v.T("hh.system")
		}
		out = append(out, auditRow{AuditEvent: e, Sentence: v.T("audit.sentence", who, v.Time(e.At), v.auditWhat(e, name))})
	}
	return out
}

// auditWhat says what an event did: the verb of its action and, for
// edits, the fields it touched; for a move, from where to where.
func (v *view) auditWhat(e domain.AuditEvent, placeName func(string) string) string {
	switch e.Action {
	case "household.move":
		return v.T("audit.household.move", placeName(jsonString(e.Before, "place_code")), placeName(jsonString(e.After, "place_code")))
	case "household.update", "household.resolve", "household.create", "household.import":
		fields := v.fieldLabels(e.After)
		if len(fields) == 0 {
			fields = v.fieldLabels(e.Before)
		}
		list := strings.Join(fields, v.T("x.listsep"))
		if list == "" {
			list = "—"
		}
		return v.T("audit."+e.Action, list)
	}
	if _, ok := messages["audit."+e.Action]; ok {
		return v.T("audit." + e.Action)
	}
	return e.Action
}

// fieldLabels names the keys of a JSON object of household fields, once
// each: member fields all read as the household's members.
func (v *view) fieldLabels(raw json.RawMessage) []string {
	var m map[string]json.RawMessage
	if len(raw) == 0 || json.Unmarshal(raw, &m) != nil {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var out []string
	for _, k := range keys {
		label := v.FieldLabel(k)
		if strings.HasPrefix(k, syncproto.MemberPrefix) {
			label = v.T("audit.members")
		}
		if !slices.Contains(out, label) {
			out = append(out, label)
		}
	}
	return out
}

// jsonString reads one string member of a JSON object ("" if none).
func jsonString(raw json.RawMessage, key string) string {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return ""
	}
	var s string
	_ = json.Unmarshal(m[key], &s)
	return s
}
