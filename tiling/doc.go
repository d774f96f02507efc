// Package tiling is the pure domain of tilestream: feature views, windows, tile
// math, partial aggregates (mergeable states), their codecs, and the evaluation
// of a window from tiles. It imports nothing else of the project.
//
// # Model
//
// A View aggregates the events of one topic per entity key. Time is epoch
// milliseconds. Events fall into tiles of the view's granularity g: the tile of
// an event stamped ts starts at AlignDown(ts, g). Tiles are packed into
// records of Span() = P·g milliseconds (one hour of minute tiles by default);
// a record is the unit of storage and of idempotence (see Record).
//
// The value served at time t for a window w aggregates exactly the events with
//
//	AlignDown(t−w, g) ≤ ts < AlignDown(t, g) + g
//
// so the current tile is included, the window spans more than w and at most
// w+g, and events stamped slightly after t inside the current tile count. A
// lifetime window covers LifetimeStart ≤ ts < AlignDown(t, g) + g.
//
// # Partial aggregates
//
// Every State obeys the merge contract (compare Pebble's Merger): for states
// a, b, c and the identity e (a freshly made state),
//
//	merge(a, b) == merge(b, a)                      (commutative)
//	merge(merge(a, b), c) == merge(a, merge(b, c))  (associative)
//	merge(a, e) == a                                (identity)
//
// where == is equality of the encoded bytes, not approximate equality, and
// merging states is the same as adding the union of their events to one
// state. Sums are kept in an exact fixed-point accumulator wide enough for
// every float64 (see ExactSum), and sums of squares in a wider one
// (squareSum), so the same events give the same bits whatever the tiling,
// the order of arrival or the order of merges; only the final value is
// rounded, once, to the nearest float64. The sketches keep the contract too:
// a HyperLogLog's sparse keys and registers, a DDSketch's bin counts
// (collapsing included) and top_k's counts and event sample are functions of
// the multiset of events, so a merged sketch is the sketch of all the events
// (hll.go, quantiles.go, topk.go say why each merge is exact). Lists order
// events by (time, partition, offset), a total order.
//
// # Values
//
// A state's value is finalised per feature (Evaluate): numbers as float64 or
// uint64, raw values, lists and objects as json.RawMessage, null as nil.
// Functions that compare values compare canonical JSON text
// (canonicalValue), derived from Input in this package. Every kept value is
// bounded (max_value_bytes), and NewView rejects a view whose tile could
// exceed MaxTileBytes.
package tiling
