package serving

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/tilestream/tilestream/state"
)

// statusClientClosed is the status recorded when the client went away before
// the answer was ready (nginx's 499). Nobody reads the response; the code
// keeps such requests out of the 5xx counts.
const statusClientClosed = 499

// apiError is a failure to answer a request: the status and a message that
// is safe and useful to show to the client.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) *apiError {
	return &apiError{status: status, msg: fmt.Sprintf(format, args...)}
}

// errUnavailable answers reads the online store cannot serve for now.
var errUnavailable = &apiError{http.StatusServiceUnavailable, "the online store is unavailable (throttled or not answering) and no cached value is within its staleness bound; retry shortly"}

// errNotReady answers feature requests before Options.Ready reports true.
var errNotReady = &apiError{http.StatusServiceUnavailable, "not ready: tilestream is still starting (opening the store, catching up); retry later"}

// WriteUnavailable answers 503 with msg as every error response is written
// ({"error": msg}, Retry-After: 1): for what answers before the handler
// exists (the service's start-up).
func WriteUnavailable(w http.ResponseWriter, msg string) {
	writeError(w, &apiError{http.StatusServiceUnavailable, msg})
}

// errorBody is the JSON body of every error response.
type errorBody struct {
	Error string `json:"error"`
}

// writeError writes e as {"error": msg} with its status.
func writeError(w http.ResponseWriter, e *apiError) {
	b, err := json.Marshal(errorBody{e.msg})
	if err != nil { // cannot happen for a struct of one string
		b = []byte(`{"error":"internal error"}`)
	}
	b = append(b, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	if e.status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(e.status)
	w.Write(b) //nolint:errcheck // the client is gone; nothing to do
}

// readFailed maps an error of Reader.ReadKey to the response: 504 when the
// request's deadline passed, 499 when the client went away, else 500. The
// message never carries the store's error text: it may hold paths, keys of
// other tables or credentials' names.
func readFailed(ctx context.Context, err error) *apiError {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return errorf(http.StatusGatewayTimeout, "request timed out: the online store did not answer in time")
	case ctx.Err() != nil:
		return errorf(statusClientClosed, "request canceled")
	case state.Retryable(err):
		// DynamoDB throttles or does not answer, and no cached snapshot
		// fresh enough (within the cache's staleness bound) could answer:
		// nothing is served rather than something older than promised.
		return errUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return errorf(http.StatusGatewayTimeout, "request timed out: the online store did not answer in time")
	}
	return errorf(http.StatusInternalServerError, "internal error reading the online store; the server log has the details")
}
