package state

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tilestream/tilestream/state/dynamo"
	"github.com/tilestream/tilestream/tiling"
)

// Hour segments (docs/format.md, "Hour segments"): the stream tile items of
// one key's record span (an hour of minute tiles) are rolled up, by the
// partition's consumer once it has moved past them, into one segment item
// per span. A segment holds, per (tile, partition), a copy of that tile item
// as it was absorbed, with its offset: a slot. Every tile item and every
// slot is the whole state of its (tile, partition) up to its offset, and
// offsets of one (tile, partition) only grow (each write is built on the
// newest version, read under a condition), so:
//
//   - a reader uses, per (tile, partition), the newest of the tile item and
//     the slots (the highest offset), and merges partitions;
//   - a roll-up writes tile items into the span's open segment (conditioned
//     on its version), replacing their slots, then deletes each item
//     conditioned on its offset (one written since stays, and is newer);
//   - a unit whose tile item is absent continues from its newest slot;
//     a write on a version that a roll-up absorbed and deleted since is
//     made anew when the slot is at that version (the writer's record holds
//     everything the slot does).
//
// No event is counted twice (one version per (tile, partition) is used)
// and none is lost (the version used is the newest read: it holds every
// older one's events).

// Attributes of segments.
const (
	attrHourOffsets = "of" // the (tile, partition) offsets of its slots
	attrHourVersion = "hv" // its version, for conditional writes
	attrHourClosed  = "c"  // full; the next one is open (N, 1)
)

const (
	// segmentBytes bounds a segment's value and offsets; tiles that do not
	// fit open the span's next segment.
	segmentBytes = 300_000
	// rollupBacklog is how many tile items of (key, partition), older than
	// the newest one the consumer wrote, wait before they are rolled up
	// together: the bound on a partition's unrolled tile items per key
	// beside the newest, traded against write units (each roll-up costs a
	// delete per tile and one segment write).
	rollupBacklog = 6
	// maxTracked bounds the tiles awaiting a roll-up that an instance keeps
	// track of; past it the list is dropped (the tiles stay as they are
	// until a heal collects them).
	maxTracked = 1 << 20
	// maxLone bounds the lone tiles of their spans kept track of per (key,
	// partition).
	maxLone = 64
	// rollupCredit caps the time roll-ups may take at once after a quiet
	// period; rollupTiles, the tiles one commit rolls up (the rest of those
	// due wait for the next commits).
	rollupCredit = 2 * time.Second
	rollupTiles  = 1024
)

// hourSK is the sort key of segment seg of the record span starting at
// hour: after every tile item of the span, before the next span's.
func hourSK(v *tiling.View, hour int64, seg int) []byte {
	b := append(streamSK(hour+v.Span()-1, -1), 'H')
	return binary.BigEndian.AppendUint16(b, uint16(seg))
}

const hourSKLen = streamSKLen + 3

func isHourSK(sk []byte) bool {
	return len(sk) == hourSKLen && sk[0] == dskStream && sk[streamSKLen] == 'H'
}

// tilePart names a tile of one partition.
type tilePart struct {
	tile int64
	part int32
}

// hourSeg is one segment item.
type hourSeg struct {
	sk     []byte
	hour   int64
	seg    int
	ver    int64
	closed bool
	val    []byte // slot states (appendSlots)
	offs   []byte // attrHourOffsets
}

// slot is one (tile, partition)'s state in a segment, or in a tile item.
type slot struct {
	off  int64
	tile *tiling.Tile // nil: no events
}

// segmentOffsets encoding: version (1), uvarint m, m × (uvarint tile −
// span start, uvarint partition, uvarint offset), ascending by tile and
// partition.
func appendSegmentOffsets(dst []byte, hour int64, keys []tilePart, slots map[tilePart]slot) []byte {
	dst = append(dst, 1)
	dst = binary.AppendUvarint(dst, uint64(len(keys)))
	for _, k := range keys {
		dst = binary.AppendUvarint(dst, uint64(k.tile-hour))
		dst = binary.AppendUvarint(dst, uint64(k.part))
		dst = binary.AppendUvarint(dst, uint64(slots[k].off))
	}
	return dst
}

func decodeSegmentOffsets(hour int64, b []byte) ([]tilePart, []int64, error) {
	if len(b) == 0 || b[0] != 1 {
		return nil, nil, fmt.Errorf("%w: segment offsets version", tiling.ErrCorrupt)
	}
	b = b[1:]
	m, n := binary.Uvarint(b)
	if n <= 0 || m > uint64(len(b)) {
		return nil, nil, fmt.Errorf("%w: segment offsets", tiling.ErrCorrupt)
	}
	b = b[n:]
	keys, offs := make([]tilePart, 0, m), make([]int64, 0, m)
	for range m {
		var f [3]uint64
		for i := range f {
			x, n := binary.Uvarint(b)
			if n <= 0 {
				return nil, nil, fmt.Errorf("%w: segment offsets", tiling.ErrCorrupt)
			}
			f[i], b = x, b[n:]
		}
		keys = append(keys, tilePart{hour + int64(f[0]), int32(f[1])})
		offs = append(offs, int64(f[2]))
	}
	if len(b) != 0 {
		return nil, nil, fmt.Errorf("%w: segment offsets: trailing bytes", tiling.ErrCorrupt)
	}
	return keys, offs, nil
}

// appendSlots encodes the states of a segment's slots: version (1),
// uvarint n, n × (uvarint partition, uvarint byte length, the record of
// that partition's slots: Start the span, no offsets, its tiles).
func appendSlots(dst []byte, v *tiling.View, hour int64, keys []tilePart, slots map[tilePart]slot) []byte {
	byPart := map[int32]*tiling.Record{}
	var parts []int32
	for _, k := range keys {
		s := slots[k]
		r := byPart[k.part]
		if r == nil {
			r = &tiling.Record{Start: hour}
			byPart[k.part] = r
			parts = append(parts, k.part)
		}
		if s.tile != nil {
			r.Tiles = append(r.Tiles, *s.tile)
		}
	}
	slices.Sort(parts)
	dst = append(dst, 1)
	dst = binary.AppendUvarint(dst, uint64(len(parts)))
	for _, p := range parts {
		rec := v.AppendRecord(nil, byPart[p])
		dst = binary.AppendUvarint(dst, uint64(p))
		dst = binary.AppendUvarint(dst, uint64(len(rec)))
		dst = append(dst, rec...)
	}
	return dst
}

// decodeSlots returns a segment's slots.
func decodeSlots(v *tiling.View, h hourSeg) (map[tilePart]slot, error) {
	keys, offs, err := decodeSegmentOffsets(h.hour, h.offs)
	if err != nil {
		return nil, fmt.Errorf("segment @%d/%d: %w", h.hour, h.seg, err)
	}
	out := make(map[tilePart]slot, len(keys))
	for i, k := range keys {
		out[k] = slot{off: offs[i]}
	}
	b := h.val
	bad := func() error { return fmt.Errorf("segment @%d/%d: %w: slots", h.hour, h.seg, tiling.ErrCorrupt) }
	if len(b) == 0 || b[0] != 1 {
		return nil, bad()
	}
	b = b[1:]
	n, m := binary.Uvarint(b)
	if m <= 0 {
		return nil, bad()
	}
	b = b[m:]
	for range n {
		p, m := binary.Uvarint(b)
		if m <= 0 {
			return nil, bad()
		}
		b = b[m:]
		l, m := binary.Uvarint(b)
		if m <= 0 || uint64(len(b)-m) < l {
			return nil, bad()
		}
		r, err := v.DecodeRecord(h.hour, b[m:m+int(l)])
		if err != nil {
			return nil, fmt.Errorf("segment @%d/%d: %w", h.hour, h.seg, err)
		}
		b = b[m+int(l):]
		for i := range r.Tiles {
			k := tilePart{r.Tiles[i].Start, int32(p)}
			s, ok := out[k]
			if !ok {
				return nil, bad()
			}
			s.tile = &r.Tiles[i]
			out[k] = s
		}
	}
	if len(b) != 0 {
		return nil, bad()
	}
	return out, nil
}

func decodeHourSeg(v *tiling.View, it *dynamo.Item) hourSeg {
	ver, _ := it.N(attrHourVersion)
	_, closed := it.N(attrHourClosed)
	return hourSeg{
		sk:     it.SK,
		hour:   v.RecordStart(decodeTime(it.SK[1:9])),
		seg:    int(binary.BigEndian.Uint16(it.SK[streamSKLen+1:])),
		ver:    ver,
		closed: closed,
		val:    it.B("v"),
		offs:   it.B(attrHourOffsets),
	}
}

// newest returns, per (tile, partition), the newest slot of the segments.
func newest(v *tiling.View, segs []hourSeg) (map[tilePart]slot, error) {
	out := map[tilePart]slot{}
	for _, h := range segs {
		slots, err := decodeSlots(v, h)
		if err != nil {
			return nil, err
		}
		for k, s := range slots {
			if cur, ok := out[k]; !ok || s.off > cur.off {
				out[k] = s
			}
		}
	}
	return out, nil
}

// hourSegs reads the segments of one span.
func (d *dynStore) hourSegs(ctx context.Context, v *tiling.View, pk []byte, hour int64) ([]hourSeg, error) {
	segs := []hourSeg{}
	err := d.t.Query(ctx, pk, hourSK(v, hour, 0), streamSK(hour+v.Span(), 0), func(it *dynamo.Item) error {
		if isHourSK(it.SK) {
			segs = append(segs, decodeHourSeg(v, it))
		}
		return nil
	})
	return segs, err
}

// spanID names one key's record span.
type spanID struct {
	pk   string
	hour int64
}

// spanSegs reads the segments of many spans: their first segments in batch
// reads (a span has later ones only when its first is closed, rarely),
// then the rest of spans with a closed first one by a query each. A span
// without segments maps to an empty, non-nil list.
func (d *dynStore) spanSegs(ctx context.Context, v *tiling.View, spans []spanID) (map[spanID][]hourSeg, error) {
	out := make(map[spanID][]hourSeg, len(spans))
	keys := make([]dynamo.Key, len(spans))
	for i, s := range spans {
		keys[i] = dynamo.Key{PK: []byte(s.pk), SK: hourSK(v, s.hour, 0)}
	}
	got, err := d.t.BatchGet(ctx, keys)
	if err != nil {
		return nil, err
	}
	for i, s := range spans {
		it := got[keys[i].MapKey()]
		var closed bool
		if it != nil {
			_, closed = it.N(attrHourClosed)
		}
		switch {
		case it == nil:
			out[s] = []hourSeg{}
		case closed:
			segs, err := d.hourSegs(ctx, v, []byte(s.pk), s.hour)
			if err != nil {
				return nil, err
			}
			out[s] = segs
		default:
			out[s] = []hourSeg{decodeHourSeg(v, it)}
		}
	}
	return out, nil
}

// resolveUnit returns the unit (tile, part) for the ingest to write, from
// its stored tile item it (nil: absent): the item, or when absent the
// newest slot of the span's segments (version -1: the write creates the
// item).
func (d *dynStore) resolveUnit(ctx context.Context, v *tiling.View, pk []byte, key string, tile int64, part int32, it *dynamo.Item) (*tiling.Record, int64, error) {
	return d.resolveUnitWith(ctx, v, pk, key, tile, part, it, nil)
}

// resolveUnitWith is resolveUnit with the span's segments, when known
// (read after the tile item), in segs (nil: read them).
func (d *dynStore) resolveUnitWith(ctx context.Context, v *tiling.View, pk []byte, key string, tile int64, part int32, it *dynamo.Item, segs []hourSeg) (*tiling.Record, int64, error) {
	if it != nil {
		return d.decodeStreamItem(v, key, tile, part, it)
	}
	s, ok, err := d.slotOf(ctx, v, pk, tile, part, segs)
	if err != nil || !ok {
		return nil, -1, err
	}
	r := &tiling.Record{Start: v.RecordStart(tile), Offsets: []tiling.PartOffset{{Partition: part, Offset: s.off}}}
	if s.tile != nil {
		r.Tiles = []tiling.Tile{*s.tile}
	}
	return r, -1, nil
}

// slotOf returns the newest slot of (tile, part) in the span's segments
// (segs, or read when nil).
func (d *dynStore) slotOf(ctx context.Context, v *tiling.View, pk []byte, tile int64, part int32, segs []hourSeg) (slot, bool, error) {
	if segs == nil {
		var err error
		if segs, err = d.hourSegs(ctx, v, pk, v.RecordStart(tile)); err != nil {
			return slot{}, false, fmt.Errorf("read segments @%d: %w", tile, err)
		}
	}
	best, err := newest(v, segs)
	if err != nil {
		return slot{}, false, err
	}
	s, ok := best[tilePart{tile, part}]
	return s, ok, nil
}

// spanItem is a tile item found in a span.
type spanItem struct {
	tilePart
	off int64
	val []byte
	sk  []byte
}

// absorbHour rolls the tile items of want (per (tile, partition), present
// in the span) up into the span's open segment (a new one when it is full),
// then deletes every tile item of the span that a slot is as new as. Each
// step is conditional, so several instances may run it at once; each
// re-reads the span after a failed condition.
func (d *dynStore) absorbHour(ctx context.Context, v *tiling.View, pk []byte, hour int64, want map[tilePart]bool) error {
	for range 64 {
		var items []spanItem
		var segs []hourSeg
		err := d.t.Query(ctx, pk, streamSK(hour, 0), streamSK(hour+v.Span(), 0), func(it *dynamo.Item) error {
			switch {
			case isHourSK(it.SK):
				segs = append(segs, decodeHourSeg(v, it))
			case len(it.SK) == streamSKLen:
				off, _ := it.N("o")
				items = append(items, spanItem{
					tilePart: tilePart{decodeTime(it.SK[1:9]), int32(binary.BigEndian.Uint32(it.SK[9:]))},
					off:      off, val: it.B("v"), sk: it.SK,
				})
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("read span %s@%d: %w", v.Name, hour, err)
		}
		best, err := newest(v, segs)
		if err != nil {
			return err
		}
		var todo, done []spanItem
		for _, it := range items {
			if s, ok := best[it.tilePart]; ok && it.off <= s.off {
				done = append(done, it)
			} else if want[it.tilePart] {
				todo = append(todo, it)
			}
		}
		if len(todo) == 0 {
			return d.finishAbsorb(ctx, pk, segs, done)
		}
		err = d.absorbInto(ctx, v, pk, hour, segs, todo)
		if err != nil && !errors.Is(err, dynamo.ErrConditionFailed) {
			return err
		}
		// Read the span again: absorbed, or someone else wrote meanwhile.
	}
	return fmt.Errorf("roll-up of %s@%d: the span kept changing", v.Name, hour)
}

// absorbInto writes as many of todo as fit into the span's open segment,
// each replacing its slot there: a new segment after a closed (or without
// any) one, else the last one; when none fits in the last one, it closes
// it.
func (d *dynStore) absorbInto(ctx context.Context, v *tiling.View, pk []byte, hour int64, segs []hourSeg, todo []spanItem) error {
	target := hourSeg{hour: hour}
	cond := dynamo.IfAbsent
	slots := map[tilePart]slot{}
	if n := len(segs); n > 0 {
		last := segs[n-1]
		if last.closed {
			target.seg = last.seg + 1
		} else {
			target = last
			cond = dynamo.IfN(false, attrHourVersion, "=", last.ver)
			var err error
			if slots, err = decodeSlots(v, last); err != nil {
				return err
			}
		}
	}
	var val, of []byte
	added := 0
	for _, it := range todo {
		r, err := v.DecodeRecord(hour, it.val)
		if err != nil {
			return fmt.Errorf("stream tile %s@%d/%d: %w", v.Name, it.tile, it.part, err)
		}
		s := slot{off: it.off}
		for i := range r.Tiles {
			if r.Tiles[i].Start == it.tile {
				s.tile = &r.Tiles[i]
			}
		}
		slots[it.tilePart] = s
		keys := make([]tilePart, 0, len(slots))
		for k := range slots {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b tilePart) int {
			if a.tile != b.tile {
				return cmpInt64(a.tile, b.tile)
			}
			return cmpInt64(int64(a.part), int64(b.part))
		})
		nv, nof := appendSlots(nil, v, hour, keys, slots), appendSegmentOffsets(nil, hour, keys, slots)
		if (added > 0 || target.val != nil) && len(nv)+len(nof) > segmentBytes {
			break // it goes into the next segment (slots is dropped)
		}
		val, of = nv, nof
		added++
	}
	it := &dynamo.Item{PK: pk, SK: hourSK(v, hour, target.seg)}
	if added == 0 {
		// Nothing fits in the open segment: close it.
		it.SetB("v", target.val)
		it.SetB(attrHourOffsets, target.offs)
		it.SetN(attrHourClosed, 1)
	} else {
		it.SetB("v", val)
		it.SetB(attrHourOffsets, of)
	}
	it.SetN(attrHourVersion, target.ver+1)
	if d.ttl > 0 {
		it.SetN(dynamo.TTLAttribute, time.Now().Add(d.ttl).Unix())
	}
	if err := d.t.Put(ctx, it, cond); err != nil {
		return err
	}
	d.m.rolledUp.Add(float64(added))
	return nil
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// finishAbsorb deletes tile items a slot is as new as (each conditioned on
// its offset: one written since stays) and writes the span's segments
// through to the cache.
func (d *dynStore) finishAbsorb(ctx context.Context, pk []byte, segs []hourSeg, done []spanItem) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, s := range done {
		g.Go(func() error {
			err := d.t.Delete(gctx, dynamo.Key{PK: pk, SK: s.sk}, dynamo.IfN(false, "o", "=", s.off))
			if err != nil && !errors.Is(err, dynamo.ErrConditionFailed) {
				return fmt.Errorf("delete rolled-up stream tile: %w", err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if d.cache != nil {
		for _, s := range segs {
			d.cache.putHourSeg(pk, s)
		}
		for _, s := range done {
			d.cache.dropStreamItem(pk, s.sk)
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// Which tiles to roll up, and when

type rollupID struct {
	view string
	key  string
	part int32
}

// rollups keeps the tile items this instance wrote that are not rolled up
// yet, per (view, key, partition).
type rollups struct {
	mu      sync.Mutex
	pending map[rollupID]*pendingTiles
	due     map[rollupID]bool // with rollupBacklog tiles waiting or more
	segs    map[spanKey]bool  // spans this instance wrote a segment of
	n       int               // tiles in pending, and spans in segs
	// share: of the time, the most roll-ups may take
	// (DynamoConfig.RollupShare); credit: the time they may still take,
	// accrued since last.
	share  float64
	credit time.Duration
	last   time.Time
}

// spend counts time roll-ups took.
func (r *rollups) spend(d time.Duration) {
	r.mu.Lock()
	r.credit -= d
	r.mu.Unlock()
}

type pendingTiles struct {
	v     *tiling.View
	tiles map[int64]int64 // tile → offset written
}

// rollupJob is one (view, key, partition)'s tiles to roll up now.
type rollupJob struct {
	id    rollupID
	v     *tiling.View
	tiles map[int64]int64
}

// track records the tile items a commit wrote and returns the roll-ups due:
// for each (key, partition), once rollupBacklog tiles older than the newest
// one written wait, those of them that a roll-up turns into fewer items:
// the tiles of a span with two or more of them waiting, or whose segment
// this instance wrote. A span's lone tile stays an item (rolled up, it
// would leave a segment of one tile instead, for four requests); at most
// maxLone of them wait per (key, partition), the oldest are forgotten.
//
// Roll-ups may take a share of the time (a quarter by default): while the ingest
// catches up a backlog, commits follow each other and most (key,
// partition)s due wait in due, and are rolled up once it has caught up.
func (r *rollups) track(recs []dynRecord, now time.Time) []rollupJob {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == nil || r.n > maxTracked {
		r.pending, r.n = map[rollupID]*pendingTiles{}, 0
		r.segs = map[spanKey]bool{}
		r.due = map[rollupID]bool{}
	}
	touched := map[rollupID]bool{}
	for i := range recs {
		rec := &recs[i]
		id := rollupID{rec.v.Name, rec.key, rec.part}
		p := r.pending[id]
		if p == nil {
			p = &pendingTiles{v: rec.v, tiles: map[int64]int64{}}
			r.pending[id] = p
		}
		if _, ok := p.tiles[rec.tile]; !ok {
			r.n++
		}
		p.tiles[rec.tile] = rec.off
		touched[id] = true
	}
	for id := range touched {
		if len(r.pending[id].tiles)-1 >= rollupBacklog {
			r.due[id] = true
		}
	}
	if r.share < 1 {
		// Credit accrues at share of the time passed, up to a cap; roll-ups
		// spend it, and run only while there is some.
		if !r.last.IsZero() {
			r.credit = min(r.credit+time.Duration(float64(now.Sub(r.last))*r.share), rollupCredit)
		}
		r.last = now
		if r.credit <= 0 {
			return nil
		}
	}
	var jobs []rollupJob
	budget := rollupTiles
	for id := range r.due {
		if budget <= 0 {
			break
		}
		delete(r.due, id)
		p := r.pending[id]
		if p == nil {
			continue
		}
		newest := int64(tiling.MinTime)
		for t := range p.tiles {
			newest = max(newest, t)
		}
		if len(p.tiles)-1 < rollupBacklog {
			continue
		}
		bySpan := map[int64][]int64{}
		for t := range p.tiles {
			if t != newest {
				s := p.v.RecordStart(t)
				bySpan[s] = append(bySpan[s], t)
			}
		}
		job := rollupJob{id: id, v: p.v, tiles: map[int64]int64{}}
		var lone []int64
		for s, ts := range bySpan {
			if len(ts) < 2 && !r.segs[spanKey{id.view, id.key, s}] {
				lone = append(lone, ts...)
				continue
			}
			for _, t := range ts {
				job.tiles[t] = p.tiles[t]
				delete(p.tiles, t)
				r.n--
			}
		}
		if len(lone) > maxLone {
			slices.Sort(lone)
			for _, t := range lone[:len(lone)-maxLone] {
				delete(p.tiles, t)
				r.n--
			}
		}
		if len(job.tiles) > 0 {
			jobs = append(jobs, job)
			budget -= len(job.tiles)
		}
	}
	return jobs
}

// spanKey names a key's record span.
type spanKey struct {
	view, key string
	span      int64
}

// rolled records that this instance wrote a segment of the span.
func (r *rollups) rolled(id rollupID, span int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.segs == nil {
		r.segs = map[spanKey]bool{}
	}
	if k := (spanKey{id.view, id.key, span}); !r.segs[k] {
		r.segs[k] = true
		r.n++
	}
}

// untrack gives the tiles of a failed roll-up back, to be tried again
// with the next due one.
func (r *rollups) untrack(job rollupJob) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pending[job.id]
	if p == nil {
		p = &pendingTiles{v: job.v, tiles: map[int64]int64{}}
		r.pending[job.id] = p
	}
	for t, off := range job.tiles {
		if _, ok := p.tiles[t]; !ok {
			p.tiles[t] = off
			r.n++
		}
	}
}

// rollUp rolls the tile items of jobs of one key up, span by span: one
// absorption per span for every partition's tiles in it.
func (d *dynStore) rollUp(ctx context.Context, jobs []rollupJob) error {
	v := jobs[0].v
	pk, err := d.keyPK(v.Name, jobs[0].id.key)
	if err != nil {
		return err
	}
	byHour := map[int64]map[tilePart]bool{}
	for _, job := range jobs {
		for t := range job.tiles {
			h := v.RecordStart(t)
			if byHour[h] == nil {
				byHour[h] = map[tilePart]bool{}
			}
			byHour[h][tilePart{t, job.id.part}] = true
		}
	}
	hours := make([]int64, 0, len(byHour))
	for h := range byHour {
		hours = append(hours, h)
	}
	sort.Slice(hours, func(i, j int) bool { return hours[i] < hours[j] })
	for _, h := range hours {
		if err := d.absorbHour(ctx, v, pk, h, byHour[h]); err != nil {
			return err
		}
		for _, job := range jobs {
			d.roll.rolled(job.id, h)
		}
	}
	return nil
}

// rollUpDue runs the roll-ups a commit's stream writes made due, key by
// key (the partitions of a key share its spans' segments). A failure
// leaves a consistent state (any step of a roll-up may be cut); its tiles
// are tried again with the next one due.
func (d *dynStore) rollUpDue(ctx context.Context, recs []dynRecord) {
	byKey := map[[2]string][]rollupJob{}
	var order [][2]string
	start := time.Now()
	defer func() { d.roll.spend(time.Since(start)) }()
	for _, job := range d.roll.track(recs, start) {
		k := [2]string{job.id.view, job.id.key}
		if byKey[k] == nil {
			order = append(order, k)
		}
		byKey[k] = append(byKey[k], job)
	}
	var g errgroup.Group
	g.SetLimit(16)
	for _, k := range order {
		jobs := byKey[k]
		g.Go(func() error {
			if err := d.rollUp(ctx, jobs); err != nil {
				for _, job := range jobs {
					d.roll.untrack(job)
				}
				d.m.rollupErrors.Inc()
				d.log.Warn("roll up stream tiles", "view", k[0], "err", err)
			}
			return nil
		})
	}
	g.Wait() //nolint:errcheck // failures are counted and logged per key
}
