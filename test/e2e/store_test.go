package e2e

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// lockedBy is how the lock message names the first ingest of r.
func (r *e2eRun) lockedBy(ing *harness.Proc) string {
	r.t.Helper()
	host, err := os.Hostname()
	if err != nil {
		r.t.Fatal(err)
	}
	return regexp.QuoteMeta(fmt.Sprintf("storage directory %q is locked by pid %d (ingest) on host %s since ", r.p.Storage, ing.PID(), host)) +
		`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`
}

// runOnce runs a command of the pipeline to its end and returns its exit
// status and everything it printed.
func (r *e2eRun) runOnce(name, bin string, args ...string) (int, string) {
	r.t.Helper()
	proc, err := r.p.Run(r.ctx, name, nil, bin, args...)
	if err != nil {
		r.t.Fatal(err)
	}
	_, code := proc.Exited()
	return code, proc.Log()
}

// TestSecondIngestIsRefusedDuringBackfill starts a second ingest with the
// same configuration 10 times while the first backfills and a sink reads:
// each is refused with one line naming the storage directory and the
// first ingest, before it touches the store; every event still reaches the
// stream once and Fluentd once.
func TestSecondIngestIsRefusedDuringBackfill(t *testing.T) {
	r := newE2ERun(t, runSpec{events: 60_000, sessions: 40, days: 2, timeout: 6 * time.Minute})
	ing := r.ingest("ingest")
	snk := r.sink("fluentd-sink")
	r.waitBus(2000, ing, snk)

	want := regexp.MustCompile("^ingest: error: start embedded NATS server: " + r.lockedBy(ing) +
		regexp.QuoteMeta(": only one process may serve a store; stop it first, or give this one another storage") + "\n$")
	args := append(r.p.IngestArgs(), "--start-time", r.from.Format(time.RFC3339))
	for i := range 10 {
		code, out := r.runOnce(fmt.Sprintf("ingest-second-%d", i), "ingest", args...)
		if code != 1 || !want.MatchString(out) {
			t.Fatalf("second ingest %d: exit %d, printed\n%s\nwant exit 1 and one line matching\n%s", i, code, out, want)
		}
		if i == 0 {
			c, err := r.busCounts(r.ctx)
			if err != nil {
				t.Fatal(err)
			}
			if c.AuditTotal >= uint64(len(r.want.AuditIDs)) {
				t.Fatalf("the backfill had finished (%d audit events on the bus) by the first refused start: the test proves nothing", c.AuditTotal)
			}
			t.Logf("first refused start with %d of %d audit events on the bus: %s", c.AuditTotal, len(r.want.AuditIDs), strings.TrimSpace(out))
		}
		if err := harness.Alive(ing, snk); err != nil {
			t.Fatal(err)
		}
	}
	r.waitDelivered(ing, snk)
	r.checkStreams()
	r.checkFluentd(0)
}

// TestStatusDuringBackfill runs `ingest status` (flags after the
// subcommand, as the README shows) again and again during a backfill: each
// run answers through the running ingest and exits 0, and the store stays
// whole (every event once in the stream and at Fluentd at the end). With
// nothing answering on the address it is given, status refuses the locked
// store, naming the holder and the connection error, and reads nothing.
func TestStatusDuringBackfill(t *testing.T) {
	r := newE2ERun(t, runSpec{events: 40_000, sessions: 20, days: 2, timeout: 6 * time.Minute})
	ing := r.ingest("ingest")
	snk := r.sink("fluentd-sink")
	r.waitBus(2000, ing, snk)

	for i := range 6 {
		code, out := r.runOnce(fmt.Sprintf("ingest-status-%d", i), "ingest", append([]string{"status"}, r.p.IngestArgs()...)...)
		if code != 0 {
			t.Fatalf("status %d: exit %d\n%s", i, code, out)
		}
		if i == 0 {
			c, err := r.busCounts(r.ctx)
			if err != nil {
				t.Fatal(err)
			}
			if c.AuditTotal >= uint64(len(r.want.AuditIDs)) {
				t.Fatalf("the backfill had finished (%d audit events on the bus) by the first status: the test proves nothing", c.AuditTotal)
			}
		}
		for _, s := range []string{"STREAM", r.inspector().AuditStream(), "CONSUMER", "fluentd-sink-audit", "Lease: held by"} {
			if !strings.Contains(out, s) {
				t.Errorf("status %d output lacks %q:\n%s", i, s, out)
			}
		}
		if err := harness.Alive(ing, snk); err != nil {
			t.Fatal(err)
		}
	}

	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	// The same flags, and the listen address again after them: the last
	// one given wins.
	code, out := r.runOnce("ingest-status-locked", "ingest",
		append(append([]string{"status"}, r.p.IngestArgs()...), "--nats-listen", "127.0.0.1:"+strconv.Itoa(port))...)
	want := regexp.MustCompile("^ingest: error: " + r.lockedBy(ing) +
		regexp.QuoteMeta(fmt.Sprintf(", but no NATS server answers for it (connect to NATS at nats://127.0.0.1:%d: nats: no servers available for connection): status read nothing there; check that process and [nats] listen", port)) + "\n$")
	if code != 1 || !want.MatchString(out) {
		t.Fatalf("status on the locked store: exit %d, printed\n%s\nwant exit 1 and one line matching\n%s", code, out, want)
	}

	r.waitDelivered(ing, snk)
	r.checkStreams()
	r.checkFluentd(0)
}

// TestExitOnLastEventPair runs what an operator runs for a one-off export:
// `fluentd-sink --exit-on-last-event` and `ingest --exit-on-last-event`
// side by side on the embedded server. Both exit 0, and Fluentd holds every
// event teleport-sim has, each once.
func TestExitOnLastEventPair(t *testing.T) {
	r := newE2ERun(t, runSpec{events: 20_000, sessions: 30, days: 2, timeout: 5 * time.Minute})
	// The sink first: it waits for ingest's server.
	snk, err := r.p.StartSink(r.ctx, "fluentd-sink", "--exit-on-last-event")
	if err != nil {
		t.Fatal(err)
	}
	ing := r.ingest("ingest", "--exit-on-last-event")
	for _, proc := range []*harness.Proc{ing, snk} {
		code, err := proc.Wait(r.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if code != 0 {
			t.Fatalf("%s exited %d\n%s", proc.Name, code, proc.Tail(20))
		}
	}
	for proc, line := range map[*harness.Proc]string{
		ing: "every durable consumer has delivered everything",
		snk: "ingest is caught up and everything is delivered, exiting (exit-on-last-event)",
	} {
		if !strings.Contains(proc.Log(), line) {
			t.Errorf("%s did not log %q", proc.Name, line)
		}
	}
	r.checkFluentd(0)
}

// TestExitOnLastEventDrainTimeout: with Fluentd unreachable, the sink's
// consumer never drains, and `ingest --exit-on-last-event` exits 1 after
// ingest.exit-drain-timeout with one line naming the consumer and its
// backlog.
func TestExitOnLastEventDrainTimeout(t *testing.T) {
	r := newE2ERun(t, runSpec{events: 2000, timeout: 3 * time.Minute})
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	snk, err := r.p.StartSink(r.ctx, "fluentd-sink", "--fluentd-url", fmt.Sprintf("https://127.0.0.1:%d/test.log", port))
	if err != nil {
		t.Fatal(err)
	}
	ing := r.ingest("ingest", "--exit-on-last-event", "--ingest-exit-drain-timeout", "5s")
	code, err := ing.Wait(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(ing.Log()), "\n")
	last := lines[len(lines)-1]
	want := regexp.MustCompile(`^ingest: error: exit-on-last-event: consumer "fluentd-sink-audit" on stream "TELEPORT_AUDIT" has \d+ pending and \d+ unacknowledged after 5s ` +
		regexp.QuoteMeta("(ingest.exit-drain-timeout); the events stay in the stream for its next run (is its sink running and Fluentd reachable?)") + "$")
	if code != 1 || !want.MatchString(last) {
		t.Fatalf("ingest exit %d, last line\n%s\nwant exit 1 and a line matching\n%s", code, last, want)
	}
	// The sink lost its server with the ingest; it is stopped here, its
	// exit status is not the point.
	if _, err := snk.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}
