package export

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/paulmach/orb"
	"github.com/paulmach/orb/geojson"
	"github.com/xuri/excelize/v2"

	"fieldsync/server/store"
	"fieldsync/syncproto"
)

// BOM is the UTF-8 byte-order mark CSV exports start with.
const BOM = "\xEF\xBB\xBF"

// --- CSV ---

// csvSafe keeps a spreadsheet from running a text cell as a formula
// (CSV injection): text starting with = + - @ or a control character
// gets a leading apostrophe.
func csvSafe(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + s
	}
	return s
}

func (x *writer) csvRecord(cw *csv.Writer, cs []cell, rec []string) error {
	rec = rec[:0]
	for _, c := range cs {
		s := c.text(x.o.Location)
		if c.k == kString {
			s = csvSafe(s)
		}
		rec = append(rec, s)
	}
	return cw.Write(rec)
}

func (x *writer) csv(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	if _, err := bw.WriteString(BOM); err != nil {
		return err
	}
	cw := csv.NewWriter(bw)
	cw.UseCRLF = true // what Excel writes and expects
	var rec []string
	switch x.r.What {
	case WhatHouseholds:
		if err := cw.Write(headers(householdColumns, x.en)); err != nil {
			return err
		}
		err := x.st.ExportHouseholds(x.ctx, x.f, func(h *store.ExportHousehold) error {
			x.row()
			return x.csvRecord(cw, x.householdRow(h), rec)
		})
		if err != nil {
			return err
		}
	default:
		forms, err := x.st.ConsoleExportForms(x.ctx, x.f)
		if err != nil {
			return err
		}
		answers := answerColumns(forms, distinctForms(forms) > 1)
		if err := cw.Write(append(headers(visitColumns, x.en), headers(answers, x.en)...)); err != nil {
			return err
		}
		err = x.st.ExportVisits(x.ctx, x.f, func(v *store.ExportVisit) error {
			x.row()
			cs, err := x.visitRow(v, answers)
			if err != nil {
				return err
			}
			return x.csvRecord(cw, cs, rec)
		})
		if err != nil {
			return err
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return err
	}
	return bw.Flush()
}

func headers(cs []column, en bool) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.header(en)
	}
	return out
}

func distinctForms(forms []syncproto.FormDef) int {
	seen := map[string]bool{}
	for _, f := range forms {
		seen[f.ID] = true
	}
	return len(seen)
}

// --- GeoJSON ---

func (x *writer) geojson(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	if _, err := bw.WriteString(`{"type":"FeatureCollection","features":[` + "\n"); err != nil {
		return err
	}
	first := true
	emit := func(f *geojson.Feature) error {
		b, err := f.MarshalJSON()
		if err != nil {
			return err
		}
		if !first {
			if _, err := bw.WriteString(",\n"); err != nil {
				return err
			}
		}
		first = false
		_, err = bw.Write(b)
		return err
	}
	var err error
	switch x.r.What {
	case WhatHouseholds:
		err = x.st.ExportHouseholds(x.ctx, x.f, func(h *store.ExportHousehold) error {
			x.row()
			f := &geojson.Feature{Type: "Feature", ID: h.ID, Properties: geojson.Properties{}}
			if h.HasPoint {
				f.Geometry = orb.Point{h.Lon, h.Lat}
			}
			cs := x.householdRow(h)
			for i, c := range householdColumns {
				if c.key == "members" || c.key == "lon" || c.key == "lat" || c.key == "other_fields" {
					continue
				}
				f.Properties[c.key] = cs[i].json(x.o.Location)
			}
			var ms []map[string]any
			for _, m := range Members(h.Fields) {
				e := map[string]any{"id": m.ID, "name": m.Name, "relation": m.Relation}
				if m.BirthYear > 0 {
					e["birth_year"] = m.BirthYear
				}
				if m.IDCardNo != "" {
					e["id_card_no"] = x.maskedID(m.IDCardNo)
				}
				ms = append(ms, e)
			}
			f.Properties["members"] = ms
			other := map[string]json.RawMessage{}
			for k, v := range h.Fields {
				if !householdKnown[k] && !strings.HasPrefix(k, syncproto.MemberPrefix) {
					if x.mask {
						v = maskRaw(k, v)
					}
					other[k] = v
				}
			}
			if len(other) > 0 {
				f.Properties["other_fields"] = other
			}
			return emit(f)
		})
	default:
		forms, ferr := x.st.Forms(x.ctx, false)
		if ferr != nil {
			return ferr
		}
		titles := map[string]string{}
		for _, fd := range forms {
			titles[fd.ID] = fd.Title
			if x.en && fd.TitleEn != "" {
				titles[fd.ID] = fd.TitleEn
			}
		}
		err = x.st.ExportVisits(x.ctx, x.f, func(v *store.ExportVisit) error {
			x.row()
			f := &geojson.Feature{Type: "Feature", ID: v.ID, Properties: geojson.Properties{}}
			if v.HasPoint {
				f.Geometry = orb.Point{v.Lon, v.Lat}
			}
			cs := x.visitFixed(v)
			for i, c := range visitColumns {
				if c.key == "lon" || c.key == "lat" {
					continue
				}
				f.Properties[c.key] = cs[i].json(x.o.Location)
			}
			f.Properties["review_state"] = v.State
			f.Properties["review_state_label"] = StateLabel(v.State, x.en)
			f.Properties["form_title"] = titles[v.FormID]
			f.Properties["flags"] = append([]string{}, v.Flags...)
			var ans map[string]json.RawMessage
			if err := json.Unmarshal(v.Answers, &ans); err != nil {
				return fmt.Errorf("export: visit %s answers: %w", v.ID, err)
			}
			if x.mask {
				for k, a := range ans {
					ans[k] = maskRaw(k, a)
				}
			}
			f.Properties["answers"] = ans
			return emit(f)
		})
	}
	if err != nil {
		return err
	}
	if _, err := bw.WriteString("\n]}\n"); err != nil {
		return err
	}
	return bw.Flush()
}

// --- XLSX ---

// MaxSheetRows is the most rows an XLSX sheet holds (Excel's limit); a
// longer export continues on a new sheet.
const MaxSheetRows = 1_048_576

type xlsxOut struct {
	f                 *excelize.File
	header, date, tim int
	names             map[string]bool
	sheets            int
}

func newXLSX() (*xlsxOut, error) {
	f := excelize.NewFile()
	o := &xlsxOut{f: f, names: map[string]bool{}}
	var err error
	if o.header, err = f.NewStyle(&excelize.Style{Font: &excelize.Font{Bold: true},
		Fill: excelize.Fill{Type: "pattern", Pattern: 1, Color: []string{"#E8EEF7"}}}); err != nil {
		return nil, err
	}
	dateFmt, timeFmt := "yyyy-mm-dd", "yyyy-mm-dd hh:mm:ss"
	if o.date, err = f.NewStyle(&excelize.Style{CustomNumFmt: &dateFmt}); err != nil {
		return nil, err
	}
	if o.tim, err = f.NewStyle(&excelize.Style{CustomNumFmt: &timeFmt}); err != nil {
		return nil, err
	}
	return o, nil
}

// sheetName makes a valid, unique sheet name from a title.
func (o *xlsxOut) sheetName(title string) string {
	title = strings.Map(func(r rune) rune {
		if strings.ContainsRune(`[]:*?/\`, r) || r < ' ' {
			return '_'
		}
		return r
	}, strings.TrimSpace(title))
	title = strings.Trim(title, "'")
	if title == "" {
		title = "Sheet"
	}
	cut := func(s string, n int) string {
		for utf8.RuneCountInString(s) > n {
			_, size := utf8.DecodeLastRuneInString(s)
			s = s[:len(s)-size]
		}
		return s
	}
	name := cut(title, 31)
	for i := 2; o.names[strings.ToLower(name)]; i++ {
		suffix := fmt.Sprintf(" (%d)", i)
		name = cut(title, 31-len(suffix)) + suffix
	}
	o.names[strings.ToLower(name)] = true
	return name
}

// sheet is one sheet being streamed.
type sheet struct {
	o     *xlsxOut
	sw    *excelize.StreamWriter
	title string
	cols  []column
	en    bool
	row   int
}

func (o *xlsxOut) newSheet(title string, cols []column, en bool) (*sheet, error) {
	name := o.sheetName(title)
	if o.sheets == 0 {
		if err := o.f.SetSheetName("Sheet1", name); err != nil {
			return nil, err
		}
	} else if _, err := o.f.NewSheet(name); err != nil {
		return nil, err
	}
	o.sheets++
	sw, err := o.f.NewStreamWriter(name)
	if err != nil {
		return nil, err
	}
	s := &sheet{o: o, sw: sw, title: title, cols: cols, en: en}
	for i, c := range cols {
		w := 14.0
		switch c.k {
		case kTime:
			w = 19
		case kInt, kFloat:
			w = 11
		}
		if c.key == "visit_id" || c.key == "household_id" || c.key == "member_id" {
			w = 28
		}
		if err := sw.SetColWidth(i+1, i+1, w); err != nil {
			return nil, err
		}
	}
	if err := sw.SetPanes(&excelize.Panes{Freeze: true, YSplit: 1, TopLeftCell: "A2", ActivePane: "bottomLeft"}); err != nil {
		return nil, err
	}
	hdr := make([]any, len(cols))
	for i, c := range cols {
		hdr[i] = excelize.Cell{StyleID: o.header, Value: c.header(en)}
	}
	if err := sw.SetRow("A1", hdr); err != nil {
		return nil, err
	}
	s.row = 1
	return s, nil
}

func (s *sheet) write(x *writer, cs []cell, vals []any) (*sheet, error) {
	if s.row >= MaxSheetRows {
		if err := s.sw.Flush(); err != nil {
			return nil, err
		}
		next, err := s.o.newSheet(s.title, s.cols, s.en)
		if err != nil {
			return nil, err
		}
		s = next
	}
	s.row++
	vals = vals[:0]
	for _, c := range cs {
		switch {
		case c.null:
			vals = append(vals, nil)
		case c.k == kInt:
			vals = append(vals, c.i)
		case c.k == kFloat:
			vals = append(vals, c.f)
		case c.k == kDate:
			vals = append(vals, excelize.Cell{StyleID: s.o.date, Value: c.t})
		case c.k == kTime:
			// Excel times have no zone: write the local wall clock.
			t := c.t.In(x.o.Location)
			vals = append(vals, excelize.Cell{StyleID: s.o.tim, Value: t})
		default:
			vals = append(vals, c.s)
		}
	}
	cellName, err := excelize.CoordinatesToCellName(1, s.row)
	if err != nil {
		return nil, err
	}
	return s, s.sw.SetRow(cellName, vals)
}

func (x *writer) xlsx(w io.Writer) error {
	o, err := newXLSX()
	if err != nil {
		return err
	}
	defer o.f.Close()
	var vals []any
	sheetTitle := func(zh, en string) string {
		if x.en {
			return en
		}
		return zh
	}
	switch x.r.What {
	case WhatHouseholds:
		s, err := o.newSheet(sheetTitle("户", "Households"), householdColumns, x.en)
		if err != nil {
			return err
		}
		err = x.st.ExportHouseholds(x.ctx, x.f, func(h *store.ExportHousehold) error {
			x.row()
			s, err = s.write(x, x.householdRow(h), vals)
			return err
		})
		if err != nil {
			return err
		}
		if err := s.sw.Flush(); err != nil {
			return err
		}
		// Members on a sheet of their own: a second pass.
		m, err := o.newSheet(sheetTitle("家庭成员", "Members"), memberColumns, x.en)
		if err != nil {
			return err
		}
		err = x.st.ExportHouseholds(x.ctx, x.f, func(h *store.ExportHousehold) error {
			for _, r := range x.memberRows(h) {
				if m, err = m.write(x, r, vals); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if err := m.sw.Flush(); err != nil {
			return err
		}
	default:
		forms, err := x.st.ConsoleExportForms(x.ctx, x.f)
		if err != nil {
			return err
		}
		byForm := map[string][]syncproto.FormDef{}
		for _, f := range forms {
			byForm[f.ID] = append(byForm[f.ID], f)
		}
		var cur *sheet
		curForm := ""
		var answers []column
		err = x.st.ExportVisits(x.ctx, x.f, func(v *store.ExportVisit) error {
			x.row()
			if cur == nil || v.FormID != curForm {
				if cur != nil {
					if err := cur.sw.Flush(); err != nil {
						return err
					}
				}
				fs := byForm[v.FormID]
				title := v.FormID
				if len(fs) > 0 {
					title = fs[len(fs)-1].Title
					if x.en && fs[len(fs)-1].TitleEn != "" {
						title = fs[len(fs)-1].TitleEn
					}
				}
				answers = answerColumns(fs, false)
				var err error
				if cur, err = o.newSheet(title, append(append([]column{}, visitColumns...), answers...), x.en); err != nil {
					return err
				}
				curForm = v.FormID
			}
			cs, err := x.visitRow(v, answers)
			if err != nil {
				return err
			}
			cur, err = cur.write(x, cs, vals)
			return err
		})
		if err != nil {
			return err
		}
		if cur != nil {
			if err := cur.sw.Flush(); err != nil {
				return err
			}
		} else {
			// No visits: one sheet with the headers, so the file opens.
			s, err := o.newSheet(sheetTitle("走访", "Visits"), visitColumns, x.en)
			if err != nil {
				return err
			}
			if err := s.sw.Flush(); err != nil {
				return err
			}
		}
	}
	_, err = o.f.WriteTo(w)
	return err
}
