package benchmarks

import (
	"testing"
	"time"

	"github.com/tilestream/tilestream/tiling"
)

// BenchmarkIngestEndToEnd measures events/s from a kfake topic through
// decode, tiling and durable Pebble flushes to committed offsets: 500k events
// over 10,000 keys and 8 days (20k in -short mode), 8 partitions, each
// iteration into a fresh store with a fresh consumer group.
func BenchmarkIngestEndToEnd(b *testing.B) {
	events := 500_000
	if testing.Short() {
		events = 20_000
	}
	c := newCluster(b, 8)
	produce(b, c.ListenAddrs(), 8, events, 10_000, 8*tiling.Day)
	v := demoView(b)
	var total time.Duration
	i := 0
	for b.Loop() {
		b.StopTimer()
		store := openStore(b)
		b.StartTimer()
		total += ingestAll(b, c.ListenAddrs(), "bench"+string(rune('a'+i)), v, store)
		i++
	}
	b.ReportMetric(float64(events*i)/total.Seconds(), "events/s")
}
