package serving

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tilestream/tilestream/tiling"
)

// benchSetup loads key "u1" of the txn view (minute tiles) with one event a
// minute over the 7 days before testNow: 10,080 tiles in 168 records.
func benchSetup(b *testing.B) (http.Handler, *tiling.View, *memReader) {
	v := txnView(b)
	r := newMemReader()
	var evs []event
	start := alignDown(testNowMs-7*24*time.Hour.Milliseconds(), minute)
	for ts := start; ts <= testNowMs; ts += minute {
		evs = append(evs, event{key: "u1", ts: ts + 7, amount: num(float64(ts%997) / 4), merchant: "m"})
	}
	r.load(b, v, evs)
	h := NewHandler(DefaultConfig(), Options{
		Views:   []*tiling.View{v},
		Reader:  r,
		Metrics: NewMetrics(nil),
		Now:     func() time.Time { return testNow },
	})
	return h, v, r
}

// BenchmarkServeOneKey is GET /v1/features/txn/u1 through the handler: a
// 7-day window of minute tiles, plus 1h, 1d and lifetime features.
func BenchmarkServeOneKey(b *testing.B) {
	h, _, _ := benchSetup(b)
	req := httptest.NewRequest("GET", "/v1/features/txn/u1", nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkServeBatch10 is POST /v1/features with 10 keys (the same key
// ten times, so each is a full 7-day read); divide by 10 for a per-key cost.
func BenchmarkServeBatch10(b *testing.B) {
	h, _, _ := benchSetup(b)
	body := `{"requests":[` + strings.TrimSuffix(strings.Repeat(`{"view":"txn","key":"u1"},`, 10), ",") + `]}`
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("POST", "/v1/features", strings.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkEvaluateOneKey is the read and evaluation alone, without HTTP or
// JSON: what BenchmarkServeOneKey costs beyond it is serving's overhead.
func BenchmarkEvaluateOneKey(b *testing.B) {
	_, v, r := benchSetup(b)
	t := testNowMs
	b.ReportAllocs()
	for b.Loop() {
		kd, err := r.ReadKey(b.Context(), v, "u1", t)
		if err != nil {
			b.Fatal(err)
		}
		v.Evaluate(t, kd.Records)
	}
}

// BenchmarkServeOverhead is GET for a key with a single event: the fixed
// cost of routing, metrics, the read call and JSON, nearly without tiles.
func BenchmarkServeOverhead(b *testing.B) {
	v := txnView(b)
	r := newMemReader()
	r.load(b, v, []event{{key: "u1", ts: testNowMs - minute, amount: num(2.5), merchant: "m"}})
	h := NewHandler(DefaultConfig(), Options{
		Views:   []*tiling.View{v},
		Reader:  r,
		Metrics: NewMetrics(nil),
		Now:     func() time.Time { return testNow },
	})
	req := httptest.NewRequest("GET", "/v1/features/txn/u1", nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}
