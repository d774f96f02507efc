package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/tilestream/tilestream/tiling"
)

// localCache is the Pebble local cache in front of DynamoDB (docs/format.md,
// "Local cache"). It holds three things:
//
//   - key snapshots: what one query of a key's partition returned (head,
//     summaries, stream tiles) and when it was fetched; a snapshot is served
//     whole while younger than the staleness bound, so a read never pairs a
//     cached head with stream tiles of another time;
//   - generation records (day and detail records) by key, generation and
//     day: immutable, so valid until deleted, whatever their age;
//   - stream tiles this instance wrote (write-through, into the key's
//     snapshot entries too, so its own writes show at once) or read.
//
// The cache may be deleted, corrupted or out of date at any start: a
// directory Pebble cannot open is wiped and rebuilt; a value that does not
// decode is a miss; a snapshot older than the bound is read again; a
// generation record is found under its own generation or not at all (the
// incarnation in every key tells layouts apart, even across a recreated
// table); a stale stream tile only makes the ingest's conditional write
// fail and reload. It never makes a read wrong beyond the staleness bound.
type localCache struct {
	db        *pebble.DB
	dir       string
	staleness time.Duration
	maxBytes  int64
	m         *dynMetrics
	log       *slog.Logger
	now       func() time.Time

	written atomic.Int64 // bytes put since the last size check
}

// Cache key prefixes.
const (
	cacheFormat   byte = 0x00 // → cache format and table name
	cacheSnapMeta byte = 0x01 // pk → fetched (8 bytes ms) and head
	cacheSnapItem byte = 0x02 // pk, sk → item of a key snapshot (summary or stream tile)
	cacheImmut    byte = 0x03 // pk, sk → generation record value
)

// cacheVersion 2: snapshots hold hour segments (a cache of version 1 is
// wiped: it could hold tile items a segment has absorbed since).
const cacheVersion = 2

func openLocalCache(dir, table string, maxBytes int64, staleness time.Duration, m *dynMetrics, log *slog.Logger) (*localCache, error) {
	c := &localCache{dir: dir, staleness: staleness, maxBytes: maxBytes, m: m, log: log, now: time.Now}
	mark := append([]byte{cacheVersion}, table...)
	open := func() error {
		cache := pebble.NewCache(32 << 20)
		defer cache.Unref()
		db, err := pebble.Open(dir, &pebble.Options{Cache: cache, Logger: pebbleLogger{log}})
		if err != nil {
			return err
		}
		val, closer, err := db.Get([]byte{cacheFormat})
		switch {
		case errors.Is(err, pebble.ErrNotFound):
			err = db.Set([]byte{cacheFormat}, mark, pebble.Sync)
		case err == nil:
			same := bytes.Equal(val, mark)
			closer.Close()
			if !same {
				err = fmt.Errorf("the cache belongs to another table or format")
			}
		}
		if err != nil {
			db.Close()
			return err
		}
		c.db = db
		return nil
	}
	if err := open(); err != nil {
		log.Warn("local cache unusable; rebuilding it from DynamoDB", "dir", dir, "err", err)
		if err := os.RemoveAll(dir); err != nil {
			return nil, fmt.Errorf("remove local cache %s: %w", dir, err)
		}
		if err := open(); err != nil {
			return nil, fmt.Errorf("open local cache %s: %w", dir, err)
		}
	}
	c.publishSize()
	return c, nil
}

func (c *localCache) close() error { return c.db.Close() }

func cacheKey(prefix byte, pk, sk []byte) []byte {
	k := make([]byte, 0, 1+binary.MaxVarintLen32+len(pk)+len(sk))
	k = append(k, prefix)
	k = binary.AppendUvarint(k, uint64(len(pk)))
	k = append(k, pk...)
	return append(k, sk...)
}

func (c *localCache) get(k []byte) ([]byte, bool) {
	val, closer, err := c.db.Get(k)
	if err != nil {
		return nil, false
	}
	out := bytes.Clone(val)
	closer.Close()
	return out, true
}

// snap returns the key's snapshot when one younger than the staleness bound
// is cached.
func (c *localCache) snap(v *tiling.View, pk []byte) (*keySnap, bool) {
	meta, ok := c.get(cacheKey(cacheSnapMeta, pk, nil))
	if !ok {
		c.m.cache.WithLabelValues("snapshot", "miss").Inc()
		return nil, false
	}
	s, err := decodeSnapMeta(meta)
	if err != nil {
		c.m.cache.WithLabelValues("snapshot", "miss").Inc()
		return nil, false
	}
	if age := c.now().UnixMilli() - s.fetched; age < 0 || age > c.staleness.Milliseconds() {
		c.m.cache.WithLabelValues("snapshot", "stale").Inc()
		return nil, false
	}
	prefix := cacheKey(cacheSnapItem, pk, nil)
	it, err := c.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, false
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		sk := it.Key()[len(prefix):]
		val, err := it.ValueAndErr()
		if err != nil || len(sk) == 0 {
			c.m.cache.WithLabelValues("snapshot", "miss").Inc()
			return nil, false
		}
		switch {
		case sk[0] == dskSummary && len(sk) == 9:
			s.summaries[binary.BigEndian.Uint64(sk[1:])] = bytes.Clone(val)
		case sk[0] == dskStream && len(sk) == streamSKLen:
			off, n := binary.Varint(val)
			if n <= 0 {
				c.m.cache.WithLabelValues("snapshot", "miss").Inc()
				return nil, false
			}
			s.stream = append(s.stream, streamItem{
				tile: decodeTime(sk[1:9]), part: int32(binary.BigEndian.Uint32(sk[9:])),
				off: off, val: bytes.Clone(val[n:]),
			})
		case isHourSK(sk):
			h, ok := decodeCachedSeg(v, sk, val)
			if !ok {
				c.m.cache.WithLabelValues("snapshot", "miss").Inc()
				return nil, false
			}
			s.hours = append(s.hours, h)
		}
	}
	c.m.cache.WithLabelValues("snapshot", "hit").Inc()
	return s, true
}

// snapMeta: version, fetched (varint ms), 1 and the head's encoding or 0.
func encodeSnapMeta(s *keySnap) []byte {
	b := []byte{cacheVersion}
	b = binary.AppendVarint(b, s.fetched)
	if s.head == nil {
		return append(b, 0)
	}
	return append(append(b, 1), encodeHead(*s.head)...)
}

func decodeSnapMeta(b []byte) (*keySnap, error) {
	if len(b) < 2 || b[0] != cacheVersion {
		return nil, errors.New("bad snapshot version")
	}
	f, n := binary.Varint(b[1:])
	if n <= 0 || len(b) < 2+n {
		return nil, errors.New("bad snapshot time")
	}
	s := &keySnap{fetched: f, summaries: map[uint64][]byte{}}
	rest := b[1+n:]
	if rest[0] == 1 {
		h, err := decodeHead(rest[1:])
		if err != nil {
			return nil, err
		}
		s.head = &h
	}
	return s, nil
}

// putSnap replaces the key's cached snapshot, atomically.
func (c *localCache) putSnap(pk []byte, s *keySnap) {
	b := c.db.NewBatch()
	defer b.Close()
	prefix := cacheKey(cacheSnapItem, pk, nil)
	_ = b.DeleteRange(prefix, prefixEnd(prefix), nil)
	n := 0
	for gen, val := range s.summaries {
		_ = b.Set(append(bytes.Clone(prefix), summarySK(gen)...), val, nil)
		n += len(val)
	}
	for _, it := range s.stream {
		val := binary.AppendVarint(nil, it.off)
		_ = b.Set(append(bytes.Clone(prefix), streamSK(it.tile, it.part)...), append(val, it.val...), nil)
		n += len(it.val)
	}
	for _, h := range s.hours {
		_ = b.Set(append(bytes.Clone(prefix), h.sk...), encodeCachedSeg(h), nil)
		n += len(h.val) + len(h.offs)
	}
	_ = b.Set(cacheKey(cacheSnapMeta, pk, nil), encodeSnapMeta(s), nil)
	if err := b.Commit(pebble.NoSync); err != nil {
		c.log.Warn("local cache write", "err", err)
		return
	}
	c.grew(n)
}

// dropSnap forgets a key's snapshot (its head changed under this instance).
func (c *localCache) dropSnap(pk []byte) {
	_ = c.db.Delete(cacheKey(cacheSnapMeta, pk, nil), pebble.NoSync)
}

// streamItem returns a stream tile this instance last wrote or read.
func (c *localCache) streamItem(pk, sk []byte) ([]byte, int64, bool) {
	val, ok := c.get(append(cacheKey(cacheSnapItem, pk, nil), sk...))
	if !ok {
		c.m.cache.WithLabelValues("stream", "miss").Inc()
		return nil, 0, false
	}
	off, n := binary.Varint(val)
	if n <= 0 {
		c.m.cache.WithLabelValues("stream", "miss").Inc()
		return nil, 0, false
	}
	c.m.cache.WithLabelValues("stream", "hit").Inc()
	return val[n:], off, true
}

// putStreamItem writes a tile this instance wrote through to the cache, into
// the key's snapshot entries: its next read sees it within the staleness
// bound of the rest of the snapshot, and a stream tile is never older than
// the head it is served with (the ingest writes tiles whatever the head).
func (c *localCache) putStreamItem(pk, sk, v []byte, off int64) {
	val := binary.AppendVarint(nil, off)
	if err := c.db.Set(append(cacheKey(cacheSnapItem, pk, nil), sk...), append(val, v...), pebble.NoSync); err != nil {
		c.log.Warn("local cache write", "err", err)
		return
	}
	c.grew(len(v))
}

// putHourSeg writes a span's segment this instance wrote or read while
// rolling up through to the cache, into the key's snapshot entries (a
// segment is never older than the tile items it is served with: it only
// makes those it holds stop counting).
func (c *localCache) putHourSeg(pk []byte, h hourSeg) {
	if err := c.db.Set(append(cacheKey(cacheSnapItem, pk, nil), h.sk...), encodeCachedSeg(h), pebble.NoSync); err != nil {
		c.log.Warn("local cache write", "err", err)
		return
	}
	c.grew(len(h.val) + len(h.offs))
}

// A cached segment: varint version, byte closed, uvarint len(offsets),
// offsets, value.
func encodeCachedSeg(h hourSeg) []byte {
	b := binary.AppendVarint(nil, h.ver)
	closed := byte(0)
	if h.closed {
		closed = 1
	}
	b = append(b, closed)
	b = binary.AppendUvarint(b, uint64(len(h.offs)))
	b = append(b, h.offs...)
	return append(b, h.val...)
}

func decodeCachedSeg(v *tiling.View, sk, b []byte) (hourSeg, bool) {
	ver, n := binary.Varint(b)
	if n <= 0 || len(b) < n+1 {
		return hourSeg{}, false
	}
	closed := b[n] == 1
	b = b[n+1:]
	l, m := binary.Uvarint(b)
	if m <= 0 || uint64(len(b)-m) < l {
		return hourSeg{}, false
	}
	offs := bytes.Clone(b[m : m+int(l)])
	val := bytes.Clone(b[m+int(l):])
	return hourSeg{
		sk:     bytes.Clone(sk),
		hour:   v.RecordStart(decodeTime(sk[1:9])),
		seg:    int(binary.BigEndian.Uint16(sk[streamSKLen+1:])),
		ver:    ver,
		closed: closed,
		val:    val,
		offs:   offs,
	}, true
}

func (c *localCache) dropStreamItem(pk, sk []byte) {
	_ = c.db.Delete(append(cacheKey(cacheSnapItem, pk, nil), sk...), pebble.NoSync)
}

// immutable returns a cached generation record.
func (c *localCache) immutable(pk, sk []byte) ([]byte, bool) {
	val, ok := c.get(cacheKey(cacheImmut, pk, sk))
	if !ok {
		c.m.cache.WithLabelValues("generation", "miss").Inc()
		return nil, false
	}
	c.m.cache.WithLabelValues("generation", "hit").Inc()
	return val, true
}

func (c *localCache) putImmutable(pk, sk, val []byte) {
	if err := c.db.Set(cacheKey(cacheImmut, pk, sk), val, pebble.NoSync); err != nil {
		c.log.Warn("local cache write", "err", err)
		return
	}
	c.grew(len(val))
}

// grew counts bytes written; every 4 MiB it checks the cache's size and,
// past the bound, empties it (it refills from DynamoDB). Emptying whole is
// cruder than evicting the coldest entries but cannot leave a snapshot torn.
func (c *localCache) grew(n int) {
	if c.written.Add(int64(n)) < 4<<20 {
		return
	}
	c.written.Store(0)
	if c.publishSize() <= c.maxBytes {
		return
	}
	c.m.cacheEvictions.Inc()
	c.log.Info("local cache over its size bound; emptying it", "dir", c.dir, "max_bytes", c.maxBytes)
	for _, p := range []byte{cacheSnapMeta, cacheSnapItem, cacheImmut} {
		if err := c.db.DeleteRange([]byte{p}, []byte{p + 1}, pebble.NoSync); err != nil {
			c.log.Warn("empty local cache", "err", err)
			return
		}
	}
	if err := c.db.Compact(context.Background(), []byte{cacheSnapMeta}, []byte{cacheImmut + 1}, true); err != nil {
		c.log.Warn("compact local cache", "err", err)
	}
	c.publishSize()
}

func (c *localCache) publishSize() int64 {
	n := int64(c.db.Metrics().DiskSpaceUsage())
	c.m.cacheBytes.Set(float64(n))
	return n
}
