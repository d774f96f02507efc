package benchmarks

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

var (
	peersScale  = flag.String("peers.scale", "", "BenchmarkPeers sizes: smoke, short or full (default: smoke with -short, else short)")
	peersReport = flag.String("peers.report", "", "BenchmarkPeers writes its report to `dir`/<date>[-full].md and .svg")
)

// peerScale sizes one run of BenchmarkPeers.
type peerScale struct {
	name   string
	levels []peerLevel
	// Each latency cell stops after requests requests or budget, whichever
	// comes first.
	requests int
	budget   time.Duration
	// serve/flat: rounds of one request to each healed data set.
	flatRounds int
	// Ingest: events over keys keys, stamped within the last hour.
	ingestEvents, ingestKeys int
	// Heal: events over keys keys and 30 days; tilestream heal runs and
	// DuckDB runs (the median is reported).
	healEvents, healKeys int
	healRuns, duckRuns   int
}

func currentScale(tb testing.TB) peerScale {
	name := *peersScale
	if name == "" {
		name = "short"
		if testing.Short() {
			name = "smoke"
		}
	}
	switch name {
	case "smoke":
		return peerScale{name: name, levels: []peerLevel{{100, 100}, {2_000, 1}},
			requests: 5, budget: time.Second, flatRounds: 5, ingestEvents: 5_000, ingestKeys: 100,
			healEvents: 20_000, healKeys: 100, healRuns: 1, duckRuns: 1}
	case "short":
		return peerScale{name: name, levels: []peerLevel{{100, 100}, {10_000, 100}, {1_000_000, 1}},
			requests: 2_000, budget: 5 * time.Second, flatRounds: 5_000, ingestEvents: 300_000, ingestKeys: 10_000,
			healEvents: 2_000_000, healKeys: 10_000, healRuns: 1, duckRuns: 3}
	case "full":
		return peerScale{name: name, levels: []peerLevel{{100, 100}, {10_000, 100}, {1_000_000, 1}, {10_000_000, 1}},
			requests: 20_000, budget: 40 * time.Second, flatRounds: 20_000, ingestEvents: 1_000_000, ingestKeys: 10_000,
			healEvents: 5_000_000, healKeys: 10_000, healRuns: 3, duckRuns: 5}
	}
	tb.Fatalf("-peers.scale=%q: want smoke, short or full", name)
	return peerScale{}
}

// The systems of the serving comparison.
const (
	sysTS         = "tilestream"
	sysTSStream   = "tilestream-stream"
	sysTSEmbedded = "tilestream-embedded"
	sysRaw        = "redis-raw"
	sysBuckets    = "redis-buckets"
	sysScan       = "pebble-scan"
)

// BenchmarkPeers runs tilestream side by side with what a team would build
// instead (see benchmarks/README.md, "Peers"): serving latency against
// events per key, ingest from Kafka, heal throughput against DuckDB, and
// storage and memory. Every system gets the same events and must give the
// same answers (checked before anything is timed). With -peers.report it
// writes the results as markdown and an SVG chart.
//
// It needs redis-server, node and benchmarks/duckdb/node_modules (make
// bench-deps). Without them it is skipped, except under CI=true, where it
// fails.
func BenchmarkPeers(b *testing.B) {
	requirePeers(b)
	sc := currentScale(b)
	rep := newPeerReport(sc)
	// The healed tilestream stores outlive their level, for serve/flat.
	keep, err := os.MkdirTemp("", "tilestream-peers-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(keep) })
	var healed []healedStore
	b.Run("serve", func(b *testing.B) {
		for _, lvl := range sc.levels {
			b.Run("events="+levelName(lvl.events), func(b *testing.B) {
				dir := filepath.Join(keep, "tilestream-"+levelName(lvl.events))
				if at := benchPeerLevel(b, sc, lvl, rep, dir); at != 0 {
					healed = append(healed, healedStore{lvl, dir, at})
				}
			})
		}
		b.Run("flat", func(b *testing.B) { benchPeerFlat(b, sc, healed, rep) })
	})
	b.Run("ingest", func(b *testing.B) { benchPeerIngest(b, sc, rep) })
	b.Run("heal", func(b *testing.B) { benchPeerHeal(b, sc, rep) })
	rep.end = time.Now()
	if *peersReport != "" && !b.Failed() {
		md, svg, err := rep.write(*peersReport)
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("wrote %s and %s", md, svg)
	}
}

func requirePeers(b *testing.B) {
	var missing []string
	if _, err := exec.LookPath("redis-server"); err != nil {
		missing = append(missing, "redis-server (Debian's redis-server)")
	}
	if err := checkDuckDB(); err != nil {
		missing = append(missing, "node with benchmarks/duckdb/node_modules (npm ci)")
	}
	if len(missing) == 0 {
		return
	}
	msg := "peer benchmarks need " + strings.Join(missing, " and ") + ": run make bench-deps"
	if os.Getenv("CI") == "true" {
		b.Fatal(msg)
	}
	// b.Skip's message shows only with -v: say it where make test shows it.
	fmt.Fprintln(os.Stderr, "BenchmarkPeers skipped:", msg)
	b.Skip(msg)
}

func mustPeerView(tb testing.TB) *tiling.View {
	tb.Helper()
	v, err := newPeerView()
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// levelName writes 100 as 1e2 and other counts in full.
func levelName(n int) string {
	e := 0
	for m := n; m >= 10 && m%10 == 0; m /= 10 {
		e++
	}
	if n == pow10(e) && e >= 2 {
		return "1e" + strconv.Itoa(e)
	}
	return strconv.Itoa(n)
}

func pow10(e int) int {
	n := 1
	for range e {
		n *= 10
	}
	return n
}

// cells are the latency cells of a level: 1 and 16 clients, one key per
// request and, where the level has 100 keys, 100 keys per request.
func (sc peerScale) cells(lvl peerLevel) []cellSpec {
	var out []cellSpec
	for _, keys := range []int{1, 100} {
		if keys > lvl.keys {
			continue
		}
		for _, clients := range []int{1, 16} {
			out = append(out, cellSpec{Clients: clients, Keys: keys, Requests: sc.requests, Budget: sc.budget})
		}
	}
	return out
}

func cellName(c cellSpec) string { return fmt.Sprintf("clients=%d/keys=%d", c.Clients, c.Keys) }

// benchPeerLevel loads one data set into every system and measures each in
// turn, so only one system works at a time. tilestream's store is put in
// tsDir; it returns the query time once that store is healed, else 0.
func benchPeerLevel(b *testing.B, sc peerScale, lvl peerLevel, rep *peerReport, tsDir string) (healedAt int64) {
	v := mustPeerView(b)
	at := time.Now().UnixMilli()
	keys := lvl.keyNames()
	check := []string{keys[0]}
	if len(keys) > 1 {
		check = append(check, keys[len(keys)-1])
	}
	or := newOracle(at, check)
	cells := sc.cells(lvl)

	// Load: tilestream's stream records and archive files (as its ingest
	// writes them), both Redis designs, the naive scan's Pebble.
	loadStart := time.Now()
	store, err := state.Open(state.Config{Path: tsDir}, quiet())
	if err != nil {
		b.Fatal(err)
	}
	off := openOffline(b)
	h := newHistory(b, v, store, off)
	raw, buckets := startRedis(b), startRedis(b)
	rawBase, bucketsBase := raw.usedMemory(b), buckets.usedMemory(b)
	rawL, bucketsL := newRedisRawLoader(b, raw.client), newRedisBucketLoader(b, buckets.client)
	scanDir := b.TempDir()
	sdb, err := openScanDB(scanDir)
	if err != nil {
		b.Fatal(err)
	}
	scanL := newScanLoader(sdb)
	lvl.generate(at, or, historySink{h}, rawL, bucketsL, scanL)
	h.flush()
	rawL.flush()
	bucketsL.flush()
	if err := scanL.finish(); err != nil {
		b.Fatal(err)
	}
	if err := sdb.Close(); err != nil {
		b.Fatal(err)
	}
	if err := store.Close(); err != nil {
		b.Fatal(err)
	}
	if or.events != lvl.total() {
		b.Fatalf("generated %d events, want %d", or.events, lvl.total())
	}
	b.Logf("events/key=%d keys=%d: loaded in %v", lvl.events, lvl.keys, time.Since(loadStart).Round(time.Millisecond))

	verify := func(b *testing.B, system string, read func(keys []string) ([]keyAggs, error)) {
		for _, k := range check {
			got, err := read([]string{k})
			if err != nil {
				b.Fatalf("%s: read %s: %v", system, k, err)
			}
			if err := sameAggs(got[0], or.answer(k)); err != nil {
				b.Fatalf("%s: key %s: %v", system, k, err)
			}
		}
	}
	// measure runs the cells of one system here, over the network.
	measure := func(b *testing.B, system string, read func(keys []string) error, cpu func() time.Duration) {
		var done []cellStats
		for _, c := range cells {
			b.Run(cellName(c), func(b *testing.B) {
				var st cellStats
				for b.Loop() {
					if st.Skipped = skipReason(c, cells, done); st.Skipped != "" {
						continue
					}
					var err error
					if st, err = runCell(c, keys, read, cpu); err != nil {
						b.Fatalf("%s: %v", system, err)
					}
				}
				reportCell(b, st)
				done = append(done, st)
				rep.addCell(system, lvl, c, st)
			})
		}
	}
	// inProcess runs the cells of an embedded system in a child process.
	inProcess := func(b *testing.B, system, dir string) procStats {
		res, ps := runChildOnce(b, childSpec{Mode: "read", System: system, Store: dir, At: at, Keys: lvl.keys, Cells: cells, Check: check})
		for _, k := range check {
			if err := sameAggs(res.Check[k], or.answer(k)); err != nil {
				b.Fatalf("%s: key %s: %v", system, k, err)
			}
		}
		for i, c := range cells {
			b.Run(cellName(c), func(b *testing.B) {
				for b.Loop() {
				}
				reportCell(b, res.Cells[i])
				rep.addCell(system, lvl, c, res.Cells[i])
			})
		}
		return ps
	}
	ctx := context.Background()
	bd := boundsAt(at)

	redisPeer := func(system string, s *redisServer, base int64,
		read func(context.Context, *redis.Client, bounds, []string) ([]keyAggs, error)) {
		b.Run("system="+system, func(b *testing.B) {
			rd := func(keys []string) ([]keyAggs, error) { return read(ctx, s.client, bd, keys) }
			verify(b, system, rd)
			measure(b, system, func(keys []string) error { _, err := rd(keys); return err },
				func() time.Duration { return procCPU(s.pid()) })
			rep.addStorage(system, lvl, s.usedMemory(b)-base, "memory (INFO used_memory)")
			rep.addRSS(system, "serve", lvl, procPeakRSS(s.pid()))
		})
		s.stop()
	}
	if rep.redisVersion == "" {
		rep.redisVersion = raw.info(b, "server")["redis_version"]
	}
	redisPeer(sysRaw, raw, rawBase, readRedisRaw)
	redisPeer(sysBuckets, buckets, bucketsBase, readRedisBuckets)

	b.Run("system="+sysScan, func(b *testing.B) {
		ps := inProcess(b, sysScan, scanDir)
		rep.addRSS(sysScan, "serve", lvl, ps.PeakRSS)
		size, err := compactedSize(scanDir, false)
		if err != nil {
			b.Fatal(err)
		}
		rep.addStorage(sysScan, lvl, size, "disk (Pebble, compacted)")
	})

	serveTS := func(b *testing.B, system string) {
		srv := startServeChild(b, tsDir, at)
		cl := newTSClient(srv.url)
		rd := func(keys []string) ([]keyAggs, error) { return cl.read(ctx, keys) }
		verify(b, system, rd)
		measure(b, system, func(keys []string) error { _, err := rd(keys); return err }, srv.cpu)
		ps := srv.stop(b)
		rep.addRSS(system, "serve", lvl, ps.PeakRSS)
	}
	tsStorage := func(b *testing.B, system string) {
		size, err := compactedSize(tsDir, true)
		if err != nil {
			b.Fatal(err)
		}
		rep.addStorage(system, lvl, size, "disk (Pebble, compacted)")
	}
	b.Run("system="+sysTSStream, func(b *testing.B) {
		serveTS(b, sysTSStream)
		tsStorage(b, sysTSStream)
	})
	b.Run("system="+sysTS, func(b *testing.B) {
		res, ps := runChildOnce(b, childSpec{Mode: "heal", Store: tsDir, Offline: off.Root(), At: at})
		rep.addRSS(sysTS, "heal", lvl, ps.PeakRSS)
		rep.levelHeals = append(rep.levelHeals, levelHeal{lvl, res.Heal.Records, res.HealWall, res.Heal.Watermark})
		healedAt = at
		serveTS(b, sysTS)
	})
	b.Run("system="+sysTSEmbedded, func(b *testing.B) {
		ps := inProcess(b, sysTSEmbedded, tsDir)
		rep.addRSS(sysTSEmbedded, "serve", lvl, ps.PeakRSS)
		tsStorage(b, sysTS)
	})
	files, bytes := archiveFiles(b, off.Root())
	rep.addStorage("offline log", lvl, bytes, fmt.Sprintf("disk (Parquet, %d files)", files))
	return healedAt
}

// healedStore is a level's healed tilestream store.
type healedStore struct {
	lvl peerLevel
	dir string
	at  int64
}

// benchPeerFlat checks flat latency on a shared machine: one tilestream
// server per healed data set, and one client sending a request to each in
// turn (round robin over each data set's keys), so every data set sees the
// same load over the same seconds; the sequential cells see whatever load
// their own seconds had.
func benchPeerFlat(b *testing.B, sc peerScale, healed []healedStore, rep *peerReport) {
	if len(healed) < 2 {
		b.Skip("needs two healed data sets")
	}
	ctx := context.Background()
	clients := make([]*tsClient, len(healed))
	keys := make([][]string, len(healed))
	for i, h := range healed {
		clients[i] = newTSClient(startServeChild(b, h.dir, h.at).url)
		keys[i] = h.lvl.keyNames()
	}
	round := func(r int, lat [][]time.Duration) {
		for i, c := range clients {
			t0 := time.Now()
			if _, err := c.read(ctx, []string{keys[i][r%len(keys[i])]}); err != nil {
				b.Fatal(err)
			}
			if lat != nil {
				lat[i] = append(lat[i], time.Since(t0))
			}
		}
	}
	for r := range 100 {
		round(r, nil)
	}
	var lat [][]time.Duration
	var wall time.Duration
	for b.Loop() {
		lat = make([][]time.Duration, len(healed))
		start := time.Now()
		for r := range sc.flatRounds {
			round(r, lat)
		}
		wall = time.Since(start)
	}
	rep.flat = nil
	for i, h := range healed {
		st := latencyStats(lat[i], wall)
		rep.flat = append(rep.flat, flatRow{h.lvl, st})
		b.ReportMetric(float64(st.P99.Microseconds()), levelName(h.lvl.events)+"-p99-µs")
	}
}

// flatRow is one data set's latency in serve/flat.
type flatRow struct {
	Level peerLevel
	Stats cellStats
}

func reportCell(b *testing.B, st cellStats) {
	b.ReportMetric(float64(st.P50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(st.P99.Microseconds()), "p99-µs")
	b.ReportMetric(st.Throughput, "req/s")
	b.ReportMetric(float64(st.N), "requests")
}

// benchPeerIngest produces one topic of events stamped within the last
// hour and ingests it into tilestream (with its offline log: the product's
// path) and into each peer.
func benchPeerIngest(b *testing.B, sc peerScale, rep *peerReport) {
	c := newCluster(b, 8)
	produce(b, c.ListenAddrs(), 8, sc.ingestEvents, sc.ingestKeys, tiling.Hour)
	v := mustPeerView(b)
	procs := float64(runtime.GOMAXPROCS(0))
	add := func(b *testing.B, system string, wall, cpu time.Duration, peak int64, note string) {
		r := ingestRow{System: system, Events: sc.ingestEvents, Wall: wall, CPU: cpu, PeakRSS: peak, Note: note}
		b.ReportMetric(r.eventsPerSec(), "events/s")
		b.ReportMetric(r.eventsPerSec()/procs, "events/s/core")
		b.ReportMetric(r.eventsPerCPUSec(), "events/cpu-s")
		rep.ingest = append(rep.ingest, r)
	}
	group := 0
	b.Run("system="+sysTS, func(b *testing.B) {
		var wall, cpu time.Duration
		for b.Loop() {
			b.StopTimer()
			store, done := scratchStore(b)
			off := openOffline(b)
			b.StartTimer()
			group++
			c0 := cpuTime()
			wall = ingestAll(b, c.ListenAddrs(), fmt.Sprintf("peers-%d", group), v, store, off)
			cpu = cpuTime() - c0
			b.StopTimer()
			done()
			b.StartTimer()
		}
		add(b, sysTS, wall, cpu, 0, "durable: synced Pebble flushes, Parquet archive, committed offsets")
	})
	redisIngest := func(system string, sink func(*redisServer) peerIngestSink, note string) {
		b.Run("system="+system, func(b *testing.B) {
			var wall, cpu time.Duration
			var peak int64
			for b.Loop() {
				b.StopTimer()
				s := startRedis(b)
				snk := sink(s)
				b.StartTimer()
				c0, r0 := cpuTime(), procCPU(s.pid())
				wall = consumePeer(b, c.ListenAddrs(), sc.ingestEvents, snk)
				cpu = cpuTime() - c0 + procCPU(s.pid()) - r0
				b.StopTimer()
				peak = procPeakRSS(s.pid())
				s.stop()
				b.StartTimer()
			}
			add(b, system, wall, cpu, peak, note)
		})
	}
	redisIngest(sysRaw, func(s *redisServer) peerIngestSink { return redisRawSink{s.client} },
		"no persistence, no offset commits; ZADD pipelined 1,000 a round trip")
	redisIngest(sysBuckets, func(s *redisServer) peerIngestSink {
		loadBucketScript(b, s.client)
		return redisBucketSink{s.client}
	}, "no persistence, no offset commits; one Lua call per event, pipelined 1,000 a round trip")
	b.Run("system="+sysScan, func(b *testing.B) {
		var wall, cpu time.Duration
		for b.Loop() {
			b.StopTimer()
			db, err := openScanDB(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			c0 := cpuTime()
			wall = consumePeer(b, c.ListenAddrs(), sc.ingestEvents, scanSink{db})
			cpu = cpuTime() - c0
			b.StopTimer()
			db.Close()
			b.StartTimer()
		}
		add(b, sysScan, wall, cpu, 0, "synced Pebble batch per fetch, no offset commits")
	})
}

// ingestRow is one line of the ingest table.
type ingestRow struct {
	System    string
	Events    int
	Wall, CPU time.Duration
	PeakRSS   int64 // the Redis server's; 0 when it shares the benchmark's process
	Note      string
}

func (r ingestRow) eventsPerSec() float64 { return float64(r.Events) / r.Wall.Seconds() }

func (r ingestRow) eventsPerCPUSec() float64 { return float64(r.Events) / r.CPU.Seconds() }
