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

// TestInterruptedHealCountsEachTileOnce pins Result.Tiles across an
// interruption (ed7a9ab): the days an interrupted heal wrote count in its
// result, the resumed heal counts only the days it builds (not those it
// reads back), so the two add up to an uninterrupted heal's count of the
// same events, which is the number of distinct (key, tile) below W_b.
func TestInterruptedHealCountsEachTileOnce(t *testing.T) {
	v := testView(t, tiling.Minute, []int64{tiling.Hour, 7 * tiling.Day}, tiling.MinTime)
	now := time.Date(2026, 3, 10, 13, 37, 12, 0, time.UTC).UnixMilli()
	feed := func(w *world) []tiling.Event {
		r := rand.New(rand.NewPCG(41, 42))
		var evs []tiling.Event
		var oes []oracle.Event
		for range 2000 {
			e, o := w.event(r, fmt.Sprintf("k%d", r.IntN(40)), now-12*tiling.Day+r.Int64N(12*tiling.Day), r.Int32N(3))
			evs, oes = append(evs, e), append(oes, o)
		}
		w.consume(evs, oes, nil)
		return evs
	}
	ref := newWorld(t, v, 5*tiling.Minute)
	ref.now, ref.arch.e = now, now
	evs := feed(ref)
	whole, err := ref.h.Heal(context.Background(), v.Name, Options{Full: true})
	if err != nil || !whole.Installed {
		t.Fatalf("uninterrupted heal: %+v, %v", whole, err)
	}
	want := map[[2]int64]bool{}
	keys := map[string]int64{}
	for _, e := range evs {
		if e.TS < whole.Watermark.UnixMilli() {
			if _, ok := keys[e.Key]; !ok {
				keys[e.Key] = int64(len(keys))
			}
			want[[2]int64{keys[e.Key], tiling.AlignDown(e.TS, v.Granularity)}] = true
		}
	}
	if whole.Tiles != len(want) {
		t.Fatalf("uninterrupted heal counted %d tiles, the events hold %d distinct (key, tile)", whole.Tiles, len(want))
	}

	w := newWorld(t, v, 5*tiling.Minute)
	w.now, w.arch.e = now, now
	feed(w)
	ctx, cancel := context.WithCancel(context.Background())
	cut, err := w.h.Heal(ctx, v.Name, Options{Full: true, Progress: func(p Progress) {
		if p.Days == 4 {
			cancel()
		}
	}})
	if err == nil || cut.Tiles == 0 {
		t.Fatalf("interrupted heal: %+v, %v; want an error after four days written and counted", cut, err)
	}
	resumed, err := w.h.Heal(context.Background(), v.Name, Options{Full: true})
	if err != nil || !resumed.Installed {
		t.Fatalf("resumed heal: %+v, %v", resumed, err)
	}
	if cut.Tiles+resumed.Tiles != whole.Tiles || resumed.Tiles == 0 {
		t.Errorf("interrupted heal counted %d tiles, the resumed one %d: want %d together, each day once", cut.Tiles, resumed.Tiles, whole.Tiles)
	}
}
