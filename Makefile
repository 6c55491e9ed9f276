# teleport-event-bus — the two commands a new user needs are `make demo` and `make test`.

GO       ?= go
BIN      := bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
PKG      := github.com/teleport-event-bus/teleport-event-bus
LDFLAGS  := -s -w -X $(PKG)/pkg/version.Version=$(VERSION) -X $(PKG)/pkg/version.Commit=$(COMMIT)
GOFLAGS_BUILD := -trimpath -ldflags '$(LDFLAGS)'

COMMANDS := ingest fluentd-sink configure
SIMS     := teleport-sim fluentd-sim

.PHONY: all build test vet fmt-check unit bench bench-ingest bench-sink demo clean

all: build

## build: the three commands and the two test servers, into ./bin
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/ $(addprefix ./cmd/,$(COMMANDS)) $(addprefix ./test/cmd/,$(SIMS))

## test: go vet, the gofmt check, and every test with the race detector
test: vet fmt-check unit

vet:
	$(GO) vet ./...

fmt-check:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

unit:
	$(GO) test -race -count=1 -timeout 20m ./...

## bench: Go benchmarks of the ingest and sink stages (N events: BENCH_EVENTS)
bench: bench-ingest bench-sink

bench-ingest:
	$(GO) test -run '^$$' -bench BenchmarkBackfill -benchtime 1x -timeout 30m ./pkg/ingest/

bench-sink:
	$(GO) test -run '^$$' -bench BenchmarkSink -benchtime 1x -timeout 30m ./pkg/sink/

clean:
	rm -rf $(BIN) dist
