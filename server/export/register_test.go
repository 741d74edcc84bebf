package export_test

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/xuri/excelize/v2"
	"golang.org/x/text/encoding/simplifiedchinese"

	"fieldsync/server/demo"
	"fieldsync/server/export"
	"fieldsync/server/export/exporttest"
	"fieldsync/syncproto"
)

func placeCheck(codes ...string) func(string) (bool, string) {
	return func(c string) (bool, string) {
		for _, k := range codes {
			if k == c {
				return true, ""
			}
		}
		return false, "地点编码 " + c + " 不存在或不在您的管辖范围 (unknown place)"
	}
}

var regNow = time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)

func parse(t *testing.T, data []byte, codes ...string) *export.RegisterResult {
	t.Helper()
	res, err := export.ParseRegister(bytes.NewReader(data), export.RegisterOptions{Place: placeCheck(codes...), Now: regNow})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return res
}

func errorsByRow(res *export.RegisterResult) map[int][]string {
	out := map[int][]string{}
	for _, e := range res.Errors {
		out[e.Row] = append(out[e.Row], e.Column+": "+e.Message)
	}
	return out
}

var id1, id2, id3 = exporttest.IDCard(1), exporttest.IDCard(2), exporttest.IDCard(3)

func TestParseRegister_PersonRowsCSV(t *testing.T) {
	csv := export.BOM + "户编号,地点编码,姓名,与户主关系,出生年份,身份证号,贫困状态,低保类别,经度,纬度,电话\n" +
		"H1,G1,张三,户主,1960," + id1 + ",建档立卡户,A类,103.71,25.01,13800138000\n" +
		"H1,G1,李秀英,配偶,1962,,,,,,\n" +
		"H1,G1,张小明,子,1990," + id2 + ",,,,,\n" +
		"H2,G1,王五,户主,1970,,脱贫户,无,,,\n" +
		"H3,G1,赵六,子,1990,,,,,,\n" + // no head
		"H4,G9,钱七,户主,1950,,,,,,\n" + // unknown place
		"H5,G1,孙八,户主,1950,530102199001011235,,,,,\n" + // bad check digit
		"H6,G1,周九,户主,1950,5.30102E+17,,,,,\n" + // Excel number
		"H7,G1,吴十,户主,1880,,,,,,\n" + // birth year
		"H8,G1,郑一,户主,1950,,火星户,,,,\n" + // unknown status
		"H9,G1,,户主,1950,,,,,,\n" + // no name
		"H10,G1,冯二,户主,1950,,,,200,25,\n" + // bad lon
		"H11,G1,陈三,户主,1950,,,,,,\n" +
		"H11,G1,陈四,户主,1951,,,,,,\n" // two heads
	res := parse(t, []byte(csv), "G1")
	if res.Format != "csv" || !res.PersonRows || res.Rows != 14 {
		t.Fatalf("result: %+v", res)
	}
	errs := errorsByRow(res)
	for row, want := range map[int]string{6: "户主", 7: "unknown place", 8: "check digit", 9: "stored as a number", 10: "year out of range",
		11: "unknown value", 12: "name required", 13: "WGS84", 15: "two heads"} {
		if !strings.Contains(strings.Join(errs[row], "|"), want) {
			t.Errorf("row %d: want %q, got %v", row, want, errs[row])
		}
	}
	for _, row := range []int{2, 3, 4, 5} {
		if len(errs[row]) > 0 {
			t.Errorf("row %d should be fine: %v", row, errs[row])
		}
	}
	if len(res.Households) != 2 {
		t.Fatalf("valid households: %d", len(res.Households))
	}
	h := res.Households[0]
	var head string
	json.Unmarshal(h.Fields["head_name"], &head)
	var pov, dibao string
	json.Unmarshal(h.Fields["poverty_status"], &pov)
	json.Unmarshal(h.Fields["dibao_class"], &dibao)
	var loc syncproto.Point
	json.Unmarshal(h.Fields["location"], &loc)
	members := export.Members(h.Fields)
	if head != "张三" || pov != "registered_poor" || dibao != "A" || loc.Lon != 103.71 || len(members) != 3 || members[0].Name != "张三" ||
		members[2].IDCardNo != id2 {
		t.Errorf("household H1: %s %s %s %+v %+v", head, pov, dibao, loc, members)
	}
	if syncproto.CheckHouseholdFields(h.Fields) != nil || !syncproto.ValidID(h.ID) {
		t.Errorf("fields or id invalid: %s", h.ID)
	}
	// Stable ids: the same register gives the same ids.
	again := parse(t, []byte(csv), "G1")
	if again.Households[0].ID != h.ID || again.Households[1].ID != res.Households[1].ID {
		t.Error("ids differ between two parses of the same register")
	}
}

func TestParseRegister_HouseholdRowsGB18030AndTraditionalHeaders(t *testing.T) {
	text := "地點編碼\t戶主姓名\t身份證號\t五保\t養老保險\n" +
		"G1\t張三\t" + id1 + "\t是\t否\n" +
		"G1\t李四\t\t否\t是\n" +
		"G1\t張三\t" + id1 + "\t是\t否\n" // duplicate
	gb, err := simplifiedchinese.GB18030.NewEncoder().String(text)
	if err != nil {
		t.Fatal(err)
	}
	res := parse(t, []byte(gb), "G1")
	if res.PersonRows || res.Rows != 3 || len(res.Households) != 2 {
		t.Fatalf("result: %+v %v", res, res.Errors)
	}
	if !strings.Contains(strings.Join(errorsByRow(res)[4], ""), "duplicate household") {
		t.Errorf("duplicate row: %v", res.Errors)
	}
	var wubao, pension string
	json.Unmarshal(res.Households[0].Fields["wubao"], &wubao)
	json.Unmarshal(res.Households[0].Fields["pension"], &pension)
	if wubao != "yes" || pension != "no" {
		t.Errorf("wubao %q pension %q", wubao, pension)
	}
}

func TestParseRegister_MissingColumns(t *testing.T) {
	for _, csv := range []string{"姓名,电话\n张三,1\n", "户编号,地点编码,与户主关系\nH1,G1,户主\n", ""} {
		_, err := export.ParseRegister(strings.NewReader(csv), export.RegisterOptions{Place: placeCheck("G1")})
		if !errors.Is(err, export.ErrBadRequest) {
			t.Errorf("%q: %v", csv, err)
		}
	}
}

func TestParseRegister_TooManyRows(t *testing.T) {
	var b strings.Builder
	b.WriteString("地点编码,户主姓名\n")
	for i := 0; i < 30; i++ {
		fmt.Fprintf(&b, "G1,户主%d\n", i)
	}
	_, err := export.ParseRegister(strings.NewReader(b.String()), export.RegisterOptions{Place: placeCheck("G1"), MaxRows: 20})
	if err == nil || !strings.Contains(err.Error(), "more than 20 rows") {
		t.Errorf("want a row limit error, got %v", err)
	}
}

// xlsxCell is a cell of a hand-built sheet: a value, or a formula with or
// without a cached value.
type xlsxCell struct {
	v, f string
}

// handXLSX builds a minimal XLSX (inline strings) so that formula cells
// can carry a cached value or none, as Excel and other tools write them.
func handXLSX(t *testing.T, rows [][]xlsxCell) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	put := func(name, body string) {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(body))
	}
	put("[Content_Types].xml", `<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>`)
	put("_rels/.rels", `<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>`)
	put("xl/workbook.xml", `<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="花名册" sheetId="1" r:id="rId1"/></sheets></workbook>`)
	put("xl/_rels/workbook.xml.rels", `<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>`)
	var sb strings.Builder
	sb.WriteString(`<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>`)
	for i, r := range rows {
		fmt.Fprintf(&sb, `<row r="%d">`, i+1)
		for j, c := range r {
			ref, _ := excelize.CoordinatesToCellName(j+1, i+1)
			switch {
			case c.f != "" && c.v != "":
				fmt.Fprintf(&sb, `<c r="%s" t="str"><f>%s</f><v>%s</v></c>`, ref, c.f, c.v)
			case c.f != "":
				fmt.Fprintf(&sb, `<c r="%s"><f>%s</f></c>`, ref, c.f)
			default:
				fmt.Fprintf(&sb, `<c r="%s" t="inlineStr"><is><t>%s</t></is></c>`, ref, c.v)
			}
		}
		sb.WriteString(`</row>`)
	}
	sb.WriteString(`</sheetData></worksheet>`)
	put("xl/worksheets/sheet1.xml", sb.String())
	zw.Close()
	return buf.Bytes()
}

func TestParseRegister_XLSXFormulasCachedOrRejected(t *testing.T) {
	v := func(s string) xlsxCell { return xlsxCell{v: s} }
	data := handXLSX(t, [][]xlsxCell{
		{v("户编号"), v("地点编码"), v("姓名"), v("与户主关系"), v("出生年份")},
		{v("H1"), v("G1"), v("张三"), v("户主"), {f: "2024-64", v: "1960"}}, // cached: used
		{v("H2"), v("G1"), v("李四"), v("户主"), {f: "2024-60"}},            // no cached value: rejected
		{v("H3"), v("G1"), v("王五"), v("户主"), v("1980")},
	})
	res := parse(t, data, "G1")
	if res.Format != "xlsx" || res.Sheet != "花名册" || res.FormulaCells != 1 {
		t.Fatalf("result: %+v", res)
	}
	errs := errorsByRow(res)
	if !strings.Contains(strings.Join(errs[3], ""), "formula without a cached value") || len(errs) != 1 {
		t.Fatalf("errors: %v", res.Errors)
	}
	if len(res.Households) != 2 {
		t.Fatalf("households: %d", len(res.Households))
	}
	ms := export.Members(res.Households[0].Fields)
	if ms[0].BirthYear != 1960 {
		t.Errorf("cached formula value not used: %+v", ms)
	}
}

func TestParseRegister_ExcelizeWorkbookImportsIntoStore(t *testing.T) {
	env := exporttest.Demo(t)
	g := demo.VillageCode + "001"
	x := excelize.NewFile()
	x.SetSheetRow("Sheet1", "A1", &[]any{"户编号", "地点编码", "姓名", "与户主关系", "出生年份", "身份证号", "医疗保险"})
	x.SetSheetRow("Sheet1", "A2", &[]any{"新户1", g, "新户主", "户主", 1971, id3, "是"})
	x.SetSheetRow("Sheet1", "A3", &[]any{"新户1", g, "新成员", "女", 1999, "", ""})
	var buf bytes.Buffer
	if _, err := x.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	check := func(code string) (bool, string) {
		if _, err := env.Store.Place(bg, code); err != nil {
			return false, "unknown place"
		}
		return true, ""
	}
	res, err := export.ParseRegister(bytes.NewReader(buf.Bytes()), export.RegisterOptions{Place: check})
	if err != nil || len(res.Errors) != 0 || len(res.Households) != 1 {
		t.Fatalf("parse: %v %+v", err, res)
	}
	before := env.Count(t, `SELECT count(*) FROM households`)
	for i := 0; i < 2; i++ { // twice: the second import updates, not duplicates
		if err := env.Store.ImportHouseholds(bg, res.Households, 0); err != nil {
			t.Fatal(err)
		}
	}
	if after := env.Count(t, `SELECT count(*) FROM households`); after != before+1 {
		t.Fatalf("households %d -> %d", before, after)
	}
	h, _, err := env.Store.Household(bg, res.Households[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(export.Members(h.Fields)) != 2 || string(h.Fields["medical_insurance"]) != `"yes"` || string(h.Fields["id_card_no"]) != `"`+id3+`"` {
		t.Errorf("stored household: %v", h.Fields)
	}
}

func FuzzParseRegister(f *testing.F) {
	f.Add([]byte("户编号,地点编码,姓名,与户主关系,出生年份,身份证号\nH1,G1,张三,户主,1960," + id1 + "\nH1,G1,李四,配偶,1961,\n"))
	f.Add([]byte("地点编码\t户主姓名\nG1\t王五\n"))
	f.Add([]byte("PK\x03\x04garbage"))
	f.Add([]byte("\xEF\xBB\xBFplace_code,head_name,lon,lat\nG1,x,1e400,NaN\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := export.ParseRegister(bytes.NewReader(data), export.RegisterOptions{Place: placeCheck("G1"), MaxRows: 200, Now: regNow})
		if err != nil {
			return
		}
		for _, h := range res.Households {
			if !syncproto.ValidID(h.ID) || h.PlaceCode != "G1" {
				t.Fatalf("bad household %+v", h)
			}
			if perr := syncproto.CheckHouseholdFields(h.Fields); perr != nil {
				t.Fatalf("invalid fields passed: %v", perr)
			}
		}
	})
}
