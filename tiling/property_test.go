package tiling

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/tilestream/tilestream/oracle"
)

// The property test: random views, random events of one key and random ways
// of building records (in order, split and merged, replayed, restored from a
// snapshot) must give the same bytes, and Evaluate over those bytes must give
// exactly, bit for bit, what the oracle computes from the raw events.

// propEvent is one generated event in both forms: raw, for the oracle, and
// decoded for the view under test.
type propEvent struct {
	raw oracle.Event
	ev  Event
}

// propCase is one trial: a view and the events of one key, in generation
// order, which is also an order that applies every partition in offset order.
type propCase struct {
	seed   uint64
	view   *View
	ov     oracle.View
	events []propEvent
	base   int64 // aligned start of the time range the events mostly fall in
	length int64 // its length
}

func (c *propCase) String() string {
	return fmt.Sprintf("seed %d: g=%s lifetime_start=%d features=%+v, %d events from %d",
		c.seed, FormatDuration(c.view.Granularity), c.view.LifetimeStart, c.view.Features, len(c.events), c.base)
}

// newTestView builds a view with the bookkeeping fields filled in.
func newTestView(tb testing.TB, g, lifetimeStart int64, features ...Feature) *View {
	tb.Helper()
	v, err := NewView(View{
		Name: "test", Topic: "events", Entity: "user", Timestamp: "ts",
		Granularity: g, LifetimeStart: lifetimeStart, Features: features,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// inputOf converts a decoded JSON field as ingest does: absent and null are
// Missing, numbers are Number with −0 normalised to +0, anything else is Other;
// Raw is the compact JSON text.
func inputOf(fields map[string]any, col string) Input {
	x, ok := fields[col]
	if !ok || x == nil {
		return Input{Kind: Missing}
	}
	if f, ok := x.(float64); ok {
		if f == 0 {
			f = 0
		}
		raw, err := json.Marshal(f)
		if err != nil {
			panic(err)
		}
		return Input{Kind: Number, Num: f, Raw: raw}
	}
	raw, err := json.Marshal(x)
	if err != nil {
		panic(err)
	}
	return Input{Kind: Other, Raw: raw}
}

// eventOf decodes the JSON text of an event's fields for both the oracle and v.
func eventOf(v *View, ts int64, pos Pos, text []byte) propEvent {
	var fields map[string]any
	if err := json.Unmarshal(text, &fields); err != nil {
		panic(err)
	}
	e := Event{Key: "k", TS: ts, Pos: pos}
	for _, c := range v.Columns() {
		e.Inputs = append(e.Inputs, inputOf(fields, c))
	}
	return propEvent{
		raw: oracle.Event{Key: "k", TS: ts, Partition: pos.Partition, Offset: pos.Offset, Fields: fields},
		ev:  e,
	}
}

// randNumber returns an amount: an integer, fixed-point cents, an arbitrary
// float64 over the whole exponent range, a subnormal, a value near the top of
// the range, the negation of an earlier value (so large terms cancel and the
// small ones decide the sum), or ±0.
func randNumber(r *rand.Rand, earlier []float64) float64 {
	switch p := r.IntN(100); {
	case p < 30:
		return float64(r.IntN(2_000_001) - 1_000_000)
	case p < 60:
		return float64(r.IntN(2_000_001)-1_000_000) / 100
	case p < 80:
		for {
			x := math.Float64frombits(r.Uint64())
			if !math.IsNaN(x) && !math.IsInf(x, 0) {
				return x
			}
		}
	case p < 84:
		x := math.Float64frombits(r.Uint64N(1 << 52))
		if r.IntN(2) == 0 {
			x = -x
		}
		return x
	case p < 88:
		x := math.MaxFloat64 * (1 - r.Float64()/64)
		if r.IntN(2) == 0 {
			x = -x
		}
		return x
	case p < 96 && len(earlier) > 0:
		return -earlier[r.IntN(len(earlier))]
	case p < 98:
		return math.Copysign(0, -1)
	default:
		return 0
	}
}

// randLabel returns a value for the mixed column: numbers, strings, booleans,
// objects and arrays.
func randLabel(r *rand.Rand, earlier []float64) any {
	switch p := r.IntN(10); {
	case p < 3:
		return randNumber(r, earlier)
	case p < 8:
		return fmt.Sprintf("s%d", r.IntN(1000))
	case p < 9:
		return r.IntN(2) == 0
	default:
		return map[string]any{"a": []any{r.IntN(10), "b", nil}}
	}
}

var propGranularities = []int64{Second, Minute, 5 * Minute, Hour}

// newPropCase generates a view and the events of one key.
func newPropCase(seed uint64) *propCase {
	r := rand.New(rand.NewPCG(seed, 0x7469_6c69_6e67))
	g := propGranularities[r.IntN(len(propGranularities))]
	span := recordSpan(g)
	length := span * int64(1+r.IntN(3))
	tiles := length / g

	var base int64
	switch r.IntN(3) {
	case 0: // around the epoch: negative times
		base = -length / 2
	case 1: // today
		base = 1_760_000_000_000
	default: // anywhere within ±100 years
		base = r.Int64N(200*365*Day) - 100*365*Day
	}
	// Not aligned to the record span, so records are cut at random places.
	base = AlignDown(base, g)

	var features []Feature
	for i := range 1 + r.IntN(6) {
		fn := Functions[r.IntN(len(Functions))]
		col := "amount"
		switch fn {
		case Count:
			col = []string{"", "amount", "label"}[r.IntN(3)]
		case First, Last, FirstN, LastN, LastDistinctN, ApproxCountDistinct, TopK:
			col = []string{"amount", "label"}[r.IntN(2)]
		}
		// Numeric functions read amount only: ingest rejects an event with a
		// non-number in a column that a numeric function reads.
		var w int64 // lifetime
		switch p := r.IntN(10); {
		case p < 2:
		case p < 5:
			w = g * int64(1+r.IntN(5))
		default:
			w = g * (1 + r.Int64N(tiles+2))
		}
		features = append(features, randOptions(r, Feature{Name: fmt.Sprintf("f%d", i), Function: fn, Column: col, Window: w}))
	}
	lifetimeStart := MinTime
	if r.IntN(2) == 0 {
		lifetimeStart = base + g*(r.Int64N(tiles+2)-1)
	}
	v, err := NewView(View{
		Name: "prop", Topic: "events", Entity: "user", Timestamp: "ts",
		Granularity: g, LifetimeStart: lifetimeStart, Features: features,
	})
	if err != nil {
		panic(err)
	}
	c := &propCase{
		seed: seed,
		view: v,
		ov:   oracle.View{Granularity: g, LifetimeStart: lifetimeStart},
		base: base, length: length,
	}
	for _, f := range features {
		c.ov.Features = append(c.ov.Features, oracle.Feature{Name: f.Name, Function: string(f.Function), Column: f.Column, Window: f.Window,
			N: f.N, K: f.K, Percentiles: f.Percentiles})
	}

	var next [8]int64 // next offset per partition
	var amounts []float64
	n := r.IntN(150)
	if r.IntN(10) == 0 {
		n = 0
	}
	for range n {
		var ts int64
		if len(c.events) > 0 && r.IntN(7) == 0 {
			ts = c.events[r.IntN(len(c.events))].raw.TS // ties for last
		} else {
			ts = base + g*(r.Int64N(tiles+2)-1)
			switch r.IntN(4) {
			case 0: // first ms of a tile
			case 1:
				ts += g - 1
			default:
				ts += r.Int64N(g)
			}
		}
		p := int32(r.IntN(8))
		pos := Pos{Partition: p, Offset: next[p]}
		next[p] += 1 + r.Int64N(3)

		fields := map[string]any{}
		switch q := r.IntN(20); {
		case q < 2: // absent
		case q < 3:
			fields["amount"] = nil
		default:
			x := randNumber(r, amounts)
			amounts = append(amounts, x)
			fields["amount"] = x
		}
		switch q := r.IntN(20); {
		case q < 3: // absent
		case q < 4:
			fields["label"] = nil
		default:
			fields["label"] = randLabel(r, amounts)
		}
		text, err := json.Marshal(fields)
		if err != nil {
			panic(err)
		}
		c.events = append(c.events, eventOf(v, ts, pos, text))
	}
	return c
}

// randOptions sets random valid options for f's function: small n, k,
// precision and bins, so that truncation, dense sketches and collapsing
// happen within a case's events.
func randOptions(r *rand.Rand, f Feature) Feature {
	if f.Function.keepsValues() {
		f.MaxValueBytes = 64 // longer than any generated value
	}
	switch f.Function {
	case FirstN, LastN, LastDistinctN:
		f.N = []int{1, 2, 3, 5, 20}[r.IntN(5)]
	case TopK:
		f.K = []int{1, 3, 10}[r.IntN(3)]
	case ApproxCountDistinct:
		f.Precision = []int{0, 4, 8}[r.IntN(3)]
	case ApproxPercentile:
		all := []float64{0, 0.01, 0.25, 0.5, 0.9, 0.99, 1}
		r.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
		f.Percentiles = all[:1+r.IntN(4)]
		f.Accuracy = []float64{0, 0.05, 0.2}[r.IntN(3)]
		f.MaxBins = []int{0, 8, 16}[r.IntN(3)]
	}
	return f
}

// interleave returns the indexes of events in a random order that keeps each
// partition in offset order, as a consumer of several partitions sees them.
func interleave(r *rand.Rand, events []propEvent) []int {
	var queues [8][]int
	for i, e := range events {
		p := e.ev.Pos.Partition
		queues[p] = append(queues[p], i)
	}
	order := make([]int, 0, len(events))
	for len(order) < len(events) {
		p := r.IntN(len(queues))
		if len(queues[p]) == 0 {
			continue
		}
		order = append(order, queues[p][0])
		queues[p] = queues[p][1:]
	}
	return order
}

// records maps a record start to the record.
type records map[int64]*Record

// add applies e to its record, creating it as needed.
func (rs records) add(v *View, e *Event) bool {
	start := v.RecordStart(e.TS)
	r, ok := rs[start]
	if !ok {
		r = v.NewRecord(e.TS)
		rs[start] = r
	}
	return v.Add(r, e)
}

// sorted returns the records in ascending Start order, as Evaluate wants them.
func (rs records) sorted() []*Record {
	out := make([]*Record, 0, len(rs))
	for _, r := range rs {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b *Record) int { return cmp.Compare(a.Start, b.Start) })
	return out
}

// encoded is every record's encoding by start.
type encoded map[int64][]byte

func encodeAll(v *View, rs records) encoded {
	out := encoded{}
	for s, r := range rs {
		out[s] = v.AppendRecord(nil, r)
	}
	return out
}

func decodeAll(tb testing.TB, v *View, enc encoded) records {
	tb.Helper()
	out := records{}
	for s, b := range enc {
		r, err := v.DecodeRecord(s, b)
		if err != nil {
			tb.Fatalf("decode record %d: %v", s, err)
		}
		out[s] = r
	}
	return out
}

func sameEncodings(a, b encoded) error {
	for s, x := range a {
		y, ok := b[s]
		if !ok {
			return fmt.Errorf("record %d only on one side", s)
		}
		if !bytes.Equal(x, y) {
			return fmt.Errorf("record %d:\n %x\n %x", s, x, y)
		}
	}
	for s := range b {
		if _, ok := a[s]; !ok {
			return fmt.Errorf("record %d only on one side", s)
		}
	}
	return nil
}

// buildInOrder applies the events in order; with replays it re-adds already
// applied events along the way, which must change nothing.
func buildInOrder(tb testing.TB, r *rand.Rand, v *View, events []propEvent, order []int, replays bool) records {
	tb.Helper()
	rs := records{}
	for k, i := range order {
		if !rs.add(v, &events[i].ev) {
			tb.Fatalf("event %d (%+v) not applied the first time", i, events[i].ev.Pos)
		}
		if replays && r.IntN(4) == 0 {
			j := order[r.IntN(k+1)]
			start := v.RecordStart(events[j].ev.TS)
			before := v.AppendRecord(nil, rs[start])
			if rs.add(v, &events[j].ev) {
				tb.Fatalf("replay of event %d (%+v) applied again", j, events[j].ev.Pos)
			}
			if after := v.AppendRecord(nil, rs[start]); !bytes.Equal(before, after) {
				tb.Fatalf("replay of event %d changed the record", j)
			}
		}
	}
	return rs
}

// buildSplit applies the events split at random into parts, each built
// alone, then merges the parts tile by tile with AddTile, in random order.
// Offsets are merged by MarkApplied, as a builder that aggregates elsewhere
// would. Some parts go through their encoding first.
func buildSplit(tb testing.TB, r *rand.Rand, v *View, events []propEvent) records {
	tb.Helper()
	nparts := 1 + r.IntN(4)
	parts := make([]records, nparts)
	for i := range parts {
		parts[i] = records{}
	}
	for _, i := range interleave(r, events) {
		if !parts[r.IntN(nparts)].add(v, &events[i].ev) {
			tb.Fatalf("event %d not applied", i)
		}
	}
	out := records{}
	for _, pi := range r.Perm(nparts) {
		part := parts[pi]
		if r.IntN(2) == 0 {
			part = decodeAll(tb, v, encodeAll(v, part))
		}
		for s, pr := range part {
			dst, ok := out[s]
			if !ok {
				dst = v.NewRecord(s)
				out[s] = dst
			}
			for ti := range pr.Tiles {
				v.AddTile(dst, &pr.Tiles[ti])
			}
			for _, o := range pr.Offsets {
				dst.MarkApplied(Pos(o))
			}
		}
	}
	return out
}

// buildRestored applies a prefix of the events, snapshots every record
// through its encoding as a crash would leave them in the store, then
// replays every event from the start in another order: exactly the events
// of the prefix must be skipped.
func buildRestored(tb testing.TB, r *rand.Rand, v *View, events []propEvent) records {
	tb.Helper()
	first := interleave(r, events)
	cut := 0
	if len(first) > 0 {
		cut = r.IntN(len(first) + 1)
	}
	rs := records{}
	done := make([]bool, len(events))
	for _, i := range first[:cut] {
		if !rs.add(v, &events[i].ev) {
			tb.Fatalf("event %d not applied", i)
		}
		done[i] = true
	}
	rs = decodeAll(tb, v, encodeAll(v, rs))
	for _, i := range interleave(r, events) {
		if applied := rs.add(v, &events[i].ev); applied == done[i] {
			tb.Fatalf("after restoring %d of %d events, event %d (%+v): applied=%v", cut, len(events), i, events[i].ev.Pos, applied)
		}
	}
	return rs
}

// evalTimes returns query times: random ones and the edges where windows
// are most likely wrong — tile boundaries and 1ms either side, window tails
// (t−w exactly on a boundary and 1ms either side) and the lifetime start.
func evalTimes(r *rand.Rand, c *propCase) []int64 {
	g := c.view.Granularity
	var edges []int64
	around := func(t int64) { edges = append(edges, t-1, t, t+1) }
	for range 8 {
		edges = append(edges, c.base-c.length/2+r.Int64N(2*c.length))
	}
	for range 8 {
		b := c.base + g*(r.Int64N(c.length/g+3)-1)
		if len(c.events) > 0 && r.IntN(2) == 0 {
			b = AlignDown(c.events[r.IntN(len(c.events))].raw.TS, g) + g*r.Int64N(2)
		}
		around(b)
		for _, f := range c.view.Features {
			if f.Window > 0 && r.IntN(2) == 0 {
				around(b + f.Window) // t−w on the boundary of an event's tile
			}
		}
	}
	if ls := c.view.LifetimeStart; ls != MinTime {
		around(ls)
		around(ls - g)
		around(ls + g)
	}
	return edges
}

// tilingValue converts an Evaluate value to what encoding/json would decode
// from it, the oracle's form.
func tilingValue(tb testing.TB, x any) any {
	switch x := x.(type) {
	case uint64:
		return float64(x)
	case json.RawMessage:
		var out any
		if err := json.Unmarshal(x, &out); err != nil {
			tb.Fatalf("last value %q: %v", x, err)
		}
		return out
	}
	return x
}

// identical compares values exactly: float64 bit for bit, everything else
// with reflect.DeepEqual. Never a tolerance.
func identical(a, b any) bool {
	fa, oka := a.(float64)
	fb, okb := b.(float64)
	if oka || okb {
		return oka && okb && math.Float64bits(fa) == math.Float64bits(fb)
	}
	return reflect.DeepEqual(a, b)
}

// checkValues compares Evaluate over recs with want, the oracle's values at
// time t: exactly, except for the sketches, which must equal a fresh sketch
// of the window's events and stay within their error bounds of the oracle's
// exact answer.
func checkValues(tb testing.TB, c *propCase, want map[string]any, recs []*Record, t int64, what string) {
	tb.Helper()
	got := c.view.Evaluate(t, recs)
	for i := range c.view.Features {
		f := &c.view.Features[i]
		fail := func(format string, args ...any) {
			tb.Helper()
			tb.Fatalf("%v\n%s: t=%d feature %s %s(%s) window %s: %s", c, what, t, f.Name, f.Function, f.Column,
				FormatDuration(f.Window), fmt.Sprintf(format, args...))
		}
		g := tilingValue(tb, got[i])
		w := want[f.Name]
		switch f.Function {
		case ApproxCountDistinct, ApproxPercentile:
			fresh := c.freshValue(i, t)
			if a, b := mustJSON(tb, got[i]), mustJSON(tb, fresh); a != b {
				fail("got %s, a fresh sketch of the window's events %s", a, b)
			}
			if err := c.withinBounds(i, t, g, w); err != nil {
				fail("got %#v, oracle %#v: %v", g, w, err)
			}
		default:
			if !identical(g, w) {
				fail("got %#v, oracle %#v", g, w)
			}
		}
	}
}

func mustJSON(tb testing.TB, x any) string {
	b, err := json.Marshal(x)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// windowEvents returns the case's events in feature i's window at t.
func (c *propCase) windowEvents(i int, t int64) []*propEvent {
	start, end := c.view.WindowStart(c.view.Features[i].Window, t), c.view.End(t)
	var out []*propEvent
	for k := range c.events {
		if e := &c.events[k]; start <= e.ev.TS && e.ev.TS < end {
			out = append(out, e)
		}
	}
	return out
}

// freshValue is feature i's value at t from one state given every event of
// its window.
func (c *propCase) freshValue(i int, t int64) any {
	a := &c.view.aggs[c.view.featAgg[i]]
	s := newState(a)
	for _, e := range c.windowEvents(i, t) {
		s.add(&e.ev, &e.ev.Inputs[a.column])
	}
	return s.value(&c.view.Features[i])
}

// withinBounds checks a sketch's value against the exact answer: a distinct
// count within linear counting's error while sparse and 5σ of HyperLogLog's
// when dense; each percentile within the relative accuracy unless the
// window's values span more bins than the sketch keeps.
func (c *propCase) withinBounds(i int, t int64, got, exact any) error {
	f := &c.view.Features[i]
	a := &c.view.aggs[c.view.featAgg[i]]
	switch f.Function {
	case ApproxCountDistinct:
		est, n := got.(float64), exact.(float64)
		tol := 2 + 0.01*n
		if n > float64(hllSparseMax(a.n)) {
			tol = 2 + 5*1.04/math.Sqrt(float64(uint(1)<<a.n))*n
		}
		if math.Abs(est-n) > tol {
			return fmt.Errorf("off by %v, more than %v", est-n, tol)
		}
	case ApproxPercentile:
		if exact == nil || got == nil {
			if exact != nil || got != nil {
				return fmt.Errorf("null on one side only")
			}
			return nil
		}
		keys := map[int64]bool{}
		for _, e := range c.windowEvents(i, t) {
			if in := e.ev.Inputs[a.column]; in.Kind == Number {
				keys[a.mapping.key(in.Num)] = true
			}
		}
		if len(keys) > a.maxBins {
			return nil // collapsed: the low percentiles may be off
		}
		g, w := got.(map[string]any), exact.(map[string]any)
		if len(g) != len(w) {
			return fmt.Errorf("percentiles %v, want %v", g, w)
		}
		alpha := octaveAccuracy(a.n) * (1 + 1e-12)
		for k, wv := range w {
			gv, ok := g[k].(float64)
			if x := wv.(float64); !ok || math.Abs(gv-x) > alpha*math.Abs(x) {
				return fmt.Errorf("percentile %s: %v, exact %v, accuracy %v", k, g[k], x, alpha)
			}
		}
	}
	return nil
}

// readRecords returns the records that ReadRange(t) says serve time t.
func readRecords(v *View, recs []*Record, t int64) []*Record {
	from, to := v.ReadRange(t)
	var out []*Record
	for _, r := range recs {
		if r.Start+v.Span() > from && r.Start < to {
			out = append(out, r)
		}
	}
	return out
}

func TestPropertyMatchesOracle(t *testing.T) {
	trials := 500
	if testing.Short() || raceEnabled {
		trials = 50 // the race detector slows it tenfold; the full run covers more
	}
	for trial := range trials {
		c := newPropCase(uint64(trial))
		r := rand.New(rand.NewPCG(uint64(trial), 0x6f72646572))

		inOrder := buildInOrder(t, r, c.view, c.events, interleave(r, c.events), false)
		want := encodeAll(c.view, inOrder)

		// The same events give the same bytes whatever the build.
		builds := []struct {
			name string
			rs   records
		}{
			{"another order", buildInOrder(t, r, c.view, c.events, interleave(r, c.events), false)},
			{"generation order with replays", buildInOrder(t, r, c.view, c.events, interleave(r, c.events), true)},
			{"split and merged", buildSplit(t, r, c.view, c.events)},
			{"restored and replayed", buildRestored(t, r, c.view, c.events)},
		}
		for _, b := range builds {
			if err := sameEncodings(want, encodeAll(c.view, b.rs)); err != nil {
				t.Fatalf("%v\n%s: encodings differ from the in-order build: %v", c, b.name, err)
			}
		}

		// Round trip: decoding and re-encoding gives the same bytes.
		decoded := decodeAll(t, c.view, want)
		if err := sameEncodings(want, encodeAll(c.view, decoded)); err != nil {
			t.Fatalf("%v\nround trip: %v", c, err)
		}
		for _, rec := range decoded {
			if rec.Start != c.view.RecordStart(rec.Start) {
				t.Fatalf("%v\nrecord start %d not aligned to the span", c, rec.Start)
			}
			if len(rec.Tiles) == 0 && len(rec.Offsets) == 0 {
				t.Fatalf("%v\nrecord %d is empty", c, rec.Start)
			}
		}

		raw := make([]oracle.Event, len(c.events))
		for i, e := range c.events {
			raw[i] = e.raw
		}
		sortedDecoded := decoded.sorted()
		sortedLive := builds[2].rs.sorted()
		for _, at := range evalTimes(r, c) {
			want := oracle.Values(c.ov, raw, at)
			checkValues(t, c, want, sortedDecoded, at, "decoded records")
			checkValues(t, c, want, sortedLive, at, "split build, not encoded")
			checkValues(t, c, want, readRecords(c.view, sortedDecoded, at), at, "records in ReadRange")
		}
	}
}
