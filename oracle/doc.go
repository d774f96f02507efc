// Package oracle is the brute-force reference for tilestream's feature values:
// the formula of the design's "Semantics" section applied by a plain loop over
// raw events, with no tiles, no partial aggregates and no code shared with the
// package under test. It imports nothing from the project, so a bug in tiling
// cannot hide in both places at once.
//
// # Model
//
// Time is epoch milliseconds. For a view of granularity g, floor(x, g) is the
// largest multiple of g that is ≤ x (also for negative x). At time t every
// window ends at end = floor(t, g) + g, so the current tile is included. A
// window of w > 0 starts at floor(t−w, g); a lifetime window (w = 0) starts at
// the view's LifetimeStart (math.MinInt64 when unset). A feature aggregates the
// events with start ≤ TS < end.
//
// # Values
//
// Values are what encoding/json would decode from a served response: float64
// for every number (counts too), nil for null, and for last the field's value
// as decoded. A field counts as present when it is in Fields and not nil.
// Numeric functions (sum, min, max, mean) read only float64 field values and
// skip everything else (ingest rejects such events as malformed, so this only
// matters to a caller that passes them). A number equal to −0 is read as +0 everywhere, since
// ingest normalises −0.
//
//   - count: without a column, the number of events; with one, the number of
//     events where the field is present. 0 when empty.
//   - sum: the exact sum (math/big at a precision that cannot round a sum of
//     float64 values) rounded once to the nearest float64, ties to even. 0 when
//     empty; nil when the rounded sum is ±Inf.
//   - min, max: nil when there are no values.
//   - mean: the rounded exact sum divided by the number of values in float64;
//     nil when there are none or when the result is ±Inf.
//   - last: the value of the event greatest by (TS, Partition, Offset) among
//     those where the field is present; nil when there is none.
//
// The caller decides which events exist: it passes one key's events, each
// once (deduplicated by identity), and the oracle counts every one it is given.
package oracle
