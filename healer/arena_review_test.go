package healer

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/tilestream/tilestream/oracle"
	"github.com/tilestream/tilestream/tiling"
)

// reuseView has every state kind an arena hands out (count, sum, min, max,
// mean, last, first) over windows from an hour to the lifetime.
func reuseView(t *testing.T) *tiling.View {
	t.Helper()
	var fs []tiling.Feature
	for i, w := range []int64{tiling.Hour, tiling.Day, 7 * tiling.Day, tiling.Lifetime} {
		fs = append(fs,
			tiling.Feature{Name: fmt.Sprintf("sum_%d", i), Function: tiling.Sum, Column: "amount", Window: w},
			tiling.Feature{Name: fmt.Sprintf("count_%d", i), Function: tiling.Count, Window: w},
			tiling.Feature{Name: fmt.Sprintf("max_%d", i), Function: tiling.Max, Column: "amount", Window: w},
			tiling.Feature{Name: fmt.Sprintf("min_%d", i), Function: tiling.Min, Column: "amount", Window: w},
			tiling.Feature{Name: fmt.Sprintf("mean_%d", i), Function: tiling.Mean, Column: "amount", Window: w},
			tiling.Feature{Name: fmt.Sprintf("last_%d", i), Function: tiling.Last, Column: "merchant", Window: w},
			tiling.Feature{Name: fmt.Sprintf("first_%d", i), Function: tiling.First, Column: "merchant", Window: w},
		)
	}
	v, err := tiling.NewView(tiling.View{Name: "txn", Topic: "transactions", Entity: "user_id", Timestamp: "ts",
		Granularity: tiling.Minute, LifetimeStart: tiling.MinTime, Features: fs})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// reuseEvent makes an event whose states leave what a reused arena element
// must not keep: sums that spill out of their inline limbs (amounts 2^260
// apart), values of both signs, merchants longer than an arena's room for a
// value (their own allocation) and short ones.
func reuseEvent(w *world, r *rand.Rand, key string, ts int64, partition int32) (tiling.Event, oracle.Event) {
	off := w.offsets[partition]
	w.offsets[partition] = off + 1
	var amount float64
	switch r.IntN(4) {
	case 0:
		amount = math.Ldexp(float64(r.IntN(2000)-1000), 130+r.IntN(3)) // huge
	case 1:
		amount = math.Ldexp(float64(r.IntN(2000)-1000), -130-r.IntN(3)) // tiny
	default:
		amount = float64(r.IntN(200000)-100000) / 100
	}
	merchant := fmt.Sprintf("m%d", r.IntN(9))
	if r.IntN(2) == 0 {
		merchant += strings.Repeat("-long-merchant-name", 1+r.IntN(3))
	}
	raw, _ := json.Marshal(merchant)
	cols := w.v.Columns()
	in := make([]tiling.Input, len(cols))
	fields := map[string]any{}
	for i, c := range cols {
		switch c {
		case "amount":
			if r.IntN(8) == 0 {
				continue // missing
			}
			in[i] = tiling.Input{Kind: tiling.Number, Num: amount}
			fields["amount"] = amount
		case "merchant":
			if r.IntN(8) == 0 {
				continue
			}
			in[i] = tiling.Input{Kind: tiling.Other, Raw: raw}
			fields["merchant"] = merchant
		}
	}
	pos := tiling.Pos{Partition: partition, Offset: off}
	return tiling.Event{Key: key, TS: ts, Pos: pos, Inputs: in},
		oracle.Event{Key: key, TS: ts, Partition: partition, Offset: off, Fields: fields}
}

// TestReviewArenaReuseAcrossDays heals 12 days on one and on three build
// goroutines, so later days' tiles take the states of earlier days' arenas
// (reset once those days are written), and checks every key against the
// oracle: a state of a written day still in use (a total, a summary, a
// record waiting in a batch) or a reused element not fully reset (spilled
// sum limbs, a long last/first value, min against max) shows as a wrong
// value. Then an incremental heal of late events over the same arenas.
func TestReviewArenaReuseAcrossDays(t *testing.T) {
	v := reuseView(t)
	lateness := 5 * tiling.Minute
	now := time.Date(2026, 5, 20, 9, 13, 0, 0, time.UTC).UnixMilli()
	for _, workers := range []int{1, 3} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			w := newWorld(t, v, lateness)
			w.h.cfg.Workers = workers
			w.now, w.arch.e = now, now
			r := rand.New(rand.NewPCG(51, uint64(workers)))
			var evs []tiling.Event
			var oes []oracle.Event
			for i := range 3000 {
				key := fmt.Sprintf("k%02d", r.IntN(30))
				if i%4 == 0 {
					key = fmt.Sprintf("hot%d", r.IntN(2))
				}
				e, o := reuseEvent(w, r, key, now-12*tiling.Day+r.Int64N(12*tiling.Day), r.Int32N(3))
				evs, oes = append(evs, e), append(oes, o)
			}
			w.consume(evs, oes, nil)
			res, err := w.h.Heal(context.Background(), v.Name, Options{Full: true})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Installed || res.DaysHealed < 12 {
				t.Fatalf("heal: %+v", res)
			}
			wb := tiling.AlignDown(now-lateness, v.Granularity)
			w.check("after a full heal", everyThird(queryTimes(v, wb, now+tiling.Day, r)))

			now2 := now + tiling.Day + 7*tiling.Minute
			evs, oes = nil, nil
			for range 1200 {
				e, o := reuseEvent(w, r, fmt.Sprintf("k%02d", r.IntN(40)), now-5*tiling.Day+r.Int64N(6*tiling.Day), r.Int32N(3))
				evs, oes = append(evs, e), append(oes, o)
			}
			w.now, w.arch.e = now2, now2
			w.consume(evs, oes, nil)
			if _, err := w.h.Heal(context.Background(), v.Name, Options{}); err != nil {
				t.Fatal(err)
			}
			w.check("after an incremental heal", everyThird(queryTimes(v, tiling.AlignDown(now2-lateness, v.Granularity), now2+tiling.Day, r)))
		})
	}
}

// everyThird keeps every third query time (the watermark included): the
// oracle's brute force over every key is the test's cost.
func everyThird(ts []int64) []int64 {
	var some []int64
	for i := 0; i < len(ts); i += 3 {
		some = append(some, ts[i])
	}
	return some
}

// TestReviewArenasPool: an arena put back is handed out again (reset: its
// states start empty), and get makes a new one when none is free.
func TestReviewArenasPool(t *testing.T) {
	v := reuseView(t)
	p := &arenas{v: v}
	a := p.get()
	r := &tiling.Record{Start: 0}
	e := tiling.Event{Key: "k", TS: 5, Inputs: make([]tiling.Input, len(v.Columns()))}
	for i, c := range v.Columns() {
		switch c {
		case "amount":
			e.Inputs[i] = tiling.Input{Kind: tiling.Number, Num: math.Ldexp(1, 600)}
		case "merchant":
			e.Inputs[i] = tiling.Input{Kind: tiling.Other, Raw: []byte(`"` + strings.Repeat("x", 100) + `"`)}
		}
	}
	v.AggregateIn(a, r, &e)
	e.Inputs[0].Num = math.Ldexp(1, -600)
	v.AggregateIn(a, r, &e)
	p.put(a)
	b := p.get()
	if b != a {
		t.Fatal("a free arena was not handed out again")
	}
	if c := p.get(); c == a || c == nil {
		t.Fatal("get with no free arena did not make a new one")
	}
	fresh := v.AppendRecord(nil, &tiling.Record{Start: 0, Tiles: []tiling.Tile{{Start: 0, States: v.NewStates()}}})
	got := v.AppendRecord(nil, &tiling.Record{Start: 0, Tiles: []tiling.Tile{{Start: 0, States: v.NewStatesIn(b)}}})
	if string(fresh) != string(got) {
		t.Fatalf("states of a reused arena encode as %x, new ones %x", got, fresh)
	}
	p.put(nil) // a build that failed before taking one
}
