package tiling

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"math/bits"
)

// Variance and standard deviation are exact, then rounded once.
//
// The state of var_pop, var_samp, stddev_pop and stddev_samp over a column is
// (n, Σx, Σx²) with both sums exact: Σx in an ExactSum, Σx² in a squareSum,
// an integer multiple of 2^-2148 wide enough for the square of any float64.
// Merging adds integers, so any split and any order give the same bits. At
// finalisation
//
//	var_pop  = (n·Σx² − (Σx)²) / n²
//	var_samp = (n·Σx² − (Σx)²) / (n·(n−1))
//
// is computed in integers (math/big) and rounded once to the nearest float64;
// the standard deviations are the correctly rounded square roots of the same
// exact quotients (not the square roots of the rounded variances).
//
// Why not Welford, or Chan's parallel merge, as most engines do: they round
// at every update and every merge, so the result depends on the order of
// events and on how they were split into tiles, and the same window served
// from stream tiles, batch tiles or a recompute would differ in the last
// bits. The textbook objection to the sum-of-squares formula is catastrophic
// cancellation in n·Σx² − (Σx)² when both are float64; with exact sums the
// subtraction is exact, so the result is the correctly rounded variance, more
// accurate than Welford's.

// squareLimbs is the width of a squareSum in 64-bit limbs. A float64 x is an
// integer multiple of 2^-1074 below 2^1024, so x² is a multiple of 2^-2148
// below 2^2048 and x²·2^2148 < 2^4196; 64 more bits absorb 2^64 additions:
// 4260 ≤ 67·64.
const squareLimbs = 67

// squareShift is the fixed-point position of a squareSum: it holds Σx²·2^2148.
const squareShift = 2 * sumShift

// squareSum is an exact, non-negative sum of squares of float64 values. The
// zero value is the empty sum.
type squareSum struct {
	l []uint64 // nil: zero, or packed; else squareLimbs limbs, little-endian
	// Every limb below lo and at or above hi is zero (lo > hi: zero).
	lo, hi int
	// packed holds a decoded encoding until the sum changes.
	packed []byte
}

// addSquare adds x² exactly. NaN and ±Inf are skipped.
func (s *squareSum) addSquare(x float64) {
	b := math.Float64bits(x)
	exp := int(b >> 52 & 0x7ff)
	frac := b & (1<<52 - 1)
	if exp == 0x7ff {
		return
	}
	m, shift := frac, 0
	if exp != 0 {
		m, shift = frac|1<<52, exp-1
	}
	if m == 0 {
		return
	}
	hi, lo := bits.Mul64(m, m) // x²·2^2148 = m²·2^(2·shift)
	s.materialize()
	pos := 2 * shift
	limb, bit := pos/64, uint(pos%64)
	w := [3]uint64{lo, hi, 0}
	if bit > 0 {
		w = [3]uint64{lo << bit, hi<<bit | lo>>(64-bit), hi >> (64 - bit)}
	}
	s.addWords(limb, w[:])
}

// addWords adds the little-endian words w at limb i.
func (s *squareSum) addWords(i int, w []uint64) {
	var c uint64
	j := i
	for k := 0; k < len(w) && j < squareLimbs; k, j = k+1, j+1 {
		s.l[j], c = bits.Add64(s.l[j], w[k], c)
	}
	for ; c != 0 && j < squareLimbs; j++ {
		s.l[j], c = bits.Add64(s.l[j], 0, c)
	}
	if i < s.lo {
		s.lo = i
	}
	if j > s.hi {
		s.hi = j
	}
}

// materialize makes the limbs of s, unpacking a decoded sum.
func (s *squareSum) materialize() {
	if s.l != nil {
		return
	}
	p := s.packed
	s.l, s.lo, s.hi, s.packed = make([]uint64, squareLimbs), squareLimbs, 0, nil
	if p != nil {
		s.mergePacked(p)
	}
}

func (s *squareSum) merge(o *squareSum) {
	switch {
	case o.packed != nil:
		if o.packed[0] == 0 {
			return
		}
		s.materialize()
		s.mergePacked(o.packed)
	case o.l != nil && o.lo < o.hi:
		s.materialize()
		s.addWords(o.lo, o.l[o.lo:o.hi])
	}
}

// mergePacked adds the sum encoded in p (validated by parseSquareSum).
func (s *squareSum) mergePacked(p []byte) {
	lo, mag, _, _ := parseSquareSum(p)
	if mag == nil {
		return
	}
	base, sh := int(lo/64), uint(lo%64)
	words := make([]uint64, (len(mag)+7)/8+1)
	for i, c := range mag {
		words[i/8] |= uint64(c) << (8 * (i % 8))
	}
	if sh > 0 {
		for i := len(words) - 1; i > 0; i-- {
			words[i] = words[i]<<sh | words[i-1]>>(64-sh)
		}
		words[0] <<= sh
	}
	s.addWords(base, words)
}

// isZero reports whether the sum is zero.
func (s *squareSum) isZero() bool {
	if s.packed != nil {
		return s.packed[0] == 0
	}
	for i := s.lo; i < s.hi; i++ {
		if s.l[i] != 0 {
			return false
		}
	}
	return true
}

// appendBinary appends the encoding: byte 0 for zero, else byte 1, the
// uvarint position b of the lowest set bit, the uvarint byte length n and n
// little-endian bytes of sum >> b (first byte odd, last byte non-zero).
func (s *squareSum) appendBinary(dst []byte) []byte {
	if s.packed != nil {
		return append(dst, s.packed...)
	}
	low, top := -1, -1
	for i := s.lo; i < s.hi; i++ {
		if s.l[i] != 0 {
			if low < 0 {
				low = i*64 + bits.TrailingZeros64(s.l[i])
			}
			top = i*64 + 63 - bits.LeadingZeros64(s.l[i])
		}
	}
	if low < 0 {
		return append(dst, 0)
	}
	dst = append(dst, 1)
	dst = binary.AppendUvarint(dst, uint64(low))
	n := (top - low + 8) / 8
	dst = binary.AppendUvarint(dst, uint64(n))
	for k := 0; k < n; k++ {
		q := low + 8*k
		i, off := q/64, uint(q%64)
		v := s.l[i] >> off
		if off > 56 && i+1 < squareLimbs {
			v |= s.l[i+1] << (64 - off)
		}
		dst = append(dst, byte(v))
	}
	return dst
}

// maxSquareBits bounds a decoded sum: 2^64 squares of float64 stay below
// 2^4260, so anything wider is corrupt.
const maxSquareBits = 4260

// parseSquareSum validates an encoding and splits it into the position of
// the lowest bit, the magnitude bytes (nil for zero) and the rest of b.
func parseSquareSum(b []byte) (lo uint64, mag, rest []byte, err error) {
	if len(b) < 1 {
		return 0, nil, nil, fmt.Errorf("square sum: short: %w", ErrCorrupt)
	}
	switch b[0] {
	case 0:
		return 0, nil, b[1:], nil
	case 1:
	default:
		return 0, nil, nil, fmt.Errorf("square sum: bad flag %d: %w", b[0], ErrCorrupt)
	}
	b = b[1:]
	lo, k := binary.Uvarint(b)
	if k <= 0 || lo >= maxSquareBits {
		return 0, nil, nil, fmt.Errorf("square sum: bad position: %w", ErrCorrupt)
	}
	b = b[k:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n == 0 || n > uint64(len(b)-k) {
		return 0, nil, nil, fmt.Errorf("square sum: bad length: %w", ErrCorrupt)
	}
	b = b[k:]
	if b[n-1] == 0 || b[0]&1 == 0 || lo+8*(n-1)+uint64(bits.Len8(b[n-1])) > maxSquareBits {
		return 0, nil, nil, fmt.Errorf("square sum: non-canonical or out of range: %w", ErrCorrupt)
	}
	return lo, b[:n], b[n:], nil
}

func decodeSquareSum(b []byte) (squareSum, []byte, error) {
	_, mag, rest, err := parseSquareSum(b)
	if err != nil {
		return squareSum{}, nil, err
	}
	if mag == nil {
		return squareSum{}, rest, nil
	}
	return squareSum{packed: b[:len(b)-len(rest)]}, rest, nil
}

// bigOfEncoding returns the integer an ExactSum or squareSum encoding holds
// (sign byte, low bit position, little-endian magnitude), in its fixed-point
// unit.
func bigOfEncoding(enc []byte) *big.Int {
	z := new(big.Int)
	if enc[0] == 0 {
		return z
	}
	lo, k := binary.Uvarint(enc[1:])
	n, k2 := binary.Uvarint(enc[1+k:])
	le := enc[1+k+k2 : 1+k+k2+int(n)]
	be := make([]byte, len(le))
	for i, c := range le {
		be[len(le)-1-i] = c
	}
	z.SetBytes(be)
	z.Lsh(z, uint(lo))
	if enc[0] == 2 {
		z.Neg(z)
	}
	return z
}

// momentsState is (n, Σx, Σx²) of a column's numbers, all exact.
type momentsState struct {
	n   uint64
	sum ExactSum
	sq  squareSum
}

func (s *momentsState) add(e *Event, in *Input) {
	if in.Kind == Number {
		s.n++
		s.sum.Add(in.Num)
		s.sq.addSquare(in.Num)
	}
}

func (s *momentsState) merge(o State) {
	x := o.(*momentsState)
	s.n += x.n
	s.sum.Merge(&x.sum)
	s.sq.merge(&x.sq)
}

// appendBinary: uvarint n; when n > 0, the exact sum Σx and the square sum.
func (s *momentsState) appendBinary(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, s.n)
	if s.n == 0 {
		return dst
	}
	dst = s.sum.AppendBinary(dst)
	return s.sq.appendBinary(dst)
}

func decodeMoments(b []byte) (State, []byte, error) {
	s := new(momentsState)
	n, m := binary.Uvarint(b)
	if m <= 0 {
		return nil, nil, fmt.Errorf("moments: count: %w", ErrCorrupt)
	}
	b = b[m:]
	s.n = n
	if n == 0 {
		return s, b, nil
	}
	var err error
	if s.sum, b, err = decodeExactSum(b); err != nil {
		return nil, nil, fmt.Errorf("moments: %w", err)
	}
	if s.sq, b, err = decodeSquareSum(b); err != nil {
		return nil, nil, fmt.Errorf("moments: %w", err)
	}
	if s.sq.isZero() && !s.sum.IsZero() {
		return nil, nil, fmt.Errorf("moments: squares zero, sum not: %w", ErrCorrupt)
	}
	return s, b, nil
}

// value finalises var_pop, var_samp, stddev_pop or stddev_samp: null for no
// values (or one, for the sample forms) and for a variance beyond the float64
// range.
func (s *momentsState) value(f *Feature) any {
	samp := f.Function == VarSamp || f.Function == StddevSamp
	if s.n == 0 || samp && s.n == 1 {
		return nil
	}
	n := new(big.Int).SetUint64(s.n)
	s1 := bigOfEncoding(s.sum.AppendBinary(nil)) // Σx·2^1074
	s2 := bigOfEncoding(s.sq.appendBinary(nil))  // Σx²·2^2148
	num := new(big.Int).Mul(n, s2)
	num.Sub(num, s1.Mul(s1, s1)) // (n·Σx² − (Σx)²)·2^2148, ≥ 0 (Cauchy–Schwarz)
	if num.Sign() < 0 {
		num.SetInt64(0) // only a corrupt state
	}
	den := new(big.Int).Set(n)
	if samp {
		den.Mul(den, new(big.Int).SetUint64(s.n-1))
	} else {
		den.Mul(den, n)
	}
	if f.Function == StddevPop || f.Function == StddevSamp {
		return finite(sqrtRatio(num, den, -squareShift))
	}
	return finite(ratio(num, den, -squareShift))
}

// ratio returns num/den·2^exp rounded once to the nearest float64 (ties to
// even): ±Inf beyond the range, subnormals rounded correctly. num ≥ 0,
// den > 0.
//
// q = ⌊num·2^s/den⌋ is taken with at least 56 bits; then (2q + [remainder ≠
// 0])·2^(exp−s−1) rounds to the same float64 as the exact quotient, at any
// precision up to 54 bits, and big.Float rounds it (subnormals included)
// without the GCDs big.Rat would compute.
func ratio(num, den *big.Int, exp int) float64 {
	if num.Sign() == 0 {
		return 0
	}
	s := 56 + den.BitLen() - num.BitLen()
	n, d := new(big.Int).Set(num), den
	if s >= 0 {
		n.Lsh(n, uint(s))
	} else {
		d = new(big.Int).Lsh(den, uint(-s))
	}
	q, rem := n.QuoRem(n, d, new(big.Int))
	q.Lsh(q, 1)
	if rem.Sign() != 0 {
		q.SetBit(q, 0, 1)
	}
	f := new(big.Float).SetInt(q)
	x, _ := f.SetMantExp(f, exp-s-1).Float64()
	return x
}

// sqrtRatio returns √(num/den·2^exp) rounded once to the nearest float64.
// num ≥ 0, den > 0, exp even.
func sqrtRatio(num, den *big.Int, exp int) float64 {
	if num.Sign() == 0 {
		return 0
	}
	// r = ⌊√(num·4^s/den)⌋ with at least 56 bits; the square root is then
	// r + f, 0 ≤ f < 1, and (2r + [f > 0])·2^(−s−1) rounds to the same float64
	// as the exact root at any precision up to 54 bits, subnormals included.
	s := (2*56 - num.BitLen() + den.BitLen() + 1) / 2
	n, d := new(big.Int).Set(num), new(big.Int).Set(den)
	if s >= 0 {
		n.Lsh(n, uint(2*s))
	} else {
		d.Lsh(d, uint(-2*s))
	}
	q, rem := new(big.Int).QuoRem(n, d, new(big.Int))
	r := new(big.Int).Sqrt(q)
	sticky := rem.Sign() != 0 || new(big.Int).Mul(r, r).Cmp(q) != 0
	r.Lsh(r, 1)
	if sticky {
		r.SetBit(r, 0, 1)
	}
	return ratio(r, big.NewInt(1), exp/2-s-1)
}

// meanOf returns sum/n rounded once to the nearest float64 (ties to even),
// ±Inf beyond the range. n > 0.
func meanOf(sum *ExactSum, n uint64) float64 {
	m, neg := sum.magnitude()
	hi, lo := topBit(&m), lowBit(&m)
	if hi < 0 {
		return 0
	}
	if hi-lo < 53 && hi-sumShift < 1023 && n < 1<<53 {
		// The sum and n are float64s exactly: one IEEE division rounds once.
		return sum.Float64() / float64(n)
	}
	if q, ok := meanNear(sum, n); ok {
		return q
	}
	words := make([]big.Word, 0, sumLimbs*64/bits.UintSize)
	for _, w := range m {
		if bits.UintSize == 64 {
			words = append(words, big.Word(w))
		} else {
			words = append(words, big.Word(uint32(w)), big.Word(w>>32))
		}
	}
	x := ratio(new(big.Int).SetBits(words), new(big.Int).SetUint64(n), -sumShift)
	if neg {
		x = -x
	}
	return x
}

// meanNear returns sum/n rounded once without big integers when that is
// cheap to prove: q = fl(fl(sum)/n) is within 1.5 ulps of the exact
// quotient Q; the residual R = sum − q·n is exact (q·n = h + l by FMA, n and
// q float64s), and Q = q + R/n, so comparing |R| with n·ulp(q)/2 (away from
// equality by a margin that covers rounding R to a float64) decides between
// q and its neighbour towards R. ok is false near a rounding boundary, at
// the edges of the range and across a binade, where meanOf divides exactly.
func meanNear(sum *ExactSum, n uint64) (float64, bool) {
	if n >= 1<<53 {
		return 0, false
	}
	nf := float64(n)
	q := sum.Float64() / nf
	a := math.Abs(q)
	if a < 0x1p-900 || a > 0x1p900 || math.IsInf(q, 0) || math.IsNaN(q) {
		return 0, false
	}
	mant, _ := math.Frexp(a)
	if mant == 0.5 {
		return 0, false // a power of two: the ulp below is half the ulp above
	}
	h := q * nf
	l := math.FMA(q, nf, -h)
	var r ExactSum
	r.Merge(sum)
	r.Add(-h)
	r.Add(-l)
	rf := r.Float64()
	ulp := math.Nextafter(a, math.Inf(1)) - a
	half := nf * ulp / 2 // exact: n < 2^53, ulp a power of two in range
	const margin = 0x1p-40
	switch ra := math.Abs(rf); {
	case ra < half*(1-margin):
		return q, true
	case ra > half*(1+margin) && ra < 3*half*(1-margin):
		// Q lies between the midpoint past q and the one after: the
		// neighbour of q towards R.
		nb := math.Nextafter(q, math.Inf(-1))
		if rf > 0 {
			nb = math.Nextafter(q, math.Inf(1))
		}
		if m, _ := math.Frexp(math.Abs(nb)); m == 0.5 {
			return 0, false // past a power of two the midpoints move
		}
		return nb, true
	}
	return 0, false
}
