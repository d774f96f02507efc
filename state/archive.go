package state

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/tilestream/tilestream/state/dynamo"
)

// ArchiveProgress returns, per partition, how far the ingest has archived the
// view's events to the offline log: Next is the first offset not yet in an
// archive file, MaxEventTime the largest event time archived.
func (s *Store) ArchiveProgress(view string) (map[int32]Progress, error) {
	out := map[int32]Progress{}
	if s.dyn != nil {
		err := s.dyn.archiveItems(view, func(p int32, it *dynamo.Item) error {
			if val := it.B("pr"); val != nil {
				pr, err := decodeProgress(val)
				if err != nil {
					return fmt.Errorf("archive progress of %s/%d: %w", view, p, err)
				}
				out[p] = pr
			}
			return nil
		})
		return out, err
	}
	err := s.scanViewPartitions(prefixArchive, view, func(p int32, val []byte) error {
		pr, err := decodeProgress(val)
		if err != nil {
			return err
		}
		out[p] = pr
		return nil
	})
	return out, err
}

// SetArchiveProgress records a partition's archive progress.
func (b *Batch) SetArchiveProgress(view string, partition int32, p Progress) {
	if b.ops != nil {
		b.archive(view, partition).progress = &p
		return
	}
	val := []byte{progressVersion}
	val = binary.AppendVarint(val, p.Next)
	val = binary.AppendVarint(val, p.MaxEventTime)
	_ = b.b.Set(viewPartitionKey(nil, prefixArchive, view, partition), val, nil)
}

// ArchivePending returns, per partition, the smallest event time among the
// events its owner has consumed but not yet archived, as last published
// (SetArchivePending): instances sharing a DynamoDB store bound a heal's
// watermark by it. Pebble, used by one process, has none.
func (s *Store) ArchivePending(view string) (map[int32]int64, error) {
	out := map[int32]int64{}
	if s.dyn == nil {
		return out, nil
	}
	err := s.dyn.archiveItems(view, func(p int32, it *dynamo.Item) error {
		if ts, ok := it.N("pm"); ok {
			out[p] = ts
		}
		return nil
	})
	return out, err
}

// SetArchivePending publishes the smallest event time of a partition's
// consumed, unarchived events (a no-op on Pebble). SetArchiveProgress
// clears it: a roll archives everything consumed.
func (b *Batch) SetArchivePending(view string, partition int32, minTS int64) {
	if b.ops != nil {
		b.archive(view, partition).pending = &minTS
	}
}

// ArchiveIntent names the files an archive roll is about to write. It is
// made durable before the files and deleted with the progress update that
// follows them, so a crash in between leaves an intent whose files are
// removed at the next start: the replay then writes them again.
type ArchiveIntent struct {
	First, Last int64
	Paths       []string
}

// PutIntent records an intent.
func (b *Batch) PutIntent(view string, partition int32, in ArchiveIntent) {
	if b.ops != nil {
		a := b.archive(view, partition)
		a.intent, a.deleteIntent = &in, false
		return
	}
	val, _ := json.Marshal(in)
	_ = b.b.Set(viewPartitionKey(nil, prefixIntent, view, partition), val, nil)
}

// DeleteIntent removes a partition's intent.
func (b *Batch) DeleteIntent(view string, partition int32) {
	if b.ops != nil {
		a := b.archive(view, partition)
		a.intent, a.deleteIntent = nil, true
		return
	}
	_ = b.b.Delete(viewPartitionKey(nil, prefixIntent, view, partition), nil)
}

// Intents returns the view's pending intents by partition.
func (s *Store) Intents(view string) (map[int32]ArchiveIntent, error) {
	out := map[int32]ArchiveIntent{}
	if s.dyn != nil {
		err := s.dyn.archiveItems(view, func(p int32, it *dynamo.Item) error {
			if val := it.B("in"); val != nil {
				var in ArchiveIntent
				if err := json.Unmarshal(val, &in); err != nil {
					return fmt.Errorf("archive intent of %s/%d: %w", view, p, err)
				}
				out[p] = in
			}
			return nil
		})
		return out, err
	}
	err := s.scanViewPartitions(prefixIntent, view, func(p int32, val []byte) error {
		var in ArchiveIntent
		if err := json.Unmarshal(val, &in); err != nil {
			return err
		}
		out[p] = in
		return nil
	})
	return out, err
}

// archive returns the batch's pending write of a partition's archive item:
// progress and intent live in one item, so "progress, intent removed" is one
// atomic write on DynamoDB as in a Pebble batch.
func (b *Batch) archive(view string, partition int32) *dynArchive {
	id := archiveID{view, partition}
	a := b.ops.archive[id]
	if a == nil {
		a = &dynArchive{}
		b.ops.archive[id] = a
		b.ops.archOrd = append(b.ops.archOrd, id)
	}
	return a
}

func (s *Store) scanViewPartitions(prefix byte, view string, fn func(p int32, val []byte) error) error {
	p := append([]byte{prefix}, appendString(nil, view)...)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) != len(p)+4 {
			continue
		}
		part := int32(binary.BigEndian.Uint32(k[len(p):]))
		val, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if err := fn(part, val); err != nil {
			return fmt.Errorf("%s partition %d: %w", view, part, err)
		}
	}
	return it.Error()
}

// ArchivePath is the path, relative to the offline log's root, of the archive
// file holding the events of one date (UTC midnight, ms) that a partition's
// roll of offsets [first, last] wrote.
func ArchivePath(view string, date int64, partition int32, first, last int64) string {
	return view + "/" + dateDir(date) + "/" + archiveName(partition, first, last)
}
