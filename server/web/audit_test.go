package web

import (
	"encoding/json"
	"strings"
	"testing"

	"fieldsync/server/domain"
)

func TestAuditWhat_Sentences(t *testing.T) {
	names := map[string]string{"G11": "采山坪", "G12": "杨家寨"}
	place := func(c string) string { return names[c] }
	for _, tc := range []struct {
		lang, action, before, after string
		want                        []string
	}{
		{"zh", "household.update", ``, `{"phone":"139","head_name":"王建国","member.m1":{},"member.m2":{}}`, []string{"修改了", "户主", "电话", "家庭成员"}},
		{"zh", "household.move", `{"place_code":"G11"}`, `{"place_code":"G12"}`, []string{"从 采山坪 迁到 杨家寨"}},
		{"zh", "household.delete", `{"phone":"139"}`, ``, []string{"删除了此户"}},
		{"zh", "visit.create", ``, `{"form_id":"x"}`, []string{"记录了一次走访"}},
		{"zh", "some.future.action", ``, ``, []string{"some.future.action"}},
		{"en", "household.move", `{"place_code":"G11"}`, `{"place_code":"G12"}`, []string{"moved the household from 采山坪 to 杨家寨"}},
	} {
		v := &view{Lang: tc.lang}
		got := v.auditWhat(domain.AuditEvent{Action: tc.action, Before: json.RawMessage(tc.before), After: json.RawMessage(tc.after)}, place)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s %s: %q lacks %q", tc.lang, tc.action, got, w)
			}
		}
		if strings.Contains(got, "%!") || strings.Contains(got, "‹") {
			t.Errorf("%s %s: badly formatted %q", tc.lang, tc.action, got)
		}
		if tc.action == "household.update" && strings.Count(got, "家庭成员") != 1 {
			t.Errorf("members named more than once: %q", got)
		}
	}
}
