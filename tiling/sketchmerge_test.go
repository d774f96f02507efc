package tiling

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// The read path's shortcuts for large sketches (hll.go: the dense form's
// word loops; quantiles.go: lists merged in one pass when a value needs
// them) are checked here against the plain paths: one sketch of every
// value, built by adds, and byte-at-a-time loops.

// sketchForms are the forms a part takes before it is merged: fresh adds
// (pending work), normalized, decoded from its bytes (packed or shared
// dense registers), or itself a merge of smaller parts.
var sketchForms = []string{"fresh", "normalized", "decoded", "merged"}

// quantileValues draws n values of one of a few shapes: signed with zeros,
// amounts in cents (a few zero), or spread over many octaves (to collapse).
func quantileValues(r *rand.Rand, n int) []float64 { return quantileShape(r, n, r.IntN(3)) }

// quantileShape draws n values of one shape: those of quantileValues (0 to
// 2), positive values over a few octaves (3) or zeros (4).

func quantileShape(r *rand.Rand, n, shape int) []float64 {
	xs := make([]float64, n)
	for i := range xs {
		switch shape {
		case 0:
			if r.IntN(8) == 0 {
				xs[i] = 0
			} else {
				xs[i] = math.Round(r.NormFloat64()*1e4) / 100
			}
		case 1: // amounts, a few zero
			if r.IntN(50) > 0 {
				xs[i] = float64(r.IntN(100_000)) / 100
			}
		case 3: // positive, a few values over many octaves
			xs[i] = math.Round(math.Exp(r.Float64() * 5))
		case 4:
			xs[i] = 0
		default:
			xs[i] = math.Ldexp(r.Float64()+0.5, r.IntN(120)-60)
			if r.IntN(4) == 0 {
				xs[i] = -xs[i]
			}
		}
	}
	return xs
}

// TestQuantileMergeForms merges parts of every form and size (empty, one
// bin, a few, hundreds, past maxBins) in random orders and tree shapes, and
// checks that the values (read before anything folds the lists) and the
// bytes equal those of one sketch of every value, and that no part changed.
func TestQuantileMergeForms(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	mappings := map[int]*quantileMapping{}
	qs := []float64{0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1}
	for range 10 {
		qs = append(qs, r.Float64())
	}
	f := &Feature{Percentiles: qs}
	for round := range 600 {
		k := []int{1, 7, 35, 120}[r.IntN(4)]
		if mappings[k] == nil {
			mappings[k] = newQuantileMapping(k)
		}
		a := &aggSpec{kind: kindQuantiles, n: k, maxBins: []int{3, 16, 100, 2048}[r.IntN(4)], mapping: mappings[k]}
		var all []float64
		var mk func(depth int) (State, []float64)
		mk = func(depth int) (State, []float64) {
			xs := quantileValues(r, []int{0, 1, 1 + r.IntN(10), 50 + r.IntN(800)}[r.IntN(4)])
			form := sketchForms[r.IntN(len(sketchForms))]
			if form == "merged" && depth > 1 {
				form = "fresh"
			}
			s := newState(a).(*quantileState)
			if form == "merged" {
				xs = nil
				for range 1 + r.IntN(6) {
					p, pxs := mk(depth + 1)
					s.merge(p)
					xs = append(xs, pxs...)
				}
				return s, xs
			}
			for _, x := range xs {
				s.add(nil, &Input{Kind: Number, Num: x})
			}
			switch form {
			case "normalized":
				s.normalize()
			case "decoded":
				d, rest, err := decodeState(a, s.appendBinary(nil))
				if err != nil || len(rest) != 0 {
					t.Fatalf("decode: %v, %d left", err, len(rest))
				}
				return d, xs
			}
			return s, xs
		}
		n := 1 + r.IntN(16)
		parts := make([]State, n)
		want := make([][]byte, n) // each part's bytes, from a sketch of its values
		for i := range parts {
			var xs []float64
			parts[i], xs = mk(0)
			all = append(all, xs...)
			ref := newState(a)
			for _, x := range xs {
				ref.add(nil, &Input{Kind: Number, Num: x})
			}
			want[i] = ref.appendBinary(nil)
		}
		ref := newState(a)
		for _, x := range all {
			ref.add(nil, &Input{Kind: Number, Num: x})
		}
		acc := mergeTree(r, a, parts)
		what := fmt.Sprintf("round %d (K=%d, maxBins %d, %d parts, %d values)", round, k, a.maxBins, n, len(all))
		compareWalks(t, r, acc.(*quantileState), what)
		if got, want := mustMarshal(t, acc.value(f)), mustMarshal(t, ref.value(f)); got != want {
			t.Fatalf("%s: value %s, one sketch %s", what, got, want)
		}
		if got, want := acc.appendBinary(nil), ref.appendBinary(nil); !bytes.Equal(got, want) {
			t.Fatalf("%s: bytes %x, one sketch %x", what, got, want)
		}
		for i, p := range parts {
			if got := p.appendBinary(nil); !bytes.Equal(got, want[i]) {
				t.Fatalf("%s: part %d changed: %x, was %x", what, i, got, want[i])
			}
		}
	}
}

// compareWalks checks that the two walks of q's lists (when it has some)
// find the same bins for random ranks; it reports which walk walk takes.
func compareWalks(t *testing.T, r *rand.Rand, q *quantileState, what string) (counted bool) {
	t.Helper()
	if len(q.lists) == 0 || q.work.dirty() {
		return false
	}
	var ranks []uint64
	for range 1 + r.IntN(5) {
		ranks = append(ranks, r.Uint64N(q.n))
	}
	slices.Sort(ranks)
	order := make([]int, len(ranks))
	for i := range order {
		order[i] = i
	}
	f1, ok1 := q.walkMerged(ranks, order)
	f2, ok2, done := q.walkCounts(ranks, order)
	if done && (f1 != f2 || ok1 != ok2) {
		t.Fatalf("%s: walks differ: merged %v %v, counted %v %v", what, f1[:len(ranks)], ok1, f2[:len(ranks)], ok2)
	}
	return done
}

// TestQuantileWalks merges decoded sketches of about one size, as a read
// merges a month's and a day's, so the accumulator keeps them as lists, and
// compares the two walks of the lists, and the value with that of one
// sketch of every value.
func TestQuantileWalks(t *testing.T) {
	r := rand.New(rand.NewPCG(19, 20))
	m := newQuantileMapping(35)
	qs := []float64{0.01, 0.5, 0.9, 0.99}
	f := &Feature{Percentiles: qs}
	counted, merged := 0, 0
	for round := range 1000 {
		a := &aggSpec{kind: kindQuantiles, n: 35, maxBins: []int{50, 300, 2048}[r.IntN(3)], mapping: m}
		acc, ref := newState(a), newState(a)
		shape := []int{1, 1, 3, 0, 2, 4}[r.IntN(6)] // mostly positive: keys in a narrow range
		for range 1 + r.IntN(2*maxLists+2) {
			s := newState(a)
			for _, x := range quantileShape(r, 1+r.IntN(800), shape) {
				s.add(nil, &Input{Kind: Number, Num: x})
				ref.add(nil, &Input{Kind: Number, Num: x})
			}
			d, _, err := decodeState(a, s.appendBinary(nil))
			if err != nil {
				t.Fatal(err)
			}
			acc.merge(d)
		}
		what := fmt.Sprintf("round %d", round)
		if q := acc.(*quantileState); len(q.lists) > 0 {
			if compareWalks(t, r, q, what) {
				counted++
			} else {
				merged++
			}
		}
		if got, want := mustMarshal(t, acc.value(f)), mustMarshal(t, ref.value(f)); got != want {
			t.Fatalf("%s: value %s, one sketch %s", what, got, want)
		}
	}
	if counted < 50 || merged < 50 {
		t.Errorf("lists walked by counts %d times, merged %d times: too few to compare", counted, merged)
	}
}

// mergeTree merges parts in a random order, one accumulator at a time or as
// a random tree of accumulators.
func mergeTree(r *rand.Rand, a *aggSpec, parts []State) State {
	order := r.Perm(len(parts))
	if r.IntN(2) == 0 {
		acc := newState(a)
		for _, i := range order {
			acc.merge(parts[i])
		}
		return acc
	}
	level := make([]State, len(parts))
	for i, j := range order {
		level[i] = parts[j]
	}
	for len(level) > 1 {
		var up []State
		for i := 0; i < len(level); i += 2 {
			acc := newState(a)
			acc.merge(level[i])
			if i+1 < len(level) {
				acc.merge(level[i+1])
			}
			up = append(up, acc)
		}
		level = up
	}
	acc := newState(a)
	acc.merge(level[0])
	return acc
}

func mustMarshal(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// TestQuantileValueWalksLists checks the lists' walks where they must give
// way to their union: one more distinct key in all than maxBins (zero among
// them, or not), so the union collapses, though no list alone would.
func TestQuantileValueWalksLists(t *testing.T) {
	m := newQuantileMapping(35)
	// Rank 2 of about 420 lies in zero's count (4) when it is not
	// collapsed into the next bin.
	f := &Feature{Percentiles: []float64{0.005, 0.3, 0.5, 0.9}}
	for _, c := range []struct {
		name       string
		zero, sign float64
	}{
		{"positive, counted by key", 0, 1},
		{"zero and positive, counted by key", 1, 1},
		{"zero and negative, merged in order", 1, -1},
	} {
		var lists [][]float64
		keys := map[int64]bool{}
		for i := range 3 {
			var xs []float64
			if i == 0 && c.zero != 0 {
				xs = append(xs, 0)
			}
			for j := range 70 {
				x := c.sign * math.Pow(1.03, float64(i*70+j+1)) // a bin each
				xs = append(xs, x)
			}
			for _, x := range xs {
				keys[m.key(x)] = true
			}
			lists = append(lists, xs)
		}
		a := &aggSpec{kind: kindQuantiles, n: 35, maxBins: len(keys) - 1, mapping: m}
		ref, acc := newState(a), newState(a)
		for _, xs := range lists {
			s := newState(a)
			for j, x := range xs {
				reps := 1 + j%2
				if x == 0 {
					reps = 4
				}
				for range reps {
					s.add(nil, &Input{Kind: Number, Num: x})
					ref.add(nil, &Input{Kind: Number, Num: x})
				}
			}
			d, _, err := decodeState(a, s.appendBinary(nil))
			if err != nil {
				t.Fatal(err)
			}
			acc.merge(d)
		}
		if len(acc.(*quantileState).lists) == 0 {
			t.Fatalf("%s: no lists: the walks are not exercised", c.name)
		}
		if got, want := mustMarshal(t, acc.value(f)), mustMarshal(t, ref.value(f)); got != want {
			t.Errorf("%s: value %s, one sketch %s", c.name, got, want)
		}
	}
}

// TestHLLMergeForms merges sketches of every form (empty, sparse fresh,
// normalized, packed, dense fresh and decoded) in random orders and tree
// shapes: the bytes and estimate are those of one sketch of every hash, and
// no part changed.
func TestHLLMergeForms(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for round := range 400 {
		p := []int{4, 8, 12, 14}[r.IntN(4)]
		a := &aggSpec{kind: kindHLL, n: p}
		var mk func(depth int) (State, []uint64)
		mk = func(depth int) (State, []uint64) {
			hs := make([]uint64, []int{0, 1, 1 + r.IntN(20), hllSparseMax(p) + r.IntN(3<<p)}[r.IntN(4)])
			for i := range hs {
				hs[i] = r.Uint64() >> r.IntN(20)
			}
			form := sketchForms[r.IntN(len(sketchForms))]
			if form == "merged" && depth > 1 {
				form = "fresh"
			}
			s := newState(a).(*hllState)
			if form == "merged" {
				hs = nil
				for range 1 + r.IntN(5) {
					x, xs := mk(depth + 1)
					s.merge(x)
					hs = append(hs, xs...)
				}
				return s, hs
			}
			for _, h := range hs {
				s.addHash(h)
			}
			switch form {
			case "normalized":
				s.normalize()
			case "decoded":
				d, rest, err := decodeState(a, s.appendBinary(nil))
				if err != nil || len(rest) != 0 {
					t.Fatalf("decode: %v, %d left", err, len(rest))
				}
				return d, hs
			}
			return s, hs
		}
		n := 1 + r.IntN(8)
		parts := make([]State, n)
		want := make([][]byte, n)
		ref := newState(a).(*hllState)
		for i := range parts {
			var hs []uint64
			parts[i], hs = mk(0)
			one := newState(a).(*hllState)
			for _, h := range hs {
				one.addHash(h)
				ref.addHash(h)
			}
			want[i] = one.appendBinary(nil)
		}
		acc := mergeTree(r, a, parts).(*hllState)
		what := fmt.Sprintf("round %d (p=%d, %d parts)", round, p, n)
		if got, want := acc.estimate(), ref.estimate(); got != want {
			t.Fatalf("%s: estimate %d, one sketch %d", what, got, want)
		}
		if got, want := acc.appendBinary(nil), ref.appendBinary(nil); !bytes.Equal(got, want) {
			t.Fatalf("%s: bytes differ", what)
		}
		for i, x := range parts {
			if got := x.appendBinary(nil); !bytes.Equal(got, want[i]) {
				t.Fatalf("%s: part %d changed", what, i)
			}
		}
	}
}

// TestHLLDenseWordLoops compares the dense form's word loops with byte
// loops: the register max (and that shared registers are copied only when
// one changes), the range check, and the histogram.
func TestHLLDenseWordLoops(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	for round := range 3000 {
		p := MinPrecision + r.IntN(MaxPrecision-MinPrecision+1)
		if round%4 != 0 {
			p = min(p, 10) // mostly small, for more rounds
		}
		top := uint8(64 - p + 1)
		regs := func() []byte {
			d := make([]byte, 1<<p)
			hi := []uint8{1, 3, top}[r.IntN(3)]
			for i := range d {
				if r.IntN(3) > 0 {
					d[i] = uint8(r.IntN(int(hi) + 1))
				}
			}
			return d
		}
		x, y := regs(), regs()
		if r.IntN(4) == 0 { // y no larger anywhere: a shared x stays shared
			for i := range y {
				y[i] = min(y[i], x[i])
			}
		}
		want := make([]byte, len(x))
		changed := false
		for i := range x {
			want[i] = max(x[i], y[i])
			changed = changed || y[i] > x[i]
		}
		orig := slices.Clone(x)
		shared := r.IntN(2) == 0
		s := &hllState{p: uint8(p), dense: x, sharedDense: shared}
		s.maxDense(y)
		if !bytes.Equal(s.dense, want) {
			t.Fatalf("round %d p=%d: register max differs", round, p)
		}
		switch {
		case shared && !bytes.Equal(x, orig):
			t.Fatalf("round %d: shared registers written", round)
		case shared && !changed && &s.dense[0] != &x[0]:
			t.Fatalf("round %d: shared registers copied though none changed", round)
		case !shared && &s.dense[0] != &x[0]:
			t.Fatalf("round %d: own registers copied", round)
		}

		var c [66]int
		for _, v := range want {
			c[v]++
		}
		if got := registerHistogram(want); got != c {
			t.Fatalf("round %d p=%d: histogram %v, want %v", round, p, got, c)
		}
		if !registersWithin(want, top) {
			t.Fatalf("round %d p=%d: registers within %d rejected", round, p, top)
		}
		bad := slices.Clone(want)
		bad[r.IntN(len(bad))] = top + 1 + uint8(r.IntN(256-int(top)-1))
		if registersWithin(bad, top) {
			t.Fatalf("round %d p=%d: a register beyond %d accepted", round, p, top)
		}
		enc := append([]byte{2}, bad...)
		if _, _, err := decodeState(&aggSpec{kind: kindHLL, n: p}, enc); err == nil {
			t.Fatalf("round %d p=%d: decoded a register beyond %d", round, p, top)
		}
	}
}

// decodeQuantilesV0 is decodeQuantiles as it was before it read by offset
// with inline one-byte uvarints: the reference for TestDecodeQuantilesSame.
func decodeQuantilesV0(a *aggSpec, b []byte, s *quantileState) (State, []byte, error) {
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
	start := b
	var key int64
	for i := range m {
		if i == 0 {
			if key, k = binary.Varint(b); k <= 0 {
				return bad("key")
			}
		} else {
			d, kk := binary.Uvarint(b)
			if kk <= 0 || d == 0 || d > 1<<22 {
				return bad("key")
			}
			key, k = key+int64(d), kk
		}
		if !s.mapping.validKey(key) {
			return bad("key")
		}
		b = b[k:]
		c, kk := binary.Uvarint(b)
		if kk <= 0 || c == 0 || s.n+c < s.n {
			return bad("count")
		}
		s.n += c
		b = b[kk:]
	}
	s.packed, s.packedBins = start[:len(start)-len(b)], int(m)
	return s, b, nil
}

// TestDecodeQuantilesSame decodes sketches and corruptions of them (bytes
// changed, cut, or keys moved to the edges of the valid ranges) with
// decodeQuantiles and its reference: both accept the same inputs, with the
// same error, state and rest.
func TestDecodeQuantilesSame(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	m := newQuantileMapping(35)
	a := &aggSpec{kind: kindQuantiles, n: 35, maxBins: []int{16, 2048}[r.IntN(2)], mapping: m}
	edges := []int64{0, 1, -1, quantileBias + m.minIndex, quantileBias + m.minIndex - 1, quantileBias + m.maxIndex,
		quantileBias + m.maxIndex + 1, -(quantileBias + m.minIndex), -(quantileBias + m.minIndex - 1), -(quantileBias + m.maxIndex), -(quantileBias + m.maxIndex + 1)}
	accepted := 0
	for round := range 20_000 {
		s := newState(a).(*quantileState)
		for _, x := range quantileValues(r, r.IntN(300)) {
			s.add(nil, &Input{Kind: Number, Num: x})
		}
		b := s.appendBinary(nil)
		switch r.IntN(4) {
		case 0:
			for range 1 + r.IntN(3) {
				b[r.IntN(len(b))] = byte(r.Uint32())
			}
		case 1:
			b = b[:r.IntN(len(b)+1)]
		case 2: // one bin at an edge key
			b = binary.AppendUvarint(nil, 1)
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(-1))
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(1))
			b = binary.AppendVarint(b, edges[r.IntN(len(edges))])
			b = binary.AppendUvarint(b, uint64(r.IntN(3)))
		}
		b = append(b, byte(round)) // a next state's byte
		got, grest, gerr := decodeQuantiles(a, b, new(quantileState))
		want, wrest, werr := decodeQuantilesV0(a, b, new(quantileState))
		if fmt.Sprint(gerr) != fmt.Sprint(werr) {
			t.Fatalf("round %d: %x: error %v, reference %v", round, b, gerr, werr)
		}
		if gerr != nil {
			continue
		}
		accepted++
		g, w := got.(*quantileState), want.(*quantileState)
		if !bytes.Equal(grest, wrest) || !bytes.Equal(g.packed, w.packed) || g.packedBins != w.packedBins ||
			g.n != w.n || g.min != w.min || g.max != w.max {
			t.Fatalf("round %d: %x: decoded differently", round, b)
		}
	}
	if accepted < 5000 {
		t.Errorf("only %d of the inputs decoded", accepted)
	}
}

// TestHLLLazyHistogram compares the histogram of registers that are not
// folded (shared registers, more arrays and pending keys, many raising one
// register in turn) with that of the folded registers.
func TestHLLLazyHistogram(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for round := range 1500 {
		// Every precision, those above 12 less often (their arrays are
		// large); their marks of raised registers are not on the stack.
		p := uint8(MinPrecision + r.IntN(13-MinPrecision))
		if round%8 == 0 {
			p = uint8(13 + r.IntN(MaxPrecision-12))
		}
		top := 64 - int(p) + 1
		regs := func() []byte {
			d := make([]byte, 1<<p)
			for i := range d {
				d[i] = uint8(r.IntN(min(top, 8)))
			}
			return d
		}
		s := &hllState{p: p, dense: regs(), sharedDense: true}
		for range r.IntN(maxMore + 1) {
			s.more = append(s.more, regs())
		}
		// The registers the keys fall in: a few, many keys each; or
		// hundreds (more raised registers than the stack holds).
		few, keys := 1+r.IntN(4), r.IntN(200)
		if r.IntN(3) == 0 {
			few, keys = 400, 1000
		}
		idx := make([]uint32, few)
		for i := range idx {
			idx[i] = r.Uint32N(1 << p)
		}
		for range keys {
			// A key of register idx[·] and a random ρ: the low bits of
			// the index below the register's, then ρ'.
			i := idx[r.IntN(few)]<<(hllSparseBits-p) | r.Uint32N(1<<(hllSparseBits-p))
			if r.IntN(2) == 0 {
				i &^= 1<<(hllSparseBits-p) - 1 // ρ from ρ', up to the top
			}
			s.w().pending = append(s.w().pending, i<<6|(1+r.Uint32N(hllSparseRho)))
		}
		got := s.histogram()
		f := &hllState{p: p, dense: slices.Clone(s.dense), sharedDense: true, more: s.more}
		f.work = &hllWork{pending: slices.Clone(s.pend())}
		f.fold()
		if want := registerHistogram(f.dense); got != want {
			t.Fatalf("round %d p=%d: histogram %v, folded %v", round, p, got, want)
		}
	}
}

// TestUvarint compares uvarint with binary.Uvarint at every offset of
// random bytes: short, long, truncated, overlong and overflowing varints.
func TestUvarint(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	for round := range 20_000 {
		b := make([]byte, r.IntN(16))
		for i := range b {
			switch r.IntN(3) {
			case 0:
				b[i] = byte(r.IntN(0x80))
			case 1:
				b[i] = 0x80 | byte(r.IntN(0x80))
			default:
				b[i] = 0xff
			}
		}
		for o := 0; o <= len(b)+1; o++ {
			var wx uint64
			var wn int
			if o <= len(b) {
				wx, wn = binary.Uvarint(b[o:])
			}
			if x, n := uvarint(b, o); x != wx || n != wn {
				t.Fatalf("round %d: %x at %d: %d, %d; binary.Uvarint %d, %d", round, b, o, x, n, wx, wn)
			}
		}
	}
}

// TestQuantileListsStayOwn merges a state whose lists another state shares,
// past the room for lists and then into lists again: the other state's
// lists, and so its bytes, must not change.
func TestQuantileListsStayOwn(t *testing.T) {
	r := rand.New(rand.NewPCG(25, 26))
	a := &aggSpec{kind: kindQuantiles, n: 35, maxBins: 2048, mapping: newQuantileMapping(35)}
	var all [][]float64
	sketch := func() State {
		xs := quantileShape(r, 300, 1)
		all = append(all, xs)
		s := newState(a)
		for _, x := range xs {
			s.add(nil, &Input{Kind: Number, Num: x})
		}
		d, _, err := decodeState(a, s.appendBinary(nil))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	x := newState(a)
	for range 4 {
		x.merge(sketch()) // its own bins and three lists
	}
	want := newState(a)
	for _, xs := range all {
		for _, v := range xs {
			want.add(nil, &Input{Kind: Number, Num: v})
		}
	}
	s := newState(a)
	s.merge(x) // shares x's lists
	y := newState(a)
	y.merge(sketch())
	y.merge(sketch())
	s.merge(y) // no room: s's lists to the work arrays
	s.merge(sketch())
	s.merge(sketch()) // lists again
	if got, want := x.appendBinary(nil), want.appendBinary(nil); !bytes.Equal(got, want) {
		t.Fatal("a state whose lists another shares changed")
	}
}
