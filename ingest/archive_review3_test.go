package ingest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/smithy-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tilestream/tilestream/oracle"
	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

var errCrashed = errors.New("crashed (test)")

// throttled is a failure worth retrying, as DynamoDB or S3 throttling.
func throttled() error {
	return &smithy.GenericAPIError{Code: "ProvisionedThroughputExceededException", Message: "throttled (test)", Fault: smithy.FaultClient}
}

// crashingStore fails some commits with a retryable error (failAt, by
// 1-based call), and every commit once crashed is set: from then on the
// process writes nothing, as if it had died.
type crashingStore struct {
	*state.Store
	crashed  atomic.Bool
	mu       sync.Mutex
	calls    int
	failAt   map[int]bool
	injected int
}

func (s *crashingStore) Commit(b *state.Batch) error {
	if s.crashed.Load() {
		return errCrashed
	}
	s.mu.Lock()
	s.calls++
	fail := s.failAt[s.calls]
	if fail {
		s.injected++
	}
	s.mu.Unlock()
	if fail {
		return throttled()
	}
	return s.Store.Commit(b)
}

// lossyArchive writes the files of some rolls and then reports a retryable
// failure (the write succeeded, its answer was lost), as S3 may.
type lossyArchive struct {
	Archiver
	mu       sync.Mutex
	calls    int
	failAt   map[int]bool
	injected int
}

func (a *lossyArchive) WriteArchive(v *tiling.View, eventIDField string, partition int32, first, last int64, rows []state.ArchiveRow) ([]string, error) {
	paths, err := a.Archiver.WriteArchive(v, eventIDField, partition, first, last, rows)
	if err != nil {
		return paths, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	if a.failAt[a.calls] {
		a.injected++
		return paths, throttled()
	}
	return paths, nil
}

// TestArchiveRollsBetweenFlushesAndSurvivesACrash: with a flush interval
// far longer than the test, a partition's archive buffer still rolls once
// a poll fills it to ArchiveRollRows (f713dc9), through store and archive
// failures worth retrying (a roll is retried whole: intent, files, progress
// again); no offset is committed before the flush makes the stream records
// durable too. The process then dies before any flush: the archive holds
// events the stream records do not. A new process replays the partitions
// from the start: it archives only the events not rolled before the crash,
// the offline log holds every event once, and the stream records serve the
// oracle's values.
func TestArchiveRollsBetweenFlushesAndSurvivesACrash(t *testing.T) {
	const partitions, n, rollRows = 2, 600, 50
	cluster, store, off, v := archivingSetup(t, partitions)
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	now := time.Now().UnixMilli()
	events := produceEvents(t, cluster.ListenAddrs(), "transactions", partitions, n, 30, now, rand.New(rand.NewPCG(21, 22)))

	cfg := DefaultConfig()
	cfg.Brokers = cluster.ListenAddrs()
	// The longest intervals allowed: the first flush is due a minute after
	// Run starts, past the deadline below.
	cfg.FlushInterval = time.Minute
	cfg.ArchiveRollInterval = time.Minute
	cfg.ArchiveRollRows = rollRows
	cfg.PollRecords = rollRows

	crashing := &crashingStore{Store: store, failAt: map[int]bool{2: true, 5: true, 9: true}}
	lossy := &lossyArchive{Archiver: off, failAt: map[int]bool{2: true, 4: true}}
	m1 := NewMetrics(prometheus.NewRegistry())
	in, err := New(cfg, []*tiling.View{v}, crashing, lossy, m1, discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	deadline := time.Now().Add(cfg.FlushInterval - 5*time.Second)
	go func() { done <- in.Run(ctx) }()
	stopped := false
	defer func() {
		if !stopped { // failed early: stop Run before the store closes
			crashing.crashed.Store(true)
			cancel()
			<-done
		}
	}()
	// Every event applied, and rolled but for what each partition's last
	// polls left below rollRows.
	for testutil.ToFloat64(m1.events.WithLabelValues(v.Name, "applied")) < n ||
		testutil.ToFloat64(m1.archived.WithLabelValues(v.Name)) < n-partitions*(rollRows-1) {
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("Run ended before the events were consumed: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v events applied, %v archived, of %d before the first flush was due (flush interval %v)", testutil.ToFloat64(m1.events.WithLabelValues(v.Name, "applied")),
				testutil.ToFloat64(m1.archived.WithLabelValues(v.Name)), n, cfg.FlushInterval)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	adm, err := kadm.NewOptClient(kgo.SeedBrokers(cfg.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	committed, err := adm.FetchOffsets(context.Background(), cfg.Group)
	if err != nil {
		t.Fatal(err)
	}
	committed.Each(func(o kadm.OffsetResponse) {
		if o.At > 0 {
			t.Errorf("partition %d committed at %d before any flush: the stream records are not durable", o.Partition, o.At)
		}
	})
	crashing.mu.Lock()
	storeFaults := crashing.injected
	crashing.mu.Unlock()
	lossy.mu.Lock()
	archiveFaults := lossy.injected
	lossy.mu.Unlock()
	if storeFaults == 0 || archiveFaults == 0 {
		t.Fatalf("faults injected: %d store, %d archive; the test needs both", storeFaults, archiveFaults)
	}
	// Rolls of two partitions run at once: one attempt may hold two faults.
	if got := testutil.ToFloat64(m1.storeErrors.WithLabelValues("archive", "throttled")); got < 1 || got > float64(storeFaults+archiveFaults) {
		t.Errorf("archive step failures counted %v, want 1 to %d (retried, not fatal)", got, storeFaults+archiveFaults)
	}

	// The crash: nothing is written from here on, the shutdown's flush
	// included.
	crashing.crashed.Store(true)
	cancel()
	stopped = true
	if err := <-done; !errors.Is(err, errCrashed) {
		t.Fatalf("Run after the crash: %v, want the crash's error (the shutdown flush must have failed)", err)
	}
	archived1 := testutil.ToFloat64(m1.archived.WithLabelValues(v.Name))
	t.Logf("before the crash: %v of %d events archived, %d store and %d archive faults", archived1, n, storeFaults, archiveFaults)
	if prog, err := store.Progress(v.Topic); err != nil || len(prog) != 0 {
		t.Fatalf("stream progress after the crash: %v, %v; want none (no flush)", prog, err)
	}

	m2 := NewMetrics(prometheus.NewRegistry())
	cfg.FlushInterval, cfg.ArchiveRollInterval = 50*time.Millisecond, 100*time.Millisecond
	runUntilCommittedWith(t, cfg, v, store, off, m2)
	if got := testutil.ToFloat64(m2.archived.WithLabelValues(v.Name)); got != n-archived1 {
		t.Errorf("the restart archived %v events, want the %v not rolled before the crash", got, n-archived1)
	}

	want := map[tiling.Pos]oracle.Event{}
	byKey := map[string][]oracle.Event{}
	for _, p := range events {
		want[tiling.Pos{Partition: p.ev.Partition, Offset: p.ev.Offset}] = p.ev
		byKey[p.ev.Key] = append(byKey[p.ev.Key], p.ev)
	}
	days, err := off.Days(v.Name)
	if err != nil {
		t.Fatal(err)
	}
	got := map[tiling.Pos]int{}
	for _, d := range days {
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
	at := time.Now().UnixMilli()
	for key, evs := range byKey {
		if w, g := oracle.Values(oracleView(v), evs, at), served(t, store, v, key, at); !reflect.DeepEqual(g, w) {
			t.Fatalf("key %s at %d after the restart:\n got %v\nwant %v", key, at, g, w)
		}
	}
}
