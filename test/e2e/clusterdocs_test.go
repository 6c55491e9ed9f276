package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/configure"
	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// nodeLossResumeSlack is how long after NATS's own re-election publishing
// may stay stopped in TestClusterDocsRun: generous, for a loaded CI
// machine; the real figure is `make bench-cluster`'s.
const nodeLossResumeSlack = 10 * time.Second

// TestClusterDocsRun follows docs/deployment.md's "Cluster (three NATS
// servers)" as an operator would, on one machine: configure with
// --nats-cluster (nodes on 127.0.0.1 and their own ports, as the section
// says for one machine), three real nats-server processes started with the
// generated nats-cluster/nats-N.conf unchanged, ingest with the TOML
// configure wrote (replicas 3, its NKey, the CA) and three sinks with the
// same TOML, against teleport-sim and fluentd-sim.
//
// During the backfill it kills (SIGKILL) each kind of node once: the state
// bucket's leader, the audit stream's leader, the node ingest is connected
// to — each started again, and caught up, before the next loss. After each
// kill, ingest must go on publishing and the sinks delivering with two
// nodes, and the longest pause the audit stream shows from the kill to the
// next one must stay within NATS's re-election time plus
// nodeLossResumeSlack. At the end: every audit and session event in the
// streams exactly once and at Fluentd at least once, every node's replica
// of the audit stream complete, no dead letters, `ingest status`'s
// per-date EVENTS adding up to the audit stream's count, no "lease lost"
// and no permissions violation in any log.
//
// teleport-sim cuts every export stream after a few hundred events and
// answers each call late while the nodes are killed, so the backfill is
// still running for the third kill on a fast machine; the faults are
// lifted afterwards.
func TestClusterDocsRun(t *testing.T) {
	t.Parallel()
	events, sessions := sized(60000, 200000), sized(20, 300)
	nodes, err := harness.ClusterNodeArgs(3)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), sized(12*time.Minute, 40*time.Minute))
	t.Cleanup(cancel)
	// Step 1: configure --nats-cluster NAME=HOST:PORT,… --nats-store-dir
	// <dir> <out-dir> (a store of the test's own, not /var/lib/nats).
	p, err := harness.NewPipelineArgs(ctx, binDir, dir, "--nats-cluster", strings.Join(nodes, ","),
		"--nats-store-dir", filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.StopAll(10 * time.Second) })
	toml, err := os.ReadFile(p.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"url = \"tls://127.0.0.1:", "replicas = 3", "ca = "} {
		if !strings.Contains(string(toml), want) {
			t.Fatalf("configure's TOML lacks %q under [nats]:\n%s", want, toml)
		}
	}

	// Step 2: start each node with its generated configuration, unchanged.
	parsed, err := configure.ParseClusterNodes(nodes)
	if err != nil {
		t.Fatal(err)
	}
	cluster := harness.ClusterFromConfigure(filepath.Join(dir, "nats"), p.Conf, parsed)
	if err := os.MkdirAll(filepath.Join(cluster.Dir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Run(ctx, filepath.Join(binDir, "nats-server")); err != nil {
		t.Fatal(err)
	}
	var r *harness.ClusterRun // once every process runs
	t.Cleanup(func() {
		if t.Failed() {
			for _, proc := range p.Procs() {
				t.Log(proc.Tail(40))
			}
			t.Log(cluster.Tails(20))
		}
		if r != nil {
			r.Stop(10 * time.Second)
		}
		cluster.Stop()
	})
	for _, n := range cluster.Nodes {
		if strings.Contains(n.Proc.Tail(200), "Plaintext passwords detected") {
			t.Errorf("%s warns about plaintext passwords", n.Name)
		}
	}

	from := time.Now().UTC().AddDate(0, 0, -4).Truncate(24 * time.Hour)
	if err := p.StartTeleport(ctx, "--events", fmt.Sprint(events), "--sessions", fmt.Sprint(sessions),
		"--from", from.Format(time.RFC3339), "--seed", "23", "--cut-after", "100", "--latency", "200ms"); err != nil {
		t.Fatal(err)
	}
	if err := p.StartFluentd(ctx); err != nil {
		t.Fatal(err)
	}
	// Step 3: ingest, then a sink on each "host", all with configure's TOML.
	ingestStart := time.Now()
	ing, err := p.StartIngest(ctx, "ingest", "--start-time", from.Format(time.RFC3339))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ing.WaitForLine(ctx, "ingest lease acquired"); err != nil {
		t.Fatal(err)
	}
	var sinks []*harness.Proc
	for i := 1; i <= 3; i++ {
		s, err := p.StartSink(ctx, fmt.Sprintf("sink-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		sinks = append(sinks, s)
	}
	if r, err = harness.ClusterRunOf(ctx, p, cluster, ing, ingestStart, sinks); err != nil {
		t.Fatal(err)
	}
	want, err := p.Expect(ctx, "print")
	if err != nil {
		t.Fatal(err)
	}

	losses := killEachKind(ctx, t, r, uint64(len(want.AuditIDs)))
	if err := harness.Post(ctx, "PUT", p.TeleportControl+"/faults", "{}"); err != nil {
		t.Fatal(err)
	}
	pollUntil(ctx, t, sized(6*time.Minute, 30*time.Minute), "every event at Fluentd", func(ctx context.Context) (bool, string) {
		alive(t, p)
		pr, err := p.FluentdProgress(ctx)
		return err == nil && want.Done(pr), fmt.Sprintf("%s (%v)", pr, err)
	})
	checkPublishGaps(ctx, t, r, losses)
	checkClusterDelivery(ctx, t, r, want)

	for _, proc := range p.Procs() {
		if strings.Contains(strings.ToLower(proc.Log()), "permissions violation") {
			t.Errorf("%s hit a permissions violation:\n%s", proc.Name, proc.Tail(20))
		}
	}
	if lost := lineWith(r.Ingest.Log(), "lease lost"); lost != "" {
		t.Errorf("ingest said it lost its lease, with no other ingest running: %s", lost)
	}
	if bad := p.StopAll(30 * time.Second); len(bad) > 0 {
		t.Errorf("did not stop cleanly: %v", bad)
	}
}

// alive fails the test when a process of p has exited.
func alive(t *testing.T, p *harness.Pipeline) {
	t.Helper()
	for _, proc := range p.Procs() {
		if done, code := proc.Exited(); done {
			t.Fatalf("%s exited (code %d) during the run\n%s", proc.Name, code, proc.Tail(20))
		}
	}
}

// killEachKind kills each kind of node once (harness.NodeKinds) while the
// backfill of total audit events runs: after each kill, ingest must add
// 1000 more events to the audit stream and Fluentd must store more than it
// had at the kill, with two nodes; then the node is started again, every
// replica caught up, and another 1000 events published before the next
// kill.
func killEachKind(ctx context.Context, t *testing.T, r *harness.ClusterRun, total uint64) []*harness.NodeLoss {
	t.Helper()
	onBus := func(ctx context.Context) (uint64, error) {
		info, err := r.Insp.StreamInfo(ctx, r.Insp.AuditStream())
		if err != nil {
			return 0, err
		}
		return info.State.Msgs, nil
	}
	stored := func(ctx context.Context) (int64, error) {
		s, err := r.P.FluentdStats(ctx)
		return s.StoredTotal, err
	}
	// grows waits until the audit stream holds step more messages than
	// from and Fluentd stores more than atFluentd, and returns what the
	// stream holds.
	grows := func(what string, from, step uint64, atFluentd int64) uint64 {
		var n uint64
		pollUntil(ctx, t, 3*time.Minute, what, func(ctx context.Context) (bool, string) {
			alive(t, r.P)
			var err error
			n, err = onBus(ctx)
			f, ferr := stored(ctx)
			return err == nil && ferr == nil && n >= min(from+step, total) && f > atFluentd,
				fmt.Sprintf("audit stream %d/%d (%v), Fluentd stored %d, %d at the start (%v)", n, total, err, f, atFluentd, ferr)
		})
		return n
	}

	var losses []*harness.NodeLoss
	held := grows("the first events on the bus and at Fluentd", 0, 2000, 0)
	for _, kind := range harness.NodeKinds {
		if held >= total {
			t.Fatalf("the backfill ended before the %s was killed: slow teleport-sim down further", kind)
		}
		atFluentd, err := stored(ctx)
		if err != nil {
			t.Fatal(err)
		}
		loss, err := r.Kill(ctx, kind)
		if err != nil {
			t.Fatalf("kill the %s: %v", kind, err)
		}
		losses = append(losses, loss)
		t.Logf("killed %s (%s) with %d/%d audit events on the bus; NATS re-elected in %s", loss.NodeName, kind, held, total, loss.Reelected.Round(time.Millisecond))
		held = grows(fmt.Sprintf("ingest and the sinks to go on after the %s was killed", kind), held, 1000, atFluentd)
		if err := r.Cluster.Start(ctx, loss.Node); err != nil {
			t.Fatal(err)
		}
		if err := r.Cluster.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		if err := r.Owner.WaitCurrent(ctx, "KV_"+r.Bucket, r.Owner.AuditStream(), r.Owner.SessionStream()); err != nil {
			t.Fatal(err)
		}
		held = grows(fmt.Sprintf("more events after %s came back", loss.NodeName), held, 1000, 0)
	}
	return losses
}

// checkPublishGaps fails for every loss after which the audit stream
// stored nothing for longer than NATS's re-election plus
// nodeLossResumeSlack, up to the next loss.
func checkPublishGaps(ctx context.Context, t *testing.T, r *harness.ClusterRun, losses []*harness.NodeLoss) {
	t.Helper()
	for i, loss := range losses {
		until := time.Time{}
		if i+1 < len(losses) {
			until = losses[i+1].KilledAt
		}
		gap, err := harness.Read(ctx, r, func(ctx context.Context, insp *harness.Inspector) (harness.Gap, error) {
			return insp.LongestGap(ctx, insp.AuditStream(), loss.KilledAt, until)
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s killed: longest publish gap %s (from %s after the kill), re-election %s",
			loss.Kind, gap.Len().Round(time.Millisecond), gap.From.Sub(loss.KilledAt).Round(time.Millisecond), loss.Reelected.Round(time.Millisecond))
		if gap.Len() > loss.Reelected+nodeLossResumeSlack {
			t.Errorf("after the %s (%s) was killed, nothing was published for %s (from %s to %s); NATS re-elected in %s, want at most %s more",
				loss.Kind, loss.NodeName, gap.Len().Round(time.Millisecond), gap.From.Format(time.RFC3339Nano), gap.To.Format(time.RFC3339Nano),
				loss.Reelected.Round(time.Millisecond), nodeLossResumeSlack)
		}
	}
}

// checkClusterDelivery checks, by id, every event once in the streams and
// at least once at Fluentd; every node's replica of the audit stream
// complete; no dead letters; and `ingest status`'s per-date EVENTS adding
// up to the audit stream's count.
func checkClusterDelivery(ctx context.Context, t *testing.T, r *harness.ClusterRun, want *harness.Expected) {
	t.Helper()
	streams, err := harness.Read(ctx, r, func(ctx context.Context, insp *harness.Inspector) (harness.Delivery, error) {
		audit, err := insp.MsgIDs(ctx, insp.AuditStream())
		if err != nil {
			return harness.Delivery{}, err
		}
		sessions, err := insp.MsgIDs(ctx, insp.SessionStream())
		if err != nil {
			return harness.Delivery{}, err
		}
		return want.CompareStreams(audit, sessions), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, problem := range streams.Problems() {
		t.Error(problem)
	}
	d, err := want.CompareFluentd(ctx, r.P)
	if err != nil {
		t.Fatal(err)
	}
	for _, problem := range d.Lost() {
		t.Error(problem)
	}
	t.Logf("Fluentd: %d audit and %d session duplicates (at-least-once delivery)", d.AuditDuplicates, d.SessionDuplicates)
	c, err := harness.Read(ctx, r, func(ctx context.Context, insp *harness.Inspector) (harness.BusCounts, error) { return insp.Counts(ctx) })
	if err != nil {
		t.Fatal(err)
	}
	if c.DeadLetters != 0 {
		t.Errorf("%d dead letters", c.DeadLetters)
	}
	for _, n := range r.Cluster.Nodes {
		pollUntil(ctx, t, time.Minute, n.Name+"'s replica of the audit stream to hold every message", func(ctx context.Context) (bool, string) {
			got, err := replicaMessages(ctx, n, r.Insp.AuditStream())
			return err == nil && got == c.AuditTotal, fmt.Sprintf("%d/%d messages (%v)", got, c.AuditTotal, err)
		})
	}
	sum, out, err := r.StatusEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sum != int64(c.AuditTotal) {
		t.Errorf("ingest status's per-date EVENTS add up to %d, the audit stream holds %d:\n%s", sum, c.AuditTotal, out)
	}
}

// jszStreams is the part of a node's /jsz?accounts=true&streams=true that
// tells, per stream, what this node's replica holds.
type jszStreams struct {
	Accounts []struct {
		Streams []struct {
			Name  string `json:"name"`
			State struct {
				Messages uint64 `json:"messages"`
			} `json:"state"`
		} `json:"stream_detail"`
	} `json:"account_details"`
}

func readJsz(ctx context.Context, n *harness.NATSNode) (jszStreams, error) {
	var j jszStreams
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.MonitorURL+"/jsz?accounts=true&streams=true", nil)
	if err != nil {
		return j, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return j, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return j, err
	}
	if resp.StatusCode != http.StatusOK {
		return j, fmt.Errorf("%s /jsz: %s", n.Name, resp.Status)
	}
	return j, json.Unmarshal(body, &j)
}

// replicaMessages is how many messages node n's replica of stream holds.
func replicaMessages(ctx context.Context, n *harness.NATSNode, stream string) (uint64, error) {
	j, err := readJsz(ctx, n)
	if err != nil {
		return 0, err
	}
	for _, a := range j.Accounts {
		for _, s := range a.Streams {
			if s.Name == stream {
				return s.State.Messages, nil
			}
		}
	}
	return 0, fmt.Errorf("%s has no replica of %s", n.Name, stream)
}
