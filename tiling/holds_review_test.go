package tiling

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

// TestReviewExactSumCarryAndBorrowChains pins addInline's early stop (the
// carry or borrow loop ends once it is spent): sums whose next value carries
// or borrows through every limb of the inline window (a sum just below or
// just above a power of 2^64, a sum crossing zero either way) are exact,
// checked against big.Rat with the one rounding Float64 does.
func TestReviewExactSumCarryAndBorrowChains(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	// Values ±m·2^e for a few exponents 64 bits apart, so that adding the
	// small ones to a sum of large ones runs a carry or borrow across limbs.
	exps := []int{-60, 0, 4, 64, 70, 128, 130}
	val := func() float64 {
		e := exps[rng.IntN(len(exps))]
		m := float64(1 + rng.IntN(4))
		if rng.IntN(2) == 0 {
			m = -m
		}
		return math.Ldexp(m, e)
	}
	for seed := range 3000 {
		var s ExactSum
		exact := new(big.Rat)
		n := 1 + rng.IntN(40)
		for i := range n {
			x := val()
			// Now and then exactly the value that makes the sum cross or
			// touch zero, or land on a power of two (all ones or all zeros
			// below it: the longest carry chains).
			if i > 0 && rng.IntN(5) == 0 {
				f, _ := exact.Float64()
				switch rng.IntN(3) {
				case 0:
					x = -f
				case 1:
					x = -f + math.Ldexp(1, exps[rng.IntN(len(exps))])
				default:
					x = -f - math.Ldexp(1, exps[rng.IntN(len(exps))])
				}
				if math.IsInf(x, 0) || math.IsNaN(x) {
					x = val()
				}
			}
			s.Add(x)
			exact.Add(exact, new(big.Rat).SetFloat64(x))
			want, _ := exact.Float64()
			if got := s.Float64(); got != want {
				t.Fatalf("seed %d, after %d adds (last %g): %g, exact %g", seed, i+1, x, got, want)
			}
		}
	}
}
