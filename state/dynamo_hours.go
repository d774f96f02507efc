package state

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tilestream/tilestream/state/dynamo"
	"github.com/tilestream/tilestream/tiling"
)

// Hour segments (docs/format.md, "Hour segments"): the stream tile items of
// one key's record span (an hour of minute tiles) are rolled up, by the
// partition's consumer once it has moved past them, into one segment item
// per span holding every partition's tiles merged and, per (tile,
// partition), the highest offset the segment holds. A tile item then counts
// only for what lies above that offset:
//
//   - a reader counts a tile item of (tile, partition) at offset o only when
//     o is above the highest offset the span's segments hold for it;
//   - a tile item is rolled up in three steps: it is sealed (attribute s, set
//     conditioned on its offset: ingest writes are conditioned on no seal,
//     so a sealed item never changes), absorbed into the span's open
//     segment (conditioned on the segment's version), then deleted
//     (conditioned on its offset). Whoever finds a sealed item (the
//     partition's consumer, a new owner, the same one after a crash)
//     finishes the roll-up before writing the unit again;
//   - a unit whose tile item is absent continues from the offset the
//     segments hold: the ingest applies only the events above it, so a new
//     tile item holds what the segments do not.
//
// A query reads a span's tile items before its segments (segments sort
// after them), so whatever it reads of a tile item that is being rolled up,
// the events are counted once: the item before the segment absorbed it,
// the segment after (the item is deleted only then).

// Attributes of stream items.
const (
	attrSealed      = "s"  // on a tile item: sealed for a roll-up (N, 1)
	attrHourOffsets = "of" // on a segment: the (tile, partition) offsets it holds
	attrHourVersion = "hv" // on a segment: its version, for conditional writes
	attrHourClosed  = "c"  // on a segment: full; the next one is open (N, 1)
)

const (
	// segmentBytes bounds a segment's value and offsets; tiles that do not
	// fit open the span's next segment.
	segmentBytes = 300_000
	// rollupBacklog is how many tile items of (key, partition), older than
	// the newest one the consumer wrote, wait before they are rolled up
	// together: the bound on a partition's unrolled tile items per key
	// beside the newest, traded against write units (each roll-up costs a
	// seal and a delete per tile and one segment write).
	rollupBacklog = 6
	// maxTracked bounds the tiles awaiting a roll-up that an instance keeps
	// track of; past it the list is dropped (the tiles stay as they are
	// until a heal collects them).
	maxTracked = 1 << 20
	// maxLone bounds the lone tiles of their spans kept track of per (key,
	// partition).
	maxLone = 64
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
	val    []byte // the record (Start: hour, no offsets) of the merged tiles
	offs   []byte // attrHourOffsets
}

// segmentOffsets encoding: version (1), uvarint m, m × (uvarint tile −
// span start, uvarint partition, uvarint offset), ascending by tile and
// partition.
func appendSegmentOffsets(dst []byte, hour int64, offs map[tilePart]int64) []byte {
	keys := make([]tilePart, 0, len(offs))
	for k := range offs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b tilePart) int {
		if a.tile != b.tile {
			return int(a.tile - b.tile)
		}
		return int(a.part - b.part)
	})
	dst = append(dst, 1)
	dst = binary.AppendUvarint(dst, uint64(len(keys)))
	for _, k := range keys {
		dst = binary.AppendUvarint(dst, uint64(k.tile-hour))
		dst = binary.AppendUvarint(dst, uint64(k.part))
		dst = binary.AppendUvarint(dst, uint64(offs[k]))
	}
	return dst
}

func decodeSegmentOffsets(hour int64, b []byte, into map[tilePart]int64) error {
	if len(b) == 0 || b[0] != 1 {
		return fmt.Errorf("%w: segment offsets version", tiling.ErrCorrupt)
	}
	b = b[1:]
	m, n := binary.Uvarint(b)
	if n <= 0 {
		return fmt.Errorf("%w: segment offsets", tiling.ErrCorrupt)
	}
	b = b[n:]
	for range m {
		var f [3]uint64
		for i := range f {
			x, n := binary.Uvarint(b)
			if n <= 0 {
				return fmt.Errorf("%w: segment offsets", tiling.ErrCorrupt)
			}
			f[i], b = x, b[n:]
		}
		k := tilePart{hour + int64(f[0]), int32(f[1])}
		if cur, ok := into[k]; !ok || int64(f[2]) > cur {
			into[k] = int64(f[2])
		}
	}
	if len(b) != 0 {
		return fmt.Errorf("%w: segment offsets: trailing bytes", tiling.ErrCorrupt)
	}
	return nil
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

// covered returns, per (tile, partition), the highest offset the segments
// hold.
func covered(segs []hourSeg) (map[tilePart]int64, error) {
	out := map[tilePart]int64{}
	for _, s := range segs {
		if err := decodeSegmentOffsets(s.hour, s.offs, out); err != nil {
			return nil, fmt.Errorf("segment @%d/%d: %w", s.hour, s.seg, err)
		}
	}
	return out, nil
}

// hourSegs reads the segments of one span.
func (d *dynStore) hourSegs(ctx context.Context, v *tiling.View, pk []byte, hour int64) ([]hourSeg, error) {
	var segs []hourSeg
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
			out[s] = append([]hourSeg{}, segs...)
		default:
			out[s] = []hourSeg{decodeHourSeg(v, it)}
		}
	}
	return out, nil
}

// resolveUnit returns the unit (tile, part) for the ingest to write, from
// its stored tile item it (nil: absent): the item when it is a live one;
// after finishing its roll-up when it is sealed; when absent, an empty
// record at the offset the span's segments hold (version -1: the write
// creates the item).
func (d *dynStore) resolveUnit(ctx context.Context, v *tiling.View, pk []byte, key string, tile int64, part int32, it *dynamo.Item) (*tiling.Record, int64, error) {
	return d.resolveUnitWith(ctx, v, pk, key, tile, part, it, nil)
}

// resolveUnitWith is resolveUnit with the span's segments, when known
// (read after the tile item), in segs (nil: read them).
func (d *dynStore) resolveUnitWith(ctx context.Context, v *tiling.View, pk []byte, key string, tile int64, part int32, it *dynamo.Item, segs []hourSeg) (*tiling.Record, int64, error) {
	known := segs != nil
	for range 8 {
		if it == nil {
			var err error
			if !known {
				segs, err = d.hourSegs(ctx, v, pk, v.RecordStart(tile))
			}
			if err != nil {
				return nil, 0, fmt.Errorf("read segments of %s/%q@%d: %w", v.Name, key, tile, err)
			}
			cov, err := covered(segs)
			if err != nil {
				return nil, 0, err
			}
			off, ok := cov[tilePart{tile, part}]
			if !ok {
				return nil, -1, nil
			}
			return &tiling.Record{Start: v.RecordStart(tile), Offsets: []tiling.PartOffset{{Partition: part, Offset: off}}}, -1, nil
		}
		if _, sealed := it.N(attrSealed); !sealed {
			return d.decodeStreamItem(v, key, tile, part, it)
		}
		if err := d.absorbHour(ctx, v, pk, v.RecordStart(tile)); err != nil {
			return nil, 0, err
		}
		known = false
		var err error
		if it, err = d.t.Get(ctx, pk, streamSK(tile, part)); err != nil {
			return nil, 0, err
		}
	}
	return nil, 0, fmt.Errorf("stream tile %s/%q@%d/%d: sealed again and again", v.Name, key, tile, part)
}

// sealedTile is a sealed tile item found in a span.
type sealedTile struct {
	tile int64
	part int32
	off  int64
	val  []byte
	sk   []byte
}

// absorbHour finishes the roll-up of every sealed tile item of one span:
// absorbs those the segments do not hold yet into the open segment (a new
// one when it is full), then deletes them. Each step is conditional, so
// several callers (the consumer, a new owner, a reload after a conflict)
// may run it at once; each re-reads the span after a failed condition.
func (d *dynStore) absorbHour(ctx context.Context, v *tiling.View, pk []byte, hour int64) error {
	for range 64 {
		var sealed []sealedTile
		var segs []hourSeg
		err := d.t.Query(ctx, pk, streamSK(hour, 0), streamSK(hour+v.Span(), 0), func(it *dynamo.Item) error {
			switch {
			case isHourSK(it.SK):
				segs = append(segs, decodeHourSeg(v, it))
			case len(it.SK) == streamSKLen:
				if _, ok := it.N(attrSealed); ok {
					off, _ := it.N("o")
					sealed = append(sealed, sealedTile{
						tile: decodeTime(it.SK[1:9]), part: int32(binary.BigEndian.Uint32(it.SK[9:])),
						off: off, val: it.B("v"), sk: it.SK,
					})
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("read span %s@%d: %w", v.Name, hour, err)
		}
		cov, err := covered(segs)
		if err != nil {
			return err
		}
		var todo, done []sealedTile
		for _, s := range sealed {
			if c, ok := cov[tilePart{s.tile, s.part}]; ok && s.off <= c {
				done = append(done, s)
			} else {
				todo = append(todo, s)
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

// absorbInto writes as many of todo as fit into the span's open segment:
// a new segment after a closed (or without any) one, else the last one;
// when none fits in the last one, it closes it.
func (d *dynStore) absorbInto(ctx context.Context, v *tiling.View, pk []byte, hour int64, segs []hourSeg, todo []sealedTile) error {
	target := hourSeg{hour: hour, ver: 0}
	var cond *dynamo.Cond = dynamo.IfAbsent
	if n := len(segs); n > 0 {
		last := segs[n-1]
		if last.closed {
			target.seg = last.seg + 1
		} else {
			target = last
			cond = dynamo.IfN(false, attrHourVersion, "=", last.ver)
		}
	}
	rec := &tiling.Record{Start: hour}
	offs := map[tilePart]int64{}
	if target.val != nil {
		r, err := v.DecodeRecord(hour, target.val)
		if err != nil {
			return fmt.Errorf("segment %s@%d/%d: %w", v.Name, hour, target.seg, err)
		}
		rec = r
		rec.Offsets = nil
		if err := decodeSegmentOffsets(hour, target.offs, offs); err != nil {
			return err
		}
	}
	var val, of []byte
	added := 0
	for _, s := range todo {
		r, err := v.DecodeRecord(hour, s.val)
		if err != nil {
			return fmt.Errorf("stream tile %s@%d/%d: %w", v.Name, s.tile, s.part, err)
		}
		for i := range r.Tiles {
			v.AddTile(rec, &r.Tiles[i])
		}
		offs[tilePart{s.tile, s.part}] = s.off
		nv, nof := v.AppendRecord(nil, rec), appendSegmentOffsets(nil, hour, offs)
		if (added > 0 || target.val != nil) && len(nv)+len(nof) > segmentBytes {
			break // it goes into the next segment (rec is dropped)
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

// finishAbsorb deletes sealed tile items the segments hold (each
// conditioned on its offset: a new item of the same tile is left alone) and
// writes the span's segments through to the cache.
func (d *dynStore) finishAbsorb(ctx context.Context, pk []byte, segs []hourSeg, done []sealedTile) error {
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
	segs    map[spanKey]bool // spans this instance wrote a segment of
	n       int              // tiles in pending, and spans in segs
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
func (r *rollups) track(recs []dynRecord) []rollupJob {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == nil || r.n > maxTracked {
		r.pending, r.n = map[rollupID]*pendingTiles{}, 0
		r.segs = map[spanKey]bool{}
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
	var jobs []rollupJob
	for id := range touched {
		p := r.pending[id]
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

// rollUp seals the tile items of jobs of one key (each conditioned on the
// offset this instance wrote: one written since by another writer is left
// alone), then absorbs them span by span: one absorption per span for
// every partition sealed in it.
func (d *dynStore) rollUp(ctx context.Context, jobs []rollupJob) error {
	v := jobs[0].v
	pk, err := d.keyPK(v.Name, jobs[0].id.key)
	if err != nil {
		return err
	}
	type sealing struct {
		tile int64
		part int32
		off  int64
	}
	byHour := map[int64][]sealing{}
	for _, job := range jobs {
		for t, off := range job.tiles {
			h := v.RecordStart(t)
			byHour[h] = append(byHour[h], sealing{t, job.id.part, off})
		}
	}
	hours := make([]int64, 0, len(byHour))
	for h := range byHour {
		hours = append(hours, h)
	}
	sort.Slice(hours, func(i, j int) bool { return hours[i] < hours[j] })
	for _, h := range hours {
		var sealed atomic.Int64
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(8)
		for _, s := range byHour[h] {
			g.Go(func() error {
				set := &dynamo.Item{PK: pk, SK: streamSK(s.tile, s.part)}
				set.SetN(attrSealed, 1)
				err := d.t.Update(gctx, set, nil, dynamo.IfN(false, "o", "=", s.off))
				switch {
				case errors.Is(err, dynamo.ErrConditionFailed):
					return nil // changed or gone since: its writer tracks it
				case err != nil:
					return fmt.Errorf("seal stream tile: %w", err)
				}
				sealed.Add(1)
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
		if sealed.Load() == 0 {
			continue
		}
		if err := d.absorbHour(ctx, v, pk, h); err != nil {
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
// leaves a consistent state (sealed items count for readers until a
// roll-up finishes them); its tiles are tried again later.
func (d *dynStore) rollUpDue(ctx context.Context, recs []dynRecord) {
	byKey := map[[2]string][]rollupJob{}
	var order [][2]string
	for _, job := range d.roll.track(recs) {
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
