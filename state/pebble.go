package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"

	"github.com/tilestream/tilestream/tiling"
)

// Config configures the online store.
type Config struct {
	// Path is the Pebble directory. Required.
	Path string
	// CacheBytes is Pebble's block cache size in bytes. Default 64 MiB.
	CacheBytes int64
}

// DefaultConfig returns the defaults; Path must still be set.
func DefaultConfig() Config { return Config{CacheBytes: 64 << 20} }

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Path == "" {
		errs = append(errs, errors.New("store: path is required"))
	}
	if c.CacheBytes < 0 {
		errs = append(errs, errors.New("store: cache_bytes must not be negative"))
	}
	return errors.Join(errs...)
}

// Store is the online store: Pebble embedded (Open) or DynamoDB with a
// Pebble local cache (OpenDynamo). It is safe for concurrent use.
type Store struct {
	db  *pebble.DB // Pebble; nil on DynamoDB
	dyn *dynStore  // DynamoDB; nil on Pebble
	log *slog.Logger
	// opts and path: Pebble's, for the tables a heal ingests (tables.go).
	opts *pebble.Options
	path string

	mu struct {
		sync.Mutex
		closed bool
	}
}

// Open opens (creating if needed) the store at cfg.Path.
func Open(cfg Config, log *slog.Logger) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.CacheBytes == 0 {
		cfg.CacheBytes = DefaultConfig().CacheBytes
	}
	cache := pebble.NewCache(cfg.CacheBytes)
	defer cache.Unref()
	opts := &pebble.Options{
		Cache:  cache,
		Logger: pebbleLogger{log},
	}
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	opts.EnsureDefaults() // the tables a heal writes take their settings from opts
	db, err := pebble.Open(cfg.Path, opts)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", cfg.Path, err)
	}
	if err := resetTables(cfg.Path); err != nil {
		_ = db.Close()
		return nil, err
	}
	return &Store{db: db, log: log, opts: opts, path: cfg.Path}, nil
}

// Close closes the store; it is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return nil
	}
	s.mu.closed = true
	if s.dyn != nil {
		return s.dyn.close()
	}
	return s.db.Close()
}

// StreamLayout says how a store keeps stream records.
type StreamLayout struct {
	// PerTile: each stored unit is one tile (else one record span).
	PerTile bool
	// PerPartition: each unit holds the events of one Kafka partition and is
	// written only by the partition's owner, conditioned on the version it
	// read (else one unit holds every partition's events).
	PerPartition bool
}

// StreamLayout returns the store's layout of stream records: per record
// span with every partition merged on Pebble (one process writes), per tile
// and partition on DynamoDB (docs/format.md).
func (s *Store) StreamLayout() StreamLayout {
	if s.dyn != nil {
		return StreamLayout{PerTile: true, PerPartition: true}
	}
	return StreamLayout{}
}

// UnitStart returns the start of the stream unit holding time ts.
func (l StreamLayout) UnitStart(v *tiling.View, ts int64) int64 {
	if l.PerTile {
		return tiling.AlignDown(ts, v.Granularity)
	}
	return v.RecordStart(ts)
}

// LoadRecord returns the stored stream unit of (view, key) starting at start
// for partition part (-1 when units are not per partition), with the version
// a conditional write of it must name (-1: absent; 0 on Pebble, which has no
// versions), or nil when there is none.
func (s *Store) LoadRecord(v *tiling.View, key string, start int64, part int32) (*tiling.Record, int64, error) {
	if s.dyn != nil {
		return s.dyn.loadRecord(v, key, start, part)
	}
	r, err := s.GetRecord(v, key, start)
	return r, 0, err
}

// GetRecord returns the stored record of (view, key) starting at start, or nil
// when there is none.
func (s *Store) GetRecord(v *tiling.View, key string, start int64) (*tiling.Record, error) {
	if s.dyn != nil {
		return s.dyn.getRecord(v, key, start)
	}
	k := recordKey(nil, v.Name, key, start)
	val, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get record %s/%q@%d: %w", v.Name, key, start, err)
	}
	defer closer.Close()
	r, err := v.DecodeRecord(start, val)
	if err != nil {
		return nil, fmt.Errorf("decode record %s/%q@%d: %w", v.Name, key, start, err)
	}
	return r, nil
}

// streamRecords returns the stream records of (view, key) that hold event
// times in [from, to), ascending: one Pebble range of one key prefix. The
// records hold only their tiles from from on.
func (s *Store) streamRecords(ctx context.Context, v *tiling.View, key string, from, to int64) ([]*tiling.Record, error) {
	var out []*tiling.Record
	prefix := recordPrefix(make([]byte, 0, 64), v.Name, key)
	lower := appendTime(bytes.Clone(prefix), v.RecordStart(from))
	upper := appendTime(prefix, to)
	it, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("read %s/%q: %w", v.Name, key, err)
	}
	n := len(upper) - 8
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) != n+8 {
			it.Close()
			return nil, fmt.Errorf("read %s/%q: bad key length %d", v.Name, key, len(k))
		}
		start := decodeTime(k[n:])
		val, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return nil, fmt.Errorf("read %s/%q: %w", v.Name, key, err)
		}
		// The first record may start before from (W_b or the earliest
		// window start): its tiles before from are checked, not kept.
		r, err := v.DecodeRecordFrom(start, val, from)
		if err != nil {
			it.Close()
			return nil, fmt.Errorf("decode record %s/%q@%d: %w", v.Name, key, start, err)
		}
		out = append(out, r)
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("read %s/%q: %w", v.Name, key, err)
	}
	return out, nil
}

// Progress is what ingest has made durable for one partition.
type Progress struct {
	// Next is the offset of the first event not yet in the records: every
	// event of the partition below it is applied (or rejected).
	Next int64
	// MaxEventTime is the largest event time applied, ms; tiling.MinTime if none.
	MaxEventTime int64
}

const progressVersion = 1

// Batch collects mutations that Commit applies: atomically on Pebble; on
// DynamoDB in the phases of dynOps, each item atomically.
type Batch struct {
	b   *pebble.Batch // Pebble
	d   *dynStore     // DynamoDB
	ops *dynOps       // DynamoDB
	err error         // DynamoDB: a mutation that could not be prepared
	buf []byte
	n   int
	// days accumulates, on DynamoDB, the detail blocks of each (view, gen,
	// day, key) until its day record is put (the day's key list names them).
	days map[dayListID][]byte
}

type dayListID struct {
	view string
	gen  uint64
	day  int64
	key  string
}

// NewBatch starts a batch.
func (s *Store) NewBatch() *Batch {
	if s.dyn != nil {
		return &Batch{d: s.dyn, ops: &dynOps{archive: map[archiveID]*dynArchive{}}}
	}
	return &Batch{b: s.db.NewBatch()}
}

// Len returns the number of records put in the batch.
func (b *Batch) Len() int { return b.n }

// PutRecord writes r whole, replacing the stored one. On DynamoDB r must
// hold the events of at most one partition; each of its tiles becomes a unit,
// written unconditionally (for rebuilds, with no ingest running).
func (b *Batch) PutRecord(v *tiling.View, key string, r *tiling.Record) {
	if b.ops != nil {
		part := int32(0)
		switch len(r.Offsets) {
		case 0:
		case 1:
			part = r.Offsets[0].Partition
		default:
			b.fail(fmt.Errorf("put record %s/%q@%d: DynamoDB keeps stream tiles per partition; this record holds %d", v.Name, key, r.Start, len(r.Offsets)))
			return
		}
		for i := range r.Tiles {
			one := &tiling.Record{Start: r.Start, Offsets: r.Offsets, Tiles: r.Tiles[i : i+1]}
			b.PutRecordIf(v, key, r.Tiles[i].Start, part, one, Unconditional)
		}
		return
	}
	b.buf = v.AppendRecord(b.buf[:0], r)
	_ = b.b.Set(recordKey(nil, v.Name, key, r.Start), b.buf, nil)
	b.n++
}

// Unconditional, as the version of PutRecordIf, writes whatever is stored.
const Unconditional int64 = -2

// PutRecordIf writes the stream unit of (view, key) starting at start for
// partition part (see LoadRecord), conditioned on the stored unit being at
// version prev (-1: absent; Unconditional: any). On Pebble it is PutRecord.
// On DynamoDB the unit is one tile and r has no other; Commit reports units
// whose condition failed in a *WriteError.
func (b *Batch) PutRecordIf(v *tiling.View, key string, start int64, part int32, r *tiling.Record, prev int64) {
	if b.ops == nil {
		b.PutRecord(v, key, r)
		return
	}
	var off int64
	for _, o := range r.Offsets {
		if o.Partition == part {
			off = o.Offset
		}
	}
	b.ops.records = append(b.ops.records, dynRecord{v: v, key: key, tile: start, part: part,
		val: v.AppendRecord(nil, r), off: off, prev: prev, force: prev == Unconditional})
	b.n++
}

func (b *Batch) fail(err error) {
	if b.err == nil {
		b.err = err
	}
}

// SetProgress records a partition's progress.
func (b *Batch) SetProgress(topic string, partition int32, p Progress) {
	if b.ops != nil {
		b.ops.prog = append(b.ops.prog, dynProgress{topic, partition, p})
		return
	}
	val := []byte{progressVersion}
	val = binary.AppendVarint(val, p.Next)
	val = binary.AppendVarint(val, p.MaxEventTime)
	_ = b.b.Set(progressKey(nil, topic, partition), val, nil)
}

// Commit applies b atomically and durably (fsync), then releases it. On
// DynamoDB it applies b's phases in order (see dynOps), and a *WriteError
// reports conditional stream writes that did not hold.
func (s *Store) Commit(b *Batch) error {
	if b.ops != nil {
		if b.err != nil {
			return b.err
		}
		return s.dyn.commit(b)
	}
	defer b.b.Close()
	if err := s.db.Apply(b.b, pebble.Sync); err != nil {
		return fmt.Errorf("commit batch of %d records: %w", b.n, err)
	}
	return nil
}

// CommitNoSync applies b atomically without waiting for the disk: for bulk
// writes that nothing references until a later synced commit (a heal's
// generation records before its head switch), since Pebble's log keeps
// writes in order and syncing a later batch makes the earlier ones durable.
func (s *Store) CommitNoSync(b *Batch) error {
	if b.ops != nil {
		return s.Commit(b)
	}
	defer b.b.Close()
	if err := s.db.Apply(b.b, pebble.NoSync); err != nil {
		return fmt.Errorf("commit batch of %d records: %w", b.n, err)
	}
	return nil
}

// Progress returns the recorded progress of every partition of topic.
func (s *Store) Progress(topic string) (map[int32]Progress, error) {
	if s.dyn != nil {
		return s.dyn.progress(topic)
	}
	prefix := append([]byte{prefixProgress}, appendString(nil, topic)...)
	upper := append(bytes.Clone(prefix), 0xff, 0xff, 0xff, 0xff, 0xff)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("read progress of %s: %w", topic, err)
	}
	defer it.Close()
	out := map[int32]Progress{}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) != len(prefix)+4 {
			continue
		}
		p := int32(binary.BigEndian.Uint32(k[len(prefix):]))
		val, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("read progress of %s/%d: %w", topic, p, err)
		}
		pr, err := decodeProgress(val)
		if err != nil {
			return nil, fmt.Errorf("progress of %s/%d: %w", topic, p, err)
		}
		out[p] = pr
	}
	return out, nil
}

func decodeProgress(b []byte) (Progress, error) {
	if len(b) < 1 || b[0] != progressVersion {
		return Progress{}, errors.New("bad progress version")
	}
	b = b[1:]
	next, n := binary.Varint(b)
	if n <= 0 {
		return Progress{}, errors.New("bad progress offset")
	}
	maxTS, m := binary.Varint(b[n:])
	if m <= 0 {
		return Progress{}, errors.New("bad progress time")
	}
	return Progress{Next: next, MaxEventTime: maxTS}, nil
}

// rebuildMark follows the fingerprint while a view is being rebuilt.
const rebuildMark = "+rebuild"

// CheckLayout compares the view's layout with the stored one and records it
// on first use; it reports whether the view must be rebuilt from the
// offline log (CheckLayoutStatus has the whole story). A rebuild deletes
// every record of the view in the online store (stream records, heads,
// batch records, the healer's state) and is reported until FinishRebuild.
// Ingest and archive progress are kept.
//
// On DynamoDB the view moves to a new incarnation instead of deleting its
// items (docs/format.md).
func (s *Store) CheckLayout(ctx context.Context, v *tiling.View) (rebuild bool, err error) {
	st, err := s.CheckLayoutStatus(ctx, v)
	return st.Rebuild, err
}

// FinishRebuild marks the view's rebuild done.
func (s *Store) FinishRebuild(v *tiling.View) error {
	if s.dyn != nil {
		return s.dyn.finishRebuild(v)
	}
	return s.writeLayout(v.Name, layoutMeta{Fingerprint: v.Fingerprint(), Layout: v.Layout()})
}

// pebbleLogger routes Pebble's log lines to slog.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
	panic(fmt.Sprintf(format, args...))
}

// ScanStreamRecords calls fn with the key and start of every stream record of
// view, in key order, without decoding them (Pebble only): the ingest learns
// which records exist, so it reads only those. key is valid only during the
// call. DynamoDB has no such scan.
func (s *Store) ScanStreamRecords(view string, fn func(key []byte, start int64)) error {
	if s.dyn != nil {
		return errors.New("state: DynamoDB has no scan of stream records")
	}
	p := append([]byte{prefixRecord}, appendString(nil, view)...)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return fmt.Errorf("scan stream records of %s: %w", view, err)
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()[len(p):]
		n, m := binary.Uvarint(k)
		if m <= 0 || uint64(len(k)-m) != n+8 {
			return fmt.Errorf("scan stream records of %s: bad key", view)
		}
		fn(k[m:m+int(n)], decodeTime(k[m+int(n):]))
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("scan stream records of %s: %w", view, err)
	}
	return nil
}

// PutRecordBytes writes a stream record that v.AppendRecord encoded already
// (Pebble only; on DynamoDB the batch fails): the ingest encodes the records
// of a flush in parallel, then adds them here in one go.
func (b *Batch) PutRecordBytes(view, key string, start int64, val []byte) {
	if b.ops != nil {
		b.fail(fmt.Errorf("put record %s/%q@%d: encoded records are for Pebble only", view, key, start))
		return
	}
	_ = b.b.Set(recordKey(nil, view, key, start), val, nil)
	b.n++
}
