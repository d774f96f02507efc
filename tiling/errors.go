package tiling

import "errors"

var (
	// ErrCorrupt is returned (wrapped) by every decoder given bytes it cannot
	// interpret. Decoders never panic on bad input.
	ErrCorrupt = errors.New("tiling: corrupt encoding")
	// ErrVersion is returned (wrapped) when an encoding has a version byte this
	// build does not know.
	ErrVersion = errors.New("tiling: unknown encoding version")
)
