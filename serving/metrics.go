package serving

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the endpoint's Prometheus metrics. Build them with NewMetrics
// and share them between handlers only if they serve one logical endpoint.
type Metrics struct {
	// duration and requests are labelled by route (the mux pattern's path,
	// or "other" for unknown routes) and code (HTTP status).
	duration *prometheus.HistogramVec
	requests *prometheus.CounterVec
	keys     prometheus.Counter
	records  prometheus.Histogram
}

// durationBuckets resolve the sub-millisecond range finely: the target is a
// p99 of 1ms per key read from the local store.
var durationBuckets = []float64{
	.00005, .0001, .00025, .0005, .00075,
	.001, .0015, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10,
}

// NewMetrics builds the serving metrics and registers them with reg. A nil
// reg leaves them unregistered (for tests and tools). It panics if a metric
// of the same name is already registered with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "tilestream",
			Subsystem: "serving",
			Name:      "request_duration_seconds",
			Help:      "Time to answer an HTTP request, from routing to the last byte handed to the connection.",
			Buckets:   durationBuckets,
		}, []string{"route", "code"}),
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tilestream",
			Subsystem: "serving",
			Name:      "requests_total",
			Help:      "HTTP requests answered.",
		}, []string{"route", "code"}),
		keys: f.NewCounter(prometheus.CounterOpts{
			Namespace: "tilestream",
			Subsystem: "serving",
			Name:      "keys_total",
			Help:      "Entity keys whose features were served in a successful response.",
		}),
		records: f.NewHistogram(prometheus.HistogramOpts{
			Namespace: "tilestream",
			Subsystem: "serving",
			Name:      "records_read",
			Help:      "Stored records read from the online store per key served.",
			Buckets:   []float64{0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024},
		}),
	}
}

// codeLabel returns the status code as a label value without allocating for
// the codes this endpoint writes.
func codeLabel(code int) string {
	switch code {
	case 200:
		return "200"
	case 400:
		return "400"
	case 404:
		return "404"
	case 405:
		return "405"
	case 413:
		return "413"
	case 499:
		return "499"
	case 500:
		return "500"
	case 503:
		return "503"
	case 504:
		return "504"
	}
	return strconv.Itoa(code)
}
