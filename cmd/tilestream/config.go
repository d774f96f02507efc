package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tilestream/tilestream/healer"
	"github.com/tilestream/tilestream/tiling"
)

// The configuration file is YAML, documented field by field in
// docs/config.md. Reading it takes two passes, and both record every problem
// instead of stopping at the first one:
//
//  1. decode: the YAML node tree is walked against fileConfig's yaml tags.
//     Unknown and repeated fields and values of the wrong shape are problems
//     named by their place in the file ("http: max_batch: want an integer").
//     yaml.v3's Decoder.KnownFields also collects every unknown field, but it
//     names them by line and Go type ("field x not found in type
//     main.fileHTTP"), and it does not see repeated keys once the tree is
//     built, so the walk is ours.
//  2. check: defaults are applied to absent fields and every value is
//     validated; views are checked here with the same rules as tiling.NewView,
//     so that their problems are named by place too, then built by NewView.
//
// Only a YAML syntax error is reported alone: past it there is no tree.

// fileConfig mirrors the YAML file (durations as strings so that every bad one
// is reported). Pointers tell an absent number (which takes its default) from
// an explicit zero (which is checked).
type fileConfig struct {
	Kafka      fileKafka      `yaml:"kafka"`
	Store      fileStore      `yaml:"store"`
	OfflineLog fileOfflineLog `yaml:"offline_log"`
	HTTP       fileHTTP       `yaml:"http"`
	Ingest     fileIngest     `yaml:"ingest"`
	Healer     fileHealer     `yaml:"healer"`
	Log        fileLog        `yaml:"log"`
	Views      []fileView     `yaml:"views"`
}

type fileHealer struct {
	Grace   string `yaml:"grace"`
	Lease   string `yaml:"lease"`
	Workers *int   `yaml:"workers"`
	// TableRecords: see docs/config.md.
	TableRecords *int `yaml:"table_records"`
	VerifySample *int `yaml:"verify_sample"`
}

type fileKafka struct {
	Brokers         []string       `yaml:"brokers"`
	Embedded        *fileEmbedded  `yaml:"embedded"`
	Group           string         `yaml:"group"`
	ClientID        string         `yaml:"client_id"`
	DeadLetterTopic string         `yaml:"dead_letter_topic"`
	InstanceID      string         `yaml:"instance_id"`
	SessionTimeout  string         `yaml:"session_timeout"`
	TLS             *fileKafkaTLS  `yaml:"tls"`
	SASL            *fileKafkaSASL `yaml:"sasl"`
}

type fileEmbedded struct {
	Listen     string `yaml:"listen"`
	Partitions *int   `yaml:"partitions"`
}

type fileStore struct {
	Kind     string      `yaml:"kind"`
	Path     string      `yaml:"path"`
	DynamoDB *fileDynamo `yaml:"dynamodb"`
	Cache    *fileCache  `yaml:"cache"`
}

type fileOfflineLog struct {
	Path         string  `yaml:"path"`
	RollInterval string  `yaml:"roll_interval"`
	RollEvents   *int    `yaml:"roll_events"`
	S3           *fileS3 `yaml:"s3"`
}

type fileHTTP struct {
	Listen         string `yaml:"listen"`
	MaxBatch       *int   `yaml:"max_batch"`
	MaxBodyBytes   *int64 `yaml:"max_body_bytes"`
	RequestTimeout string `yaml:"request_timeout"`
}

type fileIngest struct {
	FlushInterval string `yaml:"flush_interval"`
	FutureSkew    string `yaml:"future_skew"`
	MaxEventBytes *int   `yaml:"max_event_bytes"`
	MaxKeyBytes   *int   `yaml:"max_key_bytes"`
	RecordCache   *int   `yaml:"record_cache"`
}

type fileLog struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

type fileView struct {
	Name          string        `yaml:"name"`
	Topic         string        `yaml:"topic"`
	Entity        string        `yaml:"entity"`
	Timestamp     string        `yaml:"timestamp"`
	Granularity   string        `yaml:"granularity"`
	Lateness      string        `yaml:"lateness"`
	HealEvery     string        `yaml:"heal_every"`
	LifetimeStart string        `yaml:"lifetime_start"`
	EventID       string        `yaml:"event_id"`
	Features      []fileFeature `yaml:"features"`
}

type fileFeature struct {
	Name     string `yaml:"name"`
	Function string `yaml:"function"`
	Column   string `yaml:"column"`
	Window   string `yaml:"window"`
	// Options of some functions (tiling.Feature, docs/config.md).
	N             *int      `yaml:"n"`
	K             *int      `yaml:"k"`
	Precision     *int      `yaml:"precision"`
	Percentiles   []float64 `yaml:"percentiles"`
	Accuracy      *float64  `yaml:"accuracy"`
	MaxBins       *int      `yaml:"max_bins"`
	MaxValueBytes *int      `yaml:"max_value_bytes"`
}

// settings is the validated configuration.
type settings struct {
	Kafka struct {
		// Brokers are the seed brokers of an external cluster; empty when
		// Embedded.
		Brokers []string
		// Embedded runs an in-process broker listening on EmbeddedListen with
		// EmbeddedPartitions partitions per topic.
		Embedded           bool
		EmbeddedListen     string
		EmbeddedPartitions int32
		// Group is the consumer group, ClientID the Kafka client id;
		// DeadLetterTopic, when not empty, also receives malformed events.
		Group, ClientID, DeadLetterTopic string
		// InstanceID, when set, makes this member static: after a crash it
		// rejoins at once instead of waiting for the session to time out.
		InstanceID string
		// SessionTimeout is the group session timeout (default 45s).
		SessionTimeout time.Duration
		// TLS and SASL, when not nil, secure the connections to Brokers.
		TLS  *tlsSettings
		SASL *saslSettings
	}
	// StoreKind is "pebble" or "dynamodb"; StorePath the Pebble directory
	// (the store itself, or DynamoDB's local cache).
	StoreKind, StorePath string
	Dynamo               dynamoSettings // kind dynamodb
	Cache                cacheSettings  // kind dynamodb
	// OfflineLogPath is the directory of the offline log, or its s3:// URL
	// (then OfflineS3 has the bucket and prefix).
	OfflineLogPath string
	OfflineS3      s3Settings
	// HealerLease is how long a healer's claim on a view lasts without
	// renewal when several instances share a DynamoDB store.
	HealerLease time.Duration
	// OfflineLogRollInterval and OfflineLogRollEvents bound how long and how
	// many consumed events wait in memory before an archive file is written
	// (offsets are committed only once archived).
	OfflineLogRollInterval time.Duration
	OfflineLogRollEvents   int
	// HealerGrace is how long superseded records are kept after a heal.
	HealerGrace time.Duration
	// HealerWorkers is how many day spans a heal builds at once; 0 means
	// GOMAXPROCS.
	HealerWorkers int
	// HealerTableRecords is the fewest records a healed day (or a heal's
	// summaries) needs to go to Pebble as a table; 0 means the default,
	// negative never.
	HealerTableRecords int
	// HealerVerifySample is how many keys are checked against the offline
	// log after each scheduled heal; 0 turns the check off.
	HealerVerifySample int
	HTTP               struct {
		Listen         string
		MaxBatch       int   // keys per request
		MaxBodyBytes   int64 // bytes per request body
		RequestTimeout time.Duration
	}
	Ingest struct {
		FlushInterval, FutureSkew               time.Duration
		MaxEventBytes, MaxKeyBytes, RecordCache int
	}
	Log struct {
		Level slog.Level
		JSON  bool // JSON lines instead of text
	}
	Views []viewSettings
}

// viewSettings is a validated view and what the healer and ingest need
// beside it.
type viewSettings struct {
	View                *tiling.View // from tiling.NewView
	Lateness, HealEvery int64        // ms
	EventID             string       // event field holding its identity; "" for topic/partition/offset
}

// Defaults of absent fields (docs/config.md).
const (
	defaultGroup              = "tilestream"
	defaultClientID           = "tilestream"
	defaultEmbeddedListen     = "127.0.0.1:9092"
	defaultEmbeddedPartitions = 8
	defaultStoreKind          = "pebble"
	defaultStorePath          = "./data/online"
	defaultOfflineLogPath     = "./data/offline"
	defaultHTTPListen         = "127.0.0.1:8080"
	defaultMaxBatch           = 100
	defaultMaxBodyBytes       = 1 << 20
	defaultRequestTimeout     = 5 * time.Second
	defaultFlushInterval      = time.Second
	defaultFutureSkew         = time.Hour
	defaultMaxEventBytes      = 64 << 10
	defaultMaxKeyBytes        = 1024
	defaultRecordCache        = 200_000
	defaultLateness           = 5 * tiling.Minute
	defaultHealEvery          = 24 * tiling.Hour
)

// Limits of checked values.
const (
	maxPartitions    = 1024
	maxFlushInterval = time.Minute
	maxEventBytes    = 64 << 20
	maxKeyBytes      = 2048
	minHealEvery     = tiling.Minute
	maxHealEvery     = 30 * tiling.Day
	minGranularity   = tiling.Second
	maxNameBytes     = 128
	maxTopicBytes    = 249
	// maxNodes bounds the YAML nodes visited, aliases expanded: a config is
	// a few thousand nodes, an alias bomb is billions.
	maxNodes = 1 << 20
)

// configError lists every problem found in a configuration.
type configError struct {
	problems []string
}

func (e *configError) Error() string {
	if len(e.problems) == 1 {
		return e.problems[0]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d problems:", len(e.problems))
	for _, p := range e.problems {
		b.WriteString("\n  - ")
		b.WriteString(p)
	}
	return b.String()
}

// loadConfig reads and validates the configuration file at path.
func loadConfig(path string) (*settings, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	s, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return s, nil
}

// parseConfig validates a configuration file's contents. Unknown fields are
// errors; the error lists every problem found.
func parseConfig(data []byte) (*settings, error) {
	s, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return s, nil
}

func parse(data []byte) (*settings, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty file")
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("more than one YAML document (the second starts on line %d)", extra.Line)
	} else if !errors.Is(err, io.EOF) {
		return nil, err
	}

	root := doc.Content[0]
	if root.Kind == yaml.AliasNode {
		root = root.Alias
	}
	switch {
	case root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null":
		return nil, errors.New("empty file")
	case root.Kind != yaml.MappingNode:
		return nil, fmt.Errorf("want a mapping of sections (kafka, views, ...), got %s (line %d)", describe(root), root.Line)
	}

	var f fileConfig
	d := nodeDecoder{shapeless: map[string]bool{}}
	d.value(root, reflect.ValueOf(&f).Elem(), "", "")
	if d.nodes > maxNodes {
		return nil, fmt.Errorf("too many YAML nodes (more than %d, counting an alias each time it is used)", maxNodes)
	}
	c := checker{problems: d.problems, shapeless: d.shapeless}
	s := c.check(&f)
	if len(c.problems) > 0 {
		return nil, &configError{problems: c.problems}
	}
	return s, nil
}

// demoYAML is the built-in configuration: an in-process Kafka broker, Pebble
// and the offline log under ./data, one view of transactions per user. It is
// printed in docs/config.md; a test keeps the two equal.
const demoYAML = `kafka:
  embedded: {listen: "127.0.0.1:9092", partitions: 8}
  group: tilestream
store: {kind: pebble, path: ./data/online}
offline_log: {path: ./data/offline}
http: {listen: "127.0.0.1:8080"}
views:
  - name: txn
    topic: transactions
    entity: user_id
    timestamp: ts
    granularity: 1m
    lateness: 5m
    heal_every: 24h
    features:
      - {name: amount_sum_1h,     function: sum,   column: amount, window: 1h}
      - {name: amount_sum_1d,     function: sum,   column: amount, window: 1d}
      - {name: amount_sum_7d,     function: sum,   column: amount, window: 7d}
      - {name: amount_sum_life,   function: sum,   column: amount, window: lifetime}
      - {name: amount_count_1h,   function: count,                 window: 1h}
      - {name: amount_count_1d,   function: count,                 window: 1d}
      - {name: amount_count_7d,   function: count,                 window: 7d}
      - {name: amount_count_life, function: count,                 window: lifetime}
      - {name: amount_min_1h,     function: min,   column: amount, window: 1h}
      - {name: amount_min_1d,     function: min,   column: amount, window: 1d}
      - {name: amount_min_7d,     function: min,   column: amount, window: 7d}
      - {name: amount_min_life,   function: min,   column: amount, window: lifetime}
      - {name: amount_max_1h,     function: max,   column: amount, window: 1h}
      - {name: amount_max_1d,     function: max,   column: amount, window: 1d}
      - {name: amount_max_7d,     function: max,   column: amount, window: 7d}
      - {name: amount_max_life,   function: max,   column: amount, window: lifetime}
      - {name: amount_mean_1h,    function: mean,  column: amount, window: 1h}
      - {name: amount_mean_1d,    function: mean,  column: amount, window: 1d}
      - {name: amount_mean_7d,    function: mean,  column: amount, window: 7d}
      - {name: amount_mean_life,  function: mean,  column: amount, window: lifetime}
      - {name: last_merchant,     function: last,  column: merchant, window: lifetime}
`

// demoConfig returns the built-in embedded default configuration, validated
// like any file.
func demoConfig() *settings {
	s, err := parseConfig([]byte(demoYAML))
	if err != nil {
		panic("tilestream: invalid built-in config: " + err.Error()) // TestDemoConfig keeps this unreachable
	}
	return s
}

// nodeDecoder fills a file struct from a YAML node tree, recording each
// problem with its place instead of stopping at the first.
//
// An alias is decoded again wherever it is used. A cycle ("a: &x [*x]"
// parses) cannot loop: each step of the walk goes one level deeper into
// fileConfig, which is not recursive. A bomb of nested aliases is stopped by
// counting nodes.
type nodeDecoder struct {
	problems []string
	nodes    int
	// shapeless holds the locations of structs given something other than a
	// mapping; their zero values are not checked further.
	shapeless map[string]bool
}

func (d *nodeDecoder) addf(where, format string, args ...any) {
	d.problems = append(d.problems, place(where, fmt.Sprintf(format, args...)))
}

// value decodes n into v, which is the field named field of the mapping at
// where.
func (d *nodeDecoder) value(n *yaml.Node, v reflect.Value, where, field string) {
	if d.nodes++; d.nodes > maxNodes {
		return // parse reports it alone
	}
	if n.Kind == yaml.AliasNode {
		d.value(n.Alias, v, where, field)
		return
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // absent: the zero value, then the default
	}
	switch v.Kind() {
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		before := len(d.problems)
		d.value(n, p.Elem(), where, field)
		if len(d.problems) == before {
			v.Set(p)
		}
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			d.addf(where, "%s: want a mapping, got %s (line %d)", field, describe(n), n.Line)
			d.shapeless[at(where, field)] = true
			return
		}
		d.mapping(n, v, at(where, field))
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.addf(where, "%s: want a list, got %s (line %d)", field, describe(n), n.Line)
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, e := range n.Content {
			d.value(e, s.Index(i), where, elem(field, i, nameOf(e)))
		}
		v.Set(s)
	default:
		if n.Kind != yaml.ScalarNode {
			d.addf(where, "%s: want %s, got %s (line %d)", field, kindName(v.Kind()), describe(n), n.Line)
			return
		}
		// yaml.v3 would truncate 1.5 into an int: ask for an integer.
		if v.CanInt() && n.ShortTag() != "!!int" || n.Decode(v.Addr().Interface()) != nil {
			d.addf(where, "%s: want %s, got %s (line %d)", field, kindName(v.Kind()), describe(n), n.Line)
		}
	}
}

// mapping decodes the mapping n into the struct v, matching keys to yaml
// tags. Merge keys (<<) are honoured; explicit keys win over merged ones.
func (d *nodeDecoder) mapping(n *yaml.Node, v reflect.Value, where string) {
	names, index := yamlFields(v.Type())
	seen := map[string]int{} // key → line
	type pair struct{ key, val *yaml.Node }
	var pairs, merged []pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.addf(where, "want a field name, got %s (line %d)", describe(k), k.Line)
			continue
		}
		if k.Value == "<<" && k.ShortTag() == "!!merge" {
			for _, m := range d.mergeSources(val, where) {
				for j := 0; j+1 < len(m.Content); j += 2 {
					merged = append(merged, pair{m.Content[j], m.Content[j+1]})
				}
			}
			continue
		}
		if line, ok := seen[k.Value]; ok {
			d.addf(where, "field %q is set twice (lines %d and %d)", k.Value, line, k.Line)
			continue
		}
		seen[k.Value] = k.Line
		pairs = append(pairs, pair{k, val})
	}
	for _, p := range merged {
		if p.key.Kind != yaml.ScalarNode {
			continue // reported where the merged mapping is decoded
		}
		if _, ok := seen[p.key.Value]; !ok {
			seen[p.key.Value] = p.key.Line
			pairs = append(pairs, p)
		}
	}
	for _, p := range pairs {
		i, ok := index[p.key.Value]
		if !ok {
			d.addf(where, "unknown field %q (line %d); known fields: %s", p.key.Value, p.key.Line, strings.Join(names, ", "))
			continue
		}
		d.value(p.val, v.Field(i), where, p.key.Value)
	}
}

// mergeSources returns the mappings a merge key's value names: a mapping,
// an alias of one, or a list of those.
func (d *nodeDecoder) mergeSources(n *yaml.Node, where string) []*yaml.Node {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.MappingNode:
		return []*yaml.Node{n}
	case yaml.SequenceNode:
		var out []*yaml.Node
		for _, e := range n.Content {
			if e.Kind == yaml.AliasNode {
				e = e.Alias
			}
			if e.Kind != yaml.MappingNode {
				d.addf(where, "<<: want mappings to merge, got %s (line %d)", describe(e), e.Line)
				continue
			}
			out = append(out, e)
		}
		return out
	}
	d.addf(where, "<<: want a mapping to merge, got %s (line %d)", describe(n), n.Line)
	return nil
}

// yamlFields returns the yaml names of t's fields in order, and each name's
// field index.
func yamlFields(t reflect.Type) ([]string, map[string]int) {
	var names []string
	index := map[string]int{}
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		names = append(names, name)
		index[name] = i
	}
	return names, index
}

// nameOf returns the scalar "name" field of a mapping node, for naming list
// elements in messages.
func nameOf(n *yaml.Node) string {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "name" && n.Content[i+1].Kind == yaml.ScalarNode {
			return n.Content[i+1].Value
		}
	}
	return ""
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	return strconv.Quote(n.Value)
}

func kindName(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Bool:
		return "true or false"
	case reflect.Float64:
		return "a number"
	}
	return k.String()
}

// place prefixes msg with its location, if any.
func place(where, msg string) string {
	if where == "" {
		return msg
	}
	return where + ": " + msg
}

// at returns the location of field key inside where: "kafka" and "embedded"
// give "kafka.embedded"; after a list element, a space reads better:
// "views[0] (txn) features".
func at(where, key string) string {
	switch {
	case where == "":
		return key
	case key == "":
		return where
	case strings.HasSuffix(where, "]") || strings.HasSuffix(where, ")"):
		return where + " " + key
	}
	return where + "." + key
}

// elem returns the location of element i of list, with its name if it has
// one: "views[0] (txn)".
func elem(list string, i int, name string) string {
	s := fmt.Sprintf("%s[%d]", list, i)
	if name != "" {
		s += " (" + name + ")"
	}
	return s
}

// checker applies defaults and validates a decoded file.
type checker struct {
	problems  []string
	shapeless map[string]bool // from nodeDecoder
}

func (c *checker) addf(where, format string, args ...any) {
	c.problems = append(c.problems, place(where, fmt.Sprintf(format, args...)))
}

func (c *checker) check(f *fileConfig) *settings {
	s := new(settings)
	c.kafka(&f.Kafka, s)
	c.store(f, s)
	c.http(&f.HTTP, s)
	c.ingest(&f.Ingest, s)
	c.storeProd(f, s)
	c.kafkaSecurity(&f.Kafka, s)
	c.log(&f.Log, s)
	c.views(f.Views, s)
	if t := s.Kafka.DeadLetterTopic; t != "" {
		for i, v := range f.Views {
			if v.Topic == t {
				c.addf("kafka", "dead_letter_topic %q is also the topic of %s; malformed events would be read again", t, elem("views", i, v.Name))
			}
		}
	}
	return s
}

func (c *checker) kafka(f *fileKafka, s *settings) {
	const where = "kafka"
	k := &s.Kafka
	switch {
	case len(f.Brokers) > 0 && f.Embedded != nil:
		c.addf(where, "brokers and embedded are both set; set one")
	case len(f.Brokers) == 0 && f.Embedded == nil:
		c.addf(where, "set either brokers (an external cluster) or embedded (an in-process broker)")
	}
	for i, b := range f.Brokers {
		if err := checkBroker(b); err != nil {
			c.addf(where, "brokers[%d] %q: %v", i, b, err)
		}
	}
	k.Brokers = f.Brokers
	if e := f.Embedded; e != nil {
		const where = "kafka.embedded"
		k.Embedded = true
		k.EmbeddedListen = or(e.Listen, defaultEmbeddedListen)
		if err := checkListen(k.EmbeddedListen); err != nil {
			c.addf(where, "listen %q: %v", k.EmbeddedListen, err)
		}
		p := defaultEmbeddedPartitions
		if e.Partitions != nil {
			p = *e.Partitions
		}
		if p < 1 || p > maxPartitions {
			c.addf(where, "partitions must be within 1..%d, got %d", maxPartitions, p)
		} else {
			k.EmbeddedPartitions = int32(p)
		}
	}
	k.Group = or(f.Group, defaultGroup)
	k.ClientID = or(f.ClientID, defaultClientID)
	k.DeadLetterTopic = f.DeadLetterTopic
	k.InstanceID = f.InstanceID
	k.SessionTimeout = c.dur("kafka", "session_timeout", f.SessionTimeout, 45*time.Second)
	if k.SessionTimeout < time.Second || k.SessionTimeout > 30*time.Minute {
		c.addf("kafka", "session_timeout must be within 1s..30m, got %s", k.SessionTimeout)
	}
	if t := f.DeadLetterTopic; t != "" {
		if err := checkTopic(t); err != nil {
			c.addf(where, "dead_letter_topic %q: %v", t, err)
		}
	}
}

func (c *checker) store(f *fileConfig, s *settings) {
	s.StoreKind = or(f.Store.Kind, defaultStoreKind)
	switch s.StoreKind {
	case "pebble":
	case "dynamodb":
	default:
		c.addf("store", "kind %q is unknown; use pebble or dynamodb", s.StoreKind)
	}
	s.StorePath = or(f.Store.Path, defaultStorePath)
	s.OfflineLogPath = or(f.OfflineLog.Path, defaultOfflineLogPath)
	s.OfflineLogRollInterval = c.dur("offline_log", "roll_interval", f.OfflineLog.RollInterval, time.Minute)
	if s.OfflineLogRollInterval <= 0 {
		c.addf("offline_log", "roll_interval must be positive, got %s", f.OfflineLog.RollInterval)
	}
	s.OfflineLogRollEvents = c.atLeast("offline_log", "roll_events", f.OfflineLog.RollEvents, 200_000, 1)
	s.HealerGrace = c.dur("healer", "grace", f.Healer.Grace, time.Minute)
	if s.HealerGrace <= 0 {
		c.addf("healer", "grace must be positive, got %s", f.Healer.Grace)
	}
	s.HealerWorkers = c.atLeast("healer", "workers", f.Healer.Workers, 0, 0)
	s.HealerVerifySample = c.atLeast("healer", "verify_sample", f.Healer.VerifySample, healer.DefaultConfig().VerifySample, 0)
	if f.Healer.TableRecords != nil {
		s.HealerTableRecords = *f.Healer.TableRecords
		if s.HealerTableRecords == 0 {
			c.addf("healer", "table_records must not be 0 (leave it out for the default, or -1 to write no tables), got 0")
		}
	}
}

func (c *checker) http(f *fileHTTP, s *settings) {
	const where = "http"
	h := &s.HTTP
	h.Listen = or(f.Listen, defaultHTTPListen)
	if err := checkListen(h.Listen); err != nil {
		c.addf(where, "listen %q: %v", h.Listen, err)
	}
	h.MaxBatch = c.atLeast(where, "max_batch", f.MaxBatch, defaultMaxBatch, 1)
	h.MaxBodyBytes = defaultMaxBodyBytes
	if f.MaxBodyBytes != nil {
		h.MaxBodyBytes = *f.MaxBodyBytes
		if h.MaxBodyBytes < 1 {
			c.addf(where, "max_body_bytes must be at least 1, got %d", h.MaxBodyBytes)
		}
	}
	h.RequestTimeout = c.dur(where, "request_timeout", f.RequestTimeout, defaultRequestTimeout)
	if h.RequestTimeout == 0 {
		c.addf(where, "request_timeout must be positive, got %s", f.RequestTimeout)
	}
}

func (c *checker) ingest(f *fileIngest, s *settings) {
	const where = "ingest"
	in := &s.Ingest
	in.FlushInterval = c.dur(where, "flush_interval", f.FlushInterval, defaultFlushInterval)
	if in.FlushInterval <= 0 || in.FlushInterval > maxFlushInterval {
		c.addf(where, "flush_interval must be > 0 and ≤ %s, got %s", tiling.FormatDuration(maxFlushInterval.Milliseconds()), f.FlushInterval)
	}
	in.FutureSkew = c.dur(where, "future_skew", f.FutureSkew, defaultFutureSkew)
	in.MaxEventBytes = c.within(where, "max_event_bytes", f.MaxEventBytes, defaultMaxEventBytes, 1, maxEventBytes)
	in.MaxKeyBytes = c.within(where, "max_key_bytes", f.MaxKeyBytes, defaultMaxKeyBytes, 1, maxKeyBytes)
	in.RecordCache = c.atLeast(where, "record_cache", f.RecordCache, defaultRecordCache, 1)
}

func (c *checker) log(f *fileLog, s *settings) {
	switch or(f.Level, "info") {
	case "debug":
		s.Log.Level = slog.LevelDebug
	case "info":
		s.Log.Level = slog.LevelInfo
	case "warn":
		s.Log.Level = slog.LevelWarn
	case "error":
		s.Log.Level = slog.LevelError
	default:
		c.addf("log", "level %q is unknown; want debug, info, warn or error", f.Level)
	}
	switch or(f.Format, "text") {
	case "text":
	case "json":
		s.Log.JSON = true
	default:
		c.addf("log", "format %q is unknown; want text or json", f.Format)
	}
}

func (c *checker) views(fs []fileView, s *settings) {
	if len(fs) == 0 {
		c.addf("views", "none defined; define at least one view")
		return
	}
	byName := map[string]int{}
	for i := range fs {
		f := &fs[i]
		where := elem("views", i, f.Name)
		if c.shapeless[where] {
			continue
		}
		if j, ok := byName[f.Name]; ok && f.Name != "" {
			if fs[j].Topic == f.Topic {
				c.addf(where, "name %q is already used by %s, on the same topic", f.Name, elem("views", j, f.Name))
			} else {
				c.addf(where, "name %q is already used by %s", f.Name, elem("views", j, f.Name))
			}
		} else {
			byName[f.Name] = i
		}
		if v, ok := c.view(f, where); ok {
			s.Views = append(s.Views, v)
		}
	}
}

// view checks one view, with the rules of tiling.NewView and more, and builds
// it when it has no problem.
func (c *checker) view(f *fileView, where string) (viewSettings, bool) {
	before := len(c.problems)
	var vs viewSettings
	v := tiling.View{
		Name:          f.Name,
		Topic:         f.Topic,
		Entity:        f.Entity,
		Timestamp:     f.Timestamp,
		LifetimeStart: tiling.MinTime,
	}
	c.name(where, "name", f.Name)
	if f.Topic == "" {
		c.addf(where, "topic is missing")
	} else if err := checkTopic(f.Topic); err != nil {
		c.addf(where, "topic %q: %v", f.Topic, err)
	}
	if f.Entity == "" {
		c.addf(where, "entity is missing (the event field holding the key)")
	}
	if f.Timestamp == "" {
		c.addf(where, "timestamp is missing (the event field holding the event time)")
	}

	// note follows a message about the granularity when it was defaulted.
	granularityText, note := f.Granularity, ""
	if f.Granularity != "" {
		g, err := tiling.ParseDuration(f.Granularity)
		switch {
		case err != nil:
			c.addf(where, "granularity: %v", err)
		case g < minGranularity:
			c.addf(where, "granularity %s is below the minimum %s", f.Granularity, tiling.FormatDuration(minGranularity))
		case tiling.Day%g != 0 && g%tiling.Day != 0:
			c.addf(where, "granularity %s must divide a day or be a whole number of days", f.Granularity)
		default:
			v.Granularity = g
		}
	}
	vs.Lateness = c.millis(where, "lateness", f.Lateness, defaultLateness)
	vs.HealEvery = c.millis(where, "heal_every", f.HealEvery, defaultHealEvery)
	if f.HealEvery != "" && (vs.HealEvery < minHealEvery || vs.HealEvery > maxHealEvery) {
		c.addf(where, "heal_every must be within %s..%s, got %s", tiling.FormatDuration(minHealEvery), tiling.FormatDuration(maxHealEvery), f.HealEvery)
	}
	if f.LifetimeStart != "" {
		t, err := time.Parse(time.RFC3339Nano, f.LifetimeStart)
		switch {
		case err != nil:
			c.addf(where, "lifetime_start %q is not an RFC 3339 time such as 2020-01-01T00:00:00Z", f.LifetimeStart)
		case t.Nanosecond()%int(time.Millisecond) != 0:
			c.addf(where, "lifetime_start %s is finer than a millisecond", f.LifetimeStart)
		default:
			v.LifetimeStart = t.UnixMilli()
		}
	}
	vs.EventID = f.EventID
	v.EventID = f.EventID

	// The default granularity depends on the windows, and each window must
	// be a multiple of the granularity: read the windows first, then report
	// each feature's problems in order.
	windows := make([]int64, len(f.Features)) // -1: missing or bad
	var valid []tiling.Feature
	for j, ff := range f.Features {
		windows[j] = -1
		switch ff.Window {
		case "":
		case "lifetime":
			windows[j] = tiling.Lifetime
		default:
			if w, err := tiling.ParseDuration(ff.Window); err == nil && w > 0 {
				windows[j] = w
			}
		}
		if windows[j] >= 0 {
			valid = append(valid, tiling.Feature{Window: windows[j]})
		}
	}
	if f.Granularity == "" {
		v.Granularity = tiling.DefaultGranularity(valid)
		granularityText = tiling.FormatDuration(v.Granularity)
		note = fmt.Sprintf("; %s is the default for the smallest window, set granularity to choose another", granularityText)
	}
	g := v.Granularity // 0 when the one set is bad: alignment is not checked
	if g > 0 && v.LifetimeStart != tiling.MinTime && !tiling.Aligned(v.LifetimeStart, g) {
		c.addf(where, "lifetime_start %s is not aligned to the granularity %s, counted in UTC from the Unix epoch%s", f.LifetimeStart, granularityText, note)
	}

	if len(f.Features) == 0 {
		c.addf(where, "features: none defined; define at least one feature")
	}
	seen := map[string]int{}
	shapeless := false // a feature was not a mapping: reported, not built
	for j, ff := range f.Features {
		fw := elem(at(where, "features"), j, ff.Name)
		if c.shapeless[fw] {
			shapeless = true
			continue
		}
		c.name(fw, "name", ff.Name)
		if k, ok := seen[ff.Name]; ok && ff.Name != "" {
			c.addf(fw, "name %q is already used by features[%d]", ff.Name, k)
		} else {
			seen[ff.Name] = j
		}
		fn := tiling.Function(ff.Function)
		switch {
		case ff.Function == "":
			c.addf(fw, "function is missing; want one of %s", functionList())
		case !knownFunction(fn):
			c.addf(fw, "function %q is unknown; want one of %s", ff.Function, functionList())
		case fn != tiling.Count && ff.Column == "":
			c.addf(fw, "column is missing; function %s needs one", fn)
		}
		w := windows[j]
		switch {
		case ff.Window == "":
			c.addf(fw, "window is missing; want a duration such as 7d, or lifetime")
		case w >= 0:
			if w > 0 && g > 0 && w%g != 0 {
				c.addf(fw, "window %s is not a multiple of the granularity %s%s", ff.Window, granularityText, note)
			}
		default:
			if _, err := tiling.ParseDuration(ff.Window); err != nil {
				c.addf(fw, "window: %v", err)
			} else {
				c.addf(fw, "window must be positive (or lifetime), got %s", ff.Window)
			}
		}
		tf := tiling.Feature{Name: ff.Name, Function: fn, Column: ff.Column, Window: w}
		if knownFunction(fn) {
			c.options(fw, &ff, &tf)
		}
		v.Features = append(v.Features, tf)
	}

	if len(c.problems) > before || shapeless {
		return vs, false
	}
	built, err := tiling.NewView(v)
	var tse *tiling.TileSizeError
	if errors.As(err, &tse) {
		c.addf(where, "%v", tse)
		return vs, false
	}
	if err != nil {
		// Unreachable while the checks above cover NewView's; kept so that a
		// rule added there is reported rather than lost.
		c.addf(where, "%v", err)
		return vs, false
	}
	vs.View = built
	return vs, true
}

// options copies a feature's options into tf and checks them with
// tiling's rules. An option set explicitly to 0 is reported here (tiling
// reads 0 as unset, which would say "missing").
func (c *checker) options(where string, ff *fileFeature, tf *tiling.Feature) {
	takes := func(option string) bool { return slices.Contains(tf.Function.Options(), option) }
	ints := []struct {
		name   string
		p      *int
		dst    *int
		lo, hi int
	}{
		{"n", ff.N, &tf.N, 1, tiling.MaxN},
		{"k", ff.K, &tf.K, 1, tiling.MaxK},
		{"precision", ff.Precision, &tf.Precision, tiling.MinPrecision, tiling.MaxPrecision},
		{"max_bins", ff.MaxBins, &tf.MaxBins, tiling.MinMaxBins, tiling.MaxMaxBins},
		{"max_value_bytes", ff.MaxValueBytes, &tf.MaxValueBytes, 1, tiling.MaxTileBytes},
	}
	for _, o := range ints {
		if o.p == nil {
			continue
		}
		*o.dst = *o.p
		if *o.p == 0 {
			if takes(o.name) {
				c.addf(where, "%s must be within %d..%d, got 0", o.name, o.lo, o.hi)
			}
			*o.dst = o.lo // reported, or not taken (which tiling reports)
		}
	}
	if ff.Accuracy != nil {
		tf.Accuracy = *ff.Accuracy
		if tf.Accuracy == 0 {
			if takes("accuracy") {
				c.addf(where, "accuracy must be within %v..%v, got 0", tiling.MinAccuracy, tiling.MaxAccuracy)
			}
			tf.Accuracy = tiling.MinAccuracy
		}
	}
	if ff.Percentiles != nil {
		tf.Percentiles = append([]float64{}, ff.Percentiles...)
	}
	if err := tf.ValidateOptions(); err != nil {
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			c.addf(where, "%v", e)
		}
	}
}

// name checks a view or feature name: it appears in URLs, metric labels and
// JSON responses, so it is kept to letters, digits, '_', '-' and '.'.
func (c *checker) name(where, field, s string) {
	if s == "" {
		c.addf(where, "%s is missing", field)
		return
	}
	if len(s) > maxNameBytes {
		c.addf(where, "%s is longer than %d bytes", field, maxNameBytes)
		return
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' ||
			i > 0 && (r == '-' || r == '.')
		if !ok {
			c.addf(where, "%s %q: use letters, digits, '_', '-' and '.', starting with a letter, digit or '_'", field, s)
			return
		}
	}
}

// millis parses a duration field into milliseconds, or returns def when it
// is absent. A bad one is reported and gives def, so that later checks do not
// pile up.
func (c *checker) millis(where, field, text string, def int64) int64 {
	if text == "" {
		return def
	}
	ms, err := tiling.ParseDuration(text)
	if err != nil {
		c.addf(where, "%s: %v", field, err)
		return def
	}
	return ms
}

func (c *checker) dur(where, field, text string, def time.Duration) time.Duration {
	return time.Duration(c.millis(where, field, text, def.Milliseconds())) * time.Millisecond
}

func (c *checker) atLeast(where, field string, p *int, def, lo int) int {
	if p == nil {
		return def
	}
	if *p < lo {
		c.addf(where, "%s must be at least %d, got %d", field, lo, *p)
	}
	return *p
}

func (c *checker) within(where, field string, p *int, def, lo, hi int) int {
	if p == nil {
		return def
	}
	if *p < lo || *p > hi {
		c.addf(where, "%s must be within %d..%d, got %d", field, lo, hi, *p)
	}
	return *p
}

func knownFunction(f tiling.Function) bool {
	for _, g := range tiling.Functions {
		if f == g {
			return true
		}
	}
	return false
}

func functionList() string {
	var b strings.Builder
	for i, f := range tiling.Functions {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(string(f))
	}
	return b.String()
}

// checkBroker accepts host or host:port, as franz-go's seed brokers do
// (the port defaults to 9092).
func checkBroker(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if strings.ContainsAny(s, ", \t") {
		return errors.New("one address per list entry, as host:port")
	}
	if _, _, err := net.SplitHostPort(s); err == nil {
		return checkPort(s)
	}
	if strings.Contains(s, ":") && !strings.HasPrefix(s, "[") {
		return errors.New("want host:port")
	}
	return nil
}

// checkListen accepts host:port for a listener; the host may be empty (all
// interfaces) and the port 0 (any free port).
func checkListen(s string) error {
	if _, _, err := net.SplitHostPort(s); err != nil {
		return errors.New("want host:port")
	}
	return checkPort(s)
}

func checkPort(hostport string) error {
	_, port, _ := net.SplitHostPort(hostport)
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return fmt.Errorf("port %q is not a number within 0..65535", port)
	}
	return nil
}

// checkTopic applies Kafka's rules for topic names.
func checkTopic(s string) error {
	if s == "." || s == ".." {
		return errors.New("not a valid Kafka topic name")
	}
	if len(s) > maxTopicBytes {
		return fmt.Errorf("longer than Kafka's %d characters", maxTopicBytes)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return errors.New("a Kafka topic name holds only letters, digits, '.', '_' and '-'")
		}
	}
	return nil
}

// or returns s, or def when s is empty.
func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
