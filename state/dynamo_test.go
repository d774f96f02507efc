package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tilestream/tilestream/internal/dynalite"
	"github.com/tilestream/tilestream/state/dynamo"
	"github.com/tilestream/tilestream/tiling"
)

func TestMain(m *testing.M) {
	code := m.Run()
	dynalite.CloseShared()
	os.Exit(code)
}

var dynTables atomic.Int64

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// dynTable returns the config of a fresh table on the shared dynalite.
func dynTable(t *testing.T) DynamoConfig {
	t.Helper()
	srv := dynalite.Shared(t)
	name := fmt.Sprintf("s%d-%s", dynTables.Add(1), strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")))
	if len(name) > 200 {
		name = name[:200]
	}
	cfg := DynamoConfig{CreateTable: true}
	cfg.Table = dynamo.DefaultConfig()
	cfg.Table.Table, cfg.Table.Endpoint, cfg.Table.Region = name, srv.Endpoint, "us-east-1"
	return cfg
}

func openDyn(t *testing.T, cfg DynamoConfig) *Store {
	t.Helper()
	s, err := OpenDynamo(context.Background(), cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func lastView(t *testing.T) *tiling.View {
	t.Helper()
	v, err := tiling.NewView(tiling.View{Name: "v", Topic: "t", Entity: "k", Timestamp: "ts", Granularity: tiling.Minute,
		Features: []tiling.Feature{
			{Name: "n", Function: tiling.Count, Window: tiling.Hour},
			{Name: "sum", Function: tiling.Sum, Column: "x", Window: tiling.Day},
			{Name: "last", Function: tiling.Last, Column: "s", Window: 7 * tiling.Day},
		}})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// ev is one event of key at ts from partition p at offset o, with amount x
// and a string s of size bytes.
func ev(v *tiling.View, key string, ts int64, p int32, o int64, x float64, size int) tiling.Event {
	raw, _ := json.Marshal(strings.Repeat("s", size) + fmt.Sprint(o))
	in := make([]tiling.Input, len(v.Columns()))
	for i, c := range v.Columns() {
		switch c {
		case "x":
			in[i] = tiling.Input{Kind: tiling.Number, Num: x}
		case "s":
			in[i] = tiling.Input{Kind: tiling.Other, Raw: raw}
		}
	}
	return tiling.Event{Key: key, TS: ts, Pos: tiling.Pos{Partition: p, Offset: o}, Inputs: in}
}

func TestDynamoStreamTilesAreWrittenOnTheVersionRead(t *testing.T) {
	s := openDyn(t, dynTable(t))
	v := lastView(t)
	if _, err := s.CheckLayout(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	lay := s.StreamLayout()
	if !lay.PerTile || !lay.PerPartition {
		t.Fatalf("layout %+v, want per tile and partition", lay)
	}
	now := time.Now().UnixMilli()
	tile := lay.UnitStart(v, now)
	r, ver, err := s.LoadRecord(v, "k1", tile, 3)
	if err != nil || r != nil || ver != -1 {
		t.Fatalf("load of an absent unit: %v %d %v", r, ver, err)
	}
	// Two writers start from the absent unit; the second loses.
	a, b := v.NewRecord(now), v.NewRecord(now)
	e1, e2 := ev(v, "k1", now, 3, 10, 1.5, 3), ev(v, "k1", now, 3, 11, 2.5, 3)
	v.Add(a, &e1)
	v.Add(b, &e1)
	v.Add(b, &e2)
	wb := s.NewBatch()
	wb.PutRecordIf(v, "k1", tile, 3, a, -1)
	wb.SetProgress("t", 3, Progress{Next: 11, MaxEventTime: now})
	if err := s.Commit(wb); err != nil {
		t.Fatal(err)
	}
	wb = s.NewBatch()
	wb.PutRecordIf(v, "k1", tile, 3, b, -1)
	wb.SetProgress("t", 3, Progress{Next: 12, MaxEventTime: now})
	err = s.Commit(wb)
	var we *WriteError
	if !errors.As(err, &we) || len(we.Records) != 1 || !we.Records[0].Conflict || we.Records[0].CurrentVersion != 10 {
		t.Fatalf("second writer from the absent unit: %v %+v", err, we)
	}
	if cur := we.Records[0].Current; cur == nil || !cur.Applied(e1.Pos) || cur.Applied(e2.Pos) {
		t.Fatalf("conflict's current unit %+v, want the first writer's", cur)
	}
	if prog, err := s.Progress("t"); err != nil || prog[3].Next != 11 {
		t.Fatalf("progress after a conflicting flush: %+v %v (the batch's progress must not be written)", prog, err)
	}
	// Rebased on the stored version, it goes through.
	wb = s.NewBatch()
	wb.PutRecordIf(v, "k1", tile, 3, b, 10)
	wb.SetProgress("t", 3, Progress{Next: 12, MaxEventTime: now})
	if err := s.Commit(wb); err != nil {
		t.Fatal(err)
	}
	r, ver, err = s.LoadRecord(v, "k1", tile, 3)
	if err != nil || ver != 11 || !r.Applied(e2.Pos) {
		t.Fatalf("load after the rebased write: %v %d %v", r, ver, err)
	}
	// Progress never moves back (a zombie's late write).
	wb = s.NewBatch()
	wb.SetProgress("t", 3, Progress{Next: 5, MaxEventTime: now - 1000})
	if err := s.Commit(wb); err != nil {
		t.Fatal(err)
	}
	if prog, _ := s.Progress("t"); prog[3].Next != 12 {
		t.Fatalf("progress moved back to %+v", prog[3])
	}
}

// TestDynamoReadMergesPartitionsLikePebble writes the same events to a
// Pebble store (one record per span, partitions merged) and to DynamoDB
// (one unit per tile and partition) and compares what reads evaluate.
func TestDynamoReadMergesPartitionsLikePebble(t *testing.T) {
	d := openDyn(t, dynTable(t))
	p, err := Open(Config{Path: t.TempDir()}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	v := lastView(t)
	for _, s := range []*Store{d, p} {
		if _, err := s.CheckLayout(context.Background(), v); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UnixMilli()
	var evs []tiling.Event
	for i := range 400 {
		ts := now - int64(i%50)*7*tiling.Minute - int64(i)*1000
		evs = append(evs, ev(v, fmt.Sprintf("k%d", i%3), ts, int32(i%4), int64(i), float64(i)/4, 5))
	}
	for _, s := range []*Store{d, p} {
		lay := s.StreamLayout()
		type id struct {
			key   string
			start int64
			part  int32
		}
		recs := map[id]*tiling.Record{}
		for i := range evs {
			e := &evs[i]
			k := id{e.Key, lay.UnitStart(v, e.TS), -1}
			if lay.PerPartition {
				k.part = e.Pos.Partition
			}
			if recs[k] == nil {
				recs[k] = v.NewRecord(e.TS)
			}
			v.Add(recs[k], e)
		}
		b := s.NewBatch()
		for k, r := range recs {
			b.PutRecordIf(v, k.key, k.start, k.part, r, -1)
		}
		if err := s.Commit(b); err != nil {
			t.Fatal(err)
		}
	}
	for _, key := range []string{"k0", "k1", "k2", "none"} {
		for _, at := range []int64{now, now - 3*tiling.Hour, now + tiling.Minute} {
			kd, err := d.ReadKey(context.Background(), v, key, at)
			if err != nil {
				t.Fatal(err)
			}
			kp, err := p.ReadKey(context.Background(), v, key, at)
			if err != nil {
				t.Fatal(err)
			}
			got, want := v.EvaluateBatch(at, kd.Batch, kd.Records), v.EvaluateBatch(at, kp.Batch, kp.Records)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s at %d: DynamoDB %v, Pebble %v", key, at, got, want)
			}
		}
	}
}

// bigDay builds, for one key and day, detail records and a day record whose
// encodings exceed an item (last values of 9 KB in every tile of an hour).
func bigDay(t *testing.T, v *tiling.View, key string, day int64) ([]*tiling.Record, *tiling.Record, []tiling.State) {
	t.Helper()
	det := &tiling.Record{Start: day}
	for i := range 60 {
		e := ev(v, key, day+int64(i)*tiling.Minute, 0, int64(i), 1, 9000)
		v.Aggregate(det, &e)
	}
	up := v.Rollup(det, v.Span())
	dayRec := &tiling.Record{Start: day, Tiles: up, Only: []int64{tiling.MinTime}}
	total := v.NewStates()
	for i := range up {
		tiling.MergeStates(total, up[i].States)
	}
	return []*tiling.Record{det}, dayRec, total
}

func TestDynamoGenerationRecordsOverTheItemLimit(t *testing.T) {
	ctx := context.Background()
	s := openDyn(t, dynTable(t))
	v := lastView(t)
	if _, err := s.CheckLayout(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	day := tiling.AlignDown(time.Now().UnixMilli()-3*tiling.Day, tiling.Day)
	dets, dayRec, total := bigDay(t, v, "big", day)
	if n := len(v.AppendDetailRecord(nil, dets[0])); n <= dynamo.MaxItemBytes {
		t.Fatalf("detail record of %d bytes: the test needs one over the item limit", n)
	}
	const gen = 4
	wb := s.NewBatch()
	wb.PutDetail(v, gen, day, "big", dets[0])
	wb.PutDayRecord(v, gen, day, "big", dayRec)
	wm := day + tiling.Day
	sum := &tiling.Summary{Watermark: wm, FirstDay: day, Days: []tiling.SummaryDay{{Start: day, Gen: gen, Total: total}}}
	wb.PutSummary(v, gen, "big", sum)
	if err := s.Commit(wb); err != nil {
		t.Fatal(err)
	}
	hb := s.NewBatch()
	hb.PutHead(v, "big", Head{Watermark: wm, Gen: gen})
	if err := s.Commit(hb); err != nil {
		t.Fatal(err)
	}
	// Read back through every path.
	got, err := s.DayRecord(v, gen, day, "big")
	if err != nil || got == nil || len(got.Tiles) != len(dayRec.Tiles) {
		t.Fatalf("day record: %v %v", got, err)
	}
	from := day + 17*tiling.Minute
	st, err := s.DetailSuffix(v, gen, day, "big", day, from)
	if err != nil || st == nil {
		t.Fatalf("detail suffix: %v %v", st, err)
	}
	keys := 0
	if err := s.ScanSummaries(v, gen, func(key string, got *tiling.Summary) error {
		keys++
		if key != "big" || got.Watermark != wm {
			t.Errorf("scanned summary %q %+v", key, got)
		}
		return nil
	}); err != nil || keys != 1 {
		t.Fatalf("scan summaries: %d keys, %v", keys, err)
	}
	days := 0
	if err := s.ScanDayRecords(v, gen, day, func(key string, r *tiling.Record) error { days++; return nil }); err != nil || days != 1 {
		t.Fatalf("scan day records: %d, %v", days, err)
	}
	// A read whose 1h window starts inside the big block.
	at := day + 17*tiling.Minute + tiling.Hour
	kd, err := s.ReadKey(ctx, v, "big", at)
	if err != nil {
		t.Fatal(err)
	}
	if kd.BatchWatermark != wm || kd.Batch == nil {
		t.Fatalf("read: watermark %d, batch %v", kd.BatchWatermark, kd.Batch)
	}
	vals := v.EvaluateBatch(at, kd.Batch, kd.Records)
	if n := vals[0].(uint64); n != 60-17 {
		t.Errorf("count over the last hour = %d, want %d", n, 60-17)
	}
	// Garbage collection removes every item, chunks included.
	gb := s.NewBatch()
	gb.DeleteDay(v.Name, gen, day)
	gb.DeleteSummaries(v.Name, gen)
	if err := s.Commit(gb); err != nil {
		t.Fatal(err)
	}
	left := 0
	inc, _ := s.dyn.incarnation(v.Name)
	if err := s.dyn.t.QueryPrefix(ctx, keyPK(v.Name, inc, "big"), nil, func(it *dynamo.Item) error {
		if it.SK[0] != dskHead {
			left++
		}
		return nil
	}); err != nil || left != 0 {
		t.Fatalf("%d items left after collecting the generation (%v)", left, err)
	}
	if err := s.ScanSummaries(v, gen, func(string, *tiling.Summary) error { keys++; return nil }); err != nil || keys != 1 {
		t.Fatalf("summaries listed after deletion: %d, %v", keys-1, err)
	}
}

func TestDynamoLayoutChangeMovesToANewIncarnation(t *testing.T) {
	cfg := dynTable(t)
	s := openDyn(t, cfg)
	v := lastView(t)
	if rb, err := s.CheckLayout(context.Background(), v); err != nil || rb {
		t.Fatalf("first check: %v %v", rb, err)
	}
	now := time.Now().UnixMilli()
	r := v.NewRecord(now)
	e := ev(v, "k", now, 0, 1, 1, 1)
	v.Add(r, &e)
	b := s.NewBatch()
	b.PutRecordIf(v, "k", v.Granularity*(now/v.Granularity), 0, r, -1)
	if err := s.Commit(b); err != nil {
		t.Fatal(err)
	}
	if rb, err := s.CheckLayout(context.Background(), v); err != nil || rb {
		t.Fatalf("same layout: %v %v", rb, err)
	}
	v2, err := tiling.NewView(tiling.View{Name: "v", Topic: "t", Entity: "k", Timestamp: "ts", Granularity: 5 * tiling.Minute,
		Features: []tiling.Feature{{Name: "n", Function: tiling.Count, Window: tiling.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	// Another instance (a fresh store on the same table) sees the change.
	s2 := openDyn(t, cfg)
	if rb, err := s2.CheckLayout(context.Background(), v2); err != nil || !rb {
		t.Fatalf("new layout: rebuild %v, %v", rb, err)
	}
	kd, err := s2.ReadKey(context.Background(), v2, "k", now)
	if err != nil || len(kd.Records) != 0 {
		t.Fatalf("the old layout's tiles are visible under the new one: %v %v", kd.Records, err)
	}
	if rb, err := s2.CheckLayout(context.Background(), v2); err != nil || !rb {
		t.Fatalf("interrupted rebuild: %v %v", rb, err)
	}
	if err := s2.FinishRebuild(v2); err != nil {
		t.Fatal(err)
	}
	if rb, err := s2.CheckLayout(context.Background(), v2); err != nil || rb {
		t.Fatalf("after the rebuild: %v %v", rb, err)
	}
}

func TestDynamoLeaseAndStateVersions(t *testing.T) {
	s := openDyn(t, dynTable(t))
	v := lastView(t)
	if _, err := s.CheckLayout(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := s.AcquireLease("v", "a", now, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.AcquireLease("v", "b", now, time.Minute); !errors.Is(err, ErrLeaseHeld) || !strings.Contains(err.Error(), "a until") {
		t.Fatalf("second owner: %v", err)
	}
	if err := s.AcquireLease("v", "a", now.Add(time.Second), time.Minute); err != nil {
		t.Fatalf("renewal: %v", err)
	}
	if err := s.AcquireLease("v", "b", now.Add(2*time.Minute), time.Minute); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if err := s.ReleaseLease("v", "a"); err != nil {
		t.Fatalf("release by a former holder: %v", err)
	}
	if err := s.AcquireLease("v", "a", now.Add(2*time.Minute), time.Minute); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("a former holder's release freed b's lease: %v", err)
	}
	if err := s.ReleaseLease("v", "b"); err != nil {
		t.Fatal(err)
	}
	if err := s.AcquireLease("v", "a", now.Add(2*time.Minute), time.Minute); err != nil {
		t.Fatalf("after release: %v", err)
	}

	// The healer's state: written on the version read, chunked when long.
	val, ver, err := s.Meta("v")
	if err != nil || val != nil || ver != 0 {
		t.Fatalf("no state: %q %d %v", val, ver, err)
	}
	put := func(val []byte, ver int64) error {
		b := s.NewBatch()
		b.PutMeta("v", val, ver)
		return s.Commit(b)
	}
	if err := put([]byte(`{"gen":1}`), 0); err != nil {
		t.Fatal(err)
	}
	if err := put([]byte(`{"gen":2}`), 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("a second first write: %v", err)
	}
	big := bytes.Repeat([]byte("x"), 900_000)
	if err := put(big, 1); err != nil {
		t.Fatal(err)
	}
	if val, ver, err := s.Meta("v"); err != nil || ver != 2 || !bytes.Equal(val, big) {
		t.Fatalf("long state: %d bytes, version %d, %v", len(val), ver, err)
	}
	if err := put([]byte(`{}`), 1); !errors.Is(err, ErrConflict) {
		t.Fatalf("a write on a stale version: %v", err)
	}
	if err := put([]byte(`{"gen":3}`), 2); err != nil {
		t.Fatal(err)
	}
	if val, ver, _ := s.Meta("v"); ver != 3 || string(val) != `{"gen":3}` {
		t.Fatalf("state %q version %d", val, ver)
	}
}

func TestDynamoArchiveProgressAndIntentsShareAnItem(t *testing.T) {
	s := openDyn(t, dynTable(t))
	b := s.NewBatch()
	b.PutIntent("v", 2, ArchiveIntent{First: 5, Last: 9, Paths: []string{"a", "b"}})
	if err := s.Commit(b); err != nil {
		t.Fatal(err)
	}
	in, err := s.Intents("v")
	if err != nil || len(in) != 1 || in[2].Last != 9 {
		t.Fatalf("intents %+v %v", in, err)
	}
	b = s.NewBatch()
	b.SetArchiveProgress("v", 2, Progress{Next: 10, MaxEventTime: 77})
	b.DeleteIntent("v", 2)
	if err := s.Commit(b); err != nil {
		t.Fatal(err)
	}
	in, _ = s.Intents("v")
	pr, err := s.ArchiveProgress("v")
	if len(in) != 0 || err != nil || pr[2] != (Progress{Next: 10, MaxEventTime: 77}) {
		t.Fatalf("after the roll: intents %+v, progress %+v, %v", in, pr, err)
	}
}

func TestDynamoCacheServesSnapshotsWithinTheirStaleness(t *testing.T) {
	ctx := context.Background()
	cfg := dynTable(t)
	cfg.CachePath = filepath.Join(t.TempDir(), "cache")
	cfg.Staleness = time.Minute
	cached := openDyn(t, cfg)
	// The cache's clock, which the test holds still and then moves past
	// the bound instead of sleeping: on a loaded machine the other
	// instance's write alone may outlast a short bound, and the snapshot
	// would be stale before the read that must find it fresh.
	var held atomic.Int64 // unix ms; 0: the wall clock
	cached.dyn.cache.now = func() time.Time {
		if ms := held.Load(); ms != 0 {
			return time.UnixMilli(ms)
		}
		return time.Now()
	}
	direct := openDyn(t, DynamoConfig{Table: cfg.Table})
	v := lastView(t)
	for _, s := range []*Store{cached, direct} {
		if _, err := s.CheckLayout(context.Background(), v); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UnixMilli()
	tile := tiling.AlignDown(now, v.Granularity)
	write := func(s *Store, o int64, prev int64) {
		t.Helper()
		r, _, err := s.LoadRecord(v, "k", tile, 0)
		if err != nil {
			t.Fatal(err)
		}
		if r == nil {
			r = v.NewRecord(now)
		}
		e := ev(v, "k", now, 0, o, 1, 1)
		v.Add(r, &e)
		b := s.NewBatch()
		b.PutRecordIf(v, "k", tile, 0, r, prev)
		if err := s.Commit(b); err != nil {
			t.Fatal(err)
		}
	}
	count := func(s *Store) uint64 {
		t.Helper()
		kd, err := s.ReadKey(ctx, v, "k", now)
		if err != nil {
			t.Fatal(err)
		}
		return v.EvaluateBatch(now, kd.Batch, kd.Records)[0].(uint64)
	}
	write(cached, 1, -1)
	if n := count(cached); n != 1 {
		t.Fatalf("count %d, want 1", n)
	}
	// The snapshot was fetched (its query started) before now: held at
	// now, the clock keeps it younger than the bound.
	fetched := time.Now().UnixMilli()
	held.Store(fetched)
	reads := cached.Table().Metrics().Stats.ReadReqs.Load()
	// Another instance writes: the cached snapshot serves the old value
	// until it is older than the bound, then the new one.
	write(direct, 2, 1)
	if n := count(cached); n != 1 {
		t.Fatalf("count %d within the staleness bound, want the cached 1", n)
	}
	if r := cached.Table().Metrics().Stats.ReadReqs.Load(); r != reads {
		t.Fatalf("a fresh snapshot read DynamoDB (%d reads)", r-reads)
	}
	held.Store(fetched + cfg.Staleness.Milliseconds() + 1)
	if n := count(cached); n != 2 {
		t.Fatalf("count %d past the staleness bound, want 2", n)
	}
	held.Store(0)
	// Its own writes show at once (write-through), and its stale copy of a
	// unit only makes its write fail and reload.
	write(cached, 3, 2)
	if n := count(cached); n != 3 {
		t.Fatalf("count %d after its own write, want 3", n)
	}
	if err := cached.Close(); err != nil {
		t.Fatal(err)
	}

	// A corrupted cache directory is rebuilt.
	entries, _ := os.ReadDir(cfg.CachePath)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".sst") || strings.HasPrefix(e.Name(), "MANIFEST") {
			os.WriteFile(filepath.Join(cfg.CachePath, e.Name()), []byte("garbage"), 0o644)
		}
	}
	again := openDyn(t, cfg)
	if _, err := again.CheckLayout(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	if n := count(again); n != 3 {
		t.Fatalf("count %d from a rebuilt cache, want 3", n)
	}
}

func TestDynamoTTLStampsStreamTilesOnly(t *testing.T) {
	cfg := dynTable(t)
	cfg.TTL = 30 * 24 * time.Hour
	s := openDyn(t, cfg)
	v := lastView(t)
	if _, err := s.CheckLayout(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	tile := tiling.AlignDown(now, v.Granularity)
	r := v.NewRecord(now)
	e := ev(v, "k", now, 0, 1, 1, 1)
	v.Add(r, &e)
	b := s.NewBatch()
	b.PutRecordIf(v, "k", tile, 0, r, -1)
	b.PutHead(v, "k", Head{Watermark: tile, Gen: 1})
	if err := s.Commit(b); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	inc, _ := s.dyn.incarnation(v.Name)
	pk := keyPK(v.Name, inc, "k")
	it, err := s.dyn.t.Get(ctx, pk, streamSK(tile, 0))
	if err != nil || it == nil {
		t.Fatalf("stream tile: %v %v", it, err)
	}
	exp, ok := it.N(dynamo.TTLAttribute)
	if want := time.Now().Add(cfg.TTL).Unix(); !ok || exp < want-60 || exp > want+60 {
		t.Errorf("stream tile ttl %d (%v), want about %d", exp, ok, want)
	}
	head, err := s.dyn.t.Get(ctx, pk, headSK)
	if err != nil || head == nil {
		t.Fatalf("head: %v %v", head, err)
	}
	if _, ok := head.N(dynamo.TTLAttribute); ok {
		t.Error("the head has a ttl: it must never expire")
	}
}
