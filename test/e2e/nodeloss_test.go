package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// nodeLossResumeSlack is how long after NATS's own re-election publishing
// may stay stopped in TestClusterEachNodeLoss: generous, for a loaded CI
// machine; the real figure is `make bench-cluster`'s.
const nodeLossResumeSlack = 10 * time.Second

// TestClusterEachNodeLoss runs a backfill against the 3-node cluster of
// deploy/nats (real nats-server processes, R3 streams and bucket; built on
// test/harness's rendering of deploy/nats) with ingest and two sinks, and
// kills each kind of node once (SIGKILL): the state bucket's leader, the
// audit stream's leader, the node ingest is connected to — each started
// again, and caught up, before the next loss. After each kill, publishing
// must go on within NATS's re-election time plus nodeLossResumeSlack (the
// longest pause the audit stream shows from the kill to the next one). At
// the end: every audit and session event in the streams exactly once, at
// Fluentd at least once, no dead letters, and `ingest status`'s per-date
// EVENTS adding up to the audit stream's count.
//
// teleport-sim cuts every export stream after a few hundred events and
// answers each call late while the nodes are killed, so the backfill is
// still running for the third kill on a fast machine; the faults are
// lifted afterwards.
func TestClusterEachNodeLoss(t *testing.T) {
	t.Parallel()
	const events, sessions = 60000, 20
	ctx, p := newPipeline(t, 12*time.Minute)
	from := time.Now().UTC().AddDate(0, 0, -4).Truncate(24 * time.Hour)
	r, err := harness.StartClusterRun(ctx, p, from, []string{"--events", fmt.Sprint(events), "--sessions", fmt.Sprint(sessions),
		"--from", from.Format(time.RFC3339), "--seed", "23", "--cut-after", "100", "--latency", "200ms"}, nil, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop(10 * time.Second)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(r.Ingest.Tail(40))
			t.Log(r.Cluster.Tails(10))
		}
	})
	want, err := p.Expect(ctx, "print")
	if err != nil {
		t.Fatal(err)
	}
	total := uint64(len(want.AuditIDs))
	procs := append([]*harness.Proc{r.Ingest}, r.Sinks...)
	alive := func() {
		for _, proc := range procs {
			if done, code := proc.Exited(); done {
				t.Fatalf("%s exited (code %d) during the run\n%s", proc.Name, code, proc.Tail(20))
			}
		}
	}
	onBus := func(ctx context.Context) (uint64, error) {
		info, err := r.Insp.StreamInfo(ctx, r.Insp.AuditStream())
		if err != nil {
			return 0, err
		}
		return info.State.Msgs, nil
	}
	// grows waits until the audit stream holds step more messages than
	// from, and returns how many it holds.
	grows := func(what string, from, step uint64) uint64 {
		var n uint64
		pollUntil(ctx, t, 3*time.Minute, what, func(ctx context.Context) (bool, string) {
			alive()
			var err error
			n, err = onBus(ctx)
			return err == nil && n >= min(from+step, total), fmt.Sprintf("audit stream %d/%d (%v)", n, total, err)
		})
		return n
	}

	var losses []*harness.NodeLoss
	held := grows("the first events on the bus", 0, 2000)
	for _, kind := range harness.NodeKinds {
		if held >= total {
			t.Fatalf("the backfill ended before the %s was killed: slow teleport-sim down further", kind)
		}
		loss, err := r.Kill(ctx, kind)
		if err != nil {
			t.Fatalf("kill the %s: %v", kind, err)
		}
		losses = append(losses, loss)
		t.Logf("killed %s (%s) with %d/%d audit events on the bus; NATS re-elected in %s", loss.NodeName, kind, held, total, loss.Reelected.Round(time.Millisecond))
		held = grows(fmt.Sprintf("ingest to go on publishing after the %s was killed", kind), held, 1000)
		if err := r.Cluster.Start(ctx, loss.Node); err != nil {
			t.Fatal(err)
		}
		if err := r.Cluster.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		if err := r.Owner.WaitCurrent(ctx, "KV_"+r.Bucket, r.Owner.AuditStream(), r.Owner.SessionStream()); err != nil {
			t.Fatal(err)
		}
		held = grows(fmt.Sprintf("more events after %s came back", loss.NodeName), held, 1000)
	}
	if err := harness.Post(ctx, "PUT", p.TeleportControl+"/faults", "{}"); err != nil {
		t.Fatal(err)
	}

	pollUntil(ctx, t, 6*time.Minute, "every event at Fluentd", func(ctx context.Context) (bool, string) {
		alive()
		pr, err := p.FluentdProgress(ctx)
		return err == nil && want.Done(pr), fmt.Sprintf("%s (%v)", pr, err)
	})
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
	d, err := want.CompareFluentd(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	for _, problem := range d.Lost() {
		t.Error(problem)
	}
	c, err := harness.Read(ctx, r, func(ctx context.Context, insp *harness.Inspector) (harness.BusCounts, error) { return insp.Counts(ctx) })
	if err != nil {
		t.Fatal(err)
	}
	if c.DeadLetters != 0 {
		t.Errorf("%d dead letters", c.DeadLetters)
	}
	sum, out, err := r.StatusEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sum != int64(c.AuditTotal) {
		t.Errorf("ingest status's per-date EVENTS add up to %d, the audit stream holds %d:\n%s", sum, c.AuditTotal, out)
	}
	if lost := lineWith(r.Ingest.Log(), "lease lost"); lost != "" {
		t.Errorf("ingest said it lost its lease, with no other ingest running: %s", lost)
	}
	t.Logf("Fluentd: %d audit and %d session duplicates (at-least-once delivery)", d.AuditDuplicates, d.SessionDuplicates)
}
