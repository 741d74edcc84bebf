package web

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/labstack/echo/v4"

	"fieldsync/server/domain"
	"fieldsync/server/export"
	"fieldsync/server/store"
	"fieldsync/syncproto"
)

// attr is one labelled household attribute.
type attr struct {
	Name, Label, Value string
}

// answer is one labelled visit answer.
type answer struct {
	Label, Value string
}

// evidenceItem is one evidence reference of a visit.
type evidenceItem struct {
	syncproto.EvidenceRef
	SlotLabel string
	Blob      store.BlobMeta
	Flags     []store.ConsoleFlag
	IsImage   bool
}

type visitItem struct {
	syncproto.Visit
	FormTitle string
	Answers   []answer
	Evidence  []evidenceItem
	Flags     []store.ConsoleFlag // about the visit itself
	Reviews   []map[string]any
	Missing   []string // required slots without present blobs
}

type householdData struct {
	Household *syncproto.Household
	Deleted   bool
	Place     domain.Place
	Crumbs    []crumb
	HeadName  string
	Attrs     []attr
	Members   []export.Member
	Visits    []visitItem
	Conflicts []syncproto.Conflict
	Audit     []auditRow
	MiniMap   string
	Masked    bool
}

func (c *Console) household(ec echo.Context, v *view) error {
	ctx := ec.Request().Context()
	sc, err := c.scopeOf(ctx, v.User)
	if err != nil {
		return err
	}
	v.Nav = "overview"
	h, deleted, err := c.st.Household(ctx, ec.Param("id"))
	if err != nil || !sc.can(h.PlaceCode) {
		return notFound("household")
	}
	place, err := c.st.Place(ctx, h.PlaceCode)
	if err != nil {
		return err
	}
	d := &householdData{Household: h, Deleted: deleted, Place: place, Crumbs: c.breadcrumb(ctx, sc, place), Masked: !export.FullIDs(v.User)}
	forms, slotLabels, err := c.formLabels(ctx, v)
	if err != nil {
		return err
	}
	survey := forms["household_survey"]
	choice := func(field, val string) string {
		for i := range survey.Fields {
			f := &survey.Fields[i]
			if f.Name != field {
				continue
			}
			for _, ch := range f.Choices {
				if ch.Value == val {
					if v.En() && ch.LabelEn != "" {
						return ch.LabelEn
					}
					return ch.Label
				}
			}
		}
		return val
	}
	// Attributes in schema order, then the rest by name.
	seen := map[string]bool{syncproto.FieldLocation: true}
	add := func(name string) {
		raw, ok := h.Fields[name]
		if !ok || seen[name] || strings.HasPrefix(name, syncproto.MemberPrefix) {
			return
		}
		seen[name] = true
		val := string(raw)
		var s string
		var b bool
		if json.Unmarshal(raw, &s) == nil {
			val = choice(name, s)
		} else if json.Unmarshal(raw, &b) == nil {
			val = v.T(fmt.Sprintf("bool.%v", b))
		}
		if d.Masked {
			if strings.Contains(name, "id_card") {
				val = export.MaskID(val)
			} else {
				val = export.MaskText(val)
			}
		}
		d.Attrs = append(d.Attrs, attr{Name: name, Label: v.FieldLabel(name), Value: val})
	}
	for _, f := range syncproto.HouseholdSchema {
		add(f.Name)
	}
	var rest []string
	for k := range h.Fields {
		rest = append(rest, k)
	}
	sort.Strings(rest)
	for _, k := range rest {
		add(k)
	}
	json.Unmarshal(h.Fields[syncproto.FieldHeadName], &d.HeadName)
	d.Members = export.Members(h.Fields)
	if d.Masked {
		for i := range d.Members {
			if d.Members[i].IDCardNo != "" {
				d.Members[i].IDCardNo = export.MaskID(d.Members[i].IDCardNo)
			}
		}
	}
	visits, err := c.st.HouseholdVisits(ctx, h.ID)
	if err != nil {
		return err
	}
	blobs, flags, err := c.st.ConsoleHouseholdEvidence(ctx, h.ID)
	if err != nil {
		return err
	}
	var home *miniPoint
	if lon, lat, ok := pointOf(h.Fields[syncproto.FieldLocation]); ok {
		home = &miniPoint{Lon: lon, Lat: lat, Label: v.T("hh.location")}
	}
	var mps []miniPoint
	var links []miniLink
	for _, vis := range visits {
		it := visitItem{Visit: vis, FormTitle: v.FormTitle(forms, vis.FormID)}
		def, ferr := c.st.Form(ctx, vis.FormID, vis.FormVersion)
		if ferr == nil {
			for i := range def.Fields {
				fd := &def.Fields[i]
				raw, ok := vis.Answers[fd.Name]
				if !ok || syncproto.IsNull(raw) {
					continue
				}
				label := fd.Label
				if v.En() && fd.LabelEn != "" {
					label = fd.LabelEn
				}
				it.Answers = append(it.Answers, answer{Label: label, Value: answerText(fd, raw, v.En(), d.Masked)})
			}
			present := map[string]int{}
			for _, e := range vis.Evidence {
				if blobs[e.SHA256].Present {
					present[e.Slot]++
				}
			}
			for _, s := range def.Slots {
				if s.MinCount > present[s.Name] {
					it.Missing = append(it.Missing, slotLabels[vis.FormID+"."+s.Name])
				}
			}
		}
		byBlob := map[string][]store.ConsoleFlag{}
		for _, f := range flags[vis.ID] {
			if f.SHA256 == "" {
				it.Flags = append(it.Flags, f)
			} else {
				byBlob[f.SHA256] = append(byBlob[f.SHA256], f)
			}
		}
		for _, e := range vis.Evidence {
			b := blobs[e.SHA256]
			it.Evidence = append(it.Evidence, evidenceItem{EvidenceRef: e, SlotLabel: slotLabels[vis.FormID+"."+e.Slot], Blob: b,
				Flags: byBlob[e.SHA256], IsImage: strings.HasPrefix(b.MediaType, "image/")})
			if vis.Point != nil && b.ExifLon != nil && b.ExifLat != nil {
				links = append(links, miniLink{From: miniPoint{Lon: vis.Point.Lon, Lat: vis.Point.Lat},
					To: miniPoint{Lon: *b.ExifLon, Lat: *b.ExifLat, Label: v.T("hh.exifpoint") + " " + e.SHA256[:10]}})
			}
		}
		if vis.Point != nil {
			mps = append(mps, miniPoint{Lon: vis.Point.Lon, Lat: vis.Point.Lat, AccuracyM: vis.AccuracyM, Label: it.FormTitle + " · " + v.Time(vis.DeviceTime)})
		}
		if it.Reviews, err = c.st.ReviewHistory(ctx, vis.ID); err != nil {
			return err
		}
		d.Visits = append(d.Visits, it)
	}
	d.MiniMap = buildMiniMap(place, home, mps, links, v)
	if d.Conflicts, err = c.st.Conflicts(ctx, h.ID); err != nil {
		return err
	}
	events, err := c.st.AuditTrail(ctx, "household", h.ID)
	if err != nil {
		return err
	}
	d.Audit = c.auditRows(ctx, v, events)
	if d.Masked {
		for i := range d.Conflicts {
			d.Conflicts[i].KeptValue = maskJSON(d.Conflicts[i].KeptValue)
			d.Conflicts[i].LosingValue = maskJSON(d.Conflicts[i].LosingValue)
		}
		for i := range d.Audit {
			d.Audit[i].Before = maskJSON(d.Audit[i].Before)
			d.Audit[i].After = maskJSON(d.Audit[i].After)
		}
	}
	v.Title = d.HeadName + " · " + place.Name
	return c.render(ec, v, "household", d)
}

func maskJSON(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return raw
	}
	return json.RawMessage(export.MaskText(strings.ReplaceAll(string(raw), `\u0026`, "&")))
}

// FieldLabel names a household field.
func (v *view) FieldLabel(name string) string {
	if _, ok := messages["field."+name]; ok {
		return v.T("field." + name)
	}
	return name
}

// answerText shows one answer as text.
func answerText(fd *syncproto.Field, raw json.RawMessage, en, mask bool) string {
	label := func(val string) string {
		for _, c := range fd.Choices {
			if c.Value == val {
				if en && c.LabelEn != "" {
					return c.LabelEn
				}
				return c.Label
			}
		}
		return val
	}
	switch fd.Type {
	case syncproto.FieldSelectOne:
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return label(s)
		}
	case syncproto.FieldSelectMany:
		var ss []string
		if json.Unmarshal(raw, &ss) == nil {
			for i := range ss {
				ss[i] = label(ss[i])
			}
			return strings.Join(ss, "、")
		}
	case syncproto.FieldText, syncproto.FieldDate, syncproto.FieldPhoto, syncproto.FieldDocument, syncproto.FieldSignature:
		var s string
		if json.Unmarshal(raw, &s) == nil {
			if mask {
				if strings.Contains(fd.Name, "id_card") {
					return export.MaskID(s)
				}
				return export.MaskText(s)
			}
			return s
		}
	}
	return string(raw)
}
