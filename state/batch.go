package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/tilestream/tilestream/state/dynamo"

	"github.com/tilestream/tilestream/tiling"
)

// Head is a key's batch pointer: the watermark W_b and the heal generation
// whose summary holds the batch data before it. Readers follow the head;
// records of other generations are ignored.
type Head struct {
	Watermark int64
	Gen       uint64
}

const headVersion = 1

func encodeHead(h Head) []byte {
	b := []byte{headVersion}
	b = binary.AppendVarint(b, h.Watermark)
	return binary.AppendUvarint(b, h.Gen)
}

func decodeHead(b []byte) (Head, error) {
	if len(b) < 1 || b[0] != headVersion {
		return Head{}, errors.New("bad head version")
	}
	w, n := binary.Varint(b[1:])
	if n <= 0 {
		return Head{}, errors.New("bad head watermark")
	}
	g, m := binary.Uvarint(b[1+n:])
	if m <= 0 {
		return Head{}, errors.New("bad head generation")
	}
	return Head{Watermark: w, Gen: g}, nil
}

// get returns a copy of the value at k, or nil when absent.
func (s *Store) get(k []byte) ([]byte, error) {
	val, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := bytes.Clone(val)
	closer.Close()
	return out, nil
}

// decodeAt calls decode with the value at k while Pebble still holds it,
// and reports false when k is absent. decode must keep nothing of val. The
// decoders of heads, day records and detail suffixes copy what they keep
// (TestReadDecodersKeepNoInput), so a read spares a copy of the whole value:
// a detail record holds the suffix aggregates of every tile of its block,
// of which a read decodes one.
func (s *Store) decodeAt(k []byte, decode func(val []byte)) (bool, error) {
	val, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	decode(val)
	return true, closer.Close()
}

// Head returns the key's head; ok is false before any heal covered it.
func (s *Store) Head(v *tiling.View, key string) (h Head, ok bool, err error) {
	if s.dyn != nil {
		return s.dyn.head(v, key)
	}
	var derr error
	ok, err = s.decodeAt(headKey(nil, v.Name, key), func(val []byte) {
		h, derr = decodeHead(val)
	})
	if err != nil || !ok {
		return Head{}, false, err
	}
	if derr != nil {
		return Head{}, false, fmt.Errorf("head %s/%q: %w", v.Name, key, derr)
	}
	return h, true, nil
}

// summaryForRead returns the key's summary at gen with only the day suffixes
// a read at t needs decoded, or nil.
func (s *Store) summaryForRead(v *tiling.View, gen uint64, key string, t int64) (*tiling.Summary, error) {
	var sum *tiling.Summary
	var derr error
	ok, err := s.decodeAt(summaryKey(nil, v.Name, gen, key), func(val []byte) {
		sum, derr = v.DecodeSummaryAt(val, t) // keeps nothing of val
	})
	if err != nil || !ok {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("summary %s/%q@%d: %w", v.Name, key, gen, derr)
	}
	return sum, nil
}

// DayRecord returns the key's day record of day at gen, or nil, as
// DecodeDayRecord gives it: its tiles merge to the day's total (the healer
// reads days back whole; a read decodes one suffix, DecodeDaySuffix).
func (s *Store) DayRecord(v *tiling.View, gen uint64, day int64, key string) (*tiling.Record, error) {
	if s.dyn != nil {
		return s.dyn.dayRecord(v, gen, day, key)
	}
	var r *tiling.Record
	var derr error
	ok, err := s.decodeAt(dayKey(nil, v.Name, gen, day, key), func(val []byte) {
		r, derr = v.DecodeDayRecord(day, val)
	})
	if err != nil || !ok {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("day record %s/%q@%d/%d: %w", v.Name, key, gen, day, derr)
	}
	return r, nil
}

// daySuffixes decodes, from the key's day record of day (one get), the
// suffix of every window start of needs inside that day into b.Days, and
// returns the needs whose start falls inside a block of several tiles: those
// need the block's detail record too.
func (s *Store) daySuffixes(v *tiling.View, key string, needs []tiling.BatchNeed, day int64, b *tiling.Batch) ([]tiling.BatchNeed, error) {
	var details []tiling.BatchNeed
	var derr error
	var gen uint64
	for _, n := range needs {
		if n.Day == day {
			gen = n.Gen
		}
	}
	_, err := s.decodeAt(dayKey(nil, v.Name, gen, day, key), func(val []byte) {
		for _, n := range needs {
			if n.Day != day {
				continue
			}
			st, detail, err := v.DecodeDaySuffix(day, val, n.Start) // keeps nothing of val
			if err != nil {
				derr = err
				return
			}
			b.Days[n.Start] = st
			if detail {
				details = append(details, n)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("day record %s/%q@%d/%d: %w", v.Name, key, gen, day, derr)
	}
	return details, nil
}

// mergeDayPart merges a detail record's suffix into a day record's (either
// may be nil), in place: both were decoded for this read.
func mergeDayPart(day, detail []tiling.State) []tiling.State {
	if day == nil {
		return detail
	}
	if detail != nil {
		tiling.MergeStates(day, detail)
	}
	return day
}

// DetailSuffix returns the aggregate of the key's tiles of block from from
// on, at gen (nil when none), decoding one tile of the detail record.
func (s *Store) DetailSuffix(v *tiling.View, gen uint64, day int64, key string, block, from int64) ([]tiling.State, error) {
	if s.dyn != nil {
		return s.dyn.detailSuffix(v, gen, day, key, block, from)
	}
	var st []tiling.State
	var derr error
	ok, err := s.decodeAt(detailKey(nil, v.Name, gen, day, key, block), func(val []byte) {
		st, derr = v.DecodeDetailSuffix(block, val, from)
	})
	if err != nil || !ok {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("detail record %s/%q@%d/%d: %w", v.Name, key, gen, block, derr)
	}
	return st, nil
}

// ReadKey returns what a read of (view, key) at time t needs: the key's
// batch side (head, summary, and the day and detail records of the window
// starts that fall inside a day) and the stream records from W_b to the end
// of the current tile.
//
// Reads see the old layout or the new one, never a mix: a heal writes the
// records of a new generation first and switches the head last, and records
// of a generation are immutable; superseded ones are deleted only after a
// grace period longer than any read.
func (s *Store) ReadKey(ctx context.Context, v *tiling.View, key string, t int64) (KeyData, error) {
	if s.dyn != nil {
		return s.dyn.readKey(ctx, v, key, t)
	}
	kd := KeyData{BatchWatermark: tiling.MinTime}
	from, to := v.ReadRange(t)
	h, ok, err := s.Head(v, key)
	if err != nil {
		return kd, err
	}
	kd.RecordsRead++
	if ok {
		sum, err := s.summaryForRead(v, h.Gen, key, t)
		if err != nil {
			return kd, err
		}
		if sum == nil {
			return kd, fmt.Errorf("read %s/%q: head names generation %d but its summary is missing", v.Name, key, h.Gen)
		}
		kd.RecordsRead++
		kd.BatchWatermark = sum.Watermark
		b := &tiling.Batch{Summary: sum, Days: map[int64][]tiling.State{}}
		needs := v.BatchNeeds(t, sum)
		read := map[int64]bool{}
		for _, n := range needs {
			if read[n.Day] {
				continue
			}
			read[n.Day] = true
			details, err := s.daySuffixes(v, key, needs, n.Day, b)
			if err != nil {
				return kd, err
			}
			kd.RecordsRead++
			for _, m := range details {
				st, err := s.DetailSuffix(v, m.Gen, m.Day, key, m.Block, m.Start)
				if err != nil {
					return kd, err
				}
				b.Days[m.Start] = mergeDayPart(b.Days[m.Start], st)
				kd.RecordsRead++
			}
		}
		kd.Batch = b
		if from < sum.Watermark {
			from = sum.Watermark
		}
	}
	recs, err := s.streamRecords(ctx, v, key, from, to)
	if err != nil {
		return kd, err
	}
	kd.Records = recs
	kd.RecordsRead += len(recs)
	return kd, nil
}

// PutHead switches a key to a heal's generation.
func (b *Batch) PutHead(v *tiling.View, key string, h Head) {
	if b.ops != nil {
		b.ops.heads = append(b.ops.heads, dynHead{v.Name, key, h})
		b.n++
		return
	}
	_ = b.b.Set(headKey(nil, v.Name, key), encodeHead(h), nil)
	b.n++
}

// PutSummary writes a key's summary of generation gen.
func (b *Batch) PutSummary(v *tiling.View, gen uint64, key string, s *tiling.Summary) {
	if b.ops != nil {
		inc, err := b.d.incarnation(v.Name)
		if err != nil {
			b.fail(err)
			return
		}
		n := b.ops.putGen(keyPK(v.Name, inc, key), summarySK(gen), v.AppendSummary(nil, s))
		list := &dynamo.Item{PK: genKeysPK(v.Name, inc, gen, shardOf(key)), SK: listSK(key)}
		list.SetB("k", []byte(key))
		if n > 1 {
			list.SetN("n", int64(n))
		}
		b.ops.gen = append(b.ops.gen, list)
		b.n++
		return
	}
	b.buf = v.AppendSummary(b.buf[:0], s)
	_ = b.b.Set(summaryKey(nil, v.Name, gen, key), b.buf, nil)
	b.n++
}

// PutDayRecord writes a key's day record of generation gen.
func (b *Batch) PutDayRecord(v *tiling.View, gen uint64, day int64, key string, r *tiling.Record) {
	if b.ops != nil {
		b.PutDayRecordBytes(v, gen, day, key, v.AppendDayRecord(nil, r))
		return
	}
	b.buf = v.AppendDayRecord(b.buf[:0], r)
	b.PutDayRecordBytes(v, gen, day, key, b.buf)
}

// PutDayRecordBytes writes a key's day record of generation gen, encoded
// (tiling.View.AppendDayRecord). val must not change until the batch is
// committed.
func (b *Batch) PutDayRecordBytes(v *tiling.View, gen uint64, day int64, key string, val []byte) {
	if b.ops != nil {
		inc, err := b.d.incarnation(v.Name)
		if err != nil {
			b.fail(err)
			return
		}
		n := b.ops.putGen(keyPK(v.Name, inc, key), daySK(gen, day), val)
		list := &dynamo.Item{PK: dayKeysPK(v.Name, inc, gen, day, shardOf(key)), SK: listSK(key)}
		list.SetB("k", []byte(key))
		if n > 1 {
			list.SetN("n", int64(n))
		}
		id := dayListID{v.Name, gen, day, key}
		if blocks := b.days[id]; blocks != nil {
			list.SetB("b", blocks)
			delete(b.days, id)
		}
		b.ops.gen = append(b.ops.gen, list)
		b.n++
		return
	}
	_ = b.b.Set(dayKey(nil, v.Name, gen, day, key), val, nil)
	b.n++
}

// PutDetail writes a key's detail record (tiles of one block, as suffix
// aggregates behind an index) of generation gen.
//
// On DynamoDB the key's day record must follow in the same batch: the day's
// key list item, written with it, names the detail records.
func (b *Batch) PutDetail(v *tiling.View, gen uint64, day int64, key string, r *tiling.Record) {
	b.buf = v.AppendDetailRecord(b.buf[:0], r)
	b.PutDetailBytes(v, gen, day, key, r.Start, b.buf)
}

// PutDetailBytes is PutDetail of a record already encoded
// (tiling.View.AppendDetailRecord), of the block starting at block. The
// batch keeps no reference to val.
func (b *Batch) PutDetailBytes(v *tiling.View, gen uint64, day int64, key string, block int64, val []byte) {
	if b.ops != nil {
		inc, err := b.d.incarnation(v.Name)
		if err != nil {
			b.fail(err)
			return
		}
		n := b.ops.putGen(keyPK(v.Name, inc, key), detailSK(gen, day, block), bytes.Clone(val))
		if b.days == nil {
			b.days = map[dayListID][]byte{}
		}
		id := dayListID{v.Name, gen, day, key}
		blocks := b.days[id]
		if blocks == nil {
			blocks = appendTime(nil, day)
		}
		b.days[id] = appendBlock(blocks, day, block, n)
		b.n++
		return
	}
	_ = b.b.Set(detailKey(nil, v.Name, gen, day, key, block), val, nil)
	b.n++
}

// DeleteSummaries deletes every summary of generation gen.
func (b *Batch) DeleteSummaries(view string, gen uint64) {
	if b.ops != nil {
		b.ops.deletes = append(b.ops.deletes, dynDelete{kind: dskSummary, view: view, gen: gen})
		return
	}
	p := genPrefix(nil, prefixSummary, view, gen)
	_ = b.b.DeleteRange(p, prefixEnd(p), nil)
}

// DeleteDay deletes every day and detail record of one day at generation gen.
func (b *Batch) DeleteDay(view string, gen uint64, day int64) {
	if b.ops != nil {
		b.ops.deletes = append(b.ops.deletes, dynDelete{kind: dskDay, view: view, gen: gen, day: day})
		return
	}
	for _, prefix := range []byte{prefixDay, prefixDetail} {
		p := dayPrefix(nil, prefix, view, gen, day)
		_ = b.b.DeleteRange(p, prefixEnd(p), nil)
	}
}

// DeleteStreamBefore deletes the key's stream records that start before start.
func (b *Batch) DeleteStreamBefore(view, key string, start int64) {
	if b.ops != nil {
		b.ops.deletes = append(b.ops.deletes, dynDelete{kind: dskStream, view: view, key: key, before: start})
		return
	}
	p := recordPrefix(nil, view, key)
	_ = b.b.DeleteRange(appendTime(bytes.Clone(p), tiling.MinTime), appendTime(p, start), nil)
}

// ScanSummaries calls fn for every key's summary of generation gen, in key order.
func (s *Store) ScanSummaries(v *tiling.View, gen uint64, fn func(key string, sum *tiling.Summary) error) error {
	if s.dyn != nil {
		return s.dyn.scanSummaries(v, gen, fn)
	}
	return s.scanKeyed(genPrefix(nil, prefixSummary, v.Name, gen), func(key string, val []byte) error {
		sum, err := v.DecodeSummary(val)
		if err != nil {
			return fmt.Errorf("summary %s/%q@%d: %w", v.Name, key, gen, err)
		}
		return fn(key, sum)
	})
}

// Summaries calls fn(i, summary) for every key keys[i] that has a summary of
// generation gen, in the order of keys, which must ascend in the store's key
// order (KeyLess). A heal reads its previous summaries this way a chunk of
// keys at a time, so that it never holds every key's summary at once.
func (s *Store) Summaries(v *tiling.View, gen uint64, keys []string, fn func(i int, sum *tiling.Summary) error) error {
	if len(keys) == 0 {
		return nil
	}
	decode := func(key string, val []byte) (*tiling.Summary, error) {
		sum, err := v.DecodeSummary(val)
		if err != nil {
			return nil, fmt.Errorf("summary %s/%q@%d: %w", v.Name, key, gen, err)
		}
		return sum, nil
	}
	if s.dyn != nil {
		return s.dyn.summaries(v, gen, keys, func(i int, val []byte) error {
			sum, err := decode(keys[i], val)
			if err != nil {
				return err
			}
			return fn(i, sum)
		})
	}
	p := genPrefix(nil, prefixSummary, v.Name, gen)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return err
	}
	defer it.Close()
	var k []byte
	for i, key := range keys {
		if i > 0 && !KeyLess(keys[i-1], key) {
			return fmt.Errorf("state: summaries of %s: keys out of order at %q", v.Name, key)
		}
		// Ascending seeks: Pebble moves on from where the last one ended.
		k = appendString(append(k[:0], p...), key)
		if !it.SeekGE(k) || !bytes.Equal(it.Key(), k) {
			continue
		}
		val, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		sum, err := decode(key, val)
		if err != nil {
			return err
		}
		if err := fn(i, sum); err != nil {
			return err
		}
	}
	return it.Error()
}

// scanKeyed calls fn for every record under prefix p whose key is p followed
// by str(entity key) and nothing else, in key order.
func (s *Store) scanKeyed(p []byte, fn func(key string, val []byte) error) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()[len(p):]
		n, m := binary.Uvarint(k)
		if m <= 0 || uint64(len(k)-m) != n {
			return fmt.Errorf("scan %x: bad key", p)
		}
		val, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if err := fn(string(k[m:]), val); err != nil {
			return err
		}
	}
	return it.Error()
}

// ScanKeys calls fn for every key with a summary of generation gen, in key
// order.
func (s *Store) ScanKeys(view string, gen uint64, fn func(key string) error) error {
	if s.dyn != nil {
		return s.dyn.scanKeys(view, gen, fn)
	}
	return s.scanKeyed(genPrefix(nil, prefixSummary, view, gen), func(key string, _ []byte) error { return fn(key) })
}

// ScanStreamKeys calls fn once for every key of the view with stream records
// (Pebble only).
func (s *Store) ScanStreamKeys(view string, fn func(key string) error) error {
	if s.dyn != nil {
		return errors.New("state: DynamoDB has no scan of stream keys; use ScanKeys")
	}
	p := append([]byte{prefixRecord}, appendString(nil, view)...)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; {
		k := it.Key()[len(p):]
		n, m := binary.Uvarint(k)
		if m <= 0 || uint64(len(k)-m) < n {
			return fmt.Errorf("scan stream keys of %s: bad key", view)
		}
		key := string(k[m : m+int(n)])
		if err := fn(key); err != nil {
			return err
		}
		// Skip the rest of this key's records.
		ok = it.SeekGE(prefixEnd(recordPrefix(nil, view, key)))
	}
	return it.Error()
}

// Meta returns a small metadata value (the healer's per-view state), or nil,
// and its version, which PutMeta must name to replace it (always 0 on
// Pebble, where one process writes).
func (s *Store) Meta(view string) ([]byte, int64, error) {
	if s.dyn != nil {
		return s.dyn.meta(view)
	}
	val, err := s.get(append([]byte{prefixHeal}, appendString(nil, view)...))
	return val, 0, err
}

// PutMeta writes the healer's per-view state, replacing version ver (0:
// none); the new one is version ver+1. On DynamoDB Commit fails with
// ErrConflict when the stored state is not at version ver.
func (b *Batch) PutMeta(view string, val []byte, ver int64) {
	if b.ops != nil {
		b.ops.meta = append(b.ops.meta, dynMeta{view, val, ver})
		return
	}
	_ = b.b.Set(append([]byte{prefixHeal}, appendString(nil, view)...), val, nil)
}

// ScanDayRecords calls fn for every key's day record of one day at gen.
func (s *Store) ScanDayRecords(v *tiling.View, gen uint64, day int64, fn func(key string, r *tiling.Record) error) error {
	if s.dyn != nil {
		return s.dyn.scanDayRecords(v, gen, day, fn)
	}
	return s.scanKeyed(dayPrefix(nil, prefixDay, v.Name, gen, day), func(key string, val []byte) error {
		r, err := v.DecodeDayRecord(day, val)
		if err != nil {
			return fmt.Errorf("day record %s/%q@%d/%d: %w", v.Name, key, gen, day, err)
		}
		return fn(key, r)
	})
}

// CollectKeys calls fn for every key that has a head (on generation gen,
// the view's current one) and may have stream records below its watermark:
// on Pebble the keys with stream records and a head; on DynamoDB the keys
// of gen's summaries.
func (s *Store) CollectKeys(v *tiling.View, gen uint64, fn func(key string) error) error {
	if s.dyn != nil {
		return s.dyn.scanKeys(v.Name, gen, fn)
	}
	return s.ScanStreamKeys(v.Name, func(key string) error {
		_, ok, err := s.Head(v, key)
		if err != nil || !ok {
			return err
		}
		return fn(key)
	})
}
