package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tilestream/tilestream/oracle"
	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

// produced is an event as produced, with its position.
type produced struct {
	value []byte
	ev    oracle.Event
}

func produceEvents(t *testing.T, brokers []string, topic string, partitions int32, n int, keys int, now int64, r *rand.Rand) []produced {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	out := make([]produced, n)
	recs := make([]*kgo.Record, n)
	for i := range n {
		key := fmt.Sprintf("k%d", r.IntN(keys))
		ts := now - r.Int64N(3*tiling.Day)
		fields := map[string]any{"user_id": key, "ts": float64(ts), "amount": float64(r.IntN(100000)-20000) / 100, "merchant": fmt.Sprintf("m%d", r.IntN(9))}
		if r.IntN(10) == 0 {
			delete(fields, "amount")
		}
		b, _ := json.Marshal(fields)
		out[i] = produced{value: b, ev: oracle.Event{Key: key, TS: ts, Fields: fields}}
		recs[i] = &kgo.Record{Topic: topic, Partition: r.Int32N(partitions), Value: b}
	}
	res := cl.ProduceSync(context.Background(), recs...)
	if err := res.FirstErr(); err != nil {
		t.Fatal(err)
	}
	// Results come in completion order, not in the order of recs.
	index := make(map[*kgo.Record]int, n)
	for i, r := range recs {
		index[r] = i
	}
	for _, pr := range res {
		i := index[pr.Record]
		out[i].ev.Partition, out[i].ev.Offset = pr.Record.Partition, pr.Record.Offset
	}
	return out
}

// runUntilCommitted runs an Ingester until the group has committed the end
// offset of every partition, then stops it.
func runUntilCommitted(t *testing.T, cfg Config, v *tiling.View, store *state.Store) *Metrics {
	t.Helper()
	return runUntilCommittedArchiving(t, cfg, v, store, nil)
}

// runUntilCommittedArchiving is runUntilCommitted with an offline log (arch
// nil: none); offsets are then committed only once archived.
func runUntilCommittedArchiving(t *testing.T, cfg Config, v *tiling.View, store *state.Store, arch Archiver) *Metrics {
	t.Helper()
	m := NewMetrics(prometheus.NewRegistry())
	runUntilCommittedWith(t, cfg, v, store, arch, m)
	return m
}

// runUntilCommittedWith is runUntilCommittedArchiving counting in m, which
// the caller may watch while the ingest runs.
func runUntilCommittedWith(t *testing.T, cfg Config, v *tiling.View, store *state.Store, arch Archiver, m *Metrics) {
	t.Helper()
	in, err := New(cfg, []*tiling.View{v}, store, arch, m, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()

	adm, err := kadm.NewOptClient(kgo.SeedBrokers(cfg.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ends, err1 := adm.ListEndOffsets(ctx, v.Topic)
		committed, err2 := adm.FetchOffsets(ctx, cfg.Group)
		if err1 == nil && err2 == nil {
			caughtUp, seen := true, 0
			ends.Each(func(o kadm.ListedOffset) {
				seen++
				c, ok := committed.Lookup(o.Topic, o.Partition)
				if o.Err != nil || (o.Offset > 0 && (!ok || c.At < o.Offset)) {
					caughtUp = false
				}
			})
			caughtUp = caughtUp && seen > 0
			if caughtUp {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("ingest did not catch up within 60s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func testView(t testing.TB) *tiling.View {
	t.Helper()
	v, err := tiling.NewView(tiling.View{
		Name: "txn", Topic: "transactions", Entity: "user_id", Timestamp: "ts",
		Granularity: tiling.Minute, LifetimeStart: tiling.MinTime,
		Features: []tiling.Feature{
			{Name: "sum", Function: tiling.Sum, Column: "amount", Window: tiling.Day},
			{Name: "n", Function: tiling.Count, Window: tiling.Lifetime},
			{Name: "last", Function: tiling.Last, Column: "merchant", Window: tiling.Lifetime},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func oracleView(v *tiling.View) oracle.View {
	ov := oracle.View{Granularity: v.Granularity, LifetimeStart: v.LifetimeStart}
	for _, f := range v.Features {
		ov.Features = append(ov.Features, oracle.Feature{Name: f.Name, Function: string(f.Function), Column: f.Column, Window: f.Window})
	}
	return ov
}

// served evaluates every key from the store at t, in the shape of the oracle.
func served(t *testing.T, store *state.Store, v *tiling.View, key string, at int64) map[string]any {
	t.Helper()
	kd, err := store.ReadKey(context.Background(), v, key, at)
	if err != nil {
		t.Fatal(err)
	}
	vals := v.EvaluateBatch(at, kd.Batch, kd.Records)
	out := map[string]any{}
	for i, f := range v.Features {
		switch x := vals[i].(type) {
		case uint64:
			out[f.Name] = float64(x)
		case json.RawMessage:
			var a any
			if err := json.Unmarshal(x, &a); err != nil {
				t.Fatal(err)
			}
			out[f.Name] = a
		default:
			out[f.Name] = x
		}
	}
	return out
}

func TestReplayFromScratchChangesNothing(t *testing.T) {
	const partitions = 4
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, "transactions"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	r := rand.New(rand.NewPCG(3, 4))
	now := time.Now().UnixMilli()
	events := produceEvents(t, cluster.ListenAddrs(), "transactions", partitions, 5000, 40, now, r)
	// Malformed events in between are set aside; the partition goes on.
	bad := []string{`{`, `[]`, `{"user_id":"k1"}`, `{"user_id":"k1","ts":1,"amount":"x"}`}
	cl, _ := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i, b := range bad {
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "transactions", Partition: int32(i % partitions), Value: []byte(b)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	cl.Close()
	events = append(events, produceEvents(t, cluster.ListenAddrs(), "transactions", partitions, 1000, 40, now, r)...)

	v := testView(t)
	store, err := state.Open(state.Config{Path: t.TempDir()}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()

	cfg := DefaultConfig()
	cfg.Brokers = cluster.ListenAddrs()
	cfg.FlushInterval = 50 * time.Millisecond
	cfg.LagInterval = 100 * time.Millisecond
	cfg.RecordCache = 50 // small, so records are evicted and reloaded from the store
	m := runUntilCommitted(t, cfg, v, store)

	byKey := map[string][]oracle.Event{}
	for _, p := range events {
		byKey[p.ev.Key] = append(byKey[p.ev.Key], p.ev)
	}
	at := time.Now().UnixMilli()
	check := func(stage string) {
		t.Helper()
		for key, evs := range byKey {
			want := oracle.Values(oracleView(v), evs, at)
			got := served(t, store, v, key, at)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: key %s at %d:\n got %v\nwant %v", stage, key, at, got, want)
			}
		}
	}
	check("first pass")
	if got := testutil.ToFloat64(m.rejected.WithLabelValues("txn", tiling.ReasonNotJSON)); got != 1 {
		t.Fatalf("not_json rejections %v, want 1", got)
	}

	// A new consumer group starts from the beginning: every event is replayed
	// into the same store and must be skipped.
	cfg.Group = "replay"
	m = runUntilCommitted(t, cfg, v, store)
	check("after a full replay")
	if got := testutil.ToFloat64(m.events.WithLabelValues("txn", "applied")); got != 0 {
		t.Fatalf("replay applied %v events, want 0", got)
	}
	if got := testutil.ToFloat64(m.events.WithLabelValues("txn", "replayed")); got != float64(len(events)) {
		t.Fatalf("replayed %v events, want %d", got, len(events))
	}
}
