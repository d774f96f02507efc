package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
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

func TestKnownHasEveryRecordAdded(t *testing.T) {
	const n = 100_000
	f := newKnown(n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range n {
		f.add(recordHash(r.Uint64(), i%3, int64(i)*tiling.Hour))
	}
	r = rand.New(rand.NewPCG(1, 2))
	for i := range n {
		if !f.has(recordHash(r.Uint64(), i%3, int64(i)*tiling.Hour)) {
			t.Fatalf("record %d added but not found", i)
		}
	}
	fp := 0
	for i := range n {
		if f.has(recordHash(r.Uint64(), i%3, int64(i)*tiling.Hour)) {
			fp++
		}
	}
	if rate := float64(fp) / n; rate > 0.02 {
		t.Errorf("false positive rate %.4f at capacity, want about 0.01", rate)
	}
}

// countingStore counts the records the applier reads.
type countingStore struct {
	*state.Store
	loads atomic.Int64
}

func (s *countingStore) LoadRecord(v *tiling.View, key string, start int64, part int32) (*tiling.Record, int64, error) {
	s.loads.Add(1)
	return s.Store.LoadRecord(v, key, start, part)
}

// applyEvents applies evs in polls of poll events, as the consume loop does
// (each poll's events routed to the shards and applied in parallel), and
// flushes after each poll.
func applyEvents(t *testing.T, ap *applier, evs []tiling.Event, poll int) {
	t.Helper()
	for from := 0; from < len(evs); from += poll {
		to := min(from+poll, len(evs))
		byPart := map[int32]*partWork{}
		var work []*partWork
		for i := from; i < to; i++ {
			e := evs[i]
			w := byPart[e.Pos.Partition]
			if w == nil {
				w = &partWork{views: []int{0}}
				byPart[e.Pos.Partition] = w
				work = append(work, w)
			}
			w.out = append(w.out, tiling.Decoded{Events: []tiling.Event{e}, Reasons: []string{""}})
		}
		for _, w := range work {
			w.route(ap.shardOf)
		}
		if err := ap.applyWork(work); err != nil {
			t.Fatal(err)
		}
		for _, w := range work {
			for i, o := range w.outcome {
				if o == pending {
					t.Fatalf("event %d of a poll left pending", i)
				}
			}
		}
		if _, err := ap.flush(true); err != nil {
			t.Fatal(err)
		}
	}
}

// TestShardedApplyWithKnownRecordsCountsEachEventOnce applies events in
// parallel shards into a Pebble store, restarts (a new applier, which learns
// the stored records by a scan) and replays every event with new ones: the
// store then holds each event once, the filter spared the reads of records
// that could not exist, and no stored record was ever overwritten by a new
// one (which would lose its events).
func TestShardedApplyWithKnownRecordsCountsEachEventOnce(t *testing.T) {
	st, err := state.Open(state.Config{Path: t.TempDir()}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	store := &countingStore{Store: st}
	v := testView(t)
	if _, err := st.CheckLayout(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	views := []*tiling.View{v}
	now := tiling.AlignDown(int64(1_790_000_000_000), tiling.Hour)
	r := rand.New(rand.NewPCG(3, 4))
	offsets := make([]int64, 4)
	var evs []tiling.Event
	for range 3000 {
		p := r.Int32N(4)
		in := make([]tiling.Input, len(v.Columns()))
		for ci, col := range v.Columns() {
			switch col {
			case "amount":
				in[ci] = tiling.Input{Kind: tiling.Number, Num: float64(r.IntN(10_000)) / 100}
			case "merchant":
				in[ci] = tiling.Input{Kind: tiling.Other, Raw: []byte(`"m` + fmt.Sprint(r.IntN(9)) + `"`)}
			}
		}
		evs = append(evs, tiling.Event{Key: fmt.Sprintf("k%d", r.IntN(40)), TS: now - r.Int64N(2*tiling.Day),
			Pos: tiling.Pos{Partition: p, Offset: offsets[p]}, Inputs: in})
		offsets[p]++
	}

	// First run: the first 2000 events; tiny filters are refilled from the
	// store several times on the way, and a small cache evicts records
	// that later events need again.
	a := newApplierShards(store, views, 300, map[topicPartition]int64{}, 3)
	a.knownMin = 64
	applyEvents(t, a, evs[:2000], 250)
	if a.knownScans < 2 {
		t.Errorf("the first run filled its filters %d times, want several (capacity 64)", a.knownScans)
	}
	stored := map[string]bool{}
	for _, e := range evs[:2000] {
		stored[fmt.Sprint(e.Key, v.RecordStart(e.TS))] = true
	}

	// Restart: replay from a committed offset, with 1000 new events.
	store.loads.Store(0)
	b := newApplierShards(store, views, 100_000, map[topicPartition]int64{}, 4)
	applyEvents(t, b, evs[1500:], 300)
	old, created := map[string]bool{}, map[string]bool{}
	for _, e := range evs[1500:] {
		if id := fmt.Sprint(e.Key, v.RecordStart(e.TS)); stored[id] {
			old[id] = true
		} else {
			created[id] = true
		}
	}
	if n := int(store.loads.Load()); n < len(old) || n >= len(old)+len(created) {
		t.Errorf("restart read %d records; want every one of the %d stored and few of the %d new ones", n, len(old), len(created))
	}

	byKey := map[string][]tiling.Event{}
	for _, e := range evs {
		byKey[e.Key] = append(byKey[e.Key], e)
	}
	at := now + tiling.Minute
	for key, kevs := range byKey {
		recs := map[int64]*tiling.Record{}
		var want []*tiling.Record
		for i := range kevs {
			s := v.RecordStart(kevs[i].TS)
			if recs[s] == nil {
				recs[s] = v.NewRecord(kevs[i].TS)
				want = append(want, recs[s])
			}
			v.Aggregate(recs[s], &kevs[i])
		}
		kd, err := st.ReadKey(context.Background(), v, key, at)
		if err != nil {
			t.Fatal(err)
		}
		got, exp := v.EvaluateBatch(at, kd.Batch, kd.Records), v.Evaluate(at, sortRecords(want))
		if fmt.Sprint(got) != fmt.Sprint(exp) {
			t.Errorf("%s: served %v, want %v (every event once)", key, got, exp)
		}
	}
}

func sortRecords(rs []*tiling.Record) []*tiling.Record {
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && rs[j].Start < rs[j-1].Start; j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
	return rs
}

// archivingSetup starts a kfake cluster whose "transactions" topic has
// partitions partitions, a Pebble store and an offline log in temporary
// directories, and the test view with its layout recorded; all are closed
// when the test ends.
func archivingSetup(t *testing.T, partitions int32) (*kfake.Cluster, *state.Store, *state.OfflineLog, *tiling.View) {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, "transactions"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	store, err := state.Open(state.Config{Path: t.TempDir()}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	off, err := state.OpenOfflineLog(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v := testView(t)
	if _, err := store.CheckLayout(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	return cluster, store, off, v
}

// TestParallelRollsArchiveEveryEventOnce consumes 8 partitions with small
// archive rolls, so that several partitions roll at once many times: once
// every offset is committed (committed only once archived), the offline log
// holds every event exactly once, as consumed.
func TestParallelRollsArchiveEveryEventOnce(t *testing.T) {
	const partitions = 8
	cluster, store, off, v := archivingSetup(t, partitions)
	now := time.Now().UnixMilli()
	events := produceEvents(t, cluster.ListenAddrs(), "transactions", partitions, 3000, 50, now, rand.New(rand.NewPCG(7, 8)))

	cfg := DefaultConfig()
	cfg.Brokers = cluster.ListenAddrs()
	cfg.FlushInterval = 50 * time.Millisecond
	// A buffer rolls after the poll that fills it to 40 events, so each
	// roll holds fewer than 80: every partition (about 375 events) rolls
	// at least four times, however the polls fall.
	cfg.PollRecords = 40
	cfg.ArchiveRollRows = 40
	cfg.ArchiveRollInterval = 100 * time.Millisecond
	m := runUntilCommittedArchiving(t, cfg, v, store, off)
	if n := testutil.ToFloat64(m.archived.WithLabelValues(v.Name)); n != float64(len(events)) {
		t.Errorf("%v events archived, want %d", n, len(events))
	}

	want := map[tiling.Pos]oracle.Event{}
	for _, p := range events {
		want[tiling.Pos{Partition: p.ev.Partition, Offset: p.ev.Offset}] = p.ev
	}
	days, err := off.Days(v.Name)
	if err != nil {
		t.Fatal(err)
	}
	got, files := map[tiling.Pos]int{}, 0
	for _, d := range days {
		files += len(d.Files)
		if _, err := off.ReadDay(v, v.EventID, d.Date, func(e *tiling.Event) error {
			got[e.Pos]++
			if w, ok := want[e.Pos]; !ok || w.Key != e.Key || w.TS != e.TS {
				t.Errorf("archived %s@%d at %+v, produced %s@%d", e.Key, e.TS, e.Pos, w.Key, w.TS)
			}
			return nil
		}, func(file string, row int64, reason string) { t.Errorf("bad archive row %s:%d: %s", file, row, reason) }); err != nil {
			t.Fatal(err)
		}
	}
	for pos := range want {
		if got[pos] != 1 {
			t.Errorf("event %+v archived %d times, want once", pos, got[pos])
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d events archived, %d produced", len(got), len(want))
	}
	if files < 4*partitions {
		t.Errorf("%d archive files, want several rolls per partition", files)
	}
}

// TestSyncArchiveCommitsAtOnce: once a heal made the archive durable
// (SyncArchive), the consumed offsets are committed at once, not at the
// next flush a FlushInterval later.
func TestSyncArchiveCommitsAtOnce(t *testing.T) {
	cluster, store, off, v := archivingSetup(t, 2)
	events := produceEvents(t, cluster.ListenAddrs(), "transactions", 2, 500, 20, time.Now().UnixMilli(), rand.New(rand.NewPCG(9, 10)))

	cfg := DefaultConfig()
	cfg.Brokers = cluster.ListenAddrs()
	cfg.FlushInterval = time.Minute
	m := NewMetrics(prometheus.NewRegistry())
	in, err := New(cfg, []*tiling.View{v}, store, off, m, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// Run's first flush is due a FlushInterval after it starts, so after
	// this deadline: a commit seen before it is SyncArchive's. The test
	// has nothing to wait for past it (on a quiet machine it is done in
	// about a second; the ingest has a minute to apply 500 events).
	deadline := time.Now().Add(cfg.FlushInterval)
	go func() { done <- in.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	adm, err := kadm.NewOptClient(kgo.SeedBrokers(cfg.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	for testutil.ToFloat64(m.events.WithLabelValues(v.Name, "applied")) < float64(len(events)) {
		if time.Now().After(deadline) {
			t.Fatalf("the events were not applied within the flush interval (%v)", cfg.FlushInterval)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	for {
		_, err := in.SyncArchive(ctx, v.Name)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrNotRunning) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	synced := time.Now()
	for {
		// Asked before the deadline, the commit cannot be the flush's.
		asked := time.Now()
		committed, err := adm.FetchOffsets(ctx, cfg.Group)
		if err != nil {
			t.Fatal(err)
		}
		n := int64(0)
		committed.Each(func(o kadm.OffsetResponse) { n += o.At })
		if asked.After(deadline) {
			t.Fatalf("%d of %d offsets committed %v after SyncArchive, by when the first flush was due (flush interval %v)",
				n, len(events), asked.Sub(synced).Round(time.Millisecond), cfg.FlushInterval)
		}
		if n == int64(len(events)) {
			break
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}
