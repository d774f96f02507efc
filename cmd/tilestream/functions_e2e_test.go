package main

// End to end, every function of issue 3 (the aggregation library) through
// the binary's wiring: the features in the YAML config with their options,
// events through Kafka and ingest into the store, heals that put sketches
// and lists into compacted batch records, and the served JSON compared with
// the oracle before and after each heal.

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tilestream/tilestream/oracle"
)

// functionFeatures are the features added to the harness view: every
// function beyond the first ones, over several windows, with options.
var functionFeatures = []struct {
	yaml string
	of   oracle.Feature
}{
	{"{name: var_pop_1d, function: var_pop, column: amount, window: 1d}",
		oracle.Feature{Name: "var_pop_1d", Function: "var_pop", Column: "amount", Window: testDay}},
	{"{name: var_samp_7d, function: var_samp, column: amount, window: 7d}",
		oracle.Feature{Name: "var_samp_7d", Function: "var_samp", Column: "amount", Window: 7 * testDay}},
	{"{name: stddev_pop_1h, function: stddev_pop, column: amount, window: 1h}",
		oracle.Feature{Name: "stddev_pop_1h", Function: "stddev_pop", Column: "amount", Window: testHour}},
	{"{name: stddev_samp_life, function: stddev_samp, column: amount, window: lifetime}",
		oracle.Feature{Name: "stddev_samp_life", Function: "stddev_samp", Column: "amount"}},
	{"{name: first_life, function: first, column: merchant, window: lifetime}",
		oracle.Feature{Name: "first_life", Function: "first", Column: "merchant"}},
	{"{name: first_n_1d, function: first_n, column: merchant, window: 1d, n: 3}",
		oracle.Feature{Name: "first_n_1d", Function: "first_n", Column: "merchant", Window: testDay, N: 3}},
	{"{name: last_n_1h, function: last_n, column: merchant, window: 1h, n: 5}",
		oracle.Feature{Name: "last_n_1h", Function: "last_n", Column: "merchant", Window: testHour, N: 5}},
	{"{name: last_distinct_7d, function: last_distinct_n, column: merchant, window: 7d, n: 4, max_value_bytes: 128}",
		oracle.Feature{Name: "last_distinct_7d", Function: "last_distinct_n", Column: "merchant", Window: 7 * testDay, N: 4}},
	{"{name: distinct_7d, function: approx_count_distinct, column: merchant, window: 7d, precision: 12}",
		oracle.Feature{Name: "distinct_7d", Function: "approx_count_distinct", Column: "merchant", Window: 7 * testDay}},
	{"{name: distinct_1d_p6, function: approx_count_distinct, column: merchant, window: 1d, precision: 6}",
		oracle.Feature{Name: "distinct_1d_p6", Function: "approx_count_distinct", Column: "merchant", Window: testDay}},
	{"{name: p_1d, function: approx_percentile, column: amount, window: 1d, percentiles: [0.5, 0.99, 0], accuracy: 0.01}",
		oracle.Feature{Name: "p_1d", Function: "approx_percentile", Column: "amount", Window: testDay, Percentiles: []float64{0.5, 0.99, 0}}},
	{"{name: p_life, function: approx_percentile, column: amount, window: lifetime, percentiles: [1, 0.25], accuracy: 0.05}",
		oracle.Feature{Name: "p_life", Function: "approx_percentile", Column: "amount", Percentiles: []float64{1, 0.25}}},
	{"{name: top_7d, function: top_k, column: merchant, window: 7d, k: 3, max_value_bytes: 64}",
		oracle.Feature{Name: "top_7d", Function: "top_k", Column: "merchant", Window: 7 * testDay, K: 3}},
	{"{name: top_1h, function: top_k, column: merchant, window: 1h, k: 2, max_value_bytes: 64}",
		oracle.Feature{Name: "top_1h", Function: "top_k", Column: "merchant", Window: testHour, K: 2}},
}

// functionAccuracy is the relative accuracy of each approx_percentile
// feature, and functionPrecision the precision of each distinct count.
var (
	functionAccuracy  = map[string]float64{"p_1d": 0.01, "p_life": 0.05}
	functionPrecision = map[string]int{"distinct_7d": 12, "distinct_1d_p6": 6}
)

// functionMismatches compares every feature of every result with the oracle
// at its served_at: exactly, except the sketches, which must be within their
// stated bounds of the exact answer (a distinct count within 1% while its
// HyperLogLog is sparse and 5 standard errors when dense; each percentile
// within the relative accuracy, with the listed keys in the listed order).
func functionMismatches(t *testing.T, ov oracle.View, results map[string]featureResult, events map[string][]oracle.Event) []string {
	t.Helper()
	var bad []string
	for label, r := range results {
		want := oracle.Values(ov, events[r.Key], r.servedAt(t))
		if len(r.Features) != len(ov.Features) {
			bad = append(bad, fmt.Sprintf("%s: %d features, want %d", label, len(r.Features), len(ov.Features)))
		}
		for _, f := range ov.Features {
			g, w := r.Features[f.Name], want[f.Name]
			if err := functionValueMatches(f, g, w); err != nil {
				bad = append(bad, fmt.Sprintf("key %q (%s) at %s: %s = %s, oracle %s: %v",
					r.Key, label, r.Metadata.ServedAt, f.Name, show(g), show(w), err))
			}
		}
	}
	return bad
}

func functionValueMatches(f oracle.Feature, got, want any) error {
	switch f.Function {
	case "approx_count_distinct":
		est, ok := got.(float64)
		n := want.(float64)
		if !ok || est != math.Trunc(est) || est < 0 {
			return fmt.Errorf("not a count")
		}
		p := functionPrecision[f.Name]
		tol := 2 + 0.01*n
		if n > float64(max(1<<p/16, 4)) {
			tol = 2 + 5*1.04/math.Sqrt(float64(uint(1)<<p))*n
		}
		if math.Abs(est-n) > tol {
			return fmt.Errorf("off by %v, beyond %v", est-n, tol)
		}
		return nil
	case "approx_percentile":
		if want == nil || got == nil {
			if want != got {
				return fmt.Errorf("null on one side only")
			}
			return nil
		}
		g, ok := got.(map[string]any)
		w := want.(map[string]any)
		if !ok || len(g) != len(w) {
			return fmt.Errorf("percentiles %v, want keys %v", got, w)
		}
		alpha := functionAccuracy[f.Name] * (1 + 1e-12)
		for k, wv := range w {
			gv, ok := g[k].(float64)
			if x := wv.(float64); !ok || math.Abs(gv-x) > alpha*math.Abs(x) {
				return fmt.Errorf("percentile %s: %v, exact %v, beyond accuracy %v", k, g[k], x, alpha)
			}
		}
		return nil
	}
	if !equalValue(got, want) {
		return fmt.Errorf("differs")
	}
	return nil
}

// checkPercentileOrder checks that approx_percentile objects list their keys
// in the config's order, as their JSON text must.
func checkPercentileOrder(t *testing.T, e *env, key string) {
	t.Helper()
	_, _, body, err := e.call("GET", "/v1/features/"+testView+"/"+key, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	s := string(body)
	for name, keys := range map[string][]string{"p_1d": {`"0.5":`, `"0.99":`, `"0":`}, "p_life": {`"1":`, `"0.25":`}} {
		i := strings.Index(s, `"`+name+`":{`)
		if i < 0 {
			t.Errorf("%s: no object in %s", name, s)
			continue
		}
		obj := s[i : i+strings.Index(s[i:], "}")]
		last := -1
		for _, k := range keys {
			j := strings.Index(obj, k)
			if j <= last {
				t.Errorf("%s: keys not in the order %v: %s", name, keys, obj)
				break
			}
			last = j
		}
	}
}

func TestEveryFunctionEndToEnd(t *testing.T) {
	e := newEnv(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	g := newGen(seed, e)
	rng := rand.New(rand.NewPCG(seed, 43))
	const lateness = 2 * testGran

	path := e.writeHealConfig(t, "functions.yaml", healSettings{lateness: "2m"})
	cfg, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(cfg), "}\n") {
		t.Fatalf("the harness config no longer ends with the features:\n%s", cfg)
	}
	ov := oracleView(e.lifetimeStart)
	for _, f := range functionFeatures {
		cfg = fmt.Appendf(cfg, "      - %s\n", f.yaml)
		ov.Features = append(ov.Features, f.of)
	}
	if err := os.WriteFile(path, cfg, 0o644); err != nil {
		t.Fatal(err)
	}

	keys := g.keys(40)
	const emptyKey, cancelKey, overflowKey = "never-produced", "cancelling", "overflowing"
	evs := g.regular(keys, 4000)
	evs = append(evs, g.boundary(keys[:5], 2, 3)...)
	evs = append(evs, g.extremes(cancelKey, overflowKey)...)
	g.shuffle(evs)

	p := startInProcess(t, path)
	e.waitReady(60*time.Second, p.alive)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.produce(ctx, evs, rng, 1000); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(time.Minute, p.alive)

	all := append(append([]string{}, keys...), emptyKey, cancelKey, overflowKey)
	check := func(phase string, events []*testEvent) map[string]featureResult {
		t.Helper()
		results := e.queryAll(t, all, []string{emptyKey, keys[0], cancelKey})
		bad := functionMismatches(t, ov, results, byKey(t, events))
		for i, m := range bad {
			if i == 40 {
				t.Errorf("%s: … %d mismatches in all", phase, len(bad))
				break
			}
			t.Errorf("%s: %s", phase, m)
		}
		if len(bad) > 0 {
			t.FailNow()
		}
		return results
	}

	// Stream records only.
	results := check("before any heal", evs)

	// A key without events: counts 0, lists and top_k [], the rest null.
	wantEmpty := map[string]any{
		"var_pop_1d": nil, "var_samp_7d": nil, "stddev_pop_1h": nil, "stddev_samp_life": nil, "first_life": nil,
		"first_n_1d": []any{}, "last_n_1h": []any{}, "last_distinct_7d": []any{},
		"distinct_7d": 0.0, "distinct_1d_p6": 0.0, "p_1d": nil, "p_life": nil, "top_7d": []any{}, "top_1h": []any{},
	}
	for name, w := range wantEmpty {
		if got := results["GET "+emptyKey].Features[name]; !reflect.DeepEqual(got, w) {
			t.Errorf("a key without events: %s = %s, want %s", name, show(got), show(w))
		}
	}
	// The shapes, written out for one busy key.
	r := results["GET "+keys[0]]
	if top, ok := r.Features["top_7d"].([]any); !ok || len(top) == 0 {
		t.Errorf("top_7d of %s: %s, want a list of {value, count}", keys[0], show(r.Features["top_7d"]))
	} else if m, ok := top[0].(map[string]any); !ok || len(m) != 2 || m["value"] == nil || m["count"] == nil {
		t.Errorf("top_7d of %s: %s, want {value, count} objects", keys[0], show(top[0]))
	}
	checkPercentileOrder(t, e, keys[0])

	// A heal puts everything before W_b into batch records: sketches and
	// lists are then merged from compacted days and blocks and the stream
	// tiles after W_b.
	res := e.healNow(t, lateness)
	if !res.Installed {
		t.Fatalf("the heal installed nothing: %+v", res)
	}
	check("after the first heal", evs)

	// More events at or after W_b, then a second heal.
	wb := res.Watermark.UnixMilli()
	var more []*testEvent
	for range 400 {
		ts := max(wb, g.now-rng.Int64N(2*testGran))
		more = append(more, g.event(keys[rng.IntN(len(keys))], ts))
	}
	if err := e.produce(ctx, more, rng, 400); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(time.Minute, p.alive)
	evs = append(evs, more...)
	check("after more events", evs)
	e.healNow(t, lateness)
	check("after the second heal", evs)
	checkPercentileOrder(t, e, keys[0])

	if err := p.stop(t); err != nil {
		t.Fatal(err)
	}
}
