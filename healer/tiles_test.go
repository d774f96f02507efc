package healer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tilestream/tilestream/oracle"
	"github.com/tilestream/tilestream/tiling"
)

// TestHealCountsEveryTile: a heal's Tiles (backfill's per_tile_writes) is
// the number of distinct (key, tile) the healed days hold: tiles of blocks
// holding one tile count as much as those of detail records.
func TestHealCountsEveryTile(t *testing.T) {
	v := testView(t, tiling.Minute, []int64{tiling.Hour, 7 * tiling.Day}, tiling.MinTime)
	lateness := 5 * tiling.Minute
	w := newWorld(t, v, lateness)
	now := time.Date(2026, 3, 10, 13, 37, 12, 0, time.UTC).UnixMilli()
	w.now, w.arch.e = now, now
	r := rand.New(rand.NewPCG(11, 12))
	var evs []tiling.Event
	var oes []oracle.Event
	// Sparse keys (mostly one event per tile and block) and dense ones
	// (many events per tile, several tiles per block).
	for i := range 3000 {
		key := fmt.Sprintf("sparse%d", r.IntN(500))
		span := 10 * tiling.Day
		if i%3 == 0 {
			key, span = fmt.Sprintf("dense%d", r.IntN(3)), 6*tiling.Hour
		}
		e, o := w.event(r, key, now-span+r.Int64N(span), r.Int32N(3))
		evs, oes = append(evs, e), append(oes, o)
	}
	w.consume(evs, oes, nil)
	// A scrape before the first heal shows the view's series.
	for name, n := range map[string]int{
		"runs": testutil.CollectAndCount(w.h.m.runs), "halted": testutil.CollectAndCount(w.h.m.halted),
		"verify runs": testutil.CollectAndCount(w.h.m.verified), "tiles written": testutil.CollectAndCount(w.h.m.tilesWritten),
	} {
		if n == 0 {
			t.Errorf("no %s series before the first heal", name)
		}
	}
	res, err := w.h.Heal(context.Background(), v.Name, Options{Full: true})
	if err != nil || !res.Installed {
		t.Fatalf("heal: %+v, %v", res, err)
	}
	wb := res.Watermark.UnixMilli()
	type tile struct {
		key   string
		start int64
	}
	want, oneTileBlocks := map[tile]bool{}, map[tile]int{}
	for _, e := range evs {
		if e.TS < wb {
			want[tile{e.Key, tiling.AlignDown(e.TS, v.Granularity)}] = true
		}
	}
	for tl := range want {
		oneTileBlocks[tile{tl.key, v.RecordStart(tl.start)}]++
	}
	single := 0
	for _, n := range oneTileBlocks {
		if n == 1 {
			single++
		}
	}
	if single == 0 || single == len(oneTileBlocks) {
		t.Fatalf("%d of %d blocks hold one tile: the test needs both kinds", single, len(oneTileBlocks))
	}
	if res.Tiles != len(want) {
		t.Fatalf("heal counted %d tiles, the events hold %d distinct (key, tile) (%d blocks of one tile)", res.Tiles, len(want), single)
	}
	if got := testutil.ToFloat64(w.h.m.tilesWritten.WithLabelValues(v.Name)); got != float64(len(want)) {
		t.Errorf("tilestream_healer_tiles_written_total = %v, want %d", got, len(want))
	}
}

// TestVerifyReadsOnlyTheWindowsDays: without a lifetime window, a
// consistency check reads the offline-log days its longest window covers,
// not the whole history, and still finds a difference inside it; with a
// lifetime window it reads every day.
func TestVerifyReadsOnlyTheWindowsDays(t *testing.T) {
	for _, tc := range []struct {
		name     string
		windows  []int64
		readsAll bool
	}{
		{"hour and 2-day windows", []int64{tiling.Hour, 2 * tiling.Day}, false},
		{"a lifetime window", []int64{tiling.Hour, tiling.Lifetime}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := testView(t, tiling.Minute, tc.windows, tiling.MinTime)
			w := newWorld(t, v, 5*tiling.Minute)
			now := time.Date(2026, 3, 10, 13, 37, 12, 0, time.UTC).UnixMilli()
			w.now, w.arch.e = now, now
			r := rand.New(rand.NewPCG(4, 5))
			var evs []tiling.Event
			var oes []oracle.Event
			for range 2000 {
				e, o := w.event(r, fmt.Sprintf("k%d", r.IntN(10)), now-20*tiling.Day+r.Int64N(20*tiling.Day), r.Int32N(2))
				evs, oes = append(evs, e), append(oes, o)
			}
			w.consume(evs, oes, nil)
			if _, err := w.h.Heal(context.Background(), v.Name, Options{}); err != nil {
				t.Fatal(err)
			}
			res, err := w.h.Verify(context.Background(), v.Name, 0, w.store)
			if err != nil || res.Keys != 10 || len(res.Mismatches) != 0 {
				t.Fatalf("verify after a heal: %+v, %v", res, err)
			}
			if all := res.Events == int64(len(evs)); all != tc.readsAll || res.Events == 0 {
				t.Fatalf("verify read %d of %d events; reading all: %v, want %v", res.Events, len(evs), all, tc.readsAll)
			}
			// A late event a day before W_b: inside the 2-day window.
			w.dropJSONL("after.jsonl", now-tiling.Day, []map[string]any{
				{"user_id": "k3", "ts": float64(now - tiling.Day), "amount": 7.0},
			})
			res, err = w.h.Verify(context.Background(), v.Name, 0, w.store)
			if err != nil || len(res.Mismatches) == 0 || res.Mismatches[0].Key != "k3" {
				t.Fatalf("verify missed the difference: %+v, %v", res, err)
			}
		})
	}
}
