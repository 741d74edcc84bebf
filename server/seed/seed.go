// Package seed prepares a data folder for measurements and simulations:
// the demo county (without its photos), extra places, and generated
// register households by the thousand or the million. `fieldsync seed`
// runs it from a JSON Spec and prints a Manifest, so that tools outside
// the server (the fleet simulator fieldsim) need nothing of the server but
// its binary.
package seed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"fieldsync/server/app"
	"fieldsync/server/demo"
	"fieldsync/server/domain"
	"fieldsync/server/sqlstore"
)

// Sentinel errors.
var (
	// ErrSpec marks a Spec that cannot be run.
	ErrSpec = errors.New("seed: bad spec")
)

// Limits of one Spec.
const (
	// MaxHouseholds bounds the households of one entry.
	MaxHouseholds = 10_000_000
	// MaxBatch bounds the households of one import transaction.
	MaxBatch = 100_000
	// DefaultBatch is the import batch when an entry gives none.
	DefaultBatch = 5000
	// maxEntries bounds the places and household entries of a Spec.
	maxEntries = 10_000
)

// Spec is what to prepare, in this order: the demo county, the places,
// then each household entry.
type Spec struct {
	// Demo loads the demo county without its photos (places, forms, five
	// accounts, 875 households and their visits) unless it is loaded.
	Demo bool `json:"demo"`
	// Places are added, or updated when their code exists.
	Places []Place `json:"places,omitempty"`
	// Households are generated register households to import.
	Households []Households `json:"households,omitempty"`
}

// Place is a node of the place tree.
type Place struct {
	Code       string `json:"code"`
	Name       string `json:"name"`
	Level      string `json:"level"` // county, township, village or group
	ParentCode string `json:"parent_code,omitempty"`
}

// Households asks for Count generated households in Place or, with
// EachEmptyGroup, in every group under Place that has none yet (so that
// running the same entry again adds nothing).
type Households struct {
	Place          string `json:"place"`
	EachEmptyGroup bool   `json:"each_empty_group,omitempty"`
	Count          int    `json:"count"`
	// Seed makes the households: a seed always gives the same ones, and
	// two entries need two seeds (the same seed gives the same ids, which
	// replace the first entry's households).
	Seed uint64 `json:"seed"`
	// Batch is the households per import transaction (default 5000).
	Batch int `json:"batch,omitempty"`
}

// Manifest is what a data folder holds after Run, for the tool that
// prepared it.
type Manifest struct {
	// Database is the SQLite file (set by the caller, which opened it).
	Database string `json:"database,omitempty"`
	// Admin is the demo's administrator, when the demo county is loaded.
	// Its password is the demo's unless someone changed it.
	Admin *Account `json:"admin,omitempty"`
	// Demo names the demo county's places, when it is loaded.
	Demo *DemoPlaces `json:"demo,omitempty"`
	// Places are the codes the Spec added or updated.
	Places []string `json:"places,omitempty"`
	// Imported lists the imports, one per place that got households.
	Imported []Imported `json:"imported,omitempty"`
	// HouseholdsTotal counts the households in the database at the end.
	HouseholdsTotal int `json:"households_total"`
}

// Account is a user name and password.
type Account struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// DemoPlaces are the codes of the demo county's places.
type DemoPlaces struct {
	County       string `json:"county"`
	Township     string `json:"township"`
	Village      string `json:"village"`       // the village with the demo's households
	OtherVillage string `json:"other_village"` // a village the demo leaves empty
}

// Imported is one import of generated households.
type Imported struct {
	Place   string  `json:"place"`
	Count   int     `json:"count"`
	Seconds float64 `json:"seconds"`
}

// ParseSpec reads a Spec as JSON (unknown fields are an error) and
// validates it.
func ParseSpec(r io.Reader) (Spec, error) {
	var s Spec
	dec := json.NewDecoder(io.LimitReader(r, 16<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, fmt.Errorf("%w: %w", ErrSpec, err)
	}
	return s, s.Validate()
}

// Validate checks the Spec's bounds; the store checks the rest (unknown
// parents and places).
func (s Spec) Validate() error {
	if len(s.Places) > maxEntries || len(s.Households) > maxEntries {
		return fmt.Errorf("%w: at most %d places and %d household entries", ErrSpec, maxEntries, maxEntries)
	}
	for i, p := range s.Places {
		if p.Code == "" || p.Name == "" {
			return fmt.Errorf("%w: places[%d]: code and name are required", ErrSpec, i)
		}
		if !slices.Contains(domain.Levels, p.Level) {
			return fmt.Errorf("%w: places[%d]: level %q is not one of %v", ErrSpec, i, p.Level, domain.Levels)
		}
	}
	for i, h := range s.Households {
		if h.Place == "" {
			return fmt.Errorf("%w: households[%d]: place is required", ErrSpec, i)
		}
		if h.Count < 0 || h.Count > MaxHouseholds {
			return fmt.Errorf("%w: households[%d]: count %d is not in 0..%d", ErrSpec, i, h.Count, MaxHouseholds)
		}
		if h.Batch < 0 || h.Batch > MaxBatch {
			return fmt.Errorf("%w: households[%d]: batch %d is not in 0..%d", ErrSpec, i, h.Batch, MaxBatch)
		}
	}
	return nil
}

// Run prepares st as spec says and reports progress lines (in Chinese,
// for whoever runs it) to progress.
func Run(ctx context.Context, st *sqlstore.Store, spec Spec, progress io.Writer) (Manifest, error) {
	var m Manifest
	if err := spec.Validate(); err != nil {
		return m, err
	}
	if spec.Demo {
		if err := app.LoadDemo(ctx, st, progress); err != nil {
			return m, fmt.Errorf("seed: demo: %w", err)
		}
	}
	if len(spec.Places) > 0 {
		ps := make([]domain.Place, 0, len(spec.Places))
		for _, p := range spec.Places {
			ps = append(ps, domain.Place{Code: p.Code, Name: p.Name, Level: p.Level, ParentCode: p.ParentCode})
			m.Places = append(m.Places, p.Code)
		}
		if err := st.UpsertPlaces(ctx, ps); err != nil {
			return m, fmt.Errorf("seed: places: %w", err)
		}
		fmt.Fprintf(progress, "已添加或更新 %d 个地点。\n", len(ps))
	}
	for i, h := range spec.Households {
		imp, err := households(ctx, st, h, progress)
		m.Imported = append(m.Imported, imp...)
		if err != nil {
			return m, fmt.Errorf("seed: households[%d]: %w", i, err)
		}
	}
	if _, err := st.Place(ctx, demo.CountyCode); err == nil {
		m.Admin = &Account{Username: "admin", Password: demo.DemoPassword}
		m.Demo = &DemoPlaces{County: demo.CountyCode, Township: demo.TownshipCode, Village: demo.VillageCode, OtherVillage: demo.OtherVillageCode}
	} else if !errors.Is(err, domain.ErrNotFound) {
		return m, fmt.Errorf("seed: %w", err)
	}
	if err := st.DB().QueryRowContext(ctx, `SELECT count(*) FROM households`).Scan(&m.HouseholdsTotal); err != nil {
		return m, fmt.Errorf("seed: count households: %w", err)
	}
	return m, nil
}

// households runs one entry.
func households(ctx context.Context, st *sqlstore.Store, h Households, progress io.Writer) ([]Imported, error) {
	batch := h.Batch
	if batch == 0 {
		batch = DefaultBatch
	}
	g := newGenerator(h.Seed)
	if !h.EachEmptyGroup {
		p, err := st.Place(ctx, h.Place)
		if err != nil {
			return nil, fmt.Errorf("place %s: %w", h.Place, err)
		}
		imp, err := importInto(ctx, st, g, p, h.Count, batch, progress)
		return []Imported{imp}, err
	}
	ps, err := st.Places(ctx, []string{h.Place}, false)
	if err != nil {
		return nil, err
	}
	if len(ps) == 0 {
		return nil, fmt.Errorf("place %s: %w", h.Place, domain.ErrNotFound)
	}
	var out []Imported
	for _, p := range ps {
		if p.Level != "group" {
			continue
		}
		var have int
		if err := st.DB().QueryRowContext(ctx, `SELECT count(*) FROM households WHERE place_code = ?`, p.Code).Scan(&have); err != nil {
			return out, err
		}
		if have > 0 {
			continue
		}
		imp, err := importInto(ctx, st, g, p, h.Count, batch, progress)
		out = append(out, imp)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// importInto imports n generated households into place in batches
// through the store's ImportHouseholds.
func importInto(ctx context.Context, st *sqlstore.Store, g *generator, place domain.Place, n, batch int, progress io.Writer) (Imported, error) {
	t0 := time.Now()
	imp := Imported{Place: place.Code}
	lon, lat, d := placeBox(place)
	for imp.Count < n {
		if err := ctx.Err(); err != nil {
			return imp, err
		}
		hs := g.make(min(batch, n-imp.Count), place.Code, place.Name, lon, lat, d)
		if err := st.ImportHouseholds(ctx, hs, 0); err != nil {
			return imp, fmt.Errorf("import households into %s: %w", place.Code, err)
		}
		imp.Count += len(hs)
	}
	imp.Seconds = time.Since(t0).Seconds()
	fmt.Fprintf(progress, "已向 %s（%s）导入 %d 户，用时 %.1f 秒。\n", place.Name, place.Code, imp.Count, imp.Seconds)
	return imp, nil
}
