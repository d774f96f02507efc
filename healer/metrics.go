package healer

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the healer's Prometheus metrics.
type Metrics struct {
	runs           *prometheus.CounterVec // view, result
	duration       *prometheus.HistogramVec
	eventsRead     *prometheus.CounterVec
	filesRead      *prometheus.CounterVec
	badRows        *prometheus.CounterVec // view, reason
	keysWritten    *prometheus.CounterVec
	recordsWritten *prometheus.CounterVec
	tilesWritten   *prometheus.CounterVec
	streamDeleted  *prometheus.CounterVec
	watermark      *prometheus.GaugeVec
	staleness      *prometheus.GaugeVec
	halted         *prometheus.GaugeVec
	verified       *prometheus.CounterVec // view, result
	mismatches     *prometheus.CounterVec
}

// NewMetrics registers the healer's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	cv := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	gv := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"view"})
	}
	m := &Metrics{
		runs: cv("tilestream_healer_runs_total", "Heals by view and result: installed, unchanged (nothing to heal) or error.", "view", "result"),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tilestream_healer_duration_seconds",
			Help:    "Time of one heal, from start to installed.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 16),
		}, []string{"view"}),
		eventsRead:     cv("tilestream_healer_events_read_total", "Distinct events read from the offline log.", "view"),
		filesRead:      cv("tilestream_healer_files_read_total", "Offline-log files read.", "view"),
		badRows:        cv("tilestream_healer_bad_rows_total", "Malformed offline-log rows and files skipped, by reason (the decoder's reason for a row; bad_file, once per heal, for a file that cannot be decoded in whole or in part, whose message goes to the log).", "view", "reason"),
		keysWritten:    cv("tilestream_healer_keys_written_total", "Keys whose batch layout a heal installed.", "view"),
		recordsWritten: cv("tilestream_healer_records_written_total", "Batch records (detail, day, summary, head) written.", "view"),
		tilesWritten:   cv("tilestream_healer_tiles_written_total", "Tiles (distinct key and tile with events) in the days a heal built into batch records: the writes a tile-per-record layout would have needed.", "view"),
		streamDeleted:  cv("tilestream_healer_stream_keys_collected_total", "Keys whose stream records below the batch watermark were deleted after the grace period.", "view"),
		watermark:      gv("tilestream_healer_batch_watermark_seconds", "The view's batch watermark W_b (Unix seconds)."),
		staleness:      gv("tilestream_healer_batch_staleness_seconds", "Now minus the view's batch watermark."),
		halted:         gv("tilestream_healer_halted", "1 while the view's healing is halted by repeated failures."),
		verified:       cv("tilestream_healer_verify_runs_total", "Consistency checks (served batch data against a recomputation from the offline log), by result: ok or mismatch.", "view", "result"),
		mismatches:     cv("tilestream_healer_verify_mismatches_total", "Features that differed in consistency checks.", "view"),
	}
	reg.MustRegister(m.runs, m.duration, m.eventsRead, m.filesRead, m.badRows, m.keysWritten,
		m.recordsWritten, m.tilesWritten, m.streamDeleted, m.watermark, m.staleness, m.halted, m.verified, m.mismatches)
	return m
}

// start creates the series of a view that a scrape should show before its
// first heal (counters at 0, not halted), so that dashboards and alerts
// see them from the start.
func (m *Metrics) start(view string) {
	for _, result := range []string{"installed", "unchanged", "error"} {
		m.runs.WithLabelValues(view, result)
	}
	for _, c := range []*prometheus.CounterVec{m.eventsRead, m.filesRead, m.keysWritten, m.recordsWritten, m.tilesWritten, m.streamDeleted, m.mismatches} {
		c.WithLabelValues(view)
	}
	for _, result := range []string{"ok", "mismatch"} {
		m.verified.WithLabelValues(view, result)
	}
	m.halted.WithLabelValues(view).Set(0)
}
