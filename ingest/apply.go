package ingest

import (
	"errors"
	"fmt"
	"hash/maphash"
	"runtime"
	"sync"
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
// out. Its records and heads are split into shards by entity key, so that
// the events of a poll are applied by one goroutine per shard in parallel
// (applyShard): a record is only ever touched by its key's shard, and each
// shard sees a partition's events in offset order, which is all Add's skip
// rule needs (tiling.Record). Everything else (partition progress, flush,
// eviction) is used by one goroutine at a time: the consume loop, or a
// rebalance callback while the loop is blocked.
type applier struct {
	store  recordStore
	layout state.StreamLayout
	views  []*tiling.View
	limit  int
	shards []*shard
	seed   maphash.Seed
	parts  map[topicPartition]*partProgress
	// durable is the largest event time made durable per partition (shared
	// with the Ingester, same lock): a partition's progress resumes from
	// it, so a restart or a reassignment never moves the stored value back.
	durable map[topicPartition]int64
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
	// knownReady: the shards' filters of stored records are filled;
	// knownOff: the store has none (prepareKnown). knownMin is the least
	// capacity of the filters, knownScans counts the scans that filled them.
	knownReady, knownOff bool
	knownMin, knownScans int
}

// shard holds the records and batch watermarks of the keys that hash to it.
type shard struct {
	records map[recID]*cached
	dirty   []dirtyRec
	// heads caches each key's batch watermark (tiling.MinTime: none).
	heads map[headID]int64
	// limit bounds records and heads: the applier's limit over the shards.
	limit int
	// known filters the records the store may hold (nil: read each one).
	known *known
}

// dirtyRec is a record changed since the last flush.
type dirtyRec struct {
	id recID
	c  *cached
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

// newApplier returns an applier with one shard per usable core.
func newApplier(store recordStore, views []*tiling.View, limit int, durable map[topicPartition]int64) *applier {
	return newApplierShards(store, views, limit, durable, runtime.GOMAXPROCS(0))
}

func newApplierShards(store recordStore, views []*tiling.View, limit int, durable map[topicPartition]int64, shards int) *applier {
	a := &applier{
		store:   store,
		layout:  store.StreamLayout(),
		views:   views,
		limit:   limit,
		seed:    maphash.MakeSeed(),
		parts:   make(map[topicPartition]*partProgress),
		durable: durable,

		progressEvery: 5 * time.Second,
		knownMin:      knownMin,
	}
	shards = max(1, min(shards, limit))
	for range shards {
		a.shards = append(a.shards, &shard{
			records: make(map[recID]*cached),
			heads:   make(map[headID]int64),
			limit:   max(1, limit/shards),
		})
	}
	return a
}

// shardOf returns the index of the shard of an entity key.
func (a *applier) shardOf(key string) int {
	if len(a.shards) == 1 {
		return 0
	}
	return a.shardOfHash(maphash.String(a.seed, key))
}

// shardOfHash returns the index of the shard of a key hash (from seed).
func (a *applier) shardOfHash(h uint64) int { return int(h % uint64(len(a.shards))) }

// cachedRecords returns how many records are held in memory.
func (a *applier) cachedRecords() int {
	n := 0
	for _, s := range a.shards {
		n += len(s.records)
	}
	return n
}

// watermark returns the key's batch watermark, from the shard's cache or the
// store.
func (a *applier) watermark(s *shard, vi int, key string) (int64, error) {
	id := headID{vi, key}
	if wb, ok := s.heads[id]; ok {
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
	if len(s.heads) >= s.limit {
		clear(s.heads)
	}
	s.heads[id] = wb
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
		if _, ok := a.shards[a.shardOf(e.Key)].heads[headID{vi, e.Key}]; !ok && !seenKey[e.Key] {
			seenKey[e.Key] = true
			keys = append(keys, e.Key)
		}
	}
	if len(keys) > 0 {
		hs, err := a.store.Heads(v, keys)
		if err != nil {
			return err
		}
		// Room first, so that every head of the poll stays cached.
		adding := make([]int, len(a.shards))
		for _, k := range keys {
			adding[a.shardOf(k)]++
		}
		for si, sh := range a.shards {
			if len(sh.heads)+adding[si] > sh.limit {
				clear(sh.heads)
			}
		}
		for _, k := range keys {
			wb := tiling.MinTime
			if h, ok := hs[k]; ok {
				wb = h.Watermark
			}
			a.shards[a.shardOf(k)].heads[headID{vi, k}] = wb
		}
	}
	var ids []state.UnitID
	seen := map[recID]bool{}
	for _, e := range evs {
		sh := a.shards[a.shardOf(e.Key)]
		if wb, ok := sh.heads[headID{vi, e.Key}]; ok && e.TS < wb {
			continue // deferred: no unit needed
		}
		id := recID{vi, e.Key, a.layout.UnitStart(v, e.TS), e.Pos.Partition}
		if _, ok := sh.records[id]; ok || seen[id] {
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
		a.shards[a.shardOf(u.Key)].records[recID{vi, u.Key, u.Start, u.Part}] = &cached{rec: r, ver: lu.Ver}
	}
	return nil
}

// apply adds e to its record for view vi, loading the record on first use.
// An event before its key's batch watermark is not applied: it is in the
// offline log, and the next heal counts it.
func (a *applier) apply(vi int, e *tiling.Event) (outcome, error) {
	return a.applyShard(a.shards[a.shardOf(e.Key)], vi, e)
}

// applyShard is apply on e's shard s. Calls on distinct shards may run in
// parallel.
func (a *applier) applyShard(s *shard, vi int, e *tiling.Event) (outcome, error) {
	v := a.views[vi]
	wb, err := a.watermark(s, vi, e.Key)
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
	c := s.records[id]
	if c == nil {
		var r *tiling.Record
		var ver int64
		var h uint64
		if s.known != nil {
			h = recordHash(maphash.String(a.seed, e.Key), vi, id.start)
		}
		if s.known == nil || s.known.has(h) {
			if r, ver, err = a.store.LoadRecord(v, e.Key, id.start, id.part); err != nil {
				return 0, err
			}
		}
		if r == nil {
			r = v.NewRecord(e.TS)
			if s.known != nil {
				s.known.add(h)
			}
		}
		c = &cached{rec: r, ver: ver}
		s.records[id] = c
	}
	if !v.Add(c.rec, e) {
		return replayed, nil
	}
	if a.layout.PerPartition {
		c.since = append(c.since, *e)
	}
	if !c.dirty {
		c.dirty = true
		s.dirty = append(s.dirty, dirtyRec{id, c})
	}
	return applied, nil
}

// pending is the outcome of an event not applied yet.
const pending outcome = 255

// applyWork applies the decoded events of a poll (every partWork routed):
// it loads what they need (in batches on DynamoDB; the filter of stored
// records on Pebble), then applies each shard's events on a goroutine of
// its own, partitions in order and each partition's events in offset order.
// It sets the outcome of each event still pending: a retry after a store
// failure applies every event again (those in their record already are
// skipped by offset, as replays) and keeps the outcome of the attempt that
// applied it, so metrics count it once.
func (a *applier) applyWork(work []*partWork) error {
	if a.layout.PerPartition {
		// Load what the poll needs in batches, not one round trip each.
		byView := make([][]*tiling.Event, len(a.views))
		for _, w := range work {
			for i := range w.out {
				for j, vi := range w.views {
					if w.out[i].Reasons[j] == "" {
						byView[vi] = append(byView[vi], &w.out[i].Events[j])
					}
				}
			}
		}
		for vi, evs := range byView {
			if err := a.prefetch(vi, evs); err != nil {
				return err
			}
		}
	}
	n := 0
	for _, w := range work {
		n += len(w.out) * len(w.views)
	}
	if err := a.prepareKnown(n); err != nil {
		return err
	}
	applyShard := func(si int) error {
		s := a.shards[si]
		for _, w := range work {
			nv := len(w.views)
			for i := range w.out {
				d := &w.out[i]
				for j, vi := range w.views {
					k := i*nv + j
					if d.Reasons[j] != "" || int(w.shard[k]) != si {
						continue
					}
					out, err := a.applyShard(s, vi, &d.Events[j])
					if err != nil {
						return err
					}
					if w.outcome[k] == pending {
						w.outcome[k] = out
					}
				}
			}
		}
		return nil
	}
	if len(a.shards) == 1 {
		return applyShard(0)
	}
	errs := make([]error, len(a.shards))
	var wg sync.WaitGroup
	for si := range a.shards {
		wg.Go(func() { errs[si] = applyShard(si) })
	}
	wg.Wait()
	return errors.Join(errs...)
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
	var dirty []dirtyRec
	for _, s := range a.shards {
		dirty = append(dirty, s.dirty...)
	}
	if len(dirty) == 0 && !progress {
		return 0, nil
	}
	written := 0
	for attempt := 1; ; attempt++ {
		b := a.store.NewBatch()
		if a.layout.PerPartition || len(a.shards) == 1 {
			for _, d := range dirty {
				b.PutRecordIf(a.views[d.id.view], d.id.key, d.id.start, d.id.part, d.c.rec, d.c.ver)
			}
		} else {
			a.encodeShards(b)
		}
		for tp, p := range a.parts {
			if p.dirty && progress {
				b.SetProgress(tp.topic, tp.partition, state.Progress{Next: p.next, MaxEventTime: p.maxTS})
			}
		}
		n := len(dirty)
		err := a.store.Commit(b)
		if err == nil {
			for _, d := range dirty {
				a.clean(d.id, d.c)
			}
			for _, s := range a.shards {
				s.dirty = s.dirty[:0]
			}
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
		still := dirty[:0]
		for i, d := range dirty {
			rw := we.Records[i]
			switch {
			case rw.Written:
				a.clean(d.id, d.c)
				written++
			case rw.Conflict:
				a.conflicts++
				if a.rebase(d.id, d.c, rw.Current, rw.CurrentVersion) {
					still = append(still, d)
				}
			default:
				still = append(still, d)
			}
		}
		dirty = still
		for _, s := range a.shards {
			s.dirty = s.dirty[:0]
		}
		for _, d := range dirty {
			s := a.shards[a.shardOf(d.id.key)]
			s.dirty = append(s.dirty, d)
		}
		if we.Err != nil {
			return written, fmt.Errorf("flush: %w", we.Err)
		}
		if attempt == 5 {
			return written, fmt.Errorf("flush: %w", errConflicting)
		}
	}
}

// encodeShards puts every shard's dirty records into b (Pebble: the shards'
// dirty lists are the flush's), encoded by one goroutine per shard while
// this one copies the encoded records into b, a chunk at a time (so only a
// few chunks of encoded bytes exist besides b).
func (a *applier) encodeShards(b *state.Batch) {
	type chunk struct {
		recs []dirtyRec
		buf  []byte
		ends []int
	}
	chunks := make(chan *chunk, 2*len(a.shards))
	free := make(chan *chunk, 3*len(a.shards))
	var wg sync.WaitGroup
	for _, s := range a.shards {
		wg.Go(func() {
			var c *chunk
			for i, d := range s.dirty {
				if c == nil {
					select {
					case c = <-free:
						c.buf, c.ends = c.buf[:0], c.ends[:0]
					default:
						c = &chunk{}
					}
					c.recs = s.dirty[i:i]
				}
				c.buf = a.views[d.id.view].AppendRecord(c.buf, d.c.rec)
				c.ends = append(c.ends, len(c.buf))
				c.recs = c.recs[:len(c.recs)+1]
				if len(c.buf) >= encodeChunk {
					chunks <- c
					c = nil
				}
			}
			if c != nil {
				chunks <- c
			}
		})
	}
	go func() {
		wg.Wait()
		close(chunks)
	}()
	for c := range chunks {
		from := 0
		for i, d := range c.recs {
			b.PutRecordBytes(a.views[d.id.view].Name, d.id.key, d.id.start, c.buf[from:c.ends[i]])
			from = c.ends[i]
		}
		select {
		case free <- c:
		default:
		}
	}
}

// encodeChunk is the size of the chunks of encoded records a flush passes
// from the encoding goroutines to the batch, in bytes.
const encodeChunk = 1 << 20

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

// evict drops clean records of every shard beyond its limit, down to 90% of
// it. Which ones is left to map order (random): any clean record can be
// reloaded.
func (a *applier) evict() {
	for _, s := range a.shards {
		if len(s.records) <= s.limit {
			continue
		}
		target := s.limit * 9 / 10
		for id, c := range s.records {
			if len(s.records) <= target {
				break
			}
			if !c.dirty {
				delete(s.records, id)
			}
		}
	}
}

// forget drops every clean cached record; used when partitions move, so that
// nothing cached outlives ownership. With per-partition units, the dirty
// units of the partitions in gone are dropped too: their next owner replays
// their events from the committed offset, and no write of this member
// follows the move.
func (a *applier) forget(gone map[topicPartition]bool) {
	for _, s := range a.shards {
		dropped := false
		for id, c := range s.records {
			if !c.dirty {
				delete(s.records, id)
				continue
			}
			if id.part >= 0 && gone[topicPartition{a.views[id.view].Topic, id.part}] {
				delete(s.records, id)
				dropped = true
			}
		}
		if dropped {
			kept := s.dirty[:0]
			for _, d := range s.dirty {
				if _, ok := s.records[d.id]; ok {
					kept = append(kept, d)
				}
			}
			s.dirty = kept
		}
	}
}

// forgetHeads drops the cached batch watermarks of view vi.
func (a *applier) forgetHeads(vi int) {
	for _, s := range a.shards {
		for id := range s.heads {
			if id.view == vi {
				delete(s.heads, id)
			}
		}
	}
}
