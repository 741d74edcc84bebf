// Package demo builds fieldsync's demonstration data set: a synthetic
// county with one real-shaped village committee (14 villager groups, 875
// households, 3,876 people, 280 registered poor households with 1,350
// people, as in the programme reports described in DOMAIN.md), a second
// small township outside it for scope tests, demo users, and the shipped
// form templates.
//
// Everything here is synthetic: the county, township and village names and
// codes are invented, the boundaries are drawn on a jittered grid near
// lon 103.7, lat 25.0 (a Yunnan mountain area), and every person is made
// up from common surnames and given names. Only the villager-group names
// and the totals come from the reports. Build is pure: no database, no
// I/O, and the same seed always gives the same data set.
package demo

import (
	"math/rand/v2"

	"github.com/paulmach/orb"

	"fieldsync/syncproto"
)

// Place levels, from the top of the tree down.
const (
	LevelCounty   = "county"
	LevelTownship = "township"
	LevelVillage  = "village"
	LevelGroup    = "group"
)

// User roles.
const (
	RoleAdmin       = "admin"
	RoleSupervisor  = "supervisor"
	RoleFieldWorker = "field_worker"
)

// DemoPassword is every demo user's password. It is printed by the server
// for first logins; never use the demo data set in production.
const DemoPassword = "demo-1234"

// Codes of the synthetic places.
const (
	CountyCode        = "530100"       // 示范县
	TownshipCode      = "530100101"    // 青山镇
	VillageCode       = "530100101201" // 石门村委会, the village of the reports
	OtherTownshipCode = "530100102"    // 龙潭乡, outside the demo village
	OtherVillageCode  = "530100102201" // 龙潭村委会
)

// The totals the demo village reproduces (DOMAIN.md).
const (
	TotalHouseholds        = 875
	TotalPeople            = 3876
	RegisteredPoor         = 280
	RegisteredPoorPeople   = 1350
	ProposedExit           = 166
	ProposedExitPeople     = 801
	MonitoredHouseholds    = 2
	VillageGroupCount      = 14
	OtherVillageGroupCount = 3
)

// Household attribute values, matching the household_survey form's
// choice values.
const (
	StatusRegisteredPoor = "registered_poor"
	StatusLifted         = "lifted"
	StatusReturned       = "returned"
	StatusMarginal       = "marginal"
	StatusMonitored      = "monitored"
	StatusNone           = "none"
)

// Place is a node of the place tree with its boundary.
type Place struct {
	Code       string
	Name       string
	Level      string // county, township, village or group
	ParentCode string // "" for the county
	// Boundary is an orb.Polygon in WGS84 lon/lat: one closed,
	// counter-clockwise, simple outer ring, no holes.
	Boundary orb.Geometry
}

// Household is a demo household (户).
type Household struct {
	ID        string // UUIDv7, unique, deterministic for the seed
	PlaceCode string // a villager group
	HeadName  string
	Members   []Member // the head first
	// Attrs holds the household fields: poverty_status, dibao_class
	// (none, A, B, C), wubao, pension, medical_insurance (yes, no),
	// address, income_per_capita (float64 yuan), and for registered
	// poor households proposed_exit (bool).
	Attrs    map[string]any
	Lon, Lat float64
}

// Member is one person of a household.
type Member struct {
	ID        string // UUIDv7
	Name      string
	Relation  string // 户主, 配偶, 子, 女, 儿媳, 女婿, 孙子, 孙女, 父亲, 母亲
	BirthYear int
}

// User is a demo account.
type User struct {
	Username    string
	DisplayName string
	Role        string // admin, supervisor or field_worker
	Password    string
	PlaceCodes  []string
}

// Dataset is the whole demo data set.
type Dataset struct {
	Places     []Place // parents before children
	Households []Household
	Users      []User
	Forms      []syncproto.FormDef
}

// Summary counts the data set the way the reports do.
type Summary struct {
	Households           int
	People               int
	RegisteredPoor       int
	RegisteredPoorPeople int
	ProposedExit         int
	ProposedExitPeople   int
	Monitored            int
	ByPlace              map[string]int // households per group code
}

// Build returns the demo data set for a seed. Equal seeds give equal data
// sets.
func Build(seed int64) *Dataset {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x66_69_65_6c_64_73_79_6e)) // "fieldsyn"
	ids := &idGen{rng: rng}
	places, groups := buildPlaces(rng)
	d := &Dataset{
		Places: places,
		Users:  buildUsers(groups),
		Forms:  syncproto.Templates(),
	}
	d.Households = buildHouseholds(rng, ids, places, groups)
	return d
}

// Place returns the place with the given code.
func (d *Dataset) Place(code string) (Place, bool) {
	for _, p := range d.Places {
		if p.Code == code {
			return p, true
		}
	}
	return Place{}, false
}

// Children returns the places whose parent is code, in data-set order.
func (d *Dataset) Children(code string) []Place {
	var out []Place
	for _, p := range d.Places {
		if p.ParentCode == code {
			out = append(out, p)
		}
	}
	return out
}

// User returns the user with the given username.
func (d *Dataset) User(username string) (User, bool) {
	for _, u := range d.Users {
		if u.Username == username {
			return u, true
		}
	}
	return User{}, false
}

// Summary counts households and people.
func (d *Dataset) Summary() Summary {
	s := Summary{ByPlace: make(map[string]int)}
	for _, h := range d.Households {
		n := len(h.Members)
		s.Households++
		s.People += n
		s.ByPlace[h.PlaceCode]++
		switch h.Attrs["poverty_status"] {
		case StatusRegisteredPoor:
			s.RegisteredPoor++
			s.RegisteredPoorPeople += n
			if exit, _ := h.Attrs["proposed_exit"].(bool); exit {
				s.ProposedExit++
				s.ProposedExitPeople += n
			}
		case StatusMonitored:
			s.Monitored++
		}
	}
	return s
}

func buildUsers(groups []groupInfo) []User {
	var li, zhao []string
	for i, g := range groups {
		if g.village != VillageCode {
			continue
		}
		if i < VillageGroupCount/2 {
			li = append(li, g.code)
		} else {
			zhao = append(zhao, g.code)
		}
	}
	return []User{
		{Username: "admin", DisplayName: "系统管理员", Role: RoleAdmin, Password: DemoPassword, PlaceCodes: []string{CountyCode}},
		{Username: "zhen_supervisor", DisplayName: "周建平(青山镇督导)", Role: RoleSupervisor, Password: DemoPassword, PlaceCodes: []string{TownshipCode}},
		{Username: "cun_supervisor", DisplayName: "杨丽华(石门村委会)", Role: RoleSupervisor, Password: DemoPassword, PlaceCodes: []string{VillageCode}},
		{Username: "wangge_li", DisplayName: "李文华(网格员)", Role: RoleFieldWorker, Password: DemoPassword, PlaceCodes: li},
		{Username: "wangge_zhao", DisplayName: "赵秀英(网格员)", Role: RoleFieldWorker, Password: DemoPassword, PlaceCodes: zhao},
	}
}
