package benchmarks

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tilestream/tilestream/ingest"
	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

const topic = "transactions"

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// demoView is the built-in demo view: sum/count/min/max/mean over 1h, 1d, 7d
// and lifetime at 1-minute tiles, plus last merchant.
func demoView(tb testing.TB) *tiling.View {
	tb.Helper()
	var fs []tiling.Feature
	for _, w := range []struct {
		name string
		ms   int64
	}{{"1h", tiling.Hour}, {"1d", tiling.Day}, {"7d", 7 * tiling.Day}, {"life", tiling.Lifetime}} {
		for _, fn := range []tiling.Function{tiling.Sum, tiling.Count, tiling.Min, tiling.Max, tiling.Mean} {
			col := "amount"
			if fn == tiling.Count {
				col = ""
			}
			fs = append(fs, tiling.Feature{Name: fmt.Sprintf("amount_%s_%s", fn, w.name), Function: fn, Column: col, Window: w.ms})
		}
	}
	fs = append(fs, tiling.Feature{Name: "last_merchant", Function: tiling.Last, Column: "merchant", Window: tiling.Lifetime})
	v, err := tiling.NewView(tiling.View{Name: "txn", Topic: topic, Entity: "user_id", Timestamp: "ts",
		Granularity: tiling.Minute, LifetimeStart: tiling.MinTime, Features: fs})
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// produce writes n events for keys keys, spread over span ms before now,
// into the topic's partitions at random.
func produce(tb testing.TB, brokers []string, partitions int32, n, keys int, span int64) {
	tb.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(1<<20))
	if err != nil {
		tb.Fatal(err)
	}
	defer cl.Close()
	r := rand.New(rand.NewPCG(1, 1))
	now := time.Now().UnixMilli()
	const chunk = 20_000
	recs := make([]*kgo.Record, 0, chunk)
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("u%d", r.IntN(keys))
		ts := now - r.Int64N(span+1)
		v := fmt.Sprintf(`{"user_id":%q,"ts":%d,"amount":%d.%02d,"merchant":"m%d"}`, key, ts, r.IntN(1000), r.IntN(100), r.IntN(50))
		recs = append(recs, &kgo.Record{Topic: topic, Partition: r.Int32N(partitions), Value: []byte(v)})
		if len(recs) == chunk || i == n-1 {
			if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
				tb.Fatal(err)
			}
			recs = recs[:0]
		}
	}
}

// ingestAll runs an Ingester over the topic until the group committed every
// end offset, and returns how long that took. With an offline log, the
// events are archived too and offsets are committed only once archived: when
// the store holds every event, the archive is rolled at once (SyncArchive,
// as a heal would) instead of waiting out ArchiveRollInterval, so the time
// counts the archive's work, not its roll timer.
func ingestAll(tb testing.TB, brokers []string, group string, v *tiling.View, store *state.Store, arch *state.OfflineLog) time.Duration {
	tb.Helper()
	cfg := ingest.DefaultConfig()
	cfg.Brokers = brokers
	cfg.Group = group
	cfg.LagInterval = time.Second
	var archiver ingest.Archiver
	if arch != nil {
		archiver = arch
	}
	in, err := ingest.New(cfg, []*tiling.View{v}, store, archiver, ingest.NewMetrics(prometheus.NewRegistry()), quiet())
	if err != nil {
		tb.Fatal(err)
	}
	adm, err := kadm.NewOptClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		tb.Fatal(err)
	}
	defer adm.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	synced := arch == nil
	for {
		if !synced {
			prog, err := store.Progress(topic)
			if err != nil {
				tb.Fatal(err)
			}
			if caughtUp(ends, func(p int32) (int64, bool) { pr, ok := prog[p]; return pr.Next, ok }) {
				if _, err := in.SyncArchive(ctx, v.Name); err != nil {
					tb.Fatal(err)
				}
				synced = true
			}
		}
		committed, err := adm.FetchOffsets(ctx, group)
		if err == nil && synced && caughtUp(ends, func(p int32) (int64, bool) {
			c, ok := committed.Lookup(topic, p)
			return c.At, ok
		}) {
			break
		}
		select {
		case err := <-done:
			tb.Fatalf("ingest stopped: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Since(start) > 10*time.Minute {
			tb.Fatal("ingest did not catch up")
		}
	}
	elapsed := time.Since(start)
	cancel()
	if err := <-done; err != nil {
		tb.Fatal(err)
	}
	return elapsed
}

// caughtUp reports whether at(p) reaches the end offset of every non-empty
// partition.
func caughtUp(ends kadm.ListedOffsets, at func(p int32) (int64, bool)) bool {
	ok := true
	ends.Each(func(o kadm.ListedOffset) {
		if c, has := at(o.Partition); o.Offset > 0 && (!has || c < o.Offset) {
			ok = false
		}
	})
	return ok
}

func newCluster(tb testing.TB, partitions int32) *kfake.Cluster {
	tb.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topic))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

func openStore(tb testing.TB) *state.Store {
	tb.Helper()
	s, err := state.Open(state.Config{Path: tb.TempDir()}, quiet())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}
