package main

// End-to-end tests of the DynamoDB online store (dynalite) with its Pebble
// local cache: the oracle test, SIGKILL restarts, two instances sharing the
// table, an outage of DynamoDB, and caches deleted or restored from an older
// run. Every check compares served values with the oracle.

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tilestream/tilestream/internal/dynalite"
)

// newDynamoEnv is newEnv on a DynamoDB table of the test's own, on the
// process's shared dynalite (or srv).
func newDynamoEnv(t *testing.T, srv *dynalite.Server) *env {
	t.Helper()
	if srv == nil {
		srv = dynalite.Shared(t)
	}
	return newEnvWith(t, envOptions{dynamo: srv.Endpoint})
}

// waitStale sleeps past the local cache's staleness bound, so that every
// read reflects what is durable now.
func (e *env) waitStale() { time.Sleep(e.cacheStaleness + 50*time.Millisecond) }

// dynamoEvents is a smaller version of the oracle test's mix (dynalite
// answers a few thousand calls a second): regular events of 200 keys over 8
// days, events on tile boundaries and window tails, a few in the accepted
// future, sums that cancel and overflow, and malformed records.
func dynamoEvents(g *gen, n int) (evs []*testEvent, keys []string, accepted int) {
	keys = g.keys(200)
	evs = append(evs, g.regular(keys, n)...)
	evs = append(evs, g.boundary(keys, 4, 8)...)
	evs = append(evs, g.acceptedFuture(keys, 50)...)
	evs = append(evs, g.extremes("sum-cancels", "sum-overflows")...)
	bad, edge := g.malformed(8, keys)
	evs = append(evs, bad...)
	evs = append(evs, edge...)
	g.shuffle(evs)
	for _, ev := range evs {
		if ev.reason == "" {
			accepted++
		}
	}
	return evs, append(keys, "sum-cancels", "sum-overflows", "never-produced"), accepted
}

// TestDynamoEndToEnd runs the service in process on DynamoDB: every value of
// every key equals the oracle once consumed, after a heal (batch records in
// DynamoDB, heads switched), after the stream tiles below W_b are collected,
// and after a restart with the local cache deleted.
func TestDynamoEndToEnd(t *testing.T) {
	start := time.Now()
	e := newDynamoEnv(t, nil)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	g := newGen(seed, e)
	rng := rand.New(rand.NewPCG(seed, 11))
	evs, keys, accepted := dynamoEvents(g, 12_000)
	cfg := e.writeHealConfig(t, "heal.yaml", healSettings{lateness: "1h"})

	p := startInProcess(t, cfg)
	e.waitReady(60*time.Second, p.alive)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := e.produce(ctx, evs, rng, 2000); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(2*time.Minute, p.alive)
	t.Logf("caught up after %v", time.Since(start).Round(time.Millisecond))
	e.waitStale()

	events := byKey(t, evs)
	ov := oracleView(e.lifetimeStart)
	gets := keys[len(keys)-9:]
	results := e.queryAll(t, keys, gets)
	if n := checkOracle(t, ov, results, events); n == 0 {
		t.Logf("every value of %d results equals the oracle", len(results))
	}
	checkStreamWatermark(t, results, evs)
	checkSensitive(t, ov, results, events)
	m := e.scrape(t, "tilestream_")
	if got := m[fmt.Sprintf(`tilestream_ingest_events_total{outcome="applied",view=%q}`, testView)]; got != float64(accepted) {
		t.Errorf("applied events %v, want %d", got, accepted)
	}
	if got := m[`tilestream_ingest_stream_conflicts_total`]; got != 0 {
		t.Errorf("%v stream conflicts with one instance, want 0", got)
	}
	if m[`tilestream_dynamodb_requests_total{op="PutItem"}`] == 0 || m[`tilestream_dynamodb_requests_total{op="Query"}`] == 0 {
		t.Errorf("no DynamoDB traffic in the metrics: %v", m)
	}

	// A heal: batch records in DynamoDB, every head switched.
	res := e.healNow(t, testHour)
	wb := res.Watermark.UnixMilli()
	e.waitStale()
	results = e.queryAll(t, keys, gets)
	checkOracle(t, ov, results, events)
	if n := checkBatchWatermarks(t, results, events, e.lifetimeStart, wb); n == len(results) {
		t.Errorf("no key has a batch watermark after the heal")
	}
	// Stream tiles below W_b are collected after the grace period (1s).
	e.waitCollected(t, 0, p.alive)
	e.waitStale()
	results = e.queryAll(t, keys, gets)
	checkOracle(t, ov, results, events)
	if err := p.stop(t); err != nil {
		t.Fatalf("run returned %v after cancel", err)
	}

	// The local cache deleted between restarts: still exact.
	if err := os.RemoveAll(filepath.Join(e.dir, "online")); err != nil {
		t.Fatal(err)
	}
	p2 := startInProcess(t, cfg)
	e.waitReady(60*time.Second, p2.alive)
	results = e.queryAll(t, keys, gets)
	if n := checkOracle(t, ov, results, events); n == 0 {
		t.Logf("after a restart without a cache, every value of %d results equals the oracle", len(results))
	}
	if err := p2.stop(t); err != nil {
		t.Errorf("run returned %v after cancel", err)
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// TestDynamoCrashRestart is TestCrashRestart on DynamoDB: the binary is
// SIGKILLed three times while events are produced (once mid-backlog, twice at
// random points) and restarted; every value of every key equals the oracle.
func TestDynamoCrashRestart(t *testing.T) {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e := newDynamoEnv(t, nil)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	g := newGen(seed, e)
	rng := rand.New(rand.NewPCG(seed, 12))
	evs, keys, _ := dynamoEvents(g, 16_000)
	backlog, rest := evs[:8000], evs[8000:]
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := e.produce(ctx, backlog, rng, 2000); err != nil {
		t.Fatal(err)
	}
	run1 := e.startChild(t, bin, "run1")
	deadline := time.Now().Add(90 * time.Second)
	for {
		committed, end, caughtUp, err := e.groupProgress(ctx)
		if err == nil && committed > 0 {
			t.Logf("killing run1 at committed %d of %d (caught up: %v)", committed, end, caughtUp)
			break
		}
		if err := run1.alive(); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("run1 committed nothing in 90s")
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	run1.kill(t)

	prod := e.startProducing(ctx, rest, rand.New(rand.NewPCG(seed, 13)), 200, 40*time.Millisecond)
	for _, name := range []string{"run2", "run3"} {
		if err := e.evictMembers(ctx); err != nil {
			t.Fatalf("evict the dead member: %v", err)
		}
		c := e.startChild(t, bin, name)
		delay := time.Duration(300+rng.IntN(3000)) * time.Millisecond
		time.Sleep(delay) // a random kill point, not a synchronisation
		committed, end, _, _ := e.groupProgress(ctx)
		t.Logf("killing %s after %v at committed %d of %d", name, delay, committed, end)
		if err := c.alive(); err != nil {
			t.Fatalf("%s died before its kill: %v", name, err)
		}
		c.kill(t)
	}
	if err := e.evictMembers(ctx); err != nil {
		t.Fatalf("evict the dead member: %v", err)
	}
	final := e.startChild(t, bin, "run4")
	prod.wait(t)
	e.waitReady(60*time.Second, final.alive)
	e.waitCaughtUp(3*time.Minute, final.alive)
	e.waitStale()
	results := e.queryAll(t, keys, keys[:6])
	if n := checkOracle(t, oracleView(e.lifetimeStart), results, byKey(t, evs)); n == 0 {
		t.Logf("after 3 kills, every value of %d results equals the oracle", len(results))
	}
	checkStreamWatermark(t, results, evs)
	if err := final.term(t); err != nil {
		t.Errorf("run4 exited with %v after SIGTERM, want status 0", err)
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// instance is one of several services sharing a table.
type instance struct {
	name, cfg, addr string
	c               *child
}

// startInstance starts (or restarts) an instance's binary.
func (e *env) startInstance(t *testing.T, bin string, in *instance) {
	t.Helper()
	logPath := filepath.Join(e.dir, in.name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", in.cfg)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", in.name, err)
	}
	c := &child{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		f.Close()
		close(c.done)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			cmd.Process.Kill()
			<-c.done
		}
	})
	in.c = c
}

// at returns a copy of the env that talks to the instance's HTTP address.
func (e *env) at(in *instance) *env {
	c := *e
	c.addr, c.base = in.addr, "http://"+in.addr
	return &c
}

// evictMember removes the named instance's member from the group, as the
// coordinator does when a dead member's session times out.
func (e *env) evictMember(ctx context.Context, clientID string) error {
	gs, err := e.adm.DescribeGroups(ctx, e.group)
	if err != nil {
		return err
	}
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = e.group
	for _, m := range gs[e.group].Members {
		if m.ClientID == clientID {
			lm := kmsg.NewLeaveGroupRequestMember()
			lm.MemberID = m.MemberID
			req.Members = append(req.Members, lm)
		}
	}
	if len(req.Members) == 0 {
		return nil
	}
	_, err = req.RequestWith(ctx, e.kcl)
	return err
}

// checkInstances queries every key on every live instance and compares with
// the oracle, past the cache's staleness bound.
func (e *env) checkInstances(t *testing.T, stage string, ins []*instance, keys []string, events []*testEvent) {
	t.Helper()
	e.waitStale()
	ov, byk := oracleView(e.lifetimeStart), byKey(t, events)
	for _, in := range ins {
		if in.c.alive() != nil {
			continue
		}
		ei := e.at(in)
		ei.waitReady(60*time.Second, in.c.alive)
		results := ei.queryAll(t, keys, keys[:3])
		if n := checkOracle(t, ov, results, byk); n > 0 {
			t.Fatalf("%s: %s serves %d values that differ from the oracle", stage, in.name, n)
		}
		t.Logf("%s: %s serves every value of %d results as the oracle", stage, in.name, len(results))
	}
}

// TestDynamoTwoInstances runs two instances on one table, consumer group
// and offline log: they split the partitions and both serve every key
// exactly. One is SIGKILLed while events keep coming; the other takes its
// partitions over; the first restarts and rejoins. Heals go through either
// instance (the view's lease lets one heal at a time). At every step, once
// a heal has covered the late events (the oracle's exception defers them to
// it), every key equals the oracle on both instances.
func TestDynamoTwoInstances(t *testing.T) {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e := newDynamoEnv(t, nil)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	g := newGen(seed, e)
	rng := rand.New(rand.NewPCG(seed, 14))
	evs, keys, _ := dynamoEvents(g, 12_000)
	// Keep the key set small enough to query on both instances often.
	a := &instance{name: "a", addr: freeAddr(t)}
	b := &instance{name: "b", addr: freeAddr(t)}
	for _, in := range []*instance{a, b} {
		in.cfg = e.writeInstanceConfig(t, in.name, in.addr)
		c, _ := os.ReadFile(in.cfg)
		c = []byte(strings.Replace(string(c), "log: {level: warn}\n", "healer: {grace: 1s, lease: 5s}\nlog: {level: warn}\n", 1))
		c = []byte(strings.Replace(string(c), "    features:\n", "    lateness: 1h\n    features:\n", 1))
		if err := os.WriteFile(in.cfg, c, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ins := []*instance{a, b}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	e.startInstance(t, bin, a)
	e.startInstance(t, bin, b)
	first, rest := evs[:6000], evs[6000:]
	if err := e.produce(ctx, first, rng, 1000); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(2*time.Minute, func() error {
		if err := a.c.alive(); err != nil {
			return err
		}
		return b.c.alive()
	})
	e.checkInstances(t, "both running", ins, keys, first)

	// A heal through a, then one through b (it waits for a's lease if needed).
	e.at(a).postHeal(t, `{"view":"txn"}`)
	e.at(b).postHeal(t, `{"view":"txn"}`)
	e.checkInstances(t, "after heals through both", ins, keys, first)

	// a dies while events keep coming; b takes its partitions over.
	prod := e.startProducing(ctx, rest[:3000], rand.New(rand.NewPCG(seed, 15)), 150, 30*time.Millisecond)
	time.Sleep(time.Duration(300+rng.IntN(1500)) * time.Millisecond) // a random kill point
	a.c.kill(t)
	if err := e.evictMember(ctx, "tilestream-a"); err != nil {
		t.Fatal(err)
	}
	prod.wait(t)
	e.waitCaughtUp(2*time.Minute, b.c.alive)
	// Events stamped before the watermark wait for the next heal (the
	// oracle's exception): heal, then every event counts.
	e.at(b).postHeal(t, `{"view":"txn"}`)
	e.checkInstances(t, "after a was killed", ins, keys, evs[:9000])

	// a restarts; more events; a heal through a.
	e.startInstance(t, bin, a)
	e.at(a).waitReady(60*time.Second, a.c.alive)
	if err := e.produce(ctx, rest[3000:], rng, 1000); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(2*time.Minute, func() error {
		if err := a.c.alive(); err != nil {
			return err
		}
		return b.c.alive()
	})
	e.at(a).postHeal(t, `{"view":"txn"}`)
	e.checkInstances(t, "after a restarted and healed", ins, keys, evs)
	for _, in := range ins {
		if err := in.c.term(t); err != nil {
			t.Errorf("%s exited with %v after SIGTERM", in.name, err)
		}
	}
	if t.Failed() {
		for _, in := range ins {
			out, _ := os.ReadFile(in.c.logPath)
			t.Logf("%s log (tail):\n%s", in.name, tail(string(out), 40))
		}
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// TestDynamoOutage stops DynamoDB (dynalite) for over ten seconds while
// events are produced: ingest stalls (nothing committed, the stalled gauge
// up, store errors counted by reason, the consumer lag growing), reads past
// the cache's staleness bound answer 503 with Retry-After, and when DynamoDB
// is back ingest resumes, the lag falls back to zero and every key equals
// the oracle: nothing lost, nothing counted twice.
func TestDynamoOutage(t *testing.T) {
	srv := dynalite.Start(t, dynalite.Options{Persist: true})
	e := newDynamoEnv(t, srv)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	g := newGen(seed, e)
	rng := rand.New(rand.NewPCG(seed, 16))
	evs, keys, accepted := dynamoEvents(g, 6000)
	before, during := evs[:3000], evs[3000:]
	p := startInProcess(t, e.cfgPath)
	e.waitReady(60*time.Second, p.alive)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := e.produce(ctx, before, rng, 1000); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(2*time.Minute, p.alive)
	e.waitStale()
	checkOracle(t, oracleView(e.lifetimeStart), e.queryAll(t, keys, nil), byKey(t, before))

	lag := func() float64 {
		n := 0.0
		for _, v := range e.scrape(t, "tilestream_ingest_consumer_lag_records") {
			n += v
		}
		return n
	}
	srv.Stop()
	outage := time.Now()
	t.Log("DynamoDB stopped")
	prod := e.startProducing(ctx, during, rand.New(rand.NewPCG(seed, 17)), 100, 50*time.Millisecond)
	// Ingest stalls and says why.
	deadline := time.Now().Add(30 * time.Second)
	for e.metric(t, "tilestream_ingest_stalled") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("tilestream_ingest_stalled not 1 30s into the outage")
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
	// Reads past the staleness bound answer 503 with Retry-After.
	e.waitStale()
	code, hdr, body, err := e.call("GET", "/v1/features/"+testView+"/"+keys[0], "", nil)
	if err != nil || code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
		t.Errorf("GET during the outage: %d %s %v (Retry-After %q), want 503", code, body, err, hdr.Get("Retry-After"))
	}
	// The lag grows (measured every 5s). DynamoDB stays down for 12s, and
	// on a loaded machine until a measure shows the lag (the lag loop
	// also waits for DynamoDB's answers about heals): a minute without one
	// is a failure.
	var maxLag float64
	for time.Since(outage) < 12*time.Second || maxLag == 0 {
		if maxLag = max(maxLag, lag()); maxLag == 0 && time.Since(outage) > time.Minute {
			break
		}
		time.Sleep(250 * time.Millisecond) // poll interval
	}
	if maxLag == 0 {
		t.Errorf("consumer lag stayed 0 during %v of outage", time.Since(outage).Round(time.Second))
	}
	if c, _, caught, err := e.groupProgress(ctx); err == nil && caught {
		t.Errorf("the group committed everything (%d) while DynamoDB was down", c)
	}
	m := e.scrape(t, "tilestream_ingest_store_errors_total")
	t.Logf("during the outage: lag up to %v, store errors %v", maxLag, m)
	if len(m) == 0 {
		t.Errorf("no tilestream_ingest_store_errors_total during the outage")
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	t.Logf("DynamoDB back after %v", time.Since(outage).Round(time.Millisecond))
	prod.wait(t)
	e.waitCaughtUp(2*time.Minute, p.alive)
	deadline = time.Now().Add(30 * time.Second)
	for e.metric(t, "tilestream_ingest_stalled") != 0 || lag() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("30s after the outage: stalled %v, lag %v", e.metric(t, "tilestream_ingest_stalled"), lag())
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}
	e.waitStale()
	results := e.queryAll(t, keys, keys[:5])
	if n := checkOracle(t, oracleView(e.lifetimeStart), results, byKey(t, evs)); n == 0 {
		t.Logf("after the outage every value of %d results equals the oracle", len(results))
	}
	applied := e.metric(t, fmt.Sprintf(`tilestream_ingest_events_total{outcome="applied",view=%q}`, testView))
	if applied < float64(accepted) {
		t.Errorf("applied %v events, fewer than the %d accepted", applied, accepted)
	}
	if err := p.stop(t); err != nil {
		t.Errorf("run returned %v after cancel", err)
	}
}

// TestDynamoCacheFromAnOlderRun restores the local cache of an earlier run
// under a table that moved on since (new events, a heal, its garbage
// collected): the service still serves exact values.
func TestDynamoCacheFromAnOlderRun(t *testing.T) {
	e := newDynamoEnv(t, nil)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	g := newGen(seed, e)
	rng := rand.New(rand.NewPCG(seed, 18))
	evs, keys, _ := dynamoEvents(g, 4000)
	first, second := evs[:2000], evs[2000:]
	cfg := e.writeHealConfig(t, "heal.yaml", healSettings{lateness: "1h"})
	cache := filepath.Join(e.dir, "online")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Run 1: consume, heal, read everything (the cache fills).
	p := startInProcess(t, cfg)
	e.waitReady(60*time.Second, p.alive)
	if err := e.produce(ctx, first, rng, 1000); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(2*time.Minute, p.alive)
	e.healNow(t, testHour)
	e.waitStale()
	checkOracle(t, oracleView(e.lifetimeStart), e.queryAll(t, keys, nil), byKey(t, first))
	if err := p.stop(t); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(e.dir, "old-cache")
	if err := exec.Command("cp", "-a", cache, old).Run(); err != nil {
		t.Fatal(err)
	}

	// Run 2: more events, another heal, garbage collected.
	p = startInProcess(t, cfg)
	e.waitReady(60*time.Second, p.alive)
	if err := e.produce(ctx, second, rng, 1000); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(2*time.Minute, p.alive)
	e.healNow(t, testHour)
	e.waitCollected(t, 0, p.alive)
	if err := p.stop(t); err != nil {
		t.Fatal(err)
	}

	// Run 3 on run 1's cache.
	if err := os.RemoveAll(cache); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(old, cache); err != nil {
		t.Fatal(err)
	}
	p = startInProcess(t, cfg)
	e.waitReady(60*time.Second, p.alive)
	results := e.queryAll(t, keys, slices.Clone(keys[:5]))
	if n := checkOracle(t, oracleView(e.lifetimeStart), results, byKey(t, evs)); n == 0 {
		t.Logf("on an older run's cache every value of %d results equals the oracle", len(results))
	}
	if err := p.stop(t); err != nil {
		t.Errorf("run returned %v after cancel", err)
	}
}

// TestInitStoreCreatesTheTable: `tilestream init-store` creates the table of
// a dynamodb config, says so, and on a second run finds it.
func TestInitStoreCreatesTheTable(t *testing.T) {
	e := newDynamoEnv(t, nil)
	c, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(e.dir, "init.yaml")
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(c), "create_table: true", "create_table: false", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"created table " + e.table, "table " + e.table + " exists"} {
		var out, errOut strings.Builder
		if err := run(context.Background(), []string{"init-store", "--config", cfg}, os.Getenv, &out, &errOut); err != nil {
			t.Fatalf("init-store run %d: %v (%s)", i+1, err, errOut.String())
		}
		if !strings.Contains(out.String(), want) {
			t.Errorf("init-store run %d printed %q, want %q", i+1, out.String(), want)
		}
	}
	// A Pebble config has no table to create.
	if err := run(context.Background(), []string{"init-store", "--config", newEnvWith(t, envOptions{pebble: true}).cfgPath}, os.Getenv, io.Discard, io.Discard); err == nil {
		t.Error("init-store accepted a pebble config")
	}
}
