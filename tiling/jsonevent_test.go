package tiling

import (
	"strings"
	"testing"
)

func jsonTestView(t testing.TB) *View {
	t.Helper()
	v, err := NewView(View{
		Name: "txn", Topic: "transactions", Entity: "user_id", Timestamp: "ts",
		Granularity: Minute, LifetimeStart: MinTime,
		Features: []Feature{
			{Name: "sum", Function: Sum, Column: "amount", Window: Day},
			{Name: "n", Function: Count, Window: Lifetime},
			{Name: "last", Function: Last, Column: "merchant", Window: Lifetime},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func testDecoder(t testing.TB) *Decoder {
	return &Decoder{Views: []*View{jsonTestView(t)}, MaxEventBytes: 512, MaxKeyBytes: 16, FutureSkew: Hour}
}

const testNow = int64(1_800_000_000_000)

func TestDecodeRejectsEachMalformedClass(t *testing.T) {
	cases := []struct {
		name, value, reason string
	}{
		{"not JSON", `{"user_id":`, ReasonNotJSON},
		{"a JSON array", `[1,2]`, ReasonNotObject},
		{"a JSON string", `"x"`, ReasonNotObject},
		{"missing key", `{"ts":1}`, ReasonMissingKey},
		{"null key", `{"user_id":null,"ts":1}`, ReasonMissingKey},
		{"key as object", `{"user_id":{},"ts":1}`, ReasonBadKey},
		{"key as float", `{"user_id":1.5,"ts":1}`, ReasonBadKey},
		{"key as bool", `{"user_id":true,"ts":1}`, ReasonBadKey},
		{"empty key", `{"user_id":"","ts":1}`, ReasonBadKey},
		{"key too long", `{"user_id":"12345678901234567","ts":1}`, ReasonKeyTooLong},
		{"missing timestamp", `{"user_id":"u"}`, ReasonMissingTime},
		{"timestamp as bool", `{"user_id":"u","ts":true}`, ReasonBadTime},
		{"unparseable timestamp", `{"user_id":"u","ts":"yesterday"}`, ReasonBadTime},
		{"timestamp beyond float precision", `{"user_id":"u","ts":1e300}`, ReasonBadTime},
		{"timestamp in the far future", `{"user_id":"u","ts":1800003600001}`, ReasonFutureTime},
		{"amount as string", `{"user_id":"u","ts":1,"amount":"12"}`, ReasonBadFieldType},
		{"amount overflowing to Inf", `{"user_id":"u","ts":1,"amount":1e999}`, ReasonNonFiniteNumber},
		{"oversized", `{"user_id":"u","ts":1,"pad":"` + strings.Repeat("x", 600) + `"}`, ReasonOversized},
	}
	d := testDecoder(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out Decoded
			d.Decode([]byte(c.value), Pos{}, testNow, &out)
			if out.Reasons[0] != c.reason {
				t.Fatalf("reason %q, want %q", out.Reasons[0], c.reason)
			}
		})
	}
}

func TestDecodeAcceptsValidEvents(t *testing.T) {
	cases := []struct {
		name, value, key string
		ts               int64
		amount           Input
	}{
		{"epoch ms and a string key", `{"user_id":"u1","ts":1700000000123,"amount":12.5}`, "u1", 1700000000123, Input{Kind: Number, Num: 12.5}},
		{"an integer key", `{"user_id":42,"ts":5,"amount":1}`, "42", 5, Input{Kind: Number, Num: 1}},
		{"a negative integer key", `{"user_id":-7,"ts":5}`, "-7", 5, Input{}},
		{"RFC 3339", `{"user_id":"u","ts":"2026-01-02T03:04:05.678Z"}`, "u", 1767323045678, Input{}},
		{"RFC 3339 with an offset", `{"user_id":"u","ts":"2026-01-02T04:04:05.6789+01:00"}`, "u", 1767323045678, Input{}},
		{"fractional ms are floored", `{"user_id":"u","ts":10.9}`, "u", 10, Input{}},
		{"negative fractional ms are floored", `{"user_id":"u","ts":-10.1}`, "u", -11, Input{}},
		{"null amount is missing", `{"user_id":"u","ts":1,"amount":null}`, "u", 1, Input{}},
		{"negative zero becomes zero", `{"user_id":"u","ts":1,"amount":-0.0}`, "u", 1, Input{Kind: Number, Num: 0}},
		{"numbers are correctly rounded", `{"user_id":"u","ts":1,"amount":1004.9999999999999}`, "u", 1, Input{Kind: Number, Num: 1004.9999999999999}},
		{"within the future skew", `{"user_id":"u","ts":1800003600000}`, "u", 1800003600000, Input{}},
	}
	d := testDecoder(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out Decoded
			d.Decode([]byte(c.value), Pos{Partition: 3, Offset: 9}, testNow, &out)
			if out.Reasons[0] != "" {
				t.Fatalf("rejected: %s", out.Reasons[0])
			}
			e := out.Events[0]
			if e.Key != c.key || e.TS != c.ts || e.Pos != (Pos{Partition: 3, Offset: 9}) {
				t.Fatalf("got key %q ts %d pos %v", e.Key, e.TS, e.Pos)
			}
			amt := e.Inputs[0]
			if amt.Kind != c.amount.Kind || amt.Num != c.amount.Num {
				t.Fatalf("amount %+v, want %+v", amt, c.amount)
			}
			if amt.Num == 0 && 1/amt.Num < 0 {
				t.Fatal("negative zero kept")
			}
		})
	}
}

func TestDecodeKeepsRawValuesForLast(t *testing.T) {
	d := testDecoder(t)
	var out Decoded
	d.Decode([]byte(`{"user_id":"u","ts":1,"merchant":{"id": "m1" }}`), Pos{}, testNow, &out)
	if out.Reasons[0] != "" {
		t.Fatal(out.Reasons[0])
	}
	in := out.Events[0].Inputs[1]
	if in.Kind != Other || string(in.Raw) != `{"id":"m1"}` {
		t.Fatalf("merchant input %+v raw %s", in, in.Raw)
	}
}

func FuzzJSONEvent(f *testing.F) {
	for _, s := range []string{
		`{"user_id":"u1","ts":1700000000123,"amount":12.5,"merchant":"m"}`,
		`{"user_id":42,"ts":"2026-01-02T03:04:05Z"}`,
		`{"user_id":"u","ts":1,"amount":1e999}`,
		`[]`, `{`, `null`, `{"user_id":"\ud800","ts":1}`,
	} {
		f.Add([]byte(s))
	}
	d := testDecoder(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		var out Decoded
		d.Decode(b, Pos{}, testNow, &out)
		if out.Reasons[0] != "" {
			return
		}
		e := out.Events[0]
		if e.Key == "" || len(e.Key) > 16 || e.TS > testNow+Hour {
			t.Fatalf("accepted a bad event: %+v", e)
		}
		// An accepted event must apply and round-trip through a record.
		v := d.Views[0]
		r := v.NewRecord(e.TS)
		v.Add(r, &e)
		if _, err := v.DecodeRecord(r.Start, v.AppendRecord(nil, r)); err != nil {
			t.Fatalf("record of an accepted event does not decode: %v", err)
		}
	})
}
