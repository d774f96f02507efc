package ingest

import (
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Config configures the ingest.
type Config struct {
	// Brokers are the Kafka seed brokers (host:port). Required.
	Brokers []string
	// Group is the consumer group. Default "tilestream".
	Group string
	// ClientID is the Kafka client id. Default "tilestream".
	ClientID string
	// DeadLetterTopic, when set, receives every malformed event with headers
	// naming the reason and the source. Default "" (none).
	DeadLetterTopic string
	// FlushInterval is how often buffered records are made durable and offsets
	// committed. Default 1s.
	FlushInterval time.Duration
	// FutureSkew: events stamped later than now+FutureSkew are rejected.
	// Default 1h.
	FutureSkew time.Duration
	// MaxEventBytes is the largest accepted event value in bytes. Default 64 KiB.
	MaxEventBytes int
	// MaxKeyBytes is the longest accepted entity key in bytes. Default 1024.
	MaxKeyBytes int
	// RecordCache is how many decoded records are kept in memory between
	// flushes. Default 200,000.
	RecordCache int
	// LagInterval is how often consumer lag is measured. Default 5s.
	LagInterval time.Duration
	// PollRecords bounds the records handled per poll. Default 10,000.
	PollRecords int
	// ArchiveRollInterval is the longest an event waits in memory before it
	// is written to an offline-log archive file (offsets are committed only
	// once archived, so this bounds the replay after a crash). Default 1m.
	ArchiveRollInterval time.Duration
	// ArchiveRollRows rolls a partition's archive buffer once it holds this
	// many events (checked after each poll). Default 200,000.
	ArchiveRollRows int
	// ProgressDelay is how long after reading other instances' progress
	// from a shared store it moves the stream watermark: the local cache's
	// staleness bound, so that a read includes at least what the watermark
	// claims. Default 0.
	ProgressDelay time.Duration
	// ClientOpts are extra franz-go options (TLS, SASL, tests).
	ClientOpts []kgo.Opt
}

// DefaultConfig returns the defaults; Brokers must still be set.
func DefaultConfig() Config {
	return Config{
		Group:         "tilestream",
		ClientID:      "tilestream",
		FlushInterval: time.Second,
		FutureSkew:    time.Hour,
		MaxEventBytes: 64 << 10,
		MaxKeyBytes:   1024,
		RecordCache:   200_000,
		LagInterval:   5 * time.Second,
		PollRecords:   10_000,

		ArchiveRollInterval: time.Minute,
		ArchiveRollRows:     200_000,
	}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("ingest: "+format, args...)) }
	if len(c.Brokers) == 0 {
		bad("no brokers")
	}
	if c.Group == "" {
		bad("no consumer group")
	}
	if c.FlushInterval <= 0 || c.FlushInterval > time.Minute {
		bad("flush_interval %v must be in (0, 1m]", c.FlushInterval)
	}
	if c.FutureSkew < 0 {
		bad("future_skew must not be negative")
	}
	if c.MaxEventBytes <= 0 {
		bad("max_event_bytes must be positive")
	}
	if c.MaxKeyBytes <= 0 || c.MaxKeyBytes > 2048 {
		bad("max_key_bytes %d must be in [1, 2048]", c.MaxKeyBytes)
	}
	if c.RecordCache <= 0 {
		bad("record_cache must be positive")
	}
	if c.LagInterval <= 0 {
		bad("lag interval must be positive")
	}
	if c.ArchiveRollInterval <= 0 {
		bad("archive roll interval must be positive")
	}
	if c.ArchiveRollRows <= 0 {
		bad("archive roll rows must be positive")
	}
	if c.PollRecords <= 0 {
		bad("poll records must be positive")
	}
	if c.ProgressDelay < 0 {
		bad("progress delay must not be negative")
	}
	return errors.Join(errs...)
}
