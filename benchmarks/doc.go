// Package benchmarks holds the macro benchmarks of tilestream: end-to-end
// ingest from Kafka into the online store and HTTP serving latency. Results
// and the commands that reproduce them are in README.md. Nothing imports it.
package benchmarks
