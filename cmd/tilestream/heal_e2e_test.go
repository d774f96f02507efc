package main

// End-to-end tests of healing through the binary's wiring: POST /v1/heal and
// `tilestream heal` against the service, and standalone against its store
// and offline log, with corrections dropped into the offline log, duplicates
// of a retrying producer, late events and malformed input; every served value
// is compared with the oracle (DESIGN.md), before and after each heal.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tilestream/tilestream/healer"
	"github.com/tilestream/tilestream/oracle"
)

// testEventID is the view's event_id field in the healing tests.
const testEventID = "txn_id"

// healSettings vary the config of a healing test.
type healSettings struct {
	lateness string // the view's lateness, e.g. "1h"
	eventID  bool   // the view names testEventID as its event id
	info     bool   // log at level info (heals, resumed heals, archive recovery)
	tables   bool   // every healed day and the summaries go to Pebble as ingested tables
}

// writeHealConfig writes the env's config with the healer's settings to
// dir/name and returns its path: healer.grace 1s (stream records below W_b
// are collected a second after a heal), the view's lateness, and its event
// id. Scheduled heals keep the default period (24h): the tests heal on
// demand, so they know when a heal happens.
func (e *env) writeHealConfig(t *testing.T, name string, hs healSettings) string {
	t.Helper()
	c := e.config()
	insert := func(anchor, text string) {
		if strings.Count(c, anchor) != 1 {
			t.Fatalf("the harness config no longer has exactly one %q:\n%s", anchor, c)
		}
		c = strings.Replace(c, anchor, text+anchor, 1)
	}
	if hs.tables {
		insert("log: {level: warn}\n", "healer: {grace: 1s, table_records: 1}\n")
	} else {
		insert("log: {level: warn}\n", "healer: {grace: 1s}\n")
	}
	if hs.info {
		c = strings.Replace(c, "log: {level: warn}", "log: {level: info}", 1)
	}
	view := fmt.Sprintf("    lateness: %s\n", hs.lateness)
	if hs.eventID {
		view += fmt.Sprintf("    event_id: %s\n", testEventID)
	}
	insert("    features:\n", view)
	path := filepath.Join(e.dir, name)
	if err := os.WriteFile(path, []byte(c), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// offlineRoot is the offline log's root directory of the env's config.
func (e *env) offlineRoot() string { return filepath.Join(e.dir, "offline") }

// postHeal does POST /v1/heal with body and returns the results of the
// 200 answer.
func (e *env) postHeal(t *testing.T, body string) []healer.Result {
	t.Helper()
	code, hdr, resp, err := e.call("POST", "/v1/heal", "application/json", []byte(body))
	if err != nil {
		t.Fatalf("POST /v1/heal: %v", err)
	}
	if code != http.StatusOK {
		t.Fatalf("POST /v1/heal %s: status %d: %s", body, code, resp)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("POST /v1/heal: Content-Type %q", ct)
	}
	return decodeHealResults(t, resp)
}

// decodeHealResults decodes {"results":[…]} of one heal of the test view.
func decodeHealResults(t *testing.T, body []byte) []healer.Result {
	t.Helper()
	var out struct {
		Results []healer.Result `json:"results"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("heal summary %s: %v", body, err)
	}
	if len(out.Results) != 1 || out.Results[0].View != testView {
		t.Fatalf("heal summary %s: want one result, of view %s", body, testView)
	}
	return out.Results
}

// healNow heals the test view through POST /v1/heal and checks the new
// watermark: alignDown(now − lateness, g) for a now within the request (the
// archive is complete: everything produced was consumed before).
func (e *env) healNow(t *testing.T, lateness int64) healer.Result {
	t.Helper()
	before := time.Now().UnixMilli()
	res := e.postHeal(t, `{"view":"txn"}`)[0]
	after := time.Now().UnixMilli()
	wb := res.Watermark.UnixMilli()
	lo, hi := alignDown(before-lateness, testGran), alignDown(after-lateness, testGran)
	if wb < lo || wb > hi {
		t.Fatalf("heal set batch_watermark %s, want alignDown(now − lateness, 1m) within [%s, %s]",
			res.Watermark.UTC(), time.UnixMilli(lo).UTC(), time.UnixMilli(hi).UTC())
	}
	t.Logf("heal: %+v", res)
	return res
}

// msOf parses a served time.
func msOf(t *testing.T, s string) int64 {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("time %q: %v", s, err)
	}
	return ts.UnixMilli()
}

// headWatermarks returns, per key label, the served batch_watermark in ms
// (math.MinInt64 for null).
func headWatermarks(t *testing.T, results map[string]featureResult) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for label, r := range results {
		out[label] = math.MinInt64
		if r.Metadata.BatchWatermark != nil {
			out[label] = msOf(t, *r.Metadata.BatchWatermark)
		}
	}
	return out
}

// checkBatchWatermarks checks every result's batch_watermark after a heal
// that set wb: wb for every key with an event the heal covered (in
// [lifetime_start, wb)); for the others (no batch data) null or wb. It
// returns how many results had null.
func checkBatchWatermarks(t *testing.T, results map[string]featureResult, events map[string][]oracle.Event, lifetimeStart, wb int64) int {
	t.Helper()
	nulls, bad := 0, 0
	for label, r := range results {
		covered := false
		for _, ev := range events[r.Key] {
			if ev.TS >= lifetimeStart && ev.TS < wb {
				covered = true
				break
			}
		}
		got := r.Metadata.BatchWatermark
		switch {
		case got == nil && !covered:
			nulls++
			continue
		case got != nil && msOf(t, *got) == wb:
			continue
		}
		if bad++; bad <= 10 {
			g := "null"
			if got != nil {
				g = *got
			}
			t.Errorf("%s: batch_watermark %s, want %s (the key has events before it: %v)", label, g, time.UnixMilli(wb).UTC(), covered)
		}
	}
	return nulls
}

// sameServed checks that two snapshots taken around a heal that changed
// nothing serve the same bits: for every feature whose oracle value is the
// same at both serving times, the same value, and the same batch watermark.
func sameServed(t *testing.T, ov oracle.View, before, after map[string]featureResult, events map[string][]oracle.Event) {
	t.Helper()
	diffs, compared := 0, 0
	for _, label := range slices.Sorted(maps.Keys(before)) {
		b, a := before[label], after[label]
		if fmt.Sprint(b.Metadata.BatchWatermark != nil) != fmt.Sprint(a.Metadata.BatchWatermark != nil) ||
			(b.Metadata.BatchWatermark != nil && *b.Metadata.BatchWatermark != *a.Metadata.BatchWatermark) {
			diffs++
			t.Errorf("%s: batch_watermark %v before a heal that changed nothing, %v after", label, b.Metadata.BatchWatermark, a.Metadata.BatchWatermark)
		}
		ob := oracle.Values(ov, events[b.Key], b.servedAt(t))
		oa := oracle.Values(ov, events[a.Key], a.servedAt(t))
		for _, f := range ov.Features {
			if !equalValue(ob[f.Name], oa[f.Name]) {
				continue // the window moved between the two reads
			}
			compared++
			if !equalValue(b.Features[f.Name], a.Features[f.Name]) {
				if diffs++; diffs <= 20 {
					t.Errorf("%s: %s = %s before a heal that changed nothing, %s after", label, f.Name, show(b.Features[f.Name]), show(a.Features[f.Name]))
				}
			}
		}
	}
	t.Logf("a heal that changed nothing: %d values compared, %d differ", compared, diffs)
}

// waitCollected polls until the healer has collected stream records below
// the batch watermark at least once more than before (grace is 1s; the
// healer checks every grace period). It fails after a minute, a hang
// rather than a slow machine.
func (e *env) waitCollected(t *testing.T, before float64, alive func() error) float64 {
	t.Helper()
	name := fmt.Sprintf(`tilestream_healer_stream_keys_collected_total{view=%q}`, testView)
	deadline := time.Now().Add(time.Minute)
	for {
		n := e.scrape(t, "tilestream_healer_stream_keys_collected_total")[name]
		if n > before {
			return n
		}
		if err := alive(); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stream records collected a minute after a heal with a grace of 1s (%s = %v)", name, n)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

// withEventID returns a copy of ev whose JSON carries "txn_id": id.
func withEventID(ev *testEvent, id string) *testEvent {
	c := *ev
	v := bytes.TrimSuffix(bytes.TrimSpace(ev.value), []byte("}"))
	c.value = append(slices.Clip(v), `,"`+testEventID+`":`+jsonString(id)+`}`...)
	return &c
}

// uniqueTS returns a time in [lo, hi) that no event of key has (so which
// copy of a duplicate a heal keeps, and the position of a row of a user
// file, cannot matter to last), and records it.
func uniqueTS(rng *rand.Rand, used map[string]map[int64]bool, key string, lo, hi int64) int64 {
	if used[key] == nil {
		used[key] = map[int64]bool{}
	}
	for {
		ts := lo + rng.Int64N(hi-lo)
		if !used[key][ts] {
			used[key][ts] = true
			return ts
		}
	}
}

// markUsed records that key has an event at ts.
func markUsed(used map[string]map[int64]bool, key string, ts int64) {
	if used[key] == nil {
		used[key] = map[int64]bool{}
	}
	used[key][ts] = true
}

// usedTimes collects the event times of every key.
func usedTimes(evs []*testEvent) map[string]map[int64]bool {
	used := map[string]map[int64]bool{}
	for _, ev := range evs {
		if ev.reason != "" {
			continue
		}
		if used[ev.key] == nil {
			used[ev.key] = map[int64]bool{}
		}
		used[ev.key][ev.ts] = true
	}
	return used
}

// dayDir returns the offline-log directory of the test view for the UTC
// date of ts.
func (e *env) dayDir(ts int64) string {
	return filepath.Join(e.offlineRoot(), testView, "date="+time.UnixMilli(ts).UTC().Format("2006-01-02"))
}

// dropJSONL writes lines into <offline>/txn/date=…/name as a user would:
// complete files only (written aside, then renamed).
func (e *env) dropJSONL(t *testing.T, dir, name string, lines []string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// correction is an event that only the offline log has.
type correction struct {
	ev   *testEvent
	line string
}

// corrections makes n events of keys at unique times in [lo, hi), as
// JSON Lines grouped by their UTC date; every third carries an event id.
func (g *gen) corrections(keys []string, n int, lo, hi int64, used map[string]map[int64]bool, prefix string) []correction {
	var out []correction
	for i := range n {
		k := keys[g.rng.IntN(len(keys))]
		ev := g.event(k, uniqueTS(g.rng, used, k, lo, hi))
		if i%3 == 0 {
			ev = withEventID(ev, fmt.Sprintf("%s-%d", prefix, i))
		}
		out = append(out, correction{ev: ev, line: string(ev.value)})
	}
	return out
}

// writeCorrections drops the corrections into one file per date and
// returns how many files it wrote.
func (e *env) writeCorrections(t *testing.T, name string, cs []correction, extra map[string][]string) int {
	t.Helper()
	byDir := map[string][]string{}
	for _, c := range cs {
		d := e.dayDir(c.ev.ts)
		byDir[d] = append(byDir[d], c.line)
	}
	for d, lines := range extra {
		byDir[d] = append(byDir[d], lines...)
	}
	for d, lines := range byDir {
		e.dropJSONL(t, d, name, lines)
	}
	return len(byDir)
}

// correctionEvents returns the corrections as oracle events by key.
func correctionEvents(t *testing.T, cs []correction) map[string][]oracle.Event {
	t.Helper()
	var evs []*testEvent
	for _, c := range cs {
		evs = append(evs, c.ev)
	}
	out := byKey(t, evs)
	for k, es := range out {
		for i := range es {
			es[i].Partition, es[i].Offset = -1, int64(i) // a user file's row: ts is unique per key
		}
		out[k] = es
	}
	return out
}

// merge returns the union of event sets by key.
func merge(sets ...map[string][]oracle.Event) map[string][]oracle.Event {
	out := map[string][]oracle.Event{}
	for _, s := range sets {
		for k, es := range s {
			out[k] = append(out[k], es...)
		}
	}
	return out
}

// metric returns one sample of the service's metrics (0 when absent).
func (e *env) metric(t *testing.T, name string) float64 {
	t.Helper()
	prefix := name
	if i := strings.IndexByte(name, '{'); i >= 0 {
		prefix = name[:i]
	}
	return e.scrape(t, prefix)[name]
}

// TestHealEndToEnd runs the service in process with a healing view:
//
//  1. 30,000 events over 8 days (keys on random partitions, event times on
//     tile boundaries, window tails and around the coming batch watermark,
//     a few in the accepted future) and malformed records; once consumed,
//     POST /v1/heal answers with the summary and a watermark of
//     alignDown(now − 1h, 1m), every key equals the oracle with the batch
//     watermark in its metadata, also after the stream records below it are
//     collected; a heal that changes nothing changes no served bit.
//  2. Events that only the offline log has (JSON Lines corrections dated
//     before the watermark, with malformed lines), duplicates of a retrying
//     producer (the view has an event id; the stream counts both copies),
//     late events (before the watermark: deferred to the next heal, counted
//     in the metrics, served by no key until then), and events about the
//     next watermark. Until the next heal every key equals the oracle over
//     what the stream may serve, also after a restart.
//  3. The service restarts with a lateness of 2m and heals again: every key
//     equals the oracle over every event, duplicates counted once.
func TestHealEndToEnd(t *testing.T) {
	start := time.Now()
	e := newEnv(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	g := newGen(seed, e)
	rng := rand.New(rand.NewPCG(seed, 41))
	const lateness1, lateness2 = testHour, 2 * testGran
	cfg1 := e.writeHealConfig(t, "heal1.yaml", healSettings{lateness: "1h", eventID: true})
	cfg2 := e.writeHealConfig(t, "heal2.yaml", healSettings{lateness: "2m", eventID: true})
	ov := oracleView(e.lifetimeStart)

	// Phase 1.
	keys := g.keys(300)
	const neverKey, onlyOffline = "never-produced", "only-in-offline-log"
	var p1 []*testEvent
	p1 = append(p1, g.regular(keys, 30_000)...)
	p1 = append(p1, g.boundary(keys, 4, 4)...)
	p1 = append(p1, g.acceptedFuture(keys, 50)...)
	// About the watermark of the first heal (this minute or the next).
	for _, c := range []int64{alignDown(e.now-lateness1, testGran), alignDown(e.now-lateness1, testGran) + testGran} {
		for _, d := range []int64{-testGran, -1, 0, 1, testGran - 1, testGran} {
			for range 3 {
				p1 = append(p1, g.event(keys[rng.IntN(len(keys))], c+d))
			}
		}
	}
	bad, edge := g.malformed(6, keys)
	p1 = append(p1, bad...)
	p1 = append(p1, edge...)
	g.shuffle(p1)

	p := startInProcess(t, cfg1)
	e.waitReady(60*time.Second, p.alive)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.produce(ctx, p1, rng, 5000); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(time.Minute, p.alive)
	t.Logf("phase 1: %d records consumed after %v", len(p1), time.Since(start).Round(time.Millisecond))

	// Before any heal every key is served from stream records.
	all := append(slices.Clone(keys), neverKey, onlyOffline)
	gets := append([]string{neverKey, onlyOffline}, keys[len(keys)-6:]...)
	ev1 := byKey(t, p1)
	results := e.queryAll(t, all, gets)
	checkOracle(t, ov, results, ev1)
	for label, r := range results {
		if r.Metadata.BatchWatermark != nil {
			t.Fatalf("%s: batch_watermark %s before any heal", label, *r.Metadata.BatchWatermark)
		}
	}

	res1 := e.healNow(t, lateness1)
	if !res1.Installed || res1.Generation == 0 || res1.Keys == 0 {
		t.Fatalf("the first heal installed nothing: %+v", res1)
	}
	w1 := res1.Watermark.UnixMilli()
	mustCount := 0
	for _, ev := range p1 {
		if ev.reason == "" && ev.ts >= e.lifetimeStart && ev.ts < w1 {
			mustCount++
		}
	}
	if res1.Events < int64(mustCount) {
		t.Errorf("the first heal read %d events; %d accepted events fall in [lifetime_start, W_b)", res1.Events, mustCount)
	}
	if res1.BadRows != 0 || res1.BadFiles != 0 || res1.Duplicates != 0 {
		t.Errorf("the first heal found bad rows, bad files or duplicates in the archive: %+v", res1)
	}

	results = e.queryAll(t, all, gets)
	if n := checkOracle(t, ov, results, ev1); n == 0 {
		t.Logf("after the first heal every value of %d results equals the oracle", len(results))
	}
	nulls := checkBatchWatermarks(t, results, ev1, e.lifetimeStart, w1)
	t.Logf("%d of %d results have no batch data (batch_watermark null)", nulls, len(results))
	checkSensitive(t, ov, results, ev1)

	// The stream records below W_b are collected after the grace period;
	// reads stay exact.
	collected := e.waitCollected(t, 0, p.alive)
	results = e.queryAll(t, all, gets)
	if n := checkOracle(t, ov, results, ev1); n == 0 {
		t.Logf("after the stream records of %v keys were collected every value equals the oracle", collected)
	}

	// A heal that changes nothing changes no served bit. The watermark
	// moves when a minute starts between two heals: then heal again.
	for attempt := 0; ; attempt++ {
		before := e.queryAll(t, all, gets)
		again := e.postHeal(t, `{}`)[0]
		after := e.queryAll(t, all, gets)
		if again.Installed {
			if attempt == 2 {
				t.Fatalf("three heals in a row installed something with nothing new: %+v", again)
			}
			t.Logf("the watermark moved to %s: heal again", again.Watermark.UTC())
			continue
		}
		if again.Generation != res1.Generation+uint64(attempt) || again.Watermark.UnixMilli() < w1 {
			t.Errorf("a heal with nothing to do reports generation %d, watermark %s; want %d, ≥ %s",
				again.Generation, again.Watermark.UTC(), res1.Generation+uint64(attempt), res1.Watermark.UTC())
		}
		checkOracle(t, ov, after, ev1)
		sameServed(t, ov, before, after, ev1)
		w1 = again.Watermark.UnixMilli()
		break
	}
	heads := headWatermarks(t, e.queryAll(t, keys, nil))
	var headed []string
	for _, k := range keys {
		if heads[k] == w1 {
			headed = append(headed, k)
		}
	}
	if len(headed) < len(keys)/2 {
		t.Fatalf("only %d of %d keys have batch data", len(headed), len(keys))
	}

	// Phase 2.
	t2 := time.Now().UnixMilli()
	used := usedTimes(p1)
	var p2 []*testEvent
	dupSecond := map[*testEvent]bool{}
	late := 0
	// Late events: before W_b (one exactly at W_b − 1, some in the last
	// day, the others over the lifetime), on keys with batch data.
	for i := range 120 {
		k := headed[rng.IntN(len(headed))]
		var ts int64
		switch {
		case i < 4:
			ts = w1 - 1 - int64(i)
			markUsed(used, k, ts)
		case i < 60:
			ts = uniqueTS(rng, used, k, w1-testDay, w1)
		default:
			ts = uniqueTS(rng, used, k, e.lifetimeStart, w1)
		}
		p2 = append(p2, g.event(k, ts))
		late++
	}
	// A retrying producer's duplicates: the same event (same id) twice;
	// after W_b (the stream counts both until a heal) and before it (late:
	// only the heal counts them, once).
	for i := range 80 {
		k := headed[rng.IntN(len(headed))]
		var ts int64
		if i < 50 {
			ts = uniqueTS(rng, used, k, w1, t2-5*testGran)
		} else {
			ts = uniqueTS(rng, used, k, e.lifetimeStart, w1)
			late += 2
		}
		ev := withEventID(g.event(k, ts), fmt.Sprintf("dup-%d", i))
		second := *ev
		p2 = append(p2, ev, &second)
		dupSecond[&second] = true
	}
	// Events about the second watermark (this minute or the next, with a
	// lateness of 2m), all after the first.
	for _, c := range []int64{alignDown(t2-lateness2, testGran), alignDown(t2-lateness2, testGran) + testGran} {
		for _, d := range []int64{-1, 0, 1, testGran - 1} {
			for range 3 {
				p2 = append(p2, g.event(headed[rng.IntN(len(headed))], c+d))
			}
		}
	}
	// The same event on the topic (late) and in a correction file: one
	// event.
	xk := headed[0]
	xev := withEventID(g.event(xk, uniqueTS(rng, used, xk, w1-2*testDay, w1-testDay)), "both-places")
	p2 = append(p2, xev)
	late++
	g.shuffle(p2)

	// Corrections: JSON Lines before W_b, on keys with batch data, on a key
	// nothing else has, and before lifetime_start (counted nowhere); with
	// malformed lines (not JSON; dated on another day) that the heal skips.
	cs := g.corrections(append(slices.Clone(headed[:40]), onlyOffline), 150, e.lifetimeStart-testDay, w1, used, "fix")
	cs = append(cs, g.corrections([]string{onlyOffline}, 5, e.lifetimeStart, w1, used, "only")...)
	cs = append(cs, correction{ev: xev, line: string(xev.value)})
	badLines := []string{`{"user_id":"u00001","ts":`, fmt.Sprintf(`{"user_id":"u00001","ts":%d,"amount":1}`, w1-3*testDay)}
	files := e.writeCorrections(t, "corrections.jsonl", cs, map[string][]string{e.dayDir(w1 - testDay): badLines})
	t.Logf("phase 2: %d records (%d late), %d corrections in %d files", len(p2), late, len(cs), files)

	if err := e.produce(ctx, p2, rng, 5000); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(time.Minute, p.alive)

	// What the stream may serve until the next heal: every event at or
	// after its key's W_b, both copies of a duplicate; no late event, no
	// correction.
	var streamSide []*testEvent
	for _, ev := range p2 {
		if ev.ts >= heads[ev.key] {
			streamSide = append(streamSide, ev)
		}
	}
	pre := merge(ev1, byKey(t, streamSide))
	var once []*testEvent
	for _, ev := range p2 {
		if !dupSecond[ev] {
			once = append(once, ev)
		}
	}
	ce := correctionEvents(t, cs[:len(cs)-1]) // the last one is xev, on the topic too
	post := merge(ev1, byKey(t, once), ce)

	results = e.queryAll(t, all, gets)
	if n := checkOracle(t, ov, results, pre); n == 0 {
		t.Logf("before the next heal, late events and corrections are not served and duplicates after W_b count twice")
	}
	differ := 0
	for _, r := range results {
		at := r.servedAt(t)
		if !maps.EqualFunc(oracle.Values(ov, pre[r.Key], at), oracle.Values(ov, post[r.Key], at), equalValue) {
			differ++
		}
	}
	if differ < 40 {
		t.Fatalf("only %d results would change with the next heal: the phase-2 events are not in play", differ)
	}
	deferred := e.metric(t, fmt.Sprintf(`tilestream_ingest_events_total{outcome="deferred_to_heal",view=%q}`, testView))
	if deferred != float64(late) {
		t.Errorf("deferred_to_heal = %v, want %d (every Kafka event stamped before its key's W_b)", deferred, late)
	}

	// A restart (with a shorter lateness) changes nothing until a heal.
	if err := p.stop(t); err != nil {
		t.Fatalf("run returned %v after cancel", err)
	}
	p = startInProcess(t, cfg2)
	e.waitReady(60*time.Second, p.alive)
	results = e.queryAll(t, all, gets)
	checkOracle(t, ov, results, pre)

	// Phase 3: heal; everything counts, once.
	res2 := e.healNow(t, lateness2)
	w2 := res2.Watermark.UnixMilli()
	if !res2.Installed || res2.Generation <= res1.Generation {
		t.Fatalf("the second heal installed nothing: %+v", res2)
	}
	if res2.BadRows != int64(len(badLines)) {
		t.Errorf("the second heal reports %d bad rows, want %d (the malformed correction lines)", res2.BadRows, len(badLines))
	}
	if res2.Duplicates != 80+1 {
		t.Errorf("the second heal reports %d duplicates, want 81 (80 duplicated events, one event both on the topic and in a file)", res2.Duplicates)
	}
	results = e.queryAll(t, all, gets)
	if n := checkOracle(t, ov, results, post); n == 0 {
		t.Logf("after the second heal every value of %d results equals the oracle over the deduplicated events", len(results))
	}
	checkBatchWatermarks(t, results, post, e.lifetimeStart, w2)
	if r := results[onlyOffline]; r.Metadata.BatchWatermark == nil || r.Features["events_lifetime"] == 0.0 {
		t.Errorf("%s (only in the offline log) is not served from the batch: %+v", onlyOffline, r)
	}
	collected = e.waitCollected(t, 0, p.alive)
	results = e.queryAll(t, all, gets)
	checkOracle(t, ov, results, post)
	if m := e.metric(t, fmt.Sprintf(`tilestream_healer_bad_rows_total{reason="not_json",view=%q}`, testView)); m != 1 {
		t.Errorf(`tilestream_healer_bad_rows_total{reason="not_json"} = %v, want 1`, m)
	}
	if err := p.stop(t); err != nil {
		t.Errorf("run returned %v after cancel, want nil", err)
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// TestHealCommand runs `tilestream heal --config F`: against the running
// service it heals through POST /v1/heal and prints the summary; with the
// service stopped it heals standalone from the store and the offline log
// (here a correction dropped while the service was down), and the restarted
// service serves the result.
func TestHealCommand(t *testing.T) {
	e := newEnv(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	g := newGen(seed, e)
	rng := rand.New(rand.NewPCG(seed, 43))
	cfg := e.writeHealConfig(t, "heal.yaml", healSettings{lateness: "5m"})
	ov := oracleView(e.lifetimeStart)
	keys := g.keys(60)
	evs := append(g.regular(keys, 4000), g.boundary(keys[:20], 3, 3)...)
	bad, _ := g.malformed(2, keys)
	evs = append(evs, bad...)
	g.shuffle(evs)

	p := startInProcess(t, cfg)
	e.waitReady(60*time.Second, p.alive)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.produce(ctx, evs, rng, 2000); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(time.Minute, p.alive)
	events := byKey(t, evs)

	// Through the running service.
	heal := func(stage string) healer.Result {
		t.Helper()
		var stdout, stderr bytes.Buffer
		before := time.Now().UnixMilli()
		err := run(ctx, []string{"heal", "--config", cfg}, os.Getenv, &stdout, &stderr)
		if err != nil {
			t.Fatalf("%s: tilestream heal: %v\n%s", stage, err, stderr.String())
		}
		out := stdout.Bytes()
		if !bytes.HasSuffix(out, []byte("\n")) || bytes.Count(out, []byte("\n")) != 1 {
			t.Errorf("%s: tilestream heal printed %q: want one line of JSON", stage, out)
		}
		res := decodeHealResults(t, out)[0]
		if wb := res.Watermark.UnixMilli(); wb > alignDown(time.Now().UnixMilli()-5*testGran, testGran) || wb < alignDown(before-5*testGran-testGran, testGran) {
			t.Errorf("%s: batch_watermark %s, want about alignDown(now − 5m, 1m)", stage, res.Watermark.UTC())
		}
		t.Logf("%s: %s", stage, bytes.TrimSpace(out))
		return res
	}
	res := heal("through the service")
	if !res.Installed {
		t.Fatalf("the first heal installed nothing: %+v", res)
	}
	if m := e.metric(t, fmt.Sprintf(`tilestream_healer_runs_total{result="installed",view=%q}`, testView)); m != 1 {
		t.Errorf("the service counted %v installed heals, want 1: the command did not heal through it", m)
	}
	results := e.queryAll(t, keys, keys[:3])
	checkOracle(t, ov, results, events)
	checkBatchWatermarks(t, results, events, e.lifetimeStart, res.Watermark.UnixMilli())
	if err := p.stop(t); err != nil {
		t.Fatalf("run returned %v after cancel", err)
	}

	// Standalone: a correction dropped while the service is down.
	used := usedTimes(evs)
	cs := g.corrections(keys[:10], 30, e.now-5*testDay, e.now-testDay, used, "standalone")
	e.writeCorrections(t, "standalone.jsonl", cs, nil)
	res2 := heal("standalone")
	if !res2.Installed || res2.Generation != res.Generation+1 || res2.Watermark.Before(res.Watermark) || res2.DaysHealed == 0 {
		t.Errorf("the standalone heal: %+v; want installed, generation %d, a watermark ≥ %s", res2, res.Generation+1, res.Watermark.UTC())
	}
	all := merge(events, correctionEvents(t, cs))
	p = startInProcess(t, cfg)
	e.waitReady(60*time.Second, p.alive)
	results = e.queryAll(t, keys, keys[:3])
	if n := checkOracle(t, ov, results, all); n == 0 {
		t.Logf("after a standalone heal every value of %d results equals the oracle, the correction included", len(results))
	}
	checkBatchWatermarks(t, results, all, e.lifetimeStart, res2.Watermark.UnixMilli())
	if err := p.stop(t); err != nil {
		t.Errorf("run returned %v after cancel, want nil", err)
	}
}

// TestHealBeforeAnythingIsArchived asks for a heal while the topic holds
// events that the ingest has not consumed yet (the broker keeps the consumer
// out of its group): the archive is complete up to no time at all (E = −∞),
// so the heal has nothing to install, and says so with a 200 whose
// batch_watermark is null — not an error. Once the ingest is let in, the
// next heal installs.
func TestHealBeforeAnythingIsArchived(t *testing.T) {
	e := newEnv(t)
	seed := uint64(time.Now().UnixNano())
	g := newGen(seed, e)
	rng := rand.New(rand.NewPCG(seed, 45))
	cfg := e.writeHealConfig(t, "heal.yaml", healSettings{lateness: "5m"})
	keys := g.keys(10)
	evs := g.regular(keys, 200)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.produce(ctx, evs, rng, 200); err != nil {
		t.Fatal(err)
	}
	var locked atomic.Bool
	locked.Store(true)
	e.cluster.ControlKey(kmsg.JoinGroup.Int16(), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		e.cluster.KeepControl()
		if !locked.Load() {
			return nil, nil, false
		}
		resp := kr.(*kmsg.JoinGroupRequest).ResponseKind().(*kmsg.JoinGroupResponse)
		resp.ErrorCode = kerr.CoordinatorLoadInProgress.Code
		return resp, nil, true
	})
	p := startInProcess(t, cfg)
	// Let the consumer in before the service is stopped, on failure too:
	// a client cannot leave a group it is still trying to join.
	t.Cleanup(func() { locked.Store(false) })
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _, _, err := e.call("GET", "/healthz", "", nil)
		if err == nil && code == http.StatusOK {
			break
		}
		if err := p.alive(); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("not healthy after 30s: %d %v", code, err)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	// Healthy can come before the ingest has created its consumer: the heal
	// waits for it (healStartWait) rather than answering 503.
	code, _, body, err := e.call("POST", "/v1/heal", "application/json", []byte(`{"view":"txn"}`))
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Results []map[string]any `json:"results"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &out) != nil || len(out.Results) != 1 {
		t.Fatalf("POST /v1/heal before anything is archived: %d %s; want 200 with a summary", code, body)
	}
	if r := out.Results[0]; r["installed"] != false || r["batch_watermark"] != nil {
		t.Errorf("POST /v1/heal before anything is archived: %s; want installed false, batch_watermark null", body)
	}

	locked.Store(false)
	e.waitReady(60*time.Second, p.alive)
	e.waitCaughtUp(time.Minute, p.alive)
	if res := e.healNow(t, 5*testGran); !res.Installed {
		t.Errorf("the heal after the ingest caught up installed nothing: %+v", res)
	}
	checkOracle(t, oracleView(e.lifetimeStart), e.queryAll(t, keys, nil), byKey(t, evs))
	if err := p.stop(t); err != nil {
		t.Errorf("run returned %v after cancel, want nil", err)
	}
}
