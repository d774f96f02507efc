package benchmarks

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

// BenchmarkIngestEndToEnd measures events/s from a kfake topic through
// decode, tiling and durable Pebble flushes to committed offsets: 500k events
// over 10,000 keys and 8 days (20k in -short mode), 8 partitions, each
// iteration into a fresh store with a fresh consumer group. The kfake broker
// runs in the same process and shares the CPU.
//
// archive=off writes stream records only. archive=on also archives every
// event to an offline log in a temp dir (default config: roll at 200k rows or
// 1 minute) and commits offsets only once archived — the product's real
// path; the final roll is forced when the store holds every event (see
// ingestAll). events/cpu-s divides by the process CPU time, kfake's
// included.
//
// spread=8d stamps events over 8 days, so nearly every event opens a (key,
// hour) record never seen before (a Pebble read each): the worst case of a
// backlog replay. spread=1h stamps them within the last hour, as a live
// stream does, so records stay in the cache.
func BenchmarkIngestEndToEnd(b *testing.B) {
	for _, spread := range []struct {
		name string
		ms   int64
	}{{"8d", 8 * tiling.Day}, {"1h", tiling.Hour}} {
		b.Run("spread="+spread.name, func(b *testing.B) { benchIngest(b, spread.ms) })
	}
}

func benchIngest(b *testing.B, spread int64) {
	events := 500_000
	if testing.Short() {
		events = 20_000
	}
	c := newCluster(b, 8)
	produce(b, c.ListenAddrs(), 8, events, 10_000, spread)
	v := demoView(b)
	group := 0
	for _, archive := range []bool{false, true} {
		name := "archive=off"
		if archive {
			name = "archive=on"
		}
		b.Run(name, func(b *testing.B) {
			var total, cpu time.Duration
			i := 0
			for b.Loop() {
				b.StopTimer()
				store, done := scratchStore(b)
				var off *state.OfflineLog
				if archive {
					off = openOffline(b)
				}
				b.StartTimer()
				group++
				c0 := cpuTime()
				total += ingestAll(b, c.ListenAddrs(), fmt.Sprintf("bench-%d", group), v, store, off)
				cpu += cpuTime() - c0
				b.StopTimer()
				done()
				b.StartTimer()
				i++
			}
			eps := float64(events*i) / total.Seconds()
			b.ReportMetric(eps, "events/s")
			b.ReportMetric(eps/float64(runtime.GOMAXPROCS(0)), "events/s/core")
			b.ReportMetric(float64(events*i)/cpu.Seconds(), "events/cpu-s")
		})
	}
}
