package benchmarks

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The two Redis designs a team builds instead of tilestream, on Debian's
// redis-server started here on a free loopback port without persistence
// (--save '' --appendonly no), one fresh server per data set and design, so
// its memory and CPU figures are its own.
//
//   - redis-raw: one sorted set per key, members "<seq>:<amount>" scored by
//     event time. A read is one ZRANGE BYSCORE up to the end of the current
//     minute with scores, aggregated by the client into every window.
//   - redis-buckets: one hash per key, fields "<epoch minute>:s|c|n|x" holding
//     the minute's sum, count, min and max. Ingest updates them per event
//     (HINCRBYFLOAT, HINCRBY and a compare for min/max, in one Lua script);
//     a read is one HGETALL, aggregated by the client.

// redisServer is a redis-server process of our own.
type redisServer struct {
	cmd    *exec.Cmd
	addr   string
	client *redis.Client
	exited chan struct{}
	logs   *bytes.Buffer
}

// startRedis starts redis-server on a free loopback port; it is stopped by
// PID at cleanup.
func startRedis(tb testing.TB) *redisServer {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("redis-server: %v (make bench-deps installs it)", err)
	}
	dir := tb.TempDir()
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			tb.Fatal(err)
		}
		s := &redisServer{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), exited: make(chan struct{}), logs: &bytes.Buffer{}}
		s.cmd = exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no",
			"--protected-mode", "yes", "--loglevel", "warning", "--logfile", "")
		s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
		if err := s.cmd.Start(); err != nil {
			tb.Fatalf("start redis-server: %v", err)
		}
		go func() { s.cmd.Wait(); close(s.exited) }()
		s.client = redis.NewClient(&redis.Options{Addr: s.addr, PoolSize: 32, DisableIdentity: true,
			ReadTimeout: 10 * time.Minute, WriteTimeout: time.Minute, MaxRetries: -1})
		if lastErr = s.waitReady(); lastErr == nil {
			tb.Cleanup(s.stop)
			return s
		}
		s.stop()
	}
	tb.Fatalf("redis-server did not start: %v", lastErr)
	return nil
}

func (s *redisServer) waitReady() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := s.client.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("exited: %s", s.logs.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return err
		}
	}
}

func (s *redisServer) pid() int { return s.cmd.Process.Pid }

// stop shuts the server down without saving and waits for it; a server
// that does not exit within 10 s is killed by its PID.
func (s *redisServer) stop() {
	select {
	case <-s.exited:
		s.client.Close()
		return
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	s.client.ShutdownNoSave(ctx) // the connection drops: no useful error
	cancel()
	s.client.Close()
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
}

// info returns the fields of one INFO section.
func (s *redisServer) info(tb testing.TB, section string) map[string]string {
	tb.Helper()
	txt, err := s.client.Info(context.Background(), section).Result()
	if err != nil {
		tb.Fatal(err)
	}
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(txt))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":"); ok {
			m[k] = v
		}
	}
	return m
}

// usedMemory is INFO memory's used_memory: the bytes Redis allocated.
func (s *redisServer) usedMemory(tb testing.TB) int64 {
	n, err := strconv.ParseInt(s.info(tb, "memory")["used_memory"], 10, 64)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// redisRawLoader loads a level into sorted sets with multi-member ZADDs,
// pipelined.
type redisRawLoader struct {
	tb      testing.TB
	c       *redis.Client
	pipe    redis.Pipeliner
	members []redis.Z
	queued  int
	buf     []byte
}

func newRedisRawLoader(tb testing.TB, c *redis.Client) *redisRawLoader {
	return &redisRawLoader{tb: tb, c: c, pipe: c.Pipeline()}
}

func rawMember(b []byte, seq int64, cents int64) []byte {
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, ':')
	return amountText(b, cents)
}

func (l *redisRawLoader) event(key string, seq int, ts int64, cents int64) {
	l.buf = rawMember(l.buf[:0], int64(seq), cents)
	l.members = append(l.members, redis.Z{Score: float64(ts), Member: string(l.buf)})
	if len(l.members) == 1000 {
		l.add(key)
	}
}

func (l *redisRawLoader) add(key string) {
	if len(l.members) == 0 {
		return
	}
	l.pipe.ZAdd(context.Background(), key, l.members...)
	l.queued += len(l.members)
	l.members = nil
	if l.queued >= 50_000 {
		l.flush()
	}
}

func (l *redisRawLoader) endKey(key string) { l.add(key) }

func (l *redisRawLoader) flush() {
	if l.queued == 0 {
		return
	}
	if _, err := l.pipe.Exec(context.Background()); err != nil {
		l.tb.Fatalf("redis-raw load: %v", err)
	}
	l.queued = 0
}

// redisBucketLoader loads a level into minute hashes: it aggregates each
// key's minutes in the client and writes them with HSET (the state the Lua
// ingest leaves, built faster).
type redisBucketLoader struct {
	tb      testing.TB
	c       *redis.Client
	pipe    redis.Pipeliner
	minutes map[int64]*bucket
	queued  int
}

// bucket is a minute's partial aggregate, its sum in exact cents.
type bucket struct {
	count, sum, min, max int64
}

func newRedisBucketLoader(tb testing.TB, c *redis.Client) *redisBucketLoader {
	return &redisBucketLoader{tb: tb, c: c, pipe: c.Pipeline(), minutes: map[int64]*bucket{}}
}

func (l *redisBucketLoader) event(_ string, _ int, ts int64, cents int64) {
	m := ts / 60_000
	bk := l.minutes[m]
	if bk == nil {
		bk = &bucket{min: cents, max: cents}
		l.minutes[m] = bk
	}
	bk.count++
	bk.sum += cents
	bk.min, bk.max = min(bk.min, cents), max(bk.max, cents)
}

func (l *redisBucketLoader) endKey(key string) {
	fields := make([]any, 0, 2000)
	put := func() {
		if len(fields) > 0 {
			l.pipe.HSet(context.Background(), key, fields...)
			l.queued += len(fields) / 2
			fields = fields[:0:0]
		}
		if l.queued >= 50_000 {
			l.flush()
		}
	}
	for m, bk := range l.minutes {
		p := strconv.FormatInt(m, 10) + ":"
		fields = append(fields,
			p+"s", strconv.FormatFloat(float64(bk.sum)/100, 'f', -1, 64),
			p+"c", strconv.FormatInt(bk.count, 10),
			p+"n", string(amountText(nil, bk.min)),
			p+"x", string(amountText(nil, bk.max)))
		if len(fields) >= 2000 {
			put()
		}
	}
	put()
	clear(l.minutes)
}

func (l *redisBucketLoader) flush() {
	if l.queued == 0 {
		return
	}
	if _, err := l.pipe.Exec(context.Background()); err != nil {
		l.tb.Fatalf("redis-buckets load: %v", err)
	}
	l.queued = 0
}

// readRedisRaw reads keys from sorted sets (one pipelined ZRANGE BYSCORE
// each) and aggregates them into every window.
func readRedisRaw(ctx context.Context, c *redis.Client, b bounds, keys []string) ([]keyAggs, error) {
	args := func(k string) redis.ZRangeArgs {
		return redis.ZRangeArgs{Key: k, ByScore: true, Start: "-inf", Stop: "(" + strconv.FormatInt(b.end, 10)}
	}
	cmds := make([]*redis.ZSliceCmd, len(keys))
	if len(keys) == 1 {
		cmds[0] = c.ZRangeArgsWithScores(ctx, args(keys[0]))
	} else {
		pipe := c.Pipeline()
		for i, k := range keys {
			cmds[i] = pipe.ZRangeArgsWithScores(ctx, args(k))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, err
		}
	}
	out := make([]keyAggs, len(keys))
	for i, cmd := range cmds {
		zs, err := cmd.Result()
		if err != nil {
			return nil, err
		}
		for _, z := range zs {
			m, _ := z.Member.(string)
			_, amt, ok := strings.Cut(m, ":")
			if !ok {
				return nil, fmt.Errorf("redis-raw: member %q", m)
			}
			x, err := strconv.ParseFloat(amt, 64)
			if err != nil {
				return nil, err
			}
			b.add(&out[i], int64(z.Score), x)
		}
	}
	return out, nil
}

// readRedisBuckets reads keys' minute hashes (one pipelined HGETALL each)
// and merges the minutes into every window.
func readRedisBuckets(ctx context.Context, c *redis.Client, b bounds, keys []string) ([]keyAggs, error) {
	cmds := make([]*redis.MapStringStringCmd, len(keys))
	if len(keys) == 1 {
		cmds[0] = c.HGetAll(ctx, keys[0])
	} else {
		pipe := c.Pipeline()
		for i, k := range keys {
			cmds[i] = pipe.HGetAll(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, err
		}
	}
	out := make([]keyAggs, len(keys))
	for i, cmd := range cmds {
		fields, err := cmd.Result()
		if err != nil {
			return nil, err
		}
		minutes := make(map[int64]*agg, len(fields)/4)
		for f, val := range fields {
			ms, kind, ok := strings.Cut(f, ":")
			if !ok || len(kind) != 1 {
				return nil, fmt.Errorf("redis-buckets: field %q", f)
			}
			m, err := strconv.ParseInt(ms, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("redis-buckets: field %q: %w", f, err)
			}
			x, err := strconv.ParseFloat(val, 64)
			if err != nil {
				return nil, fmt.Errorf("redis-buckets: field %q: %w", f, err)
			}
			a := minutes[m]
			if a == nil {
				a = &agg{}
				minutes[m] = a
			}
			switch kind[0] {
			case 's':
				a.Sum = x
			case 'c':
				a.Count = int64(x)
			case 'n':
				a.Min = x
			case 'x':
				a.Max = x
			default:
				return nil, fmt.Errorf("redis-buckets: field %q", f)
			}
		}
		for m, a := range minutes {
			b.addBucket(&out[i], m*60_000, *a)
		}
	}
	return out, nil
}
