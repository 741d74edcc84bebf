package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"

	"fieldsync/syncproto"
)

// openRosaXML renders a visit as the instance body ODK Collect would
// submit for the same form (OpenRosa form submission API, the
// xml_submission_file part):
//
//	<?xml version='1.0' ?><data id="FORM" version="N"><start>..</start>
//	<household>..</household><location>lat lon alt acc</location>
//	...answers in form order..., one element per evidence slot holding the
//	attachment's file name...<meta><instanceID>uuid:..</instanceID></meta></data>
//
// As Collect writes them: no indentation, select_many as space-separated
// values, geopoints as "lat lon altitude accuracy", the visit time as
// <start>, the entity (household) as a field, attachments by file name
// (their hash and size are not part of the XML). uuid is the instance
// UUID Collect would make.
func openRosaXML(v syncproto.Visit, f syncproto.FormDef, uuid string) []byte {
	var b bytes.Buffer
	b.WriteString("<?xml version='1.0' ?>")
	fmt.Fprintf(&b, `<data id="%s" version="%d">`, f.ID, f.Version)
	elem := func(name, value string) {
		b.WriteString("<" + name + ">")
		_ = xml.EscapeText(&b, []byte(value))
		b.WriteString("</" + name + ">")
	}
	elem("start", v.DeviceTime.In(cst).Format("2006-01-02T15:04:05.000-07:00"))
	elem("household", v.HouseholdID)
	if v.Point != nil {
		elem("location", fmt.Sprintf("%s %s 0.0 %s", fnum(v.Point.Lat), fnum(v.Point.Lon), fnum(v.AccuracyM)))
	}
	for _, fd := range f.Fields {
		raw, ok := v.Answers[fd.Name]
		if !ok || syncproto.IsNull(raw) {
			continue
		}
		elem(fd.Name, odkValue(fd, raw))
	}
	for _, s := range f.Slots {
		for _, e := range v.Evidence {
			if e.Slot == s.Name {
				elem(s.Name, fileName(e))
			}
		}
	}
	b.WriteString("<meta><instanceID>uuid:" + uuid + "</instanceID></meta></data>")
	return b.Bytes()
}

func fnum(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// odkValue writes one answer the way an XForm instance holds it.
func odkValue(fd syncproto.Field, raw json.RawMessage) string {
	switch fd.Type {
	case syncproto.FieldSelectMany:
		var vals []string
		_ = json.Unmarshal(raw, &vals)
		return strings.Join(vals, " ")
	case syncproto.FieldGeopoint:
		var p struct{ Lon, Lat, Alt, Acc float64 }
		_ = json.Unmarshal(raw, &p)
		return fmt.Sprintf("%s %s %s %s", fnum(p.Lat), fnum(p.Lon), fnum(p.Alt), fnum(p.Acc))
	case syncproto.FieldInteger, syncproto.FieldDecimal:
		return string(raw)
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// fileName is the attachment name Collect gives a photo: its capture time
// in milliseconds.
func fileName(e syncproto.EvidenceRef) string {
	n, _ := strconv.ParseUint(e.SHA256[:10], 16, 64)
	ext := ".jpg"
	if strings.HasSuffix(e.MediaType, "png") {
		ext = ".png"
	}
	return strconv.FormatUint(1_700_000_000_000+n%100_000_000_000, 10) + ext
}

// uuid4 makes a random (version 4) UUID from rng.
func uuid4(rng *rand.Rand) string {
	var b [16]byte
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	b[6] = 0x40 | b[6]&0x0f
	b[8] = 0x80 | b[8]&0x3f
	h := fmt.Sprintf("%x", b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// gzipLen is the size of b gzip-compressed the way syncproto compresses
// bodies (compress/gzip, default level).
func gzipLen(b []byte) int {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	zw.Close()
	return out.Len()
}
