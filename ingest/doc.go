// Package ingest consumes the views' topics with a franz-go consumer group and
// turns events into stream records in the online store.
//
// # Pipeline
//
// One loop polls records, decodes each partition's records in parallel
// (outside the lock), applies the events to records held in a bounded
// in-memory cache (apply.go), and every FlushInterval writes the dirty records
// and each partition's progress to the store in one atomic, synced batch.
// Only after that batch is durable are the Kafka offsets committed, so the
// committed offset is a lower bound of what the store holds.
//
// The cache is split into one shard per core by entity key, and a poll's
// events are applied by one goroutine per shard: a record belongs to one
// shard, and each shard applies a partition's events in offset order. On
// Pebble a Bloom filter per shard of the stream records the store may hold
// (known.go: filled by a scan of the stored records at the first poll of a
// run, then fed every record the applier creates) spares the point reads of
// records that do not exist yet, nearly every record of a backlog replay. A
// flush encodes the shards' records in parallel, and archive rolls due
// together run in parallel, one per core.
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
// # On DynamoDB, with several instances
//
// The store's units are one tile of one key from one partition
// (state.StreamLayout), written only by the partition's consumer with a
// write conditioned on the version (offset) it read. A flush writes the
// units, then the partitions' progress (every 5 s), then commits. A unit
// whose condition fails was written meanwhile by someone else: a previous
// owner still consuming after a rebalance (a zombie), or an SDK retry of this
// very write that succeeded. The applier reloads it and applies again the
// events it applied since its version: those the stored unit holds are
// skipped by their offsets, the others are written on top. So two members
// writing one partition, in any interleaving, count each event once; the
// rebalance then ends the overlap. A revoked partition's unwritten units are
// dropped, not written after the revoke: its next owner replays them.
//
// While DynamoDB throttles or is unavailable, applying a poll or flushing
// fails and is retried with a capped backoff, without polling more records
// and without committing (tilestream_ingest_stalled is 1 and
// tilestream_ingest_store_errors_total counts why); the consumer lag grows
// and falls back once the store answers. Nothing is lost or counted twice:
// a retried step skips what an earlier attempt did.
//
// Before a flush makes events durable in stream units, the smallest event
// time among the partition's consumed but unarchived events is published
// beside its archive progress: a heal on another instance bounds its
// watermark by it (SyncArchive), so it never passes an event that is served
// from the stream and not yet readable from the offline log.
//
// # Bad input
//
// An event that cannot be decoded for a view (not JSON, not an object, a
// missing or mistyped key or timestamp, a non-finite or mistyped number, too
// large, stamped beyond the future skew, key too long) is counted by reason,
// logged at a bounded rate, optionally produced to a dead-letter topic, and
// skipped; the partition goes on.
package ingest
