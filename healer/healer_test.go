package healer

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tilestream/tilestream/internal/dynalite"
	"github.com/tilestream/tilestream/oracle"
	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/state/dynamo"
	"github.com/tilestream/tilestream/tiling"
)

// fixedArchive reports a fixed archive watermark, as an ingest that archived
// everything it consumed would.
type fixedArchive struct{ e int64 }

func (a *fixedArchive) SyncArchive(context.Context, string) (int64, error) { return a.e, nil }

// world is one view's online store, offline log and the events fed to them,
// playing the ingest's part: every Kafka event goes to the offline log, and
// to stream records unless the test drops it from the stream.
type world struct {
	t       testing.TB
	v       *tiling.View
	store   *state.Store
	offline *state.OfflineLog
	h       *Healer
	arch    *fixedArchive
	now     int64
	offsets map[int32]int64
	events  []oracle.Event // what the oracle counts
	seen    map[[2]int64]bool
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newWorld(t *testing.T, v *tiling.View, lateness int64) *world {
	return newWorldOn(t, "pebble", v, lateness)
}

// eachStore runs a test on Pebble and on DynamoDB (dynalite).
func eachStore(t *testing.T, fn func(t *testing.T, kind string)) {
	for _, kind := range []string{"pebble", "dynamodb"} {
		t.Run(kind, func(t *testing.T) { fn(t, kind) })
	}
}

var dynTables atomic.Int64

// openStore opens an empty online store of a kind.
func openStore(t *testing.T, kind string) *state.Store {
	t.Helper()
	var store *state.Store
	var err error
	switch kind {
	case "pebble":
		store, err = state.Open(state.Config{Path: t.TempDir()}, quiet())
	case "dynamodb":
		srv := dynalite.Shared(t)
		cfg := state.DynamoConfig{CreateTable: true, Table: dynamo.DefaultConfig()}
		cfg.Table.Table = fmt.Sprintf("healer-%d", dynTables.Add(1))
		cfg.Table.Endpoint, cfg.Table.Region = srv.Endpoint, "us-east-1"
		store, err = state.OpenDynamo(context.Background(), cfg, quiet())
	default:
		t.Fatalf("store kind %q", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

func newWorldOn(t *testing.T, kind string, v *tiling.View, lateness int64) *world {
	t.Helper()
	return worldOn(t, openStore(t, kind), v, lateness)
}

// worldOn builds a world on store.
func worldOn(t testing.TB, store *state.Store, v *tiling.View, lateness int64) *world {
	t.Helper()
	if _, err := store.CheckLayout(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	off, err := state.OpenOfflineLog(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, v: v, store: store, offline: off, arch: &fixedArchive{}, offsets: map[int32]int64{}, seen: map[[2]int64]bool{}}
	cfg := DefaultConfig()
	cfg.Grace = time.Millisecond
	h, err := New(cfg, []ViewConfig{{View: v, Lateness: lateness, HealEvery: tiling.Day}}, store, off, w.arch, NewMetrics(prometheus.NewRegistry()), quiet())
	if err != nil {
		t.Fatal(err)
	}
	h.now = func() time.Time { return time.UnixMilli(w.now) }
	w.h = h
	return w
}

func testView(t testing.TB, g int64, windows []int64, lifetimeStart int64) *tiling.View {
	t.Helper()
	var fs []tiling.Feature
	for i, w := range windows {
		fs = append(fs,
			tiling.Feature{Name: fmt.Sprintf("sum_%d", i), Function: tiling.Sum, Column: "amount", Window: w},
			tiling.Feature{Name: fmt.Sprintf("count_%d", i), Function: tiling.Count, Window: w},
			tiling.Feature{Name: fmt.Sprintf("min_%d", i), Function: tiling.Min, Column: "amount", Window: w},
			tiling.Feature{Name: fmt.Sprintf("mean_%d", i), Function: tiling.Mean, Column: "amount", Window: w},
			tiling.Feature{Name: fmt.Sprintf("last_%d", i), Function: tiling.Last, Column: "merchant", Window: w},
		)
	}
	v, err := tiling.NewView(tiling.View{Name: "txn", Topic: "transactions", Entity: "user_id", Timestamp: "ts",
		Granularity: g, LifetimeStart: lifetimeStart, Features: fs})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// event makes one event of key at ts with a random amount and merchant.
func (w *world) event(r *rand.Rand, key string, ts int64, partition int32) (tiling.Event, oracle.Event) {
	off := w.offsets[partition]
	w.offsets[partition] = off + 1
	amount := float64(r.IntN(200000)-50000) / 100
	merchant := fmt.Sprintf("m%d", r.IntN(7))
	raw, _ := json.Marshal(merchant)
	cols := w.v.Columns()
	in := make([]tiling.Input, len(cols))
	fields := map[string]any{}
	for i, c := range cols {
		switch c {
		case "amount":
			if r.IntN(10) == 0 {
				continue // missing
			}
			in[i] = tiling.Input{Kind: tiling.Number, Num: amount}
			fields["amount"] = amount
		case "merchant":
			in[i] = tiling.Input{Kind: tiling.Other, Raw: raw}
			fields["merchant"] = merchant
		}
	}
	pos := tiling.Pos{Partition: partition, Offset: off}
	return tiling.Event{Key: key, TS: ts, Pos: pos, Inputs: in},
		oracle.Event{Key: key, TS: ts, Partition: partition, Offset: off, Fields: fields}
}

// consume feeds Kafka events: archived (one file set per partition), and
// applied to stream records unless dropped says otherwise. Events before a
// key's batch watermark are not applied, as the ingest does.
func (w *world) consume(evs []tiling.Event, oes []oracle.Event, dropped func(i int) bool) {
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
	// Units as the ingest keeps them (state.StreamLayout): per record span,
	// or per tile and partition, each written on the version it was read at.
	lay := w.store.StreamLayout()
	type unit struct {
		key   string
		start int64
		part  int32
	}
	recs := map[unit]*tiling.Record{}
	vers := map[unit]int64{}
	heads := map[string]int64{}
	for i := range evs {
		e := &evs[i]
		if oes != nil {
			w.events = append(w.events, oes[i])
		}
		if dropped != nil && dropped(i) {
			continue
		}
		wb, known := heads[e.Key]
		if !known {
			h, ok, err := w.store.Head(w.v, e.Key)
			if err != nil {
				w.t.Fatal(err)
			}
			wb = tiling.MinTime
			if ok {
				wb = h.Watermark
			}
			heads[e.Key] = wb
		}
		if e.TS < wb {
			continue // deferred to the next heal
		}
		var err error
		id := unit{e.Key, lay.UnitStart(w.v, e.TS), -1}
		if lay.PerPartition {
			id.part = e.Pos.Partition
		}
		r := recs[id]
		if r == nil {
			var ver int64
			if r, ver, err = w.store.LoadRecord(w.v, e.Key, id.start, id.part); err != nil {
				w.t.Fatal(err)
			}
			if r == nil {
				r = w.v.NewRecord(e.TS)
			}
			recs[id], vers[id] = r, ver
		}
		w.v.Add(r, e)
	}
	b := w.store.NewBatch()
	for id, r := range recs {
		b.PutRecordIf(w.v, id.key, id.start, id.part, r, vers[id])
	}
	if err := w.store.Commit(b); err != nil {
		w.t.Fatal(err)
	}
}

// dropJSONL adds a user file of events (corrections, history) to a date.
func (w *world) dropJSONL(name string, date int64, lines []map[string]any) {
	w.t.Helper()
	dir := filepath.Join(w.offline.Root(), w.v.Name, "date="+time.UnixMilli(date).UTC().Format("2006-01-02"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		w.t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		w.t.Fatal(err)
	}
	enc := json.NewEncoder(f)
	for i, l := range lines {
		enc.Encode(l)
		fields := map[string]any{}
		for k, v := range l {
			if k != "user_id" && k != "ts" {
				fields[k] = v
			}
		}
		w.events = append(w.events, oracle.Event{Key: l["user_id"].(string), TS: int64(l["ts"].(float64)),
			Partition: userPartition(name), Offset: int64(i), Fields: fields})
	}
	f.Close()
}

// userPartition mirrors the offline log's synthetic partition of user files.
func userPartition(name string) int32 {
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h ^= uint32(name[i])
		h *= 16777619
	}
	return -1 - int32(h&0x3fffffff)
}

func oracleView(v *tiling.View) oracle.View {
	ov := oracle.View{Granularity: v.Granularity, LifetimeStart: v.LifetimeStart}
	for _, f := range v.Features {
		ov.Features = append(ov.Features, oracle.Feature{Name: f.Name, Function: string(f.Function), Column: f.Column, Window: f.Window})
	}
	return ov
}

// served evaluates key at t from the store, in the oracle's shape.
func (w *world) served(key string, t int64) (map[string]any, int) {
	w.t.Helper()
	kd, err := w.store.ReadKey(context.Background(), w.v, key, t)
	if err != nil {
		w.t.Fatal(err)
	}
	vals := w.v.EvaluateBatch(t, kd.Batch, kd.Records)
	out := map[string]any{}
	for i, f := range w.v.Features {
		switch x := vals[i].(type) {
		case uint64:
			out[f.Name] = float64(x)
		case json.RawMessage:
			var a any
			if err := json.Unmarshal(x, &a); err != nil {
				w.t.Fatal(err)
			}
			out[f.Name] = a
		default:
			out[f.Name] = x
		}
	}
	return out, kd.RecordsRead
}

// check compares every key with the oracle at the given times (a spread
// of ten of them on DynamoDB: dynalite is slow, and Pebble checks them all).
func (w *world) check(stage string, times []int64) {
	w.t.Helper()
	if w.store.Table() != nil && len(times) > 10 {
		var some []int64
		for i := range 10 {
			some = append(some, times[i*len(times)/10])
		}
		times = some
	}
	byKey := map[string][]oracle.Event{}
	for _, e := range w.events {
		byKey[e.Key] = append(byKey[e.Key], e)
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, at := range times {
		for _, key := range keys {
			want := oracle.Values(oracleView(w.v), byKey[key], at)
			got, _ := w.served(key, at)
			if !reflect.DeepEqual(got, want) {
				for name := range want {
					if !reflect.DeepEqual(got[name], want[name]) {
						w.t.Errorf("%s: key %s at %s: %s = %v, oracle %v", stage, key, time.UnixMilli(at).UTC().Format(time.RFC3339Nano), name, got[name], want[name])
					}
				}
				w.t.FailNow()
			}
		}
	}
}

// queryTimes are times from wb on: the watermark itself, tile boundaries and
// a millisecond around them, window tails falling on day and block edges.
func queryTimes(v *tiling.View, wb, until int64, r *rand.Rand) []int64 {
	g := v.Granularity
	ts := []int64{wb, wb + 1, wb + g - 1, wb + g, until}
	for _, f := range v.Features {
		if f.Window == 0 {
			continue
		}
		for _, edge := range []int64{tiling.AlignDown(wb-f.Window, tiling.Day) + tiling.Day, tiling.AlignDown(wb-f.Window, tiling.Hour) + tiling.Hour} {
			t := edge + f.Window
			for _, d := range []int64{-1, 0, 1, g} {
				if t+d >= wb && t+d <= until {
					ts = append(ts, t+d)
				}
			}
		}
	}
	for i := 0; i < 5; i++ {
		ts = append(ts, wb+r.Int64N(until-wb+1))
	}
	return ts
}

func TestHealExactAgainstOracle(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		for _, tc := range []struct {
			name    string
			g       int64
			windows []int64
			life    int64
		}{
			{"minute tiles, hour to week windows and lifetime", tiling.Minute, []int64{tiling.Hour, tiling.Day, 7 * tiling.Day, tiling.Lifetime}, tiling.MinTime},
			{"five-minute tiles, a 3-day window, lifetime from a start", 5 * tiling.Minute, []int64{90 * tiling.Minute, 3 * tiling.Day, tiling.Lifetime}, 0},
			{"hour tiles, a 2-day window", tiling.Hour, []int64{2 * tiling.Day, tiling.Lifetime}, tiling.MinTime},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := rand.New(rand.NewPCG(5, uint64(tc.g)))
				v := testView(t, tc.g, tc.windows, tc.life)
				lateness := 5 * tiling.Minute
				w := newWorldOn(t, kind, v, lateness)
				// Summaries in chunks of 2 keys: the heals read, compute and
				// write the 7 keys' summaries in 4 chunks.
				w.h.summaryChunk = 2
				now := time.Date(2026, 3, 10, 13, 37, 12, 345e6, time.UTC).UnixMilli()
				w.now, w.arch.e = now, now
				keys := []string{"a", "b", "c", "d", "e", "f"}
				gen := func(n int, from, to int64) ([]tiling.Event, []oracle.Event) {
					var evs []tiling.Event
					var oes []oracle.Event
					for i := 0; i < n; i++ {
						e, o := w.event(r, keys[r.IntN(len(keys))], from+r.Int64N(to-from), r.Int32N(4))
						evs, oes = append(evs, e), append(oes, o)
					}
					return evs, oes
				}
				// Ten days of history; one event in ten never reached the stream
				// (lost), all are in the offline log.
				// Fewer on DynamoDB: dynalite answers a few thousand calls a second.
				n := 3000
				if kind == "dynamodb" {
					n = 1000
				}
				evs, oes := gen(n, now-10*tiling.Day, now)
				w.consume(evs, oes, func(i int) bool { return i%10 == 0 && evs[i].TS < now-tiling.Day })
				// Corrections that only the offline log has, dated days ago.
				w.dropJSONL("corrections.jsonl", now-3*tiling.Day, []map[string]any{
					{"user_id": "a", "ts": float64(tiling.AlignDown(now-3*tiling.Day, tiling.Day) + 5), "amount": 1000.25, "merchant": "fix"},
					{"user_id": "z", "ts": float64(tiling.AlignDown(now-3*tiling.Day, tiling.Day) + tiling.Hour), "amount": -3.5},
				})

				res, err := w.h.Heal(context.Background(), v.Name, Options{})
				if err != nil {
					t.Fatal(err)
				}
				wb := tiling.AlignDown(now-lateness, tc.g)
				if !res.Installed || res.Watermark.UnixMilli() != wb {
					t.Fatalf("heal: %+v, want installed at %d", res, wb)
				}
				w.check("after the first heal", queryTimes(v, wb, now+tiling.Day+lateness, r))

				// The same heal again changes nothing.
				again, err := w.h.Heal(context.Background(), v.Name, Options{})
				if err != nil || again.Installed {
					t.Fatalf("second heal at the same time: %+v, %v; want nothing installed", again, err)
				}

				// A day later: new events, late ones among them, and a correction
				// to a day already healed; an incremental heal, then a full one.
				now2 := now + tiling.Day + 17*tiling.Minute
				w.now, w.arch.e = now2, now2
				evs2, oes2 := gen(n/2, now-2*tiling.Day, now2)
				w.consume(evs2, oes2, nil)
				w.dropJSONL("late-fix.jsonl", now-6*tiling.Day, []map[string]any{
					{"user_id": "b", "ts": float64(now - 6*tiling.Day), "amount": 0.01, "merchant": "late"},
				})
				if _, err := w.h.Heal(context.Background(), v.Name, Options{}); err != nil {
					t.Fatal(err)
				}
				wb2 := tiling.AlignDown(now2-lateness, tc.g)
				times := queryTimes(v, wb2, now2+tiling.Day, r)
				w.check("after an incremental heal", times)
				before := map[string]map[string]any{}
				for _, k := range keys {
					before[k], _ = w.served(k, now2)
				}
				if _, err := w.h.Heal(context.Background(), v.Name, Options{Full: true}); err != nil {
					t.Fatal(err)
				}
				for _, k := range keys {
					after, _ := w.served(k, now2)
					if !reflect.DeepEqual(after, before[k]) {
						t.Fatalf("key %s: a full heal changed the values of the incremental one:\n%v\n%v", k, before[k], after)
					}
				}
				w.check("after a full heal", times)
				// Garbage collection keeps every value.
				w.now += tiling.Hour
				if err := w.h.collect(v, true); err != nil {
					t.Fatal(err)
				}
				w.check("after garbage collection", times)
			})
		}
	})
}

// TestReadBound: a key with a million events over 30 days at 1-minute tiles
// touches a bounded number of records right after a heal, just before the next
// scheduled heal, and during a 3-day stall, whatever its event count.
func TestReadBound(t *testing.T) {
	n := 1_000_000
	if testing.Short() {
		n = 100_000
	}
	v := testView(t, tiling.Minute, []int64{tiling.Hour, tiling.Day, 7 * tiling.Day, 30 * tiling.Day, tiling.Lifetime}, tiling.MinTime)
	lateness := 5 * tiling.Minute
	w := newWorld(t, v, lateness)
	now := time.Date(2026, 3, 10, 13, 37, 12, 0, time.UTC).UnixMilli()
	w.now, w.arch.e = now, now
	r := rand.New(rand.NewPCG(1, 2))
	// Events over 30 days before now and 3 days after it (the stall).
	span := 33 * tiling.Day
	evs := make([]tiling.Event, 0, n)
	oes := make([]oracle.Event, 0, n)
	for i := 0; i < n; i++ {
		ts := now - 30*tiling.Day + int64(i)*span/int64(n)
		e, o := w.event(r, "hot", ts, int32(i%4))
		evs, oes = append(evs, e), append(oes, o)
	}
	cut := sort.Search(n, func(i int) bool { return evs[i].TS >= now })
	w.consume(evs[:cut], oes[:cut], nil)
	if _, err := w.h.Heal(context.Background(), v.Name, Options{}); err != nil {
		t.Fatal(err)
	}
	w.consume(evs[cut:], oes[cut:], nil)
	staleness := tiling.Day + lateness
	for _, c := range []struct {
		name  string
		at    int64
		bound int
	}{
		{"right after the heal", now, 100},
		{"just before the next scheduled heal", now + staleness - 1, 100},
		{"after a 3-day stall", now + 3*tiling.Day - tiling.Minute, 100 + 3*24},
	} {
		_, read := w.served("hot", c.at)
		t.Logf("%s: %d records", c.name, read)
		if read > c.bound {
			t.Errorf("%s: %d records read, bound %d", c.name, read, c.bound)
		}
	}
	// And the values are exact at those times.
	w.events = oes
	w.check("read bound key", []int64{now})
}

// TestInterruptedHealResumes cancels a full heal (a backfill) after some days
// are written; the next heal resumes it without reading those days again and
// serves the same values as an uninterrupted one.
func TestInterruptedHealResumes(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		v := testView(t, tiling.Minute, []int64{tiling.Hour, 7 * tiling.Day, tiling.Lifetime}, tiling.MinTime)
		w := newWorldOn(t, kind, v, 5*tiling.Minute)
		// On Pebble every day goes into tables: the interrupted heal
		// leaves ingested days and days whose tables were never ingested.
		w.h.cfg.TableRecords = 1
		now := time.Date(2026, 3, 10, 13, 37, 12, 0, time.UTC).UnixMilli()
		w.now, w.arch.e = now, now
		r := rand.New(rand.NewPCG(9, 9))
		var evs []tiling.Event
		var oes []oracle.Event
		n := 4000
		if kind == "dynamodb" {
			n = 1500 // dynalite is slow
		}
		for i := 0; i < n; i++ {
			e, o := w.event(r, fmt.Sprintf("k%d", r.IntN(30)), now-20*tiling.Day+r.Int64N(20*tiling.Day), r.Int32N(3))
			evs, oes = append(evs, e), append(oes, o)
		}
		w.consume(evs, oes, nil)

		ctx, cancel := context.WithCancel(context.Background())
		var seen []Progress
		_, err := w.h.Heal(ctx, v.Name, Options{Full: true, Progress: func(p Progress) {
			seen = append(seen, p)
			if p.Days == 5 {
				cancel()
			}
		}})
		if err == nil {
			t.Fatal("the interrupted heal returned no error")
		}
		if len(seen) != 5 || seen[4].DaysTotal < 20 || seen[4].Events == 0 || seen[4].Bytes == 0 {
			t.Fatalf("progress %+v", seen)
		}
		if _, ok, _ := w.store.Head(v, "k1"); ok {
			t.Fatal("an interrupted heal switched heads")
		}
		res, err := w.h.Heal(context.Background(), v.Name, Options{Full: true})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Installed || res.Events >= int64(len(evs)) {
			t.Fatalf("resumed heal read %d events of %d: it should skip the days written before", res.Events, len(evs))
		}
		w.check("after a resumed heal", []int64{now, now + tiling.Hour})
		if res.Events == 0 || res.Tiles == 0 {
			t.Errorf("resumed heal read %d events into %d tiles: it should build the days left", res.Events, res.Tiles)
		}
	})
}

// TestVerifyFindsTamperedBatchData: the consistency check passes on a healed
// view and names the key and feature when the offline log disagrees.
func TestVerifyFindsTamperedBatchData(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		v := testView(t, tiling.Minute, []int64{tiling.Day, tiling.Lifetime}, tiling.MinTime)
		w := newWorldOn(t, kind, v, 5*tiling.Minute)
		now := time.Date(2026, 3, 10, 13, 37, 12, 0, time.UTC).UnixMilli()
		w.now, w.arch.e = now, now
		r := rand.New(rand.NewPCG(4, 4))
		var evs []tiling.Event
		var oes []oracle.Event
		for i := 0; i < 500; i++ {
			e, o := w.event(r, fmt.Sprintf("k%d", r.IntN(10)), now-3*tiling.Day+r.Int64N(3*tiling.Day), r.Int32N(2))
			evs, oes = append(evs, e), append(oes, o)
		}
		w.consume(evs, oes, nil)
		if _, err := w.h.Heal(context.Background(), v.Name, Options{}); err != nil {
			t.Fatal(err)
		}
		res, err := w.h.Verify(context.Background(), v.Name, 0, w.store)
		if err != nil || res.Keys != 10 || len(res.Mismatches) != 0 {
			t.Fatalf("verify after a heal: %+v, %v", res, err)
		}
		// An event that reaches the offline log after the heal: the served batch
		// no longer matches it until the next heal, and verify says where.
		w.dropJSONL("after.jsonl", now-2*tiling.Day, []map[string]any{
			{"user_id": "k3", "ts": float64(now - 2*tiling.Day), "amount": 7.0},
		})
		res, err = w.h.Verify(context.Background(), v.Name, 0, w.store)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Mismatches) == 0 || res.Mismatches[0].Key != "k3" {
			t.Fatalf("verify missed the difference: %+v", res)
		}
	})
}

// TestLayoutChangeRebuildsFromTheOfflineLog: a view whose granularity and
// windows change is wiped from the online store and rebuilt from the offline
// log — batch records and, from W_b on, stream records whose offsets make the
// ingest's replay skip what they hold — and then equals the oracle.
func TestLayoutChangeRebuildsFromTheOfflineLog(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		old := testView(t, tiling.Minute, []int64{tiling.Hour, tiling.Lifetime}, tiling.MinTime)
		w := newWorldOn(t, kind, old, 5*tiling.Minute)
		now := time.Date(2026, 3, 10, 13, 37, 12, 0, time.UTC).UnixMilli()
		w.now, w.arch.e = now, now
		r := rand.New(rand.NewPCG(3, 3))
		var evs []tiling.Event
		var oes []oracle.Event
		for i := 0; i < 2000; i++ {
			e, o := w.event(r, fmt.Sprintf("k%d", r.IntN(12)), now-5*tiling.Day+r.Int64N(5*tiling.Day), r.Int32N(3))
			evs, oes = append(evs, e), append(oes, o)
		}
		w.consume(evs, oes, nil)
		if _, err := w.store.CheckLayout(context.Background(), old); err != nil {
			t.Fatal(err)
		}
		if _, err := w.h.Heal(context.Background(), old.Name, Options{}); err != nil {
			t.Fatal(err)
		}

		// The new layout: five-minute tiles, other windows, same columns.
		nv := testView(t, 5*tiling.Minute, []int64{2 * tiling.Hour, 3 * tiling.Day, tiling.Lifetime}, tiling.MinTime)
		rebuild, err := w.store.CheckLayout(context.Background(), nv)
		if err != nil || !rebuild {
			t.Fatalf("CheckLayout of a changed view: rebuild %v, %v", rebuild, err)
		}
		if _, ok, _ := w.store.Head(nv, "k1"); ok {
			t.Fatal("the old layout's heads survived the reset")
		}
		cfg := DefaultConfig()
		h2, err := New(cfg, []ViewConfig{{View: nv, Lateness: 5 * tiling.Minute, HealEvery: tiling.Day}}, w.store, w.offline, w.arch, NewMetrics(prometheus.NewRegistry()), quiet())
		if err != nil {
			t.Fatal(err)
		}
		h2.now = w.h.now
		w.v, w.h = nv, h2
		if _, err := h2.Heal(context.Background(), nv.Name, Options{Full: true, Rebuild: true}); err != nil {
			t.Fatal(err)
		}
		if err := w.store.FinishRebuild(nv); err != nil {
			t.Fatal(err)
		}
		if again, err := w.store.CheckLayout(context.Background(), nv); err != nil || again {
			t.Fatalf("after the rebuild: rebuild %v, %v", again, err)
		}
		w.check("after a rebuild for a new layout", []int64{now, now + tiling.Hour})
		// The ingest's replay of the archived events changes nothing: every
		// stream record notes the offsets it holds.
		w.consume(evs, nil, nil)
		w.check("after the ingest replays the archived events", []int64{now, now + tiling.Hour})
	})
}

func TestMain(m *testing.M) {
	code := m.Run()
	dynalite.CloseShared()
	os.Exit(code)
}
