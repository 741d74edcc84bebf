package store_test

import (
	"errors"
	"fmt"
	"testing"

	"fieldsync/server/domain"
	"fieldsync/server/store"
)

// TestSequenceErrors_Is: the push errors unwrap to the domain sentinels
// through any wrapping, and errors.As finds their numbers.
func TestSequenceErrors_Is(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		is   error
		not  error
	}{
		{"gap", &store.SequenceGapError{Expected: 5, Got: 7}, domain.ErrSequenceGap, domain.ErrSequenceReused},
		{"reused", &store.SequenceReusedError{Seq: 3, LastSeq: 9}, domain.ErrSequenceReused, domain.ErrSequenceGap},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := fmt.Errorf("push: %w", tc.err)
			if !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.is)
			}
			if errors.Is(err, tc.not) {
				t.Errorf("errors.Is(%v, %v) = true", err, tc.not)
			}
		})
	}
	var gap *store.SequenceGapError
	if err := fmt.Errorf("push: %w", &store.SequenceGapError{Expected: 5, Got: 7}); !errors.As(err, &gap) || gap.Expected != 5 || gap.Got != 7 {
		t.Errorf("errors.As gap = %+v", gap)
	}
	var reused *store.SequenceReusedError
	if err := fmt.Errorf("push: %w", &store.SequenceReusedError{Seq: 3, LastSeq: 9}); !errors.As(err, &reused) || reused.Seq != 3 || reused.LastSeq != 9 {
		t.Errorf("errors.As reused = %+v", reused)
	}
}

// TestPlaceProgress_Add: rolling a child up adds every count and leaves
// the place's own identity, cadres and target alone.
func TestPlaceProgress_Add(t *testing.T) {
	p := store.PlaceProgress{Place: domain.Place{Code: "A"}, Depth: 1, Households: 1, Visits: 2, Cadres: 3, Target: 12}
	o := store.PlaceProgress{Place: domain.Place{Code: "B"}, Depth: 2,
		Households: 10, VisitedThisMonth: 11, VisitsThisMonth: 12, Cadres: 7, Target: 28,
		Visits: 13, EvidenceVisits: 14, EvidenceComplete: 15, Submitted: 16, NeedsRework: 17,
		Approved: 18, Rejected: 19, OpenConflicts: 20, Flagged: 21, OpenRework: 22, EvidenceGaps: 23}
	p.Add(&o)
	want := store.PlaceProgress{Place: domain.Place{Code: "A"}, Depth: 1,
		Households: 11, VisitedThisMonth: 11, VisitsThisMonth: 12, Cadres: 3, Target: 12,
		Visits: 15, EvidenceVisits: 14, EvidenceComplete: 15, Submitted: 16, NeedsRework: 17,
		Approved: 18, Rejected: 19, OpenConflicts: 20, Flagged: 21, OpenRework: 22}
	if fmt.Sprintf("%+v", p) != fmt.Sprintf("%+v", want) {
		t.Errorf("after Add:\n got %+v\nwant %+v", p, want)
	}
}
