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
