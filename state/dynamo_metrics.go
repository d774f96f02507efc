package state

import "github.com/prometheus/client_golang/prometheus"

// dynMetrics are the DynamoDB store's and its local cache's metrics (the
// table's own are in package dynamo).
type dynMetrics struct {
	commit         prometheus.Histogram
	conflicts      prometheus.Counter
	deleted        prometheus.Counter
	cache          *prometheus.CounterVec // kind, result
	cacheBytes     prometheus.Gauge
	cacheEvictions prometheus.Counter
	rolledUp       prometheus.Counter
	rollupErrors   prometheus.Counter
	incDeleted     prometheus.Counter
}

func newDynMetrics(reg prometheus.Registerer) *dynMetrics {
	m := &dynMetrics{
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tilestream_store_commit_duration_seconds",
			Help:    "Time to apply one batch of writes to DynamoDB (every phase).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tilestream_store_stream_conflicts_total",
			Help: "Conditional stream tile writes that found the tile changed since it was read (another instance wrote it, or an SDK retry of the same write succeeded first); the ingest reloads the tile and applies its events again.",
		}),
		deleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tilestream_store_garbage_items_deleted_total",
			Help: "DynamoDB items deleted as garbage (superseded generations, stream tiles below the batch watermark).",
		}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tilestream_store_cache_lookups_total",
			Help: "Local cache lookups by kind (snapshot: a key's head, summaries and stream tiles; generation: a day or detail record; stream: a tile the ingest applies events to) and result (hit, miss, stale: a snapshot older than the staleness bound).",
		}, []string{"kind", "result"}),
		cacheBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tilestream_store_cache_bytes",
			Help: "Disk space of the local cache.",
		}),
		cacheEvictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tilestream_store_cache_evictions_total",
			Help: "Times the local cache reached its size bound and was emptied.",
		}),
		rolledUp: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tilestream_store_stream_tiles_rolled_up_total",
			Help: "Stream tile items absorbed into their span's segment item (docs/format.md, hour segments).",
		}),
		rollupErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tilestream_store_rollup_errors_total",
			Help: "Roll-ups of stream tile items that failed (tried again with the next one due; reads stay exact meanwhile).",
		}),
		incDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tilestream_store_old_incarnation_items_deleted_total",
			Help: "DynamoDB items of views' old incarnations (left by a layout change) deleted once the grace period had passed (docs/format.md, layout changes).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.commit, m.conflicts, m.deleted, m.cache, m.cacheBytes, m.cacheEvictions, m.rolledUp, m.rollupErrors, m.incDeleted)
	}
	return m
}
