package healer

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tilestream/tilestream/oracle"
	"github.com/tilestream/tilestream/state/dynamo"
	"github.com/tilestream/tilestream/tiling"
)

// TestRunCollectsOldIncarnations: on DynamoDB, the healer's run loop
// deletes the items of the view's incarnation that a change of features left
// behind, once the grace period after the change has passed by its clock,
// and not before; every feature kept is served as before.
func TestRunCollectsOldIncarnations(t *testing.T) {
	windows := []int64{tiling.Hour, tiling.Lifetime}
	old := testView(t, tiling.Minute, windows, tiling.MinTime)
	w := newWorldOn(t, "dynamodb", old, 5*tiling.Minute)
	now := time.Date(2026, 3, 10, 13, 37, 12, 0, time.UTC).UnixMilli()
	w.now, w.arch.e = now, now
	r := rand.New(rand.NewPCG(5, 9))
	var evs []tiling.Event
	var oes []oracle.Event
	for range 600 {
		e, o := w.event(r, fmt.Sprintf("k%d", r.IntN(7)), now-2*tiling.Day+r.Int64N(2*tiling.Day), r.Int32N(3))
		evs, oes = append(evs, e), append(oes, o)
	}
	w.consume(evs, oes, nil)
	if _, err := w.h.Heal(context.Background(), old.Name, Options{}); err != nil {
		t.Fatal(err)
	}
	oldInc, err := w.store.Incarnation(old.Name)
	if err != nil {
		t.Fatal(err)
	}
	var fs []tiling.Feature
	for _, f := range old.Features {
		if f.Function != tiling.Count {
			fs = append(fs, f)
		}
	}
	fs = append(fs, tiling.Feature{Name: "max_0", Function: tiling.Max, Column: "amount", Window: tiling.Hour})
	nv, err := tiling.NewView(tiling.View{Name: old.Name, Topic: old.Topic, Entity: old.Entity, Timestamp: old.Timestamp,
		Granularity: old.Granularity, LifetimeStart: old.LifetimeStart, Features: fs})
	if err != nil {
		t.Fatal(err)
	}
	st, err := w.store.CheckLayoutStatus(context.Background(), nv)
	if err != nil || st.Rebuild {
		t.Fatalf("CheckLayoutStatus: %+v, %v", st, err)
	}
	missing := nv.AggFeatures(st.Pending)
	w.v = nv

	// The items of the old incarnation, spelled out as docs/format.md
	// gives their keys: kind · str(view) · u32be(inc).
	oldItems := func() int {
		t.Helper()
		n := 0
		err := w.store.Table().ScanPrefixes(context.Background(), nil, nil, 0, func(items []*dynamo.Item, _ *dynamo.Key) error {
			for _, it := range items {
				for _, kind := range []byte{1, 2, 3, 4} {
					p := binary.BigEndian.AppendUint32(append([]byte{kind, byte(len(old.Name))}, old.Name...), oldInc)
					if bytes.HasPrefix(it.PK, p) {
						n++
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := oldItems()
	if before == 0 {
		t.Fatal("no item of the old incarnation")
	}
	run := func(clock time.Time, until func() bool) {
		t.Helper()
		cfg := DefaultConfig()
		cfg.Grace = 20 * time.Millisecond
		h, err := New(cfg, []ViewConfig{{View: nv, Lateness: 5 * tiling.Minute, HealEvery: tiling.Day}},
			w.store, w.offline, w.arch, NewMetrics(prometheus.NewRegistry()), quiet())
		if err != nil {
			t.Fatal(err)
		}
		h.now = func() time.Time { return clock }
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- h.Run(ctx) }()
		deadline := time.Now().Add(30 * time.Second)
		for !until() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	// The grace period has not passed: the loop runs a while, deleting
	// nothing.
	start := time.Now()
	run(time.Now(), func() bool { return time.Since(start) > 300*time.Millisecond })
	if n := oldItems(); n != before {
		t.Fatalf("%d of %d items of the old incarnation left before the grace period", n, before)
	}
	w.checkKept("before the collection", []int64{w.now, w.now + tiling.Hour}, missing)
	// An hour later.
	run(time.Now().Add(time.Hour), func() bool { return oldItems() == 0 })
	if n := oldItems(); n != 0 {
		t.Fatalf("%d of %d items of the old incarnation left after the grace period", n, before)
	}
	if inc, err := w.store.Incarnation(nv.Name); err != nil || inc == oldInc {
		t.Fatalf("incarnation %08x after the collection (%v)", inc, err)
	}
	w.checkKept("after the collection", []int64{w.now, w.now + tiling.Hour}, missing)
}
