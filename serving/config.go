package serving

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Config is the endpoint's configuration. A zero field takes its default.
type Config struct {
	// Listen is the TCP address the server binds, host:port. Used by cmd,
	// which opens the listener and hands it to Server.Run. Default
	// "127.0.0.1:8080".
	Listen string
	// MaxBatch is the most keys one POST /v1/features may ask for; more is
	// refused with 413. Default 100.
	MaxBatch int
	// MaxBodyBytes is the largest request body read, bytes; larger bodies are
	// refused with 413. Default 1 MiB.
	MaxBodyBytes int64
	// MaxKeyBytes is the longest entity key accepted, bytes; longer keys are
	// refused with 400. Default 1024.
	MaxKeyBytes int
	// RequestTimeout bounds the work of one request: feature reads past it
	// are abandoned with 504. It also sets the server's read and write
	// deadlines (see NewServer). Default 5s.
	RequestTimeout time.Duration
}

// WriteTimeout is the server's deadline for writing an answer, counted from
// the end of the request's header: twice RequestTimeout (a handler gives up
// on reads at RequestTimeout and still has to write its 504). A handler that
// waits before answering must answer within it, or lift it (POST /v1/heal
// does); past it the client gets no answer at all, the connection closes.
func (c Config) WriteTimeout() time.Duration { return 2 * c.withDefaults().RequestTimeout }

// DefaultConfig returns the configuration with every default filled in.
func DefaultConfig() Config {
	return Config{
		Listen:         "127.0.0.1:8080",
		MaxBatch:       100,
		MaxBodyBytes:   1 << 20,
		MaxKeyBytes:    1024,
		RequestTimeout: 5 * time.Second,
	}
}

// withDefaults returns c with its zero fields set to their defaults.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Listen == "" {
		c.Listen = d.Listen
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = d.MaxBatch
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if c.MaxKeyBytes == 0 {
		c.MaxKeyBytes = d.MaxKeyBytes
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	return c
}

// Validate reports every problem of c at once. Zero fields are valid: they
// take their defaults.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("serving: "+format, args...)) }
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			bad("listen %q: want host:port (\"127.0.0.1:8080\", \":8080\"): %v", c.Listen, err)
		}
	}
	if c.MaxBatch < 0 {
		bad("max batch %d: must be positive", c.MaxBatch)
	}
	if c.MaxBodyBytes < 0 {
		bad("max body bytes %d: must be positive", c.MaxBodyBytes)
	}
	if c.MaxKeyBytes < 0 {
		bad("max key bytes %d: must be positive", c.MaxKeyBytes)
	}
	if c.RequestTimeout < 0 {
		bad("request timeout %s: must be positive", c.RequestTimeout)
	} else if c.RequestTimeout > 0 && c.RequestTimeout < time.Millisecond {
		bad("request timeout %s: must be at least 1ms", c.RequestTimeout)
	}
	return errors.Join(errs...)
}
