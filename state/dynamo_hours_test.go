package state

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/tilestream/tilestream/state/dynamo"
	"github.com/tilestream/tilestream/tiling"
)

type unitID struct {
	key  string
	tile int64
	part int32
}

// writer applies events to stream units and writes them as the ingest does
// (on the version read; a conflict reloads the unit and applies the events
// again on top of it).
type writer struct {
	t     *testing.T
	s     *Store
	v     *tiling.View
	recs  map[unitID]*tiling.Record
	vers  map[unitID]int64
	since map[unitID][]tiling.Event
	dirty []unitID
}

func newWriter(t *testing.T, s *Store, v *tiling.View) *writer {
	return &writer{t: t, s: s, v: v, recs: map[unitID]*tiling.Record{}, vers: map[unitID]int64{}, since: map[unitID][]tiling.Event{}}
}

func (w *writer) apply(e tiling.Event) {
	w.t.Helper()
	id := unitID{e.Key, tiling.AlignDown(e.TS, w.v.Granularity), e.Pos.Partition}
	if w.recs[id] == nil {
		r, ver, err := w.s.LoadRecord(w.v, e.Key, id.tile, id.part)
		if err != nil {
			w.t.Fatal(err)
		}
		if r == nil {
			r = w.v.NewRecord(e.TS)
		}
		w.recs[id], w.vers[id] = r, ver
	}
	if !w.v.Add(w.recs[id], &e) {
		return
	}
	if len(w.since[id]) == 0 {
		w.dirty = append(w.dirty, id)
	}
	w.since[id] = append(w.since[id], e)
}

func (w *writer) flush() {
	w.t.Helper()
	for range 5 {
		if len(w.dirty) == 0 {
			return
		}
		b := w.s.NewBatch()
		for _, id := range w.dirty {
			b.PutRecordIf(w.v, id.key, id.tile, id.part, w.recs[id], w.vers[id])
		}
		err := w.s.Commit(b)
		var we *WriteError
		switch {
		case err == nil:
			for _, id := range w.dirty {
				w.clean(id)
			}
			w.dirty = nil
			return
		case !errors.As(err, &we) || we.Err != nil:
			w.t.Fatal(err)
		}
		var still []unitID
		for i, id := range w.dirty {
			rw := we.Records[i]
			switch {
			case rw.Written:
				w.clean(id)
			case rw.Conflict:
				cur := rw.Current
				if cur == nil {
					cur = &tiling.Record{Start: w.recs[id].Start}
				}
				w.recs[id], w.vers[id] = cur, rw.CurrentVersion
				var kept []tiling.Event
				for _, e := range w.since[id] {
					if w.v.Add(cur, &e) {
						kept = append(kept, e)
					}
				}
				w.since[id] = kept
				if len(kept) > 0 {
					still = append(still, id)
				}
			}
		}
		w.dirty = still
	}
	w.t.Fatal("units kept conflicting")
}

func (w *writer) clean(id unitID) {
	w.since[id] = nil
	w.vers[id] = -1
	for _, o := range w.recs[id].Offsets {
		if o.Partition == id.part {
			w.vers[id] = o.Offset
		}
	}
}

// streamItems counts a key's stream items: tile items and segments.
func streamItems(t *testing.T, s *Store, v *tiling.View, key string) (tiles, segs int) {
	t.Helper()
	pk, err := s.dyn.keyPK(v.Name, key)
	if err != nil {
		t.Fatal(err)
	}
	err = s.dyn.t.QueryPrefix(context.Background(), pk, []byte{dskStream}, func(it *dynamo.Item) error {
		switch {
		case isHourSK(it.SK):
			segs++
		case len(it.SK) == streamSKLen:
			tiles++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tiles, segs
}

// TestDynamoRollupKeepsReadsExact rolls a key's stream tiles of three
// partitions up into hour segments as they are written, then writes to
// rolled-up units as a writer holding the rolled-up version would, as one
// further behind would, as a replay would, and to an item a crashed
// roll-up absorbed without deleting it: every read equals Pebble's, fed
// the same events.
func TestDynamoRollupKeepsReadsExact(t *testing.T) {
	ctx := context.Background()
	cfg := dynTable(t)
	cfg.CachePath = filepath.Join(t.TempDir(), "cache")
	cfg.Staleness = time.Hour // only write-through keeps the snapshot right
	cfg.RollupShare = 1       // every roll-up as soon as due, whatever the load
	a := openDyn(t, cfg)
	b := openDyn(t, DynamoConfig{Table: cfg.Table, RollupShare: 1}) // another instance, no cache
	p, err := Open(Config{Path: t.TempDir()}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	v := lastView(t)
	for _, s := range []*Store{a, b, p} {
		if _, err := s.CheckLayout(context.Background(), v); err != nil {
			t.Fatal(err)
		}
	}
	hour := tiling.AlignDown(time.Now().UnixMilli(), tiling.Hour) - 2*tiling.Hour
	var all []tiling.Event
	feedPebble := func(evs ...tiling.Event) {
		all = append(all, evs...)
		recs := map[int64]*tiling.Record{}
		for i := range all {
			e := &all[i]
			st := v.RecordStart(e.TS)
			if recs[st] == nil {
				recs[st] = v.NewRecord(e.TS)
			}
			v.Add(recs[st], e)
		}
		pb := p.NewBatch()
		for _, r := range recs {
			pb.PutRecord(v, "k", r)
		}
		if err := p.Commit(pb); err != nil {
			t.Fatal(err)
		}
	}
	// same compares reads of the stores with Pebble's (a's cached snapshot
	// is right only while it alone writes: its staleness is an hour).
	same := func(stage string, stores ...*Store) {
		t.Helper()
		for _, s := range stores {
			for _, at := range []int64{hour + 2*tiling.Hour - 1, hour + 90*tiling.Minute, hour + 20*tiling.Minute + 1} {
				kd, err := s.ReadKey(ctx, v, "k", at)
				if err != nil {
					t.Fatal(err)
				}
				kp, err := p.ReadKey(ctx, v, "k", at)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := v.EvaluateBatch(at, kd.Batch, kd.Records), v.EvaluateBatch(at, kp.Batch, kp.Records); !reflect.DeepEqual(got, want) {
					t.Fatalf("%s: read at %d: DynamoDB %v, Pebble %v", stage, at, got, want)
				}
			}
		}
	}
	offsets := map[int32]int64{}
	next := func(ts int64, part int32) tiling.Event {
		offsets[part]++
		return ev(v, "k", ts, part, offsets[part], float64(offsets[part]%7), 3)
	}
	wa := newWriter(t, a, v)
	// Two hours of minute tiles on three partitions, a flush a minute.
	var firstTile []tiling.Event
	var zombieRec *tiling.Record
	var zombieVer int64
	for m := range int64(120) {
		var evs []tiling.Event
		for part := range int32(3) {
			for j := range int64(2) {
				evs = append(evs, next(hour+m*tiling.Minute+j*1000, part))
			}
		}
		for _, e := range evs {
			wa.apply(e)
		}
		wa.flush()
		feedPebble(evs...)
		if m == 0 {
			firstTile = evs
			id := unitID{"k", hour, 0}
			zombieRec, _, err = b.LoadRecord(v, "k", hour, 0)
			if err != nil || zombieRec == nil {
				t.Fatalf("load of a written unit: %v %v", zombieRec, err)
			}
			zombieVer = wa.vers[id]
		}
	}
	tiles, segs := streamItems(t, a, v, "k")
	if segs != 2 || tiles > 3*(rollupBacklog+1) {
		t.Fatalf("after 360 tile writes: %d tile items, %d segments; want 2 segments and at most %d tiles", tiles, segs, 3*(rollupBacklog+1))
	}
	same("rolled up", a, b)

	// A replay from before the roll-up loads the slot, and skips what it
	// holds.
	r, ver, err := b.LoadRecord(v, "k", hour, 0)
	if err != nil || ver != -1 || r == nil || !r.Applied(firstTile[1].Pos) || len(r.Tiles) != 1 {
		t.Fatalf("load of a rolled-up unit: %+v ver %d %v; want its slot, absent", r, ver, err)
	}

	// A writer's copy of the version that was rolled up (a zombie, or this
	// very instance's ingest holding it in memory): its write is made anew,
	// without a conflict, since it holds everything the slot does.
	late := next(hour+30*1000, 0)
	v.Add(zombieRec, &late)
	wb := b.NewBatch()
	wb.PutRecordIf(v, "k", hour, 0, zombieRec, zombieVer)
	if err := b.Commit(wb); err != nil {
		t.Fatalf("write on the rolled-up version: %v", err)
	}
	feedPebble(late)
	same("a late event on a rolled-up unit", b)

	// A writer two versions behind conflicts, reloads the tile item and
	// applies its new event on top.
	late2 := next(hour+40*1000, 0)
	wa.apply(late2)
	wa.flush()
	feedPebble(late2)
	same("a writer behind the rolled-up version", b)

	// A roll-up that crashed after absorbing the newest tile of partition 1
	// and before deleting it: the item and its slot are the same version,
	// counted once; the next write supersedes both.
	newest := unitID{"k", hour + 119*tiling.Minute, 1}
	pk, _ := a.dyn.keyPK(v.Name, "k")
	sk := streamSK(newest.tile, newest.part)
	it, err := a.dyn.t.Get(ctx, pk, sk)
	if err != nil || it == nil {
		t.Fatalf("newest tile item: %v %v", it, err)
	}
	off, _ := it.N("o")
	h := v.RecordStart(newest.tile)
	segsNow, err := a.dyn.hourSegs(ctx, v, pk, h)
	if err != nil {
		t.Fatal(err)
	}
	item := spanItem{tilePart: tilePart{newest.tile, newest.part}, off: off, val: it.B("v"), sk: sk}
	if err := a.dyn.absorbInto(ctx, v, pk, h, segsNow, []spanItem{item}); err != nil {
		t.Fatal(err)
	}
	if s, ok, err := a.dyn.slotOf(ctx, v, pk, newest.tile, newest.part, nil); err != nil || !ok || s.off != off {
		t.Fatalf("slot after the absorption: %+v %v %v, want offset %d", s, ok, err, off)
	}
	same("a tile item its segment holds too", b)
	e := next(newest.tile+30*1000, 1)
	wa.apply(e)
	wa.flush()
	feedPebble(e)
	same("a write after a crashed roll-up", b)

	// Garbage collection below a watermark takes segments of whole hours.
	gc := a.NewBatch()
	gc.DeleteStreamBefore(v.Name, "k", hour+tiling.Hour)
	if err := a.Commit(gc); err != nil {
		t.Fatal(err)
	}
	if _, segs := streamItems(t, a, v, "k"); segs != 1 {
		t.Fatalf("%d segments after collecting the first hour, want 1", segs)
	}
}

// TestDynamoRollupSegmentsSplitWhenFull rolls up tiles too large for one
// segment: the span gets several, and reads stay exact.
func TestDynamoRollupSegmentsSplitWhenFull(t *testing.T) {
	ctx := context.Background()
	cfg := dynTable(t)
	cfg.RollupShare = 1
	s := openDyn(t, cfg)
	p, err := Open(Config{Path: t.TempDir()}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	v := lastView(t)
	for _, st := range []*Store{s, p} {
		if _, err := st.CheckLayout(context.Background(), v); err != nil {
			t.Fatal(err)
		}
	}
	hour := tiling.AlignDown(time.Now().UnixMilli(), tiling.Hour) - tiling.Hour
	w := newWriter(t, s, v)
	rec := v.NewRecord(hour)
	for m := range int64(20) {
		// last values of 60 KB: five tiles fill a segment.
		e := ev(v, "k", hour+m*tiling.Minute, 0, m+1, 1, 60_000)
		w.apply(e)
		w.flush()
		v.Add(rec, &e)
	}
	pb := p.NewBatch()
	pb.PutRecord(v, "k", rec)
	if err := p.Commit(pb); err != nil {
		t.Fatal(err)
	}
	if _, segs := streamItems(t, s, v, "k"); segs < 2 {
		t.Fatalf("%d segments for 1.2 MB of tiles, want several", segs)
	}
	at := hour + tiling.Hour - 1
	kd, err := s.ReadKey(ctx, v, "k", at)
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := p.ReadKey(ctx, v, "k", at)
	if got, want := v.EvaluateBatch(at, kd.Batch, kd.Records), v.EvaluateBatch(at, kp.Batch, kp.Records); !reflect.DeepEqual(got, want) {
		t.Fatalf("DynamoDB %v, Pebble %v", got, want)
	}
}

// TestDynamoLayoutOfTheFormatBeforeSegments reads a table written before
// hour segments as it is (its items are tile items, read alike) and tags
// its layout item, keeping its incarnation.
func TestDynamoLayoutOfTheFormatBeforeSegments(t *testing.T) {
	s := openDyn(t, dynTable(t))
	v := lastView(t)
	old := &dynamo.Item{PK: layoutPK(v.Name), SK: dskLay}
	old.SetB("v", []byte(v.Fingerprint()))
	old.SetB("inc", []byte{1, 2, 3, 4})
	if err := s.dyn.t.Put(context.Background(), old, nil); err != nil {
		t.Fatal(err)
	}
	rebuild, err := s.CheckLayout(context.Background(), v)
	if err != nil || rebuild {
		t.Fatalf("check of a table of the previous format: rebuild %v, %v", rebuild, err)
	}
	it, err := s.dyn.t.Get(context.Background(), layoutPK(v.Name), dskLay)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(it.B("v")); got != v.Fingerprint()+dynFormat || incOf(it) != 0x01020304 {
		t.Fatalf("layout item after the check: %q inc %x", got, incOf(it))
	}
}
