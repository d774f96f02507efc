package ingest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"

	"github.com/tilestream/tilestream/internal/dynalite"
	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/state/dynamo"
	"github.com/tilestream/tilestream/tiling"
)

func TestMain(m *testing.M) {
	code := m.Run()
	dynalite.CloseShared()
	os.Exit(code)
}

var benchTables atomic.Int64

func openDynamo(tb testing.TB) *state.Store {
	tb.Helper()
	srv := dynalite.Shared(tb)
	cfg := state.DynamoConfig{CreateTable: true, Table: dynamo.DefaultConfig()}
	cfg.Table.Table = fmt.Sprintf("ingest-%d-%d", os.Getpid(), benchTables.Add(1))
	cfg.Table.Endpoint, cfg.Table.Region = srv.Endpoint, "us-east-1"
	s, err := state.OpenDynamo(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkDynamoWrites measures what the ingest writes to DynamoDB per
// 1,000 events: write requests and write capacity units (1 per started KB
// of each item written, from the store's own counters). Events are applied
// and flushed as the ingest does, one flush per second of event time (the
// default flush_interval), for keys receiving `rate` events per second, one
// tile (minute) after another, each key's events on one partition (a topic
// keyed by the entity) or spread over 8. Each b.N is one second of events of
// every key. The counts include the partitions' progress items, written
// every 5 s of wall clock.
//
//	go test -tags pebblegozstd -run '^$' -bench BenchmarkDynamoWrites -benchtime 300x ./ingest
func BenchmarkDynamoWrites(b *testing.B) {
	for _, c := range []struct {
		name              string
		keys, rate, parts int
	}{
		{"one key at 100 events/s", 1, 100, 1},
		{"one key at 1000 events/s", 1, 1000, 1},
		{"one key at 100 events/s over 8 partitions", 1, 100, 8},
		{"100 keys at 10 events/s", 100, 10, 1},
	} {
		b.Run(c.name, func(b *testing.B) {
			store := openDynamo(b)
			v, err := tiling.NewView(tiling.View{Name: "txn", Topic: "transactions", Entity: "user_id", Timestamp: "ts",
				Granularity: tiling.Minute, Features: []tiling.Feature{
					{Name: "sum_1h", Function: tiling.Sum, Column: "amount", Window: tiling.Hour},
					{Name: "count_1d", Function: tiling.Count, Window: tiling.Day},
					{Name: "max_7d", Function: tiling.Max, Column: "amount", Window: 7 * tiling.Day},
					{Name: "mean_7d", Function: tiling.Mean, Column: "amount", Window: 7 * tiling.Day},
					{Name: "last_1d", Function: tiling.Last, Column: "merchant", Window: tiling.Day},
				}})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := store.CheckLayout(v); err != nil {
				b.Fatal(err)
			}
			ap := newApplier(store, []*tiling.View{v}, 200_000, map[topicPartition]int64{})
			cols := v.Columns()
			start := tiling.AlignDown(int64(1_790_000_000_000), tiling.Hour)
			offsets := make([]int64, 8)
			st := &store.Table().Metrics().Stats
			events := 0
			b.ResetTimer()
			w0, u0 := st.WriteReqs.Load(), st.WriteUnits.Load()
			for i := range b.N {
				for k := range c.keys {
					key := fmt.Sprintf("user-%05d", k)
					for j := range c.rate {
						p := int32((k + j%c.parts) % 8)
						ts := start + int64(i)*1000 + int64(j)*1000/int64(c.rate)
						in := make([]tiling.Input, len(cols))
						for ci, col := range cols {
							switch col {
							case "amount":
								in[ci] = tiling.Input{Kind: tiling.Number, Num: float64(j%5000) / 100}
							case "merchant":
								in[ci] = tiling.Input{Kind: tiling.Other, Raw: []byte(`"m` + fmt.Sprint(j%40) + `"`)}
							}
						}
						e := tiling.Event{Key: key, TS: ts, Pos: tiling.Pos{Partition: p, Offset: offsets[p]}, Inputs: in}
						if _, err := ap.apply(0, &e); err != nil {
							b.Fatal(err)
						}
						ap.handled(topicPartition{"transactions", p}, offsets[p], 0, ts, true)
						offsets[p]++
						events++
					}
				}
				if _, err := ap.flush(false); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			w, u := st.WriteReqs.Load()-w0, st.WriteUnits.Load()-u0
			b.ReportMetric(float64(w)*1000/float64(events), "writes/1000ev")
			b.ReportMetric(float64(u)*1000/float64(events), "WCU/1000ev")
		})
	}
}
