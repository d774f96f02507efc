package state

import (
	"errors"

	"github.com/tilestream/tilestream/state/dynamo"
)

var (
	// ErrClosed is returned by operations on a closed Store.
	ErrClosed = errors.New("state: closed")
	// ErrLayoutChanged is returned when a view's stored tile layout differs from
	// the configured one.
	ErrLayoutChanged = errors.New("state: view layout changed")
)

// Retryable reports whether a failed store operation may succeed if tried
// again later: DynamoDB throttling or unavailability.
func Retryable(err error) bool { return dynamo.Retryable(err) }

// ErrorReason classifies a store error for metrics (see dynamo.Reason).
func ErrorReason(err error) string { return dynamo.Reason(err) }
