package tiling

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"
)

// Decoders must never panic on any input, must report bad input as ErrCorrupt
// or ErrVersion, and what they accept must re-encode stably. Seeds are in
// testdata/fuzz/<FuzzName>/ (regenerated with -update, see golden_test.go).
//
//	go test -tags pebblegozstd -run '^$' -fuzz '^FuzzDecodeRecord$' -fuzztime 10s ./tiling

func FuzzDecodeRecord(f *testing.F) {
	// Every input is decoded by both views: the first version's kinds, and
	// every kind added since.
	views := []*View{goldenView(f), functionsView(f)}
	for _, g := range goldenRecords {
		f.Add(views[0].AppendRecord(nil, buildGolden(f, views[0], g)))
	}
	for _, g := range slices.Concat(goldenRecords, functionsRecords) {
		f.Add(views[1].AppendRecord(nil, buildGolden(f, views[1], g)))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, v := range views {
			fuzzRecord(t, v, b)
		}
	})
}

// fuzzRecord checks v's decoder on b: an error wrapping ErrCorrupt or
// ErrVersion, or a record that keeps the invariants, re-encodes stably and
// can be evaluated and updated.
func fuzzRecord(t *testing.T, v *View, b []byte) {
	const start = -Hour // a record before the epoch: negative tile starts
	r, err := v.DecodeRecord(start, b)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
			t.Fatalf("error %v wraps neither ErrCorrupt nor ErrVersion", err)
		}
		return
	}
	// The decoded record keeps the invariants Evaluate and Add rely on.
	for i, o := range r.Offsets {
		if o.Partition < 0 || o.Offset < 0 || i > 0 && o.Partition <= r.Offsets[i-1].Partition {
			t.Fatalf("offsets %+v: not sorted or negative", r.Offsets)
		}
	}
	for i, tl := range r.Tiles {
		if tl.Start < start || tl.Start >= start+v.Span() || !Aligned(tl.Start, v.Granularity) ||
			i > 0 && tl.Start <= r.Tiles[i-1].Start || len(tl.States) != len(v.aggs) {
			t.Fatalf("tile %d at %d: out of the record, unaligned or unsorted", i, tl.Start)
		}
	}
	enc := v.AppendRecord(nil, r)
	r2, err := v.DecodeRecord(start, enc)
	if err != nil {
		t.Fatalf("re-encoding %x of accepted input does not decode: %v", enc, err)
	}
	if enc2 := v.AppendRecord(nil, r2); !bytes.Equal(enc, enc2) {
		t.Fatalf("encoding not stable:\n %x\n %x", enc, enc2)
	}
	// Evaluating and updating a decoded record must not panic either, and
	// every value must be JSON.
	for _, at := range []int64{start - 1, start, start + 30*Minute, start + v.Span() - 1, start + v.Span(), start + Day} {
		for i, x := range v.Evaluate(at, []*Record{r}) {
			if _, err := json.Marshal(x); err != nil {
				t.Fatalf("feature %s: value %#v is not JSON: %v", v.Features[i].Name, x, err)
			}
		}
	}
	e := Event{Key: "k", TS: start + 59*Minute, Pos: Pos{Partition: 1 << 30, Offset: 1},
		Inputs: []Input{{Kind: Number, Num: 1, Raw: []byte("1")}, {Kind: Other, Raw: []byte(`"s"`)}}}
	v.Add(r, &e)
	v.AppendRecord(nil, r)
}

// exactSumFloat64 computes the float64 of the canonical encoding b of an
// ExactSum with math/big, independently of ExactSum.Float64.
func exactSumFloat64(t *testing.T, b []byte) float64 {
	t.Helper()
	if b[0] == 0 {
		return 0
	}
	lo, k := binary.Uvarint(b[1:])
	n, k2 := binary.Uvarint(b[1+k:])
	le := b[1+k+k2 : 1+k+k2+int(n)]
	be := make([]byte, len(le))
	for i, c := range le {
		be[len(le)-1-i] = c
	}
	mant := new(big.Float).SetPrec(4096).SetInt(new(big.Int).SetBytes(be))
	x := new(big.Float).SetPrec(4096).SetMantExp(mant, int(lo)-sumShift)
	if b[0] == 2 {
		x.Neg(x)
	}
	f, _ := x.Float64()
	return f
}

func FuzzExactSumDecode(f *testing.F) {
	for _, xs := range [][]float64{nil, {1}, {-1}, {math.MaxFloat64, math.MaxFloat64}, {math.SmallestNonzeroFloat64, -1e300}} {
		var s ExactSum
		for _, x := range xs {
			s.Add(x)
		}
		f.Add(s.AppendBinary(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, rest, err := decodeExactSum(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if len(rest) > len(b) || !bytes.Equal(rest, b[len(b)-len(rest):]) {
			t.Fatalf("rest %x is not a suffix of the input %x", rest, b)
		}
		enc := s.AppendBinary(nil)
		s2, rest2, err := decodeExactSum(enc)
		if err != nil || len(rest2) != 0 {
			t.Fatalf("re-encoding %x does not decode: %v, %d bytes left", enc, err, len(rest2))
		}
		if enc2 := s2.AppendBinary(nil); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable:\n %x\n %x", enc, enc2)
		}
		// Only overlong varints may differ from the canonical encoding.
		if consumed := b[:len(b)-len(rest)]; len(consumed) == len(enc) && !bytes.Equal(consumed, enc) {
			t.Fatalf("same length, different canonical bytes:\n %x\n %x", consumed, enc)
		}

		// The rounding to float64 matches math/big's, even far beyond the
		// float64 range and with bits 2000 places below the rounding point.
		got, want := s.Float64(), exactSumFloat64(t, enc)
		if math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("%x: Float64 = %v, math/big says %v", enc, got, want)
		}
		if s.IsZero() != (enc[0] == 0) {
			t.Fatalf("%x: IsZero = %v", enc, s.IsZero())
		}

		// The same magnitude with the other sign cancels it exactly: the
		// two's complement arithmetic of Merge is right.
		if enc[0] != 0 {
			neg := bytes.Clone(enc)
			neg[0] = 3 - neg[0]
			n, _, err := decodeExactSum(neg)
			if err != nil {
				t.Fatalf("negated %x does not decode: %v", neg, err)
			}
			if f := n.Float64(); math.Float64bits(f) != math.Float64bits(-got) {
				t.Fatalf("%x: negated Float64 = %v, want %v", enc, f, -got)
			}
			n.Merge(&s)
			if !n.IsZero() || !bytes.Equal(n.AppendBinary(nil), []byte{0}) {
				t.Fatalf("%x plus its negation is not zero: %x", enc, n.AppendBinary(nil))
			}
		}
	})
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"7d", "1d12h", "90m", "500ms", "0", "", "-1m", "1.5ms", "1000001d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ms, err := ParseDuration(s)
		// Without days, ParseDuration is time.ParseDuration of the trimmed
		// text, restricted to whole non-negative milliseconds.
		if trimmed := strings.TrimSpace(s); !strings.Contains(trimmed, "d") {
			d, terr := time.ParseDuration(trimmed)
			ok := terr == nil && d >= 0 && d%time.Millisecond == 0
			if ok != (err == nil) || ok && d.Milliseconds() != ms {
				t.Fatalf("%q: ParseDuration = %d, %v; time.ParseDuration = %v, %v", s, ms, err, d, terr)
			}
		}
		if err != nil {
			return
		}
		if ms < 0 {
			t.Fatalf("%q: negative %d", s, ms)
		}
		text := FormatDuration(ms)
		back, err := ParseDuration(text)
		if ms > 1_000_000*Day {
			// FormatDuration writes more days than ParseDuration accepts;
			// no real window is 2,700 years long.
			return
		}
		if err != nil || back != ms {
			t.Fatalf("%q = %dms formats as %q, which parses as %d, %v", s, ms, text, back, err)
		}
		if FormatDuration(back) != text {
			t.Fatalf("%q: FormatDuration not stable", s)
		}
	})
}
