package tiling

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tilestream/tilestream/oracle"
)

// evaluateBatchRef is EvaluateBatch as first written: each window merges its
// own stream tiles and batch data. The one-walk EvaluateBatch must give the
// same values.
func (v *View) evaluateBatchRef(t int64, b *Batch, records []*Record) []any {
	wb := b.Summary.Watermark
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
		s := b.Summary
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
						v.dayPart(acc, b, day, start)
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

// buildBatch lays out the case's events as a heal at wb would, through the
// batch codecs: the summary (Base before firstDay, a total per day), day
// records and detail records; and the stream records of the events from wb.
func buildBatch(tb testing.TB, c *propCase, wb, firstDay int64) (*Batch, []*Record) {
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
	b := &Batch{DayRecords: map[int64]*Record{}, Details: map[int64]*Record{}}
	days := map[int64]*Record{}
	for _, r := range group(func(ts int64) bool { return ts >= firstDay && ts < wb }).sorted() {
		enc := v.AppendRecord(nil, &Record{Start: r.Start, Tiles: r.Tiles})
		d, err := v.DecodeRecord(r.Start, enc)
		if err != nil {
			tb.Fatal(err)
		}
		b.Details[r.Start] = d
		day := AlignDown(r.Start, v.DaySpan())
		if days[day] == nil {
			days[day] = &Record{Start: day}
		}
		days[day].Tiles = append(days[day].Tiles, v.Rollup(r, v.Span())...)
	}
	for _, day := range slices.Sorted(func(yield func(int64) bool) {
		for d := range days {
			if !yield(d) {
				return
			}
		}
	}) {
		dr := days[day]
		total := v.NewStates()
		for i := range dr.Tiles {
			MergeStates(total, dr.Tiles[i].States)
		}
		s.Days = append(s.Days, SummaryDay{Start: day, Gen: 1, Total: total})
		d, err := v.DecodeDayRecord(day, v.AppendDayRecord(nil, dr))
		if err != nil {
			tb.Fatal(err)
		}
		b.DayRecords[day] = d
	}
	sum, err := v.DecodeSummary(v.AppendSummary(nil, s))
	if err != nil {
		tb.Fatal(err)
	}
	b.Summary = sum
	stream := decodeAll(tb, v, encodeAll(v, group(func(ts int64) bool { return ts >= wb }))).sorted()
	return b, stream
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
		b, stream := buildBatch(t, c, wb, firstDay)
		raw := make([]oracle.Event, len(c.events))
		for i, e := range c.events {
			raw[i] = e.raw
		}
		for range 6 {
			at := wb + r.Int64N(c.length/2+2*g) - g/2
			if v.End(at) <= wb {
				at = wb
			}
			got := v.EvaluateBatch(at, b, stream)
			ref := v.evaluateBatchRef(at, b, stream)
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
