package serving

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"
)

// ErrUnavailable, wrapped by a HealFunc's error, answers 503: the heal cannot
// run yet (the consumer is starting) and a retry will do.
var ErrUnavailable = errors.New("serving: unavailable")

// HealFunc runs a heal of one view now and returns a JSON-encodable summary
// once it is installed.
// full asks for a rebuild of every day instead of the changed ones.
type HealFunc func(ctx context.Context, view string, full bool) (any, error)

type healRequest struct {
	View string `json:"view"`
	Full bool   `json:"full"`
}

// postHeal is POST /v1/heal with {"view": "txn", "full": false} (every view
// when the body is empty or names none): it answers 200 with {"results": [summary…]} once the
// heals are installed. A heal takes as long as it takes: the request timeout
// does not apply, but a client that goes away cancels it.
func (h *handler) postHeal(w http.ResponseWriter, r *http.Request) {
	if !allowed(w, r, post) {
		return
	}
	if h.heal == nil {
		writeError(w, errorf(http.StatusNotImplemented, "healing is not enabled in this process"))
		return
	}
	var req healRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil && err != io.EOF {
		if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeError(w, errorf(http.StatusRequestEntityTooLarge, "request body over the limit of %d bytes", mbe.Limit))
			return
		}
		writeError(w, errorf(http.StatusBadRequest, `malformed JSON body: %s; the body must be a JSON object like {"view": "txn", "full": false}, or empty to heal every view`, jsonProblem(err)))
		return
	}
	// Heals may outlast the server's write timeout: lift it for this answer.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	views := h.order
	if req.View != "" {
		if _, ok := h.views[req.View]; !ok {
			writeError(w, errorf(http.StatusNotFound, "unknown view %q; views: %s", req.View, h.known))
			return
		}
		views = []string{req.View}
	}
	out := struct {
		Results []any `json:"results"`
	}{}
	for _, v := range views {
		res, err := h.heal(r.Context(), v, req.Full)
		if errors.Is(err, ErrUnavailable) {
			writeError(w, errorf(http.StatusServiceUnavailable, "heal of view %s cannot run yet: %v; retry shortly", v, err))
			return
		}
		if err != nil {
			h.log.Error("heal failed", "view", v, "err", err)
			writeError(w, errorf(http.StatusInternalServerError, "heal of view %s failed: %v", v, err))
			return
		}
		out.Results = append(out.Results, res)
	}
	body, err := json.Marshal(out)
	if err != nil {
		writeError(w, errorf(http.StatusInternalServerError, "encode heal result: %v", err))
		return
	}
	writeJSON(w, body)
}
