package healer

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

// dayBuild aggregates one day span's events per key at the three resolutions
// of the batch layout: tiles (detail records, one per block), block
// aggregates (the day record) and the day total.
type dayBuild struct {
	v     *tiling.View
	start int64
	// keys maps a key to its blocks' records, ascending by start. A key has
	// at most DaySpan/Span blocks (24 at 1-minute tiles) and few of them in
	// sparse data, so a sorted slice beats a map per key.
	keys map[string]*keyBlocks
	// byRef finds a key's blocks by the event's KeyRef (a Parquet
	// dictionary index) without hashing the key: byRef[i] holds the blocks
	// of KeyRef{refStore, i}, nil when not looked up yet.
	refStore uint64
	byRef    []*keyBlocks
	kbs      []keyBlocks
	// The day's tiles, records and block aggregates are allocated in chunks:
	// they are dropped together once the day is written. Day totals, which
	// the heal keeps until the summaries, are not. A key with many events
	// gets an arena of its own (from free), so that the merges of its tiles
	// read its states in order rather than among every other key's; the
	// others share arena.
	arena *tiling.Arena
	free  *arenas
	own   int // a key's events before it gets an arena of its own
	// totals holds the day totals: the heal keeps all of them until it
	// writes the summaries, so they get chunks of their own.
	totals *tiling.Arena
	recs   []tiling.Record
	tiles  []tiling.Tile
	vals   []byte // encoded day records
	// day is the day record being encoded, its slices reused key after key.
	day tiling.Record
	// mem lists the chunks the build took from free (memory adds the
	// arenas).
	mem dayMemory
}

// buildChunk is how many records (and first tiles) a day build allocates at
// once.
const buildChunk = 1024

func newDayBuild(v *tiling.View, start int64, free *arenas) *dayBuild {
	return &dayBuild{v: v, start: start, keys: map[string]*keyBlocks{}, arena: free.get(), free: free, own: ownArena, totals: v.NewArena()}
}

// arenas keeps the memory of day builds whose records are written — their
// arenas, chunks of records and of encoded bytes — for the next days'
// builds: a heal's tile states and records then reuse a few days' worth of
// memory instead of allocating (and collecting) every day's anew.
type arenas struct {
	v    *tiling.View
	free freeList[*tiling.Arena] // day arenas (tiling.View.NewArena)
	keys freeList[*tiling.Arena] // key arenas (tiling.View.NewKeyArena)
	recs freeList[recChunk]
	vals freeList[[]byte]
}

// freeList is a list of free things, safe for concurrent use.
type freeList[T any] struct {
	mu   sync.Mutex
	free []T
}

// get returns the last free thing, or fresh().
func (l *freeList[T]) get(fresh func() T) T {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.free); n > 0 {
		x := l.free[n-1]
		l.free = l.free[:n-1]
		return x
	}
	return fresh()
}

// put frees xs.
func (l *freeList[T]) put(xs ...T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.free = append(l.free, xs...)
}

// recChunk is room for buildChunk records of a day build and their first
// tiles.
type recChunk struct {
	recs  []tiling.Record
	tiles []tiling.Tile
}

// valChunk is the size of the chunks that a day's records are encoded into.
const valChunk = 64 << 10

// get returns a free arena, or a new one.
func (p *arenas) get() *tiling.Arena { return p.free.get(p.v.NewArena) }

// getKey returns a free key arena, or a new one.
func (p *arenas) getKey() *tiling.Arena { return p.keys.get(p.v.NewKeyArena) }

// getRecs returns a free chunk of records, or a new one.
func (p *arenas) getRecs() recChunk {
	return p.recs.get(func() recChunk {
		return recChunk{make([]tiling.Record, 0, buildChunk), make([]tiling.Tile, buildChunk)}
	})
}

// getVals returns a free chunk for encoded records (empty), or a new one.
func (p *arenas) getVals() []byte {
	return p.vals.get(func() []byte { return make([]byte, 0, valChunk) })[:0]
}

// put frees a, whose states nothing uses any more (nil: nothing).
func (p *arenas) put(a *tiling.Arena) {
	if a != nil {
		a.Reset()
		p.free.put(a)
	}
}

// putKeys frees key arenas whose states nothing uses any more.
func (p *arenas) putKeys(as []*tiling.Arena) {
	for _, a := range as {
		a.Reset()
	}
	p.keys.put(as...)
}

// putDay frees the memory of a day build whose records are written.
func (p *arenas) putDay(m dayMemory) {
	p.put(m.arena)
	p.putKeys(m.keyArenas)
	p.recs.put(m.recs...)
	p.vals.put(m.vals...)
}

// dayMemory is what a day build took from arenas: free once the day's
// records are written (arenas.putDay).
type dayMemory struct {
	arena     *tiling.Arena
	keyArenas []*tiling.Arena
	recs      []recChunk
	vals      [][]byte
}

// ownArena is how many of a day's events a key has before its later tiles
// get an arena of their own: most keys of sparse data never have that
// many, and an arena per key would scatter their few states instead.
const ownArena = 16

// keyBlocks is one key's blocks in a day build.
type keyBlocks struct {
	blocks []*tiling.Record
	events int
	arena  *tiling.Arena // nil: the day's
}

// maxKeyRefs bounds byRef: indexes beyond it go through the map.
const maxKeyRefs = 1 << 16

// lookup returns e's key's blocks, adding the key when new.
func (d *dayBuild) lookup(e *tiling.Event) *keyBlocks {
	ref := e.KeyRef
	if ref.Store == 0 || ref.Index >= maxKeyRefs {
		return d.keyBlocks(e.Key)
	}
	if ref.Store != d.refStore {
		d.refStore = ref.Store
		clear(d.byRef)
		d.byRef = d.byRef[:0]
	}
	i := int(ref.Index)
	if i < len(d.byRef) && d.byRef[i] != nil {
		return d.byRef[i]
	}
	kb := d.keyBlocks(e.Key)
	if i >= len(d.byRef) {
		d.byRef = append(d.byRef, make([]*keyBlocks, i+1-len(d.byRef))...)
	}
	d.byRef[i] = kb
	return kb
}

// keyBlocks returns key's blocks, adding the key when new.
func (d *dayBuild) keyBlocks(key string) *keyBlocks {
	if kb, ok := d.keys[key]; ok {
		return kb
	}
	if len(d.kbs) == cap(d.kbs) {
		d.kbs = make([]keyBlocks, 0, buildChunk)
	}
	d.kbs = d.kbs[:len(d.kbs)+1]
	kb := &d.kbs[len(d.kbs)-1]
	// The offline log's key strings share its buffers: keep a copy.
	d.keys[strings.Clone(key)] = kb
	return kb
}

// newRecord returns an empty record starting at start, with room for one
// tile.
func (d *dayBuild) newRecord(start int64) *tiling.Record {
	if len(d.recs) == cap(d.recs) {
		c := d.free.getRecs()
		d.mem.recs = append(d.mem.recs, c)
		d.recs, d.tiles = c.recs[:0], c.tiles
	}
	n := len(d.recs)
	d.recs = d.recs[:n+1]
	r := &d.recs[n]
	*r = tiling.Record{Start: start, Tiles: d.tiles[n : n : n+1]} // a reused one held another
	return r
}

// add aggregates e, which must fall in the day span.
func (d *dayBuild) add(e *tiling.Event) {
	kb := d.lookup(e)
	blocks := kb.blocks
	// Events of one file come roughly in time order: look from the end, for
	// the block that holds e (without dividing: RecordStart only for a new
	// block).
	i := len(blocks)
	for i > 0 && blocks[i-1].Start > e.TS {
		i--
	}
	var r *tiling.Record
	if i > 0 && tiling.Holds(blocks[i-1].Start, d.v.Span(), e.TS) {
		r = blocks[i-1]
	} else {
		r = d.newRecord(d.v.RecordStart(e.TS))
		blocks = append(blocks, nil)
		copy(blocks[i+1:], blocks[i:])
		blocks[i] = r
		kb.blocks = blocks
	}
	kb.events++
	if kb.arena == nil && kb.events > d.own {
		kb.arena = d.free.getKey()
	}
	d.v.AggregateIn(d.arenaOf(kb), r, e)
}

// arenaOf returns the arena of kb's states.
func (d *dayBuild) arenaOf(kb *keyBlocks) *tiling.Arena {
	if kb.arena != nil {
		return kb.arena
	}
	return d.arena
}

// keyDay is one key's built day.
type keyDay struct {
	details []detail // ascending by block
	// day is the day record, encoded; its encoding computes the day's
	// total (the merge of every block) on the way.
	day   []byte
	total []tiling.State
	// tiles counts the key's tiles that day (in detail records and blocks
	// of one tile alike): the writes a tile-per-record layout needs.
	tiles int
}

// detail is a detail record of a block of several tiles, encoded; its
// encoding computes the block's aggregate for the day record on the way.
type detail struct {
	block int64
	val   []byte
}

// finish returns the keys in order (so writes and summaries are
// deterministic) with their detail records, day record and total.
func (d *dayBuild) finish() ([]string, []keyDay) {
	keys := make([]string, 0, len(d.keys))
	for k := range d.keys {
		keys = append(keys, k)
	}
	// The store's key order: Pebble tables take records in it.
	sort.Slice(keys, func(i, j int) bool { return state.KeyLess(keys[i], keys[j]) })
	kds := make([]keyDay, len(keys))
	for i, k := range keys {
		kds[i] = d.finishKey(d.keys[k])
	}
	return keys, kds
}

// memory returns what the build took from free.
func (d *dayBuild) memory() dayMemory {
	m := d.mem
	m.arena, m.keyArenas = d.arena, d.keyArenas()
	return m
}

// keyArenas returns the arenas of the day's keys that have one.
func (d *dayBuild) keyArenas() []*tiling.Arena {
	var as []*tiling.Arena
	for _, kb := range d.keys {
		if kb.arena != nil {
			as = append(as, kb.arena)
		}
	}
	return as
}

// finishKey builds one key's day from its blocks.
func (d *dayBuild) finishKey(kb *keyBlocks) keyDay {
	blocks := kb.blocks
	kd := keyDay{total: d.v.NewStatesIn(d.totals)}
	day := &d.day
	if day.Only == nil {
		day.Tiles, day.Only = make([]tiling.Tile, 0, 24), make([]int64, 0, 24)
	}
	day.Start, day.Tiles, day.Only = d.start, day.Tiles[:0], day.Only[:0]
	for _, r := range blocks {
		kd.tiles += len(r.Tiles)
		// A block of one tile needs no detail record (the day record says
		// where its tile is) and its aggregate is that tile: merging it into
		// the identity would encode the same bytes (the merge contract's
		// identity, tested in tiling), so the tile's states serve as they are.
		if len(r.Tiles) == 1 {
			day.Tiles = append(day.Tiles, tiling.Tile{Start: r.Start, States: r.Tiles[0].States})
			day.Only = append(day.Only, r.Tiles[0].Start)
			continue
		}
		agg := d.v.NewStatesIn(d.arenaOf(kb))
		val := d.encode(func(dst []byte) []byte { return d.v.AppendDetailRecordTotal(dst, r, agg) })
		day.Tiles = append(day.Tiles, tiling.Tile{Start: r.Start, States: agg})
		day.Only = append(day.Only, tiling.MinTime)
		kd.details = append(kd.details, detail{block: r.Start, val: val})
	}
	kd.day = d.encode(func(dst []byte) []byte { return d.v.AppendDayRecordTotal(dst, day, kd.total) })
	return kd
}

// encode returns what enc appends to an empty slice, in d.vals: the encoded
// records of a day share chunks, dropped with the day.
func (d *dayBuild) encode(enc func(dst []byte) []byte) []byte {
	if cap(d.vals)-len(d.vals) < 1024 {
		d.vals = d.free.getVals()
		d.mem.vals = append(d.mem.vals, d.vals)
	}
	n := len(d.vals)
	b := enc(d.vals[n:n])
	if cap(b) == cap(d.vals)-n {
		d.vals = d.vals[:n+len(b)] // encoded in place (else it grew a slice of its own)
	}
	return b
}

// builtDay is one day span read from the offline log and built: its keys in
// order with their records, ready to write.
type builtDay struct {
	keys  []string
	kds   []keyDay
	stats state.ReadStats
	// tables holds the day's records, encoded by the build, when the store
	// ingests tables (Pebble) and the day is large enough; else the writer
	// puts kds in batches.
	tables *state.Tables
	// mem holds the day's tiles, records and encoded records: free once
	// they are written (arenas.putDay).
	mem dayMemory
	err error
}

// errStopped ends the reads of a build pipeline that was stopped.
var errStopped = errors.New("healer: day builds stopped")

// useTables says whether n records go into a table (on a store that takes
// them) rather than through batches.
func (h *Healer) useTables(n int) bool {
	least := h.cfg.TableRecords
	if least == 0 {
		least = state.MinTableRecords
	}
	return least > 0 && n >= least
}

// workers is how many day spans a heal builds at once.
func (h *Healer) workers() int {
	if h.cfg.Workers > 0 {
		return h.cfg.Workers
	}
	return runtime.GOMAXPROCS(0)
}

// buildDays builds the day spans spans (ascending) on h.workers()
// goroutines, reading each one's files with read, and returns their results
// in order through next, which blocks until the next span is built (or ctx
// ends). At most workers+1 built spans wait for the caller, so memory stays
// bounded whatever the number of days. stop ends the builds and waits for
// every goroutine; call it once, after the last next.
//
// Only reading and aggregation run here: the caller writes the records, so
// what is written, in which order and in which batches, is what a heal on
// one goroutine writes.
func (h *Healer) buildDays(ctx context.Context, spans []int64, build func(s int64, stopped *atomic.Bool) *builtDay) (next func() (*builtDay, error), stop func()) {
	if len(spans) == 0 {
		return func() (*builtDay, error) { return nil, errors.New("healer: no day to build") }, func() {}
	}
	n := min(h.workers(), len(spans))
	results := make([]chan *builtDay, len(spans))
	for i := range results {
		results[i] = make(chan *builtDay, 1)
	}
	slots := make(chan struct{}, n+1) // spans started and not yet taken
	jobs := make(chan int)
	quit := make(chan struct{})
	var stopped atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(jobs)
		for i := range spans {
			select {
			case slots <- struct{}{}:
			case <-quit:
				return
			}
			select {
			case jobs <- i:
			case <-quit:
				return
			}
		}
	})
	for range n {
		wg.Go(func() {
			for i := range jobs {
				results[i] <- build(spans[i], &stopped)
			}
		})
	}
	i := 0
	next = func() (*builtDay, error) {
		select {
		case b := <-results[i]:
			i++
			<-slots
			return b, b.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	stop = func() {
		stopped.Store(true)
		close(quit)
		wg.Wait()
		// Days built and never taken: drop their tables.
		for _, c := range results[i:] {
			select {
			case b := <-c:
				if b.tables != nil {
					b.tables.Abort()
				}
			default:
			}
		}
	}
	return next, stop
}

// buildDay reads one day span's files and builds it. bad reports malformed
// rows; it is called from the build goroutines.
func (h *Healer) buildDay(v *tiling.View, gen uint64, s, target int64, files []state.DayFiles, free *arenas, stopped *atomic.Bool, bad func(file string, row int64, reason string)) *builtDay {
	b := newDayBuild(v, s, free)
	b.own = h.ownArena
	out := &builtDay{}
	defer func() { out.mem = b.memory() }()
	for _, d := range files {
		rs, err := h.offline.ReadFiles(v, v.EventID, d, func(ev *tiling.Event) error {
			if stopped.Load() {
				return errStopped
			}
			if ev.TS >= target {
				return nil
			}
			b.add(ev)
			return nil
		}, bad)
		if err != nil {
			out.err = fmt.Errorf("read offline log %s day %d: %w", v.Name, d.Date, err)
			return out
		}
		out.stats.Add(rs)
	}
	out.keys, out.kds = b.finish()
	records := 0
	for _, kd := range out.kds {
		records += 1 + len(kd.details)
	}
	if h.useTables(records) {
		if t := h.store.NewTables(v, gen); t != nil {
			for i, key := range out.keys {
				kd := out.kds[i]
				for _, det := range kd.details {
					t.PutDetailBytes(s, key, det.block, det.val)
				}
				t.PutDayRecordBytes(s, key, kd.day)
			}
			out.tables = t
		}
	}
	return out
}
