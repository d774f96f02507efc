package healer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tilestream/tilestream/internal/dynalite"
	"github.com/tilestream/tilestream/oracle"
	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/state/dynamo"
	"github.com/tilestream/tilestream/tiling"
)

// BenchmarkDynamoRead measures a served read of one key on DynamoDB
// (dynalite on loopback): 200 keys with 8 days of events at minute tiles, a
// heal 20 minutes ago and stream tiles since, read at a time whose 1h, 1d
// and 7d windows start inside a day (so the day and detail records are
// needed too). Directly from DynamoDB (no local cache), and through the
// local cache (staleness 2s: after the first read of a key, its snapshot
// and generation records are local). It reports p50 and p99 latency and
// DynamoDB requests per read.
//
//	go test -tags pebblegozstd -run '^$' -bench BenchmarkDynamoRead -benchtime 2000x ./healer
func BenchmarkDynamoRead(b *testing.B) {
	for _, cached := range []bool{false, true} {
		name := "direct"
		if cached {
			name = "through the cache"
		}
		b.Run(name, func(b *testing.B) {
			v := testView(b, tiling.Minute, []int64{tiling.Hour, tiling.Day, 7 * tiling.Day, tiling.Lifetime}, tiling.MinTime)
			w, keys, at := readWorld(b, v, cached)
			st := &w.store.Table().Metrics().Stats
			// Warm: one read of every key (fills the cache when there is one).
			for _, k := range keys {
				if _, err := w.store.ReadKey(context.Background(), v, k, at); err != nil {
					b.Fatal(err)
				}
			}
			lat := make([]time.Duration, 0, b.N)
			r0 := st.ReadReqs.Load()
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				if _, err := w.store.ReadKey(context.Background(), v, keys[i%len(keys)], at); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(st.ReadReqs.Load()-r0)/float64(b.N), "requests/read")
		})
	}
}

// readWorld builds the benchmark's table: keys, events, a heal, and
// events after it.
func readWorld(b *testing.B, v *tiling.View, cached bool) (*world, []string, int64) {
	b.Helper()
	srv := dynalite.Shared(b)
	cfg := state.DynamoConfig{CreateTable: true, Table: dynamo.DefaultConfig(), Staleness: 2 * time.Second}
	cfg.Table.Table = fmt.Sprintf("bench-read-%d", dynTables.Add(1))
	cfg.Table.Endpoint, cfg.Table.Region = srv.Endpoint, "us-east-1"
	if cached {
		cfg.CachePath = filepath.Join(b.TempDir(), "cache")
	}
	store, err := state.OpenDynamo(context.Background(), cfg, quiet())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	w := worldOn(b, store, v, 5*tiling.Minute)
	now := time.Date(2026, 3, 10, 13, 37, 12, 0, time.UTC).UnixMilli()
	w.now, w.arch.e = now, now
	r := rand.New(rand.NewPCG(7, 7))
	keys := make([]string, 200)
	for i := range keys {
		keys[i] = fmt.Sprintf("user-%04d", i)
	}
	var evs []tiling.Event
	var oes []oracle.Event
	n := 20_000
	if testing.Short() {
		n = 1000 // make bench-smoke: that it runs, not its figures
	}
	for range n {
		e, o := w.event(r, keys[r.IntN(len(keys))], now-8*tiling.Day+r.Int64N(8*tiling.Day), r.Int32N(4))
		evs, oes = append(evs, e), append(oes, o)
	}
	w.consume(evs, oes, nil)
	if _, err := w.h.Heal(context.Background(), v.Name, Options{}); err != nil {
		b.Fatal(err)
	}
	// 20 minutes later: stream tiles since the heal.
	w.now += 20 * tiling.Minute
	evs, oes = nil, nil
	for range n / 10 {
		e, o := w.event(r, keys[r.IntN(len(keys))], now+r.Int64N(20*tiling.Minute), r.Int32N(4))
		evs, oes = append(evs, e), append(oes, o)
	}
	w.consume(evs, oes, nil)
	return w, keys, w.now + 17_345
}
