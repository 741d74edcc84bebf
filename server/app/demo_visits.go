package app

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"time"

	"fieldsync/server/demo"
	"fieldsync/server/domain"
	"fieldsync/server/sqlstore"
	"fieldsync/syncproto"
)

// Demo figures from the programme reports (DOMAIN.md).
const (
	DemoRetrofitHouses  = 282 // dilapidated houses retrofitted and inspected
	DemoRetrofitPassed  = 240 // passed the first inspection and were plaqued
	DemoRetrofitRework  = 42  // failed and must be reworked and re-inspected
	DemoCellarsPlanned  = 43  // water cellars of 24 m3 planned
	DemoCellarsBuilt    = 12  // built so far
	DemoSurveysThisWeek = 120 // household surveys already synced this month
)

var reworkReasons = []string{
	"屋面漏雨未修复",
	"墙体裂缝未加固",
	"圈梁未按标准施工",
	"缺少改造后照片",
}

func jsonOf(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// demoVisits builds the demo's visit history: the retrofit inspection
// cycle (240 passed, 42 sent back for rework with a task), water-cellar
// progress and some household surveys of this month.
func demoVisits(ctx context.Context, st *sqlstore.Store, ds *demo.Dataset, now time.Time) ([]sqlstore.ImportedVisit, error) {
	rng := rand.New(rand.NewSource(DemoSeed))
	li, err := st.UserByName(ctx, "wangge_li")
	if err != nil {
		return nil, err
	}
	zhao, err := st.UserByName(ctx, "wangge_zhao")
	if err != nil {
		return nil, err
	}
	worker := func(h demo.Household) int64 {
		for _, c := range li.PlaceCodes {
			if c == h.PlaceCode {
				return li.ID
			}
		}
		return zhao.ID
	}
	var out []sqlstore.ImportedVisit
	day := func(daysAgo int) time.Time {
		t := now.AddDate(0, 0, -daysAgo)
		return time.Date(t.Year(), t.Month(), t.Day(), 9+rng.Intn(8), rng.Intn(60), 0, 0, time.FixedZone("CST", 8*3600))
	}
	point := func(h demo.Household) *syncproto.Point {
		return &syncproto.Point{Lon: h.Lon + (rng.Float64()-0.5)*0.0002, Lat: h.Lat + (rng.Float64()-0.5)*0.0002}
	}
	for i := 0; i < DemoRetrofitHouses && i < len(ds.Households); i++ {
		h := ds.Households[i]
		at := day(rng.Intn(25))
		pass := i < DemoRetrofitPassed
		ans := map[string]json.RawMessage{
			"head_name":         jsonOf(h.HeadName),
			"house_grade":       jsonOf([]string{"C", "D"}[rng.Intn(2)]),
			"retrofit_method":   jsonOf([]string{"repair", "rebuild"}[rng.Intn(2)]),
			"retrofit_finished": jsonOf("yes"),
			"inspection_round":  jsonOf("first"),
			"inspection_date":   jsonOf(at.Format("2006-01-02")),
		}
		iv := sqlstore.ImportedVisit{UserID: worker(h)}
		if pass {
			ans["inspection_result"] = jsonOf("pass")
			ans["plaque_installed"] = jsonOf("yes")
			iv.State, iv.Step = domain.StateApproved, 1
		} else {
			reason := reworkReasons[rng.Intn(len(reworkReasons))]
			ans["inspection_result"] = jsonOf("fail")
			ans["plaque_installed"] = jsonOf("no")
			ans["failure_reason"] = jsonOf(reason)
			ans["rework_due"] = jsonOf(at.AddDate(0, 1, 0).Format("2006-01-02"))
			iv.State, iv.TaskReason = domain.StateNeedsRework, "初验不达标:"+reason
		}
		iv.Visit = syncproto.Visit{ID: syncproto.NewID(at), HouseholdID: h.ID, FormID: "house_retrofit_inspection", FormVersion: 1,
			Answers: ans, Point: point(h), AccuracyM: 5 + rng.Float64()*20, DeviceTime: at}
		out = append(out, iv)
	}
	for i := 0; i < DemoCellarsPlanned; i++ {
		h := ds.Households[(i*37+11)%len(ds.Households)]
		at := day(rng.Intn(20))
		stage := "planned"
		switch {
		case i < DemoCellarsBuilt:
			stage = "built"
		case i < DemoCellarsBuilt+15:
			stage = "excavated"
		}
		due := time.Date(now.Year(), now.Month()+1, 0, 0, 0, 0, 0, time.UTC) // end of this month
		ans := map[string]json.RawMessage{
			"site_name":   jsonOf(fmt.Sprintf("%s %d", h.HeadName, i+1)),
			"capacity_m3": jsonOf(24),
			"stage":       jsonOf(stage),
			"due_date":    jsonOf(due.Format("2006-01-02")),
		}
		out = append(out, sqlstore.ImportedVisit{UserID: worker(h), Visit: syncproto.Visit{ID: syncproto.NewID(at), HouseholdID: h.ID,
			FormID: "water_cellar_progress", FormVersion: 1, Answers: ans, Point: point(h), AccuracyM: 8, DeviceTime: at}})
	}
	for i := 0; i < DemoSurveysThisWeek; i++ {
		h := ds.Households[(i*7+300)%len(ds.Households)]
		at := day(rng.Intn(max(1, now.Day())))
		ans := map[string]json.RawMessage{
			"head_name":         jsonOf(h.HeadName),
			"members_count":     jsonOf(max(1, len(h.Members))),
			"poverty_status":    jsonOf(h.Attrs["poverty_status"]),
			"dibao_class":       jsonOf(h.Attrs["dibao_class"]),
			"wubao":             jsonOf(h.Attrs["wubao"]),
			"pension":           jsonOf(h.Attrs["pension"]),
			"medical_insurance": jsonOf(h.Attrs["medical_insurance"]),
			"income_per_capita": jsonOf(h.Attrs["income_per_capita"]),
		}
		out = append(out, sqlstore.ImportedVisit{UserID: worker(h), Visit: syncproto.Visit{ID: syncproto.NewID(at), HouseholdID: h.ID,
			FormID: "household_survey", FormVersion: 1, Answers: ans, Point: point(h), AccuracyM: 4 + rng.Float64()*30, DeviceTime: at}})
	}
	return out, nil
}
