package tiling

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// approx_count_distinct is a HyperLogLog of precision p (2^p registers of 6
// bits' range, one byte each) with a sparse form for small cardinalities, as
// in HyperLogLog++ (Heule, Nunkesser, Hall 2013), and Ertl's improved
// estimator ("New cardinality estimation algorithms for HyperLogLog
// sketches", 2017), which needs no empirical bias tables.
//
// Each value's canonical text is hashed (valueHash) into 64 bits h. Sparse,
// the state is the set of (i', ρ') for i' the top 25 bits of h and ρ' one
// plus the leading zeros of the remaining 39 (1..40), keeping the largest ρ'
// per i'. It turns dense, registers[i] = max ρ over the top p bits i, when
// it holds more than hllSparseMax(p) distinct i'. Both forms are functions of
// the set of hashes, the representation is chosen by a monotone count, and
// the merges (set union keeping max ρ', register max) are exact: any split
// and merge order give the same bytes as one sketch of every event.
//
// Why not github.com/axiomhq/hyperloglog (v0.3.0): its encoding is documented
// as not canonical (the same values encode differently depending on
// insertion order and on whether Estimate compacted the sparse form), when
// it turns dense depends on the history of inserts and merges (so a merged
// sketch and a fresh one can give different estimates), and its dense
// estimate calls math.Pow per register (about 0.7 ms at precision 14). This
// implementation uses the same hash-to-register mapping (top p bits, leading
// zeros + 1 capped at 65−p), so its registers equal that library's for the
// same hashes; the tests compare the estimates.
//
// Estimates: sparse, linear counting over 2^25 buckets, exact to well under
// 1% up to the sparse limit; dense, relative standard error about
// 1.04/√(2^p). Finalising costs one pass over 2^p registers (a few µs at
// p = 12).

const (
	hllSparseBits = 25
	hllSparseRho  = 64 - hllSparseBits + 1 // largest ρ' (40)
)

// hllSparseMax is the most distinct sparse indexes a sparse sketch holds: a
// quarter of the dense form's bytes or less. Past it, merging the dense form
// (a byte max per register) is cheaper than decoding and sorting keys,
// which matters to a read merging many days.
func hllSparseMax(p int) int { return max(1<<p/16, 4) }

// hllState is empty (no sparse, no dense), sparse or dense.
type hllState struct {
	p uint8
	// sparse holds keys i'<<6 | ρ', ascending, one per i'.
	sparse []uint32
	// dense holds 2^p registers; sharedDense: they are a decoded record's
	// bytes, copied before any write. While shared, keys set in them wait
	// in pending, and more may hold further registers, also never
	// written: the sketch's registers are the byte-wise max of dense and
	// more with the pending keys set. A read merges a month's, a day's and
	// an hour's registers into each window's state and estimates it once:
	// the estimate takes the max as it counts (estimateLazy), with no copy.
	dense       []byte
	sharedDense bool
	more        [][]byte
	// packed, when not nil, is the sparse form as decoded (count and key
	// deltas, validated) and sparse is nil: a read merges a tile's keys
	// straight from its bytes.
	packed []byte
	// work holds keys not yet folded in (any order, repeats): adds and
	// merges append, and normalize folds them before anything reads the
	// state. Only states added or merged into have it.
	work *hllWork
}

type hllWork struct {
	pending, scratch []uint32
}

func (s *hllState) w() *hllWork {
	if s.work == nil {
		s.work = new(hllWork)
	}
	return s.work
}

// pend returns the keys not yet folded in.
func (s *hllState) pend() []uint32 {
	if s.work == nil {
		return nil
	}
	return s.work.pending
}

// appendPacked appends the keys of a packed sparse form to dst.
func appendPacked(dst []uint32, p []byte) []uint32 {
	n, o := binary.Uvarint(p)
	dst = slices.Grow(dst, int(n)) // n ≤ hllSparseMax: checked by decodeHLL
	var k uint64
	for range n {
		d, m := uvarintLong(p, o) // keys differ by a few bytes' worth
		o += m
		k += d
		dst = append(dst, uint32(k))
	}
	return dst
}

// setPacked sets the register of every key of the packed list p (as
// appendPacked reads it) in the dense registers.
func (s *hllState) setPacked(p []byte) {
	n, o := binary.Uvarint(p)
	var k uint64
	for range n {
		d, m := uvarintLong(p, o)
		o += m
		k += d
		s.setKey(uint32(k))
	}
}

// unpack materialises a packed sparse form.
func (s *hllState) unpack() {
	if s.packed == nil {
		return
	}
	n, _ := binary.Uvarint(s.packed)
	s.sparse = make([]uint32, 0, n)
	s.sparse = appendPacked(s.sparse, s.packed)
	s.packed = nil
}

// hllKey is the sparse key of hash h.
func hllKey(h uint64) uint32 {
	idx := uint32(h >> (64 - hllSparseBits))
	rho := uint32(bits.LeadingZeros64(h<<hllSparseBits|1<<(hllSparseBits-1))) + 1
	return idx<<6 | rho
}

// register returns the dense register and its value for sparse key k at
// precision p.
func hllRegister(k uint32, p uint8) (int, uint8) {
	idx, rho := k>>6, uint8(k&63)
	low := idx & (1<<(hllSparseBits-p) - 1) // the bits between p and 25
	if low != 0 {
		return int(idx >> (hllSparseBits - p)), uint8(bits.LeadingZeros32(low)) - (32 - (hllSparseBits - p)) + 1
	}
	return int(idx >> (hllSparseBits - p)), rho + hllSparseBits - p
}

func (s *hllState) add(e *Event, in *Input) {
	var buf [64]byte
	v, ok := canonicalValue(buf[:0], in)
	if !ok {
		return
	}
	s.addHash(valueHash(v))
}

func (s *hllState) addHash(h uint64) {
	s.unpack()
	k := hllKey(h)
	if s.dense != nil {
		s.setKey(k)
		return
	}
	s.w().pending = append(s.w().pending, k)
	if len(s.pend()) > max(hllSparseMax(int(s.p)), 64) {
		s.normalize()
	}
}

func (s *hllState) setRegister(i int, r uint8) {
	if s.dense[i] >= r {
		return
	}
	if s.sharedDense {
		s.dense, s.sharedDense = slices.Clone(s.dense), false
	}
	s.dense[i] = r
}

// setKey sets sparse key k in dense registers: at once when they are s's
// own, else pending until a fold.
func (s *hllState) setKey(k uint32) {
	if !s.sharedDense {
		s.setRegister(hllRegister(k, s.p))
		return
	}
	w := s.w()
	w.pending = append(w.pending, k)
	if len(w.pending) > max(hllSparseMax(int(s.p)), 64) {
		s.fold()
	}
}

// maxMore bounds hllState.more: past it the registers are folded.
const maxMore = 4

// fold makes dense registers s's registers alone: the max with more, in a
// new array, and the pending keys set.
func (s *hllState) fold() {
	if len(s.more) > 0 {
		d := make([]byte, len(s.dense))
		for i := 0; i < len(d); i += 8 {
			a := binary.LittleEndian.Uint64(s.dense[i:])
			for _, m := range s.more {
				a = swarMax(a, binary.LittleEndian.Uint64(m[i:]))
			}
			binary.LittleEndian.PutUint64(d[i:], a)
		}
		s.dense, s.sharedDense, s.more = d, false, nil
	}
	if w := s.work; w != nil && len(w.pending) > 0 {
		for _, k := range w.pending {
			s.setRegister(hllRegister(k, s.p))
		}
		w.pending = w.pending[:0]
	}
}

// normalize folds pending into sparse, keeping the largest ρ' per index, and
// turns the sketch dense when it outgrows the sparse form; a dense sketch's
// registers it folds.
func (s *hllState) normalize() {
	if s.dense != nil {
		s.fold()
		return
	}
	if len(s.pend()) == 0 {
		return
	}
	s.unpack()
	s.w().pending, s.w().scratch = radixSort32(s.w().pending, s.w().scratch)
	out := make([]uint32, 0, len(s.sparse)+len(s.pend()))
	i, j := 0, 0
	push := func(k uint32) {
		// Keys ascend, so a later key with the same index has a larger ρ'.
		if n := len(out); n > 0 && out[n-1]>>6 == k>>6 {
			out[n-1] = k
			return
		}
		out = append(out, k)
	}
	for i < len(s.sparse) || j < len(s.pend()) {
		if j == len(s.pend()) || i < len(s.sparse) && s.sparse[i] <= s.pend()[j] {
			push(s.sparse[i])
			i++
		} else {
			push(s.pend()[j])
			j++
		}
	}
	s.sparse, s.w().pending = out, s.w().pending[:0]
	if len(s.sparse) > hllSparseMax(int(s.p)) {
		s.dense = make([]byte, 1<<s.p)
		for _, k := range s.sparse {
			s.setRegister(hllRegister(k, s.p))
		}
		s.sparse = nil
	}
}

// merge folds o in; o is read, never changed (its pending keys are copied).
func (s *hllState) merge(o State) {
	x := o.(*hllState)
	if x.packed != nil {
		switch {
		case s.dense != nil && s.sharedDense:
			w := s.w()
			w.pending = append(appendPacked(w.pending, x.packed), x.pend()...)
			if len(w.pending) > max(hllSparseMax(int(s.p)), 64) {
				s.fold()
			}
			return
		case s.dense != nil:
			s.setPacked(x.packed)
			for _, k := range x.pend() {
				s.setKey(k)
			}
			return
		case s.packed == nil && len(s.sparse)+len(s.pend())+len(x.pend()) == 0:
			s.packed = x.packed // bytes of a decoded record: never written
			return
		}
		w := s.w()
		w.pending = append(appendPacked(w.pending, x.packed), x.pend()...)
		if len(s.pend()) > max(hllSparseMax(int(s.p)), 64) {
			s.normalize()
		}
		return
	}
	if x.dense != nil {
		switch {
		case s.dense == nil:
			s.takeDense(x)
		case s.sharedDense && x.sharedDense && len(s.more)+1+len(x.more) <= maxMore:
			// Both never written: keep x's registers beside s's.
			s.more = append(s.more, x.dense)
			s.more = append(s.more, x.more...)
		default:
			s.fold()
			s.maxDense(x.dense)
			for _, m := range x.more {
				s.maxDense(m)
			}
		}
		for _, k := range x.pend() {
			s.setKey(k)
		}
		return
	}
	s.unpack()
	if len(x.sparse)+len(x.pend()) == 0 {
		return
	}
	if s.dense != nil {
		for _, k := range x.sparse {
			s.setKey(k)
		}
		for _, k := range x.pend() {
			s.setKey(k)
		}
		return
	}
	if len(s.sparse)+len(s.pend()) == 0 && len(x.pend()) == 0 {
		s.sparse = x.sparse // never written in place: normalize builds anew
		return
	}
	s.w().pending = append(s.w().pending, x.sparse...)
	s.w().pending = append(s.w().pending, x.pend()...)
	if len(s.pend()) > max(hllSparseMax(int(s.p)), 64) {
		s.normalize()
	}
}

// takeDense turns s, not dense, into x's registers (not x's pending keys)
// with s's keys set in them: in any order, so s's pending keys need no
// sort. It shares x's registers when they are never written (x's more
// too), s's keys then pending.
func (s *hllState) takeDense(x *hllState) {
	if x.sharedDense {
		s.dense, s.sharedDense, s.more = x.dense, true, slices.Clip(x.more)
	} else {
		s.dense = slices.Clone(x.dense)
		for _, m := range x.more { // none: more only beside shared registers
			s.maxDense(m)
		}
	}
	// s's pending keys stay pending, or are set by fold.
	for _, k := range s.sparse {
		s.setKey(k)
	}
	if s.packed != nil {
		s.setPacked(s.packed)
	}
	s.sparse, s.packed = nil, nil
	if !s.sharedDense {
		s.fold()
	}
}

// appendBinary appends the canonical form: byte 0 empty; byte 1, uvarint
// count and the ascending sparse keys, the first a uvarint and each later
// one the uvarint difference from the previous; byte 2 and 2^p register
// bytes.
func (s *hllState) appendBinary(dst []byte) []byte {
	s.normalize()
	if s.packed != nil {
		dst = append(dst, 1)
		return append(dst, s.packed...)
	}
	switch {
	case s.dense != nil:
		dst = append(dst, 2)
		return append(dst, s.dense...)
	case len(s.sparse) == 0:
		return append(dst, 0)
	}
	dst = append(dst, 1)
	dst = binary.AppendUvarint(dst, uint64(len(s.sparse)))
	prev := uint32(0)
	for _, k := range s.sparse {
		dst = binary.AppendUvarint(dst, uint64(k-prev))
		prev = k
	}
	return dst
}

func decodeHLL(a *aggSpec, b []byte, s *hllState) (State, []byte, error) {
	s.p = uint8(a.n)
	if len(b) < 1 {
		return nil, nil, fmt.Errorf("hll: short: %w", ErrCorrupt)
	}
	switch b[0] {
	case 0:
		return s, b[1:], nil
	case 1:
		b = b[1:]
		n, k := binary.Uvarint(b)
		if k <= 0 || n == 0 || n > uint64(hllSparseMax(a.n)) || n > uint64(len(b)) {
			return nil, nil, fmt.Errorf("hll: sparse count: %w", ErrCorrupt)
		}
		o := k
		prev := uint64(0)
		for i := range n {
			d, k := uvarintLong(b, o) // keys differ by a few bytes' worth
			key := prev + d
			if k <= 0 || (i > 0 && d == 0) || key >= 1<<(hllSparseBits+6) {
				return nil, nil, fmt.Errorf("hll: sparse key: %w", ErrCorrupt)
			}
			if rho := key & 63; rho == 0 || rho > hllSparseRho || i > 0 && key>>6 == prev>>6 {
				return nil, nil, fmt.Errorf("hll: sparse key: %w", ErrCorrupt)
			}
			o += k
			prev = key
		}
		s.packed = b[:o]
		return s, b[o:], nil
	case 2:
		m := 1 << a.n
		if len(b) < 1+m {
			return nil, nil, fmt.Errorf("hll: short registers: %w", ErrCorrupt)
		}
		s.dense, s.sharedDense = b[1:1+m:1+m], true
		top := uint8(64 - a.n + 1)
		if !registersWithin(s.dense, top) {
			for _, r := range s.dense {
				if r > top {
					return nil, nil, fmt.Errorf("hll: register %d beyond %d: %w", r, top, ErrCorrupt)
				}
			}
		}
		return s, b[1+m:], nil
	}
	return nil, nil, fmt.Errorf("hll: bad form %d: %w", b[0], ErrCorrupt)
}

func (s *hllState) value(*Feature) any { return s.estimate() }

// estimate returns the cardinality estimate, rounded to an integer.
func (s *hllState) estimate() uint64 {
	if s.dense == nil {
		s.normalize()
		s.unpack()
	}
	if s.dense == nil {
		// Linear counting over the 2^25 sparse indexes.
		m := float64(uint64(1) << hllSparseBits)
		n := float64(len(s.sparse))
		return uint64(math.Round(m * math.Log(m/(m-n))))
	}
	c := s.histogram()
	return uint64(math.Round(ertlEstimate(c[:64-int(s.p)+2], len(s.dense))))
}

// histogram returns the count of s's registers of each value, s dense,
// without folding it: the max of dense and more taken a word at a time as
// they are counted, then the counts of the registers that the pending keys
// raise moved up.
func (s *hllState) histogram() [66]int {
	c := maxHistogram(s.dense, s.more)
	pend := s.pend()
	if len(pend) == 0 {
		return c
	}
	// A register raised by an earlier key is marked, and its new value
	// kept in raised (few: collisions among a few hundred keys). Both on
	// the stack up to precision 12 (the default) and 128 raised registers.
	var markBuf [1 << 12 / 64]uint64
	marked := markBuf[:]
	if len(s.dense) > 1<<12 {
		marked = make([]uint64, len(s.dense)/64)
	}
	type raise struct {
		i int
		r uint8
	}
	var raiseBuf [128]raise
	raised := raiseBuf[:0]
	for _, k := range pend {
		i, r := hllRegister(k, s.p)
		if marked[i/64]&(1<<(i%64)) != 0 {
			for j := range raised {
				if raised[j].i == i {
					if cur := raised[j].r; r > cur {
						c[cur]--
						c[r]++
						raised[j].r = r
					}
					break
				}
			}
			continue
		}
		cur := s.dense[i]
		for _, m := range s.more {
			cur = max(cur, m[i])
		}
		if r > cur {
			c[cur]--
			c[r]++
			marked[i/64] |= 1 << (i % 64)
			raised = append(raised, raise{i, r})
		}
	}
	return c
}

// The dense form's loops (a merge's register max, a decode's range check,
// the estimate's histogram) take 8 registers at a time: a register is at
// most 64−p+1 ≤ 61, so every byte of a word of registers is below 0x80 and
// byte-wise compares fit in each byte's low 7 bits, the high bit taking the
// result (no borrow or carry crosses a byte). 2^p is a multiple of 8.
const (
	swarOnes = 0x0101010101010101
	swarHigh = 0x8080808080808080
)

// swarMax returns the byte-wise max of a and b, bytes below 0x80.
func swarMax(a, b uint64) uint64 {
	lt := swarLess(a, b) >> 7 * 0xff // 0xff where a < b
	return a&^lt | b&lt
}

// swarLess returns, for words a and b of bytes below 0x80, the high bit of
// each byte set where a's byte is less than b's.
func swarLess(a, b uint64) uint64 { return ^((a | swarHigh) - b) & swarHigh }

// maxDense sets each register to the larger of its own and x's (x of the
// same precision), copying shared registers only when one changes.
func (s *hllState) maxDense(x []byte) {
	d := s.dense
	i := 0
	if s.sharedDense {
		for ; i < len(d); i += 8 {
			if swarLess(binary.LittleEndian.Uint64(d[i:]), binary.LittleEndian.Uint64(x[i:])) != 0 {
				break
			}
		}
		if i == len(d) {
			return
		}
		s.dense, s.sharedDense = slices.Clone(d), false
		d = s.dense
	}
	x = x[:len(d)]
	for ; i < len(d); i += 8 {
		binary.LittleEndian.PutUint64(d[i:], swarMax(binary.LittleEndian.Uint64(d[i:]), binary.LittleEndian.Uint64(x[i:])))
	}
}

// registersWithin reports whether every register of d (a multiple of 8) is
// at most top (< 0x80).
func registersWithin(d []byte, top uint8) bool {
	add := uint64(0x7f-top) * swarOnes // a byte over top reaches 0x80
	var bad uint64
	for i := 0; i < len(d); i += 8 {
		w := binary.LittleEndian.Uint64(d[i:])
		bad |= w | (w + add)
	}
	return bad&swarHigh == 0
}

// registerHistogram returns the count of registers of each value (all below
// 64).
func registerHistogram(d []byte) [66]int { return maxHistogram(d, nil) }

// maxHistogram returns the count of each value (all below 64) of the
// registers that are the byte-wise max of d and every array of more (each
// as long as d, a multiple of 8), taken a word of 8 registers at a time:
// loops of up to three arrays in more are written out, so that they keep
// their slices in registers.
func maxHistogram(d []byte, more [][]byte) [66]int {
	var h histCounts
	n := len(d) &^ 7
	d = d[:n]
	switch len(more) {
	case 0:
		for i := 0; i < n; i += 8 {
			h.count(binary.LittleEndian.Uint64(d[i:]))
		}
	case 1:
		m0 := more[0][:n]
		for i := 0; i < n; i += 8 {
			h.count(swarMax(binary.LittleEndian.Uint64(d[i:]), binary.LittleEndian.Uint64(m0[i:])))
		}
	case 2:
		m0, m1 := more[0][:n], more[1][:n]
		for i := 0; i < n; i += 8 {
			a := swarMax(binary.LittleEndian.Uint64(d[i:]), binary.LittleEndian.Uint64(m0[i:]))
			h.count(swarMax(a, binary.LittleEndian.Uint64(m1[i:])))
		}
	case 3:
		m0, m1, m2 := more[0][:n], more[1][:n], more[2][:n]
		for i := 0; i < n; i += 8 {
			a := swarMax(binary.LittleEndian.Uint64(d[i:]), binary.LittleEndian.Uint64(m0[i:]))
			a = swarMax(a, binary.LittleEndian.Uint64(m1[i:]))
			h.count(swarMax(a, binary.LittleEndian.Uint64(m2[i:])))
		}
	default:
		for i := 0; i < n; i += 8 {
			a := binary.LittleEndian.Uint64(d[i:])
			for _, m := range more {
				a = swarMax(a, binary.LittleEndian.Uint64(m[i:]))
			}
			h.count(a)
		}
	}
	var c [66]int
	for r := range 64 {
		c[r] = int(h[0][r] + h[1][r] + h[2][r] + h[3][r])
	}
	return c
}

// histCounts counts register values in four tables, so that consecutive
// increments of one value do not wait on each other.
type histCounts [4][64]int32

// count counts the 8 registers of word a (each below 64).
func (h *histCounts) count(a uint64) {
	h[0][a&63]++
	h[1][a>>8&63]++
	h[2][a>>16&63]++
	h[3][a>>24&63]++
	h[0][a>>32&63]++
	h[1][a>>40&63]++
	h[2][a>>48&63]++
	h[3][a>>56&63]++
}

// ertlEstimate is Ertl's improved raw estimator (2017, algorithm 6) for m
// registers whose histogram is c[0..q+1], with Flajolet's α_m for the
// asymptotic α∞ = 1/(2 ln 2): α∞ leaves a bias of about +1.08/m, 7% at
// precision 4, which α_m removes (measured in TestHLLAccuracy).
func ertlEstimate(c []int, m int) float64 {
	q := len(c) - 2
	fm := float64(m)
	z := fm * hllTau(1-float64(c[q+1])/fm)
	for k := q; k >= 1; k-- {
		z = 0.5 * (z + float64(c[k]))
	}
	z += fm * hllSigma(float64(c[0])/fm)
	return hllAlpha(m) * fm * fm / z
}

// hllAlpha is HyperLogLog's bias correction α_m (Flajolet et al. 2007).
func hllAlpha(m int) float64 {
	switch m {
	case 16:
		return 0.673
	case 32:
		return 0.697
	case 64:
		return 0.709
	}
	return 0.7213 / (1 + 1.079/float64(m))
}

func hllSigma(x float64) float64 {
	if x == 1 {
		return math.Inf(1)
	}
	y, z := 1.0, x
	for {
		x *= x
		prev := z
		z += x * y
		y += y
		if z == prev {
			return z
		}
	}
}

func hllTau(x float64) float64 {
	if x == 0 || x == 1 {
		return 0
	}
	y, z := 1.0, 1-x
	for {
		x = math.Sqrt(x)
		prev := z
		y *= 0.5
		z -= (1 - x) * (1 - x) * y
		if z == prev {
			return z / 3
		}
	}
}
