package main

// Shared helpers of the end-to-end tests (e2e_test.go, crash_test.go): an
// in-process Kafka cluster (kfake), a config file, an event generator that
// knows which events ingest must accept, a producer that records where every
// event landed, a wait for the consumer group to catch up, an HTTP client of
// the feature endpoint and the comparison of every served value with the
// oracle.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tilestream/tilestream/internal/dynalite"
	"github.com/tilestream/tilestream/oracle"
	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/state/dynamo"
)

// The view every end-to-end test serves.
const (
	testTopic      = "transactions"
	testView       = "txn"
	testPartitions = 8
	testGran       = int64(time.Minute / time.Millisecond)
	testHour       = 60 * testGran
	testDay        = 24 * testHour
	// testMaxEventBytes and testMaxKeyBytes are the ingest limits of the
	// test config, small so that the limits are cheap to hit.
	testMaxEventBytes = 4096
	testMaxKeyBytes   = 64
)

// testFeature is one feature of the test view, rendered both into the YAML
// config and into the oracle's view.
type testFeature struct {
	name, function, column, window string
	ms                             int64 // window in ms; 0 for lifetime
}

// testFeatures: sum, count, min, max and mean of amount and count of events
// over 1h, 1d, 7d and lifetime, and last merchant over 1d and lifetime.
var testFeatures = func() []testFeature {
	var fs []testFeature
	for _, w := range []struct {
		text string
		ms   int64
	}{{"1h", testHour}, {"1d", testDay}, {"7d", 7 * testDay}, {"lifetime", 0}} {
		for _, f := range []struct{ fn, col string }{
			{"sum", "amount"}, {"count", "amount"}, {"min", "amount"},
			{"max", "amount"}, {"mean", "amount"}, {"count", ""},
		} {
			name := f.fn + "_" + f.col + "_" + w.text
			if f.col == "" {
				name = "events_" + w.text
			}
			fs = append(fs, testFeature{name, f.fn, f.col, w.text, w.ms})
		}
	}
	fs = append(fs,
		testFeature{"last_merchant_1d", "last", "merchant", "1d", testDay},
		testFeature{"last_merchant_life", "last", "merchant", "lifetime", 0})
	return fs
}()

// oracleView is the test view as the oracle sees it.
func oracleView(lifetimeStart int64) oracle.View {
	v := oracle.View{Granularity: testGran, LifetimeStart: lifetimeStart}
	for _, f := range testFeatures {
		v.Features = append(v.Features, oracle.Feature{Name: f.name, Function: f.function, Column: f.column, Window: f.ms})
	}
	return v
}

// alignDown is the largest multiple of g ≤ t.
func alignDown(t, g int64) int64 {
	r := t % g
	if r < 0 {
		r += g
	}
	return t - r
}

// env is one test's Kafka cluster, clients and config.
type env struct {
	t       *testing.T
	cluster *kfake.Cluster
	brokers []string
	kcl     *kgo.Client // producer, and the admin client's transport
	adm     *kadm.Client
	dir     string
	group   string
	cfgPath string
	addr    string // HTTP listen address of the service
	base    string // http://addr
	http    *http.Client
	// now is the wall clock when the env was made; lifetimeStart the view's
	// lifetime_start, 7.5 days before it, aligned (math.MinInt64 when the
	// config leaves it out).
	now, lifetimeStart int64
	dlq                bool // the config names testDeadLetterTopic
	// dynamo is the DynamoDB store's endpoint and table ("" for Pebble);
	// cacheStaleness the local cache's bound.
	dynamo, table  string
	cacheStaleness time.Duration
}

// envOptions vary the config of an env.
type envOptions struct {
	// noLifetimeStart leaves lifetime_start out: lifetime windows count
	// every event, however old.
	noLifetimeStart bool
	// deadLetter sets kafka.dead_letter_topic to testDeadLetterTopic.
	deadLetter bool
	// dynamo runs the store on DynamoDB at this endpoint (a dynalite the
	// test started), in a table of the test's own.
	dynamo string
	// pebble keeps the store on Pebble even when TILESTREAM_TEST_STORE
	// asks for DynamoDB.
	pebble bool
}

var dynTables atomic.Int64

// testDeadLetterTopic receives malformed records when envOptions.deadLetter.
const testDeadLetterTopic = "transactions-dlq"

// newEnv starts a kfake cluster with the topic and writes the config file.
func newEnv(t *testing.T) *env { return newEnvWith(t, envOptions{}) }

func newEnvWith(t *testing.T, o envOptions) *env {
	t.Helper()
	if o.dynamo == "" && !o.pebble && os.Getenv("TILESTREAM_TEST_STORE") == "dynamodb" {
		// Every end-to-end test on DynamoDB (dynalite) instead of Pebble.
		o.dynamo = dynalite.Shared(t).Endpoint
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(testPartitions, testTopic), kfake.SeedTopics(1, testDeadLetterTopic))
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	e := &env{
		t:       t,
		cluster: c,
		brokers: c.ListenAddrs(),
		dir:     t.TempDir(),
		group:   "tilestream-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")),
		http:    &http.Client{Timeout: 60 * time.Second},
		now:     time.Now().UnixMilli(),
		dlq:     o.deadLetter,
		dynamo:  o.dynamo,
	}
	if e.dynamo != "" {
		e.table = fmt.Sprintf("e2e-%d-%d", os.Getpid(), dynTables.Add(1))
		e.cacheStaleness = 300 * time.Millisecond
	}
	e.lifetimeStart = alignDown(e.now-7*testDay-12*testHour, testGran)
	if o.noLifetimeStart {
		e.lifetimeStart = math.MinInt64
	}
	e.kcl, err = kgo.NewClient(
		kgo.SeedBrokers(e.brokers...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchMaxBytes(1<<20),
	)
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	t.Cleanup(e.kcl.Close)
	e.adm = kadm.NewClient(e.kcl)
	e.addr = freeAddr(t)
	e.base = "http://" + e.addr
	e.cfgPath = filepath.Join(e.dir, "tilestream.yaml")
	if err := os.WriteFile(e.cfgPath, []byte(e.config()), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// config renders the YAML config of the env.
func (e *env) config() string { return e.configFor(e.addr, filepath.Join(e.dir, "online")) }

// openStore opens the env's online store as the service does, without a
// cache (a Pebble store only while the service is stopped).
func (e *env) openStore(t *testing.T) *state.Store {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if e.dynamo == "" {
		s, err := state.Open(state.Config{Path: filepath.Join(e.dir, "online")}, log)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tc := dynamo.DefaultConfig()
	tc.Table, tc.Endpoint, tc.Region = e.table, e.dynamo, "us-east-1"
	s, err := state.OpenDynamo(context.Background(), state.DynamoConfig{Table: tc}, log)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// writeInstanceConfig writes the config of one more instance of the
// service: its own HTTP address and store (cache) directory, the rest
// shared (Kafka group, DynamoDB table, offline log).
func (e *env) writeInstanceConfig(t *testing.T, name, addr string) string {
	t.Helper()
	path := filepath.Join(e.dir, name+".yaml")
	c := e.configFor(addr, filepath.Join(e.dir, name+"-cache"))
	// Its own client id names its group member (evictMember).
	c = strings.Replace(c, "  group: "+e.group+"\n", "  group: "+e.group+"\n  client_id: tilestream-"+name+"\n", 1)
	if err := os.WriteFile(path, []byte(c), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// configFor renders the config of an instance listening on addr with its
// store (Pebble) or local cache (DynamoDB) at storePath.
func (e *env) configFor(addr, storePath string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "kafka:\n  brokers: [%q]\n  group: %s\n", e.brokers[0], e.group)
	if e.dlq {
		fmt.Fprintf(&b, "  dead_letter_topic: %s\n", testDeadLetterTopic)
	}
	if e.dynamo != "" {
		fmt.Fprintf(&b, "store:\n  kind: dynamodb\n  path: %q\n  dynamodb: {table: %s, endpoint: %q, create_table: true}\n  cache: {staleness: %s}\n",
			storePath, e.table, e.dynamo, e.cacheStaleness)
	} else {
		fmt.Fprintf(&b, "store: {kind: pebble, path: %q}\n", storePath)
	}
	fmt.Fprintf(&b, "offline_log: {path: %q, roll_interval: 300ms}\n", filepath.Join(e.dir, "offline"))
	// A read's deadline far above its time on a loaded machine (the
	// default, 5s, is not: a POST of 100 keys on dynalite has outlasted
	// it under a load average of 20), below the client's 60s: a 504 is
	// then a hang, not a slow machine.
	fmt.Fprintf(&b, "http: {listen: %q, request_timeout: 30s}\n", addr)
	fmt.Fprintf(&b, "ingest:\n  flush_interval: 200ms\n  max_event_bytes: %d\n  max_key_bytes: %d\n", testMaxEventBytes, testMaxKeyBytes)
	b.WriteString("log: {level: warn}\n")
	fmt.Fprintf(&b, "views:\n  - name: %s\n    topic: %s\n    entity: user_id\n    timestamp: ts\n    granularity: 1m\n", testView, testTopic)
	if e.lifetimeStart != math.MinInt64 {
		fmt.Fprintf(&b, "    lifetime_start: %q\n", time.UnixMilli(e.lifetimeStart).UTC().Format(time.RFC3339))
	}
	b.WriteString("    features:\n")
	for _, f := range testFeatures {
		col := ""
		if f.column != "" {
			col = ", column: " + f.column
		}
		fmt.Fprintf(&b, "      - {name: %s, function: %s%s, window: %s}\n", f.name, f.function, col, f.window)
	}
	return b.String()
}

// ---------------------------------------------------------------------------
// Events

// testEvent is one produced Kafka record and what ingest must make of it.
type testEvent struct {
	key    string // entity key as served; "" for a malformed record
	ts     int64
	value  []byte
	reason string // expected rejection reason; "" when accepted
	// pinned events go to partition pin; the others to a random one.
	pinned bool
	pin    int32
	// Where it landed, from the produce result.
	partition int32
	offset    int64
}

// gen makes events relative to the env's clock.
type gen struct {
	rng           *rand.Rand
	now           int64
	lifetimeStart int64
}

func newGen(seed uint64, e *env) *gen {
	return &gen{rng: rand.New(rand.NewPCG(seed, 0x7e57)), now: e.now, lifetimeStart: e.lifetimeStart}
}

// keys returns n entity keys: mostly "u…" strings, some all-digit keys (sent
// as JSON numbers or strings, which must be the same key), and a few with
// characters that need escaping in URLs and JSON, including one of exactly
// testMaxKeyBytes bytes.
func (g *gen) keys(n int) []string {
	special := []string{
		"a/b c", "ü-ключ-🙂", `quote"back\slash`, "tab\there", "?x=1&y=%2F#frag",
		"k" + strings.Repeat("x", testMaxKeyBytes-1),
	}
	var ks []string
	for i := 0; len(ks) < n-len(special); i++ {
		if i%12 == 5 {
			ks = append(ks, strconv.Itoa(100000+i)) // digits: sent as a number or a string
		} else {
			ks = append(ks, fmt.Sprintf("u%05d", i))
		}
	}
	return append(ks, special...)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// keyJSON writes key as the event's user_id: digits keys as a JSON number
// most of the time.
func (g *gen) keyJSON(key string) string {
	if isDigits(key) && g.rng.IntN(10) < 7 {
		return key
	}
	return jsonString(key)
}

func jsonString(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// tsJSON writes ts as epoch ms, or sometimes as an RFC 3339 string in UTC or
// in another zone.
func (g *gen) tsJSON(ts int64) string {
	switch n := g.rng.IntN(20); {
	case n < 16:
		return strconv.FormatInt(ts, 10)
	case n < 18:
		return jsonString(time.UnixMilli(ts).UTC().Format(time.RFC3339Nano))
	default:
		zone := time.FixedZone("", (g.rng.IntN(27)-12)*3600+g.rng.IntN(2)*1800)
		return jsonString(time.UnixMilli(ts).In(zone).Format(time.RFC3339Nano))
	}
}

// amountJSON writes an amount: integer, fixed-point cents, negative, zero,
// -0; absent or null now and then (a field "" means absent).
func (g *gen) amountJSON() string {
	switch n := g.rng.IntN(100); {
	case n < 35:
		return strconv.Itoa(g.rng.IntN(5000))
	case n < 80:
		return fmt.Sprintf("%d.%02d", g.rng.IntN(2000), g.rng.IntN(100))
	case n < 88:
		return fmt.Sprintf("-%d.%02d", g.rng.IntN(300), g.rng.IntN(100))
	case n < 90:
		return "0"
	case n < 91:
		return "-0"
	case n < 92:
		return "0.1"
	case n < 96:
		return ""
	default:
		return "null"
	}
}

// merchantJSON writes the merchant: mostly "m<n>", sometimes another JSON
// type (last keeps any value), null or absent.
func (g *gen) merchantJSON() string {
	switch n := g.rng.IntN(100); {
	case n < 85:
		return jsonString("m" + strconv.Itoa(g.rng.IntN(60)))
	case n < 88:
		return strconv.Itoa(g.rng.IntN(1000))
	case n < 90:
		return `{"id":` + strconv.Itoa(g.rng.IntN(100)) + `,"name":"caf\u00e9 \"x\""}`
	case n < 91:
		return `["a",1,true,null]`
	case n < 92:
		return `"ünï\u00e7ode \n 🙂"`
	case n < 93:
		return "true"
	case n < 96:
		return "null"
	default:
		return ""
	}
}

// event builds an accepted event of key at ts.
func (g *gen) event(key string, ts int64) *testEvent {
	fields := []string{`"user_id":` + g.keyJSON(key), `"ts":` + g.tsJSON(ts)}
	if a := g.amountJSON(); a != "" {
		fields = append(fields, `"amount":`+a)
	}
	if m := g.merchantJSON(); m != "" {
		fields = append(fields, `"merchant":`+m)
	}
	if g.rng.IntN(4) == 0 {
		fields = append(fields, `"note":{"channel":"web","tags":["x",2]}`)
	}
	g.rng.Shuffle(len(fields), func(i, j int) { fields[i], fields[j] = fields[j], fields[i] })
	return &testEvent{key: key, ts: ts, value: []byte("{" + strings.Join(fields, ",") + "}")}
}

// regular returns n accepted events over keys: a few hot keys take a tenth;
// times fall over the last 8 days with more of them in the last hours.
func (g *gen) regular(keys []string, n int) []*testEvent {
	hot := keys[:3]
	out := make([]*testEvent, 0, n)
	for range n {
		key := keys[g.rng.IntN(len(keys))]
		if g.rng.IntN(10) == 0 {
			key = hot[g.rng.IntN(len(hot))]
		}
		var ts int64
		switch r := g.rng.IntN(100); {
		case r < 60:
			ts = g.now - g.rng.Int64N(8*testDay)
		case r < 85:
			ts = g.now - g.rng.Int64N(2*testHour)
		default:
			ts = g.now - g.rng.Int64N(10*testGran)
		}
		out = append(out, g.event(key, ts))
	}
	return out
}

// boundaryTimes are event times on tile boundaries and window tails for
// serving times in the next `minutes` minutes: for each base B, the start of
// a current tile, B−1, B+g−1, B+g (a future tile), and B−w, B−w−1 for every
// window w; plus lifetime_start and one ms before it.
func (g *gen) boundaryTimes(minutes int) []int64 {
	var ts []int64
	if g.lifetimeStart != math.MinInt64 {
		ts = append(ts, g.lifetimeStart, g.lifetimeStart-1, g.lifetimeStart+testGran-1)
	}
	for k := range minutes {
		b := alignDown(g.now, testGran) + int64(k)*testGran
		ts = append(ts, b, b-1, b+testGran-1, b+testGran)
		for _, w := range []int64{testHour, testDay, 7 * testDay} {
			ts = append(ts, b-w, b-w-1, b-w+testGran-1)
		}
	}
	return ts
}

// boundary returns per events for every key, at boundary times, some of them
// several at the very same time (ties of last are broken by partition, then
// offset).
func (g *gen) boundary(keys []string, per, minutes int) []*testEvent {
	times := g.boundaryTimes(minutes)
	var out []*testEvent
	for _, k := range keys {
		for range per {
			ts := times[g.rng.IntN(len(times))]
			out = append(out, g.event(k, ts))
			if g.rng.IntN(8) == 0 {
				for range 1 + g.rng.IntN(3) {
					out = append(out, g.event(k, ts)) // a tie
				}
			}
		}
	}
	return out
}

// acceptedFuture returns events stamped within the future skew (accepted, but
// in no window yet).
func (g *gen) acceptedFuture(keys []string, n int) []*testEvent {
	var out []*testEvent
	for range n {
		out = append(out, g.event(keys[g.rng.IntN(len(keys))], g.now+20*testGran+g.rng.Int64N(20*testGran)))
	}
	return out
}

// extremes returns events with amounts at the edges of float64, written as
// plain digit strings: a sum that cancels exactly and one that overflows to
// null.
func (g *gen) extremes(cancelKey, overflowKey string) []*testEvent {
	big := "1" + strings.Repeat("0", 300)   // 1e300
	huge := "17" + strings.Repeat("0", 307) // 1.7e308: three of them overflow
	mk := func(key string, ts int64, amount string) *testEvent {
		v := fmt.Sprintf(`{"user_id":%s,"ts":%d,"amount":%s,"merchant":"mx"}`, jsonString(key), ts, amount)
		return &testEvent{key: key, ts: ts, value: []byte(v)}
	}
	var out []*testEvent
	for i := range 6 {
		ts := g.now - g.rng.Int64N(30*testGran)
		out = append(out, mk(cancelKey, ts, big), mk(cancelKey, ts-int64(i), "-"+big), mk(cancelKey, ts, "0.1"))
	}
	out = append(out, mk(overflowKey, g.now-testGran, huge), mk(overflowKey, g.now-2*testGran, huge),
		mk(overflowKey, g.now-3*testGran, huge), mk(overflowKey, g.now-4*testGran, "-"+huge))
	return out
}

// malformed returns records ingest must reject, about per of every class,
// each with its expected reason; also returns accepted events on the limits
// (a value of exactly testMaxEventBytes bytes).
func (g *gen) malformed(per int, keys []string) (bad, edge []*testEvent) {
	okTS := func() string { return strconv.FormatInt(g.now-g.rng.Int64N(3*testDay), 10) }
	key := func() string { return jsonString(keys[g.rng.IntN(len(keys))]) }
	pad := func(prefix string, size int) string {
		// prefix is an object missing its closing brace; pad it to size bytes.
		n := size - len(prefix) - len(`,"pad":""}`)
		return prefix + `,"pad":"` + strings.Repeat("p", n) + `"}`
	}
	// pick returns variant i (cyclically): every variant of a class is
	// produced once the class has as many records as variants.
	pick := func(i int, vs ...string) string { return vs[i%len(vs)] }
	classes := []struct {
		reason string
		make   func(i int) string
	}{
		{"not_json", func(i int) string {
			return pick(i, ``, `hello`, `{"user_id":"u1","ts":`+okTS(), `{"user_id":"u1",}`, `{'user_id':'u1'}`, "\xff\xfe")
		}},
		{"not_object", func(i int) string {
			return pick(i, `[1,2,3]`, `[{"user_id":"u1","ts":1}]`, `"str"`, `42`, `null`, `true`)
		}},
		{"missing_key", func(i int) string {
			return pick(i, `{"ts":`+okTS()+`,"amount":1}`, `{"user_id":null,"ts":`+okTS()+`,"amount":1}`)
		}},
		{"bad_key", func(i int) string {
			k := pick(i, `{"id":1}`, `1.5`, `true`, `""`, `[1]`, `1e3`, `-2.0`)
			return `{"user_id":` + k + `,"ts":` + okTS() + `,"amount":1}`
		}},
		{"key_too_long", func(int) string {
			return `{"user_id":"` + strings.Repeat("L", testMaxKeyBytes+1+g.rng.IntN(100)) + `","ts":` + okTS() + `,"amount":1}`
		}},
		{"missing_timestamp", func(i int) string {
			return pick(i, `{"user_id":`+key()+`,"amount":1}`, `{"user_id":`+key()+`,"ts":null,"amount":1}`)
		}},
		{"bad_timestamp", func(i int) string {
			ts := pick(i, `true`, `"yesterday"`, `"2024-13-01T00:00:00Z"`, `{"ms":1}`, `[1]`, `1e300`, `"1700000000000"`)
			return `{"user_id":` + key() + `,"ts":` + ts + `,"amount":1}`
		}},
		{"future_timestamp", func(int) string {
			ts := g.now + 2*testHour + g.rng.Int64N(testDay)
			return `{"user_id":` + key() + `,"ts":` + g.tsJSON(ts) + `,"amount":1}`
		}},
		{"bad_field_type", func(i int) string {
			a := pick(i, `"12.34"`, `true`, `{"v":1}`, `[1]`)
			return `{"user_id":` + key() + `,"ts":` + okTS() + `,"amount":` + a + `}`
		}},
		{"non_finite", func(i int) string {
			return `{"user_id":` + key() + `,"ts":` + okTS() + `,"amount":` + pick(i, `1e999`, `-1e999`) + `}`
		}},
		{"oversized", func(int) string {
			return pad(`{"user_id":`+key()+`,"ts":`+okTS()+`,"amount":1`, testMaxEventBytes+1+g.rng.IntN(2000))
		}},
	}
	for _, c := range classes {
		for i := range max(8, per/2+g.rng.IntN(per)) {
			bad = append(bad, &testEvent{value: []byte(c.make(i)), reason: c.reason})
		}
	}
	// On the limits: exactly testMaxEventBytes bytes, and a key of exactly
	// testMaxKeyBytes (among keys) is accepted.
	for range 5 {
		k := keys[g.rng.IntN(len(keys))]
		ts := g.now - g.rng.Int64N(testDay)
		v := pad(fmt.Sprintf(`{"user_id":%s,"ts":%d,"amount":7.5,"merchant":"edge"`, jsonString(k), ts), testMaxEventBytes)
		if len(v) != testMaxEventBytes {
			panic("pad")
		}
		edge = append(edge, &testEvent{key: k, ts: ts, value: []byte(v)})
	}
	return bad, edge
}

// shuffle puts events in random order.
func (g *gen) shuffle(evs []*testEvent) {
	g.rng.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
}

// ---------------------------------------------------------------------------
// Producing

// produce sends evs to random partitions, in chunks, and records where each
// landed. It is safe to call from any goroutine; it returns the first error.
func (e *env) produce(ctx context.Context, evs []*testEvent, rng *rand.Rand, chunk int) error {
	for len(evs) > 0 {
		n := min(chunk, len(evs))
		part := evs[:n]
		evs = evs[n:]
		recs := make([]*kgo.Record, len(part))
		// ProduceSync returns results in completion order, not in the
		// order of recs: map each record back to its event.
		of := make(map[*kgo.Record]*testEvent, len(part))
		for i, ev := range part {
			recs[i] = &kgo.Record{Topic: testTopic, Partition: int32(rng.IntN(testPartitions)), Value: ev.value}
			if ev.pinned {
				recs[i].Partition = ev.pin
			}
			if ev.key != "" {
				recs[i].Key = []byte(ev.key)
			}
			of[recs[i]] = ev
		}
		res := e.kcl.ProduceSync(ctx, recs...)
		if len(res) != len(recs) {
			return fmt.Errorf("produce: %d results for %d records", len(res), len(recs))
		}
		for _, r := range res {
			if r.Err != nil {
				return fmt.Errorf("produce: %w", r.Err)
			}
			ev := of[r.Record]
			if ev == nil {
				return fmt.Errorf("produce: a result for an unknown record")
			}
			ev.partition, ev.offset = r.Record.Partition, r.Record.Offset
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// Consumer group progress

// groupProgress returns the sum of committed offsets and of end offsets over
// the topic's partitions, and whether every partition is committed to its end.
func (e *env) groupProgress(ctx context.Context) (committed, end int64, caughtUp bool, err error) {
	ends, err := e.adm.ListEndOffsets(ctx, testTopic)
	if err != nil {
		return 0, 0, false, err
	}
	offs, err := e.adm.FetchOffsets(ctx, e.group)
	if err != nil {
		return 0, 0, false, err
	}
	caughtUp = true
	for p := int32(0); p < testPartitions; p++ {
		lo, ok := ends.Lookup(testTopic, p)
		if !ok || lo.Err != nil {
			return 0, 0, false, fmt.Errorf("end offset of partition %d: %v", p, lo.Err)
		}
		end += lo.Offset
		c := int64(0)
		if o, ok := offs.Lookup(testTopic, p); ok && o.Err == nil && o.At >= 0 {
			c = o.At
		}
		committed += c
		if c != lo.Offset {
			caughtUp = false
		}
	}
	return committed, end, caughtUp, nil
}

// waitCaughtUp polls until the group's committed offsets reach the end of
// every partition. It fails the test once nothing has moved for stall,
// neither the committed offsets nor the service's work (workDone): a hang,
// where a loaded machine only takes longer (one flush of a backlog to
// dynalite can then outlast a minute). alive, when not nil, reports an
// early exit of the service.
func (e *env) waitCaughtUp(stall time.Duration, alive func() error) {
	e.t.Helper()
	start := time.Now()
	deadline := start.Add(stall)
	committed, end := int64(-1), int64(0)
	var work float64
	var looked time.Time
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, en, ok, err := e.groupProgress(ctx)
		cancel()
		if err == nil {
			if c > committed {
				committed, deadline = c, time.Now().Add(stall)
			}
			end = en
			if ok {
				return
			}
		}
		if alive != nil {
			if err := alive(); err != nil {
				e.t.Fatalf("service exited while catching up: %v", err)
			}
		}
		if time.Since(looked) >= time.Second {
			looked = time.Now()
			if w := e.workDone(); w > work {
				work, deadline = w, time.Now().Add(stall)
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("consumer group not caught up after %v, with neither a commit nor other work in the last %v: committed %d of %d (last error %v)",
				time.Since(start).Round(time.Millisecond), stall, committed, end, err)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

// workDone is the sum of the service's counters of catching-up work:
// records consumed, events archived and DynamoDB writes (a flush writes
// tiles one PutItem each; nothing else writes but heals and their garbage
// collection). 0 when its metrics cannot be read.
func (e *env) workDone() float64 {
	code, _, body, err := e.call("GET", "/metrics", "", nil)
	if err != nil || code != http.StatusOK {
		return 0
	}
	n := 0.0
	for _, line := range strings.Split(string(body), "\n") {
		switch {
		case strings.HasPrefix(line, "tilestream_ingest_records_consumed_total"),
			strings.HasPrefix(line, "tilestream_ingest_archived_events_total"),
			strings.HasPrefix(line, `tilestream_dynamodb_requests_total{op="PutItem"}`),
			strings.HasPrefix(line, `tilestream_dynamodb_requests_total{op="BatchWriteItem"}`):
			if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
				n += v
			}
		}
	}
	return n
}

// evictMembers removes every member of the group, as the coordinator does
// when a dead member's session times out. A SIGKILLed member cannot leave the
// group; without this its successor would wait for the session timeout (45 s
// by default in franz-go) before it gets the partitions.
func (e *env) evictMembers(ctx context.Context) error {
	gs, err := e.adm.DescribeGroups(ctx, e.group)
	if err != nil {
		return err
	}
	g, ok := gs[e.group]
	if !ok || g.Err != nil || len(g.Members) == 0 {
		return nil
	}
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = e.group
	for _, m := range g.Members {
		lm := kmsg.NewLeaveGroupRequestMember()
		lm.MemberID = m.MemberID
		req.Members = append(req.Members, lm)
	}
	resp, err := req.RequestWith(ctx, e.kcl)
	if err != nil {
		return err
	}
	if resp.ErrorCode != 0 {
		return fmt.Errorf("leave group: error code %d", resp.ErrorCode)
	}
	return nil
}

// ---------------------------------------------------------------------------
// HTTP

// featureResult is one served result, numbers decoded as float64.
type featureResult struct {
	View     string         `json:"view"`
	Key      string         `json:"key"`
	Features map[string]any `json:"features"`
	Metadata struct {
		ServedAt        string  `json:"served_at"`
		BatchWatermark  *string `json:"batch_watermark"`
		StreamWatermark *string `json:"stream_watermark"`
		// BatchStaleness is served_at − batch_watermark in seconds; null
		// before any heal.
		BatchStaleness *float64 `json:"batch_staleness_seconds"`
	} `json:"metadata"`
}

// servedAt returns the result's serving time in ms.
func (r *featureResult) servedAt(t *testing.T) int64 {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, r.Metadata.ServedAt)
	if err != nil {
		t.Fatalf("served_at %q: %v", r.Metadata.ServedAt, err)
	}
	return ts.UnixMilli()
}

// call does one request and returns the status and body.
func (e *env) call(method, path, contentType string, body []byte) (int, http.Header, []byte, error) {
	req, err := http.NewRequest(method, e.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

// decodeJSON decodes body into v, numbers as float64, unknown fields refused.
func decodeJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// getFeatures does GET /v1/features/txn/{key}.
func (e *env) getFeatures(t *testing.T, key string) featureResult {
	t.Helper()
	code, _, body, err := e.call("GET", "/v1/features/"+testView+"/"+url.PathEscape(key), "", nil)
	if err != nil {
		t.Fatalf("GET %q: %v", key, err)
	}
	if code != http.StatusOK {
		t.Fatalf("GET %q: status %d: %s", key, code, body)
	}
	var r featureResult
	if err := decodeJSON(body, &r); err != nil {
		t.Fatalf("GET %q: decode %s: %v", key, body, err)
	}
	return r
}

// postFeatures does POST /v1/features for keys (≤ the batch limit).
func (e *env) postFeatures(t *testing.T, keys []string) []featureResult {
	t.Helper()
	type kr struct {
		View string `json:"view"`
		Key  string `json:"key"`
	}
	req := struct {
		Requests []kr `json:"requests"`
	}{}
	for _, k := range keys {
		req.Requests = append(req.Requests, kr{testView, k})
	}
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	code, _, resp, err := e.call("POST", "/v1/features", "application/json", body)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	if code != http.StatusOK {
		t.Fatalf("POST of %d keys: status %d: %s", len(keys), code, resp)
	}
	var out struct {
		Results []featureResult `json:"results"`
	}
	if err := decodeJSON(resp, &out); err != nil {
		t.Fatalf("POST: decode: %v", err)
	}
	if len(out.Results) != len(keys) {
		t.Fatalf("POST of %d keys: %d results", len(keys), len(out.Results))
	}
	return out.Results
}

// queryAll returns the served result of every key: POST batches of up to 100
// keys, and GETs for every key in gets.
func (e *env) queryAll(t *testing.T, keys []string, gets []string) map[string]featureResult {
	t.Helper()
	out := make(map[string]featureResult, len(keys))
	for i := 0; i < len(keys); i += 100 {
		batch := keys[i:min(i+100, len(keys))]
		res := e.postFeatures(t, batch)
		var servedAt string
		for j, r := range res {
			if r.Key != batch[j] || r.View != testView {
				t.Fatalf("POST result %d is %s/%q, want %s/%q", j, r.View, r.Key, testView, batch[j])
			}
			if j == 0 {
				servedAt = r.Metadata.ServedAt
			} else if r.Metadata.ServedAt != servedAt {
				t.Errorf("POST results served at %s and %s: one batch must use one time", servedAt, r.Metadata.ServedAt)
			}
			out[r.Key] = r
		}
	}
	for _, k := range gets {
		r := e.getFeatures(t, k)
		if r.Key != k || r.View != testView {
			t.Fatalf("GET result is %s/%q, want %s/%q", r.View, r.Key, testView, k)
		}
		out["GET "+k] = r
	}
	return out
}

// waitReady polls GET /readyz until 200, failing at the deadline; alive,
// when not nil, reports an early exit of the service.
func (e *env) waitReady(timeout time.Duration, alive func() error) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		code, _, _, err := e.call("GET", "/readyz", "", nil)
		if err == nil && code == http.StatusOK {
			return
		}
		if alive != nil {
			if err := alive(); err != nil {
				e.t.Fatalf("service exited before it was ready: %v", err)
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("not ready after %v: status %d, err %v", timeout, code, err)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

// scrape returns the samples of GET /metrics named with prefix, keyed by
// name{label="value",…} with labels sorted.
func (e *env) scrape(t *testing.T, prefix string) map[string]float64 {
	t.Helper()
	code, _, body, err := e.call("GET", "/metrics", "", nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	labelRE := regexp.MustCompile(`(\w+)="((?:[^"\\]|\\.)*)"`)
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		name, labels := line[:sp], ""
		if i := strings.IndexByte(name, '{'); i >= 0 {
			var ls []string
			for _, m := range labelRE.FindAllStringSubmatch(name[i:], -1) {
				ls = append(ls, m[1]+"="+strconv.Quote(m[2]))
			}
			sort.Strings(ls)
			name, labels = name[:i], "{"+strings.Join(ls, ",")+"}"
		}
		out[name+labels] = v
	}
	return out
}

// ---------------------------------------------------------------------------
// The oracle check

// byKey groups the accepted events by key, as oracle events.
func byKey(t *testing.T, evs []*testEvent) map[string][]oracle.Event {
	t.Helper()
	out := map[string][]oracle.Event{}
	for _, ev := range evs {
		if ev.reason != "" {
			continue
		}
		var fields map[string]any
		if err := json.Unmarshal(ev.value, &fields); err != nil {
			t.Fatalf("accepted event %s does not decode: %v", ev.value, err)
		}
		out[ev.key] = append(out[ev.key], oracle.Event{Key: ev.key, TS: ev.ts, Partition: ev.partition, Offset: ev.offset, Fields: fields})
	}
	return out
}

// equalValue compares a served value with the oracle's: numbers with ==,
// anything else deeply.
func equalValue(got, want any) bool {
	if g, ok := got.(float64); ok {
		w, ok := want.(float64)
		return ok && g == w
	}
	return reflect.DeepEqual(got, want)
}

// checkOracle compares every feature of every result with the oracle at the
// result's served_at, reporting each mismatch (at most 40 lines). It returns
// the number of mismatches.
func checkOracle(t *testing.T, ov oracle.View, results map[string]featureResult, events map[string][]oracle.Event) int {
	t.Helper()
	bad := mismatches(t, ov, results, events)
	for i, m := range bad {
		if i == 40 {
			t.Errorf("… %d mismatches in all", len(bad))
			break
		}
		t.Error(m)
	}
	return len(bad)
}

// mismatches returns a line for every feature of every result that differs
// from the oracle at the result's served_at.
func mismatches(t *testing.T, ov oracle.View, results map[string]featureResult, events map[string][]oracle.Event) []string {
	t.Helper()
	names := make([]string, len(ov.Features))
	for i, f := range ov.Features {
		names[i] = f.Name
	}
	slices.Sort(names)
	labels := slices.Sorted(maps.Keys(results))
	var bad []string
	report := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	for _, label := range labels {
		r := results[label]
		got := slices.Sorted(maps.Keys(r.Features))
		if !slices.Equal(got, names) {
			report("%s: features %v, want %v", label, got, names)
			continue
		}
		at := r.servedAt(t)
		want := oracle.Values(ov, events[r.Key], at)
		for _, f := range ov.Features {
			if g, w := r.Features[f.Name], want[f.Name]; !equalValue(g, w) {
				report("key %q (%s) at %s: %s = %s, oracle %s (%d events for the key)",
					r.Key, label, r.Metadata.ServedAt, f.Name, show(g), show(w), len(events[r.Key]))
			}
		}
	}
	return bad
}

func show(v any) string {
	switch v := v.(type) {
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case nil:
		return "null"
	}
	b, _ := json.Marshal(v)
	return fmt.Sprintf("%T %s", v, b)
}

// checkStreamWatermark checks every result's stream_watermark: not null, and
// equal to the smallest, over partitions, of the largest accepted event time
// (every event is consumed and durable by now).
func checkStreamWatermark(t *testing.T, results map[string]featureResult, evs []*testEvent) {
	t.Helper()
	maxTS := map[int32]int64{}
	largest := int64(-1 << 63)
	for _, ev := range evs {
		if ev.reason != "" {
			continue
		}
		if cur, ok := maxTS[ev.partition]; !ok || ev.ts > cur {
			maxTS[ev.partition] = ev.ts
		}
		largest = max(largest, ev.ts)
	}
	want := int64(1<<63 - 1)
	for p := int32(0); p < testPartitions; p++ {
		m, ok := maxTS[p]
		if !ok {
			t.Fatalf("partition %d has no accepted event; the watermark check needs one", p)
		}
		want = min(want, m)
	}
	wantText := time.UnixMilli(want).UTC().Format("2006-01-02T15:04:05.000Z07:00")
	n := 0
	for label, r := range results {
		sw := r.Metadata.StreamWatermark
		switch {
		case sw == nil:
			t.Errorf("%s: stream_watermark is null after every partition was consumed", label)
		default:
			ts, err := time.Parse(time.RFC3339Nano, *sw)
			if err != nil {
				t.Errorf("%s: stream_watermark %q: %v", label, *sw, err)
			} else if ts.UnixMilli() > largest {
				t.Errorf("%s: stream_watermark %s is after the largest event time %s", label, *sw, time.UnixMilli(largest).UTC())
			} else if ts.UnixMilli() != want {
				t.Errorf("%s: stream_watermark %s, want %s (min over partitions of the largest event time)", label, *sw, wantText)
			} else {
				continue
			}
		}
		if n++; n > 5 {
			t.Fatalf("… giving up on watermarks")
		}
	}
}

// ---------------------------------------------------------------------------
// Running the service

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// inProcess is the service run by run() in a goroutine.
type inProcess struct {
	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer
	err    error
	exited bool
}

// startInProcess runs `tilestream run --config path` in process. The test's
// cleanup stops it and prints its log on failure.
func startInProcess(t *testing.T, path string) *inProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &inProcess{cancel: cancel, done: make(chan error, 1), logs: new(syncBuffer)}
	go func() { p.done <- run(ctx, []string{"run", "--config", path}, os.Getenv, p.logs, p.logs) }()
	t.Cleanup(func() {
		if !p.exited {
			cancel()
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				t.Errorf("run did not return 30s after cancel")
			}
		}
		if t.Failed() {
			t.Logf("service log (tail):\n%s", tail(p.logs.String(), 60))
		}
	})
	return p
}

// alive returns the service's error if it has exited.
func (p *inProcess) alive() error {
	if p.exited {
		return fmt.Errorf("exited: %v", p.err)
	}
	select {
	case err := <-p.done:
		p.exited, p.err = true, err
		return fmt.Errorf("exited: %v", err)
	default:
		return nil
	}
}

// stop cancels the context and returns run's result.
func (p *inProcess) stop(t *testing.T) error {
	t.Helper()
	if p.exited {
		return p.err
	}
	p.cancel()
	select {
	case err := <-p.done:
		p.exited, p.err = true, err
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("run did not return 30s after cancel")
		return nil
	}
}

// binDir holds the binary built by buildBinary; TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	dynalite.CloseShared()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildBinary builds the tilestream binary once per test process.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "tilestream-e2e-bin-")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "tilestream")
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goTool, "build", "-tags", "pebblegozstd", "-o", bin, ".")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// child is the service run as a separate process.
type child struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // valid after done
}

// startChild starts the binary with the env's config, logging to a file.
func (e *env) startChild(t *testing.T, bin, name string) *child {
	t.Helper()
	logPath := filepath.Join(e.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", e.cfgPath)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", bin, err)
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
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s log (tail):\n%s", name, tail(string(b), 40))
		}
	})
	return c
}

// alive returns an error once the child has exited.
func (c *child) alive() error {
	select {
	case <-c.done:
		return fmt.Errorf("child exited: %v", c.err)
	default:
		return nil
	}
}

// kill SIGKILLs the child and waits for it.
func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil && c.alive() == nil {
		t.Fatalf("kill: %v", err)
	}
	<-c.done
}

// term SIGTERMs the child and returns its exit error (nil: exit status 0).
func (c *child) term(t *testing.T) error {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-c.done:
		return c.err
	case <-time.After(30 * time.Second):
		t.Fatalf("child did not exit 30s after SIGTERM")
		return nil
	}
}
