package tiling

import (
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/valyala/fastjson"
)

// Reasons an event is rejected; the values label metrics and dead letters.
const (
	ReasonOversized       = "oversized"
	ReasonNotJSON         = "not_json"
	ReasonNotObject       = "not_object"
	ReasonMissingKey      = "missing_key"
	ReasonBadKey          = "bad_key"
	ReasonKeyTooLong      = "key_too_long"
	ReasonMissingTime     = "missing_timestamp"
	ReasonBadTime         = "bad_timestamp"
	ReasonFutureTime      = "future_timestamp"
	ReasonBadFieldType    = "bad_field_type"
	ReasonNonFiniteNumber = "non_finite"
)

// Reasons lists every rejection reason.
var Reasons = []string{ReasonOversized, ReasonNotJSON, ReasonNotObject, ReasonMissingKey,
	ReasonBadKey, ReasonKeyTooLong, ReasonMissingTime, ReasonBadTime, ReasonFutureTime,
	ReasonBadFieldType, ReasonNonFiniteNumber}

// Decoder turns the JSON bytes of one event into one Event per view (the
// views of one topic, or the one view of an offline-log file). A Decoder is
// not safe for concurrent use (it owns a parser).
type Decoder struct {
	Views         []*View
	MaxEventBytes int   // larger events are rejected as oversized
	MaxKeyBytes   int   // longer keys are rejected
	FutureSkew    int64 // ms: events stamped after now+FutureSkew are rejected
	p             fastjson.Parser
	scratch       []byte
}

// Decoded is the outcome of one event for each view: Events[i] is valid
// when Reasons[i] == "".
type Decoded struct {
	Events  []Event
	Reasons []string
}

// Decode decodes value for every view. now is the wall clock in ms.
func (d *Decoder) Decode(value []byte, pos Pos, now int64, out *Decoded) {
	n := len(d.Views)
	out.Events = growEvents(out.Events, n)
	out.Reasons = growStrings(out.Reasons, n)
	fail := func(reason string) {
		for i := range out.Reasons {
			out.Reasons[i] = reason
		}
	}
	if len(value) > d.MaxEventBytes {
		fail(ReasonOversized)
		return
	}
	root, err := d.p.ParseBytes(value)
	if err != nil {
		fail(ReasonNotJSON)
		return
	}
	obj, err := root.Object()
	if err != nil {
		fail(ReasonNotObject)
		return
	}
	for i, v := range d.Views {
		out.Reasons[i] = d.decodeView(v, obj, pos, now, &out.Events[i])
	}
}

func (d *Decoder) decodeView(v *View, obj *fastjson.Object, pos Pos, now int64, e *Event) string {
	e.Pos = pos
	kv := obj.Get(v.Entity)
	if kv == nil || kv.Type() == fastjson.TypeNull {
		return ReasonMissingKey
	}
	switch kv.Type() {
	case fastjson.TypeString:
		b, _ := kv.StringBytes()
		if len(b) == 0 || !utf8.Valid(b) {
			return ReasonBadKey
		}
		if len(b) > d.MaxKeyBytes {
			return ReasonKeyTooLong
		}
		e.Key = string(b)
	case fastjson.TypeNumber:
		s := kv.String()
		if !isIntegerLiteral(s) {
			return ReasonBadKey
		}
		e.Key = s
	default:
		return ReasonBadKey
	}

	tv := obj.Get(v.Timestamp)
	if tv == nil || tv.Type() == fastjson.TypeNull {
		return ReasonMissingTime
	}
	ts, ok := d.parseTime(tv)
	if !ok {
		return ReasonBadTime
	}
	if ts > now+d.FutureSkew {
		return ReasonFutureTime
	}
	e.TS = ts
	e.ID = ""
	if v.EventID != "" {
		if iv := obj.Get(v.EventID); iv != nil {
			switch iv.Type() {
			case fastjson.TypeString:
				b, _ := iv.StringBytes()
				e.ID = string(b)
			case fastjson.TypeNumber:
				e.ID = iv.String()
			}
		}
	}

	cols := v.Columns()
	if cap(e.Inputs) < len(cols) {
		e.Inputs = make([]Input, len(cols))
	}
	e.Inputs = e.Inputs[:len(cols)]
	for i, c := range cols {
		in := &e.Inputs[i]
		*in = Input{Raw: in.Raw[:0]}
		cv := obj.Get(c)
		if cv == nil || cv.Type() == fastjson.TypeNull {
			continue
		}
		if cv.Type() == fastjson.TypeNumber {
			f, err := d.number(cv)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				return ReasonNonFiniteNumber
			}
			if f == 0 {
				f = 0 // -0 → +0: min and max must not depend on the sign of zero
			}
			in.Kind, in.Num = Number, f
		} else {
			if v.ColumnNumeric(i) {
				return ReasonBadFieldType
			}
			in.Kind = Other
		}
		if v.ColumnRaw(i) {
			if cv.Type() == fastjson.TypeString {
				// fastjson has unescaped the string (Type does) and would
				// re-escape it with strconv.AppendQuote, whose \x7f and \a
				// are not JSON: write it as encoding/json does.
				b, _ := cv.StringBytes()
				in.Raw = appendJSONString(in.Raw, b)
			} else {
				in.Raw = cv.MarshalTo(in.Raw)
			}
		}
	}
	return ""
}

// parseTime reads epoch milliseconds (a number; fractions are floored) or an
// RFC 3339 string.
func (d *Decoder) parseTime(v *fastjson.Value) (int64, bool) {
	switch v.Type() {
	case fastjson.TypeNumber:
		f, err := d.number(v)
		// ±2^53 ms is ±285,000 years: beyond it float64 loses milliseconds.
		if err != nil || math.IsNaN(f) || math.Abs(f) > 1<<53 {
			return 0, false
		}
		return int64(math.Floor(f)), true
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		t, err := time.Parse(time.RFC3339Nano, string(b))
		if err != nil {
			return 0, false
		}
		return t.Unix()*1000 + int64(t.Nanosecond()/1e6), true
	}
	return 0, false
}

// number parses a JSON number correctly rounded. fastjson's own Float64 is
// not: it computes mantissa·10^exp in float64 and can miss by one ulp (it
// reads 1004.9999999999999 and 1005 alike in some cases), which would break
// bit-exact sums and min/max.
func (d *Decoder) number(v *fastjson.Value) (float64, error) {
	d.scratch = v.MarshalTo(d.scratch[:0])
	if len(d.scratch) == 0 {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseFloat(unsafe.String(&d.scratch[0], len(d.scratch)), 64)
}

// isIntegerLiteral reports whether s is a JSON integer: optional minus, digits.
func isIntegerLiteral(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func growEvents(s []Event, n int) []Event {
	if cap(s) < n {
		return make([]Event, n)
	}
	return s[:n]
}

func growStrings(s []string, n int) []string {
	if cap(s) < n {
		return make([]string, n)
	}
	s = s[:n]
	for i := range s {
		s[i] = ""
	}
	return s
}
