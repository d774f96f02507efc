package tiling

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
)

// first_n, last_n and last_distinct_n keep values of events ordered by
// (event time, partition, offset): a total order of a topic's events, so
// which values are kept never depends on arrival or merge order.
//
// first_n keeps the n earliest events' values and last_n the n latest, as
// the events carried them (like last). last_distinct_n keeps, for each
// distinct value (by canonical text, see canonicalValue), its latest event,
// and of those the n latest; it serves canonical text. Every list is served
// oldest first, as a JSON array; an empty list is [].
//
// The merge contract holds exactly. For first_n and last_n a merge is the
// union truncated to n, and truncation commutes with union. For
// last_distinct_n, a value among the n latest distinct values of A ∪ B has
// its latest event in A or B, say A, and ranks at least as high in A as in A
// ∪ B, so A kept it with that event; a value truncated from A or B ranks
// below n values of that part, which rank above it in the union too.

// listEntry is one kept value and its event's position in the order.
type listEntry struct {
	ts  int64
	pos Pos
	// val is JSON text; never written in place (it may be a decoded
	// record's bytes, or shared between states after a merge).
	val []byte
}

func (e *listEntry) compare(o *listEntry) int { return compareEvents(e.ts, e.pos, o.ts, o.pos) }

// listState is first_n (last false) or last_n (last true).
type listState struct {
	last     bool
	n        int
	maxValue int
	entries  []listEntry // ascending, at most n
	// pending holds merged entries not yet folded in (any order): merges
	// append, and normalize folds them before anything reads the state, so
	// that a read merging many tiles sorts once in a while rather than
	// merging lists at every tile.
	pending []listEntry
}

func (s *listState) add(e *Event, in *Input) {
	if in.Kind == Missing || len(in.Raw) > s.maxValue || len(in.Raw) == 0 {
		return
	}
	s.normalize()
	s.insert(listEntry{ts: e.TS, pos: e.Pos}, in.Raw)
}

// rejects reports whether x cannot enter: the folded entries are n already,
// and x is beyond the last kept position.
func (s *listState) rejects(x *listEntry) bool {
	n := len(s.entries)
	return n == s.n && (s.last && x.compare(&s.entries[0]) <= 0 || !s.last && x.compare(&s.entries[n-1]) >= 0)
}

func (s *listState) normalize() {
	if len(s.pending) == 0 {
		return
	}
	s.pending = sortEntries(s.pending)
	s.entries = mergeEntries(s.entries, s.pending)
	s.pending = s.pending[:0]
	s.truncate()
}

// insert adds x with a copy of val unless the list is full and x would be
// truncated at once.
func (s *listState) insert(x listEntry, val []byte) {
	if s.rejects(&x) {
		return
	}
	i, found := slices.BinarySearchFunc(s.entries, x, func(a, b listEntry) int { return a.compare(&b) })
	if found {
		return // the same event again
	}
	x.val = bytes.Clone(val)
	s.entries = slices.Insert(s.entries, i, x)
	s.truncate()
}

func (s *listState) truncate() {
	if over := len(s.entries) - s.n; over > 0 {
		if s.last {
			s.entries = slices.Delete(s.entries, 0, over)
		} else {
			s.entries = s.entries[:s.n]
		}
	}
}

// merge folds o in; o is read, never changed.
func (s *listState) merge(o State) {
	x := o.(*listState)
	for _, es := range [2][]listEntry{x.entries, x.pending} {
		for i := range es {
			// Nothing of x beyond the kept positions can enter: the common
			// case when a walk from the newest tile has filled a last_n.
			if !s.rejects(&es[i]) {
				s.pending = append(s.pending, es[i])
			}
		}
	}
	if len(s.pending) > max(s.n, 64) {
		s.normalize()
	}
}

// sortEntries sorts es ascending and drops repeated positions (the same
// event merged twice).
func sortEntries(es []listEntry) []listEntry {
	slices.SortFunc(es, func(a, b listEntry) int { return a.compare(&b) })
	return slices.CompactFunc(es, func(a, b listEntry) bool { return a.compare(&b) == 0 })
}

// mergeEntries returns the ascending union of a and b (both ascending),
// keeping one of equal positions. The result shares nothing with b's slice.
func mergeEntries(a, b []listEntry) []listEntry {
	out := make([]listEntry, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch c := a[i].compare(&b[j]); {
		case c < 0:
			out = append(out, a[i])
			i++
		case c > 0:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i, j = i+1, j+1
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

func (s *listState) appendBinary(dst []byte) []byte {
	s.normalize()
	return appendEntries(dst, s.entries)
}

func (s *listState) value(*Feature) any {
	s.normalize()
	return entriesJSON(s.entries)
}

// entriesJSON is the JSON array of the entries' values, oldest first.
func entriesJSON(es []listEntry) json.RawMessage {
	n := 2
	for i := range es {
		n += len(es[i].val) + 1
	}
	out := make([]byte, 0, n)
	out = append(out, '[')
	for i := range es {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, es[i].val...)
	}
	return append(out, ']')
}

// appendEntries appends
//
//	uvarint m
//	m × (time, uvarint partition, varint offset, uvarint len, value bytes)
//
// in ascending order, the first time a varint and each later one the uvarint
// difference from the previous.
func appendEntries(dst []byte, es []listEntry) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(es)))
	for i := range es {
		e := &es[i]
		if i == 0 {
			dst = binary.AppendVarint(dst, e.ts)
		} else {
			dst = binary.AppendUvarint(dst, uint64(e.ts)-uint64(es[i-1].ts))
		}
		dst = binary.AppendUvarint(dst, uint64(uint32(e.pos.Partition)))
		dst = binary.AppendVarint(dst, e.pos.Offset)
		dst = binary.AppendUvarint(dst, uint64(len(e.val)))
		dst = append(dst, e.val...)
	}
	return dst
}

// decodeEntries decodes what appendEntries wrote: at most n entries,
// strictly ascending, each value JSON of 1..maxValue bytes. Values refer to b.
func decodeEntries(what string, b []byte, n, maxValue int) ([]listEntry, []byte, error) {
	bad := func(why string) ([]listEntry, []byte, error) {
		return nil, nil, fmt.Errorf("%s: %s: %w", what, why, ErrCorrupt)
	}
	m, k := binary.Uvarint(b)
	if k <= 0 || m > uint64(n) || m > uint64(len(b)) {
		return bad("count")
	}
	b = b[k:]
	if m == 0 {
		return nil, b, nil
	}
	es := make([]listEntry, m)
	for i := range es {
		e := &es[i]
		if i == 0 {
			if e.ts, k = binary.Varint(b); k <= 0 {
				return bad("time")
			}
		} else {
			d, kk := binary.Uvarint(b)
			// Order-preserving map of int64 to uint64: the sum must not wrap.
			u := uint64(es[i-1].ts) ^ 1<<63
			if kk <= 0 || d > math.MaxUint64-u {
				return bad("time")
			}
			e.ts, k = int64((u+d)^1<<63), kk
		}
		b = b[k:]
		p, k := binary.Uvarint(b)
		if k <= 0 || p > math.MaxUint32 {
			return bad("partition")
		}
		e.pos.Partition = int32(uint32(p))
		b = b[k:]
		if e.pos.Offset, k = binary.Varint(b); k <= 0 {
			return bad("offset")
		}
		b = b[k:]
		l, k := binary.Uvarint(b)
		if k <= 0 || l == 0 || l > uint64(maxValue) || l > uint64(len(b)-k) {
			return bad("value length")
		}
		b = b[k:]
		e.val = b[:l:l]
		b = b[l:]
		if !json.Valid(e.val) {
			return bad("value is not JSON")
		}
		if i > 0 && es[i-1].compare(e) >= 0 {
			return bad("entries out of order")
		}
	}
	return es, b, nil
}

func decodeList(a *aggSpec, b []byte) (State, []byte, error) {
	es, rest, err := decodeEntries(a.kind.String(), b, a.n, a.maxValue)
	if err != nil {
		return nil, nil, err
	}
	return &listState{last: a.kind == kindLastN, n: a.n, maxValue: a.maxValue, entries: es}, rest, nil
}

// distinctState is last_distinct_n: distinct canonical values, each with its
// latest event, the n latest of them, ascending.
type distinctState struct {
	n        int
	maxValue int
	entries  []listEntry
	pending  []listEntry // as listState's
}

func (s *distinctState) add(e *Event, in *Input) {
	var buf [64]byte
	v, ok := canonicalValue(buf[:0], in)
	if !ok || len(v) > s.maxValue {
		return
	}
	s.normalize()
	x := listEntry{ts: e.TS, pos: e.Pos}
	for i := range s.entries {
		if bytes.Equal(s.entries[i].val, v) {
			if x.compare(&s.entries[i]) <= 0 {
				return
			}
			s.entries = slices.Delete(s.entries, i, i+1)
			break
		}
	}
	if len(s.entries) == s.n && x.compare(&s.entries[0]) <= 0 {
		return
	}
	i, _ := slices.BinarySearchFunc(s.entries, x, func(a, b listEntry) int { return a.compare(&b) })
	x.val = bytes.Clone(v)
	s.entries = slices.Insert(s.entries, i, x)
	if len(s.entries) > s.n {
		s.entries = slices.Delete(s.entries, 0, 1)
	}
}

// merge folds o in; o is read, never changed.
func (s *distinctState) merge(o State) {
	x := o.(*distinctState)
	for _, es := range [2][]listEntry{x.entries, x.pending} {
		for i := range es {
			// An entry older than the n kept cannot enter, nor replace a
			// later entry of its value.
			if len(s.entries) < s.n || es[i].compare(&s.entries[0]) > 0 {
				s.pending = append(s.pending, es[i])
			}
		}
	}
	if len(s.pending) > max(s.n, 64) {
		s.normalize()
	}
}

// normalize folds pending in: each value's latest entry, the n latest.
func (s *distinctState) normalize() {
	if len(s.pending) == 0 {
		return
	}
	s.pending = sortEntries(s.pending)
	all := mergeEntries(s.entries, s.pending)
	s.pending = s.pending[:0]
	// Keep each value's latest entry: walk from the latest.
	seen := make(map[string]bool, len(all))
	keep := make([]listEntry, 0, min(len(all), s.n))
	for i := len(all) - 1; i >= 0 && len(keep) < s.n; i-- {
		if k := string(all[i].val); !seen[k] {
			seen[k] = true
			keep = append(keep, all[i])
		}
	}
	slices.Reverse(keep)
	s.entries = keep
}

func (s *distinctState) appendBinary(dst []byte) []byte {
	s.normalize()
	return appendEntries(dst, s.entries)
}

func (s *distinctState) value(*Feature) any {
	s.normalize()
	return entriesJSON(s.entries)
}

func decodeDistinct(a *aggSpec, b []byte) (State, []byte, error) {
	es, rest, err := decodeEntries("last_distinct_n", b, a.n, a.maxValue)
	if err != nil {
		return nil, nil, err
	}
	seen := make(map[string]bool, len(es))
	for i := range es {
		if seen[string(es[i].val)] {
			return nil, nil, fmt.Errorf("last_distinct_n: value repeated: %w", ErrCorrupt)
		}
		seen[string(es[i].val)] = true
	}
	return &distinctState{n: a.n, maxValue: a.maxValue, entries: es}, rest, nil
}
