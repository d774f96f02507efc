package main

import (
	"context"
	"encoding/json"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tilestream/tilestream/oracle"
)

// TestFeatureChangeEndToEnd: featureChangeEndToEnd on the harness's store
// (Pebble, or DynamoDB with TILESTREAM_TEST_STORE=dynamodb).
func TestFeatureChangeEndToEnd(t *testing.T) { featureChangeEndToEnd(t, newEnv(t)) }

// featureChangeEndToEnd: the service restarted with a view that drops its
// event counts and adds a variance and a first value translates the view's
// records at start (on DynamoDB into a new incarnation) and serves every
// other feature exactly right away; the added features are null and named
// in metadata.missing_features until the heal the service runs by itself
// reaches past the stream records written before the change; then every
// feature equals the oracle.
func featureChangeEndToEnd(t *testing.T, e *env) {
	g := newGen(17, e)
	keys := g.keys(25)
	evs := g.regular(keys, 1500)
	// The newest event is 20 s ahead: the heal that settles the added
	// features waits for its tile to close (lateness 0 here).
	evs = append(evs, g.event(keys[0], g.now+20*time.Second.Milliseconds()))
	withLateness := func(cfg string) string {
		out := strings.Replace(cfg, "    granularity: 1m\n", "    granularity: 1m\n    lateness: 0s\n", 1)
		if out == cfg {
			t.Fatal("unexpected config shape")
		}
		return out
	}
	if err := os.WriteFile(e.cfgPath, []byte(withLateness(e.config())), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startInProcess(t, e.cfgPath)
	e.waitReady(60*time.Second, p.alive)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.produce(ctx, evs, rand.New(rand.NewPCG(2, 2)), 500); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(time.Minute, p.alive)
	if code, _, body, err := e.call(http.MethodPost, "/v1/heal", "application/json", []byte(`{}`)); err != nil || code != http.StatusOK {
		t.Fatalf("POST /v1/heal: %d %s %v", code, body, err)
	}
	if err := p.stop(t); err != nil {
		t.Fatal(err)
	}

	// The changed view: no event counts (an aggregate dropped), a variance
	// and a first value (aggregates added), the rest as it was.
	var lines []string
	for _, l := range strings.SplitAfter(withLateness(e.config()), "\n") {
		if !strings.Contains(l, "{name: events_") {
			lines = append(lines, l)
		}
	}
	cfg := strings.Join(lines, "") +
		"      - {name: extra_var_1d, function: var_pop, column: amount, window: 1d}\n" +
		"      - {name: extra_first_merchant, function: first, column: merchant, window: lifetime}\n"
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ov := oracle.View{Granularity: testGran, LifetimeStart: e.lifetimeStart}
	for _, f := range testFeatures {
		if !strings.HasPrefix(f.name, "events_") {
			ov.Features = append(ov.Features, oracle.Feature{Name: f.name, Function: f.function, Column: f.column, Window: f.ms})
		}
	}
	kept := ov
	kept.Features = slices.Clone(ov.Features)
	ov.Features = append(ov.Features,
		oracle.Feature{Name: "extra_var_1d", Function: "var_pop", Column: "amount", Window: testDay},
		oracle.Feature{Name: "extra_first_merchant", Function: "first", Column: "merchant"})
	added := []string{"extra_first_merchant", "extra_var_1d"}
	events := byKey(t, evs)

	// On DynamoDB, the incarnation of the old layout, for the check that
	// its items were translated into a new one.
	var oldInc uint32
	if e.dynamo != "" {
		s := e.openStore(t)
		inc, err := s.Incarnation(testView)
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		oldInc = inc
	}

	p2 := startInProcess(t, e.cfgPath)
	e.waitReady(60*time.Second, p2.alive)
	type answer struct {
		Features map[string]any `json:"features"`
		Metadata struct {
			ServedAt        string   `json:"served_at"`
			MissingFeatures []string `json:"missing_features"`
		} `json:"metadata"`
	}
	get := func(key string) answer {
		t.Helper()
		code, _, body, err := e.call(http.MethodGet, "/v1/features/"+testView+"/"+url.PathEscape(key), "", nil)
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET %s: %d %s %v", key, code, body, err)
		}
		var a answer
		if err := json.Unmarshal(body, &a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	// Right after the restart: the added features are missing, the others
	// exact (the view's records were translated before the service served
	// or consumed).
	results := map[string]featureResult{}
	for _, k := range keys {
		a := get(k)
		if m := slices.Sorted(slices.Values(a.Metadata.MissingFeatures)); !slices.Equal(m, added) {
			t.Fatalf("key %s right after the change: missing_features %v, want %v", k, m, added)
		}
		for _, name := range added {
			if v, ok := a.Features[name]; !ok || v != nil {
				t.Fatalf("key %s: missing feature %s served as %v (present %v), want null", k, name, v, ok)
			}
			delete(a.Features, name)
		}
		var r featureResult
		r.Key, r.View, r.Features, r.Metadata.ServedAt = k, testView, a.Features, a.Metadata.ServedAt
		results[k] = r
	}
	if n := checkOracle(t, kept, results, events); n > 0 {
		t.Fatalf("%d kept features differ from the oracle right after the change", n)
	}
	if e.dynamo != "" {
		s := e.openStore(t)
		newInc, err := s.Incarnation(testView)
		s.Close()
		if err != nil || newInc == oldInc {
			t.Fatalf("incarnation %x after the change, %x before (%v)", newInc, oldInc, err)
		}
	}

	// The service heals by itself once the newest tile closes.
	deadline := time.Now().Add(3 * time.Minute)
	for len(get(keys[0]).Metadata.MissingFeatures) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the added features were never computed")
		}
		if err := p2.alive(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	all := e.queryAll(t, keys, keys[:3])
	if n := checkOracle(t, ov, all, events); n > 0 {
		t.Fatalf("%d features differ from the oracle after the heal (features served: %v)", n, slices.Sorted(maps.Keys(all[keys[0]].Features)))
	}
}
