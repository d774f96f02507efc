package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/tilestream/tilestream/tiling"
)

// tablesDir is the directory, inside the Pebble directory, where a heal's
// tables are written before Pebble ingests them. Pebble ignores
// subdirectories; Open empties it (tables of a process that stopped before
// ingesting them).
const tablesDir = "tilestream-tables"

// MinTableRecords is the fewest records worth a table of their own: fewer
// go through a batch, so that small incremental heals do not leave a trail
// of tiny tables.
const MinTableRecords = 2048

// Tables writes a heal generation's records (day and detail records,
// summaries) as sorted tables that Pebble ingests whole: no write-ahead
// log, no memtable, no flush and no compaction, since nothing else lives in
// a new generation's key range. Each kind of record goes into its own
// table and must be put in ascending key order: keys in KeyLess order, a
// key's detail records by ascending block, and for day and detail records
// one day per Tables. Tables is not safe for concurrent use; several may be
// written at once and ingested together.
//
// Nothing is visible before IngestTables; Abort removes the files.
type Tables struct {
	s    *Store
	view string
	gen  uint64
	// One writer per record kind, opened by the first record of the kind.
	w     map[byte]*tableWriter
	n     int
	buf   []byte
	paths []string
	err   error
}

type tableWriter struct {
	w    *sstable.Writer
	last []byte
}

var tableSeq atomic.Uint64

// NewTables returns a table writer for generation gen of v, or nil on
// DynamoDB (which has no tables: callers use a batch).
func (s *Store) NewTables(v *tiling.View, gen uint64) *Tables {
	if s.dyn != nil {
		return nil
	}
	return &Tables{s: s, view: v.Name, gen: gen, w: map[byte]*tableWriter{}}
}

// Len returns the number of records put.
func (t *Tables) Len() int { return t.n }

// PutDayRecordBytes writes a key's day record, encoded
// (tiling.View.AppendDayRecord).
func (t *Tables) PutDayRecordBytes(day int64, key string, val []byte) {
	t.set(prefixDay, dayKey(nil, t.view, t.gen, day, key), val)
}

// PutDetail writes a key's detail record.
func (t *Tables) PutDetail(v *tiling.View, day int64, key string, r *tiling.Record) {
	t.buf = v.AppendDetailRecord(t.buf[:0], r)
	t.PutDetailBytes(day, key, r.Start, t.buf)
}

// PutDetailBytes writes a key's detail record of the block starting at
// block, encoded (tiling.View.AppendDetailRecord).
func (t *Tables) PutDetailBytes(day int64, key string, block int64, val []byte) {
	t.set(prefixDetail, detailKey(nil, t.view, t.gen, day, key, block), val)
}

// PutSummary writes a key's summary.
func (t *Tables) PutSummary(v *tiling.View, key string, s *tiling.Summary) {
	t.buf = v.AppendSummary(t.buf[:0], s)
	t.set(prefixSummary, summaryKey(nil, t.view, t.gen, key), t.buf)
}

func (t *Tables) set(kind byte, key, val []byte) {
	if t.err != nil {
		return
	}
	tw := t.w[kind]
	if tw == nil {
		path := filepath.Join(t.s.path, tablesDir, fmt.Sprintf("%d-%d.sst", os.Getpid(), tableSeq.Add(1)))
		f, err := vfs.Default.Create(path, vfs.WriteCategoryUnspecified)
		if err != nil {
			t.err = fmt.Errorf("create table: %w", err)
			return
		}
		t.paths = append(t.paths, path)
		opts := t.s.opts.MakeWriterOptions(len(t.s.opts.Levels)-1, t.s.db.TableFormat())
		tw = &tableWriter{w: sstable.NewWriter(objstorageprovider.NewFileWritable(f), opts)}
		t.w[kind] = tw
	}
	if tw.last != nil && bytes.Compare(key, tw.last) <= 0 {
		t.err = fmt.Errorf("table of view %s generation %d: keys out of order", t.view, t.gen)
		return
	}
	if err := tw.w.Set(key, val); err != nil {
		t.err = fmt.Errorf("write table: %w", err)
		return
	}
	tw.last = key
	t.n++
}

// close finishes the tables' files (synced by the writer).
func (t *Tables) close() error {
	for kind, tw := range t.w {
		if err := tw.w.Close(); err != nil && t.err == nil {
			t.err = fmt.Errorf("finish table: %w", err)
		}
		delete(t.w, kind)
	}
	return t.err
}

// Abort drops the tables unwritten.
func (t *Tables) Abort() {
	_ = t.close()
	for _, p := range t.paths {
		_ = os.Remove(p)
	}
	t.paths = nil
}

// IngestTables finishes ts and makes their records part of the store, all
// at once and durably. Each one's key ranges must not overlap another's (a
// day per Tables, or summaries). On an error every table is removed and
// none is visible.
func (s *Store) IngestTables(ts ...*Tables) error {
	var paths []string
	var err error
	for _, t := range ts {
		if cerr := t.close(); cerr != nil && err == nil {
			err = cerr
		}
		paths = append(paths, t.paths...)
	}
	if err == nil && len(paths) > 0 {
		if err = s.db.Ingest(context.Background(), paths); err != nil {
			err = fmt.Errorf("ingest %d tables: %w", len(paths), err)
		}
	}
	if err != nil {
		for _, t := range ts {
			t.Abort()
		}
		return err
	}
	for _, t := range ts {
		t.paths = nil
	}
	return nil
}

// resetTables empties the directory of unfinished tables.
func resetTables(path string) error {
	dir := filepath.Join(path, tablesDir)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clear %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return nil
}

// KeyLess orders entity keys as the store's keys order them (a length
// prefix, then the bytes): records written to Tables must come in this
// order.
func KeyLess(a, b string) bool { return KeyCompare(a, b) < 0 }

// KeyCompare orders keys as KeyLess does: -1, 0 or +1 (for slices.SortFunc
// and merges).
func KeyCompare(a, b string) int {
	var pa, pb [binary.MaxVarintLen64]byte
	la := binary.PutUvarint(pa[:], uint64(len(a)))
	lb := binary.PutUvarint(pb[:], uint64(len(b)))
	if c := bytes.Compare(pa[:la], pb[:lb]); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}
