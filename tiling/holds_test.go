package tiling

import (
	"math/rand/v2"
	"testing"
)

// TestHolds checks Holds against AlignDown, MinTime's saturated span and
// negative times included.
func TestHolds(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	gs := []int64{1, 7, Minute, Hour, Day, 30 * Day}
	times := func() int64 {
		switch rng.IntN(4) {
		case 0:
			return MinTime + rng.Int64N(3*Day)
		case 1:
			return -rng.Int64N(1 << 50)
		}
		return rng.Int64N(1 << 50)
	}
	for range 200_000 {
		g := gs[rng.IntN(len(gs))]
		ts := times()
		start := AlignDown(ts, g)
		// ts itself, and a time near start's span (either side of its end).
		other := start + rng.Int64N(3*g)
		if start == MinTime {
			other = MinTime + rng.Int64N(3*g)
		}
		for _, x := range []int64{ts, other} {
			if x < start {
				continue
			}
			if got, want := Holds(start, g, x), AlignDown(x, g) == start; got != want {
				t.Fatalf("Holds(%d, %d, %d) = %v, AlignDown gives %d", start, g, x, got, AlignDown(x, g))
			}
		}
	}
}

// TestAggregateFindsTilesAsAligned aggregates random times in random order
// into records and checks every tile against AlignDown: one tile per aligned
// start, sorted, each holding the events AlignDown puts there.
func TestAggregateFindsTilesAsAligned(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, g := range []int64{Minute, 5 * Minute, Hour} {
		v, err := NewView(View{Name: "v", Topic: "t", Entity: "k", Timestamp: "ts", Granularity: g, LifetimeStart: MinTime,
			Features: []Feature{{Name: "n", Function: Count, Window: Lifetime}}})
		if err != nil {
			t.Fatal(err)
		}
		for range 200 {
			base := v.RecordStart(rng.Int64N(1<<45) - 1<<44)
			r := &Record{Start: base}
			want := map[int64]uint64{}
			for range rng.IntN(300) {
				ts := base + rng.Int64N(v.Span())
				if rng.IntN(3) == 0 && len(r.Tiles) > 0 {
					ts = r.Tiles[rng.IntN(len(r.Tiles))].Start + rng.Int64N(g) // an existing tile
				}
				v.Aggregate(r, &Event{Key: "k", TS: ts})
				want[AlignDown(ts, g)]++
			}
			if len(r.Tiles) != len(want) {
				t.Fatalf("%d tiles, want %d", len(r.Tiles), len(want))
			}
			for i, tl := range r.Tiles {
				if i > 0 && r.Tiles[i-1].Start >= tl.Start {
					t.Fatalf("tiles out of order at %d", i)
				}
				if got := uint64(*tl.States[0].(*countState)); got != want[tl.Start] {
					t.Fatalf("tile %d holds %d events, want %d", tl.Start, got, want[tl.Start])
				}
			}
		}
	}
}
