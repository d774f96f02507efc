package tiling

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
)

// go test -tags pebblegozstd -run '^$' -bench . -benchmem ./tiling

// benchFeature is one feature per function, over column x where it needs one.
func benchFeature(fn Function, w int64) Feature {
	col := "x"
	if fn == Count {
		col = ""
	}
	return Feature{Name: string(fn), Function: fn, Column: col, Window: w}
}

// benchInput is an amount in cents, as most money columns hold, with its raw
// JSON text.
func benchInput(r *rand.Rand) Input {
	cents := r.IntN(100_000) - 20_000
	x := float64(cents) / 100
	return Input{Kind: Number, Num: x, Raw: strconv.AppendFloat(nil, x, 'g', -1, 64)}
}

func BenchmarkAdd(b *testing.B) {
	for _, fn := range Functions {
		b.Run(string(fn), func(b *testing.B) {
			v := newTestView(b, Minute, MinTime, benchFeature(fn, Hour))
			r := rand.New(rand.NewPCG(1, 2))
			events := make([]Event, 1024)
			for i := range events {
				events[i] = Event{Key: "k", TS: r.Int64N(Hour)}
				if len(v.Columns()) > 0 {
					events[i].Inputs = []Input{benchInput(r)}
				}
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

// benchState returns a state of kind k after n events.
func benchState(k stateKind, n int, r *rand.Rand) State {
	s := newState(k)
	for i := range n {
		in := benchInput(r)
		e := Event{Key: "k", TS: int64(i), Pos: Pos{Offset: int64(i)}}
		if k == kindCount {
			s.add(&e, nil)
		} else {
			s.add(&e, &in)
		}
	}
	return s
}

func BenchmarkMerge(b *testing.B) {
	for _, fn := range Functions {
		b.Run(string(fn), func(b *testing.B) {
			r := rand.New(rand.NewPCG(3, 4))
			src := benchState(fn.state(), 20, r)
			dst := benchState(fn.state(), 20, r)
			b.ReportAllocs()
			for b.Loop() {
				dst.merge(src)
			}
		})
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
			r := rand.New(rand.NewPCG(5, 6))
			const t0 = 1_760_000_000_000 / Day * Day
			var recs []*Record
			var off int64
			for h := range int64(7 * 24) {
				rec := v.NewRecord(t0 + h*Hour)
				for m := range int64(60) {
					e := Event{Key: "k", TS: t0 + h*Hour + m*Minute + r.Int64N(Minute), Pos: Pos{Offset: off}}
					off++
					for range v.Columns() {
						e.Inputs = append(e.Inputs, benchInput(r))
					}
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

// BenchmarkStateSize reports the encoded size of one state after a minute
// tile's worth of events (n of them), and how long encoding takes.
func BenchmarkStateSize(b *testing.B) {
	for _, fn := range Functions {
		for _, n := range []int{1, 60} {
			b.Run(fmt.Sprintf("%s/events=%d", fn, n), func(b *testing.B) {
				s := benchState(fn.state(), n, rand.New(rand.NewPCG(7, 8)))
				var buf []byte
				b.ReportAllocs()
				for b.Loop() {
					buf = s.appendBinary(buf[:0])
				}
				b.ReportMetric(float64(len(buf)), "B/state")
			})
		}
	}
	b.Run("empty", func(b *testing.B) {
		for b.Loop() {
		}
		for _, fn := range Functions {
			b.ReportMetric(float64(len(newState(fn.state()).appendBinary(nil))), "B/empty-"+string(fn))
		}
	})
}

// BenchmarkRecordCodec encodes and decodes an hour record of minute tiles
// with one state of every kind.
func BenchmarkRecordCodec(b *testing.B) {
	var fs []Feature
	for _, fn := range Functions {
		fs = append(fs, benchFeature(fn, Hour))
	}
	v := newTestView(b, Minute, MinTime, fs...)
	r := rand.New(rand.NewPCG(9, 10))
	rec := v.NewRecord(0)
	for i := range int64(600) {
		e := Event{Key: "k", TS: r.Int64N(Hour), Pos: Pos{Partition: int32(i % 4), Offset: i}}
		for range v.Columns() {
			e.Inputs = append(e.Inputs, benchInput(r))
		}
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
