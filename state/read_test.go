package state

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/tilestream/tilestream/tiling"
)

// TestReadDecodersKeepNoInput checks what Store.decodeAt relies on: the
// decoders it runs on a value Pebble still holds (heads, day records,
// detail suffixes) keep nothing of their input. Each value is decoded from
// a buffer that is then overwritten; encoding the decoded result again must
// still give the original bytes, for every function's state.
func TestReadDecodersKeepNoInput(t *testing.T) {
	var fs []tiling.Feature
	for _, fn := range tiling.Functions {
		f := tiling.Feature{Name: string(fn), Function: fn, Column: "x", Window: tiling.Day}
		if fn == tiling.First || fn == tiling.Last || fn == tiling.FirstN || fn == tiling.LastN ||
			fn == tiling.LastDistinctN || fn == tiling.TopK {
			f.MaxValueBytes = 16 // a tile of every function within the size bound
		}
		switch fn {
		case tiling.Count:
			f.Column = ""
		case tiling.First, tiling.Last, tiling.FirstN, tiling.LastN, tiling.LastDistinctN,
			tiling.ApproxCountDistinct, tiling.TopK:
			f.Column = "m"
		}
		switch fn {
		case tiling.FirstN, tiling.LastN, tiling.LastDistinctN:
			f.N = 5
		case tiling.TopK:
			f.K = 5
		case tiling.ApproxPercentile:
			f.Percentiles = []float64{0.5, 0.99}
		}
		fs = append(fs, f)
	}
	v, err := tiling.NewView(tiling.View{Name: "v", Topic: "t", Entity: "k", Timestamp: "ts",
		Granularity: tiling.Minute, LifetimeStart: tiling.MinTime, Features: fs})
	if err != nil {
		t.Fatal(err)
	}
	cols := v.Columns()
	r := rand.New(rand.NewPCG(5, 6))
	const day = 1_760_000_000_000 / tiling.Day * tiling.Day
	// Hour records of minute tiles over a day, and the day record of their
	// hour blocks.
	dayRec := &tiling.Record{Start: day}
	var hours []*tiling.Record
	off := int64(0)
	for h := range int64(24) {
		rec := v.NewRecord(day + h*tiling.Hour)
		for range 1 + r.IntN(200) {
			in := make([]tiling.Input, len(cols))
			for i, c := range cols {
				switch c {
				case "x":
					in[i] = tiling.Input{Kind: tiling.Number, Num: float64(r.IntN(1_000_000))/100 - 1000}
				case "m":
					in[i] = tiling.Input{Kind: tiling.Other, Raw: fmt.Appendf(nil, `"m%d"`, r.IntN(300))}
				}
			}
			e := tiling.Event{Key: "k", TS: rec.Start + r.Int64N(tiling.Hour),
				Pos: tiling.Pos{Partition: int32(off % 3), Offset: off}, Inputs: in}
			off++
			v.Add(rec, &e)
		}
		hours = append(hours, rec)
		dayRec.Tiles = append(dayRec.Tiles, v.Rollup(rec, v.Span())...)
	}

	scribble := func(b []byte) {
		for i := range b {
			b[i] = 0xAA
		}
	}

	enc := v.AppendDayRecord(nil, dayRec)
	whole, err := v.DecodeDayRecord(day, enc)
	if err != nil {
		t.Fatal(err)
	}
	buf := bytes.Clone(enc)
	got, err := v.DecodeDayRecord(day, buf)
	if err != nil {
		t.Fatal(err)
	}
	scribble(buf)
	if again, want := v.AppendDayRecord(nil, got), v.AppendDayRecord(nil, whole); !bytes.Equal(again, want) {
		t.Fatalf("day record: decoded states changed with their input (%d bytes re-encoded, want %d)", len(again), len(want))
	}
	// A read's suffixes, from a block's start and from inside it.
	for h := range int64(24) {
		for _, from := range []int64{day + h*tiling.Hour, day + h*tiling.Hour + 17*tiling.Minute} {
			want, _, err := v.DecodeDaySuffix(day, enc, from)
			if err != nil {
				t.Fatal(err)
			}
			buf := bytes.Clone(enc)
			got, _, err := v.DecodeDaySuffix(day, buf, from)
			if err != nil {
				t.Fatal(err)
			}
			scribble(buf)
			if (got == nil) != (want == nil) {
				t.Fatalf("day suffix from %d: got nil %v, want nil %v", from, got == nil, want == nil)
			}
			if got == nil {
				continue
			}
			a := v.AppendRecord(nil, &tiling.Record{Start: day, Tiles: []tiling.Tile{{Start: day, States: got}}})
			b := v.AppendRecord(nil, &tiling.Record{Start: day, Tiles: []tiling.Tile{{Start: day, States: want}}})
			if !bytes.Equal(a, b) {
				t.Fatalf("day suffix from %d: decoded states changed with their input", from)
			}
		}
	}

	for _, rec := range hours {
		enc := v.AppendDetailRecord(nil, rec)
		for _, tl := range rec.Tiles {
			for _, from := range []int64{tl.Start, tl.Start + 1} {
				want, err := v.DecodeDetailSuffix(rec.Start, enc, from)
				if err != nil {
					t.Fatal(err)
				}
				buf := bytes.Clone(enc)
				got, err := v.DecodeDetailSuffix(rec.Start, buf, from)
				if err != nil {
					t.Fatal(err)
				}
				scribble(buf)
				if (got == nil) != (want == nil) {
					t.Fatalf("detail %d from %d: got nil %v, want nil %v", rec.Start, from, got == nil, want == nil)
				}
				if got == nil {
					continue
				}
				a := v.AppendRecord(nil, &tiling.Record{Start: rec.Start, Tiles: []tiling.Tile{{Start: rec.Start, States: got}}})
				b := v.AppendRecord(nil, &tiling.Record{Start: rec.Start, Tiles: []tiling.Tile{{Start: rec.Start, States: want}}})
				if !bytes.Equal(a, b) {
					t.Fatalf("detail %d from %d: decoded states changed with their input", rec.Start, from)
				}
			}
		}
	}

	// A summary decoded for a read at t: Base and the suffixes t needs.
	total := v.NewStates()
	for i := range dayRec.Tiles {
		tiling.MergeStates(total, dayRec.Tiles[i].States)
	}
	sum := &tiling.Summary{Watermark: day + tiling.Day, FirstDay: day, Base: hours[3].Tiles[0].States,
		Days: []tiling.SummaryDay{{Start: day, Gen: 1, Total: total}}}
	enc = v.AppendSummary(nil, sum)
	at := day + tiling.Day // every window starts at the day: its suffix
	pristine, err := v.DecodeSummary(enc)
	if err != nil {
		t.Fatal(err)
	}
	buf = bytes.Clone(enc)
	gotSum, err := v.DecodeSummaryAt(buf, at)
	if err != nil {
		t.Fatal(err)
	}
	scribble(buf)
	want := v.EvaluateBatch(at, &tiling.Batch{Summary: pristine}, nil)
	gotVals := v.EvaluateBatch(at, &tiling.Batch{Summary: gotSum}, nil)
	if fmt.Sprint(gotVals) != fmt.Sprint(want) {
		t.Fatalf("summary: values changed with the input:\n%v\nwant\n%v", gotVals, want)
	}
	base := v.AppendRecord(nil, &tiling.Record{Start: day, Tiles: []tiling.Tile{{Start: day, States: gotSum.Base}}})
	if wantBase := v.AppendRecord(nil, &tiling.Record{Start: day, Tiles: []tiling.Tile{{Start: day, States: sum.Base}}}); !bytes.Equal(base, wantBase) {
		t.Fatal("summary: Base changed with the input")
	}

	h := Head{Watermark: day + 7, Gen: 3}
	buf = encodeHead(h)
	gotH, err := decodeHead(buf)
	scribble(buf)
	if err != nil || gotH != h {
		t.Fatalf("head: got %+v, %v; want %+v", gotH, err, h)
	}
}

// TestReadKeyStreamFrom: a read keeps a stream record's tiles from W_b
// (or, before any heal, from its earliest window start) on, decoding the
// first record's earlier tiles only to check them; the values are those of
// every tile from there on, for W_b and the window starts at every minute
// of an hour.
func TestReadKeyStreamFrom(t *testing.T) {
	fs := []tiling.Feature{
		{Name: "n_1h", Function: tiling.Count, Window: tiling.Hour},
		{Name: "n_30m", Function: tiling.Count, Window: 30 * tiling.Minute},
		{Name: "d_1h", Function: tiling.ApproxCountDistinct, Column: "m", Window: tiling.Hour},
		{Name: "p_1h", Function: tiling.ApproxPercentile, Column: "x", Window: tiling.Hour, Percentiles: []float64{0.5, 0.9}},
	}
	v, err := tiling.NewView(tiling.View{Name: "v", Topic: "t", Entity: "k", Timestamp: "ts",
		Granularity: tiling.Minute, LifetimeStart: tiling.MinTime, Features: fs})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(Config{Path: t.TempDir()}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := rand.New(rand.NewPCG(7, 8))
	const hour0 = 1_760_000_000_000 / tiling.Day * tiling.Day
	var recs []*tiling.Record
	b := s.NewBatch()
	off := int64(0)
	for h := range int64(3) {
		rec := v.NewRecord(hour0 + h*tiling.Hour)
		for m := range int64(60) {
			for range []int{0, 1, 3, 300}[r.IntN(4)] {
				in := make([]tiling.Input, len(v.Columns()))
				for i, c := range v.Columns() {
					switch c {
					case "x":
						in[i] = tiling.Input{Kind: tiling.Number, Num: float64(r.IntN(100_000)) / 100}
					case "m":
						in[i] = tiling.Input{Kind: tiling.Other, Raw: fmt.Appendf(nil, `"m%d"`, r.IntN(5000))}
					}
				}
				e := tiling.Event{Key: "k", TS: rec.Start + m*tiling.Minute + r.Int64N(tiling.Minute),
					Pos: tiling.Pos{Offset: off}, Inputs: in}
				off++
				v.Add(rec, &e)
			}
		}
		recs = append(recs, rec)
		b.PutRecord(v, "k", rec)
	}
	if err := s.Commit(b); err != nil {
		t.Fatal(err)
	}
	from := func(records []*tiling.Record, from int64) []*tiling.Record {
		var out []*tiling.Record
		for _, rec := range records {
			c := &tiling.Record{Start: rec.Start}
			for _, tl := range rec.Tiles {
				if tl.Start >= from {
					c.Tiles = append(c.Tiles, tl)
				}
			}
			out = append(out, c)
		}
		return out
	}
	check := func(at, keep int64, what string) {
		t.Helper()
		kd, err := s.ReadKey(context.Background(), v, "k", at)
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range kd.Records {
			for _, tl := range rec.Tiles {
				if tl.Start < keep {
					t.Fatalf("%s at %d: a tile at %d, before %d, was kept", what, at, tl.Start, keep)
				}
			}
		}
		got := v.EvaluateBatch(at, kd.Batch, kd.Records)
		want := v.Evaluate(at, from(recs, keep))
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s at %d: %v, want %v", what, at, got, want)
		}
	}
	// No heal: tiles from the earliest window start (an hour back) on.
	for m := int64(0); m < 60; m++ {
		at := hour0 + 2*tiling.Hour + m*tiling.Minute + 7
		check(at, v.WindowStart(tiling.Hour, at), "before a heal")
	}
	// A head and an empty summary with W_b at every minute of the second
	// hour: stream tiles from W_b on.
	for m := int64(0); m < 60; m++ {
		wb := hour0 + tiling.Hour + m*tiling.Minute
		b := s.NewBatch()
		gen := uint64(m + 1)
		b.PutSummary(v, gen, "k", &tiling.Summary{Watermark: wb, FirstDay: tiling.AlignDown(wb-tiling.Hour, tiling.Day)})
		b.PutHead(v, "k", Head{Watermark: wb, Gen: gen})
		if err := s.Commit(b); err != nil {
			t.Fatal(err)
		}
		check(wb+30*tiling.Minute+7, wb, fmt.Sprintf("W_b at minute %d", m))
	}
}
