package healer

import (
	"sort"
	"strings"

	"github.com/tilestream/tilestream/tiling"
)

// dayBuild aggregates one day span's events per key at the three resolutions
// of the batch layout: tiles (detail records, one per block), block
// aggregates (the day record) and the day total.
type dayBuild struct {
	v     *tiling.View
	start int64
	keys  map[string]map[int64]*tiling.Record // key → block start → tiles
}

func newDayBuild(v *tiling.View, start int64) *dayBuild {
	return &dayBuild{v: v, start: start, keys: map[string]map[int64]*tiling.Record{}}
}

// add aggregates e, which must fall in the day span.
func (d *dayBuild) add(e *tiling.Event) {
	blocks := d.keys[e.Key]
	if blocks == nil {
		blocks = map[int64]*tiling.Record{}
		// The offline log's key strings share its buffers: keep a copy.
		d.keys[strings.Clone(e.Key)] = blocks
	}
	start := d.v.RecordStart(e.TS)
	r := blocks[start]
	if r == nil {
		r = &tiling.Record{Start: start}
		blocks[start] = r
	}
	d.v.Aggregate(r, e)
}

// keyDay is one key's built day.
type keyDay struct {
	details []*tiling.Record // ascending by block
	day     *tiling.Record   // one tile per block: the block aggregates
	total   []tiling.State
}

// sortedKeys returns the keys in order, so writes and summaries are
// deterministic.
func (d *dayBuild) sortedKeys() []string {
	keys := make([]string, 0, len(d.keys))
	for k := range d.keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// finish returns a key's detail records, day record and total.
func (d *dayBuild) finish(key string) keyDay {
	blocks := d.keys[key]
	kd := keyDay{day: &tiling.Record{Start: d.start}, total: d.v.NewStates()}
	for _, r := range blocks {
		kd.details = append(kd.details, r)
	}
	sort.Slice(kd.details, func(i, j int) bool { return kd.details[i].Start < kd.details[j].Start })
	kd.day.Only = []int64{}
	multi := kd.details[:0:0]
	for _, r := range kd.details {
		up := d.v.Rollup(r, d.v.Span())
		kd.day.Tiles = append(kd.day.Tiles, up...)
		for i := range up {
			tiling.MergeStates(kd.total, up[i].States)
		}
		// A block of one tile needs no detail record: the day record says
		// where its tile is.
		if len(r.Tiles) == 1 {
			kd.day.Only = append(kd.day.Only, r.Tiles[0].Start)
		} else {
			kd.day.Only = append(kd.day.Only, tiling.MinTime)
			multi = append(multi, r)
		}
	}
	kd.details = multi
	return kd
}
