package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tilestream/tilestream/state"
)

func TestProductionSettings(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte("hunter2-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TS_TEST_SASL_USER", "alice")
	s, err := parseConfig([]byte(`
kafka:
  brokers: ["k:9092"]
  tls: {server_name: kafka.internal}
  sasl: {mechanism: scram-sha-512, username_env: TS_TEST_SASL_USER, password_file: ` + pw + `}
store:
  kind: dynamodb
  path: ./data/cache
  dynamodb: {table: features, region: eu-west-1, endpoint: "http://127.0.0.1:4567", create_table: true, ttl: 30d, collect_rate: 250}
  cache: {max_bytes: 268435456, staleness: 5s}
offline_log:
  path: s3://lake/tilestream/offline/
  s3: {region: eu-west-1, endpoint: "http://127.0.0.1:9000", path_style: true}
healer: {grace: 2m, lease: 30s, workers: 3, table_records: -1, verify_sample: 0}
` + okViews))
	if err != nil {
		t.Fatal(err)
	}
	if s.Kafka.TLS == nil || s.Kafka.TLS.ServerName != "kafka.internal" {
		t.Errorf("tls %+v", s.Kafka.TLS)
	}
	if a := s.Kafka.SASL; a == nil || a.Mechanism != "SCRAM-SHA-512" || a.Username != "alice" || a.Password.Reveal() != "hunter2-file" {
		t.Errorf("sasl %+v", a)
	}
	wantD := dynamoSettings{Table: "features", Region: "eu-west-1", Endpoint: "http://127.0.0.1:4567", CreateTable: true, TTL: 30 * 24 * time.Hour, CollectRate: 250}
	if s.StoreKind != "dynamodb" || s.Dynamo != wantD || s.Cache != (cacheSettings{MaxBytes: 256 << 20, Staleness: 5 * time.Second}) {
		t.Errorf("store %s %+v %+v", s.StoreKind, s.Dynamo, s.Cache)
	}
	if s.OfflineS3 != (s3Settings{Bucket: "lake", Prefix: "tilestream/offline", Region: "eu-west-1", Endpoint: "http://127.0.0.1:9000", PathStyle: true}) {
		t.Errorf("s3 %+v", s.OfflineS3)
	}
	if s.HealerLease != 30*time.Second || s.HealerGrace != 2*time.Minute || s.HealerWorkers != 3 || s.HealerTableRecords != -1 || s.HealerVerifySample != 0 {
		t.Errorf("healer lease %s grace %s workers %d table_records %d verify_sample %d", s.HealerLease, s.HealerGrace, s.HealerWorkers, s.HealerTableRecords, s.HealerVerifySample)
	}

	// Defaults of a bare DynamoDB store.
	s, err = parseConfig([]byte(okKafka + okViews + "store: {kind: dynamodb}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Dynamo.Table != defaultDynamoTable || s.Dynamo.CollectRate != state.DefaultCollectRate || s.Cache.MaxBytes != defaultCacheMaxBytes || s.Cache.Staleness != defaultCacheStaleness || s.StorePath != defaultStorePath {
		t.Errorf("defaults %+v %+v %s", s.Dynamo, s.Cache, s.StorePath)
	}
}

// The SASL password never reaches a log or a printed settings value.
func TestSecretIsNeverPrinted(t *testing.T) {
	t.Setenv("TS_TEST_SASL_PASSWORD", "hunter2-env")
	s, err := parseConfig([]byte("kafka: {brokers: [k], sasl: {mechanism: PLAIN, username: u, password_env: TS_TEST_SASL_PASSWORD}}\n" + okViews))
	if err != nil {
		t.Fatal(err)
	}
	if s.Kafka.SASL.Password.Reveal() != "hunter2-env" {
		t.Fatalf("password %q", s.Kafka.SASL.Password.Reveal())
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%v %+v %#v %s %v", s, s.Kafka, s.Kafka.SASL, s.Kafka.SASL.Password, *s.Kafka.SASL)
	slog.New(slog.NewJSONHandler(&b, nil)).Info("x", "sasl", s.Kafka.SASL, "password", s.Kafka.SASL.Password)
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "sasl", *s.Kafka.SASL, "password", s.Kafka.SASL.Password)
	if strings.Contains(b.String(), "hunter2") {
		t.Fatalf("the password was printed:\n%s", b.String())
	}
	if !strings.Contains(b.String(), "[redacted]") {
		t.Fatalf("no placeholder printed:\n%s", b.String())
	}
}

// `tilestream check` parses the TLS files and rejects an empty password file.
func TestKafkaSecurityFilesAreChecked(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	empty := filepath.Join(dir, "password")
	for _, f := range []string{notPEM, empty} {
		if err := os.WriteFile(f, []byte("\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, err := parseConfig([]byte("kafka: {brokers: [k], tls: {ca_file: " + notPEM + "}, sasl: {mechanism: PLAIN, username: u, password_file: " + empty + "}}\n" + okViews))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"kafka.tls: ca_file " + notPEM + ": no PEM certificate in it", "kafka.sasl: password_file " + empty + " is empty"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}
