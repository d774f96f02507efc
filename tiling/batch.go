package tiling

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"
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
	// DayRecords maps a day start to its record of block aggregates (tiles
	// of one block span each); Details maps a block start to its record of
	// tiles. Only what BatchNeeds asked for is present.
	DayRecords map[int64]*Record
	Details    map[int64]*Record
	// Suffixes maps a window start s inside a block to the aggregate of the
	// block's tiles from s on, as a detail record's suffix index gives it
	// (DecodeDetailSuffix): one decode per window however full the block.
	// It takes precedence over Details for that start.
	Suffixes map[int64][]State
}

// BatchNeed names a record a read needs: the day record of Day, and when
// Block is not MinTime also the detail record of that block.
type BatchNeed struct {
	Day   int64
	Block int64
	Gen   uint64
	// Start is the window start inside Block whose suffix the read needs.
	Start int64
}

// BatchNeeds returns the day and detail records a read at t needs beside the
// summary s.
func (v *View) BatchNeeds(t int64, s *Summary) []BatchNeed {
	var out []BatchNeed
	seen := map[BatchNeed]bool{}
	for _, w := range v.windows {
		start := v.WindowStart(w, t)
		if start >= s.Watermark || start < s.FirstDay {
			continue // all stream, or lifetime from Base and Days
		}
		day := AlignDown(start, v.DaySpan())
		sd := s.Day(day)
		if sd == nil || start == day {
			continue // nothing that day, or the whole day from the summary
		}
		n := BatchNeed{Day: day, Block: MinTime, Gen: sd.Gen, Start: start}
		if block := AlignDown(start, v.span); block != start {
			n.Block = block
		} else {
			n.Start = MinTime
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
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
// day's blocks and tiles from its start. Each tile and day is merged once,
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
		day := AlignDown(start, v.DaySpan())
		if start != day && s.Day(day) != nil {
			v.dayPart(w, b, day, start)
		}
		finish(wins[next].idx, w)
	}
	return out
}

// dayPart merges into acc the batch data of [start, end of day), start
// within the day: the block aggregates of the day record after start's
// block, and the tiles of start's block from start.
func (v *View) dayPart(acc []State, b *Batch, day, start int64) {
	block := AlignDown(start, v.span)
	if dr := b.DayRecords[day]; dr != nil {
		for j := range dr.Tiles {
			if t := &dr.Tiles[j]; t.Start > block || (t.Start == block && start == block) {
				MergeStates(acc, t.States)
			}
		}
	}
	if block != start {
		if only, single := b.DayRecords[day].SingleTile(block); single {
			// One tile in the block: its aggregate is the block's.
			if only >= start {
				for j := range b.DayRecords[day].Tiles {
					if t := &b.DayRecords[day].Tiles[j]; t.Start == block {
						MergeStates(acc, t.States)
					}
				}
			}
		} else if st, ok := b.Suffixes[start]; ok {
			if st != nil {
				MergeStates(acc, st)
			}
		} else if det := b.Details[block]; det != nil {
			for j := range det.Tiles {
				if t := &det.Tiles[j]; t.Start >= start {
					MergeStates(acc, t.States)
				}
			}
		}
	}
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
func (v *View) Aggregate(r *Record, e *Event) {
	t := v.tile(r, AlignDown(e.TS, v.Granularity))
	for i, a := range v.aggs {
		var in *Input
		if a.column >= 0 {
			in = &e.Inputs[a.column]
		}
		t.States[i].add(e, in)
	}
}

// Arena allocates the states of the tiles a batch builder makes in chunks
// rather than one allocation per state: a day's build makes millions of
// small states that live and die together. States from an arena keep their
// whole chunk alive, so use it for what is dropped at once (a day's tiles),
// not for what outlives it. Not safe for concurrent use.
type Arena struct {
	aggs     []aggSpec
	chunk    int    // states of a kind per allocation
	bytes    []byte // room for last and first's values
	states   []State
	counts   []countState
	sums     []sumState
	extremes []extremeState
	means    []meanState
	lasts    []lastState
}

// arenaChunk is how many states of a kind an arena allocates at once.
const arenaChunk = 512

// arenaValue is the room an arena gives each last or first state for its
// value's JSON text.
const arenaValue = 16

// NewArena returns an empty arena for v's layout.
func (v *View) NewArena() *Arena { return &Arena{aggs: v.aggs, chunk: arenaChunk} }

// take returns a fresh zero element of *s, allocating a chunk of n when full.
func take[T any](s *[]T, n int) *T {
	if len(*s) == cap(*s) {
		*s = make([]T, 0, n)
	}
	*s = (*s)[:len(*s)+1]
	return &(*s)[len(*s)-1]
}

// newStates returns identity states of the layout, as View.NewStates does.
func (a *Arena) newStates() []State {
	n := len(a.aggs)
	if cap(a.states)-len(a.states) < n {
		a.states = make([]State, 0, n*a.chunk)
	}
	m := len(a.states)
	a.states = a.states[:m+n]
	out := a.states[m : m+n : m+n]
	for i := range a.aggs {
		sp := &a.aggs[i]
		switch sp.kind {
		case kindCount:
			out[i] = take(&a.counts, a.chunk)
		case kindSum:
			out[i] = take(&a.sums, a.chunk)
		case kindMin, kindMax:
			s := take(&a.extremes, a.chunk)
			s.max = sp.kind == kindMax
			out[i] = s
		case kindMean:
			out[i] = take(&a.means, a.chunk)
		case kindLast, kindFirst:
			s := take(&a.lasts, a.chunk)
			s.first, s.maxValue = sp.kind == kindFirst, sp.maxValue
			// Room for a short value: its own bytes of a shared chunk (the
			// capacity stops where the next state's room starts, so a longer
			// value reallocates instead of overwriting it).
			if len(a.bytes)+arenaValue > cap(a.bytes) {
				a.bytes = make([]byte, 0, arenaValue*a.chunk)
			}
			m := len(a.bytes)
			a.bytes = a.bytes[:m+arenaValue]
			s.raw = a.bytes[m : m : m+arenaValue]
			out[i] = s
		default:
			out[i] = newState(sp)
		}
	}
	return out
}

// NewStatesIn is NewStates with the states taken from a.
func (v *View) NewStatesIn(a *Arena) []State { return a.newStates() }

// AggregateIn is Aggregate with the states of new tiles taken from a.
func (v *View) AggregateIn(a *Arena, r *Record, e *Event) {
	t := v.tileIn(a, r, AlignDown(e.TS, v.Granularity))
	for i, sp := range v.aggs {
		var in *Input
		if sp.column >= 0 {
			in = &e.Inputs[sp.column]
		}
		t.States[i].add(e, in)
	}
}

// tileIn is tile with the states of a new tile taken from a.
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
	r.Tiles[i] = Tile{Start: start, States: a.newStates()}
	return &r.Tiles[i]
}

// RollupIn is Rollup with the block aggregates' states taken from a.
func (v *View) RollupIn(a *Arena, r *Record, step int64) []Tile {
	var out []Tile
	for j := range r.Tiles {
		t := &r.Tiles[j]
		start := AlignDown(t.Start, step)
		if n := len(out); n == 0 || out[n-1].Start != start {
			out = append(out, Tile{Start: start, States: a.newStates()})
		}
		MergeStates(out[len(out)-1].States, t.States)
	}
	return out
}

// Rollup returns one tile per block of span step (a multiple of g) holding the
// merge of r's tiles in that block, ascending.
func (v *View) Rollup(r *Record, step int64) []Tile {
	var out []Tile
	for j := range r.Tiles {
		t := &r.Tiles[j]
		start := AlignDown(t.Start, step)
		if n := len(out); n == 0 || out[n-1].Start != start {
			out = append(out, Tile{Start: start, States: v.newStates()})
		}
		MergeStates(out[len(out)-1].States, t.States)
	}
	return out
}

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
	ar := newStateArena(v.aggs, int(n))
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

// AppendDayRecord appends the encoding of a day record: tiles of one block
// each, in the record encoding with the block span as the tile step.
//
// A day record with Only set starts with a marker byte (0xD2), uvarint n and
// n uvarints — 0 for a block of several tiles, else 1 + the index of its
// single tile within the block — before the tiles.
func (v *View) AppendDayRecord(dst []byte, r *Record) []byte {
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

// DecodeDayRecord decodes a day record starting at day.
func (v *View) DecodeDayRecord(day int64, b []byte) (*Record, error) {
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

// SingleTile reports, for the block starting at block in day record dr,
// whether the block holds one tile and, if so, its start.
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
	n := len(r.Tiles)
	// The suffixes are computed from the last tile back, into one buffer;
	// ends[i] is where tile i's suffix ends in it.
	var buf []byte
	ends := make([]int, n)
	acc := v.newStates()
	for i := n - 1; i >= 0; i-- {
		MergeStates(acc, r.Tiles[i].States)
		buf = appendStates(buf, acc)
		ends[i] = len(buf)
	}
	suffix := func(i int) []byte {
		if i == n-1 {
			return buf[:ends[i]]
		}
		return buf[ends[i+1]:ends[i]]
	}
	dst = append(dst, detailVersion)
	dst = binary.AppendUvarint(dst, uint64(n))
	for _, t := range r.Tiles {
		dst = binary.AppendUvarint(dst, uint64((t.Start-r.Start)/v.Granularity))
	}
	for i := range n {
		dst = binary.AppendUvarint(dst, uint64(len(suffix(i))))
	}
	for i := range n {
		dst = append(dst, suffix(i)...)
	}
	return dst
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
