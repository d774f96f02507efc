package ingest

import (
	"errors"
	"fmt"
	"time"

	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

// recordStore is what the applier needs from the online store.
type recordStore interface {
	StreamLayout() state.StreamLayout
	LoadRecord(v *tiling.View, key string, start int64, part int32) (*tiling.Record, int64, error)
	LoadRecords(v *tiling.View, ids []state.UnitID) (map[state.UnitID]state.LoadedUnit, error)
	Head(v *tiling.View, key string) (state.Head, bool, error)
	Heads(v *tiling.View, keys []string) (map[string]state.Head, error)
	NewBatch() *state.Batch
	Commit(b *state.Batch) error
}

// recID names a stored stream unit: a record span (Pebble) or a tile
// (DynamoDB), of one partition when units are per partition (part -1
// otherwise).
type recID struct {
	view  int
	key   string
	start int64
	part  int32
}

type cached struct {
	rec   *tiling.Record
	dirty bool
	// ver is the stored version the next write is conditioned on (-1:
	// absent), and since the events applied on top of it: when another
	// writer changed the unit meanwhile, the write fails, the unit is
	// reloaded and since applied again (those already in it are skipped by
	// their offsets). Both are kept only for per-partition units.
	ver   int64
	since []tiling.Event
}

// topicPartition names a partition.
type topicPartition struct {
	topic     string
	partition int32
}

// partProgress is a partition's position in the loop.
type partProgress struct {
	next      int64 // first offset not yet handled
	epoch     int32 // leader epoch of the last handled record
	maxTS     int64 // largest event time applied
	dirty     bool  // changed since the last flush
	unsynced  bool  // handled past the last committed offset
	committed int64 // last offset committed to Kafka by this member
	// stored is the next offset of the progress last written: offsets are
	// committed only up to it, so that a replay after a crash sees again
	// every event whose event time the stored progress does not hold yet
	// (the stream watermark never forgets one).
	stored int64
}

// applier holds records in memory, applies events to them and writes them
// out. It is used by one goroutine at a time (the consume loop, or a rebalance
// callback while the loop is blocked).
type applier struct {
	store   recordStore
	layout  state.StreamLayout
	views   []*tiling.View
	limit   int
	records map[recID]*cached
	dirty   []recID
	parts   map[topicPartition]*partProgress
	// durable is the largest event time made durable per partition (shared
	// with the Ingester, same lock): a partition's progress resumes from
	// it, so a restart or a reassignment never moves the stored value back.
	durable map[topicPartition]int64
	// heads caches each key's batch watermark (tiling.MinTime: none).
	heads map[headID]int64
	// conflicts counts stream writes that found their unit changed, and
	// rebased the events applied again on top of the stored unit.
	conflicts, rebased int
	// progressAt is when the partitions' progress was last written. With
	// per-partition units (DynamoDB) it is written at most every
	// progressEvery unless forced: it is one more item per partition per
	// flush, and only the stream watermark of other instances and of a
	// restart reads it (both take a lagging one as a lower bound).
	progressAt    time.Time
	progressEvery time.Duration
}

type headID struct {
	view int
	key  string
}

// outcome of applying one event.
type outcome uint8

const (
	applied  outcome = iota
	replayed         // already in the record
	deferred         // before the key's batch watermark: the next heal counts it
)

func newApplier(store recordStore, views []*tiling.View, limit int, durable map[topicPartition]int64) *applier {
	return &applier{
		store:   store,
		layout:  store.StreamLayout(),
		views:   views,
		limit:   limit,
		records: make(map[recID]*cached),
		parts:   make(map[topicPartition]*partProgress),
		durable: durable,
		heads:   make(map[headID]int64),

		progressEvery: 5 * time.Second,
	}
}

// watermark returns the key's batch watermark, from the cache or the store.
func (a *applier) watermark(vi int, key string) (int64, error) {
	id := headID{vi, key}
	if wb, ok := a.heads[id]; ok {
		return wb, nil
	}
	h, ok, err := a.store.Head(a.views[vi], key)
	if err != nil {
		return 0, err
	}
	wb := tiling.MinTime
	if ok {
		wb = h.Watermark
	}
	if len(a.heads) >= a.limit {
		clear(a.heads)
	}
	a.heads[id] = wb
	return wb, nil
}

// prefetch loads, in batches, the heads and the stream units the events of
// view vi will need that are not in memory, so that applying them does not
// wait for one round trip per unit (DynamoDB; on Pebble reads are local and
// apply loads what it needs).
func (a *applier) prefetch(vi int, evs []*tiling.Event) error {
	if !a.layout.PerPartition || len(evs) == 0 {
		return nil
	}
	v := a.views[vi]
	var keys []string
	seenKey := map[string]bool{}
	for _, e := range evs {
		if _, ok := a.heads[headID{vi, e.Key}]; !ok && !seenKey[e.Key] {
			seenKey[e.Key] = true
			keys = append(keys, e.Key)
		}
	}
	if len(keys) > 0 {
		hs, err := a.store.Heads(v, keys)
		if err != nil {
			return err
		}
		if len(a.heads)+len(keys) > a.limit {
			clear(a.heads)
		}
		for _, k := range keys {
			wb := tiling.MinTime
			if h, ok := hs[k]; ok {
				wb = h.Watermark
			}
			a.heads[headID{vi, k}] = wb
		}
	}
	var ids []state.UnitID
	seen := map[recID]bool{}
	for _, e := range evs {
		if wb, ok := a.heads[headID{vi, e.Key}]; ok && e.TS < wb {
			continue // deferred: no unit needed
		}
		id := recID{vi, e.Key, a.layout.UnitStart(v, e.TS), e.Pos.Partition}
		if _, ok := a.records[id]; ok || seen[id] {
			continue
		}
		seen[id] = true
		ids = append(ids, state.UnitID{Key: id.key, Start: id.start, Part: id.part})
	}
	if len(ids) == 0 {
		return nil
	}
	got, err := a.store.LoadRecords(v, ids)
	if err != nil {
		return err
	}
	for _, u := range ids {
		lu, ok := got[u]
		if !ok {
			continue
		}
		r := lu.Rec
		if r == nil {
			r = &tiling.Record{Start: v.RecordStart(u.Start)}
		}
		a.records[recID{vi, u.Key, u.Start, u.Part}] = &cached{rec: r, ver: lu.Ver}
	}
	return nil
}

// apply adds e to its record for view vi, loading the record on first use.
// An event before its key's batch watermark is not applied: it is in the
// offline log, and the next heal counts it.
func (a *applier) apply(vi int, e *tiling.Event) (outcome, error) {
	v := a.views[vi]
	wb, err := a.watermark(vi, e.Key)
	if err != nil {
		return 0, err
	}
	if e.TS < wb {
		return deferred, nil
	}
	id := recID{vi, e.Key, a.layout.UnitStart(v, e.TS), -1}
	if a.layout.PerPartition {
		id.part = e.Pos.Partition
	}
	c := a.records[id]
	if c == nil {
		r, ver, err := a.store.LoadRecord(v, e.Key, id.start, id.part)
		if err != nil {
			return 0, err
		}
		if r == nil {
			r = v.NewRecord(e.TS)
		}
		c = &cached{rec: r, ver: ver}
		a.records[id] = c
	}
	if !v.Add(c.rec, e) {
		return replayed, nil
	}
	if a.layout.PerPartition {
		c.since = append(c.since, *e)
	}
	if !c.dirty {
		c.dirty = true
		a.dirty = append(a.dirty, id)
	}
	return applied, nil
}

// handled records that the partition is handled through offset (applied or
// rejected) and its largest event time so far.
func (a *applier) handled(tp topicPartition, offset int64, epoch int32, ts int64, applied bool) {
	p := a.parts[tp]
	if p == nil {
		p = &partProgress{maxTS: tiling.MinTime, committed: -1, stored: -1}
		if ts, ok := a.durable[tp]; ok {
			p.maxTS = ts
		}
		a.parts[tp] = p
	}
	p.next, p.epoch = offset+1, epoch
	if applied && ts > p.maxTS {
		p.maxTS = ts
	}
	p.dirty, p.unsynced = true, true
}

// errConflicting is returned when units kept conflicting over several
// attempts of one flush (two live writers of a partition, until the group
// settles): the flush is retried later like an unavailable store.
var errConflicting = errors.New("ingest: stream units kept changing under this writer")

// flush writes every dirty record and every changed partition progress: in
// one atomic batch on Pebble; on DynamoDB the records first (each a
// conditional write) and the progress after, only once every record is
// written. A record whose unit another writer changed is rebased (reloaded,
// its events applied again) and written again, a few times at most. It
// returns how many records it wrote.
func (a *applier) flush(force bool) (int, error) {
	progress := a.anyPartDirty() && (force || !a.layout.PerPartition || time.Since(a.progressAt) >= a.progressEvery)
	if len(a.dirty) == 0 && !progress {
		return 0, nil
	}
	written := 0
	for attempt := 1; ; attempt++ {
		b := a.store.NewBatch()
		for _, id := range a.dirty {
			c := a.records[id]
			b.PutRecordIf(a.views[id.view], id.key, id.start, id.part, c.rec, c.ver)
		}
		for tp, p := range a.parts {
			if p.dirty && progress {
				b.SetProgress(tp.topic, tp.partition, state.Progress{Next: p.next, MaxEventTime: p.maxTS})
			}
		}
		n := len(a.dirty)
		err := a.store.Commit(b)
		if err == nil {
			for _, id := range a.dirty {
				a.clean(id, a.records[id])
			}
			a.dirty = a.dirty[:0]
			if progress {
				for _, p := range a.parts {
					if p.dirty {
						p.dirty, p.stored = false, p.next
					}
				}
				a.progressAt = time.Now()
			}
			a.evict()
			return written + n, nil
		}
		var we *state.WriteError
		if !errors.As(err, &we) || len(we.Records) != n {
			return written, fmt.Errorf("flush: %w", err)
		}
		var still []recID
		for i, id := range a.dirty {
			c, rw := a.records[id], we.Records[i]
			switch {
			case rw.Written:
				a.clean(id, c)
				written++
			case rw.Conflict:
				a.conflicts++
				if a.rebase(id, c, rw.Current, rw.CurrentVersion) {
					still = append(still, id)
				}
			default:
				still = append(still, id)
			}
		}
		a.dirty = append(a.dirty[:0], still...)
		if we.Err != nil {
			return written, fmt.Errorf("flush: %w", we.Err)
		}
		if attempt == 5 {
			return written, fmt.Errorf("flush: %w", errConflicting)
		}
	}
}

// clean marks a unit written: its version is now its own offset.
func (a *applier) clean(id recID, c *cached) {
	c.dirty, c.since = false, nil
	if id.part >= 0 {
		c.ver = -1
		for _, o := range c.rec.Offsets {
			if o.Partition == id.part {
				c.ver = o.Offset
			}
		}
	}
}

// rebase replaces a unit by the stored one (cur, at version ver; nil when
// absent) and applies again the events applied since the version it had:
// those the stored unit holds already are skipped by their offsets. It
// reports whether any was applied (the unit must be written again).
func (a *applier) rebase(id recID, c *cached, cur *tiling.Record, ver int64) bool {
	v := a.views[id.view]
	if cur == nil {
		cur = &tiling.Record{Start: c.rec.Start}
	}
	c.rec, c.ver = cur, ver
	kept := c.since[:0]
	for i := range c.since {
		if v.Add(c.rec, &c.since[i]) {
			kept = append(kept, c.since[i])
		}
	}
	c.since = kept
	a.rebased += len(kept)
	c.dirty = len(kept) > 0
	return c.dirty
}

func (a *applier) anyPartDirty() bool {
	for _, p := range a.parts {
		if p.dirty {
			return true
		}
	}
	return false
}

// evict drops clean records beyond the limit, down to 90% of it. Which ones
// is left to map order (random): any clean record can be reloaded.
func (a *applier) evict() {
	if len(a.records) <= a.limit {
		return
	}
	target := a.limit * 9 / 10
	for id, c := range a.records {
		if len(a.records) <= target {
			break
		}
		if !c.dirty {
			delete(a.records, id)
		}
	}
}

// forget drops every clean cached record; used when partitions move, so that
// nothing cached outlives ownership. With per-partition units, the dirty
// units of the partitions in gone are dropped too: their next owner replays
// their events from the committed offset, and no write of this member
// follows the move.
func (a *applier) forget(gone map[topicPartition]bool) {
	dropped := false
	for id, c := range a.records {
		if !c.dirty {
			delete(a.records, id)
			continue
		}
		if id.part >= 0 && gone[topicPartition{a.views[id.view].Topic, id.part}] {
			delete(a.records, id)
			dropped = true
		}
	}
	if dropped {
		kept := a.dirty[:0]
		for _, id := range a.dirty {
			if _, ok := a.records[id]; ok {
				kept = append(kept, id)
			}
		}
		a.dirty = kept
	}
}
