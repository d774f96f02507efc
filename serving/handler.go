package serving

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

// Reader is what serving needs from the online store.
type Reader interface {
	// ReadKey returns the stored data a read of (view, key) at time t needs:
	// the batch side and the stream records from the batch watermark to
	// the end of the current tile.
	ReadKey(ctx context.Context, v *tiling.View, key string, t int64) (state.KeyData, error)
}

// Watermarks reports the stream event-time progress of a view.
type Watermarks interface {
	// StreamWatermark returns the view's stream watermark, epoch ms, or
	// ok=false when it has none yet (served as null).
	StreamWatermark(view string) (ms int64, ok bool)
}

// Options are the parts a handler is wired to.
type Options struct {
	// Views are the served feature views; names must be distinct.
	Views []*tiling.View
	// Reader reads the online store. Required.
	Reader Reader
	// Watermarks gives stream watermarks; nil serves them as null.
	Watermarks Watermarks
	// Ready gates the feature routes and /readyz: they answer 503 until it
	// returns true. It is called once per request, so it must be cheap (an
	// atomic load). nil means always ready.
	Ready func() bool
	// Gatherer is exposed on GET /metrics; nil leaves /metrics unrouted (404).
	Gatherer prometheus.Gatherer
	// Metrics are updated by the handler; nil means NewMetrics(nil), counted
	// but not exported.
	Metrics *Metrics
	// Logger receives store errors and recovered panics; nil discards.
	Logger *slog.Logger
	// Now is the clock of served_at and of window ends; nil means time.Now.
	Now func() time.Time
	// Heal serves POST /v1/heal; nil answers 501.
	Heal HealFunc
	// Rebuilding, when set, reports views whose features are being rebuilt
	// from the offline log after a layout change: their values are served
	// as null and named in metadata.missing_features.
	Rebuilding func(view string) bool
	// Missing, when set, names the features of a view that a change of the
	// view added and a heal has not computed yet: they are served as null
	// and named in metadata.missing_features; the others are served.
	Missing func(view string) []string
	// ReadParallelism bounds the keys of one POST read at once. 0 or 1
	// reads them one after another (a local store: a read is short);
	// a remote store (DynamoDB) gains from reading several at once.
	ReadParallelism int
}

// handler is the http.Handler built by NewHandler.
type handler struct {
	cfg    Config
	mux    *http.ServeMux
	views  map[string]*viewInfo
	known  string // "a, b, c": the view names for error messages
	list   []byte // the body of GET /v1/views, built once
	reader Reader
	wm     Watermarks
	ready  func() bool
	m      *Metrics
	log    *slog.Logger
	now    func() time.Time
	heal   HealFunc
	order  []string // view names in config order
	// rebuilding: see Options.Rebuilding.
	rebuilding func(view string) bool
	// missing: see Options.Missing.
	missing  func(view string) []string
	parallel int // Options.ReadParallelism, at least 1
	// bufs holds *[]byte response buffers (encode.go).
	bufs sync.Pool
}

// viewInfo is a served view with what its answers reuse.
type viewInfo struct {
	v *tiling.View
	// names are the member prefixes `"name":` of the features, in
	// View.Features order.
	names [][]byte
}

// Route names: the metric label of each route is its mux pattern's path.
const (
	routeFeaturesGet = "/v1/features/{view}/{key...}"
	routeNoKey       = "/v1/features/{view}"
	routeFeaturesPut = "/v1/features"
	routeViews       = "/v1/views"
	routeHeal        = "/v1/heal"
	routeMetrics     = "/metrics"
	routeHealth      = "/healthz"
	routeReady       = "/readyz"
	routeOther       = "other"
)

// NewHandler returns the endpoint's routes on a private mux. It panics on a
// programming error in o: a nil Reader, a nil view or two views of one name.
// Zero fields of cfg take their defaults; call cfg.Validate first, as a
// negative limit here panics too.
func NewHandler(cfg Config, o Options) http.Handler {
	if err := cfg.Validate(); err != nil {
		panic(fmt.Sprintf("serving: NewHandler: %v", err))
	}
	if o.Reader == nil {
		panic("serving: NewHandler: Options.Reader is nil")
	}
	h := &handler{
		cfg:        cfg.withDefaults(),
		mux:        http.NewServeMux(),
		views:      make(map[string]*viewInfo, len(o.Views)),
		reader:     o.Reader,
		wm:         o.Watermarks,
		ready:      o.Ready,
		m:          o.Metrics,
		log:        o.Logger,
		now:        o.Now,
		heal:       o.Heal,
		rebuilding: o.Rebuilding,
		missing:    o.Missing,
		parallel:   max(1, o.ReadParallelism),
	}
	if h.ready == nil {
		h.ready = func() bool { return true }
	}
	if h.m == nil {
		h.m = NewMetrics(nil)
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	for _, v := range o.Views {
		h.order = append(h.order, v.Name)
	}
	names := make([]string, 0, len(o.Views))
	for i, v := range o.Views {
		if v == nil {
			panic(fmt.Sprintf("serving: NewHandler: Options.Views[%d] is nil", i))
		}
		if _, dup := h.views[v.Name]; dup {
			panic(fmt.Sprintf("serving: NewHandler: two views named %q", v.Name))
		}
		fnames := make([]string, len(v.Features))
		for j, f := range v.Features {
			fnames[j] = f.Name
		}
		h.views[v.Name] = &viewInfo{v: v, names: memberNames(fnames)}
		names = append(names, v.Name)
	}
	slices.Sort(names)
	h.known = strings.Join(names, ", ")
	h.list = viewList(o.Views)

	h.route(routeFeaturesGet, h.getFeatures)
	h.route(routeNoKey, h.noKey)
	h.route(routeFeaturesPut, h.postFeatures)
	h.route(routeViews, h.getViews)
	h.route(routeHeal, h.postHeal)
	if o.Gatherer != nil {
		mh := promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{
			ErrorLog:      promLogger{h.log},
			ErrorHandling: promhttp.ContinueOnError,
		})
		h.route(routeMetrics, func(w http.ResponseWriter, r *http.Request) {
			if allowed(w, r, get) {
				mh.ServeHTTP(w, r)
			}
		})
	}
	h.route(routeHealth, h.health)
	h.route(routeReady, h.readyz)
	h.mux.Handle("/", h.instrument(routeOther, h.notFound))
	return h.mux
}

// route registers fn for every method on path; fn checks the method itself
// so that a wrong one gets a JSON 405 rather than the mux's plain text.
func (h *handler) route(path string, fn http.HandlerFunc) {
	h.mux.Handle(path, h.instrument(path, fn))
}

// instrument counts and times fn's requests under route and turns a panic
// into a logged 500, so one bad request cannot take the process down.
func (h *handler) instrument(route string, fn http.HandlerFunc) http.Handler {
	dur := h.m.duration.MustCurryWith(prometheus.Labels{"route": route})
	reqs := h.m.requests.MustCurryWith(prometheus.Labels{"route": route})
	// The series of code 200, looked up on the first 200 answer and kept:
	// WithLabelValues hashes the labels and takes a lock on every call.
	// Not looked up ahead, so that /metrics shows no series before its
	// first request, as before.
	type series struct {
		dur  prometheus.Observer
		reqs prometheus.Counter
	}
	var ok atomic.Pointer[series]
	count := func(code int, d time.Duration) {
		if code == http.StatusOK {
			s := ok.Load()
			if s == nil {
				s = &series{dur.WithLabelValues("200"), reqs.WithLabelValues("200")}
				ok.Store(s)
			}
			s.dur.Observe(d.Seconds())
			s.reqs.Inc()
			return
		}
		c := codeLabel(code)
		dur.WithLabelValues(c).Observe(d.Seconds())
		reqs.WithLabelValues(c).Inc()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			p := recover()
			if p == http.ErrAbortHandler {
				panic(p) // the handler's own way to cut the connection
			}
			abort := false
			if p != nil {
				h.log.Error("serving: handler panicked", "route", route, "method", r.Method,
					"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				if sw.code == 0 {
					writeError(sw, errorf(http.StatusInternalServerError, "internal error; the server log has the details"))
				} else {
					// Part of the answer is out: abort the connection so the
					// client sees a failure, not a truncated success.
					sw.code, abort = http.StatusInternalServerError, true
				}
			}
			count(sw.status(), time.Since(start))
			if abort {
				panic(http.ErrAbortHandler)
			}
		}()
		fn(sw, r)
	})
}

// statusWriter remembers the status written, for metrics and panics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// Method sets for allowed.
const (
	get  = "GET, HEAD"
	post = "POST"
)

// allowed reports whether r's method is in methods, answering 405 if not.
func allowed(w http.ResponseWriter, r *http.Request, methods string) bool {
	switch {
	case methods == get && (r.Method == http.MethodGet || r.Method == http.MethodHead),
		methods == post && r.Method == http.MethodPost:
		return true
	}
	w.Header().Set("Allow", methods)
	writeError(w, errorf(http.StatusMethodNotAllowed, "method %s not allowed on %s; use %s", r.Method, r.URL.Path, methods))
	return false
}

func (h *handler) notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, errorf(http.StatusNotFound,
		"no route %s %s; routes: GET /v1/features/{view}/{key}, POST /v1/features, GET /v1/views, POST /v1/heal, GET /metrics, GET /healthz, GET /readyz",
		r.Method, r.URL.Path))
}

func (h *handler) noKey(w http.ResponseWriter, r *http.Request) {
	if allowed(w, r, get) {
		writeError(w, errorf(http.StatusBadRequest, "missing key: use GET /v1/features/{view}/{key}"))
	}
}

func (h *handler) health(w http.ResponseWriter, r *http.Request) {
	if allowed(w, r, get) {
		writeJSON(w, []byte(`{"status":"ok"}`+"\n"))
	}
}

func (h *handler) readyz(w http.ResponseWriter, r *http.Request) {
	if !allowed(w, r, get) {
		return
	}
	if !h.ready() {
		writeError(w, errNotReady)
		return
	}
	writeJSON(w, []byte(`{"status":"ready"}`+"\n"))
}

func (h *handler) getViews(w http.ResponseWriter, r *http.Request) {
	if allowed(w, r, get) {
		writeJSON(w, h.list)
	}
}

// writeJSON writes a 200 answer of body.
func writeJSON(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(body) //nolint:errcheck // the client is gone; nothing to do
}

// promLogger sends promhttp's gathering errors to slog.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Warn("serving: gathering metrics", "error", strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}
