// The review of 2408cae found Holds overflowing for times more than 2^63
// after an aligned start; this test failed until 898bdee.

package tiling

import (
	"math"
	"testing"
)

// TestReviewHoldsFarTimes: Holds's contract is any ts ≥ start, not only
// times in the same record. A start just above MinTime (aligned, not the
// saturated span) and a ts more than 2^63 after it make ts-start overflow
// to a negative number, which is "< g": Holds says the tile holds a time
// trillions of years later. No caller passes such a pair today (records hold
// their events' times), but the exported function is wrong as documented.
func TestReviewHoldsFarTimes(t *testing.T) {
	for _, g := range []int64{7, Minute, Hour, Day} {
		start := AlignDown(MinTime+3*g, g) // an aligned start, not MinTime
		if start == MinTime {
			t.Fatalf("g %d: start saturated", g)
		}
		for _, ts := range []int64{0, 1, Day, 1 << 50, math.MaxInt64, start + math.MaxInt64} {
			if ts < start {
				continue
			}
			if got, want := Holds(start, g, ts), AlignDown(ts, g) == start; got != want {
				t.Errorf("Holds(%d, %d, %d) = %v, AlignDown gives %d", start, g, ts, got, AlignDown(ts, g))
			}
		}
	}
}
