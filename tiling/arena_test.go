package tiling

import (
	"bytes"
	"slices"
	"testing"
)

// TestArenaBuildsTheSameRecords: records aggregated with AggregateIn (states
// from an arena) and rolled up with RollupIn encode byte for byte as those
// built with Aggregate and Rollup, for random views of every function and
// random events; the arena's chunks are small enough here to be refilled.
func TestArenaBuildsTheSameRecords(t *testing.T) {
	for seed := range uint64(300) {
		c := newPropCase(seed)
		v := c.view
		a := testArena(v, seed)
		plain, arena := records{}, records{}
		for i := range c.events {
			e := &c.events[i].ev
			start := v.RecordStart(e.TS)
			for _, rs := range []records{plain, arena} {
				if rs[start] == nil {
					rs[start] = &Record{Start: start}
				}
			}
			v.Aggregate(plain[start], e)
			v.AggregateIn(a, arena[start], e)
		}
		if err := sameEncodings(encodeAll(v, plain), encodeAll(v, arena)); err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		for start, r := range plain {
			for _, step := range []int64{v.Span(), v.Granularity} {
				want := &Record{Start: start, Tiles: v.Rollup(r, step)}
				got := &Record{Start: start, Tiles: v.RollupIn(a, arena[start], step)}
				if w, g := v.AppendRecord(nil, want), v.AppendRecord(nil, got); !bytes.Equal(w, g) {
					t.Fatalf("%s: rollup of %d by %d: %x, arena %x", c, start, step, w, g)
				}
			}
		}
	}
}

// TestArenaResetReusesCleanStates builds records from an arena, resets it
// and builds them again in the reused chunks (in another event order, so
// states land on elements other states used): the second build encodes
// byte for byte as one without an arena.
func TestArenaResetReusesCleanStates(t *testing.T) {
	for seed := range uint64(200) {
		c := newPropCase(seed)
		v := c.view
		a := testArena(v, seed)
		build := func(a *Arena, reverse bool) records {
			rs := records{}
			for k := range c.events {
				i := k
				if reverse {
					i = len(c.events) - 1 - k
				}
				e := &c.events[i].ev
				start := v.RecordStart(e.TS)
				if rs[start] == nil {
					rs[start] = &Record{Start: start}
				}
				if a == nil {
					v.Aggregate(rs[start], e)
				} else {
					v.AggregateIn(a, rs[start], e)
				}
			}
			return rs
		}
		want := encodeAll(v, build(nil, false))
		build(a, true)
		a.Reset()
		if err := sameEncodings(want, encodeAll(v, build(a, false))); err != nil {
			t.Fatalf("%s: after Reset: %v", c, err)
		}
		a.Reset()
		if err := sameEncodings(want, encodeAll(v, build(a, false))); err != nil {
			t.Fatalf("%s: after a second Reset: %v", c, err)
		}
	}
}

// testArena returns an arena small enough to be refilled: for odd seeds a
// key arena (chunks that start at first and double up to chunk).
func testArena(v *View, seed uint64) *Arena {
	a := v.NewArena()
	if seed%2 == 1 {
		a = v.NewKeyArena()
		a.first = 1 + int(seed/2%3)
		a.chunk = a.first + int(seed/2%7)
	} else {
		a.chunk = 1 + int(seed%5)
	}
	return a
}

// TestKeyArenaChunksGrow: a key arena's chunks of a kind start at first and
// double up to chunk, and after Reset the same chunks are handed out again.
func TestKeyArenaChunksGrow(t *testing.T) {
	var p chunks[int64]
	var sizes []int
	for range 40 {
		p.take(1, 2, 16)
	}
	for _, c := range p.all {
		sizes = append(sizes, len(c))
	}
	if want := []int{2, 4, 8, 16, 16}; !slices.Equal(sizes, want) {
		t.Fatalf("chunk sizes %v, want %v", sizes, want)
	}
	// A take larger than the next chunk's size gets a chunk of its own size.
	if got := len(p.take(40, 2, 16)); got != 40 || len(p.all[len(p.all)-1]) != 40 {
		t.Fatalf("take(40): %d elements from a chunk of %d", got, len(p.all[len(p.all)-1]))
	}
	first := &p.all[0][0]
	p.reset()
	n := len(p.all)
	for range 40 {
		p.take(1, 2, 16)
	}
	if &p.all[0][0] != first || len(p.all) != n {
		t.Fatalf("after reset: %d chunks (had %d), first chunk reused: %v", len(p.all), n, &p.all[0][0] == first)
	}
}
