package tiling

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
)

// Functions that compare values (last_distinct_n, approx_count_distinct,
// top_k) compare their canonical JSON text: the text encoding/json writes
// (with HTML escaping off) for the value encoding/json reads from the event.
// So 1, 1.0 and 1e0 are one value, "é" and "\u00e9" are one value, object
// keys are sorted, and a number and a string holding its digits are two
// values. Numbers are float64, as everywhere in tilestream: integers beyond
// 2^53 that round to the same float64 are one value.
//
// The canonical text is what those functions store and serve, and what
// approx_count_distinct hashes; it is derived from an Input in tiling, so
// ingest and the healer need nothing beyond Input.Raw.

// canonicalValue appends the canonical JSON text of in to dst. It reports
// false for Missing, and for a Raw that is not JSON (a caller's bug; the
// value is then skipped rather than stored).
func canonicalValue(dst []byte, in *Input) ([]byte, bool) {
	switch in.Kind {
	case Missing:
		return dst, false
	case Number:
		return appendJSONNumber(dst, in.Num), true
	}
	if plainJSONString(in.Raw) {
		return append(dst, in.Raw...), true
	}
	var x any
	if err := json.Unmarshal(in.Raw, &x); err != nil {
		return dst, false
	}
	buf := bytes.NewBuffer(dst)
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(x); err != nil {
		return dst, false
	}
	out := buf.Bytes()
	return out[:len(out)-1], true // Encode ends with a newline
}

// plainJSONString reports whether b is a JSON string that is its own
// canonical text: quoted, valid UTF-8, nothing escaped and nothing that
// encoding/json would escape (control characters, '"', '\\', U+2028, U+2029).
func plainJSONString(b []byte) bool {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return false
	}
	b = b[1 : len(b)-1]
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == '"' || c == '\\' {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 || r == '\u2028' || r == '\u2029' {
			return false
		}
		i += n
	}
	return true
}

// appendJSONNumber appends f as encoding/json writes a float64: the shortest
// text that reads back as f, in exponent form only below 1e-6 or from 1e21.
func appendJSONNumber(dst []byte, f float64) []byte {
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// 1e-07 → 1e-7, as encoding/json.
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// appendJSONString appends s as a JSON string the way encoding/json writes it
// with HTML escaping off: '"', '\\' and control characters escaped (\b, \f,
// \n, \r, \t by name), U+2028 and U+2029 escaped, invalid UTF-8 written as
// \ufffd.
func appendJSONString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, n := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && n == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += n
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += n
			start = i
			continue
		}
		i += n
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// valueHash is the 64-bit hash of a canonical value: XXH64 with seed 0, a
// stable, specified hash, since approx_count_distinct's stored registers
// depend on it.
func valueHash(canonical []byte) uint64 { return xxhash.Sum64(canonical) }

// mix64 is the finaliser of MurmurHash3: a bijection of uint64 that spreads
// every input bit over the output.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9a53ca5e2cb
	x ^= x >> 33
	return x
}

// eventHash is the hash of an event's identity within its topic, its
// (partition, offset): top_k samples events by it.
func eventHash(p Pos) uint64 {
	return mix64(mix64(uint64(p.Offset)) ^ uint64(uint32(p.Partition))<<1 ^ 0x9e3779b97f4a7c15)
}

// AppendJSONString appends s as a JSON string exactly as the event decoder
// writes a string value's raw JSON (so the offline log's readers give the
// same bytes as the stream).
func AppendJSONString(dst, s []byte) []byte { return appendJSONString(dst, s) }

// AppendJSONNumber appends f as encoding/json writes a float64 (f must be
// finite): serving writes its answers with it.
func AppendJSONNumber(dst []byte, f float64) []byte { return appendJSONNumber(dst, f) }
