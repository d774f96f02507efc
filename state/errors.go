package state

import "errors"

var (
	// ErrClosed is returned by operations on a closed Store.
	ErrClosed = errors.New("state: closed")
	// ErrLayoutChanged is returned when a view's stored tile layout differs from
	// the configured one.
	ErrLayoutChanged = errors.New("state: view layout changed")
)
