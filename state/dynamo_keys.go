package state

import (
	"crypto/sha256"
	"encoding/binary"
	"hash/fnv"
)

// DynamoDB item keys (docs/format.md, "DynamoDB online store"). Every pk
// starts with a kind byte; strings are str() (uvarint length, bytes) as in
// Pebble, except the entity key, which ends the pk raw.
const (
	dpkKey      byte = 0x01 // view, incarnation, key → head, summaries, stream tiles, day and detail records
	dpkView     byte = 0x02 // view, incarnation → healer state (M), lease (E)
	dpkGenKeys  byte = 0x03 // view, incarnation, gen, shard → one item per key with a summary of gen
	dpkDayKeys  byte = 0x04 // view, incarnation, gen, day, shard → one item per key with a day record of (gen, day)
	dpkLayout   byte = 0x05 // view → layout fingerprint and incarnation
	dpkArchive  byte = 0x06 // view → per partition: archive progress and intent
	dpkProgress byte = 0x07 // topic → per partition: ingest progress
)

// Sort keys within a key's partition.
const (
	dskHead    byte = 0x01 // head {W_b, gen}
	dskSummary byte = 0x02 // gen → summary
	dskStream  byte = 0x03 // tile start, partition → stream tile
	dskEnd     byte = 0x04 // end of what a key read fetches in one query
	dskDay     byte = 0x05 // gen, day → day record
	dskDetail  byte = 0x06 // gen, day, block → detail record
)

// Sort keys of a view's partition.
var (
	dskMeta  = []byte{'M'}
	dskLease = []byte{'E'}
	dskLay   = []byte{'L'}
)

// listShards spreads the key lists of a generation or a day over this many
// partitions, so a heal writing many keys is not held to one partition's
// throughput.
const listShards = 32

// viewIncPrefix is kind · str(view) · u32be(incarnation). With a view name
// of at most 128 bytes it leaves 2048 − 135 bytes of DynamoDB's partition
// key limit to the entity key (the config caps max_key_bytes below that).
func viewIncPrefix(kind byte, view string, inc uint32) []byte {
	b := appendString([]byte{kind}, view)
	return binary.BigEndian.AppendUint32(b, inc)
}

// maxPKBytes is DynamoDB's partition key limit.
const maxPKBytes = 2048

func keyPK(view string, inc uint32, key string) []byte {
	return append(viewIncPrefix(dpkKey, view, inc), key...)
}

func viewPK(view string, inc uint32) []byte { return viewIncPrefix(dpkView, view, inc) }

func shardOf(key string) byte {
	h := fnv.New32a()
	h.Write([]byte(key))
	return byte(h.Sum32() % listShards)
}

// listSK is the sort key of a key's item in a key list: a hash, since sort
// keys hold at most 1,024 bytes and entity keys up to 1,913; the item's
// attribute k holds the key.
func listSK(key string) []byte {
	h := sha256.Sum256([]byte(key))
	return h[:16]
}

func genKeysPK(view string, inc uint32, gen uint64, shard byte) []byte {
	b := binary.BigEndian.AppendUint64(viewIncPrefix(dpkGenKeys, view, inc), gen)
	return append(b, shard)
}

func dayKeysPK(view string, inc uint32, gen uint64, day int64, shard byte) []byte {
	b := binary.BigEndian.AppendUint64(viewIncPrefix(dpkDayKeys, view, inc), gen)
	return append(appendTime(b, day), shard)
}

func layoutPK(view string) []byte  { return appendString([]byte{dpkLayout}, view) }
func archivePK(view string) []byte { return appendString([]byte{dpkArchive}, view) }
func progressPK(topic string) []byte {
	return appendString([]byte{dpkProgress}, topic)
}

func partitionSK(p int32) []byte { return binary.BigEndian.AppendUint32(nil, uint32(p)) }

var headSK = []byte{dskHead}

func summarySK(gen uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{dskSummary}, gen)
}

func streamSK(tile int64, partition int32) []byte {
	return binary.BigEndian.AppendUint32(appendTime([]byte{dskStream}, tile), uint32(partition))
}

const streamSKLen = 1 + 8 + 4

func daySK(gen uint64, day int64) []byte {
	return appendTime(binary.BigEndian.AppendUint64([]byte{dskDay}, gen), day)
}

func detailSK(gen uint64, day, block int64) []byte {
	return appendTime(appendTime(binary.BigEndian.AppendUint64([]byte{dskDetail}, gen), day), block)
}

// chunkSK is the sort key of chunk i ≥ 1 of a value split over several
// items; version tells the chunk sets of a mutable value apart (0 for
// immutable values).
func chunkSK(base []byte, version uint64, i int) []byte {
	b := append([]byte(nil), base...)
	if version != 0 {
		b = binary.BigEndian.AppendUint64(b, version)
	}
	return binary.BigEndian.AppendUint16(b, uint16(i))
}
