package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// TestReviewStartupHandler pins the start-up handler's answers, and that
// once ready every request (/healthz included) goes to the service's
// handler; requests race with doing and ready (run it with -race).
func TestReviewStartupHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	st := newStartup(reg, healStartWait)
	do := func(method, path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		st.ServeHTTP(w, httptest.NewRequest(method, path, nil))
		return w
	}
	if w := do("GET", "/healthz"); w.Code != 200 || w.Body.String() != `{"status":"ok"}`+"\n" {
		t.Errorf("/healthz while starting: %d %q", w.Code, w.Body)
	}
	if w := do("HEAD", "/healthz"); w.Code != 200 {
		t.Errorf("HEAD /healthz while starting: %d", w.Code)
	}
	if w := do("GET", "/metrics"); w.Code != 200 || !strings.Contains(w.Body.String(), "go_goroutines") {
		t.Errorf("/metrics while starting: %d", w.Code)
	}
	st.doing("opening the online store")
	for _, r := range [][2]string{{"GET", "/readyz"}, {"GET", "/v1/features/v/k"}, {"POST", "/v1/features"}, {"GET", "/nope"},
		{"POST", "/healthz"}, {"DELETE", "/metrics"}} {
		w := do(r[0], r[1])
		if w.Code != 503 || w.Header().Get("Retry-After") != "1" || !strings.Contains(w.Body.String(), "starting (opening the online store)") {
			t.Errorf("%s %s while starting: %d %q (Retry-After %q)", r[0], r[1], w.Code, w.Body, w.Header().Get("Retry-After"))
		}
	}
	// POST /v1/heal waits for the start: a request that gives up first gets
	// the start-up 503, one still waiting when the service is up is served.
	{
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		w := httptest.NewRecorder()
		st.ServeHTTP(w, httptest.NewRequest("POST", "/v1/heal", nil).WithContext(ctx))
		cancel()
		if w.Code != 503 || !strings.Contains(w.Body.String(), "starting (opening the online store)") {
			t.Errorf("POST /v1/heal given up while starting: %d %q", w.Code, w.Body)
		}
	}
	waiting := make(chan int, 1)
	go func() { waiting <- do("POST", "/v1/heal").Code }()

	// Requests while the start moves on and the service becomes ready.
	var served sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		served.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, p := range []string{"/healthz", "/readyz", "/v1/views"} {
					w := do("GET", p)
					if w.Code != 200 && w.Code != 503 && w.Code != 418 {
						t.Errorf("GET %s: %d", p, w.Code)
					}
				}
			}
		})
	}
	for i := range 200 {
		st.doing("step " + strings.Repeat("x", i%7))
	}
	select {
	case code := <-waiting:
		t.Fatalf("POST /v1/heal answered %d before the service was up", code)
	case <-time.After(50 * time.Millisecond):
	}
	st.ready(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(418) }))
	time.Sleep(20 * time.Millisecond)
	close(stop)
	served.Wait()
	if code := <-waiting; code != 418 {
		t.Errorf("POST /v1/heal waiting for the start: %d once ready, want the service's handler", code)
	}
	for _, p := range []string{"/healthz", "/metrics", "/readyz", "/v1/heal"} {
		if w := do("GET", p); w.Code != 418 {
			t.Errorf("GET %s once ready: %d, want the service's handler", p, w.Code)
		}
	}
}

// serverGoroutines counts goroutines in the serving package's Run.
func serverGoroutines() int {
	buf := make([]byte, 1<<22)
	n := runtime.Stack(buf, true)
	return bytes.Count(buf[:n], []byte("serving.(*Server).Run("))
}

// TestReviewFailedStartStopsHTTP: a start that fails after the listener
// opened (the store cannot open: its path is a file) returns the error,
// stops the HTTP server before returning (no serving goroutine left, the
// port free again) and does not hang.
func TestReviewFailedStartStopsHTTP(t *testing.T) {
	e := newEnvWith(t, envOptions{pebble: true})
	bad := filepath.Join(e.dir, "not-a-dir")
	if err := os.WriteFile(bad, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(e.dir, "bad.yaml")
	if err := os.WriteFile(path, []byte(strings.Replace(e.configFor(e.addr, filepath.Join(bad, "online")), "level: warn", "level: info", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	before := serverGoroutines()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var logs syncBuffer
	err := run(ctx, []string{"run", "--config", path}, os.Getenv, &logs, &logs)
	if err == nil || ctx.Err() != nil {
		t.Fatalf("run with a store path under a file: %v (ctx %v)\n%s", err, ctx.Err(), tail(logs.String(), 20))
	}
	if !strings.Contains(logs.String(), "serving HTTP") {
		t.Fatalf("the listener never opened before the failure:\n%s", tail(logs.String(), 20))
	}
	if n := serverGoroutines(); n > before {
		t.Errorf("%d serving goroutines left after a failed start (%d before)", n, before)
	}
	ln, err := net.Listen("tcp", e.addr)
	if err != nil {
		t.Fatalf("the HTTP port is still held after a failed start: %v", err)
	}
	ln.Close()
}

// TestReviewHealCLIWhileStarting: `tilestream heal` against a service that
// is starting (its DynamoDB endpoint never answers) gets the start-up 503
// and reports it at once: no standalone heal behind the service's back (it
// would hang opening the same endpoint). The service then stops cleanly on
// cancel (SIGTERM in process) and frees its port.
func TestReviewHealCLIWhileStarting(t *testing.T) {
	hole := newBlackHole(t)
	e := newEnvWith(t, envOptions{dynamo: "http://" + hole.ln.Addr().String()})
	before := serverGoroutines()
	p := startInProcess(t, e.cfgPath)
	hole.waitOpening(t, e, p.alive)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	start := time.Now()
	// The service holds a heal asked while it starts for healStartWait, then
	// answers the start-up 503; --wait 0s gives up at that.
	err := run(ctx, []string{"heal", "--config", e.cfgPath, "--wait", "0s"}, os.Getenv, &out, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "starting (opening the online store)") {
		t.Errorf("heal while the service starts: %v, want the start-up 503", err)
	}
	if d := time.Since(start); d < healStartWait || d > healStartWait+8*time.Second {
		t.Errorf("heal while the service starts took %v, want the service's wait (%v) and a little", d, healStartWait)
	}
	if err := p.stop(t); err != nil {
		t.Fatalf("stop while the store opens: %v, want a clean exit", err)
	}
	if n := serverGoroutines(); n > before {
		t.Errorf("%d serving goroutines left after the stop (%d before)", n, before)
	}
	ln, err := net.Listen("tcp", e.addr)
	if err != nil {
		t.Fatalf("the HTTP port is still held after the stop: %v", err)
	}
	ln.Close()
}
