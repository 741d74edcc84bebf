package evidence_test

import (
	"strings"
	"testing"
	"time"

	"github.com/paulmach/orb"

	"fieldsync/server/evidence"
)

var (
	cst   = time.FixedZone("", 8*3600)
	visit = evidence.Visit{
		ID: "v1", HouseholdID: "h1", PlaceCode: "G11",
		Point:      &orb.Point{103.15, 25.15},
		AccuracyM:  8,
		DeviceTime: time.Date(2026, 3, 1, 10, 0, 0, 0, cst),
		Boundary:   orb.Polygon{{{103.1, 25.1}, {103.2, 25.1}, {103.2, 25.2}, {103.1, 25.2}, {103.1, 25.1}}},
	}
)

func flagNames(fs []evidence.Flag) string {
	var names []string
	for _, f := range fs {
		names = append(names, f.Flag)
	}
	return strings.Join(names, ",")
}

func pt(lon, lat float64) *orb.Point { return &orb.Point{lon, lat} }

func TestCheckVisit(t *testing.T) {
	tests := []struct {
		name string
		edit func(v *evidence.Visit)
		want string
	}{
		{"inside, accurate", func(v *evidence.Visit) { v.MaxAccuracyM = 20 }, ""},
		{"outside the place", func(v *evidence.Visit) { v.Point = pt(103.25, 25.15) }, evidence.FlagOutsidePlace},
		{"no boundary", func(v *evidence.Visit) { v.Point, v.Boundary = pt(103.25, 25.15), nil }, ""},
		{"no point", func(v *evidence.Visit) { v.Point = nil }, evidence.FlagNoGPS},
		{"accuracy worse than the form allows", func(v *evidence.Visit) { v.AccuracyM, v.MaxAccuracyM = 35, 20 }, evidence.FlagPoorAccuracy},
		{"accuracy at the limit", func(v *evidence.Visit) { v.AccuracyM, v.MaxAccuracyM = 20, 20 }, ""},
		{"form without a limit", func(v *evidence.Visit) { v.AccuracyM, v.MaxAccuracyM = 500, 0 }, ""},
		{"device clock two days fast", func(v *evidence.Visit) { v.ReceivedAt = v.DeviceTime.Add(-48 * time.Hour) }, evidence.FlagClockSkew},
		{"device clock a few minutes fast", func(v *evidence.Visit) { v.ReceivedAt = v.DeviceTime.Add(-10 * time.Minute) }, ""},
		{"recorded offline, sent a week later", func(v *evidence.Visit) { v.ReceivedAt = v.DeviceTime.Add(7 * 24 * time.Hour) }, ""},
		{"no receive time", func(v *evidence.Visit) { v.ReceivedAt = time.Time{} }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := visit
			tt.edit(&v)
			fs := evidence.CheckVisit(evidence.Config{}, v)
			if got := flagNames(fs); got != tt.want {
				t.Errorf("flags = %q, want %q (%+v)", got, tt.want, fs)
			}
			for _, f := range fs {
				if f.SHA256 != "" || f.VisitID != "v1" || f.Detail == "" {
					t.Errorf("flag %+v", f)
				}
			}
		})
	}
}

func TestCheckVisit_ClockSkewDetail(t *testing.T) {
	v := visit
	v.DeviceTime = time.Date(2027, 12, 8, 10, 0, 0, 0, time.UTC)
	v.ReceivedAt = time.Date(2026, 12, 6, 8, 30, 0, 0, time.UTC)
	fs := evidence.CheckVisit(evidence.Config{}, v)
	if len(fs) != 1 || fs[0].Flag != evidence.FlagClockSkew {
		t.Fatalf("flags %+v", fs)
	}
	for _, want := range []string{"2027-12-08 18:00", "2026-12-06 16:30", "UTC+08:00", "367 天 1 小时"} {
		if !strings.Contains(fs[0].Detail, want) {
			t.Errorf("detail %q lacks %q", fs[0].Detail, want)
		}
	}
}

func TestCheckBlob(t *testing.T) {
	abs := func(tm time.Time) evidence.CaptureTime { return evidence.CaptureTime{Time: tm} }
	floating := func(s string) evidence.CaptureTime {
		c, err := evidence.ParseCaptureTime(s)
		if err != nil || !c.Floating {
			t.Fatalf("floating %q: %v", s, err)
		}
		return c
	}
	tests := []struct {
		name string
		cfg  evidence.Config
		blob evidence.Blob
		zone *time.Location
		want string
	}{
		{"near and same day", evidence.Config{}, evidence.Blob{GPS: pt(103.1505, 25.1505), Taken: abs(time.Date(2026, 3, 1, 9, 0, 0, 0, cst))}, nil, ""},
		{"no EXIF at all", evidence.Config{}, evidence.Blob{}, nil, ""},
		{"600 m away", evidence.Config{}, evidence.Blob{GPS: pt(103.156, 25.15)}, nil, evidence.FlagGPSFar},
		{"600 m away, limit 1 km", evidence.Config{MaxDistanceM: 1000}, evidence.Blob{GPS: pt(103.156, 25.15)}, nil, ""},
		{"150 m away", evidence.Config{}, evidence.Blob{GPS: pt(103.1515, 25.15)}, nil, ""},
		{"day before", evidence.Config{}, evidence.Blob{Taken: abs(time.Date(2026, 2, 28, 23, 0, 0, 0, cst))}, nil, evidence.FlagOtherDay},
		// 16:30 UTC on 28 Feb is 00:30 on 1 Mar in China.
		{"UTC instant on the visit day in UTC+8", evidence.Config{}, evidence.Blob{Taken: abs(time.Date(2026, 2, 28, 16, 30, 0, 0, time.UTC))}, nil, ""},
		{"same instant, visit zone UTC", evidence.Config{}, evidence.Blob{Taken: abs(time.Date(2026, 2, 28, 16, 30, 0, 0, time.UTC))}, time.UTC, evidence.FlagOtherDay},
		{"floating time, same wall day", evidence.Config{}, evidence.Blob{Taken: floating("2026-03-01T23:59:00")}, nil, ""},
		{"floating time, next day", evidence.Config{}, evidence.Blob{Taken: floating("2026-03-02T00:01:00")}, nil, evidence.FlagOtherDay},
		{"far and another day", evidence.Config{}, evidence.Blob{GPS: pt(104, 26), Taken: abs(time.Date(2025, 3, 1, 10, 0, 0, 0, cst))}, nil, evidence.FlagGPSFar + "," + evidence.FlagOtherDay},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := visit
			v.Zone = tt.zone
			tt.blob.SHA256 = "ab"
			fs := evidence.CheckBlob(tt.cfg, v, tt.blob)
			if got := flagNames(fs); got != tt.want {
				t.Errorf("flags = %q, want %q (%+v)", got, tt.want, fs)
			}
			for _, f := range fs {
				if f.SHA256 != "ab" || f.Detail == "" {
					t.Errorf("flag %+v", f)
				}
			}
		})
	}
	// No visit point: no distance check.
	v := visit
	v.Point = nil
	if fs := evidence.CheckBlob(evidence.Config{}, v, evidence.Blob{GPS: pt(104, 26)}); len(fs) != 0 {
		t.Errorf("flags without a visit point: %+v", fs)
	}
}

func TestSameBlob(t *testing.T) {
	uses := []evidence.Use{
		{VisitID: "v1", HouseholdID: "h1", SHA256: "aa"},
		{VisitID: "v2", HouseholdID: "h1", SHA256: "aa"}, // same household again: fine
		{VisitID: "v3", HouseholdID: "h2", SHA256: "bb"},
	}
	if fs := evidence.SameBlob(uses); len(fs) != 0 {
		t.Errorf("flags for one household: %+v", fs)
	}
	uses = append(uses, evidence.Use{VisitID: "v4", HouseholdID: "h3", SHA256: "aa"})
	fs := evidence.SameBlob(uses)
	got := map[string]bool{}
	for _, f := range fs {
		if f.Flag != evidence.FlagSameBlob || f.SHA256 != "aa" {
			t.Errorf("flag %+v", f)
		}
		got[f.VisitID] = true
	}
	if len(fs) != 3 || !got["v1"] || !got["v2"] || !got["v4"] {
		t.Errorf("flags = %+v, want v1, v2 and v4", fs)
	}
}

func TestNearDuplicates(t *testing.T) {
	h := func(v uint64) *uint64 { return &v }
	mine := []evidence.Use{{VisitID: "v1", HouseholdID: "h1", SHA256: "aa", PHash: h(0xF0F0F0F0F0F0F0F0)}}
	tests := []struct {
		name string
		cand evidence.Use
		want int
	}{
		{"3 bits off, other household", evidence.Use{VisitID: "v9", HouseholdID: "h2", SHA256: "bb", PHash: h(0xF0F0F0F0F0F0F0F7)}, 2},
		{"3 bits off, same household", evidence.Use{VisitID: "v9", HouseholdID: "h1", SHA256: "bb", PHash: h(0xF0F0F0F0F0F0F0F7)}, 0},
		{"same sha (SameBlob's job)", evidence.Use{VisitID: "v9", HouseholdID: "h2", SHA256: "aa", PHash: h(0xF0F0F0F0F0F0F0F0)}, 0},
		{"far apart", evidence.Use{VisitID: "v9", HouseholdID: "h2", SHA256: "bb", PHash: h(0x0F0F0F0F0F0F0F0F)}, 0},
		{"no hash", evidence.Use{VisitID: "v9", HouseholdID: "h2", SHA256: "bb"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := evidence.NearDuplicates(evidence.Config{}, mine, []evidence.Use{tt.cand})
			if len(fs) != tt.want {
				t.Fatalf("flags = %+v, want %d", fs, tt.want)
			}
			for _, f := range fs {
				if f.Flag != evidence.FlagNearDuplicate || !strings.Contains(f.Detail, "相似距离 3") {
					t.Errorf("flag %+v", f)
				}
			}
		})
	}
	if fs := evidence.NearDuplicates(evidence.Config{NearDuplicateDistance: -1}, mine, []evidence.Use{tests[0].cand}); len(fs) != 0 {
		t.Errorf("disabled check flagged: %+v", fs)
	}
}

// TestCheckVisit_GPSReasonInDetail: the GPS flags quote the worker's
// stated reason, or say that none was given.
func TestCheckVisit_GPSReasonInDetail(t *testing.T) {
	v := evidence.Visit{ID: "v1", AccuracyM: 80, MaxAccuracyM: 20}
	for _, tt := range []struct {
		point  bool
		reason string
		flag   string
		want   string
	}{
		{false, "山谷里没有信号", evidence.FlagNoGPS, "采集员说明：山谷里没有信号"},
		{false, "", evidence.FlagNoGPS, "采集员未说明原因"},
		{true, "树林太密", evidence.FlagPoorAccuracy, "采集员说明：树林太密"},
		{true, "   ", evidence.FlagPoorAccuracy, "采集员未说明原因"},
	} {
		v := v
		v.GPSReason = tt.reason
		if tt.point {
			v.Point = &orb.Point{103.2, 25.1}
		}
		var got *evidence.Flag
		for _, f := range evidence.CheckVisit(evidence.Config{}, v) {
			if f.Flag == tt.flag {
				got = &f
			}
		}
		if got == nil || !strings.Contains(got.Detail, tt.want) {
			t.Errorf("reason %q: %s flag %+v, want detail with %q", tt.reason, tt.flag, got, tt.want)
		}
	}
}
