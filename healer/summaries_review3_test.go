package healer

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tilestream/tilestream/oracle"
	"github.com/tilestream/tilestream/tiling"
)

// summaryFaults fails the failAt-th call (1-based) to Summaries, after
// handing fn the chunk's first summary: a read cut in the middle of a
// chunk. It counts the keys it was asked for.
type summaryFaults struct {
	Store
	calls, failAt, keys int
}

func (f *summaryFaults) Summaries(v *tiling.View, gen uint64, keys []string, fn func(i int, s *tiling.Summary) error) error {
	f.calls++
	f.keys += len(keys)
	if f.calls != f.failAt {
		return f.Store.Summaries(v, gen, keys, fn)
	}
	first := true
	if err := f.Store.Summaries(v, gen, keys, func(i int, s *tiling.Summary) error {
		if !first {
			return errInjected
		}
		first = false
		return fn(i, s)
	}); err != nil {
		return err
	}
	return errInjected
}

// TestChunkedSummariesSurviveAFailedRead: an incremental heal reads the
// previous generation's summaries a chunk of 2 keys at a time (d50f210),
// over keys of several lengths (the store orders them by length first,
// DynamoDB lists them in byte order), some only in the previous
// generation, some only in the new data, some in both. A read failing in
// the middle of a chunk fails the heal before any head moves; the heal
// then resumes and installs every key once, each with its own previous
// summary: the oracle's values, for keys whose data is all in days the
// second heal did not recompute too; and a third heal, reading the
// resumed one's summaries, agrees.
func TestChunkedSummariesSurviveAFailedRead(t *testing.T) {
	for _, kind := range []string{"pebble-batches", "pebble-tables", "dynamodb"} {
		t.Run(kind, func(t *testing.T) {
			v := testView(t, tiling.Minute, []int64{tiling.Hour, 7 * tiling.Day, tiling.Lifetime}, tiling.MinTime)
			store := "pebble"
			if kind == "dynamodb" {
				store = kind
			}
			w := newWorldOn(t, store, v, 5*tiling.Minute)
			w.h.cfg.TableRecords = -1
			if kind == "pebble-tables" {
				w.h.cfg.TableRecords = 1
			}
			w.h.summaryChunk = 2
			now := time.Date(2026, 3, 10, 13, 37, 12, 0, time.UTC).UnixMilli()
			w.now, w.arch.e = now, now
			r := rand.New(rand.NewPCG(31, 32))
			feed := func(keys []string, from, to int64, n int) {
				var evs []tiling.Event
				var oes []oracle.Event
				for i := range n {
					e, o := w.event(r, keys[i%len(keys)], from+r.Int64N(to-from), r.Int32N(2))
					evs, oes = append(evs, e), append(oes, o)
				}
				w.consume(evs, oes, nil)
			}
			// KeyLess order: b z aa bb k1 zz9 ccc k22 k333; byte order
			// differs (aa b bb ccc k1 ...).
			oldOnly := []string{"b", "aa", "ccc", "zz9"}
			both := []string{"k1", "k22"}
			newOnly := []string{"z", "bb", "k333"}
			feed(append(append([]string{}, oldOnly...), both...), now-10*tiling.Day, now-2*tiling.Day, 300)
			res, err := w.h.Heal(context.Background(), v.Name, Options{})
			if err != nil || !res.Installed || res.Keys != len(oldOnly)+len(both) {
				t.Fatalf("first heal: %+v, %v", res, err)
			}
			wb1 := res.Watermark.UnixMilli()

			// A day later: new data for the new keys and the shared ones,
			// all after the first heal's watermark.
			w.now += tiling.Day
			w.arch.e = w.now
			feed(append(append([]string{}, both...), newOnly...), wb1, w.now-tiling.Hour, 200)
			faults := &summaryFaults{Store: w.h.store, failAt: 3}
			w.h.store = faults
			if _, err := w.h.Heal(context.Background(), v.Name, Options{}); !errors.Is(err, errInjected) {
				t.Fatalf("heal with a failed summary read: %v, want the injected fault", err)
			}
			for _, k := range append(append([]string{}, oldOnly...), both...) {
				h, ok, err := w.store.Head(v, k)
				if err != nil || !ok || h.Watermark != wb1 {
					t.Fatalf("head of %s after the failed heal: %+v %v %v; want the first heal's", k, h, ok, err)
				}
			}
			for _, k := range newOnly {
				if _, ok, err := w.store.Head(v, k); err != nil || ok {
					t.Fatalf("head of new key %s after the failed heal: %v %v; want none", k, ok, err)
				}
			}
			faults.failAt, faults.calls, faults.keys = 0, 0, 0
			all := len(oldOnly) + len(both) + len(newOnly)
			res, err = w.h.Heal(context.Background(), v.Name, Options{})
			if err != nil || !res.Installed || res.Keys != all {
				t.Fatalf("resumed heal: %+v, %v; want %d keys installed", res, err, all)
			}
			if faults.calls != (all+1)/2 || faults.keys != all {
				t.Errorf("resumed heal read summaries in %d calls for %d keys; want %d chunks of at most 2, every key once", faults.calls, faults.keys, (all+1)/2)
			}
			wb2 := res.Watermark.UnixMilli()
			times := append(queryTimes(v, wb2, w.now+8*tiling.Day, r), wb1+7*tiling.Day)
			w.check("after the resumed heal", times)

			// The next heal reads the resumed heal's summaries.
			w.now += tiling.Hour
			w.arch.e = w.now
			feed(both, w.now-30*tiling.Minute, w.now-10*tiling.Minute, 20)
			res, err = w.h.Heal(context.Background(), v.Name, Options{})
			if err != nil || !res.Installed || res.Keys != all {
				t.Fatalf("third heal: %+v, %v; want %d keys installed", res, err, all)
			}
			w.check("after the third heal", queryTimes(v, res.Watermark.UnixMilli(), w.now+8*tiling.Day, r))
		})
	}
}
