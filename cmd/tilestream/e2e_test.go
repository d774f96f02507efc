package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tilestream/tilestream/oracle"
)

// TestEndToEnd runs the service in process against an in-process Kafka
// cluster, produces over 100,000 events of 600 keys spread over 8 days (each
// key's events on random partitions, in random order, with event times on
// tile boundaries and window tails) and a few hundred malformed records of
// every class, waits until the consumer group has committed everything, and
// checks every served value of every key against the oracle, the stream
// watermark, the rejection counts and readiness.
func TestEndToEnd(t *testing.T) {
	start := time.Now()
	e := newEnvWith(t, envOptions{deadLetter: true})
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	g := newGen(seed, e)

	keys := g.keys(600)
	const cancelKey, overflowKey, neverKey = "sum-cancels", "sum-overflows", "never-produced"
	var evs []*testEvent
	evs = append(evs, g.regular(keys, 100_000)...)
	evs = append(evs, g.boundary(keys, 8, 8)...)
	evs = append(evs, g.acceptedFuture(keys, 300)...)
	evs = append(evs, g.extremes(cancelKey, overflowKey)...)
	bad, edge := g.malformed(40, keys)
	evs = append(evs, bad...)
	evs = append(evs, edge...)
	g.shuffle(evs)
	wantRejected := map[string]int{}
	accepted := 0
	for _, ev := range evs {
		if ev.reason != "" {
			wantRejected[ev.reason]++
		} else {
			accepted++
		}
	}
	t.Logf("%d records: %d accepted, %d malformed %v", len(evs), accepted, len(bad), wantRejected)

	p := startInProcess(t, e.cfgPath)
	e.waitReady(60*time.Second, p.alive)
	t.Logf("ready after %v", time.Since(start).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rng := rand.New(rand.NewPCG(seed, 1))
	produceStart := time.Now()
	if err := e.produce(ctx, evs, rng, 5000); err != nil {
		t.Fatal(err)
	}
	t.Logf("produced in %v", time.Since(produceStart).Round(time.Millisecond))
	e.waitCaughtUp(3*time.Minute, p.alive)
	t.Logf("caught up %v after the first record was produced", time.Since(produceStart).Round(time.Millisecond))

	// Every key over POST batches, and a sample of keys (the special ones
	// included) over GET too.
	all := append(slices.Clone(keys), cancelKey, overflowKey, neverKey)
	gets := append([]string{cancelKey, overflowKey, neverKey}, keys[len(keys)-6:]...)
	for range 40 {
		gets = append(gets, keys[rng.IntN(len(keys))])
	}
	queryStart := time.Now()
	results := e.queryAll(t, all, gets)
	t.Logf("queried %d results in %v", len(results), time.Since(queryStart).Round(time.Millisecond))

	events := byKey(t, evs)
	ov := oracleView(e.lifetimeStart)
	if n := checkOracle(t, ov, results, events); n == 0 {
		t.Logf("every value of %d results equals the oracle", len(results))
	}
	checkStreamWatermark(t, results, evs)
	checkSensitive(t, ov, results, events)

	// The overflow key was built to overflow float64: its sum must be null.
	if r := results[overflowKey]; r.Features["sum_amount_lifetime"] != nil {
		t.Errorf("%s: lifetime sum %v, want null (beyond float64)", overflowKey, r.Features["sum_amount_lifetime"])
	}

	// Metrics: exact rejection counts per reason, every accepted event
	// applied once, every record consumed once.
	m := e.scrape(t, "tilestream_ingest_")
	reasons := map[string]bool{}
	for r := range wantRejected {
		reasons[r] = true
	}
	for k := range m {
		if after, ok := strings.CutPrefix(k, "tilestream_ingest_events_rejected_total{"); ok {
			for _, l := range strings.Split(strings.TrimSuffix(after, "}"), ",") {
				if v, ok := strings.CutPrefix(l, "reason="); ok {
					r, _ := strconv.Unquote(v)
					reasons[r] = true
				}
			}
		}
	}
	for r := range reasons {
		name := fmt.Sprintf(`tilestream_ingest_events_rejected_total{reason=%q,view=%q}`, r, testView)
		if got, want := m[name], float64(wantRejected[r]); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := m[fmt.Sprintf(`tilestream_ingest_events_total{outcome="applied",view=%q}`, testView)]; got != float64(accepted) {
		t.Errorf("applied events %v, want %d", got, accepted)
	}
	if got := m[fmt.Sprintf(`tilestream_ingest_events_total{outcome="replayed",view=%q}`, testView)]; got != 0 {
		t.Errorf("replayed events %v, want 0 (nothing crashed)", got)
	}
	if got := m[fmt.Sprintf(`tilestream_ingest_records_consumed_total{topic=%q}`, testTopic)]; got != float64(len(evs)) {
		t.Errorf("records consumed %v, want %d", got, len(evs))
	}

	checkDeadLetters(t, e, bad)

	if code, _, body, err := e.call("GET", "/readyz", "", nil); err != nil || code != http.StatusOK {
		t.Errorf("GET /readyz: %d %s %v", code, body, err)
	}
	if err := p.stop(t); err != nil {
		t.Errorf("run returned %v after cancel, want nil", err)
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// TestEndToEndNumberSyntax produces events whose numbers are written in
// exponent notation, as many JSON encoders write them ("1.005e+03" from
// Go's 'e' format, Python's 1e-05, JavaScript's 1.5e-7, Java's 1.0E10). A
// JSON number stands for the float64 nearest to its decimal value, whatever
// its notation: the oracle (encoding/json) reads 1.005e3 as 1005, and so
// must ingest, or sums, means, minimums and maximums are off in the last
// bits (1004.9999999999999). Times are written in exponent notation too.
func TestEndToEndNumberSyntax(t *testing.T) {
	e := newEnv(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	keys := []string{"exp-a", "exp-b", "exp-c", "exp-d"}
	var evs []*testEvent
	fixed := []string{"1.005e3", "1.005E+03", "2.3427e+02", "7.7908787383945e1", "12345e-2", "1.5e-7", "4.2e1"}
	for i := range 400 {
		key := keys[i%len(keys)]
		var amount string
		if i < len(fixed) {
			amount = fixed[i]
		} else {
			amount = strconv.FormatFloat(float64(rng.IntN(100000))/100, 'e', -1, 64)
		}
		// Times on tile boundaries (where a 1 ms error changes the tile)
		// and others, all written in exponent notation.
		ts := alignDown(e.now-rng.Int64N(2*testDay), testGran)
		if rng.IntN(2) == 0 {
			ts += rng.Int64N(testGran)
		}
		tsText := strconv.FormatFloat(float64(ts), 'e', -1, 64)
		v := fmt.Sprintf(`{"user_id":%q,"ts":%s,"amount":%s,"merchant":"m%d"}`, key, tsText, amount, i)
		evs = append(evs, &testEvent{key: key, ts: ts, value: []byte(v)})
	}
	p := startInProcess(t, e.cfgPath)
	e.waitReady(60*time.Second, p.alive)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.produce(ctx, evs, rng, 1000); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(time.Minute, p.alive)
	results := e.queryAll(t, keys, nil)
	checkOracle(t, oracleView(e.lifetimeStart), results, byKey(t, evs))
	if err := p.stop(t); err != nil {
		t.Errorf("run returned %v after cancel, want nil", err)
	}
}

// TestEndToEndNoLifetimeStart serves a view whose config leaves
// lifetime_start out, as the built-in demo config does: lifetime windows
// then count every event, however old, down to events stamped before 1970.
func TestEndToEndNoLifetimeStart(t *testing.T) {
	e := newEnvWith(t, envOptions{noLifetimeStart: true})
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	g := newGen(seed, e)
	rng := rand.New(rand.NewPCG(seed, 6))
	keys := g.keys(40)
	evs := g.regular(keys, 5000)
	evs = append(evs, g.boundary(keys, 4, 8)...)
	for _, ts := range []int64{0, -1, -testDay - 1, -70 * 365 * testDay, e.now - 3*365*testDay, 1, testGran} {
		for range 3 {
			evs = append(evs, g.event(keys[rng.IntN(len(keys))], ts))
		}
	}
	g.shuffle(evs)
	p := startInProcess(t, e.cfgPath)
	e.waitReady(60*time.Second, p.alive)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.produce(ctx, evs, rng, 2000); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(time.Minute, p.alive)
	results := e.queryAll(t, keys, keys[:5])
	if n := checkOracle(t, oracleView(e.lifetimeStart), results, byKey(t, evs)); n == 0 {
		t.Logf("every value of %d results equals the oracle", len(results))
	}
	if err := p.stop(t); err != nil {
		t.Errorf("run returned %v after cancel, want nil", err)
	}
}

// TestBadHTTPRequests checks the error answers through the real wiring of
// the binary: the limits come from the config file (max_batch and
// max_body_bytes defaults, max_key_bytes from ingest) and every error is a
// JSON body with the right status.
func TestBadHTTPRequests(t *testing.T) {
	e := newEnv(t)
	p := startInProcess(t, e.cfgPath)
	e.waitReady(60*time.Second, p.alive)

	batch := func(n int, view string) string {
		var items []string
		for i := range n {
			items = append(items, fmt.Sprintf(`{"view":%q,"key":"k%d"}`, view, i))
		}
		return `{"requests":[` + strings.Join(items, ",") + `]}`
	}
	longKey := strings.Repeat("k", testMaxKeyBytes+1)
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		contains, allow          string
	}{
		{"malformed JSON is 400", "POST", "/v1/features", `{"requests":[`, 400, "malformed JSON", ""},
		{"not JSON is 400", "POST", "/v1/features", `view=txn&key=u1`, 400, "malformed JSON", ""},
		{"an empty body is 400", "POST", "/v1/features", ``, 400, "empty body", ""},
		{"a wrong field type is 400", "POST", "/v1/features", `{"requests":[{"view":"txn","key":7}]}`, 400, "malformed JSON", ""},
		{"an unknown view is 404", "GET", "/v1/features/nope/u1", "", 404, `"nope"`, ""},
		{"an unknown view in a batch is 404", "POST", "/v1/features", batch(1, "nope"), 404, `unknown view "nope"`, ""},
		{"an unknown route is 404", "GET", "/v2/features/txn/u1", "", 404, "no route", ""},
		{"101 keys are 413", "POST", "/v1/features", batch(101, testView), 413, "101 requests, over the limit of 100", ""},
		{"a body over 1 MiB is 413", "POST", "/v1/features", `{"requests":[{"view":"txn","key":"` + strings.Repeat("x", 1<<20) + `"}]}`, 413, "over the limit", ""},
		{"PUT on the batch route is 405", "PUT", "/v1/features", batch(1, testView), 405, "PUT", "POST"},
		{"GET on the batch route is 405", "GET", "/v1/features", "", 405, "use POST", "POST"},
		{"POST on a key is 405", "POST", "/v1/features/txn/u1", `{}`, 405, "POST", "GET, HEAD"},
		{"DELETE on a key is 405", "DELETE", "/v1/features/txn/u1", "", 405, "DELETE", "GET, HEAD"},
		{"a key over ingest's max_key_bytes is 400", "GET", "/v1/features/txn/" + longKey, "", 400, "over the limit of 64", ""},
		{"a long key in a batch is 400", "POST", "/v1/features", `{"requests":[{"view":"txn","key":"` + longKey + `"}]}`, 400, "requests[0]", ""},
		{"a missing key is 400", "GET", "/v1/features/txn", "", 400, "missing key", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, hdr, body, err := e.call(tc.method, tc.path, "application/json", []byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if code != tc.code {
				t.Fatalf("status %d, want %d: %s", code, tc.code, body)
			}
			if ct := hdr.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			var eb struct {
				Error string `json:"error"`
			}
			if err := decodeJSON(body, &eb); err != nil || eb.Error == "" {
				t.Fatalf("body %q is not {\"error\":…}: %v", body, err)
			}
			if !strings.Contains(eb.Error, tc.contains) {
				t.Errorf("error %q does not contain %q", eb.Error, tc.contains)
			}
			if tc.allow != "" && hdr.Get("Allow") != tc.allow {
				t.Errorf("Allow %q, want %q", hdr.Get("Allow"), tc.allow)
			}
		})
	}

	// What is refused above is served when within the limits.
	t.Run("a key of exactly max_key_bytes and a batch of 100 are served", func(t *testing.T) {
		r := e.getFeatures(t, strings.Repeat("k", testMaxKeyBytes))
		if r.Features["events_lifetime"] != 0.0 {
			t.Errorf("events_lifetime of an unknown key = %v, want 0", r.Features["events_lifetime"])
		}
		var keys []string
		for i := range 100 {
			keys = append(keys, "k"+strconv.Itoa(i))
		}
		e.postFeatures(t, keys)
	})
	t.Run("views, health and readiness answer", func(t *testing.T) {
		for _, path := range []string{"/v1/views", "/healthz", "/readyz"} {
			code, _, body, err := e.call("GET", path, "", nil)
			if err != nil || code != 200 {
				t.Errorf("GET %s: %d %s %v", path, code, body, err)
			}
		}
		_, _, body, _ := e.call("GET", "/v1/views", "", nil)
		var vs struct {
			Views []struct {
				Name     string `json:"name"`
				Features []struct {
					Name string `json:"name"`
				} `json:"features"`
			} `json:"views"`
		}
		if err := json.Unmarshal(body, &vs); err != nil || len(vs.Views) != 1 || vs.Views[0].Name != testView ||
			len(vs.Views[0].Features) != len(testFeatures) {
			t.Errorf("GET /v1/views = %s (%v)", body, err)
		}
	})
	if err := p.stop(t); err != nil {
		t.Errorf("run returned %v after cancel, want nil", err)
	}
}

// checkSensitive makes sure the comparison with the oracle was not vacuous:
// the values of many keys would differ had they been served one tile
// earlier or one tile later, so a window off by one tile at either end is
// caught.
func checkSensitive(t *testing.T, ov oracle.View, results map[string]featureResult, events map[string][]oracle.Event) {
	t.Helper()
	earlier, later := 0, 0
	for _, r := range results {
		at := r.servedAt(t)
		now := oracle.Values(ov, events[r.Key], at)
		prev := oracle.Values(ov, events[r.Key], alignDown(at, testGran)-1)
		next := oracle.Values(ov, events[r.Key], alignDown(at, testGran)+testGran)
		for _, f := range ov.Features {
			if !equalValue(now[f.Name], prev[f.Name]) {
				earlier++
				break
			}
		}
		for _, f := range ov.Features {
			if !equalValue(now[f.Name], next[f.Name]) {
				later++
				break
			}
		}
	}
	t.Logf("%d of %d results would differ one tile earlier, %d one tile later", earlier, len(results), later)
	if earlier < len(results)/4 || later < len(results)/4 {
		t.Errorf("too few results depend on the tile boundaries: the boundary events are not in play")
	}
}

// checkDeadLetters reads the dead-letter topic and checks that it holds each
// malformed record exactly once, with its reason and source in the headers.
// Dead letters are flushed before the offsets of their records are
// committed, so they are all there once the group has caught up.
func checkDeadLetters(t *testing.T, e *env, bad []*testEvent) {
	t.Helper()
	type source struct {
		partition int32
		offset    int64
	}
	want := map[source]*testEvent{}
	for _, ev := range bad {
		want[source{ev.partition, ev.offset}] = ev
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ConsumeTopics(testDeadLetterTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := 0
	for got < len(bad) && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			got++
			h := map[string]string{}
			for _, kv := range r.Headers {
				h[kv.Key] = string(kv.Value)
			}
			p, _ := strconv.ParseInt(h["tilestream-partition"], 10, 32)
			o, _ := strconv.ParseInt(h["tilestream-offset"], 10, 64)
			src := source{int32(p), o}
			ev := want[src]
			switch {
			case ev == nil:
				t.Errorf("dead letter %v (headers %v) is not a malformed record, or is there twice", src, h)
			case h["tilestream-reason"] != ev.reason || h["tilestream-view"] != testView || h["tilestream-topic"] != testTopic:
				t.Errorf("dead letter %v has headers %v, want reason %s", src, h, ev.reason)
			case string(r.Value) != string(ev.value):
				t.Errorf("dead letter %v holds %.60q, the record was %.60q", src, r.Value, ev.value)
			}
			delete(want, src)
		})
	}
	if len(want) > 0 {
		t.Errorf("%d malformed records are not in the dead-letter topic", len(want))
	}
	ends, err := e.adm.ListEndOffsets(context.Background(), testDeadLetterTopic)
	if err != nil {
		t.Fatal(err)
	}
	if lo, _ := ends.Lookup(testDeadLetterTopic, 0); lo.Offset != int64(len(bad)) {
		t.Errorf("dead-letter topic holds %d records, want %d", lo.Offset, len(bad))
	}
}
