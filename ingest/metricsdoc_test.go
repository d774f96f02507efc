package ingest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tilestream/tilestream/internal/metricsdoc"
)

// TestMetricsDocumented: docs/metrics.md lists every metric the package
// registers.
func TestMetricsDocumented(t *testing.T) {
	metricsdoc.Check(t, func(r prometheus.Registerer) { NewMetrics(r) })
}
