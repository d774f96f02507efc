package benchmarks

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tilestream/tilestream/healer"
	"github.com/tilestream/tilestream/serving"
	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

// The peer comparison runs tilestream's server, its heals and the naive
// scan in child processes — this test binary again, told what to do by
// peerChildEnv — so that each one's peak RSS and CPU time are its own, as
// redis-server's and DuckDB's are, and the tilestream server meets its
// clients over loopback TCP like Redis does.

const peerChildEnv = "TILESTREAM_PEERBENCH_CHILD"

// childSpec tells a child what to do.
type childSpec struct {
	// Mode: "serve" (tilestream's HTTP endpoint over Store until stdin
	// closes), "heal" (a full heal of Offline into Store, then a second one
	// that only collects garbage) or "read" (System's latency cells, read
	// in process: the naive scan's Pebble or tilestream's store at Store).
	Mode    string
	System  string
	Store   string
	Offline string
	// At is the query time (serve, read) or the archive watermark E (heal),
	// epoch ms.
	At int64
	// Keys (read): the data set's keys are u0 … u<Keys−1>.
	Keys  int
	Cells []cellSpec
	Check []string // read: keys whose aggregates to return
}

// childResult is what a heal or read child prints, as one JSON object.
type childResult struct {
	Heal     healer.Result
	HealWall time.Duration
	HealCPU  time.Duration
	Cells    []cellStats
	Check    map[string]keyAggs
	// PeakRSS is the child's VmHWM, bytes. (The kernel's rusage of a
	// child counts the parent's peak too: Go starts children from a
	// vfork sharing the parent's memory, whose high-water mark exec
	// carries over.)
	PeakRSS int64
}

// TestMain turns the test binary into a peer-comparison child when
// peerChildEnv is set.
func TestMain(m *testing.M) {
	if spec, ok := os.LookupEnv(peerChildEnv); ok {
		if err := runChild(spec); err != nil {
			fmt.Fprintln(os.Stderr, "peer benchmark child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runChild(js string) error {
	var spec childSpec
	if err := json.Unmarshal([]byte(js), &spec); err != nil {
		return err
	}
	v, err := newPeerView()
	if err != nil {
		return err
	}
	switch spec.Mode {
	case "serve":
		return childServe(spec, v)
	case "heal":
		return childHeal(spec, v)
	case "read":
		return childRead(spec, v)
	}
	return fmt.Errorf("unknown mode %q", spec.Mode)
}

// childServe serves the store over HTTP on a free loopback port, prints
// the address and serves until stdin closes. The clock is fixed at spec.At,
// so every request answers the same question as the peers'.
func childServe(spec childSpec, v *tiling.View) error {
	store, err := state.Open(state.Config{Path: spec.Store}, quiet())
	if err != nil {
		return err
	}
	defer store.Close()
	cfg := serving.DefaultConfig()
	cfg.RequestTimeout = 5 * time.Minute // the slow cells must not time out
	h := serving.NewHandler(cfg, serving.Options{
		Views:   []*tiling.View{v},
		Reader:  store,
		Metrics: serving.NewMetrics(prometheus.NewRegistry()),
		Logger:  quiet(),
		Now:     func() time.Time { return time.UnixMilli(spec.At) },
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- serving.NewServer(cfg, h, quiet()).Run(ctx, ln) }()
	fmt.Println(ln.Addr().String())
	io.Copy(io.Discard, os.Stdin)
	cancel()
	return <-done
}

// childHeal runs one full heal and prints its result, wall and CPU time.
// A second heal follows at once with a grace period of 1 ms: it finds
// nothing to install and deletes the stream records the first one made
// garbage, so the store is left as a running service keeps it.
func childHeal(spec childSpec, v *tiling.View) error {
	store, err := state.Open(state.Config{Path: spec.Store}, quiet())
	if err != nil {
		return err
	}
	defer store.Close()
	off, err := state.OpenOfflineLog(spec.Offline)
	if err != nil {
		return err
	}
	cfg := healer.DefaultConfig()
	cfg.Grace = time.Millisecond
	h, err := healer.New(cfg, []healer.ViewConfig{{View: v, Lateness: healLateness, HealEvery: tiling.Day}},
		store, off, fixedArchive{spec.At}, healer.NewMetrics(prometheus.NewRegistry()), quiet())
	if err != nil {
		return err
	}
	var out childResult
	start, cpu := time.Now(), cpuTime()
	out.Heal, err = h.Heal(context.Background(), v.Name, healer.Options{Full: true})
	out.HealWall, out.HealCPU = time.Since(start), cpuTime()-cpu
	out.PeakRSS = procPeakRSS(os.Getpid())
	if err != nil {
		return err
	}
	if !out.Heal.Installed {
		return fmt.Errorf("heal installed nothing: %+v", out.Heal)
	}
	time.Sleep(10 * time.Millisecond)
	if _, err := h.Heal(context.Background(), v.Name, healer.Options{}); err != nil {
		return err
	}
	if err := store.Close(); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// childRead runs in-process reads: the client is the process itself (an
// embedded store), so its CPU time is the serving CPU.
func childRead(spec childSpec, v *tiling.View) error {
	ctx := context.Background()
	var read func(keys []string) ([]keyAggs, error)
	switch spec.System {
	case sysScan:
		db, err := openScanDB(spec.Store)
		if err != nil {
			return err
		}
		defer db.Close()
		b := boundsAt(spec.At)
		read = func(keys []string) ([]keyAggs, error) { return readScan(ctx, db, b, keys) }
	case sysTSEmbedded:
		store, err := state.Open(state.Config{Path: spec.Store}, quiet())
		if err != nil {
			return err
		}
		defer store.Close()
		read = func(keys []string) ([]keyAggs, error) { return readEmbedded(ctx, store, v, spec.At, keys) }
	default:
		return fmt.Errorf("read: unknown system %q", spec.System)
	}
	out := childResult{Check: map[string]keyAggs{}}
	for _, k := range spec.Check {
		a, err := read([]string{k})
		if err != nil {
			return err
		}
		out.Check[k] = a[0]
	}
	var err error
	out.Cells, err = runCells(spec.Cells, peerLevel{keys: spec.Keys}.keyNames(),
		func(keys []string) error { _, err := read(keys); return err }, cpuTime)
	if err != nil {
		return err
	}
	out.PeakRSS = procPeakRSS(os.Getpid())
	return json.NewEncoder(os.Stdout).Encode(out)
}

// readEmbedded reads keys from tilestream's store in process, as the HTTP
// handler does (Store.ReadKey, then View.EvaluateBatch), without HTTP or
// JSON.
func readEmbedded(ctx context.Context, store *state.Store, v *tiling.View, at int64, keys []string) ([]keyAggs, error) {
	out := make([]keyAggs, len(keys))
	for i, k := range keys {
		kd, err := store.ReadKey(ctx, v, k, at)
		if err != nil {
			return nil, err
		}
		vals := v.EvaluateBatch(at, kd.Batch, kd.Records)
		// Features are per window: sum, count, min, max, mean.
		for j := range peerWindows {
			out[i][j] = agg{Sum: number(vals[5*j]), Count: int64(number(vals[5*j+1])),
				Min: number(vals[5*j+2]), Max: number(vals[5*j+3])}
		}
	}
	return out, nil
}

// number is a feature value as a float64 (0 for null).
func number(x any) float64 {
	switch n := x.(type) {
	case float64:
		return n
	case uint64:
		return float64(n)
	case int64:
		return float64(n)
	case int:
		return float64(n)
	}
	return 0
}

// procStats is what a child used.
type procStats struct {
	PeakRSS int64 // bytes, VmHWM read while it ran
	CPU     time.Duration
}

// exitCPU is a finished child's user + system CPU time.
func exitCPU(ps *os.ProcessState) time.Duration {
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func childCmd(tb testing.TB, spec childSpec) (*exec.Cmd, *bytes.Buffer) {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	js, err := json.Marshal(spec)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), peerChildEnv+"="+string(js))
	stderr := &bytes.Buffer{}
	cmd.Stderr = stderr
	return cmd, stderr
}

// runChildOnce runs a heal or read child to its end.
func runChildOnce(tb testing.TB, spec childSpec) (childResult, procStats) {
	tb.Helper()
	cmd, stderr := childCmd(tb, spec)
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("%s child: %v\n%s", spec.Mode, err, stderr)
	}
	var res childResult
	if err := json.Unmarshal(out, &res); err != nil {
		tb.Fatalf("%s child: %v: %q", spec.Mode, err, out)
	}
	return res, procStats{PeakRSS: res.PeakRSS, CPU: exitCPU(cmd.ProcessState)}
}

// serveChild is a running tilestream server.
type serveChild struct {
	cmd    *exec.Cmd
	stdin  io.Closer
	stderr *bytes.Buffer
	url    string
	stats  *procStats
}

func startServeChild(tb testing.TB, store string, at int64) *serveChild {
	tb.Helper()
	cmd, stderr := childCmd(tb, childSpec{Mode: "serve", Store: store, At: at})
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	c := &serveChild{cmd: cmd, stdin: stdin, stderr: stderr}
	tb.Cleanup(func() { c.stop(tb) })
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		c.stop(tb)
		tb.Fatalf("serve child: %v\n%s", err, stderr)
	}
	c.url = "http://" + strings.TrimSpace(addr)
	return c
}

// cpu reads the server's CPU time so far from /proc.
func (c *serveChild) cpu() time.Duration { return procCPU(c.cmd.Process.Pid) }

// stop closes the child's stdin (it shuts down gracefully) and waits; a
// child still running after 30 s is killed by its PID.
func (c *serveChild) stop(tb testing.TB) procStats {
	if c.stats != nil {
		return *c.stats
	}
	peak := procPeakRSS(c.cmd.Process.Pid)
	c.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		err = <-done
	}
	st := procStats{PeakRSS: peak, CPU: exitCPU(c.cmd.ProcessState)}
	c.stats = &st
	if err != nil {
		tb.Errorf("serve child: %v\n%s", err, c.stderr)
	}
	return st
}

// tsClient reads features from a tilestream server, as a client would:
// GET for one key, POST /v1/features for several, JSON decoded.
type tsClient struct {
	url string
	hc  *http.Client
}

func newTSClient(url string) *tsClient {
	tr := &http.Transport{MaxIdleConns: 64, MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute}
	return &tsClient{url: url, hc: &http.Client{Transport: tr}}
}

type tsResult struct {
	Features map[string]*float64 `json:"features"`
}

func (c *tsClient) read(ctx context.Context, keys []string) ([]keyAggs, error) {
	var req *http.Request
	var err error
	if len(keys) == 1 {
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, c.url+"/v1/features/txn/"+keys[0], nil)
	} else {
		var body struct {
			Requests []struct {
				View string `json:"view"`
				Key  string `json:"key"`
			} `json:"requests"`
		}
		for _, k := range keys {
			body.Requests = append(body.Requests, struct {
				View string `json:"view"`
				Key  string `json:"key"`
			}{"txn", k})
		}
		js, _ := json.Marshal(body)
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, c.url+"/v1/features", bytes.NewReader(js))
	}
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("tilestream: status %d: %s", resp.StatusCode, data)
	}
	var results []tsResult
	if len(keys) == 1 {
		var r tsResult
		err = json.Unmarshal(data, &r)
		results = []tsResult{r}
	} else {
		var r struct {
			Results []tsResult `json:"results"`
		}
		err = json.Unmarshal(data, &r)
		results = r.Results
	}
	if err != nil {
		return nil, err
	}
	if len(results) != len(keys) {
		return nil, fmt.Errorf("tilestream: %d results for %d keys", len(results), len(keys))
	}
	out := make([]keyAggs, len(keys))
	for i, r := range results {
		for j, w := range peerWindows {
			get := func(fn string) float64 {
				if p := r.Features["amount_"+fn+"_"+w.name]; p != nil {
					return *p
				}
				return 0
			}
			out[i][j] = agg{Count: int64(get("count")), Sum: get("sum"), Min: get("min"), Max: get("max")}
		}
	}
	return out, nil
}

// procCPU is a process's user + system CPU time from /proc/<pid>/stat
// (clock ticks of 10 ms); 0 when unreadable.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) start at
	// field 3, state; utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0
	}
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// procPeakRSS is a running process's peak resident set (VmHWM), bytes.
func procPeakRSS(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}
