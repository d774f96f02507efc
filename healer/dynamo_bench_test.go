package healer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tilestream/tilestream/internal/dynalite"
	"github.com/tilestream/tilestream/oracle"
	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/state/dynamo"
	"github.com/tilestream/tilestream/tiling"
)

// BenchmarkDynamoRead measures a served read of one key on DynamoDB
// (dynalite on loopback): 200 keys with 8 days of events at minute tiles, a
// heal 20 minutes ago and stream tiles since, read at a time whose 1h, 1d
// and 7d windows start inside a day (so the day and detail records are
// needed too). Directly from DynamoDB (no local cache), and through the
// local cache (staleness 2s: after the first read of a key, its snapshot
// and generation records are local). It reports p50 and p99 latency,
// DynamoDB requests per read and the items they return.
//
//	go test -tags pebblegozstd -run '^$' -bench BenchmarkDynamoRead -benchtime 2000x ./healer
func BenchmarkDynamoRead(b *testing.B) {
	for _, cached := range []bool{false, true} {
		name := "direct"
		if cached {
			name = "through the cache"
		}
		b.Run(name, func(b *testing.B) {
			v := testView(b, tiling.Minute, []int64{tiling.Hour, tiling.Day, 7 * tiling.Day, tiling.Lifetime}, tiling.MinTime)
			w, keys, at := readWorld(b, v, cached)
			st := &w.store.Table().Metrics().Stats
			// Warm: one read of every key (fills the cache when there is one).
			for _, k := range keys {
				if _, err := w.store.ReadKey(context.Background(), v, k, at); err != nil {
					b.Fatal(err)
				}
			}
			lat := make([]time.Duration, 0, b.N)
			r0, i0 := st.ReadReqs.Load(), st.ItemsRead.Load()
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				if _, err := w.store.ReadKey(context.Background(), v, keys[i%len(keys)], at); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(st.ReadReqs.Load()-r0)/float64(b.N), "requests/read")
			b.ReportMetric(float64(st.ItemsRead.Load()-i0)/float64(b.N), "items/read")
		})
	}
}

// readWorld builds the benchmark's table: keys, events, a heal, and
// events after it.
func readWorld(b *testing.B, v *tiling.View, cached bool) (*world, []string, int64) {
	b.Helper()
	srv := dynalite.Shared(b)
	cfg := state.DynamoConfig{CreateTable: true, Table: dynamo.DefaultConfig(), Staleness: 2 * time.Second}
	cfg.Table.Table = fmt.Sprintf("bench-read-%d", dynTables.Add(1))
	cfg.Table.Endpoint, cfg.Table.Region = srv.Endpoint, "us-east-1"
	if cached {
		cfg.CachePath = filepath.Join(b.TempDir(), "cache")
	}
	store, err := state.OpenDynamo(context.Background(), cfg, quiet())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	w := worldOn(b, store, v, 5*tiling.Minute)
	now := time.Date(2026, 3, 10, 13, 37, 12, 0, time.UTC).UnixMilli()
	w.now, w.arch.e = now, now
	r := rand.New(rand.NewPCG(7, 7))
	keys := make([]string, 200)
	for i := range keys {
		keys[i] = fmt.Sprintf("user-%04d", i)
	}
	var evs []tiling.Event
	var oes []oracle.Event
	n := 20_000
	if testing.Short() {
		n = 1000 // make bench-smoke: that it runs, not its figures
	}
	for range n {
		e, o := w.event(r, keys[r.IntN(len(keys))], now-8*tiling.Day+r.Int64N(8*tiling.Day), r.Int32N(4))
		evs, oes = append(evs, e), append(oes, o)
	}
	w.consume(evs, oes, nil)
	if _, err := w.h.Heal(context.Background(), v.Name, Options{}); err != nil {
		b.Fatal(err)
	}
	// 20 minutes later: stream tiles since the heal.
	w.now += 20 * tiling.Minute
	evs, oes = nil, nil
	for range n / 10 {
		e, o := w.event(r, keys[r.IntN(len(keys))], now+r.Int64N(20*tiling.Minute), r.Int32N(4))
		evs, oes = append(evs, e), append(oes, o)
	}
	w.consume(evs, oes, nil)
	return w, keys, w.now + 17_345
}

// TestDynamoReadItemsStayBounded counts the DynamoDB items a read of a dense
// key touches (events every minute on three partitions): right after a
// daily heal, just before the next one, and after 12 hours' stall without
// a heal. Stream tiles the partitions' consumers have moved past are rolled
// up into one segment item per (key, hour), so the count follows the hours
// since the batch watermark, not the events or tiles. Values are checked
// against the oracle at each stage.
func TestDynamoReadItemsStayBounded(t *testing.T) {
	v := testView(t, tiling.Minute, []int64{tiling.Hour, tiling.Day, 30 * tiling.Day}, tiling.MinTime)
	srv := dynalite.Shared(t)
	cfg := state.DynamoConfig{CreateTable: true, Table: dynamo.DefaultConfig(), RollupShare: 1} // every roll-up when due, whatever the load
	cfg.Table.Table = fmt.Sprintf("healer-items-%d", dynTables.Add(1))
	cfg.Table.Endpoint, cfg.Table.Region = srv.Endpoint, "us-east-1"
	store, err := state.OpenDynamo(context.Background(), cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	w := worldOn(t, store, v, 5*tiling.Minute)
	st := &w.store.Table().Metrics().Stats
	r := rand.New(rand.NewPCG(3, 3))
	const parts, flushEvery = 3, 30 * tiling.Minute
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	tiles := 0
	// run feeds events every minute on every partition up to until, one
	// flush (consume) per flushEvery, as the ingest would; before
	// streamFrom only to the offline log (the first heal reads them there,
	// and collects stream items below its watermark).
	streamFrom := start + tiling.Day - 2*tiling.Hour
	run := func(until int64) {
		for w.now < until {
			var evs []tiling.Event
			var oes []oracle.Event
			for m := w.now; m < w.now+flushEvery; m += tiling.Minute {
				for p := range int32(parts) {
					e, o := w.event(r, "dense", m+r.Int64N(tiling.Minute), p)
					evs, oes = append(evs, e), append(oes, o)
					tiles++
				}
			}
			consumeBatched(w, evs, oes, w.now >= streamFrom)
			w.now += flushEvery
			w.arch.e = w.now
		}
	}
	items := func(at int64) int {
		t.Helper()
		n0 := st.ItemsRead.Load()
		kd, err := w.store.ReadKey(context.Background(), v, "dense", at)
		if err != nil {
			t.Fatal(err)
		}
		n := int(st.ItemsRead.Load() - n0)
		t.Logf("read at %s: %d items (%d records), %d (tile, partition) pairs with events so far",
			time.UnixMilli(at).UTC().Format(time.RFC3339), n, kd.RecordsRead, tiles)
		return n
	}
	heal := func() {
		t.Helper()
		if _, err := w.h.Heal(context.Background(), v.Name, Options{}); err != nil {
			t.Fatal(err)
		}
		if err := w.h.collect(v, true); err != nil {
			t.Fatal(err)
		}
	}
	w.now, w.arch.e = start, start
	run(start + tiling.Day)
	heal()
	afterHeal := items(w.now)
	run(start + 2*tiling.Day)
	beforeNext := items(w.now - 1)
	w.check("before the next heal", []int64{w.now - 1, w.now - 6*tiling.Hour - 1, start + tiling.Day})
	for stage, n := range map[string]int{"right after the heal": afterHeal, "just before the next heal": beforeNext} {
		if n > 100 {
			t.Errorf("%s: a read touches %d items, want at most 100", stage, n)
		}
	}
	// Half a day's stall: no heal. About one more item per hour.
	run(start + 2*tiling.Day + 12*tiling.Hour)
	stalled := items(w.now - 1)
	if grew := stalled - beforeNext; grew > 12+parts {
		t.Errorf("12 hours without a heal added %d items to a read (%d → %d), want about one an hour", grew, beforeNext, stalled)
	}
	w.check("after a stall", []int64{w.now - 1, w.now - tiling.Day - 1})
	heal()
	if n := items(w.now); n > 100 {
		t.Errorf("after the delayed heal: a read touches %d items, want at most 100", n)
	}
	w.check("after the delayed heal", []int64{w.now, w.now + tiling.Minute - 1})
}

// consumeBatched is world.consume as the ingest does it on DynamoDB: the
// units a flush needs loaded in batch reads (state.Store.LoadRecords), then
// one commit (only archived when stream is false). None of the events is
// before the key's batch watermark (they are newer than any heal's).
func consumeBatched(w *world, evs []tiling.Event, oes []oracle.Event, stream bool) {
	w.t.Helper()
	byPart := map[int32][]state.ArchiveRow{}
	for i := range evs {
		byPart[evs[i].Pos.Partition] = append(byPart[evs[i].Pos.Partition], state.ArchiveRow{Event: evs[i]})
	}
	for p, rows := range byPart {
		first, last := rows[0].Event.Pos.Offset, rows[len(rows)-1].Event.Pos.Offset
		if _, err := w.offline.WriteArchive(w.v, "", p, first, last, rows); err != nil {
			w.t.Fatal(err)
		}
	}
	w.events = append(w.events, oes...)
	if !stream {
		return
	}
	lay := w.store.StreamLayout()
	var ids []state.UnitID
	seen := map[state.UnitID]bool{}
	for i := range evs {
		id := state.UnitID{Key: evs[i].Key, Start: lay.UnitStart(w.v, evs[i].TS), Part: evs[i].Pos.Partition}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	got, err := w.store.LoadRecords(w.v, ids)
	if err != nil {
		w.t.Fatal(err)
	}
	recs := map[state.UnitID]*tiling.Record{}
	for i := range evs {
		e := &evs[i]
		id := state.UnitID{Key: e.Key, Start: lay.UnitStart(w.v, e.TS), Part: e.Pos.Partition}
		if recs[id] == nil {
			recs[id] = got[id].Rec
			if recs[id] == nil {
				recs[id] = w.v.NewRecord(e.TS)
			}
		}
		w.v.Add(recs[id], e)
	}
	b := w.store.NewBatch()
	for _, id := range ids {
		b.PutRecordIf(w.v, id.Key, id.Start, id.Part, recs[id], got[id].Ver)
	}
	if err := w.store.Commit(b); err != nil {
		w.t.Fatal(err)
	}
}
