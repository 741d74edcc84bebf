package syncproto

import (
	"math"
	"strings"
	"testing"
	"time"
)

// TestMutationCheck_PointProblemNamesCoordinateAndValue: a visit whose
// point is out of range is refused with a message that says which
// coordinate and which value.
func TestMutationCheck_PointProblemNamesCoordinateAndValue(t *testing.T) {
	for _, tc := range []struct {
		p    Point
		want string
	}{
		{Point{Lon: 103.1, Lat: 95.5}, "point.lat 95.5"},
		{Point{Lon: -181, Lat: 25}, "point.lon -181"},
		{Point{Lon: math.NaN(), Lat: 25}, "point.lon NaN"},
		{Point{Lon: 103.1, Lat: math.Inf(1)}, "point.lat +Inf"},
	} {
		p := tc.p
		m := Mutation{Seq: 1, Kind: KindVisitCreate, Visit: &Visit{ID: NewID(time.Now()), HouseholdID: NewID(time.Now()),
			FormID: "f", FormVersion: 1, Point: &p, DeviceTime: time.Now()}}
		err := m.Check()
		if err == nil || err.Code != CodeValidation || !strings.Contains(err.Message, tc.want) {
			t.Errorf("point %+v: %v, want a validation error naming %q", tc.p, err, tc.want)
		}
	}
	if (Point{Lon: 103.1, Lat: 25.1}).Problem() != "" {
		t.Error("a valid point has a problem")
	}
}
