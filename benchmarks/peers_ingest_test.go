package benchmarks

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fastjson"
)

// The peers' ingest: a plain consumer reads the same topic as tilestream
// (every partition from the start, no consumer group), decodes each JSON
// event and writes it to the peer, one pipeline (or batch) per fetch, up to
// 1,000 commands a round trip. The Redis servers run without persistence
// and the consumer commits no offsets: their figure is an upper bound for a
// design that is neither durable nor exactly once (a replay adds the
// bucket's events again).

// peerEvent is a decoded event.
type peerEvent struct {
	key       string
	ts        int64
	amount    float64
	partition int32
	offset    int64
}

// peerIngestSink writes decoded events to a peer.
type peerIngestSink interface {
	write(ctx context.Context, evs []peerEvent) error
}

// redisRawSink: ZADD key ts "<partition>:<offset>:<amount>" per event (the
// member names the event, so a replay rewrites it instead of adding it).
type redisRawSink struct{ c *redis.Client }

func (s redisRawSink) write(ctx context.Context, evs []peerEvent) error {
	for len(evs) > 0 {
		n := min(len(evs), 1000)
		pipe := s.c.Pipeline()
		var b []byte
		for _, e := range evs[:n] {
			b = strconv.AppendInt(b[:0], int64(e.partition), 10)
			b = append(b, ':')
			b = strconv.AppendInt(b, e.offset, 10)
			b = append(b, ':')
			b = strconv.AppendFloat(b, e.amount, 'f', -1, 64)
			pipe.ZAdd(ctx, e.key, redis.Z{Score: float64(e.ts), Member: string(b)})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
		evs = evs[n:]
	}
	return nil
}

// bucketScript updates an event's minute bucket: sum and count with
// HINCRBYFLOAT and HINCRBY, min and max by compare and set, atomically.
var bucketScript = redis.NewScript(`
local m, a = ARGV[1], tonumber(ARGV[2])
redis.call('HINCRBYFLOAT', KEYS[1], m .. ':s', ARGV[2])
redis.call('HINCRBY', KEYS[1], m .. ':c', 1)
local lo = redis.call('HGET', KEYS[1], m .. ':n')
if not lo or a < tonumber(lo) then redis.call('HSET', KEYS[1], m .. ':n', ARGV[2]) end
local hi = redis.call('HGET', KEYS[1], m .. ':x')
if not hi or a > tonumber(hi) then redis.call('HSET', KEYS[1], m .. ':x', ARGV[2]) end
return 1
`)

type redisBucketSink struct{ c *redis.Client }

func (s redisBucketSink) write(ctx context.Context, evs []peerEvent) error {
	for len(evs) > 0 {
		n := min(len(evs), 1000)
		pipe := s.c.Pipeline()
		for _, e := range evs[:n] {
			bucketScript.EvalSha(ctx, pipe, []string{e.key}, e.ts/60_000, strconv.FormatFloat(e.amount, 'f', -1, 64))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
		evs = evs[n:]
	}
	return nil
}

// scanSink writes raw events to the naive scan's Pebble, one synced batch
// per fetch (durable before the next poll, as tilestream's flushes are).
type scanSink struct{ db *pebble.DB }

func (s scanSink) write(_ context.Context, evs []peerEvent) error {
	b := s.db.NewBatch()
	var k []byte
	for _, e := range evs {
		// seq: the offset's low 32 bits and the partition keep events of
		// a key at one ms apart.
		k = scanKey(k[:0], e.key, e.ts, uint32(e.offset)<<4|uint32(e.partition&15))
		var v [8]byte
		binary.LittleEndian.PutUint64(v[:], math.Float64bits(e.amount))
		b.Set(k, v[:], nil)
	}
	return b.Commit(pebble.Sync)
}

// consumePeer reads n events from the topic into sink and returns the time
// it took, from the consumer's start to the last write acknowledged.
func consumePeer(tb testing.TB, brokers []string, n int, sink peerIngestSink) time.Duration {
	tb.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		tb.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var p fastjson.Parser
	evs := make([]peerEvent, 0, 10_000)
	start := time.Now()
	got := 0
	for got < n {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			tb.Fatalf("consume: %v", err)
		}
		if errs := fs.Errors(); len(errs) > 0 {
			tb.Fatalf("consume: %v", errs[0].Err)
		}
		evs = evs[:0]
		var bad error
		fs.EachRecord(func(r *kgo.Record) {
			v, err := p.ParseBytes(r.Value)
			if err != nil {
				bad = err
				return
			}
			evs = append(evs, peerEvent{key: string(v.GetStringBytes("user_id")), ts: v.GetInt64("ts"),
				amount: v.GetFloat64("amount"), partition: r.Partition, offset: r.Offset})
		})
		if bad != nil {
			tb.Fatalf("decode: %v", bad)
		}
		if err := sink.write(ctx, evs); err != nil {
			tb.Fatalf("write: %v", err)
		}
		got += len(evs)
	}
	if got != n {
		tb.Fatalf("consumed %d events, want %d", got, n)
	}
	return time.Since(start)
}

// loadBucketScript loads the Lua script so pipelines can EVALSHA it.
func loadBucketScript(tb testing.TB, c *redis.Client) {
	tb.Helper()
	if err := bucketScript.Load(context.Background(), c).Err(); err != nil {
		tb.Fatal(fmt.Errorf("load script: %w", err))
	}
}
