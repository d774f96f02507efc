package main

// Kafka TLS and SASL (kafka.tls, kafka.sasl) against an in-process kfake
// cluster that requires them: the service runs in process from a config
// file, consumes what a secured producer wrote and serves the values the
// oracle computes; bad credentials and untrusted certificates fail the start
// at once and clearly; the password reaches no log, franz-go's included.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// secUser is the SASL user of the secured clusters.
const secUser = "tilestream-svc"

// secOptions describe a secured cluster and the service's kafka.tls and
// kafka.sasl for it.
type secOptions struct {
	// mechanism is the cluster's SASL mechanism; "" disables SASL.
	mechanism string
	// password is the user's password on the cluster; servicePassword what
	// the service is configured with ("" for password).
	password, servicePassword string
	// serverTLS enables TLS on the cluster; producerTLS is the test
	// producer's client config for it.
	serverTLS, producerTLS *tls.Config
	// tlsYAML and saslYAML are the service's kafka.tls and kafka.sasl as
	// YAML flow maps ("" leaves the key out); saslYAML defaults to the
	// user with the password in an environment variable.
	tlsYAML, saslYAML string
}

// newSecureEnv starts a kfake cluster requiring o's SASL and TLS, a producer
// and admin client that satisfy them, and writes the service's config with
// kafka.tls and kafka.sasl, logging at debug level so that franz-go's own
// log lines are captured too.
func newSecureEnv(t *testing.T, o secOptions) *env {
	t.Helper()
	copts := []kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(testPartitions, testTopic)}
	var kopts []kgo.Opt
	if o.mechanism != "" {
		copts = append(copts, kfake.EnableSASL(), kfake.Superuser(o.mechanism, secUser, o.password))
		kopts = append(kopts, kgo.SASL(testMechanism(o.mechanism, o.password)))
	}
	if o.serverTLS != nil {
		copts = append(copts, kfake.TLS(o.serverTLS))
		kopts = append(kopts, kgo.DialTLSConfig(o.producerTLS))
	}
	c, err := kfake.NewCluster(copts...)
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
		http:    &http.Client{Timeout: 30 * time.Second},
		now:     time.Now().UnixMilli(),
	}
	e.lifetimeStart = alignDown(e.now-7*testDay-12*testHour, testGran)
	e.kcl, err = kgo.NewClient(append(kopts,
		kgo.SeedBrokers(e.brokers...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)...)
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	t.Cleanup(e.kcl.Close)
	e.adm = kadm.NewClient(e.kcl)
	e.addr = freeAddr(t)
	e.base = "http://" + e.addr

	var sec strings.Builder
	if o.tlsYAML != "" {
		fmt.Fprintf(&sec, "  tls: %s\n", o.tlsYAML)
	}
	if o.mechanism != "" || o.saslYAML != "" {
		sasl := o.saslYAML
		if sasl == "" {
			pw := o.servicePassword
			if pw == "" {
				pw = o.password
			}
			t.Setenv("TS_TEST_KAFKA_PASSWORD", pw)
			sasl = fmt.Sprintf("{mechanism: %s, username: %s, password_env: TS_TEST_KAFKA_PASSWORD}", o.mechanism, secUser)
		}
		fmt.Fprintf(&sec, "  sasl: %s\n", sasl)
	}
	cfg := e.config()
	if !strings.HasPrefix(cfg, "kafka:\n") || !strings.Contains(cfg, "log: {level: warn}\n") {
		t.Fatalf("the harness's config changed shape; adapt newSecureEnv:\n%s", cfg)
	}
	cfg = "kafka:\n" + sec.String() + strings.TrimPrefix(cfg, "kafka:\n")
	cfg = strings.Replace(cfg, "log: {level: warn}\n", "log: {level: debug}\n", 1)
	e.cfgPath = filepath.Join(e.dir, "tilestream.yaml")
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// testMechanism is the test producer's SASL mechanism: built here, not by
// the code under test.
func testMechanism(mechanism, password string) sasl.Mechanism {
	switch mechanism {
	case "PLAIN":
		return plain.Auth{User: secUser, Pass: password}.AsMechanism()
	case "SCRAM-SHA-256":
		return scram.Auth{User: secUser, Pass: password}.AsSha256Mechanism()
	case "SCRAM-SHA-512":
		return scram.Auth{User: secUser, Pass: password}.AsSha512Mechanism()
	}
	panic("unknown mechanism " + mechanism)
}

// newPassword returns a password that cannot occur in a log by chance.
func newPassword(prefix string) string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + "-" + hex.EncodeToString(b)
}

// servesProducedEvents runs the service on e's config, produces events of a
// few dozen keys and a probe key, waits until the group has committed them,
// and checks every served value against the oracle and the probe's counts by
// hand. It returns the service's log.
func servesProducedEvents(t *testing.T, e *env) string {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	g := newGen(seed, e)
	keys := g.keys(30)
	evs := g.regular(keys, 1500)
	// The probe: 17 events in the last hour, 5 more a few days back.
	const probe, recent, older = "probe-key", 17, 5
	for i := range recent {
		evs = append(evs, g.event(probe, e.now-int64(i+1)*testGran))
	}
	for i := range older {
		evs = append(evs, g.event(probe, e.now-3*testDay-int64(i)*testGran))
	}
	g.shuffle(evs)

	p := startInProcess(t, e.cfgPath)
	e.waitReady(20*time.Second, p.alive)
	ctx := t.Context()
	if err := e.produce(ctx, evs, mrand.New(mrand.NewPCG(seed, 2)), 500); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(20*time.Second, p.alive)

	results := e.queryAll(t, append(slices.Clone(keys), probe), []string{probe})
	if n := checkOracle(t, oracleView(e.lifetimeStart), results, byKey(t, evs)); n == 0 {
		t.Logf("every value of %d results equals the oracle", len(results))
	}
	for _, label := range []string{probe, "GET " + probe} {
		f := results[label].Features
		if f["events_1h"] != float64(recent) || f["events_7d"] != float64(recent+older) || f["events_lifetime"] != float64(recent+older) {
			t.Errorf("%s: events_1h %v, events_7d %v, events_lifetime %v; want %d, %d, %d",
				label, f["events_1h"], f["events_7d"], f["events_lifetime"], recent, recent+older, recent+older)
		}
	}
	if err := p.stop(t); err != nil {
		t.Errorf("run: %v", err)
	}
	logs := p.logs.String()
	if !strings.Contains(logs, "component=kafka") {
		t.Errorf("no franz-go log line captured; the password check below would prove little:\n%s", tail(logs, 20))
	}
	return logs
}

// failsToStart runs the service on e's config and returns run's error,
// failing the test unless run returns one within a few seconds.
func failsToStart(t *testing.T, e *env) (error, string) {
	t.Helper()
	shortHangUpWindow(t)
	start := time.Now()
	p := startInProcess(t, e.cfgPath)
	for p.alive() == nil {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("the service still runs %v after its start; want a prompt failure", time.Since(start).Round(time.Millisecond))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if p.err == nil {
		t.Fatalf("run returned nil; want an error")
	}
	t.Logf("failed after %v: %v", time.Since(start).Round(time.Millisecond), p.err)
	return p.err, p.logs.String()
}

// noSecret fails the test when s holds any of the secrets.
func noSecret(t *testing.T, what, s string, secrets ...string) {
	t.Helper()
	for _, pw := range secrets {
		if pw != "" && strings.Contains(s, pw) {
			t.Errorf("the password appears in %s:\n%s", what, s)
		}
	}
}

func TestKafkaSASL(t *testing.T) {
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			pw := newPassword("sasl-pw")
			e := newSecureEnv(t, secOptions{mechanism: mech, password: pw})
			logs := servesProducedEvents(t, e)
			noSecret(t, "the service log", logs, pw)
		})
	}
}

// The password comes from a file (trailing newline trimmed) and the user
// name from the environment, as docs/config.md recommends.
func TestKafkaSASLPasswordFile(t *testing.T) {
	pw := newPassword("file-pw")
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "kafka-password")
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TS_TEST_KAFKA_USER", secUser)
	e := newSecureEnv(t, secOptions{mechanism: "SCRAM-SHA-512", password: pw,
		saslYAML: fmt.Sprintf("{mechanism: scram-sha-512, username_env: TS_TEST_KAFKA_USER, password_file: %q}", pwFile)})
	logs := servesProducedEvents(t, e)
	noSecret(t, "the service log", logs, pw)
}

// A wrong password, or the right one with another mechanism, fails the
// start at once with an error that names SASL, the mechanism and the user,
// and neither password shows anywhere.
func TestKafkaSASLRefused(t *testing.T) {
	for _, c := range []struct{ name, cluster, service string }{
		{"PLAIN", "PLAIN", "PLAIN"},
		{"SCRAM-SHA-256", "SCRAM-SHA-256", "SCRAM-SHA-256"},
		{"SCRAM-SHA-512", "SCRAM-SHA-512", "SCRAM-SHA-512"},
		{"wrong mechanism", "SCRAM-SHA-512", "SCRAM-SHA-256"},
	} {
		t.Run(c.name, func(t *testing.T) {
			right := newPassword("right-pw")
			wrong := newPassword("wrong-pw")
			svc := wrong
			if c.cluster != c.service {
				svc = right
			}
			t.Setenv("TS_TEST_KAFKA_PASSWORD", svc)
			e := newSecureEnv(t, secOptions{mechanism: c.cluster, password: right,
				saslYAML: fmt.Sprintf("{mechanism: %s, username: %s, password_env: TS_TEST_KAFKA_PASSWORD}", c.service, secUser)})
			err, logs := failsToStart(t, e)
			for _, want := range []string{"SASL", c.service, secUser} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			}
			noSecret(t, "the error", err.Error(), right, wrong)
			noSecret(t, "the service log", logs, right, wrong)
		})
	}
}

// ---------------------------------------------------------------------------
// TLS

// testPKI is a throwaway CA with a broker and a client certificate, and an
// unrelated CA, written as PEM files.
type testPKI struct {
	caFile, otherCAFile, clientCert, clientKey string
	pool                                       *x509.CertPool
	server, client                             tls.Certificate
}

// newTestPKI makes the certificates: the broker's is for 127.0.0.1 and
// kafka.test.
func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	serial := int64(0)
	template := func(cn string) *x509.Certificate {
		serial++
		return &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
		}
	}
	newCA := func(cn string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
		k := newKey()
		tpl := template(cn)
		tpl.IsCA, tpl.BasicConstraintsValid, tpl.KeyUsage = true, true, x509.KeyUsageCertSign
		der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c, k, der
	}
	leaf := func(tpl *x509.Certificate, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (tls.Certificate, []byte, []byte) {
		k := newKey()
		tpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}, der, kder
	}

	p := &testPKI{pool: x509.NewCertPool()}
	ca, caKey, caDER := newCA("tilestream test CA")
	p.caFile = write("ca.pem", "CERTIFICATE", caDER)
	p.pool.AddCert(ca)
	_, _, otherDER := newCA("some other CA")
	p.otherCAFile = write("other-ca.pem", "CERTIFICATE", otherDER)

	st := template("kafka.test")
	st.DNSNames, st.IPAddresses = []string{"kafka.test"}, []net.IP{net.IPv4(127, 0, 0, 1)}
	st.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	p.server, _, _ = leaf(st, ca, caKey)

	ct := template("tilestream client")
	ct.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	var cder, kder []byte
	p.client, cder, kder = leaf(ct, ca, caKey)
	p.clientCert = write("client.pem", "CERTIFICATE", cder)
	p.clientKey = write("client-key.pem", "PRIVATE KEY", kder)
	return p
}

// serverConfig is the broker's TLS config; mutual requires a client
// certificate signed by the CA.
func (p *testPKI) serverConfig(mutual bool) *tls.Config {
	c := &tls.Config{Certificates: []tls.Certificate{p.server}, MinVersion: tls.VersionTLS12}
	if mutual {
		c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, p.pool
	}
	return c
}

// producerConfig is the test producer's TLS config.
func (p *testPKI) producerConfig() *tls.Config {
	return &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.client}, MinVersion: tls.VersionTLS12}
}

func TestKafkaTLS(t *testing.T) {
	pki := newTestPKI(t)
	t.Run("mutual TLS", func(t *testing.T) {
		e := newSecureEnv(t, secOptions{
			serverTLS: pki.serverConfig(true), producerTLS: pki.producerConfig(),
			tlsYAML: fmt.Sprintf("{ca_file: %q, cert_file: %q, key_file: %q, server_name: kafka.test}", pki.caFile, pki.clientCert, pki.clientKey),
		})
		servesProducedEvents(t, e)
	})
	t.Run("SASL over TLS", func(t *testing.T) {
		pw := newPassword("tls-sasl-pw")
		e := newSecureEnv(t, secOptions{
			mechanism: "SCRAM-SHA-512", password: pw,
			serverTLS: pki.serverConfig(false), producerTLS: pki.producerConfig(),
			tlsYAML: fmt.Sprintf("{ca_file: %q}", pki.caFile), // server name: the broker's IP
		})
		logs := servesProducedEvents(t, e)
		noSecret(t, "the service log", logs, pw)
	})
}

// A client that does not trust the broker's certificate, presents none when
// one is required, or speaks plaintext to a TLS listener fails the start at
// once, saying what is wrong.
func TestKafkaTLSRefused(t *testing.T) {
	pki := newTestPKI(t)
	for _, c := range []struct {
		name      string
		serverTLS *tls.Config
		tlsYAML   string
		want      string
	}{
		{"other CA", pki.serverConfig(false), fmt.Sprintf("{ca_file: %q}", pki.otherCAFile), "certificate is not trusted"},
		{"system roots", pki.serverConfig(false), "{}", "certificate is not trusted"},
		{"wrong server name", pki.serverConfig(false), fmt.Sprintf("{ca_file: %q, server_name: kafka.example}", pki.caFile), "certificate is not trusted"},
		{"no client certificate", pki.serverConfig(true), fmt.Sprintf("{ca_file: %q}", pki.caFile), "refused the TLS handshake"},
		// kafka.tls left out for a TLS listener (SASL alone is set).
		{"plaintext to TLS", pki.serverConfig(false), "", "close the connection before answering"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := secOptions{serverTLS: c.serverTLS, producerTLS: pki.producerConfig(), tlsYAML: c.tlsYAML}
			if c.tlsYAML == "" {
				o.mechanism, o.password = "PLAIN", newPassword("pw")
			}
			e := newSecureEnv(t, o)
			err, _ := failsToStart(t, e)
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
		})
	}
}

// TLS to a plaintext listener: a Kafka broker reads the ClientHello's first
// four bytes as the size of an oversized request and hangs up (kfake waits
// for the rest of the "request" instead, so a listener that does what Kafka
// does stands in for the broker).
func TestKafkaTLSToPlaintextListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Read(make([]byte, 4))
			c.Close()
		}
	}()
	shortHangUpWindow(t)
	s := &settings{}
	s.Kafka.TLS = &tlsSettings{}
	opts, err := kafkaSecurityOpts(s)
	if err != nil {
		t.Fatal(err)
	}
	// The check gives up without an error when ctx ends: nil means it
	// did not recognise the hang-up within 10 s.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err = checkKafkaAccess(ctx, s, []string{ln.Addr().String()}, opts, slog.New(slog.DiscardHandler))
	t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
	if err == nil || !strings.Contains(err.Error(), "hang up during the TLS handshake") {
		t.Errorf("error %v; want the brokers hanging up during the TLS handshake", err)
	}
}

// No broker listening is no reason to fail the start: the check says so in
// the log and keeps trying until the service stops.
func TestKafkaSecurityCheckWaitsForBrokers(t *testing.T) {
	s := &settings{}
	s.Kafka.SASL = &saslSettings{Mechanism: "PLAIN", Username: secUser, Password: secret{"pw"}}
	opts, err := kafkaSecurityOpts(s)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	ctx, cancel := context.WithTimeout(t.Context(), 700*time.Millisecond)
	defer cancel()
	if err := checkKafkaAccess(ctx, s, []string{freeAddr(t)}, opts, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Errorf("no broker listening: %v; want nil (keep trying)", err)
	}
	if ctx.Err() == nil {
		t.Errorf("the check returned before its context ended")
	}
	if !strings.Contains(logs.String(), "not answering yet") {
		t.Errorf("log %q; want a warning that the brokers do not answer", logs.String())
	}
}

// Brokers that answer a refusal with an error code, as Kafka does (kfake
// hangs up instead), fail the start at the first try; errors that a retry
// may cure do not.
func TestKafkaAccessErrorClassifies(t *testing.T) {
	s := &settings{}
	s.Kafka.SASL = &saslSettings{Mechanism: "SCRAM-SHA-512", Username: secUser, Password: secret{"pw"}}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, c := range []struct {
		err  error
		want string // "" for a retry
	}{
		{fmt.Errorf("%w: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512", kerr.SaslAuthenticationFailed),
			`the brokers refused SASL SCRAM-SHA-512 as "` + secUser + `"`},
		{kerr.UnsupportedSaslMechanism, `the brokers do not offer SASL SCRAM-SHA-512`},
		{fmt.Errorf("unable to dial: %w", refused), ""},
		{context.DeadlineExceeded, ""},
		{io.EOF, ""}, // counted by checkKafkaAccess, not fatal at once
	} {
		got := kafkaAccessError(s, c.err)
		switch {
		case c.want == "" && got != nil:
			t.Errorf("%v: %v; want a retry", c.err, got)
		case c.want != "" && (got == nil || !strings.Contains(got.Error(), c.want)):
			t.Errorf("%v: %v; want %q", c.err, got, c.want)
		}
	}
	if hungUp(fmt.Errorf("unable to dial: %w", refused)) {
		t.Errorf("a refused dial counts as a hang-up")
	}
}

// The TLS files are read when the service starts: an error names the file.
func TestKafkaSecurityOptsErrors(t *testing.T) {
	pki := newTestPKI(t)
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not-pem.crt")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		tls  tlsSettings
		want []string
	}{
		{"ca not PEM", tlsSettings{CAFile: notPEM}, []string{"ca_file", notPEM}},
		{"ca missing", tlsSettings{CAFile: filepath.Join(dir, "gone.pem")}, []string{"ca_file", "gone.pem"}},
		{"cert not PEM", tlsSettings{CertFile: notPEM, KeyFile: pki.clientKey}, []string{"cert_file", notPEM}},
		{"key of another cert", tlsSettings{CertFile: pki.clientCert, KeyFile: pki.caFile}, []string{"key_file", pki.caFile}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &settings{}
			s.Kafka.TLS = &c.tls
			_, err := kafkaSecurityOpts(s)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}

	// An empty password (an empty password_file, say) is refused at once,
	// not at every authentication.
	for _, m := range saslMechanisms {
		s := &settings{}
		s.Kafka.SASL = &saslSettings{Mechanism: m, Username: secUser}
		if _, err := kafkaSecurityOpts(s); err == nil || !strings.Contains(err.Error(), "password must not be empty") {
			t.Errorf("%s with an empty password: %v", m, err)
		}
	}

	// Nothing set: no options. Set: TLS 1.2 at least, the CA's roots and
	// the client certificate.
	if opts, err := kafkaSecurityOpts(&settings{}); err != nil || opts != nil {
		t.Errorf("no tls, no sasl: %v, %v", opts, err)
	}
	c, err := kafkaTLSConfig(&tlsSettings{CAFile: pki.caFile, CertFile: pki.clientCert, KeyFile: pki.clientKey, ServerName: "kafka.test"})
	if err != nil {
		t.Fatal(err)
	}
	if c.MinVersion != tls.VersionTLS12 || c.RootCAs == nil || len(c.Certificates) != 1 || c.ServerName != "kafka.test" || c.InsecureSkipVerify {
		t.Errorf("tls config %+v", c)
	}
	if c, _ := kafkaTLSConfig(&tlsSettings{}); c.RootCAs != nil {
		t.Errorf("no ca_file: roots %v, want the system's (nil)", c.RootCAs)
	}
}

// shortHangUpWindow makes brokers that keep hanging up count as refusing
// after 300 ms instead of kafkaHangUpFor, for the tests of refusals.
func shortHangUpWindow(t *testing.T) {
	old := kafkaHangUpFor
	kafkaHangUpFor = 300 * time.Millisecond
	t.Cleanup(func() { kafkaHangUpFor = old })
}

// Brokers that hang up for less than kafkaHangUpFor (one restarting behind a
// load balancer) do not fail the start: the check retries and passes once
// they answer.
func TestKafkaHangUpsWithinTheWindowAreRetried(t *testing.T) {
	old := kafkaHangUpFor
	kafkaHangUpFor = 4 * time.Second
	t.Cleanup(func() { kafkaHangUpFor = old })
	right := newPassword("right-pw")
	e := newSecureEnv(t, secOptions{mechanism: "PLAIN", password: right,
		saslYAML: "{mechanism: PLAIN, username: " + secUser + ", password: " + right + "}"})
	broker := e.brokers[0]

	// A proxy that accepts and resets every connection for its first
	// 1.5 s, then forwards to the broker.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	until := time.Now().Add(1500 * time.Millisecond)
	var resets atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if time.Now().Before(until) {
				resets.Add(1)
				c.Read(make([]byte, 4))
				c.Close()
				continue
			}
			go func() {
				defer c.Close()
				b, err := net.Dial("tcp", broker)
				if err != nil {
					return
				}
				defer b.Close()
				go io.Copy(b, c)
				io.Copy(c, b)
			}()
		}
	}()
	s := &settings{}
	s.Kafka.SASL = &saslSettings{Mechanism: "PLAIN", Username: secUser, Password: secret{right}}
	opts, err := kafkaSecurityOpts(s)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := checkKafkaAccess(ctx, s, []string{ln.Addr().String()}, opts, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("brokers hanging up for 1.5 s of a 4 s window: %v; want a retry and then success", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("the check did not pass before its deadline")
	}
	if resets.Load() < kafkaHangUps {
		t.Fatalf("the proxy reset %d connections; the test needs at least %d", resets.Load(), kafkaHangUps)
	}
}
