package state

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tilestream/tilestream/internal/metricsdoc"
	"github.com/tilestream/tilestream/state/dynamo"
)

// TestMetricsDocumented: docs/metrics.md lists every metric of the
// DynamoDB store and of its table client.
func TestMetricsDocumented(t *testing.T) {
	metricsdoc.Check(t, func(r prometheus.Registerer) {
		newDynMetrics(r)
		dynamo.NewMetrics(r)
	})
}
