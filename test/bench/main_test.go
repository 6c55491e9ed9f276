// Package bench is `make bench`: the whole pipeline as real processes —
// teleport-sim → ingest (embedded NATS JetStream, or a separate
// nats-server) → fluentd-sink → fluentd-sim, built from this tree —
// measured end to end. BenchmarkPipeline prints one table: the backfill's
// events/s per stage and overall with ingest's default memory budget, with
// the budget off (and the share the budget keeps), and with an external
// NATS server; the rate of the older exporter's model (one event per
// request, one request at a time) for comparison; the live-tail delay;
// every process's peak RSS and CPU against its goal.
//
// Knobs (environment variables; `make bench` passes them through):
//
//	BENCH_EVENTS          audit events of each backfill (default 1000000)
//	BENCH_BUDGET_OFF      0 skips the budget-off backfill (default 1)
//	BENCH_OFF_FLAGS       ingest's flags in that run (default "--ingest-memory-budget off")
//	BENCH_PAIRS           pairs of budget-off and default backfills, in alternating order; the table compares medians (default 1)
//	BENCH_EXTERNAL        0 skips the external-NATS backfill (default 1)
//	BENCH_SERIAL_EVENTS   events of the older model; 0 skips it (default 20000)
//	BENCH_SERIAL_MAX      time limit of the older model (default 60s)
//	BENCH_LIVE_FOR        live-tail window; 0 skips the phase (default 30s)
//	BENCH_LIVE_RATE       live events per second (default 1000)
//	BENCH_FLUENTD_LATENCY fluentd-sim's delay per answer (default 0)
//	BENCH_INGEST_FLAGS    flags added to every ingest
//	BENCH_SINK_FLAGS      flags added to every batching fluentd-sink
//	BENCH_DIR             working directory, kept afterwards (default: a temporary one)
//
// The quickest run is the default backfill alone: BENCH_BUDGET_OFF=0
// BENCH_EXTERNAL=0 BENCH_SERIAL_EVENTS=0 BENCH_LIVE_FOR=0.
//
// BenchmarkCluster is `make bench-cluster`: the backfill against the
// 3-node cluster of deploy/nats (three nats-server processes, R3), ingest
// and several sinks, with one node killed once a third of the events are
// on the bus. It prints, per run: events/s, NATS's re-election time, the
// longest pause in publishing from the kill on (and by how much it exceeds
// the re-election), every process's peak RSS, missing and duplicated
// events and `ingest status`'s total against the stream (both must match,
// or the benchmark fails). Its knobs:
//
//	BENCH_CLUSTER_EVENTS  audit events of each run (default 300000)
//	BENCH_CLUSTER_KILL    which node each run kills, comma-separated: state-leader (the
//	                      state bucket's leader, the default), audit-leader, ingest-node
//	                      (the node ingest is connected to), none, or all (one run each)
//	BENCH_CLUSTER_SINKS   fluentd-sinks sharing the durable consumer (default 3)
//
// BENCH_INGEST_FLAGS and BENCH_DIR apply to it as well.
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
