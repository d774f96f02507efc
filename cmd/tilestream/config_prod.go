package main

import (
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tilestream/tilestream/state"
)

// The production parts of the configuration (docs/config.md): Kafka TLS and
// SASL, the DynamoDB online store with its Pebble local cache, the S3 offline
// log, the healer's lease. They are checked with the same checker as the rest,
// so that every problem is listed at once.

type fileKafkaTLS struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

type fileKafkaSASL struct {
	Mechanism    string `yaml:"mechanism"`
	Username     string `yaml:"username"`
	UsernameEnv  string `yaml:"username_env"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
}

type fileDynamo struct {
	Table       string `yaml:"table"`
	Region      string `yaml:"region"`
	Endpoint    string `yaml:"endpoint"`
	CreateTable bool   `yaml:"create_table"`
	TTL         string `yaml:"ttl"`
	CollectRate *int   `yaml:"collect_rate"`
}

type fileCache struct {
	MaxBytes  *int64 `yaml:"max_bytes"`
	Staleness string `yaml:"staleness"`
}

type fileS3 struct {
	Region    string `yaml:"region"`
	Endpoint  string `yaml:"endpoint"`
	PathStyle bool   `yaml:"path_style"`
}

// tlsSettings configures TLS to the Kafka brokers. Empty files mean the
// system's roots and no client certificate.
type tlsSettings struct {
	CAFile, CertFile, KeyFile, ServerName string
	InsecureSkipVerify                    bool
}

// saslSettings configures SASL to the Kafka brokers. Mechanism is PLAIN,
// SCRAM-SHA-256 or SCRAM-SHA-512.
type saslSettings struct {
	Mechanism string
	Username  string
	Password  secret
}

// secret is a value that must never reach a log: every way of printing it
// prints a placeholder. Reveal returns the value.
type secret struct{ v string }

func (s secret) Reveal() string               { return s.v }
func (s secret) String() string               { return "[redacted]" }
func (s secret) GoString() string             { return "[redacted]" }
func (s secret) LogValue() slog.Value         { return slog.StringValue("[redacted]") }
func (s secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// dynamoSettings configures the DynamoDB online store.
type dynamoSettings struct {
	Table, Region, Endpoint string
	CreateTable             bool
	// TTL, when positive, stamps every stream tile item with an expiry this
	// far after its write, as a backstop; correctness never depends on it.
	TTL time.Duration
	// CollectRate bounds the items per second that deleting an old
	// incarnation's items scans (state.DynamoConfig.CollectRate).
	CollectRate int
}

// cacheSettings configures the Pebble local cache in front of DynamoDB.
type cacheSettings struct {
	MaxBytes  int64
	Staleness time.Duration
}

// s3Settings locates an offline log in S3; Bucket is empty for a local
// directory.
type s3Settings struct {
	Bucket, Prefix, Region, Endpoint string
	PathStyle                        bool
}

// Defaults and limits of the production settings (docs/config.md).
const (
	defaultDynamoTable    = "tilestream"
	defaultCacheMaxBytes  = 1 << 30
	defaultCacheStaleness = 2 * time.Second
	defaultLease          = time.Minute
	// dynamoKeyBudget is DynamoDB's 2,048-byte partition key limit less the
	// view name and separators that tilestream puts before the entity key.
	dynamoKeyBudget = 2048 - maxNameBytes - 8
)

var saslMechanisms = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}

func (c *checker) kafkaSecurity(f *fileKafka, s *settings) {
	k := &s.Kafka
	if t := f.TLS; t != nil {
		const where = "kafka.tls"
		filesOK := true
		for _, p := range []struct{ field, path string }{{"ca_file", t.CAFile}, {"cert_file", t.CertFile}, {"key_file", t.KeyFile}} {
			if p.path == "" {
				continue
			}
			if _, err := os.Stat(p.path); err != nil {
				c.addf(where, "%s: %v", p.field, err)
				filesOK = false
			}
		}
		pairOK := (t.CertFile == "") == (t.KeyFile == "")
		if !pairOK {
			c.addf(where, "cert_file and key_file go together; set both or neither")
		}
		k.TLS = &tlsSettings{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
		if pairOK && filesOK {
			// The files are there: parse them now, so that `tilestream
			// check` reports a file holding no certificate, or a key that
			// is not the certificate's.
			if _, err := kafkaTLSConfig(k.TLS); err != nil {
				c.addf(where, "%s", strings.TrimPrefix(err.Error(), where+": "))
			}
		}
	}
	if a := f.SASL; a != nil {
		const where = "kafka.sasl"
		ss := &saslSettings{Mechanism: strings.ToUpper(a.Mechanism)}
		switch {
		case a.Mechanism == "":
			c.addf(where, "mechanism is required: one of %s", strings.Join(saslMechanisms, ", "))
		case !slices.Contains(saslMechanisms, ss.Mechanism):
			c.addf(where, "mechanism %q is unknown; use one of %s", a.Mechanism, strings.Join(saslMechanisms, ", "))
		}
		switch {
		case a.Username != "" && a.UsernameEnv != "":
			c.addf(where, "username and username_env are both set; set one")
		case a.UsernameEnv != "":
			v, ok := os.LookupEnv(a.UsernameEnv)
			if !ok || v == "" {
				c.addf(where, "username_env: environment variable %s is not set", a.UsernameEnv)
			}
			ss.Username = v
		case a.Username != "":
			ss.Username = a.Username
		default:
			c.addf(where, "username (or username_env) is required")
		}
		n := 0
		for _, set := range []bool{a.Password != "", a.PasswordFile != "", a.PasswordEnv != ""} {
			if set {
				n++
			}
		}
		switch {
		case n > 1:
			c.addf(where, "set one of password_file, password_env and password")
		case a.Password != "":
			// Allowed for local trials; the docs steer to a file or the
			// environment so the secret stays out of the config file.
			ss.Password = secret{a.Password}
		case a.PasswordFile != "":
			b, err := os.ReadFile(a.PasswordFile)
			pw := strings.TrimRight(string(b), "\r\n")
			switch {
			case err != nil:
				c.addf(where, "password_file: %v", err)
			case pw == "":
				c.addf(where, "password_file %s is empty", a.PasswordFile)
			}
			ss.Password = secret{pw}
		case a.PasswordEnv != "":
			v, ok := os.LookupEnv(a.PasswordEnv)
			if !ok || v == "" {
				c.addf(where, "password_env: environment variable %s is not set", a.PasswordEnv)
			}
			ss.Password = secret{v}
		default:
			c.addf(where, "password_file or password_env is required")
		}
		k.SASL = ss
	}
	if k.Embedded && (k.TLS != nil || k.SASL != nil) {
		c.addf("kafka", "tls and sasl apply to external brokers, not to the embedded one")
	}
}

// storeProd checks store.dynamodb, store.cache, offline_log.s3 and
// healer.lease; store() has set StoreKind, StorePath and OfflineLogPath.
func (c *checker) storeProd(f *fileConfig, s *settings) {
	switch s.StoreKind {
	case "dynamodb":
		const where = "store.dynamodb"
		d := f.Store.DynamoDB
		if d == nil {
			d = &fileDynamo{}
		}
		s.Dynamo = dynamoSettings{
			Table:       or(d.Table, defaultDynamoTable),
			Region:      d.Region,
			Endpoint:    d.Endpoint,
			CreateTable: d.CreateTable,
			TTL:         c.dur(where, "ttl", d.TTL, 0),
			CollectRate: state.DefaultCollectRate,
		}
		if d.CollectRate != nil {
			s.Dynamo.CollectRate = *d.CollectRate
			if s.Dynamo.CollectRate < state.MinCollectRate {
				c.addf(where, "collect_rate must be at least %d items per second, got %d", state.MinCollectRate, s.Dynamo.CollectRate)
			}
		}
		if n := len(s.Dynamo.Table); n < 3 || n > 255 || strings.Trim(s.Dynamo.Table, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != "" {
			c.addf(where, "table %q: want 3 to 255 of a-z A-Z 0-9 _ . -", s.Dynamo.Table)
		}
		if e := s.Dynamo.Endpoint; e != "" {
			if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				c.addf(where, "endpoint %q: want an http:// or https:// URL", e)
			}
		}
		cf := f.Store.Cache
		if cf == nil {
			cf = &fileCache{}
		}
		s.Cache.MaxBytes = defaultCacheMaxBytes
		if cf.MaxBytes != nil {
			s.Cache.MaxBytes = *cf.MaxBytes
			if s.Cache.MaxBytes < 1<<20 {
				c.addf("store.cache", "max_bytes must be at least 1048576 (1 MiB), got %d", s.Cache.MaxBytes)
			}
		}
		s.Cache.Staleness = c.dur("store.cache", "staleness", cf.Staleness, defaultCacheStaleness)
		if s.Cache.Staleness <= 0 {
			c.addf("store.cache", "staleness must be positive, got %s", cf.Staleness)
		}
		if s.HealerGrace > 0 && s.Cache.Staleness*2 >= s.HealerGrace {
			c.addf("store.cache", "staleness %s must be under half of healer.grace (%s): a cached head may be that old when garbage behind it is deleted", s.Cache.Staleness, s.HealerGrace)
		}
		if s.Ingest.MaxKeyBytes > dynamoKeyBudget {
			c.addf("ingest", "max_key_bytes %d is over what a DynamoDB key holds beside the view name (%d)", s.Ingest.MaxKeyBytes, dynamoKeyBudget)
		}
	default:
		if f.Store.DynamoDB != nil {
			c.addf("store", "dynamodb is set but kind is %q; set kind: dynamodb", s.StoreKind)
		}
		if f.Store.Cache != nil {
			c.addf("store", "cache applies to kind dynamodb only")
		}
	}

	if strings.HasPrefix(s.OfflineLogPath, "s3://") {
		const where = "offline_log"
		u, err := url.Parse(s.OfflineLogPath)
		switch {
		case err != nil || u.Host == "":
			c.addf(where, "path %q: want s3://bucket/prefix", s.OfflineLogPath)
		case u.User != nil || u.Port() != "" || u.RawQuery != "" || u.Fragment != "":
			// Never echo the URL: it may hold credentials.
			c.addf(where, "path: want s3://bucket/prefix without user, password, port, query or fragment (credentials come from the AWS environment; s3.endpoint names a server)")
		default:
			s.OfflineS3.Bucket = u.Host
			s.OfflineS3.Prefix = strings.Trim(u.Path, "/")
		}
		if o := f.OfflineLog.S3; o != nil {
			s.OfflineS3.Region, s.OfflineS3.Endpoint, s.OfflineS3.PathStyle = o.Region, o.Endpoint, o.PathStyle
			if e := o.Endpoint; e != "" {
				if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					c.addf("offline_log.s3", "endpoint %q: want an http:// or https:// URL", e)
				}
			}
		}
	} else {
		if f.OfflineLog.S3 != nil {
			c.addf("offline_log", "s3 is set but path %q is not an s3:// URL", s.OfflineLogPath)
		}
		if strings.Contains(s.OfflineLogPath, "://") {
			c.addf("offline_log", "path %q: want a directory or s3://bucket/prefix", s.OfflineLogPath)
		}
	}
	if s.OfflineS3.Bucket == "" && filepath.Clean(s.StorePath) == filepath.Clean(s.OfflineLogPath) {
		c.addf("offline_log", "path %q is also store.path; give each its own directory", s.OfflineLogPath)
	}

	s.HealerLease = c.dur("healer", "lease", f.Healer.Lease, defaultLease)
	if s.HealerLease < time.Second {
		c.addf("healer", "lease must be at least 1s, got %s", s.HealerLease)
	}
}

// describeStore names the online store and offline log for the start-up log.
func (s *settings) describeStore() string {
	off := s.OfflineLogPath
	store := fmt.Sprintf("pebble %s", s.StorePath)
	if s.StoreKind == "dynamodb" {
		store = fmt.Sprintf("dynamodb table %s (cache %s)", s.Dynamo.Table, s.StorePath)
	}
	return store + ", offline log " + off
}
