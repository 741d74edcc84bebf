package main

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"fieldsync/syncproto"
)

// workload makes a device's realistic field work from its local copy:
// visits with valid answers for the forms it holds (household survey most
// often, as in the programmes of DOMAIN.md), and household edits.
type workload struct {
	rng        *rand.Rand
	forms      map[string]syncproto.FormDef // newest version of each
	formIDs    []string
	households []syncproto.Household
	start      time.Time // the working day began here
	n          int       // visits made so far
	// photoBytes > 0 gives every required evidence slot a generated JPEG
	// of that size (see photo.go); 0 makes visits without evidence.
	photoBytes int
	// photoForms, if set, limits photos to visits of these forms.
	photoForms map[string]bool
	// maxPhotos > 0 bounds the photos of the day; photos counts them.
	maxPhotos, photos int
}

// setPhotos makes the visits of the given forms (nil: every form) carry
// photos of size bytes in their required slots, at most max of them in
// all (0: no bound).
func (w *workload) setPhotos(size int, forms []string, max int) {
	w.photoBytes, w.maxPhotos, w.photoForms = size, max, nil
	if forms != nil {
		w.photoForms = map[string]bool{}
		for _, f := range forms {
			w.photoForms[f] = true
		}
	}
}

// formWeights says how often each shipped form is used.
var formWeights = map[string]int{
	"household_survey":          55,
	"house_retrofit_inspection": 20,
	"water_cellar_progress":     15,
	"dropout_followup":          10,
}

func newWorkload(rng *rand.Rand, forms []syncproto.FormDef, hs []syncproto.Household) *workload {
	w := &workload{rng: rng, forms: map[string]syncproto.FormDef{}, households: hs,
		start: time.Now().Add(-9 * time.Hour).Truncate(time.Minute)}
	for _, f := range forms {
		if cur, ok := w.forms[f.ID]; !ok || f.Version > cur.Version {
			w.forms[f.ID] = f
		}
	}
	for id := range w.forms {
		w.formIDs = append(w.formIDs, id)
	}
	slices.Sort(w.formIDs)
	return w
}

func (w *workload) pickForm() (syncproto.FormDef, bool) {
	total := 0
	for _, id := range w.formIDs {
		total += weight(id)
	}
	if total == 0 {
		return syncproto.FormDef{}, false
	}
	r := w.rng.IntN(total)
	for _, id := range w.formIDs {
		if r < weight(id) {
			return w.forms[id], true
		}
		r -= weight(id)
	}
	return w.forms[w.formIDs[len(w.formIDs)-1]], true
}

func weight(id string) int {
	if n, ok := formWeights[id]; ok {
		return n
	}
	return 5
}

// household picks a household of the local copy.
func (w *workload) household() (syncproto.Household, bool) {
	if len(w.households) == 0 {
		return syncproto.Household{}, false
	}
	return w.households[w.rng.IntN(len(w.households))], true
}

// visit makes the next visit of the day: a household, a form, valid
// answers, a GPS point near the household, and (with photoBytes) evidence.
func (w *workload) visit() (syncproto.Visit, []Photo, error) {
	h, ok := w.household()
	if !ok {
		return syncproto.Visit{}, nil, fmt.Errorf("no households on the device")
	}
	f, ok := w.pickForm()
	if !ok {
		return syncproto.Visit{}, nil, fmt.Errorf("no forms on the device")
	}
	return w.visitWith(h, f)
}

// visitWith makes a visit of form f to household h.
func (w *workload) visitWith(h syncproto.Household, f syncproto.FormDef) (syncproto.Visit, []Photo, error) {
	at := w.start.Add(time.Duration(w.n)*7*time.Minute + time.Duration(w.rng.IntN(300))*time.Second)
	if now := time.Now(); at.After(now) {
		at = now
	}
	at = at.Truncate(time.Millisecond)
	w.n++
	lon, lat := householdPoint(h)
	// Within about 20 m of the door.
	lon += (w.rng.Float64() - 0.5) * 0.0004
	lat += (w.rng.Float64() - 0.5) * 0.0004
	acc := 3 + w.rng.Float64()*12
	if f.MaxAccuracyM > 0 {
		acc = min(acc, f.MaxAccuracyM*0.8)
	}
	v := syncproto.Visit{
		HouseholdID: h.ID,
		FormID:      f.ID,
		FormVersion: f.Version,
		Answers:     w.answers(f, h, at, lon, lat),
		Point:       &syncproto.Point{Lon: round6(lon), Lat: round6(lat)},
		AccuracyM:   math.Round(acc*10) / 10,
		DeviceTime:  at,
	}
	if err := f.ValidateAnswers(v.Answers); err != nil {
		return v, nil, fmt.Errorf("generated answers for %s: %w", f.ID, err)
	}
	var photos []Photo
	if w.photoBytes > 0 && (w.photoForms == nil || w.photoForms[f.ID]) {
		for _, s := range f.Slots {
			if s.MinCount < 1 || !s.Accepts("image/jpeg") {
				continue
			}
			for k := 0; k < s.MinCount; k++ {
				if w.maxPhotos > 0 && w.photos >= w.maxPhotos {
					break
				}
				w.photos++
				p, err := NewPhoto(w.photoBytes, lat, lon, at.Add(-time.Duration(w.rng.IntN(600))*time.Second), w.rng.Uint64())
				if err != nil {
					return v, nil, err
				}
				p.Slot = s.Name
				photos = append(photos, p)
				v.Evidence = append(v.Evidence, p.Ref())
			}
		}
	}
	return v, photos, nil
}

func round6(f float64) float64 { return math.Round(f*1e6) / 1e6 }

// householdPoint is the household's location, or a point in the demo
// county when it has none.
func householdPoint(h syncproto.Household) (lon, lat float64) {
	var p syncproto.Point
	if raw, ok := h.Fields[syncproto.FieldLocation]; ok && json.Unmarshal(raw, &p) == nil && p.Valid() {
		return p.Lon, p.Lat
	}
	return 103.74, 25.01
}

func householdString(h syncproto.Household, field string) string {
	var s string
	if raw, ok := h.Fields[field]; ok {
		_ = json.Unmarshal(raw, &s)
	}
	return s
}

func memberCount(h syncproto.Household) int {
	n := 0
	for k := range h.Fields {
		if strings.HasPrefix(k, syncproto.MemberPrefix) {
			n++
		}
	}
	return n
}

// Phrases for text answers, in the register of the programme reports.
var (
	surnames   = []string{"王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "马", "朱", "罗", "何"}
	givenNames = []string{"建国", "秀英", "文华", "丽华", "志强", "海燕", "国平", "桂芳", "永华", "小龙", "春梅", "德明", "红梅", "正清"}
	notes      = []string{
		"房屋已加固,饮水正常",
		"户主外出务工,配偶在家照看老人",
		"家中有慢病患者,已签约家庭医生",
		"已领取产业扶持鸡苗50只,长势良好",
		"住房安全,无需改造",
		"子女在县城读书,享受教育资助",
		"医保卡已办理,养老保险已续缴",
		"低保材料已收齐,待村民代表大会评议",
		"水窖已蓄水,可保障旱季用水",
	}
	failureReasons = []string{"圈梁未按要求浇筑", "屋面漏水,需重新铺瓦", "墙体裂缝未处理", "门窗未安装到位"}
	schools        = []string{"青山镇中心小学", "青山镇中学", "示范县第一中学", "龙潭乡中心小学"}
	relations      = []string{"孙子", "孙女", "儿媳", "女婿"}
)

func (w *workload) pick(list []string) string { return list[w.rng.IntN(len(list))] }

func (w *workload) personName() string { return w.pick(surnames) + w.pick(givenNames) }

// idCardNo makes a well-formed 18-character resident ID number (region,
// birth date, sequence, ISO 7064 check character).
func (w *workload) idCardNo() string {
	birth := time.Date(1950+w.rng.IntN(50), time.Month(1+w.rng.IntN(12)), 1+w.rng.IntN(28), 0, 0, 0, 0, time.UTC)
	body := "530100" + birth.Format("20060102") + fmt.Sprintf("%03d", w.rng.IntN(1000))
	weights := []int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}
	sum := 0
	for i, c := range body {
		sum += int(c-'0') * weights[i]
	}
	return body + string("10X98765432"[sum%11])
}

func jsonValue(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// answers fills the form's fields with plausible values; optional fields
// are answered about two times in three.
func (w *workload) answers(f syncproto.FormDef, h syncproto.Household, at time.Time, lon, lat float64) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	fail := false
	for _, fd := range f.Fields {
		if !fd.Required && w.rng.IntN(3) == 0 {
			continue
		}
		var v any
		switch fd.Type {
		case syncproto.FieldText:
			v = w.text(fd, h)
		case syncproto.FieldInteger:
			v = w.integer(fd, h)
		case syncproto.FieldDecimal:
			v = w.decimal(fd)
		case syncproto.FieldDate:
			d := at
			switch fd.Name {
			case "rework_due":
				d = at.AddDate(0, 1, 0)
			case "due_date":
				d = at.AddDate(0, 0, 10+w.rng.IntN(60))
			}
			v = d.Format(time.DateOnly)
		case syncproto.FieldSelectOne:
			v = w.selectOne(fd, h, &fail)
		case syncproto.FieldSelectMany:
			v = w.selectMany(fd)
		case syncproto.FieldGeopoint:
			v = map[string]float64{"lon": round6(lon), "lat": round6(lat), "acc": math.Round((3+w.rng.Float64()*10)*10) / 10}
		case syncproto.FieldPhoto, syncproto.FieldDocument, syncproto.FieldSignature:
			v = fmt.Sprintf("%016x%016x%016x%016x", w.rng.Uint64(), w.rng.Uint64(), w.rng.Uint64(), w.rng.Uint64())
		default:
			continue
		}
		out[fd.Name] = jsonValue(v)
	}
	if !fail {
		// A passed inspection has no failure reason or rework date.
		delete(out, "failure_reason")
		delete(out, "rework_due")
	}
	return out
}

func (w *workload) text(fd syncproto.Field, h syncproto.Household) string {
	var s string
	switch fd.Name {
	case "head_name":
		if s = householdString(h, syncproto.FieldHeadName); s == "" {
			s = w.personName()
		}
	case "student_name", "guardian_name":
		s = w.personName()
	case "id_card_no":
		s = w.idCardNo()
	case "school":
		s = w.pick(schools)
	case "site_name":
		s = fmt.Sprintf("%s%d号水窖", householdString(h, "address"), 1+w.rng.IntN(43))
	case "failure_reason":
		s = w.pick(failureReasons)
	default:
		s = w.pick(notes)
	}
	return fitRunes(s, fd.Min, fd.Max)
}

// fitRunes trims or pads s to the field's length bounds.
func fitRunes(s string, lo, hi *float64) string {
	if hi != nil {
		if n := int(*hi); utf8.RuneCountInString(s) > n {
			s = string([]rune(s)[:n])
		}
	}
	if lo != nil {
		for utf8.RuneCountInString(s) < int(*lo) {
			s += "。"
		}
	}
	return s
}

func bounds(fd syncproto.Field, lo, hi float64) (float64, float64) {
	if fd.Min != nil {
		lo = *fd.Min
	}
	if fd.Max != nil {
		hi = *fd.Max
	}
	if hi < lo {
		hi = lo
	}
	return lo, hi
}

func (w *workload) integer(fd syncproto.Field, h syncproto.Household) int64 {
	lo, hi := bounds(fd, 0, 100)
	var n float64
	switch fd.Name {
	case "members_count":
		n = float64(memberCount(h))
	case "age":
		n = 7 + float64(w.rng.IntN(10))
	case "households_served":
		n = 1 + float64(w.rng.IntN(12))
	default:
		n = lo + float64(w.rng.IntN(int(min(hi-lo, 1000))+1))
	}
	return int64(math.Max(math.Ceil(lo), math.Min(math.Floor(hi), n)))
}

func (w *workload) decimal(fd syncproto.Field) float64 {
	switch fd.Name {
	case "income_per_capita":
		return math.Round((3000+w.rng.Float64()*12000)*10) / 10
	case "capacity_m3":
		return 24
	}
	lo, hi := bounds(fd, 0, 1000)
	return math.Round((lo+w.rng.Float64()*(hi-lo))*100) / 100
}

// selectOne prefers the household's own value for fields the household
// carries (poverty status, dibao class, ...); a failed inspection sets
// *fail.
func (w *workload) selectOne(fd syncproto.Field, h syncproto.Household, fail *bool) string {
	if s := householdString(h, fd.Name); s != "" && fd.HasChoice(s) {
		return s
	}
	v := fd.Choices[w.rng.IntN(len(fd.Choices))].Value
	switch fd.Name {
	case "inspection_result":
		// Of 282 inspections in the reports, 42 failed.
		v = "pass"
		if w.rng.IntN(282) < 42 && fd.HasChoice("fail") {
			v = "fail"
		}
		*fail = v == "fail"
	case "medical_insurance", "pension":
		if fd.HasChoice("yes") && w.rng.IntN(10) > 0 {
			v = "yes"
		}
	}
	return v
}

func (w *workload) selectMany(fd syncproto.Field) []string {
	lo, hi := bounds(fd, 0, 2)
	hi = min(hi, float64(len(fd.Choices)))
	n := int(lo) + w.rng.IntN(int(hi-lo)+1)
	idx := w.rng.Perm(len(fd.Choices))[:n]
	slices.Sort(idx)
	out := make([]string, 0, n)
	for _, i := range idx {
		out = append(out, fd.Choices[i].Value)
	}
	return out
}

// edit makes a household edit: a phone number, a note, an insurance
// enrolment, or a newborn member.
func (w *workload) edit() (string, map[string]json.RawMessage, bool) {
	h, ok := w.household()
	if !ok {
		return "", nil, false
	}
	fields := map[string]json.RawMessage{}
	switch w.rng.IntN(4) {
	case 0:
		fields["phone"] = jsonValue("1" + strconv.Itoa(3+w.rng.IntN(7)) + fmt.Sprintf("%09d", w.rng.IntN(1_000_000_000)))
	case 1:
		fields["notes"] = jsonValue(w.pick(notes))
	case 2:
		fields["medical_insurance"] = jsonValue("yes")
		fields["pension"] = jsonValue("yes")
	default:
		id := syncproto.NewID(time.Now())
		fields[syncproto.MemberPrefix+id] = jsonValue(syncproto.Member{Name: w.pick(surnames) + w.pick(givenNames), Relation: w.pick(relations), BirthYear: time.Now().Year()})
	}
	return h.ID, fields, true
}

// record records n visits and e household edits on the device, offline.
// A device whose places hold no households records nothing.
func (d *device) record(n, e int) error {
	if len(d.work.households) == 0 {
		return nil
	}
	for i := 0; i < n; i++ {
		v, photos, err := d.work.visit()
		if err != nil {
			return fmt.Errorf("device %d: %w", d.idx, err)
		}
		// The camera's files become the visit's evidence references, as
		// the app does it: PrepareEvidence, then RecordVisit.
		refs, done, err := d.preparePhotos(photos)
		if err != nil {
			return fmt.Errorf("device %d: %w", d.idx, err)
		}
		v.Evidence = refs
		id, err := d.c.RecordVisit(v)
		done()
		if err != nil {
			return fmt.Errorf("device %d: record visit: %w", d.idx, err)
		}
		v.ID = id
		d.visits = append(d.visits, v)
		d.photos = append(d.photos, refs...)
	}
	for i := 0; i < e; i++ {
		id, fields, ok := d.work.edit()
		if !ok {
			break
		}
		if err := d.c.UpdateHousehold(id, fields); err != nil {
			return fmt.Errorf("device %d: edit household: %w", d.idx, err)
		}
		d.edits++
	}
	return nil
}
