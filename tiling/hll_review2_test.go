package tiling

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// review2KeyFor returns a sparse key whose register at precision p is i
// with value r (1 ≤ r ≤ 65−p).
func review2KeyFor(i uint32, r uint8, p uint8) uint32 {
	lowBits := hllSparseBits - uint32(p)
	if uint32(r) <= lowBits {
		idx := i<<lowBits | 1<<(lowBits-uint32(r))
		return idx<<6 | 1
	}
	return (i<<lowBits)<<6 | (uint32(r) - lowBits)
}

// TestReview2HLLHistogramRaisedBoundary: the lazy histogram (marks on the
// stack up to precision 12, list of raised registers on the stack up to
// 128) equals the folded registers' at every precision 4–16, with exactly
// 0, 1, 127, 128, 129 and some hundreds of registers raised by pending
// keys, and keys raising a register again (or not) after the list left the
// stack; dense registers alone or with up to maxMore further arrays.
func TestReview2HLLHistogramRaisedBoundary(t *testing.T) {
	r := rand.New(rand.NewPCG(201, 202))
	for p := uint8(MinPrecision); p <= MaxPrecision; p++ {
		for _, want := range []int{0, 1, 127, 128, 129, 300} {
			if want > 1<<p {
				continue
			}
			for _, nmore := range []int{0, 1, maxMore} {
				regs := func() []byte {
					d := make([]byte, 1<<p)
					for i := range d {
						d[i] = uint8(1 + r.IntN(3)) // ≥ 1: a key of ρ 1 raises nothing
					}
					return d
				}
				s := &hllState{p: p, dense: regs(), sharedDense: true}
				for range nmore {
					s.more = append(s.more, regs())
				}
				// want distinct registers, each raised to 5..12 by its
				// first key; then keys on them again (higher, lower, equal)
				// and keys on other registers that raise nothing.
				idx := r.Perm(1 << p)
				raisedIdx := idx[:want]
				var pend []uint32
				for _, i := range raisedIdx {
					pend = append(pend, review2KeyFor(uint32(i), uint8(5+r.IntN(8)), p))
				}
				for range 3 * want {
					i := raisedIdx[r.IntN(want)]
					pend = append(pend, review2KeyFor(uint32(i), uint8(1+r.IntN(14)), p))
				}
				for _, i := range idx[want:min(len(idx), want+50)] {
					pend = append(pend, review2KeyFor(uint32(i), 1, p)) // raises nothing
				}
				// The first want keys in order raise want registers before
				// any repeat: repeats come after the list spilled.
				for k, key := range pend {
					gi, gr := hllRegister(key, p)
					if k < want && (gi != raisedIdx[k] || gr < 5) {
						t.Fatalf("p=%d: key %x lands in %d with %d", p, key, gi, gr)
					}
				}
				r.Shuffle(len(pend)-want, func(a, b int) {
					pend[want+a], pend[want+b] = pend[want+b], pend[want+a]
				})
				s.work = &hllWork{pending: pend}
				got := s.histogram()

				f := &hllState{p: p, dense: slices.Clone(s.dense), sharedDense: true, more: s.more}
				f.work = &hllWork{pending: slices.Clone(pend)}
				f.fold()
				// The registers the keys raised, counted against the
				// max of dense and more before the keys.
				base := slices.Clone(s.dense)
				for _, m := range s.more {
					for i := range base {
						base[i] = max(base[i], m[i])
					}
				}
				raised := 0
				for i := range base {
					if f.dense[i] != base[i] {
						raised++
					}
				}
				if raised != want {
					t.Fatalf("p=%d want=%d: %d registers raised: the test misses the boundary", p, want, raised)
				}
				if w := registerHistogram(f.dense); got != w {
					t.Fatalf("p=%d raised=%d more=%d: histogram %v, folded %v", p, raised, nmore, got, w)
				}
				if want > 0 && got == registerHistogram(base) {
					t.Fatalf("p=%d: the pending keys changed no count", p)
				}
			}
		}
	}
}

// TestReview2HLLDecodedMixes: at every precision, a sketch merged from
// decoded tiles — packed sparse ones and shared dense ones, in random
// order, so that sparse keys wait pending beside shared registers — gives
// the estimate and the bytes of one sketch of every value, before and after
// it is encoded.
func TestReview2HLLDecodedMixes(t *testing.T) {
	r := rand.New(rand.NewPCG(203, 204))
	for p := uint8(MinPrecision); p <= MaxPrecision; p++ {
		a := &aggSpec{kind: kindHLL, n: int(p), column: -1}
		for round := range 6 {
			sparseMax := hllSparseMax(int(p))
			var tiles [][]uint64
			var all []uint64
			for range 2 + r.IntN(6) {
				var n int
				switch r.IntN(3) {
				case 0:
					n = 1 + r.IntN(min(sparseMax, 40)) // sparse
				case 1:
					n = sparseMax + 1 + r.IntN(sparseMax+50) // dense
				default:
					n = 1 + r.IntN(3) // a few keys
				}
				var hs []uint64
				for range n {
					h := r.Uint64()
					if len(all) > 0 && r.IntN(4) == 0 {
						h = all[r.IntN(len(all))] // a value seen in another tile
					}
					hs = append(hs, h)
				}
				tiles = append(tiles, hs)
				all = append(all, hs...)
			}
			ref := &hllState{p: p}
			for _, h := range all {
				ref.addHash(h)
			}
			wantEst := ref.estimate()
			wantEnc := ref.appendBinary(nil)

			var encs [][]byte
			for _, hs := range tiles {
				s := &hllState{p: p}
				for _, h := range hs {
					s.addHash(h)
				}
				encs = append(encs, s.appendBinary(nil))
			}
			kept := make([][]byte, len(encs))
			for i, e := range encs {
				kept[i] = bytes.Clone(e)
			}
			acc := &hllState{p: p}
			for _, i := range r.Perm(len(encs)) {
				st, rest, err := decodeHLL(a, encs[i], &hllState{})
				if err != nil || len(rest) != 0 {
					t.Fatalf("p=%d: decode: %v, %d left", p, err, len(rest))
				}
				acc.merge(st)
			}
			what := fmt.Sprintf("p=%d round %d (%d tiles, %d values)", p, round, len(tiles), len(all))
			if got := acc.estimate(); got != wantEst {
				t.Fatalf("%s: estimate %d, one sketch's %d", what, got, wantEst)
			}
			if got := acc.appendBinary(nil); !bytes.Equal(got, wantEnc) {
				t.Fatalf("%s: merged sketch encodes differently from one sketch", what)
			}
			if got := acc.estimate(); got != wantEst {
				t.Fatalf("%s: estimate after encoding %d, want %d", what, got, wantEst)
			}
			for i := range encs {
				if !bytes.Equal(encs[i], kept[i]) {
					t.Fatalf("%s: a merge wrote into decoded tile %d's bytes", what, i)
				}
			}
		}
	}
}
