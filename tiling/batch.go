package tiling

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"sync"
)

// The batch layout of one key (docs/format.md, "Batch records"). A heal
// computes, from the offline log, the key's data before its batch watermark
// W_b at three resolutions:
//
//   - detail records: tiles of granularity g, one record per block (Span);
//   - day records: one aggregate per block, one record per day (DaySpan);
//   - the summary: one aggregate per day from FirstDay up to W_b, and Base,
//     the aggregate of everything from LifetimeStart up to FirstDay.
//
// A window start s falls in one block of one day, so the batch part
// [s, W_b) is: the tiles of s's block from s on, the block aggregates of s's
// day after that block, and the day aggregates after s's day — at most one
// detail record and one day record per distinct window start, plus the
// summary, however many events the window holds.

// DaySpan is the span of a day record: a day, or the block span when blocks
// are longer.
func (v *View) DaySpan() int64 {
	if v.span > Day {
		return v.span
	}
	return Day
}

// Summary is the batch part of one key at one heal.
type Summary struct {
	// Watermark is W_b: batch data covers event times before it.
	Watermark int64
	// FirstDay is the first day covered by Days; windows never start before
	// it (FirstDay ≤ W_b − the longest window), only lifetime windows do.
	FirstDay int64
	// Base aggregates [LifetimeStart, FirstDay); nil when empty.
	Base []State
	// Days are the non-empty days in [FirstDay, W_b), ascending.
	Days []SummaryDay

	// suffixRaw[j] is the encoded merge of Days[j…] (the suffix a window
	// starting before Days[j] needs); suffix[j] caches it decoded. A summary
	// decoded for a read (DecodeSummaryForRead) leaves Total nil and decodes
	// only the suffixes its windows need (PrepareSummary).
	suffixRaw [][]byte
	suffix    [][]State
}

// suffixStates returns the merge of Days[j…]: the decoded suffix when
// PrepareSummary loaded it, else the merge of the totals.
func (s *Summary) suffixStates(v *View, j int) []State {
	if j < len(s.suffix) && s.suffix[j] != nil {
		return s.suffix[j]
	}
	acc := v.newStates()
	for i := j; i < len(s.Days); i++ {
		if s.Days[i].Total != nil {
			MergeStates(acc, s.Days[i].Total)
		}
	}
	return acc
}

// PrepareSummary decodes the day suffixes that the windows of a read at t
// need, so EvaluateBatch merges one suffix per window instead of every day.
func (v *View) PrepareSummary(s *Summary, t int64) error {
	if s.suffixRaw == nil {
		return nil
	}
	if s.suffix == nil {
		s.suffix = make([][]State, len(s.Days))
	}
	load := func(j int) error {
		if j >= len(s.Days) || s.suffix[j] != nil {
			return nil
		}
		st, rest, err := v.decodeStates(bytes.Clone(s.suffixRaw[j]), nil)
		if err != nil {
			return fmt.Errorf("summary suffix %d: %w", j, err)
		}
		if len(rest) != 0 {
			return fmt.Errorf("summary suffix %d: trailing bytes: %w", j, ErrCorrupt)
		}
		s.suffix[j] = st
		return nil
	}
	for _, w := range v.windows {
		start := v.WindowStart(w, t)
		if start >= s.Watermark {
			continue
		}
		if start < s.FirstDay {
			if err := load(0); err != nil {
				return err
			}
			continue
		}
		if err := load(s.suffixIndex(v, start)); err != nil {
			return err
		}
	}
	return nil
}

// suffixIndex is the first day a window starting at start takes whole: its
// own day when it starts at the day's beginning, else the day after.
func (s *Summary) suffixIndex(v *View, start int64) int {
	day := AlignDown(start, v.DaySpan())
	return sort.Search(len(s.Days), func(i int) bool {
		if start == day {
			return s.Days[i].Start >= day
		}
		return s.Days[i].Start > day
	})
}

// SummaryDay is one day's aggregate and the heal generation whose day and
// detail records hold it.
type SummaryDay struct {
	Start int64
	Gen   uint64
	Total []State
}

// Day returns the summary's entry for the day starting at start, or nil.
func (s *Summary) Day(start int64) *SummaryDay {
	lo, hi := 0, len(s.Days)
	for lo < hi {
		m := (lo + hi) / 2
		if s.Days[m].Start < start {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(s.Days) && s.Days[lo].Start == start {
		return &s.Days[lo]
	}
	return nil
}

// Batch is what a read fetched of a key's batch side.
type Batch struct {
	Summary *Summary
	// Days maps a window start s that falls inside a day (not on its first
	// instant) to the batch data of [s, end of that day): the day record's
	// suffix from s (DecodeDaySuffix) merged, when s is inside a block of
	// several tiles, with the detail record's suffix from s
	// (DecodeDetailSuffix). Absent or nil: nothing there. Only the starts
	// BatchNeeds asked for are present.
	Days map[int64][]State
}

// BatchNeed names a record a read needs: the day record of Day at Gen, for
// the window start Start inside it. When DecodeDaySuffix says so, the read
// also needs the detail record of Block, the block holding Start.
type BatchNeed struct {
	Day   int64
	Block int64
	Gen   uint64
	Start int64
}

// BatchNeeds returns the day records a read at t needs beside the summary s,
// one entry per distinct window start inside a day.
func (v *View) BatchNeeds(t int64, s *Summary) []BatchNeed {
	var out []BatchNeed
	seen := map[int64]bool{}
	for _, w := range v.windows {
		start := v.WindowStart(w, t)
		if start >= s.Watermark || start < s.FirstDay {
			continue // all stream, or lifetime from Base and Days
		}
		day := AlignDown(start, v.DaySpan())
		sd := s.Day(day)
		if sd == nil || start == day || seen[start] {
			continue // nothing that day, the whole day from the summary, or asked for
		}
		seen[start] = true
		out = append(out, BatchNeed{Day: day, Block: AlignDown(start, v.span), Gen: sd.Gen, Start: start})
	}
	return out
}

// EvaluateBatch returns every feature at time t from the batch side b (may
// be nil) and the stream records, which must hold the tiles from
// b.Summary.Watermark on. A window [s, end) is the batch part [s, W_b)
// merged with the stream tiles in [max(s, W_b), end); no event is counted
// from both sides because each side only covers its own side of W_b.
//
// The windows end together, so one accumulator serves them all, as in
// Evaluate: it takes the stream tiles newest first (finishing the windows
// that start at or after W_b on the way), then whole days of the summary,
// latest first, finishing each window when the days reach its start. A
// window starting within a day is finished on a copy that also takes that
// day's part from its start (Batch.Days). Each tile and day is merged once,
// however many windows there are.
func (v *View) EvaluateBatch(t int64, b *Batch, records []*Record) []any {
	if b == nil || b.Summary == nil {
		return v.Evaluate(t, records)
	}
	s := b.Summary
	wb, end := s.Watermark, v.End(t)
	type win struct {
		start int64
		idx   int
	}
	wins := make([]win, len(v.windows))
	for i, w := range v.windows {
		wins[i] = win{v.WindowStart(w, t), i}
	}
	sort.Slice(wins, func(i, j int) bool { return wins[i].start > wins[j].start })
	out := make([]any, len(v.Features))
	finish := func(wi int, states []State) {
		for _, f := range v.winFeats[wi] {
			out[f] = states[v.featAgg[f]].value(&v.Features[f])
		}
	}
	acc := v.newStates()
	next := 0
	for ri := len(records) - 1; ri >= 0; ri-- {
		tiles := records[ri].Tiles
		for ti := len(tiles) - 1; ti >= 0; ti-- {
			tl := &tiles[ti]
			if tl.Start >= end || tl.Start < wb {
				continue
			}
			for next < len(wins) && wins[next].start >= wb && tl.Start < wins[next].start {
				finish(wins[next].idx, acc)
				next++
			}
			MergeStates(acc, tl.States)
		}
	}
	for ; next < len(wins) && wins[next].start >= wb; next++ {
		finish(wins[next].idx, acc)
	}
	// Windows reaching before W_b: the stream part (all of acc) plus one
	// suffix of whole days plus, for a start inside a day, that day's part.
	for ; next < len(wins); next++ {
		start := wins[next].start
		w := v.newStates()
		MergeStates(w, acc)
		if start < s.FirstDay { // lifetime: every day, and Base
			if len(s.Days) > 0 {
				MergeStates(w, s.suffixStates(v, 0))
			}
			if s.Base != nil {
				MergeStates(w, s.Base)
			}
			finish(wins[next].idx, w)
			continue
		}
		if j := s.suffixIndex(v, start); j < len(s.Days) {
			MergeStates(w, s.suffixStates(v, j))
		}
		if part := b.Days[start]; part != nil && start != AlignDown(start, v.DaySpan()) {
			MergeStates(w, part)
		}
		finish(wins[next].idx, w)
	}
	return out
}

func (v *View) newStates() []State {
	s := make([]State, len(v.aggs))
	for i := range v.aggs {
		s[i] = newState(&v.aggs[i])
	}
	return s
}

// NewStates returns identity states of the view's layout.
func (v *View) NewStates() []State { return v.newStates() }

// MergeStates merges src into dst (both of the view's layout).
func MergeStates(dst, src []State) {
	for i := range dst {
		dst[i].merge(src[i])
	}
}

// Aggregate adds e to its tile in r without the replay check: batch builders
// deduplicate events themselves. r must hold e's time.
func (v *View) Aggregate(r *Record, e *Event) { v.AggregateIn(nil, r, e) }

// Arena allocates the states of the tiles a batch builder makes in chunks
// rather than one allocation per state: a day's build makes millions of
// small states that live and die together. States from an arena keep their
// whole chunk alive, so use it for what is dropped at once (a day's tiles),
// not for what outlives it. Reset makes the chunks free for the next day's
// states, so a heal does not allocate (and collect) them day after day. Not
// safe for concurrent use.
type Arena struct {
	aggs  []aggSpec
	chunk int // states of a kind per allocation
	// first, when not 0, is the states of a kind the first allocation
	// holds; each later one doubles the last, up to chunk.
	first    int
	bytes    chunks[byte] // room for last and first's values
	states   chunks[State]
	counts   chunks[countState]
	sums     chunks[sumState]
	extremes chunks[extremeState]
	means    chunks[meanState]
	lasts    chunks[lastState]
}

// chunks hands out elements of chunks it allocates, and again after reset.
type chunks[T any] struct {
	all  [][]T
	c, i int // the chunk in use and its next free element
}

// take returns k contiguous zero elements, from a new chunk of at least k
// when the one in use has not enough left: of size, or when first is not 0,
// of first and then twice the last chunk's, up to size.
func (p *chunks[T]) take(k, first, size int) []T {
	if p.c == len(p.all) || len(p.all[p.c])-p.i < k {
		if p.c < len(p.all) {
			p.c++
		}
		for p.c < len(p.all) && len(p.all[p.c]) < k {
			p.c++
		}
		if p.c == len(p.all) {
			n := size
			if first > 0 {
				n = first
				if l := len(p.all); l > 0 {
					n = min(size, 2*len(p.all[l-1]))
				}
			}
			p.all = append(p.all, make([]T, max(n, k)))
		}
		p.i = 0
	}
	out := p.all[p.c][p.i : p.i+k : p.i+k]
	p.i += k
	clear(out) // a reused element holds what it held before
	return out
}

// reset frees every element for reuse.
func (p *chunks[T]) reset() { p.c, p.i = 0, 0 }

// arenaChunk is how many states of a kind an arena allocates at once.
const arenaChunk = 512

// arenaValue is the room an arena gives each last or first state for its
// value's JSON text.
const arenaValue = 16

// NewArena returns an empty arena for v's layout.
func (v *View) NewArena() *Arena { return &Arena{aggs: v.aggs, chunk: arenaChunk} }

// keyArenaFirst is how many states of a kind a key arena's first chunk
// holds.
const keyArenaFirst = 4

// NewKeyArena returns an empty arena for one key's states in a batch build:
// its chunks start with room for a few states and grow, so that a key with
// few tiles takes little memory, and a key's states lie together, in the
// order they were taken, rather than among every other key's — the merges of
// a key's tiles then read memory in order instead of all over a day's
// states.
func (v *View) NewKeyArena() *Arena {
	return &Arena{aggs: v.aggs, chunk: arenaChunk, first: keyArenaFirst}
}

// Reset makes every state taken from a free for the states taken next:
// call it only when none of them is used any more.
func (a *Arena) Reset() {
	a.bytes.reset()
	a.states.reset()
	a.counts.reset()
	a.sums.reset()
	a.extremes.reset()
	a.means.reset()
	a.lasts.reset()
}

// newStates returns identity states of the layout, as View.NewStates does.
func (a *Arena) newStates() []State {
	n := len(a.aggs)
	out := a.states.take(n, n*a.first, n*a.chunk)
	for i := range a.aggs {
		sp := &a.aggs[i]
		switch sp.kind {
		case kindCount:
			out[i] = &a.counts.take(1, a.first, a.chunk)[0]
		case kindSum:
			out[i] = &a.sums.take(1, a.first, a.chunk)[0]
		case kindMin, kindMax:
			s := &a.extremes.take(1, a.first, a.chunk)[0]
			s.max = sp.kind == kindMax
			out[i] = s
		case kindMean:
			out[i] = &a.means.take(1, a.first, a.chunk)[0]
		case kindLast, kindFirst:
			s := &a.lasts.take(1, a.first, a.chunk)[0]
			s.first, s.maxValue = sp.kind == kindFirst, sp.maxValue
			// Room for a short value: its own bytes of a shared chunk (the
			// capacity stops where the next state's room starts, so a longer
			// value reallocates instead of overwriting it).
			s.raw = a.bytes.take(arenaValue, arenaValue*a.first, arenaValue*a.chunk)[:0]
			out[i] = s
		default:
			out[i] = newState(sp)
		}
	}
	return out
}

// NewStatesIn is NewStates with the states taken from a.
func (v *View) NewStatesIn(a *Arena) []State { return a.newStates() }

// AggregateIn is Aggregate with the states of new tiles taken from a (nil:
// allocated one by one).
func (v *View) AggregateIn(a *Arena, r *Record, e *Event) {
	t := v.tileOf(a, r, e.TS)
	for i := range v.aggs {
		var in *Input
		if c := v.aggs[i].column; c >= 0 {
			in = &e.Inputs[c]
		}
		// The common kinds called directly (and inlined where small): a
		// heal adds millions of events.
		switch s := t.States[i].(type) {
		case *countState:
			s.add(e, in)
		case *sumState:
			s.add(e, in)
		case *extremeState:
			s.add(e, in)
		case *meanState:
			s.add(e, in)
		case *lastState:
			s.add(e, in)
		default:
			s.add(e, in)
		}
	}
}

// statesIn returns empty states of the view's layout, taken from a, or
// allocated when a is nil.
func (v *View) statesIn(a *Arena) []State {
	if a == nil {
		return v.newStates()
	}
	return a.newStates()
}

// tileIn returns r's tile starting at start, inserting an empty one (its
// states from a; see statesIn) if needed.
func (v *View) tileIn(a *Arena, r *Record, start int64) *Tile {
	n := len(r.Tiles)
	if n > 0 && r.Tiles[n-1].Start == start {
		return &r.Tiles[n-1]
	}
	i := sort.Search(n, func(i int) bool { return r.Tiles[i].Start >= start })
	if i < n && r.Tiles[i].Start == start {
		return &r.Tiles[i]
	}
	r.Tiles = append(r.Tiles, Tile{})
	copy(r.Tiles[i+1:], r.Tiles[i:])
	r.Tiles[i] = Tile{Start: start, States: v.statesIn(a)}
	return &r.Tiles[i]
}

// tileOf is tileIn(a, r, AlignDown(ts, v.Granularity)) that divides only
// to make a new tile: it looks for a tile holding ts, which a dense key's
// event finds nearly always.
func (v *View) tileOf(a *Arena, r *Record, ts int64) *Tile {
	n := len(r.Tiles)
	i := n
	if n > 0 && r.Tiles[n-1].Start > ts {
		i = sort.Search(n, func(i int) bool { return r.Tiles[i].Start > ts })
	}
	if i > 0 {
		if t := &r.Tiles[i-1]; Holds(t.Start, v.Granularity, ts) {
			return t
		}
	}
	return v.tileIn(a, r, AlignDown(ts, v.Granularity))
}

// Holds reports whether the span of g from start, an aligned start
// (AlignDown's result), holds ts ≥ start: ts aligns down to start. It
// saturates as AlignDown does: the span starting at MinTime ends at the
// first multiple of g.
func Holds(start, g, ts int64) bool {
	if start == MinTime {
		return AlignDown(ts, g) == MinTime
	}
	// Unsigned: ts − start fits 64 bits unsigned for any ts ≥ start, where
	// the signed difference overflows past 2^63.
	return uint64(ts)-uint64(start) < uint64(g)
}

// RollupIn is Rollup with the block aggregates' states taken from a (nil:
// allocated one by one).
func (v *View) RollupIn(a *Arena, r *Record, step int64) []Tile {
	var out []Tile
	for j := range r.Tiles {
		t := &r.Tiles[j]
		start := AlignDown(t.Start, step)
		if n := len(out); n == 0 || out[n-1].Start != start {
			out = append(out, Tile{Start: start, States: v.statesIn(a)})
		}
		MergeStates(out[len(out)-1].States, t.States)
	}
	return out
}

// Rollup returns one tile per block of span step (a multiple of g) holding the
// merge of r's tiles in that block, ascending.
func (v *View) Rollup(r *Record, step int64) []Tile { return v.RollupIn(nil, r, step) }

// summaryVersion 1 (totals only) was never written outside tests.
const summaryVersion = 2

// AppendSummary appends the encoding of s:
//
//	version byte (1)
//	varint watermark, varint first day
//	byte has-base; base states when 1
//	uvarint n; n × (varint day start, uvarint gen, states)
func (v *View) AppendSummary(dst []byte, s *Summary) []byte {
	dst = append(dst, summaryVersion)
	dst = binary.AppendVarint(dst, s.Watermark)
	dst = binary.AppendVarint(dst, s.FirstDay)
	if s.Base == nil {
		dst = append(dst, 0)
	} else {
		dst = append(dst, 1)
		dst = appendStates(dst, s.Base)
	}
	n := len(s.Days)
	totals := make([][]byte, n)
	suffixes := make([][]byte, n)
	acc := v.newStates()
	for i := n - 1; i >= 0; i-- {
		totals[i] = appendStates(nil, s.Days[i].Total)
		MergeStates(acc, s.Days[i].Total)
		suffixes[i] = appendStates(nil, acc)
	}
	dst = binary.AppendUvarint(dst, uint64(n))
	for i, d := range s.Days {
		dst = binary.AppendVarint(dst, d.Start)
		dst = binary.AppendUvarint(dst, d.Gen)
		dst = binary.AppendUvarint(dst, uint64(len(totals[i])))
		dst = binary.AppendUvarint(dst, uint64(len(suffixes[i])))
	}
	for i := range s.Days {
		dst = append(dst, totals[i]...)
		dst = append(dst, suffixes[i]...)
	}
	return dst
}

func appendStates(dst []byte, states []State) []byte {
	for _, s := range states {
		dst = s.appendBinary(dst)
	}
	return dst
}

func (v *View) decodeStates(b []byte, ar *stateArena) ([]State, []byte, error) {
	out := make([]State, len(v.aggs))
	for i := range v.aggs {
		s, rest, err := decodeStateIn(&v.aggs[i], b, ar)
		if err != nil {
			return nil, nil, err
		}
		out[i], b = s, rest
	}
	return out, b, nil
}

// DecodeSummary decodes what AppendSummary wrote, every day's total
// included (what the healer needs).
func (v *View) DecodeSummary(b []byte) (*Summary, error) { return v.decodeSummary(b, true) }

// DecodeSummaryAt decodes a summary for a read at t: the day suffixes the
// read's windows need and Base, copied out of b, which the result does not
// keep (a store can decode from the value it holds without copying it
// whole). The result serves reads at t only.
func (v *View) DecodeSummaryAt(b []byte, t int64) (*Summary, error) {
	s, err := v.decodeSummary(b, false)
	if err == nil {
		err = v.PrepareSummary(s, t)
	}
	if err != nil {
		return nil, err
	}
	s.suffixRaw = nil
	return s, nil
}

// DecodeSummaryForRead decodes a summary without its day totals: a read
// needs only the suffixes of its windows (PrepareSummary). The summary keeps
// referring to b, which the caller must not change afterwards.
func (v *View) DecodeSummaryForRead(b []byte) (*Summary, error) { return v.decodeSummary(b, false) }

func (v *View) decodeSummary(b []byte, totals bool) (*Summary, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("summary: empty: %w", ErrCorrupt)
	}
	if b[0] != summaryVersion {
		return nil, fmt.Errorf("summary: version %d: %w", b[0], ErrVersion)
	}
	if totals {
		b = append([]byte(nil), b[1:]...)
	} else {
		b = b[1:]
	}
	s := &Summary{}
	var m int
	if s.Watermark, m = binary.Varint(b); m <= 0 {
		return nil, fmt.Errorf("summary: watermark: %w", ErrCorrupt)
	}
	b = b[m:]
	if s.FirstDay, m = binary.Varint(b); m <= 0 {
		return nil, fmt.Errorf("summary: first day: %w", ErrCorrupt)
	}
	b = b[m:]
	if len(b) == 0 || b[0] > 1 {
		return nil, fmt.Errorf("summary: base flag: %w", ErrCorrupt)
	}
	hasBase := b[0] == 1
	b = b[1:]
	var err error
	if hasBase {
		base := b
		if s.Base, b, err = v.decodeStates(b, nil); err != nil {
			return nil, fmt.Errorf("summary base: %w", err)
		}
		if !totals {
			// Decoded states may refer to their bytes: a summary for a read
			// keeps only its suffixes' bytes (PrepareSummary copies what it
			// decodes of them), so decode Base again from a copy of its own.
			if s.Base, _, err = v.decodeStates(bytes.Clone(base[:len(base)-len(b)]), nil); err != nil {
				return nil, fmt.Errorf("summary base: %w", err)
			}
		}
	}
	n, m := binary.Uvarint(b)
	if m <= 0 || n > uint64(len(b)) {
		return nil, fmt.Errorf("summary: day count: %w", ErrCorrupt)
	}
	b = b[m:]
	var ar *stateArena // the days' totals, the only states decoded here
	if totals {
		ar = newStateArena(v.aggs, int(n))
	}
	s.Days = make([]SummaryDay, 0, n)
	lens := make([][2]uint64, n)
	var sum uint64
	for i := uint64(0); i < n; i++ {
		var d SummaryDay
		if d.Start, m = binary.Varint(b); m <= 0 {
			return nil, fmt.Errorf("summary: day: %w", ErrCorrupt)
		}
		b = b[m:]
		if d.Gen, m = binary.Uvarint(b); m <= 0 {
			return nil, fmt.Errorf("summary: gen: %w", ErrCorrupt)
		}
		b = b[m:]
		for k := 0; k < 2; k++ {
			l, m := binary.Uvarint(b)
			if m <= 0 || l > uint64(len(b)) {
				return nil, fmt.Errorf("summary: length: %w", ErrCorrupt)
			}
			lens[i][k], sum, b = l, sum+l, b[m:]
		}
		if i > 0 && d.Start <= s.Days[i-1].Start {
			return nil, fmt.Errorf("summary: days out of order: %w", ErrCorrupt)
		}
		s.Days = append(s.Days, d)
	}
	if sum != uint64(len(b)) {
		return nil, fmt.Errorf("summary: %d bytes for %d: %w", len(b), sum, ErrCorrupt)
	}
	s.suffixRaw = make([][]byte, n)
	for i := range s.Days {
		total := b[:lens[i][0]]
		b = b[lens[i][0]:]
		s.suffixRaw[i], b = b[:lens[i][1]], b[lens[i][1]:]
		if !totals {
			continue
		}
		var rest []byte
		if s.Days[i].Total, rest, err = v.decodeStates(total, ar); err != nil {
			return nil, fmt.Errorf("summary day %d: %w", s.Days[i].Start, err)
		}
		if len(rest) != 0 {
			return nil, fmt.Errorf("summary day %d: trailing bytes: %w", s.Days[i].Start, ErrCorrupt)
		}
	}
	return s, nil
}

// dayVersion is the first byte of a day record of suffix aggregates. A
// day record of block aggregates (version 1, the record encoding) starts
// with recordVersion, or with dayOnlyMarker.
const dayVersion = 2

// suffixBuf holds the encoded suffixes of a record being encoded. They are
// pooled: a heal encodes a record per key and day and per block of several
// tiles, and growing a buffer for each was a third of its allocation.
type suffixBuf struct {
	buf  []byte
	ends []int
}

var suffixBufs = sync.Pool{New: func() any { return new(suffixBuf) }}

// suffixes encodes, from the last tile back, the merge of each tile and
// every later one into sb, merging into acc (empty states, which end
// holding the merge of all tiles); suffix returns tile i's.
func (sb *suffixBuf) suffixes(tiles []Tile, acc []State) {
	n := len(tiles)
	sb.buf = sb.buf[:0]
	sb.ends = slices.Grow(sb.ends[:0], n)[:n]
	for i := n - 1; i >= 0; i-- {
		MergeStates(acc, tiles[i].States)
		sb.buf = appendStates(sb.buf, acc)
		sb.ends[i] = len(sb.buf)
	}
}

// appendSuffixes appends the byte length of each tile's suffix (the merge
// of it and every later tile), then the suffixes, merging the tiles into
// total (nil: states of its own): the body of day and detail records.
func (v *View) appendSuffixes(dst []byte, tiles []Tile, total []State) []byte {
	acc := total
	if acc == nil {
		acc = v.newStates()
	}
	sb := suffixBufs.Get().(*suffixBuf)
	defer suffixBufs.Put(sb)
	sb.suffixes(tiles, acc)
	for i := range tiles {
		dst = binary.AppendUvarint(dst, uint64(len(sb.suffix(i))))
	}
	for i := range tiles {
		dst = append(dst, sb.suffix(i)...)
	}
	return dst
}

// suffix returns the encoded suffix of tile i.
func (sb *suffixBuf) suffix(i int) []byte {
	if i == len(sb.ends)-1 {
		return sb.buf[:sb.ends[i]]
	}
	return sb.buf[sb.ends[i+1]:sb.ends[i]]
}

// AppendDayRecord appends the encoding of a day record. r holds one
// aggregate per block (tiles of the block span), and Only may say which
// blocks hold a single tile. The record stores, per block, the merge of that
// block and every later one of the day behind an index, so a read decodes
// one suffix whatever the day holds (DecodeDaySuffix):
//
//	version byte (2)
//	uvarint n: blocks present, ascending
//	n × uvarint block index within the day,
//	    uvarint 0 for a block of several tiles, else 1 + the index of its one tile within the block
//	n × uvarint byte length of the block's suffix states
//	the states of each block's suffix, in layout order
//
// The day holding lifetime_start, when it starts inside the day, keeps the
// version 1 encoding (block aggregates): the healer takes Base's part of that
// day from them, block by block.
func (v *View) AppendDayRecord(dst []byte, r *Record) []byte {
	return v.AppendDayRecordTotal(dst, r, nil)
}

// AppendDayRecordTotal is AppendDayRecord that also leaves the day's total
// (the merge of every block), which the encoding computes on the way, in
// total: states of the view holding nothing yet (nil: not wanted).
func (v *View) AppendDayRecordTotal(dst []byte, r *Record, total []State) []byte {
	if v.lifetimeDay(r.Start) {
		if total != nil {
			for i := range r.Tiles {
				MergeStates(total, r.Tiles[i].States)
			}
		}
		return v.appendDayRecordV1(dst, r)
	}
	n := len(r.Tiles)
	dst = append(dst, dayVersion)
	dst = binary.AppendUvarint(dst, uint64(n))
	for i, t := range r.Tiles {
		dst = binary.AppendUvarint(dst, uint64((t.Start-r.Start)/v.span))
		var single uint64
		if r.Only != nil && r.Only[i] != MinTime {
			single = uint64((r.Only[i]-t.Start)/v.Granularity) + 1
		}
		dst = binary.AppendUvarint(dst, single)
	}
	return v.appendSuffixes(dst, r.Tiles, total)
}

// lifetimeDay reports whether lifetime_start falls inside the day starting
// at day, after its first instant.
func (v *View) lifetimeDay(day int64) bool {
	return v.LifetimeStart != MinTime && v.LifetimeStart > day && v.LifetimeStart < day+v.DaySpan()
}

// appendDayRecordV1 appends the version 1 encoding of a day record: the
// record encoding with the block span as the tile step, one aggregate per
// block.
//
// A day record with Only set starts with a marker byte (0xD2), uvarint n and
// n uvarints — 0 for a block of several tiles, else 1 + the index of its
// single tile within the block — before the tiles.
func (v *View) appendDayRecordV1(dst []byte, r *Record) []byte {
	if r.Only != nil {
		dst = append(dst, dayOnlyMarker)
		dst = binary.AppendUvarint(dst, uint64(len(r.Only)))
		for i, o := range r.Only {
			if o == MinTime {
				dst = append(dst, 0)
				continue
			}
			dst = binary.AppendUvarint(dst, uint64((o-r.Tiles[i].Start)/v.Granularity)+1)
		}
	}
	return appendTiles(dst, r, v.span)
}

const dayOnlyMarker = 0xD2

// dayEntry is one block of a version 2 day record: its index within the day,
// its single tile (0: several tiles, else 1 + the tile's index within the
// block) and where its suffix lies among the states.
type dayEntry struct {
	idx, single uint64
	off, size   uint64
}

// parseDay reads the index of a version 2 day record b, appending its blocks
// to ents, and returns them with the states that follow.
func (v *View) parseDay(b []byte, ents []dayEntry) ([]dayEntry, []byte, error) {
	if len(b) == 0 || b[0] != dayVersion {
		return nil, nil, fmt.Errorf("day record: bad version: %w", ErrVersion)
	}
	b = b[1:]
	per, tiles := uint64(v.DaySpan()/v.span), uint64(v.span/v.Granularity)
	n, m := binary.Uvarint(b)
	if m <= 0 || n > per || n > uint64(len(b)) {
		return nil, nil, fmt.Errorf("day record: block count: %w", ErrCorrupt)
	}
	b = b[m:]
	for i := uint64(0); i < n; i++ {
		idx, m := binary.Uvarint(b)
		if m <= 0 || idx >= per || (i > 0 && idx <= ents[len(ents)-1].idx) {
			return nil, nil, fmt.Errorf("day record: block index: %w", ErrCorrupt)
		}
		b = b[m:]
		single, m := binary.Uvarint(b)
		if m <= 0 || single > tiles {
			return nil, nil, fmt.Errorf("day record: single tile: %w", ErrCorrupt)
		}
		b = b[m:]
		ents = append(ents, dayEntry{idx: idx, single: single})
	}
	var off uint64
	for i := range ents {
		l, m := binary.Uvarint(b)
		if m <= 0 || l > uint64(len(b)) {
			return nil, nil, fmt.Errorf("day record: suffix length: %w", ErrCorrupt)
		}
		b = b[m:]
		ents[i].off, ents[i].size = off, l
		off += l
	}
	if off != uint64(len(b)) {
		return nil, nil, fmt.Errorf("day record: %d bytes of states for %d: %w", len(b), off, ErrCorrupt)
	}
	return ents, b, nil
}

// decodeDayStates decodes one block's suffix from the states of a version 2
// day record, copying its bytes (decoded states may refer to them).
func (v *View) decodeDayStates(body []byte, e dayEntry) ([]State, error) {
	st, rest, err := v.decodeStates(bytes.Clone(body[e.off:e.off+e.size]), nil)
	if err != nil {
		return nil, fmt.Errorf("day record: %w", err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("day record: %d trailing bytes in a suffix: %w", len(rest), ErrCorrupt)
	}
	return st, nil
}

// DecodeDaySuffix returns, from the day record b of the day starting at day,
// the batch data of [from, end of day) that the day record holds (nil when
// none), from ≥ day: the merge of the blocks after from's block, and of
// from's block too when from is its first instant or the block's one tile
// is at or after from. detail reports that from falls inside a block of
// several tiles: the read needs that block's detail record from from
// (DecodeDetailSuffix) besides.
//
// A version 2 record gives it from one suffix, whatever the day holds; a
// version 1 record (stores written before, and the day of lifetime_start)
// is decoded whole and its blocks merged. The result keeps nothing of b.
func (v *View) DecodeDaySuffix(day int64, b []byte, from int64) (states []State, detail bool, err error) {
	if len(b) == 0 {
		return nil, false, fmt.Errorf("day record: empty: %w", ErrCorrupt)
	}
	block := AlignDown(from, v.span)
	if b[0] != dayVersion {
		r, err := v.decodeDayRecordV1(day, b)
		if err != nil {
			return nil, false, err
		}
		return v.mergeBlocks(r, from), v.needsDetail(r, from), nil
	}
	var buf [32]dayEntry
	ents, body, err := v.parseDay(b, buf[:0])
	if err != nil {
		return nil, false, err
	}
	// The first block at or after from's block, then past it when from's
	// block holds nothing from from on, or holds it in a detail record.
	pick := 0
	for pick < len(ents) && day+int64(ents[pick].idx)*v.span < block {
		pick++
	}
	if pick < len(ents) && day+int64(ents[pick].idx)*v.span == block && from != block {
		if s := ents[pick].single; s == 0 {
			pick, detail = pick+1, true
		} else if block+int64(s-1)*v.Granularity < from {
			pick++
		}
	}
	if pick == len(ents) {
		return nil, detail, nil
	}
	states, err = v.decodeDayStates(body, ents[pick])
	if err != nil {
		return nil, false, err
	}
	return states, detail, nil
}

// mergeBlocks is DecodeDaySuffix's states from a record of block
// aggregates: the merge of the blocks after from's block, and of from's block
// when from is its start or its one tile is at or after from; nil when none.
func (v *View) mergeBlocks(r *Record, from int64) []State {
	block := AlignDown(from, v.span)
	var acc []State
	for i := range r.Tiles {
		t := &r.Tiles[i]
		take := t.Start > block || (t.Start == block && from == block)
		if t.Start == block && from != block {
			only, single := r.SingleTile(block)
			take = single && only >= from
		}
		if take {
			if acc == nil {
				acc = v.newStates()
			}
			MergeStates(acc, t.States)
		}
	}
	return acc
}

// needsDetail reports whether from falls inside a block of r that has
// several tiles (a detail record).
func (v *View) needsDetail(r *Record, from int64) bool {
	block := AlignDown(from, v.span)
	if from == block {
		return false
	}
	for i := range r.Tiles {
		if r.Tiles[i].Start == block {
			_, single := r.SingleTile(block)
			return !single
		}
	}
	return false
}

// DecodeDayRecord decodes a day record starting at day for the healer,
// which reads days back whole. A version 1 record gives one tile per block,
// the block's aggregate, and Only. A version 2 record holds no block's own
// aggregate: it gives one tile, the day's total (the suffix of its first
// block), at the first block, and no Only; merging the tiles gives the
// day's total either way.
func (v *View) DecodeDayRecord(day int64, b []byte) (*Record, error) {
	if len(b) == 0 || b[0] != dayVersion {
		return v.decodeDayRecordV1(day, b)
	}
	ents, body, err := v.parseDay(b, nil)
	if err != nil {
		return nil, err
	}
	r := &Record{Start: day}
	if len(ents) == 0 {
		return r, nil
	}
	st, err := v.decodeDayStates(body, ents[0])
	if err != nil {
		return nil, err
	}
	r.Tiles = []Tile{{Start: day + int64(ents[0].idx)*v.span, States: st}}
	return r, nil
}

// decodeDayRecordV1 decodes a version 1 day record (block aggregates).
func (v *View) decodeDayRecordV1(day int64, b []byte) (*Record, error) {
	var only []uint64
	if len(b) > 0 && b[0] == dayOnlyMarker {
		b = b[1:]
		n, m := binary.Uvarint(b)
		if m <= 0 || n > uint64(len(b)) {
			return nil, fmt.Errorf("day record: single-tile count: %w", ErrCorrupt)
		}
		b = b[m:]
		only = make([]uint64, n)
		for i := range only {
			x, m := binary.Uvarint(b)
			if m <= 0 || x > uint64(v.span/v.Granularity) {
				return nil, fmt.Errorf("day record: single tile: %w", ErrCorrupt)
			}
			only[i], b = x, b[m:]
		}
	}
	r, err := v.decodeTiles(day, b, v.span, v.DaySpan()/v.span)
	if err != nil || only == nil {
		return r, err
	}
	if len(only) != len(r.Tiles) {
		return nil, fmt.Errorf("day record: %d single-tile entries for %d blocks: %w", len(only), len(r.Tiles), ErrCorrupt)
	}
	r.Only = make([]int64, len(only))
	for i, x := range only {
		r.Only[i] = MinTime
		if x > 0 {
			r.Only[i] = r.Tiles[i].Start + int64(x-1)*v.Granularity
		}
	}
	return r, nil
}

// SingleTile reports, for the block starting at block in a version 1 day
// record dr, whether the block holds one tile and, if so, its start.
func (dr *Record) SingleTile(block int64) (start int64, single bool) {
	if dr == nil || dr.Only == nil {
		return 0, false
	}
	for i := range dr.Tiles {
		if dr.Tiles[i].Start == block {
			return dr.Only[i], dr.Only[i] != MinTime
		}
	}
	return 0, false
}

func appendTiles(dst []byte, r *Record, step int64) []byte {
	dst = append(dst, recordVersion)
	dst = binary.AppendUvarint(dst, uint64(len(r.Offsets)))
	for _, o := range r.Offsets {
		dst = binary.AppendUvarint(dst, uint64(uint32(o.Partition)))
		dst = binary.AppendUvarint(dst, uint64(o.Offset))
	}
	dst = binary.AppendUvarint(dst, uint64(len(r.Tiles)))
	for _, t := range r.Tiles {
		dst = binary.AppendUvarint(dst, uint64((t.Start-r.Start)/step))
		dst = appendStates(dst, t.States)
	}
	return dst
}

const detailVersion = 2

// AppendDetailRecord encodes the tiles of one block as suffix aggregates —
// tile i holds the merge of tiles i… to the block's end — behind an index,
// so a read needs to decode one tile, whatever the block holds:
//
//	version byte (2)
//	uvarint m: tiles present, ascending
//	m × uvarint tile index within the block
//	m × uvarint byte length of the tile's states
//	the states of each tile's suffix, in layout order
func (v *View) AppendDetailRecord(dst []byte, r *Record) []byte {
	return v.AppendDetailRecordTotal(dst, r, nil)
}

// AppendDetailRecordTotal is AppendDetailRecord that also leaves the
// block's aggregate (the merge of every tile: the suffix at its first tile,
// which the encoding computes on the way) in total: states of the view
// holding nothing yet (nil: not wanted). A heal takes the block's part of
// the day record from there instead of merging the tiles again.
func (v *View) AppendDetailRecordTotal(dst []byte, r *Record, total []State) []byte {
	n := len(r.Tiles)
	dst = append(dst, detailVersion)
	dst = binary.AppendUvarint(dst, uint64(n))
	for _, t := range r.Tiles {
		dst = binary.AppendUvarint(dst, uint64((t.Start-r.Start)/v.Granularity))
	}
	return v.appendSuffixes(dst, r.Tiles, total)
}

// DecodeDetailSuffix returns, from a detail record of the block starting at
// block, the aggregate of its tiles from from on (nil when none), decoding
// that one tile's states.
func (v *View) DecodeDetailSuffix(block int64, b []byte, from int64) ([]State, error) {
	if len(b) == 0 || b[0] != detailVersion {
		return nil, fmt.Errorf("detail record: bad version: %w", ErrVersion)
	}
	b = b[1:]
	n, m := binary.Uvarint(b)
	per := uint64(v.span / v.Granularity)
	if m <= 0 || n > per || n > uint64(len(b)) {
		return nil, fmt.Errorf("detail record: tile count: %w", ErrCorrupt)
	}
	b = b[m:]
	pick, prev := -1, int64(-1)
	for i := 0; i < int(n); i++ {
		idx, m := binary.Uvarint(b)
		if m <= 0 || idx >= per || int64(idx) <= prev {
			return nil, fmt.Errorf("detail record: tile index: %w", ErrCorrupt)
		}
		prev = int64(idx)
		b = b[m:]
		if pick < 0 && block+int64(idx)*v.Granularity >= from {
			pick = i
		}
	}
	var off, size uint64
	for i := 0; i < int(n); i++ {
		l, m := binary.Uvarint(b)
		if m <= 0 || l > uint64(len(b)) {
			return nil, fmt.Errorf("detail record: tile length: %w", ErrCorrupt)
		}
		b = b[m:]
		switch {
		case i < pick:
			off += l
		case i == pick:
			size = l
		}
	}
	if pick < 0 {
		return nil, nil
	}
	if off+size > uint64(len(b)) {
		return nil, fmt.Errorf("detail record: short: %w", ErrCorrupt)
	}
	states, rest, err := v.decodeStates(append([]byte(nil), b[off:off+size]...), nil)
	if err != nil {
		return nil, fmt.Errorf("detail record: %w", err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("detail record: %d trailing bytes in a tile: %w", len(rest), ErrCorrupt)
	}
	return states, nil
}
