package healer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tilestream/tilestream/oracle"
	"github.com/tilestream/tilestream/tiling"
)

// TestReviewLifetimeStartFiniteWindows: a view with a lifetime_start and a
// finite window that reaches back before it. The oracle (DESIGN.md) counts
// events before lifetime_start in finite windows; the stream does too, the
// batch drops them.
func TestReviewLifetimeStartFiniteWindows(t *testing.T) {
	now := time.Date(2026, 3, 10, 13, 37, 12, 0, time.UTC).UnixMilli()
	life := tiling.AlignDown(now-3*tiling.Day, tiling.Day)
	v := testView(t, tiling.Hour, []int64{7 * tiling.Day, tiling.Lifetime}, life)
	w := newWorld(t, v, 5*tiling.Minute)
	w.now, w.arch.e = now, now
	r := rand.New(rand.NewPCG(7, 7))
	var evs []tiling.Event
	var oes []oracle.Event
	for i := 0; i < 300; i++ {
		e, o := w.event(r, fmt.Sprintf("k%d", r.IntN(4)), now-6*tiling.Day+r.Int64N(6*tiling.Day), r.Int32N(2))
		evs, oes = append(evs, e), append(oes, o)
	}
	w.consume(evs, oes, nil)
	w.check("stream only", []int64{now})
	if _, err := w.h.Heal(context.Background(), v.Name, Options{}); err != nil {
		t.Fatal(err)
	}
	w.check("after a heal", []int64{now})
}

// TestReviewCollectDeletesHeadlessStream: a key that no heal covered yet has
// no head, so the ingest applies its late events (stamped before the view's
// W_b) to stream records and reads count them. Garbage collection deletes
// every key's stream records before W_b, headless keys included: the served
// value loses the event until the next heal.
func TestReviewCollectDeletesHeadlessStream(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		v := testView(t, tiling.Minute, []int64{tiling.Hour, tiling.Day, tiling.Lifetime}, tiling.MinTime)
		w := newWorldOn(t, kind, v, 5*tiling.Minute)
		now := time.Date(2026, 3, 10, 13, 37, 12, 0, time.UTC).UnixMilli()
		w.now, w.arch.e = now, now
		r := rand.New(rand.NewPCG(8, 8))
		var evs []tiling.Event
		var oes []oracle.Event
		for i := 0; i < 200; i++ {
			e, o := w.event(r, fmt.Sprintf("k%d", r.IntN(4)), now-2*tiling.Day+r.Int64N(2*tiling.Day), r.Int32N(2))
			evs, oes = append(evs, e), append(oes, o)
		}
		w.consume(evs, oes, nil)
		if _, err := w.h.Heal(context.Background(), v.Name, Options{}); err != nil {
			t.Fatal(err)
		}
		// After the heal: a late event of a new key, two hours before W_b.
		e, o := w.event(r, "newkey", now-2*tiling.Hour, 0)
		w.consume([]tiling.Event{e}, []oracle.Event{o}, nil)
		w.check("late event of a headless key, before collection", []int64{now})
		w.now += tiling.Hour
		if err := w.h.collect(v, false); err != nil {
			t.Fatal(err)
		}
		w.check("late event of a headless key, after collection", []int64{now})
	})
}

// TestReviewLifetimeStartChange: lifetime_start is not part of the layout
// fingerprint, so changing it in the config neither rebuilds the view nor
// makes a heal full; the next (incremental) heal keeps the old Base, built
// with the old lifetime_start.
func TestReviewLifetimeStartChange(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		now := time.Date(2026, 3, 10, 13, 37, 12, 0, time.UTC).UnixMilli()
		l1 := tiling.AlignDown(now-6*tiling.Day, tiling.Day)
		v1 := testView(t, tiling.Hour, []int64{2 * tiling.Hour, tiling.Lifetime}, l1)
		w := newWorldOn(t, kind, v1, 5*tiling.Minute)
		w.now, w.arch.e = now, now
		r := rand.New(rand.NewPCG(9, 1))
		var evs []tiling.Event
		var oes []oracle.Event
		for i := 0; i < 300; i++ {
			e, o := w.event(r, fmt.Sprintf("k%d", r.IntN(4)), now-5*tiling.Day+r.Int64N(5*tiling.Day), r.Int32N(2))
			evs, oes = append(evs, e), append(oes, o)
		}
		w.consume(evs, oes, nil)
		if _, err := w.store.CheckLayout(context.Background(), v1); err != nil {
			t.Fatal(err)
		}
		if _, err := w.h.Heal(context.Background(), v1.Name, Options{}); err != nil {
			t.Fatal(err)
		}
		w.check("after a heal", []int64{now})

		// The config moves lifetime_start 2.5 days later.
		l2 := tiling.AlignDown(now-2*tiling.Day-12*tiling.Hour, tiling.Hour)
		v2 := testView(t, tiling.Hour, []int64{2 * tiling.Hour, tiling.Lifetime}, l2)
		// lifetime_start is part of the layout: moving it wipes the view and
		// rebuilds it from the offline log.
		rebuild, err := w.store.CheckLayout(context.Background(), v2)
		if err != nil || !rebuild {
			t.Fatalf("CheckLayout after lifetime_start moved: rebuild %v, %v; want a rebuild", rebuild, err)
		}
		h2, err := New(w.h.cfg, []ViewConfig{{View: v2, Lateness: 5 * tiling.Minute, HealEvery: tiling.Day}}, w.store, w.offline, w.arch, w.h.m, quiet())
		if err != nil {
			t.Fatal(err)
		}
		h2.now = w.h.now
		w.v, w.h = v2, h2
		w.now += tiling.Hour
		w.arch.e = w.now
		if _, err := h2.Heal(context.Background(), v2.Name, Options{Full: true, Rebuild: true}); err != nil {
			t.Fatal(err)
		}
		if err := w.store.FinishRebuild(v2); err != nil {
			t.Fatal(err)
		}
		w.check("after lifetime_start moved and a rebuild", []int64{w.now})
		// And an incremental heal later keeps it exact.
		w.now += tiling.Day
		w.arch.e = w.now
		if _, err := h2.Heal(context.Background(), v2.Name, Options{}); err != nil {
			t.Fatal(err)
		}
		w.check("after lifetime_start moved and a later heal", []int64{w.now})
	})
}

// TestLifetimeStartInsideADay: lifetime_start inside a day and inside a
// block, older than the longest window, with events before and after it in
// that day, its block and its tile's neighbours. Base takes that day only
// from lifetime_start on (from the day record's blocks and the detail
// record of lifetime_start's block); lifetime features equal the oracle
// after a full heal and after incremental ones that move days into Base.
func TestLifetimeStartInsideADay(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		now := time.Date(2026, 3, 10, 13, 37, 12, 0, time.UTC).UnixMilli()
		life := tiling.AlignDown(now-5*tiling.Day, tiling.Day) + 13*tiling.Hour + 27*tiling.Minute
		v := testView(t, tiling.Minute, []int64{tiling.Hour, tiling.Lifetime}, life)
		w := newWorldOn(t, kind, v, 5*tiling.Minute)
		w.now, w.arch.e = now, now
		r := rand.New(rand.NewPCG(17, 18))
		var evs []tiling.Event
		var oes []oracle.Event
		add := func(n int, from, span int64) {
			for range n {
				e, o := w.event(r, fmt.Sprintf("k%d", r.IntN(5)), from+r.Int64N(span), r.Int32N(2))
				evs, oes = append(evs, e), append(oes, o)
			}
		}
		add(300, now-8*tiling.Day, 8*tiling.Day)                   // everywhere
		add(200, tiling.AlignDown(life, tiling.Day), tiling.Day)   // lifetime_start's day
		add(200, tiling.AlignDown(life, tiling.Hour), tiling.Hour) // its block
		add(60, life-3*tiling.Minute, 6*tiling.Minute)             // its tile's neighbours
		w.consume(evs, oes, nil)
		if _, err := w.h.Heal(context.Background(), v.Name, Options{Full: true}); err != nil {
			t.Fatal(err)
		}
		w.check("after a full heal", []int64{now, now + 3*tiling.Minute})
		for day := range 2 {
			w.now += tiling.Day
			w.arch.e = w.now
			evs, oes = nil, nil
			add(100, w.now-2*tiling.Day, 2*tiling.Day)
			w.consume(evs, oes, nil)
			if _, err := w.h.Heal(context.Background(), v.Name, Options{}); err != nil {
				t.Fatal(err)
			}
			w.check(fmt.Sprintf("after incremental heal %d", day+1), []int64{w.now})
		}
		if _, err := w.h.Heal(context.Background(), v.Name, Options{Full: true}); err != nil {
			t.Fatal(err)
		}
		w.check("after a second full heal", []int64{w.now})
	})
}
