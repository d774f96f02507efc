// Package benchmarks holds the macro benchmarks of tilestream: end-to-end
// ingest from Kafka into the online store (with and without the offline
// log), HTTP serving latency of a small and a 1M-event key before and after
// a heal, heal throughput against the offline log's raw read speed, and the
// records a 30-day backfill writes.
//
// BenchmarkPeers runs tilestream side by side with what a team would build
// instead — Redis sorted sets of raw events, Redis minute-bucket hashes, a
// naive scan of raw events in Pebble, and DuckDB's GROUP BY over the same
// Parquet files for the batch side — on one workload, and writes a dated
// report with a chart (make bench, make bench-full). It starts its peers
// itself (redis-server on a free loopback port, DuckDB through Node) and
// runs tilestream's server, heals and in-process reads in child processes
// (this test binary again, see TestMain), so every system's memory and CPU
// are its own.
//
// Results, targets and the commands that reproduce them are in README.md.
// Nothing imports it.
package benchmarks
