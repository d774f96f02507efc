package serving

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tilestream/tilestream/tiling"
)

// The fixed clock: served_at must be this truncated to the millisecond.
var (
	testNow      = time.Date(2026, 11, 26, 8, 0, 0, 123_456_789, time.UTC)
	testNowMs    = testNow.UnixMilli() // ...00.123
	testServedAt = "2026-11-26T08:00:00.123Z"
)

const (
	minute = int64(60_000)
	hour   = 60 * minute
	day    = 24 * hour
)

func mustView(t testing.TB, v tiling.View) *tiling.View {
	t.Helper()
	nv, err := tiling.NewView(v)
	if err != nil {
		t.Fatal(err)
	}
	return nv
}

func txnView(t testing.TB) *tiling.View {
	return mustView(t, tiling.View{
		Name: "txn", Topic: "payments", Entity: "user", Timestamp: "ts",
		Granularity: minute, LifetimeStart: tiling.MinTime,
		Features: []tiling.Feature{
			{Name: "amount_sum_7d", Function: tiling.Sum, Column: "amount", Window: 7 * day},
			{Name: "txn_count_7d", Function: tiling.Count, Window: 7 * day},
			{Name: "amount_min_1h", Function: tiling.Min, Column: "amount", Window: hour},
			{Name: "amount_mean_1d", Function: tiling.Mean, Column: "amount", Window: day},
			{Name: "merchant_last", Function: tiling.Last, Column: "merchant", Window: tiling.Lifetime},
		},
	})
}

// clicksLifetimeStart is 2026-01-01T00:00:00Z, aligned to the 5m default.
var clicksLifetimeStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()

func clicksView(t testing.TB) *tiling.View {
	return mustView(t, tiling.View{
		Name: "clicks", Topic: "web", Entity: "user", Timestamp: "ts",
		LifetimeStart: clicksLifetimeStart,
		Features: []tiling.Feature{
			{Name: "clicks_1h", Function: tiling.Count, Window: hour},
			{Name: "clicks_lifetime", Function: tiling.Count, Window: tiling.Lifetime},
		},
	})
}

// txnEvents puts events of key u1 on every edge of the windows at testNow.
func txnEvents() []event {
	t := testNowMs
	start7d := alignDown(t-7*day, minute)
	start1h := alignDown(t-hour, minute)
	cur := alignDown(t, minute)
	return []event{
		{key: "u1", ts: start7d - 1, amount: num(1e6), merchant: "too-old"},
		{key: "u1", ts: start7d, amount: num(2), merchant: "m0"},
		{key: "u1", ts: t - 3*day, amount: num(0.1)},
		{key: "u1", ts: t - 3*day + 5, amount: num(0.2)},
		{key: "u1", ts: t - 20*hour},                                   // counted, no amount
		{key: "u1", ts: t - 2*hour, amount: num(12.5), merchant: "m1"}, // outside 1h
		{key: "u1", ts: start1h - 1, amount: num(-50), merchant: "m1b"},
		{key: "u1", ts: start1h, amount: num(7.75)},
		{key: "u1", ts: t - 30*minute, amount: num(-3.25), merchant: "m2"},
		{key: "u1", ts: cur + 30_000, amount: num(5), merchant: "m3"}, // after t, current tile: counted
		{key: "u1", ts: cur + minute, amount: num(1000), merchant: "future"},
		{key: "u2", ts: t - minute, amount: num(1), merchant: "x"},
	}
}

func clickEvents() []event {
	t := testNowMs
	return []event{
		{key: "u1", ts: clicksLifetimeStart - 1},
		{key: "u1", ts: clicksLifetimeStart},
		{key: "u1", ts: t - 2*hour},
		{key: "u1", ts: t - 10*minute},
	}
}

// --- the oracle: the window formula applied by brute force, without tiling.

func alignDown(t, g int64) int64 {
	r := t % g
	if r < 0 {
		r += g
	}
	return t - r
}

type oracleFeature struct {
	fn     string // count, sum, min, mean, last
	window int64  // 0: lifetime
}

// oracle returns the JSON text of a feature's value for key at t.
func oracle(evs []event, key string, t, g, lifetimeStart int64, f oracleFeature) string {
	start := lifetimeStart
	if f.window != 0 {
		start = alignDown(t-f.window, g)
	}
	end := alignDown(t, g) + g
	var (
		n      uint64
		sum    = new(big.Rat)
		nNum   int
		minV   = math.Inf(1)
		last   = -1
		lastTS int64
	)
	for i, e := range evs {
		if e.key != key || e.ts < start || e.ts >= end {
			continue
		}
		n++
		if e.amount != nil {
			sum.Add(sum, new(big.Rat).SetFloat64(*e.amount))
			nNum++
			minV = math.Min(minV, *e.amount)
		}
		if e.merchant != "" && (last < 0 || e.ts >= lastTS) {
			last, lastTS = i, e.ts
		}
	}
	sumF, _ := sum.Float64()
	switch f.fn {
	case "count":
		return strconv.FormatUint(n, 10)
	case "sum":
		return jsonFloat(sumF)
	case "min":
		if nNum == 0 {
			return "null"
		}
		return jsonFloat(minV)
	case "mean":
		if nNum == 0 {
			return "null"
		}
		return jsonFloat(sumF / float64(nNum))
	case "last":
		if last < 0 {
			return "null"
		}
		return strconv.Quote(evs[last].merchant)
	}
	panic(f.fn)
}

func jsonFloat(f float64) string {
	b, err := json.Marshal(f)
	if err != nil {
		panic(err)
	}
	return string(b)
}

var txnOracle = map[string]oracleFeature{
	"amount_sum_7d":  {"sum", 7 * day},
	"txn_count_7d":   {"count", 7 * day},
	"amount_min_1h":  {"min", hour},
	"amount_mean_1d": {"mean", day},
	"merchant_last":  {"last", 0},
}

var clicksOracle = map[string]oracleFeature{
	"clicks_1h":       {"count", hour},
	"clicks_lifetime": {"count", 0},
}

// --- the fixture: a handler on a real HTTP server.

type fixture struct {
	url      string
	reader   *memReader
	reg      *prometheus.Registry
	ready    atomic.Bool
	logs     *lockedBuffer
	nowCalls atomic.Int64
	txn      *tiling.View
	clicks   *tiling.View
}

func newFixture(t *testing.T, cfg Config) *fixture { return newFixtureWith(t, cfg, 1) }

// newFixtureWith reads up to parallel keys of a POST at once.
func newFixtureWith(t *testing.T, cfg Config, parallel int) *fixture {
	t.Helper()
	f := &fixture{reader: newMemReader(), reg: prometheus.NewRegistry(), logs: &lockedBuffer{}}
	f.txn, f.clicks = txnView(t), clicksView(t)
	f.reader.load(t, f.txn, txnEvents())
	f.reader.load(t, f.clicks, clickEvents())
	f.ready.Store(true)
	h := NewHandler(cfg, Options{
		Views:      []*tiling.View{f.txn, f.clicks},
		Reader:     f.reader,
		Watermarks: fixedWatermarks{"txn": testNowMs - 1500},
		Ready:      f.ready.Load,
		Gatherer:   f.reg,
		Metrics:    NewMetrics(f.reg),
		Logger:     slog.New(slog.NewTextHandler(f.logs, nil)),

		ReadParallelism: parallel,
		Now: func() time.Time {
			// Each call moves the clock, so a request that read it twice
			// would serve two different times.
			n := f.nowCalls.Add(1)
			return testNow.Add(time.Duration(n-1) * time.Hour * 24 * 365)
		},
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

// resultJSON is a decoded result with raw values.
type resultJSON struct {
	View     string                     `json:"view"`
	Key      string                     `json:"key"`
	Features map[string]json.RawMessage `json:"features"`
	Metadata map[string]json.RawMessage `json:"metadata"`
}

// checkResult compares a result with the oracle at time t.
func checkResult(t *testing.T, got resultJSON, v *tiling.View, key string, tms int64, want map[string]oracleFeature, evs []event) {
	t.Helper()
	if got.View != v.Name || got.Key != key {
		t.Errorf("result is for %s/%s, want %s/%s", got.View, got.Key, v.Name, key)
	}
	if len(got.Features) != len(v.Features) {
		t.Errorf("%s/%s: %d features, want %d: %v", v.Name, key, len(got.Features), len(v.Features), got.Features)
	}
	for name, of := range want {
		w := oracle(evs, key, tms, v.Granularity, v.LifetimeStart, of)
		if g := string(got.Features[name]); g != w {
			t.Errorf("%s/%s %s = %s, want %s", v.Name, key, name, g, w)
		}
	}
}

func decodeResult(t *testing.T, body []byte) resultJSON {
	t.Helper()
	var r resultJSON
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return r
}

func TestGetFeaturesMatchesOracle(t *testing.T) {
	f := newFixture(t, DefaultConfig())
	bw := testNowMs - 3*day
	bw = alignDown(bw, minute)
	f.reader.setBatchWatermark("txn", "u1", bw)

	code, hdr, body := call(t, "GET", f.url+"/v1/features/txn/u1", "")
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	got := decodeResult(t, body)
	checkResult(t, got, f.txn, "u1", testNowMs, txnOracle, txnEvents())

	// Spot checks, written out so a broken oracle cannot hide a bug.
	for name, want := range map[string]string{
		"txn_count_7d":  "9", // start7d … current tile; not too-old, not future
		"amount_min_1h": "-3.25",
		"merchant_last": `"m3"`,
	} {
		if g := string(got.Features[name]); g != want {
			t.Errorf("%s = %s, want %s", name, g, want)
		}
	}
	// 2+0.1+0.2+12.5−50+7.75−3.25+5, summed exactly then rounded once.
	if g, want := string(got.Features["amount_sum_7d"]), "-25.7"; g != want {
		t.Errorf("amount_sum_7d = %s, want %s", g, want)
	}
	// Features keep View.Features order.
	last := -1
	for _, ft := range f.txn.Features {
		i := strings.Index(string(body), `"`+ft.Name+`":`)
		if i < last {
			t.Errorf("feature %s out of View.Features order in %s", ft.Name, body)
		}
		last = i
	}
	// Metadata.
	wantMeta := map[string]string{
		"served_at":               `"` + testServedAt + `"`,
		"batch_watermark":         `"` + time.UnixMilli(bw).UTC().Format("2006-01-02T15:04:05.000Z") + `"`,
		"stream_watermark":        `"2026-11-26T07:59:58.623Z"`,
		"batch_staleness_seconds": strconv.FormatFloat(float64(testNowMs-bw)/1000, 'f', -1, 64),
	}
	for k, w := range wantMeta {
		if g := string(got.Metadata[k]); g != w {
			t.Errorf("metadata %s = %s, want %s", k, g, w)
		}
	}
	if len(got.Metadata) != len(wantMeta) {
		t.Errorf("metadata %v", got.Metadata)
	}
}

func TestGetEmptyKeyIsZeroAndNull(t *testing.T) {
	f := newFixture(t, DefaultConfig())
	code, _, body := call(t, "GET", f.url+"/v1/features/txn/nobody", "")
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	got := decodeResult(t, body)
	want := map[string]string{
		"amount_sum_7d": "0", "txn_count_7d": "0",
		"amount_min_1h": "null", "amount_mean_1d": "null", "merchant_last": "null",
	}
	for k, w := range want {
		if g := string(got.Features[k]); g != w {
			t.Errorf("%s = %s, want %s", k, g, w)
		}
	}
	if g := string(got.Metadata["batch_watermark"]); g != "null" {
		t.Errorf("batch_watermark = %s, want null", g)
	}
	if g := string(got.Metadata["served_at"]); g != `"`+testServedAt+`"` {
		t.Errorf("served_at = %s", g)
	}
}

func TestGetKeyWithSlashesAndEscapes(t *testing.T) {
	f := newFixture(t, DefaultConfig())
	f.reader.load(t, f.clicks, []event{{key: "a/b c", ts: testNowMs - minute}})
	code, _, body := call(t, "GET", f.url+"/v1/features/clicks/a%2Fb%20c", "")
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	got := decodeResult(t, body)
	if got.Key != "a/b c" || string(got.Features["clicks_1h"]) != "1" {
		t.Errorf("got %s", body)
	}
}

func TestPostFeaturesInOrderAtOneTime(t *testing.T) {
	for _, parallel := range []int{1, 8} {
		t.Run(fmt.Sprintf("%d at once", parallel), func(t *testing.T) { testPostInOrder(t, parallel) })
	}
}

func testPostInOrder(t *testing.T, parallel int) {
	f := newFixtureWith(t, DefaultConfig(), parallel)
	reqs := []struct{ view, key string }{
		{"txn", "u1"}, {"clicks", "u1"}, {"txn", "nobody"}, {"txn", "u2"}, {"txn", "u1"},
	}
	var sb strings.Builder
	sb.WriteString(`{"requests":[`)
	for i, r := range reqs {
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, `{"view":%q,"key":%q}`, r.view, r.key)
	}
	sb.WriteString("]}")

	before := f.nowCalls.Load()
	code, _, body := call(t, "POST", f.url+"/v1/features", sb.String())
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	if n := f.nowCalls.Load() - before; n != 1 {
		t.Errorf("Now called %d times for one request, want 1", n)
	}
	var resp struct {
		Results []resultJSON `json:"results"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Results) != len(reqs) {
		t.Fatalf("%d results for %d requests", len(resp.Results), len(reqs))
	}
	for i, r := range reqs {
		got := resp.Results[i]
		switch r.view {
		case "txn":
			checkResult(t, got, f.txn, r.key, testNowMs, txnOracle, txnEvents())
			if g := string(got.Metadata["stream_watermark"]); g != `"2026-11-26T07:59:58.623Z"` {
				t.Errorf("result %d stream_watermark = %s", i, g)
			}
		case "clicks":
			checkResult(t, got, f.clicks, r.key, testNowMs, clicksOracle, clickEvents())
			if g := string(got.Metadata["stream_watermark"]); g != "null" {
				t.Errorf("result %d stream_watermark = %s, want null", i, g)
			}
		}
		if g := string(got.Metadata["served_at"]); g != `"`+testServedAt+`"` {
			t.Errorf("result %d served_at = %s", i, g)
		}
	}
	if g := string(resp.Results[1].Features["clicks_lifetime"]); g != "3" {
		t.Errorf("clicks_lifetime = %s, want 3", g)
	}
}

func TestViews(t *testing.T) {
	f := newFixture(t, DefaultConfig())
	code, _, body := call(t, "GET", f.url+"/v1/views", "")
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	want := `{"views":[` +
		`{"name":"txn","topic":"payments","entity":"user","timestamp":"ts","granularity":"1m","lifetime_start":null,"features":[` +
		`{"name":"amount_sum_7d","function":"sum","column":"amount","window":"7d"},` +
		`{"name":"txn_count_7d","function":"count","column":"","window":"7d"},` +
		`{"name":"amount_min_1h","function":"min","column":"amount","window":"1h"},` +
		`{"name":"amount_mean_1d","function":"mean","column":"amount","window":"1d"},` +
		`{"name":"merchant_last","function":"last","column":"merchant","window":"lifetime"}]},` +
		`{"name":"clicks","topic":"web","entity":"user","timestamp":"ts","granularity":"5m","lifetime_start":"2026-01-01T00:00:00.000Z","features":[` +
		`{"name":"clicks_1h","function":"count","column":"","window":"1h"},` +
		`{"name":"clicks_lifetime","function":"count","column":"","window":"lifetime"}]}]}` + "\n"
	if string(body) != want {
		t.Errorf("got  %s\nwant %s", body, want)
	}
}

func TestErrors(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxBatch = 3
	cfg.MaxBodyBytes = 512
	cfg.MaxKeyBytes = 16
	f := newFixture(t, cfg)
	long := strings.Repeat("k", 17)
	batch := func(items ...string) string { return `{"requests":[` + strings.Join(items, ",") + `]}` }
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		contains                 string
		allow                    string
	}{
		{"an unknown view is named", "GET", "/v1/features/nope/u1", "", 404, `"nope"`, ""},
		{"an unknown route is 404", "GET", "/v2/whatever", "", 404, "no route GET /v2/whatever", ""},
		{"the root is 404", "GET", "/", "", 404, "no route", ""},
		{"a key is required", "GET", "/v1/features/txn", "", 400, "missing key", ""},
		{"an empty key is refused", "GET", "/v1/features/txn/", "", 400, "empty key", ""},
		{"a long key is refused", "GET", "/v1/features/txn/" + long, "", 400, "17 bytes, over the limit of 16", ""},
		{"a key of invalid UTF-8 is refused", "GET", "/v1/features/txn/%ff", "", 400, "UTF-8", ""},
		{"POST on a GET route is 405", "POST", "/v1/features/txn/u1", "", 405, "use GET, HEAD", "GET, HEAD"},
		{"GET on the batch route is 405", "GET", "/v1/features", "", 405, "use POST", "POST"},
		{"DELETE on views is 405", "DELETE", "/v1/views", "", 405, "DELETE", "GET, HEAD"},
		{"PUT on healthz is 405", "PUT", "/healthz", "", 405, "PUT", "GET, HEAD"},
		{"malformed JSON is 400", "POST", "/v1/features", `{"requests":[`, 400, "malformed JSON", ""},
		{"bad syntax is 400", "POST", "/v1/features", `{"requests":[}`, 400, "malformed JSON", ""},
		{"an empty body is 400", "POST", "/v1/features", ``, 400, "empty body", ""},
		{"trailing data is 400", "POST", "/v1/features", batch(`{"view":"txn","key":"u1"}`) + `{}`, 400, "more than one value", ""},
		{"a wrong type is 400", "POST", "/v1/features", `{"requests":[{"view":"txn","key":7}]}`, 400, `field "requests.key" is a JSON number, not a string`, ""},
		{"an array body is 400 in JSON's words", "POST", "/v1/features", `[1,2]`, 400, `the body is a JSON array, not an object; want {"requests"`, ""},
		{"a requests number is 400 in JSON's words", "POST", "/v1/features", `{"requests":5}`, 400, `field "requests" is a JSON number, not an array`, ""},
		{"a request number is 400 in JSON's words", "POST", "/v1/features", `{"requests":[5]}`, 400, `field "requests" is a JSON number, not an object`, ""},
		{"an empty requests list is 400", "POST", "/v1/features", batch(), 400, "empty requests list", ""},
		{"no requests field is 400", "POST", "/v1/features", `{}`, 400, "empty requests list", ""},
		{"an unknown top-level field is 400", "POST", "/v1/features", `{"requests":[{"view":"txn","key":"u1"}],"at":1}`, 400, `unknown field "at"`, ""},
		{"an unknown request field is 400", "POST", "/v1/features", batch(`{"view":"txn","key":"u1","entity":"x"}`), 400, `unknown field "entity"`, ""},
		{"a missing view field is 400", "POST", "/v1/features", batch(`{"view":"txn","key":"u1"}`, `{"key":"u1"}`), 400, "requests[1]: missing view", ""},
		{"a missing key is 400", "POST", "/v1/features", batch(`{"view":"txn"}`), 400, "requests[0]: empty key", ""},
		{"a long key in a batch is 400", "POST", "/v1/features", batch(`{"view":"txn","key":"` + long + `"}`), 400, "requests[0]: key is 17 bytes", ""},
		{"an unknown view in a batch is 404", "POST", "/v1/features", batch(`{"view":"txn","key":"u1"}`, `{"view":"nope","key":"u1"}`), 404, `requests[1]: unknown view "nope"; served views: clicks, txn`, ""},
		{"too many requests are 413", "POST", "/v1/features", batch(`{"view":"txn","key":"a"}`, `{"view":"txn","key":"b"}`, `{"view":"txn","key":"c"}`, `{"view":"txn","key":"d"}`), 413, "4 requests, over the limit of 3", ""},
		{"a big body is 413", "POST", "/v1/features", batch(`{"view":"txn","key":"` + strings.Repeat("x", 600) + `"}`), 413, "over the limit of 512 bytes", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.reader.mu.Lock()
			reads := f.reader.reads
			f.reader.mu.Unlock()
			code, hdr, body := call(t, tc.method, f.url+tc.path, tc.body)
			if code != tc.code {
				t.Fatalf("status %d, want %d: %s", code, tc.code, body)
			}
			if ct := hdr.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if msg := errorMessage(t, body); !strings.Contains(msg, tc.contains) {
				t.Errorf("error %q does not contain %q", msg, tc.contains)
			} else if strings.Contains(msg, "serving.") {
				t.Errorf("error %q names a Go type", msg)
			}
			if tc.allow != "" && hdr.Get("Allow") != tc.allow {
				t.Errorf("Allow %q, want %q", hdr.Get("Allow"), tc.allow)
			}
			f.reader.mu.Lock()
			defer f.reader.mu.Unlock()
			if f.reader.reads != reads {
				t.Errorf("a refused request read the store")
			}
		})
	}
}

func TestStoreErrorIs500AndLoggedOnce(t *testing.T) {
	for _, parallel := range []int{1, 8} {
		t.Run(fmt.Sprintf("%d at once", parallel), func(t *testing.T) { testStoreError(t, parallel) })
	}
}

// TestUnavailableStoreIs503: DynamoDB throttling or down (and no fresh
// cached snapshot) answers 503 with Retry-After, never a stale value.
func TestUnavailableStoreIs503(t *testing.T) {
	f := newFixtureWith(t, DefaultConfig(), 4)
	down := fmt.Errorf("read: %w", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")})
	f.reader.setFault("gone", func(context.Context) error { return down })
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/v1/features/txn/gone", ""},
		{"POST", "/v1/features", `{"requests":[{"view":"txn","key":"u1"},{"view":"txn","key":"gone"},{"view":"txn","key":"u2"}]}`},
	} {
		code, hdr, body := call(t, tc.method, f.url+tc.path, tc.body)
		if code != 503 || hdr.Get("Retry-After") == "" || !strings.Contains(errorMessage(t, body), "unavailable") {
			t.Errorf("%s %s: %d %s (Retry-After %q), want 503 naming the store unavailable", tc.method, tc.path, code, body, hdr.Get("Retry-After"))
		}
	}
}

func testStoreError(t *testing.T, parallel int) {
	f := newFixtureWith(t, DefaultConfig(), parallel)
	f.reader.setFault("broken", func(context.Context) error { return errStore })
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/v1/features/txn/broken", ""},
		{"POST", "/v1/features", `{"requests":[{"view":"txn","key":"u1"},{"view":"txn","key":"broken"}]}`},
	} {
		before := strings.Count(f.logs.String(), "checksum mismatch")
		code, _, body := call(t, tc.method, f.url+tc.path, tc.body)
		if code != 500 {
			t.Fatalf("%s %s: status %d: %s", tc.method, tc.path, code, body)
		}
		msg := errorMessage(t, body)
		if strings.Contains(msg, "pebble") || strings.Contains(msg, "/var/lib") {
			t.Errorf("error leaks internals: %q", msg)
		}
		if n := strings.Count(f.logs.String(), "checksum mismatch") - before; n != 1 {
			t.Errorf("store error logged %d times, want once:\n%s", n, f.logs)
		}
	}
}

func TestTimeoutIs504(t *testing.T) {
	cfg := DefaultConfig()
	cfg.RequestTimeout = 20 * time.Millisecond
	f := newFixture(t, cfg)
	f.reader.setFault("slow", func(ctx context.Context) error {
		<-ctx.Done()
		return fmt.Errorf("read: %w", ctx.Err())
	})
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/v1/features/txn/slow", ""},
		{"POST", "/v1/features", `{"requests":[{"view":"txn","key":"slow"},{"view":"txn","key":"u1"}]}`},
	} {
		code, _, body := call(t, tc.method, f.url+tc.path, tc.body)
		if code != 504 {
			t.Fatalf("%s: status %d: %s", tc.method, code, body)
		}
		if msg := errorMessage(t, body); !strings.Contains(msg, "timed out") {
			t.Errorf("error %q", msg)
		}
	}
	if strings.Contains(f.logs.String(), "read failed") {
		t.Errorf("a timeout is not a store failure to log:\n%s", f.logs)
	}
}

func TestPanicIs500AndServingGoesOn(t *testing.T) {
	f := newFixture(t, DefaultConfig())
	f.reader.setFault("boom", func(context.Context) error { panic("reader exploded") })
	code, _, body := call(t, "GET", f.url+"/v1/features/txn/boom", "")
	if code != 500 {
		t.Fatalf("status %d: %s", code, body)
	}
	if msg := errorMessage(t, body); strings.Contains(msg, "exploded") {
		t.Errorf("error leaks the panic: %q", msg)
	}
	if logs := f.logs.String(); !strings.Contains(logs, "reader exploded") || !strings.Contains(logs, "stack") {
		t.Errorf("panic not logged with its stack:\n%s", logs)
	}
	if code, _, body := call(t, "GET", f.url+"/v1/features/txn/u1", ""); code != 200 {
		t.Fatalf("after a panic: status %d: %s", code, body)
	}
}

func TestReadiness(t *testing.T) {
	f := newFixture(t, DefaultConfig())
	f.ready.Store(false)
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/readyz", ""},
		{"GET", "/v1/features/txn/u1", ""},
		{"POST", "/v1/features", `{"requests":[{"view":"txn","key":"u1"}]}`},
	} {
		code, _, body := call(t, tc.method, f.url+tc.path, tc.body)
		if code != 503 {
			t.Errorf("%s %s before ready: status %d: %s", tc.method, tc.path, code, body)
		}
		if msg := errorMessage(t, body); !strings.HasPrefix(msg, "not ready: ") {
			t.Errorf("error %q", msg)
		}
	}
	// Health and metadata do not wait for readiness.
	if code, _, body := call(t, "GET", f.url+"/healthz", ""); code != 200 || string(body) != `{"status":"ok"}`+"\n" {
		t.Errorf("healthz: %d %s", code, body)
	}
	if code, _, _ := call(t, "GET", f.url+"/v1/views", ""); code != 200 {
		t.Errorf("views before ready: %d", code)
	}

	f.ready.Store(true)
	if code, _, body := call(t, "GET", f.url+"/readyz", ""); code != 200 || string(body) != `{"status":"ready"}`+"\n" {
		t.Errorf("readyz after ready: %d %s", code, body)
	}
	if code, _, body := call(t, "GET", f.url+"/v1/features/txn/u1", ""); code != 200 {
		t.Errorf("features after ready: %d %s", code, body)
	}
}

func TestMetricsExposed(t *testing.T) {
	f := newFixture(t, DefaultConfig())
	call(t, "GET", f.url+"/v1/features/txn/u1", "")
	call(t, "POST", f.url+"/v1/features", `{"requests":[{"view":"txn","key":"u1"},{"view":"clicks","key":"u1"}]}`)
	call(t, "GET", f.url+"/v1/features/nope/u1", "")
	call(t, "GET", f.url+"/nowhere", "")
	code, _, body := call(t, "GET", f.url+"/metrics", "")
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	text := string(body)
	for _, want := range []string{
		`tilestream_serving_request_duration_seconds_bucket{code="200",route="/v1/features/{view}/{key...}",le="5e-05"}`,
		`tilestream_serving_request_duration_seconds_count{code="200",route="/v1/features"} 1`,
		`tilestream_serving_requests_total{code="200",route="/v1/features/{view}/{key...}"} 1`,
		`tilestream_serving_requests_total{code="404",route="/v1/features/{view}/{key...}"} 1`,
		`tilestream_serving_requests_total{code="404",route="other"} 1`,
		`tilestream_serving_keys_total 3`,
		`tilestream_serving_records_read_count 3`,
		`tilestream_serving_records_read_bucket{le="+Inf"} 3`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", text)
	}
}

func TestServerRunShutsDownOnCancel(t *testing.T) {
	reader := newMemReader()
	release := make(chan struct{})
	started := make(chan struct{})
	reader.setFault("held", func(ctx context.Context) error {
		close(started)
		<-release
		return nil
	})
	v := clicksView(t)
	h := NewHandler(DefaultConfig(), Options{Views: []*tiling.View{v}, Reader: reader})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	s := NewServer(DefaultConfig(), h, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln) }()

	if code, _, _ := call(t, "GET", url+"/healthz", ""); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	// A request in flight when the context ends is answered.
	inflight := make(chan int, 1)
	go func() {
		resp, err := http.Get(url + "/v1/features/clicks/held")
		if err != nil {
			inflight <- -1
			return
		}
		resp.Body.Close()
		inflight <- resp.StatusCode
	}()
	<-started
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Run returned before the request in flight finished: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if code := <-inflight; code != 200 {
		t.Errorf("request in flight: %d", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("still accepting after Run returned")
	}
}

// TestServerWriteTimeout: the server cuts an answer written after
// Config.WriteTimeout (the client gets no answer at all), and delivers one
// written before it: a handler that waits must answer within it.
func TestServerWriteTimeout(t *testing.T) {
	if got := (Config{}).WriteTimeout(); got != 10*time.Second {
		t.Errorf("default write timeout %v, want 10s (2 × the request timeout)", got)
	}
	cfg := Config{RequestTimeout: 150 * time.Millisecond}
	wt := cfg.WriteTimeout()
	if wt != 300*time.Millisecond {
		t.Fatalf("write timeout %v, want 300ms", wt)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(cfg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("wait"))
		time.Sleep(d)
		w.Write([]byte("ok")) //nolint:errcheck // the test reads the answer
	}), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln) }()
	defer func() {
		cancel()
		<-done
	}()
	get := func(wait time.Duration) error {
		resp, err := http.Get("http://" + ln.Addr().String() + "/?wait=" + wait.String())
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	if err := get(wt - 200*time.Millisecond); err != nil {
		t.Errorf("an answer written before the write timeout: %v", err)
	}
	if err := get(wt + 200*time.Millisecond); err == nil {
		t.Errorf("an answer written after the write timeout (%v) arrived", wt)
	}
}

func TestServerRunReportsAListenerFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	s := NewServer(DefaultConfig(), http.NotFoundHandler(), nil)
	if err := s.Run(context.Background(), ln); err == nil {
		t.Fatal("Run on a closed listener returned nil")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("default config: %v", err)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero config (all defaults): %v", err)
	}
	err := Config{Listen: "nohost", MaxBatch: -1, MaxBodyBytes: -1, MaxKeyBytes: -1, RequestTimeout: -time.Second}.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"listen", "max batch", "max body bytes", "max key bytes", "request timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

func TestMsTimeFormat(t *testing.T) {
	for _, tc := range []struct {
		ms   int64
		want string
	}{
		{tiling.MinTime, "null"},
		{0, `"1970-01-01T00:00:00.000Z"`},
		{testNowMs, `"` + testServedAt + `"`},
		{-1, `"1969-12-31T23:59:59.999Z"`},
	} {
		b, err := json.Marshal(msTime(tc.ms))
		if err != nil || string(b) != tc.want {
			t.Errorf("msTime(%d) = %s, %v; want %s", tc.ms, b, err, tc.want)
		}
	}
}

// TestFeaturesEncodingMatchesEncodingJSON checks that the ordered features
// object writes every value as encoding/json would, so floats round-trip.
func TestFeaturesEncodingMatchesEncodingJSON(t *testing.T) {
	vals := []any{nil, uint64(0), uint64(math.MaxUint64), 0.1 + 0.2, -25.7, 1e21, 1e-7, math.SmallestNonzeroFloat64,
		math.MaxFloat64, -0.0, json.RawMessage(`{"a":[1,"<b>"]}`), json.RawMessage(`"m3"`)}
	names := make([]string, len(vals))
	for i := range vals {
		names[i] = fmt.Sprintf("f%d<&>\u2028", i)
	}
	got, err := json.Marshal(features{names: memberNames(names), vals: vals})
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]json.RawMessage
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatalf("%s: %v", got, err)
	}
	for i, v := range vals {
		want, _ := json.Marshal(v)
		if g := string(back[names[i]]); g != string(want) {
			t.Errorf("value %d: %s, want %s", i, g, want)
		}
		if f, ok := v.(float64); ok {
			p, err := strconv.ParseFloat(string(back[names[i]]), 64)
			if err != nil || math.Float64bits(p) != math.Float64bits(f) && f != 0 {
				t.Errorf("value %d: %v does not round-trip: %v %v", i, f, p, err)
			}
		}
	}
}

// TestPanicAfterWritingAbortsTheConnection: a panic after the status is out
// cannot become a 500, so the client must see a broken response instead.
func TestPanicAfterWritingAbortsTheConnection(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := &handler{m: NewMetrics(reg), log: slog.New(slog.DiscardHandler)}
	mux := http.NewServeMux()
	mux.Handle("/", h.instrument("test", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(200)
		w.Write([]byte("partial"))
		panic("late")
	}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("a response cut by a panic read as complete")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "tilestream_serving_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" && l.GetValue() == "500" {
					found = true
				}
			}
		}
	}
	if !found {
		t.Error("the aborted request is not counted as a 500")
	}
}

// TestHealBodyErrors: POST /v1/heal refuses a body that is not the object it
// wants with a 400 in JSON's words (it named the Go type serving.healRequest),
// without healing; an empty body heals every view, a named view that one.
func TestHealBodyErrors(t *testing.T) {
	var mu sync.Mutex
	var healed []string
	h := NewHandler(DefaultConfig(), Options{
		Views:  []*tiling.View{txnView(t), clicksView(t)},
		Reader: newMemReader(),
		Heal: func(_ context.Context, view string, full bool) (any, error) {
			mu.Lock()
			defer mu.Unlock()
			healed = append(healed, fmt.Sprintf("%s/%v", view, full))
			return map[string]string{"view": view}, nil
		},
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	const want = `the body must be a JSON object like {"view": "txn", "full": false}`
	for _, tc := range []struct {
		name, body string
		code       int
		contains   []string
		healed     []string
	}{
		{"an array is 400", `[1,2]`, 400, []string{"the body is a JSON array, not an object", want}, nil},
		{"a string is 400", `"txn"`, 400, []string{"the body is a JSON string, not an object", want}, nil},
		{"a numeric view is 400", `{"view":5}`, 400, []string{`field "view" is a JSON number, not a string`, want}, nil},
		{"a string full is 400", `{"view":"txn","full":"yes"}`, 400, []string{`field "full" is a JSON string, not true or false`, want}, nil},
		{"an unknown field is 400", `{"views":["txn"]}`, 400, []string{`unknown field "views"`, want}, nil},
		{"bad syntax is 400", `{"view":`, 400, []string{"unexpected end of input", want}, nil},
		{"an unknown view is 404", `{"view":"nope"}`, 404, []string{`unknown view "nope"`}, nil},
		{"an empty body heals every view", ``, 200, nil, []string{"txn/false", "clicks/false"}},
		{"a view and full", `{"view":"clicks","full":true}`, 200, nil, []string{"clicks/true"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			healed = nil
			mu.Unlock()
			code, _, body := call(t, "POST", srv.URL+"/v1/heal", tc.body)
			if code != tc.code {
				t.Fatalf("status %d, want %d: %s", code, tc.code, body)
			}
			if code != 200 {
				msg := errorMessage(t, body)
				for _, c := range tc.contains {
					if !strings.Contains(msg, c) {
						t.Errorf("error %q does not contain %q", msg, c)
					}
				}
				if strings.Contains(msg, "serving.") || strings.Contains(msg, "healRequest") {
					t.Errorf("error %q names a Go type", msg)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(healed, tc.healed) {
				t.Errorf("healed %q, want %q", healed, tc.healed)
			}
		})
	}
}
