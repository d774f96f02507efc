package benchmarks

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io/fs"
	"math"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
)

// The naive scan: raw events in an embedded Pebble, one entry per event
// (key 0x00 ts seq → amount), and a read that scans the key's events up to
// the end of the current minute and aggregates them into every window. It
// is tilestream with tiling switched off: what an embedded store costs when
// every read touches every event.

// scanKey is key 0x00, then ts and seq big-endian (events of a key in time
// order). Keys never hold 0x00 here.
func scanKey(b []byte, key string, ts int64, seq uint32) []byte {
	b = append(b, key...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint64(b, uint64(ts))
	return binary.BigEndian.AppendUint32(b, seq)
}

// quietPebble is a Pebble logger that drops its info lines.
type quietPebble struct{}

func (quietPebble) Infof(string, ...any)           {}
func (quietPebble) Errorf(string, ...any)          {}
func (quietPebble) Fatalf(format string, a ...any) { panic(fmt.Sprintf(format, a...)) }

// openScanDB opens the naive scan's Pebble with the same block cache as
// tilestream's store (state.DefaultConfig: 64 MiB).
func openScanDB(dir string) (*pebble.DB, error) {
	cache := pebble.NewCache(64 << 20)
	defer cache.Unref()
	return pebble.Open(dir, &pebble.Options{Cache: cache, Logger: quietPebble{}})
}

// scanLoader writes a level's events in unsynced batches, then flushes.
type scanLoader struct {
	db  *pebble.DB
	b   *pebble.Batch
	buf []byte
	err error
}

func newScanLoader(db *pebble.DB) *scanLoader { return &scanLoader{db: db, b: db.NewBatch()} }

func (l *scanLoader) event(key string, seq int, ts int64, cents int64) {
	l.buf = scanKey(l.buf[:0], key, ts, uint32(seq))
	var v [8]byte
	binary.LittleEndian.PutUint64(v[:], math.Float64bits(centsAmount(cents)))
	l.b.Set(l.buf, v[:], nil)
	if l.b.Count() >= 100_000 {
		l.commit()
	}
}

func (l *scanLoader) endKey(string) {}

func (l *scanLoader) commit() {
	if err := l.b.Commit(pebble.NoSync); err != nil && l.err == nil {
		l.err = err
	}
	l.b = l.db.NewBatch()
}

// finish commits what is left and flushes the memtable.
func (l *scanLoader) finish() error {
	l.commit()
	if l.err != nil {
		return l.err
	}
	return l.db.Flush()
}

// readScan scans each key's events and aggregates them.
func readScan(ctx context.Context, db *pebble.DB, b bounds, keys []string) ([]keyAggs, error) {
	out := make([]keyAggs, len(keys))
	var lo, hi []byte
	for i, k := range keys {
		lo = append(append(lo[:0], k...), 0)
		hi = binary.BigEndian.AppendUint64(append(append(hi[:0], k...), 0), uint64(b.end))
		it, err := db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			return nil, err
		}
		for ok := it.First(); ok; ok = it.Next() {
			kb := it.Key()
			ts := int64(binary.BigEndian.Uint64(kb[len(k)+1:]))
			v, err := it.ValueAndErr()
			if err != nil {
				it.Close()
				return nil, err
			}
			b.add(&out[i], ts, math.Float64frombits(binary.LittleEndian.Uint64(v)))
		}
		if err := it.Close(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// compactedSize compacts the Pebble at dir whole (a closed store, tilestream's
// or the naive scan's) and returns the bytes of its files: what the data
// takes on disk once the LSM has settled. blooms writes the bloom filters
// tilestream's store writes (state.Open: 10 bits per key).
func compactedSize(dir string, blooms bool) (int64, error) {
	opts := &pebble.Options{Logger: quietPebble{}}
	if blooms {
		for i := range opts.Levels {
			opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		}
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return 0, err
	}
	if err := db.Compact(context.Background(), []byte{0}, bytes.Repeat([]byte{0xff}, 32), true); err != nil {
		db.Close()
		return 0, err
	}
	if err := db.Close(); err != nil {
		return 0, err
	}
	return dirSize(dir)
}

// dirSize is the total size of the regular files under dir.
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n += fi.Size()
		return nil
	})
	return n, err
}
