package demo

import (
	"encoding/json"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/paulmach/orb"
	"github.com/paulmach/orb/planar"

	"fieldsync/syncproto"
)

func TestBuild_Deterministic(t *testing.T) {
	a, b := Build(1), Build(1)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("Build(1) differs between calls")
	}
	c := Build(2)
	if reflect.DeepEqual(a.Households, c.Households) {
		t.Fatal("Build(2) equals Build(1)")
	}
	if a.Households[0].ID == c.Households[0].ID {
		t.Fatal("different seeds gave the same ids")
	}
}

func TestBuild_Counts(t *testing.T) {
	for _, seed := range []int64{0, 1, 42, -7, 20240101} {
		d := Build(seed)
		s := d.Summary()
		want := Summary{
			Households:           875,
			People:               3876,
			RegisteredPoor:       280,
			RegisteredPoorPeople: 1350,
			ProposedExit:         166,
			ProposedExitPeople:   801,
			Monitored:            2,
		}
		got := s
		got.ByPlace = nil
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("seed %d: summary %+v, want %+v", seed, got, want)
		}
		if len(d.Households) != TotalHouseholds {
			t.Fatalf("seed %d: %d households", seed, len(d.Households))
		}
		sum := 0
		for _, g := range d.Children(VillageCode) {
			n := s.ByPlace[g.Code]
			if n < 30 {
				t.Errorf("seed %d: group %s has %d households", seed, g.Name, n)
			}
			sum += n
		}
		if sum != TotalHouseholds {
			t.Fatalf("seed %d: groups hold %d households", seed, sum)
		}
	}
}

func TestBuild_RealGroupNames(t *testing.T) {
	d := Build(1)
	groups := d.Children(VillageCode)
	var names []string
	for _, g := range groups {
		if g.Level != LevelGroup {
			t.Errorf("%s is %s", g.Name, g.Level)
		}
		names = append(names, g.Name)
	}
	want := []string{
		"采山坪", "杨家寨", "马家寨", "塘子", "箐脚", "观音岩", "石旮旯",
		"谷地", "茅草坪", "亚拉坡", "亚拉坡九公里", "岩头", "黄泥坡",
	}
	if len(names) != 14 {
		t.Fatalf("%d groups: %v", len(names), names)
	}
	for _, w := range want {
		if !slices.Contains(names, w) {
			t.Errorf("group %s missing from %v", w, names)
		}
	}
	v, ok := d.Place(VillageCode)
	if !ok {
		t.Fatal("village missing")
	}
	// One group is named after the village itself.
	village := strings.TrimSuffix(v.Name, "村委会")
	if village == v.Name || !slices.Contains(names, village) {
		t.Errorf("no group named after village %q in %v", v.Name, names)
	}
	if other := d.Children(OtherVillageCode); len(other) != OtherVillageGroupCount {
		t.Errorf("other village has %d groups", len(other))
	}
}

// pinyin readings glued to Han characters, e.g. from converted sources.
var pinyinAnnotation = regexp.MustCompile(`\p{Han}\([a-z\x{e0}-\x{1dc}]{1,7}\)`)

func TestBuild_UniqueIDsAndSaneText(t *testing.T) {
	d := Build(3)
	seen := map[string]bool{}
	check := func(kind, id string) {
		t.Helper()
		if seen[id] {
			t.Fatalf("%s id %s repeated", kind, id)
		}
		seen[id] = true
		if !syncproto.ValidID(id) || len(id) != 36 || id[14] != '7' || !strings.ContainsAny(id[19:20], "89ab") {
			t.Fatalf("%s id %s is not a UUIDv7", kind, id)
		}
	}
	addresses := map[string]bool{}
	for _, h := range d.Households {
		check("household", h.ID)
		for _, m := range h.Members {
			check("member", m.ID)
			if m.BirthYear < 1900 || m.BirthYear > RefYear || m.Name == "" || m.Relation == "" {
				t.Fatalf("member %+v", m)
			}
		}
		if h.Members[0].Relation != "户主" || h.Members[0].Name != h.HeadName {
			t.Fatalf("household %s: head %+v vs %s", h.ID, h.Members[0], h.HeadName)
		}
		// Children and grandchildren are listed eldest first.
		last := map[string]int{}
		for _, m := range h.Members[1:] {
			gen := m.Relation
			if gen == "女" {
				gen = "子"
			}
			if gen == "孙女" {
				gen = "孙子"
			}
			if m.BirthYear < last[gen] {
				t.Fatalf("household %s: %s listed after a younger sibling", h.ID, m.Name)
			}
			last[gen] = m.BirthYear
		}
		addr, _ := h.Attrs["address"].(string)
		if addr == "" || addresses[addr] {
			t.Fatalf("address %q empty or repeated", addr)
		}
		addresses[addr] = true
		// Attributes fit the household_survey form's choices.
		for _, key := range []string{"poverty_status", "dibao_class", "wubao", "pension", "medical_insurance"} {
			if _, ok := h.Attrs[key].(string); !ok {
				t.Fatalf("household %s: %s = %v", h.ID, key, h.Attrs[key])
			}
		}
		if v, ok := h.Attrs["income_per_capita"].(float64); !ok || v <= 0 {
			t.Fatalf("income %v", h.Attrs["income_per_capita"])
		}
		b, err := json.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		if m := pinyinAnnotation.Find(b); m != nil {
			t.Fatalf("pinyin annotation %q in %s", m, b)
		}
	}
	for _, p := range d.Places {
		if pinyinAnnotation.MatchString(p.Name) {
			t.Errorf("place name %q", p.Name)
		}
	}
	if len(d.Forms) == 0 {
		t.Fatal("no forms")
	}
}

func TestBuild_HouseholdsMatchSurveyForm(t *testing.T) {
	d := Build(4)
	var survey *syncproto.FormDef
	for i := range d.Forms {
		if d.Forms[i].ID == "household_survey" {
			survey = &d.Forms[i]
		}
	}
	if survey == nil {
		t.Fatal("household_survey form missing")
	}
	for _, h := range d.Households[:50] {
		answers := map[string]json.RawMessage{}
		put := func(k string, v any) {
			b, _ := json.Marshal(v)
			answers[k] = b
		}
		put("head_name", h.HeadName)
		put("members_count", len(h.Members))
		for _, k := range []string{"poverty_status", "dibao_class", "wubao", "pension", "medical_insurance", "income_per_capita"} {
			put(k, h.Attrs[k])
		}
		if err := survey.ValidateAnswers(answers); err != nil {
			t.Fatalf("household %s does not fit the survey form: %v", h.ID, err)
		}
	}
}

func TestBuild_Users(t *testing.T) {
	d := Build(1)
	codes := map[string]Place{}
	for _, p := range d.Places {
		codes[p.Code] = p
	}
	want := map[string]string{
		"admin": RoleAdmin, "zhen_supervisor": RoleSupervisor, "cun_supervisor": RoleSupervisor,
		"wangge_li": RoleFieldWorker, "wangge_zhao": RoleFieldWorker,
	}
	if len(d.Users) != len(want) {
		t.Fatalf("%d users", len(d.Users))
	}
	assigned := map[string]string{}
	for _, u := range d.Users {
		if want[u.Username] != u.Role {
			t.Errorf("user %s role %s", u.Username, u.Role)
		}
		if u.Password != DemoPassword || u.DisplayName == "" || len(u.PlaceCodes) == 0 {
			t.Errorf("user %+v", u)
		}
		for _, c := range u.PlaceCodes {
			p, ok := codes[c]
			if !ok {
				t.Errorf("user %s: unknown place %s", u.Username, c)
			}
			if u.Role == RoleFieldWorker {
				if p.Level != LevelGroup || p.ParentCode != VillageCode {
					t.Errorf("worker %s assigned %s (%s)", u.Username, p.Name, p.Level)
				}
				if prev, dup := assigned[c]; dup {
					t.Errorf("group %s assigned to %s and %s", c, prev, u.Username)
				}
				assigned[c] = u.Username
			}
		}
	}
	if len(assigned) != VillageGroupCount {
		t.Errorf("workers cover %d of %d groups", len(assigned), VillageGroupCount)
	}
	if u, _ := d.User("zhen_supervisor"); !slices.Equal(u.PlaceCodes, []string{TownshipCode}) {
		t.Errorf("zhen_supervisor places %v", u.PlaceCodes)
	}
	if u, _ := d.User("cun_supervisor"); !slices.Equal(u.PlaceCodes, []string{VillageCode}) {
		t.Errorf("cun_supervisor places %v", u.PlaceCodes)
	}
}

// checkSimpleRing fails unless r is closed, counter-clockwise, finite and
// without self-intersections.
func checkSimpleRing(t *testing.T, name string, r orb.Ring) {
	t.Helper()
	if len(r) < 4 || !r.Closed() {
		t.Fatalf("%s: ring not closed: %v", name, r)
	}
	if r.Orientation() != orb.CCW {
		t.Fatalf("%s: ring not counter-clockwise", name)
	}
	for _, p := range r {
		if math.IsNaN(p[0]) || math.IsNaN(p[1]) || p[0] < -180 || p[0] > 180 || p[1] < -90 || p[1] > 90 {
			t.Fatalf("%s: bad point %v", name, p)
		}
	}
	n := len(r) - 1 // segments
	for i := 0; i < n; i++ {
		if r[i] == r[i+1] {
			t.Fatalf("%s: repeated point %v", name, r[i])
		}
		for j := i + 1; j < n; j++ {
			adjacent := j == i+1 || (i == 0 && j == n-1)
			if adjacent {
				continue
			}
			if segmentsTouch(r[i], r[i+1], r[j], r[j+1]) {
				t.Fatalf("%s: segments %d and %d intersect", name, i, j)
			}
		}
	}
}

func cross(o, a, b orb.Point) float64 {
	return (a[0]-o[0])*(b[1]-o[1]) - (a[1]-o[1])*(b[0]-o[0])
}

func onSegment(p, q, r orb.Point) bool {
	return math.Min(p[0], r[0]) <= q[0] && q[0] <= math.Max(p[0], r[0]) &&
		math.Min(p[1], r[1]) <= q[1] && q[1] <= math.Max(p[1], r[1])
}

// segmentsTouch reports whether segments ab and cd share any point.
func segmentsTouch(a, b, c, d orb.Point) bool {
	d1, d2 := cross(c, d, a), cross(c, d, b)
	d3, d4 := cross(a, b, c), cross(a, b, d)
	if ((d1 > 0 && d2 < 0) || (d1 < 0 && d2 > 0)) && ((d3 > 0 && d4 < 0) || (d3 < 0 && d4 > 0)) {
		return true
	}
	return (d1 == 0 && onSegment(c, a, d)) || (d2 == 0 && onSegment(c, b, d)) ||
		(d3 == 0 && onSegment(a, c, b)) || (d4 == 0 && onSegment(a, d, b))
}

func TestSegmentsTouch(t *testing.T) {
	p := func(x, y float64) orb.Point { return orb.Point{x, y} }
	if !segmentsTouch(p(0, 0), p(2, 2), p(0, 2), p(2, 0)) {
		t.Error("crossing")
	}
	if !segmentsTouch(p(0, 0), p(2, 0), p(1, 0), p(1, 5)) {
		t.Error("T")
	}
	if segmentsTouch(p(0, 0), p(1, 0), p(0, 1), p(1, 1)) {
		t.Error("parallel")
	}
	bowtie := orb.Ring{p(0, 0), p(1, 1), p(1, 0), p(0, 1), p(0, 0)}
	if !segmentsTouch(bowtie[0], bowtie[1], bowtie[2], bowtie[3]) {
		t.Error("bowtie")
	}
}

func TestBuild_Places(t *testing.T) {
	for _, seed := range []int64{0, 1, 2, 3, 99, 12345} {
		d := Build(seed)
		seen := map[string]Place{}
		levels := map[string]int{}
		for i, p := range d.Places {
			if _, dup := seen[p.Code]; dup {
				t.Fatalf("place code %s repeated", p.Code)
			}
			if p.Name == "" {
				t.Fatalf("place %s has no name", p.Code)
			}
			levels[p.Level]++
			poly, ok := p.Boundary.(orb.Polygon)
			if !ok || len(poly) != 1 {
				t.Fatalf("place %s: boundary %T", p.Code, p.Boundary)
			}
			checkSimpleRing(t, p.Name, poly[0])
			if planar.Area(poly) <= 0 {
				t.Fatalf("%s: no area", p.Name)
			}
			if i == 0 {
				if p.Level != LevelCounty || p.ParentCode != "" {
					t.Fatalf("first place %+v", p)
				}
			} else {
				parent, ok := seen[p.ParentCode]
				if !ok {
					t.Fatalf("place %s comes before its parent %s", p.Code, p.ParentCode)
				}
				if !strings.HasPrefix(p.Code, parent.Code) {
					t.Errorf("code %s not under %s", p.Code, parent.Code)
				}
				pb, cb := parent.Boundary.Bound(), p.Boundary.Bound()
				if !pb.Contains(cb.Min) || !pb.Contains(cb.Max) {
					t.Fatalf("%s bbox not inside parent %s bbox", p.Name, parent.Name)
				}
				for _, pt := range poly[0] {
					if !planar.PolygonContains(parent.Boundary.(orb.Polygon), pt) {
						t.Fatalf("%s vertex %v outside parent %s", p.Name, pt, parent.Name)
					}
				}
			}
			seen[p.Code] = p
		}
		wantLevels := map[string]int{LevelCounty: 1, LevelTownship: 2, LevelVillage: 2, LevelGroup: 17}
		if !reflect.DeepEqual(levels, wantLevels) {
			t.Fatalf("levels %v", levels)
		}
		checkNoOverlap(t, d, seed)
	}
}

// checkNoOverlap samples points across the county: none may fall in two
// groups, two villages or two townships at once.
func checkNoOverlap(t *testing.T, d *Dataset, seed int64) {
	t.Helper()
	byLevel := map[string][]Place{}
	for _, p := range d.Places {
		byLevel[p.Level] = append(byLevel[p.Level], p)
	}
	b := d.Places[0].Boundary.Bound()
	const steps = 120
	inGroups := 0
	for i := 0; i < steps; i++ {
		for j := 0; j < steps; j++ {
			pt := orb.Point{
				b.Min[0] + (float64(i)+0.37)/steps*(b.Max[0]-b.Min[0]),
				b.Min[1] + (float64(j)+0.61)/steps*(b.Max[1]-b.Min[1]),
			}
			for _, level := range []string{LevelTownship, LevelVillage, LevelGroup} {
				n := 0
				for _, p := range byLevel[level] {
					if planar.PolygonContains(p.Boundary.(orb.Polygon), pt) {
						n++
					}
				}
				if n > 1 {
					t.Fatalf("seed %d: %v lies in %d places of level %s", seed, pt, n, level)
				}
				if level == LevelGroup && n == 1 {
					inGroups++
				}
			}
		}
	}
	if inGroups == 0 {
		t.Fatal("sampling missed every group")
	}
}

func TestBuild_HouseholdsInsideTheirGroup(t *testing.T) {
	for _, seed := range []int64{1, 2} {
		d := Build(seed)
		groups := map[string]orb.Polygon{}
		for _, p := range d.Places {
			if p.Level == LevelGroup {
				groups[p.Code] = p.Boundary.(orb.Polygon)
			}
		}
		for _, h := range d.Households {
			poly, ok := groups[h.PlaceCode]
			if !ok {
				t.Fatalf("household %s in non-group place %s", h.ID, h.PlaceCode)
			}
			pt := orb.Point{h.Lon, h.Lat}
			if !planar.PolygonContains(poly, pt) {
				t.Fatalf("household %s at %v outside its group %s", h.ID, pt, h.PlaceCode)
			}
			for code, other := range groups {
				if code != h.PlaceCode && planar.PolygonContains(other, pt) {
					t.Fatalf("household %s at %v also inside group %s", h.ID, pt, code)
				}
			}
		}
	}
}
