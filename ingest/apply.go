package ingest

import (
	"fmt"

	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

// recordStore is what the applier needs from the online store.
type recordStore interface {
	GetRecord(v *tiling.View, key string, start int64) (*tiling.Record, error)
	Head(v *tiling.View, key string) (state.Head, bool, error)
	NewBatch() *state.Batch
	Commit(b *state.Batch) error
}

type recID struct {
	view  int
	key   string
	start int64
}

type cached struct {
	rec   *tiling.Record
	dirty bool
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
}

// applier holds records in memory, applies events to them and writes them
// out. It is used by one goroutine at a time (the consume loop, or a rebalance
// callback while the loop is blocked).
type applier struct {
	store   recordStore
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
		views:   views,
		limit:   limit,
		records: make(map[recID]*cached),
		parts:   make(map[topicPartition]*partProgress),
		durable: durable,
		heads:   make(map[headID]int64),
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
	id := recID{vi, e.Key, v.RecordStart(e.TS)}
	c := a.records[id]
	if c == nil {
		r, err := a.store.GetRecord(v, e.Key, id.start)
		if err != nil {
			return 0, err
		}
		if r == nil {
			r = v.NewRecord(e.TS)
		}
		c = &cached{rec: r}
		a.records[id] = c
	}
	if !v.Add(c.rec, e) {
		return replayed, nil
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
		p = &partProgress{maxTS: tiling.MinTime, committed: -1}
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

// flush writes every dirty record and every changed partition progress in one
// atomic batch. It returns how many records it wrote.
func (a *applier) flush() (int, error) {
	if len(a.dirty) == 0 && !a.anyPartDirty() {
		return 0, nil
	}
	b := a.store.NewBatch()
	for _, id := range a.dirty {
		c := a.records[id]
		b.PutRecord(a.views[id.view], id.key, c.rec)
	}
	for tp, p := range a.parts {
		if p.dirty {
			b.SetProgress(tp.topic, tp.partition, state.Progress{Next: p.next, MaxEventTime: p.maxTS})
		}
	}
	n := b.Len()
	if err := a.store.Commit(b); err != nil {
		return 0, fmt.Errorf("flush: %w", err)
	}
	for _, id := range a.dirty {
		a.records[id].dirty = false
	}
	a.dirty = a.dirty[:0]
	for _, p := range a.parts {
		p.dirty = false
	}
	a.evict()
	return n, nil
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
// nothing cached outlives ownership.
func (a *applier) forget() {
	for id, c := range a.records {
		if !c.dirty {
			delete(a.records, id)
		}
	}
}
