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
// Numeric functions (sum, min, max, mean, the variances and standard
// deviations, approx_percentile) read only float64 field values and
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
//     those where the field is present; nil when there is none. first: the
//     least.
//   - var_pop, var_samp, stddev_pop, stddev_samp: Σ(x−μ)²/n and /(n−1)
//     computed exactly in integers and rounded once; the standard deviation
//     is the correctly rounded square root of the exact quotient. nil with no
//     values, with one for the sample forms, and when ±Inf.
//   - first_n, last_n: the values of the N least, greatest events by (TS,
//     Partition, Offset) where the field is present, in that order.
//     last_distinct_n: the N distinct values (by canonical text: the text
//     encoding/json writes for the value, HTML escaping off) whose latest
//     events are the greatest, in the order of those events. Empty: [].
//   - approx_count_distinct: the exact number of distinct values.
//   - approx_percentile: nil with no values, else a map from each percentile
//     q (as encoding/json writes it) to the exact value of rank
//     ⌊q·(n−1)⌋ in ascending order.
//   - top_k: the exact K most frequent values with their counts, as
//     {"value", "count"} maps, by count descending then canonical text.
//
// The three approximate functions get exact answers here: tests check the
// sketches' stated error bounds against them. Values longer than a
// feature's max_value_bytes are not modelled (tests keep values shorter).
//
// The caller decides which events exist: it passes one key's events, each
// once (deduplicated by identity), and the oracle counts every one it is given.
package oracle
