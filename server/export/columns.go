package export

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"fieldsync/server/domain"
	"fieldsync/server/store"
	"fieldsync/syncproto"
)

// kind is a cell's type.
type kind uint8

const (
	kString kind = iota
	kInt
	kFloat
	kDate // a calendar date (shown without time)
	kTime // a moment (shown in the export's zone)
)

// cell is one typed value; null cells are empty.
type cell struct {
	k    kind
	null bool
	s    string
	i    int64
	f    float64
	t    time.Time
}

func str(s string) cell {
	if s == "" {
		return cell{null: true}
	}
	return cell{k: kString, s: s}
}
func num(i int64) cell   { return cell{k: kInt, i: i} }
func flt(f float64) cell { return cell{k: kFloat, f: f} }
func null() cell         { return cell{null: true} }
func when(t time.Time) cell {
	if t.IsZero() {
		return null()
	}
	return cell{k: kTime, t: t}
}

// text formats a cell for CSV.
func (c cell) text(loc *time.Location) string {
	if c.null {
		return ""
	}
	switch c.k {
	case kInt:
		return strconv.FormatInt(c.i, 10)
	case kFloat:
		return strconv.FormatFloat(c.f, 'f', -1, 64)
	case kDate:
		return c.t.Format("2006-01-02")
	case kTime:
		return c.t.In(loc).Format("2006-01-02 15:04:05")
	}
	return c.s
}

// json gives a cell's GeoJSON property value.
func (c cell) json(loc *time.Location) any {
	if c.null {
		return nil
	}
	switch c.k {
	case kInt:
		return c.i
	case kFloat:
		return c.f
	case kDate:
		return c.t.Format("2006-01-02")
	case kTime:
		return c.t.In(loc).Format(time.RFC3339)
	}
	return c.s
}

// column is one output column.
type column struct {
	key    string // GeoJSON property key and stable identifier
	zh, en string // headers
	k      kind
	// answer columns: the form field
	field *syncproto.Field
	form  string
}

func (c column) header(en bool) string {
	if en {
		return c.en
	}
	return c.zh
}

var visitColumns = []column{
	{key: "visit_id", zh: "走访ID", en: "Visit ID"},
	{key: "household_id", zh: "户ID", en: "Household ID"},
	{key: "head_name", zh: "户主", en: "Household head"},
	{key: "place_code", zh: "地点编码", en: "Place code"},
	{key: "place_name", zh: "地点", en: "Place"},
	{key: "form_id", zh: "表单", en: "Form"},
	{key: "form_version", zh: "表单版本", en: "Form version", k: kInt},
	{key: "worker", zh: "走访人", en: "Worker"},
	{key: "device_id", zh: "设备", en: "Device"},
	{key: "device_time", zh: "走访时间", en: "Visit time", k: kTime},
	{key: "server_time", zh: "同步时间", en: "Synced at", k: kTime},
	{key: "review_state", zh: "审核状态", en: "Review state"},
	{key: "review_step", zh: "审核步骤", en: "Review step", k: kInt},
	{key: "lon", zh: "经度", en: "Longitude", k: kFloat},
	{key: "lat", zh: "纬度", en: "Latitude", k: kFloat},
	{key: "accuracy_m", zh: "定位精度(米)", en: "GPS accuracy (m)", k: kFloat},
	{key: "gps_reason", zh: "无定位原因", en: "Reason for no GPS fix"},
	{key: "evidence", zh: "佐证材料数", en: "Evidence files", k: kInt},
	{key: "evidence_present", zh: "已上传", en: "Uploaded", k: kInt},
	{key: "flags", zh: "疑点标记", en: "Flags"},
	{key: "corrects_visit_id", zh: "更正的走访", en: "Corrects visit"},
}

var stateLabels = map[string][2]string{
	domain.StateSubmitted:   {"待审核", "Awaiting review"},
	domain.StateApproved:    {"已通过", "Approved"},
	domain.StateNeedsRework: {"退回整改", "Needs rework"},
	domain.StateRejected:    {"已驳回", "Rejected"},
}

// StateLabel names a review state.
func StateLabel(state string, en bool) string {
	l, ok := stateLabels[state]
	if !ok {
		return state
	}
	if en {
		return l[1]
	}
	return l[0]
}

func (x *writer) visitFixed(v *store.ExportVisit) []cell {
	cs := []cell{
		str(v.ID), str(v.HouseholdID), str(v.HeadName), str(v.PlaceCode), str(v.PlaceName), str(v.FormID), num(int64(v.FormVersion)),
		str(v.UserName), str(v.DeviceID), when(v.DeviceTime), when(v.ServerTime), str(StateLabel(v.State, x.en)), num(int64(v.ReviewStep)),
		null(), null(), null(), null(), num(int64(v.Evidence)), num(int64(v.EvidencePresent)), str(strings.Join(v.Flags, ",")), str(v.CorrectsVisitID),
	}
	if v.HasPoint {
		cs[13], cs[14] = flt(v.Lon), flt(v.Lat)
	}
	if v.AccuracyM > 0 {
		cs[15] = flt(v.AccuracyM)
	}
	if v.GPSReason != "" {
		cs[16] = str(v.GPSReason)
	}
	return cs
}

// answerColumns lays out the answer columns of the given form versions:
// fields in order of first appearance, merged across versions of a form.
// With prefix, headers carry the form's title (several forms in one
// sheet).
func answerColumns(forms []syncproto.FormDef, prefix bool) []column {
	var out []column
	seen := map[string]bool{}
	for fi := range forms {
		f := &forms[fi]
		for i := range f.Fields {
			fd := &f.Fields[i]
			key := f.ID + "." + fd.Name
			if seen[key] {
				continue
			}
			seen[key] = true
			c := column{key: fd.Name, zh: fd.Label, en: fd.LabelEn, field: fd, form: f.ID, k: fieldKind(fd.Type)}
			if c.en == "" {
				c.en = fd.Name
			}
			if prefix {
				c.key = key
				c.zh = f.Title + ":" + c.zh
				title := f.TitleEn
				if title == "" {
					title = f.ID
				}
				c.en = title + ": " + c.en
			}
			out = append(out, c)
		}
	}
	return out
}

func fieldKind(t syncproto.FieldType) kind {
	switch t {
	case syncproto.FieldInteger:
		return kInt
	case syncproto.FieldDecimal:
		return kFloat
	case syncproto.FieldDate:
		return kDate
	}
	return kString
}

// choiceLabel names a choice value of a field.
func choiceLabel(fd *syncproto.Field, v string, en bool) string {
	for _, c := range fd.Choices {
		if c.Value == v {
			if en && c.LabelEn != "" {
				return c.LabelEn
			}
			if c.Label != "" {
				return c.Label
			}
		}
	}
	return v
}

// answerCell converts one answer to a typed cell.
func (x *writer) answerCell(fd *syncproto.Field, raw json.RawMessage) cell {
	if syncproto.IsNull(raw) {
		return null()
	}
	switch fd.Type {
	case syncproto.FieldInteger:
		var n json.Number
		if json.Unmarshal(raw, &n) == nil {
			if i, err := n.Int64(); err == nil {
				return num(i)
			}
			if f, err := n.Float64(); err == nil {
				return flt(f)
			}
		}
	case syncproto.FieldDecimal:
		var f float64
		if json.Unmarshal(raw, &f) == nil {
			return flt(f)
		}
	case syncproto.FieldDate:
		var s string
		if json.Unmarshal(raw, &s) == nil {
			if t, err := time.Parse("2006-01-02", s); err == nil {
				return cell{k: kDate, t: t}
			}
			return str(s)
		}
	case syncproto.FieldSelectOne:
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return str(choiceLabel(fd, s, x.en))
		}
	case syncproto.FieldSelectMany:
		var vs []string
		if json.Unmarshal(raw, &vs) == nil {
			ls := make([]string, len(vs))
			for i, v := range vs {
				ls[i] = choiceLabel(fd, v, x.en)
			}
			sep := "、"
			if x.en {
				sep = "; "
			}
			return str(strings.Join(ls, sep))
		}
	case syncproto.FieldGeopoint:
		var p struct {
			Lon, Lat float64
			Acc      *float64
		}
		if json.Unmarshal(raw, &p) == nil {
			s := strconv.FormatFloat(p.Lon, 'f', 6, 64) + "," + strconv.FormatFloat(p.Lat, 'f', 6, 64)
			if p.Acc != nil {
				s += fmt.Sprintf(" ±%gm", *p.Acc)
			}
			return str(s)
		}
	default: // text, evidence hashes
		var s string
		if json.Unmarshal(raw, &s) == nil {
			if x.mask {
				if isIDField(fd.Name) {
					s = MaskID(s)
				} else {
					s = MaskText(s)
				}
			}
			return str(s)
		}
	}
	// Not what the type says (an old version, a hand edit): show the JSON.
	if x.mask {
		raw = maskRaw(fd.Name, raw)
	}
	return str(string(raw))
}

// visitRow builds a full row: fixed columns, then the answer columns.
func (x *writer) visitRow(v *store.ExportVisit, answers []column) ([]cell, error) {
	cs := x.visitFixed(v)
	var ans map[string]json.RawMessage
	if len(v.Answers) > 0 {
		if err := json.Unmarshal(v.Answers, &ans); err != nil {
			return nil, fmt.Errorf("export: visit %s answers: %w", v.ID, err)
		}
	}
	for _, c := range answers {
		if c.form != v.FormID {
			cs = append(cs, null())
			continue
		}
		cs = append(cs, x.answerCell(c.field, ans[c.field.Name]))
	}
	return cs, nil
}

// --- households ---

var householdColumns = []column{
	{key: "household_id", zh: "户ID", en: "Household ID"},
	{key: "place_code", zh: "地点编码", en: "Place code"},
	{key: "place_name", zh: "地点", en: "Place"},
	{key: "head_name", zh: "户主", en: "Household head"},
	{key: "poverty_status", zh: "贫困状态", en: "Poverty status"},
	{key: "dibao_class", zh: "低保类别", en: "Dibao class"},
	{key: "wubao", zh: "五保", en: "Five guarantees"},
	{key: "pension", zh: "养老保险", en: "Pension insurance"},
	{key: "medical_insurance", zh: "医疗保险", en: "Medical insurance"},
	{key: "income_per_capita", zh: "人均纯收入(元)", en: "Income per capita (yuan)", k: kFloat},
	{key: "address", zh: "地址", en: "Address"},
	{key: "phone", zh: "电话", en: "Phone"},
	{key: "id_card_no", zh: "户主身份证号", en: "Head's ID card no."},
	{key: "members_count", zh: "人口数", en: "Members", k: kInt},
	{key: "members", zh: "家庭成员", en: "Members (name, relation, birth year, ID)"},
	{key: "lon", zh: "经度", en: "Longitude", k: kFloat},
	{key: "lat", zh: "纬度", en: "Latitude", k: kFloat},
	{key: "visits", zh: "走访次数", en: "Visits", k: kInt},
	{key: "last_visit", zh: "最近走访", en: "Last visit", k: kTime},
	{key: "version", zh: "版本", en: "Version", k: kInt},
	{key: "updated_at", zh: "更新时间", en: "Updated at", k: kTime},
	{key: "other_fields", zh: "其他字段", en: "Other fields (JSON)"},
}

var memberColumns = []column{
	{key: "household_id", zh: "户ID", en: "Household ID"},
	{key: "place_code", zh: "地点编码", en: "Place code"},
	{key: "head_name", zh: "户主", en: "Household head"},
	{key: "member_id", zh: "成员ID", en: "Member ID"},
	{key: "name", zh: "姓名", en: "Name"},
	{key: "relation", zh: "与户主关系", en: "Relation to head"},
	{key: "birth_year", zh: "出生年份", en: "Birth year", k: kInt},
	{key: "id_card_no", zh: "身份证号", en: "ID card no."},
}

// known household fields with columns of their own.
var householdKnown = map[string]bool{
	"head_name": true, "poverty_status": true, "dibao_class": true, "wubao": true, "pension": true, "medical_insurance": true,
	"income_per_capita": true, "address": true, "phone": true, "id_card_no": true, "location": true,
}

// Member is a household member with its id.
type Member struct {
	ID string
	syncproto.Member
}

// Members lists a household's members, the head first, then by birth
// year and name.
func Members(fields map[string]json.RawMessage) []Member {
	var out []Member
	for k, v := range fields {
		id, ok := strings.CutPrefix(k, syncproto.MemberPrefix)
		if !ok || syncproto.IsNull(v) {
			continue
		}
		var m syncproto.Member
		if json.Unmarshal(v, &m) == nil {
			out = append(out, Member{ID: id, Member: m})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		hi, hj := isHead(out[i].Relation), isHead(out[j].Relation)
		if hi != hj {
			return hi
		}
		if out[i].BirthYear != out[j].BirthYear {
			return out[i].BirthYear < out[j].BirthYear
		}
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// headTraditional is 户主 in Traditional script ("\u6236主"), which
// registers typed on Traditional-script systems carry: accepted as input,
// never written.
const headTraditional = "\u6236主"

func isHead(rel string) bool { return rel == "户主" || rel == headTraditional || rel == "head" }

func fieldString(fields map[string]json.RawMessage, k string) string {
	var s string
	if err := json.Unmarshal(fields[k], &s); err == nil {
		return s
	}
	if syncproto.IsNull(fields[k]) {
		return ""
	}
	return string(fields[k])
}

// householdChoice labels a household field value through the
// household_survey form's choices of the same name.
func (x *writer) householdChoice(field, v string) string {
	for i := range x.survey.Fields {
		if x.survey.Fields[i].Name == field {
			return choiceLabel(&x.survey.Fields[i], v, x.en)
		}
	}
	return v
}

func (x *writer) maskedID(s string) string {
	if x.mask {
		return MaskID(s)
	}
	return s
}

func (x *writer) householdRow(h *store.ExportHousehold) []cell {
	fs := h.Fields
	members := Members(fs)
	var ms []string
	for _, m := range members {
		parts := []string{m.Name}
		if m.Relation != "" {
			parts = append(parts, m.Relation)
		}
		if m.BirthYear > 0 {
			parts = append(parts, strconv.Itoa(m.BirthYear))
		}
		if m.IDCardNo != "" {
			parts = append(parts, x.maskedID(m.IDCardNo))
		}
		ms = append(ms, strings.Join(parts, ","))
	}
	other := map[string]json.RawMessage{}
	for k, v := range fs {
		if householdKnown[k] || strings.HasPrefix(k, syncproto.MemberPrefix) {
			continue
		}
		if x.mask {
			v = maskRaw(k, v)
		}
		other[k] = v
	}
	otherCell := null()
	if len(other) > 0 {
		b, _ := json.Marshal(other)
		otherCell = str(string(b))
	}
	income := null()
	var inc float64
	if json.Unmarshal(fs["income_per_capita"], &inc) == nil && !syncproto.IsNull(fs["income_per_capita"]) {
		income = flt(inc)
	}
	address, phone := fieldString(fs, "address"), fieldString(fs, "phone")
	if x.mask {
		address, phone = MaskText(address), MaskText(phone)
	}
	sep := "；"
	if x.en {
		sep = "; "
	}
	cs := []cell{
		str(h.ID), str(h.PlaceCode), str(h.PlaceName), str(fieldString(fs, "head_name")),
		str(x.householdChoice("poverty_status", fieldString(fs, "poverty_status"))),
		str(x.householdChoice("dibao_class", fieldString(fs, "dibao_class"))),
		str(x.householdChoice("wubao", fieldString(fs, "wubao"))),
		str(x.householdChoice("pension", fieldString(fs, "pension"))),
		str(x.householdChoice("medical_insurance", fieldString(fs, "medical_insurance"))),
		income, str(address), str(phone), str(x.maskedID(fieldString(fs, "id_card_no"))),
		num(int64(len(members))), str(strings.Join(ms, sep)),
		null(), null(), num(int64(h.Visits)), when(h.LastVisit), num(h.Version), when(h.UpdatedAt), otherCell,
	}
	if h.HasPoint {
		cs[15], cs[16] = flt(h.Lon), flt(h.Lat)
	}
	return cs
}

func (x *writer) memberRows(h *store.ExportHousehold) [][]cell {
	var out [][]cell
	head := fieldString(h.Fields, "head_name")
	for _, m := range Members(h.Fields) {
		by := null()
		if m.BirthYear > 0 {
			by = num(int64(m.BirthYear))
		}
		out = append(out, []cell{str(h.ID), str(h.PlaceCode), str(head), str(m.ID), str(m.Name), str(m.Relation), by, str(x.maskedID(m.IDCardNo))})
	}
	return out
}
