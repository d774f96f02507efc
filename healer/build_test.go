package healer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/tilestream/tilestream/oracle"
	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

// dumpPebble returns every key and value of the closed Pebble store at dir.
func dumpPebble(t *testing.T, dir string) (keys, vals [][]byte) {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{ReadOnly: true, Logger: silentPebble{}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	it, err := db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		keys = append(keys, bytes.Clone(it.Key()))
		vals = append(vals, bytes.Clone(it.Value()))
	}
	return keys, vals
}

type silentPebble struct{}

func (silentPebble) Infof(string, ...any)  {}
func (silentPebble) Errorf(string, ...any) {}
func (silentPebble) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// sameState reports whether two stored healer states are equal but for the
// days' file fingerprints (they cover the files' modification times, which
// differ between two offline logs of the same events).
func sameState(t *testing.T, a, b []byte) bool {
	t.Helper()
	var sa, sb viewState
	if err := json.Unmarshal(a, &sa); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &sb); err != nil {
		t.Fatal(err)
	}
	for _, st := range []*viewState{&sa, &sb} {
		for d, ds := range st.Days {
			ds.FP = 0
			st.Days[d] = ds
		}
	}
	return reflect.DeepEqual(sa, sb)
}

// TestParallelBuildsWriteTheSameStore: a heal that builds its days on
// several goroutines and writes them as Pebble tables leaves a store byte
// for byte identical to one built on one goroutine and written in batches — records, summaries, heads and the healer's state — and
// serves the oracle's values; so does an incremental heal after it.
func TestParallelBuildsWriteTheSameStore(t *testing.T) {
	v := testView(t, tiling.Minute, []int64{tiling.Hour, tiling.Day, 7 * tiling.Day, tiling.Lifetime}, tiling.MinTime)
	lateness := 5 * tiling.Minute
	now := time.Date(2026, 3, 10, 13, 37, 12, 345e6, time.UTC).UnixMilli()
	type run struct {
		w   *world
		dir string
	}
	var runs []run
	// One goroutine writing batches; three goroutines writing every day and
	// the summaries as Pebble tables.
	for _, cfg := range []struct{ workers, tables int }{{1, -1}, {3, 1}} {
		dir := t.TempDir()
		store, err := state.Open(state.Config{Path: dir}, quiet())
		if err != nil {
			t.Fatal(err)
		}
		w := worldOn(t, store, v, lateness)
		w.h.cfg.Workers, w.h.cfg.TableRecords = cfg.workers, cfg.tables
		if cfg.workers > 1 {
			// Every key's states in an arena of its own (the other world:
			// only keys of more than ownArena events in a day).
			w.h.ownArena = 0
		}
		w.now, w.arch.e = now, now
		runs = append(runs, run{w, dir})
	}
	// The same events in both worlds: 40 keys over 12 days (several dense
	// ones, so blocks of one tile and of many both occur), four partitions.
	r := rand.New(rand.NewPCG(11, 12))
	var evs []tiling.Event
	var oes []oracle.Event
	for i := range 6000 {
		key := fmt.Sprintf("k%02d", r.IntN(40))
		if i%3 == 0 {
			key = fmt.Sprintf("hot%d", r.IntN(3))
		}
		e, o := runs[0].w.event(r, key, now-12*tiling.Day+r.Int64N(12*tiling.Day), r.Int32N(4))
		evs, oes = append(evs, e), append(oes, o)
	}
	for _, rn := range runs {
		rn.w.consume(evs, oes, nil)
	}
	var results []Result
	for _, rn := range runs {
		res, err := rn.w.h.Heal(context.Background(), v.Name, Options{Full: true})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Installed || res.DaysHealed < 12 {
			t.Fatalf("heal: %+v", res)
		}
		res.Seconds = 0
		results = append(results, res)
	}
	if results[0] != results[1] {
		t.Fatalf("results differ:\none goroutine %+v\nthree %+v", results[0], results[1])
	}
	wb := tiling.AlignDown(now-lateness, v.Granularity)
	runs[1].w.check("after a parallel full heal", queryTimes(v, wb, now+tiling.Day, r))

	// A day later, an incremental heal of new and late events.
	now2 := now + tiling.Day + 3*tiling.Minute
	var evs2 []tiling.Event
	var oes2 []oracle.Event
	for range 1500 {
		e, o := runs[0].w.event(r, fmt.Sprintf("k%02d", r.IntN(50)), now-3*tiling.Day+r.Int64N(4*tiling.Day), r.Int32N(4))
		evs2, oes2 = append(evs2, e), append(oes2, o)
	}
	for _, rn := range runs {
		rn.w.now, rn.w.arch.e = now2, now2
		rn.w.consume(evs2, oes2, nil)
		if _, err := rn.w.h.Heal(context.Background(), v.Name, Options{}); err != nil {
			t.Fatal(err)
		}
	}
	runs[1].w.check("after a parallel incremental heal", queryTimes(v, tiling.AlignDown(now2-lateness, v.Granularity), now2+tiling.Day, r))

	var dumps [2][2][][]byte
	for i, rn := range runs {
		if err := rn.w.store.Close(); err != nil {
			t.Fatal(err)
		}
		dumps[i][0], dumps[i][1] = dumpPebble(t, rn.dir)
	}
	k1, v1 := dumps[0][0], dumps[0][1]
	k3, v3 := dumps[1][0], dumps[1][1]
	if len(k1) < 1000 {
		t.Fatalf("only %d entries in the store", len(k1))
	}
	if len(k1) != len(k3) {
		t.Fatalf("%d entries with one goroutine, %d with three", len(k1), len(k3))
	}
	for i := range k1 {
		if bytes.Equal(k1[i], k3[i]) && bytes.HasPrefix(k1[i], []byte{8}) && bytes.HasSuffix(k1[i], []byte(v.Name)) {
			// The healer's state.
			if !sameState(t, v1[i], v3[i]) {
				t.Fatalf("healer states differ:\none goroutine %s\nthree %s", v1[i], v3[i])
			}
			continue
		}
		if !bytes.Equal(k1[i], k3[i]) || !bytes.Equal(v1[i], v3[i]) {
			t.Fatalf("entry %d differs:\none goroutine %q = %x\nthree %q = %x", i, k1[i], v1[i], k3[i], v3[i])
		}
	}
}

// TestBuildDaysStopsEarly: a heal whose context ends while days are being
// built returns the context's error and leaves no build goroutine running
// (stop waits for them), however many days were left.
func TestBuildDaysStopsEarly(t *testing.T) {
	h := &Healer{cfg: Config{Workers: 2}}
	spans := make([]int64, 50)
	for i := range spans {
		spans[i] = int64(i)
	}
	ctx, cancel := context.WithCancel(context.Background())
	built := make(chan int64, len(spans))
	next, stop := h.buildDays(ctx, spans, func(s int64, stopped *atomic.Bool) *builtDay {
		built <- s
		return &builtDay{keys: []string{fmt.Sprint(s)}}
	})
	taken := 0
	for i := range 3 {
		taken++
		b, err := next()
		if err != nil || b.keys[0] != fmt.Sprint(i) {
			t.Fatalf("day %d: %v, %v", i, b, err)
		}
	}
	cancel()
	// Days already built may still be taken; then the context's error.
	var err error
	for err == nil {
		if _, err = next(); err == nil {
			taken++
		}
	}
	if err != context.Canceled {
		t.Fatalf("after cancel: %v", err)
	}
	stop()
	close(built)
	n := 0
	for range built {
		n++
	}
	// Each worker may hold one day beyond the workers+1 slots.
	if n > taken+3+2 {
		t.Fatalf("%d days built for %d taken: the lookahead is not bounded", n, taken)
	}
}
