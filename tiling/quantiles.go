package tiling

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"math/bits"
	"slices"
)

// approx_percentile is a DDSketch (Masson, Rim, Lee, "DDSketch: a fast and
// fully-mergeable quantile sketch with relative-error guarantees", 2019):
// values are counted in logarithmic bins, K per power of two, so a bin
// [2^(i/K), 2^((i+1)/K)) is γ = 2^(1/K) wide and its representative value is
// within α = (γ−1)/(γ+1) of every value in it. K is the smallest whole
// number of bins per octave meeting the configured accuracy (binsPerOctave).
//
// The bins of a value are computed exactly from its bits: the exponent, and
// the position of the 52-bit fraction among K−1 thresholds (the smallest
// fractions f with (1 + f/2^52)^K ≥ 2^j, found with integer arithmetic). A
// value's bin is thus the same on every platform; a mapping through math.Log
// (assembly on amd64, pure Go elsewhere) or through polynomials that a
// compiler may contract into fused multiply-adds would not pin it, and the
// bins are part of the stored bytes.
//
// The state is the exact count per non-empty bin (negative values in the
// bins of their magnitude, zero in a bin of its own), and the exact minimum
// and maximum. At most maxBins bins are kept: past it the lowest bins (most
// negative values first) collapse into the lowest one kept. Collapsing keeps
// the merge contract: the bins of A ∪ B above its cut are above the cuts of
// A and B, which kept them exactly, and everything at or below the cut ends
// in the cut bin either way. So any split and merge order give the bytes of
// one sketch of every event, and percentiles whose rank lies above the
// collapsed bins keep the accuracy guarantee.
//
// Why not github.com/DataDog/sketches-go (v1.4.8): its mappings use math.Log
// or float polynomials (see above), its counts are float64, and its stores'
// layouts and encodings depend on how their arrays grew; canonical bytes
// would need a store of our own anyway, which is most of the code here.
//
// A percentile q of n values is the value of rank ⌊q·(n−1)⌋ (0-based) in
// ascending order, as in DDSketch: the sketch returns its bin's
// representative, clamped to [min, max]; rank 0 and n−1 return the exact
// minimum and maximum.

// quantileBias offsets bin indexes so that keys of positive values are
// positive, of negative values negative, and 0 is the zero bin: bin indexes
// lie within ±1075·K < ±2^19 for K ≤ 347, so keys lie within ±2^21.
const quantileBias = 1 << 20

// quantileMapping maps values to bins for K bins per octave.
type quantileMapping struct {
	k int
	// thresholds[j-1] is the smallest 52-bit fraction f with
	// (1 + f/2^52)^K ≥ 2^j, j = 1..K−1.
	thresholds []uint64
	// minIndex and maxIndex are the bins of the smallest and largest
	// positive float64.
	minIndex, maxIndex int64
	// rep[j] is the representative of the bins [2^(e+j/K), 2^(e+(j+1)/K))
	// divided by 2^e: 2^(j/K)·2γ/(1+γ), the point within α of both ends.
	rep []float64
}

func newQuantileMapping(k int) *quantileMapping {
	m := &quantileMapping{k: k, thresholds: make([]uint64, k-1), rep: make([]float64, k)}
	one := new(big.Int).Lsh(big.NewInt(1), 52)
	reaches := func(f uint64, j int) bool { // (2^52 + f)^K ≥ 2^(j+52K)
		x := new(big.Int).Add(one, new(big.Int).SetUint64(f))
		x.Exp(x, big.NewInt(int64(k)), nil)
		return x.BitLen() > j+52*k
	}
	for j := 1; j < k; j++ {
		f := uint64((math.Exp2(float64(j)/float64(k)) - 1) * (1 << 52))
		for f < 1<<52-1 && !reaches(f, j) {
			f++
		}
		for f > 0 && reaches(f-1, j) {
			f--
		}
		m.thresholds[j-1] = f
	}
	m.minIndex, m.maxIndex = m.index(math.SmallestNonzeroFloat64), m.index(math.MaxFloat64)
	g := math.Exp2(1 / float64(k))
	for j := range m.rep {
		m.rep[j] = math.Exp2(float64(j)/float64(k)) * 2 * g / (1 + g)
	}
	return m
}

// index returns the bin of x > 0 (finite): e·K + j for x in
// [2^(e+j/K), 2^(e+(j+1)/K)).
func (m *quantileMapping) index(x float64) int64 {
	b := math.Float64bits(x)
	exp := int(b >> 52 & 0x7ff)
	frac := b & (1<<52 - 1)
	e := exp - 1023
	if exp == 0 { // subnormal: normalise the fraction
		shift := bits.LeadingZeros64(frac) - 11 // bring the top bit to bit 52
		frac = frac << shift & (1<<52 - 1)
		e = -1022 - shift
	}
	j, _ := slices.BinarySearch(m.thresholds, frac+1) // thresholds ≤ frac
	return int64(e)*int64(m.k) + int64(j)
}

// value returns the representative of bin i.
func (m *quantileMapping) value(i int64) float64 {
	e := i / int64(m.k)
	j := i % int64(m.k)
	if j < 0 {
		j += int64(m.k)
		e--
	}
	return math.Ldexp(m.rep[j], int(e))
}

// key returns the bin key of x: negative for x < 0, 0 for zero, positive for
// x > 0, in the order of the values.
func (m *quantileMapping) key(x float64) int64 {
	switch {
	case x > 0:
		return quantileBias + m.index(x)
	case x < 0:
		return -(quantileBias + m.index(-x))
	}
	return 0
}

// keyValue returns the representative value of bin key k.
func (m *quantileMapping) keyValue(k int64) float64 {
	switch {
	case k > 0:
		return m.value(k - quantileBias)
	case k < 0:
		return -m.value(-k - quantileBias)
	}
	return 0
}

// validKey reports whether k is a key some finite value maps to.
func (m *quantileMapping) validKey(k int64) bool {
	if k == 0 {
		return true
	}
	if k < 0 {
		k = -k
	}
	i := k - quantileBias
	return i >= m.minIndex && i <= m.maxIndex
}

type quantileBin struct {
	key   int64
	count uint64
}

// quantileState is the bins, ascending by key, and the exact extremes.
type quantileState struct {
	mapping  *quantileMapping
	maxBins  int
	bins     []quantileBin
	work     *quantileWork // bins not yet folded in, when added or merged into
	min, max float64       // valid when n > 0
	n        uint64        // total count
	// packed, when not nil, holds the bins as decoded (validated), and bins
	// is nil: a read merges a tile's bins straight from its bytes.
	packed     []byte
	packedBins int
	packedLast int64 // the last key of packed
	// lists are other states' bins merged in but not yet folded into
	// bins (at most maxLists): a read merges a few large sketches (a
	// month's, a day's) into each window's state and reads its
	// percentiles once, walking the lists together rather than building
	// their union.
	lists []binList
	// ownLists: lists is s's own array (appended to in place, reused),
	// not another state's.
	ownLists bool
}

type quantileWork struct {
	pending, scratch []quantileBin // pending: any order, repeats
	// Merges count bins in arrays indexed by key, one per sign, rather
	// than appending them to pending to be sorted: a read merges hundreds
	// of tiles or days into one accumulator.
	pos, neg denseCounts
	zero     uint64
}

// denseCounts counts bins whose keys lie in [base, base+len(c)).
type denseCounts struct {
	base int64
	c    []uint64
}

// maxDenseBins bounds a denseCounts: wider key ranges (values over more than
// 2^16/K octaves) go to pending instead.
const maxDenseBins = 1 << 16

// add counts k, growing the array to cover it; false if it would grow past
// maxDenseBins.
func (d *denseCounts) add(k int64, c uint64) bool {
	if len(d.c) == 0 {
		if cap(d.c) == 0 {
			d.c = make([]uint64, 0, 64)
		}
		d.base, d.c = k, d.c[:1]
		d.c[0] = c
		return true
	}
	if i := k - d.base; i >= 0 && i < int64(len(d.c)) {
		d.c[i] += c
		return true
	}
	lo, hi := min(d.base, k), max(d.base+int64(len(d.c)), k+1)
	if hi-lo > maxDenseBins {
		return false
	}
	// Grow by half again, towards the side that needed it.
	grow := (hi - lo) / 2
	if k < d.base {
		lo = max(lo-grow, hi-maxDenseBins)
	} else {
		hi = min(hi+grow, lo+maxDenseBins)
	}
	c2 := make([]uint64, hi-lo)
	copy(c2[d.base-lo:], d.c)
	d.base, d.c = lo, c2
	d.c[k-lo] += c
	return true
}

// drain appends the non-zero counts as bins, ascending, and empties d.
func (d *denseCounts) drain(dst []quantileBin) []quantileBin {
	for i, c := range d.c {
		if c != 0 {
			dst = append(dst, quantileBin{d.base + int64(i), c})
			d.c[i] = 0
		}
	}
	d.c = d.c[:0]
	return dst
}

// addBin counts b in the arrays, or in pending when out of their reach.
func (w *quantileWork) addBin(b quantileBin) {
	switch {
	case b.key == 0:
		w.zero += b.count
		return
	case b.key > 0:
		if w.pos.add(b.key, b.count) {
			return
		}
	default:
		if w.neg.add(b.key, b.count) {
			return
		}
	}
	w.pending = append(w.pending, b)
}

// dirty reports whether w holds anything not yet folded in.
func (w *quantileWork) dirty() bool {
	return w != nil && (len(w.pending) > 0 || len(w.pos.c) > 0 || len(w.neg.c) > 0 || w.zero > 0)
}

// mergeBins returns the union of a and b, each ascending with distinct keys,
// adding the counts of equal keys. It returns a or b itself when the other
// is empty.
func mergeBins(a, b []quantileBin) []quantileBin {
	if len(b) == 0 {
		return a
	}
	if len(a) == 0 {
		return b
	}
	out := make([]quantileBin, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		var x quantileBin
		if j == len(b) || i < len(a) && a[i].key <= b[j].key {
			x = a[i]
			i++
		} else {
			x = b[j]
			j++
		}
		if n := len(out); n > 0 && out[n-1].key == x.key {
			out[n-1].count += x.count
		} else {
			out = append(out, x)
		}
	}
	return out
}

func (s *quantileState) w() *quantileWork {
	if s.work == nil {
		s.work = new(quantileWork)
	}
	return s.work
}

// pend returns the bins not yet folded in.
func (s *quantileState) pend() []quantileBin {
	if s.work == nil {
		return nil
	}
	return s.work.pending
}

// appendPackedBins appends the m bins of a packed form to dst.
func appendPackedBins(dst []quantileBin, p []byte, m int) []quantileBin {
	var key int64
	for i := range m {
		var k int
		if i == 0 {
			key, k = binary.Varint(p)
		} else {
			d, kk := binary.Uvarint(p)
			key, k = key+int64(d), kk
		}
		p = p[k:]
		c, k := binary.Uvarint(p)
		p = p[k:]
		dst = append(dst, quantileBin{key, c})
	}
	return dst
}

func (s *quantileState) unpack() {
	if s.packed == nil {
		return
	}
	s.bins = make([]quantileBin, 0, s.packedBins)
	s.bins = appendPackedBins(s.bins, s.packed, s.packedBins)
	s.packed = nil
}

func (s *quantileState) add(e *Event, in *Input) {
	if in.Kind != Number {
		return
	}
	x := in.Num
	s.extremes(x, x)
	s.n++
	s.w().pending = append(s.w().pending, quantileBin{s.mapping.key(x), 1})
	if len(s.pend()) > max(s.maxBins, 64) {
		s.normalize()
	}
}

func (s *quantileState) extremes(lo, hi float64) {
	if s.n == 0 {
		s.min, s.max = lo, hi
		return
	}
	s.min, s.max = min(s.min, lo), max(s.max, hi)
}

// normalize folds the lists and the work into bins and collapses the lowest
// bins beyond maxBins.
func (s *quantileState) normalize() {
	if len(s.lists) > 0 {
		s.foldLists()
	}
	if !s.work.dirty() {
		return
	}
	s.unpack()
	out := mergeBins(s.bins, s.drainWork())
	// mergeBins may return s.bins itself; it is never written in place
	// (it may be a decoded or a merged-from state's).
	s.bins = s.collapse(slices.Clip(out))
}

// drainWork returns the bins of the work, ascending with distinct keys, in
// a new slice, and empties it.
func (s *quantileState) drainWork() []quantileBin {
	w := s.work
	// The arrays' bins, ascending: negative keys, zero, positive keys.
	counted := w.neg.drain(nil)
	if w.zero > 0 {
		counted = append(counted, quantileBin{0, w.zero})
		w.zero = 0
	}
	counted = w.pos.drain(counted)
	if len(w.pending) == 0 {
		return counted
	}
	w.pending, w.scratch = radixSortBins(w.pending, w.scratch)
	// Repeated keys (adds of one bin) summed, into a new slice.
	c := make([]quantileBin, 0, len(w.pending))
	for _, b := range w.pending {
		if n := len(c); n > 0 && c[n-1].key == b.key {
			c[n-1].count += b.count
		} else {
			c = append(c, b)
		}
	}
	w.pending = w.pending[:0]
	return mergeBins(counted, c)
}

// settle readies s for a walk of its lists: its work, if any, becomes one
// more list when there is room, rather than folding the lists (an
// accumulator of a few stream tiles merged into a window beside a month's
// and a day's bins).
func (s *quantileState) settle() {
	if !s.work.dirty() {
		return
	}
	if len(s.lists) == 0 || len(s.lists) >= maxLists {
		s.normalize()
		return
	}
	bins := s.drainWork()
	l := binList{bins: bins, m: len(bins)}
	if l.m > 0 {
		l.last = bins[l.m-1].key
	}
	s.appendLists(l)
}

// appendLists appends ls to s's lists, in an array of s's own.
func (s *quantileState) appendLists(ls ...binList) {
	if !s.ownLists {
		s.lists = append(make([]binList, 0, len(s.lists)+len(ls)+1), s.lists...)
		s.ownLists = true
	}
	s.lists = append(s.lists, ls...)
}

// dropLists empties s's lists, keeping its own array.
func (s *quantileState) dropLists() {
	if s.ownLists {
		clear(s.lists)
		s.lists = s.lists[:0]
		return
	}
	s.lists = nil
}

// collapse returns bins, ascending with distinct keys, with the lowest
// beyond maxBins added to the lowest one kept, into a new slice if any (bins
// may be another state's). Collapsing at any point of a merge gives the
// bins of collapsing once at the end (see the type's comment): the cut only
// rises as bins are added.
func (s *quantileState) collapse(bins []quantileBin) []quantileBin {
	over := len(bins) - s.maxBins
	if over <= 0 {
		return bins
	}
	kept := make([]quantileBin, s.maxBins)
	copy(kept, bins[over:])
	for _, b := range bins[:over] {
		kept[0].count += b.count
	}
	return kept
}

// binList is an ascending list of distinct bins, unpacked or packed, that
// is never written: another state's bins or packed form.
type binList struct {
	bins   []quantileBin
	packed []byte
	m      int
	last   int64 // the last key, when m > 0
}

// own returns s's bins as a list.
func (s *quantileState) own() binList {
	if s.packed != nil {
		return binList{packed: s.packed, m: s.packedBins, last: s.packedLast}
	}
	l := binList{bins: s.bins, m: len(s.bins)}
	if l.m > 0 {
		l.last = s.bins[l.m-1].key
	}
	return l
}

// maxLists bounds quantileState.lists.
const maxLists = 4

// size is the number of bins s holds, folded in or not; at least the number
// it holds once normalized.
func (s *quantileState) size() int {
	n := len(s.bins) + s.packedBins
	for _, l := range s.lists {
		n += l.m
	}
	if w := s.work; w != nil {
		n += len(w.pending) + len(w.pos.c) + len(w.neg.c) + 1
	}
	return n
}

// binReader reads a binList. It advances by index, not by reslicing, so
// reading writes no pointer (no write barrier while the GC runs).
type binReader struct {
	l   binList
	i   int   // the next bin
	off int   // of the next packed bin in l.packed
	key int64 // the last packed key read
}

// binsDone is the key binReader.read gives past the last bin: above every
// bin key (|key| < 2^21).
const binsDone = math.MaxInt64

// read returns the next bin, or one of key binsDone past the last.
func (r *binReader) read() quantileBin {
	if r.i == r.l.m {
		return quantileBin{key: binsDone}
	}
	r.i++
	if r.l.packed == nil {
		return r.l.bins[r.i-1]
	}
	p, o := r.l.packed, r.off
	if r.i == 1 {
		r.key, o = binary.Varint(p)
	} else if o < len(p) && p[o] < 0x80 { // uvarint written out
		r.key, o = r.key+int64(p[o]), o+1
	} else {
		d, n := uvarintLong(p, o)
		r.key, o = r.key+int64(d), o+n
	}
	var c uint64
	if o+1 < len(p) && p[o] < 0x80 {
		c, o = uint64(p[o]), o+1
	} else if o+1 < len(p) && p[o+1] < 0x80 {
		c, o = uint64(p[o]&0x7f)|uint64(p[o+1])<<7, o+2
	} else {
		var n int
		c, n = uvarint(p, o)
		o += n
	}
	r.off = o
	return quantileBin{r.key, c}
}

// listMerger reads the union of lists, ascending, adding the counts of
// equal keys: a state's own bins and lists, with another's (its own and
// lists) appended before they are folded.
type listMerger struct {
	rs    [2*maxLists + 2]binReader
	heads [2*maxLists + 2]quantileBin
	k     int
}

// merger returns a merger of s's own bins and its lists.
func (s *quantileState) merger() (m listMerger) {
	m.add(s.own())
	for _, l := range s.lists {
		m.add(l)
	}
	return m
}

func (m *listMerger) add(l binList) {
	if l.m == 0 {
		return
	}
	m.rs[m.k] = binReader{l: l}
	m.heads[m.k] = m.rs[m.k].read()
	m.k++
}

// read returns the next bin of the union, or one of key binsDone past the
// last.
func (m *listMerger) read() quantileBin {
	hs := m.heads[:m.k]
	low := int64(binsDone)
	for _, h := range hs {
		low = min(low, h.key)
	}
	out := quantileBin{key: low}
	if low == binsDone {
		return out
	}
	for i := range hs {
		if hs[i].key == low {
			out.count += hs[i].count
			hs[i] = m.rs[i].read()
		}
	}
	return out
}

// foldLists merges s's lists into its bins, in one pass over all of them.
func (s *quantileState) foldLists() {
	m := s.merger()
	n := 0
	for i := range m.k {
		n = max(n, m.rs[i].l.m)
	}
	// The union of a month's bins and a day's mostly repeats keys.
	out := make([]quantileBin, 0, n+n/8+8)
	for b := m.read(); b.key != binsDone; b = m.read() {
		out = append(out, b)
	}
	s.bins, s.packed, s.packedBins = s.collapse(out), nil, 0
	s.dropLists()
}

// merge folds o in; o is read, never changed.
func (s *quantileState) merge(o State) {
	x := o.(*quantileState)
	if x.n == 0 {
		return
	}
	empty := s.n == 0
	s.extremes(x.min, x.max)
	s.n += x.n
	if empty && !x.work.dirty() {
		// Share x's bins and lists: never written in place (normalize
		// builds anew; appending to lists must not write into x's).
		s.bins, s.packed, s.packedBins, s.packedLast = x.bins, x.packed, x.packedBins, x.packedLast
		s.lists, s.ownLists = x.lists, false
		return
	}
	xl, xn := len(x.lists), x.packedBins+len(x.bins) // x's sorted lists (its own bins among them), their bins
	if xn > 0 {
		xl++
	}
	for _, l := range x.lists {
		xn += l.m
	}
	switch {
	case xl == 0:
	case len(s.lists)+xl <= maxLists:
		// Keep x's sorted bins as lists, to be merged in one pass with
		// the others when a value needs them (often without building
		// their union): a read merges a month's and a day's bins, and a
		// few tiles, into each window.
		if x.packedBins+len(x.bins) > 0 {
			s.appendLists(x.own())
		}
		s.appendLists(x.lists...)
	case s.work == nil && 8*xn >= s.size():
		// No room, for the first time (s has no work arrays), and x
		// about as large as s or larger (a read's window state): fold
		// them all into bins, in one pass. The next time, the work
		// arrays take them.
		if x.packedBins+len(x.bins) > 0 {
			s.appendLists(x.own())
		}
		s.appendLists(x.lists...)
		s.foldLists()
		s.w()
	default:
		// No room again, or x small: s's lists and x's bins go to the
		// work arrays, which take any number of merges (an accumulator
		// of many tiles) without allocating per merge.
		w := s.w()
		for _, l := range s.lists {
			w.addList(l)
		}
		s.dropLists()
		w.addList(x.own())
		for _, l := range x.lists {
			w.addList(l)
		}
	}
	if xw := x.work; xw.dirty() {
		w := s.w()
		for _, b := range xw.pending {
			w.addBin(b)
		}
		for _, d := range []*denseCounts{&xw.neg, &xw.pos} {
			for i, c := range d.c {
				if c != 0 {
					w.addBin(quantileBin{d.base + int64(i), c})
				}
			}
		}
		if xw.zero > 0 {
			w.addBin(quantileBin{0, xw.zero})
		}
	}
	if len(s.pend()) > max(s.maxBins, 64) {
		s.normalize()
	}
}

// addList counts the bins of l in w.
func (w *quantileWork) addList(l binList) {
	if l.packed != nil {
		mergePackedBins(w, l.packed, l.m)
		return
	}
	for _, b := range l.bins {
		w.addBin(b)
	}
}

// mergePackedBins counts the m bins of a packed form in w.
func mergePackedBins(w *quantileWork, p []byte, m int) {
	var key int64
	for i := range m {
		var k int
		if i == 0 {
			key, k = binary.Varint(p)
		} else {
			d, kk := binary.Uvarint(p)
			key, k = key+int64(d), kk
		}
		p = p[k:]
		c, k := binary.Uvarint(p)
		p = p[k:]
		w.addBin(quantileBin{key, c})
	}
}

// appendBinary appends uvarint m, the number of bins (0: empty, nothing
// follows); the minimum and maximum, 8 bytes little-endian each; then m ×
// (key, uvarint count ≥ 1), ascending, the first key a varint and each later
// one the uvarint difference from the previous.
func (s *quantileState) appendBinary(dst []byte) []byte {
	s.normalize()
	if s.packed != nil {
		dst = binary.AppendUvarint(dst, uint64(s.packedBins))
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(s.min))
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(s.max))
		return append(dst, s.packed...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(s.bins)))
	if len(s.bins) == 0 {
		return dst
	}
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(s.min))
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(s.max))
	for i, b := range s.bins {
		if i == 0 {
			dst = binary.AppendVarint(dst, b.key)
		} else {
			dst = binary.AppendUvarint(dst, uint64(b.key-s.bins[i-1].key))
		}
		dst = binary.AppendUvarint(dst, b.count)
	}
	return dst
}

func decodeQuantiles(a *aggSpec, b []byte, s *quantileState) (State, []byte, error) {
	s.mapping, s.maxBins = a.mapping, a.maxBins
	bad := func(why string) (State, []byte, error) {
		return nil, nil, fmt.Errorf("quantiles: %s: %w", why, ErrCorrupt)
	}
	m, k := binary.Uvarint(b)
	if k <= 0 || m > uint64(a.maxBins) || m > uint64(len(b)) {
		return bad("bin count")
	}
	b = b[k:]
	if m == 0 {
		return s, b, nil
	}
	if len(b) < 16 {
		return bad("short")
	}
	s.min = math.Float64frombits(binary.LittleEndian.Uint64(b))
	s.max = math.Float64frombits(binary.LittleEndian.Uint64(b[8:]))
	b = b[16:]
	if math.IsNaN(s.min) || math.IsInf(s.min, 0) || math.IsNaN(s.max) || math.IsInf(s.max, 0) || s.min > s.max ||
		s.min == 0 && math.Signbit(s.min) || s.max == 0 && math.Signbit(s.max) {
		return bad("extremes")
	}
	// validKey, with the bounds in registers: keys of magnitude lo..hi.
	lo, hi := quantileBias+s.mapping.minIndex, quantileBias+s.mapping.maxIndex
	key, o := binary.Varint(b)
	if o <= 0 {
		return bad("key")
	}
	var n uint64
	for i := range m {
		// uvarint written out (it does not inline): most bins' key
		// differences and many counts take one byte.
		if i > 0 {
			var d uint64
			var kk int
			if o < len(b) && b[o] < 0x80 {
				d, kk = uint64(b[o]), 1
			} else {
				d, kk = uvarintLong(b, o)
			}
			if kk <= 0 || d == 0 || d > 1<<22 {
				return bad("key")
			}
			key, o = key+int64(d), o+kk
		}
		if key > hi || key < lo && (key > -lo && key != 0 || key < -hi) {
			return bad("key")
		}
		var c uint64
		var kk int
		if o+1 < len(b) {
			if b[o] < 0x80 {
				c, kk = uint64(b[o]), 1
			} else if b[o+1] < 0x80 {
				c, kk = uint64(b[o]&0x7f)|uint64(b[o+1])<<7, 2
			} else {
				c, kk = uvarintLong(b, o)
			}
		} else {
			c, kk = uvarint(b, o)
		}
		if kk <= 0 || c == 0 || n+c < n {
			return bad("count")
		}
		n += c
		o += kk
	}
	// The extremes are not checked against the bins: a read clamps to them.
	s.n, s.packed, s.packedBins, s.packedLast = n, b[:o:o], int(m), key
	return s, b[o:], nil
}

// uvarint decodes the uvarint at b[o:], as binary.Uvarint; one byte, the
// most common length in the bins of a sketch, without the loop.
func uvarint(b []byte, o int) (uint64, int) {
	if o < len(b) && b[o] < 0x80 {
		return uint64(b[o]), 1
	}
	return uvarintLong(b, o)
}

// uvarintLong is uvarint for more than one byte: up to five (the key
// differences of a sparse HyperLogLog, 31-bit keys) unrolled.
func uvarintLong(b []byte, o int) (uint64, int) {
	if o < 0 || o+5 > len(b) {
		if o > len(b) || o < 0 {
			return 0, 0
		}
		return binary.Uvarint(b[o:])
	}
	c := b[o : o+5]
	x := uint64(c[0] & 0x7f)
	if c[0] < 0x80 {
		return x, 1
	}
	x |= uint64(c[1]&0x7f) << 7
	if c[1] < 0x80 {
		return x, 2
	}
	x |= uint64(c[2]&0x7f) << 14
	if c[2] < 0x80 {
		return x, 3
	}
	x |= uint64(c[3]&0x7f) << 21
	if c[3] < 0x80 {
		return x, 4
	}
	x |= uint64(c[4]&0x7f) << 28
	if c[4] < 0x80 {
		return x, 5
	}
	return binary.Uvarint(b[o:])
}

// value returns the feature's percentiles as a JSON object, in the order
// the feature lists them; null when empty.
func (s *quantileState) value(f *Feature) any {
	var buf [MaxPercentiles]float64
	qs := s.quantiles(f.Percentiles, buf[:0])
	if qs == nil {
		return nil
	}
	out := make([]byte, 0, 2+len(qs)*24)
	out = append(out, '{')
	for i, q := range f.Percentiles {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, '"')
		out = appendJSONNumber(out, q)
		out = append(out, '"', ':')
		out = appendJSONNumber(out, qs[i])
	}
	return json.RawMessage(append(out, '}'))
}

// quantile returns the estimate of the value of rank ⌊q·(n−1)⌋.
func (s *quantileState) quantile(q float64) float64 {
	var buf [1]float64
	return s.quantiles([]float64{q}, buf[:0])[0]
}

// quantiles appends to dst the estimates of the values of ranks ⌊q·(n−1)⌋
// for each q of qs (at most MaxPercentiles); nil when s is empty. The bins
// are walked once for them all; lists, when s has them, are walked
// together without building their union, unless they hold more than
// maxBins distinct keys (then their union collapses, and is built).
func (s *quantileState) quantiles(qs []float64, dst []float64) []float64 {
	s.settle()
	if s.n == 0 {
		return nil
	}
	var ranks [MaxPercentiles]uint64
	var order [MaxPercentiles]int // of the ranks to look up, ascending
	n := 0
	for i, q := range qs {
		r := uint64(math.Floor(q * float64(s.n-1)))
		ranks[i] = r
		switch {
		case r == 0:
			dst = append(dst, s.min)
		case r >= s.n-1:
			dst = append(dst, s.max)
		default:
			dst = append(dst, s.max) // past the last bin: s.max
			j := n
			for ; j > 0 && ranks[order[j-1]] > r; j-- {
				order[j] = order[j-1]
			}
			order[j] = i
			n++
		}
	}
	if n == 0 {
		return dst
	}
	found, ok := s.walk(ranks[:len(qs)], order[:n])
	if !ok {
		s.foldLists()
		found, _ = s.walk(ranks[:len(qs)], order[:n])
	}
	for _, i := range order[:n] {
		if k := found[i]; k != binsDone {
			dst[len(dst)-len(qs)+i] = min(max(s.mapping.keyValue(k), s.min), s.max)
		}
	}
	return dst
}

// walk returns, for each index of order (ascending by rank), the key of
// the bin holding ranks[i], or binsDone past the last bin; false when s's
// lists hold more than maxBins distinct keys.
func (s *quantileState) walk(ranks []uint64, order []int) (found [MaxPercentiles]int64, ok bool) {
	if len(s.lists) == 0 && s.packed == nil {
		// Bins alone (a normalized state): a plain loop.
		for _, i := range order {
			found[i] = binsDone
		}
		var cum uint64
		j := 0
		for _, b := range s.bins {
			cum += b.count
			for j < len(order) && cum > ranks[order[j]] {
				found[order[j]] = b.key
				j++
			}
			if j == len(order) {
				break
			}
		}
		return found, true
	}
	if len(s.lists) > 0 {
		if found, ok, done := s.walkCounts(ranks, order); done {
			return found, ok
		}
	}
	return s.walkMerged(ranks, order)
}

// walkMerged is walk over the union of s's lists in key order.
func (s *quantileState) walkMerged(ranks []uint64, order []int) (found [MaxPercentiles]int64, ok bool) {
	for _, i := range order {
		found[i] = binsDone
	}
	// Without lists, or with fewer bins in all than maxBins, the union
	// cannot collapse: stop at the last rank.
	stop := len(s.lists) == 0 || s.size() <= s.maxBins
	m := s.merger()
	var cum uint64
	distinct, j := 0, 0
	for b := m.read(); b.key != binsDone; b = m.read() {
		distinct++
		cum += b.count
		for j < len(order) && cum > ranks[order[j]] {
			found[order[j]] = b.key
			j++
		}
		if j == len(order) && stop {
			break
		}
	}
	return found, distinct <= s.maxBins
}

// walkCounts is walk by counting the lists' bins in an array indexed by
// key, then reading it in order: each list is read straight through, with
// no comparing of the lists' keys, which is cheaper when the positive keys
// of all lie in a range not much wider than the bins (a month's and a
// day's bins of one column of amounts; zero has a count of its own). done
// is false, and nothing is done, when they do not, or a list has negative
// keys.
func (s *quantileState) walkCounts(ranks []uint64, order []int) (found [MaxPercentiles]int64, ok, done bool) {
	lo, hi, n := int64(binsDone), int64(0), 0
	span := func(l binList) bool {
		if l.m == 0 {
			return true
		}
		r := binReader{l: l}
		b := r.read()
		if b.key == 0 && l.m > 1 {
			b = r.read()
		}
		if b.key < 0 {
			return false
		}
		if b.key > 0 {
			lo, hi = min(lo, b.key), max(hi, l.last)
		}
		n += l.m
		return true
	}
	if !span(s.own()) {
		return found, false, false
	}
	for _, l := range s.lists {
		if !span(l) {
			return found, false, false
		}
	}
	if lo == binsDone { // zeros only
		lo, hi = 1, 0
	}
	if hi-lo >= int64(min(2*n+64, maxDenseBins)) {
		return found, false, false
	}
	var buf [1024]uint64 // 8 KiB: a key range of 29 octaves at 1% accuracy
	counts := buf[:0]
	if w := int(hi - lo + 1); w <= len(buf) {
		counts = buf[:w]
	} else {
		counts = make([]uint64, w)
	}
	var zero uint64
	count := func(l binList) {
		if l.m == 0 {
			return
		}
		if l.packed == nil {
			for _, b := range l.bins {
				if b.key == 0 {
					zero += b.count
				} else {
					counts[b.key-lo] += b.count
				}
			}
			return
		}
		// The packed form read inline: this loop is most of a value.
		p := l.packed
		key, o := binary.Varint(p)
		for i := range l.m {
			// uvarint written out, as in decodeQuantiles.
			if i > 0 {
				if o < len(p) && p[o] < 0x80 {
					key, o = key+int64(p[o]), o+1
				} else {
					d, n := uvarintLong(p, o)
					key, o = key+int64(d), o+n
				}
			}
			var c uint64
			if o+1 < len(p) && p[o] < 0x80 {
				c, o = uint64(p[o]), o+1
			} else if o+1 < len(p) && p[o+1] < 0x80 {
				c, o = uint64(p[o]&0x7f)|uint64(p[o+1])<<7, o+2
			} else {
				var n int
				c, n = uvarint(p, o)
				o += n
			}
			if key == 0 {
				zero += c
			} else {
				counts[key-lo] += c
			}
		}
	}
	count(s.own())
	for _, l := range s.lists {
		count(l)
	}
	for _, i := range order {
		found[i] = binsDone
	}
	var cum uint64
	distinct, j := 0, 0
	if zero > 0 {
		distinct, cum = 1, zero
		for j < len(order) && cum > ranks[order[j]] {
			found[order[j]] = 0
			j++
		}
	}
	for i, c := range counts {
		if c == 0 {
			continue
		}
		distinct++
		cum += c
		for j < len(order) && cum > ranks[order[j]] {
			found[order[j]] = lo + int64(i)
			j++
		}
	}
	return found, distinct <= s.maxBins, true
}
