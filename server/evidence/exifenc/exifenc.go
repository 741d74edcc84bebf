// Package exifenc writes the EXIF block a phone camera writes into a
// JPEG: the capture time (DateTimeOriginal, with OffsetTimeOriginal), the
// GPS position and time, the orientation. It is what server/evidence
// reads back; the demo data set's photos and the tests' fixtures are made
// with it.
package exifenc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"sort"
	"time"
)

// Tags are the tags to write. Zero fields are left out.
type Tags struct {
	// Taken is written as DateTimeOriginal (wall clock in Taken's
	// location); with TakenOffset also as OffsetTimeOriginal.
	Taken       time.Time
	TakenOffset bool
	// GPSTime is written as GPSDateStamp/GPSTimeStamp (UTC).
	GPSTime time.Time
	// GPS is the position {lon, lat}.
	GPS *[2]float64
	// Orientation, if 1..8, is the EXIF orientation.
	Orientation int
}

// ErrNotJPEG is returned by Splice for data that does not start with a
// JPEG's SOI marker; ErrTooBig for a block that does not fit in one APP1
// segment (64 KiB).
var (
	ErrNotJPEG = errors.New("exifenc: not a JPEG")
	ErrTooBig  = errors.New("exifenc: EXIF block too big")
)

// Splice inserts an APP1 "Exif" segment holding tiff right after the
// JPEG's SOI marker.
func Splice(jpg, tiff []byte) ([]byte, error) {
	if len(jpg) < 2 || jpg[0] != 0xFF || jpg[1] != 0xD8 {
		return nil, ErrNotJPEG
	}
	payload := append([]byte("Exif\x00\x00"), tiff...)
	if len(payload)+2 > 0xFFFF {
		return nil, ErrTooBig
	}
	var out bytes.Buffer
	out.Write(jpg[:2])
	out.Write([]byte{0xFF, 0xE1})
	_ = binary.Write(&out, binary.BigEndian, uint16(len(payload)+2))
	out.Write(payload)
	out.Write(jpg[2:])
	return out.Bytes(), nil
}

// TIFF field types.
const (
	typeASCII    = 2
	typeShort    = 3
	typeLong     = 4
	typeRational = 5
)

type entry struct {
	tag, typ uint16
	count    uint32
	data     []byte // little-endian value bytes
	// ptr, if set, makes this a LONG pointer to the named IFD.
	ptr string
}

type ifd struct {
	name    string
	entries []entry
}

func ascii(tag uint16, s string) entry {
	return entry{tag: tag, typ: typeASCII, count: uint32(len(s) + 1), data: append([]byte(s), 0)}
}

func short(tag uint16, v uint16) entry {
	return entry{tag: tag, typ: typeShort, count: 1, data: binary.LittleEndian.AppendUint16(nil, v)}
}

func rationals(tag uint16, vs ...[2]uint32) entry {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, v[0])
		b = binary.LittleEndian.AppendUint32(b, v[1])
	}
	return entry{tag: tag, typ: typeRational, count: uint32(len(vs)), data: b}
}

// dms turns decimal degrees into degrees, minutes and seconds rationals.
func dms(deg float64) [][2]uint32 {
	deg = math.Abs(deg)
	d := math.Floor(deg)
	m := math.Floor((deg - d) * 60)
	s := ((deg-d)*60 - m) * 60
	return [][2]uint32{{uint32(d), 1}, {uint32(m), 1}, {uint32(math.Round(s * 10000)), 10000}}
}

// TIFF builds the TIFF structure of the EXIF block (little endian): IFD0
// with the orientation and pointers to the EXIF and GPS IFDs.
func TIFF(p Tags) []byte {
	ifd0 := ifd{name: "0"}
	exifIFD := ifd{name: "exif"}
	gps := ifd{name: "gps"}
	if p.Orientation >= 1 && p.Orientation <= 8 {
		ifd0.entries = append(ifd0.entries, short(0x0112, uint16(p.Orientation)))
	}
	if !p.Taken.IsZero() {
		exifIFD.entries = append(exifIFD.entries, ascii(0x9003, p.Taken.Format("2006:01:02 15:04:05")))
		if p.TakenOffset {
			exifIFD.entries = append(exifIFD.entries, ascii(0x9011, p.Taken.Format("-07:00")))
		}
	}
	if p.GPS != nil {
		lon, lat := p.GPS[0], p.GPS[1]
		ns, ew := "N", "E"
		if lat < 0 {
			ns = "S"
		}
		if lon < 0 {
			ew = "W"
		}
		gps.entries = append(gps.entries,
			ascii(0x1, ns), rationals(0x2, dms(lat)...),
			ascii(0x3, ew), rationals(0x4, dms(lon)...))
	}
	if !p.GPSTime.IsZero() {
		t := p.GPSTime.UTC()
		gps.entries = append(gps.entries,
			rationals(0x7, [2]uint32{uint32(t.Hour()), 1}, [2]uint32{uint32(t.Minute()), 1}, [2]uint32{uint32(t.Second()), 1}),
			ascii(0x1D, t.Format("2006:01:02")))
	}
	ifds := []*ifd{&ifd0}
	if len(exifIFD.entries) > 0 {
		ifd0.entries = append(ifd0.entries, entry{tag: 0x8769, typ: typeLong, count: 1, ptr: "exif"})
		ifds = append(ifds, &exifIFD)
	}
	if len(gps.entries) > 0 {
		ifd0.entries = append(ifd0.entries, entry{tag: 0x8825, typ: typeLong, count: 1, ptr: "gps"})
		ifds = append(ifds, &gps)
	}
	// Lay out: header, then each IFD followed by its out-of-line data.
	offsets := map[string]uint32{}
	size := func(d *ifd) uint32 {
		n := uint32(2 + 12*len(d.entries) + 4)
		for _, e := range d.entries {
			if len(e.data) > 4 {
				n += uint32(len(e.data)+1) &^ 1
			}
		}
		return n
	}
	at := uint32(8)
	for _, d := range ifds {
		sort.Slice(d.entries, func(i, j int) bool { return d.entries[i].tag < d.entries[j].tag })
		offsets[d.name] = at
		at += size(d)
	}
	le := binary.LittleEndian
	out := []byte{'I', 'I', 42, 0}
	out = le.AppendUint32(out, 8)
	for _, d := range ifds {
		dataAt := offsets[d.name] + uint32(2+12*len(d.entries)+4)
		var data []byte
		out = le.AppendUint16(out, uint16(len(d.entries)))
		for _, e := range d.entries {
			out = le.AppendUint16(out, e.tag)
			out = le.AppendUint16(out, e.typ)
			out = le.AppendUint32(out, e.count)
			switch {
			case e.ptr != "":
				out = le.AppendUint32(out, offsets[e.ptr])
			case len(e.data) <= 4:
				v := make([]byte, 4)
				copy(v, e.data)
				out = append(out, v...)
			default:
				out = le.AppendUint32(out, dataAt+uint32(len(data)))
				data = append(data, e.data...)
				if len(data)%2 == 1 {
					data = append(data, 0)
				}
			}
		}
		out = le.AppendUint32(out, 0) // no next IFD
		out = append(out, data...)
	}
	return out
}
