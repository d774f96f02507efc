# tilestream — the two commands: `make run` and `make test`.
GO       ?= go
TAGS     ?= pebblegozstd
GOFLAGS  += -tags=$(TAGS)
export GOFLAGS
# Fuzz budgets are execution counts, not durations: a duration-based
# -fuzztime races Go 1.26's fuzz coordinator at the deadline and fails with a
# bare "context deadline exceeded" on a loaded machine (go.dev/issue/75804,
# fixed in Go 1.27). Each count is roughly 10 s here.
FUZZN      ?= 300000x
FUZZN_JSONL ?= 60000x
FUZZN_PARQUET ?= 3000x

.PHONY: run test deps vet race full fuzz bench-smoke build clean bench bench-full bench-deps

## run: start the embedded default (in-process Kafka broker, Pebble under ./data, HTTP on 127.0.0.1:8080, demo producer)
run:
	$(GO) run ./cmd/tilestream run $(ARGS)

## build: build ./bin/tilestream
build:
	$(GO) build -o bin/tilestream ./cmd/tilestream

## test: everything CI runs
test: deps vet race full fuzz bench-smoke

## deps: the test servers from package-lock.json (dynalite, a DynamoDB API
## server the DynamoDB tests start on 127.0.0.1); npm ci again only when the
## lock file changes
deps: node_modules/.package-lock.json

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

vet:
	$(GO) vet ./...

# The race detector on every package; the end-to-end tests run here too.
race: deps
	$(GO) test -race -count=1 -timeout 30m ./...

# The race detector makes some tiling tests cut their sizes (large sketch
# cardinalities, trial counts): run them at full size without it.
full:
	$(GO) test -count=1 ./tiling

# Short fuzz runs of every decoder (the seed corpora run in `race` already).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRecord$$' -fuzztime $(FUZZN) ./tiling
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeBatch$$' -fuzztime $(FUZZN) ./tiling
	$(GO) test -run '^$$' -fuzz '^FuzzExactSumDecode$$' -fuzztime $(FUZZN) ./tiling
	$(GO) test -run '^$$' -fuzz '^FuzzParseDuration$$' -fuzztime $(FUZZN) ./tiling
	$(GO) test -run '^$$' -fuzz '^FuzzJSONEvent$$' -fuzztime $(FUZZN) ./tiling
	$(GO) test -run '^$$' -fuzz '^FuzzCanonicalValue$$' -fuzztime $(FUZZN) ./tiling
	$(GO) test -run '^$$' -fuzz '^FuzzReadJSONL$$' -fuzztime $(FUZZN_JSONL) -fuzzminimizetime 200x ./state
	$(GO) test -run '^$$' -fuzz '^FuzzReadParquetFile$$' -fuzztime $(FUZZN_PARQUET) -fuzzminimizetime 200x ./state

# Every benchmark once with tiny sizes (-short), so they keep compiling and
# working; figures come from the commands in benchmarks/README.md.
bench-smoke: bench-deps
	$(GO) test -short -run '^$$' -bench . -benchtime 1x ./...

## bench-deps: install what the peer benchmarks need besides Go (Debian's redis-server, DuckDB's npm package)
bench-deps:
	scripts/bench-deps

# The peer comparison (benchmarks/README.md): tilestream against Redis raw
# events, Redis minute buckets, a naive Pebble scan and DuckDB, on one
# workload. Writes benchmarks/results/<date>.md and .svg (<date>-full for
# bench-full).
## bench: the peer comparison at 10², 10⁴ and 10⁶ events per key (under 10 minutes)
bench: bench-deps
	$(GO) test -run '^$$' -bench '^BenchmarkPeers$$' -benchtime 1x -timeout 30m ./benchmarks -args -peers.scale=short -peers.report=results

## bench-full: the same up to 10⁷ events per key, 20,000 requests a cell (p999)
bench-full: bench-deps
	$(GO) test -run '^$$' -bench '^BenchmarkPeers$$' -benchtime 1x -timeout 180m ./benchmarks -args -peers.scale=full -peers.report=results

clean:
	rm -rf bin data
