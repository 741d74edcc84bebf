package export

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/xuri/excelize/v2"
	"golang.org/x/text/encoding/simplifiedchinese"

	"fieldsync/syncproto"
)

// Register import limits.
const (
	// MaxRegisterRows bounds the data rows of one register file.
	MaxRegisterRows = 50_000
	// MaxRegisterBytes bounds the file itself.
	MaxRegisterBytes = 20 << 20
	maxColumns       = 100
	maxCellBytes     = 2000
	maxUnzipped      = 256 << 20 // all parts of an XLSX, unpacked
	maxSheetXML      = 200 << 20 // the sheet's XML, unpacked
)

// RowError is one problem in a register, by spreadsheet row (1 is the
// header row) and column header.
type RowError struct {
	Row     int    `json:"row"`
	Column  string `json:"column,omitempty"`
	Message string `json:"message"`
}

// RegisterResult is a parsed register: the households it describes and
// every problem found. Households holds only households without errors.
type RegisterResult struct {
	Format       string                `json:"format"` // csv or xlsx
	Sheet        string                `json:"sheet,omitempty"`
	Rows         int                   `json:"rows"`          // data rows read
	PersonRows   bool                  `json:"person_rows"`   // one row per person (else per household)
	FormulaCells int                   `json:"formula_cells"` // formula cells whose cached values were used
	Households   []syncproto.Household `json:"-"`
	Invalid      int                   `json:"invalid_households"`
	Errors       []RowError            `json:"errors"`
	// FirstRow maps a household id to its first row, for reports.
	FirstRow map[string]int `json:"-"`
}

// RegisterOptions tune ParseRegister.
type RegisterOptions struct {
	// Place reports whether a place code exists and the importing user may
	// write there; "" means it may. Required.
	Place func(code string) (ok bool, reason string)
	// MaxRows defaults to MaxRegisterRows.
	MaxRows int
	// Now is used to bound birth years (default time.Now).
	Now time.Time
}

// Column names a register may use, after normalisation (lower case,
// spaces and brackets dropped, traditional characters folded to
// simplified).
var registerAliases = map[string][]string{
	"household_key":     {"household_id", "household", "户编号", "户号", "户id", "户代码", "家庭编号"},
	"place_code":        {"place_code", "place", "地点编码", "村民小组编码", "小组编码", "网格编码", "地点代码"},
	"name":              {"name", "member_name", "姓名", "成员姓名"},
	"head_name":         {"head_name", "户主姓名", "户主"},
	"relation":          {"relation", "与户主关系", "关系"},
	"birth_year":        {"birth_year", "出生年份", "出生年", "出生日期"},
	"id_card_no":        {"id_card_no", "身份证号", "身份证号码", "公民身份号码"},
	"poverty_status":    {"poverty_status", "贫困状态", "贫困户属性", "户类型"},
	"dibao_class":       {"dibao_class", "低保类别", "低保"},
	"wubao":             {"wubao", "五保", "五保户"},
	"pension":           {"pension", "养老保险"},
	"medical_insurance": {"medical_insurance", "医疗保险", "医保"},
	"income_per_capita": {"income_per_capita", "人均纯收入", "人均收入"},
	"address":           {"address", "地址", "住址"},
	"phone":             {"phone", "电话", "联系电话", "手机"},
	"lon":               {"lon", "lng", "longitude", "经度"},
	"lat":               {"lat", "latitude", "纬度"},
	"notes":             {"notes", "备注"},
}

// Column labels for reports.
var registerLabels = map[string]string{
	"household_key": "户编号", "place_code": "地点编码", "name": "姓名", "head_name": "户主姓名", "relation": "与户主关系",
	"birth_year": "出生年份", "id_card_no": "身份证号", "poverty_status": "贫困状态", "dibao_class": "低保类别", "wubao": "五保",
	"pension": "养老保险", "medical_insurance": "医疗保险", "income_per_capita": "人均纯收入", "address": "地址", "phone": "电话",
	"lon": "经度", "lat": "纬度", "notes": "备注",
}

// t2s folds the traditional characters registers use in headers and
// values to simplified ones.
var t2s = strings.NewReplacer(
	"戶", "户", "編", "编", "號", "号", "點", "点", "組", "组", "與", "与", "關", "关", "係", "系", "證", "证", "貧", "贫",
	"態", "态", "類", "类", "別", "别", "養", "养", "險", "险", "醫", "医", "療", "疗", "電", "电", "話", "话", "聯", "联",
	"繫", "系", "經", "经", "緯", "纬", "備", "备", "註", "注", "網", "网", "碼", "码", "檔", "档", "脫", "脱", "監", "监",
	"測", "测", "邊", "边", "緣", "缘", "無", "无", "數", "数", "屬", "属", "純", "纯", "兒", "儿", "孫", "孙", "媽", "妈",
	"親", "亲", "婦", "妇", "員", "员", "會", "会", "層", "层", "齡", "龄", "歲", "岁",
)

var headerJunk = strings.NewReplacer(" ", "", "\u3000", "", "(", "", ")", "", "（", "", "）", "", "*", "", "_", "_", "\ufeff", "")

func normHeader(s string) string {
	return strings.ToLower(t2s.Replace(headerJunk.Replace(strings.TrimSpace(s))))
}

// ParseRegister reads a household register from XLSX (the first sheet) or
// CSV (UTF-8, with or without a BOM, or GB18030 as Excel saves it in
// China). The first row names the columns. A register with a relation
// column has one row per person, grouped into households by the household
// key column and headed by the row whose relation is 户主; without it,
// each row is a household. Formulas are never evaluated: their cached
// values are used, and a formula without one is an error.
//
// Household ids are stable: a key that is a ULID or UUID is used as is,
// other keys (and households without a key) get a UUID derived from the
// place and the key, so importing the same register twice updates the
// same households.
func ParseRegister(r io.Reader, opts RegisterOptions) (*RegisterResult, error) {
	if opts.Place == nil {
		return nil, errors.New("register: Place check required")
	}
	if opts.MaxRows <= 0 {
		opts.MaxRows = MaxRegisterRows
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	data, err := io.ReadAll(io.LimitReader(r, MaxRegisterBytes+1))
	if err != nil {
		return nil, fmt.Errorf("register: read: %w", err)
	}
	if len(data) > MaxRegisterBytes {
		return nil, fmt.Errorf("%w: file larger than %d MB", ErrBadRequest, MaxRegisterBytes>>20)
	}
	res := &RegisterResult{FirstRow: map[string]int{}, Errors: []RowError{}}
	var rows [][]string
	var rowNums []int
	if bytes.HasPrefix(data, []byte("PK\x03\x04")) {
		res.Format = "xlsx"
		rows, rowNums, err = readXLSX(data, opts.MaxRows, res)
	} else {
		res.Format = "csv"
		rows, rowNums, err = readCSV(data, opts.MaxRows)
	}
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%w: the file is empty", ErrBadRequest)
	}
	p := &registerParser{opts: opts, res: res, col: map[string]int{}}
	if err := p.header(rows[0]); err != nil {
		return nil, err
	}
	for i := 1; i < len(rows); i++ {
		p.row(rowNums[i], rows[i])
	}
	p.finish()
	sort.SliceStable(res.Errors, func(i, j int) bool { return res.Errors[i].Row < res.Errors[j].Row })
	return res, nil
}

// --- reading ---

func readCSV(data []byte, maxRows int) ([][]string, []int, error) {
	data = bytes.TrimPrefix(data, []byte(BOM))
	if !utf8.Valid(data) {
		dec, err := simplifiedchinese.GB18030.NewDecoder().Bytes(data)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: the CSV is neither UTF-8 nor GB18030", ErrBadRequest)
		}
		data = dec
	}
	first, _, _ := bytes.Cut(data, []byte("\n"))
	cr := csv.NewReader(bytes.NewReader(data))
	if bytes.Count(first, []byte("\t")) > bytes.Count(first, []byte(",")) {
		cr.Comma = '\t'
	} else if bytes.Count(first, []byte(";")) > bytes.Count(first, []byte(",")) {
		cr.Comma = ';'
	}
	cr.FieldsPerRecord = -1
	cr.LazyQuotes = true
	cr.ReuseRecord = false
	var rows [][]string
	var nums []int
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%w: CSV: %v", ErrBadRequest, err)
		}
		line, _ := cr.FieldPos(0)
		if len(rows) > maxRows {
			return nil, nil, fmt.Errorf("%w: more than %d rows; split the register", ErrBadRequest, maxRows)
		}
		rows = append(rows, rec)
		nums = append(nums, line)
	}
	return rows, nums, nil
}

func readXLSX(data []byte, maxRows int, res *RegisterResult) ([][]string, []int, error) {
	formulas, cached, sheetName, err := scanFormulas(data)
	if err != nil {
		return nil, nil, err
	}
	res.FormulaCells = cached
	f, err := excelize.OpenReader(bytes.NewReader(data), excelize.Options{UnzipSizeLimit: maxUnzipped, UnzipXMLSizeLimit: 16 << 20})
	if err != nil {
		return nil, nil, fmt.Errorf("%w: not a readable XLSX file: %v", ErrBadRequest, err)
	}
	defer f.Close()
	sheets := f.GetSheetList()
	if len(sheets) == 0 {
		return nil, nil, fmt.Errorf("%w: the workbook has no sheet", ErrBadRequest)
	}
	if sheetName == "" {
		sheetName = sheets[0]
	}
	res.Sheet = sheetName
	it, err := f.Rows(sheetName)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: sheet %s: %v", ErrBadRequest, sheetName, err)
	}
	defer it.Close()
	var rows [][]string
	var nums []int
	n := 0
	for it.Next() {
		n++
		cols, err := it.Columns()
		if err != nil {
			return nil, nil, fmt.Errorf("%w: row %d: %v", ErrBadRequest, n, err)
		}
		if len(rows) > maxRows {
			return nil, nil, fmt.Errorf("%w: more than %d rows; split the register", ErrBadRequest, maxRows)
		}
		if bad, ok := formulas[n]; ok {
			res.Errors = append(res.Errors, RowError{Row: n, Column: bad,
				Message: "公式单元格没有缓存的计算结果:请在 Excel 中打开并保存后再导入,或把公式换成数值 (formula without a cached value)"})
			cols = nil // the row is reported, not used
			if len(rows) == 0 {
				return nil, nil, fmt.Errorf("%w: the header row has a formula without a value", ErrBadRequest)
			}
			rows = append(rows, []string{"\x00formula"})
			nums = append(nums, n)
			continue
		}
		rows = append(rows, cols)
		nums = append(nums, n)
	}
	if err := it.Error(); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	return rows, nums, nil
}

// scanFormulas reads the first sheet's XML (bounded) and returns the rows
// holding a formula cell without a cached value (row -> cell), the number
// of formula cells with one, and the sheet's name.
func scanFormulas(data []byte) (map[int]string, int, string, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, 0, "", fmt.Errorf("%w: not a readable XLSX file: %v", ErrBadRequest, err)
	}
	var total uint64
	files := map[string]*zip.File{}
	for _, f := range zr.File {
		total += f.UncompressedSize64
		files[f.Name] = f
	}
	if total > maxUnzipped {
		return nil, 0, "", fmt.Errorf("%w: the XLSX unpacks to more than %d MB", ErrBadRequest, maxUnzipped>>20)
	}
	readXML := func(name string, v any) error {
		f := files[name]
		if f == nil {
			return fmt.Errorf("%s missing", name)
		}
		rc, err := f.Open()
		if err != nil {
			return err
		}
		defer rc.Close()
		return xml.NewDecoder(io.LimitReader(rc, 16<<20)).Decode(v)
	}
	var wb struct {
		Sheets []struct {
			Name string `xml:"name,attr"`
			RID  string `xml:"http://schemas.openxmlformats.org/officeDocument/2006/relationships id,attr"`
		} `xml:"sheets>sheet"`
	}
	if err := readXML("xl/workbook.xml", &wb); err != nil || len(wb.Sheets) == 0 {
		return nil, 0, "", fmt.Errorf("%w: XLSX without a workbook sheet list", ErrBadRequest)
	}
	var rels struct {
		Rels []struct {
			ID     string `xml:"Id,attr"`
			Target string `xml:"Target,attr"`
		} `xml:"Relationship"`
	}
	if err := readXML("xl/_rels/workbook.xml.rels", &rels); err != nil {
		return nil, 0, "", fmt.Errorf("%w: XLSX without workbook relationships", ErrBadRequest)
	}
	target := ""
	for _, r := range rels.Rels {
		if r.ID == wb.Sheets[0].RID {
			target = r.Target
		}
	}
	if strings.HasPrefix(target, "/") {
		target = strings.TrimPrefix(target, "/")
	} else {
		target = path.Join("xl", target)
	}
	sf := files[target]
	if sf == nil {
		return nil, 0, "", fmt.Errorf("%w: first sheet %q not found in the XLSX", ErrBadRequest, target)
	}
	rc, err := sf.Open()
	if err != nil {
		return nil, 0, "", fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	defer rc.Close()
	dec := xml.NewDecoder(io.LimitReader(rc, maxSheetXML))
	missing := map[int]string{}
	cached := 0
	var cellRef string
	var inCell, hasF, hasV bool
	row := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, 0, "", fmt.Errorf("%w: sheet XML: %v", ErrBadRequest, err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			switch t.Name.Local {
			case "row":
				row++
				for _, a := range t.Attr {
					if a.Name.Local == "r" {
						if n, err := strconv.Atoi(a.Value); err == nil {
							row = n
						}
					}
				}
			case "c":
				inCell, hasF, hasV, cellRef = true, false, false, ""
				for _, a := range t.Attr {
					if a.Name.Local == "r" {
						cellRef = a.Value
					}
				}
			case "f":
				hasF = inCell
			case "v":
				if inCell {
					var v string
					if err := dec.DecodeElement(&v, &t); err == nil && v != "" {
						hasV = true
					}
				}
			}
		case xml.EndElement:
			if t.Name.Local == "c" && inCell {
				if hasF && hasV {
					cached++
				} else if hasF {
					if _, ok := missing[row]; !ok {
						missing[row] = cellRef
					}
				}
				inCell = false
			}
		}
	}
	return missing, cached, wb.Sheets[0].Name, nil
}

// --- parsing ---

type registerParser struct {
	opts RegisterOptions
	res  *RegisterResult
	col  map[string]int // canonical -> index
	hdr  []string
	// households by key, in first-seen order
	order []string
	hh    map[string]*regHousehold
}

type regHousehold struct {
	key, place string
	rows       []int
	head       *regPerson
	people     []*regPerson
	attrs      map[string]string // canonical column -> value (first non-empty)
	attrRow    map[string]int
	lon, lat   string
	bad        bool
}

type regPerson struct {
	row       int
	name, rel string
	birth     int
	idCard    string
}

func (p *registerParser) errf(row int, col, format string, args ...any) {
	label := registerLabels[col]
	if i, ok := p.col[col]; ok && i < len(p.hdr) {
		label = strings.TrimSpace(p.hdr[i])
	}
	p.res.Errors = append(p.res.Errors, RowError{Row: row, Column: label, Message: fmt.Sprintf(format, args...)})
}

func (p *registerParser) header(h []string) error {
	if len(h) > maxColumns {
		return fmt.Errorf("%w: more than %d columns", ErrBadRequest, maxColumns)
	}
	p.hdr = h
	lookup := map[string]string{}
	for canon, aliases := range registerAliases {
		for _, a := range aliases {
			lookup[normHeader(a)] = canon
		}
	}
	var unknown []string
	for i, raw := range h {
		n := normHeader(raw)
		if n == "" {
			continue
		}
		canon, ok := lookup[n]
		if !ok {
			unknown = append(unknown, raw)
			continue
		}
		if _, dup := p.col[canon]; dup {
			return fmt.Errorf("%w: column %q appears twice", ErrBadRequest, raw)
		}
		p.col[canon] = i
	}
	_, hasRel := p.col["relation"]
	_, hasName := p.col["name"]
	_, hasHead := p.col["head_name"]
	_, hasKey := p.col["household_key"]
	var missing []string
	if _, ok := p.col["place_code"]; !ok {
		missing = append(missing, "地点编码 (place_code)")
	}
	switch {
	case hasRel:
		p.res.PersonRows = true
		if !hasName {
			missing = append(missing, "姓名 (name)")
		}
		if !hasKey {
			missing = append(missing, "户编号 (household_id)")
		}
	case !hasName && !hasHead:
		missing = append(missing, "户主姓名 (head_name)")
	}
	if len(missing) > 0 {
		msg := "missing column(s): " + strings.Join(missing, ", ")
		if len(unknown) > 0 {
			msg += "; unknown column(s): " + strings.Join(unknown, ", ")
		}
		return fmt.Errorf("%w: %s", ErrBadRequest, msg)
	}
	p.hh = map[string]*regHousehold{}
	return nil
}

func (p *registerParser) get(rec []string, col string) string {
	i, ok := p.col[col]
	if !ok || i >= len(rec) {
		return ""
	}
	return strings.TrimSpace(rec[i])
}

var spaces = regexp.MustCompile(`\s+`)

func (p *registerParser) row(n int, rec []string) {
	if len(rec) == 1 && rec[0] == "\x00formula" {
		p.res.Rows++
		return // already reported
	}
	empty := true
	for _, v := range rec {
		if strings.TrimSpace(v) != "" {
			empty = false
			break
		}
	}
	if empty {
		return
	}
	p.res.Rows++
	for i, v := range rec {
		if len(v) > maxCellBytes {
			name := ""
			if i < len(p.hdr) {
				name = p.hdr[i]
			}
			p.res.Errors = append(p.res.Errors, RowError{Row: n, Column: name, Message: fmt.Sprintf("单元格超过 %d 字节 (cell too long)", maxCellBytes)})
			return
		}
	}
	place := p.get(rec, "place_code")
	if place == "" {
		p.errf(n, "place_code", "地点编码为空 (place code required)")
		return
	}
	if ok, reason := p.opts.Place(place); !ok {
		p.errf(n, "place_code", "%s", reason)
		return
	}
	name := spaces.ReplaceAllString(p.get(rec, "name"), "")
	if !p.res.PersonRows && name == "" {
		name = spaces.ReplaceAllString(p.get(rec, "head_name"), "")
	}
	if name == "" {
		col := "name"
		if _, ok := p.col["name"]; !ok {
			col = "head_name"
		}
		p.errf(n, col, "姓名为空 (name required)")
		return
	}
	if utf8.RuneCountInString(name) > 32 {
		p.errf(n, "name", "姓名超过 32 个字 (name longer than 32 characters)")
		return
	}
	person := &regPerson{row: n, name: name, rel: t2s.Replace(p.get(rec, "relation"))}
	ok := true
	if id := strings.ToUpper(strings.ReplaceAll(p.get(rec, "id_card_no"), " ", "")); id != "" {
		if msg := checkIDCard(id); msg != "" {
			p.errf(n, "id_card_no", "%s", msg)
			ok = false
		}
		person.idCard = id
	}
	if by := p.get(rec, "birth_year"); by != "" {
		y, msg := parseBirthYear(by, p.opts.Now.Year())
		if msg != "" {
			p.errf(n, "birth_year", "%s", msg)
			ok = false
		}
		person.birth = y
	} else if len(person.idCard) == 18 {
		person.birth, _ = strconv.Atoi(person.idCard[6:10])
	}
	key := p.get(rec, "household_key")
	if !p.res.PersonRows {
		person.rel = "户主"
		if key == "" {
			key = "\x00" + name + "\x00" + person.idCard
		}
	} else if key == "" {
		p.errf(n, "household_key", "户编号为空:按人填写的花名册需要户编号把成员归到同一户 (household key required)")
		return
	}
	hk := place + "\x00" + key
	h := p.hh[hk]
	if h == nil {
		h = &regHousehold{key: key, place: place, attrs: map[string]string{}, attrRow: map[string]int{}}
		p.hh[hk] = h
		p.order = append(p.order, hk)
	} else if !p.res.PersonRows {
		// A household per row: a second row with the same head and place
		// is a duplicate, not a member.
		p.errf(n, "head_name", "与第 %d 行重复:同一地点同名户主且无户编号/身份证号,请加户编号列 (duplicate household)", h.rows[0])
		return
	}
	h.rows = append(h.rows, n)
	if !ok {
		h.bad = true
	}
	// Household-level values: the first non-empty one wins; a different
	// non-empty value on another row is an error.
	for _, col := range []string{"poverty_status", "dibao_class", "wubao", "pension", "medical_insurance", "income_per_capita", "address", "phone", "notes", "lon", "lat"} {
		v := p.get(rec, col)
		if v == "" {
			continue
		}
		if old, seen := h.attrs[col]; seen {
			if old != v {
				p.errf(n, col, "与同户第 %d 行不一致:%q 对 %q (differs from another row of the household)", h.attrRow[col], v, old)
				h.bad = true
			}
			continue
		}
		h.attrs[col], h.attrRow[col] = v, n
	}
	isHeadRow := person.rel == "户主" || strings.EqualFold(person.rel, "head") || person.rel == "本人"
	if isHeadRow {
		person.rel = "户主"
		if h.head != nil {
			p.errf(n, "relation", "同一户有两个户主(另见第 %d 行) (two heads)", h.head.row)
			h.bad = true
		} else {
			h.head = person
		}
	}
	for _, o := range h.people {
		if o.name == person.name && o.birth == person.birth && o.idCard == person.idCard {
			p.errf(n, "name", "与同户第 %d 行重复 (duplicate member)", o.row)
			h.bad = true
		}
		if person.idCard != "" && o.idCard == person.idCard && o.name != person.name {
			p.errf(n, "id_card_no", "身份证号与同户第 %d 行相同 (same ID card as another member)", o.row)
			h.bad = true
		}
	}
	h.people = append(h.people, person)
}

var povertyValues = map[string]string{
	"registered_poor": "registered_poor", "建档立卡户": "registered_poor", "建档立卡": "registered_poor", "贫困户": "registered_poor", "建档立卡贫困户": "registered_poor",
	"lifted": "lifted", "脱贫户": "lifted", "脱贫": "lifted", "已脱贫": "lifted", "脱贫不稳定户": "lifted",
	"returned": "returned", "返贫": "returned", "返贫户": "returned",
	"marginal": "marginal", "边缘户": "marginal", "边缘易致贫户": "marginal",
	"monitored": "monitored", "监测户": "monitored", "脱贫监测户": "monitored", "监测对象": "monitored",
	"none": "none", "无": "none", "一般户": "none", "非贫困户": "none", "否": "none",
}

var dibaoValues = map[string]string{
	"none": "none", "无": "none", "否": "none", "非低保": "none",
	"a": "A", "a类": "A", "一类": "A", "b": "B", "b类": "B", "二类": "B", "c": "C", "c类": "C", "三类": "C",
}

var yesNo = map[string]string{
	"yes": "yes", "y": "yes", "是": "yes", "有": "yes", "已参保": "yes", "参保": "yes", "1": "yes", "true": "yes", "√": "yes",
	"no": "no", "n": "no", "否": "no", "无": "no", "未参保": "no", "0": "no", "false": "no", "×": "no",
}

func (p *registerParser) finish() {
	for _, hk := range p.order {
		h := p.hh[hk]
		first := h.rows[0]
		if h.head == nil {
			if p.res.PersonRows {
				p.errf(first, "relation", "户编号 %q 没有户主行(与户主关系=户主) (no head of household)", h.key)
				h.bad = true
			}
		}
		fields := map[string]json.RawMessage{}
		put := func(k string, v any) {
			b, _ := json.Marshal(v)
			fields[k] = b
		}
		choice := func(col string, table map[string]string) {
			v, ok := h.attrs[col]
			if !ok {
				return
			}
			norm, ok := table[strings.ToLower(t2s.Replace(v))]
			if !ok {
				p.errf(h.attrRow[col], col, "无法识别的取值 %q (unknown value)", v)
				h.bad = true
				return
			}
			put(col, norm)
		}
		choice("poverty_status", povertyValues)
		choice("dibao_class", dibaoValues)
		choice("wubao", yesNo)
		choice("pension", yesNo)
		choice("medical_insurance", yesNo)
		if v, ok := h.attrs["income_per_capita"]; ok {
			f, err := strconv.ParseFloat(strings.ReplaceAll(v, ",", ""), 64)
			if err != nil || f < 0 || f > 1e8 {
				p.errf(h.attrRow["income_per_capita"], "income_per_capita", "不是有效金额 %q (not an amount)", v)
				h.bad = true
			} else {
				put("income_per_capita", f)
			}
		}
		for _, col := range []string{"address", "phone", "notes"} {
			if v, ok := h.attrs[col]; ok {
				put(col, v)
			}
		}
		lonS, hasLon := h.attrs["lon"]
		latS, hasLat := h.attrs["lat"]
		if hasLon || hasLat {
			lon, e1 := strconv.ParseFloat(lonS, 64)
			lat, e2 := strconv.ParseFloat(latS, 64)
			pt := syncproto.Point{Lon: lon, Lat: lat}
			switch {
			case !hasLon || !hasLat:
				p.errf(first, "lon", "经度和纬度要同时填写 (longitude and latitude go together)")
				h.bad = true
			case e1 != nil || e2 != nil || !pt.Valid():
				p.errf(h.attrRow["lon"], "lon", "坐标无效 %q,%q (not a WGS84 position)", lonS, latS)
				h.bad = true
			default:
				put(syncproto.FieldLocation, pt)
			}
		}
		id := registerID(h.place, h.key)
		if syncproto.ValidID(h.key) {
			id = h.key
		}
		if h.head != nil {
			put(syncproto.FieldHeadName, h.head.name)
			if h.head.idCard != "" {
				put("id_card_no", h.head.idCard)
			}
		}
		for _, m := range h.people {
			mid := registerID(id, m.name+"\x00"+strconv.Itoa(m.birth)+"\x00"+m.idCard)
			put(syncproto.MemberPrefix+mid, syncproto.Member{Name: m.name, Relation: m.rel, BirthYear: m.birth, IDCardNo: m.idCard})
		}
		if perr := syncproto.CheckHouseholdFields(fields); perr != nil {
			for _, fe := range perr.Fields {
				p.errf(first, fe.Field, "%s", fe.Reason)
			}
			if len(perr.Fields) == 0 {
				p.errf(first, "", "%s", perr.Message)
			}
			h.bad = true
		}
		if h.bad {
			p.res.Invalid++
			continue
		}
		p.res.FirstRow[id] = first
		p.res.Households = append(p.res.Households, syncproto.Household{ID: id, PlaceCode: h.place, Fields: fields})
	}
}

// registerID derives a stable UUID (version 8, RFC 9562) from a scope and
// a key.
func registerID(scope, key string) string {
	sum := sha256.Sum256([]byte("fieldsync-register\x00" + scope + "\x00" + key))
	b := sum[:16]
	b[6] = 0x80 | b[6]&0x0f
	b[8] = 0x80 | b[8]&0x3f
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// checkIDCard validates a resident ID-card number (GB 11643-1999: 17
// digits and a check character). It returns "" when valid.
func checkIDCard(id string) string {
	if strings.ContainsAny(id, "Ee.+") {
		return "身份证号被 Excel 存成了数字,后几位已丢失:请把该列设为文本格式后重新填写 (ID number stored as a number; digits lost)"
	}
	if len(id) != 18 {
		return fmt.Sprintf("身份证号应为 18 位,这里是 %d 位 (ID card number must have 18 characters)", utf8.RuneCountInString(id))
	}
	weights := []int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}
	sum := 0
	for i := 0; i < 17; i++ {
		c := id[i]
		if c < '0' || c > '9' {
			return "身份证号前 17 位应为数字 (first 17 characters must be digits)"
		}
		sum += int(c-'0') * weights[i]
	}
	check := "10X98765432"[sum%11]
	if id[17] != check {
		return "身份证号校验位不对,请核对 (check digit does not match)"
	}
	if _, err := time.Parse("20060102", id[6:14]); err != nil {
		return "身份证号中的出生日期无效 (birth date inside the number is invalid)"
	}
	return ""
}

func parseBirthYear(s string, now int) (int, string) {
	s = strings.TrimSpace(s)
	digits := s
	if len(s) >= 4 {
		digits = s[:4]
	}
	y, err := strconv.Atoi(digits)
	if err != nil || (len(s) > 4 && !strings.ContainsAny(s[4:5], "-/.年")) {
		return 0, fmt.Sprintf("出生年份 %q 无法识别 (not a year)", s)
	}
	if y < 1900 || y > now {
		return 0, fmt.Sprintf("出生年份 %d 不在 1900–%d 之间 (year out of range)", y, now)
	}
	return y, ""
}
