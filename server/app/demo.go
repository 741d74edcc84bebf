package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"fieldsync/server/auth"
	"fieldsync/server/blob"
	"fieldsync/server/demo"
	"fieldsync/server/domain"
	"fieldsync/server/geo"
	"fieldsync/server/sqlstore"
	"fieldsync/syncproto"
)

// DemoSeed is the seed of the demo data set.
const DemoSeed = 2019

// LoadDemo loads the demo county (places, forms, users, 875 households,
// their visits) unless it is already there, without evidence.
func LoadDemo(ctx context.Context, st *sqlstore.Store, out io.Writer) error {
	_, err := LoadDemoWithEvidence(ctx, st, nil, out)
	return err
}

// LoadDemoWithEvidence is LoadDemo with the visits' evidence (see
// demo_evidence.go) put into blobs, unless blobs is nil. The blobs are
// recorded unanalysed: the upload handler's analysis worker reads them
// and raises the flags (the caller may wait with WaitAnalysed). It
// returns what the evidence holds (zero when nothing was loaded).
func LoadDemoWithEvidence(ctx context.Context, st *sqlstore.Store, blobs blob.Store, out io.Writer) (DemoEvidenceStats, error) {
	var stats DemoEvidenceStats
	ds := demo.Build(DemoSeed)
	if _, err := st.Place(ctx, demo.CountyCode); err == nil {
		fmt.Fprintf(out, "示范数据此前已加载到此数据目录（示范县 %s），这次没有重复加载，也没有改动任何账号。\n", demo.CountyCode)
		return stats, nil
	} else if !errors.Is(err, domain.ErrNotFound) {
		return stats, err
	}
	places := make([]domain.Place, 0, len(ds.Places))
	for _, p := range ds.Places {
		dp := domain.Place{Code: p.Code, Name: p.Name, Level: p.Level, ParentCode: p.ParentCode}
		if p.Boundary != nil {
			dp.Boundary = geo.Marshal(p.Boundary)
		}
		places = append(places, dp)
	}
	if err := st.UpsertPlaces(ctx, places); err != nil {
		return stats, fmt.Errorf("places: %w", err)
	}
	existing, err := st.Forms(ctx, true)
	if err != nil {
		return stats, err
	}
	have := map[string]bool{}
	for _, f := range existing {
		have[f.ID] = true
	}
	for _, f := range ds.Forms {
		if have[f.ID] {
			continue
		}
		if _, err := st.PublishForm(ctx, f, 0); err != nil {
			return stats, fmt.Errorf("form %s: %w", f.ID, err)
		}
	}
	var created, kept []string
	for _, u := range ds.Users {
		if _, err := st.UserByName(ctx, u.Username); err == nil {
			kept = append(kept, u.Username)
			continue
		}
		created = append(created, fmt.Sprintf("%s（%s）", u.Username, u.Role))
		h, err := auth.HashPassword(u.Password)
		if err != nil {
			return stats, err
		}
		if _, err := st.CreateUser(ctx, domain.User{Username: u.Username, DisplayName: u.DisplayName, Role: domain.Role(u.Role), PasswordHash: h, PlaceCodes: u.PlaceCodes}); err != nil {
			return stats, fmt.Errorf("user %s: %w", u.Username, err)
		}
	}
	hs := make([]syncproto.Household, 0, len(ds.Households))
	for _, h := range ds.Households {
		hs = append(hs, DemoHousehold(h))
	}
	if err := st.ImportHouseholds(ctx, hs, 0); err != nil {
		return stats, fmt.Errorf("households: %w", err)
	}
	visits, err := demoVisits(ctx, st, ds, time.Now())
	if err != nil {
		return stats, fmt.Errorf("visits: %w", err)
	}
	var checkNow []string
	if blobs != nil {
		if stats, checkNow, err = demoEvidence(ctx, st, blobs, ds, visits); err != nil {
			return stats, fmt.Errorf("evidence: %w", err)
		}
	}
	if err := st.ImportVisits(ctx, visits); err != nil {
		return stats, fmt.Errorf("visits: %w", err)
	}
	for _, id := range checkNow {
		if err := st.RunEvidenceChecks(ctx, id); err != nil {
			return stats, fmt.Errorf("evidence checks: %w", err)
		}
	}
	sort.Strings(created)
	sort.Strings(kept)
	fmt.Fprintf(out, "示范数据已加载：%d 个地点，%d 户，%d 次走访（危房改造初验 %d 户通过，%d 户需整改），%d 张表单。\n",
		len(places), len(hs), len(visits), DemoRetrofitPassed, DemoRetrofitRework, len(ds.Forms))
	if blobs != nil {
		fmt.Fprintf(out, "示范证据：%d 次走访附有 %d 张照片和扫描件，其中 %d 次走访的证据齐全、没有疑点；其余走访的证据有疑点或缺失，可在“佐证缺失”和“审核”页面查看。\n",
			stats.Visits, stats.Photos, stats.Clean)
	}
	if len(created) > 0 {
		fmt.Fprintf(out, "新建示范账号：%s，密码都是 %s\n", strings.Join(created, "、"), demo.DemoPassword)
	}
	if len(kept) > 0 {
		fmt.Fprintf(out, "这些账号此前已存在，密码没有改动（不是 %s）：%s\n", demo.DemoPassword, strings.Join(kept, "、"))
	}
	return stats, nil
}

// DemoHousehold converts a demo household to the wire form.
func DemoHousehold(h demo.Household) syncproto.Household {
	fields := map[string]json.RawMessage{}
	put := func(k string, v any) {
		b, _ := json.Marshal(v)
		fields[k] = b
	}
	put(syncproto.FieldHeadName, h.HeadName)
	put(syncproto.FieldLocation, syncproto.Point{Lon: h.Lon, Lat: h.Lat})
	for k, v := range h.Attrs {
		put(k, v)
	}
	for _, m := range h.Members {
		put(syncproto.MemberPrefix+m.ID, syncproto.Member{Name: m.Name, Relation: m.Relation, BirthYear: m.BirthYear})
	}
	return syncproto.Household{ID: h.ID, PlaceCode: h.PlaceCode, Fields: fields}
}
