package merge

import (
	"encoding/json"
	"testing"

	"fieldsync/syncproto"
)

func raw(s string) json.RawMessage { return json.RawMessage(s) }

func TestApply_Matrix(t *testing.T) {
	cur := map[string]json.RawMessage{"notes": raw(`"old"`), "head_name": raw(`"王建国"`), "phone": raw(`"1"`)}
	meta := map[string]FieldMeta{
		"notes":     {HLC: syncproto.HLC{WallMs: 2000}, Version: 10, Device: "A"},
		"head_name": {HLC: syncproto.HLC{WallMs: 2000}, Version: 10, Device: "A"},
		"phone":     {HLC: syncproto.HLC{WallMs: 1000}, Version: 5, Device: "A"},
	}
	sens := func(f string) bool { return f == "head_name" }
	cases := []struct {
		name       string
		edit       Edit
		wantSet    map[string]string
		wantStates []string
	}{
		{"untouched since base merges", Edit{Fields: map[string]json.RawMessage{"phone": raw(`"2"`)}, Base: 5, HLC: syncproto.HLC{WallMs: 1}, Version: 11}, map[string]string{"phone": `"2"`}, nil},
		{"new field merges", Edit{Fields: map[string]json.RawMessage{"address": raw(`"x"`)}, Base: 1, HLC: syncproto.HLC{WallMs: 1}, Version: 11}, map[string]string{"address": `"x"`}, nil},
		{"both changed, later HLC wins", Edit{Fields: map[string]json.RawMessage{"notes": raw(`"new"`)}, Base: 5, HLC: syncproto.HLC{WallMs: 3000}, Version: 11}, map[string]string{"notes": `"new"`}, []string{StateAutoResolved}},
		{"both changed, earlier HLC loses", Edit{Fields: map[string]json.RawMessage{"notes": raw(`"new"`)}, Base: 5, HLC: syncproto.HLC{WallMs: 1500}, Version: 11}, map[string]string{}, []string{StateAutoResolved}},
		{"equal HLC: later server version wins", Edit{Fields: map[string]json.RawMessage{"notes": raw(`"new"`)}, Base: 5, HLC: syncproto.HLC{WallMs: 2000}, Version: 11}, map[string]string{"notes": `"new"`}, []string{StateAutoResolved}},
		{"same value both sides is no conflict", Edit{Fields: map[string]json.RawMessage{"notes": raw(` "old" `)}, Base: 5, HLC: syncproto.HLC{WallMs: 1}, Version: 11}, map[string]string{}, nil},
		{"sensitive clash stays open", Edit{Fields: map[string]json.RawMessage{"head_name": raw(`"李四"`)}, Base: 5, HLC: syncproto.HLC{WallMs: 9000}, Version: 11, Sensitive: sens}, map[string]string{}, []string{StateOpen}},
		{"sensitive without clash applies", Edit{Fields: map[string]json.RawMessage{"head_name": raw(`"李四"`)}, Base: 10, HLC: syncproto.HLC{WallMs: 1}, Version: 11, Sensitive: sens}, map[string]string{"head_name": `"李四"`}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := Apply(cur, meta, c.edit)
			if len(out.Set) != len(c.wantSet) {
				t.Fatalf("set = %v, want %v", out.Set, c.wantSet)
			}
			for k, v := range c.wantSet {
				if string(out.Set[k]) != v || out.Meta[k].Version != c.edit.Version {
					t.Errorf("set[%s] = %s (meta %+v), want %s", k, out.Set[k], out.Meta[k], v)
				}
			}
			if len(out.Conflicts) != len(c.wantStates) {
				t.Fatalf("conflicts = %+v, want states %v", out.Conflicts, c.wantStates)
			}
			for i, st := range c.wantStates {
				cf := out.Conflicts[i]
				if cf.State != st || syncproto.IsNull(cf.Losing) || syncproto.IsNull(cf.Kept) {
					t.Errorf("conflict = %+v", cf)
				}
			}
		})
	}
}

// TestApply_LoserIsKept: whichever side wins, the other value is in the
// conflict record with its writer.
func TestApply_LoserIsKept(t *testing.T) {
	cur := map[string]json.RawMessage{"notes": raw(`"server"`)}
	meta := map[string]FieldMeta{"notes": {HLC: syncproto.HLC{WallMs: 5}, Version: 3, Device: "S"}}
	win := Apply(cur, meta, Edit{Fields: map[string]json.RawMessage{"notes": raw(`"device"`)}, Base: 1, HLC: syncproto.HLC{WallMs: 6}, Version: 4, Device: "D"})
	if string(win.Conflicts[0].Losing) != `"server"` || win.Conflicts[0].LosingMeta.Device != "S" {
		t.Fatalf("winner case: %+v", win.Conflicts[0])
	}
	lose := Apply(cur, meta, Edit{Fields: map[string]json.RawMessage{"notes": raw(`"device"`)}, Base: 1, HLC: syncproto.HLC{WallMs: 4}, Version: 4, Device: "D"})
	if string(lose.Conflicts[0].Losing) != `"device"` || lose.Conflicts[0].LosingMeta.Device != "D" {
		t.Fatalf("loser case: %+v", lose.Conflicts[0])
	}
}

// TestApply_SameDeviceTwiceIsNoClash: two offline edits of one field by
// the same device share a base; the second supersedes the first.
func TestApply_SameDeviceTwiceIsNoClash(t *testing.T) {
	cur := map[string]json.RawMessage{"head_name": raw(`"first"`)}
	meta := map[string]FieldMeta{"head_name": {HLC: syncproto.HLC{WallMs: 5}, Version: 7, Device: "A"}}
	out := Apply(cur, meta, Edit{Fields: map[string]json.RawMessage{"head_name": raw(`"second"`)}, Base: 3, HLC: syncproto.HLC{WallMs: 6}, Version: 8, Device: "A",
		Sensitive: func(string) bool { return true }})
	if len(out.Conflicts) != 0 || string(out.Set["head_name"]) != `"second"` {
		t.Fatalf("out = %+v", out)
	}
	other := Apply(cur, meta, Edit{Fields: map[string]json.RawMessage{"head_name": raw(`"second"`)}, Base: 3, HLC: syncproto.HLC{WallMs: 6}, Version: 8, Device: "B",
		Sensitive: func(string) bool { return true }})
	if len(other.Conflicts) != 1 || other.Conflicts[0].State != StateOpen {
		t.Fatalf("other device = %+v", other)
	}
}
