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

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// TestClusterNodeLoss runs the pipeline against a 3-node NATS cluster of
// real nats-server processes (configure --nats-cluster's files for this
// machine: client and route TLS, per-role NKey users) with R3 streams: one ingest and two sinks,
// each given the list of all three URLs. Mid-run the node leading the audit
// stream is killed with SIGKILL; delivery must go on with two nodes, and
// after the node is restarted it must catch up. At the end every event
// Teleport holds is in the streams exactly once (by Nats-Msg-Id) and at
// Fluentd, within a deadline, with nothing dead-lettered.
func TestClusterNodeLoss(t *testing.T) {
	events, sessions := 20000, 40
	if os.Getenv("SOAK") == "1" {
		events, sessions = 200000, 300
	}
	ctx, p := newPipeline(t, 8*time.Minute)
	dir := p.Dir
	cluster, err := harness.StartNATSCluster(ctx, filepath.Join(binDir, "nats-server"), filepath.Join(dir, "nats"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, proc := range p.Procs() {
			t.Log(proc.Tail(15))
		}
		for _, n := range cluster.Nodes {
			if n.Proc != nil {
				t.Log(n.Proc.Tail(10))
			}
		}
	})

	from := time.Now().UTC().AddDate(0, 0, -3).Truncate(24 * time.Hour)
	if err := p.StartTeleport(ctx, "--events", fmt.Sprint(events), "--sessions", fmt.Sprint(sessions),
		"--from", from.Format(time.RFC3339), "--seed", "7"); err != nil {
		t.Fatal(err)
	}
	if err := p.StartFluentd(ctx); err != nil {
		t.Fatal(err)
	}
	// One TOML for all, as users run it: [nats] replicas = 3. The sink has
	// no --nats-replicas flag, and a sink left at replicas 1 would try to
	// scale the streams down (TestSinkLeavesStreamSettingsAlone).
	toml, err := os.ReadFile(p.Config)
	if err != nil {
		t.Fatal(err)
	}
	clusterTOML := strings.Replace(string(toml), "# replicas = 1", "replicas = 3", 1)
	if clusterTOML == string(toml) {
		t.Fatalf("%s has no \"# replicas = 1\" line under [nats] to set", p.Config)
	}
	p.Config = filepath.Join(dir, "cluster.toml")
	if err := os.WriteFile(p.Config, []byte(clusterTOML), 0o600); err != nil {
		t.Fatal(err)
	}
	// The cluster's URLs and CA, and the role's own NKey (the flag wins
	// over the pipeline TOML's [ingest]/[sink] nats-nkey).
	natsFlags := func(user string) []string {
		own := "--ingest-nats-nkey"
		if user == harness.NATSUserSink {
			own = "--sink-nats-nkey"
		}
		return []string{"--nats-url", cluster.URLs(), "--nats-ca", cluster.CA, own, cluster.Seeds[user]}
	}
	ing, err := p.StartIngest(ctx, "ingest", append(natsFlags(harness.NATSUserIngest),
		"--nats-replicas", "3", "--start-time", from.Format(time.RFC3339))...)
	if err != nil {
		t.Fatal(err)
	}
	// The sink's user may only look at the streams: ingest creates them.
	if _, err := ing.WaitForLine(ctx, "ingest lease acquired"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sink-1", "sink-2"} {
		if _, err := p.StartSink(ctx, name, natsFlags(harness.NATSUserSink)...); err != nil {
			t.Fatal(err)
		}
	}
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
	delivered := func(ctx context.Context) (audit, session int64, err error) {
		s, err := p.FluentdStats(ctx)
		if err != nil {
			return 0, 0, err
		}
		for tag, n := range s.Stored {
			if strings.HasPrefix(tag, "session.") {
				session += n
			} else {
				audit += n
			}
		}
		return audit, session, nil
	}
	alive := func() {
		for _, proc := range p.Procs() {
			if done, code := proc.Exited(); done {
				t.Fatalf("%s exited (code %d) during the run\n%s", proc.Name, code, proc.Tail(20))
			}
		}
	}

	// Mid-run: some events delivered, most not yet.
	var atKill int64
	pollUntil(ctx, t, 3*time.Minute, "the first 10% of the events at Fluentd", func(ctx context.Context) (bool, string) {
		alive()
		a, _, err := delivered(ctx)
		atKill = a
		return err == nil && a >= int64(wantAudit)/10, fmt.Sprintf("audit %d/%d (%v)", a, wantAudit, err)
	})
	victim := streamLeader(ctx, cluster, insp.AuditStream())
	if victim < 0 {
		victim = 1
	}
	var busAtKill uint64
	pollUntil(ctx, t, time.Minute, "the bus counts before the kill", func(ctx context.Context) (bool, string) {
		c, err := insp.Counts(ctx)
		busAtKill = c.AuditTotal
		return err == nil, fmt.Sprint(err)
	})
	t.Logf("killing %s (audit stream leader) with %d/%d audit events delivered", cluster.Nodes[victim].Name, atKill, wantAudit)
	cluster.Kill(victim)
	killedAt := time.Now()

	// With one node down, ingest goes on publishing and the sinks go on
	// delivering: another 10% of the events (or the rest) reaches the
	// stream, and Fluentd gets past what the stream held at the kill.
	busStep := min(wantAudit/10, wantAudit-busAtKill)
	pollUntil(ctx, t, 2*time.Minute, "ingest and sinks to go on with one node down", func(ctx context.Context) (bool, string) {
		alive()
		c, cerr := insp.Counts(ctx)
		a, _, err := delivered(ctx)
		return cerr == nil && err == nil && c.AuditTotal >= busAtKill+busStep && a > int64(busAtKill),
			fmt.Sprintf("bus audit %d (%d at the kill), Fluentd audit %d (%d at the kill), want %d/%d of %d (%v, %v)",
				c.AuditTotal, busAtKill, a, atKill, busAtKill+busStep, busAtKill+1, wantAudit, cerr, err)
	})
	a, _, err := delivered(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("with %s down for %s: %d/%d audit events delivered", cluster.Nodes[victim].Name, time.Since(killedAt).Round(time.Millisecond), a, wantAudit)
	if err := cluster.Start(ctx, victim); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	// Nothing stuck: everything arrives within the deadline.
	pollUntil(ctx, t, 4*time.Minute, "every event on the bus and at Fluentd", func(ctx context.Context) (bool, string) {
		alive()
		c, err := insp.Counts(ctx)
		if err != nil {
			return false, err.Error()
		}
		a, s, err := delivered(ctx)
		if err != nil {
			return false, err.Error()
		}
		return c.AuditTotal == wantAudit && c.Sessions == wantSession && a >= int64(wantAudit) && s >= int64(wantSession),
			fmt.Sprintf("bus audit %d/%d session %d/%d, Fluentd audit %d session %d, dead letters %d",
				c.AuditTotal, wantAudit, c.Sessions, wantSession, a, s, c.DeadLetters)
	})

	// Nothing lost, by id, and no duplicates in the streams.
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
	sessionIDs := streamIDs(ctx, t, insp, insp.SessionStream())
	checkOnce(t, "session stream", sessionIDs)
	if uint64(len(sessionIDs)) != wantSession {
		t.Errorf("session stream holds %d distinct events, want %d", len(sessionIDs), wantSession)
	}
	var c harness.BusCounts
	pollUntil(ctx, t, time.Minute, "the bus counts", func(ctx context.Context) (bool, string) {
		var err error
		c, err = insp.Counts(ctx)
		return err == nil, fmt.Sprint(err)
	})
	if c.DeadLetters != 0 {
		t.Errorf("%d dead letters", c.DeadLetters)
	}
	fs, err := p.FluentdStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Fluentd: %d records stored, %d duplicates (at-least-once delivery)", fs.StoredTotal, fs.DuplicatesTotal)

	// The restarted node catches up: its replica of the audit stream holds
	// every message again.
	pollUntil(ctx, t, time.Minute, cluster.Nodes[victim].Name+"'s replica to catch up", func(ctx context.Context) (bool, string) {
		n, err := replicaMessages(ctx, cluster.Nodes[victim], insp.AuditStream())
		return err == nil && n == wantAudit, fmt.Sprintf("%d/%d messages (%v)", n, wantAudit, err)
	})
	if bad := p.StopAll(30 * time.Second); len(bad) > 0 {
		t.Errorf("did not stop cleanly: %v", bad)
	}
}

// streamIDs reads every Nats-Msg-Id of stream, retrying while the cluster
// settles after the restart (a stream leader election answers "no
// responders" for a moment).
func streamIDs(ctx context.Context, t *testing.T, insp *harness.Inspector, stream string) map[string]int {
	t.Helper()
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		ids, err := insp.MsgIDs(actx, stream)
		cancel()
		if err == nil {
			return ids
		}
		if attempt == 5 || ctx.Err() != nil {
			t.Fatalf("read the message ids of %s: %v", stream, err)
		}
		t.Logf("read the message ids of %s (attempt %d): %v; retrying", stream, attempt, err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// TestSinkLeavesStreamSettingsAlone starts a sink with the defaults of
// [nats] against streams ingest created with other settings (retention by
// age, a longer dedup window): the streams belong to ingest, and a sink,
// which only reads them, must neither change their settings nor fail.
// (On a cluster whose sink user may not update streams, a sink at replicas
// 1 against R3 streams exits: "JetStream refused the change (replicas 3 →
// 1)"; with an unrestricted user it would scale the streams down to R1.)
func TestSinkLeavesStreamSettingsAlone(t *testing.T) {
	ctx, p := newPipeline(t, 2*time.Minute)
	if err := p.StartTeleport(ctx, "--events", "50", "--sessions", "2"); err != nil {
		t.Fatal(err)
	}
	if err := p.StartFluentd(ctx); err != nil {
		t.Fatal(err)
	}
	const maxAge, dupWindow = 720 * time.Hour, 10 * time.Minute
	ing, err := p.StartIngest(ctx, "ingest", "--nats-max-age", maxAge.String(), "--nats-duplicate-window", dupWindow.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ing.WaitForLine(ctx, "ingest lease acquired"); err != nil {
		t.Fatal(err)
	}
	sink, err := p.StartSink(ctx, "fluentd-sink")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.WaitForLine(ctx, "reading stream"); err != nil {
		t.Error(err)
	}
	cfg := config.Default().NATS
	cfg.Listen = p.NATSListen
	cfg.NKey = p.NATSSeed(bus.RoleReader)
	b, err := bus.Open(ctx, cfg, "", "e2e-stream-settings", zerolog.Nop(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, name := range []string{b.Cfg.AuditStream, b.Cfg.SessionStream} {
		info, err := b.StreamInfo(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.MaxAge != maxAge || info.Config.Duplicates != dupWindow {
			t.Errorf("stream %s: max age %s, duplicate window %s after the sink started; ingest made them %s and %s",
				name, info.Config.MaxAge, info.Config.Duplicates, maxAge, dupWindow)
		}
	}
	if line := lineWith(sink.Log(), "stream settings updated"); line != "" {
		t.Errorf("the sink changed the streams: %s", line)
	}
	if done, code := sink.Exited(); done {
		t.Errorf("the sink exited (code %d)\n%s", code, sink.Tail(10))
	}
}

// checkOnce fails for every id a stream holds more than once.
func checkOnce(t *testing.T, what string, ids map[string]int) {
	t.Helper()
	var dups []string
	for id, n := range ids {
		if n > 1 {
			dups = append(dups, fmt.Sprintf("%s×%d", id, n))
		}
	}
	if len(dups) > 0 {
		t.Errorf("%s: %d ids held more than once, e.g. %v", what, len(dups), first(dups, 5))
	}
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// jszStreams is the part of a node's /jsz?accounts=true&streams=true that
// tells, per stream, the leader and what this node's replica holds.
type jszStreams struct {
	Accounts []struct {
		Streams []struct {
			Name    string `json:"name"`
			Cluster *struct {
				Leader string `json:"leader"`
			} `json:"cluster"`
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

// streamLeader is the index of the node leading stream, or -1 when no node
// says.
func streamLeader(ctx context.Context, c *harness.NATSCluster, stream string) int {
	for _, n := range c.Nodes {
		j, err := readJsz(ctx, n)
		if err != nil {
			continue
		}
		for _, a := range j.Accounts {
			for _, s := range a.Streams {
				if s.Name != stream || s.Cluster == nil {
					continue
				}
				for i, m := range c.Nodes {
					if m.Name == s.Cluster.Leader {
						return i
					}
				}
			}
		}
	}
	return -1
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
