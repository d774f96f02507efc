package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tilestream/tilestream/serving"
)

// blackHole is a TCP server that takes connections and never answers: a
// DynamoDB endpoint that hangs (a fault dynalite cannot show).
type blackHole struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newBlackHole(t *testing.T) *blackHole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackHole{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			go io.Copy(io.Discard, c) //nolint:errcheck // until closed
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, c := range b.conns {
			c.Close()
		}
	})
	return b
}

// waitOpening waits (60 s at most) until the service of e answers /healthz
// and has connected to the black hole: its store's open is under way, and
// stays so. alive says whether the service still runs.
func (b *blackHole) waitOpening(t *testing.T, e *env, alive func() error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := alive(); err != nil {
			t.Fatalf("the service exited while opening the store: %v", err)
		}
		if code, _, _, err := e.call("GET", "/healthz", "", nil); err == nil && code == 200 && b.accepted() > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("within 60s of the start: no 200 from /healthz, or no connection to the DynamoDB endpoint (%d)", b.accepted())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *blackHole) accepted() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

// TestHTTPAnswersWhileTheStoreOpens starts the service on a DynamoDB
// endpoint that never answers: the HTTP listener is up while the store
// opens (as while a changed view is translated), /healthz answers 200,
// /metrics the process's metrics, /readyz and the feature routes 503 with
// Retry-After and what the start is doing; SIGTERM stops the start at once
// and the process exits cleanly.
func TestHTTPAnswersWhileTheStoreOpens(t *testing.T) {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	hole := newBlackHole(t)
	e := newEnvWith(t, envOptions{dynamo: "http://" + hole.ln.Addr().String()})
	c := e.startChild(t, bin, "svc")
	hole.waitOpening(t, e, c.alive)
	for _, path := range []string{"/readyz", "/v1/features/" + testView + "/u1", "/v1/views"} {
		code, hdr, body, err := e.call("GET", path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if code != 503 || hdr.Get("Retry-After") != "1" || !strings.Contains(string(body), "starting (opening the online store)") {
			t.Errorf("GET %s while the store opens: %d %q (Retry-After %q), want 503 naming the store's opening", path, code, body, hdr.Get("Retry-After"))
		}
	}
	if code, _, body, err := e.call("GET", "/metrics", "", nil); err != nil || code != 200 || !strings.Contains(string(body), "go_goroutines") {
		t.Errorf("GET /metrics while the store opens: %d %v", code, err)
	}
	if code, _, body, _ := e.call("GET", "/healthz", "", nil); code != 200 || string(body) != `{"status":"ok"}`+"\n" {
		t.Errorf("GET /healthz: %d %q", code, body)
	}
	start := time.Now()
	if err := c.term(t); err != nil {
		t.Fatalf("SIGTERM while the store opens: exit %v, want a clean exit", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("the service took %v to stop after SIGTERM while opening the store", d)
	}
}

// TestHealThroughWaitsForTheStart: healThrough asks again while the service
// answers 503 with Retry-After (saying so once per message), returns the
// answer once it heals, and gives up with the service's message when --wait
// has passed or the 503 carries no Retry-After; other statuses at once.
func TestHealThroughWaitsForTheStart(t *testing.T) {
	// serve answers POST /v1/heal with answer(n) for the n-th call.
	serve := func(answer func(n int64, w http.ResponseWriter)) (string, *atomic.Int64) {
		var calls atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v1/heal" || r.Method != "POST" {
				w.WriteHeader(404)
				return
			}
			answer(calls.Add(1), w)
		}))
		t.Cleanup(srv.Close)
		return strings.TrimPrefix(srv.URL, "http://"), &calls
	}
	starting := func(w http.ResponseWriter) {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(503)
		io.WriteString(w, `{"error":"not ready: tilestream is starting (opening the online store); retry later"}`)
	}
	addr, calls := serve(func(n int64, w http.ResponseWriter) {
		if n <= 3 {
			starting(w)
			return
		}
		io.WriteString(w, `{"results":[]}`)
	})
	var errOut bytes.Buffer
	out, err := healThrough(context.Background(), addr, []byte(`{}`), time.Minute, &errOut)
	if err != nil || string(out) != `{"results":[]}` || calls.Load() != 4 {
		t.Fatalf("healThrough: %q %v after %d calls, want the answer after 4", out, err, calls.Load())
	}
	if got := strings.Count(errOut.String(), "waiting for the service"); got != 1 {
		t.Errorf("said %q, want one waiting line", errOut.String())
	}
	// --wait passed: the 503's message.
	addr, _ = serve(func(_ int64, w http.ResponseWriter) { starting(w) })
	start := time.Now()
	_, err = healThrough(context.Background(), addr, []byte(`{}`), 500*time.Millisecond, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "opening the online store") || time.Since(start) > 5*time.Second {
		t.Errorf("healThrough past --wait: %v after %v", err, time.Since(start))
	}
	// No Retry-After, or another status: no retry.
	for _, status := range []int{503, 400} {
		addr, calls := serve(func(_ int64, w http.ResponseWriter) {
			w.WriteHeader(status)
			io.WriteString(w, `{"error":"no"}`)
		})
		_, err = healThrough(context.Background(), addr, []byte(`{}`), time.Minute, io.Discard)
		if err == nil || calls.Load() != 1 {
			t.Errorf("status %d: %v after %d calls, want an error after one", status, err, calls.Load())
		}
	}
}

// startupServer runs the service's HTTP server with the start-up handler in
// front (as serve wires them) on a free port, with request timeout rt, and
// returns the handler and the address.
func startupServer(t *testing.T, rt time.Duration, healWait func(*startup)) (*startup, string) {
	t.Helper()
	scfg := serving.DefaultConfig()
	scfg.RequestTimeout = rt
	st, srv := newStartupServer(scfg, prometheus.NewRegistry(), nil)
	if healWait != nil {
		healWait(st)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return st, ln.Addr().String()
}

// TestHealWhileStartingAnswersBeforeTheWriteDeadline: POST /v1/heal while
// the service starts waits for the start only as long as the server's write
// deadline (2 × request_timeout) lets it answer: the client gets the
// documented 503 with Retry-After, never a connection closed without an
// answer (with the default request_timeout of 5 s the wait of 10 s equalled
// the write deadline: curl said "Empty reply from server", tilestream heal
// "EOF" and exited 1). A start that ends during the wait is served.
func TestHealWhileStartingAnswersBeforeTheWriteDeadline(t *testing.T) {
	for _, c := range []struct{ wt, want time.Duration }{
		{10 * time.Second, 9 * time.Second}, {60 * time.Second, healStartWait}, {2 * time.Second, time.Second}, {600 * time.Millisecond, 300 * time.Millisecond},
	} {
		if got := startHealWait(c.wt); got != c.want {
			t.Errorf("startHealWait(%v) = %v, want %v", c.wt, got, c.want)
		}
	}
	st, addr := startupServer(t, 300*time.Millisecond, nil)
	st.doing("checking the views' layouts")
	start := time.Now()
	resp, err := http.Post("http://"+addr+"/v1/heal", "application/json", strings.NewReader(`{"view":"txn"}`))
	if err != nil {
		t.Fatalf("POST /v1/heal while starting: %v after %v, want the start-up 503", err, time.Since(start))
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || !strings.Contains(string(body), "checking the views' layouts") {
		t.Errorf("POST /v1/heal while starting: %d %q (Retry-After %q), want the start-up 503", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	// tilestream heal --wait 0s reports that 503, not EOF.
	_, err = healThrough(context.Background(), addr, []byte(`{}`), 0, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "checking the views' layouts") {
		t.Errorf("healThrough while starting: %v, want the start-up 503", err)
	}
	// The start ends while a heal waits (one waiting longer than the read
	// deadline, 300ms): the service's handler answers it.
	go func() {
		time.Sleep(200 * time.Millisecond)
		st.ready(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			if err != nil || string(b) != `{"view":"txn"}` {
				w.WriteHeader(400)
				return
			}
			io.WriteString(w, `{"results":[]}`)
		}))
	}()
	out, err := healThrough(context.Background(), addr, []byte(`{"view":"txn"}`), time.Minute, io.Discard)
	if err != nil || string(out) != `{"results":[]}` {
		t.Errorf("healThrough across the end of the start: %q %v, want the service's answer", out, err)
	}
}

// TestHealThroughRetriesAClosedConnectionWhileStarting: a service whose
// start-up wait outlasts its write deadline (as before the fix above) closes
// the connection without an answer; tilestream heal asks again, as for a 503,
// while the service's /readyz says it is starting, and gets the answer once
// it is up. A connection closed by a service that is up is an error at once.
func TestHealThroughRetriesAClosedConnectionWhileStarting(t *testing.T) {
	// Request timeout 100ms: write deadline 200ms, waited past (500ms).
	st, addr := startupServer(t, 100*time.Millisecond, func(st *startup) { st.healWait = 500 * time.Millisecond })
	var calls atomic.Int64
	go func() {
		// Between the first attempt's end (500ms) and the second (1.5s).
		time.Sleep(time.Second)
		st.ready(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			io.WriteString(w, `{"results":[]}`)
		}))
	}()
	var errOut bytes.Buffer
	out, err := healThrough(context.Background(), addr, []byte(`{}`), time.Minute, &errOut)
	if err != nil || string(out) != `{"results":[]}` || calls.Load() != 1 {
		t.Fatalf("healThrough while the service closes connections: %q %v (%d heals), want the answer once up", out, err, calls.Load())
	}
	if !strings.Contains(errOut.String(), "closed the connection without an answer while it starts") {
		t.Errorf("said %q, want the closed connection named", errOut.String())
	}

	// Up (/readyz 200) and closing the connection: no retry.
	var posts atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			return
		}
		posts.Add(1)
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close()
		}
	}))
	defer srv.Close()
	_, err = healThrough(context.Background(), strings.TrimPrefix(srv.URL, "http://"), []byte(`{}`), 3*time.Second, io.Discard)
	if err == nil || !noAnswer(err) || posts.Load() != 1 {
		t.Errorf("healThrough to a service that is up and closes the connection: %v after %d posts, want the error after one", err, posts.Load())
	}
}
