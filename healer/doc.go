// Package healer recomputes old data from the offline log into compacted
// batch records and installs them behind each key's batch watermark W_b.
//
// # A heal
//
//  1. The ingest rolls its archive buffers (SyncArchive) and reports E, the
//     archive's event-time watermark; the new watermark is
//     W_b′ = alignDown(min(now − lateness, E), g), never below the last one.
//  2. The day spans to recompute are those whose offline-log files changed
//     since the last heal (a fingerprint of names, sizes and times), the
//     range newly closed since the last W_b, or all of them on a full heal.
//     Each is read once, deduplicated by event identity, and aggregated per
//     key into detail records (tiles), a day record (block aggregates) and
//     a day total, written under the new generation.
//  3. Every key's summary (Base, and one total per day from FirstDay up to
//     W_b′) is written under the new generation: recomputed days from this
//     heal, others carried from the previous summary. Its cost grows with
//     the new data and the number of keys, not with window length.
//  4. Last, each key's head switches to {W_b′, generation}. Readers follow
//     the head, so they see the old layout or the new one, never a mix.
//  5. After the grace period the superseded summaries and day records and
//     the stream records below W_b′ are deleted.
//
// A heal that finds no new closed range and no changed files installs
// nothing, so no served bit changes.
//
// # Caveat
//
// An event consumed after a heal sampled the archive, stamped before the new
// watermark, is in the offline log but in neither side until the next heal
// (DESIGN.md's exception to the oracle).
package healer
