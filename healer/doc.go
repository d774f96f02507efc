// Package healer will recompute old data from the offline log into compacted
// batch tiles and install them behind each key's batch watermark (see
// docs/design.md). In this version nothing is healed: every key is served from
// stream records and its batch_watermark is null.
package healer
