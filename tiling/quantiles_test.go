package tiling

import (
	"encoding/json"
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestBinsPerOctave(t *testing.T) {
	for _, a := range []float64{MinAccuracy, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3333, MaxAccuracy} {
		k := binsPerOctave(a)
		if octaveAccuracy(k) > a || k > 1 && octaveAccuracy(k-1) <= a {
			t.Errorf("accuracy %v: %d bins per octave (accuracy %v; %d gives %v)", a, k, octaveAccuracy(k), k-1, octaveAccuracy(k-1))
		}
	}
	if k := binsPerOctave(DefaultAccuracy); k != 35 {
		t.Errorf("default accuracy: %d bins per octave, want 35", k)
	}
}

// TestQuantileMappingIsExact checks bins against their definition in exact
// arithmetic: x is in bin e·K + j iff 2^(eK+j) ≤ x^K < 2^(eK+j+1).
func TestQuantileMappingIsExact(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, k := range []int{1, 2, 7, 35, 347} {
		m := newQuantileMapping(k)
		for trial := range 3000 {
			var x float64
			switch trial % 3 {
			case 0:
				x = math.Abs(math.Float64frombits(r.Uint64()))
			case 1: // on and next to the thresholds
				j := 1 + r.IntN(max(k-1, 1))
				if k == 1 {
					j = 0
				}
				f := uint64(0)
				if j > 0 {
					f = m.thresholds[j-1]
				}
				x = math.Ldexp(1+float64(int64(f)+int64(r.IntN(3)-1))/(1<<52), r.IntN(200)-100)
			default:
				x = math.Float64frombits(r.Uint64N(1 << 52)) // subnormal
			}
			if x == 0 || math.IsNaN(x) || math.IsInf(x, 0) {
				continue
			}
			i := m.index(x)
			// x = M·2^E exactly.
			mant, e := math.Frexp(x)
			M := new(big.Int).SetUint64(uint64(mant * (1 << 53)))
			E := e - 53
			xk := new(big.Int).Exp(M, big.NewInt(int64(k)), nil) // x^K = xk·2^(E·K)
			// Compare xk·2^(EK) with 2^i and 2^(i+1) as integers.
			cmp := func(p int64) int {
				a, b := new(big.Int).Set(xk), big.NewInt(1)
				if sh := int64(E*k) - p; sh >= 0 {
					a.Lsh(a, uint(sh))
				} else {
					b.Lsh(b, uint(-sh))
				}
				return a.Cmp(b)
			}
			if cmp(i) < 0 || cmp(i+1) >= 0 {
				t.Fatalf("K=%d: %v (%x) in bin %d", k, x, math.Float64bits(x), i)
			}
			// The representative is within the accuracy.
			if v := m.value(i); math.Abs(v-x) > octaveAccuracy(k)*x*(1+1e-12) {
				t.Fatalf("K=%d: %v in bin %d represented by %v: off by %v", k, x, i, v, math.Abs(v-x)/x)
			}
		}
	}
}

func quantilesOf(k, maxBins int, xs []float64) *quantileState {
	s := &quantileState{mapping: newQuantileMapping(k), maxBins: maxBins}
	for _, x := range xs {
		s.add(nil, &Input{Kind: Number, Num: x})
	}
	return s
}

// exactQuantile is the value of rank ⌊q·(n−1)⌋ of sorted xs.
func exactQuantile(sorted []float64, q float64) float64 {
	return sorted[int(math.Floor(q*float64(len(sorted)-1)))]
}

func TestQuantileAccuracy(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	qs := []float64{0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1}
	dists := map[string]func() float64{
		"lognormal amounts": func() float64 { return math.Round(math.Exp(r.NormFloat64()*2+3)*100) / 100 },
		"uniform":           func() float64 { return r.Float64() * 1000 },
		"signed with zeros": func() float64 {
			if r.IntN(10) == 0 {
				return 0
			}
			return r.NormFloat64() * 1e6
		},
		"tiny and huge": func() float64 { return math.Ldexp(r.Float64()+0.5, r.IntN(300)-150) },
	}
	for name, gen := range dists {
		for _, a := range []float64{0.001, 0.01, 0.05} {
			k := binsPerOctave(a)
			xs := make([]float64, 20_000)
			for i := range xs {
				xs[i] = gen()
			}
			s := quantilesOf(k, MaxMaxBins, xs)
			s.normalize()
			slices.Sort(xs)
			keys := map[int64]bool{}
			for _, x := range xs {
				keys[s.mapping.key(x)] = true
			}
			if len(keys) > MaxMaxBins {
				continue // collapsed: TestQuantileCollapse
			}
			for _, q := range qs {
				got, want := s.quantile(q), exactQuantile(xs, q)
				if math.Abs(got-want) > a*math.Abs(want) {
					t.Errorf("%s, accuracy %v (%d bins): p%v = %v, exact %v", name, a, len(s.bins), q, got, want)
				}
			}
			if s.quantile(0) != xs[0] || s.quantile(1) != xs[len(xs)-1] {
				t.Errorf("%s: extremes %v, %v; exact %v, %v", name, s.quantile(0), s.quantile(1), xs[0], xs[len(xs)-1])
			}
		}
	}
}

// TestQuantileCollapse: past maxBins the lowest bins collapse; the count is
// kept and the high percentiles keep their accuracy.
func TestQuantileCollapse(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	xs := make([]float64, 50_000)
	for i := range xs {
		xs[i] = math.Ldexp(1+r.Float64(), r.IntN(200)-100) // 200 octaves: 7000 bins at K=35
	}
	s := quantilesOf(35, 1000, xs)
	s.normalize()
	if len(s.bins) != 1000 || s.n != uint64(len(xs)) {
		t.Fatalf("%d bins, count %d", len(s.bins), s.n)
	}
	var total uint64
	for _, b := range s.bins {
		total += b.count
	}
	if total != s.n {
		t.Errorf("bins hold %d, count %d", total, s.n)
	}
	slices.Sort(xs)
	for _, q := range []float64{0.9, 0.99, 0.999} {
		if got, want := s.quantile(q), exactQuantile(xs, q); math.Abs(got-want) > 0.01*want {
			t.Errorf("p%v = %v, exact %v", q, got, want)
		}
	}
	if got, want := s.quantile(0.5), exactQuantile(xs, 0.5); got <= want {
		t.Errorf("collapsed median %v is not above the exact %v", got, want)
	}
}

func TestQuantileValueShape(t *testing.T) {
	s := quantilesOf(35, 2048, []float64{1, 2, 3, 4, 100})
	f := &Feature{Function: ApproxPercentile, Percentiles: []float64{0.99, 0, 0.5, 1e-7}}
	got := string(s.value(f).(json.RawMessage))
	if want := `{"0.99":4.039607115812012,"0":1,"0.5":3.001416552226815,"1e-7":1}`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if v := (&quantileState{mapping: s.mapping, maxBins: 8}).value(f); v != nil {
		t.Errorf("empty: %v", v)
	}
}
