package ingest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/smithy-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/tilestream/tilestream/internal/dynalite"
	"github.com/tilestream/tilestream/oracle"
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
			if _, err := store.CheckLayout(context.Background(), v); err != nil {
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

// TestDynamoZombieAndNewOwnerCountEachEventOnce plays a rebalance on
// DynamoDB: a member (a) keeps consuming a partition after the group gave
// it to another (b), which resumed from the last committed offset. Both
// write the same stream tiles. Every conditional write that finds a tile
// changed reloads it and applies its events again, skipping those it
// holds: each event ends up counted once, whatever the interleaving.
func TestDynamoZombieAndNewOwnerCountEachEventOnce(t *testing.T) {
	store := openDynamo(t)
	v, err := tiling.NewView(tiling.View{Name: "txn", Topic: "transactions", Entity: "user_id", Timestamp: "ts",
		Granularity: tiling.Minute, Features: []tiling.Feature{
			{Name: "n", Function: tiling.Count, Window: tiling.Day},
			{Name: "sum", Function: tiling.Sum, Column: "amount", Window: tiling.Day},
		}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.CheckLayout(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	now := tiling.AlignDown(int64(1_790_000_000_000), tiling.Hour)
	keys := []string{"k1", "k2", "k3"}
	var evs []tiling.Event
	for o := range 200 {
		in := []tiling.Input{{Kind: tiling.Number, Num: float64(o)}}
		evs = append(evs, tiling.Event{Key: keys[o%3], TS: now + int64(o%7)*tiling.Minute + int64(o), Pos: tiling.Pos{Partition: 0, Offset: int64(o)}, Inputs: in})
	}
	views := []*tiling.View{v}
	a := newApplier(store, views, 1000, map[topicPartition]int64{})
	b := newApplier(store, views, 1000, map[topicPartition]int64{})
	run := func(ap *applier, from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			e := evs[i]
			if _, err := ap.apply(0, &e); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := ap.flush(true); err != nil {
			t.Fatal(err)
		}
	}
	run(a, 0, 100)   // a owns the partition; it committed 50
	run(b, 50, 150)  // b resumes from 50 after the rebalance
	run(a, 100, 180) // a, a zombie, still consumes
	run(b, 150, 200) // b goes on
	if a.conflicts == 0 || b.conflicts == 0 {
		t.Errorf("conflicts: a %d, b %d; both should have lost a write", a.conflicts, b.conflicts)
	}
	for _, key := range keys {
		var want tiling.Record
		want.Start = v.RecordStart(now)
		for i := range evs {
			if evs[i].Key == key {
				v.Aggregate(&want, &evs[i])
			}
		}
		at := now + 10*tiling.Minute
		kd, err := store.ReadKey(context.Background(), v, key, at)
		if err != nil {
			t.Fatal(err)
		}
		got, exp := v.EvaluateBatch(at, kd.Batch, kd.Records), v.Evaluate(at, []*tiling.Record{&want})
		if fmt.Sprint(got) != fmt.Sprint(exp) {
			t.Errorf("%s: served %v, want %v (every event once)", key, got, exp)
		}
	}
}

// throttler fails DynamoDB item calls with a throttling error while on, as
// DynamoDB does past a table's capacity (dynalite never throttles).
type throttler struct {
	dynamo.API
	on    atomic.Bool
	calls atomic.Int64
}

func (f *throttler) fail() error {
	if !f.on.Load() {
		return nil
	}
	f.calls.Add(1)
	return &smithy.GenericAPIError{Code: "ProvisionedThroughputExceededException", Message: "throttled (test)", Fault: smithy.FaultClient}
}

func (f *throttler) PutItem(ctx context.Context, in *dynamodb.PutItemInput, o ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	return f.API.PutItem(ctx, in, o...)
}

func (f *throttler) GetItem(ctx context.Context, in *dynamodb.GetItemInput, o ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	return f.API.GetItem(ctx, in, o...)
}

// TestDynamoThrottlingStallsIngest throttles every DynamoDB item call while
// a backlog is consumed, until the ingest has stalled on it (a few of its
// steps failed as throttled and wait to be retried, the stalled gauge up):
// it never exits, nothing is committed past what is durable, and once the
// throttling stops it catches up with every event counted once. The
// throttling ends on the ingest's own progress, not after a span of wall
// clock: on a loaded machine the consumer may not even have joined its
// group within a couple of seconds (only the lag loop's reads of the
// heal generation were throttled then, and no ingest step).
func TestDynamoThrottlingStallsIngest(t *testing.T) {
	const partitions = 4
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, "transactions"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	th := &throttler{}
	srv := dynalite.Shared(t)
	dc := state.DynamoConfig{CreateTable: true, Table: dynamo.DefaultConfig()}
	dc.Table.Table = fmt.Sprintf("ingest-%d-%d", os.Getpid(), benchTables.Add(1))
	dc.Table.Endpoint, dc.Table.Region = srv.Endpoint, "us-east-1"
	dc.Table.MaxBackoff = 20 * time.Millisecond
	dc.Table.Wrap = func(api dynamo.API) dynamo.API { th.API = api; return th }
	store, err := state.OpenDynamo(context.Background(), dc, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	v := testView(t)
	if _, err := store.CheckLayout(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	now := time.Now().UnixMilli()
	th.on.Store(true)
	events := produceEvents(t, cluster.ListenAddrs(), "transactions", partitions, 2000, 30, now, r)

	cfg := DefaultConfig()
	cfg.Brokers = cluster.ListenAddrs()
	cfg.FlushInterval = 50 * time.Millisecond
	cfg.LagInterval = 100 * time.Millisecond
	m := NewMetrics(prometheus.NewRegistry())
	throttledSteps := func() float64 {
		return testutil.ToFloat64(m.storeErrors.WithLabelValues("apply", "throttled")) + testutil.ToFloat64(m.storeErrors.WithLabelValues("flush", "throttled"))
	}
	// The ingest retries a throttled step with a backoff from 25-50 ms,
	// doubling: three failures are a stall, not one unlucky call.
	const stallSteps = 3
	var stalledSeen atomic.Bool
	quit, unthrottled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(unthrottled)
		defer th.on.Store(false)
		// A deadline for a hang only: the ingest not reaching its
		// first step in a minute.
		deadline := time.Now().Add(time.Minute)
		for throttledSteps() < stallSteps || testutil.ToFloat64(m.stalled) != 1 {
			if time.Now().After(deadline) {
				return
			}
			select {
			case <-quit:
				return
			case <-time.After(5 * time.Millisecond): // poll interval
			}
		}
		stalledSeen.Store(true)
	}()
	defer func() {
		close(quit)
		<-unthrottled
	}()
	runUntilCommittedWith(t, cfg, v, store, nil, m)
	<-unthrottled
	if th.calls.Load() == 0 {
		t.Fatal("nothing was throttled")
	}
	throttled := throttledSteps()
	if throttled < stallSteps || !stalledSeen.Load() {
		t.Errorf("%v tilestream_ingest_store_errors_total{reason=throttled} after %d throttled calls (stalled gauge seen up: %v), want at least %d with the gauge up",
			throttled, th.calls.Load(), stalledSeen.Load(), stallSteps)
	}
	if got := testutil.ToFloat64(m.stalled); got != 0 {
		t.Errorf("stalled gauge %v after recovery, want 0", got)
	}
	byKey := map[string][]oracle.Event{}
	for _, p := range events {
		byKey[p.ev.Key] = append(byKey[p.ev.Key], p.ev)
	}
	at := time.Now().UnixMilli()
	for key, evs := range byKey {
		if got, want := served(t, store, v, key, at), oracle.Values(oracleView(v), evs, at); !reflect.DeepEqual(got, want) {
			t.Fatalf("key %s after throttling: got %v, want %v", key, got, want)
		}
	}
	t.Logf("%d calls throttled, %v retried ingest steps", th.calls.Load(), throttled)
}
