package tiling

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// stdCanonical is encoding/json's text for x, HTML escaping off: the
// definition canonicalValue implements with fast paths.
func stdCanonical(t *testing.T, x any) string {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(x); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func randString(r *rand.Rand) []byte {
	pieces := []string{"a", "Z", "0", " ", "\"", "\\", "\n", "\t", "\b", "\f", "\x00", "\x1f", "\x7f", "<", "&",
		"é", "\u2028", "\u2029", "\U0001F600", "\xff", "\xc3", "\xed\xa0\x80", "ab"}
	var b []byte
	for range r.IntN(8) {
		b = append(b, pieces[r.IntN(len(pieces))]...)
	}
	return b
}

func TestAppendJSONNumberIsEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for i := range 200_000 {
		var x float64
		switch i % 4 {
		case 0:
			x = math.Float64frombits(r.Uint64())
		case 1:
			x = float64(r.Int64N(1<<60)) * math.Pow10(r.IntN(60)-30)
		case 2:
			x = math.Ldexp(1, r.IntN(2100)-1075)
		default:
			x = []float64{0, 1e-6, 1e-7, 9.999999e-7, 1e21, 1e20, 999999999999999999999, 0.1, 5e-324, math.MaxFloat64}[r.IntN(10)]
		}
		if math.IsNaN(x) || math.IsInf(x, 0) {
			continue
		}
		want, _ := json.Marshal(x)
		if got := appendJSONNumber(nil, x); !bytes.Equal(got, want) {
			t.Fatalf("%v (%x): got %s, encoding/json %s", x, math.Float64bits(x), got, want)
		}
	}
}

func TestAppendJSONStringIsEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	for range 50_000 {
		s := randString(r)
		want := stdCanonical(t, string(s))
		if got := appendJSONString(nil, s); string(got) != want {
			t.Fatalf("%q: got %s, encoding/json %s", s, got, want)
		}
	}
}

// TestCanonicalValue checks the fast paths against the definition, and that
// values meant to be one are one.
func TestCanonicalValue(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	for range 50_000 {
		s := randString(r)
		if !json.Valid(s) { // as written: may be a valid JSON string already
			s = appendJSONString(nil, s)
		}
		var x any
		if err := json.Unmarshal(s, &x); err != nil {
			t.Fatal(err)
		}
		got, ok := canonicalValue(nil, &Input{Kind: Other, Raw: s})
		if want := stdCanonical(t, x); !ok || string(got) != want {
			t.Fatalf("%s: got %s, %v; want %s", s, got, ok, want)
		}
	}
	same := [][]string{
		{`"a"`, `"\u0061"`},
		{`"é"`, `"\u00e9"`, `"\u00E9"`},
		{`"<&>"`, `"\u003c\u0026\u003e"`},
		{`{"b":1,"a":[true,null]}`, `{ "a" : [ true , null ], "b" : 1.0 }`, `{"a":[true,null],"b":1e0}`},
		{`[1.5,"x"]`, `[15e-1, "\u0078"]`},
	}
	for _, group := range same {
		first, _ := canonicalValue(nil, &Input{Kind: Other, Raw: []byte(group[0])})
		for _, g := range group[1:] {
			c, ok := canonicalValue(nil, &Input{Kind: Other, Raw: []byte(g)})
			if !ok || !bytes.Equal(c, first) {
				t.Errorf("%s canonical %s, %s canonical %s", group[0], first, g, c)
			}
		}
	}
	for _, tc := range []struct {
		in   Input
		want string
	}{
		{Input{Kind: Number, Num: 1, Raw: []byte("1.0")}, "1"},
		{Input{Kind: Number, Num: 1e21, Raw: []byte("1e21")}, "1e+21"},
		{Input{Kind: Number, Num: 1234.5, Raw: []byte("12345e-1")}, "1234.5"},
		{Input{Kind: Other, Raw: []byte(`"1"`)}, `"1"`},
		{Input{Kind: Other, Raw: []byte(`true`)}, `true`},
	} {
		if got, ok := canonicalValue(nil, &tc.in); !ok || string(got) != tc.want {
			t.Errorf("%s: got %s, %v; want %s", tc.in.Raw, got, ok, tc.want)
		}
	}
	if _, ok := canonicalValue(nil, &Input{Kind: Missing}); ok {
		t.Error("a missing value has a canonical text")
	}
	if _, ok := canonicalValue(nil, &Input{Kind: Other, Raw: []byte(`"a\x7`)}); ok {
		t.Error("text that is not JSON has a canonical text")
	}
}

// TestDecoderRawValuesAreJSON: the decoder's raw values of strings are the
// JSON encoding/json would write, even when fastjson's own would not be
// JSON (\x7f, \a).
func TestDecoderRawValuesAreJSON(t *testing.T) {
	v := newTestView(t, Minute, MinTime, Feature{Name: "l", Function: Last, Column: "s"})
	d := Decoder{Views: []*View{v}, MaxEventBytes: 1 << 20, MaxKeyBytes: 100, FutureSkew: 1 << 40}
	var out Decoded
	for _, tc := range []struct{ field, want string }{
		{`"a\"b\u007f"`, "\"a\\\"b\x7f\""},
		{`"a\u0007"`, `"a\u0007"`},
		{`"tab\there"`, `"tab\there"`},
		{`"plain"`, `"plain"`},
		{`"\u2028"`, `"\u2028"`},
		{`{"a":"\u0007"}`, `{"a":"\u0007"}`},
		{`12.50`, `12.50`},
	} {
		d.Decode([]byte(`{"user":"u","ts":1,"s":`+tc.field+`}`), Pos{}, 0, &out)
		if out.Reasons[0] != "" {
			t.Fatalf("%s: rejected: %s", tc.field, out.Reasons[0])
		}
		raw := out.Events[0].Inputs[0].Raw
		if string(raw) != tc.want || !json.Valid(raw) {
			t.Errorf("%s: raw %q, want %q", tc.field, raw, tc.want)
		}
	}
}

// FuzzCanonicalValue: for any JSON text, canonicalValue is encoding/json's
// text of the value encoding/json reads (with its fast paths); for anything
// else it reports false. Never a panic.
//
//	go test -tags pebblegozstd -run '^$' -fuzz '^FuzzCanonicalValue$' -fuzztime 10s ./tiling
func FuzzCanonicalValue(f *testing.F) {
	for _, s := range canonicalSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, ok := canonicalValue(nil, &Input{Kind: Other, Raw: raw})
		var x any
		if err := json.Unmarshal(raw, &x); err != nil {
			if ok {
				t.Fatalf("%q is not JSON, canonical %q", raw, got)
			}
			return
		}
		if want := stdCanonical(t, x); !ok || string(got) != want {
			t.Fatalf("%q: canonical %q, %v; encoding/json %q", raw, got, ok, want)
		}
		// Canonical text is its own canonical text.
		if again, _ := canonicalValue(nil, &Input{Kind: Other, Raw: got}); !bytes.Equal(again, got) {
			t.Fatalf("%q: canonical %q, then %q", raw, got, again)
		}
	})
}

var canonicalSeeds = []string{`"a"`, `"\u0061"`, `"é\u2028"`, `{"b":1,"a":[true,null,1.0]}`, `1e5`, `-0`,
	`"\x7f"`, `"\ud800"`, `[1,"x",{"":{}}]`, `"a`, `{"a":1,"a":2}`, `1e400`, ` "x" `}
