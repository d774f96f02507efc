package main

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// pacedProducer produces batches of events in the background at a steady
// rate, so that a consumer killed at any moment is in the middle of the
// stream.
type pacedProducer struct {
	done chan struct{}
	err  error // valid after done
}

// startProducing produces evs in chunks of chunk records, one chunk per
// tick.
func (e *env) startProducing(ctx context.Context, evs []*testEvent, rng *rand.Rand, chunk int, tick time.Duration) *pacedProducer {
	p := &pacedProducer{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTicker(tick)
		defer t.Stop()
		for len(evs) > 0 {
			n := min(chunk, len(evs))
			if err := e.produce(ctx, evs[:n], rng, chunk); err != nil {
				p.err = err
				return
			}
			evs = evs[n:]
			select {
			case <-ctx.Done():
				p.err = ctx.Err()
				return
			case <-t.C:
			}
		}
	}()
	return p
}

// wait waits for the producer to finish and fails the test on its error.
func (p *pacedProducer) wait(t *testing.T) {
	t.Helper()
	<-p.done
	if p.err != nil {
		t.Fatalf("producer: %v", p.err)
	}
}

// TestCrashRestart runs the binary as a child process, SIGKILLs it three
// times while events are being produced (the first time once its committed
// offsets have moved but before it has caught up with a backlog, then at
// random points), restarts it each time, and checks at the end that every
// value of every key equals the oracle: nothing lost, nothing counted twice.
func TestCrashRestart(t *testing.T) {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e := newEnv(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	g := newGen(seed, e)
	rng := rand.New(rand.NewPCG(seed, 3))
	keys := g.keys(300)

	var evs []*testEvent
	evs = append(evs, g.regular(keys, 100_000)...)
	evs = append(evs, g.boundary(keys, 4, 8)...)
	bad, edge := g.malformed(10, keys)
	evs = append(evs, bad...)
	evs = append(evs, edge...)
	g.shuffle(evs)
	// A backlog of 60,000 before the first start, 20,000 in reserve to
	// rebuild it if the first run catches up before it is seen committing,
	// and the rest produced at about 10,000 events/s across the later kills.
	backlog, reserve, rest := evs[:60_000], evs[60_000:80_000], evs[80_000:]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := e.produce(ctx, backlog, rng, 5000); err != nil {
		t.Fatal(err)
	}

	// Kill 1: after the committed offsets moved, before catching up.
	run1 := e.startChild(t, bin, "run1")
	deadline := time.Now().Add(60 * time.Second)
	for {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		committed, end, caughtUp, err := e.groupProgress(pctx)
		pcancel()
		if err == nil && committed > 0 && !caughtUp {
			t.Logf("killing run1 at committed %d of %d (%v)", committed, end, time.Since(start).Round(time.Millisecond))
			break
		}
		if err == nil && caughtUp && committed > 0 {
			if reserve == nil {
				t.Logf("run1 caught up twice before it was seen committing part of its backlog; killing it caught up")
				break
			}
			t.Logf("run1 caught up (%d) before it was seen committing part of it; producing a new backlog", committed)
			if err := e.produce(ctx, reserve, rng, 5000); err != nil {
				t.Fatal(err)
			}
			reserve = nil
		}
		if err := run1.alive(); err != nil {
			t.Fatalf("run1: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("run1 committed nothing in 60s (last error %v)", err)
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
	run1.kill(t)

	// Kills 2 and 3: at random points after a restart, from before the
	// group is joined to the middle of a flush, while events keep coming.
	// The producer gets its own rng: rand.Rand is not safe for concurrent use.
	prod := e.startProducing(ctx, append(reserve, rest...), rand.New(rand.NewPCG(seed, 30)), 250, 25*time.Millisecond)
	for _, name := range []string{"run2", "run3"} {
		if err := e.evictMembers(ctx); err != nil {
			t.Fatalf("evict the dead member: %v", err)
		}
		c := e.startChild(t, bin, name)
		delay := time.Duration(100+rng.IntN(2400)) * time.Millisecond
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
	e.waitCaughtUp(2*time.Minute, final.alive)
	t.Logf("run4 caught up %v after the start", time.Since(start).Round(time.Millisecond))

	results := e.queryAll(t, keys, keys[len(keys)-6:])
	if n := checkOracle(t, oracleView(e.lifetimeStart), results, byKey(t, evs)); n == 0 {
		t.Logf("after 3 kills, every value of %d results equals the oracle", len(results))
	}
	checkStreamWatermark(t, results, evs)
	t.Logf("run4 ingest events: %v", e.scrape(t, "tilestream_ingest_events_total"))

	if err := final.term(t); err != nil {
		t.Errorf("run4 exited with %v after SIGTERM, want status 0", err)
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// TestCrashAfterLostCommits makes the store run ahead of the committed
// offsets, the case the records' own offsets exist for: the broker fails
// every offset commit while a second batch is consumed and flushed, then the
// process is killed. The restart consumes the whole second batch again and
// must skip every event of it as already applied: values stay equal to the
// oracle, and the metrics count each event of the batch replayed, none
// applied.
func TestCrashAfterLostCommits(t *testing.T) {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	g := newGen(seed, e)
	rng := rand.New(rand.NewPCG(seed, 5))
	keys := g.keys(150)
	first := g.regular(keys, 10_000)
	second := append(g.regular(keys, 10_000), g.boundary(keys, 3, 8)...)
	bad, _ := g.malformed(6, keys)
	second = append(second, bad...)
	g.shuffle(second)
	ov := oracleView(e.lifetimeStart)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run1 := e.startChild(t, bin, "run1")
	if err := e.produce(ctx, first, rng, 2000); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(time.Minute, run1.alive)

	// From now on every offset commit fails, per partition, with an error
	// that asks for nothing but a later retry.
	var failing atomic.Bool
	failing.Store(true)
	var failed atomic.Int64
	e.cluster.ControlKey(kmsg.OffsetCommit.Int16(), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		e.cluster.KeepControl()
		if !failing.Load() {
			return nil, nil, false
		}
		req := kr.(*kmsg.OffsetCommitRequest)
		resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.OffsetMetadataTooLarge.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		failed.Add(1)
		return resp, nil, true
	})
	if err := e.produce(ctx, second, rng, 2000); err != nil {
		t.Fatal(err)
	}
	all := append(append([]*testEvent(nil), first...), second...)
	events := byKey(t, all)

	// Wait until the store serves the second batch: every value equals the
	// oracle over both batches.
	deadline := time.Now().Add(time.Minute)
	for {
		results := e.queryAll(t, keys, nil)
		bad := mismatches(t, ov, results, events)
		if len(bad) == 0 {
			break
		}
		if err := run1.alive(); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the second batch is not served after 1m: %d mismatches, first %s", len(bad), bad[0])
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}
	// The commit follows the flush that made the batch visible: wait for it.
	for failed.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no offset commit was attempted (and failed) after the second batch was flushed")
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	if c, _, caughtUp, err := e.groupProgress(ctx); err != nil || caughtUp {
		t.Fatalf("committed %d, caught up %v (err %v): the commits were meant to fail", c, caughtUp, err)
	}
	m := e.scrape(t, "tilestream_ingest_commit_errors_total")
	t.Logf("%d commits failed; run1 counted %v", failed.Load(), m)
	run1.kill(t)
	failing.Store(false)

	if err := e.evictMembers(ctx); err != nil {
		t.Fatalf("evict the dead member: %v", err)
	}
	run2 := e.startChild(t, bin, "run2")
	e.waitReady(60*time.Second, run2.alive)
	e.waitCaughtUp(time.Minute, run2.alive)
	results := e.queryAll(t, keys, keys[:5])
	checkOracle(t, ov, results, events)
	checkStreamWatermark(t, results, all)

	accepted, rejected := 0, 0
	for _, ev := range second {
		if ev.reason == "" {
			accepted++
		} else {
			rejected++
		}
	}
	m = e.scrape(t, "tilestream_ingest_")
	consumed := m[`tilestream_ingest_records_consumed_total{topic="transactions"}`]
	applied := m[`tilestream_ingest_events_total{outcome="applied",view="txn"}`]
	replayed := m[`tilestream_ingest_events_total{outcome="replayed",view="txn"}`]
	t.Logf("run2 consumed %v records: %v applied, %v replayed", consumed, applied, replayed)
	if consumed != float64(len(second)) || applied != 0 || replayed != float64(accepted) {
		t.Errorf("run2 consumed %v records, applied %v events and skipped %v as replays; want %d consumed, 0 applied, %d replayed",
			consumed, applied, replayed, len(second), accepted)
	}
	if err := run2.term(t); err != nil {
		t.Errorf("run2 exited with %v after SIGTERM, want status 0", err)
	}
}

// TestRestartIdempotent stops the binary gracefully (SIGTERM) and starts it
// again with no new events: every served value, and the stream watermark,
// must be what it was, and nothing is consumed again. The events avoid the
// window tails for the next ten minutes, so the values cannot change while
// the test runs.
func TestRestartIdempotent(t *testing.T) {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	g := newGen(seed, e)
	rng := rand.New(rand.NewPCG(seed, 4))
	keys := g.keys(200)

	// Keep clear of the moving window starts: for t in [now, now+10m] the
	// start of window w is within [alignDown(now−w), now−w+10m].
	stable := func(ts int64) bool {
		for _, w := range []int64{testHour, testDay, 7 * testDay} {
			lo := alignDown(e.now-w, testGran) - testGran
			if lo <= ts && ts <= e.now-w+10*testGran {
				return false
			}
		}
		return ts <= e.now
	}
	var evs []*testEvent
	for _, ev := range g.regular(keys, 20_000) {
		if stable(ev.ts) {
			evs = append(evs, ev)
		}
	}
	bad, _ := g.malformed(6, keys)
	evs = append(evs, bad...)
	g.shuffle(evs)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run1 := e.startChild(t, bin, "run1")
	if err := e.produce(ctx, evs, rng, 2000); err != nil {
		t.Fatal(err)
	}
	e.waitReady(60*time.Second, run1.alive)
	e.waitCaughtUp(time.Minute, run1.alive)
	before := e.snapshot(t, keys, run1.alive)
	events := byKey(t, evs)
	ov := oracleView(e.lifetimeStart)
	checkOracle(t, ov, before, events)

	if err := run1.term(t); err != nil {
		t.Fatalf("run1 exited with %v after SIGTERM, want status 0", err)
	}
	if _, _, caughtUp, err := e.groupProgress(ctx); err != nil || !caughtUp {
		t.Errorf("after a graceful stop the group is not committed to the end (err %v)", err)
	}

	run2 := e.startChild(t, bin, "run2")
	e.waitReady(60*time.Second, run2.alive)
	after := e.snapshot(t, keys, run2.alive)
	checkOracle(t, ov, after, events)
	diffs := 0
	for label, b := range before {
		a := after[label]
		for name, bv := range b.Features {
			if av := a.Features[name]; !equalValue(av, bv) {
				if diffs++; diffs <= 20 {
					t.Errorf("%s: %s = %s before the restart, %s after", label, name, show(bv), show(av))
				}
			}
		}
		if *a.Metadata.StreamWatermark != *b.Metadata.StreamWatermark {
			if diffs++; diffs <= 20 {
				t.Errorf("%s: stream_watermark %s before the restart, %s after", label, *b.Metadata.StreamWatermark, *a.Metadata.StreamWatermark)
			}
		}
	}
	if m := e.scrape(t, "tilestream_ingest_records_consumed_total"); len(m) != 0 {
		t.Errorf("after a graceful restart with no new events, records were consumed again: %v", m)
	}
	if err := run2.term(t); err != nil {
		t.Errorf("run2 exited with %v after SIGTERM, want status 0", err)
	}
}

// snapshot queries every key once the stream watermark is known (it is
// published once the partition count is known, shortly after start).
func (e *env) snapshot(t *testing.T, keys []string, alive func() error) map[string]featureResult {
	t.Helper()
	r := e.snapshotWithin(t, keys, alive, 30*time.Second)
	for _, res := range r {
		if res.Metadata.StreamWatermark == nil {
			t.Fatalf("stream_watermark still null 30s after start")
		}
		break
	}
	return r
}

// snapshotWithin waits at most wait for the stream watermark to be known,
// then queries every key (POST) and the first ten again (GET), whether the
// watermark is known or not.
func (e *env) snapshotWithin(t *testing.T, keys []string, alive func() error, wait time.Duration) map[string]featureResult {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		r := e.getFeatures(t, keys[0])
		if r.Metadata.StreamWatermark != nil {
			break
		}
		if err := alive(); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	return e.queryAll(t, keys, keys[:10])
}

// TestRestartKeepsStreamWatermark restarts the binary after a run in which
// the partitions received only late events (older than what they had
// applied before) or, for one partition, only malformed records. The stream
// watermark is the smallest, over partitions, of the largest event time
// applied, ever: late events do not lower a partition's largest time, and
// a restart must not forget it.
func TestRestartKeepsStreamWatermark(t *testing.T) {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	g := newGen(seed, e)
	rng := rand.New(rand.NewPCG(seed, 7))
	keys := g.keys(50)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// run1: recent events on every partition.
	evs := g.regular(keys, 4000)
	run1 := e.startChild(t, bin, "run1")
	if err := e.produce(ctx, evs, rng, 2000); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(time.Minute, run1.alive)
	checkStreamWatermark(t, e.snapshot(t, keys, run1.alive), evs)
	if err := run1.term(t); err != nil {
		t.Fatalf("run1 exited with %v after SIGTERM", err)
	}

	// run2: on partitions 0–6 only events three days old, on partition 7
	// only malformed records.
	var late []*testEvent
	for p := int32(0); p < testPartitions-1; p++ {
		for range 20 {
			ev := g.event(keys[rng.IntN(len(keys))], e.now-3*testDay-rng.Int64N(testHour))
			ev.pinned, ev.pin = true, p
			late = append(late, ev)
		}
	}
	bad, _ := g.malformed(2, keys)
	for _, ev := range bad {
		ev.pinned, ev.pin = true, testPartitions-1
	}
	late = append(late, bad...)
	run2 := e.startChild(t, bin, "run2")
	if err := e.produce(ctx, late, rng, 2000); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(time.Minute, run2.alive)
	evs = append(evs, late...)
	checkStreamWatermark(t, e.snapshot(t, keys, run2.alive), evs)
	if err := run2.term(t); err != nil {
		t.Fatalf("run2 exited with %v after SIGTERM", err)
	}

	// run3: nothing new; the watermark must be what it was.
	run3 := e.startChild(t, bin, "run3")
	e.waitReady(60*time.Second, run3.alive)
	results := e.snapshotWithin(t, keys, run3.alive, 5*time.Second)
	checkStreamWatermark(t, results, evs)
	checkOracle(t, oracleView(e.lifetimeStart), results, byKey(t, evs))
	if err := run3.term(t); err != nil {
		t.Errorf("run3 exited with %v after SIGTERM", err)
	}
}
