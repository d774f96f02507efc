// Package state is the storage layer: the online store holding stream
// records, batch records, ingest and archive progress and view metadata; the
// offline log; and their progress records.
//
// The online store has two implementations behind one Store type.
//
// Pebble, embedded on local disk (Open), for one process: every mutation
// goes through one Batch applied atomically with a synced write, so the
// records of a flush and the progress of the partitions they came from are
// durable together or not at all. Pebble locks its directory.
//
// DynamoDB (OpenDynamo), shared by several instances, each with a Pebble
// local cache (cache.go). DynamoDB writes one item atomically and no more,
// and the local test server has no transactions, so a Batch is applied in
// phases (dynOps): deletes, immutable generation records, stream tiles (each
// a conditional write on the version read: stream units are per tile and
// Kafka partition, StreamLayout), heads (conditional on an older
// generation), progress, and the healer's state (conditional on its
// version). Callers put in one batch only what may become durable in that
// order; docs/format.md argues why every prefix of it is safe. Reads of a key
// are one query of its partition (head, summaries, stream tiles), plus one
// batch read of the day and detail records a window start inside a day
// needs, which the cache keeps since they never change.
//
// Key layouts and encodings are in docs/format.md; state/dynamo is the
// DynamoDB table layer (conditions, paging, batches, retries).
package state
