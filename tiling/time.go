package tiling

import "math"

// Time values are epoch milliseconds in int64.
const (
	Millisecond int64 = 1
	Second            = 1000 * Millisecond
	Minute            = 60 * Second
	Hour              = 60 * Minute
	Day               = 24 * Hour
)

// MinTime stands for −∞: an unset lifetime start or watermark.
const MinTime int64 = math.MinInt64

// AlignDown returns the largest multiple of g that is ≤ t (floor, also for
// negative t). g must be positive. It saturates at MinTime, so an unset
// (−∞) time stays −∞.
func AlignDown(t, g int64) int64 {
	r := t % g
	if r < 0 {
		r += g
		if t < MinTime+r {
			return MinTime
		}
	}
	return t - r
}

// Aligned reports whether t is a multiple of g.
func Aligned(t, g int64) bool { return t%g == 0 }
