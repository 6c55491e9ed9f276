package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/configure"
	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// TestClusterDocsRun follows docs/deployment.md's "Cluster (three NATS
// servers)" as an operator would, on one machine: configure with
// --nats-cluster (nodes on 127.0.0.1 and their own ports, as the section
// says for one machine), three real nats-server processes started with the
// generated nats-cluster/nats-N.conf unchanged, ingest with the TOML
// configure wrote (replicas 3, its NKey, the CA) and three sinks with the
// same TOML, against teleport-sim and fluentd-sim. Every event id must be
// in the audit stream once and at Fluentd at least once, every session
// event in its stream once, and the stream replicated on three nodes.
func TestClusterDocsRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node NATS cluster")
	}
	nodes, err := harness.ClusterNodeArgs(3)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
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
	defer cluster.Stop()
	t.Cleanup(func() {
		if t.Failed() {
			for _, proc := range p.Procs() {
				t.Log(proc.Tail(40))
			}
			t.Log(cluster.Tails(20))
		}
	})
	for _, n := range cluster.Nodes {
		if strings.Contains(n.Proc.Tail(200), "Plaintext passwords detected") {
			t.Errorf("%s warns about plaintext passwords", n.Name)
		}
	}

	from := time.Now().UTC().AddDate(0, 0, -2).Truncate(24 * time.Hour)
	if err := p.StartTeleport(ctx, "--events", "3000", "--sessions", "10", "--from", from.Format(time.RFC3339), "--seed", "11"); err != nil {
		t.Fatal(err)
	}
	if err := p.StartFluentd(ctx); err != nil {
		t.Fatal(err)
	}
	// Step 3: ingest, then a sink on each "host", all with configure's TOML.
	ing, err := p.StartIngest(ctx, "ingest", "--start-time", from.Format(time.RFC3339))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ing.WaitForLine(ctx, "ingest lease acquired"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if _, err := p.StartSink(ctx, fmt.Sprintf("sink-%d", i)); err != nil {
			t.Fatal(err)
		}
	}

	// The nodeloss work adds here: kill each kind of node once during the
	// backfill (the state bucket's leader, the audit stream's leader, the
	// node ingest is connected to), measure the publish gap against the
	// re-election, and compare `ingest status` totals with the stream.

	insp, err := harness.NewInspectorFor(ctx, cluster.NATSConfig(harness.NATSUserReader))
	if err != nil {
		t.Fatal(err)
	}
	defer insp.Close()
	ids, err := p.TeleportIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tpSessions, err := p.TeleportSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantAudit := uint64(len(ids))
	wantSession := uint64(harness.ExpectedSessionEvents(tpSessions, "print"))
	pollUntil(ctx, t, 4*time.Minute, "every event on the bus and at Fluentd", func(ctx context.Context) (bool, string) {
		for _, proc := range p.Procs() {
			if done, code := proc.Exited(); done {
				t.Fatalf("%s exited (code %d)\n%s", proc.Name, code, proc.Tail(20))
			}
		}
		c, err := insp.Counts(ctx)
		if err != nil {
			return false, err.Error()
		}
		s, err := p.FluentdStats(ctx)
		if err != nil {
			return false, err.Error()
		}
		var audit, session int64
		for tag, n := range s.Stored {
			if strings.HasPrefix(tag, "session.") {
				session += n
			} else {
				audit += n
			}
		}
		return c.AuditTotal == wantAudit && c.Sessions == wantSession && audit >= int64(wantAudit) && session >= int64(wantSession),
			fmt.Sprintf("bus audit %d/%d session %d/%d, Fluentd audit %d session %d", c.AuditTotal, wantAudit, c.Sessions, wantSession, audit, session)
	})

	auditIDs := streamIDs(ctx, t, insp, insp.AuditStream())
	atFluentd, err := p.FluentdIDs(ctx, "test.log")
	if err != nil {
		t.Fatal(err)
	}
	var missingBus, missingFluentd []string
	for _, id := range ids {
		if auditIDs[id] == 0 {
			missingBus = append(missingBus, id)
		}
		if atFluentd[id] == 0 {
			missingFluentd = append(missingFluentd, id)
		}
	}
	if len(missingBus) > 0 || len(missingFluentd) > 0 {
		t.Errorf("lost: %d events not in the stream (e.g. %v), %d not at Fluentd (e.g. %v)",
			len(missingBus), first(missingBus, 5), len(missingFluentd), first(missingFluentd, 5))
	}
	checkOnce(t, "audit stream", auditIDs)
	checkOnce(t, "session stream", streamIDs(ctx, t, insp, insp.SessionStream()))
	for _, n := range cluster.Nodes {
		got, err := replicaMessages(ctx, n, insp.AuditStream())
		if err != nil || got != wantAudit {
			t.Errorf("%s's replica of the audit stream holds %d messages (%v), want %d (replicas 3)", n.Name, got, err, wantAudit)
		}
	}
	for _, proc := range p.Procs() {
		if strings.Contains(strings.ToLower(proc.Tail(500)), "permissions violation") {
			t.Errorf("%s hit a permissions violation:\n%s", proc.Name, proc.Tail(20))
		}
	}
	if bad := p.StopAll(30 * time.Second); len(bad) > 0 {
		t.Errorf("did not stop cleanly: %v", bad)
	}
}
