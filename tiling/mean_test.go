package tiling

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

// TestMeanIsRoundedOnce: mean is the exact sum over the count rounded once,
// against big.Rat, including sums beyond the float64 range whose mean is
// within it and sums that float64 cannot hold exactly.
func TestMeanIsRoundedOnce(t *testing.T) {
	cases := [][]float64{
		{715201.1275729511, 0.07222892704089773, 555.0283241728524, 7.088119931356071e-10, 3.595384031555329e+07},
		{math.MaxFloat64, math.MaxFloat64},
		{math.MaxFloat64, math.Ldexp(1, 970)},
		{math.MaxFloat64, math.MaxFloat64, -math.MaxFloat64, math.MaxFloat64},
		{5e-324, 5e-324, 5e-324},
		{-1e-323, 5e-324},
		{0.1, 0.2, 0.3},
		{1e16, 1, -1e16, 1},
		{-0.0},
	}
	// Random amounts over the whole range, sums near powers of two (where
	// meanNear must step aside) and cents (the common case, its fast path).
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 30000 {
		n := 1 + r.IntN(12)
		xs := make([]float64, n)
		for j := range xs {
			switch i % 3 {
			case 0:
				xs[j] = randNumber(r, xs[:j])
			case 1:
				xs[j] = math.Ldexp(1, r.IntN(60)-30) * (1 + float64(r.IntN(5)-2)*0x1p-52)
			default:
				xs[j] = float64(r.IntN(2000000)-1000000) / 100
			}
		}
		cases = append(cases, xs)
	}
	cases = append(cases, []float64{16383.999999999996, 4096, 4096.000000000002})
	for _, xs := range cases {
		var s meanState
		exact := new(big.Rat)
		for _, x := range xs {
			s.add(nil, &Input{Kind: Number, Num: x})
			exact.Add(exact, new(big.Rat).SetFloat64(x))
		}
		want, _ := exact.Quo(exact, big.NewRat(int64(len(xs)), 1)).Float64()
		got := s.value(nil)
		if math.IsInf(want, 0) {
			if got != nil {
				t.Fatalf("mean of %v: %v, want null", xs, got)
			}
			continue
		}
		if g, ok := got.(float64); !ok || g != want {
			t.Fatalf("mean of %v: %v, want %v", xs, got, want)
		}
	}
}
