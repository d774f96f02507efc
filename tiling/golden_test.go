package tiling

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// update regenerates the golden files and the fuzz seed corpora:
//
//	go test ./tiling -run Golden -update
var update = flag.Bool("update", false, "rewrite testdata golden files and fuzz seeds")

const goldenPath = "testdata/record_v1.golden"

// functionsGoldenPath pins the states of the functions added after the first
// version, in records of functionsView.
const functionsGoldenPath = "testdata/record_v1_functions.golden"

// goldenView has one partial aggregate of every kind, and both kinds of count.
func goldenView(tb testing.TB) *View {
	return newTestView(tb, Minute, MinTime,
		Feature{Name: "n", Function: Count},
		Feature{Name: "nx", Function: Count, Column: "x", Window: Minute},
		Feature{Name: "sum", Function: Sum, Column: "x", Window: 5 * Minute},
		Feature{Name: "min", Function: Min, Column: "x", Window: Hour},
		Feature{Name: "max", Function: Max, Column: "x", Window: 2 * Hour},
		Feature{Name: "mean", Function: Mean, Column: "x", Window: 10 * Minute},
		Feature{Name: "last", Function: Last, Column: "x"},
		Feature{Name: "label", Function: Last, Column: "s", Window: 30 * Minute},
	)
}

// functionsView has a partial aggregate of every kind added after the first
// version, over the columns of goldenView's events.
func functionsView(tb testing.TB) *View {
	return newTestView(tb, Minute, MinTime,
		Feature{Name: "var_pop", Function: VarPop, Column: "x", Window: Hour},
		Feature{Name: "var_samp", Function: VarSamp, Column: "x", Window: Hour},
		Feature{Name: "stddev_pop", Function: StddevPop, Column: "x", Window: Hour},
		Feature{Name: "stddev_samp", Function: StddevSamp, Column: "x", Window: Hour},
		Feature{Name: "first", Function: First, Column: "s"},
		Feature{Name: "first_n", Function: FirstN, Column: "s", N: 2},
		Feature{Name: "last_n", Function: LastN, Column: "x", N: 3, Window: 5 * Minute},
		Feature{Name: "last_distinct_n", Function: LastDistinctN, Column: "s", N: 2},
		Feature{Name: "distinct_dense", Function: ApproxCountDistinct, Column: "x", Precision: 4},
		Feature{Name: "distinct", Function: ApproxCountDistinct, Column: "s"},
		Feature{Name: "percentiles", Function: ApproxPercentile, Column: "x", Percentiles: []float64{0, 0.5, 0.99, 1}, Accuracy: 0.05, MaxBins: 8},
		Feature{Name: "top_k", Function: TopK, Column: "s", K: 2, MaxValueBytes: 32},
	)
}

// functionsRecords adds to goldenRecords records that exercise the new
// states: many values in one tile, repeats, and values past the limits.
var functionsRecords = []goldenRecord{
	{name: "many-values-one-tile", events: goldenMany()},
	{name: "long-and-repeated-labels", events: []goldenEvent{
		{Minute, 0, 1, `{"s":"a"}`},
		{Minute, 0, 2, `{"s":"a","x":0.5}`},
		{Minute + 1, 1, 0, `{"s":"\u0061","x":-0.5}`},
		{Minute + 2, 1, 1, `{"s":"a very long label past thirty-two bytes"}`},
		{Minute + 3, 2, 5, `{"s":{"b":1,"a":[true,null]}}`},
		{Minute + 4, 2, 6, `{"s":{"a":[true,null],"b":1.0}}`},
		{Minute + 5, 3, 0, `{"s":1}`},
		{Minute + 5, 3, 1, `{"s":"1"}`},
	}},
}

func goldenMany() []goldenEvent {
	var out []goldenEvent
	for i := range int64(40) {
		out = append(out, goldenEvent{
			ts:     3*Minute + i*1000,
			part:   int32(i % 3),
			offset: 1000 + i,
			fields: fmt.Sprintf(`{"x":%d.%d,"s":"l%d"}`, i*i%97-20, i%10, i%7),
		})
	}
	return out
}

// goldenEvent is an event for goldenView: its time, position and fields as
// JSON text.
type goldenEvent struct {
	ts     int64
	part   int32
	offset int64
	fields string
}

type goldenRecord struct {
	name   string
	start  int64 // used when there are no events
	events []goldenEvent
}

// goldenRecords is the fixed set the golden file pins. Append to it; never
// change an entry's events, since its bytes are the compatibility promise.
var goldenRecords = []goldenRecord{
	{name: "empty", start: 0},
	{name: "empty-before-epoch", start: -Hour},
	{name: "one-event", events: []goldenEvent{
		{30 * Second, 0, 0, `{"x":12.34,"s":"a"}`},
	}},
	{name: "columns-missing", events: []goldenEvent{
		{Minute, 0, 7, `{}`},
		{2 * Minute, 0, 8, `{"x":null,"s":null}`},
	}},
	{name: "negative-sum-before-epoch", events: []goldenEvent{
		{-90 * Minute, 1, 10, `{"x":-1,"s":"b"}`},
		{-90*Minute + 1, 1, 11, `{"x":-2.5}`},
		{-61 * Minute, 2, 3, `{"x":-0.001,"s":"c"}`},
	}},
	{name: "subnormals", events: []goldenEvent{
		{0, 0, 0, `{"x":5e-324}`},
		{1, 0, 1, `{"x":2.5e-323}`},
		{Minute, 0, 2, `{"x":-1e-323}`},
		{Minute + 1, 0, 3, `{"x":2.2250738585072014e-308}`},
	}},
	{name: "beyond-float64-range", events: []goldenEvent{
		{0, 0, 0, `{"x":1.7976931348623157e308}`},
		{0, 0, 1, `{"x":1.7976931348623157e308}`},
		{Minute, 0, 2, `{"x":-1.7976931348623157e308}`},
		{2 * Minute, 0, 3, `{"x":1.7976931348623157e308}`},
	}},
	{name: "cancelling-sum", events: []goldenEvent{
		{5 * Minute, 3, 0, `{"x":0.1}`},
		{5 * Minute, 3, 1, `{"x":-0.1}`},
		{5 * Minute, 3, 2, `{"x":-0}`},
	}},
	{name: "partitions-and-ties", events: []goldenEvent{
		{59*Minute + 59*Second, 7, 1_000_000_000_000, `{"x":1,"s":"p7"}`},
		{59*Minute + 59*Second, 3, 42, `{"x":2,"s":"p3"}`},
		{59*Minute + 59*Second, 0, 5, `{"x":3,"s":"p0"}`},
		{Minute, 2147483647, 1, `{"x":4,"s":"max partition"}`},
	}},
	{name: "last-raw-values", events: []goldenEvent{
		{10 * Second, 0, 0, `{"x":9007199254740993,"s":{"a":[1,"b",null]}}`},
		{20 * Second, 0, 1, `{"s":true}`},
		{30 * Second, 0, 2, `{"s":"é\u2028\"quoted\""}`},
	}},
	{name: "cents-over-many-tiles", events: goldenCents()},
}

func goldenCents() []goldenEvent {
	var out []goldenEvent
	for i := range int64(60) {
		out = append(out, goldenEvent{
			ts:     1_699_999_200_000 + i*Minute + i*997%Minute, // an hour-aligned start
			part:   int32(i % 4),
			offset: 100 + i,
			fields: fmt.Sprintf(`{"x":%d.%02d}`, i*37%101-50, i*53%100),
		})
	}
	return out
}

// buildGolden returns the record of g.
func buildGolden(tb testing.TB, v *View, g goldenRecord) *Record {
	tb.Helper()
	r := v.NewRecord(g.start)
	if len(g.events) > 0 {
		r = v.NewRecord(g.events[0].ts)
	}
	for _, ge := range g.events {
		if v.RecordStart(ge.ts) != r.Start {
			tb.Fatalf("%s: event at %d outside the record", g.name, ge.ts)
		}
		pe := eventOf(v, ge.ts, Pos{Partition: ge.part, Offset: ge.offset}, []byte(ge.fields))
		if !v.Add(r, &pe.ev) {
			tb.Fatalf("%s: event %+v not applied", g.name, ge)
		}
	}
	return r
}

type goldenLine struct {
	start int64
	hex   string
}

func readGolden(tb testing.TB, path string) (map[string]goldenLine, []string) {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatalf("%v (regenerate with -update)", err)
	}
	defer f.Close()
	lines := map[string]goldenLine{}
	var order []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<22)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Fields(line)
		if len(fs) != 3 {
			tb.Fatalf("bad golden line %q", line)
		}
		start, err := strconv.ParseInt(fs[1], 10, 64)
		if err != nil {
			tb.Fatalf("bad golden line %q: %v", line, err)
		}
		lines[fs[0]] = goldenLine{start, fs[2]}
		order = append(order, fs[0])
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return lines, order
}

// checkGolden compares the encodings of records in v with the golden file at
// path (rewriting it with -update), and checks that every pinned encoding
// decodes and re-encodes to itself.
func checkGolden(t *testing.T, path, header string, v *View, records []goldenRecord) {
	var b bytes.Buffer
	b.WriteString(header)
	fmt.Fprintf(&b, "# name record-start hex\n")
	want := map[string]goldenLine{}
	for _, g := range records {
		r := buildGolden(t, v, g)
		h := hex.EncodeToString(v.AppendRecord(nil, r))
		want[g.name] = goldenLine{r.Start, h}
		fmt.Fprintf(&b, "%s %d %s\n", g.name, r.Start, h)
	}
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, order := readGolden(t, path)
	for _, g := range records {
		gl, ok := got[g.name]
		if !ok {
			t.Errorf("%s: missing from %s (regenerate with -update)", g.name, path)
			continue
		}
		if gl != want[g.name] {
			t.Errorf("%s: encoding changed:\n golden %d %s\n now    %d %s", g.name, gl.start, gl.hex, want[g.name].start, want[g.name].hex)
		}
	}
	// Every pinned encoding decodes and re-encodes to itself.
	for _, name := range order {
		gl := got[name]
		raw, err := hex.DecodeString(gl.hex)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r, err := v.DecodeRecord(gl.start, raw)
		if err != nil {
			t.Fatalf("%s: decode: %v", name, err)
		}
		if re := v.AppendRecord(nil, r); !bytes.Equal(re, raw) {
			t.Errorf("%s: re-encoding differs:\n %x\n %x", name, raw, re)
		}
	}
}

func TestGoldenRecordEncoding(t *testing.T) {
	checkGolden(t, goldenPath,
		"# Record encoding version 1 (see docs/format.md), pinned: these bytes must keep decoding.\n"+
			"# Regenerate with: go test ./tiling -run Golden -update\n"+
			"# View: granularity 1m, span 1h, one state per tile of: count(), count(x), sum(x), min(x), max(x), mean(x), last(x), last(s).\n",
		goldenView(t), goldenRecords)
}

// TestGoldenFunctionsEncoding pins the states added after the first version
// (functionsView), over the first version's records and more.
func TestGoldenFunctionsEncoding(t *testing.T) {
	checkGolden(t, functionsGoldenPath,
		"# Record encoding version 1 (see docs/format.md) with the states added after the first functions, pinned.\n"+
			"# Regenerate with: go test ./tiling -run Golden -update\n"+
			"# View: granularity 1m, span 1h, functionsView in golden_test.go: moments(x), first(s), first_n(s), last_n(x),\n"+
			"# last_distinct_n(s), hll(x) p=4, hll(s) p=12, quantiles(x) K=7 8 bins, top_k(s).\n",
		functionsView(t), slices.Concat(goldenRecords, functionsRecords))
}

// TestGoldenValues pins what a few golden records evaluate to, so the bytes
// above are known to mean the right thing.
func TestGoldenValues(t *testing.T) {
	v := goldenView(t)
	byName := map[string]goldenRecord{}
	for _, g := range goldenRecords {
		byName[g.name] = g
	}
	eval := func(name string, at int64) map[string]any {
		r := buildGolden(t, v, byName[name])
		out := map[string]any{}
		for i, x := range v.Evaluate(at, []*Record{r}) {
			out[v.Features[i].Name] = tilingValue(t, x)
		}
		return out
	}
	max := math.MaxFloat64
	tests := []struct {
		record string
		at     int64
		want   map[string]any
	}{
		{"empty", 0, map[string]any{"n": 0.0, "nx": 0.0, "sum": 0.0, "min": nil, "max": nil, "mean": nil, "last": nil, "label": nil}},
		{"columns-missing", 2 * Minute, map[string]any{"n": 2.0, "nx": 0.0, "sum": 0.0, "min": nil, "max": nil, "mean": nil, "last": nil, "label": nil}},
		{"negative-sum-before-epoch", -61 * Minute, map[string]any{"n": 3.0, "nx": 1.0, "sum": -0.001, "min": -2.5, "max": -0.001, "mean": -0.001, "last": -0.001, "label": "c"}},
		{"subnormals", Minute + 1, map[string]any{"n": 4.0, "nx": 4.0, "sum": 0x1p-1022 + 4*0x1p-1074, "min": -0x1p-1073, "max": 0x1p-1022, "mean": 0x1p-1024 + 0x1p-1074, "last": 0x1p-1022, "label": nil}},
		{"beyond-float64-range", Minute, map[string]any{"n": 3.0, "nx": 3.0, "sum": max, "min": -max, "max": max, "mean": max / 3, "last": -max, "label": nil}},
		{"beyond-float64-range", 2 * Minute, map[string]any{"n": 4.0, "nx": 2.0, "sum": nil, "min": -max, "max": max, "mean": max / 2, "last": max, "label": nil}},
		{"cancelling-sum", 5 * Minute, map[string]any{"n": 3.0, "nx": 3.0, "sum": 0.0, "min": -0.1, "max": 0.1, "mean": 0.0, "last": 0.0, "label": nil}},
		{"partitions-and-ties", Hour - 1, map[string]any{"n": 4.0, "nx": 3.0, "sum": 6.0, "min": 1.0, "max": 4.0, "mean": 2.0, "last": 1.0, "label": "p7"}},
		{"last-raw-values", Minute, map[string]any{"n": 3.0, "nx": 1.0, "sum": 9007199254740992.0, "min": 9007199254740992.0, "max": 9007199254740992.0, "mean": 9007199254740992.0, "last": 9007199254740992.0, "label": "é\u2028\"quoted\""}},
	}
	for _, tt := range tests {
		got := eval(tt.record, tt.at)
		for name, w := range tt.want {
			if !identical(got[name], w) {
				t.Errorf("%s at %d: %s = %#v, want %#v", tt.record, tt.at, name, got[name], w)
			}
		}
	}
}

// Fuzz seed corpora, in the format of go test's testdata/fuzz directory.

// fuzzSeeds returns, per fuzz target, the seed files: name → one value.
func fuzzSeeds(tb testing.TB) map[string]map[string]any {
	v := goldenView(tb)
	records := map[string]any{}
	for _, g := range goldenRecords {
		records["golden-"+g.name] = v.AppendRecord(nil, buildGolden(tb, v, g))
	}
	fv := functionsView(tb)
	for _, g := range slices.Concat(goldenRecords, functionsRecords) {
		b := fv.AppendRecord(nil, buildGolden(tb, fv, g))
		records["functions-"+g.name] = b
		// Cut short and with a byte flipped in the middle: corrupt states
		// of every new kind for the fuzzer to start from.
		if len(b) > 8 {
			records["functions-"+g.name+"-truncated"] = b[:len(b)*2/3]
			flipped := slices.Clone(b)
			flipped[len(b)/2] ^= 0x41
			records["functions-"+g.name+"-flipped"] = flipped
		}
	}
	oneEvent := records["golden-one-event"].([]byte)
	// A tile of goldenView holds, in order: count(), count(x), sum(x), min(x),
	// max(x), mean(x) as a sum and a count, last(x), last(s). The one below
	// is count() = 1 and the rest empty.
	emptyRest := []byte{0, 0, 0, 0, 0, 0, 0, 0}
	tile := func(states ...[]byte) []byte { return slices.Concat(states...) }
	for name, b := range map[string][]byte{
		"empty-input":          {},
		"version-2":            {2, 0, 0},
		"truncated":            oneEvent[:len(oneEvent)-1],
		"trailing-byte":        append(slices.Clone(oneEvent), 0),
		"one-tile-count-only":  tile([]byte{1, 0, 1, 0, 1}, emptyRest),
		"huge-offset-count":    {1, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"partition-too-big":    {1, 1, 0x80, 0x80, 0x80, 0x80, 0x08, 0, 0},
		"offset-too-big":       {1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0},
		"partitions-unordered": {1, 2, 5, 0, 3, 0, 0},
		"too-many-tiles":       {1, 0, 61},
		"tile-index-past-span": tile([]byte{1, 0, 1, 60, 1}, emptyRest),
		"tile-index-repeated":  tile([]byte{1, 0, 2, 7, 1}, emptyRest, []byte{7, 1}, emptyRest),
		"overlong-varint":      tile([]byte{1, 0x80, 0x00, 0x81, 0x00, 0x80, 0x00, 0x81, 0x00}, emptyRest),
		"sum-bad-sign":         tile([]byte{1, 0, 1, 0, 1, 0, 3}, emptyRest[1:]),
		"sum-zero-top-byte":    tile([]byte{1, 0, 1, 0, 1, 0, 1, 0, 2, 1, 0}, emptyRest[1:]),
		"sum-even-low-byte":    tile([]byte{1, 0, 1, 0, 1, 0, 1, 0, 1, 2}, emptyRest[1:]),
		"sum-too-wide":         tile([]byte{1, 0, 1, 0, 1, 0, 1, 0xfe, 0x10, 1, 3}, emptyRest[1:]),
		"min-nan":              tile([]byte{1, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xf8, 0x7f}, emptyRest[2:]),
		"max-inf":              tile([]byte{1, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xf0, 0x7f}, emptyRest[3:]),
		"mean-count-missing":   {1, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0, 2, 1},
		"last-not-json":        tile([]byte{1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, '{'}, emptyRest[7:]),
		"last-empty-value":     tile([]byte{1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}, emptyRest[7:]),
		"last-partition-max":   tile([]byte{1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 1, '1'}, emptyRest[7:]),
		"last-bad-flag":        tile([]byte{1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 2}, emptyRest[7:]),
	} {
		records[name] = b
	}

	sums := map[string]any{}
	for name, xs := range map[string][]float64{
		"zero":         nil,
		"one":          {1},
		"minus-one":    {-1},
		"cents":        {12.34, -0.01, 99.99},
		"2^53+2":       {1 << 53, 1, 1},
		"subnormal":    {math.SmallestNonzeroFloat64},
		"max":          {math.MaxFloat64},
		"beyond-max":   {math.MaxFloat64, math.MaxFloat64, math.MaxFloat64},
		"below-max":    {-math.MaxFloat64, -math.MaxFloat64},
		"wide":         {math.MaxFloat64, math.SmallestNonzeroFloat64},
		"tie-at-top":   {math.MaxFloat64, math.Ldexp(1, 970)},
		"cancelled":    {0.1, -0.1},
		"1e300-1e-300": {1e300, -1e-300},
	} {
		var s ExactSum
		for _, x := range xs {
			s.Add(x)
		}
		sums["valid-"+name] = s.AppendBinary(nil)
	}
	for name, b := range map[string][]byte{
		"empty-input":  {},
		"bad-sign":     {3},
		"no-position":  {1},
		"no-length":    {1, 0},
		"zero-length":  {1, 0, 0},
		"short":        {1, 0, 2, 1},
		"zero-top":     {1, 0, 2, 1, 0},
		"even-low":     {2, 0, 1, 2},
		"past-limbs":   {1, 0x80, 0x11, 1, 1},
		"at-sign-bit":  {1, 0xff, 0x10, 1, 1},
		"overlong-pos": {1, 0x80, 0x00, 1, 1},
		"top-of-range": {2, 0xf7, 0x10, 1, 0x7f},
		"trailing":     {1, 0, 1, 1, 0xaa},
	} {
		sums[name] = b
	}

	durations := map[string]any{}
	for i, s := range []string{
		"7d", "1d12h", "90m", "500ms", "0", "0s", "1h30m", " 7d ", "", "d", "-1m", "-1d",
		"1.5ms", "1us", "1000000d", "1000001d", "1d-1h", "1d1d", "7D", "+1d", "1.5d",
		"2562047h47m16s854ms", "9223372036854775807ms", "1000000d2562047h",
	} {
		durations[fmt.Sprintf("seed-%02d", i)] = s
	}
	canon := map[string]any{}
	for i, s := range canonicalSeeds {
		canon[fmt.Sprintf("seed-%02d", i)] = []byte(s)
	}
	return map[string]map[string]any{
		"FuzzCanonicalValue": canon,
		"FuzzDecodeRecord":   records,
		"FuzzExactSumDecode": sums,
		"FuzzParseDuration":  durations,
	}
}

// corpusFile is the text of a one-value fuzz corpus file.
func corpusFile(x any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	switch x := x.(type) {
	case []byte:
		fmt.Fprintf(&b, "[]byte(%s)\n", strconv.Quote(string(x)))
	case string:
		fmt.Fprintf(&b, "string(%s)\n", strconv.Quote(x))
	default:
		panic(fmt.Sprintf("corpus value %T", x))
	}
	return b.Bytes()
}

func TestGoldenFuzzSeeds(t *testing.T) {
	for target, seeds := range fuzzSeeds(t) {
		dir := filepath.Join("testdata", "fuzz", target)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for name, x := range seeds {
			path := filepath.Join(dir, name)
			want := corpusFile(x)
			if *update {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("%v (regenerate with -update)", err)
			} else if !bytes.Equal(got, want) {
				t.Errorf("%s is stale (regenerate with -update)", path)
			}
		}
	}
}
