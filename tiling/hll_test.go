package tiling

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/axiomhq/hyperloglog"
)

// hllOf returns a sketch of precision p of the values v0 … v(n−1).
func hllOf(p, n int, seed uint64) *hllState {
	s := &hllState{p: uint8(p)}
	for i := range n {
		in := Input{Kind: Other, Raw: fmt.Appendf(nil, `"v%d-%d"`, seed, i)}
		s.add(nil, &in)
	}
	return s
}

// TestHLLAccuracy checks the stated error bounds against exact counts: near
// exact while sparse, within 4 standard errors (1.04/√m) when dense, over
// several seeds.
func TestHLLAccuracy(t *testing.T) {
	for _, p := range []int{4, 8, 12, 14} {
		m := 1 << p
		se := 1.04 / math.Sqrt(float64(m))
		var sumErr float64
		var trials int
		for _, n := range []int{1, 7, 100, 1000, 3000, 10_000, 100_000} {
			if (testing.Short() || raceEnabled) && n > 10_000 {
				continue
			}
			for seed := range uint64(4) {
				s := hllOf(p, n, seed)
				got := float64(s.estimate())
				rel := (got - float64(n)) / float64(n)
				tol := 4 * se
				if s.dense == nil {
					tol = 0.005 + 1/float64(n)
				} else {
					sumErr += rel
					trials++
				}
				if math.Abs(rel) > tol {
					t.Errorf("p=%d n=%d seed %d: estimate %v, relative error %.4f beyond %.4f (dense %v)", p, n, seed, got, rel, tol, s.dense != nil)
				}
			}
		}
		if trials > 0 && math.Abs(sumErr/float64(trials)) > 2*se {
			t.Errorf("p=%d: mean relative error %.4f: biased", p, sumErr/float64(trials))
		}
	}
}

// TestHLLMatchesAxiom compares dense estimates with
// github.com/axiomhq/hyperloglog given the same hashes: both map a hash to
// the same register, so only the estimators (Ertl's here, LogLog-Beta there)
// differ.
func TestHLLMatchesAxiom(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for _, p := range []int{10, 12, 14} {
		for _, n := range []int{5000, 50_000, 500_000} {
			if (testing.Short() || raceEnabled) && n > 50_000 {
				continue
			}
			ax, err := hyperloglog.NewSketch(uint8(p), false)
			if err != nil {
				t.Fatal(err)
			}
			s := &hllState{p: uint8(p)}
			for range n {
				h := r.Uint64()
				ax.InsertHash(h)
				s.addHash(h)
			}
			mine, theirs := float64(s.estimate()), float64(ax.Estimate())
			if d := math.Abs(mine-theirs) / theirs; d > 1.04/math.Sqrt(float64(uint(1)<<p)) {
				t.Errorf("p=%d n=%d: estimate %v, axiomhq %v", p, n, mine, theirs)
			}
		}
	}
}

// TestHLLSparseToDense: a sketch that turned dense holds the registers a
// dense sketch of the same hashes holds, however it got there.
func TestHLLSparseToDense(t *testing.T) {
	for _, p := range []int{4, 10} {
		r := rand.New(rand.NewPCG(uint64(p), 9))
		hashes := make([]uint64, 3*hllSparseMax(p)+7)
		for i := range hashes {
			hashes[i] = r.Uint64()
		}
		dense := &hllState{p: uint8(p), dense: make([]byte, 1<<p)}
		for _, h := range hashes {
			dense.addHash(h)
		}
		// Many small sketches merged in a random order.
		var parts []*hllState
		for i := 0; i < len(hashes); {
			s := &hllState{p: uint8(p)}
			for k := r.IntN(5); k >= 0 && i < len(hashes); k-- {
				s.addHash(hashes[i])
				i++
			}
			parts = append(parts, s)
		}
		acc := &hllState{p: uint8(p)}
		for _, i := range r.Perm(len(parts)) {
			acc.merge(parts[i])
		}
		if a, b := acc.appendBinary(nil), dense.appendBinary(nil); !bytes.Equal(a, b) {
			t.Errorf("p=%d: merged %x, dense %x", p, a, b)
		}
	}
	// The register of a sparse key is the register of its hash.
	r := rand.New(rand.NewPCG(1, 1))
	for range 100_000 {
		h := r.Uint64() >> r.IntN(64) // many leading zeros too
		for _, p := range []uint8{4, 12, 16} {
			i, rho := hllRegister(hllKey(h), p)
			wantI := int(h >> (64 - p))
			wantRho := uint8(min(64-int(p), 64-int(p)-bitsLen(h<<p>>p, 64-int(p)))) + 1
			if i != wantI || rho != wantRho {
				t.Fatalf("h=%x p=%d: register %d ρ %d, want %d ρ %d", h, p, i, rho, wantI, wantRho)
			}
		}
	}
}

// bitsLen is the bit length of x, which fits in w bits.
func bitsLen(x uint64, w int) int {
	n := 0
	for x != 0 {
		x >>= 1
		n++
	}
	return min(n, w)
}
