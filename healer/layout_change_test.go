package healer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tilestream/tilestream/oracle"
	"github.com/tilestream/tilestream/tiling"
)

// checkKept compares every key with the oracle at the given times, skipping
// the features named in skip (served as missing).
func (w *world) checkKept(stage string, times []int64, skip []string) {
	w.t.Helper()
	byKey := map[string][]oracle.Event{}
	for _, e := range w.events {
		byKey[e.Key] = append(byKey[e.Key], e)
	}
	for _, at := range times {
		for key, evs := range byKey {
			want := oracle.Values(oracleView(w.v), evs, at)
			got, _ := w.served(key, at)
			for name := range want {
				if slices.Contains(skip, name) {
					continue
				}
				if !reflect.DeepEqual(got[name], want[name]) {
					w.t.Fatalf("%s: key %s at %s: %s = %v, oracle %v", stage, key, time.UnixMilli(at).UTC().Format(time.RFC3339Nano), name, got[name], want[name])
				}
			}
		}
	}
}

// TestFeatureChangeKeepsTheOtherFeatures: a view that drops its counts and
// adds maxima over the same tiles keeps serving every other feature exactly,
// from its translated records, before and after more events; the maxima are
// missing until a heal of the new layout installs at or past the horizon,
// and then every feature equals the oracle.
func TestFeatureChangeKeepsTheOtherFeatures(t *testing.T) {
	windows := []int64{tiling.Hour, tiling.Lifetime}
	old := testView(t, tiling.Minute, windows, tiling.MinTime)
	w := newWorld(t, old, 5*tiling.Minute)
	now := time.Date(2026, 3, 10, 13, 37, 12, 0, time.UTC).UnixMilli()
	w.now, w.arch.e = now, now
	r := rand.New(rand.NewPCG(11, 4))
	batch := func(n int, from, to int64) {
		var evs []tiling.Event
		var oes []oracle.Event
		for range n {
			e, o := w.event(r, fmt.Sprintf("k%d", r.IntN(9)), from+r.Int64N(to-from), r.Int32N(3))
			evs, oes = append(evs, e), append(oes, o)
		}
		w.consume(evs, oes, nil)
	}
	batch(1500, now-4*tiling.Day, now)
	if _, err := w.h.Heal(context.Background(), old.Name, Options{}); err != nil {
		t.Fatal(err)
	}
	w.now += 40 * tiling.Minute
	batch(300, now, w.now) // stream records since W_b
	lastEvent := w.now
	w.check("before the change", []int64{w.now})

	var fs []tiling.Feature
	for _, f := range old.Features {
		if f.Function != tiling.Count {
			fs = append(fs, f)
		}
	}
	for i, win := range windows {
		fs = append(fs, tiling.Feature{Name: fmt.Sprintf("max_%d", i), Function: tiling.Max, Column: "amount", Window: win})
	}
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
	if !slices.Equal(missing, []string{"max_0", "max_1"}) {
		t.Fatalf("missing features %v", missing)
	}
	if st.Horizon <= lastEvent-tiling.Minute || st.Horizon > lastEvent+tiling.Minute {
		t.Fatalf("horizon %d, last event %d", st.Horizon, lastEvent)
	}

	h2, err := New(DefaultConfig(), []ViewConfig{{View: nv, Lateness: 5 * tiling.Minute, HealEvery: tiling.Day}},
		w.store, w.offline, w.arch, NewMetrics(prometheus.NewRegistry()), quiet())
	if err != nil {
		t.Fatal(err)
	}
	h2.now = w.h.now
	w.v, w.h = nv, h2
	times := []int64{w.now, w.now - 3*tiling.Minute, w.now + tiling.Hour}
	w.checkKept("right after the change", times, missing)
	// What the missing features would show: the maxima the translated
	// records hold empty.
	if got, _ := w.served("k0", w.now); got["max_1"] != nil {
		t.Fatalf("max_1 of k0 right after the change: %v, want the empty state's null", got["max_1"])
	}

	// The ingest goes on with the new layout.
	w.now += 20 * tiling.Minute
	w.arch.e = w.now
	batch(200, lastEvent-5*tiling.Minute, w.now)
	w.checkKept("after more events", []int64{w.now, w.now + 30*tiling.Minute}, missing)

	// A heal short of the horizon (now − lateness before it) rebuilds the
	// batch side but the stream records before the horizon still lack the
	// maxima of the events they held.
	w.now = st.Horizon + 2*tiling.Minute
	w.arch.e = w.now
	if _, err := h2.Heal(context.Background(), nv.Name, Options{}); err != nil {
		t.Fatal(err)
	}
	if p, err := w.store.SettlePending(nv); err != nil || len(p) != 1 {
		t.Fatalf("after a heal short of the horizon: pending %v, %v", p, err)
	}
	w.checkKept("after a heal short of the horizon", []int64{w.now}, missing)

	w.now = st.Horizon + 10*tiling.Minute
	w.arch.e = w.now
	if _, err := h2.Heal(context.Background(), nv.Name, Options{}); err != nil {
		t.Fatal(err)
	}
	if p, err := w.store.SettlePending(nv); err != nil || len(p) != 0 {
		t.Fatalf("after a heal past the horizon: pending %v, %v", p, err)
	}
	w.check("every feature after the heal past the horizon", []int64{w.now, w.now + tiling.Hour, w.now + 3*tiling.Day})
}
