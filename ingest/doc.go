// Package ingest consumes the views' topics with a franz-go consumer group and
// turns events into stream records in the online store.
//
// # Pipeline
//
// One loop polls records, decodes each partition's records in parallel
// (decode.go), applies the events to records held in a bounded in-memory cache
// (apply.go), and every FlushInterval writes the dirty records and each
// partition's progress to the store in one atomic, synced batch. Only after
// that batch is durable are the Kafka offsets committed, so the committed
// offset is a lower bound of what the store holds.
//
// # Exactly-once effect
//
// Records are written whole, never as increments, and each carries the highest
// offset applied per partition (tiling.Record). A replay after a crash or a
// rebalance resumes from the committed offset and skips, per record, every
// event at or below that record's offset for its partition. A key's events may
// come from any number of partitions: each partition's events reach a record in
// offset order, which is all the skip rule needs.
//
// # Bad input
//
// An event that cannot be decoded for a view (not JSON, not an object, a
// missing or mistyped key or timestamp, a non-finite or mistyped number, too
// large, stamped beyond the future skew, key too long) is counted by reason,
// logged at a bounded rate, optionally produced to a dead-letter topic, and
// skipped; the partition goes on.
package ingest
