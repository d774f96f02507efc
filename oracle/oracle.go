package oracle

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"slices"
	"sort"
	"strings"
)

// Event is one raw event.
type Event struct {
	Key       string
	TS        int64 // event time, epoch milliseconds
	Partition int32
	Offset    int64
	// Fields is the event JSON decoded by encoding/json into map[string]any
	// (numbers are float64).
	Fields map[string]any
}

// Feature is one value to compute: Function of Column over Window.
type Feature struct {
	Name     string
	Function string // see the package doc
	Column   string // empty for count over events
	Window   int64  // ms; 0 means lifetime
	// N of first_n, last_n and last_distinct_n; K of top_k; Percentiles of
	// approx_percentile.
	N, K        int
	Percentiles []float64
}

// View is the part of a feature view that decides values.
type View struct {
	Granularity   int64 // ms, positive
	LifetimeStart int64 // ms; math.MinInt64 when unset
	Features      []Feature
}

// sumPrec is the precision of the exact sums. A float64 is an integer multiple
// of 2^-1074 below 2^1024, so a sum of fewer than 2^300 of them needs fewer
// than 1074+1024+300 = 2398 mantissa bits: big.Float never rounds it.
const sumPrec = 2400

// Values returns, for the given events (already filtered to one key by the
// caller), feature name → value at time t. It panics on a view the design
// rejects (granularity ≤ 0, negative window, unknown function).
func Values(v View, events []Event, t int64) map[string]any {
	if v.Granularity <= 0 {
		panic(fmt.Sprintf("oracle: granularity %d must be positive", v.Granularity))
	}
	end := floor(t, v.Granularity) + v.Granularity
	out := make(map[string]any, len(v.Features))
	for _, f := range v.Features {
		var start int64
		switch {
		case f.Window > 0:
			start = floor(t-f.Window, v.Granularity)
		case f.Window == 0:
			start = v.LifetimeStart
		default:
			panic(fmt.Sprintf("oracle: feature %q: negative window %d", f.Name, f.Window))
		}
		var in []Event
		for _, e := range events {
			if start <= e.TS && e.TS < end {
				in = append(in, e)
			}
		}
		out[f.Name] = value(f, in)
	}
	return out
}

// floor returns the largest multiple of g that is ≤ x.
func floor(x, g int64) int64 {
	r := x % g
	if r < 0 {
		r += g
	}
	return x - r
}

// value computes f over exactly the events in.
func value(f Feature, in []Event) any {
	switch f.Function {
	case "count":
		n := 0
		for _, e := range in {
			if f.Column == "" || present(e, f.Column) {
				n++
			}
		}
		return float64(n)

	case "sum":
		s, _ := exactSum(numbers(in, f.Column))
		return finite(s)

	case "mean":
		// The exact sum over the count, rounded once.
		xs := numbers(in, f.Column)
		if len(xs) == 0 {
			return nil
		}
		s := new(big.Rat)
		for _, x := range xs {
			s.Add(s, new(big.Rat).SetFloat64(x))
		}
		m, _ := s.Quo(s, big.NewRat(int64(len(xs)), 1)).Float64()
		return finite(plusZero(m))

	case "min", "max":
		xs := numbers(in, f.Column)
		if len(xs) == 0 {
			return nil
		}
		m := xs[0]
		for _, x := range xs[1:] {
			if (f.Function == "min" && x < m) || (f.Function == "max" && x > m) {
				m = x
			}
		}
		return m

	case "var_pop", "var_samp", "stddev_pop", "stddev_samp":
		return moments(f.Function, numbers(in, f.Column))

	case "first", "first_n", "last_n":
		evs := ordered(in, f.Column)
		switch f.Function {
		case "first":
			if len(evs) == 0 {
				return nil
			}
			return fieldValue(evs[0], f.Column)
		case "first_n":
			evs = evs[:min(f.N, len(evs))]
		default:
			evs = evs[max(0, len(evs)-f.N):]
		}
		out := []any{}
		for _, e := range evs {
			out = append(out, fieldValue(e, f.Column))
		}
		return out

	case "last_distinct_n":
		evs := ordered(in, f.Column)
		seen := map[string]bool{}
		var out []any
		for i := len(evs) - 1; i >= 0 && len(out) < f.N; i-- {
			c := canonical(fieldValue(evs[i], f.Column))
			if !seen[c] {
				seen[c] = true
				out = append(out, decodeCanonical(c))
			}
		}
		slices.Reverse(out)
		if out == nil {
			out = []any{}
		}
		return out

	case "approx_count_distinct":
		return float64(len(counts(in, f.Column)))

	case "approx_percentile":
		xs := numbers(in, f.Column)
		if len(xs) == 0 {
			return nil
		}
		slices.Sort(xs)
		out := map[string]any{}
		for _, q := range f.Percentiles {
			out[canonical(q)] = xs[int(math.Floor(q*float64(len(xs)-1)))]
		}
		return out

	case "top_k":
		type vc struct {
			v string
			c int
		}
		var all []vc
		for v, c := range counts(in, f.Column) {
			all = append(all, vc{v, c})
		}
		sort.Slice(all, func(i, j int) bool {
			if all[i].c != all[j].c {
				return all[i].c > all[j].c
			}
			return all[i].v < all[j].v
		})
		out := []any{}
		for _, x := range all[:min(f.K, len(all))] {
			out = append(out, map[string]any{"value": decodeCanonical(x.v), "count": float64(x.c)})
		}
		return out

	case "last":
		var best *Event
		for i := range in {
			e := &in[i]
			if !present(*e, f.Column) {
				continue
			}
			if best == nil || later(e, best) {
				best = e
			}
		}
		if best == nil {
			return nil
		}
		if x, ok := best.Fields[f.Column].(float64); ok {
			return plusZero(x)
		}
		return best.Fields[f.Column]
	}
	panic(fmt.Sprintf("oracle: feature %q: unknown function %q", f.Name, f.Function))
}

// ordered returns the events where col is present, by (TS, Partition, Offset).
func ordered(in []Event, col string) []*Event {
	var out []*Event
	for i := range in {
		if present(in[i], col) {
			out = append(out, &in[i])
		}
	}
	sort.Slice(out, func(i, j int) bool { return later(out[j], out[i]) })
	return out
}

// fieldValue is e's value of col as served by first and last: numbers read
// −0 as +0.
func fieldValue(e *Event, col string) any {
	if x, ok := e.Fields[col].(float64); ok {
		return plusZero(x)
	}
	return e.Fields[col]
}

// canonical is the identity of a value for distinct counts, last_distinct_n
// and top_k: the text encoding/json writes for it, HTML escaping off.
func canonical(x any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(x); err != nil {
		panic(fmt.Sprintf("oracle: canonical %v: %v", x, err))
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func decodeCanonical(c string) any {
	var x any
	if err := json.Unmarshal([]byte(c), &x); err != nil {
		panic(err)
	}
	return x
}

// counts returns the number of events per canonical value of col.
func counts(in []Event, col string) map[string]int {
	out := map[string]int{}
	for i := range in {
		if present(in[i], col) {
			out[canonical(fieldValue(&in[i], col))]++
		}
	}
	return out
}

// moments computes a variance or standard deviation exactly, in integers:
// with X = x·2^1074 (an integer for every float64), S = ΣX and
// T = Σ(n·X − S)² = n²·Σ(x − μ)²·2^2148, the variance is T/(n²·d)·2^-2148
// with d = n, or n−1 for the sample forms. It is rounded once; the standard
// deviation is the correctly rounded square root of the exact quotient.
func moments(fn string, xs []float64) any {
	samp := fn == "var_samp" || fn == "stddev_samp"
	if len(xs) == 0 || samp && len(xs) == 1 {
		return nil
	}
	n := big.NewInt(int64(len(xs)))
	ints := make([]*big.Int, len(xs))
	s := new(big.Int)
	for i, x := range xs {
		f := new(big.Float).SetFloat64(x)
		ints[i], _ = f.SetMantExp(f, 1074).Int(nil)
		s.Add(s, ints[i])
	}
	t := new(big.Int)
	for _, x := range ints {
		d := new(big.Int).Mul(n, x)
		d.Sub(d, s)
		t.Add(t, d.Mul(d, d))
	}
	den := new(big.Int).Mul(n, n)
	if samp {
		den.Mul(den, big.NewInt(int64(len(xs)-1)))
	} else {
		den.Mul(den, n)
	}
	if fn == "var_pop" || fn == "var_samp" {
		return finite(quotient(t, den, -2148))
	}
	return finite(sqrtQuotient(t, den))
}

// quotient returns t/den·2^exp correctly rounded. The quotient is rounded
// first to den's bits plus 128: a rational with denominator den is either a
// 54-bit dyadic (exact at that precision) or further than 2^-(bits+56) from
// one relative to it, so the second rounding, to float64, cannot tie falsely.
func quotient(t, den *big.Int, exp int) float64 {
	tf := new(big.Float).SetInt(t)
	q := new(big.Float).SetPrec(uint(den.BitLen()+128)).Quo(tf, new(big.Float).SetInt(den))
	f, _ := q.SetMantExp(q, exp).Float64()
	return f
}

// sqrtQuotient returns √(t/den·2^-2148) correctly rounded (ties to even): a
// guess refined by exact comparisons of t with the squares of the midpoints
// between neighbouring float64s, scaled.
func sqrtQuotient(t, den *big.Int) float64 {
	if t.Sign() == 0 {
		return 0
	}
	// cmpSq compares x² with the variance: the sign of x²·den·2^2148 − t.
	cmpSq := func(x *big.Float) int {
		mf := new(big.Float)
		e := x.MantExp(mf) - 128 // x = M·2^e with M an integer below 2^128
		mf.SetMantExp(mf, 128)
		m, _ := mf.Int(nil)
		l := new(big.Int).Mul(m, m)
		l.Mul(l, den)
		r := new(big.Int).Set(t)
		if sh := 2*e + 2148; sh >= 0 {
			l.Lsh(l, uint(sh))
		} else {
			r.Lsh(r, uint(-sh))
		}
		return l.Cmp(r)
	}
	// cmpMid compares ((a+b)/2)² with the variance (exact: a+b and the
	// halving are exact at 2000 bits).
	cmpMid := func(a, b float64) int {
		sum := new(big.Float).SetPrec(2000).Add(new(big.Float).SetFloat64(a), new(big.Float).SetFloat64(b))
		return cmpSq(sum.SetMantExp(sum, -1))
	}
	// From halfway between MaxFloat64 and 2^1024 up, √ rounds to +Inf.
	top := new(big.Float).SetPrec(2000).SetMantExp(big.NewFloat(1), 1024)
	top.Sub(top, new(big.Float).SetMantExp(big.NewFloat(1), 970))
	if cmpSq(top) <= 0 {
		return math.Inf(1)
	}
	g := new(big.Float).SetPrec(64).Quo(new(big.Float).SetInt(t), new(big.Float).SetInt(den))
	g.SetMantExp(g, -2148)
	c, _ := g.Sqrt(g).Float64()
	c = min(c, math.MaxFloat64)
	for {
		if up := math.Nextafter(c, math.Inf(1)); !math.IsInf(up, 0) {
			switch cmpMid(c, up) {
			case -1:
				c = up
				continue
			case 0: // a tie: to even
				if math.Float64bits(c)&1 == 1 {
					c = up
				}
				return c
			}
		}
		if c > 0 {
			down := math.Nextafter(c, 0)
			switch cmpMid(down, c) {
			case 1:
				c = down
				continue
			case 0:
				if math.Float64bits(c)&1 == 1 {
					c = down
				}
				return c
			}
		}
		return c
	}
}

// present reports whether e has the field col and it is not null.
func present(e Event, col string) bool {
	x, ok := e.Fields[col]
	return ok && x != nil
}

// numbers returns the float64 values of col in the events that have one.
func numbers(in []Event, col string) []float64 {
	var xs []float64
	for _, e := range in {
		if x, ok := e.Fields[col].(float64); ok {
			xs = append(xs, plusZero(x))
		}
	}
	return xs
}

// exactSum returns the exact sum of xs rounded once to the nearest float64
// (ties to even), and how many values there were.
func exactSum(xs []float64) (float64, int) {
	s := new(big.Float).SetPrec(sumPrec)
	for _, x := range xs {
		s.Add(s, new(big.Float).SetPrec(sumPrec).SetFloat64(x))
	}
	f, _ := s.Float64()
	return plusZero(f), len(xs)
}

// later reports whether a comes after b by (TS, Partition, Offset).
func later(a, b *Event) bool {
	if a.TS != b.TS {
		return a.TS > b.TS
	}
	if a.Partition != b.Partition {
		return a.Partition > b.Partition
	}
	return a.Offset > b.Offset
}

// finite maps ±Inf to null.
func finite(x float64) any {
	if math.IsInf(x, 0) || math.IsNaN(x) {
		return nil
	}
	return x
}

// plusZero reads −0 as +0.
func plusZero(x float64) float64 {
	if x == 0 {
		return 0
	}
	return x
}
