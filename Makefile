# teleport-event-bus — the two commands a new user needs are `make demo` and `make test`.

GO       ?= go
BIN      := bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
PKG      := github.com/teleport-event-bus/teleport-event-bus
LDFLAGS  := -s -w -X $(PKG)/pkg/version.Version=$(VERSION) -X $(PKG)/pkg/version.Commit=$(COMMIT)
GOFLAGS_BUILD := -trimpath -ldflags '$(LDFLAGS)'

COMMANDS := ingest fluentd-sink configure
SIMS     := teleport-sim fluentd-sim nats-server demo

.PHONY: all build test vet fmt-check unit bench bench-cluster bench-ingest bench-sink bench-search demo clean release install image gen-example-mtls

all: build

## build: the three commands and the two test servers, into ./bin
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/ $(addprefix ./cmd/,$(COMMANDS)) $(addprefix ./test/cmd/,$(SIMS))

## demo: the whole pipeline on embedded defaults, with a summary of what was delivered (DEMO_FLAGS=--forward: over in_forward)
demo: build
	$(BIN)/demo --bin $(BIN) --dir demo $(DEMO_FLAGS)

## test: go vet, the gofmt check, and every test with the race detector
test: vet fmt-check unit

vet:
	$(GO) vet ./...

fmt-check:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

unit:
	$(GO) test -race -count=1 -timeout 30m ./...

## bench: the whole pipeline as real processes, one table (BENCH_EVENTS, default 1,000,000; BENCH_BUDGET_OFF=0, BENCH_EXTERNAL=0,
## BENCH_SERIAL_EVENTS=0, BENCH_LIVE_FOR=0 skip phases; all knobs in the package comment of test/bench)
bench:
	BENCH_EVENTS=$${BENCH_EVENTS:-1000000} $(GO) test -run '^$$' -bench BenchmarkPipeline -benchtime 1x -timeout 60m ./test/bench/

## bench-cluster: the backfill against a 3-node nats-server cluster (R3) with one node killed mid-way, one table: events/s, longest
## publish gap, NATS's re-election, peak RSS per process, missing/duplicated (BENCH_CLUSTER_EVENTS, default 300,000; BENCH_CLUSTER_KILL:
## state-leader (default), audit-leader, ingest-node, none or all, comma-separated; BENCH_CLUSTER_SINKS, default 3)
bench-cluster:
	$(GO) test -run '^$$' -bench BenchmarkCluster -benchtime 1x -timeout 60m ./test/bench/

## bench-ingest, bench-sink: Go benchmarks of one stage each (BENCH_EVENTS, default 100,000; bench-sink's outage row: BENCH_OUTAGE, default 30s, 0 skips)
bench-ingest:
	$(GO) test -run '^$$' -bench BenchmarkBackfill -benchtime 1x -timeout 30m ./pkg/ingest/

bench-sink:
	$(GO) test -run '^$$' -bench BenchmarkSink -benchtime 1x -timeout 30m ./pkg/sink/

## bench-search: the search path against a file-log Teleport double, one run (BENCH_SEARCH_EVENTS per day, default 100,000; BENCH_SEARCH_SLICE, default 60s)
bench-search:
	$(GO) test -run '^$$' -bench BenchmarkSearch -benchtime 1x -timeout 60m ./pkg/ingest/

## release: static binaries for PLATFORMS packed into dist/*-bin.tar.gz with SHA256SUMS
PLATFORMS ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64
release:
	GO=$(GO) sh deploy/release.sh '$(VERSION)' '$(COMMIT)' '$(PLATFORMS)'

## install: copy the three commands to BINDIR (default /usr/local/bin)
BINDIR ?= /usr/local/bin
install: build
	BINDIR='$(BINDIR)' SRCDIR='$(BIN)' sh deploy/install.sh

## image: the container image (needs a Docker engine)
IMAGE ?= teleport-event-bus:$(VERSION)
image:
	@command -v docker >/dev/null || { echo "make image: docker not found"; exit 1; }
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMAGE) .

## gen-example-mtls: example certificates and keys in example/keys (PASS=… KEYLEN=2048|4096)
# server.key is encrypted with PASS (generated when unset; fluent.conf holds it).
KEYLEN ?= 2048
EXAMPLE_KEYS ?= example/keys
gen-example-mtls:
	@mkdir -p $(BIN) $(EXAMPLE_KEYS)
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/ ./cmd/configure
	@pass='$(PASS)'; [ -n "$$pass" ] || pass="$$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"; \
	printf '%s\n' "$$pass" | $(BIN)/configure --force --length $(KEYLEN) $(EXAMPLE_KEYS)

clean:
	rm -rf $(BIN) dist
