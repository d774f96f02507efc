package tiling

import (
	"math/big"
	"math/rand/v2"
	"testing"
)

func TestExactSumMatchesBigFloat(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 200; trial++ {
		var s ExactSum
		ref := new(big.Float).SetPrec(4000)
		n := r.IntN(50) + 1
		for i := 0; i < n; i++ {
			var x float64
			switch r.IntN(4) {
			case 0:
				x = float64(r.IntN(2000)-1000) / 100
			case 1:
				x = r.NormFloat64() * 1e300
			case 2:
				x = r.NormFloat64() * 1e-300
			default:
				x = r.NormFloat64()
			}
			s.Add(x)
			ref.Add(ref, new(big.Float).SetFloat64(x))
		}
		want, _ := ref.Float64()
		if got := s.Float64(); got != want {
			t.Fatalf("trial %d: got %v want %v", trial, got, want)
		}
		enc := s.AppendBinary(nil)
		d, rest, err := decodeExactSum(enc)
		if err != nil || len(rest) != 0 || d.Float64() != want {
			t.Fatalf("round trip: %v %d %v", err, len(rest), d.Float64())
		}
	}
}
