package ingest

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the ingest's Prometheus metrics.
type Metrics struct {
	consumed   *prometheus.CounterVec // by topic
	events     *prometheus.CounterVec // by view, outcome
	rejected   *prometheus.CounterVec // by view, reason
	flushDur   prometheus.Histogram
	flushRecs  prometheus.Histogram
	commitErrs prometheus.Counter
	deadLetter *prometheus.CounterVec // by result
	lag        *prometheus.GaugeVec   // by topic, partition
	lagErrs    prometheus.Counter
	cached     prometheus.Gauge
	watermark  *prometheus.GaugeVec // by view

	archived     *prometheus.CounterVec // by view
	archiveRolls prometheus.Histogram
	archiveLag   *prometheus.GaugeVec // by view

	storeErrors *prometheus.CounterVec // by op, reason
	stalled     prometheus.Gauge
	conflicts   prometheus.Counter
	rebased     prometheus.Counter
}

// NewMetrics registers the ingest metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tilestream_ingest_records_consumed_total",
			Help: "Kafka records consumed, by topic.",
		}, []string{"topic"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tilestream_ingest_events_total",
			Help: "Decoded events by view and outcome: applied; replayed (already in the stored record, skipped); deferred_to_heal (stamped before the key's batch watermark: only in the offline log until the next heal).",
		}, []string{"view", "outcome"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tilestream_ingest_events_rejected_total",
			Help: "Malformed events set aside, by view and reason.",
		}, []string{"view", "reason"}),
		flushDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tilestream_ingest_flush_duration_seconds",
			Help:    "Time to make a flush durable in the online store and commit offsets.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		flushRecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tilestream_ingest_flush_records",
			Help:    "Records written per flush.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 12),
		}),
		commitErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tilestream_ingest_commit_errors_total",
			Help: "Kafka offset commits that failed (retried at the next flush).",
		}),
		deadLetter: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tilestream_ingest_dead_letters_total",
			Help: "Malformed events produced to the dead-letter topic, by result.",
		}, []string{"result"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tilestream_ingest_consumer_lag_records",
			Help: "Records between the group's committed offset and the end of each partition.",
		}, []string{"topic", "partition"}),
		lagErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tilestream_ingest_lag_errors_total",
			Help: "Failed lag measurements.",
		}),
		cached: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tilestream_ingest_cached_records",
			Help: "Decoded records held in memory.",
		}),
		watermark: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tilestream_ingest_stream_watermark_seconds",
			Help: "Stream event-time progress per view: the smallest, over the topic's partitions, of the largest durable event time (Unix seconds).",
		}, []string{"view"}),
	}
	m.archived = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tilestream_ingest_archived_events_total",
		Help: "Events written to the offline log, by view.",
	}, []string{"view"})
	m.archiveRolls = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "tilestream_ingest_archive_roll_duration_seconds",
		Help:    "Time to write one partition's buffered events to archive files and record the progress.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	})
	m.archiveLag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tilestream_ingest_archive_lag_events",
		Help: "Consumed events not yet durable in the offline log, by view (they hold back offset commits until rolled).",
	}, []string{"view"})
	m.storeErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tilestream_ingest_store_errors_total",
		Help: "Failed attempts that ingest retries, by op (apply: a poll to the online store; flush: the online store and archive rolls due; archive: archive rolls of full buffers between flushes) and reason (throttled, unavailable, conflicting).",
	}, []string{"op", "reason"})
	m.stalled = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tilestream_ingest_stalled",
		Help: "1 while ingest waits for the online store or the offline log (throttled or unavailable): nothing is committed and the consumer lag grows; tilestream_ingest_store_errors_total says why.",
	})
	m.conflicts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tilestream_ingest_stream_conflicts_total",
		Help: "Stream units whose conditional write found them changed by another writer (a partition's previous owner) or by an earlier attempt of the same write; each is reloaded and its events applied again.",
	})
	m.rebased = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tilestream_ingest_events_rebased_total",
		Help: "Events applied again on top of a reloaded stream unit after a conflict (events it already held are skipped by their offsets).",
	})
	reg.MustRegister(m.storeErrors, m.stalled, m.conflicts, m.rebased, m.archiveLag, m.archived, m.archiveRolls, m.consumed, m.events, m.rejected, m.flushDur, m.flushRecs, m.commitErrs,
		m.deadLetter, m.lag, m.lagErrs, m.cached, m.watermark)
	return m
}
