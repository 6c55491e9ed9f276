// Package bench is `make bench`: the whole pipeline as real processes —
// teleport-sim → ingest (embedded NATS JetStream) → fluentd-sink →
// fluentd-sim, built from this tree — measured end to end. BenchmarkPipeline
// prints one table: events/s per stage and overall, the live-tail delay,
// every process's peak RSS, and the rate of the older exporter's model (one
// event per request, one request at a time) for comparison.
//
// The package has benchmarks only: `go test` without -bench runs nothing
// here and builds nothing.
package bench

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code != 0 {
		os.Exit(code)
	}
	// Every child process has been waited for; the goroutines that watched
	// them, and the JSONL tailer, must be gone too.
	if err := goleak.Find(); err != nil {
		fmt.Fprintln(os.Stderr, "bench: goroutines left:", err)
		os.Exit(1)
	}
	os.Exit(0)
}
