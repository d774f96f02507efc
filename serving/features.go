package serving

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/tilestream/tilestream/tiling"
)

// result is the answer for one (view, key).
type result struct {
	View     string   `json:"view"`
	Key      string   `json:"key"`
	Features features `json:"features"`
	Metadata metadata `json:"metadata"`
}

type metadata struct {
	ServedAt        msTime `json:"served_at"`
	BatchWatermark  msTime `json:"batch_watermark"`
	StreamWatermark msTime `json:"stream_watermark"`
	// BatchStaleness is served_at − batch_watermark in seconds: how much of
	// the window is served from stream records; null before any heal.
	BatchStaleness staleness `json:"batch_staleness_seconds"`
	// MissingFeatures are served as null because they are being rebuilt
	// after a change of the view (absent when none).
	MissingFeatures []string `json:"missing_features,omitempty"`
}

// staleness is a duration in ms encoded as seconds, or null when unknown.
type staleness int64

func (s staleness) MarshalJSON() ([]byte, error) { return s.appendJSON(nil), nil }

// features is a JSON object of feature values in View.Features order.
type features struct {
	// names are the JSON-quoted feature names followed by ':', built once
	// per view.
	names [][]byte
	vals  []any
}

// MarshalJSON writes the object in View.Features order; see appendJSON.
func (f features) MarshalJSON() ([]byte, error) {
	return f.appendJSON(make([]byte, 0, 32*len(f.vals)+2))
}

// memberNames returns the JSON member prefix `"name":` of each name.
func memberNames(names []string) [][]byte {
	out := make([][]byte, len(names))
	for i, n := range names {
		q, err := json.Marshal(n)
		if err != nil {
			panic("serving: quote a feature name: " + err.Error()) // strings always encode
		}
		out[i] = append(q, ':')
	}
	return out
}

// msTime is an epoch-ms time written as RFC 3339 UTC with milliseconds, or
// null for tiling.MinTime (unset).
type msTime int64

// TimeLayout is how the API writes times: RFC 3339 with exactly three
// fractional digits, in UTC.
const TimeLayout = "2006-01-02T15:04:05.000Z07:00"

func (t msTime) MarshalJSON() ([]byte, error) {
	return t.appendJSON(make([]byte, 0, len(TimeLayout)+2)), nil
}

func batchStaleness(t, wb int64) staleness {
	if wb == tiling.MinTime {
		return staleness(tiling.MinTime)
	}
	return staleness(t - wb)
}

// servingTime returns the t of a request: now truncated to the millisecond.
func (h *handler) servingTime() int64 {
	return h.now().Truncate(time.Millisecond).UnixMilli()
}

// streamWatermark samples the view's stream watermark; tiling.MinTime if none.
func (h *handler) streamWatermark(view string) msTime {
	if h.wm == nil {
		return msTime(tiling.MinTime)
	}
	ms, ok := h.wm.StreamWatermark(view)
	if !ok {
		return msTime(tiling.MinTime)
	}
	return msTime(ms)
}

// lookup returns the served view named name.
func (h *handler) lookup(name, where string) (*viewInfo, *apiError) {
	vi, ok := h.views[name]
	if !ok {
		if h.known == "" {
			return nil, errorf(http.StatusNotFound, "%sunknown view %q: no views are served", where, name)
		}
		return nil, errorf(http.StatusNotFound, "%sunknown view %q; served views: %s", where, name, h.known)
	}
	return vi, nil
}

// checkKey validates an entity key; where prefixes the message.
func (h *handler) checkKey(key, where string) *apiError {
	switch {
	case key == "":
		return errorf(http.StatusBadRequest, "%sempty key", where)
	case len(key) > h.cfg.MaxKeyBytes:
		return errorf(http.StatusBadRequest, "%skey is %d bytes, over the limit of %d", where, len(key), h.cfg.MaxKeyBytes)
	case !utf8.ValidString(key):
		return errorf(http.StatusBadRequest, "%skey is not valid UTF-8", where)
	}
	return nil
}

// compute reads and evaluates one key at time t. sw is the view's stream
// watermark, sampled before the read so that the data read includes at
// least what it claims.
func (h *handler) compute(ctx context.Context, vi *viewInfo, key string, t int64, sw msTime) (result, error) {
	v := vi.v
	if h.rebuilding != nil && h.rebuilding(v.Name) {
		// The view's tiles are being rebuilt for a new layout: nothing
		// stored can answer yet, so every feature is reported missing.
		missing := make([]string, len(v.Features))
		for i, f := range v.Features {
			missing[i] = f.Name
		}
		return result{
			View: v.Name, Key: key,
			Features: features{names: vi.names, vals: make([]any, len(v.Features))},
			Metadata: metadata{ServedAt: msTime(t), BatchWatermark: msTime(tiling.MinTime),
				BatchStaleness: staleness(tiling.MinTime), StreamWatermark: sw, MissingFeatures: missing},
		}, nil
	}
	kd, err := h.reader.ReadKey(ctx, v, key, t)
	if err != nil {
		return result{}, err
	}
	h.m.records.Observe(float64(kd.RecordsRead))
	vals := v.EvaluateBatch(t, kd.Batch, kd.Records)
	var missing []string
	if h.missing != nil {
		// Features a change of the view added: their states are empty in
		// what was stored before the change, so their values are not served.
		if missing = h.missing(v.Name); len(missing) > 0 {
			for i, f := range v.Features {
				if slices.Contains(missing, f.Name) {
					vals[i] = nil
				}
			}
		}
	}
	return result{
		View:     v.Name,
		Key:      key,
		Features: features{names: vi.names, vals: vals},
		Metadata: metadata{
			ServedAt:        msTime(t),
			BatchWatermark:  msTime(kd.BatchWatermark),
			BatchStaleness:  batchStaleness(t, kd.BatchWatermark),
			StreamWatermark: sw,
			MissingFeatures: missing,
		},
	}, nil
}

// readError logs a failed read once and returns its answer.
func (h *handler) readError(ctx context.Context, r *http.Request, view, key string, err error) *apiError {
	e := readFailed(ctx, err)
	if e.status == http.StatusInternalServerError {
		h.log.Error("serving: read failed", "method", r.Method, "view", view, "key", key, "error", err)
	}
	return e
}

// getFeatures answers GET /v1/features/{view}/{key...}.
func (h *handler) getFeatures(w http.ResponseWriter, r *http.Request) {
	if !allowed(w, r, get) {
		return
	}
	if !h.ready() {
		writeError(w, errNotReady)
		return
	}
	vi, e := h.lookup(r.PathValue("view"), "")
	if e != nil {
		writeError(w, e)
		return
	}
	key := r.PathValue("key")
	if e := h.checkKey(key, ""); e != nil {
		writeError(w, e)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.RequestTimeout)
	defer cancel()
	t := h.servingTime()
	res, err := h.compute(ctx, vi, key, t, h.streamWatermark(vi.v.Name))
	if err != nil {
		writeError(w, h.readError(ctx, r, vi.v.Name, key, err))
		return
	}
	h.m.keys.Inc()
	h.writeResult(w, &res)
}

// batchRequest is the body of POST /v1/features.
type batchRequest struct {
	Requests []keyRequest `json:"requests"`
}

type keyRequest struct {
	View string `json:"view"`
	Key  string `json:"key"`
}

type batchResponse struct {
	Results []result `json:"results"`
}

// postFeatures answers POST /v1/features. The request is checked whole
// before any read, and every key is computed for the same t. Keys are read
// one after another when the store is local (a read is short: fanning out
// would cost more in scheduling than it saves), or up to
// Options.ReadParallelism at once (DynamoDB: a read is a round trip).
func (h *handler) postFeatures(w http.ResponseWriter, r *http.Request) {
	if !allowed(w, r, post) {
		return
	}
	if !h.ready() {
		writeError(w, errNotReady)
		return
	}
	reqs, e := h.decodeBatch(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	vis := make([]*viewInfo, len(reqs))
	for i, kr := range reqs {
		where := "requests[" + strconv.Itoa(i) + "]: "
		if kr.View == "" {
			writeError(w, errorf(http.StatusBadRequest, "%smissing view", where))
			return
		}
		if vis[i], e = h.lookup(kr.View, where); e != nil {
			writeError(w, e)
			return
		}
		if e := h.checkKey(kr.Key, where); e != nil {
			writeError(w, e)
			return
		}
	}

	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.RequestTimeout)
	defer cancel()
	t := h.servingTime()
	// One stream watermark per view per request, sampled before any read.
	type mark struct {
		vi *viewInfo
		sw msTime
	}
	var marks []mark
	sws := make([]msTime, len(reqs))
	for i := range reqs {
		vi := vis[i]
		j := 0
		for j < len(marks) && marks[j].vi != vi {
			j++
		}
		if j == len(marks) {
			marks = append(marks, mark{vi, h.streamWatermark(vi.v.Name)})
		}
		sws[i] = marks[j].sw
	}
	out := batchResponse{Results: make([]result, len(reqs))}
	errs := make([]error, len(reqs))
	if h.parallel <= 1 {
		for i, kr := range reqs {
			if errs[i] = ctx.Err(); errs[i] == nil {
				out.Results[i], errs[i] = h.compute(ctx, vis[i], kr.Key, t, sws[i])
			}
			if errs[i] != nil {
				break
			}
		}
	} else {
		// A bounded pool; the first failure cancels the rest.
		rctx, rcancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		sem := make(chan struct{}, h.parallel)
		for i, kr := range reqs {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				if errs[i] = rctx.Err(); errs[i] == nil {
					out.Results[i], errs[i] = h.compute(rctx, vis[i], kr.Key, t, sws[i])
				}
				if errs[i] != nil {
					rcancel()
				}
			}()
		}
		wg.Wait()
		rcancel()
	}
	for i, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) || (err != nil && ctx.Err() != nil) {
			writeError(w, h.readError(ctx, r, vis[i].v.Name, reqs[i].Key, err))
			return
		}
	}
	for i, err := range errs {
		if err != nil {
			writeError(w, h.readError(ctx, r, vis[i].v.Name, reqs[i].Key, err))
			return
		}
	}
	h.m.keys.Add(float64(len(reqs)))
	h.writeResults(w, out.Results)
}

// decodeBatch reads and checks the body of a POST.
func (h *handler) decodeBatch(w http.ResponseWriter, r *http.Request) ([]keyRequest, *apiError) {
	body := http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	var req batchRequest
	err := dec.Decode(&req)
	if err == nil {
		// Exactly one JSON value: anything after it is a client bug.
		if err = dec.Decode(&struct{}{}); err == io.EOF {
			err = nil
		} else if err == nil {
			return nil, errorf(http.StatusBadRequest, `malformed JSON body: more than one value; want {"requests":[{"view":…,"key":…},…]}`)
		}
	}
	if err != nil {
		if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, errorf(http.StatusRequestEntityTooLarge, "request body over the limit of %d bytes", mbe.Limit)
		}
		if err == io.EOF {
			return nil, errorf(http.StatusBadRequest, `empty body; want {"requests":[{"view":…,"key":…},…]}`)
		}
		return nil, errorf(http.StatusBadRequest, `malformed JSON body: %s; want {"requests":[{"view":…,"key":…},…]}`, jsonProblem(err))
	}
	switch n := len(req.Requests); {
	case n == 0:
		return nil, errorf(http.StatusBadRequest, `empty requests list; want {"requests":[{"view":…,"key":…},…]}`)
	case n > h.cfg.MaxBatch:
		return nil, errorf(http.StatusRequestEntityTooLarge, "%d requests, over the limit of %d per batch; split the batch", n, h.cfg.MaxBatch)
	}
	return req.Requests, nil
}

// jsonProblem words a decoding error for the client in JSON's terms: a
// value of the wrong type names the field and the JSON type it wants, never
// a Go type ("the body is a JSON array, not an object").
func jsonProblem(err error) string {
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		what := "the body"
		if te.Field != "" {
			what = "field " + strconv.Quote(te.Field)
		}
		return what + " is a JSON " + te.Value + ", not " + jsonKind(te.Type)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return "unexpected end of input"
	}
	s := err.Error()
	const prefix = "json: "
	if len(s) > len(prefix) && s[:len(prefix)] == prefix {
		s = s[len(prefix):]
	}
	return s
}

// jsonKind names the JSON value that decodes into t.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "a value of another type"
}
