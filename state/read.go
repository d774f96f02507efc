package state

import "github.com/tilestream/tilestream/tiling"

// KeyData is what the online store holds for one (view, key) over a read range.
type KeyData struct {
	// Records are the stream records overlapping the range, ascending by Start.
	Records []*tiling.Record
	// BatchWatermark is the key's W_b: the batch part covers event times before
	// it and stream records count only from it on. tiling.MinTime when the key
	// has no batch data (no heal has covered it).
	BatchWatermark int64
}
