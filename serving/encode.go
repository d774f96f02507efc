package serving

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tilestream/tilestream/tiling"
)

// Feature answers are written straight into a pooled buffer rather than
// through encoding/json: reflection over result, then a second pass that
// compacts and HTML-escapes every MarshalJSON output, cost as much as the
// rest of the handler. The bytes are those json.NewEncoder(w).Encode(v)
// writes for the same value (HTML escaping on, a trailing newline);
// encode_test.go checks it against encoding/json.

// maxPooledBuf is the largest response buffer put back in the pool: a rare
// huge batch answer should not stay pinned.
const maxPooledBuf = 64 << 10

// getBuf returns an empty buffer from the handler's pool.
func (h *handler) getBuf() *[]byte {
	if b, ok := h.bufs.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, 2048)
	return &b
}

// putBuf returns b to the pool once its bytes are written.
func (h *handler) putBuf(b *[]byte) {
	if cap(*b) > maxPooledBuf {
		return
	}
	*b = (*b)[:0]
	h.bufs.Put(b)
}

// writeResult writes a 200 answer of one result.
func (h *handler) writeResult(w http.ResponseWriter, res *result) {
	buf := h.getBuf()
	b, err := appendResult(*buf, res)
	h.writeBody(w, buf, b, err)
}

// writeResults writes a 200 answer of a POST: {"results":[…]}.
func (h *handler) writeResults(w http.ResponseWriter, res []result) {
	buf := h.getBuf()
	b := append(*buf, `{"results":[`...)
	var err error
	for i := range res {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = appendResult(b, &res[i]); err != nil {
			break
		}
	}
	b = append(b, ']', '}')
	h.writeBody(w, buf, b, err)
}

// writeBody writes b and a newline in one Write, as json.Encoder does. If
// encoding failed, nothing is written, also as json.Encoder does (the
// status stays 200 with an empty body). buf is recycled.
func (h *handler) writeBody(w http.ResponseWriter, buf *[]byte, b []byte, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err == nil {
		b = append(b, '\n')
		w.Write(b) //nolint:errcheck // the client is gone; nothing to do
	}
	*buf = b
	h.putBuf(buf)
}

// appendResult appends the JSON object of r.
func appendResult(b []byte, r *result) ([]byte, error) {
	b = append(b, `{"view":`...)
	b = appendHTMLString(b, r.View)
	b = append(b, `,"key":`...)
	b = appendHTMLString(b, r.Key)
	b = append(b, `,"features":`...)
	b, err := r.Features.appendJSON(b)
	if err != nil {
		return b, err
	}
	m := &r.Metadata
	b = append(b, `,"metadata":{"served_at":`...)
	b = m.ServedAt.appendJSON(b)
	b = append(b, `,"batch_watermark":`...)
	b = m.BatchWatermark.appendJSON(b)
	b = append(b, `,"stream_watermark":`...)
	b = m.StreamWatermark.appendJSON(b)
	b = append(b, `,"batch_staleness_seconds":`...)
	b = m.BatchStaleness.appendJSON(b)
	if len(m.MissingFeatures) > 0 {
		b = append(b, `,"missing_features":[`...)
		for i, f := range m.MissingFeatures {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendHTMLString(b, f)
		}
		b = append(b, ']')
	}
	return append(b, '}', '}'), nil
}

// appendJSON appends the features object in View.Features order (a Go map
// would sort it). Counts (uint64) and finite floats are written directly
// (the float text is encoding/json's: the shortest that parses back to the
// same bits); JSON values (json.RawMessage) as encoding/json would re-emit
// them, compacted with <, >, &, U+2028 and U+2029 escaped; anything else
// through encoding/json.
func (f features) appendJSON(b []byte) ([]byte, error) {
	b = append(b, '{')
	for i, v := range f.vals {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, f.names[i]...)
		switch v := v.(type) {
		case nil:
			b = append(b, "null"...)
		case uint64:
			b = strconv.AppendUint(b, v, 10)
		case float64:
			if math.IsInf(v, 0) || math.IsNaN(v) {
				return b, &json.UnsupportedValueError{Str: strconv.FormatFloat(v, 'g', -1, 64)}
			}
			b = tiling.AppendJSONNumber(b, v)
		case json.RawMessage:
			var err error
			if b, err = appendRawJSON(b, v); err != nil {
				return b, err
			}
		default:
			enc, err := json.Marshal(v) // compact and HTML-escaped already
			if err != nil {
				return b, err
			}
			b = append(b, enc...)
		}
	}
	return append(b, '}'), nil
}

// appendRawJSON appends the JSON value raw as encoding/json's Encoder emits
// a Marshaler's output: checked, compacted, with <, >, &, U+2028 and U+2029
// escaped. Values built by tiling are compact and rarely hold those bytes,
// so they are usually copied as they are.
func appendRawJSON(b, raw []byte) ([]byte, error) {
	if !json.Valid(raw) {
		// encoding/json's error, for the same outcome: nothing written.
		var buf bytes.Buffer
		return b, json.Compact(&buf, raw)
	}
	if !needsRewrite(raw) {
		return append(b, raw...), nil
	}
	var c, e bytes.Buffer
	if err := json.Compact(&c, raw); err != nil {
		return b, err
	}
	json.HTMLEscape(&e, c.Bytes())
	return append(b, e.Bytes()...), nil
}

// needsRewrite reports whether valid JSON raw holds a byte that compacting
// or HTML escaping may change: whitespace, <, >, & or the lead byte of
// U+2028 and U+2029 (conservatively, any 0xE2).
func needsRewrite(raw []byte) bool {
	for _, c := range raw {
		switch c {
		case ' ', '\t', '\n', '\r', '<', '>', '&', 0xE2:
			return true
		}
	}
	return false
}

// appendHTMLString appends s as encoding/json writes a string with HTML
// escaping on (its default): '"', '\\', control characters (\b, \f, \n, \r,
// \t by name), <, > and & escaped, U+2028 and U+2029 escaped, invalid UTF-8
// written as \ufffd.
func appendHTMLString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += n
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += n
			start = i
			continue
		}
		i += n
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendJSON appends t as RFC 3339 UTC with milliseconds, or null.
func (t msTime) appendJSON(b []byte) []byte {
	if int64(t) == tiling.MinTime {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = time.UnixMilli(int64(t)).UTC().AppendFormat(b, TimeLayout)
	return append(b, '"')
}

// appendJSON appends s in seconds, or null.
func (s staleness) appendJSON(b []byte) []byte {
	if int64(s) == tiling.MinTime {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, float64(s)/1000, 'f', -1, 64)
}
