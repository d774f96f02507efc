package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

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

// Head returns the key's head; ok is false before any heal covered it.
func (s *Store) Head(v *tiling.View, key string) (h Head, ok bool, err error) {
	val, err := s.get(headKey(nil, v.Name, key))
	if err != nil || val == nil {
		return Head{}, false, err
	}
	h, err = decodeHead(val)
	if err != nil {
		return Head{}, false, fmt.Errorf("head %s/%q: %w", v.Name, key, err)
	}
	return h, true, nil
}

// summaryForRead returns the key's summary at gen with only the day suffixes
// a read at t needs decoded, or nil.
func (s *Store) summaryForRead(v *tiling.View, gen uint64, key string, t int64) (*tiling.Summary, error) {
	val, err := s.get(summaryKey(nil, v.Name, gen, key))
	if err != nil || val == nil {
		return nil, err
	}
	sum, err := v.DecodeSummaryForRead(val)
	if err == nil {
		err = v.PrepareSummary(sum, t)
	}
	if err != nil {
		return nil, fmt.Errorf("summary %s/%q@%d: %w", v.Name, key, gen, err)
	}
	return sum, nil
}

// DayRecord returns the key's day record of day at gen, or nil.
func (s *Store) DayRecord(v *tiling.View, gen uint64, day int64, key string) (*tiling.Record, error) {
	val, err := s.get(dayKey(nil, v.Name, gen, day, key))
	if err != nil || val == nil {
		return nil, err
	}
	r, err := v.DecodeDayRecord(day, val)
	if err != nil {
		return nil, fmt.Errorf("day record %s/%q@%d/%d: %w", v.Name, key, gen, day, err)
	}
	return r, nil
}

// DetailSuffix returns the aggregate of the key's tiles of block from from
// on, at gen (nil when none), decoding one tile of the detail record.
func (s *Store) DetailSuffix(v *tiling.View, gen uint64, day int64, key string, block, from int64) ([]tiling.State, error) {
	val, err := s.get(detailKey(nil, v.Name, gen, day, key, block))
	if err != nil || val == nil {
		return nil, err
	}
	st, err := v.DecodeDetailSuffix(block, val, from)
	if err != nil {
		return nil, fmt.Errorf("detail record %s/%q@%d/%d: %w", v.Name, key, gen, block, err)
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
		b := &tiling.Batch{Summary: sum, DayRecords: map[int64]*tiling.Record{}, Suffixes: map[int64][]tiling.State{}}
		for _, n := range v.BatchNeeds(t, sum) {
			if _, done := b.DayRecords[n.Day]; !done {
				r, err := s.DayRecord(v, n.Gen, n.Day, key)
				if err != nil {
					return kd, err
				}
				b.DayRecords[n.Day] = r
				kd.RecordsRead++
			}
			if _, single := b.DayRecords[n.Day].SingleTile(n.Block); single {
				continue // the day record has the block's one tile
			}
			if n.Block != tiling.MinTime {
				st, err := s.DetailSuffix(v, n.Gen, n.Day, key, n.Block, n.Start)
				if err != nil {
					return kd, err
				}
				b.Suffixes[n.Start] = st
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
	_ = b.b.Set(headKey(nil, v.Name, key), encodeHead(h), nil)
	b.n++
}

// PutSummary writes a key's summary of generation gen.
func (b *Batch) PutSummary(v *tiling.View, gen uint64, key string, s *tiling.Summary) {
	b.buf = v.AppendSummary(b.buf[:0], s)
	_ = b.b.Set(summaryKey(nil, v.Name, gen, key), b.buf, nil)
	b.n++
}

// PutDayRecord writes a key's day record of generation gen.
func (b *Batch) PutDayRecord(v *tiling.View, gen uint64, day int64, key string, r *tiling.Record) {
	b.buf = v.AppendDayRecord(b.buf[:0], r)
	_ = b.b.Set(dayKey(nil, v.Name, gen, day, key), b.buf, nil)
	b.n++
}

// PutDetail writes a key's detail record (tiles of one block, as suffix
// aggregates behind an index) of generation gen.
func (b *Batch) PutDetail(v *tiling.View, gen uint64, day int64, key string, r *tiling.Record) {
	b.buf = v.AppendDetailRecord(b.buf[:0], r)
	_ = b.b.Set(detailKey(nil, v.Name, gen, day, key, r.Start), b.buf, nil)
	b.n++
}

// DeleteSummaries deletes every summary of generation gen.
func (b *Batch) DeleteSummaries(view string, gen uint64) {
	p := genPrefix(nil, prefixSummary, view, gen)
	_ = b.b.DeleteRange(p, prefixEnd(p), nil)
}

// DeleteDay deletes every day and detail record of one day at generation gen.
func (b *Batch) DeleteDay(view string, gen uint64, day int64) {
	for _, prefix := range []byte{prefixDay, prefixDetail} {
		p := dayPrefix(nil, prefix, view, gen, day)
		_ = b.b.DeleteRange(p, prefixEnd(p), nil)
	}
}

// DeleteStreamBefore deletes the key's stream records that start before start.
func (b *Batch) DeleteStreamBefore(view, key string, start int64) {
	p := recordPrefix(nil, view, key)
	_ = b.b.DeleteRange(appendTime(bytes.Clone(p), tiling.MinTime), appendTime(p, start), nil)
}

// ScanSummaries calls fn for every key's summary of generation gen, in key order.
func (s *Store) ScanSummaries(v *tiling.View, gen uint64, fn func(key string, sum *tiling.Summary) error) error {
	return s.scanKeyed(genPrefix(nil, prefixSummary, v.Name, gen), func(key string, val []byte) error {
		sum, err := v.DecodeSummary(val)
		if err != nil {
			return fmt.Errorf("summary %s/%q@%d: %w", v.Name, key, gen, err)
		}
		return fn(key, sum)
	})
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

// ScanStreamKeys calls fn once for every key of the view with stream records.
func (s *Store) ScanStreamKeys(view string, fn func(key string) error) error {
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

// Meta returns a small metadata value (the healer's per-view state), or nil.
func (s *Store) Meta(view string) ([]byte, error) {
	return s.get(append([]byte{prefixHeal}, appendString(nil, view)...))
}

// PutMeta writes the healer's per-view state.
func (b *Batch) PutMeta(view string, val []byte) {
	_ = b.b.Set(append([]byte{prefixHeal}, appendString(nil, view)...), val, nil)
}

// ScanDayRecords calls fn for every key's day record of one day at gen.
func (s *Store) ScanDayRecords(v *tiling.View, gen uint64, day int64, fn func(key string, r *tiling.Record) error) error {
	return s.scanKeyed(dayPrefix(nil, prefixDay, v.Name, gen, day), func(key string, val []byte) error {
		r, err := v.DecodeDayRecord(day, val)
		if err != nil {
			return fmt.Errorf("day record %s/%q@%d/%d: %w", v.Name, key, gen, day, err)
		}
		return fn(key, r)
	})
}
