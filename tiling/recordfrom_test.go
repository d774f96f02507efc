package tiling

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// recordFromView is a view of every function at minute tiles (hour
// records), the features reading benchGen's columns.
func recordFromView(tb testing.TB) *View {
	var fs []Feature
	for _, fn := range Functions {
		fs = append(fs, benchFeature(fn, Hour))
	}
	return newTestView(tb, Minute, MinTime, fs...)
}

// randRecord returns an hour record starting at start with random tiles:
// none, a few, or most of the hour's; each of one event, a few or
// hundreds (sparse and dense HyperLogLogs, small and large DDSketches).
func randRecord(v *View, r *rand.Rand, start int64) *Record {
	g := benchGen{r}
	rec := v.NewRecord(start)
	tiles := []int{0, 1, 3, 60}[r.IntN(4)]
	off := int64(0)
	for range tiles {
		ts := start + r.Int64N(v.Span()/Minute)*Minute
		n := []int{1, 5, 400}[r.IntN(3)]
		for range n {
			e := g.event(v, ts+r.Int64N(Minute), Pos{Partition: int32(r.IntN(3)), Offset: off})
			off++
			v.Add(rec, &e)
		}
	}
	return rec
}

// encodeTiles encodes the tiles of r (their starts and states), for
// comparing decoded records.
func encodeTiles(tiles []Tile) []byte {
	var b []byte
	for _, t := range tiles {
		b = fmt.Appendf(b, "@%d:", t.Start)
		for _, s := range t.States {
			b = s.appendBinary(b)
		}
	}
	return b
}

// checkRecordFrom compares DecodeRecordFrom(start, enc, from) with
// DecodeRecord's tiles from from on: the same error, or the same offsets
// and kept tiles (states re-encoded).
func checkRecordFrom(t *testing.T, v *View, start int64, enc []byte, from int64) {
	t.Helper()
	want, werr := v.DecodeRecord(start, enc)
	got, gerr := v.DecodeRecordFrom(start, enc, from)
	if (werr == nil) != (gerr == nil) || werr != nil && werr.Error() != gerr.Error() {
		t.Fatalf("from %d: error %v, DecodeRecord's %v", from-start, gerr, werr)
	}
	if werr != nil {
		return
	}
	var kept []Tile
	for _, tl := range want.Tiles {
		if tl.Start >= from {
			kept = append(kept, tl)
		}
	}
	if fmt.Sprint(got.Offsets) != fmt.Sprint(want.Offsets) || got.Start != want.Start {
		t.Fatalf("from %d: offsets %v start %d, want %v %d", from-start, got.Offsets, got.Start, want.Offsets, want.Start)
	}
	if g, w := encodeTiles(got.Tiles), encodeTiles(kept); !bytes.Equal(g, w) {
		t.Fatalf("from %d: %d tiles kept, want %d (or their states differ)", from-start, len(got.Tiles), len(kept))
	}
}

// TestDecodeRecordFrom: a stream record decoded from a time on (a read's
// W_b) holds DecodeRecord's tiles from then on, for every minute of the
// hour and before and after it, and the input it keeps no reference to.
func TestDecodeRecordFrom(t *testing.T) {
	v := recordFromView(t)
	r := rand.New(rand.NewPCG(41, 42))
	const start = 1_760_000_000_000 / Hour * Hour
	for round := range 16 {
		rec := randRecord(v, r, start)
		enc := v.AppendRecord(nil, rec)
		for m := int64(-1); m <= 61; m++ {
			checkRecordFrom(t, v, start, enc, start+m*Minute)
		}
		checkRecordFrom(t, v, start, enc, MinTime)
		// Kept tiles refer to a copy: overwriting the input after the
		// decode changes nothing.
		from := start + r.Int64N(60)*Minute
		got, err := v.DecodeRecordFrom(start, enc, from)
		if err != nil {
			t.Fatal(err)
		}
		before := encodeTiles(got.Tiles)
		clear(enc)
		if after := encodeTiles(got.Tiles); !bytes.Equal(before, after) {
			t.Fatalf("round %d: decoded tiles changed with their input", round)
		}
	}
}

// TestDecodeRecordFromCorrupt: a corrupt record (bytes changed, cut or
// added) gives DecodeRecordFrom the error DecodeRecord gives, whether the
// damage is in a tile it keeps or one before from: tiles it drops are
// still checked.
func TestDecodeRecordFromCorrupt(t *testing.T) {
	v := recordFromView(t)
	r := rand.New(rand.NewPCG(43, 44))
	const start = 1_760_000_000_000 / Hour * Hour
	failed := 0
	for range 24 {
		rec := randRecord(v, r, start)
		if len(rec.Tiles) == 0 {
			continue
		}
		enc := v.AppendRecord(nil, rec)
		for range 40 {
			bad := bytes.Clone(enc)
			switch r.IntN(4) {
			case 0:
				bad[r.IntN(len(bad))] ^= byte(1 + r.IntN(255))
			case 1:
				bad[r.IntN(len(bad))] = byte(r.IntN(256))
			case 2:
				bad = bad[:r.IntN(len(bad))]
			default:
				bad = append(bad, byte(r.IntN(256)))
			}
			if _, err := v.DecodeRecord(start, bad); err != nil {
				failed++
			}
			// From after every tile, after the first, and from the start.
			for _, from := range []int64{start + v.Span(), rec.Tiles[0].Start + Minute, start} {
				checkRecordFrom(t, v, start, bad, from)
			}
		}
	}
	if failed < 200 {
		t.Fatalf("only %d corrupt records were rejected: the test does not exercise the checks", failed)
	}
}
