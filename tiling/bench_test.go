package tiling

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// go test -tags pebblegozstd -run '^$' -bench . -benchmem ./tiling
//
// Per function: BenchmarkAdd (one event into a tile), BenchmarkMerge (one
// tile of 20 events into an accumulator), BenchmarkFinalize (the value of a
// 30-day accumulator), BenchmarkStateSize (encoded bytes of a tile, and the
// worst case the view check assumes). BenchmarkServe30d is the serving path
// of one key: decode a 30-day window's records and evaluate.

// benchFeature is one feature of fn with its options, over column x for
// numeric functions and m (a merchant id) for the others.
func benchFeature(fn Function, w int64) Feature {
	f := Feature{Name: string(fn), Function: fn, Column: "x", Window: w}
	switch fn {
	case Count:
		f.Column = ""
	case First, Last, FirstN, LastN, LastDistinctN, ApproxCountDistinct, TopK:
		f.Column = "m"
	}
	if fn.keepsValues() {
		f.MaxValueBytes = 64 // merchant ids; a view of every function fits a tile
	}
	switch fn {
	case FirstN, LastN, LastDistinctN:
		f.N = 10
	case TopK:
		f.K = 10
	case ApproxPercentile:
		f.Percentiles = []float64{0.5, 0.9, 0.99}
	}
	return f
}

// benchGen makes the inputs of a column: amounts in cents, as most money
// columns hold, and merchant ids of a skewed popularity among 5,000.
type benchGen struct{ r *rand.Rand }

func (g benchGen) input(col string) Input {
	if col == "m" {
		id := int(g.r.ExpFloat64() * 300)
		raw := strconv.AppendQuote([]byte(nil), "merchant-"+strconv.Itoa(id%5000))
		return Input{Kind: Other, Raw: raw}
	}
	cents := g.r.IntN(100_000) - 20_000
	x := float64(cents) / 100
	return Input{Kind: Number, Num: x, Raw: strconv.AppendFloat(nil, x, 'g', -1, 64)}
}

func (g benchGen) event(v *View, ts int64, pos Pos) Event {
	e := Event{Key: "k", TS: ts, Pos: pos}
	for _, c := range v.Columns() {
		e.Inputs = append(e.Inputs, g.input(c))
	}
	return e
}

func BenchmarkAdd(b *testing.B) {
	for _, fn := range Functions {
		b.Run(string(fn), func(b *testing.B) {
			v := newTestView(b, Minute, MinTime, benchFeature(fn, Hour))
			g := benchGen{rand.New(rand.NewPCG(1, 2))}
			events := make([]Event, 1024)
			for i := range events {
				events[i] = g.event(v, g.r.Int64N(Hour), Pos{})
			}
			rec := v.NewRecord(0)
			var off int64
			b.ReportAllocs()
			for b.Loop() {
				e := &events[off%int64(len(events))]
				e.Pos = Pos{Partition: 0, Offset: off}
				off++
				v.Add(rec, e)
			}
		})
	}
}

// benchStates returns tiles tiles of n events each, of fn's one partial
// aggregate, spread over a month.
func benchStates(tb testing.TB, fn Function, tiles, n int, seed uint64) (*View, []State) {
	v := newTestView(tb, Hour, MinTime, benchFeature(fn, 30*Day))
	g := benchGen{rand.New(rand.NewPCG(seed, 4))}
	out := make([]State, tiles)
	off := int64(seed) << 40
	for i := range out {
		s := newState(&v.aggs[0])
		for range n {
			e := g.event(v, int64(i)*Hour+g.r.Int64N(Hour), Pos{Offset: off})
			off++
			var in *Input
			if len(e.Inputs) > 0 {
				in = &e.Inputs[0]
			}
			s.add(&e, in)
		}
		// Tiles are read from the store: merge their decoded form.
		d, _, err := decodeState(&v.aggs[0], s.appendBinary(nil))
		if err != nil {
			tb.Fatal(err)
		}
		out[i] = d
	}
	return v, out
}

func BenchmarkMerge(b *testing.B) {
	for _, fn := range Functions {
		b.Run(string(fn), func(b *testing.B) {
			v, tiles := benchStates(b, fn, 720, 20, 3)
			acc := newState(&v.aggs[0])
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				if i == len(tiles) { // a fresh accumulator per 30 days
					acc, i = newState(&v.aggs[0]), 0
				}
				acc.merge(tiles[i])
				i++
			}
		})
	}
}

// BenchmarkFinalize is the cost of a value over 30 days of hour tiles of 20
// events each (14,400 events): what a read pays per feature after merging.
func BenchmarkFinalize(b *testing.B) {
	for _, fn := range Functions {
		b.Run(string(fn), func(b *testing.B) {
			v, tiles := benchStates(b, fn, 720, 20, 5)
			acc := newState(&v.aggs[0])
			for _, t := range tiles {
				acc.merge(t)
			}
			acc.appendBinary(nil) // fold pending work, as the first value would
			b.ReportAllocs()
			for b.Loop() {
				acc.value(&v.Features[0])
			}
		})
	}
	for _, p := range []int{12, 14, 16} {
		b.Run(fmt.Sprintf("approx_count_distinct/dense/precision=%d", p), func(b *testing.B) {
			s := &hllState{p: uint8(p)}
			r := rand.New(rand.NewPCG(6, 7))
			for range 1 << p {
				s.addHash(r.Uint64())
			}
			s.normalize()
			if s.dense == nil {
				b.Fatal("not dense")
			}
			b.ReportAllocs()
			for b.Loop() {
				s.estimate()
			}
		})
	}
}

// BenchmarkWindowValue is what a healed read pays per window and sketch
// feature: merge a month's, a day's and an hour's decoded aggregate (as
// EvaluateBatch merges a summary suffix and a day part) into a fresh state,
// and take its value.
func BenchmarkWindowValue(b *testing.B) {
	for _, fn := range []Function{ApproxPercentile, ApproxCountDistinct} {
		b.Run(string(fn), func(b *testing.B) {
			var parts []State
			for i, n := range []int{720, 24, 1} { // hour tiles of 50 events
				v, tiles := benchStates(b, fn, n, 50, uint64(20+i))
				acc := newState(&v.aggs[0])
				for _, t := range tiles {
					acc.merge(t)
				}
				d, _, err := decodeState(&v.aggs[0], acc.appendBinary(nil))
				if err != nil {
					b.Fatal(err)
				}
				parts = append(parts, d)
			}
			v, _ := benchStates(b, fn, 1, 1, 1)
			b.ReportAllocs()
			for b.Loop() {
				w := newState(&v.aggs[0])
				for _, p := range parts {
					w.merge(p)
				}
				w.value(&v.Features[0])
			}
		})
	}
}

// BenchmarkDecodeSketch decodes (and validates) one sketch as a read gets
// it from a day or summary suffix: a DDSketch of n amounts in cents
// (positive, uniform up to 1,000, as the serving benchmarks' amounts) and
// a HyperLogLog of n merchants among 10,000 (sparse for the tile of 23
// events, dense above).
func BenchmarkDecodeSketch(b *testing.B) {
	for _, fn := range []Function{ApproxPercentile, ApproxCountDistinct} {
		for _, n := range []int{23, 1400, 1_000_000} {
			b.Run(fmt.Sprintf("%s/events=%d", fn, n), func(b *testing.B) {
				f := benchFeature(fn, Day)
				v := newTestView(b, Minute, MinTime, f)
				r := rand.New(rand.NewPCG(uint64(n), 5))
				s := newState(&v.aggs[0])
				for range n {
					in := Input{Kind: Number, Num: float64(r.IntN(100_000)) / 100}
					if fn == ApproxCountDistinct {
						in = Input{Kind: Other, Raw: strconv.AppendQuote(nil, "m"+strconv.Itoa(r.IntN(10_000)))}
					}
					e := Event{Inputs: []Input{in}}
					s.add(&e, &e.Inputs[0])
				}
				enc := s.appendBinary(nil)
				b.ReportAllocs()
				for b.Loop() {
					if _, _, err := decodeState(&v.aggs[0], enc); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(enc)), "B/state")
			})
		}
	}
}

// BenchmarkDecodeRecordFrom decodes a read's stream record of W_b's hour
// (minute tiles of 23 events each, the 1M-event key of the serving
// benchmarks; a count, a distinct count and percentiles per tile) whole and
// from W_b at minute 30 and 55: the tiles before W_b are checked, not kept.
func BenchmarkDecodeRecordFrom(b *testing.B) {
	v := newTestView(b, Minute, MinTime, benchFeature(Count, Day), benchFeature(ApproxCountDistinct, Day),
		benchFeature(ApproxPercentile, Day))
	g := benchGen{rand.New(rand.NewPCG(11, 12))}
	rec := v.NewRecord(0)
	for i := range int64(60 * 23) {
		e := g.event(v, i/23*Minute+g.r.Int64N(Minute), Pos{Offset: i})
		v.Add(rec, &e)
	}
	enc := v.AppendRecord(nil, rec)
	for _, m := range []int64{0, 30, 55} {
		b.Run(fmt.Sprintf("from=%dm", m), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.DecodeRecordFrom(0, enc, m*Minute); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(enc)), "B/record")
		})
	}
}

// BenchmarkStateSize reports the encoded bytes of one state after n events
// (a tile's worth), and the worst case that NewView's tile check assumes.
func BenchmarkStateSize(b *testing.B) {
	for _, fn := range Functions {
		for _, n := range []int{1, 60, 1000} {
			b.Run(fmt.Sprintf("%s/events=%d", fn, n), func(b *testing.B) {
				v, s := benchStates(b, fn, 1, n, 7)
				var buf []byte
				b.ReportAllocs()
				for b.Loop() {
					buf = s[0].appendBinary(buf[:0])
				}
				b.ReportMetric(float64(len(buf)), "B/state")
				b.ReportMetric(float64(v.aggs[0].maxBytes()), "B/worst")
			})
		}
	}
}

// BenchmarkEvaluate7d evaluates a 7-day window at minute granularity: 168
// hour records of 60 minute tiles, 10,080 tiles, each with one event.
func BenchmarkEvaluate7d(b *testing.B) {
	for _, tc := range []struct {
		name string
		fns  []Function
	}{
		{"sum", []Function{Sum}},
		{"every-function", Functions},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var fs []Feature
			for _, fn := range tc.fns {
				fs = append(fs, benchFeature(fn, 7*Day))
			}
			v := newTestView(b, Minute, MinTime, fs...)
			g := benchGen{rand.New(rand.NewPCG(5, 6))}
			const t0 = 1_760_000_000_000 / Day * Day
			var recs []*Record
			var off int64
			for h := range int64(7 * 24) {
				rec := v.NewRecord(t0 + h*Hour)
				for m := range int64(60) {
					e := g.event(v, t0+h*Hour+m*Minute+g.r.Int64N(Minute), Pos{Offset: off})
					off++
					v.Add(rec, &e)
				}
				recs = append(recs, rec)
			}
			// The window [t0−1m, t0+7d) covers every tile: a window spans
			// w plus the current tile.
			at := t0 + 7*Day - 1
			if from, to := v.ReadRange(at); from > t0 || to != t0+7*Day {
				b.Fatalf("window [%d, %d) does not cover [%d, %d)", from, to, t0, t0+7*Day)
			}
			tiles := 0
			for _, rec := range recs {
				tiles += len(rec.Tiles)
			}
			b.ReportAllocs()
			for b.Loop() {
				v.Evaluate(at, recs)
			}
			b.ReportMetric(float64(tiles), "tiles/op")
		})
	}
}

// BenchmarkServe30d is one key's read of a view with distinct counts and
// percentiles over 1h, 1d, 7d and 30d windows at hour granularity (the
// default for a smallest window of 1h is 5m; 1h is what a view of day-long
// windows gets): decode the 30 day records of the window from their bytes
// and evaluate every feature. It reports the 99th percentile of the
// per-read time beside the mean.
func BenchmarkServe30d(b *testing.B) {
	for _, perHour := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprintf("events-per-hour=%d", perHour), func(b *testing.B) {
			v := serveView(b)
			g := benchGen{rand.New(rand.NewPCG(8, 9))}
			const t0 = 1_760_000_000_000 / Day * Day
			var encoded [][]byte
			var starts []int64
			var off int64
			for d := range int64(30) {
				rec := v.NewRecord(t0 + d*Day)
				for h := range int64(24) {
					for range perHour {
						e := g.event(v, t0+d*Day+h*Hour+g.r.Int64N(Hour), Pos{Offset: off})
						off++
						v.Add(rec, &e)
					}
				}
				encoded = append(encoded, v.AppendRecord(nil, rec))
				starts = append(starts, rec.Start)
			}
			bytes := 0
			for _, e := range encoded {
				bytes += len(e)
			}
			at := t0 + 30*Day - 1
			var times []time.Duration
			cpu0 := cpuTime()
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				recs := make([]*Record, len(encoded))
				for i, e := range encoded {
					r, err := v.DecodeRecord(starts[i], e)
					if err != nil {
						b.Fatal(err)
					}
					recs[i] = r
				}
				v.Evaluate(at, recs)
				times = append(times, time.Since(start))
			}
			reportServe(b, times, cpu0)
			b.ReportMetric(float64(bytes), "B/read")
		})
	}
}

// BenchmarkServe30dBatch is the same read once a heal has compacted all but
// the current day (W_b at the start of day 29): decode the summary (one
// aggregate per day), the day and detail records the 1d and 7d window
// starts need, today's stream record, and evaluate across W_b.
func BenchmarkServe30dBatch(b *testing.B) {
	for _, perHour := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprintf("events-per-hour=%d", perHour), func(b *testing.B) {
			v := serveView(b)
			g := benchGen{rand.New(rand.NewPCG(8, 9))}
			const t0 = 1_760_000_000_000 / Day * Day
			wb := t0 + 29*Day
			s := &Summary{Watermark: wb, FirstDay: t0}
			dayRecs, details := map[int64][]byte{}, map[int64][]byte{}
			var stream []byte
			var off int64
			for d := range int64(30) {
				rec := v.NewRecord(t0 + d*Day)
				for h := range int64(24) {
					for range perHour {
						e := g.event(v, t0+d*Day+h*Hour+g.r.Int64N(Hour), Pos{Offset: off})
						off++
						v.Add(rec, &e)
					}
				}
				if rec.Start >= wb {
					stream = v.AppendRecord(nil, rec)
					continue
				}
				day := &Record{Start: rec.Start, Tiles: v.Rollup(rec, v.Span()), Only: []int64{MinTime}}
				total := v.NewStates()
				for i := range day.Tiles {
					MergeStates(total, day.Tiles[i].States)
				}
				s.Days = append(s.Days, SummaryDay{Start: rec.Start, Gen: 1, Total: total})
				dayRecs[rec.Start] = v.AppendDayRecord(nil, day)
				details[rec.Start] = v.AppendDetailRecord(nil, &Record{Start: rec.Start, Tiles: rec.Tiles})
			}
			summary := v.AppendSummary(nil, s)
			at := t0 + 30*Day - 1
			bytes := len(summary) + len(stream)
			for _, n := range v.BatchNeeds(at, s) {
				bytes += len(dayRecs[n.Day]) + len(details[n.Block])
			}
			var times []time.Duration
			cpu0 := cpuTime()
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				sum, err := v.DecodeSummaryForRead(summary)
				if err == nil {
					err = v.PrepareSummary(sum, at)
				}
				if err != nil {
					b.Fatal(err)
				}
				batch := &Batch{Summary: sum, Days: map[int64][]State{}}
				for _, n := range v.BatchNeeds(at, sum) {
					st, detail, err := v.DecodeDaySuffix(n.Day, dayRecs[n.Day], n.Start)
					if err != nil {
						b.Fatal(err)
					}
					if detail {
						ds, err := v.DecodeDetailSuffix(n.Block, details[n.Block], n.Start)
						if err != nil {
							b.Fatal(err)
						}
						if st == nil {
							st = ds
						} else if ds != nil {
							MergeStates(st, ds)
						}
					}
					batch.Days[n.Start] = st
				}
				r, err := v.DecodeRecord(wb, stream)
				if err != nil {
					b.Fatal(err)
				}
				v.EvaluateBatch(at, batch, []*Record{r})
				times = append(times, time.Since(start))
			}
			reportServe(b, times, cpu0)
			b.ReportMetric(float64(bytes), "B/read")
		})
	}
}

// cpuTime is the CPU time the process used so far (user and system, every
// thread: GC included).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportServe reports the 99th percentile of the reads' wall times and the
// CPU time per read, which other processes on the machine do not inflate.
func reportServe(b *testing.B, times []time.Duration, cpu0 time.Duration) {
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)*99/100].Nanoseconds()), "p99-ns/op")
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(len(times)), "cpu-ns/op")
}

// serveView is the view of the serving benchmarks: distinct counts,
// percentiles and sums over 1h, 1d, 7d and 30d, at hour granularity.
func serveView(tb testing.TB) *View {
	var fs []Feature
	for _, w := range []int64{Hour, Day, 7 * Day, 30 * Day} {
		d := benchFeature(ApproxCountDistinct, w)
		d.Name = "distinct_" + FormatDuration(w)
		p := benchFeature(ApproxPercentile, w)
		p.Name = "p_" + FormatDuration(w)
		s := benchFeature(Sum, w)
		s.Name = "sum_" + FormatDuration(w)
		fs = append(fs, d, p, s)
	}
	return newTestView(tb, Hour, MinTime, fs...)
}

// BenchmarkRecordCodec encodes and decodes an hour record of minute tiles
// with one state of every kind.
func BenchmarkRecordCodec(b *testing.B) {
	var fs []Feature
	for _, fn := range Functions {
		fs = append(fs, benchFeature(fn, Hour))
	}
	v := newTestView(b, Minute, MinTime, fs...)
	g := benchGen{rand.New(rand.NewPCG(9, 10))}
	rec := v.NewRecord(0)
	for i := range int64(600) {
		e := g.event(v, g.r.Int64N(Hour), Pos{Partition: int32(i % 4), Offset: i})
		v.Add(rec, &e)
	}
	enc := v.AppendRecord(nil, rec)
	b.Run("append", func(b *testing.B) {
		var buf []byte
		b.ReportAllocs()
		for b.Loop() {
			buf = v.AppendRecord(buf[:0], rec)
		}
		b.ReportMetric(float64(len(enc)), "B/record")
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.DecodeRecord(0, enc); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(enc)), "B/record")
	})
}
