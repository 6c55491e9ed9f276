package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// Messages ingest prints when its positions no longer match a stream, as
// docs/troubleshooting.md quotes them.
const (
	msgMissing   = `stream "TELEPORT_AUDIT" is missing, but ingest's saved positions say it held events`
	msgCutShort  = `stream "TELEPORT_AUDIT" holds fewer messages than ingest's saved positions account for`
	msgLostHint  = `the events behind ingest's saved positions are not all on the bus any more; ingest stopped; stop every ingest and run: ingest --config `
	msgRecovered = "Start ingest as usual: it reads every date again from the start time and publishes only the events the streams no longer hold."
)

// The tests here change the streams behind ingest's back (delete one, raise
// a limit, publish unread messages) with the test's own NATS client, which
// only an open bus allows: on the bus configure closes, no client but
// ingest may change a stream (TestClosedBusEmbedded). So ingest and the sink
// run as with a TOML from before NATS credentials.
var (
	openIngest = []string{"--nats-users", "", "--ingest-nats-nkey", ""}
	openSink   = []string{"--sink-nats-nkey", ""}
)

// TestAuditStreamLostBehindIngest loses the audit stream three ways —
// deleted with a NATS client while ingest runs, cut short (its newest
// block file gone) and removed from the store while ingest is stopped —
// and after each: ingest stops with the one-line error and the recovery
// command, does not recreate the stream, `ingest recover` resets its
// positions, and the next run brings every event back: each id once in
// the streams, every event in Fluentd.
func TestAuditStreamLostBehindIngest(t *testing.T) {
	r := newE2ERun(t, runSpec{
		events:   sized(10_000, 100_000),
		sessions: sized(30, 300),
		days:     3,
		timeout:  sized(10*time.Minute, 60*time.Minute),
	})
	r.openBus = true
	ingestArgs := append([]string{"--ingest-lease-ttl", "3s"}, openIngest...)
	ing := r.ingest("ingest", ingestArgs...)
	snk := r.sink("fluentd-sink", openSink...)

	// 1. Deleted while ingest runs.
	r.waitBus(uint64(len(r.want.AuditIDs)/3), ing, snk)
	if err := r.inspector().DeleteStream(r.ctx, r.insp.AuditStream()); err != nil {
		t.Fatal(err)
	}
	r.wantLost(ing, msgMissing)
	r.stopOrExited(snk)
	r.recoverAndRedeliver(ingestArgs, 1)

	// 2. Cut short while ingest is stopped: the second half of the newest
	// message block is gone from the store (and the stream state index
	// with it), the stream is still there with its first messages.
	ing, snk = r.stopBoth()
	blocks := r.auditBlocks()
	if len(blocks) == 0 {
		t.Fatal("no message blocks in the audit stream's store")
	}
	last := blocks[len(blocks)-1]
	fi, err := os.Stat(last)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(last, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(filepath.Dir(last), "index.db")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	ing = r.ingest("ingest", ingestArgs...)
	r.wantLost(ing, msgCutShort)
	r.recoverAndRedeliver(ingestArgs, 2)

	// 3. Gone from the store while ingest is stopped (what a second
	// process on the same storage did in the report).
	ing, snk = r.stopBoth()
	dir := r.auditStreamDir()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	ing = r.ingest("ingest", ingestArgs...)
	r.wantLost(ing, msgMissing)
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ingest recreated the lost stream before stopping: %v", err)
	}
	r.recoverAndRedeliver(ingestArgs, 3)
}

// stopBoth stops the running ingest and sink, which must exit 0, and
// returns nil for both.
func (r *e2eRun) stopBoth() (*harness.Proc, *harness.Proc) {
	r.t.Helper()
	procs := r.p.Procs()
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		if exited, _ := p.Exited(); exited || (!strings.HasPrefix(p.Name, "ingest") && !strings.HasPrefix(p.Name, "fluentd-sink")) {
			continue
		}
		if code, err := p.Stop(30 * time.Second); err != nil || code != 0 {
			r.t.Fatalf("%s: exit %d, %v\n%s", p.Name, code, err, p.Tail(20))
		}
	}
	return nil, nil
}

// stopOrExited stops p unless it has exited already (a sink whose stream
// was deleted may end by itself).
func (r *e2eRun) stopOrExited(p *harness.Proc) {
	r.t.Helper()
	if exited, _ := p.Exited(); exited {
		return
	}
	if _, err := p.Stop(30 * time.Second); err != nil {
		r.t.Fatal(err)
	}
}

// wantLost waits for ingest to exit 1 with the one-line error that says
// what happened to the stream and the recovery command for this config.
func (r *e2eRun) wantLost(ing *harness.Proc, what string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.ctx, 2*time.Minute)
	defer cancel()
	code, err := ing.Wait(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	if code != exitRuntime {
		r.t.Fatalf("ingest exited %d, want %d\n%s", code, exitRuntime, ing.Tail(20))
	}
	var errLine string
	for _, l := range strings.Split(ing.Log(), "\n") {
		if strings.HasPrefix(l, "ingest: error: ") {
			errLine = l
		}
	}
	want := msgLostHint + r.p.Config + " recover"
	if !strings.Contains(errLine, what) || !strings.HasSuffix(errLine, want) {
		r.t.Fatalf("ingest's error line:\n  %s\nwant it to contain %q and end with %q", errLine, what, want)
	}
	r.t.Logf("ingest stopped: %s", errLine)
}

// recoverAndRedeliver runs `ingest --config … recover`, starts ingest and a
// sink again and waits until the streams hold every event exactly once
// and Fluentd has every event. Each of the recoveries so far may have
// delivered every event to Fluentd once more: the recovered stream's
// messages are new to the sink (delivery to Fluentd is at-least-once).
func (r *e2eRun) recoverAndRedeliver(ingestArgs []string, recoveries int) {
	r.t.Helper()
	rec, err := r.p.Run(r.ctx, "ingest-recover", nil, "ingest", append(append(r.p.IngestArgs(), "recover"), ingestArgs...)...)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, code := rec.Exited(); code != 0 || !strings.Contains(rec.Log(), msgRecovered) {
		r.t.Fatalf("ingest recover: exit %d\n%s", code, rec.Tail(20))
	}
	ing := r.ingest("ingest", ingestArgs...)
	snk := r.sink("fluentd-sink", openSink...)
	r.waitStreamsComplete(ing, snk)
	r.waitDelivered(ing, snk)
	r.checkStreams()
	r.checkFluentd(recoveries * (len(r.want.AuditIDs) + r.want.SessionTotal))
}

// waitStreamsComplete waits until the streams hold as many messages as
// teleport-sim has events to deliver.
func (r *e2eRun) waitStreamsComplete(procs ...*harness.Proc) {
	r.t.Helper()
	want := fmt.Sprintf("audit %d, sessions %d", len(r.want.AuditIDs), r.want.SessionTotal)
	err := harness.WaitFor(r.ctx, "every event on the bus ("+want+")", func(ctx context.Context) (bool, string, error) {
		if err := harness.Alive(procs...); err != nil {
			return false, "", err
		}
		c, err := r.busCounts(ctx)
		if err != nil {
			return false, "", nil // the server restarts with ingest
		}
		return c.AuditTotal >= uint64(len(r.want.AuditIDs)) && c.Sessions >= uint64(r.want.SessionTotal),
			fmt.Sprintf("audit %d, sessions %d", c.AuditTotal, c.Sessions), nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
}

// auditStreamDir is the audit stream's directory in the embedded server's
// store.
func (r *e2eRun) auditStreamDir() string {
	return filepath.Join(r.p.Storage, "jetstream", "$G", "streams", "TELEPORT_AUDIT")
}

// auditBlocks are the audit stream's message block files, oldest first.
func (r *e2eRun) auditBlocks() []string {
	r.t.Helper()
	files, err := filepath.Glob(filepath.Join(r.auditStreamDir(), "msgs", "*.blk"))
	if err != nil {
		r.t.Fatal(err)
	}
	slices.SortFunc(files, func(a, b string) int {
		var x, y int
		if _, err := fmt.Sscanf(filepath.Base(a), "%d.blk", &x); err != nil {
			r.t.Fatal(err)
		}
		if _, err := fmt.Sscanf(filepath.Base(b), "%d.blk", &y); err != nil {
			r.t.Fatal(err)
		}
		return x - y
	})
	return files
}

// TestStreamLimitWhileSinkDown fills the audit stream (max-bytes) while no
// sink reads: ingest pauses — one log line, the paused metric, /readyz 503
// with the reason — and drops nothing; once the limit is raised with a
// NATS client it resumes by itself and, with the sink started, every event
// reaches Fluentd once on the bus. Then, with the sink stopped again,
// max-age removes messages the sink never read: ingest counts them in
// removed_unacknowledged_total and logs them.
func TestStreamLimitWhileSinkDown(t *testing.T) {
	r := newE2ERun(t, runSpec{
		events:   sized(10_000, 100_000),
		sessions: sized(20, 200),
		days:     2,
		timeout:  sized(8*time.Minute, 40*time.Minute),
	})
	r.openBus = true
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", port)
	ing := r.ingest("ingest", append([]string{"--nats-max-bytes", "1000000", "--ingest-metrics-addr", metricsAddr}, openIngest...)...)
	get := func(ctx context.Context, path string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+metricsAddr+path, nil)
		if err != nil {
			return 0, "", err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, "", nil // not listening yet
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return 0, "", err
		}
		return resp.StatusCode, string(body), nil
	}
	paused := `teleport_event_bus_ingest_paused{reason="max_bytes"} 1`
	err = harness.WaitFor(r.ctx, "ingest paused on the full stream", func(ctx context.Context) (bool, string, error) {
		if err := harness.Alive(ing); err != nil {
			return false, "", err
		}
		code, body, err := get(ctx, "/readyz")
		if err != nil {
			return false, "", err
		}
		_, metrics, err := get(ctx, "/metrics")
		if err != nil {
			return false, "", err
		}
		return code == http.StatusServiceUnavailable && strings.Contains(body, "the audit stream is full") && strings.Contains(metrics, paused),
			fmt.Sprintf("/readyz %d %q", code, strings.TrimSpace(body)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	const pauseLine = "ingest paused: the audit stream is full ([nats] max-bytes reached"
	if n := strings.Count(ing.Log(), pauseLine); n != 1 {
		t.Errorf("%d pause lines, want 1", n)
	}
	info, err := r.inspector().StreamInfo(r.ctx, r.insp.AuditStream())
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Discard != jetstream.DiscardNew || info.State.Msgs >= uint64(len(r.want.AuditIDs)) || info.State.Msgs == 0 {
		t.Fatalf("full audit stream: discard %s, %d messages of %d", info.Config.Discard, info.State.Msgs, len(r.want.AuditIDs))
	}
	t.Logf("paused with %d of %d audit events on the bus (%d bytes)", info.State.Msgs, len(r.want.AuditIDs), info.State.Bytes)

	// Make room, as an operator would with `nats stream edit`.
	for _, name := range []string{r.insp.AuditStream(), r.insp.SessionStream()} {
		if err := r.insp.UpdateStream(r.ctx, name, func(c *jetstream.StreamConfig) { c.MaxBytes = -1 }); err != nil {
			t.Fatal(err)
		}
	}
	snk := r.sink("fluentd-sink", openSink...)
	r.waitStreamsComplete(ing, snk)
	r.waitDelivered(ing, snk)
	if _, err := ing.WaitForLine(r.ctx, "ingest resumed: the bus has room again"); err != nil {
		t.Fatal(err)
	}
	err = harness.WaitFor(r.ctx, "/readyz ready again", func(ctx context.Context) (bool, string, error) {
		code, body, err := get(ctx, "/readyz")
		return code == http.StatusOK, fmt.Sprintf("%d %q", code, body), err
	})
	if err != nil {
		t.Fatal(err)
	}
	r.checkStreams()
	r.checkFluentd(0)

	// max-age removes what the stopped sink has not read: counted, logged.
	// The sink stops once it has acknowledged everything it delivered.
	err = harness.WaitFor(r.ctx, "the sink's acknowledgements", func(ctx context.Context) (bool, string, error) {
		info, err := r.insp.StreamInfo(ctx, r.insp.AuditStream())
		if err != nil {
			return false, "", err
		}
		floor, err := r.insp.AckFloor(ctx, r.insp.AuditStream(), "fluentd-sink-audit")
		return err == nil && floor == info.State.LastSeq, fmt.Sprintf("ack floor %d of %d", floor, info.State.LastSeq), err
	})
	if err != nil {
		t.Fatal(err)
	}
	if code, err := snk.Stop(30 * time.Second); err != nil || code != 0 {
		t.Fatalf("fluentd-sink: exit %d, %v", code, err)
	}
	const unread = 25
	for i := range unread {
		if err := r.insp.PublishAudit(r.ctx, fmt.Sprintf("unread-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.insp.UpdateStream(r.ctx, r.insp.AuditStream(), func(c *jetstream.StreamConfig) {
		c.MaxAge, c.Duplicates = 2*time.Second, 2*time.Second
	}); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`teleport_event_bus_ingest_removed_unacknowledged_total{consumer="fluentd-sink-audit",stream="TELEPORT_AUDIT"} %d`, unread)
	err = harness.WaitFor(r.ctx, "the removed unread messages counted", func(ctx context.Context) (bool, string, error) {
		if err := harness.Alive(ing); err != nil {
			return false, "", err
		}
		_, metrics, err := get(ctx, "/metrics")
		var line string
		for _, l := range strings.Split(metrics, "\n") {
			if strings.HasPrefix(l, "teleport_event_bus_ingest_removed_unacknowledged_total{") {
				line += l + "; "
			}
		}
		return strings.Contains(metrics, want), line, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ing.WaitForLine(r.ctx, "messages removed by the stream's limits before the consumer acknowledged them"); err != nil {
		t.Fatal(err)
	}
}
