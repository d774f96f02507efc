package tiling

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestExactSumInlineMatchesLimbs: sums kept inline (and spilled to limbs
// when a value falls out of reach) encode exactly as sums kept in limbs from
// the start, through random merge trees of partial sums that are inline,
// in limbs or packed (decoded), with values of every magnitude, both signs,
// cancellations to zero and powers of two at limb edges.
func TestExactSumInlineMatchesLimbs(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	gens := []func() float64{
		func() float64 { return float64(r.IntN(2_000_000)-1_000_000) / 100 },
		func() float64 { return math.Ldexp(1, 64*r.IntN(32)-1074+r.IntN(3)-1) * float64(1-2*r.IntN(2)) },
		func() float64 { return r.NormFloat64() * math.Ldexp(1, r.IntN(400)-200) },
		func() float64 { return r.NormFloat64() * math.Ldexp(1, r.IntN(2000)-1000) },
		func() float64 { return math.Float64frombits(r.Uint64()&^(0x7ff<<52) | uint64(r.IntN(0x7ff))<<52) },
	}
	inlineSeen, spilled := 0, 0
	for trial := range 4000 {
		gen := gens[trial%len(gens)]
		var ref ExactSum
		ref.spill() // limbs from the start: the former representation
		parts := make([]ExactSum, r.IntN(6)+1)
		for i := range parts {
			for n := r.IntN(6); n > 0; n-- {
				x := gen()
				if r.IntN(4) == 0 && n > 1 {
					// a value and its negation: the sum may cancel to zero
					parts[i].Add(x)
					ref.Add(x)
					x = -x
					n--
				}
				parts[i].Add(x)
				ref.Add(x)
			}
			switch r.IntN(4) {
			case 0:
				d, _, err := decodeExactSum(parts[i].AppendBinary(nil))
				if err != nil {
					t.Fatal(err)
				}
				parts[i] = d
			case 1:
				if parts[i].l == nil && parts[i].packed == nil {
					parts[i].spill()
				}
			}
			if parts[i].l == nil && parts[i].packed == nil {
				inlineSeen++
			} else if parts[i].l != nil {
				spilled++
			}
		}
		for len(parts) > 1 {
			i, j := r.IntN(len(parts)), r.IntN(len(parts))
			if i == j {
				continue
			}
			parts[i].Merge(&parts[j])
			checkWindow(t, &parts[i])
			parts = append(parts[:j], parts[j+1:]...)
		}
		got, want := parts[0].AppendBinary(nil), ref.AppendBinary(nil)
		if string(got) != string(want) {
			t.Fatalf("trial %d: encoding %x, limbs give %x", trial, got, want)
		}
		if g, w := parts[0].Float64(), ref.Float64(); g != w && !(math.IsNaN(g) && math.IsNaN(w)) {
			t.Fatalf("trial %d: %v, limbs give %v", trial, g, w)
		}
		if parts[0].IsZero() != ref.IsZero() {
			t.Fatalf("trial %d: IsZero %v, limbs give %v", trial, parts[0].IsZero(), ref.IsZero())
		}
	}
	if inlineSeen < 1000 || spilled < 500 {
		t.Fatalf("inline %d, spilled %d: the trials do not exercise both forms", inlineSeen, spilled)
	}
}

// TestExactSumInlineSmallSums: sums of amounts stay inline.
func TestExactSumInlineSmallSums(t *testing.T) {
	var a, b ExactSum
	for i := range 1000 {
		a.Add(float64(i%1997-900) / 100)
		b.Add(float64(i) * 1e6)
	}
	a.Merge(&b)
	if a.l != nil || b.l != nil {
		t.Fatal("sums of cents to billions spilled to limbs")
	}
}
