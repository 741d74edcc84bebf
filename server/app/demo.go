package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"fieldsync/server/auth"
	"fieldsync/server/demo"
	"fieldsync/server/domain"
	"fieldsync/server/geo"
	"fieldsync/server/sqlstore"
	"fieldsync/syncproto"
)

// DemoSeed is the seed of the demo data set.
const DemoSeed = 2019

// LoadDemo loads the demo county (places, forms, users, 875 households)
// unless it is already there.
func LoadDemo(ctx context.Context, st *sqlstore.Store, out io.Writer) error {
	ds := demo.Build(DemoSeed)
	if _, err := st.Place(ctx, demo.CountyCode); err == nil {
		return nil
	} else if !errors.Is(err, domain.ErrNotFound) {
		return err
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
		return fmt.Errorf("places: %w", err)
	}
	existing, err := st.Forms(ctx, true)
	if err != nil {
		return err
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
			return fmt.Errorf("form %s: %w", f.ID, err)
		}
	}
	for _, u := range ds.Users {
		if _, err := st.UserByName(ctx, u.Username); err == nil {
			continue
		}
		h, err := auth.HashPassword(u.Password)
		if err != nil {
			return err
		}
		if _, err := st.CreateUser(ctx, domain.User{Username: u.Username, DisplayName: u.DisplayName, Role: domain.Role(u.Role), PasswordHash: h, PlaceCodes: u.PlaceCodes}); err != nil {
			return fmt.Errorf("user %s: %w", u.Username, err)
		}
	}
	hs := make([]syncproto.Household, 0, len(ds.Households))
	for _, h := range ds.Households {
		hs = append(hs, DemoHousehold(h))
	}
	if err := st.ImportHouseholds(ctx, hs, 0); err != nil {
		return fmt.Errorf("households: %w", err)
	}
	visits, err := demoVisits(ctx, st, ds, time.Now())
	if err != nil {
		return fmt.Errorf("visits: %w", err)
	}
	if err := st.ImportVisits(ctx, visits); err != nil {
		return fmt.Errorf("visits: %w", err)
	}
	names := make([]string, 0, len(ds.Users))
	for _, u := range ds.Users {
		names = append(names, fmt.Sprintf("%s (%s)", u.Username, u.Role))
	}
	sort.Strings(names)
	fmt.Fprintf(out, "demo data loaded: %d places, %d households, %d visits (retrofit inspections: %d passed, %d sent back for rework), forms %d; users %v, password %q\n",
		len(places), len(hs), len(visits), DemoRetrofitPassed, DemoRetrofitRework, len(ds.Forms), names, demo.DemoPassword)
	return nil
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
