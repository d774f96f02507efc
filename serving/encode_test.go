package serving

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tilestream/tilestream/tiling"
)

// The reference encoding is what serving wrote before encode.go:
// json.NewEncoder(w).Encode of these types, whose MarshalJSON methods are
// the former ones.

type refResult struct {
	View     string      `json:"view"`
	Key      string      `json:"key"`
	Features refFeatures `json:"features"`
	Metadata refMetadata `json:"metadata"`
}

type refMetadata struct {
	ServedAt        refTime      `json:"served_at"`
	BatchWatermark  refTime      `json:"batch_watermark"`
	StreamWatermark refTime      `json:"stream_watermark"`
	BatchStaleness  refStaleness `json:"batch_staleness_seconds"`
	MissingFeatures []string     `json:"missing_features,omitempty"`
}

type refStaleness int64

func (s refStaleness) MarshalJSON() ([]byte, error) {
	if int64(s) == tiling.MinTime {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, float64(s)/1000, 'f', -1, 64), nil
}

type refTime int64

func (t refTime) MarshalJSON() ([]byte, error) {
	if int64(t) == tiling.MinTime {
		return []byte("null"), nil
	}
	b := []byte{'"'}
	b = time.UnixMilli(int64(t)).UTC().AppendFormat(b, TimeLayout)
	return append(b, '"'), nil
}

type refFeatures struct {
	names [][]byte
	vals  []any
}

func (f refFeatures) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
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
		case json.RawMessage:
			b = append(b, v...)
		default:
			enc, err := json.Marshal(v)
			if err != nil {
				return nil, err
			}
			b = append(b, enc...)
		}
	}
	return append(b, '}'), nil
}

func toRef(r *result) refResult {
	m := r.Metadata
	return refResult{View: r.View, Key: r.Key,
		Features: refFeatures{names: r.Features.names, vals: r.Features.vals},
		Metadata: refMetadata{ServedAt: refTime(m.ServedAt), BatchWatermark: refTime(m.BatchWatermark),
			StreamWatermark: refTime(m.StreamWatermark), BatchStaleness: refStaleness(m.BatchStaleness),
			MissingFeatures: m.MissingFeatures}}
}

// refEncode returns what json.NewEncoder(w).Encode(v) writes: nothing when
// it fails.
func refEncode(v any) []byte {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		return nil
	}
	return buf.Bytes()
}

// randString returns a short string mixing plain ASCII with the characters
// encoding/json escapes: quotes, backslashes, control characters, <, >, &,
// U+2028, U+2029, other non-ASCII and (unless valid) invalid UTF-8.
func randString(r *rand.Rand, valid bool) string {
	pieces := []string{"a", "Z", "9", " ", `"`, `\`, "\n", "\t", "\b", "\f", "\r", "\x00", "\x1f", "\x7f",
		"<", ">", "&", "\u2028", "\u2029", "é", "€", "😀", "\ufffd"}
	if !valid {
		pieces = append(pieces, "\xff", "\xe2\x80", "\xc3")
	}
	var sb strings.Builder
	for range r.IntN(12) {
		sb.WriteString(pieces[r.IntN(len(pieces))])
	}
	return sb.String()
}

// randValue returns a feature value of one of the types tiling produces, or
// (rarely) of another type, a non-finite float or invalid JSON, which
// encoding/json refuses.
func randValue(r *rand.Rand) any {
	switch r.IntN(12) {
	case 0:
		return nil
	case 1:
		return r.Uint64() >> r.IntN(64)
	case 2:
		return []float64{0, 1e-7, 1e21, -0.5, 1.0 / 3}[r.IntN(5)]
	case 3:
		return math.Float64frombits(r.Uint64()) // sometimes NaN or Inf
	case 4:
		return (r.Float64() - 0.5) * math.Pow(10, float64(r.IntN(50)-25))
	case 5:
		b, _ := json.Marshal(randString(r, true))
		return json.RawMessage(b)
	case 6:
		// Canonical text: HTML escaping off.
		return json.RawMessage(tiling.AppendJSONString(nil, []byte(randString(r, false))))
	case 7:
		return json.RawMessage([]string{`{"0.5":12.5,"0.99":1e-7}`, `[1,"a<b",null]`, `{ "a" : [ 1 , 2 ] }`,
			"\"x\u2028y\"", `"&amp;"`, "[\n true ]", `true`, `-0`}[r.IntN(8)])
	case 8:
		return json.RawMessage([]string{`{"a":`, `NaN`, `+Inf`, `'x'`, ``}[r.IntN(5)])
	case 9:
		return map[string]any{"k<": 1.5, "b": []int{1, 2}}
	case 10:
		return randString(r, false)
	}
	return float64(r.IntN(100_000)) / 100
}

func randResult(r *rand.Rand) result {
	n := r.IntN(6)
	names := make([]string, n)
	vals := make([]any, n)
	for i := range n {
		names[i] = randString(r, true) + strconv.Itoa(i)
		vals[i] = randValue(r)
	}
	times := []int64{tiling.MinTime, 0, testNowMs, -1, 1 << 50}
	res := result{
		View:     randString(r, true),
		Key:      randString(r, false),
		Features: features{names: memberNames(names), vals: vals},
		Metadata: metadata{
			ServedAt:        msTime(times[r.IntN(len(times))]),
			BatchWatermark:  msTime(times[r.IntN(len(times))]),
			StreamWatermark: msTime(times[r.IntN(len(times))]),
			BatchStaleness:  staleness([]int64{tiling.MinTime, 0, 1, 1500, -7, 86_400_123}[r.IntN(6)]),
		},
	}
	if r.IntN(3) == 0 {
		for range r.IntN(3) {
			res.Metadata.MissingFeatures = append(res.Metadata.MissingFeatures, randString(r, true))
		}
	}
	return res
}

// TestWriteResultMatchesEncodingJSON checks the direct encoder against the
// encoding/json one it replaces, byte for byte, on random results, and
// that both write nothing for values encoding/json refuses.
func TestWriteResultMatchesEncodingJSON(t *testing.T) {
	hd := &handler{} // the zero pool works
	r := rand.New(rand.NewPCG(3, 4))
	failed := 0
	for i := range 20_000 {
		res := randResult(r)
		want := refEncode(toRef(&res))
		rec := httptest.NewRecorder()
		hd.writeResult(rec, &res)
		if got := rec.Body.Bytes(); !bytes.Equal(got, want) {
			t.Fatalf("result %d:\n got %q\nwant %q", i, got, want)
		}
		if want == nil {
			failed++
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("Content-Type %q", ct)
		}

		batch := []result{res, randResult(r)}
		refs := struct {
			Results []refResult `json:"results"`
		}{[]refResult{toRef(&batch[0]), toRef(&batch[1])}}
		want = refEncode(refs)
		rec = httptest.NewRecorder()
		hd.writeResults(rec, batch)
		if got := rec.Body.Bytes(); !bytes.Equal(got, want) {
			t.Fatalf("batch %d:\n got %q\nwant %q", i, got, want)
		}
	}
	// Both outcomes were exercised.
	if failed == 0 || failed == 20_000 {
		t.Fatalf("%d of 20000 results refused by encoding/json; want some but not all", failed)
	}
}

// FuzzAppendHTMLString checks strings against encoding/json.
func FuzzAppendHTMLString(f *testing.F) {
	for _, s := range []string{"", "a", "<script>&", "\u2028\u2029", "\xff\xfe", "\x00\x1f\"\\", "é😀"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendHTMLString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("%q: got %s, want %s", s, got, want)
		}
	})
}

// FuzzAppendRawJSON checks raw JSON values against what encoding/json's
// Encoder makes of a Marshaler's output.
func FuzzAppendRawJSON(f *testing.F) {
	for _, s := range []string{`1`, `{ "a" : "<b>" }`, "\"\u2028\"", `[1,2`, `"x"`, `{"0.5":1}`, "\xe2\x80\xa8"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		want := refEncode(refFeatures{names: memberNames([]string{"v"}), vals: []any{json.RawMessage(raw)}})
		got, err := features{names: memberNames([]string{"v"}), vals: []any{json.RawMessage(raw)}}.appendJSON(nil)
		if err != nil {
			got = nil
		} else {
			got = append(got, '\n')
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%q: got %q, want %q", raw, got, want)
		}
	})
}
