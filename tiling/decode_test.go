package tiling

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"testing"
)

// enc builds test encodings: uvarints, varints, bytes and float64s.
type encBuf []byte

func (b encBuf) u(xs ...uint64) encBuf {
	for _, x := range xs {
		b = binary.AppendUvarint(b, x)
	}
	return b
}
func (b encBuf) v(x int64) encBuf      { return binary.AppendVarint(b, x) }
func (b encBuf) raw(xs ...byte) encBuf { return append(b, xs...) }
func (b encBuf) str(s string) encBuf   { return append(b.u(uint64(len(s))), s...) }
func (b encBuf) f64(x float64) encBuf {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
}
func (b encBuf) cat(o ...byte) encBuf { return append(b, o...) }
func (b encBuf) bytes() []byte        { return []byte(b) }
func (b encBuf) entry(ts int64, part, off uint64, val string) encBuf {
	return b.v(ts).u(part).v(int64(off)).str(val)
}

// TestStateDecodersRejectCorrupt feeds each new state's decoder encodings
// that break one rule of its format; each must give ErrCorrupt. The valid
// encoding beside each group must decode and re-encode to itself.
func TestStateDecodersRejectCorrupt(t *testing.T) {
	list := aggSpec{kind: kindLastN, n: 2, maxValue: 8}
	distinct := aggSpec{kind: kindLastDistinctN, n: 2, maxValue: 8}
	hll := aggSpec{kind: kindHLL, n: 4}
	q := quantileSpec(7, 8)
	freq := aggSpec{kind: kindFreq, n: 2, maxValue: 8}
	one := quantileSpec(7, 8).mapping.key(1)
	two := quantileSpec(7, 8).mapping.key(2)
	var e encBuf
	for _, tc := range []struct {
		name  string
		spec  aggSpec
		valid []byte
		bad   map[string][]byte
	}{
		{"moments", aggSpec{kind: kindMoments},
			e.u(2).raw(1).u(1074, 1).raw(3).raw(1).u(2148, 1).raw(5), // 1 and 2: Σx = 3, Σx² = 5
			map[string][]byte{
				"square flag":               e.u(1).raw(1).u(1074, 1).raw(1).raw(2),
				"squares zero, sum not":     e.u(1).raw(1).u(1074, 1).raw(1).raw(0),
				"square sum past its range": e.u(1).raw(1).u(1074, 1).raw(1).raw(1).u(4259, 1).raw(3),
				"square sum even low byte":  e.u(1).raw(1).u(1074, 1).raw(1).raw(1).u(2148, 1).raw(2),
				"no square sum":             e.u(1).raw(1).u(1074, 1).raw(1),
			}},
		{"last_n", list,
			e.u(2).entry(5, 0, 1, "1").u(0, 0).v(2).str(`"a"`),
			map[string][]byte{
				"more entries than n":  e.u(3).entry(5, 0, 1, "1").u(1, 0).v(1).str("2").u(1, 0).v(1).str("3"),
				"out of order":         e.u(2).entry(5, 0, 2, "1").u(0, 0).v(1).str("2"),
				"the same event twice": e.u(2).entry(5, 0, 2, "1").u(0, 0).v(2).str("2"),
				"value not JSON":       e.u(1).entry(5, 0, 1, "{"),
				"empty value":          e.u(1).entry(5, 0, 1, ""),
				"value too long":       e.u(1).entry(5, 0, 1, `"abcdefgh"`),
				"time wraps":           e.u(2).entry(math.MaxInt64, 0, 1, "1").u(1, 0).v(1).str("2"),
				"partition too big":    e.u(1).v(5).u(1 << 32).v(1).str("1"),
			}},
		{"last_distinct_n", distinct,
			e.u(2).entry(5, 0, 1, `"a"`).u(1, 0).v(1).str(`"b"`),
			map[string][]byte{
				"a value twice": e.u(2).entry(5, 0, 1, `"a"`).u(1, 0).v(1).str(`"a"`),
			}},
		{"hll sparse", hll,
			e.raw(1).u(2, 1<<6|3, 1<<6|1),
			map[string][]byte{
				"more keys than the sparse form holds": e.raw(1).u(5, 1<<6|1, 1<<6, 1<<6, 1<<6, 1<<6),
				"keys not increasing":                  e.raw(1).u(2, 1<<6|3, 0),
				"two keys of one index":                e.raw(1).u(2, 1<<6|3, 1),
				"ρ of 0":                               e.raw(1).u(1, 1<<6),
				"ρ past 40":                            e.raw(1).u(1, 1<<6|41),
				"index past 25 bits":                   e.raw(1).u(1, 1<<31|1),
				"form 3":                               e.raw(3),
			}},
		{"hll dense", hll,
			e.raw(2).cat(bytes.Repeat([]byte{61}, 16)...),
			map[string][]byte{
				"register past 65−p": e.raw(2).cat(bytes.Repeat([]byte{62}, 16)...),
				"short registers":    e.raw(2).cat(bytes.Repeat([]byte{1}, 15)...),
			}},
		{"quantiles", q,
			e.u(2).f64(1).f64(2).v(one).u(3).u(uint64(two-one), 1),
			map[string][]byte{
				"more bins than max_bins": e.u(9),
				"min above max":           e.u(2).f64(2).f64(1).v(one).u(3).u(uint64(two-one), 1),
				"NaN":                     e.u(1).f64(math.NaN()).f64(1).v(one).u(1),
				"minus zero":              e.u(1).f64(math.Copysign(0, -1)).f64(0).v(0).u(1),
				"zero count":              e.u(1).f64(1).f64(1).v(one).u(0),
				"keys not increasing":     e.u(2).f64(1).f64(2).v(one).u(1).u(0, 1),
				"key of no value":         e.u(1).f64(1).f64(1).v(1 << 50).u(1),
				"counts overflow":         e.u(2).f64(1).f64(2).v(one).u(math.MaxUint64).u(uint64(two-one), 1),
			}},
		{"top_k counted", freq,
			e.u(3).raw(0).u(2).str(`"a"`).str(`"b"`).u(2, 1).u(2).u(5, 0).u(7, 1),
			map[string][]byte{
				"counts do not add up":         e.u(4).raw(0).u(2).str(`"a"`).str(`"b"`).u(2, 1).u(2).u(5, 0).u(7, 1),
				"values out of order":          e.u(3).raw(0).u(2).str(`"b"`).str(`"a"`).u(2, 1).u(2).u(5, 0).u(7, 1),
				"a zero count":                 e.u(2).raw(0).u(2).str(`"a"`).str(`"b"`).u(2, 0).u(2).u(5, 0).u(7, 1),
				"sample of the wrong size":     e.u(3).raw(0).u(2).str(`"a"`).str(`"b"`).u(2, 1).u(1).u(5, 0),
				"sample index past the values": e.u(3).raw(0).u(2).str(`"a"`).str(`"b"`).u(2, 1).u(2).u(5, 0).u(7, 2),
				"sample hash wraps":            e.u(3).raw(0).u(2).str(`"a"`).str(`"b"`).u(2, 1).u(2).u(math.MaxUint64, 0).u(7, 1),
				"past capacity with 2 values":  e.u(2).raw(1).u(2).str(`"a"`).str(`"b"`).u(2).u(5, 0).u(7, 1),
				"flag 2":                       e.u(3).raw(2),
				"value not JSON":               e.u(1).raw(0).u(1).str(`"a`).u(1).u(1).u(5, 0),
			}},
		{"top_k past capacity", freq,
			e.u(9).raw(1).u(2).str(`"a"`).str(`"b"`).u(2).u(5, 0).u(7, 1),
			map[string][]byte{
				"a value not in the sample": e.u(9).raw(1).u(2).str(`"a"`).str(`"b"`).u(2).u(5, 0).u(7, 0),
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, rest, err := decodeState(&tc.spec, tc.valid)
			if err != nil || len(rest) != 0 {
				t.Fatalf("valid %x: %v, %d bytes left", tc.valid, err, len(rest))
			}
			if got := s.appendBinary(nil); !bytes.Equal(got, tc.valid) {
				t.Fatalf("valid %x re-encodes as %x", tc.valid, got)
			}
			for name, b := range tc.bad {
				_, _, err := decodeState(&tc.spec, b)
				if !errors.Is(err, ErrCorrupt) {
					t.Errorf("%s: %x: got %v, want ErrCorrupt", name, b, err)
				}
				// Truncated anywhere, the valid encoding is corrupt or
				// leaves a shorter state: never a panic.
				for i := range len(tc.valid) {
					decodeState(&tc.spec, slices.Clone(tc.valid[:i]))
				}
			}
		})
	}
}
