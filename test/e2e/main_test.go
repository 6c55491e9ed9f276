// Package e2e runs the whole pipeline as real child processes — configure,
// teleport-sim, fluentd-sim, ingest, fluentd-sink and other consumers — and
// checks the guarantees of the design by event id against what teleport-sim
// holds: nothing lost across kill -9, outages and Teleport errors, no
// duplicates in the stream, bounded memory, fan-out and HA takeover.
//
// The binaries are built once per package run, without -race, by TestMain.
// `go test -short` skips the package; SOAK=1 runs the long versions.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// binDir holds the binaries TestMain built (every name in harness.Commands).
var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("e2e: skipped in -short mode")
		os.Exit(0)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := harness.Build(ctx, dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build:", err)
		return 1
	}
	binDir = dir
	code := m.Run()
	if code != 0 {
		return code
	}
	// Every child process has been waited for; the goroutines that watched
	// them must be gone too.
	if err := goleak.Find(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: goroutines left:", err)
		return 1
	}
	return 0
}

// newPipeline runs configure into a temporary directory and returns the
// pipeline with a context that ends after timeout. At the end of the test
// every part still running is stopped, before the context is cancelled.
func newPipeline(t *testing.T, timeout time.Duration) (context.Context, *harness.Pipeline) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	p, err := harness.NewPipeline(ctx, binDir, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.StopAll(10 * time.Second) })
	return ctx, p
}
