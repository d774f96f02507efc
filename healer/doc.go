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
//     key into detail records (tiles), a day record (suffix aggregates of
//     its blocks) and a day total, written under the new generation. Day
//     spans are read, aggregated and encoded on Config.Workers goroutines (a
//     few spans ahead of the writes); the heal's goroutine writes them in
//     day order, so the records and the state's progress are what one
//     goroutine would write. On Pebble a day of at least
//     Config.TableRecords records arrives as sorted tables that Pebble
//     ingests whole (state.Tables), smaller ones go through batches.
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
// # Without transactions, and with several instances
//
// The healer's state records each step before the next one depends on it:
// the new generation as pending before any of its records (claimed with a
// write conditioned on the state's version, so no two heals write one
// generation), each day done after its records, and the state the install
// leads to (Next) before the first head switches. On Pebble the heads and
// the new state are one atomic batch; on DynamoDB every head is its own
// conditional write, so a crash can leave some switched: the next heal
// finds Next and finishes the install before anything else (rollForward).
//
// Instances sharing a DynamoDB table heal a view one at a time: a heal or a
// garbage collection holds the view's lease (lease.go), renewed while it
// runs; a heal that loses it stops before switching heads. POST /v1/heal
// waits for another instance's heal to end and then heals; a scheduled heal
// leaves the period to the instance that healed last.
//
// # Caveat
//
// An event consumed after a heal sampled the archive, stamped before the new
// watermark, is in the offline log but in neither side until the next heal
// (DESIGN.md's exception to the oracle).
package healer
