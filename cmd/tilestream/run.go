package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/tilestream/tilestream/healer"
	"github.com/tilestream/tilestream/ingest"
	"github.com/tilestream/tilestream/serving"
	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

const usage = `usage: tilestream <command> [flags]

commands:
  run      run the service (default; with no --config: the embedded demo)
  heal     heal now: through the running service, or standalone when none runs
  backfill build every key's batch records of a view from the offline log (service stopped)
  verify   compare served values with a recomputation from the offline log (service stopped)
  init-store  create the DynamoDB table of a store.kind: dynamodb config
  check    validate a config file and print the views
  version  print the version

run 'tilestream <command> -h' for the flags of a command`

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// healStartWait is how long POST /v1/heal waits for the service to be up
// (startup: at most the write deadline less a margin, startHealWait) and
// then for its ingest to start, before answering 503.
const healStartWait = 10 * time.Second

// run is the whole program behind main, so tests can drive it in process.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "run"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	} else if len(args) > 0 && isHelpFlag(args[0]) {
		cmd = "help"
	}
	err := runCommand(ctx, cmd, args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		// -h: the flag set printed the command's usage; asking is no failure.
		return nil
	}
	return err
}

// isHelpFlag reports whether arg asks for help the way the flag package
// understands it.
func isHelpFlag(arg string) bool {
	switch arg {
	case "-h", "--h", "-help", "--help":
		return true
	}
	return false
}

// newFlagSet returns a command's flag set: errors and usage go to stderr,
// and -h prints "usage: tilestream <name> [flags]" with the flags.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: tilestream %s [flags]\n\nflags:\n", name)
		fs.PrintDefaults()
	}
	return fs
}

// runCommand runs one command with its arguments.
func runCommand(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	switch cmd {
	case "run":
		return runService(ctx, args, stdout, stderr)
	case "check":
		return runCheck(args, stdout, stderr)
	case "heal":
		return runHeal(ctx, args, stdout, stderr)
	case "backfill":
		return runBackfill(ctx, args, stdout, stderr)
	case "verify":
		return runVerify(ctx, args, stdout, stderr)
	case "init-store":
		return runInitStore(ctx, args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "tilestream", version)
		return nil
	case "help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}

func runCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", stderr)
	path := fs.String("config", "", "config file (YAML)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		return errors.New("check: --config is required")
	}
	s, err := loadConfig(*path)
	if err != nil {
		return err
	}
	for _, vs := range s.Views {
		v := vs.View
		fmt.Fprintf(stdout, "view %s: topic %s, granularity %s, %d features, layout %s\n",
			v.Name, v.Topic, tiling.FormatDuration(v.Granularity), len(v.Features), v.Fingerprint())
	}
	return nil
}

// runOptions are the run command's flags.
type runOptions struct {
	config   string
	demoRate float64
}

func runService(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", stderr)
	var o runOptions
	fs.StringVar(&o.config, "config", "", "config file (YAML); without it, the embedded demo runs")
	fs.Float64Var(&o.demoRate, "demo-rate", -1, "events/s produced by the built-in demo producer to every embedded topic (0 disables; default 50 without --config, else 0)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var s *settings
	if o.config == "" {
		s = demoConfig()
		if o.demoRate < 0 {
			o.demoRate = 50
		}
	} else {
		var err error
		if s, err = loadConfig(o.config); err != nil {
			return err
		}
		if o.demoRate < 0 {
			o.demoRate = 0
		}
	}
	if o.demoRate > 0 && !s.Kafka.Embedded {
		return errors.New("--demo-rate needs the embedded broker (kafka.embedded)")
	}
	log := newLogger(s, stderr)
	return serve(ctx, s, o, log)
}

func newLogger(s *settings, w io.Writer) *slog.Logger {
	ho := &slog.HandlerOptions{Level: s.Log.Level}
	if s.Log.JSON {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}

// serve wires the components and runs them until ctx is done or one fails.
func serve(ctx context.Context, s *settings, o runOptions, log *slog.Logger) error {
	views := make([]*tiling.View, len(s.Views))
	for i, vs := range s.Views {
		views[i] = vs.View
	}

	// HTTP first: /healthz answers while the store opens and changed views
	// are translated, which takes minutes on a large DynamoDB table; the
	// rest answers 503 until the service is up (startup).
	scfg := serving.DefaultConfig()
	scfg.Listen = s.HTTP.Listen
	scfg.MaxBatch = s.HTTP.MaxBatch
	scfg.MaxBodyBytes = s.HTTP.MaxBodyBytes
	scfg.MaxKeyBytes = s.Ingest.MaxKeyBytes
	scfg.RequestTimeout = s.HTTP.RequestTimeout
	if err := scfg.Validate(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", scfg.Listen)
	if err != nil {
		return fmt.Errorf("http listen %s: %w", scfg.Listen, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	st, srv := newStartupServer(scfg, reg, log.With("component", "serving"))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(gctx, ln) })
	log.Info("serving HTTP", "addr", ln.Addr().String())
	// A failed start stops the server before the deferred closes below it
	// run (they run first: the server only answers 503s meanwhile).
	up := false
	defer func() {
		if !up {
			cancel()
			g.Wait() //nolint:errcheck // the start's own error is returned
		}
	}()

	brokers := s.Kafka.Brokers
	if s.Kafka.Embedded {
		st.doing("starting the embedded Kafka broker")
		cluster, err := startEmbedded(s, views, log)
		if err != nil {
			return err
		}
		defer cluster.Close()
		brokers = cluster.ListenAddrs()
		log.Info("embedded Kafka broker listening", "addr", brokers)
	}

	st.doing("opening the online store")
	store, err := openStore(ctx, s, reg, log)
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped while opening the online store")
			return nil
		}
		return err
	}
	defer store.Close()
	st.doing("checking the views' layouts (a changed view is translated or set to rebuild)")
	layouts, err := checkLayouts(ctx, s, store, log)
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped while checking the views' layouts (a translation resumes at the next start)", "err", err)
			return nil
		}
		return err
	}
	st.doing("opening the offline log")
	offline, err := openOfflineLog(s)
	if err != nil {
		return err
	}

	st.doing("starting the ingest")
	icfg := ingest.DefaultConfig()
	icfg.Brokers = brokers
	icfg.Group = s.Kafka.Group
	icfg.ClientID = s.Kafka.ClientID
	icfg.DeadLetterTopic = s.Kafka.DeadLetterTopic
	icfg.ClientOpts = append(icfg.ClientOpts, kgo.SessionTimeout(s.Kafka.SessionTimeout))
	sec, err := kafkaSecurityOpts(s)
	if err != nil {
		return err
	}
	icfg.ClientOpts = append(icfg.ClientOpts, sec...)
	if s.Kafka.InstanceID != "" {
		icfg.ClientOpts = append(icfg.ClientOpts, kgo.InstanceID(s.Kafka.InstanceID))
	}
	icfg.FlushInterval = s.Ingest.FlushInterval
	icfg.FutureSkew = s.Ingest.FutureSkew
	icfg.MaxEventBytes = s.Ingest.MaxEventBytes
	icfg.MaxKeyBytes = s.Ingest.MaxKeyBytes
	icfg.RecordCache = s.Ingest.RecordCache
	icfg.ArchiveRollInterval = s.OfflineLogRollInterval
	icfg.ArchiveRollRows = s.OfflineLogRollEvents
	if s.StoreKind == "dynamodb" {
		icfg.ProgressDelay = s.Cache.Staleness
	}
	ing, err := ingest.New(icfg, views, store, offline, ingest.NewMetrics(reg), log.With("component", "ingest"))
	if err != nil {
		return err
	}
	hl, err := newHealer(s, store, offline, ing, reg, log)
	if err != nil {
		return err
	}
	hl.OnInstall = func(view string) {
		ing.ForgetHeads(view)
		layouts.installed(view)
	}
	hl.Reader = store

	h := serving.NewHandler(scfg, serving.Options{
		Views:      views,
		Reader:     store,
		Watermarks: ing,
		Ready: func() bool {
			// Up while a rebuild holds the ingest back: answers then name the
			// missing features.
			return layouts.AnyRebuilding() || ing.Ready()
		},
		Gatherer: reg,
		Metrics:  serving.NewMetrics(reg),
		Logger:   log.With("component", "serving"),
		Heal: func(ctx context.Context, view string, full bool) (any, error) {
			// Another instance healing the view: wait for it, then heal. Right
			// after a start the ingest may not have created its consumer yet:
			// wait for it a little before answering 503 (a rebuild holding
			// the ingest back takes longer than that).
			start := time.Now()
			for {
				res, err := hl.Heal(ctx, view, healer.Options{Full: full, Wait: true})
				if !errors.Is(err, ingest.ErrNotRunning) {
					return res, err
				}
				if layouts.AnyRebuilding() || time.Since(start) > healStartWait {
					return res, fmt.Errorf("%w: %w", serving.ErrUnavailable, err)
				}
				select {
				case <-ctx.Done():
					return res, fmt.Errorf("%w: %w", serving.ErrUnavailable, err)
				case <-time.After(50 * time.Millisecond): // poll interval
				}
			}
		},
		Rebuilding: layouts.Rebuilding,
		Missing:    layouts.Missing,
		// DynamoDB: a read is a round trip; read a POST's keys 16 at a time.
		ReadParallelism: map[bool]int{true: 16, false: 1}[s.StoreKind == "dynamodb"],
	})
	st.ready(h)
	up = true

	g.Go(func() error { return checkKafkaAccess(gctx, s, brokers, icfg.ClientOpts, log) })
	g.Go(func() error {
		// Views whose layout changed are rebuilt before the ingest starts:
		// the rebuild writes their stream records from the archive, and the
		// ingest's replay must find them.
		// The rebuild runs before the consumer: its archive watermark comes
		// from the stored archive progress (leftover roll intents were
		// cleaned when the ingest was built), not from the ingest.
		rb, err := newHealer(s, store, offline, nil, prometheus.NewRegistry(), log)
		if err != nil {
			return err
		}
		for _, v := range views {
			if !layouts.Rebuilding(v.Name) {
				continue
			}
			res, err := rb.Heal(gctx, v.Name, healer.Options{Full: true, Rebuild: true})
			if err != nil {
				return fmt.Errorf("rebuild view %s: %w (restart to resume)", v.Name, err)
			}
			if err := store.FinishRebuild(v); err != nil {
				return err
			}
			layouts.views[v.Name].rebuilding.Store(false)
			log.Info("view rebuilt for its new layout", "view", v.Name, "batch_watermark", res.Watermark, "events", res.Events)
		}
		return ing.Run(gctx)
	})
	g.Go(func() error { return hl.Run(gctx) })
	g.Go(func() error {
		return layouts.healPending(gctx, func(ctx context.Context, view string) error {
			_, err := hl.Heal(ctx, view, healer.Options{Wait: true})
			return err
		})
	})
	if o.demoRate > 0 {
		g.Go(func() error { return runDemo(gctx, brokers, views, o.demoRate, log.With("component", "demo")) })
	}
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// embeddedDataDir keeps the embedded broker's log beside the store, so a
// restart finds the topics and committed offsets that the store's records
// already include.
func embeddedDataDir(s *settings) string {
	return filepath.Join(filepath.Dir(filepath.Clean(s.StorePath)), "kafka")
}

// newHealer builds the healer of every view. archive is nil for a standalone
// heal (no ingest in this process).
func newHealer(s *settings, store *state.Store, offline *state.OfflineLog, archive healer.Archive, reg prometheus.Registerer, log *slog.Logger) (*healer.Healer, error) {
	var vcs []healer.ViewConfig
	for _, vs := range s.Views {
		vcs = append(vcs, healer.ViewConfig{View: vs.View, Lateness: vs.Lateness, HealEvery: vs.HealEvery})
	}
	hc := healer.DefaultConfig()
	hc.Grace = s.HealerGrace
	hc.Lease = s.HealerLease
	hc.Workers = s.HealerWorkers
	hc.TableRecords = s.HealerTableRecords
	hc.VerifySample = s.HealerVerifySample
	// The host and HTTP address name a live instance (no two processes
	// listen on one address): a restarted instance takes its own lease back
	// at once instead of waiting for it to lapse.
	host, _ := os.Hostname()
	hc.Owner = host + "/" + s.HTTP.Listen
	return healer.New(hc, vcs, store, offline, archive, healer.NewMetrics(reg), log.With("component", "healer"))
}

// healThrough posts body to the service's POST /v1/heal at addr and returns
// the answer. A 503 with Retry-After (the service is starting, or its ingest
// is not running yet) is asked again every second for up to wait, saying so
// on stderr; so is a connection closed without an answer while the service
// is starting (its /readyz answers 503 with Retry-After: an older service's
// start-up wait outlasted its write deadline). An error wraps the
// connection's (ECONNREFUSED: no service).
func healThrough(ctx context.Context, addr string, body []byte, wait time.Duration, stderr io.Writer) ([]byte, error) {
	until := time.Now().Add(wait)
	said := ""
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/heal", bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		var out []byte
		switch {
		case err != nil && ctx.Err() == nil && time.Now().Before(until) && noAnswer(err) && starting(ctx, addr):
			err = fmt.Errorf("heal through %s: %w", addr, err)
			out = []byte("the service closed the connection without an answer while it starts")
		case err != nil:
			return nil, fmt.Errorf("heal through %s: %w", addr, err)
		default:
			out, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return out, nil
			}
			err = fmt.Errorf("heal through %s: %s: %s", addr, resp.Status, bytes.TrimSpace(out))
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !time.Now().Before(until) {
				return nil, err
			}
		}
		if msg := string(bytes.TrimSpace(out)); msg != said {
			fmt.Fprintf(stderr, "waiting for the service (up to %s): %s\n", wait, msg)
			said = msg
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(time.Second): // what Retry-After asks
		}
	}
}

// noAnswer reports whether a request's error is a connection closed (or
// reset) by the server before it answered.
func noAnswer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// starting reports whether the service at addr answers GET /readyz with 503
// and Retry-After: it is starting, or its ingest is not running yet.
func starting(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body) //nolint:errcheck // only the status counts
	resp.Body.Close()
	return resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != ""
}

// runHeal asks the running service to heal (POST /v1/heal on its HTTP
// address) and prints the summary; when no service answers there, it heals
// standalone from the store and the offline log.
func runHeal(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("heal", stderr)
	path := fs.String("config", "", "config file (YAML); without it, the built-in demo config")
	view := fs.String("view", "", "heal only this view (default: every view)")
	full := fs.Bool("full", false, "recompute every day from the offline log, not only the changed ones")
	wait := fs.Duration("wait", 2*time.Minute, "how long to retry while the service answers 503 with Retry-After (starting, or its ingest not running yet)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, err := loadSettings(*path)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]any{"view": *view, "full": *full})
	out, err := healThrough(ctx, s.HTTP.Listen, body, *wait, stderr)
	if err == nil {
		_, err = stdout.Write(append(bytes.TrimSpace(out), '\n'))
		return err
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return err
	}
	// No service: heal standalone. Without the ingest, E comes from the
	// stored archive progress: events still in Kafka wait for the service.
	store, hl, err := openStandalone(ctx, "heal", s, stderr)
	if err != nil {
		return err
	}
	defer store.Close()
	names := hl.Views()
	if *view != "" {
		names = []string{*view}
	}
	var results []healer.Result
	for _, n := range names {
		res, err := hl.Heal(ctx, n, healer.Options{Full: *full})
		if err != nil {
			return fmt.Errorf("heal %s: %w", n, err)
		}
		results = append(results, res)
	}
	out, _ = json.Marshal(map[string]any{"results": results})
	_, err = stdout.Write(append(out, '\n'))
	return err
}
