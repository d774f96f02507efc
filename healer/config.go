package healer

import (
	"errors"
	"time"
)

// Config configures the healer.
type Config struct {
	// Grace is how long superseded records (old generations, stream records
	// below a new watermark) are kept after a heal, so in-flight reads can
	// finish. It must exceed the longest read. Default 1m.
	Grace time.Duration
	// RetryMin and RetryMax bound the backoff after a failed scheduled heal.
	// Defaults 1s and 5m.
	RetryMin, RetryMax time.Duration
	// HaltAfter consecutive failures set the view's halted gauge. Default 5.
	HaltAfter int
	// VerifySample keys are checked against the offline log after each
	// scheduled heal (0 disables). Default 20.
	VerifySample int
	// Lease is how long a view's healing lease lasts without renewal (it is
	// renewed every third of it while held). Default 1m.
	Lease time.Duration
	// Owner names this healer in leases; instances sharing a store need
	// distinct owners. Default: host name, process id and a random suffix.
	Owner string
	// Workers is how many day spans a heal reads and aggregates at once
	// (the records are still written in order, by one goroutine). Default
	// 0: GOMAXPROCS.
	Workers int
	// TableRecords is the fewest records a built day (or a heal's
	// summaries) must hold to be written on Pebble as a table that Pebble
	// ingests whole, instead of through batches (docs/format.md, "Heal
	// tables"). Default 0: state.MinTableRecords; negative: never.
	TableRecords int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Grace: time.Minute, RetryMin: time.Second, RetryMax: 5 * time.Minute, HaltAfter: 5, VerifySample: 20, Lease: time.Minute}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Grace <= 0 {
		errs = append(errs, errors.New("healer: grace must be positive"))
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		errs = append(errs, errors.New("healer: retry bounds must satisfy 0 < min ≤ max"))
	}
	if c.VerifySample < 0 {
		errs = append(errs, errors.New("healer: verify_sample must not be negative"))
	}
	if c.HaltAfter <= 0 {
		errs = append(errs, errors.New("healer: halt_after must be positive"))
	}
	if c.Workers < 0 {
		errs = append(errs, errors.New("healer: workers must not be negative"))
	}
	if c.Lease < 0 || (c.Lease > 0 && c.Lease < 30*time.Millisecond) {
		errs = append(errs, errors.New("healer: lease must be at least 30ms"))
	}
	return errors.Join(errs...)
}
