package dynamo

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the table's Prometheus metrics. Capacity units are computed
// from item sizes (WriteUnits, ReadUnits), as DynamoDB bills them, so they
// are the same against dynalite and DynamoDB.
type Metrics struct {
	requests *prometheus.CounterVec // op
	units    *prometheus.CounterVec // op, kind (read, write)
	errors   *prometheus.CounterVec // op, reason
	retries  prometheus.Counter     // unprocessed items resent
	duration *prometheus.HistogramVec

	// Totals for benchmarks and tests (also counted without a registry).
	Stats Stats
}

// Stats are running totals of the table's traffic.
type Stats struct {
	Requests    atomic.Int64 // every API call (retries by the SDK count once)
	WriteReqs   atomic.Int64 // PutItem, DeleteItem and BatchWriteItem calls
	ReadReqs    atomic.Int64 // GetItem, Query and BatchGetItem calls
	WriteUnits  atomic.Int64
	ReadUnits   atomic.Int64
	ItemsPut    atomic.Int64 // items written (PutItem and BatchWriteItem puts)
	ItemsRead   atomic.Int64 // items returned (GetItem, Query and BatchGetItem)
	Conditional atomic.Int64 // failed conditions
	Throttled   atomic.Int64
	Unprocessed atomic.Int64 // items resent because the server did not process them
}

// NewMetrics registers the table's metrics with reg (nil: counted, not
// exported).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tilestream_dynamodb_requests_total",
			Help: "DynamoDB API calls by operation (the SDK's own retries count once).",
		}, []string{"op"}),
		units: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tilestream_dynamodb_capacity_units_total",
			Help: "DynamoDB capacity units consumed by operation and kind (read: strongly consistent, 4 KB each; write: 1 KB each), computed from item sizes.",
		}, []string{"op", "kind"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tilestream_dynamodb_errors_total",
			Help: "Failed DynamoDB calls by operation and reason: conditional (a condition did not hold: expected under contention), throttled, unavailable (network, timeouts, 5xx), canceled, other.",
		}, []string{"op", "reason"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tilestream_dynamodb_unprocessed_retries_total",
			Help: "Items of BatchWriteItem and BatchGetItem calls the server left unprocessed and tilestream sent again after a backoff.",
		}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tilestream_dynamodb_request_duration_seconds",
			Help:    "Time of one DynamoDB call, the SDK's retries included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"op"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.units, m.errors, m.retries, m.duration)
	}
	return m
}

func (m *Metrics) request(op string, write bool) {
	m.requests.WithLabelValues(op).Inc()
	m.Stats.Requests.Add(1)
	if write {
		m.Stats.WriteReqs.Add(1)
	} else {
		m.Stats.ReadReqs.Add(1)
	}
}

func (m *Metrics) wrote(op string, units int64) {
	m.units.WithLabelValues(op, "write").Add(float64(units))
	m.Stats.WriteUnits.Add(units)
}

func (m *Metrics) read(op string, units int64) {
	m.units.WithLabelValues(op, "read").Add(float64(units))
	m.Stats.ReadUnits.Add(units)
}

func (m *Metrics) failed(op string, err error) {
	r := Reason(err)
	m.errors.WithLabelValues(op, r).Inc()
	switch r {
	case "conditional":
		m.Stats.Conditional.Add(1)
	case "throttled":
		m.Stats.Throttled.Add(1)
	}
}
