package benchmarks

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tilestream/tilestream/serving"
	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

type noWatermarks struct{}

func (noWatermarks) StreamWatermark(string) (int64, bool) { return 0, false }

// serveOneKey ingests events for one key over span and serves it over real
// HTTP, reporting p50/p99 latency of GET /v1/features/txn/u0.
func serveOneKey(b *testing.B, events int, span int64) {
	c := newCluster(b, 8)
	produce(b, c.ListenAddrs(), 8, events, 1, span)
	v := demoView(b)
	store := openStore(b)
	ingestAll(b, c.ListenAddrs(), "bench", v, store)

	h := serving.NewHandler(serving.DefaultConfig(), serving.Options{
		Views:      []*tiling.View{v},
		Reader:     store,
		Watermarks: noWatermarks{},
		Ready:      func() bool { return true },
		Gatherer:   prometheus.NewRegistry(),
		Metrics:    serving.NewMetrics(prometheus.NewRegistry()),
		Logger:     quiet(),
	})
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := srv.Client()
	url := srv.URL + "/v1/features/txn/u0"
	get := func() {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	get() // warm the connection
	var lat []time.Duration
	for b.Loop() {
		t0 := time.Now()
		get()
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	records := recordsRead(b, store, v)
	b.ReportMetric(float64(records), "records/read")
}

func recordsRead(b *testing.B, store *state.Store, v *tiling.View) int {
	kd, err := store.ReadKey(context.Background(), v, "u0", time.Now().UnixMilli())
	if err != nil {
		b.Fatal(err)
	}
	return kd.RecordsRead
}

// BenchmarkServeOneKey serves one key whose events span 7 days of stream
// records (no heal yet: every read walks the stream records in the widest
// window).
func BenchmarkServeOneKey(b *testing.B) {
	for _, n := range []int{100, 10_000} {
		if testing.Short() && n > 100 {
			continue
		}
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) { serveOneKey(b, n, 7*tiling.Day) })
	}
}
