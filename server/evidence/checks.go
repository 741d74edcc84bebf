package evidence

import (
	"fmt"
	"math"
	"math/bits"
	"sort"
	"strings"
	"time"

	"github.com/paulmach/orb"

	"fieldsync/server/geo"
)

// The flags the checks raise. A flag points something out for a
// supervisor; it never rejects the visit or the blob.
const (
	// FlagGPSFar: the photo's EXIF position is more than
	// Config.MaxDistanceM from the visit's point.
	FlagGPSFar = "gps_far_from_visit"
	// FlagOtherDay: the photo's EXIF capture time is not on the visit's day.
	FlagOtherDay = "taken_other_day"
	// FlagOutsidePlace: the visit's point is outside the boundary of the
	// household's place. A visit flag (sha256 "").
	FlagOutsidePlace = "visit_outside_place"
	// FlagPoorAccuracy: the visit's GPS accuracy is worse than its form
	// allows (FormDef.MaxAccuracyM). A visit flag (sha256 "").
	FlagPoorAccuracy = "poor_gps_accuracy"
	// FlagNoGPS: the visit has no GPS point at all (no fix, or the
	// device's location was off). A visit flag (sha256 "").
	FlagNoGPS = "visit_without_gps"
	// FlagSameBlob: the same bytes (SHA-256) are attached to visits of
	// another household.
	FlagSameBlob = "same_photo_other_household"
	// FlagNearDuplicate: a photo whose perceptual hash is within
	// Config.NearDuplicateDistance of a photo attached to another
	// household.
	FlagNearDuplicate = "near_duplicate_other_household"
	// FlagClockSkew: the device's clock ran fast when it recorded the
	// visit: its device time is later than the server's receive time by
	// more than Config.MaxClockSkew, which a right clock cannot do. A
	// visit recorded offline and sent days later is not flagged: an old
	// device time is what offline work looks like. A visit flag (sha256
	// "").
	FlagClockSkew = "clock_skew"
)

// Flags lists every flag, for filters and documentation.
var Flags = []string{FlagGPSFar, FlagOtherDay, FlagOutsidePlace, FlagPoorAccuracy, FlagNoGPS, FlagSameBlob, FlagNearDuplicate, FlagClockSkew}

// ChinaStandardTime is UTC+8, the default zone of a visit day.
var ChinaStandardTime = time.FixedZone("UTC+08:00", 8*3600)

// Config tunes the checks. The zero value means the defaults.
type Config struct {
	// MaxDistanceM: a photo further than this from the visit point is
	// flagged (default 200 m).
	MaxDistanceM float64
	// DefaultZone is the zone of the visit day when the device did not say
	// (default UTC+8, China Standard Time).
	DefaultZone *time.Location
	// NearDuplicateDistance is the largest Hamming distance between two
	// 64-bit perceptual hashes that counts as the same picture (default 8;
	// 0 means identical hashes only; negative disables the check).
	NearDuplicateDistance int
	// MaxClockSkew is how far a visit's device time may run past the
	// server's receive time before FlagClockSkew is raised (default
	// 15 min).
	MaxClockSkew time.Duration
}

// DefaultMaxClockSkew is the default Config.MaxClockSkew.
const DefaultMaxClockSkew = 15 * time.Minute

// DefaultNearDuplicateDistance is the default NearDuplicateDistance.
const DefaultNearDuplicateDistance = 8

// WithDefaults fills unset fields.
func (c Config) WithDefaults() Config {
	if c.MaxDistanceM <= 0 || math.IsNaN(c.MaxDistanceM) {
		c.MaxDistanceM = 200
	}
	if c.DefaultZone == nil {
		c.DefaultZone = ChinaStandardTime
	}
	if c.NearDuplicateDistance == 0 {
		c.NearDuplicateDistance = DefaultNearDuplicateDistance
	}
	if c.MaxClockSkew <= 0 {
		c.MaxClockSkew = DefaultMaxClockSkew
	}
	return c
}

// Visit is what the checks need to know about a visit.
type Visit struct {
	ID          string
	HouseholdID string
	// Point is where the visit was recorded; nil if the device had no fix.
	Point     *orb.Point
	AccuracyM float64 // 0: unknown
	// DeviceTime is when the visit was recorded; Zone, if set, is the
	// device's zone at the time (else Config.DefaultZone).
	DeviceTime time.Time
	Zone       *time.Location
	// PlaceCode and Boundary are the household's place and its polygon
	// (nil: the place has no boundary).
	PlaceCode string
	Boundary  orb.Geometry
	// MaxAccuracyM is the form's accuracy threshold (0: none).
	MaxAccuracyM float64
	// GPSReason is the worker's stated reason for a missing or poor fix
	// ("" if none); the GPS flags' details quote it.
	GPSReason string
	// ReceivedAt is when the server received the visit (zero: unknown).
	ReceivedAt time.Time
}

// reasonNote is the GPS flags' mention of the worker's reason.
func reasonNote(reason string) string {
	reason = strings.TrimSpace(reason)
	if reason == "" {
		return "；采集员未说明原因"
	}
	return "；采集员说明：" + reason
}

// Blob is what the checks need to know about a present blob.
type Blob struct {
	SHA256 string
	GPS    *orb.Point
	Taken  CaptureTime
}

// Flag is one raised flag. SHA256 is "" for a flag about the visit itself.
type Flag struct {
	VisitID string `json:"visit_id"`
	SHA256  string `json:"sha256"`
	Flag    string `json:"flag"`
	Detail  string `json:"detail"`
}

// Key identifies a flag (its primary key).
func (f Flag) Key() string { return f.VisitID + "\x00" + f.SHA256 + "\x00" + f.Flag }

// CheckVisit runs the checks about the visit itself: no GPS point, point
// outside the place's boundary, GPS accuracy worse than the form allows,
// a device time that cannot be right.
func CheckVisit(cfg Config, v Visit) []Flag {
	cfg = cfg.WithDefaults()
	var out []Flag
	if f, ok := clockSkew(cfg, v); ok {
		out = append(out, f)
	}
	if v.Point != nil && v.Boundary != nil && !geo.Contains(v.Boundary, *v.Point) {
		out = append(out, Flag{VisitID: v.ID, Flag: FlagOutsidePlace,
			Detail: fmt.Sprintf("访问位置（经度 %.6f，纬度 %.6f）在地点 %s 的边界之外", v.Point[0], v.Point[1], v.PlaceCode)})
	}
	if v.Point == nil {
		out = append(out, Flag{VisitID: v.ID, Flag: FlagNoGPS, Detail: "访问没有 GPS 位置：无法核对是否在户所在地点" + reasonNote(v.GPSReason)})
	}
	if v.MaxAccuracyM > 0 && v.AccuracyM > v.MaxAccuracyM {
		out = append(out, Flag{VisitID: v.ID, Flag: FlagPoorAccuracy,
			Detail: fmt.Sprintf("GPS 精度 %.0f 米，差于表单要求的 %.0f 米", v.AccuracyM, v.MaxAccuracyM) + reasonNote(v.GPSReason)})
	}
	return out
}

// CheckBlob runs the checks of one present blob against the visit it is
// attached to: EXIF position too far from the visit point, EXIF time not
// on the visit's day. A photo without EXIF position or time is not
// flagged for what it lacks.
func CheckBlob(cfg Config, v Visit, b Blob) []Flag {
	cfg = cfg.WithDefaults()
	var out []Flag
	if b.GPS != nil && v.Point != nil {
		if d := geo.DistanceM(*b.GPS, *v.Point); d > cfg.MaxDistanceM {
			out = append(out, Flag{VisitID: v.ID, SHA256: b.SHA256, Flag: FlagGPSFar,
				Detail: fmt.Sprintf("照片拍摄地点距访问位置 %.0f 米（上限 %.0f 米）", d, cfg.MaxDistanceM)})
		}
	}
	if !b.Taken.IsZero() && !v.DeviceTime.IsZero() {
		zone := v.Zone
		if zone == nil {
			zone = cfg.DefaultZone
		}
		vd := v.DeviceTime.In(zone)
		pd := b.Taken.Time
		if !b.Taken.Floating {
			pd = pd.In(zone)
		}
		if vd.Year() != pd.Year() || vd.YearDay() != pd.YearDay() {
			out = append(out, Flag{VisitID: v.ID, SHA256: b.SHA256, Flag: FlagOtherDay,
				Detail: fmt.Sprintf("照片拍摄于 %s，访问在 %s（%s），相差 %d 天", pd.Format("2006-01-02"), vd.Format("2006-01-02"), zoneName(zone), daysApart(pd, vd))})
		}
	}
	return out
}

// clockSkew flags a device time later than the server's receive time
// (beyond cfg.MaxClockSkew).
func clockSkew(cfg Config, v Visit) (Flag, bool) {
	if v.DeviceTime.IsZero() {
		return Flag{}, false
	}
	zone := cfg.DefaultZone
	at := func(t time.Time) string {
		return t.In(zone).Format("2006-01-02 15:04") + "（" + zoneName(zone) + "）"
	}
	if !v.ReceivedAt.IsZero() {
		if d := v.DeviceTime.Sub(v.ReceivedAt); d > cfg.MaxClockSkew {
			return Flag{VisitID: v.ID, Flag: FlagClockSkew,
				Detail: fmt.Sprintf("设备记录的时间 %s 晚于服务器收到的时间 %s，设备时钟快了约 %s：请以服务器收到时间为参考核实走访的实际时间", at(v.DeviceTime), at(v.ReceivedAt), span(d))}, true
		}
	}
	return Flag{}, false
}

// span says a duration in days, hours and minutes, in Chinese.
func span(d time.Duration) string {
	days := int(d / (24 * time.Hour))
	hours := int(d % (24 * time.Hour) / time.Hour)
	mins := int(d % time.Hour / time.Minute)
	switch {
	case days > 0:
		return fmt.Sprintf("%d 天 %d 小时", days, hours)
	case hours > 0:
		return fmt.Sprintf("%d 小时 %d 分钟", hours, mins)
	default:
		return fmt.Sprintf("%d 分钟", mins)
	}
}

// daysApart counts the calendar days between two dates, each in its own
// zone as shown.
func daysApart(a, b time.Time) int {
	da := time.Date(a.Year(), a.Month(), a.Day(), 0, 0, 0, 0, time.UTC)
	db := time.Date(b.Year(), b.Month(), b.Day(), 0, 0, 0, 0, time.UTC)
	d := int(da.Sub(db).Hours() / 24)
	if d < 0 {
		d = -d
	}
	return d
}

func zoneName(z *time.Location) string {
	_, off := time.Date(2000, 1, 1, 0, 0, 0, 0, z).Zone()
	sign := "+"
	if off < 0 {
		sign, off = "-", -off
	}
	return fmt.Sprintf("UTC%s%02d:%02d", sign, off/3600, off/60%60)
}

// Use is one attachment of a blob to a visit of a household.
type Use struct {
	VisitID     string
	HouseholdID string
	SHA256      string
	// PHash is the blob's perceptual hash, if it is present and an image.
	PHash *uint64
	// Crops are the hashes of its centred crops (Meta.CropHashes), if
	// known.
	Crops []uint64
	// Shifts are the hashes of its off-centre crops (Meta.ShiftHashes),
	// if known.
	Shifts []uint64
}

// variant returns u's hash of variant v (0: the whole picture, i: the
// centred crop CropFractions[i-1]), if known.
func (u Use) variant(v int) (uint64, bool) {
	switch {
	case v == 0 && u.PHash != nil:
		return *u.PHash, true
	case v > 0 && v <= len(u.Crops):
		return u.Crops[v-1], true
	}
	return 0, false
}

// UseDistance is how near two photos are: the least Hamming distance
// between their hashes, comparing each one's whole picture with the
// other's whole picture and centred crops (not crop with crop), so that a
// copy cropped by up to about 20% is near its original, and each one's
// off-centre crops with the other's hash that ShiftCrops names, so that a
// copy cropped by up to 10% at a corner or a side is too (such a match
// counts ShiftPenalty further). ok is false when either has no hash.
func UseDistance(a, b Use) (d int, ok bool) {
	if a.PHash == nil || b.PHash == nil {
		return 0, false
	}
	d = Distance(*a.PHash, *b.PHash)
	for _, c := range b.Crops {
		d = min(d, Distance(*a.PHash, c))
	}
	for _, c := range a.Crops {
		d = min(d, Distance(c, *b.PHash))
	}
	d = min(d, shiftDistance(a, b)+ShiftPenalty, shiftDistance(b, a)+ShiftPenalty)
	return d, true
}

// ShiftPenalty is what UseDistance adds to the distance of a match
// through an off-centre crop: each pair of photos is compared through 32
// of them, against 5 comparisons through the whole picture and centred
// crops, so a match there has to be a bit closer to keep unrelated photos
// apart (and the index query for it is cheaper: see HashIndex).
const ShiftPenalty = 1

// shiftDistance is the least distance between a's off-centre crops and
// the hashes of b that ShiftCrops compares them with (64 if none).
func shiftDistance(a, b Use) int {
	d := 64
	for i, h := range a.Shifts {
		if i >= len(ShiftCrops) {
			break
		}
		if o, ok := b.variant(ShiftCrops[i].Against); ok {
			d = min(d, Distance(h, o))
		}
	}
	return d
}

// SameBlob flags every use of a SHA-256 that is also attached to a visit
// of another household: both sides are flagged. uses may hold any mix of
// hashes.
func SameBlob(uses []Use) []Flag {
	bySum := map[string][]Use{}
	for _, u := range uses {
		bySum[u.SHA256] = append(bySum[u.SHA256], u)
	}
	var out []Flag
	for _, us := range bySum {
		for _, u := range us {
			var others []string
			seen := map[string]bool{}
			for _, o := range us {
				if o.HouseholdID != u.HouseholdID && !seen[o.HouseholdID] {
					seen[o.HouseholdID] = true
					others = append(others, fmt.Sprintf("户 %s（访问 %s）", o.HouseholdID, o.VisitID))
				}
			}
			if len(others) > 0 {
				out = append(out, Flag{VisitID: u.VisitID, SHA256: u.SHA256, Flag: FlagSameBlob,
					Detail: "同一文件也附在：" + listSome(others)})
			}
		}
	}
	sortFlags(out)
	return out
}

// Distance is the Hamming distance between two 64-bit perceptual hashes.
func Distance(a, b uint64) int { return bits.OnesCount64(a ^ b) }

// NearDuplicates compares the uses in mine (one visit's, or one blob's)
// with candidates (uses of other blobs that have a perceptual hash) and
// flags both sides of every pair that belongs to different households,
// has different SHA-256s and whose UseDistance is within
// Config.NearDuplicateDistance.
func NearDuplicates(cfg Config, mine, candidates []Use) []Flag {
	cfg = cfg.WithDefaults()
	if cfg.NearDuplicateDistance < 0 {
		return nil
	}
	type side struct{ visit, sum string }
	notes := map[side][]string{}
	var order []side
	note := func(s side, text string) {
		if _, ok := notes[s]; !ok {
			order = append(order, s)
		}
		notes[s] = append(notes[s], text)
	}
	for _, m := range mine {
		if m.PHash == nil {
			continue
		}
		for _, c := range candidates {
			if c.SHA256 == m.SHA256 || c.HouseholdID == m.HouseholdID {
				continue
			}
			d, ok := UseDistance(m, c)
			if !ok || d > cfg.NearDuplicateDistance {
				continue
			}
			note(side{m.VisitID, m.SHA256}, fmt.Sprintf("户 %s 的照片 %s（访问 %s，相似距离 %d）", c.HouseholdID, short(c.SHA256), c.VisitID, d))
			note(side{c.VisitID, c.SHA256}, fmt.Sprintf("户 %s 的照片 %s（访问 %s，相似距离 %d）", m.HouseholdID, short(m.SHA256), m.VisitID, d))
		}
	}
	var out []Flag
	for _, s := range order {
		out = append(out, Flag{VisitID: s.visit, SHA256: s.sum, Flag: FlagNearDuplicate,
			Detail: "与以下照片相似：" + listSome(dedupe(notes[s]))})
	}
	sortFlags(out)
	return out
}

func short(sum string) string {
	if len(sum) > 12 {
		return sum[:12]
	}
	return sum
}

func dedupe(ss []string) []string {
	seen := map[string]bool{}
	out := ss[:0:0]
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// listSome joins up to three items and says how many more there are.
func listSome(items []string) string {
	sort.Strings(items)
	if len(items) <= 3 {
		return strings.Join(items, "；")
	}
	return strings.Join(items[:3], "；") + fmt.Sprintf("；另有 %d 处", len(items)-3)
}

func sortFlags(fs []Flag) {
	sort.Slice(fs, func(i, j int) bool { return fs[i].Key() < fs[j].Key() })
}
