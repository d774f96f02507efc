// Package dynalite runs dynalite, a DynamoDB API server from the npm
// registry, for tests: `make deps` installs it from the repository's
// package-lock.json into node_modules, and Start runs it on a free port of
// 127.0.0.1 with tables created and deleted at once.
//
// A test that needs DynamoDB and cannot start dynalite skips, except under
// CI=true, where it fails: CI must never pass by skipping the DynamoDB tests.
//
// The server is a child process stopped by its PID (SIGKILL on test
// cleanup, and when the test process dies first: Pdeathsig). Stop and
// Restart let a test take DynamoDB away and bring it back on the same port;
// with Options.Persist the data lives in a LevelDB directory and survives.
package dynalite

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options change how a server runs.
type Options struct {
	// Persist keeps the tables in a LevelDB directory (a temporary one)
	// instead of memory, so they survive Stop and Restart.
	Persist bool
}

// Server is a running (or stopped) dynalite.
type Server struct {
	// Endpoint is the server's base URL, http://127.0.0.1:<port>.
	Endpoint string

	port int
	dir  string // LevelDB directory; "" in memory
	cli  string // path of dynalite's cli.js

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	logs *lockedWriter
}

// ErrNotInstalled is returned when node or dynalite cannot be found.
var ErrNotInstalled = errors.New("dynalite: not installed (run `make deps`, which runs npm ci at the repository root)")

// Start starts a server for one test and stops it when the test ends. When it
// cannot, the test is skipped, or failed under CI=true.
func Start(tb testing.TB, o Options) *Server {
	tb.Helper()
	s, err := New(o)
	if err != nil {
		unavailable(tb, err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// unavailable skips the test, or fails it under CI=true.
func unavailable(tb testing.TB, err error) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("DynamoDB tests need dynalite and CI=true forbids skipping them: %v", err)
	}
	tb.Skipf("skipping a DynamoDB test: %v", err)
}

var shared struct {
	sync.Mutex
	s   *Server
	err error
}

// Shared returns one server for every test of the process (each test should
// use its own table), started on first use. A TestMain should call
// CloseShared after m.Run; Pdeathsig stops the server if it does not.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.s == nil && shared.err == nil {
		shared.s, shared.err = New(Options{})
	}
	if shared.err != nil {
		unavailable(tb, shared.err)
	}
	return shared.s
}

// CloseShared stops the shared server, if one was started.
func CloseShared() {
	shared.Lock()
	defer shared.Unlock()
	if shared.s != nil {
		shared.s.Close()
		shared.s = nil
	}
}

// New starts a server; Close stops it.
func New(o Options) (*Server, error) {
	cli, err := find()
	if err != nil {
		return nil, err
	}
	s := &Server{cli: cli}
	if o.Persist {
		if s.dir, err = os.MkdirTemp("", "dynalite-"); err != nil {
			return nil, err
		}
	}
	// A free port may be taken between the probe and dynalite's listen:
	// try a few.
	for range 5 {
		if s.port, err = freePort(); err != nil {
			return nil, err
		}
		s.Endpoint = "http://127.0.0.1:" + strconv.Itoa(s.port)
		if err = s.start(); err == nil {
			return s, nil
		}
	}
	s.Close()
	return nil, err
}

// find locates node_modules/dynalite/cli.js in the working directory or a
// parent (tests run in their package's directory), or at $DYNALITE_CLI.
func find() (string, error) {
	if _, err := exec.LookPath("node"); err != nil {
		return "", fmt.Errorf("%w: node: %v", ErrNotInstalled, err)
	}
	if p := os.Getenv("DYNALITE_CLI"); p != "" {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "node_modules", "dynalite", "cli.js")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", ErrNotInstalled
		}
		dir = parent
	}
}

// guardJS keeps dynalite up when a client goes away in the middle of a
// request: dynalite 4.0.0 rethrows the request's ECONNRESET ("aborted") and
// dies, and the crash tests SIGKILL clients at any moment. DynamoDB does not
// care; neither should the server standing in for it.
const guardJS = `process.on('uncaughtException', function (err) {
  if (err && (err.code === 'ECONNRESET' || err.message === 'aborted')) return
  console.error(err)
  process.exit(1)
})
`

// writeGuard writes guardJS to a file of the temporary directory named by
// its content, shared by every test process (written once, atomically).
func writeGuard() (string, error) {
	sum := sha256.Sum256([]byte(guardJS))
	path := filepath.Join(os.TempDir(), fmt.Sprintf("dynalite-guard-%x.js", sum[:6]))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	f, err := os.CreateTemp(os.TempDir(), "dynalite-guard-*.tmp")
	if err != nil {
		return "", err
	}
	if _, err := f.WriteString(guardJS); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return path, os.Rename(f.Name(), path)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// start runs dynalite and waits until it answers HTTP. s.mu is not held.
func (s *Server) start() error {
	guard, err := writeGuard()
	if err != nil {
		return err
	}
	args := []string{"--require", guard, s.cli, "--host", "127.0.0.1", "--port", strconv.Itoa(s.port),
		"--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0"}
	if s.dir != "" {
		args = append(args, "--path", s.dir)
	}
	cmd := exec.Command("node", args...)
	logs := &lockedWriter{}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("dynalite: start: %w", err)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		s.mu.Lock()
		stopped := s.cmd != cmd // Stop cleared it first
		s.mu.Unlock()
		if !stopped {
			// Tests then fail on refused connections; say why here.
			fmt.Fprintf(os.Stderr, "dynalite on %s exited by itself (%v); its output:\n%s\n", s.Endpoint, err, logs)
		}
		close(done)
	}()
	s.mu.Lock()
	s.cmd, s.done, s.logs = cmd, done, logs
	s.mu.Unlock()

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("dynalite exited at start: %s", logs)
		default:
		}
		// Any HTTP answer (dynalite refuses the unsigned request) means it
		// serves.
		resp, err := client.Post(s.Endpoint, "application/x-amz-json-1.0", bytes.NewReader([]byte("{}")))
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("dynalite did not answer on %s within 30s: %v", s.Endpoint, err)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

// PID returns the process id of the running server, 0 when stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	select {
	case <-s.done:
		return 0
	default:
		return s.cmd.Process.Pid
	}
}

// Stop kills the server (SIGKILL, by PID) and waits for it to exit. Its port
// refuses connections until Restart.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL) //nolint:errcheck // it may have exited already
	<-done
}

// Restart starts a stopped server again on the same port (and, with
// Options.Persist, the same data).
func (s *Server) Restart() error {
	s.Stop()
	var err error
	// The port was just released; another process may still hold it for
	// a moment.
	for range 50 {
		if err = s.start(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond) // retry interval
	}
	return err
}

// Logs returns what the server printed.
func (s *Server) Logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logs == nil {
		return ""
	}
	return s.logs.String()
}

// Close stops the server and removes its data directory.
func (s *Server) Close() {
	s.Stop()
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// lockedWriter collects the server's output; both of its streams write to it.
type lockedWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
