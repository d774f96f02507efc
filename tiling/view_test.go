package tiling

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestNewViewReportsEveryProblem(t *testing.T) {
	_, err := NewView(View{
		Name:          "v",
		Granularity:   7 * Second, // does not divide a day
		LifetimeStart: 3,
		Features: []Feature{
			{Name: "a", Function: "median", Column: "x"},
			{Name: "a", Function: Sum, Column: "x", Window: Hour},
			{Name: "b", Function: Sum},
			{Name: "c", Function: Count, Window: -Minute},
			{Name: "d", Function: Max, Column: "x", Window: 10 * Second},
			{Function: Count},
		},
	})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"no topic",
		"no entity field",
		"no timestamp field",
		"granularity 7s must divide a day",
		"lifetime_start must be aligned",
		`feature "a": unknown function`,
		`feature "a": duplicate name`,
		`feature "a": window 1h is not a multiple of the granularity 7s`,
		`feature "b": function sum needs a column`,
		`feature "c": window must be positive or lifetime`,
		`feature "d": window 10s is not a multiple of the granularity 7s`,
		"a feature has no name",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 12 {
		t.Errorf("%d problems reported, want 12:\n%v", n, err)
	}

	if _, err := NewView(View{}); err == nil ||
		!strings.Contains(err.Error(), "no name") || !strings.Contains(err.Error(), "no features") {
		t.Errorf("empty view: %v", err)
	}
	if _, err := NewView(View{Name: "v", Topic: "t", Entity: "e", Timestamp: "ts", Granularity: -Minute, LifetimeStart: MinTime,
		Features: []Feature{{Name: "n", Function: Count}}}); err == nil || !strings.Contains(err.Error(), "granularity must be positive") {
		t.Errorf("negative granularity: %v", err)
	}
}

func TestDefaultGranularity(t *testing.T) {
	tests := []struct {
		name    string
		windows []int64
		want    int64
	}{
		{"a window under an hour gives minutes", []int64{30 * Minute}, Minute},
		{"59 minutes still gives minutes", []int64{59 * Minute}, Minute},
		{"one hour gives 5 minutes", []int64{Hour}, 5 * Minute},
		{"under 10 hours gives 5 minutes", []int64{9*Hour + 55*Minute}, 5 * Minute},
		{"10 hours gives an hour", []int64{10 * Hour}, Hour},
		{"7 days gives an hour", []int64{7 * Day}, Hour},
		{"lifetime only gives an hour", []int64{Lifetime}, Hour},
		{"the smallest window decides", []int64{7 * Day, Lifetime, 30 * Minute, 2 * Hour}, Minute},
		{"lifetime does not count as small", []int64{Lifetime, 2 * Hour}, 5 * Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fs []Feature
			for i, w := range tt.windows {
				fs = append(fs, Feature{Name: string(rune('a' + i)), Function: Count, Window: w})
			}
			if got := DefaultGranularity(fs); got != tt.want {
				t.Errorf("DefaultGranularity = %s, want %s", FormatDuration(got), FormatDuration(tt.want))
			}
			v, err := NewView(View{Name: "v", Topic: "t", Entity: "e", Timestamp: "ts", LifetimeStart: MinTime, Features: fs})
			if err != nil {
				t.Fatal(err)
			}
			if v.Granularity != tt.want {
				t.Errorf("NewView chose %s, want %s", FormatDuration(v.Granularity), FormatDuration(tt.want))
			}
		})
	}
	// An explicit granularity overrides the default.
	v := newTestView(t, Second, MinTime, Feature{Name: "n", Function: Count, Window: 7 * Day})
	if v.Granularity != Second {
		t.Errorf("override ignored: %s", FormatDuration(v.Granularity))
	}
}

func TestViewLayout(t *testing.T) {
	v := newTestView(t, Minute, MinTime,
		Feature{Name: "sum1h", Function: Sum, Column: "amount", Window: Hour},
		Feature{Name: "sum1d", Function: Sum, Column: "amount", Window: Day},
		Feature{Name: "n", Function: Count, Window: Hour},
		Feature{Name: "nAmount", Function: Count, Column: "amount", Window: Hour},
		Feature{Name: "last", Function: Last, Column: "merchant"},
	)
	if got := strings.Join(v.Columns(), ","); got != "amount,merchant" {
		t.Errorf("columns %s", got)
	}
	// The two sums share one partial aggregate; the two counts do not.
	if len(v.aggs) != 4 {
		t.Errorf("%d partial aggregates, want 4: %+v", len(v.aggs), v.aggs)
	}
	if v.Span() != Hour {
		t.Errorf("span %s", FormatDuration(v.Span()))
	}
	for g, span := range map[int64]int64{Second: Hour, Minute: Hour, 5 * Minute: Hour, 7 * Minute: 56 * Minute, Hour: Day, Day: Day, 2 * Day: 2 * Day} {
		if got := recordSpan(g); got != span {
			t.Errorf("recordSpan(%s) = %s, want %s", FormatDuration(g), FormatDuration(got), FormatDuration(span))
		}
	}
	// The fingerprint follows the layout, not the names or windows.
	w := newTestView(t, Minute, MinTime,
		Feature{Name: "x", Function: Sum, Column: "amount", Window: 2 * Hour},
		Feature{Name: "y", Function: Count, Window: Hour},
		Feature{Name: "z", Function: Count, Column: "amount", Window: Hour},
		Feature{Name: "w", Function: Last, Column: "merchant", Window: Day},
	)
	if v.Fingerprint() != w.Fingerprint() {
		t.Error("same layout, different fingerprints")
	}
	u := newTestView(t, 5*Minute, MinTime, Feature{Name: "x", Function: Sum, Column: "amount", Window: Hour})
	if u.Fingerprint() == w.Fingerprint() {
		t.Error("different layouts, same fingerprint")
	}
}

func TestReadRange(t *testing.T) {
	v := newTestView(t, Minute, -Hour,
		Feature{Name: "a", Function: Count, Window: 5 * Minute},
		Feature{Name: "b", Function: Count, Window: Hour},
	)
	from, to := v.ReadRange(10*Minute + 1)
	if from != -50*Minute || to != 11*Minute {
		t.Errorf("ReadRange = [%d, %d)", from, to)
	}
	v = newTestView(t, Minute, 5*Minute, Feature{Name: "life", Function: Count})
	if from, to := v.ReadRange(10 * Minute); from != 5*Minute || to != 11*Minute {
		t.Errorf("lifetime ReadRange = [%d, %d)", from, to)
	}
}

// TestFingerprintOfFirstKindsIsUnchanged: stores written before the new
// functions keep their layout fingerprint.
func TestFingerprintOfFirstKindsIsUnchanged(t *testing.T) {
	v := goldenView(t)
	h := fnv.New64a()
	h.Write([]byte(`v1 g=60000 span=3600000 count("") count("x") sum("x") min("x") max("x") mean("x") last("x") last("s")`))
	if want := fmt.Sprintf("%016x", h.Sum64()); v.Fingerprint() != want {
		t.Errorf("fingerprint %s, want %s", v.Fingerprint(), want)
	}
	// Options are part of the layout of the new kinds.
	a := newTestView(t, Minute, MinTime, Feature{Name: "l", Function: LastN, Column: "x", N: 3})
	b := newTestView(t, Minute, MinTime, Feature{Name: "l", Function: LastN, Column: "x", N: 4})
	if a.Fingerprint() == b.Fingerprint() {
		t.Error("last_n of 3 and of 4: same fingerprint")
	}
}

func TestFeatureOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    Feature
		want []string // one substring per problem; none: valid
	}{
		{"last_n with n", Feature{Function: LastN, N: 10}, nil},
		{"first_n without n", Feature{Function: FirstN}, []string{"n is missing; first_n keeps n values, 1..1000"}},
		{"n beyond 1000", Feature{Function: LastDistinctN, N: 1001}, []string{"n must be within 1..1000, got 1001"}},
		{"n on sum", Feature{Function: Sum, N: 3}, []string{"n applies only to first_n, last_n or last_distinct_n, not to sum"}},
		{"top_k without k", Feature{Function: TopK}, []string{"k is missing"}},
		{"k of 0 or less", Feature{Function: TopK, K: -1}, []string{"k must be within 1..1000, got -1"}},
		{"precision out of range", Feature{Function: ApproxCountDistinct, Precision: 17}, []string{"precision must be within 4..16, got 17"}},
		{"precision on percentiles", Feature{Function: ApproxPercentile, Percentiles: []float64{0.5}, Precision: 12},
			[]string{"precision applies only to approx_count_distinct, not to approx_percentile"}},
		{"percentiles missing", Feature{Function: ApproxPercentile}, []string{"percentiles is missing"}},
		{"percentiles out of range and repeated", Feature{Function: ApproxPercentile, Percentiles: []float64{99, 0.5, 0.5, math.NaN()}},
			[]string{"percentile 99 is not within 0..1 (write 0.99", "percentile 0.5 is listed twice", "percentile NaN is not within 0..1"}},
		{"accuracy and bins out of range", Feature{Function: ApproxPercentile, Percentiles: []float64{1}, Accuracy: 0.9, MaxBins: 4},
			[]string{"accuracy must be within 0.001..0.5, got 0.9", "max_bins must be within 8..16384, got 4"}},
		{"accuracy on top_k", Feature{Function: TopK, K: 3, Accuracy: 0.1}, []string{"accuracy applies only to approx_percentile"}},
		{"max_value_bytes on count", Feature{Function: Count, MaxValueBytes: 10}, []string{"max_value_bytes applies only to first, last, first_n, last_n, last_distinct_n or top_k, not to count"}},
		{"max_value_bytes beyond a tile", Feature{Function: Last, MaxValueBytes: MaxTileBytes + 1}, []string{"max_value_bytes must be within 1..368640"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.f.ValidateOptions()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error; want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("missing %q in:\n%v", w, err)
				}
			}
			if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != len(tc.want) {
				t.Errorf("%d problems, want %d:\n%v", n, len(tc.want), err)
			}
		})
	}
}

func TestTileSizeIsChecked(t *testing.T) {
	// Within the limit: the largest single options at their defaults.
	for _, f := range []Feature{
		{Name: "a", Function: LastN, Column: "x", N: MaxN},
		{Name: "a", Function: LastDistinctN, Column: "x", N: MaxN},
		{Name: "a", Function: TopK, Column: "x", K: MaxK},
		{Name: "a", Function: ApproxCountDistinct, Column: "x", Precision: MaxPrecision},
		{Name: "a", Function: ApproxPercentile, Column: "x", Percentiles: []float64{0.5}, MaxBins: MaxMaxBins},
	} {
		v := newTestView(t, Minute, MinTime, f)
		if b := v.WorstTileBytes(); b > MaxTileBytes {
			t.Errorf("%s: %d bytes", f.Function, b)
		}
	}
	_, err := NewView(View{Name: "big", Topic: "t", Entity: "e", Timestamp: "ts", LifetimeStart: MinTime, Features: []Feature{
		{Name: "recent", Function: LastN, Column: "x", N: 1000},
		{Name: "merchants", Function: LastDistinctN, Column: "m", N: 1000},
		{Name: "n", Function: Count},
	}})
	var tse *TileSizeError
	if !errors.As(err, &tse) {
		t.Fatalf("got %v, want a TileSizeError", err)
	}
	if tse.Bytes <= MaxTileBytes || len(tse.Parts) != 2 || tse.Parts[0].Features[0] != "recent" {
		t.Errorf("%+v", tse)
	}
	if want := `view "big": a tile may take`; !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "lower n, k") {
		t.Errorf("message: %v", err)
	}
}

// TestMaxValueBytes: values longer than max_value_bytes are not kept, as if
// absent, and ValueTooLong says so.
func TestMaxValueBytes(t *testing.T) {
	v := newTestView(t, Minute, MinTime,
		Feature{Name: "last", Function: Last, Column: "s", MaxValueBytes: 5},
		Feature{Name: "first", Function: First, Column: "s", MaxValueBytes: 5},
		Feature{Name: "last_n", Function: LastN, Column: "s", N: 3, MaxValueBytes: 5},
		Feature{Name: "distinct", Function: LastDistinctN, Column: "s", N: 3, MaxValueBytes: 5},
		Feature{Name: "top", Function: TopK, Column: "s", K: 3, MaxValueBytes: 5},
		Feature{Name: "n", Function: Count, Column: "s"},
	)
	r := v.NewRecord(0)
	for i, raw := range []string{`"ab"`, `"abcdef"`, `1e5`, `"abc"`} {
		e := Event{TS: int64(i), Pos: Pos{Offset: int64(i)}, Inputs: []Input{{Kind: Other, Raw: []byte(raw)}}}
		if raw == `1e5` {
			e.Inputs[0] = Input{Kind: Number, Num: 1e5, Raw: []byte(raw)}
		}
		long := raw == `"abcdef"` || raw == `1e5` // 1e5 is 100000 canonically
		if got := v.ValueTooLong(&e); got != long {
			t.Errorf("%s: ValueTooLong = %v", raw, got)
		}
		v.Add(r, &e)
	}
	got := map[string]string{}
	for i, x := range v.Evaluate(0, []*Record{r}) {
		b, _ := json.Marshal(x)
		got[v.Features[i].Name] = string(b)
	}
	want := map[string]string{
		"last":     `"abc"`,
		"first":    `"ab"`,
		"last_n":   `["ab",1e5,"abc"]`,
		"distinct": `["ab","abc"]`,
		"top":      `[{"value":"ab","count":1},{"value":"abc","count":1}]`,
		"n":        `4`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
}
