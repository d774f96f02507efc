package tiling

import (
	"math"
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

// TestExactSumMergeTreesMatchBigFloat merges random partial sums of mixed
// signs and magnitudes, some through their encoding, in random trees, and
// checks value and encoding against math/big: the limb window tracking must
// never lose a carry or a borrow.
func TestExactSumMergeTreesMatchBigFloat(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 9))
	gen := func() float64 {
		switch r.IntN(5) {
		case 0:
			return -float64(r.IntN(1000))
		case 1:
			return r.NormFloat64() * 1e300
		case 2:
			return -r.NormFloat64() * 1e-300
		case 3:
			return float64(r.IntN(2000)-1000) / 100
		default:
			return r.NormFloat64() * float64(uint64(1)<<r.IntN(60))
		}
	}
	for trial := 0; trial < 2000; trial++ {
		ref := new(big.Float).SetPrec(4000)
		parts := make([]ExactSum, r.IntN(6)+1)
		for i := range parts {
			for n := r.IntN(5); n > 0; n-- {
				x := gen()
				parts[i].Add(x)
				ref.Add(ref, new(big.Float).SetFloat64(x))
			}
			if r.IntN(2) == 0 {
				d, _, err := decodeExactSum(parts[i].AppendBinary(nil))
				if err != nil {
					t.Fatal(err)
				}
				parts[i] = d
			}
		}
		for len(parts) > 1 {
			i, j := r.IntN(len(parts)), r.IntN(len(parts))
			if i == j {
				continue
			}
			parts[i].Merge(&parts[j])
			parts = append(parts[:j], parts[j+1:]...)
		}
		want, _ := ref.Float64()
		got := parts[0].Float64()
		if got != want && !(math.IsInf(want, 0) && math.IsInf(got, 0)) {
			t.Fatalf("trial %d: got %v want %v", trial, got, want)
		}
		var fresh ExactSum
		full, _, _ := decodeExactSum(parts[0].AppendBinary(nil))
		fresh.Merge(&full)
		if string(fresh.AppendBinary(nil)) != string(parts[0].AppendBinary(nil)) {
			t.Fatalf("trial %d: re-merge changed the encoding", trial)
		}
	}
}

func checkWindow(t *testing.T, s *ExactSum) {
	t.Helper()
	if s.l == nil {
		return
	}
	fill := uint64(0)
	if s.l[sumLimbs-1]>>63 == 1 {
		fill = ^uint64(0)
	}
	for i := 0; i < s.lo && i < sumLimbs; i++ {
		if s.l[i] != 0 {
			t.Fatalf("limb %d below lo %d is %x", i, s.lo, s.l[i])
		}
	}
	for i := s.hi; i < sumLimbs; i++ {
		if s.l[i] != fill {
			t.Fatalf("limb %d at or above hi %d is %x, fill %x", i, s.hi, s.l[i], fill)
		}
	}
}

func TestExactSumWindowInvariant(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for trial := 0; trial < 3000; trial++ {
		var a, b ExactSum
		for n := r.IntN(8); n > 0; n-- {
			x := r.NormFloat64() * math.Ldexp(1, r.IntN(200)-100)
			if r.IntN(2) == 0 {
				a.Add(x)
				checkWindow(t, &a)
			} else {
				b.Add(-x)
				checkWindow(t, &b)
			}
		}
		a.Merge(&b)
		checkWindow(t, &a)
		b.Merge(&a)
		checkWindow(t, &b)
	}
}
