package ingest

import (
	"hash/maphash"
	"math/bits"
)

// known is a Bloom filter of the stream records the store may hold, so that
// the applier reads from Pebble only records that can exist: on a fresh
// store or a replay of new hours nearly every (key, hour) record is new, and
// each read of a missing record costs a Pebble point lookup through every
// level. It has no false negatives: every record in the store was either
// found by the scan that filled the filter or created by this applier since
// (added when created), and on Pebble nothing else writes stream records
// while the ingest runs (a rebuild runs before it; the healer only deletes
// them). A false positive costs the read the filter saves.
type known struct {
	bits []uint64
	mask uint64 // bit count − 1 (a power of two)
	n    int    // records added
	cap  int    // records it holds at about 1% false positives
}

const (
	// knownBitsPerRecord and knownProbes give about 1% false positives at
	// capacity.
	knownBitsPerRecord = 10
	knownProbes        = 7
	// knownMin is the smallest capacity of the filters of an applier, in
	// records (1.2 MiB).
	knownMin = 1 << 20
	// knownMax is the most stored records an applier's filters cover (at
	// most 32 MiB of filters, bits rounded up to a power of two, and 64
	// MiB of hashes while they are filled); with more stream records in
	// the store, the filters are dropped and every record is read.
	knownMax = 8 << 20
)

func newKnown(capacity int) *known {
	m := uint64(1) << bits.Len64(uint64(max(capacity*knownBitsPerRecord, 64)-1))
	return &known{bits: make([]uint64, m/64), mask: m - 1, cap: capacity}
}

func (f *known) add(h uint64) {
	h1, h2 := h, h>>32|1
	for i := range uint64(knownProbes) {
		b := (h1 + i*h2) & f.mask
		f.bits[b/64] |= 1 << (b % 64)
	}
	f.n++
}

func (f *known) has(h uint64) bool {
	h1, h2 := h, h>>32|1
	for i := range uint64(knownProbes) {
		b := (h1 + i*h2) & f.mask
		if f.bits[b/64]&(1<<(b%64)) == 0 {
			return false
		}
	}
	return true
}

// recordHash is the filter hash of a record: its key's hash (keyHash, from
// the applier's seed) mixed with its view and start.
func recordHash(keyHash uint64, view int, start int64) uint64 {
	x := keyHash ^ uint64(start)*0x9e3779b97f4a7c15 ^ uint64(view+1)*0xd6e8feb86659fd93
	// splitmix64's finalizer
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// recordScanner lists the stream records of a view (Pebble).
type recordScanner interface {
	ScanStreamRecords(view string, fn func(key []byte, start int64)) error
}

// prepareKnown makes the shards' filters ready for a poll of up to incoming
// events: at first use, or when one may fill past its capacity, it scans the
// store's stream records into new filters twice as large as what the store
// and the cache may hold, plus every cached record. Only on Pebble (one
// writer); on DynamoDB, and once the store holds more than knownMax records,
// the shards have no filter and every record is read. mu is held.
func (a *applier) prepareKnown(incoming int) error {
	if a.knownOff || a.layout.PerPartition {
		return nil
	}
	sc, ok := a.store.(recordScanner)
	if !ok {
		a.knownOff = true
		return nil
	}
	need, total := !a.knownReady, 0
	for _, s := range a.shards {
		if s.known != nil {
			total += s.known.n
			need = need || s.known.n+incoming > s.known.cap
		}
	}
	if !need {
		return nil
	}
	hashes := make([][]uint64, len(a.shards))
	found := 0
	for vi, v := range a.views {
		if err := sc.ScanStreamRecords(v.Name, func(key []byte, start int64) {
			found++
			if found > knownMax {
				return
			}
			kh := maphash.Bytes(a.seed, key)
			si := a.shardOfHash(kh)
			hashes[si] = append(hashes[si], recordHash(kh, vi, start))
		}); err != nil {
			return err
		}
	}
	for _, s := range a.shards {
		found += len(s.records)
	}
	capacity := max(2*max(found, total)+len(a.shards)*incoming, a.knownMin)
	a.knownReady = true
	if found > knownMax || capacity > 2*knownMax {
		a.knownOff = true
		for _, s := range a.shards {
			s.known = nil
		}
		return nil
	}
	for si, s := range a.shards {
		s.known = newKnown(capacity / len(a.shards))
		for _, h := range hashes[si] {
			s.known.add(h)
		}
		for id := range s.records {
			s.known.add(recordHash(maphash.String(a.seed, id.key), id.view, id.start))
		}
	}
	a.knownScans++
	return nil
}
