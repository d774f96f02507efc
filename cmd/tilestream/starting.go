package main

import (
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tilestream/tilestream/serving"
)

// startup answers HTTP while the service starts: the listener opens first,
// so that a liveness probe finds the process alive while the store opens
// and changed views are translated (minutes for a large DynamoDB table).
// Until serve hands it the service's handler (ready), GET /healthz answers
// 200, GET /metrics the metrics registered so far, POST /v1/heal waits for
// the start up to healWait (a heal asked right after a start is run, as the
// service's own handler waits for its ingest), and everything else answers
// 503 naming what the start is doing, with Retry-After: 1 — /readyz
// included, and /healthz or /metrics with another method than GET or HEAD
// (the service's handler answers those 405).
type startup struct {
	step    atomic.Pointer[string]
	h       atomic.Pointer[http.Handler]
	up      chan struct{} // closed by ready
	metrics http.Handler
	// healWait bounds how long POST /v1/heal waits for the start; it ends
	// before the server's write deadline (startHealWait), so the client
	// gets the 503 instead of a connection closed without an answer.
	healWait time.Duration
}

// newStartup returns the start-up handler; a POST /v1/heal waits for the
// start up to healWait (startHealWait).
func newStartup(reg *prometheus.Registry, healWait time.Duration) *startup {
	st := &startup{metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), up: make(chan struct{}), healWait: healWait}
	st.doing("starting")
	return st
}

// newStartupServer returns the HTTP server of scfg with the start-up
// handler in front: its POST /v1/heal answers within the server's write
// deadline.
func newStartupServer(scfg serving.Config, reg *prometheus.Registry, log *slog.Logger) (*startup, *serving.Server) {
	st := newStartup(reg, startHealWait(scfg.WriteTimeout()))
	return st, serving.NewServer(scfg, st, log)
}

// startHealWait is how long POST /v1/heal waits for the start with the
// server's write deadline writeTimeout: healStartWait, but at most
// writeTimeout less a second (half of it when it is under two seconds), so
// the 503 is written in time. With the default request timeout (5s, write
// deadline 10s) that is 9s.
func startHealWait(writeTimeout time.Duration) time.Duration {
	return min(healStartWait, writeTimeout-min(time.Second, writeTimeout/2))
}

// doing records what the start is doing, for the 503s' message.
func (st *startup) doing(step string) { st.step.Store(&step) }

// ready hands every request from now on to h.
func (st *startup) ready(h http.Handler) {
	st.h.Store(&h)
	close(st.up)
}

func (st *startup) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := st.h.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	read := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch {
	case r.URL.Path == "/healthz" && read:
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}` + "\n")) //nolint:errcheck // the client is gone
		return
	case r.URL.Path == "/metrics" && read:
		st.metrics.ServeHTTP(w, r)
		return
	case r.URL.Path == "/v1/heal":
		t := time.NewTimer(st.healWait)
		defer t.Stop()
		select {
		case <-st.up:
			(*st.h.Load()).ServeHTTP(w, r)
			return
		case <-t.C:
		case <-r.Context().Done():
		}
	}
	serving.WriteUnavailable(w, "not ready: tilestream is starting ("+*st.step.Load()+"); retry later")
}
