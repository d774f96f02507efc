package healer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/tilestream/tilestream/tiling"
)

// review2Event makes an event of key at ts whose states leave what a reused
// arena element must not keep (see reuseEvent).
func review2Event(v *tiling.View, r *rand.Rand, key string, ts int64, off *int64) tiling.Event {
	*off++
	var amount float64
	switch r.IntN(4) {
	case 0:
		amount = math.Ldexp(float64(r.IntN(2000)-1000), 130+r.IntN(3))
	case 1:
		amount = math.Ldexp(float64(r.IntN(2000)-1000), -130-r.IntN(3))
	default:
		amount = float64(r.IntN(200000)-100000) / 100
	}
	merchant := fmt.Sprintf("m%d", r.IntN(9))
	if r.IntN(2) == 0 {
		merchant += strings.Repeat("-long-merchant-name", 1+r.IntN(3))
	}
	raw, _ := json.Marshal(merchant)
	cols := v.Columns()
	in := make([]tiling.Input, len(cols))
	for i, c := range cols {
		switch c {
		case "amount":
			in[i] = tiling.Input{Kind: tiling.Number, Num: amount}
		case "merchant":
			in[i] = tiling.Input{Kind: tiling.Other, Raw: raw}
		}
	}
	return tiling.Event{Key: key, TS: ts, Pos: tiling.Pos{Partition: int32(r.IntN(3)), Offset: *off}, Inputs: in}
}

// review2Day is what a day build leaves, encoded: per key its day record,
// its detail records and its total.
type review2Day map[string][]byte

func review2Encode(v *tiling.View, start int64, keys []string, kds []keyDay) review2Day {
	out := review2Day{}
	for i, k := range keys {
		var b []byte
		b = append(b, kds[i].day...)
		for _, d := range kds[i].details {
			b = fmt.Appendf(b, "|%d:", d.block)
			b = append(b, d.val...)
		}
		b = append(b, '|')
		b = v.AppendRecord(b, &tiling.Record{Start: start, Tiles: []tiling.Tile{{Start: start, States: kds[i].total}}})
		out[k] = b
	}
	return out
}

// review2Events returns a day's events: a busy key (hundreds), keys of 15,
// 16, 17 and 40 events (ownArena's edge), and many of a few.
func review2Events(v *tiling.View, r *rand.Rand, start int64, keyPrefix string) []tiling.Event {
	var off int64
	var evs []tiling.Event
	add := func(key string, n int) {
		for range n {
			evs = append(evs, review2Event(v, r, keyPrefix+key, start+r.Int64N(tiling.Day), &off))
		}
	}
	add("busy", 600)
	for _, n := range []int{15, 16, 17, 40} {
		add(fmt.Sprintf("n%d", n), n)
	}
	for i := range 60 {
		add(fmt.Sprintf("few%d", i), 1+r.IntN(4))
	}
	r.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
	return evs
}

// TestReview2KeyArenasAcrossDays: a day's memory — its arena, the arenas
// of its busy keys, its chunks of records and of encoded bytes — is handed
// back once the day is written (putDay) and reused by the next day's
// build; the day totals the heal keeps until the summaries are the same
// afterwards, the second day builds what it builds from fresh memory, and
// which keys get an arena of their own changes no byte.
func TestReview2KeyArenasAcrossDays(t *testing.T) {
	v := reuseView(t)
	const day0 = 1_760_000_000_000 / tiling.Day * tiling.Day
	r := rand.New(rand.NewPCG(209, 210))
	ev1 := review2Events(v, r, day0, "")
	ev2 := review2Events(v, r, day0+tiling.Day, "")
	ev2 = append(ev2, review2Events(v, r, day0+tiling.Day, "other-")...)

	build := func(free *arenas, start int64, evs []tiling.Event, own int) (*dayBuild, []string, []keyDay) {
		d := newDayBuild(v, start, free)
		d.own = own
		for i := range evs {
			d.add(&evs[i])
		}
		keys, kds := d.finish()
		return d, keys, kds
	}

	free := &arenas{v: v}
	d1, keys1, kds1 := build(free, day0, ev1, ownArena)
	// Keys of more than ownArena events have an arena of their own; the
	// others share the day's.
	for k, kb := range d1.keys {
		busy := k == "busy" || k == "n17" || k == "n40"
		if (kb.arena != nil) != busy {
			t.Fatalf("key %s (%d events): own arena %v", k, kb.events, kb.arena != nil)
		}
	}
	// Its records' bytes, copied: they are written before the day's
	// memory goes back, and then reused.
	day1 := review2Encode(v, day0, keys1, kds1)
	totals1 := map[string][]byte{}
	for i, k := range keys1 {
		totals1[k] = v.AppendRecord(nil, &tiling.Record{Start: day0, Tiles: []tiling.Tile{{Start: day0, States: kds1[i].total}}})
	}
	mem1 := d1.memory()
	ka1 := mem1.keyArenas
	if len(ka1) != 3 || len(mem1.recs) == 0 || len(mem1.vals) == 0 {
		t.Fatalf("the first day took %d key arenas (want 3), %d record chunks, %d value chunks", len(ka1), len(mem1.recs), len(mem1.vals))
	}
	// The day is written: its memory goes back.
	free.putDay(mem1)

	d2, keys2, kds2 := build(free, day0+tiling.Day, ev2, ownArena)
	if d2.arena != d1.arena {
		t.Fatal("the second day did not reuse the first day's arena")
	}
	reused := 0
	for _, a := range d2.keyArenas() {
		if slices.Contains(ka1, a) {
			reused++
		}
	}
	if reused != len(ka1) {
		t.Fatalf("the second day reused %d of the first day's %d key arenas", reused, len(ka1))
	}
	mem2 := d2.memory()
	sameRecs, sameVals := 0, 0
	for _, c2 := range mem2.recs {
		for _, c1 := range mem1.recs {
			if &c2.recs[:1][0] == &c1.recs[:1][0] {
				sameRecs++
			}
		}
	}
	for _, c2 := range mem2.vals {
		for _, c1 := range mem1.vals {
			if &c2[:1][0] == &c1[:1][0] {
				sameVals++
			}
		}
	}
	if sameRecs != len(mem1.recs) || sameVals != len(mem1.vals) {
		t.Fatalf("the second day reused %d of %d chunks of records and %d of %d of encoded bytes",
			sameRecs, len(mem1.recs), sameVals, len(mem1.vals))
	}
	// The day totals, which the heal keeps until the summaries, are intact.
	for i, k := range keys1 {
		got := v.AppendRecord(nil, &tiling.Record{Start: day0, Tiles: []tiling.Tile{{Start: day0, States: kds1[i].total}}})
		if !bytes.Equal(got, totals1[k]) {
			t.Fatalf("key %s: the first day's total changed when its memory was reused", k)
		}
	}
	// The second day equals a build from fresh arenas.
	got2 := review2Encode(v, day0+tiling.Day, keys2, kds2)
	_, fk, fkds := build(&arenas{v: v}, day0+tiling.Day, ev2, ownArena)
	fresh := review2Encode(v, day0+tiling.Day, fk, fkds)
	if !slices.Equal(keys2, fk) {
		t.Fatalf("keys %v, fresh %v", keys2, fk)
	}
	for _, k := range keys2 {
		if !bytes.Equal(got2[k], fresh[k]) {
			t.Fatalf("key %s: built in reused arenas differs from fresh ones", k)
		}
	}
	// Every key in an arena of its own, or none: the same bytes.
	for _, own := range []int{0, math.MaxInt} {
		_, ok, okds := build(&arenas{v: v}, day0, ev1, own)
		o := review2Encode(v, day0, ok, okds)
		for _, k := range keys1 {
			if !bytes.Equal(o[k], day1[k]) {
				t.Fatalf("own=%d key %s: different bytes", own, k)
			}
		}
	}
}
