package oracle

import (
	"fmt"
	"math"
	"math/big"
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
	Function string // count, sum, min, max, mean, last
	Column   string // empty for count over events
	Window   int64  // ms; 0 means lifetime
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
		s, n := exactSum(numbers(in, f.Column))
		if n == 0 {
			return nil
		}
		return finite(s / float64(n))

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
