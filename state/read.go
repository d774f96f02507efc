package state

import "github.com/tilestream/tilestream/tiling"

// KeyData is what the online store holds for one (view, key) over a read range.
type KeyData struct {
	// Batch is the key's batch side; nil before a heal covered the key.
	Batch *tiling.Batch
	// Records are the stream records from the batch watermark to the end of
	// the read range, ascending by Start. On Pebble the first one holds only
	// its tiles from the batch watermark (or, without one, the read range's
	// start) on: the read decodes the tiles before it only to check them.
	Records []*tiling.Record
	// BatchWatermark is the key's W_b: the batch part covers event times before
	// it and stream records count only from it on. tiling.MinTime when the key
	// has no batch data (no heal has covered it).
	BatchWatermark int64
	// RecordsRead counts the stored records the read touched (heads,
	// summaries, day, detail and stream records).
	RecordsRead int
}
