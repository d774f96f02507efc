package tiling

import (
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tilestream/tilestream/oracle"
)

// evaluateBatchRef is EvaluateBatch as first written: each window merges its
// own stream tiles and batch data, a window starting inside a day the tiles
// of that day from its start, as the heal built them (not as the day and
// detail records give them). The one-walk EvaluateBatch must give the same
// values.
func (v *View) evaluateBatchRef(t int64, bb *builtBatch, records []*Record) []any {
	s := bb.summary
	wb := s.Watermark
	end := v.End(t)
	out := make([]any, len(v.Features))
	for wi, w := range v.windows {
		start := v.WindowStart(w, t)
		acc := v.newStates()
		from := max(start, wb)
		for _, r := range records {
			for j := range r.Tiles {
				if tl := &r.Tiles[j]; tl.Start >= from && tl.Start < end {
					MergeStates(acc, tl.States)
				}
			}
		}
		if start < s.Watermark {
			if start < s.FirstDay {
				if s.Base != nil {
					MergeStates(acc, s.Base)
				}
				for i := range s.Days {
					MergeStates(acc, s.Days[i].Total)
				}
			} else {
				day := AlignDown(start, v.DaySpan())
				for i := range s.Days {
					switch d := &s.Days[i]; {
					case d.Start > day || (d.Start == day && start == day):
						MergeStates(acc, d.Total)
					case d.Start == day:
						for _, r := range bb.blocks {
							for j := range r.Tiles {
								if tl := &r.Tiles[j]; tl.Start >= start && AlignDown(tl.Start, v.DaySpan()) == day {
									MergeStates(acc, tl.States)
								}
							}
						}
					}
				}
			}
		}
		for _, f := range v.winFeats[wi] {
			out[f] = acc[v.featAgg[f]].value(&v.Features[f])
		}
	}
	return out
}

// builtBatch is a key's batch side as a heal writes it.
type builtBatch struct {
	summary *Summary
	// blocks are the tiles of each block; days the block aggregates of each
	// day, Only set, as the healer hands them to AppendDayRecord; details
	// the blocks of several tiles, as it hands them to AppendDetailRecord.
	blocks, days, details map[int64]*Record
	// dayEnc and detailEnc are their encodings.
	dayEnc, detailEnc map[int64][]byte
}

// read returns the batch side a read at t gets from the records: the
// summary and, per window start inside a day, the day record's suffix and
// the detail record's when the day record says so (as state.ReadKey).
func (bb *builtBatch) read(tb testing.TB, v *View, t int64) *Batch {
	tb.Helper()
	b := &Batch{Summary: bb.summary, Days: map[int64][]State{}}
	for _, n := range v.BatchNeeds(t, bb.summary) {
		st, detail, err := v.DecodeDaySuffix(n.Day, bb.dayEnc[n.Day], n.Start)
		if err != nil {
			tb.Fatal(err)
		}
		if detail {
			enc := bb.detailEnc[n.Block]
			if enc == nil {
				tb.Fatalf("the day record of %d needs the detail record of %d, which the heal did not write", n.Day, n.Block)
			}
			ds, err := v.DecodeDetailSuffix(n.Block, enc, n.Start)
			if err != nil {
				tb.Fatal(err)
			}
			if st == nil {
				st = ds
			} else if ds != nil {
				MergeStates(st, ds)
			}
		}
		b.Days[n.Start] = st
	}
	return b
}

// buildBatch lays out the case's events as a heal at wb would, through the
// batch codecs: the summary (Base before firstDay, a total per day), day
// records (version 1, block aggregates, when v1 is set, as stores written
// before hold them) and detail records, blocks of one tile marked in the
// day record instead; and the stream records of the events from wb.
func buildBatch(tb testing.TB, c *propCase, wb, firstDay int64, v1 bool) (*builtBatch, []*Record) {
	tb.Helper()
	v := c.view
	group := func(keep func(ts int64) bool) records {
		rs := records{}
		for i := range c.events {
			e := &c.events[i].ev
			if !keep(e.TS) {
				continue
			}
			start := v.RecordStart(e.TS)
			if rs[start] == nil {
				rs[start] = v.NewRecord(e.TS)
			}
			v.Aggregate(rs[start], e)
		}
		return rs
	}
	s := &Summary{Watermark: wb, FirstDay: firstDay}
	for _, r := range group(func(ts int64) bool { return ts >= v.LifetimeStart && ts < firstDay }).sorted() {
		if s.Base == nil {
			s.Base = v.NewStates()
		}
		for i := range r.Tiles {
			MergeStates(s.Base, r.Tiles[i].States)
		}
	}
	bb := &builtBatch{blocks: map[int64]*Record{}, days: map[int64]*Record{}, details: map[int64]*Record{},
		dayEnc: map[int64][]byte{}, detailEnc: map[int64][]byte{}}
	for _, r := range group(func(ts int64) bool { return ts >= firstDay && ts < wb }).sorted() {
		bb.blocks[r.Start] = r
		day := AlignDown(r.Start, v.DaySpan())
		if bb.days[day] == nil {
			bb.days[day] = &Record{Start: day}
		}
		dr := bb.days[day]
		dr.Tiles = append(dr.Tiles, v.Rollup(r, v.Span())...)
		if len(r.Tiles) == 1 {
			dr.Only = append(dr.Only, r.Tiles[0].Start)
			continue
		}
		dr.Only = append(dr.Only, MinTime)
		bb.details[r.Start] = r
		bb.detailEnc[r.Start] = v.AppendDetailRecord(nil, r)
	}
	for _, day := range slices.Sorted(maps.Keys(bb.days)) {
		dr := bb.days[day]
		total := v.NewStates()
		for i := range dr.Tiles {
			MergeStates(total, dr.Tiles[i].States)
		}
		s.Days = append(s.Days, SummaryDay{Start: day, Gen: 1, Total: total})
		if v1 {
			bb.dayEnc[day] = v.appendDayRecordV1(nil, dr)
		} else {
			bb.dayEnc[day] = v.AppendDayRecord(nil, dr)
		}
	}
	sum, err := v.DecodeSummary(v.AppendSummary(nil, s))
	if err != nil {
		tb.Fatal(err)
	}
	bb.summary = sum
	stream := decodeAll(tb, v, encodeAll(v, group(func(ts int64) bool { return ts >= wb }))).sorted()
	return bb, stream
}

// TestEvaluateBatch checks EvaluateBatch on random cases against the
// per-window reference and, for every exact function, the oracle.
func TestEvaluateBatch(t *testing.T) {
	trials := 300
	if testing.Short() || raceEnabled {
		trials = 60
	}
	for trial := range trials {
		c := newPropCase(uint64(trial) + 1<<20)
		r := rand.New(rand.NewPCG(uint64(trial), 0xba7c4))
		v, g := c.view, c.view.Granularity
		wb := c.base + g*r.Int64N(c.length/g+1)
		longest := int64(0)
		for _, f := range v.Features {
			longest = max(longest, f.Window)
		}
		firstDay := AlignDown(wb-longest-g, v.DaySpan()) - v.DaySpan()*r.Int64N(2)
		bb, stream := buildBatch(t, c, wb, firstDay, trial%3 == 2)
		raw := make([]oracle.Event, len(c.events))
		for i, e := range c.events {
			raw[i] = e.raw
		}
		for range 6 {
			at := wb + r.Int64N(c.length/2+2*g) - g/2
			if v.End(at) <= wb {
				at = wb
			}
			b := bb.read(t, v, at)
			got := v.EvaluateBatch(at, b, stream)
			ref := v.evaluateBatchRef(at, bb, stream)
			// A read decodes only the day suffixes its windows need: the
			// same values, byte for byte.
			rs, err := v.DecodeSummaryForRead(v.AppendSummary(nil, b.Summary))
			if err == nil {
				err = v.PrepareSummary(rs, at)
			}
			if err != nil {
				t.Fatal(err)
			}
			rb := *b
			rb.Summary = rs
			lazy := v.EvaluateBatch(at, &rb, stream)
			want := oracle.Values(c.ov, raw, at)
			for i := range v.Features {
				f := &v.Features[i]
				if a, l := mustJSON(t, got[i]), mustJSON(t, lazy[i]); a != l {
					t.Fatalf("W_b=%d t=%d feature %s: %s with every day total, %s from the read's suffixes", wb, at, f.Name, a, l)
				}
				if a, b := mustJSON(t, got[i]), mustJSON(t, ref[i]); a != b {
					t.Fatalf("%v\nW_b=%d first day %d t=%d feature %s %s window %s: got %s, per-window reference %s",
						c, wb, firstDay, at, f.Name, f.Function, FormatDuration(f.Window), a, b)
				}
				if f.Function == ApproxCountDistinct || f.Function == ApproxPercentile {
					if err := c.withinBounds(i, at, tilingValue(t, got[i]), want[f.Name]); err != nil {
						t.Fatalf("%v\nW_b=%d t=%d feature %s: %v", c, wb, at, f.Name, err)
					}
					continue
				}
				if g := tilingValue(t, got[i]); !identical(g, want[f.Name]) {
					t.Fatalf("%v\nW_b=%d first day %d t=%d feature %s %s window %s: got %#v, oracle %#v",
						c, wb, firstDay, at, f.Name, f.Function, FormatDuration(f.Window), g, want[f.Name])
				}
			}
		}
	}
}
