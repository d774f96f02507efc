package oracle

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
)

const (
	second = int64(1000)
	minute = 60 * second
	hour   = 60 * minute
)

// ev builds an event from a JSON object, decoded as ingest decodes it.
func ev(ts int64, part int32, off int64, fields string) Event {
	var m map[string]any
	if err := json.Unmarshal([]byte(fields), &m); err != nil {
		panic(err)
	}
	return Event{Key: "k", TS: ts, Partition: part, Offset: off, Fields: m}
}

// same compares values exactly: float64 bit for bit (so +0 and −0 differ),
// everything else with reflect.DeepEqual.
func same(a, b any) bool {
	fa, oka := a.(float64)
	fb, okb := b.(float64)
	if oka || okb {
		return oka && okb && math.Float64bits(fa) == math.Float64bits(fb)
	}
	return reflect.DeepEqual(a, b)
}

func check(t *testing.T, v View, events []Event, at int64, want map[string]any) {
	t.Helper()
	got := Values(v, events, at)
	if len(got) != len(want) {
		t.Errorf("t=%d: got %d values %v, want %d %v", at, len(got), got, len(want), want)
	}
	for name, w := range want {
		if g, ok := got[name]; !ok || !same(g, w) {
			t.Errorf("t=%d: %s = %#v, want %#v", at, name, g, w)
		}
	}
}

func TestWindowBoundsArePerTile(t *testing.T) {
	// g = 1m, w = 2m, t = 10m+5ms: end = 11m, start = floor(8m+5ms) = 8m.
	v := View{Granularity: minute, LifetimeStart: math.MinInt64, Features: []Feature{
		{Name: "n", Function: "count", Window: 2 * minute},
	}}
	events := []Event{
		ev(8*minute-1, 0, 0, `{}`),  // before the start
		ev(8*minute, 0, 1, `{}`),    // first ms of the window
		ev(10*minute+5, 0, 2, `{}`), // t itself
		ev(11*minute-1, 0, 3, `{}`), // after t, inside the current tile
		ev(11*minute, 0, 4, `{}`),   // the next tile
	}
	tests := []struct {
		name string
		at   int64
		want float64
	}{
		{"inside a tile the window spans w plus part of the tile", 10*minute + 5, 3},
		{"at a tile boundary t−w is the start", 10 * minute, 3},
		{"1ms before a boundary the previous tile ends the window", 10*minute - 1, 2},
		{"1ms before the next boundary the window is still [8m, 11m)", 11*minute - 1, 3},
		{"at the next boundary the oldest tile leaves and the next enters", 11 * minute, 3},
		{"two tiles on, the window is [10m, 13m)", 12 * minute, 3},
		{"three tiles on, only the event at 11m remains", 13 * minute, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, v, events, tt.at, map[string]any{"n": tt.want})
		})
	}
}

func TestNegativeTimesFloorDown(t *testing.T) {
	// g = 1m, t = −1ms: end = floor(−1) + 1m = 0; w = 1m: start = floor(−60001) = −2m.
	v := View{Granularity: minute, LifetimeStart: math.MinInt64, Features: []Feature{
		{Name: "w", Function: "sum", Column: "x", Window: minute},
		{Name: "life", Function: "count", Window: 0},
	}}
	events := []Event{
		ev(-2*minute-1, 0, 0, `{"x":1}`),
		ev(-2*minute, 0, 1, `{"x":2}`),
		ev(-1, 0, 2, `{"x":4}`),
		ev(0, 0, 3, `{"x":8}`),
	}
	check(t, v, events, -1, map[string]any{"w": 6.0, "life": 3.0})
	check(t, v, events, -minute, map[string]any{"w": 6.0, "life": 3.0})
	check(t, v, events, -minute-1, map[string]any{"w": 3.0, "life": 2.0})
	check(t, v, events, 0, map[string]any{"w": 12.0, "life": 4.0})
	check(t, v, events, math.MinInt64/2, map[string]any{"w": 0.0, "life": 0.0})
}

func TestLifetimeStart(t *testing.T) {
	v := View{Granularity: hour, LifetimeStart: -hour, Features: []Feature{
		{Name: "n", Function: "count", Window: 0},
	}}
	events := []Event{
		ev(-hour-1, 0, 0, `{}`),
		ev(-hour, 0, 1, `{}`),
		ev(5*hour, 0, 2, `{}`),
	}
	check(t, v, events, -hour-1, map[string]any{"n": 0.0}) // end = −1h: nothing
	check(t, v, events, -hour, map[string]any{"n": 1.0})
	check(t, v, events, 5*hour-1, map[string]any{"n": 1.0})
	check(t, v, events, 5*hour, map[string]any{"n": 2.0})
}

func TestFunctions(t *testing.T) {
	features := []Feature{
		{Name: "events", Function: "count"},
		{Name: "with_x", Function: "count", Column: "x"},
		{Name: "sum", Function: "sum", Column: "x"},
		{Name: "min", Function: "min", Column: "x"},
		{Name: "max", Function: "max", Column: "x"},
		{Name: "mean", Function: "mean", Column: "x"},
		{Name: "last", Function: "last", Column: "x"},
	}
	v := View{Granularity: second, LifetimeStart: math.MinInt64, Features: features}
	const max = math.MaxFloat64
	tests := []struct {
		name   string
		events []Event
		want   map[string]any
	}{
		{
			"no events: counts and sums are 0, the rest null",
			nil,
			map[string]any{"events": 0.0, "with_x": 0.0, "sum": 0.0, "min": nil, "max": nil, "mean": nil, "last": nil},
		},
		{
			"absent and null fields count as events but not as values",
			[]Event{ev(1, 0, 0, `{}`), ev(2, 0, 1, `{"x":null}`), ev(3, 0, 2, `{"y":5}`)},
			map[string]any{"events": 3.0, "with_x": 0.0, "sum": 0.0, "min": nil, "max": nil, "mean": nil, "last": nil},
		},
		{
			"plain numbers",
			[]Event{ev(1, 0, 0, `{"x":3}`), ev(2, 0, 1, `{"x":-1.5}`), ev(3, 0, 2, `{"x":null}`), ev(4, 0, 3, `{"x":7}`)},
			map[string]any{"events": 4.0, "with_x": 3.0, "sum": 8.5, "min": -1.5, "max": 7.0, "mean": 8.5 / 3, "last": 7.0},
		},
		{
			// Naive float64 addition gives 2^53 in this order (each +1 ties to
			// even) and 2^53+2 in the reverse order; the exact sum is 2^53+2.
			"sums are exact, whatever the order",
			[]Event{ev(1, 0, 0, `{"x":9007199254740992}`), ev(2, 0, 1, `{"x":1}`), ev(3, 0, 2, `{"x":1}`)},
			map[string]any{"events": 3.0, "with_x": 3.0, "sum": 9007199254740994.0, "min": 1.0, "max": 9007199254740992.0, "mean": 9007199254740994.0 / 3, "last": 1.0},
		},
		{
			// Naive addition overflows to +Inf at the second value.
			"an intermediate beyond the float64 range does not matter",
			[]Event{ev(1, 0, 0, `{"x":1.7976931348623157e308}`), ev(2, 0, 1, `{"x":1.7976931348623157e308}`), ev(3, 0, 2, `{"x":-1.7976931348623157e308}`)},
			map[string]any{"events": 3.0, "with_x": 3.0, "sum": max, "min": -max, "max": max, "mean": max / 3, "last": -max},
		},
		{
			"a sum beyond the float64 range is null; its mean, the exact sum over the count, is not",
			[]Event{ev(1, 0, 0, `{"x":1.7976931348623157e308}`), ev(2, 0, 1, `{"x":1.7976931348623157e308}`)},
			map[string]any{"events": 2.0, "with_x": 2.0, "sum": nil, "min": max, "max": max, "mean": max, "last": max},
		},
		{
			// The ulp of MaxFloat64 is 2^971; adding less than half of it
			// rounds back to MaxFloat64.
			"rounding at the top of the float64 range is to nearest",
			[]Event{ev(1, 0, 0, `{"x":1.7976931348623157e308}`), ev(2, 0, 1, `{"x":2.4948003869184e291}`)},
			map[string]any{"events": 2.0, "with_x": 2.0, "sum": max, "min": 2.4948003869184e291, "max": max, "mean": max / 2, "last": 2.4948003869184e291},
		},
		{
			"subnormals add exactly",
			[]Event{ev(1, 0, 0, `{"x":5e-324}`), ev(2, 0, 1, `{"x":5e-324}`), ev(3, 0, 2, `{"x":-1e-323}`), ev(4, 0, 3, `{"x":5e-324}`)},
			map[string]any{"events": 4.0, "with_x": 4.0, "sum": 5e-324, "min": -1e-323, "max": 5e-324, "mean": 0.0, "last": 5e-324},
		},
		{
			"−0 is read as +0",
			[]Event{ev(1, 0, 0, `{"x":-0}`), ev(2, 0, 1, `{"x":-0.0}`)},
			map[string]any{"events": 2.0, "with_x": 2.0, "sum": 0.0, "min": 0.0, "max": 0.0, "mean": 0.0, "last": 0.0},
		},
		{
			"a cancelling sum is +0",
			[]Event{ev(1, 0, 0, `{"x":0.1}`), ev(2, 0, 1, `{"x":-0.1}`)},
			map[string]any{"events": 2.0, "with_x": 2.0, "sum": 0.0, "min": -0.1, "max": 0.1, "mean": 0.0, "last": -0.1},
		},
		{
			"numeric functions skip non-numbers; count and last keep them",
			[]Event{ev(1, 0, 0, `{"x":2}`), ev(2, 0, 1, `{"x":"two"}`), ev(3, 0, 2, `{"x":true}`)},
			map[string]any{"events": 3.0, "with_x": 3.0, "sum": 2.0, "min": 2.0, "max": 2.0, "mean": 2.0, "last": true},
		},
		{
			"last takes the latest event time, not the latest offset",
			[]Event{ev(5, 0, 0, `{"x":"late"}`), ev(4, 0, 1, `{"x":"early"}`)},
			map[string]any{"events": 2.0, "with_x": 2.0, "sum": 0.0, "min": nil, "max": nil, "mean": nil, "last": "late"},
		},
		{
			"last breaks a time tie by partition, then offset",
			[]Event{ev(5, 2, 1, `{"x":"p2o1"}`), ev(5, 3, 0, `{"x":"p3o0"}`), ev(5, 1, 9, `{"x":"p1o9"}`), ev(5, 3, 1, `{"x":[1,{"a":null}]}`)},
			map[string]any{"events": 4.0, "with_x": 4.0, "sum": 0.0, "min": nil, "max": nil, "mean": nil, "last": []any{1.0, map[string]any{"a": nil}}},
		},
		{
			"last skips a later event whose field is null or absent",
			[]Event{ev(1, 0, 0, `{"x":{"k":1}}`), ev(2, 0, 1, `{"x":null}`), ev(3, 0, 2, `{}`)},
			map[string]any{"events": 3.0, "with_x": 1.0, "sum": 0.0, "min": nil, "max": nil, "mean": nil, "last": map[string]any{"k": 1.0}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, v, tt.events, 0, tt.want)
		})
	}
}

func TestSumTieAtTheTopRoundsToInfinity(t *testing.T) {
	// MaxFloat64 + 2^970 lies halfway between MaxFloat64 (odd mantissa) and
	// 2^1024: ties to even give 2^1024, which is +Inf, so the sum is null.
	v := View{Granularity: second, LifetimeStart: math.MinInt64, Features: []Feature{
		{Name: "sum", Function: "sum", Column: "x"},
		{Name: "mean", Function: "mean", Column: "x"},
	}}
	events := []Event{
		{TS: 1, Offset: 0, Fields: map[string]any{"x": math.MaxFloat64}},
		{TS: 2, Offset: 1, Fields: map[string]any{"x": math.Ldexp(1, 970)}},
	}
	// The mean is the exact sum halved, itself a tie: to even, 2^1023.
	check(t, v, events, 0, map[string]any{"sum": nil, "mean": math.Ldexp(1, 1023)})
	// The smallest subnormal below the tie rounds down, above it rounds up:
	// the rounding sees the sticky bits 2100 places below.
	tiny := Event{TS: 3, Offset: 2, Fields: map[string]any{"x": -math.SmallestNonzeroFloat64}}
	check(t, v, append(events, tiny), 0, map[string]any{"sum": math.MaxFloat64, "mean": math.MaxFloat64 / 3})
	tiny.Fields = map[string]any{"x": math.SmallestNonzeroFloat64}
	check(t, v, append(events, tiny), 0, map[string]any{"sum": nil, "mean": 5.992310449541053e+307})
	// Less than the tie rounds back to MaxFloat64.
	events[1].Fields["x"] = math.Ldexp(1, 969) + math.Ldexp(1, 968)
	check(t, v, events, 0, map[string]any{"sum": math.MaxFloat64, "mean": math.MaxFloat64 / 2})
}

func TestEveryFeatureHasItsOwnWindow(t *testing.T) {
	v := View{Granularity: minute, LifetimeStart: math.MinInt64, Features: []Feature{
		{Name: "1m", Function: "sum", Column: "x", Window: minute},
		{Name: "3m", Function: "sum", Column: "x", Window: 3 * minute},
		{Name: "all", Function: "sum", Column: "x"},
	}}
	var events []Event
	for i := int64(0); i < 6; i++ {
		events = append(events, ev(i*minute+30*second, 0, i, `{"x":1}`))
	}
	// t = 5m: end = 6m; 1m → [4m, 6m); 3m → [2m, 6m); lifetime → all.
	check(t, v, events, 5*minute, map[string]any{"1m": 2.0, "3m": 4.0, "all": 6.0})
}

func TestValuesPanicsOnBadViews(t *testing.T) {
	for _, v := range []View{
		{Granularity: 0, Features: []Feature{{Name: "n", Function: "count"}}},
		{Granularity: minute, Features: []Feature{{Name: "n", Function: "count", Window: -minute}}},
		{Granularity: minute, Features: []Feature{{Name: "n", Function: "median", Column: "x"}}},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("no panic for %+v", v)
				}
			}()
			Values(v, []Event{ev(0, 0, 0, `{}`)}, 0)
		}()
	}
}
