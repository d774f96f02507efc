package tiling

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"
)

// recordVersion is the first byte of every encoded Record.
const recordVersion = 1

// Tile is the partial aggregates of one key over [Start, Start+g), one State
// per partial aggregate of the view's layout.
type Tile struct {
	Start  int64
	States []State
}

// PartOffset is the highest offset of one partition applied to a record.
type PartOffset struct {
	Partition int32
	Offset    int64
}

// Record is a stored unit: the tiles of one key within [Start, Start+Span).
//
// Offsets make replays idempotent. Events of one partition are applied in
// offset order, and a record is always written whole, together with its
// Offsets, so Offsets[p] = o means every event of partition p up to offset o
// that falls in this record is in its tiles, and no later one is. An event of
// p at offset ≤ o is therefore a replay and is skipped (see Applied), whatever
// other partitions feed the same key.
type Record struct {
	Start   int64
	Offsets []PartOffset // sorted by partition
	Tiles   []Tile       // sorted by Start, no empty tiles
	// Only, in a day record, gives for each block aggregate (Tiles[i]) the
	// start of its one tile when the block has a single tile — then no
	// detail record is stored for it — and MinTime otherwise. Nil elsewhere.
	Only []int64
}

// NewRecord returns the empty record of the span holding time ts.
func (v *View) NewRecord(ts int64) *Record {
	return &Record{Start: AlignDown(ts, v.span)}
}

// RecordStart returns the start of the record holding time ts.
func (v *View) RecordStart(ts int64) int64 { return AlignDown(ts, v.span) }

// Applied reports whether an event at pos is already in r.
func (r *Record) Applied(pos Pos) bool {
	i := r.offsetIndex(pos.Partition)
	return i < len(r.Offsets) && r.Offsets[i].Partition == pos.Partition && pos.Offset <= r.Offsets[i].Offset
}

func (r *Record) offsetIndex(p int32) int {
	return sort.Search(len(r.Offsets), func(i int) bool { return r.Offsets[i].Partition >= p })
}

// MarkApplied records that partition p is applied up to offset o.
func (r *Record) MarkApplied(pos Pos) {
	i := r.offsetIndex(pos.Partition)
	if i < len(r.Offsets) && r.Offsets[i].Partition == pos.Partition {
		if pos.Offset > r.Offsets[i].Offset {
			r.Offsets[i].Offset = pos.Offset
		}
		return
	}
	r.Offsets = append(r.Offsets, PartOffset{})
	copy(r.Offsets[i+1:], r.Offsets[i:])
	r.Offsets[i] = PartOffset{pos.Partition, pos.Offset}
}

// Add applies e to r unless it is a replay, and reports whether it did. e must
// fall inside r's span and carry one Input per view column.
func (v *View) Add(r *Record, e *Event) bool {
	if r.Applied(e.Pos) {
		return false
	}
	t := v.tile(r, AlignDown(e.TS, v.Granularity))
	for i, a := range v.aggs {
		var in *Input
		if a.column >= 0 {
			in = &e.Inputs[a.column]
		}
		t.States[i].add(e, in)
	}
	r.MarkApplied(e.Pos)
	return true
}

// AddTile merges a tile's states into r's tile of the same start, for builders
// that aggregate elsewhere (the healer). Offsets are left alone.
func (v *View) AddTile(r *Record, src *Tile) {
	t := v.tile(r, src.Start)
	for i := range t.States {
		t.States[i].merge(src.States[i])
	}
}

// tile returns r's tile starting at start, inserting an empty one if needed.
func (v *View) tile(r *Record, start int64) *Tile { return v.tileIn(nil, r, start) }

// NewTile returns the empty tile (identity states) starting at start.
func (v *View) NewTile(start int64) Tile {
	t := Tile{Start: start, States: make([]State, len(v.aggs))}
	for i := range v.aggs {
		t.States[i] = newState(&v.aggs[i])
	}
	return t
}

// AppendRecord appends the encoding of r (see docs/format.md):
//
//	version byte (1)
//	uvarint n, then n × (uvarint partition, uvarint offset)
//	uvarint m, then m × (uvarint tile index within the record, states in layout order)
func (v *View) AppendRecord(dst []byte, r *Record) []byte {
	dst = append(dst, recordVersion)
	dst = binary.AppendUvarint(dst, uint64(len(r.Offsets)))
	for _, o := range r.Offsets {
		dst = binary.AppendUvarint(dst, uint64(uint32(o.Partition)))
		dst = binary.AppendUvarint(dst, uint64(o.Offset))
	}
	dst = binary.AppendUvarint(dst, uint64(len(r.Tiles)))
	for _, t := range r.Tiles {
		dst = binary.AppendUvarint(dst, uint64((t.Start-r.Start)/v.Granularity))
		for _, s := range t.States {
			dst = s.appendBinary(dst)
		}
	}
	return dst
}

// DecodeRecord decodes a record starting at start. Corrupt input gives an
// error wrapping ErrCorrupt or ErrVersion, never a panic.
func (v *View) DecodeRecord(start int64, b []byte) (*Record, error) {
	return v.decodeTiles(start, b, v.Granularity, v.span/v.Granularity)
}

// DecodeRecordFrom is DecodeRecord keeping only the tiles that start at or
// after from: a read needs a stream record's tiles from W_b (or its
// earliest window start) on, and the record of W_b's hour holds the tiles
// before it too. Those are checked as DecodeRecord checks them (a record
// it rejects, DecodeRecordFrom rejects with the same error), but decoded
// into states that are dropped, and their bytes are not copied.
func (v *View) DecodeRecordFrom(start int64, b []byte, from int64) (*Record, error) {
	return v.decodeTilesFrom(start, b, v.Granularity, v.span/v.Granularity, from)
}

// decodeTiles decodes a record of tiles step apart, at most per of them.
func (v *View) decodeTiles(start int64, b []byte, step, per64 int64) (*Record, error) {
	return v.decodeTilesFrom(start, b, step, per64, MinTime)
}

// decodeTilesFrom is decodeTiles keeping the tiles that start at or after
// from.
func (v *View) decodeTilesFrom(start int64, b []byte, step, per64, from int64) (*Record, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("record: empty: %w", ErrCorrupt)
	}
	if b[0] != recordVersion {
		return nil, fmt.Errorf("record: version %d: %w", b[0], ErrVersion)
	}
	b = b[1:]
	r := &Record{Start: start}
	n, m := binary.Uvarint(b)
	if m <= 0 || n > uint64(len(b)) {
		return nil, fmt.Errorf("record: offsets: %w", ErrCorrupt)
	}
	b = b[m:]
	r.Offsets = make([]PartOffset, 0, n)
	for i := uint64(0); i < n; i++ {
		p, m := binary.Uvarint(b)
		if m <= 0 || p > 1<<31-1 {
			return nil, fmt.Errorf("record: partition: %w", ErrCorrupt)
		}
		b = b[m:]
		o, m := binary.Uvarint(b)
		if m <= 0 || o > 1<<63-1 {
			return nil, fmt.Errorf("record: offset: %w", ErrCorrupt)
		}
		b = b[m:]
		if i > 0 && int32(p) <= r.Offsets[i-1].Partition {
			return nil, fmt.Errorf("record: partitions out of order: %w", ErrCorrupt)
		}
		r.Offsets = append(r.Offsets, PartOffset{int32(p), int64(o)})
	}
	nt, m := binary.Uvarint(b)
	per := uint64(per64)
	if m <= 0 || nt > per || nt > uint64(len(b)) {
		return nil, fmt.Errorf("record: tile count: %w", ErrCorrupt)
	}
	b = b[m:]
	prev := int64(-1)
	// Tiles before from: checked, dropped. Their states are decoded into
	// one tile's scratch states, reused; decoders read nothing of the
	// states they decode into, and these keep referring to b only until
	// the next tile.
	i := uint64(0)
	if from > start {
		var scratch *stateArena
		for ; i < nt; i++ {
			idx, m := binary.Uvarint(b)
			if m <= 0 || idx >= per || int64(idx) <= prev {
				return nil, fmt.Errorf("record: tile index: %w", ErrCorrupt)
			}
			if start+int64(idx)*step >= from {
				break // decoded below, index and all
			}
			prev = int64(idx)
			b = b[m:]
			if scratch == nil {
				scratch = newStateArena(v.aggs, 1)
			} else {
				scratch.reuse()
			}
			for j := range v.aggs {
				_, rest, err := decodeStateIn(&v.aggs[j], b, scratch)
				if err != nil {
					return nil, fmt.Errorf("record tile %d: %w", idx, err)
				}
				b = rest
			}
		}
	}
	// Decoded states may refer to the bytes (packed sums), and callers pass
	// buffers they reuse: keep one copy of the tiles kept.
	b = bytes.Clone(b)
	keep := int(nt - i)
	r.Tiles = make([]Tile, 0, keep)
	ar := newStateArena(v.aggs, keep)
	states := make([]State, keep*len(v.aggs))
	for ; i < nt; i++ {
		idx, m := binary.Uvarint(b)
		if m <= 0 || idx >= per || int64(idx) <= prev {
			return nil, fmt.Errorf("record: tile index: %w", ErrCorrupt)
		}
		prev = int64(idx)
		b = b[m:]
		t := Tile{Start: start + int64(idx)*step, States: states[:len(v.aggs):len(v.aggs)]}
		states = states[len(v.aggs):]
		for j := range v.aggs {
			s, rest, err := decodeStateIn(&v.aggs[j], b, ar)
			if err != nil {
				return nil, fmt.Errorf("record tile %d: %w", idx, err)
			}
			t.States[j], b = s, rest
		}
		r.Tiles = append(r.Tiles, t)
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("record: %d trailing bytes: %w", len(b), ErrCorrupt)
	}
	return r, nil
}

// reuse makes an arena's states free again, zeroed, for the next tile
// decoded into it (DecodeRecordFrom's scratch states: nothing keeps them).
// A kind it does not reset (none today) would only allocate its states.
func (ar *stateArena) reuse() {
	ar.counts = reuseStates(ar.counts)
	ar.sums = reuseStates(ar.sums)
	ar.extremes = reuseStates(ar.extremes)
	ar.means = reuseStates(ar.means)
	ar.lasts = reuseStates(ar.lasts)
	ar.hlls = reuseStates(ar.hlls)
	ar.quants = reuseStates(ar.quants)
}

func reuseStates[T any](s []T) []T {
	clear(s)
	return s[:0]
}
