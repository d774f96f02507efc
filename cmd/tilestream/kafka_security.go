package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// kafkaSecurityOpts returns the client options for kafka.tls and kafka.sasl:
// nil when neither is set. Every Kafka client of the service is built from
// these options (through ingest.Config.ClientOpts).
func kafkaSecurityOpts(s *settings) ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if t := s.Kafka.TLS; t != nil {
		c, err := kafkaTLSConfig(t)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(c))
	}
	if a := s.Kafka.SASL; a != nil {
		m, err := kafkaSASL(a)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

// kafkaTLSConfig builds the client's TLS config: TLS 1.2 or later, the CA
// file's certificates as roots (the system's roots without one), the client
// certificate when cert_file and key_file are set.
func kafkaTLSConfig(t *tlsSettings) (*tls.Config, error) {
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName, // empty: kgo uses each broker's host
		InsecureSkipVerify: t.InsecureSkipVerify,
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kafka.tls: ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka.tls: ca_file %s: no PEM certificate in it", t.CAFile)
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("kafka.tls: cert_file %s and key_file %s: %w", t.CertFile, t.KeyFile, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// kafkaSASL returns the SASL mechanism of a. The password is revealed only
// when the client authenticates, and goes nowhere else.
func kafkaSASL(a *saslSettings) (sasl.Mechanism, error) {
	user, pass := a.Username, a.Password
	// franz-go refuses empty ones only when it authenticates, and then
	// the client retries for ever.
	if user == "" || pass.Reveal() == "" {
		return nil, errors.New("kafka.sasl: the username and the password must not be empty")
	}
	scramAuth := func(context.Context) (scram.Auth, error) {
		return scram.Auth{User: user, Pass: pass.Reveal()}, nil
	}
	switch a.Mechanism {
	case "PLAIN":
		return plain.Plain(func(context.Context) (plain.Auth, error) {
			return plain.Auth{User: user, Pass: pass.Reveal()}, nil
		}), nil
	case "SCRAM-SHA-256":
		return scram.Sha256(scramAuth), nil
	case "SCRAM-SHA-512":
		return scram.Sha512(scramAuth), nil
	}
	return nil, fmt.Errorf("kafka.sasl: mechanism %q is unknown; use one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", a.Mechanism)
}

const (
	// kafkaAccessBackoff bounds the wait between two tries of
	// checkKafkaAccess while no broker answers.
	kafkaAccessBackoff = 5 * time.Second
	// kafkaHangUps is how many tries in a row a broker must hang up on
	// before checkKafkaAccess takes it for a refusal.
	kafkaHangUps = 3
)

// kafkaHangUpFor is how long the brokers must keep hanging up, beside
// kafkaHangUps tries, before checkKafkaAccess takes it for a refusal: a
// broker restarting behind a load balancer also accepts connections and
// resets them for a while. A variable so that tests of refusals run fast.
var kafkaHangUpFor = 10 * time.Second

// checkKafkaAccess connects to the brokers with the service's client options
// once kafka.tls or kafka.sasl is set, so that a wrong password, mechanism or
// certificate fails the start with a clear error instead of leaving the
// consumer retrying behind warnings. An unreachable broker is not an error:
// the check logs it once and tries again until a broker answers or ctx is
// done. It returns nil once a broker has answered.
func checkKafkaAccess(ctx context.Context, s *settings, brokers []string, opts []kgo.Opt, log *slog.Logger) error {
	if s.Kafka.TLS == nil && s.Kafka.SASL == nil {
		return nil
	}
	if t := s.Kafka.TLS; t != nil && t.InsecureSkipVerify {
		log.Warn("kafka.tls.insecure_skip_verify is set: the brokers' certificates are not checked; use it for tests only")
	}
	if a := s.Kafka.SASL; a != nil && a.Mechanism == "PLAIN" && s.Kafka.TLS == nil {
		log.Warn("kafka.sasl PLAIN without kafka.tls sends the password in clear text")
	}
	var h hangUpHook
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.WithHooks(&h)}, opts...)...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	wait := 100 * time.Millisecond
	cut := 0 // tries in a row that a broker hung up on
	var firstCut time.Time
	for warned := false; ; {
		h.sasl.Store(false)
		h.dial.Store(false)
		err := cl.Ping(ctx)
		if err == nil {
			if warned {
				log.Info("kafka brokers answering", "brokers", brokers)
			}
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		if fatal := kafkaAccessError(s, err); fatal != nil {
			return fatal
		}
		// A broker that accepts the connection and then hangs up gives a
		// bare EOF or reset: some answer bad credentials so (kfake, and
		// SASLHandshake v0 brokers), and TLS spoken to a plaintext
		// listener, or plaintext to a TLS one, ends so. Take it as a
		// refusal once it happened a few times in a row, so that a broker
		// restarting mid-handshake is not mistaken for one.
		if !hungUp(err) {
			cut = 0
		} else if cut++; cut == 1 {
			firstCut = time.Now()
		}
		if cut >= kafkaHangUps && time.Since(firstCut) >= kafkaHangUpFor {
			switch a := s.Kafka.SASL; {
			case a != nil && h.sasl.Load():
				return fmt.Errorf("kafka: the brokers closed the connection during SASL %s authentication as %q: wrong password, user or mechanism? (%w)", a.Mechanism, a.Username, err)
			case s.Kafka.TLS != nil && h.dial.Load():
				return fmt.Errorf("kafka: the brokers hang up during the TLS handshake: is their listener plaintext? (%w)", err)
			}
			return fmt.Errorf("kafka: the brokers close the connection before answering; check kafka.tls and kafka.sasl against the brokers' listener: %w", err)
		}
		if !warned {
			log.Warn("kafka brokers not answering yet; trying again", "brokers", brokers, "err", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, kafkaAccessBackoff)
	}
}

// hangUpHook notes where the brokers hang up: while dialing (the TLS
// handshake) or on a SASL response.
type hangUpHook struct{ dial, sasl atomic.Bool }

func (h *hangUpHook) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, conn net.Conn, err error) {
	if conn == nil && err != nil && hungUp(err) {
		h.dial.Store(true)
	}
}

func (h *hangUpHook) OnBrokerRead(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err != nil && (key == kmsg.SASLHandshake.Int16() || key == kmsg.SASLAuthenticate.Int16()) {
		h.sasl.Store(true)
	}
}

// hungUp reports whether err is a broker closing a connection it accepted.
func hungUp(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return false // no broker accepted the connection
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// kafkaAccessError returns the error that err means for the start when
// retrying cannot help (rejected credentials, an untrusted or mismatched
// certificate, TLS against a plaintext listener), nil when it can.
func kafkaAccessError(s *settings, err error) error {
	mech := "SASL"
	if a := s.Kafka.SASL; a != nil {
		mech = fmt.Sprintf("SASL %s as %q", a.Mechanism, a.Username)
	}
	var (
		verify *tls.CertificateVerificationError
		header tls.RecordHeaderError
		op     *net.OpError
	)
	switch {
	case errors.Is(err, kerr.SaslAuthenticationFailed), errors.Is(err, kerr.IllegalSaslState):
		return fmt.Errorf("kafka: the brokers refused %s: %w", mech, err)
	case errors.Is(err, kerr.UnsupportedSaslMechanism):
		return fmt.Errorf("kafka: the brokers do not offer %s: %w", mech, err)
	case errors.As(err, &verify):
		return fmt.Errorf("kafka: the brokers' TLS certificate is not trusted (check kafka.tls ca_file and server_name): %w", err)
	case errors.As(err, &header):
		return fmt.Errorf("kafka: kafka.tls is set but the broker does not speak TLS: %w", err)
	case errors.As(err, &op) && op.Op == "remote error" && !transientAlert(err):
		// A TLS alert from the broker: it refused the handshake, most
		// often for a missing or untrusted client certificate.
		return fmt.Errorf("kafka: the broker refused the TLS handshake (check kafka.tls cert_file and key_file): %w", err)
	}
	return nil
}

// transientAlert reports whether err carries a TLS alert that a retry may
// cure (internal_error, user_canceled), rather than a refusal.
func transientAlert(err error) bool {
	var a tls.AlertError
	return errors.As(err, &a) && (a == 80 || a == 90)
}
