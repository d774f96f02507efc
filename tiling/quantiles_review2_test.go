package tiling

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestReview2QuantileVarintEdges: DDSketches whose bins' counts sit at the
// varint edges (1, 127, 128, 129, 16383, 16384, 16385, 2^21) and whose keys
// lie one to thousands of bins apart, decoded (the decoder's and the
// walk's written-out one- and two-byte varints, at the end of the buffer
// and followed by further bytes) and merged in any order, give the values
// and the bytes of one sketch of every value; each decoded tile's value is
// its built state's. Values of a narrow positive range, whose merged value
// the counting walk reads, and of any magnitude and sign.
func TestReview2QuantileVarintEdges(t *testing.T) {
	f := benchFeature(ApproxPercentile, Hour)
	f.Percentiles = []float64{0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1}
	v := newTestView(t, Minute, MinTime, f)
	if len(v.aggs) != 1 || v.aggs[0].kind != kindQuantiles {
		t.Fatalf("layout %+v", v.aggs)
	}
	a := &v.aggs[0]
	fe := &v.Features[0]
	r := rand.New(rand.NewPCG(211, 212))
	edges := []int{1, 2, 126, 127, 128, 129, 255, 256, 16383, 16384, 16385}
	add := func(s State, x float64, n int) {
		in := Input{Kind: Number, Num: x}
		for range n {
			s.add(nil, &in)
		}
	}
	for round := range 30 {
		type group struct {
			x float64
			n int
		}
		var groups []group
		// Even rounds: positive values in a narrow range (and zeros),
		// which a merged sketch's value counts in an array (walkCounts);
		// odd rounds: any magnitude and sign (the merging walk).
		narrow := round%2 == 0
		for range 1 + r.IntN(12) {
			var x float64
			switch r.IntN(6) {
			case 0:
				x = 0
			case 1:
				// Next to an earlier value: keys one or a few bins apart.
				if len(groups) > 0 {
					x = groups[r.IntN(len(groups))].x * (1 + float64(1+r.IntN(5))/100)
					break
				}
				fallthrough
			default:
				x = math.Pow(10, -6+15*r.Float64())
				if r.IntN(3) == 0 {
					x = -x
				}
				if narrow {
					x = 1 + 99*r.Float64()
				}
			}
			n := edges[r.IntN(len(edges))]
			if round == 7 && len(groups) == 0 {
				n = 1 << 21 // one count of four bytes
			}
			groups = append(groups, group{x, n})
		}
		ref := v.newStates()[0]
		ntiles := 1 + r.IntN(4)
		tiles := make([]State, ntiles)
		for i := range tiles {
			tiles[i] = v.newStates()[0]
		}
		for _, g := range groups {
			add(ref, g.x, g.n)
			// A group in one tile, or split between two (counts on either
			// side of an edge).
			i := r.IntN(ntiles)
			if k := r.IntN(g.n + 1); ntiles > 1 && r.IntN(2) == 0 {
				add(tiles[i], g.x, k)
				add(tiles[(i+1)%ntiles], g.x, g.n-k)
				continue
			}
			add(tiles[i], g.x, g.n)
		}
		wantVal := fmt.Sprintf("%s", ref.value(fe))
		wantEnc := ref.appendBinary(nil)
		acc := v.newStates()[0]
		for _, i := range r.Perm(ntiles) {
			enc := tiles[i].appendBinary(nil)
			tail := r.IntN(2) == 0
			if tail {
				enc = append(enc, 0x81, 0x82, 0x03) // the next state's bytes
			}
			// Decoded twice: a value read from the packed bins (the walk),
			// and a merge of packed bins (the list reader).
			var st [2]State
			for k := range st {
				var rest []byte
				var err error
				st[k], rest, err = decodeStateIn(a, bytes.Clone(enc), nil)
				if err != nil || tail && len(rest) != 3 || !tail && len(rest) != 0 {
					t.Fatalf("round %d tile %d: decode: %v, %d bytes left", round, i, err, len(rest))
				}
			}
			if g, w := fmt.Sprintf("%s", st[0].value(fe)), fmt.Sprintf("%s", tiles[i].value(fe)); g != w {
				t.Fatalf("round %d tile %d: decoded %s, built %s", round, i, g, w)
			}
			acc.merge(st[1])
		}
		if g := fmt.Sprintf("%s", acc.value(fe)); g != wantVal {
			t.Fatalf("round %d: merged %s, one sketch %s", round, g, wantVal)
		}
		if g := acc.appendBinary(nil); !bytes.Equal(g, wantEnc) {
			t.Fatalf("round %d: the merged sketch encodes differently from one sketch", round)
		}
	}
}
