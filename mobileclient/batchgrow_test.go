package mobileclient

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"fieldsync/server/domain"
	"fieldsync/server/servertest"
)

// steppingClock is a device clock that moves step at every reading: the
// time a push takes, as the device measures it, is a few steps.
func steppingClock(step time.Duration) func() time.Time {
	base := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	var n atomic.Int64
	return func() time.Time { return base.Add(time.Duration(n.Add(1)) * step) }
}

// TestE2E_PushBatchAdapts: with MaxBatch left to adapt, a push answered
// quickly doubles the next (20, 40, 80, 160, then the rest), each sync
// starts small again, a slow link keeps batches of 20, and a fixed
// MaxBatch stays fixed.
func TestE2E_PushBatchAdapts(t *testing.T) {
	env := servertest.Start(t)
	hhs := importHouseholds(t, env, "G11", "G12", "G11", "G12")
	cases := []struct {
		name    string
		opts    Options
		visits  []int // visits recorded before each sync
		batches []int // pushes each sync takes
	}{
		{"quick link", Options{Now: steppingClock(time.Millisecond)}, []int{350, 30, 160}, []int{5, 2, 4}},
		{"slow link", Options{Now: steppingClock(GrowBatchWithin)}, []int{350}, []int{18}},
		{"fixed", Options{Now: steppingClock(time.Millisecond), MaxBatch: 20}, []int{350}, []int{18}},
		{"fixed small", Options{Now: steppingClock(time.Millisecond), MaxBatch: 3}, []int{10}, []int{4}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := env.CreateUser(t, fmt.Sprintf("batch-worker-%d", i), domain.RoleFieldWorker, "V1")
			o := tc.opts
			o.Backoff = fastBackoff
			c := device(t, env, u, &o)
			for s, n := range tc.visits {
				for v := range n {
					if _, err := c.RecordVisit(surveyVisit(hhs[v%len(hhs)], "王建国")); err != nil {
						t.Fatal(err)
					}
				}
				rep := mustSync(t, c)
				if rep.Pushed != n || rep.Batches != tc.batches[s] || rep.Rejected != 0 {
					t.Errorf("sync %d of %d visits: pushed %d in %d batches (%d rejected), want %d batches", s+1, n, rep.Pushed, rep.Batches, rep.Rejected, tc.batches[s])
				}
			}
			assertConverged(t, "device", c, env)
		})
	}
}
