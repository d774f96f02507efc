package state

import (
	"encoding/binary"
)

// Key prefixes of the Pebble online store (docs/format.md).
const (
	prefixRecord   byte = 0x01 // stream record: view, key, record start → tiling record
	prefixProgress byte = 0x02 // ingest progress: topic, partition → Progress
	prefixView     byte = 0x03 // view metadata: view → fingerprint
)

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// appendTime appends t so that byte order is numeric order (sign bit flipped,
// big-endian).
func appendTime(dst []byte, t int64) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(t)^(1<<63))
}

func decodeTime(b []byte) int64 { return int64(binary.BigEndian.Uint64(b) ^ (1 << 63)) }

// recordPrefix is the prefix of every stream record of (view, key).
func recordPrefix(dst []byte, view, key string) []byte {
	dst = append(dst, prefixRecord)
	dst = appendString(dst, view)
	return appendString(dst, key)
}

func recordKey(dst []byte, view, key string, start int64) []byte {
	return appendTime(recordPrefix(dst, view, key), start)
}

func progressKey(dst []byte, topic string, partition int32) []byte {
	dst = append(dst, prefixProgress)
	dst = appendString(dst, topic)
	return binary.BigEndian.AppendUint32(dst, uint32(partition))
}

func viewKey(dst []byte, view string) []byte {
	dst = append(dst, prefixView)
	return appendString(dst, view)
}

// Batch and healer prefixes (docs/format.md, "Batch records").
const (
	prefixHead    byte = 0x04 // view, key → head {W_b, gen}
	prefixSummary byte = 0x05 // view, gen, key → tiling summary
	prefixDay     byte = 0x06 // view, gen, day, key → day record (block aggregates)
	prefixDetail  byte = 0x07 // view, gen, day, key, block → detail record (tiles)
	prefixHeal    byte = 0x08 // view → healer state (JSON)
	prefixArchive byte = 0x09 // view, partition → archive progress
	prefixIntent  byte = 0x0a // view, partition → archive intent (files being written)
)

func headKey(dst []byte, view, key string) []byte {
	dst = append(dst, prefixHead)
	dst = appendString(dst, view)
	return appendString(dst, key)
}

func genPrefix(dst []byte, prefix byte, view string, gen uint64) []byte {
	dst = append(dst, prefix)
	dst = appendString(dst, view)
	return binary.BigEndian.AppendUint64(dst, gen)
}

func summaryKey(dst []byte, view string, gen uint64, key string) []byte {
	return appendString(genPrefix(dst, prefixSummary, view, gen), key)
}

func dayPrefix(dst []byte, prefix byte, view string, gen uint64, day int64) []byte {
	return appendTime(genPrefix(dst, prefix, view, gen), day)
}

func dayKey(dst []byte, view string, gen uint64, day int64, key string) []byte {
	return appendString(dayPrefix(dst, prefixDay, view, gen, day), key)
}

func detailKey(dst []byte, view string, gen uint64, day int64, key string, block int64) []byte {
	return appendTime(appendString(dayPrefix(dst, prefixDetail, view, gen, day), key), block)
}

func viewPartitionKey(dst []byte, prefix byte, view string, partition int32) []byte {
	dst = append(dst, prefix)
	dst = appendString(dst, view)
	return binary.BigEndian.AppendUint32(dst, uint32(partition))
}

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
