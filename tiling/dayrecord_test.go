package tiling

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
)

// dayCase is one key's day as a heal builds it: the tiles of each block,
// the day record's block aggregates (Only set, as the healer writes them)
// and the detail records of the blocks of several tiles.
type dayCase struct {
	v       *View
	day     int64
	blocks  []*Record // ascending, non-empty
	rec     *Record   // block aggregates
	details map[int64][]byte
	// starts are the day's tiles, ascending, and suffixes[i] the encoded
	// merge of starts[i…] (nil past the last): tilesFrom's cache.
	starts   []Tile
	suffixes [][]byte
}

// newDayCase draws a view of every kind of partial aggregate (sketches,
// lists, top_k among them) and a day of events: each block empty, of one
// tile, or of several, up to every tile of the day.
func newDayCase(tb testing.TB, seed uint64) *dayCase {
	tb.Helper()
	r := rand.New(rand.NewPCG(seed, 0xda7))
	g := []int64{Second, Minute, Minute, 5 * Minute, Hour}[r.IntN(5)]
	var fs []Feature
	for i := range 2 + r.IntN(6) {
		fn := Functions[r.IntN(len(Functions))]
		col := "amount"
		switch fn {
		case First, Last, FirstN, LastN, LastDistinctN, ApproxCountDistinct, TopK:
			col = []string{"amount", "label"}[r.IntN(2)]
		}
		fs = append(fs, randOptions(r, Feature{Name: fmt.Sprintf("f%d", i), Function: fn, Column: col, Window: Day}))
	}
	v := newTestView(tb, g, MinTime, fs...)
	c := &dayCase{v: v, day: AlignDown(1_760_000_000_000+r.Int64N(1000)*Day, v.DaySpan()), details: map[int64][]byte{}}
	c.rec = &Record{Start: c.day}
	per := v.Span() / g
	var amounts []float64
	off := int64(0)
	for block := c.day; block < c.day+v.DaySpan(); block += v.Span() {
		var tiles []int64
		switch p := r.IntN(10); {
		case p < 3: // empty
			continue
		case p < 5: // one tile
			tiles = []int64{r.Int64N(per)}
		case p < 6: // every tile
			for i := range min(per, 60) {
				tiles = append(tiles, i)
			}
		default:
			for range 2 + r.IntN(8) {
				tiles = append(tiles, r.Int64N(per))
			}
		}
		rec := v.NewRecord(block)
		for _, i := range tiles {
			for range 1 + r.IntN(4) {
				fields := map[string]any{"label": randLabel(r, amounts)}
				x := randNumber(r, amounts)
				amounts = append(amounts, x)
				fields["amount"] = x
				text, err := json.Marshal(fields)
				if err != nil {
					tb.Fatal(err)
				}
				e := eventOf(v, block+i*g+r.Int64N(g), Pos{Partition: int32(r.IntN(4)), Offset: off}, text)
				off++
				v.Aggregate(rec, &e.ev)
			}
		}
		c.blocks = append(c.blocks, rec)
		c.rec.Tiles = append(c.rec.Tiles, v.Rollup(rec, v.Span())...)
		if len(rec.Tiles) == 1 {
			c.rec.Only = append(c.rec.Only, rec.Tiles[0].Start)
			continue
		}
		c.rec.Only = append(c.rec.Only, MinTime)
		c.details[block] = v.AppendDetailRecord(nil, rec)
	}
	return c
}

// froms returns window starts in the day: every block's first and last
// instants, around a few of its tiles, and random times.
func (c *dayCase) froms(r *rand.Rand) []int64 {
	out := []int64{c.day, c.day + 1, c.day + c.v.DaySpan() - 1}
	for _, b := range c.blocks {
		out = append(out, b.Start, b.Start+1, b.Start+c.v.Span()-1)
		for range 2 {
			t := b.Tiles[r.IntN(len(b.Tiles))]
			out = append(out, t.Start, t.Start+1, t.Start+c.v.Granularity-1, t.Start+c.v.Granularity)
		}
	}
	for range 20 {
		out = append(out, c.day+r.Int64N(c.v.DaySpan()))
	}
	return out
}

// blockPart is the day record's part from from as the version 1 reader
// computed it from the block aggregates: the blocks after from's block,
// and from's block when from is its start or its one tile is at or after
// from; and whether from's block needs its detail record.
func (c *dayCase) blockPart(from int64) (enc []byte, detail bool) {
	v := c.v
	block := AlignDown(from, v.Span())
	acc, any := v.NewStates(), false
	for i, t := range c.rec.Tiles {
		switch {
		case t.Start > block, t.Start == block && from == block:
		case t.Start == block && c.rec.Only[i] != MinTime && c.rec.Only[i] >= from:
		case t.Start == block:
			detail = c.rec.Only[i] == MinTime
			continue
		default:
			continue
		}
		MergeStates(acc, t.States)
		any = true
	}
	if !any {
		return nil, detail
	}
	return appendStates(nil, acc), detail
}

// tilesFrom is the day's data from from: the merge of every tile at or
// after it, encoded (from the tiles' suffixes, computed once).
func (c *dayCase) tilesFrom(from int64) []byte {
	if c.suffixes == nil {
		for _, b := range c.blocks {
			c.starts = append(c.starts, b.Tiles...)
		}
		c.suffixes = make([][]byte, len(c.starts)+1)
		acc := c.v.NewStates()
		for i := len(c.starts) - 1; i >= 0; i-- {
			MergeStates(acc, c.starts[i].States)
			c.suffixes[i] = appendStates(nil, acc)
		}
	}
	i := 0
	for i < len(c.starts) && c.starts[i].Start < from {
		i++
	}
	return c.suffixes[i]
}

// TestDaySuffix: for random views and days, the suffix DecodeDaySuffix
// gives from a day record — current version or version 1 — is byte for
// byte the merge of the block aggregates a version 1 read took, it asks for
// the detail record exactly when that read did, and with the detail
// record's suffix it is the day's data from the window start. A day record
// decoded for the healer merges to the day's total.
func TestDaySuffix(t *testing.T) {
	trials := 60
	if testing.Short() || raceEnabled {
		trials = 15
	}
	for trial := range trials {
		c := newDayCase(t, uint64(trial))
		v := c.v
		r := rand.New(rand.NewPCG(uint64(trial), 1))
		cur, old := v.AppendDayRecord(nil, c.rec), v.appendDayRecordV1(nil, c.rec)
		if cur[0] != dayVersion {
			t.Fatalf("trial %d: version %d written", trial, cur[0])
		}
		for _, from := range c.froms(r) {
			want, wantDetail := c.blockPart(from)
			for _, rec := range []struct {
				name string
				b    []byte
			}{{"current", cur}, {"version 1", old}} {
				st, detail, err := v.DecodeDaySuffix(c.day, rec.b, from)
				if err != nil {
					t.Fatalf("trial %d %s from %d: %v", trial, rec.name, from, err)
				}
				var got []byte
				if st != nil {
					got = appendStates(nil, st)
				}
				if !bytes.Equal(got, want) || detail != wantDetail {
					t.Fatalf("trial %d g=%s %s day record from %d (day %d): %x, detail %v; block aggregates give %x, detail %v",
						trial, FormatDuration(v.Granularity), rec.name, from, c.day, got, detail, want, wantDetail)
				}
				if detail {
					block := AlignDown(from, v.Span())
					ds, err := v.DecodeDetailSuffix(block, c.details[block], from)
					if err != nil {
						t.Fatal(err)
					}
					if st == nil {
						st = ds
					} else if ds != nil {
						MergeStates(st, ds)
					}
				}
				got = nil
				if st != nil {
					got = appendStates(nil, st)
				}
				if w := c.tilesFrom(from); !bytes.Equal(got, w) {
					t.Fatalf("trial %d %s day record from %d: %x with the detail record, the tiles from there %x", trial, rec.name, from, got, w)
				}
			}
		}
		// The healer's view: the tiles merge to the day's total.
		total := v.NewStates()
		for i := range c.rec.Tiles {
			MergeStates(total, c.rec.Tiles[i].States)
		}
		for _, b := range [][]byte{cur, old} {
			d, err := v.DecodeDayRecord(c.day, b)
			if err != nil {
				t.Fatal(err)
			}
			got := v.NewStates()
			for i := range d.Tiles {
				MergeStates(got, d.Tiles[i].States)
			}
			if a, z := appendStates(nil, got), appendStates(nil, total); !bytes.Equal(a, z) {
				t.Fatalf("trial %d: the decoded day record's total %x, want %x", trial, a, z)
			}
		}
	}
}

// TestDayRecordLifetimeDay: the day holding lifetime_start keeps the block
// aggregates (version 1), which the healer merges from lifetime_start on;
// the days around it are written in the current version.
func TestDayRecordLifetimeDay(t *testing.T) {
	c := newDayCase(t, 7)
	for _, tc := range []struct {
		life int64
		v1   bool
	}{
		{MinTime, false},
		{c.day, false},
		{c.day + c.v.Granularity, true},
		{c.day + 13*Hour, true},
		{c.day + c.v.DaySpan() - c.v.Granularity, true},
		{c.day + c.v.DaySpan(), false},
		{c.day - c.v.Granularity, false},
	} {
		v := newTestView(t, c.v.Granularity, tc.life, c.v.Features...)
		b := v.AppendDayRecord(nil, c.rec)
		if got := b[0] != dayVersion; got != tc.v1 {
			t.Errorf("lifetime_start %d, day %d: version 1 %v, want %v", tc.life, c.day, got, tc.v1)
		}
		d, err := v.DecodeDayRecord(c.day, b)
		if err != nil {
			t.Fatal(err)
		}
		if tc.v1 && (len(d.Tiles) != len(c.rec.Tiles) || len(d.Only) != len(c.rec.Only)) {
			t.Errorf("lifetime_start %d: %d blocks and %d single-tile entries decoded, want %d", tc.life, len(d.Tiles), len(d.Only), len(c.rec.Tiles))
		}
	}
}

// TestDayRecordCorrupt: a current-version day record cut short, with a
// length or an index changed, is refused with ErrCorrupt by every decoder.
func TestDayRecordCorrupt(t *testing.T) {
	c := newDayCase(t, 3)
	for len(c.rec.Tiles) < 2 {
		c = newDayCase(t, uint64(len(c.rec.Tiles))+100)
	}
	v := c.v
	b := v.AppendDayRecord(nil, c.rec)
	bad := map[string][]byte{
		"empty":        {},
		"version only": {dayVersion},
		"truncated":    b[:len(b)-1],
		"trailing":     append(bytes.Clone(b), 0),
		"block count":  append([]byte{dayVersion, byte(v.DaySpan()/v.Span()) + 1}, b[2:]...),
	}
	// The second block's index equal to the first's.
	dup := bytes.Clone(b)
	dup[4] = dup[2]
	bad["blocks out of order"] = dup
	for name, x := range bad {
		if _, err := v.DecodeDayRecord(c.day, x); err == nil {
			t.Errorf("%s: DecodeDayRecord accepted %x", name, x)
		} else {
			checkDecodeError(t, name, err)
		}
		if _, _, err := v.DecodeDaySuffix(c.day, x, c.day+v.Span()); err == nil {
			t.Errorf("%s: DecodeDaySuffix accepted %x", name, x)
		} else {
			checkDecodeError(t, name, err)
		}
		tr, err := NewTranslator(v.Layout(), v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tr.DayRecord(x); err == nil {
			t.Errorf("%s: Translator.DayRecord accepted %x", name, x)
		}
	}
}

// TestDayRecordTotal: AppendDayRecordTotal encodes what AppendDayRecord
// does and leaves the day's total, equal to the merge of every block, for
// days of every kind of aggregate (and the version 1 day of lifetime_start).
func TestDayRecordTotal(t *testing.T) {
	for seed := range uint64(300) {
		c := newDayCase(t, seed)
		total := c.v.newStates()
		got := c.v.AppendDayRecordTotal(nil, c.rec, total)
		if want := c.v.AppendDayRecord(nil, c.rec); !bytes.Equal(got, want) {
			t.Fatalf("seed %d: AppendDayRecordTotal encodes %x, AppendDayRecord %x", seed, got, want)
		}
		want := c.v.newStates()
		for i := range c.rec.Tiles {
			MergeStates(want, c.rec.Tiles[i].States)
		}
		if g, w := appendStates(nil, total), appendStates(nil, want); !bytes.Equal(g, w) {
			t.Fatalf("seed %d: total %x, the merge of the blocks %x", seed, g, w)
		}
	}
}

// TestDetailRecordTotal: AppendDetailRecordTotal encodes what
// AppendDetailRecord does and leaves in total exactly the block aggregate
// Rollup makes (what the day record holds for the block), for random views
// of every function and blocks of every shape.
func TestDetailRecordTotal(t *testing.T) {
	for seed := range uint64(300) {
		c := newDayCase(t, seed)
		for _, rec := range c.blocks {
			total := c.v.newStates()
			got := c.v.AppendDetailRecordTotal(nil, rec, total)
			if want := c.v.AppendDetailRecord(nil, rec); !bytes.Equal(got, want) {
				t.Fatalf("seed %d block %d: AppendDetailRecordTotal encodes %x, AppendDetailRecord %x", seed, rec.Start, got, want)
			}
			roll := c.v.Rollup(rec, c.v.Span())
			if len(roll) != 1 || roll[0].Start != rec.Start {
				t.Fatalf("seed %d block %d: rollup into %d tiles", seed, rec.Start, len(roll))
			}
			if g, w := appendStates(nil, total), appendStates(nil, roll[0].States); !bytes.Equal(g, w) {
				t.Fatalf("seed %d block %d: total %x, the block's rollup %x", seed, rec.Start, g, w)
			}
		}
	}
}
