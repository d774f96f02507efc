package tiling

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Function is an aggregation function as named in a view's config.
type Function string

// The functions. docs/config.md describes each one's value and options.
const (
	Count               Function = "count"
	Sum                 Function = "sum"
	Min                 Function = "min"
	Max                 Function = "max"
	Mean                Function = "mean"
	VarPop              Function = "var_pop"
	VarSamp             Function = "var_samp"
	StddevPop           Function = "stddev_pop"
	StddevSamp          Function = "stddev_samp"
	First               Function = "first"
	Last                Function = "last"
	FirstN              Function = "first_n"
	LastN               Function = "last_n"
	LastDistinctN       Function = "last_distinct_n"
	ApproxCountDistinct Function = "approx_count_distinct"
	ApproxPercentile    Function = "approx_percentile"
	TopK                Function = "top_k"
)

// Functions lists every supported function.
var Functions = []Function{Count, Sum, Min, Max, Mean, VarPop, VarSamp, StddevPop, StddevSamp,
	First, Last, FirstN, LastN, LastDistinctN, ApproxCountDistinct, ApproxPercentile, TopK}

// Limits and defaults of the feature options (docs/config.md).
const (
	// MaxN bounds n of first_n, last_n and last_distinct_n, and MaxK k of top_k.
	MaxN = 1000
	MaxK = 1000
	// HLL precision p of approx_count_distinct: 2^p registers, relative
	// standard error 1.04/√(2^p) (1.6% at 12).
	MinPrecision     = 4
	MaxPrecision     = 16
	DefaultPrecision = 12
	// Relative accuracy of approx_percentile.
	MinAccuracy     = 0.001
	MaxAccuracy     = 0.5
	DefaultAccuracy = 0.01
	// Bins an approx_percentile sketch keeps before it collapses its lowest.
	MinMaxBins     = 8
	MaxMaxBins     = 16384
	DefaultMaxBins = 2048
	// MaxPercentiles bounds the percentiles of one feature.
	MaxPercentiles = 100
	// Default max_value_bytes: first and last keep one value, the list and
	// top_k functions up to 1000 or 1024.
	DefaultMaxRawBytes   = 64 << 10
	DefaultMaxValueBytes = 256
	// TopKCapacity is how many distinct values top_k counts exactly, and how
	// many events its sample keeps (see freqState).
	TopKCapacity = 1024
	// MaxTileBytes bounds the encoding of one tile in the worst case, checked
	// when a view is built: one DynamoDB item holds at most 400 KB, and this
	// leaves 40 KiB of it to the item's key, attribute names and the record's
	// per-partition offsets.
	MaxTileBytes = 360 << 10
)

func (f Function) valid() bool {
	for _, g := range Functions {
		if f == g {
			return true
		}
	}
	return false
}

func (f Function) needsColumn() bool { return f != Count }

// numeric reports whether the function reads its column as a number.
func (f Function) numeric() bool {
	switch f {
	case Sum, Min, Max, Mean, VarPop, VarSamp, StddevPop, StddevSamp, ApproxPercentile:
		return true
	}
	return false
}

// keepsRaw reports whether the function needs the raw JSON value of its
// column (Input.Raw): to keep it, or to identify it (canonicalValue).
func (f Function) keepsRaw() bool {
	switch f {
	case First, Last, FirstN, LastN, LastDistinctN, ApproxCountDistinct, TopK:
		return true
	}
	return false
}

// keepsValues reports whether the function stores values, which
// max_value_bytes bounds.
func (f Function) keepsValues() bool {
	switch f {
	case First, Last, FirstN, LastN, LastDistinctN, TopK:
		return true
	}
	return false
}

func (f Function) state() stateKind {
	switch f {
	case Count:
		return kindCount
	case Sum:
		return kindSum
	case Min:
		return kindMin
	case Max:
		return kindMax
	case Mean:
		return kindMean
	case Last:
		return kindLast
	case First:
		return kindFirst
	case VarPop, VarSamp, StddevPop, StddevSamp:
		return kindMoments
	case FirstN:
		return kindFirstN
	case LastN:
		return kindLastN
	case LastDistinctN:
		return kindLastDistinctN
	case ApproxCountDistinct:
		return kindHLL
	case ApproxPercentile:
		return kindQuantiles
	case TopK:
		return kindFreq
	}
	panic("tiling: unvalidated function " + string(f))
}

// Options returns the names (as in the config file) of the options the
// function takes.
func (f Function) Options() []string {
	switch f {
	case First, Last:
		return []string{"max_value_bytes"}
	case FirstN, LastN, LastDistinctN:
		return []string{"n", "max_value_bytes"}
	case TopK:
		return []string{"k", "max_value_bytes"}
	case ApproxCountDistinct:
		return []string{"precision"}
	case ApproxPercentile:
		return []string{"percentiles", "accuracy", "max_bins"}
	}
	return nil
}

// ValidateOptions checks the options of f against its function: which apply,
// which are required, their ranges. A zero option is unset. The error joins
// one error per problem, none naming the feature (the caller places them).
// An unknown function has no options to check.
func (f *Feature) ValidateOptions() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	only := func(set bool, option string) {
		if !set || slices.Contains(f.Function.Options(), option) {
			return
		}
		var names []string
		for _, g := range Functions {
			if slices.Contains(g.Options(), option) {
				names = append(names, string(g))
			}
		}
		bad("%s applies only to %s, not to %s", option, orList(names), f.Function)
	}
	only(f.N != 0, "n")
	only(f.K != 0, "k")
	only(f.Precision != 0, "precision")
	only(f.Percentiles != nil, "percentiles")
	only(f.Accuracy != 0, "accuracy")
	only(f.MaxBins != 0, "max_bins")
	only(f.MaxValueBytes != 0, "max_value_bytes")

	switch f.Function {
	case FirstN, LastN, LastDistinctN:
		switch {
		case f.N == 0:
			bad("n is missing; %s keeps n values, 1..%d", f.Function, MaxN)
		case f.N < 1 || f.N > MaxN:
			bad("n must be within 1..%d, got %d", MaxN, f.N)
		}
	case TopK:
		switch {
		case f.K == 0:
			bad("k is missing; top_k reports the k most frequent values, 1..%d", MaxK)
		case f.K < 1 || f.K > MaxK:
			bad("k must be within 1..%d, got %d", MaxK, f.K)
		}
	case ApproxCountDistinct:
		if f.Precision != 0 && (f.Precision < MinPrecision || f.Precision > MaxPrecision) {
			bad("precision must be within %d..%d, got %d", MinPrecision, MaxPrecision, f.Precision)
		}
	case ApproxPercentile:
		if len(f.Percentiles) == 0 {
			bad("percentiles is missing; want a list of percentiles within 0..1, such as [0.5, 0.99]")
		}
		if len(f.Percentiles) > MaxPercentiles {
			bad("percentiles lists %d values, more than %d", len(f.Percentiles), MaxPercentiles)
		}
		seen := map[float64]bool{}
		for _, p := range f.Percentiles {
			switch {
			case !(p >= 0 && p <= 1): // also NaN
				bad("percentile %v is not within 0..1 (write 0.99 for the 99th percentile)", p)
			case seen[p]:
				bad("percentile %v is listed twice", p)
			}
			seen[p] = true
		}
		if a := f.Accuracy; a != 0 && !(a >= MinAccuracy && a <= MaxAccuracy) {
			bad("accuracy must be within %v..%v, got %v", MinAccuracy, MaxAccuracy, a)
		}
		if b := f.MaxBins; b != 0 && (b < MinMaxBins || b > MaxMaxBins) {
			bad("max_bins must be within %d..%d, got %d", MinMaxBins, MaxMaxBins, b)
		}
	}
	if b := f.MaxValueBytes; b != 0 && (b < 1 || b > MaxTileBytes) {
		bad("max_value_bytes must be within 1..%d, got %d", MaxTileBytes, b)
	}
	return errors.Join(errs...)
}

// orList joins names as "a", "a or b", "a, b or c".
func orList(names []string) string {
	if len(names) <= 1 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// spec returns the partial aggregate f needs, with its options resolved to
// their defaults. f must be valid.
func (f *Feature) spec(column int) aggSpec {
	a := aggSpec{kind: f.Function.state(), column: column}
	if f.Function.keepsValues() {
		a.maxValue = f.MaxValueBytes
		if a.maxValue == 0 {
			a.maxValue = DefaultMaxValueBytes
			if f.Function == First || f.Function == Last {
				a.maxValue = DefaultMaxRawBytes
			}
		}
	}
	switch f.Function {
	case FirstN, LastN, LastDistinctN:
		a.n = f.N
	case TopK:
		a.n = TopKCapacity
	case ApproxCountDistinct:
		a.n = f.Precision
		if a.n == 0 {
			a.n = DefaultPrecision
		}
	case ApproxPercentile:
		acc := f.Accuracy
		if acc == 0 {
			acc = DefaultAccuracy
		}
		a.n = binsPerOctave(acc)
		a.maxBins = f.MaxBins
		if a.maxBins == 0 {
			a.maxBins = DefaultMaxBins
		}
	}
	return a
}

// binsPerOctave returns K, the fewest bins per power of two whose relative
// accuracy (2^(1/K)−1)/(2^(1/K)+1) is at most a: bin boundaries 2^(i/K) are
// γ = 2^(1/K) apart, the DDSketch logarithmic mapping with γ rounded so that
// an octave holds a whole number of bins.
func binsPerOctave(a float64) int {
	gamma := (1 + a) / (1 - a)
	k := int(math.Ceil(math.Ln2 / math.Log(gamma)))
	for k > 1 && octaveAccuracy(k-1) <= a {
		k--
	}
	for octaveAccuracy(k) > a {
		k++
	}
	return k
}

// octaveAccuracy is the relative accuracy of K bins per octave.
func octaveAccuracy(k int) float64 {
	g := math.Exp2(1 / float64(k))
	return (g - 1) / (g + 1)
}

// maxBytes bounds the encoding of one state of a, whatever was added to it.
func (a *aggSpec) maxBytes() int {
	const (
		uvarint64   = 10
		exactSum    = 1 + 2 + 2 + (64*sumLimbs+7)/8
		wideSum     = 1 + 2 + 2 + (64*squareLimbs+7)/8
		eventHeader = uvarint64 + 5 + uvarint64 // time, partition, offset
		length      = 3                         // uvarint of a length below 2^21
	)
	switch a.kind {
	case kindCount:
		return uvarint64
	case kindSum:
		return exactSum
	case kindMin, kindMax:
		return 9
	case kindMean:
		return exactSum + uvarint64
	case kindLast, kindFirst:
		return 1 + eventHeader + length + a.maxValue
	case kindMoments:
		return uvarint64 + exactSum + wideSum
	case kindFirstN, kindLastN, kindLastDistinctN:
		return length + a.n*(eventHeader+length+a.maxValue)
	case kindHLL:
		m := 1 << a.n
		return 1 + length + max(m, 5*hllSparseMax(a.n))
	case kindQuantiles:
		return length + 16 + a.maxBins*(6+uvarint64)
	case kindFreq:
		c := a.n
		// n, flags, dictionary, exact counts, sample.
		return uvarint64 + 1 + length + c*(length+a.maxValue) + length + c*uvarint64 + length + c*(uvarint64+length)
	}
	panic(fmt.Sprintf("tiling: unknown state kind %d", a.kind))
}

// TileSizeError reports a view whose tiles could exceed MaxTileBytes.
type TileSizeError struct {
	View  string
	Bytes int // worst-case bytes of one tile
	// Parts are the partial aggregates that take more than 1 KiB, largest
	// first: the features to shrink.
	Parts []TilePart
}

// TilePart is one partial aggregate's share of a worst-case tile.
type TilePart struct {
	Features []string // the features sharing it
	Bytes    int
}

func (e *TileSizeError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "a tile may take %d bytes in the worst case, more than the %d one tile may take (a DynamoDB item holds 400 KB)", e.Bytes, MaxTileBytes)
	for i, p := range e.Parts {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", strings.Join(p.Features, "+"), p.Bytes)
	}
	b.WriteString("; lower n, k, precision, max_bins or max_value_bytes, or split the view")
	return b.String()
}

// ValueTooLong reports whether a feature of v will not keep one of e's values
// because it is longer than the feature's max_value_bytes: its JSON text as
// the event carried it for first, last, first_n and last_n, its canonical
// text for last_distinct_n and top_k. The feature then treats the value as
// absent; ingest can count such events, or reject them as bad input.
func (v *View) ValueTooLong(e *Event) bool {
	var buf []byte
	for i := range v.aggs {
		a := &v.aggs[i]
		if a.maxValue == 0 || a.column < 0 {
			continue
		}
		in := &e.Inputs[a.column]
		if in.Kind == Missing {
			continue
		}
		switch a.kind {
		case kindLastDistinctN, kindFreq:
			c, ok := canonicalValue(buf[:0], in)
			if ok && len(c) > a.maxValue {
				return true
			}
			buf = c
		default:
			if len(in.Raw) > a.maxValue {
				return true
			}
		}
	}
	return false
}
