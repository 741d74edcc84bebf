package evidence_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"fieldsync/server/evidence"
)

// latinWords finds a run of two or more Latin words: an English sentence
// left in a detail a supervisor reads.
var latinWords = regexp.MustCompile(`[A-Za-z]{2,} [A-Za-z]{2,}`)

// TestFlagDetails_ChineseWithNumbersAndUnits: every flag's detail is a
// Chinese sentence that carries its figures with their units.
func TestFlagDetails_ChineseWithNumbersAndUnits(t *testing.T) {
	far := visit
	far.Point = pt(103.5, 25.5)
	poor := visit
	poor.AccuracyM, poor.MaxAccuracyM = 35, 20
	cfg := evidence.Config{}
	ph1, ph2 := uint64(0xF0F0F0F0F0F0F0F0), uint64(0xF0F0F0F0F0F0F0F1)
	var flags []evidence.Flag
	flags = append(flags, evidence.CheckVisit(cfg, far)...)
	flags = append(flags, evidence.CheckVisit(cfg, poor)...)
	noGPS := visit
	noGPS.Point = nil
	flags = append(flags, evidence.CheckVisit(cfg, noGPS)...)
	flags = append(flags, evidence.CheckBlob(cfg, visit, evidence.Blob{SHA256: "a1", GPS: pt(103.16, 25.16),
		Taken: evidence.CaptureTime{Time: time.Date(2026, 2, 26, 9, 0, 0, 0, cst)}})...)
	flags = append(flags, evidence.SameBlob([]evidence.Use{
		{VisitID: "v1", HouseholdID: "h1", SHA256: "s1"}, {VisitID: "v2", HouseholdID: "h2", SHA256: "s1"}})...)
	flags = append(flags, evidence.NearDuplicates(cfg, []evidence.Use{{VisitID: "v1", HouseholdID: "h1", SHA256: "p1", PHash: &ph1}},
		[]evidence.Use{{VisitID: "v2", HouseholdID: "h2", SHA256: "p2", PHash: &ph2}})...)
	want := map[string][]string{
		evidence.FlagOutsidePlace:  {"边界之外", "103.500000", "G11"},
		evidence.FlagPoorAccuracy:  {"35 米", "20 米"},
		evidence.FlagNoGPS:         {"没有 GPS"},
		evidence.FlagGPSFar:        {"米", "上限"},
		evidence.FlagOtherDay:      {"2026-02-26", "2026-03-01", "相差 3 天", "UTC+08:00"},
		evidence.FlagSameBlob:      {"同一文件", "户 h", "访问 v"},
		evidence.FlagNearDuplicate: {"相似", "户 h", "相似距离 1"},
	}
	seen := map[string]bool{}
	for _, f := range flags {
		seen[f.Flag] = true
		if m := latinWords.FindString(f.Detail); m != "" {
			t.Errorf("%s: English in the detail (%q): %s", f.Flag, m, f.Detail)
		}
		for _, w := range want[f.Flag] {
			if !strings.Contains(f.Detail, w) {
				t.Errorf("%s: detail %q lacks %q", f.Flag, f.Detail, w)
			}
		}
	}
	for f := range want {
		if !seen[f] {
			t.Errorf("no %s flag was raised; the set-up is wrong", f)
		}
	}
}
