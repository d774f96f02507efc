package tiling

import (
	"bytes"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

// ratRef is num/den·2^exp correctly rounded by big.Rat.
func ratRef(num, den *big.Int, exp int) float64 {
	r := new(big.Rat).SetFrac(num, den)
	if exp >= 0 {
		r.Mul(r, new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), uint(exp))))
	} else {
		r.Quo(r, new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), uint(-exp))))
	}
	f, _ := r.Float64()
	return f
}

func randBig(r *rand.Rand, bits int) *big.Int {
	z := new(big.Int)
	for range (bits + 63) / 64 {
		z.Lsh(z, 64)
		z.Or(z, new(big.Int).SetUint64(r.Uint64()))
	}
	return z.Rsh(z, uint(r.IntN(64)+64*((bits+63)/64)-bits))
}

func TestRatioRoundsOnce(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 20_000 {
		num, den := randBig(r, 1+r.IntN(300)), randBig(r, 1+r.IntN(130))
		if den.Sign() == 0 {
			den.SetInt64(1)
		}
		if trial%7 == 0 { // exact ties and exact dyadics
			num.Mul(den, big.NewInt(int64(r.IntN(1<<20)*2+1)))
		}
		exp := r.IntN(2600) - 1900 // subnormals, normals and overflow
		if got, want := ratio(num, den, exp), ratRef(num, den, exp); math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("%v/%v·2^%d: got %v, big.Rat %v", num, den, exp, got, want)
		}
	}
}

// sqrtRef is √(num/den·2^exp) correctly rounded: the float64 c with
// ((c⁻+c)/2)² < x < ((c+c⁺)/2)², by exact comparisons.
func sqrtRef(t *testing.T, num, den *big.Int, exp int) float64 {
	x := new(big.Rat).SetFrac(num, den)
	p := new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), uint(abs(exp))))
	if exp >= 0 {
		x.Mul(x, p)
	} else {
		x.Quo(x, p)
	}
	g, _ := new(big.Float).SetPrec(200).Sqrt(new(big.Float).SetPrec(200).SetRat(x)).Float64()
	if math.IsInf(g, 0) {
		return g
	}
	sq := func(a, b float64) *big.Rat {
		m := new(big.Rat).Add(new(big.Rat).SetFloat64(a), new(big.Rat).SetFloat64(b))
		m.Quo(m, big.NewRat(2, 1))
		return m.Mul(m, m)
	}
	for range 4 {
		if up := math.Nextafter(g, math.Inf(1)); !math.IsInf(up, 0) && sq(g, up).Cmp(x) < 0 {
			g = up
			continue
		}
		if down := math.Nextafter(g, 0); g > 0 && sq(down, g).Cmp(x) > 0 {
			g = down
			continue
		}
		return g
	}
	t.Fatalf("no convergence")
	return 0
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func TestSqrtRatioRoundsOnce(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 5_000 {
		num, den := randBig(r, 1+r.IntN(300)), randBig(r, 1+r.IntN(130))
		if den.Sign() == 0 {
			den.SetInt64(1)
		}
		exp := 2 * (r.IntN(1800) - 1200)
		if got, want := sqrtRatio(num, den, exp), sqrtRef(t, num, den, exp); math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("√(%v/%v·2^%d): got %v, want %v", num, den, exp, got, want)
		}
	}
	// Perfect squares are exact.
	for _, x := range []float64{1, 2, 0.75, 1e300, 5e-324, 3e-160} {
		f := new(big.Float).SetFloat64(x)
		mant := new(big.Float)
		e := f.MantExp(mant)
		m, _ := mant.SetMantExp(mant, 60).Int(nil) // x = m·2^(e−60)
		sq := new(big.Int).Mul(m, m)
		if got := sqrtRatio(sq, big.NewInt(1), 2*(e-60)); got != x {
			t.Errorf("√(%v²) = %v", x, got)
		}
	}
}

func TestSquareSumIsExact(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for trial := range 2000 {
		ref := new(big.Int)
		var parts []squareSum
		for range 1 + r.IntN(4) {
			var s squareSum
			for range r.IntN(6) {
				x := randNumber(r, nil)
				s.addSquare(x)
				f := new(big.Float).SetFloat64(x)
				xi, _ := f.SetMantExp(f, sumShift).Int(nil)
				ref.Add(ref, xi.Mul(xi, xi))
			}
			if r.IntN(2) == 0 {
				d, rest, err := decodeSquareSum(s.appendBinary(nil))
				if err != nil || len(rest) != 0 {
					t.Fatal(err)
				}
				s = d
			}
			parts = append(parts, s)
		}
		var sum squareSum
		for _, i := range r.Perm(len(parts)) {
			sum.merge(&parts[i])
		}
		enc := sum.appendBinary(nil)
		if got := bigOfEncoding(enc); got.Cmp(ref) != 0 {
			t.Fatalf("trial %d: %v, want %v", trial, got, ref)
		}
		var fresh squareSum
		d, _, _ := decodeSquareSum(enc)
		fresh.merge(&d)
		if !bytes.Equal(fresh.appendBinary(nil), enc) {
			t.Fatalf("trial %d: re-merge changed the encoding", trial)
		}
	}
}

func momentsOf(xs ...float64) *momentsState {
	s := new(momentsState)
	for _, x := range xs {
		s.add(nil, &Input{Kind: Number, Num: x})
	}
	return s
}

func TestMomentsEdgeCases(t *testing.T) {
	max := math.MaxFloat64
	val := func(s *momentsState, fn Function) any { return s.value(&Feature{Function: fn}) }
	for _, tc := range []struct {
		name string
		xs   []float64
		want map[Function]any
	}{
		{"no values: all null", nil, map[Function]any{VarPop: nil, VarSamp: nil, StddevPop: nil, StddevSamp: nil}},
		{"one value: population 0, sample null", []float64{3}, map[Function]any{VarPop: 0.0, VarSamp: nil, StddevPop: 0.0, StddevSamp: nil}},
		{"equal values: exactly 0", []float64{0.1, 0.1, 0.1}, map[Function]any{VarPop: 0.0, VarSamp: 0.0, StddevPop: 0.0}},
		{"1, 2, 3, 4", []float64{1, 2, 3, 4}, map[Function]any{VarPop: 1.25, VarSamp: 5.0 / 3, StddevPop: math.Sqrt(1.25)}},
		{"large offset cancels exactly", []float64{1e15 + 2, 1e15 + 4, 1e15 + 6}, map[Function]any{VarPop: 8.0 / 3, VarSamp: 4.0}},
		{"squares beyond float64: variance +Inf is null, stddev finite", []float64{-max, max},
			map[Function]any{VarPop: nil, StddevPop: max, VarSamp: nil, StddevSamp: nil}},
		{"values past 1.3e154 square exactly", []float64{1e200, -1e200}, map[Function]any{VarPop: nil, StddevPop: 1e200}},
		{"subnormals: the root of 2^-2150 ties to even, 0", []float64{5e-324, 0}, map[Function]any{VarPop: 0.0, StddevPop: 0.0, StddevSamp: 5e-324}},
	} {
		s := momentsOf(tc.xs...)
		for fn, want := range tc.want {
			if got := val(s, fn); !identical(got, want) {
				t.Errorf("%s: %s = %#v, want %#v", tc.name, fn, got, want)
			}
		}
	}
}
