package tiling

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestReview2DecodeRecordFromValues: for every function, the values
// evaluated from DecodeRecordFrom's record equal those from DecodeRecord's
// tiles from from on, with from (W_b) at every minute before, inside and
// after the record, at its first and last tiles and one between, and a minute after each;
// and neither the decode nor the evaluation writes into the input (a
// Pebble iterator's value, shared with its block cache: the tiles before
// from are decoded from it without a copy).
func TestReview2DecodeRecordFromValues(t *testing.T) {
	v := recordFromView(t)
	r := rand.New(rand.NewPCG(205, 206))
	const start = 1_760_000_000_000 / Hour * Hour
	for round := range 6 {
		rec := randRecord(v, r, start)
		enc := v.AppendRecord(nil, rec)
		orig := bytes.Clone(enc)
		froms := []int64{MinTime, start - Minute, start, start + v.Span(), start + v.Span() + Minute}
		for m := int64(0); m < 60; m += 1 + r.Int64N(4) {
			froms = append(froms, start+m*Minute)
		}
		if n := len(rec.Tiles); n > 0 {
			for _, k := range []int{0, r.IntN(n), n - 1} {
				froms = append(froms, rec.Tiles[k].Start, rec.Tiles[k].Start+Minute)
			}
		}
		for _, from := range froms {
			want, err := v.DecodeRecord(start, enc)
			if err != nil {
				t.Fatal(err)
			}
			kept := &Record{Start: want.Start, Offsets: want.Offsets}
			for _, tl := range want.Tiles {
				if tl.Start >= from {
					kept.Tiles = append(kept.Tiles, tl)
				}
			}
			got, err := v.DecodeRecordFrom(start, enc, from)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(enc, orig) {
				t.Fatalf("round %d from %d: DecodeRecordFrom wrote into its input", round, from-start)
			}
			for _, at := range []int64{start + v.Span() - 1, max(from, start) + 59*Minute, start + 30*Minute} {
				g := fmt.Sprint(v.Evaluate(at, []*Record{got}))
				w := fmt.Sprint(v.Evaluate(at, []*Record{kept}))
				if g != w {
					t.Fatalf("round %d from %d at %d: %.400s, want %.400s", round, from-start, at-start, g, w)
				}
			}
			// Evaluated (sketches folded, lists sorted), the kept states
			// still encode as DecodeRecord's do.
			if g, w := encodeTiles(got.Tiles), encodeTiles(kept.Tiles); !bytes.Equal(g, w) {
				t.Fatalf("round %d from %d: kept tiles encode differently", round, from-start)
			}
			if !bytes.Equal(enc, orig) {
				t.Fatalf("round %d from %d: evaluating the decoded record wrote into its input", round, from-start)
			}
		}
	}
}

// TestReview2DecodeRecordFromCorruptEveryTile: a record damaged in one
// byte gives DecodeRecordFrom DecodeRecord's error (or, when DecodeRecord
// accepts it, the same tiles) for from at every tile of the record and just
// after it (the first, the last and some between): the damage lies before from, in the tile at from, or after it.
// Never a panic.
func TestReview2DecodeRecordFromCorruptEveryTile(t *testing.T) {
	v := recordFromView(t)
	r := rand.New(rand.NewPCG(207, 208))
	const start = 1_760_000_000_000 / Hour * Hour
	rejected := 0
	for rounds := 0; rounds < 5; {
		rec := randRecord(v, r, start)
		if len(rec.Tiles) < 3 {
			continue
		}
		rounds++
		enc := v.AppendRecord(nil, rec)
		for range 20 {
			bad := bytes.Clone(enc)
			i := r.IntN(len(bad))
			switch r.IntN(3) {
			case 0:
				bad[i] ^= byte(1 + r.IntN(255))
			case 1:
				bad = bad[:i]
			default:
				bad = append(bad[:i:i], append([]byte{byte(r.IntN(256))}, enc[i:]...)...)
			}
			if _, err := v.DecodeRecord(start, bad); err != nil {
				rejected++
			}
			// The first and last tiles and a few between.
			n := len(rec.Tiles)
			for _, k := range []int{0, 1, r.IntN(n), r.IntN(n), n - 2, n - 1} {
				checkRecordFrom(t, v, start, bad, rec.Tiles[k].Start)
				checkRecordFrom(t, v, start, bad, rec.Tiles[k].Start+Minute)
			}
		}
	}
	if rejected < 50 {
		t.Fatalf("only %d damaged records rejected: the test does not reach the checks", rejected)
	}
}
