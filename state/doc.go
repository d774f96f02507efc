// Package state is the storage layer: the online store holding stream records,
// ingest progress and view metadata.
//
// This version has one online store, Pebble embedded on local disk. Every
// mutation from ingest goes through one Batch applied atomically with a synced
// write, so the records of a flush and the progress of the partitions they came
// from are durable together or not at all. The key layout is in
// docs/format.md. A Pebble store belongs to one process (Pebble locks its
// directory); scaling out to several instances needs a shared online store.
package state
