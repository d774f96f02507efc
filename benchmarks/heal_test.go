package benchmarks

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tilestream/tilestream/healer"
	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

// archivedHistory archives n events of keys random keys, in time order,
// over the 30 days before at (minus the lateness, so a heal at at covers
// them all), into a fresh offline log.
func archivedHistory(b *testing.B, v *tiling.View, n, keys int, at int64, count bool) (*state.OfflineLog, *history) {
	b.Helper()
	off := openOffline(b)
	h := newHistory(b, v, nil, off)
	if count {
		h.countTiles()
	}
	to := tiling.AlignDown(at-2*healLateness, v.Granularity)
	h.random("u", keys, n, to-30*tiling.Day, to, rand.New(rand.NewPCG(3, 4)))
	h.flush()
	return off, h
}

// fullHeal heals v from off into a fresh store and returns the result, the
// time the heal took and the process CPU time it used (store set-up
// excluded); it reports the largest live heap seen during the heal.
func fullHeal(b *testing.B, v *tiling.View, off *state.OfflineLog, at int64) (healer.Result, time.Duration, time.Duration) {
	b.Helper()
	b.StopTimer()
	store, done := scratchStore(b)
	defer done()
	h := newHealer(b, v, store, off, at)
	runtime.GC()
	stop := heapHighWater()
	b.StartTimer()
	start, cpu := time.Now(), cpuTime()
	res, err := h.Heal(context.Background(), v.Name, healer.Options{Full: true})
	elapsed, cpu := time.Since(start), cpuTime()-cpu
	b.StopTimer()
	b.ReportMetric(float64(stop())/(1<<20), "peak-heap-MiB")
	if err != nil {
		b.Fatal(err)
	}
	if !res.Installed {
		b.Fatalf("heal installed nothing: %+v", res)
	}
	b.StartTimer()
	return res, elapsed, cpu
}

// BenchmarkHeal is the heal's throughput: a full heal of 30 days of archived
// history from the offline log's Parquet files into installed batch records
// (day and detail records, summaries, heads) in a fresh Pebble store (demo
// view, 1m tiles), at two densities:
//
//   - keys=10000: 2M events over 10,000 keys (200k in -short mode), about 7
//     events per key and day: nearly every event opens a tile, a block and
//     a day of its own, so the cost is per record written.
//   - keys=200: 10,000 events per key (~330 per key and day, ~14 per hour):
//     between the two.
//   - keys=2: the same 2M events over 2 keys (1M events each, as the issue's
//     dense key): about 23 events per 1-minute tile, so the cost is per
//     event read and aggregated.
//
// The heal reads, aggregates and encodes days on GOMAXPROCS goroutines and
// Pebble ingests each day's records as tables; events/s/core divides by
// GOMAXPROCS. events/cpu-s divides by the process CPU time the heal used
// (its goroutines, Pebble, GC): the steadier figure on a shared machine.
//
// read is the offline log's own speed on the same files: ReadDay over every
// day, doing nothing with the events. heal ÷ read is the heal's overhead.
func BenchmarkHeal(b *testing.B) {
	n := 2_000_000
	if testing.Short() {
		n = 200_000
	}
	for _, keys := range []int{10_000, 200, 2} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) { benchHeal(b, n, keys) })
	}
}

func benchHeal(b *testing.B, n, keys int) {
	v := demoView(b)
	at := time.Now().UnixMilli()
	off, _ := archivedHistory(b, v, n, keys, at, false)
	procs := float64(runtime.GOMAXPROCS(0))

	b.Run("read", func(b *testing.B) {
		days, err := off.Days(v.Name)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		var events int64
		var sum float64
		cpu := cpuTime()
		for b.Loop() {
			for _, d := range days {
				st, err := off.ReadDay(v, "", d.Date, func(e *tiling.Event) error {
					sum += float64(e.TS)
					return nil
				}, nil)
				if err != nil {
					b.Fatal(err)
				}
				events += st.Events
			}
		}
		cpu = cpuTime() - cpu
		if events == 0 {
			b.Fatal("no events read")
		}
		eps := float64(events) / b.Elapsed().Seconds()
		b.ReportMetric(eps, "events/s")
		b.ReportMetric(eps/procs, "events/s/core")
		b.ReportMetric(float64(events)/cpu.Seconds(), "events/cpu-s")
	})

	b.Run("heal", func(b *testing.B) {
		b.ReportAllocs()
		var events int64
		var took, cpu time.Duration
		var res healer.Result
		for b.Loop() {
			r, d, c := fullHeal(b, v, off, at)
			res, took, cpu = r, took+d, cpu+c
			events += res.Events
		}
		if res.Events != int64(n) {
			b.Fatalf("heal read %d events, want %d", res.Events, n)
		}
		eps := float64(events) / took.Seconds()
		b.ReportMetric(eps, "events/s")
		b.ReportMetric(eps/procs, "events/s/core")
		b.ReportMetric(float64(events)/cpu.Seconds(), "events/cpu-s")
		b.ReportMetric(float64(res.Records), "records")
	})
}

// BenchmarkBackfillWrites is a 30-day backfill: a full heal of 30 days of
// archived history at 1-minute tiles into a fresh store. It reports the
// online-store records the heal wrote (healer.Result.Records: detail, day
// and summary records and heads) against the writes a tile-per-record
// design needs (one per distinct (key, minute tile)), and the stream
// layout's (one per distinct (key, hour record)). keys=5000 is the case of
// the issue (1M events, about 200 per key: sparse, most tiles hold one
// event); keys=500 is ten times denser.
func BenchmarkBackfillWrites(b *testing.B) {
	n := 1_000_000
	if testing.Short() {
		n = 100_000
	}
	for _, keys := range []int{5000, 500} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			v := demoView(b)
			at := time.Now().UnixMilli()
			off, h := archivedHistory(b, v, n, keys, at, true)
			var res healer.Result
			var took time.Duration
			iters := 0
			for b.Loop() {
				var d time.Duration
				res, d, _ = fullHeal(b, v, off, at)
				took += d
				iters++
			}
			tiles, blocks := float64(len(h.tiles)), float64(len(h.blocks))
			b.ReportMetric(float64(res.Records), "records")
			b.ReportMetric(tiles, "tile-writes")
			b.ReportMetric(blocks, "stream-record-writes")
			b.ReportMetric(float64(res.Records)/tiles, "records/tile-write")
			b.ReportMetric(float64(n)*float64(iters)/took.Seconds(), "events/s")
		})
	}
}

// BenchmarkHealDaily is the steady state of a deployment with many keys:
// 30 days of history over 200,000 keys (20,000 in -short mode) are healed
// once, then each iteration archives one more day of 100,000 events (10,000
// in -short mode) and runs the scheduled, incremental heal a day later. A
// daily heal rewrites every key's summary (the windows moved), so its cost
// and memory follow the key count: it reports the heal's time and the
// largest heap seen while it ran (sampled every 2 ms), which with
// summaries read a chunk of keys at a time no longer holds every key's
// previous summary.
func BenchmarkHealDaily(b *testing.B) {
	keys, hist, daily := 200_000, 2_000_000, 100_000
	if testing.Short() {
		keys, hist, daily = 20_000, 200_000, 10_000
	}
	v := demoView(b)
	// The history ends 40 days ago (archive watermark at): iteration i heals
	// up to at + i days, which must stay in the past.
	const most = 39
	at := time.Now().UnixMilli() - (most+1)*tiling.Day
	store := openStore(b)
	off := openOffline(b)
	h := newHistory(b, v, nil, off)
	to := tiling.AlignDown(at-2*healLateness, v.Granularity)
	r := rand.New(rand.NewPCG(5, 6))
	h.random("u", keys, hist, to-30*tiling.Day, to, r)
	h.flush()
	if res, err := newHealer(b, v, store, off, at).Heal(context.Background(), v.Name, healer.Options{}); err != nil || !res.Installed {
		b.Fatalf("first heal: %+v, %v", res, err)
	}
	var took time.Duration
	var peak uint64
	day := 0
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		if day == most {
			b.Fatalf("at most %d iterations", most)
		}
		h.random("u", keys, daily, to+int64(day)*tiling.Day, to+int64(day+1)*tiling.Day, r)
		h.flush()
		day++
		hl := newHealer(b, v, store, off, at+int64(day)*tiling.Day)
		runtime.GC()
		stop := heapHighWater()
		b.StartTimer()
		start := time.Now()
		res, err := hl.Heal(context.Background(), v.Name, healer.Options{})
		took += time.Since(start)
		b.StopTimer()
		peak = max(peak, stop())
		if err != nil || !res.Installed || res.Keys < keys*9/10 {
			b.Fatalf("daily heal %d: %+v, %v", day, res, err)
		}
		b.StartTimer()
	}
	b.ReportMetric(took.Seconds()/float64(day), "heal-s")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
}

// heapHighWater samples the live heap every 2 ms until stop, which returns
// the largest value seen.
func heapHighWater() (stop func() uint64) {
	high := new(atomic.Uint64)
	done := make(chan struct{})
	finished := make(chan struct{})
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() {
		metrics.Read(sample)
		if v := sample[0].Value.Uint64(); v > high.Load() {
			high.Store(v)
		}
	}
	go func() {
		defer close(finished)
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				read()
			}
		}
	}()
	return func() uint64 {
		close(done)
		<-finished
		read()
		return high.Load()
	}
}
