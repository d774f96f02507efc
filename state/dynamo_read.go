package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"time"

	"github.com/tilestream/tilestream/state/dynamo"
	"github.com/tilestream/tilestream/tiling"
)

// keySnap is what one query of a key's partition returns: its head, the
// summaries of every generation still stored, and its stream tiles. A read
// uses one snapshot whole, so it never pairs a head with stream tiles read
// at another time. The cache keeps snapshots (cache.go).
type keySnap struct {
	head      *Head
	summaries map[uint64][]byte // gen → assembled summary
	stream    []streamItem      // ascending by (tile, partition)
	hours     []hourSeg         // segments of rolled-up tiles, ascending
	fetched   int64             // unix ms when read from DynamoDB
}

// streamItem is one stream tile item: the tile of one partition, as a record
// of one tile (Start: its record span).
type streamItem struct {
	tile int64
	part int32
	off  int64 // the item's version: the highest offset of part applied
	val  []byte
}

// querySnap reads a key's snapshot from DynamoDB.
func (d *dynStore) querySnap(ctx context.Context, v *tiling.View, pk []byte) (*keySnap, error) {
	snap := &keySnap{summaries: map[uint64][]byte{}}
	var bases []*dynamo.Item
	chunks := map[string]*dynamo.Item{}
	err := d.t.Query(ctx, pk, headSK, []byte{dskEnd}, func(it *dynamo.Item) error {
		switch {
		case len(it.SK) == 1 && it.SK[0] == dskHead:
			h, err := decodeHead(it.B("v"))
			if err != nil {
				return fmt.Errorf("head: %w", err)
			}
			snap.head = &h
		case it.SK[0] == dskSummary && len(it.SK) == 9:
			bases = append(bases, it)
		case it.SK[0] == dskSummary:
			chunks[string(it.SK)] = it
		case it.SK[0] == dskStream && len(it.SK) == streamSKLen:
			off, _ := it.N("o")
			snap.stream = append(snap.stream, streamItem{
				tile: decodeTime(it.SK[1:9]),
				part: int32(binary.BigEndian.Uint32(it.SK[9:])),
				off:  off,
				val:  it.B("v"),
			})
		case isHourSK(it.SK):
			snap.hours = append(snap.hours, decodeHourSeg(v, it))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, it := range bases {
		gen := binary.BigEndian.Uint64(it.SK[1:])
		val, err := joinChunks(it, 0, func(sk []byte) *dynamo.Item { return chunks[string(sk)] })
		if err != nil {
			// A summary being written (chunks first, base last) or
			// collected: not one a head can name yet or still.
			continue
		}
		snap.summaries[gen] = val
	}
	return snap, nil
}

// joinChunks returns the value of base and its chunks (looked up by sort
// key); an error when one is missing.
func joinChunks(base *dynamo.Item, version uint64, chunk func(sk []byte) *dynamo.Item) ([]byte, error) {
	n, ok := base.N("n")
	if !ok || n <= 1 {
		return base.B("v"), nil
	}
	val := bytes.Clone(base.B("v"))
	for i := 1; i < int(n); i++ {
		c := chunk(chunkSK(base.SK, version, i))
		if c == nil {
			return nil, fmt.Errorf("chunk %d of %d of %x/%x is missing", i, n, base.PK, base.SK)
		}
		val = append(val, c.B("v")...)
	}
	return val, nil
}

// assemble returns the value of an item, reading its chunks if it has any.
func (d *dynStore) assemble(ctx context.Context, base *dynamo.Item, version uint64) ([]byte, error) {
	n, _ := base.N("n")
	if n <= 1 {
		return base.B("v"), nil
	}
	keys := make([]dynamo.Key, 0, n-1)
	for i := 1; i < int(n); i++ {
		keys = append(keys, dynamo.Key{PK: base.PK, SK: chunkSK(base.SK, version, i)})
	}
	got, err := d.t.BatchGet(ctx, keys)
	if err != nil {
		return nil, err
	}
	return joinChunks(base, version, func(sk []byte) *dynamo.Item { return got[dynamo.Key{PK: base.PK, SK: sk}.MapKey()] })
}

// snap returns a key's snapshot: from the cache while it is fresh, else
// from DynamoDB (and then cached).
func (d *dynStore) snap(ctx context.Context, v *tiling.View, pk []byte) (*keySnap, error) {
	if d.cache != nil {
		if s, ok := d.cache.snap(v, pk); ok {
			return s, nil
		}
	}
	// The snapshot is as old as the query's start: anything written before
	// it is in it.
	fetched := time.Now().UnixMilli()
	s, err := d.querySnap(ctx, v, pk)
	if err != nil {
		return nil, err
	}
	s.fetched = fetched
	if d.cache != nil {
		d.cache.putSnap(pk, s)
	}
	return s, nil
}

func (d *dynStore) keyPK(view, key string) ([]byte, error) {
	inc, err := d.incarnation(view)
	if err != nil {
		return nil, err
	}
	pk := keyPK(view, inc, key)
	if len(pk) > maxPKBytes {
		return nil, fmt.Errorf("view %s: key of %d bytes is over what a DynamoDB partition key holds beside the view name (%d)", view, len(key), maxPKBytes-(len(pk)-len(key)))
	}
	return pk, nil
}

// readKey is ReadKey on DynamoDB: one query of the key's partition (or its
// cached snapshot) gives the head, its summary and the stream tiles; the day
// and detail records a window start inside a day needs come from the cache
// (they never change) or one batch read.
func (d *dynStore) readKey(ctx context.Context, v *tiling.View, key string, t int64) (KeyData, error) {
	kd := KeyData{BatchWatermark: tiling.MinTime}
	pk, err := d.keyPK(v.Name, key)
	if err != nil {
		return kd, err
	}
	snap, err := d.snap(ctx, v, pk)
	if err != nil {
		return kd, fmt.Errorf("read %s/%q: %w", v.Name, key, err)
	}
	from, to := v.ReadRange(t)
	kd.RecordsRead++
	if h := snap.head; h != nil {
		val := snap.summaries[h.Gen]
		if val == nil {
			return kd, fmt.Errorf("read %s/%q: head names generation %d but its summary is missing", v.Name, key, h.Gen)
		}
		sum, err := v.DecodeSummaryForRead(val)
		if err == nil {
			err = v.PrepareSummary(sum, t)
		}
		if err != nil {
			return kd, fmt.Errorf("summary %s/%q@%d: %w", v.Name, key, h.Gen, err)
		}
		kd.BatchWatermark = sum.Watermark
		b := &tiling.Batch{Summary: sum, Days: map[int64][]tiling.State{}}
		if err := d.batchRecords(ctx, v, pk, key, t, b, &kd); err != nil {
			return kd, err
		}
		kd.Batch = b
		from = max(from, sum.Watermark)
	}
	kd.Records, err = mergeStream(v, snap.stream, snap.hours, from, to)
	if err != nil {
		return kd, fmt.Errorf("read %s/%q: %w", v.Name, key, err)
	}
	kd.RecordsRead += len(kd.Records)
	return kd, nil
}

// batchRecords fetches the day records BatchNeeds asks for and decodes the
// suffix of each window start from them, then the detail records of the
// starts inside blocks of several tiles: two rounds at most, each one batch
// read, cached forever (a generation's records never change).
func (d *dynStore) batchRecords(ctx context.Context, v *tiling.View, pk []byte, key string, t int64, b *tiling.Batch, kd *KeyData) error {
	needs := v.BatchNeeds(t, b.Summary)
	if len(needs) == 0 {
		return nil
	}
	var dayKeys [][]byte
	seen := map[int64]bool{}
	for _, n := range needs {
		if !seen[n.Day] {
			seen[n.Day] = true
			dayKeys = append(dayKeys, daySK(n.Gen, n.Day))
		}
	}
	kd.RecordsRead += len(dayKeys)
	days, err := d.immutable(ctx, pk, dayKeys)
	if err != nil {
		return fmt.Errorf("read %s/%q: %w", v.Name, key, err)
	}
	var withDetail []tiling.BatchNeed
	for _, n := range needs {
		val := days[string(daySK(n.Gen, n.Day))]
		if val == nil {
			continue
		}
		st, detail, err := v.DecodeDaySuffix(n.Day, val, n.Start)
		if err != nil {
			return fmt.Errorf("day record %s/%q@%d/%d: %w", v.Name, key, n.Gen, n.Day, err)
		}
		b.Days[n.Start] = st
		if detail {
			withDetail = append(withDetail, n)
		}
	}
	if len(withDetail) == 0 {
		return nil
	}
	var detailKeys [][]byte
	blocks := map[int64]bool{}
	for _, n := range withDetail {
		if !blocks[n.Block] { // two window starts in one block: one key
			blocks[n.Block] = true
			detailKeys = append(detailKeys, detailSK(n.Gen, n.Day, n.Block))
		}
	}
	details, err := d.immutable(ctx, pk, detailKeys)
	if err != nil {
		return fmt.Errorf("read %s/%q: %w", v.Name, key, err)
	}
	for _, n := range withDetail {
		val := details[string(detailSK(n.Gen, n.Day, n.Block))]
		if val == nil {
			continue
		}
		st, err := v.DecodeDetailSuffix(n.Block, val, n.Start)
		if err != nil {
			return fmt.Errorf("detail record %s/%q@%d/%d: %w", v.Name, key, n.Gen, n.Block, err)
		}
		b.Days[n.Start] = mergeDayPart(b.Days[n.Start], st)
		kd.RecordsRead++
	}
	return nil
}

// immutable returns the values of generation records of one key partition
// by sort key (absent ones are missing from the map), from the cache or
// DynamoDB.
func (d *dynStore) immutable(ctx context.Context, pk []byte, sks [][]byte) (map[string][]byte, error) {
	out := map[string][]byte{}
	var miss []dynamo.Key
	for _, sk := range sks {
		if d.cache != nil {
			if val, ok := d.cache.immutable(pk, sk); ok {
				out[string(sk)] = val
				continue
			}
		}
		miss = append(miss, dynamo.Key{PK: pk, SK: sk})
	}
	if len(miss) == 0 {
		return out, nil
	}
	got, err := d.t.BatchGet(ctx, miss)
	if err != nil {
		return nil, err
	}
	for _, k := range miss {
		it := got[k.MapKey()]
		if it == nil {
			continue
		}
		val, err := d.assemble(ctx, it, 0)
		if err != nil {
			return nil, err
		}
		out[string(k.SK)] = val
		if d.cache != nil {
			d.cache.putImmutable(pk, k.SK, val)
		}
	}
	return out, nil
}

// mergeStream turns the stream items of [RecordStart(from), to) into one
// record per record span: per (tile, partition) the newest of its tile item
// and its slots in the span's segments (each holds every event of the
// older ones), the partitions merged (merge is associative and
// commutative, so the order does not matter).
func mergeStream(v *tiling.View, items []streamItem, hours []hourSeg, from, to int64) ([]*tiling.Record, error) {
	lo := v.RecordStart(from)
	var inRange []hourSeg
	for _, h := range hours {
		if h.hour >= lo && h.hour < to {
			inRange = append(inRange, h)
		}
	}
	best, err := newest(v, inRange)
	if err != nil {
		return nil, err
	}
	for i := range items {
		it := &items[i]
		if it.tile < lo || it.tile >= to {
			continue
		}
		k := tilePart{it.tile, it.part}
		if s, ok := best[k]; ok && it.off <= s.off {
			continue // a segment holds this version, or a newer one
		}
		r, err := v.DecodeRecord(v.RecordStart(it.tile), it.val)
		if err != nil {
			return nil, fmt.Errorf("stream tile @%d/%d: %w", it.tile, it.part, err)
		}
		s := slot{off: it.off}
		for j := range r.Tiles {
			if r.Tiles[j].Start == it.tile {
				s.tile = &r.Tiles[j]
			}
		}
		best[k] = s
	}
	keys := make([]tilePart, 0, len(best))
	for k, s := range best {
		if s.tile != nil && k.tile >= lo && k.tile < to {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].tile != keys[j].tile {
			return keys[i].tile < keys[j].tile
		}
		return keys[i].part < keys[j].part
	})
	var out []*tiling.Record
	for _, k := range keys {
		start := v.RecordStart(k.tile)
		if n := len(out); n == 0 || out[n-1].Start != start {
			out = append(out, &tiling.Record{Start: start})
		}
		v.AddTile(out[len(out)-1], best[k].tile)
	}
	return out, nil
}

// head returns a key's head: from a fresh cached snapshot, else one read.
func (d *dynStore) head(v *tiling.View, key string) (Head, bool, error) {
	pk, err := d.keyPK(v.Name, key)
	if err != nil {
		return Head{}, false, err
	}
	if d.cache != nil {
		if s, ok := d.cache.snap(v, pk); ok {
			if s.head == nil {
				return Head{}, false, nil
			}
			return *s.head, true, nil
		}
	}
	ctx, cancel := opCtx()
	defer cancel()
	it, err := d.t.Get(ctx, pk, headSK)
	if err != nil || it == nil {
		return Head{}, false, err
	}
	h, err := decodeHead(it.B("v"))
	if err != nil {
		return Head{}, false, fmt.Errorf("head %s/%q: %w", v.Name, key, err)
	}
	return h, true, nil
}

// loadRecord returns the stream tile item of (key, tile, partition) with its
// version (-1: absent), for the ingest to apply events to: the copy this
// instance cached when it last wrote or read it, else a read. A cached copy
// may be older than the table when another instance wrote since; the
// conditional write then fails and the ingest reloads (conflicts).
func (d *dynStore) loadRecord(v *tiling.View, key string, tile int64, part int32) (*tiling.Record, int64, error) {
	pk, err := d.keyPK(v.Name, key)
	if err != nil {
		return nil, 0, err
	}
	sk := streamSK(tile, part)
	if d.cache != nil {
		if val, off, ok := d.cache.streamItem(pk, sk); ok {
			r, err := v.DecodeRecord(v.RecordStart(tile), val)
			if err == nil {
				return r, off, nil
			}
			// A corrupt cache entry: read the table.
		}
	}
	ctx, cancel := opCtx()
	defer cancel()
	it, err := d.t.Get(ctx, pk, sk)
	if err != nil {
		return nil, 0, fmt.Errorf("read stream tile %s/%q@%d/%d: %w", v.Name, key, tile, part, err)
	}
	return d.resolveUnit(ctx, v, pk, key, tile, part, it)
}

func (d *dynStore) decodeStreamItem(v *tiling.View, key string, tile int64, part int32, it *dynamo.Item) (*tiling.Record, int64, error) {
	if it == nil {
		return nil, -1, nil
	}
	off, _ := it.N("o")
	r, err := v.DecodeRecord(v.RecordStart(tile), it.B("v"))
	if err != nil {
		return nil, 0, fmt.Errorf("decode stream tile %s/%q@%d/%d: %w", v.Name, key, tile, part, err)
	}
	return r, off, nil
}

// getRecord returns the merged record of (view, key) starting at start.
func (d *dynStore) getRecord(v *tiling.View, key string, start int64) (*tiling.Record, error) {
	pk, err := d.keyPK(v.Name, key)
	if err != nil {
		return nil, err
	}
	ctx, cancel := opCtx()
	defer cancel()
	s, err := d.querySnap(ctx, v, pk)
	if err != nil {
		return nil, err
	}
	recs, err := mergeStream(v, s.stream, s.hours, start, start+v.Span())
	if err != nil || len(recs) == 0 {
		return nil, err
	}
	return recs[0], nil
}

// ---------------------------------------------------------------------------
// Generation records, for the healer

func (d *dynStore) dayRecord(v *tiling.View, gen uint64, day int64, key string) (*tiling.Record, error) {
	pk, err := d.keyPK(v.Name, key)
	if err != nil {
		return nil, err
	}
	ctx, cancel := opCtx()
	defer cancel()
	got, err := d.immutable(ctx, pk, [][]byte{daySK(gen, day)})
	if err != nil {
		return nil, err
	}
	val := got[string(daySK(gen, day))]
	if val == nil {
		return nil, nil
	}
	r, err := v.DecodeDayRecord(day, val)
	if err != nil {
		return nil, fmt.Errorf("day record %s/%q@%d/%d: %w", v.Name, key, gen, day, err)
	}
	return r, nil
}

func (d *dynStore) detailSuffix(v *tiling.View, gen uint64, day int64, key string, block, from int64) ([]tiling.State, error) {
	pk, err := d.keyPK(v.Name, key)
	if err != nil {
		return nil, err
	}
	ctx, cancel := opCtx()
	defer cancel()
	sk := detailSK(gen, day, block)
	got, err := d.immutable(ctx, pk, [][]byte{sk})
	if err != nil {
		return nil, err
	}
	val := got[string(sk)]
	if val == nil {
		return nil, nil
	}
	st, err := v.DecodeDetailSuffix(block, val, from)
	if err != nil {
		return nil, fmt.Errorf("detail record %s/%q@%d/%d: %w", v.Name, key, gen, block, err)
	}
	return st, nil
}

// listKeys returns the keys listed under the shards of a key list, sorted,
// with each list item.
func (d *dynStore) listKeys(ctx context.Context, pk func(shard byte) []byte) ([]string, map[string]*dynamo.Item, error) {
	var keys []string
	items := map[string]*dynamo.Item{}
	for shard := range byte(listShards) {
		if err := d.t.QueryPrefix(ctx, pk(shard), nil, func(it *dynamo.Item) error {
			k := string(it.B("k"))
			keys = append(keys, k)
			items[k] = it
			return nil
		}); err != nil {
			return nil, nil, err
		}
	}
	sort.Strings(keys)
	return keys, items, nil
}

// scanKeys calls fn for every key with a summary of generation gen.
func (d *dynStore) scanKeys(view string, gen uint64, fn func(key string) error) error {
	inc, err := d.incarnation(view)
	if err != nil {
		return err
	}
	// A listing of every key of a generation takes as long as the keys
	// take: no overall deadline (each request has the SDK's), as for the
	// other whole-generation scans.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	keys, _, err := d.listKeys(ctx, func(s byte) []byte { return genKeysPK(view, inc, gen, s) })
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := fn(k); err != nil {
			return err
		}
	}
	return nil
}

// scanGenRecords reads, for every key of a list, the generation record at
// sk in the key's partition, 100 keys per batch read, and calls fn in key
// order.
func (d *dynStore) scanGenRecords(ctx context.Context, view string, inc uint32, keys []string, sk []byte, fn func(key string, val []byte) error) error {
	for i := 0; i < len(keys); i += 100 {
		chunk := keys[i:min(i+100, len(keys))]
		ks := make([]dynamo.Key, len(chunk))
		for j, k := range chunk {
			ks[j] = dynamo.Key{PK: keyPK(view, inc, k), SK: sk}
		}
		got, err := d.t.BatchGet(ctx, ks)
		if err != nil {
			return err
		}
		for j, k := range chunk {
			it := got[ks[j].MapKey()]
			if it == nil {
				continue // listed before it was written, or deleted since
			}
			val, err := d.assemble(ctx, it, 0)
			if err != nil {
				return err
			}
			if err := fn(k, val); err != nil {
				return err
			}
		}
	}
	return nil
}

func (d *dynStore) scanSummaries(v *tiling.View, gen uint64, fn func(key string, s *tiling.Summary) error) error {
	inc, err := d.incarnation(v.Name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	keys, _, err := d.listKeys(ctx, func(s byte) []byte { return genKeysPK(v.Name, inc, gen, s) })
	if err != nil {
		return err
	}
	return d.scanGenRecords(ctx, v.Name, inc, keys, summarySK(gen), func(key string, val []byte) error {
		sum, err := v.DecodeSummary(val)
		if err != nil {
			return fmt.Errorf("summary %s/%q@%d: %w", v.Name, key, gen, err)
		}
		return fn(key, sum)
	})
}

// summaries reads the summaries of generation gen of keys, 100 keys per
// batch read, and calls fn with the index of each key that has one.
func (d *dynStore) summaries(v *tiling.View, gen uint64, keys []string, fn func(i int, val []byte) error) error {
	inc, err := d.incarnation(v.Name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	i := 0
	return d.scanGenRecords(ctx, v.Name, inc, keys, summarySK(gen), func(key string, val []byte) error {
		for keys[i] != key {
			i++ // keys without a summary were skipped
		}
		return fn(i, val)
	})
}

func (d *dynStore) scanDayRecords(v *tiling.View, gen uint64, day int64, fn func(key string, r *tiling.Record) error) error {
	inc, err := d.incarnation(v.Name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	keys, _, err := d.listKeys(ctx, func(s byte) []byte { return dayKeysPK(v.Name, inc, gen, day, s) })
	if err != nil {
		return err
	}
	return d.scanGenRecords(ctx, v.Name, inc, keys, daySK(gen, day), func(key string, val []byte) error {
		r, err := v.DecodeDayRecord(day, val)
		if err != nil {
			return fmt.Errorf("day record %s/%q@%d/%d: %w", v.Name, key, gen, day, err)
		}
		return fn(key, r)
	})
}

// UnitID names a stream unit of one key: its start and partition (see
// StreamLayout).
type UnitID struct {
	Key   string
	Start int64
	Part  int32
}

// LoadedUnit is a unit as stored: Rec nil when absent, Ver its version (-1:
// absent).
type LoadedUnit struct {
	Rec *tiling.Record
	Ver int64
}

// LoadRecords is LoadRecord for many units of a view at once: from the
// local cache, else in batch reads of 100 (DynamoDB only; nil on Pebble,
// whose reads are local and cheap one by one).
func (s *Store) LoadRecords(v *tiling.View, ids []UnitID) (map[UnitID]LoadedUnit, error) {
	if s.dyn == nil {
		return nil, nil
	}
	return s.dyn.loadRecords(v, ids)
}

// Heads returns the heads of many keys of a view (absent keys have none),
// in batch reads (DynamoDB only; nil on Pebble).
func (s *Store) Heads(v *tiling.View, keys []string) (map[string]Head, error) {
	if s.dyn == nil {
		return nil, nil
	}
	return s.dyn.heads(v, keys)
}

func (d *dynStore) loadRecords(v *tiling.View, ids []UnitID) (map[UnitID]LoadedUnit, error) {
	out := make(map[UnitID]LoadedUnit, len(ids))
	var keys []dynamo.Key
	var want []UnitID
	for _, id := range ids {
		pk, err := d.keyPK(v.Name, id.Key)
		if err != nil {
			return nil, err
		}
		sk := streamSK(id.Start, id.Part)
		if d.cache != nil {
			if val, off, ok := d.cache.streamItem(pk, sk); ok {
				if r, err := v.DecodeRecord(v.RecordStart(id.Start), val); err == nil {
					out[id] = LoadedUnit{r, off}
					continue
				}
			}
		}
		keys = append(keys, dynamo.Key{PK: pk, SK: sk})
		want = append(want, id)
	}
	if len(keys) == 0 {
		return out, nil
	}
	ctx, cancel := opCtx()
	defer cancel()
	got, err := d.t.BatchGet(ctx, keys)
	if err != nil {
		return nil, fmt.Errorf("read stream tiles of %s: %w", v.Name, err)
	}
	// Units without a tile item continue from their span's segments, read
	// after the tile items (docs/format.md, hour segments).
	var spans []spanID
	seen := map[spanID]bool{}
	for i, id := range want {
		if got[keys[i].MapKey()] == nil {
			s := spanID{string(keys[i].PK), v.RecordStart(id.Start)}
			if !seen[s] {
				seen[s] = true
				spans = append(spans, s)
			}
		}
	}
	segs := map[spanID][]hourSeg{}
	if len(spans) > 0 {
		if segs, err = d.spanSegs(ctx, v, spans); err != nil {
			return nil, fmt.Errorf("read segments of %s: %w", v.Name, err)
		}
	}
	for i, id := range want {
		it := got[keys[i].MapKey()]
		var known []hourSeg
		if it == nil {
			known = segs[spanID{string(keys[i].PK), v.RecordStart(id.Start)}]
		}
		r, ver, err := d.resolveUnitWith(ctx, v, keys[i].PK, id.Key, id.Start, id.Part, it, known)
		if err != nil {
			return nil, err
		}
		out[id] = LoadedUnit{r, ver}
	}
	return out, nil
}

func (d *dynStore) heads(v *tiling.View, keys []string) (map[string]Head, error) {
	out := make(map[string]Head, len(keys))
	var ks []dynamo.Key
	var want []string
	for _, k := range keys {
		pk, err := d.keyPK(v.Name, k)
		if err != nil {
			return nil, err
		}
		if d.cache != nil {
			if s, ok := d.cache.snap(v, pk); ok {
				if s.head != nil {
					out[k] = *s.head
				}
				continue
			}
		}
		ks = append(ks, dynamo.Key{PK: pk, SK: headSK})
		want = append(want, k)
	}
	if len(ks) == 0 {
		return out, nil
	}
	ctx, cancel := opCtx()
	defer cancel()
	got, err := d.t.BatchGet(ctx, ks)
	if err != nil {
		return nil, fmt.Errorf("read heads of %s: %w", v.Name, err)
	}
	for i, k := range want {
		if it := got[ks[i].MapKey()]; it != nil {
			h, err := decodeHead(it.B("v"))
			if err != nil {
				return nil, fmt.Errorf("head %s/%q: %w", v.Name, k, err)
			}
			out[k] = h
		}
	}
	return out, nil
}
