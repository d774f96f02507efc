// Package benchmarks holds the macro benchmarks of tilestream: end-to-end
// ingest from Kafka into the online store (with and without the offline
// log), HTTP serving latency of a small and a 1M-event key before and after
// a heal, heal throughput against the offline log's raw read speed, and the
// records a 30-day backfill writes. Results, targets and the commands that
// reproduce them are in README.md. Nothing imports it.
package benchmarks
