package e2e

import (
	"context"
	"testing"
	"time"
)

// maxTakeover is how soon a standby ingest must take over from a dead
// leader (the default lease lasts 10 s).
const maxTakeover = 15 * time.Second

// TestStandbyIngestTakesOver runs two ingests on one NATS server — a
// separate nats-server process, so the bus outlives either ingest, as in a
// real HA deployment (an ingest's embedded server dies with it) — and kills
// the leader with SIGKILL mid-backfill: the standby takes over within 15 s
// with the default lease, finishes, and nothing is lost or duplicated.
func TestStandbyIngestTakesOver(t *testing.T) {
	r := newE2ERun(t, runSpec{
		events:   sized(100_000, 1_000_000),
		sessions: sized(300, 3000),
		days:     3,
		timeout:  sized(4*time.Minute, 40*time.Minute),
	})
	r.natsURL = r.startNATSServer()

	a := r.ingest("ingest-a")
	if _, err := a.WaitForLine(r.ctx, "ingest lease acquired"); err != nil {
		t.Fatal(err)
	}
	b := r.ingest("ingest-b")
	if _, err := b.WaitForLine(r.ctx, "standing by"); err != nil {
		t.Fatal(err)
	}
	snk := r.sink("fluentd-sink")

	r.waitBus(uint64(len(r.want.AuditIDs)*3/10), a, b, snk)
	c, err := r.busCounts(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	a.Kill()
	killed := time.Now()
	t.Logf("leader ingest-a killed with %d audit events on the bus", c.AuditTotal)

	ctx, cancel := context.WithTimeout(r.ctx, 2*maxTakeover)
	defer cancel()
	if _, err := b.WaitForLine(ctx, "ingest lease acquired"); err != nil {
		t.Fatalf("the standby did not take over: %v", err)
	}
	takeover := time.Since(killed)
	r.waitBus(c.AuditTotal+1, b, snk)
	publishing := time.Since(killed)
	t.Logf("standby ingest-b took the lease %s after the kill, publishing again after %s",
		takeover.Round(10*time.Millisecond), publishing.Round(10*time.Millisecond))
	if takeover > maxTakeover {
		t.Errorf("takeover took %s, want under %s", takeover.Round(10*time.Millisecond), maxTakeover)
	}

	r.waitDelivered(b, snk)
	r.checkStreams()
	r.checkFluentd(0)
	// Logged only: here the ingest's memory is its own, without an embedded
	// server, which tells the two apart when TestFluentdOutageAndSlowness
	// finds the ingest too big.
	r.checkRSS(0)
}

// startNATSServer starts bin/nats-server with JetStream on a free loopback
// port and returns its URL. It admits the users configure wrote, with their
// roles' permissions, like the embedded server (harness Pipeline.NATSServer).
// It is stopped with the pipeline.
func (r *e2eRun) startNATSServer() string {
	r.t.Helper()
	proc, url, err := r.p.NATSServer(r.ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	r.others = append(r.others, proc) // stopped with the pipeline
	return url
}
