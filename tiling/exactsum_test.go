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

// TestExactSumLongInlineSequences: long runs of adds into one inline sum
// (the in-place path: values inside the window, both signs, carries and
// borrows across limbs, cancellation to zero, values that leave the window)
// encode and round exactly as the same adds into limbs.
func TestExactSumLongInlineSequences(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	gens := []func() float64{
		func() float64 { return float64(r.IntN(2_000_000)-1_000_000) / 100 },
		func() float64 { return float64(r.Int64N(1<<53)) * float64(1-2*r.IntN(2)) },
		func() float64 { return math.Ldexp(float64(r.Int64N(1<<53)), r.IntN(140)-70) * float64(1-2*r.IntN(2)) },
		func() float64 { return math.Ldexp(1, r.IntN(200)-100) * float64(1-2*r.IntN(2)) },
	}
	inlineEnd := 0
	for trial := range 600 {
		var s, ref ExactSum
		ref.spill()
		var added []float64
		far := -1
		if trial%4 == 0 {
			far = r.IntN(400)
		}
		for n := r.IntN(400) + 1; n > 0; n-- {
			x := gens[r.IntN(len(gens))]()
			if n == far {
				x = r.NormFloat64() * math.Ldexp(1, r.IntN(1800)-900) // far out: spills
			}
			if r.IntN(8) == 0 && len(added) > 0 {
				x = -added[r.IntN(len(added))] // cancel an earlier value
			}
			added = append(added, x)
			s.Add(x)
			ref.Add(x)
		}
		if s.l == nil {
			inlineEnd++
		}
		if got, want := s.AppendBinary(nil), ref.AppendBinary(nil); string(got) != string(want) {
			t.Fatalf("trial %d: encoding %x, limbs give %x", trial, got, want)
		}
		if g, w := s.Float64(), ref.Float64(); g != w {
			t.Fatalf("trial %d: %v, limbs give %v", trial, g, w)
		}
		if s.IsZero() != ref.IsZero() {
			t.Fatalf("trial %d: IsZero %v, limbs give %v", trial, s.IsZero(), ref.IsZero())
		}
	}
	if inlineEnd < 200 {
		t.Fatalf("only %d of 600 sums ended inline: the trials miss the in-place path", inlineEnd)
	}
	// Borrows down to zero and back across every limb of the window.
	var s, ref ExactSum
	ref.spill()
	for _, x := range []float64{1, -math.Ldexp(1, 150), math.Ldexp(1, 150), -1, -1, 0.5, math.Ldexp(1, 64), -math.Ldexp(1, 64)} {
		s.Add(x)
		ref.Add(x)
		if got, want := s.AppendBinary(nil), ref.AppendBinary(nil); string(got) != string(want) {
			t.Fatalf("after %v: encoding %x, limbs give %x", x, got, want)
		}
	}
}
