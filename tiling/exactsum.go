package tiling

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
)

// sumLimbs is the width of ExactSum in 64-bit limbs. A float64 x is an integer
// multiple of 2^-1074 with |x| < 2^1024, so x·2^1074 fits in 2098 bits; 64 more
// bits absorb 2^64 additions and one more is the sign: 2163 ≤ 34·64.
const sumLimbs = 34

// sumShift is the fixed-point position: limb arithmetic holds x·2^sumShift.
const sumShift = 1074

// ExactSum is an exact accumulator of float64 values: a two's-complement
// fixed-point integer wide enough that adding any float64 never rounds. The sum
// of a multiset of finite float64 values is therefore independent of the
// order of additions and of merges; Float64 rounds it once, to nearest even.
//
// The zero value is the empty sum. Adding NaN or ±Inf is the caller's error:
// they are skipped (ingest rejects them as bad input before they get here).
type ExactSum struct {
	// l, when not nil, holds the limbs. While l and packed are nil the sum is
	// inline, in w (see below); it moves to l (spill) when a value falls
	// outside w's reach.
	l *[sumLimbs]uint64
	// lo and hi bound the limbs that carry information, so adds and merges
	// touch a few limbs rather than all 34: every limb below lo is zero and
	// every limb at or above hi equals the sign fill (0, or ^0 when negative).
	// lo > hi is an empty window (zero).
	lo, hi int
	// packed, when not nil, holds the value as AppendBinary encodes it and l
	// is nil: a decoded sum stays packed until it changes, so a read merges it
	// straight from its bytes without materialising 34 limbs.
	packed []byte
	// w, while l and packed are nil, holds the sum inline: the two's-complement
	// integer w[0] + w[1]·2^64 + … + w[4]·2^256, times 2^(64·base) (limbs
	// below base are zero, limbs from base+sumInline up are the sign fill).
	// All zero is zero, whatever base. A sum of values within a factor of
	// about 2^190 of each other (any amounts from cents to billions) stays
	// inline: no allocation, and no 272-byte limb array to scan on merge.
	w    [sumInline]uint64
	base int
}

// sumInline is the width in limbs of an inline sum.
const sumInline = 5

// inlineNeg reports the sign of an inline sum.
func (s *ExactSum) inlineNeg() bool { return s.w[sumInline-1]>>63 == 1 }

// inlineZero reports whether an inline sum is zero.
func (s *ExactSum) inlineZero() bool {
	return s.w == [sumInline]uint64{}
}

// inlineSpan returns the absolute limb range [a, b) outside which an inline
// sum's limbs are zero (below a) or the sign fill (from b up). b < a happens
// for negative sums (−2^(64·k) has no limb that is not zero or fill).
func (s *ExactSum) inlineSpan() (a, b int) {
	fill := uint64(0)
	if s.inlineNeg() {
		fill = ^uint64(0)
	}
	hi := sumInline
	for hi > 0 && s.w[hi-1] == fill {
		hi--
	}
	lo := 0
	for lo < sumInline && s.w[lo] == 0 {
		lo++
	}
	return s.base + lo, s.base + hi
}

// limbAt returns the limb at absolute position p of an inline sum.
func (s *ExactSum) limbAt(p int) uint64 {
	switch {
	case p < s.base:
		return 0
	case p < s.base+sumInline:
		return s.w[p-s.base]
	case s.inlineNeg():
		return ^uint64(0)
	}
	return 0
}

// mergeInline adds the inline sum o into the inline sum s if the result
// fits inline, and reports whether it did (s is unchanged when not).
func (s *ExactSum) mergeInline(o *ExactSum) bool {
	if o.inlineZero() {
		return true
	}
	if s.inlineZero() {
		s.w, s.base = o.w, o.base
		return true
	}
	sa, sb := s.inlineSpan()
	oa, ob := o.inlineSpan()
	lo, hi := min(sa, oa), max(sb, ob, sa, oa)
	// Each operand v has limbs zero below lo and sign fill from hi up, so
	// −2^(64·hi) ≤ v < 2^(64·hi) in units of 2^0 limbs: the sum is within
	// ±2^(64·hi+1), which the signed limbs [lo, hi+1) hold.
	nb := min(lo, sumLimbs-sumInline)
	if hi+1 > nb+sumInline {
		return false
	}
	var w [sumInline]uint64
	var c uint64
	for j := range sumInline {
		w[j], c = bits.Add64(s.limbAt(nb+j), o.limbAt(nb+j), c)
	}
	s.w, s.base = w, nb
	return true
}

// spill moves an inline sum to allocated limbs.
func (s *ExactSum) spill() {
	w, base, neg := s.w, s.base, s.inlineNeg()
	s.w, s.base = [sumInline]uint64{}, 0
	s.alloc()
	if w == [sumInline]uint64{} {
		return
	}
	copy(s.l[base:], w[:])
	if neg {
		for i := base + sumInline; i < sumLimbs; i++ {
			s.l[i] = ^uint64(0)
		}
	}
	s.normalize()
}

// addSigned adds into s's limbs the two's-complement value whose limbs from
// base are w and the sign fill of neg above them.
func (s *ExactSum) addSigned(base int, w []uint64, neg bool) {
	// Add w, then the fill above it: adding ^0 to every limb from b up (neg)
	// is subtracting 1 at b, which an incoming carry cancels; adding 0
	// leaves only the carry.
	var c uint64
	i := base
	for k := 0; k < len(w) && i < sumLimbs; k, i = k+1, i+1 {
		s.l[i], c = bits.Add64(s.l[i], w[k], c)
	}
	s.touched(base, s.fill(i, c, neg))
}

// fill adds into the limbs from b up the sign fill of an addend (neg: ^0 in
// every limb, which is subtracting 1 at b) and the carry c out of limb
// b−1, and returns the end of the limbs that changed (b when none did).
func (s *ExactSum) fill(b int, c uint64, neg bool) int {
	i := b
	switch {
	case neg && c == 0:
		var br uint64 = 1
		for ; br != 0 && i < sumLimbs; i++ {
			s.l[i], br = bits.Sub64(s.l[i], 0, br)
		}
	case !neg && c == 1:
		for ; c != 0 && i < sumLimbs; i++ {
			s.l[i], c = bits.Add64(s.l[i], 0, c)
		}
	}
	return i
}

// alloc makes the limbs of a zero sum.
func (s *ExactSum) alloc() {
	s.l = new([sumLimbs]uint64)
	s.lo, s.hi = sumLimbs, 0
}

// touched widens the window after limbs [a, b) changed; b == sumLimbs means a
// carry reached the top, where the sign may have flipped.
func (s *ExactSum) touched(a, b int) {
	if a < s.lo {
		s.lo = a
	}
	if b >= sumLimbs {
		s.rescanHi()
		return
	}
	if b > s.hi {
		s.hi = b
	}
}

// rescanHi recomputes hi from the limbs.
func (s *ExactSum) rescanHi() {
	fill := uint64(0)
	if s.l[sumLimbs-1]>>63 == 1 {
		fill = ^uint64(0)
	}
	i := sumLimbs
	for i > 0 && s.l[i-1] == fill {
		i--
	}
	s.hi = i
}

// normalize recomputes lo and hi from the limbs.
func (s *ExactSum) normalize() {
	s.lo = sumLimbs
	for i, v := range s.l {
		if v != 0 {
			s.lo = i
			break
		}
	}
	s.rescanHi()
}

// Add adds x exactly.
func (s *ExactSum) Add(x float64) {
	b := math.Float64bits(x)
	exp := int((b >> 52) & 0x7ff)
	frac := b & (1<<52 - 1)
	if exp == 0x7ff {
		return // NaN or Inf: not representable, rejected upstream
	}
	var m uint64
	var shift int // bit position of m's lowest bit in the fixed-point integer
	if exp == 0 {
		m, shift = frac, 0
	} else {
		m, shift = frac|1<<52, exp-1
	}
	if m == 0 {
		return
	}
	if s.packed != nil {
		s.unpack()
	}
	limb, bit := shift/64, uint(shift%64)
	lo := m << bit
	var hi uint64
	if bit > 0 {
		hi = m >> (64 - bit)
	}
	if s.l == nil && s.addInline(limb, lo, hi, b>>63 == 1) {
		return
	}
	if s.l == nil {
		x := ExactSum{base: min(limb, sumLimbs-sumInline)}
		j := limb - x.base
		x.w[j], x.w[j+1] = lo, hi
		if b>>63 == 1 {
			var c uint64 = 1
			for k := range x.w {
				x.w[k], c = bits.Add64(^x.w[k], 0, c)
			}
		}
		if s.mergeInline(&x) {
			return
		}
		s.spill()
	}
	if b>>63 == 0 {
		s.addAt(limb, lo, hi)
	} else {
		s.subAt(limb, lo, hi)
	}
}

// addInline adds ±(lo + hi·2^64)·2^(64·limb) into a non-zero inline sum in
// place when the value's limbs fall inside its window with a limb to spare
// above both (so the result fits the window), and reports whether it did.
// The sum of a value spanning limbs [limb, limb+2) and a sum whose limbs
// from b up are the sign fill lies within ±2^(64·max(b, limb+2)+1), which
// the signed limbs up to max(b, limb+2)+1 ≤ base+sumInline hold: the
// window's own two's-complement arithmetic, carry out dropped, is exact.
func (s *ExactSum) addInline(limb int, lo, hi uint64, neg bool) bool {
	j := limb - s.base
	if j < 0 || j+3 > sumInline || s.inlineZero() {
		return false
	}
	if _, b := s.inlineSpan(); b >= s.base+sumInline {
		return false
	}
	var c uint64
	if !neg {
		s.w[j], c = bits.Add64(s.w[j], lo, 0)
		s.w[j+1], c = bits.Add64(s.w[j+1], hi, c)
		for k := j + 2; c != 0 && k < sumInline; k++ {
			s.w[k], c = bits.Add64(s.w[k], 0, c)
		}
		return true
	}
	s.w[j], c = bits.Sub64(s.w[j], lo, 0)
	s.w[j+1], c = bits.Sub64(s.w[j+1], hi, c)
	for k := j + 2; c != 0 && k < sumInline; k++ {
		s.w[k], c = bits.Sub64(s.w[k], 0, c)
	}
	return true
}

func (s *ExactSum) addAt(limb int, lo, hi uint64) {
	var c uint64
	s.l[limb], c = bits.Add64(s.l[limb], lo, 0)
	i := limb + 1
	if i < sumLimbs {
		s.l[i], c = bits.Add64(s.l[i], hi, c)
		i++
	}
	for ; c != 0 && i < sumLimbs; i++ {
		s.l[i], c = bits.Add64(s.l[i], 0, c)
	}
	s.touched(limb, i)
}

func (s *ExactSum) subAt(limb int, lo, hi uint64) {
	var c uint64
	s.l[limb], c = bits.Sub64(s.l[limb], lo, 0)
	i := limb + 1
	if i < sumLimbs {
		s.l[i], c = bits.Sub64(s.l[i], hi, c)
		i++
	}
	for ; c != 0 && i < sumLimbs; i++ {
		s.l[i], c = bits.Sub64(s.l[i], 0, c)
	}
	s.touched(limb, i)
}

// Merge adds o into s exactly.
func (s *ExactSum) Merge(o *ExactSum) {
	if s.packed != nil {
		s.unpack()
	}
	if o.packed != nil {
		if s.l == nil {
			s.spill()
		}
		s.mergePacked(o.packed)
		return
	}
	if o.l == nil {
		// o inline.
		if s.l == nil {
			if s.mergeInline(o) {
				return
			}
			s.spill()
		}
		if !o.inlineZero() {
			s.addSigned(o.base, o.w[:], o.inlineNeg())
		}
		return
	}
	neg := o.negative()
	if o.lo >= o.hi && !neg {
		return // zero
	}
	if s.l == nil {
		s.spill()
	}
	// Add o's window, then o's fill above it: adding ^0 to every limb from
	// o.hi up (o negative) is subtracting 1 at o.hi, which an incoming carry
	// cancels; adding 0 leaves only the carry.
	a, b := o.lo, o.hi
	var c uint64
	for i := a; i < b; i++ {
		s.l[i], c = bits.Add64(s.l[i], o.l[i], c)
	}
	end := s.fill(b, c, neg)
	lo := a
	if a > b {
		lo = b // empty window: nothing added below b
	}
	s.touched(lo, end)
}

// IsZero reports whether the sum is exactly zero.
func (s *ExactSum) IsZero() bool {
	if s.packed != nil {
		return s.packed[0] == 0
	}
	if s.l == nil {
		return s.inlineZero()
	}
	for _, v := range s.l {
		if v != 0 {
			return false
		}
	}
	return true
}

// negative reports the sign of an unpacked sum.
func (s *ExactSum) negative() bool { return s.l != nil && s.l[sumLimbs-1]>>63 == 1 }

// magnitude returns |s| as limbs.
func (s *ExactSum) magnitude() (m [sumLimbs]uint64, neg bool) {
	if s.packed != nil {
		u := *s
		u.unpack()
		return u.magnitude()
	}
	if s.l == nil {
		if s.inlineZero() {
			return m, false
		}
		for p := s.base; p < sumLimbs; p++ {
			m[p] = s.limbAt(p)
		}
	} else {
		m = *s.l
	}
	if m[sumLimbs-1]>>63 == 0 {
		return m, false
	}
	var c uint64 = 1
	for i := range m {
		m[i], c = bits.Add64(^m[i], 0, c)
	}
	return m, true
}

// bitsAt returns the 64 bits of m starting at bit position q (zeros past the end).
func bitsAt(m *[sumLimbs]uint64, q int) uint64 {
	if q < 0 {
		// only used with q ≥ 0
		return 0
	}
	i, off := q/64, uint(q%64)
	if i >= sumLimbs {
		return 0
	}
	v := m[i] >> off
	if off > 0 && i+1 < sumLimbs {
		v |= m[i+1] << (64 - off)
	}
	return v
}

// topBit returns the index of the highest set bit of m, or -1 if m is zero.
func topBit(m *[sumLimbs]uint64) int {
	for i := sumLimbs - 1; i >= 0; i-- {
		if m[i] != 0 {
			return i*64 + 63 - bits.LeadingZeros64(m[i])
		}
	}
	return -1
}

// lowBit returns the index of the lowest set bit of m, or -1 if m is zero.
func lowBit(m *[sumLimbs]uint64) int {
	for i := range sumLimbs {
		if m[i] != 0 {
			return i*64 + bits.TrailingZeros64(m[i])
		}
	}
	return -1
}

// anyBelow reports whether any bit of m below position q is set.
func anyBelow(m *[sumLimbs]uint64, q int) bool {
	i, off := q/64, uint(q%64)
	for j := 0; j < i && j < sumLimbs; j++ {
		if m[j] != 0 {
			return true
		}
	}
	if i < sumLimbs && off > 0 && m[i]&(1<<off-1) != 0 {
		return true
	}
	return false
}

// Float64 returns the sum rounded once to the nearest float64 (ties to even).
// A sum beyond the float64 range gives ±Inf.
func (s *ExactSum) Float64() float64 {
	m, neg := s.magnitude()
	p := topBit(&m)
	if p < 0 {
		return 0
	}
	var f float64
	if p < 53 {
		f = math.Ldexp(float64(m[0]), -sumShift) // exact: < 2^53 units of 2^-1074
	} else {
		lo := p - 52
		mant := bitsAt(&m, lo) & (1<<53 - 1)
		round := bitsAt(&m, lo-1)&1 == 1
		sticky := lo-1 > 0 && anyBelow(&m, lo-1)
		if round && (sticky || mant&1 == 1) {
			mant++
			if mant == 1<<53 {
				mant >>= 1
				lo++
			}
		}
		f = math.Ldexp(float64(mant), lo-sumShift)
	}
	if neg {
		f = -f
	}
	return f
}

// AppendBinary appends the encoding of s: a sign byte (0 zero, 1 positive,
// 2 negative), then for a non-zero sum the uvarint position of the lowest set
// bit of |s|, the uvarint byte length n, and n little-endian bytes of
// |s| >> position.
func (s *ExactSum) AppendBinary(dst []byte) []byte {
	if s.packed != nil {
		return append(dst, s.packed...) // canonical already
	}
	if s.l == nil {
		return s.appendInline(dst)
	}
	m, neg := s.magnitude()
	p := topBit(&m)
	if p < 0 {
		return append(dst, 0)
	}
	if neg {
		dst = append(dst, 2)
	} else {
		dst = append(dst, 1)
	}
	lo := lowBit(&m)
	n := (p - lo + 8) / 8
	dst = binary.AppendUvarint(dst, uint64(lo))
	dst = binary.AppendUvarint(dst, uint64(n))
	for k := 0; k < n; k++ {
		dst = append(dst, byte(bitsAt(&m, lo+8*k)))
	}
	return dst
}

// appendInline is AppendBinary of an inline sum, from its five limbs: the
// magnitude's limbs outside them are zero.
func (s *ExactSum) appendInline(dst []byte) []byte {
	if s.inlineZero() {
		return append(dst, 0)
	}
	m, neg := s.w, s.inlineNeg()
	if neg {
		var c uint64 = 1
		for i := range m {
			m[i], c = bits.Add64(^m[i], 0, c)
		}
		dst = append(dst, 2)
	} else {
		dst = append(dst, 1)
	}
	top := sumInline - 1
	for m[top] == 0 {
		top--
	}
	p := top*64 + 63 - bits.LeadingZeros64(m[top])
	low := 0
	for m[low] == 0 {
		low++
	}
	lo := low*64 + bits.TrailingZeros64(m[low])
	n := (p - lo + 8) / 8
	dst = binary.AppendUvarint(dst, uint64(s.base*64+lo))
	dst = binary.AppendUvarint(dst, uint64(n))
	for k := 0; k < n; k++ {
		q := lo + 8*k
		i, off := q/64, uint(q%64)
		v := m[i] >> off
		if off > 0 && i+1 < sumInline {
			v |= m[i+1] << (64 - off)
		}
		dst = append(dst, byte(v))
	}
	return dst
}

// decodeExactSum decodes what AppendBinary wrote and returns the rest of b.
// The result is packed: it refers to b until it is changed.
func decodeExactSum(b []byte) (ExactSum, []byte, error) {
	_, _, _, rest, err := parseExactSum(b)
	if err != nil {
		return ExactSum{}, nil, err
	}
	if b[0] == 0 {
		return ExactSum{}, rest, nil
	}
	return ExactSum{packed: b[:len(b)-len(rest)]}, rest, nil
}

// parseExactSum validates an encoding and splits it: sign byte (0, 1, 2), the
// position of the lowest bit, the magnitude bytes, and the rest of b.
func parseExactSum(b []byte) (sign byte, lo uint64, mag, rest []byte, err error) {
	if len(b) < 1 {
		return 0, 0, nil, nil, fmt.Errorf("sum: short: %w", ErrCorrupt)
	}
	sign = b[0]
	b = b[1:]
	switch sign {
	case 0:
		return 0, 0, nil, b, nil
	case 1, 2:
	default:
		return 0, 0, nil, nil, fmt.Errorf("sum: bad sign %d: %w", sign, ErrCorrupt)
	}
	lo, k := binary.Uvarint(b)
	if k <= 0 {
		return 0, 0, nil, nil, fmt.Errorf("sum: bad position: %w", ErrCorrupt)
	}
	b = b[k:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n == 0 || n > uint64(len(b)-k) {
		return 0, 0, nil, nil, fmt.Errorf("sum: bad length: %w", ErrCorrupt)
	}
	b = b[k:]
	if b[n-1] == 0 || b[0]&1 == 0 || lo >= 64*sumLimbs {
		return 0, 0, nil, nil, fmt.Errorf("sum: non-canonical or out of range: %w", ErrCorrupt)
	}
	// |s| < 2^(64·sumLimbs−1): the top bit of the top limb stays free for the sign.
	if lo+8*(n-1)+uint64(bits.Len8(b[n-1])) > 64*sumLimbs-1 {
		return 0, 0, nil, nil, fmt.Errorf("sum: out of range: %w", ErrCorrupt)
	}
	return sign, lo, b[:n], b[n:], nil
}

// unpack materialises the limbs of a packed sum.
func (s *ExactSum) unpack() {
	p := s.packed
	*s = ExactSum{}
	s.alloc()
	s.mergePacked(p)
}

// mergePacked adds the sum encoded in p (validated by parseExactSum) into s,
// whose limbs are allocated, touching only the limbs the value spans.
func (s *ExactSum) mergePacked(p []byte) {
	sign, lo, mag, _, _ := parseExactSum(p)
	if sign == 0 {
		return
	}
	base, sh := int(lo/64), uint(lo%64)
	nw := (len(mag) + 7) / 8
	var prev uint64
	var c uint64
	i := base
	word := func(k int) uint64 {
		var w uint64
		for j := 0; j < 8 && 8*k+j < len(mag); j++ {
			w |= uint64(mag[8*k+j]) << (8 * j)
		}
		return w
	}
	n := nw
	if sh > 0 {
		n++ // the shifted value spills into one more limb
	}
	for k := 0; k < n && i < sumLimbs; k, i = k+1, i+1 {
		var w uint64
		if k < nw {
			w = word(k)
		}
		v := w << sh
		if sh > 0 {
			v |= prev >> (64 - sh)
		}
		prev = w
		if sign == 1 {
			s.l[i], c = bits.Add64(s.l[i], v, c)
		} else {
			s.l[i], c = bits.Sub64(s.l[i], v, c)
		}
	}
	for ; c != 0 && i < sumLimbs; i++ {
		if sign == 1 {
			s.l[i], c = bits.Add64(s.l[i], 0, c)
		} else {
			s.l[i], c = bits.Sub64(s.l[i], 0, c)
		}
	}
	s.touched(base, i)
}
