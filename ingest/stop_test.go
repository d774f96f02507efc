package ingest

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

// alwaysThrottled is a store whose every commit is throttled.
type alwaysThrottled struct{ *state.Store }

func (s *alwaysThrottled) Commit(*state.Batch) error { return throttled() }

// TestStopDuringAStalledRollIsClean: stopped while an archive roll between
// flushes waits for a throttled store, Run returns nil (the events are
// consumed again from the committed offsets), as it does when stopped
// while a poll's apply or a flush waits (found in review).
func TestStopDuringAStalledRollIsClean(t *testing.T) {
	cluster, store, off, v := archivingSetup(t, 1)
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	produceEvents(t, cluster.ListenAddrs(), "transactions", 1, 100, 10, time.Now().UnixMilli(), rand.New(rand.NewPCG(1, 2)))
	cfg := DefaultConfig()
	cfg.Brokers = cluster.ListenAddrs()
	cfg.FlushInterval = time.Minute
	cfg.ArchiveRollRows = 10
	m := NewMetrics(prometheus.NewRegistry())
	in, err := New(cfg, []*tiling.View{v}, &alwaysThrottled{store}, off, m, discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for testutil.ToFloat64(m.storeErrors.WithLabelValues("archive", "throttled")) == 0 {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("no throttled archive roll within 30 s (Run: %v)", <-done)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run stopped during a stalled archive roll: %v, want nil", err)
	}
}
