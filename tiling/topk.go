package tiling

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
)

// top_k reports the k most frequent values of a column (by canonical text,
// see canonicalValue) with their counts: exactly while the window holds at
// most C = TopKCapacity distinct values, approximately beyond.
//
// Heavy-hitter summaries such as Misra–Gries or Space-Saving merge with
// bounded error but not exactly: a merged summary depends on how the events
// were split and on the merge order, so the same window would give
// different answers (and bytes) from stream tiles, batch tiles and a
// recompute. The state here is a function of the multiset of events, so it
// keeps the merge contract exactly:
//
//   - n, the number of values;
//   - while there are at most C distinct values, the exact count of each
//     (past C the counts are dropped for good, and the state says so);
//   - a sample: the C events with the smallest (eventHash(partition,
//     offset), value), a uniform sample without replacement of the
//     events, since the hash of an event's identity is independent of its
//     value. The C smallest of A ∪ B are among the C smallest of A and of B,
//     so the sample merges exactly.
//
// The result is exact from the counts. Beyond C distinct values it is
// estimated from the sample: a value holding a share p of the n values is in
// the sample with probability 1 − (1−p)^C (p = 1%: 99.997%), and its count is
// estimated as n·s/C for s sample events, unbiased, with a relative standard
// error of √((1−p)/(p·C))·√(1 − C/n) (p = 10%: under 10%). Results are
// ordered by count, descending, then by canonical text.

type sampleEntry struct {
	h uint64
	v string // canonical JSON text
}

func compareSample(a, b sampleEntry) int {
	if c := cmp.Compare(a.h, b.h); c != 0 {
		return c
	}
	return cmp.Compare(a.v, b.v)
}

// freqState is top_k's state.
type freqState struct {
	capacity int
	maxValue int
	n        uint64
	// over: more than capacity distinct values were seen; counts is nil.
	over   bool
	counts map[string]uint64 // owned: never shared with another state
	// sample holds at most capacity entries, ascending; pending holds
	// entries not yet folded in (any order).
	sample, pending []sampleEntry
}

func (s *freqState) add(e *Event, in *Input) {
	var buf [64]byte
	b, ok := canonicalValue(buf[:0], in)
	if !ok || len(b) > s.maxValue {
		return
	}
	v := string(b)
	s.n++
	if !s.over {
		if s.counts == nil {
			s.counts = map[string]uint64{}
		}
		s.counts[v]++
		s.checkOver()
	}
	s.push(sampleEntry{eventHash(e.Pos), v})
}

func (s *freqState) checkOver() {
	if len(s.counts) > s.capacity {
		s.over, s.counts = true, nil
	}
}

// push adds x to the sample unless it cannot be among the capacity smallest.
func (s *freqState) push(x sampleEntry) {
	if len(s.sample) == s.capacity && compareSample(x, s.sample[len(s.sample)-1]) > 0 {
		return
	}
	s.pending = append(s.pending, x)
	if len(s.pending) > s.capacity {
		s.normalize()
	}
}

func (s *freqState) normalize() {
	if len(s.pending) == 0 {
		return
	}
	slices.SortFunc(s.pending, compareSample)
	out := make([]sampleEntry, 0, min(len(s.sample)+len(s.pending), s.capacity))
	i, j := 0, 0
	for len(out) < s.capacity && (i < len(s.sample) || j < len(s.pending)) {
		if j == len(s.pending) || i < len(s.sample) && compareSample(s.sample[i], s.pending[j]) <= 0 {
			out = append(out, s.sample[i])
			i++
		} else {
			out = append(out, s.pending[j])
			j++
		}
	}
	s.sample, s.pending = out, s.pending[:0]
}

// merge folds o in; o is read, never changed.
func (s *freqState) merge(o State) {
	x := o.(*freqState)
	if x.n == 0 {
		return
	}
	s.n += x.n
	switch {
	case s.over:
	case x.over:
		s.over, s.counts = true, nil
	case s.counts == nil:
		s.counts = maps.Clone(x.counts)
	default:
		for v, c := range x.counts {
			s.counts[v] += c
		}
		s.checkOver()
	}
	if len(s.sample)+len(s.pending) == 0 && len(x.pending) == 0 {
		s.sample = x.sample // never written in place: normalize builds anew
		return
	}
	for _, e := range x.sample {
		s.push(e)
	}
	for _, e := range x.pending {
		s.push(e)
	}
}

// appendBinary appends
//
//	uvarint n (0: empty, nothing follows)
//	byte 1 when past capacity distinct values, else 0
//	uvarint d, d × (uvarint length, canonical text): the distinct values,
//	    ascending: every value's when counted, else the sample's
//	when counted: d × uvarint count, in that order
//	uvarint s = min(n, capacity), s × (hash, uvarint index into the values),
//	    ascending, the first hash a uvarint, each later one the uvarint
//	    difference from the previous
func (s *freqState) appendBinary(dst []byte) []byte {
	s.normalize()
	dst = binary.AppendUvarint(dst, s.n)
	if s.n == 0 {
		return dst
	}
	var values []string
	if s.over {
		dst = append(dst, 1)
		seen := map[string]bool{}
		for _, e := range s.sample {
			if !seen[e.v] {
				seen[e.v] = true
				values = append(values, e.v)
			}
		}
		slices.Sort(values)
	} else {
		dst = append(dst, 0)
		values = slices.Sorted(maps.Keys(s.counts))
	}
	index := make(map[string]int, len(values))
	dst = binary.AppendUvarint(dst, uint64(len(values)))
	for i, v := range values {
		index[v] = i
		dst = binary.AppendUvarint(dst, uint64(len(v)))
		dst = append(dst, v...)
	}
	if !s.over {
		for _, v := range values {
			dst = binary.AppendUvarint(dst, s.counts[v])
		}
	}
	dst = binary.AppendUvarint(dst, uint64(len(s.sample)))
	var prev uint64
	for _, e := range s.sample {
		dst = binary.AppendUvarint(dst, e.h-prev)
		dst = binary.AppendUvarint(dst, uint64(index[e.v]))
		prev = e.h
	}
	return dst
}

func decodeFreq(a *aggSpec, b []byte) (State, []byte, error) {
	s := &freqState{capacity: a.n, maxValue: a.maxValue}
	bad := func(why string) (State, []byte, error) {
		return nil, nil, fmt.Errorf("top_k: %s: %w", why, ErrCorrupt)
	}
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return bad("count")
	}
	b = b[k:]
	if s.n = n; n == 0 {
		return s, b, nil
	}
	if len(b) < 1 || b[0] > 1 {
		return bad("flag")
	}
	s.over = b[0] == 1
	b = b[1:]
	d, k := binary.Uvarint(b)
	if k <= 0 || d == 0 || d > uint64(s.capacity) || d > uint64(len(b)) || d > n {
		return bad("value count")
	}
	b = b[k:]
	values := make([]string, d)
	for i := range values {
		l, k := binary.Uvarint(b)
		if k <= 0 || l == 0 || l > uint64(s.maxValue) || l > uint64(len(b)-k) {
			return bad("value length")
		}
		v := b[k : k+int(l)]
		if !json.Valid(v) {
			return bad("value is not JSON")
		}
		values[i] = string(v)
		b = b[k+int(l):]
		if i > 0 && values[i-1] >= values[i] {
			return bad("values out of order")
		}
	}
	if !s.over {
		s.counts = make(map[string]uint64, d)
		var total uint64
		for _, v := range values {
			c, k := binary.Uvarint(b)
			if k <= 0 || c == 0 || total+c < total {
				return bad("value count")
			}
			s.counts[v], total = c, total+c
			b = b[k:]
		}
		if total != n {
			return bad("counts do not add up")
		}
	} else if n <= uint64(s.capacity) {
		return bad("past capacity with few values")
	}
	m, k := binary.Uvarint(b)
	if k <= 0 || m != min(n, uint64(s.capacity)) || m > uint64(len(b)) {
		return bad("sample size")
	}
	b = b[k:]
	s.sample = make([]sampleEntry, m)
	used := make([]bool, d)
	var prev uint64
	for i := range s.sample {
		dh, k := binary.Uvarint(b)
		if k <= 0 || dh > math.MaxUint64-prev {
			return bad("sample hash")
		}
		b = b[k:]
		vi, k := binary.Uvarint(b)
		if k <= 0 || vi >= d {
			return bad("sample value")
		}
		b = b[k:]
		s.sample[i] = sampleEntry{prev + dh, values[vi]}
		used[vi] = true
		if i > 0 && compareSample(s.sample[i-1], s.sample[i]) > 0 {
			return bad("sample out of order")
		}
		prev += dh
	}
	if s.over && slices.Contains(used, false) {
		return bad("value not in the sample")
	}
	return s, b, nil
}

// value returns the feature's k most frequent values as a JSON array of
// {"value": …, "count": …}; [] when empty.
func (s *freqState) value(f *Feature) any {
	s.normalize()
	top := topCounts{k: f.K}
	if !s.over {
		for v, c := range s.counts {
			top.offer(v, c)
		}
	} else {
		// Sample counts, by value, scaled to the n values.
		sc := make(map[string]uint64, len(s.sample))
		for _, e := range s.sample {
			sc[e.v]++
		}
		scale := float64(s.n) / float64(len(s.sample))
		for v, c := range sc {
			top.offer(v, uint64(math.Round(float64(c)*scale)))
		}
	}
	all := top.sorted()
	out := []byte{'['}
	for i, x := range all {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, `{"value":`...)
		out = append(out, x.v...)
		out = append(out, `,"count":`...)
		out = strconv.AppendUint(out, x.c, 10)
		out = append(out, '}')
	}
	return json.RawMessage(append(out, ']'))
}

// valueCount is a value and its count.
type valueCount struct {
	v string
	c uint64
}

// before orders results: higher count first, then canonical text.
func (a valueCount) before(b valueCount) bool {
	return a.c > b.c || a.c == b.c && a.v < b.v
}

// topCounts keeps the k first offered value counts in a heap whose root is
// the last of them.
type topCounts struct {
	k int
	h []valueCount
}

func (t *topCounts) offer(v string, c uint64) {
	x := valueCount{v, c}
	if len(t.h) < t.k {
		t.h = append(t.h, x)
		for i := len(t.h) - 1; i > 0; {
			p := (i - 1) / 2
			if !t.h[p].before(t.h[i]) {
				break
			}
			t.h[p], t.h[i] = t.h[i], t.h[p]
			i = p
		}
		return
	}
	if !x.before(t.h[0]) {
		return
	}
	t.h[0] = x
	for i := 0; ; {
		l, r, last := 2*i+1, 2*i+2, i
		if l < len(t.h) && t.h[last].before(t.h[l]) {
			last = l
		}
		if r < len(t.h) && t.h[last].before(t.h[r]) {
			last = r
		}
		if last == i {
			return
		}
		t.h[i], t.h[last] = t.h[last], t.h[i]
		i = last
	}
}

func (t *topCounts) sorted() []valueCount {
	slices.SortFunc(t.h, func(a, b valueCount) int {
		if a.before(b) {
			return -1
		}
		if b.before(a) {
			return 1
		}
		return 0
	})
	return t.h
}
