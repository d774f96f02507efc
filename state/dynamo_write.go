package state

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tilestream/tilestream/state/dynamo"
	"github.com/tilestream/tilestream/tiling"
)

// A Batch on DynamoDB is a list of operations that Commit applies in phases,
// because DynamoDB writes one item atomically and no more (docs/format.md,
// "Crash safety without transactions"):
//
//  1. deletes of garbage (generation records, stream tiles below W_b);
//  2. generation records (summaries, day and detail records, chunks first
//     within an item's set) and their key lists, by BatchWriteItem;
//  3. stream tiles, each a conditional PutItem on the version it was read at;
//  4. heads, each a conditional PutItem on an older generation;
//  5. ingest and archive progress;
//  6. the healer's state, a conditional PutItem on the version it was read at.
//
// A phase starts only when the one before succeeded, so whatever a crash
// leaves is a prefix of that order. Callers put in one batch only what may be
// made durable in that order.
type dynOps struct {
	deletes []dynDelete
	gen     []*dynamo.Item // generation records, their chunks and list items
	records []dynRecord
	heads   []dynHead
	prog    []dynProgress
	archive map[archiveID]*dynArchive
	archOrd []archiveID
	meta    []dynMeta
}

type dynDelete struct {
	kind   byte // dskSummary (every summary of gen), dskDay (every day and detail record of (gen, day)), dskStream
	view   string
	key    string
	gen    uint64
	day    int64
	before int64
}

type dynRecord struct {
	v     *tiling.View
	key   string
	tile  int64
	part  int32
	val   []byte
	off   int64
	prev  int64 // version the write is conditioned on; -1: absent
	force bool  // unconditional (a rebuild, with no ingest running)
}

type dynHead struct {
	view, key string
	h         Head
}

type dynProgress struct {
	topic string
	part  int32
	p     Progress
}

type archiveID struct {
	view string
	part int32
}

type dynArchive struct {
	progress     *Progress
	intent       *ArchiveIntent
	deleteIntent bool
	pending      *int64
}

type dynMeta struct {
	view string
	val  []byte
	ver  int64
}

// chunkBytes is the most value bytes one item carries; longer values are
// split (dynamo.MaxItemBytes leaves room for the key and attribute names).
const chunkBytes = 350_000

// RecordWrite is the outcome of one conditional stream write of a batch
// (PutRecordIf, in call order).
type RecordWrite struct {
	// Written: the write is durable.
	Written bool
	// Conflict: the stored item was not at the version the write was
	// conditioned on (another writer got there first, or an SDK retry of
	// this very write succeeded before); Current is the item as stored now
	// (nil: absent), at version CurrentVersion (-1: absent).
	Conflict       bool
	Current        *tiling.Record
	CurrentVersion int64
}

// WriteError is returned by Commit on DynamoDB when not every conditional
// stream write of the batch was made: Records has the outcome of each
// (PutRecordIf order). Writes of later phases (progress) were not made. Err
// is the first failure other than a conflict (nil when conflicts are all).
type WriteError struct {
	Records []RecordWrite
	Err     error
}

func (e *WriteError) Error() string {
	n := 0
	for _, r := range e.Records {
		if r.Conflict {
			n++
		}
	}
	if e.Err != nil {
		return fmt.Sprintf("write stream tiles (%d conflicts): %v", n, e.Err)
	}
	return fmt.Sprintf("write stream tiles: %d conflicts", n)
}

func (e *WriteError) Unwrap() error { return e.Err }

// ErrConflict is returned when a conditional write of the healer's state or
// of a head lost to another writer: another instance healed the view.
var ErrConflict = errors.New("state: written concurrently by another instance")

func (d *dynStore) commit(b *Batch) error {
	ops := b.ops
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	defer func() { d.m.commit.Observe(time.Since(start).Seconds()) }()
	if err := d.applyDeletes(ctx, ops.deletes); err != nil {
		return err
	}
	if len(ops.gen) > 0 {
		if err := d.t.BatchWrite(ctx, ops.gen, nil); err != nil {
			return fmt.Errorf("write generation records: %w", err)
		}
	}
	if len(ops.records) > 0 {
		if err := d.writeRecords(ctx, ops.records); err != nil {
			return err
		}
	}
	err := d.writeHeads(ctx, ops.heads)
	if err == nil {
		err = d.writeProgress(ctx, ops)
	}
	for _, m := range ops.meta {
		if err != nil {
			break
		}
		err = d.putMeta(ctx, m)
	}
	if err == nil && len(ops.records) > 0 {
		// Roll up the tiles the partitions' consumers have moved past
		// (docs/format.md, hour segments); a failure leaves exact reads.
		d.rollUpDue(ctx, ops.records)
	}
	if err != nil && len(ops.records) > 0 {
		// The stream writes are durable; say so, so that they are not
		// written again.
		we := &WriteError{Records: make([]RecordWrite, len(ops.records)), Err: err}
		for i := range we.Records {
			we.Records[i].Written = true
		}
		return we
	}
	return err
}

// writeRecords makes the conditional stream writes, Parallel at a time.
func (d *dynStore) writeRecords(ctx context.Context, recs []dynRecord) error {
	out := make([]RecordWrite, len(recs))
	var mu sync.Mutex
	var first error
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range recs {
		r := &recs[i]
		g.Go(func() error {
			rw, err := d.writeRecord(gctx, r)
			mu.Lock()
			defer mu.Unlock()
			out[i] = rw
			if err != nil && first == nil {
				first = err
			}
			return nil
		})
	}
	g.Wait() //nolint:errcheck // errors are collected per record
	failed := first != nil
	for _, rw := range out {
		failed = failed || rw.Conflict
	}
	if failed {
		return &WriteError{Records: out, Err: first}
	}
	return nil
}

func (d *dynStore) writeRecord(ctx context.Context, r *dynRecord) (RecordWrite, error) {
	pk, err := d.keyPK(r.v.Name, r.key)
	if err != nil {
		return RecordWrite{}, err
	}
	it := &dynamo.Item{PK: pk, SK: streamSK(r.tile, r.part)}
	it.SetB("v", r.val)
	it.SetN("o", r.off)
	if d.ttl > 0 {
		it.SetN(dynamo.TTLAttribute, time.Now().Add(d.ttl).Unix())
	}
	var cond *dynamo.Cond
	switch {
	case r.force:
	case r.prev < 0:
		cond = dynamo.IfAbsent
	default:
		cond = dynamo.IfN(false, "o", "=", r.prev)
	}
	err = d.t.Put(ctx, it, cond)
	var ce *dynamo.ConditionError
	switch {
	case err == nil:
		if d.cache != nil {
			d.cache.putStreamItem(pk, it.SK, r.val, r.off)
		}
		return RecordWrite{Written: true}, nil
	case errors.As(err, &ce):
		cur := ce.Current
		if cur == nil {
			// DynamoDB returns the stored item with the failure; servers
			// that do not (dynalite) need a read.
			if cur, err = d.t.Get(ctx, pk, it.SK); err != nil {
				return RecordWrite{}, err
			}
		}
		if d.cache != nil {
			d.cache.dropStreamItem(pk, it.SK)
		}
		if cur == nil && r.prev >= 0 {
			// Rolled up since it was read (by this instance's own roll-up,
			// most often): when the newest slot is the version this write
			// was built on, the write holds everything the slot does and
			// more, and is made anew.
			s, ok, err := d.slotOf(ctx, r.v, pk, r.tile, r.part, nil)
			if err != nil {
				return RecordWrite{}, err
			}
			if ok && s.off == r.prev {
				again := *r
				again.prev = -1
				return d.writeRecord(ctx, &again)
			}
		}
		// An absent item continues from the newest slot of its segments.
		rec, ver, err := d.resolveUnit(ctx, r.v, pk, r.key, r.tile, r.part, cur)
		if err != nil {
			return RecordWrite{}, err
		}
		d.m.conflicts.Inc()
		return RecordWrite{Conflict: true, Current: rec, CurrentVersion: ver}, nil
	}
	return RecordWrite{}, err
}

// writeHeads switches heads, each conditioned on naming an older generation
// (or none): a head already on this generation (a resumed install) or a
// newer one (another heal won) is left alone.
func (d *dynStore) writeHeads(ctx context.Context, heads []dynHead) error {
	if len(heads) == 0 {
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	var newer sync.Once
	var lost bool
	for i := range heads {
		h := &heads[i]
		g.Go(func() error {
			pk, err := d.keyPK(h.view, h.key)
			if err != nil {
				return err
			}
			it := &dynamo.Item{PK: pk, SK: headSK}
			it.SetB("v", encodeHead(h.h))
			it.SetN("g", int64(h.h.Gen))
			err = d.t.Put(gctx, it, dynamo.IfN(true, "g", "<", int64(h.h.Gen)))
			if errors.Is(err, dynamo.ErrConditionFailed) {
				cur, gerr := d.t.Get(gctx, pk, headSK)
				if gerr != nil {
					return gerr
				}
				if g, _ := cur.N("g"); g > int64(h.h.Gen) {
					newer.Do(func() { lost = true })
				}
				return nil
			}
			if err == nil && d.cache != nil {
				d.cache.dropSnap(pk)
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("switch heads: %w", err)
	}
	if lost {
		return fmt.Errorf("switch heads: %w: a newer generation is installed", ErrConflict)
	}
	return nil
}

func (d *dynStore) writeProgress(ctx context.Context, ops *dynOps) error {
	for _, p := range ops.prog {
		it := &dynamo.Item{PK: progressPK(p.topic), SK: partitionSK(p.part)}
		it.SetB("v", encodeProgress(p.p))
		it.SetN("nx", p.p.Next)
		// Never move a partition's progress back (a zombie member after a
		// rebalance): the newer write wins.
		err := d.t.Put(ctx, it, dynamo.IfN(true, "nx", "<=", p.p.Next))
		if err != nil && !errors.Is(err, dynamo.ErrConditionFailed) {
			return fmt.Errorf("write progress of %s/%d: %w", p.topic, p.part, err)
		}
	}
	for _, id := range ops.archOrd {
		a := ops.archive[id]
		set := &dynamo.Item{PK: archivePK(id.view), SK: partitionSK(id.part)}
		var remove []string
		if a.progress != nil {
			set.SetB("pr", encodeProgress(*a.progress))
			if a.pending == nil {
				remove = append(remove, "pm")
			}
		}
		if a.pending != nil {
			set.SetN("pm", *a.pending)
		}
		if a.intent != nil {
			val, _ := json.Marshal(a.intent)
			set.SetB("in", val)
		} else if a.deleteIntent {
			remove = append(remove, "in")
		}
		if len(set.Bin) == 0 && len(remove) == 0 {
			continue
		}
		if err := d.t.Update(ctx, set, remove, nil); err != nil {
			return fmt.Errorf("write archive progress of %s/%d: %w", id.view, id.part, err)
		}
	}
	return nil
}

// putMeta writes the healer's state conditioned on the version it was read
// at (0: none), as version ver+1; a longer state goes into chunks of the new
// version first, and the previous version's chunks are deleted after.
func (d *dynStore) putMeta(ctx context.Context, m dynMeta) error {
	inc, err := d.incarnation(m.view)
	if err != nil {
		return err
	}
	pk := viewPK(m.view, inc)
	ver := m.ver + 1
	base, chunks := splitChunks(pk, dskMeta, m.val, uint64(ver))
	base.SetN("mv", ver)
	if len(chunks) > 0 {
		if err := d.t.BatchWrite(ctx, chunks, nil); err != nil {
			return fmt.Errorf("write healer state of %s: %w", m.view, err)
		}
	}
	var old *dynamo.Item
	if m.ver > 0 {
		if old, err = d.t.Get(ctx, pk, dskMeta); err != nil {
			return err
		}
	}
	cond := dynamo.IfN(false, "mv", "=", m.ver)
	if m.ver == 0 {
		cond = dynamo.IfAbsent
	}
	if err := d.t.Put(ctx, base, cond); errors.Is(err, dynamo.ErrConditionFailed) {
		return fmt.Errorf("write healer state of %s: %w", m.view, ErrConflict)
	} else if err != nil {
		return fmt.Errorf("write healer state of %s: %w", m.view, err)
	}
	if old != nil {
		if n, _ := old.N("n"); n > 1 {
			var dels []dynamo.Key
			for i := 1; i < int(n); i++ {
				dels = append(dels, dynamo.Key{PK: pk, SK: chunkSK(dskMeta, uint64(m.ver), i)})
			}
			if err := d.t.BatchWrite(ctx, nil, dels); err != nil {
				d.log.Warn("delete the previous healer state's chunks", "view", m.view, "err", err)
			}
		}
	}
	return nil
}

// splitChunks returns the base item of a value (its first chunk, and n when
// it has more) and the items of the other chunks.
func splitChunks(pk, sk, val []byte, version uint64) (*dynamo.Item, []*dynamo.Item) {
	base := &dynamo.Item{PK: pk, SK: sk}
	if len(val) <= chunkBytes {
		base.SetB("v", val)
		return base, nil
	}
	n := (len(val) + chunkBytes - 1) / chunkBytes
	base.SetB("v", val[:chunkBytes])
	base.SetN("n", int64(n))
	var chunks []*dynamo.Item
	for i := 1; i < n; i++ {
		c := &dynamo.Item{PK: pk, SK: chunkSK(sk, version, i)}
		c.SetB("v", val[i*chunkBytes:min((i+1)*chunkBytes, len(val))])
		chunks = append(chunks, c)
	}
	return base, chunks
}

// putGen adds a generation record (and its chunks) of a key to the batch.
func (o *dynOps) putGen(pk, sk, val []byte) int {
	base, chunks := splitChunks(pk, sk, val, 0)
	o.gen = append(o.gen, chunks...)
	o.gen = append(o.gen, base)
	return 1 + len(chunks)
}

// applyDeletes expands and makes the deletes of a batch.
func (d *dynStore) applyDeletes(ctx context.Context, dels []dynDelete) error {
	for _, del := range dels {
		inc, err := d.incarnation(del.view)
		if err != nil {
			return err
		}
		var keys []dynamo.Key
		switch del.kind {
		case dskSummary:
			list := func(s byte) []byte { return genKeysPK(del.view, inc, del.gen, s) }
			ks, items, err := d.listKeys(ctx, list)
			if err != nil {
				return err
			}
			for _, k := range ks {
				pk := keyPK(del.view, inc, k)
				keys = append(keys, chunkKeys(pk, summarySK(del.gen), items[k], "n")...)
				keys = append(keys, dynamo.Key{PK: list(shardOf(k)), SK: listSK(k)})
				if d.cache != nil {
					d.cache.dropSnap(pk)
				}
			}
		case dskDay:
			list := func(s byte) []byte { return dayKeysPK(del.view, inc, del.gen, del.day, s) }
			ks, items, err := d.listKeys(ctx, list)
			if err != nil {
				return err
			}
			for _, k := range ks {
				pk := keyPK(del.view, inc, k)
				it := items[k]
				keys = append(keys, chunkKeys(pk, daySK(del.gen, del.day), it, "n")...)
				for _, b := range decodeBlocks(it.B("b")) {
					keys = append(keys, chunkKeys(pk, detailSK(del.gen, del.day, b.start), nil, "")...)
					for i := 1; i < b.chunks; i++ {
						keys = append(keys, dynamo.Key{PK: pk, SK: chunkSK(detailSK(del.gen, del.day, b.start), 0, i)})
					}
				}
				keys = append(keys, dynamo.Key{PK: list(shardOf(k)), SK: listSK(k)})
			}
		case dskStream:
			pk := keyPK(del.view, inc, del.key)
			lo, hi := streamSK(tiling.MinTime, 0), streamSK(del.before, 0)
			if err := d.t.Query(ctx, pk, lo, hi, func(it *dynamo.Item) error {
				keys = append(keys, it.Key())
				return nil
			}); err != nil {
				return err
			}
			if d.cache != nil && len(keys) > 0 {
				d.cache.dropSnap(pk)
			}
		}
		if len(keys) == 0 {
			continue
		}
		if err := d.t.BatchWrite(ctx, nil, keys); err != nil {
			return fmt.Errorf("delete garbage of %s: %w", del.view, err)
		}
		d.m.deleted.Add(float64(len(keys)))
	}
	return nil
}

// chunkKeys returns the keys of a generation record and its chunks; the
// chunk count is list item attribute attr (absent: one).
func chunkKeys(pk, sk []byte, list *dynamo.Item, attr string) []dynamo.Key {
	keys := []dynamo.Key{{PK: pk, SK: sk}}
	if list == nil {
		return keys
	}
	n, _ := list.N(attr)
	for i := 1; i < int(n); i++ {
		keys = append(keys, dynamo.Key{PK: pk, SK: chunkSK(sk, 0, i)})
	}
	return keys
}

// A day list item's attribute b lists the key's detail records of the day:
// per block, uvarint (block − day) / granularity-free ms offset and uvarint
// chunk count.
type blockChunks struct {
	start  int64
	chunks int
}

func appendBlock(dst []byte, day, block int64, chunks int) []byte {
	dst = binary.AppendUvarint(dst, uint64(block-day))
	return binary.AppendUvarint(dst, uint64(chunks))
}

func decodeBlocks(b []byte) []blockChunks {
	if len(b) < 8 {
		return nil
	}
	day := decodeTime(b[:8])
	b = b[8:]
	var out []blockChunks
	for len(b) > 0 {
		off, n := binary.Uvarint(b)
		if n <= 0 {
			return out
		}
		b = b[n:]
		c, m := binary.Uvarint(b)
		if m <= 0 {
			return out
		}
		b = b[m:]
		out = append(out, blockChunks{start: day + int64(off), chunks: int(c)})
	}
	return out
}

func encodeProgress(p Progress) []byte {
	val := []byte{progressVersion}
	val = binary.AppendVarint(val, p.Next)
	return binary.AppendVarint(val, p.MaxEventTime)
}
