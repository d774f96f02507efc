// Package serving is tilestream's embedded HTTP endpoint: it reads a key's
// records from the online store, evaluates the view's windows at one time t
// and answers in JSON.
//
// # Routes
//
//	GET  /v1/features/{view}/{key}   one result
//	POST /v1/features                {"requests":[{"view":"txn","key":"u1"},…]} → {"results":[…]}
//	GET  /v1/views                   the served views and their features
//	GET  /metrics                    Prometheus exposition of Options.Gatherer
//	GET  /healthz                    200 {"status":"ok"} while the process runs
//	GET  /readyz                     200 {"status":"ready"} once Options.Ready reports true, else 503
//
// A result is
//
//	{"view":"txn","key":"u1",
//	 "features":{"amount_sum_7d":12.5,"txn_count_7d":3,"merchant_last":"m3",…},
//	 "metadata":{"served_at":"2026-11-26T08:00:00.123Z",
//	             "batch_watermark":"2026-11-25T00:00:00.000Z","stream_watermark":null}}
//
// Features appear in the view's declared order. A count is an integer; sums,
// means, minima and maxima are numbers written in the shortest form that
// parses back to the same float64; last is the event's JSON value as it was
// received; an empty window gives 0 for count and sum and null otherwise.
//
// # Time
//
// served_at is the t every value of the response was computed for: the
// handler reads the clock once per request and truncates it to the
// millisecond, so all keys of a POST share one t. Each window ends with the
// tile holding t (see package tiling): it counts events stamped up to the end
// of that tile, which may be slightly after t. batch_watermark is the key's
// W_b, the first event time not covered by batch data, as returned by the
// read (null before any heal covered the key). stream_watermark is the view's
// stream progress, sampled once per view per request before any read, so the
// data read includes at least what it claims (null until known). Times are
// RFC 3339 in UTC with exactly three fractional digits.
//
// # Keys
//
// The key is the rest of the path after the view and may contain "/". The
// mux cleans paths before routing ("a/../b" becomes "b", "a//b" becomes
// "a/b", both by redirect), so percent-encode "/" as %2F in keys with empty,
// "." or ".." segments, or use POST. Keys must be valid UTF-8 and at most
// Config.MaxKeyBytes long.
//
// # Errors
//
// Every failure is JSON {"error":"…"} saying what to change:
//
//	400  malformed body, unknown fields, an empty requests list, a missing
//	     view or key, a key too long or not UTF-8
//	404  an unknown view (named, with the served ones) or route
//	405  a method the route does not take (with Allow)
//	413  a body over Config.MaxBodyBytes or more than Config.MaxBatch keys
//	500  a store failure (logged once, with its cause; the answer carries
//	     none of it) or a panic (recovered and logged with its stack)
//	503  a feature route or /readyz before Options.Ready reports true; a
//	     read the online store cannot serve for now (DynamoDB throttles or
//	     does not answer, and the local cache has no snapshot of the key
//	     within its staleness bound), with Retry-After: 1
//	504  the read outlasted Config.RequestTimeout
//
// A POST is checked whole before any read, and fails whole: a store error on
// its fifth key answers 500, not four results. A client that disconnects
// before the answer is recorded as 499 (nobody reads it). The timeout reaches
// the store through the request's context: a Reader that ignores ctx delays
// the 504 until it returns, and the server's write deadline (twice the
// timeout) bounds it in the end.
//
// # Metrics
//
//	tilestream_serving_request_duration_seconds{route,code}  histogram, 50µs…10s
//	tilestream_serving_requests_total{route,code}
//	tilestream_serving_keys_total                           keys in successful answers
//	tilestream_serving_records_read                         histogram of records read per key
//
// route is the mux pattern's path ("/v1/features/{view}/{key...}") or "other";
// no label carries a view or key value.
//
// # Lifecycle
//
// NewHandler builds the routes on a private mux and starts nothing. NewServer
// wraps a handler in an http.Server with read, write and idle deadlines;
// Server.Run serves a listener until its context ends, then shuts down
// gracefully and returns once its goroutines have exited.
package serving
