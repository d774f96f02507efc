package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tilestream/tilestream/tiling"
)

// Fragments of a valid config that the tests below vary one part of.
const (
	okKafka = "kafka: {brokers: [\"k:9092\"]}\n"
	okViews = "views: [{name: v, topic: t, entity: u, timestamp: ts, features: [{name: n, function: count, window: 1h}]}]\n"
)

// viewWith is okKafka and one view made of okView's fields plus extra
// fields and the given features.
func viewWith(extra, features string) string {
	if extra != "" {
		extra = ", " + extra
	}
	return okKafka + "views: [{name: v, topic: t, entity: u, timestamp: ts" + extra + ", features: [" + features + "]}]\n"
}

const okFeature = "{name: n, function: count, window: 1h}"

func mustView(t *testing.T, v tiling.View) *tiling.View {
	t.Helper()
	out, err := tiling.NewView(v)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// problemsOf returns the listed problems of a config error: one for an error
// reported alone.
func problemsOf(err error) []string {
	var ce *configError
	if errors.As(err, &ce) {
		return ce.problems
	}
	return []string{err.Error()}
}

func TestFullFileParses(t *testing.T) {
	got, err := loadConfig("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := new(settings)
	want.Kafka.Brokers = []string{"kafka-1:9092", "kafka-2:9092"}
	want.Kafka.Group = "tilestream"
	want.Kafka.ClientID = "tilestream"
	want.Kafka.DeadLetterTopic = "transactions-dlq"
	want.StoreKind = "pebble"
	want.StorePath = "/var/lib/tilestream/online"
	want.OfflineLogPath = "/var/lib/tilestream/offline"
	want.OfflineLogRollInterval, want.OfflineLogRollEvents, want.HealerGrace, want.HealerLease = time.Minute, 200_000, time.Minute, time.Minute
	want.HealerVerifySample = 20
	want.Kafka.SessionTimeout = 45 * time.Second
	want.HTTP.Listen = "0.0.0.0:8080"
	want.HTTP.MaxBatch = 100
	want.HTTP.MaxBodyBytes = 1 << 20
	want.HTTP.RequestTimeout = 5 * time.Second
	want.Ingest.FlushInterval = time.Second
	want.Ingest.FutureSkew = time.Hour
	want.Ingest.MaxEventBytes = 65536
	want.Ingest.MaxKeyBytes = 1024
	want.Ingest.RecordCache = 200000
	want.Log.Level = slog.LevelInfo
	want.Log.JSON = true
	want.Views = []viewSettings{
		{
			View: mustView(t, tiling.View{
				Name: "txn", Topic: "transactions", Entity: "user_id", Timestamp: "ts",
				Granularity: tiling.Minute, LifetimeStart: tiling.MinTime,
				Features: []tiling.Feature{
					{Name: "amount_sum_7d", Function: tiling.Sum, Column: "amount", Window: 7 * tiling.Day},
					{Name: "amount_mean_1h", Function: tiling.Mean, Column: "amount", Window: tiling.Hour},
					{Name: "amount_count_life", Function: tiling.Count, Window: tiling.Lifetime},
					{Name: "amount_stddev_7d", Function: tiling.StddevSamp, Column: "amount", Window: 7 * tiling.Day},
					{Name: "amount_p99_1d", Function: tiling.ApproxPercentile, Column: "amount", Window: tiling.Day,
						Percentiles: []float64{0.5, 0.99}, Accuracy: 0.01, MaxBins: 2048},
					{Name: "last_amounts", Function: tiling.LastN, Column: "amount", Window: tiling.Day, N: 10},
					{Name: "last_merchants", Function: tiling.LastDistinctN, Column: "merchant_id", Window: 30 * tiling.Day,
						N: 5, MaxValueBytes: 256},
				},
			}),
			Lateness: 5 * tiling.Minute, HealEvery: 24 * tiling.Hour,
		},
		{
			View: mustView(t, tiling.View{
				Name: "merchant", Topic: "transactions", Entity: "merchant_id", Timestamp: "ts", EventID: "txn_id",
				Granularity:   tiling.Hour, // the default for a smallest window of 1d
				LifetimeStart: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(),
				Features: []tiling.Feature{
					{Name: "amount_max_1d", Function: tiling.Max, Column: "amount", Window: tiling.Day},
					{Name: "last_user", Function: tiling.Last, Column: "user_id", Window: tiling.Lifetime},
					{Name: "refunds_30d", Function: tiling.Count, Column: "refund", Window: 30 * tiling.Day},
					{Name: "users_30d", Function: tiling.ApproxCountDistinct, Column: "user_id", Window: 30 * tiling.Day, Precision: 12},
					{Name: "top_users_30d", Function: tiling.TopK, Column: "user_id", Window: 30 * tiling.Day, K: 10},
				},
			}),
			Lateness: tiling.Hour, HealEvery: 6 * tiling.Hour, EventID: "txn_id",
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%+v\nwant\n%+v", got, want)
		for i := range min(len(got.Views), len(want.Views)) {
			if !reflect.DeepEqual(got.Views[i].View, want.Views[i].View) {
				t.Errorf("views[%d]: got %+v, want %+v", i, *got.Views[i].View, *want.Views[i].View)
			}
		}
	}
}

func TestDefaults(t *testing.T) {
	s, err := parseConfig([]byte(viewWith("", okFeature)))
	if err != nil {
		t.Fatal(err)
	}
	e, err := parseConfig([]byte("kafka: {embedded: {}}\n" + okViews))
	if err != nil {
		t.Fatal(err)
	}
	life, err := parseConfig([]byte(viewWith("", "{name: n, function: count, window: lifetime}")))
	if err != nil {
		t.Fatal(err)
	}
	v := s.Views[0]
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"the consumer group is tilestream", s.Kafka.Group, "tilestream"},
		{"the client id is tilestream", s.Kafka.ClientID, "tilestream"},
		{"there is no dead letter topic", s.Kafka.DeadLetterTopic, ""},
		{"brokers mean no embedded broker", s.Kafka.Embedded, false},
		{"an empty embedded section means an embedded broker", e.Kafka.Embedded, true},
		{"the embedded broker listens on 127.0.0.1:9092", e.Kafka.EmbeddedListen, "127.0.0.1:9092"},
		{"the embedded broker has 8 partitions", e.Kafka.EmbeddedPartitions, int32(8)},
		{"the store is pebble", s.StoreKind, "pebble"},
		{"20 keys are checked after each scheduled heal", s.HealerVerifySample, 20},
		{"the store is in ./data/online", s.StorePath, "./data/online"},
		{"the offline log is in ./data/offline", s.OfflineLogPath, "./data/offline"},
		{"http listens on 127.0.0.1:8080", s.HTTP.Listen, "127.0.0.1:8080"},
		{"a batch holds up to 100 keys", s.HTTP.MaxBatch, 100},
		{"a request body holds up to 1 MiB", s.HTTP.MaxBodyBytes, int64(1 << 20)},
		{"a request times out after 5s", s.HTTP.RequestTimeout, 5 * time.Second},
		{"ingest flushes every second", s.Ingest.FlushInterval, time.Second},
		{"events up to 1h in the future are accepted", s.Ingest.FutureSkew, time.Hour},
		{"an event holds up to 64 KiB", s.Ingest.MaxEventBytes, 65536},
		{"a key holds up to 1 KiB", s.Ingest.MaxKeyBytes, 1024},
		{"200000 records are cached", s.Ingest.RecordCache, 200000},
		{"the log level is info", s.Log.Level, slog.LevelInfo},
		{"the log is text", s.Log.JSON, false},
		{"the granularity of a view whose smallest window is 1h is 5m", v.View.Granularity, 5 * tiling.Minute},
		{"the granularity of a lifetime-only view is 1h", life.Views[0].View.Granularity, tiling.Hour},
		{"lifetime windows count from the beginning of time", v.View.LifetimeStart, tiling.MinTime},
		{"the lateness is 5m", v.Lateness, 5 * tiling.Minute},
		{"views heal every 24h", v.HealEvery, 24 * tiling.Hour},
		{"events are identified by their position", v.EventID, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if !reflect.DeepEqual(c.got, c.want) {
				t.Errorf("got %v (%T), want %v (%T)", c.got, c.got, c.want, c.want)
			}
		})
	}
}

func TestValidVariants(t *testing.T) {
	for _, c := range []struct {
		name  string
		yaml  string
		check func(t *testing.T, s *settings)
	}{
		{
			name: "a window in days and hours is read",
			yaml: viewWith("", "{name: n, function: count, window: 1d12h}"),
			check: func(t *testing.T, s *settings) {
				if w := s.Views[0].View.Features[0].Window; w != 36*tiling.Hour {
					t.Errorf("window %d", w)
				}
			},
		},
		{
			name: "count may name a column",
			yaml: viewWith("", "{name: n, function: count, column: amount, window: 1h}"),
			check: func(t *testing.T, s *settings) {
				if c := s.Views[0].View.Features[0].Column; c != "amount" {
					t.Errorf("column %q", c)
				}
			},
		},
		{
			name: "a lifetime start with a zone is read as its instant",
			yaml: viewWith("lifetime_start: 2020-01-01T02:00:00+02:00", okFeature),
			check: func(t *testing.T, s *settings) {
				want := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
				if got := s.Views[0].View.LifetimeStart; got != want {
					t.Errorf("lifetime start %d, want %d", got, want)
				}
			},
		},
		{
			name: "a lateness of zero is allowed",
			yaml: viewWith("lateness: 0s", okFeature),
			check: func(t *testing.T, s *settings) {
				if s.Views[0].Lateness != 0 {
					t.Errorf("lateness %d", s.Views[0].Lateness)
				}
			},
		},
		{
			name: "heal_every may be 1m and 30d",
			yaml: okKafka + `views:
  - {name: a, topic: t, entity: u, timestamp: ts, heal_every: 1m, features: [{name: n, function: count, window: 1h}]}
  - {name: b, topic: t, entity: u, timestamp: ts, heal_every: 30d, features: [{name: n, function: count, window: 1h}]}
`,
			check: func(t *testing.T, s *settings) {
				if s.Views[0].HealEvery != tiling.Minute || s.Views[1].HealEvery != 30*tiling.Day {
					t.Errorf("heal_every %d, %d", s.Views[0].HealEvery, s.Views[1].HealEvery)
				}
			},
		},
		{
			name: "a granularity of whole days is allowed",
			yaml: viewWith("granularity: 2d", "{name: n, function: sum, column: x, window: 30d}"),
			check: func(t *testing.T, s *settings) {
				if g := s.Views[0].View.Granularity; g != 2*tiling.Day {
					t.Errorf("granularity %d", g)
				}
			},
		},
		{
			name: "the options of every function are read",
			yaml: viewWith("", `{name: a, function: approx_percentile, column: amount, window: 1d, percentiles: [0.5, 0.99], accuracy: 0.05, max_bins: 100},
				{name: b, function: last_n, column: amount, window: 1h, n: 10},
				{name: c, function: approx_count_distinct, column: merchant_id, window: 1d, precision: 14},
				{name: d, function: top_k, column: merchant, window: 1d, k: 3, max_value_bytes: 64},
				{name: e, function: first, column: merchant, window: lifetime},
				{name: f, function: var_pop, column: amount, window: 1h},
				{name: g, function: approx_percentile, column: amount, window: 1h, percentiles: [1]}`),
			check: func(t *testing.T, s *settings) {
				fs := s.Views[0].View.Features
				want := []tiling.Feature{
					{Name: "a", Function: tiling.ApproxPercentile, Column: "amount", Window: tiling.Day, Percentiles: []float64{0.5, 0.99}, Accuracy: 0.05, MaxBins: 100},
					{Name: "b", Function: tiling.LastN, Column: "amount", Window: tiling.Hour, N: 10},
					{Name: "c", Function: tiling.ApproxCountDistinct, Column: "merchant_id", Window: tiling.Day, Precision: 14},
					{Name: "d", Function: tiling.TopK, Column: "merchant", Window: tiling.Day, K: 3, MaxValueBytes: 64},
					{Name: "e", Function: tiling.First, Column: "merchant", Window: tiling.Lifetime},
					{Name: "f", Function: tiling.VarPop, Column: "amount", Window: tiling.Hour},
					{Name: "g", Function: tiling.ApproxPercentile, Column: "amount", Window: tiling.Hour, Percentiles: []float64{1}},
				}
				if !reflect.DeepEqual(fs, want) {
					t.Errorf("got\n%+v\nwant\n%+v", fs, want)
				}
			},
		},
		{
			name: "every log level and format is read",
			yaml: okKafka + okViews + "log: {level: debug, format: json}\n",
			check: func(t *testing.T, s *settings) {
				if s.Log.Level != slog.LevelDebug || !s.Log.JSON {
					t.Errorf("log %+v", s.Log)
				}
			},
		},
		{
			name: "null sections take their defaults",
			yaml: okKafka + okViews + "http:\ningest: ~\nlog: {level: null}\n",
			check: func(t *testing.T, s *settings) {
				if s.HTTP.MaxBatch != 100 || s.Ingest.RecordCache != 200000 || s.Log.Level != slog.LevelInfo {
					t.Errorf("got %+v %+v %+v", s.HTTP, s.Ingest, s.Log)
				}
			},
		},
		{
			name: "a broker without a port is accepted, as franz-go defaults it to 9092",
			yaml: "kafka: {brokers: [kafka, \"[::1]:9092\"]}\n" + okViews,
			check: func(t *testing.T, s *settings) {
				if len(s.Kafka.Brokers) != 2 {
					t.Errorf("brokers %q", s.Kafka.Brokers)
				}
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := parseConfig([]byte(c.yaml))
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, s)
		})
	}
}

func TestAliasesAndMergeKeys(t *testing.T) {
	// YAML has no place for anchors that are not fields, so the shared
	// fields are anchored on the first view.
	s, err := parseConfig([]byte(okKafka + `views:
  - &first
    name: a
    topic: t
    entity: u
    timestamp: ts
    features: &feats [{name: n, function: count, window: 1h}]
  - <<: *first
    name: b
    topic: other
  - <<: [*first]
    name: c
    features: *feats
`))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []struct{ name, topic string }{{"a", "t"}, {"b", "other"}, {"c", "t"}} {
		v := s.Views[i].View
		if v.Name != want.name || v.Topic != want.topic || v.Entity != "u" || len(v.Features) != 1 {
			t.Errorf("views[%d]: %+v", i, v)
		}
	}
}

func TestManyProblemsAreReportedAtOnce(t *testing.T) {
	_, err := parseConfig([]byte(`
kafka:
  brokers: ["a:b:c"]
  embedded: {partitions: 0}
  grup: x
http: {max_batch: abc, request_timeout: 0s}
store: {kind: dynamodb, cache: {staleness: 1m}}
log: {level: verbose}
ingest: {flush_interval: 2m, max_key_bytes: 4096}
views:
  - name: txn
    topic: transactions
    timestamp: ts
    lifetime_start: yesterday
    feature: []
    features:
      - {name: a, function: sum, column: amount, window: 1h}
      - {name: a, function: median, window: 1h}
      - {name: x, function: sum, column: amount, window: 90s}
      - {name: d, function: last, window: 0s}
  - name: txn
    topic: transactions
    entity: user_id
    timestamp: ts
    granularity: 7m
    features: [{name: f, function: count, window: 1h}]
`))
	if err == nil {
		t.Fatal("no error")
	}
	want := []string{
		`kafka: unknown field "grup" (line 5); known fields: brokers, embedded, group, client_id, dead_letter_topic`,
		`http: max_batch: want an integer, got "abc" (line 6)`,
		`views[0] (txn): unknown field "feature" (line 15)`,
		`kafka: brokers and embedded are both set`,
		`kafka: brokers[0] "a:b:c": want host:port`,
		`kafka.embedded: partitions must be within 1..1024, got 0`,
		`store.cache: staleness 1m0s must be under half of healer.grace (1m0s)`,
		`ingest: max_key_bytes 4096 is over what a DynamoDB key holds`,
		`http: request_timeout must be positive, got 0s`,
		`ingest: flush_interval must be > 0 and ≤ 1m, got 2m`,
		`ingest: max_key_bytes must be within 1..2048, got 4096`,
		`log: level "verbose" is unknown`,
		`views[0] (txn): entity is missing`,
		`views[0] (txn): lifetime_start "yesterday" is not an RFC 3339 time`,
		`views[0] (txn) features[1] (a): name "a" is already used by features[0]`,
		`views[0] (txn) features[1] (a): function "median" is unknown; want one of count, sum, min, max, mean, var_pop, var_samp, stddev_pop, stddev_samp, first, last, first_n, last_n, last_distinct_n, approx_count_distinct, approx_percentile, top_k`,
		`views[0] (txn) features[2] (x): window 90s is not a multiple of the granularity 1m`,
		`views[0] (txn) features[3] (d): column is missing; function last needs one`,
		`views[0] (txn) features[3] (d): window must be positive (or lifetime), got 0s`,
		`views[1] (txn): name "txn" is already used by views[0] (txn), on the same topic`,
		`views[1] (txn): granularity 7m must divide a day or be a whole number of days`,
	}
	msg := err.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("missing %q", w)
		}
	}
	if got := problemsOf(err); len(got) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(got), len(want), msg)
	}
	if !strings.HasPrefix(msg, fmt.Sprintf("config: %d problems:\n  - ", len(want))) {
		t.Errorf("error does not start with a count:\n%s", msg)
	}
}

func TestBadInput(t *testing.T) {
	for _, c := range []struct {
		name string
		yaml string
		want []string // one substring per problem, all of them
	}{
		// The file as a whole.
		{"an empty file is rejected", "", []string{"config: empty file"}},
		{"a file of comments is rejected", "# nothing\n", []string{"config: empty file"}},
		{"a YAML syntax error is reported alone", okKafka + "views: [\n  - x: : y\n", []string{"config: yaml: line"}},
		{"a second YAML document is rejected", okKafka + okViews + "---\nkafka: {}\n", []string{"more than one YAML document (the second starts on line 3)"}},
		{"a top-level list is rejected", "- a\n", []string{"config: want a mapping of sections (kafka, views, ...), got a list (line 1)"}},
		{"a null document is rejected", "~\n", []string{"config: empty file"}},

		// Shapes and field names.
		{"an unknown top-level field is rejected", okKafka + okViews + "extra: 1\n", []string{`unknown field "extra" (line 3); known fields: kafka, store, offline_log, http, ingest, healer, log, views`}},
		{"an unknown nested field is rejected", okKafka + okViews + "http: {listne: x}\n", []string{`http: unknown field "listne" (line 3)`}},
		{"an unknown feature field is rejected", viewWith("", "{name: n, function: count, window: 1h, windw: 2h}"), []string{`views[0] (v) features[0] (n): unknown field "windw"`}},
		{"a field set twice is rejected", okKafka + okViews + "http:\n  listen: a:1\n  listen: b:2\n", []string{`http: field "listen" is set twice (lines 4 and 5)`}},
		{"a word where a number belongs is rejected", okKafka + okViews + "ingest: {record_cache: lots}\n", []string{`ingest: record_cache: want an integer, got "lots" (line 3)`}},
		{"a fraction where an integer belongs is rejected", okKafka + okViews + "http: {max_batch: 1.5}\n", []string{`http: max_batch: want an integer, got "1.5"`}},
		{"a mapping where a string belongs is rejected", okKafka + okViews + "store: {path: {a: b}}\n", []string{`store: path: want a string, got a mapping (line 3)`}},
		{"a string where a list belongs is rejected", "kafka: {brokers: \"k:9092\"}\n" + okViews, []string{`kafka: brokers: want a list, got "k:9092"`, "set either brokers"}},
		{"a view that is not a mapping is reported once", okKafka + "views: [txn]\n", []string{`views[0]: want a mapping, got "txn" (line 2)`}},
		{"a feature that is not a mapping is reported once", viewWith("", "count"), []string{`views[0] (v): features[0]: want a mapping, got "count"`}},

		// kafka.
		{"a config without kafka is rejected", okViews, []string{"kafka: set either brokers (an external cluster) or embedded (an in-process broker)"}},
		{"brokers and embedded together are rejected", "kafka: {brokers: [k], embedded: {}}\n" + okViews, []string{"kafka: brokers and embedded are both set; set one"}},
		{"an empty broker list counts as none", "kafka: {brokers: []}\n" + okViews, []string{"kafka: set either brokers"}},
		{"a broker with a bad port is rejected", "kafka: {brokers: [\"k:port\"]}\n" + okViews, []string{`kafka: brokers[0] "k:port": port "port" is not a number`}},
		{"two brokers in one entry are rejected", "kafka: {brokers: [\"a:1,b:2\"]}\n" + okViews, []string{`kafka: brokers[0] "a:1,b:2": one address per list entry`}},
		{"an empty broker is rejected", "kafka: {brokers: [\"\"]}\n" + okViews, []string{`kafka: brokers[0] "": empty`}},
		{"zero partitions are rejected", "kafka: {embedded: {partitions: 0}}\n" + okViews, []string{"kafka.embedded: partitions must be within 1..1024, got 0"}},
		{"1025 partitions are rejected", "kafka: {embedded: {partitions: 1025}}\n" + okViews, []string{"kafka.embedded: partitions must be within 1..1024, got 1025"}},
		{"an embedded listen address without a port is rejected", "kafka: {embedded: {listen: localhost}}\n" + okViews, []string{`kafka.embedded: listen "localhost": want host:port`}},
		{"a dead letter topic that a view reads is rejected", "kafka: {brokers: [k], dead_letter_topic: t}\n" + okViews, []string{`kafka: dead_letter_topic "t" is also the topic of views[0] (v)`}},
		{"a dead letter topic with a bad name is rejected", "kafka: {brokers: [k], dead_letter_topic: \"dead letters\"}\n" + okViews, []string{`kafka: dead_letter_topic "dead letters": a Kafka topic name holds only`}},

		// store and offline_log.
		{"a DynamoDB store with bad settings is rejected", okKafka + okViews + "store: {kind: dynamodb, dynamodb: {table: x, endpoint: \"localhost:8000\", ttl: -1h, collect_rate: 10}, cache: {max_bytes: 10}}\n", []string{
			`store.dynamodb: table "x": want 3 to 255`, `store.dynamodb: endpoint "localhost:8000": want an http:// or https:// URL`, `store.dynamodb: ttl: bad duration "-1h"`, `store.dynamodb: collect_rate must be at least 100 items per second, got 10`, `store.cache: max_bytes must be at least 1048576`}},
		{"DynamoDB settings on a Pebble store are rejected", okKafka + okViews + "store: {dynamodb: {table: abc}, cache: {}}\n", []string{`store: dynamodb is set but kind is "pebble"`, `store: cache applies to kind dynamodb only`}},
		{"an s3 offline log needs a bucket", okKafka + okViews + "offline_log: {path: \"s3:///x\"}\n", []string{`offline_log: path "s3:///x": want s3://bucket/prefix`}},
		{"an s3 URL with credentials is rejected without echoing them", okKafka + okViews + "offline_log: {path: \"s3://AKIA:topsecret@bucket/p\"}\n", []string{`offline_log: path: want s3://bucket/prefix without user, password, port`}},
		{"an s3 URL with a port is rejected", okKafka + okViews + "offline_log: {path: \"s3://bucket:9000/p\"}\n", []string{`offline_log: path: want s3://bucket/prefix without user`}},
		{"s3 options on a local offline log are rejected", okKafka + okViews + "offline_log: {path: ./o, s3: {region: x}}\n", []string{`offline_log: s3 is set but path "./o" is not an s3:// URL`}},
		{"another URL scheme for the offline log is rejected", okKafka + okViews + "offline_log: {path: \"gs://b/p\"}\n", []string{`offline_log: path "gs://b/p": want a directory or s3://bucket/prefix`}},
		{"a bad healer lease is rejected", okKafka + okViews + "healer: {lease: 10ms}\n", []string{`healer: lease must be at least 1s`}},
		{"negative healer workers are rejected", okKafka + okViews + "healer: {workers: -1}\n", []string{`healer: workers must be at least 0, got -1`}},
		{"zero table records are rejected", okKafka + okViews + "healer: {table_records: 0}\n", []string{`healer: table_records must not be 0`}},
		{"a negative verify sample is rejected", okKafka + okViews + "healer: {verify_sample: -1}\n", []string{`healer: verify_sample must be at least 0, got -1`}},
		{"SASL without a mechanism or password is rejected", "kafka: {brokers: [k], sasl: {username: u}}\n" + okViews, []string{`kafka.sasl: mechanism is required`, `kafka.sasl: password_file or password_env is required`}},
		{"SASL with an unknown mechanism and unset variables is rejected", "kafka: {brokers: [k], sasl: {mechanism: GSSAPI, username_env: TS_NO_SUCH_USER, password_env: TS_NO_SUCH_PASSWORD}}\n" + okViews, []string{`kafka.sasl: mechanism "GSSAPI" is unknown`, `kafka.sasl: username_env: environment variable TS_NO_SUCH_USER is not set`, `kafka.sasl: password_env: environment variable TS_NO_SUCH_PASSWORD is not set`}},
		{"TLS with missing files is rejected", "kafka: {brokers: [k], tls: {ca_file: /no/such/ca.pem, cert_file: /no/such/c.pem}}\n" + okViews, []string{`kafka.tls: ca_file: stat /no/such/ca.pem`, `kafka.tls: cert_file: stat /no/such/c.pem`, `kafka.tls: cert_file and key_file go together`}},
		{"TLS on the embedded broker is rejected", "kafka: {embedded: {}, tls: {}}\n" + okViews, []string{`kafka: tls and sasl apply to external brokers`}},
		{"an unknown store kind is rejected", okKafka + okViews + "store: {kind: redis}\n", []string{`store: kind "redis" is unknown; use pebble or dynamodb`}},
		{"the store and offline log in one directory are rejected", okKafka + okViews + "store: {path: d}\noffline_log: {path: ./d/}\n", []string{`offline_log: path "./d/" is also store.path`}},

		// http.
		{"an http listen port out of range is rejected", okKafka + okViews + "http: {listen: \":70000\"}\n", []string{`http: listen ":70000": port "70000" is not a number within 0..65535`}},
		{"a batch of zero keys is rejected", okKafka + okViews + "http: {max_batch: 0}\n", []string{"http: max_batch must be at least 1, got 0"}},
		{"a body of zero bytes is rejected", okKafka + okViews + "http: {max_body_bytes: 0}\n", []string{"http: max_body_bytes must be at least 1, got 0"}},
		{"a zero request timeout is rejected", okKafka + okViews + "http: {request_timeout: 0s}\n", []string{"http: request_timeout must be positive, got 0s"}},
		{"a request timeout without a unit is rejected", okKafka + okViews + "http: {request_timeout: 5}\n", []string{`http: request_timeout: bad duration "5"`}},

		// ingest.
		{"a zero flush interval is rejected", okKafka + okViews + "ingest: {flush_interval: 0s}\n", []string{"ingest: flush_interval must be > 0 and ≤ 1m, got 0s"}},
		{"a flush interval over a minute is rejected", okKafka + okViews + "ingest: {flush_interval: 61s}\n", []string{"ingest: flush_interval must be > 0 and ≤ 1m, got 61s"}},
		{"a negative future skew is rejected", okKafka + okViews + "ingest: {future_skew: -1h}\n", []string{`ingest: future_skew: bad duration "-1h": negative`}},
		{"a zero event size is rejected", okKafka + okViews + "ingest: {max_event_bytes: 0}\n", []string{"ingest: max_event_bytes must be within 1..67108864, got 0"}},
		{"keys over 2048 bytes are rejected", okKafka + okViews + "ingest: {max_key_bytes: 2049}\n", []string{"ingest: max_key_bytes must be within 1..2048, got 2049"}},
		{"an empty record cache is rejected", okKafka + okViews + "ingest: {record_cache: 0}\n", []string{"ingest: record_cache must be at least 1, got 0"}},

		// log.
		{"an unknown log level is rejected", okKafka + okViews + "log: {level: trace}\n", []string{`log: level "trace" is unknown; want debug, info, warn or error`}},
		{"a log level in capitals is rejected", okKafka + okViews + "log: {level: INFO}\n", []string{`log: level "INFO" is unknown`}},
		{"an unknown log format is rejected", okKafka + okViews + "log: {format: logfmt}\n", []string{`log: format "logfmt" is unknown; want text or json`}},

		// views.
		{"a config without views is rejected", okKafka, []string{"views: none defined; define at least one view"}},
		{"an empty view list is rejected", okKafka + "views: []\n", []string{"views: none defined"}},
		{"two views with one name are rejected", okKafka + "views:\n" +
			"  - {name: v, topic: a, entity: u, timestamp: ts, features: [" + okFeature + "]}\n" +
			"  - {name: v, topic: b, entity: u, timestamp: ts, features: [" + okFeature + "]}\n",
			[]string{`views[1] (v): name "v" is already used by views[0] (v)`}},
		{"a view without a name is rejected", okKafka + "views: [{topic: t, entity: u, timestamp: ts, features: [" + okFeature + "]}]\n", []string{"views[0]: name is missing"}},
		{"a view name with a slash is rejected", okKafka + "views: [{name: a/b, topic: t, entity: u, timestamp: ts, features: [" + okFeature + "]}]\n", []string{`views[0] (a/b): name "a/b": use letters, digits`}},
		{"a view without topic, entity and timestamp is rejected", okKafka + "views: [{name: v, features: [" + okFeature + "]}]\n",
			[]string{"views[0] (v): topic is missing", "views[0] (v): entity is missing", "views[0] (v): timestamp is missing"}},
		{"a topic with a space is rejected", okKafka + "views: [{name: v, topic: a b, entity: u, timestamp: ts, features: [" + okFeature + "]}]\n", []string{`views[0] (v): topic "a b": a Kafka topic name holds only`}},
		{"a bad granularity is rejected alone", viewWith("granularity: 1 minute", "{name: n, function: count, window: 90s}"), []string{`views[0] (v): granularity: bad duration "1 minute"`}},
		{"a zero granularity is rejected", viewWith("granularity: 0s", okFeature), []string{"views[0] (v): granularity 0s is below the minimum 1s"}},
		{"a sub-second granularity is rejected", viewWith("granularity: 500ms", okFeature), []string{"views[0] (v): granularity 500ms is below the minimum 1s"}},
		{"a granularity that does not divide a day is rejected", viewWith("granularity: 7m", okFeature), []string{"views[0] (v): granularity 7m must divide a day or be a whole number of days"}},
		{"a bad lateness is rejected", viewWith("lateness: soon", okFeature), []string{`views[0] (v): lateness: bad duration "soon"`}},
		{"healing more often than every minute is rejected", viewWith("heal_every: 30s", okFeature), []string{"views[0] (v): heal_every must be within 1m..30d, got 30s"}},
		{"healing less often than every 30 days is rejected", viewWith("heal_every: 31d", okFeature), []string{"views[0] (v): heal_every must be within 1m..30d, got 31d"}},
		{"a lifetime start that is not RFC 3339 is rejected", viewWith("lifetime_start: 2020-01-01", okFeature), []string{`views[0] (v): lifetime_start "2020-01-01" is not an RFC 3339 time`}},
		{"a lifetime start finer than a millisecond is rejected", viewWith("lifetime_start: 2020-01-01T00:00:00.0000001Z", okFeature), []string{"views[0] (v): lifetime_start 2020-01-01T00:00:00.0000001Z is finer than a millisecond"}},
		{"a lifetime start off the granularity is rejected", viewWith("granularity: 1h, lifetime_start: 2020-01-01T00:30:00Z", okFeature), []string{"views[0] (v): lifetime_start 2020-01-01T00:30:00Z is not aligned to the granularity 1h"}},
		{"a view without features is rejected", viewWith("", ""), []string{"views[0] (v): features: none defined"}},

		// features.
		{"two features with one name are rejected", viewWith("", okFeature+", "+okFeature), []string{`views[0] (v) features[1] (n): name "n" is already used by features[0]`}},
		{"a feature without a name is rejected", viewWith("", "{function: count, window: 1h}"), []string{"views[0] (v) features[0]: name is missing"}},
		{"a feature without a function is rejected", viewWith("", "{name: n, window: 1h}"), []string{"views[0] (v) features[0] (n): function is missing; want one of count, sum, min, max, mean, var_pop, var_samp, stddev_pop, stddev_samp, first, last, first_n, last_n, last_distinct_n, approx_count_distinct, approx_percentile, top_k"}},
		{"an unknown function is rejected", viewWith("", "{name: n, function: p99, column: x, window: 1h}"), []string{`views[0] (v) features[0] (n): function "p99" is unknown`}},
		{"sum without a column is rejected", viewWith("", "{name: n, function: sum, window: 1h}"), []string{"views[0] (v) features[0] (n): column is missing; function sum needs one"}},
		{"a feature without a window is rejected", viewWith("", "{name: n, function: count}"), []string{"views[0] (v) features[0] (n): window is missing; want a duration such as 7d, or lifetime"}},
		{"a zero window is not taken for lifetime", viewWith("", "{name: n, function: count, window: 0d}"), []string{"views[0] (v) features[0] (n): window must be positive (or lifetime), got 0d"}},
		{"a bad window is rejected", viewWith("", "{name: n, function: count, window: 1w}"), []string{`views[0] (v) features[0] (n): window: bad duration "1w"`}},
		{"a window off the set granularity is rejected", viewWith("granularity: 1h", "{name: n, function: count, window: 90m}"),
			[]string{"views[0] (v) features[0] (n): window 90m is not a multiple of the granularity 1h"}},
		{"an option of another function is rejected", viewWith("", "{name: n, function: sum, column: x, window: 1h, n: 3}"),
			[]string{"views[0] (v) features[0] (n): n applies only to first_n, last_n or last_distinct_n, not to sum"}},
		{"a list without n is rejected", viewWith("", "{name: n, function: last_n, column: x, window: 1h}"),
			[]string{"views[0] (v) features[0] (n): n is missing; last_n keeps n values, 1..1000"}},
		{"n: 0 is rejected, not taken as missing", viewWith("", "{name: n, function: first_n, column: x, window: 1h, n: 0}"),
			[]string{"views[0] (v) features[0] (n): n must be within 1..1000, got 0"}},
		{"k beyond 1000 is rejected", viewWith("", "{name: n, function: top_k, column: x, window: 1h, k: 1001}"),
			[]string{"views[0] (v) features[0] (n): k must be within 1..1000, got 1001"}},
		{"a precision out of range is rejected", viewWith("", "{name: n, function: approx_count_distinct, column: x, window: 1h, precision: 3}"),
			[]string{"views[0] (v) features[0] (n): precision must be within 4..16, got 3"}},
		{"percentiles are required", viewWith("", "{name: n, function: approx_percentile, column: x, window: 1h}"),
			[]string{"views[0] (v) features[0] (n): percentiles is missing"}},
		{"a percentile in percent is rejected", viewWith("", "{name: n, function: approx_percentile, column: x, window: 1h, percentiles: [50, 0.99]}"),
			[]string{"views[0] (v) features[0] (n): percentile 50 is not within 0..1 (write 0.99 for the 99th percentile)"}},
		{"percentiles as a number are rejected", viewWith("", "{name: n, function: approx_percentile, column: x, window: 1h, percentiles: 0.5}"),
			[]string{`views[0] (v) features[0] (n): percentiles: want a list, got "0.5"`, "percentiles is missing"}},
		{"an accuracy that is not a number is rejected", viewWith("", "{name: n, function: approx_percentile, column: x, window: 1h, percentiles: [0.5], accuracy: high}"),
			[]string{`views[0] (v) features[0] (n): accuracy: want a number, got "high"`}},
		{"an accuracy of 0 is rejected", viewWith("", "{name: n, function: approx_percentile, column: x, window: 1h, percentiles: [0.5], accuracy: 0}"),
			[]string{"views[0] (v) features[0] (n): accuracy must be within 0.001..0.5, got 0"}},
		{"max_bins of 0 on the wrong function is reported once", viewWith("", "{name: n, function: count, window: 1h, max_bins: 0}"),
			[]string{"views[0] (v) features[0] (n): max_bins applies only to approx_percentile, not to count"}},
		{"a view whose tiles could pass 400 KB is rejected", viewWith("", "{name: a, function: last_distinct_n, column: x, window: 1h, n: 1000}, {name: b, function: last_n, column: y, window: 1h, n: 1000}"),
			[]string{"views[0] (v): a tile may take 568009 bytes in the worst case, more than the 368640 one tile may take (a DynamoDB item holds 400 KB): a 284003, b 284003; lower n, k, precision, max_bins or max_value_bytes, or split the view"}},
		{"a window off the default granularity says it is the default", viewWith("", "{name: n, function: count, window: 90s}"),
			[]string{"views[0] (v) features[0] (n): window 90s is not a multiple of the granularity 1m; 1m is the default for the smallest window, set granularity to choose another"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseConfig([]byte(c.yaml))
			if err == nil {
				t.Fatalf("no error; want %q", c.want)
			}
			msg := err.Error()
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("missing %q in:\n%s", w, msg)
				}
			}
			if got := problemsOf(err); len(got) != len(c.want) {
				t.Errorf("%d problems, want %d:\n%s", len(got), len(c.want), msg)
			}
		})
	}
}

func TestAliasBombIsStopped(t *testing.T) {
	var b strings.Builder
	b.WriteString(okKafka + "views:\n  - &v {name: v, topic: t, entity: u, timestamp: ts, features: &f [")
	for i := range 600 {
		if i == 0 {
			b.WriteString("&n {name: n, function: count, window: 1h}")
		} else {
			b.WriteString(", *n")
		}
	}
	b.WriteString("]}\n")
	for range 600 {
		b.WriteString("  - *v\n")
	}
	_, err := parseConfig([]byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "too many YAML nodes") {
		t.Fatalf("got %v", err)
	}
	if n := len(problemsOf(err)); n != 1 {
		t.Errorf("%d problems, want the bomb alone", n)
	}
}

func TestLoadConfigNamesTheFile(t *testing.T) {
	dir := t.TempDir()
	_, err := loadConfig(filepath.Join(dir, "missing.yaml"))
	if err == nil || !strings.HasPrefix(err.Error(), "read config: ") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(okKafka), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = loadConfig(bad)
	if want := "config " + bad + ": views: none defined"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("got %v, want prefix %q", err, want)
	}
}

func TestDemoConfig(t *testing.T) {
	s := demoConfig()
	k := s.Kafka
	if !k.Embedded || k.EmbeddedListen != "127.0.0.1:9092" || k.EmbeddedPartitions != 8 || len(k.Brokers) != 0 || k.Group != "tilestream" {
		t.Errorf("kafka %+v", k)
	}
	if s.StoreKind != "pebble" || s.StorePath != "./data/online" || s.OfflineLogPath != "./data/offline" || s.HTTP.Listen != "127.0.0.1:8080" {
		t.Errorf("store %q %q, offline log %q, http %q", s.StoreKind, s.StorePath, s.OfflineLogPath, s.HTTP.Listen)
	}
	if len(s.Views) != 1 {
		t.Fatalf("%d views", len(s.Views))
	}
	vs := s.Views[0]
	v := vs.View
	if v.Name != "txn" || v.Topic != "transactions" || v.Entity != "user_id" || v.Timestamp != "ts" ||
		v.Granularity != tiling.Minute || vs.Lateness != 5*tiling.Minute || vs.HealEvery != 24*tiling.Hour {
		t.Errorf("view %+v lateness %d heal every %d", v, vs.Lateness, vs.HealEvery)
	}
	var want []tiling.Feature
	for _, fn := range []tiling.Function{tiling.Sum, tiling.Count, tiling.Min, tiling.Max, tiling.Mean} {
		col := "amount"
		if fn == tiling.Count {
			col = ""
		}
		for _, w := range []struct {
			suffix string
			ms     int64
		}{{"1h", tiling.Hour}, {"1d", tiling.Day}, {"7d", 7 * tiling.Day}, {"life", tiling.Lifetime}} {
			want = append(want, tiling.Feature{Name: "amount_" + string(fn) + "_" + w.suffix, Function: fn, Column: col, Window: w.ms})
		}
	}
	want = append(want, tiling.Feature{Name: "last_merchant", Function: tiling.Last, Column: "merchant", Window: tiling.Lifetime})
	if !reflect.DeepEqual(v.Features, want) {
		t.Errorf("features\n%+v\nwant\n%+v", v.Features, want)
	}
}

// The examples in docs/config.md are the files the tests read.
func TestDocsShowTheExamples(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	full, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, example := range map[string]string{"testdata/full.yaml": string(full), "demoYAML": demoYAML} {
		if !strings.Contains(string(doc), "```yaml\n"+example+"```\n") {
			t.Errorf("docs/config.md does not show %s verbatim in a yaml block", name)
		}
	}
}
