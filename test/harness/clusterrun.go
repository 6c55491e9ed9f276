package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// ClusterRun is the pipeline against the 3-node cluster of deploy/nats:
// ingest with R3 streams and bucket, and sinks, each given every node's
// URL and logging in as its role. `make bench-cluster` starts one with
// StartClusterRun; the docs-following e2e test starts the processes as
// docs/deployment.md says and takes them over with ClusterRunOf: both kill
// nodes with Kill and measure the same thing.
type ClusterRun struct {
	P       *Pipeline
	Cluster *NATSCluster
	// Insp reads the streams as the reader role; Owner looks at the
	// streams and the state bucket as ingest, their owner, does (the
	// reader may not see the bucket).
	Insp   *Inspector
	Owner  *Inspector
	Ingest *Proc
	Sinks  []*Proc
	// IngestStart is when ingest was started; the stream's messages from
	// then on are its publishes.
	IngestStart time.Time
	// Bucket is the state bucket; its stream is "KV_" + Bucket.
	Bucket string

	// ingestFlags are the [nats] flags ingest was started with, nil when
	// configure's TOML says it all; `ingest status` gets the same.
	ingestFlags []string
	statusRuns  int // names each `ingest status` run's log
}

// StartClusterRun starts the cluster (nats-server from bin), teleport-sim
// with teleportArgs, fluentd-sim, ingest from start with extra flags
// ingestArgs, and sinks fluentd-sinks, all under p.Dir. The processes end
// with ctx (and p.StopAll, Cluster.Stop).
func StartClusterRun(ctx context.Context, p *Pipeline, start time.Time, teleportArgs, ingestArgs []string, sinks int) (*ClusterRun, error) {
	cluster, err := StartNATSCluster(ctx, filepath.Join(p.Bin, "nats-server"), filepath.Join(p.Dir, "nats"))
	if err != nil {
		return nil, err
	}
	r := &ClusterRun{P: p, Cluster: cluster, Bucket: config.Default().NATS.StateBucket}
	fail := func(err error) (*ClusterRun, error) {
		cluster.Stop()
		return nil, err
	}
	if err := p.StartTeleport(ctx, teleportArgs...); err != nil {
		return fail(err)
	}
	if err := p.StartFluentd(ctx); err != nil {
		return fail(err)
	}
	// One TOML for all, as users run it: [nats] replicas = 3.
	toml, err := os.ReadFile(p.Config)
	if err != nil {
		return fail(err)
	}
	clusterTOML := strings.Replace(string(toml), "# replicas = 1", "replicas = 3", 1)
	if clusterTOML == string(toml) {
		return fail(fmt.Errorf("%s has no \"# replicas = 1\" line under [nats] to set", p.Config))
	}
	p.Config = filepath.Join(p.Dir, "cluster.toml")
	if err := os.WriteFile(p.Config, []byte(clusterTOML), 0o600); err != nil {
		return fail(err)
	}
	r.IngestStart = time.Now()
	r.ingestFlags = r.NATSFlags(NATSUserIngest)
	r.Ingest, err = p.StartIngest(ctx, "ingest", append(append(slices.Clone(r.ingestFlags),
		"--start-time", start.UTC().Format(time.RFC3339)), ingestArgs...)...)
	if err != nil {
		return fail(err)
	}
	if _, err := r.Ingest.WaitForLine(ctx, "ingest lease acquired"); err != nil {
		return fail(err)
	}
	for i := range sinks {
		s, err := p.StartSink(ctx, fmt.Sprintf("sink-%d", i+1), r.NATSFlags(NATSUserSink)...)
		if err != nil {
			return fail(err)
		}
		r.Sinks = append(r.Sinks, s)
	}
	if err := r.inspect(ctx); err != nil {
		return fail(err)
	}
	return r, nil
}

// ClusterRunOf is the ClusterRun of processes started by hand against the
// running cluster, as docs/deployment.md's steps start them (configure's
// TOML alone, no [nats] flags): ingest, started at ingestStart and holding
// the lease, and the sinks, all of them p's.
func ClusterRunOf(ctx context.Context, p *Pipeline, cluster *NATSCluster, ingest *Proc, ingestStart time.Time, sinks []*Proc) (*ClusterRun, error) {
	r := &ClusterRun{P: p, Cluster: cluster, Bucket: config.Default().NATS.StateBucket,
		Ingest: ingest, IngestStart: ingestStart, Sinks: sinks}
	return r, r.inspect(ctx)
}

// inspect connects the reader's and the owner's inspectors.
func (r *ClusterRun) inspect(ctx context.Context) error {
	var err error
	if r.Insp, err = NewInspectorFor(ctx, r.Cluster.NATSConfig(NATSUserReader)); err != nil {
		return err
	}
	if r.Owner, err = NewInspectorFor(ctx, r.Cluster.NATSConfig(NATSUserIngest)); err != nil {
		r.Insp.Close()
		r.Insp = nil
		return err
	}
	return nil
}

// NATSFlags are the [nats] flags of a command logging in as user, with
// the NKey seed configure wrote for it.
func (r *ClusterRun) NATSFlags(user string) []string {
	c := r.Cluster
	own := "--nats-nkey"
	switch user {
	case NATSUserIngest:
		own = "--ingest-nats-nkey"
	case NATSUserSink:
		own = "--sink-nats-nkey"
	}
	return []string{"--nats-url", c.URLs(), "--nats-ca", c.CA, own, c.Seeds[user]}
}

// Stop stops every process: the pipeline's (SIGTERM, then SIGKILL after
// timeout), then the cluster's. It returns the processes that did not
// exit cleanly.
func (r *ClusterRun) Stop(timeout time.Duration) []string {
	bad := r.P.StopAll(timeout)
	if r.Insp != nil {
		r.Insp.Close()
		r.Owner.Close()
	}
	r.Cluster.Stop()
	return bad
}

// NodeKind names which node a node-loss kills.
type NodeKind string

// The kinds of node whose loss costs ingest something different.
const (
	// StateLeader leads the state bucket's stream: the lease, positions
	// and marks are written there.
	StateLeader NodeKind = "state-leader"
	// AuditLeader leads the audit stream: the PubAcks come from it.
	AuditLeader NodeKind = "audit-leader"
	// IngestNode is the node ingest is connected to: it reconnects.
	IngestNode NodeKind = "ingest-node"
)

// NodeKinds are every NodeKind, in the order a test kills them.
var NodeKinds = []NodeKind{StateLeader, AuditLeader, IngestNode}

// NodeLoss is one node killed and what NATS took to recover from it.
type NodeLoss struct {
	Kind NodeKind
	// Node is the killed node's index and name.
	Node     int
	NodeName string
	KilledAt time.Time
	// Reelected is how long after the kill NATS had elected again every
	// leader the killed node held: the JetStream meta leader (which
	// creates consumers) as the running nodes' /jsz says, and the state
	// bucket's, the audit and the session stream's, as their infos say.
	Reelected time.Duration
	// PeakRSS is the killed node's peak resident set.
	PeakRSS int64
}

// Victim is the index of the node a loss of kind would kill now.
func (r *ClusterRun) Victim(ctx context.Context, kind NodeKind) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var name string
	var err error
	switch kind {
	case StateLeader:
		name, err = r.Owner.StreamLeader(ctx, "KV_"+r.Bucket)
	case AuditLeader:
		name, err = r.Owner.StreamLeader(ctx, r.Owner.AuditStream())
	case IngestNode:
		return r.Cluster.ConnectedTo(ctx, "ingest")
	default:
		return -1, fmt.Errorf("unknown node kind %q", kind)
	}
	if err != nil {
		return -1, err
	}
	i := r.Cluster.Node(name)
	if i < 0 {
		return -1, fmt.Errorf("the %s is %q, not a node of the cluster", kind, name)
	}
	return i, nil
}

// Kill kills the node of kind with SIGKILL and waits until every stream
// ingest uses has a leader again.
func (r *ClusterRun) Kill(ctx context.Context, kind NodeKind) (*NodeLoss, error) {
	i, err := r.Victim(ctx, kind)
	if err != nil {
		return nil, fmt.Errorf("find the %s: %w", kind, err)
	}
	n := r.Cluster.Nodes[i]
	loss := &NodeLoss{Kind: kind, Node: i, NodeName: n.Name, PeakRSS: n.Proc.PeakRSS()}
	r.Cluster.Kill(i)
	loss.KilledAt = time.Now()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := r.Owner.WaitNewLeaders(wctx, n.Name, "KV_"+r.Bucket, r.Owner.AuditStream(), r.Owner.SessionStream()); err != nil {
		return nil, err
	}
	if err := r.Cluster.WaitReady(wctx); err != nil {
		return nil, err
	}
	loss.Reelected = time.Since(loss.KilledAt)
	return loss, nil
}

// StatusEvents runs `ingest status` against the cluster, with the [nats]
// flags ingest runs with, and returns the sum of its per-date EVENTS
// column, with the output.
func (r *ClusterRun) StatusEvents(ctx context.Context) (int64, string, error) {
	args := append(append([]string{"status"}, r.P.IngestArgs()...), r.ingestFlags...)
	r.statusRuns++
	proc, err := r.P.Run(ctx, fmt.Sprintf("ingest-status-%d", r.statusRuns), nil, "ingest", args...)
	if err != nil {
		return 0, "", err
	}
	out := proc.Log()
	if _, code := proc.Exited(); code != 0 {
		return 0, out, fmt.Errorf("ingest status exited %d:\n%s", code, out)
	}
	n, err := DateEventsTotal(out)
	return n, out, err
}

// dateRow is a row of `ingest status`'s per-date table: DATE, CHUNKS DONE,
// EVENTS, STATE.
var dateRow = regexp.MustCompile(`(?m)^(\d{4}-\d{2}-\d{2})\s+\d+/\d+\s+(\d+)\s+(open|closed)\s*$`)

// DateEventsTotal sums the EVENTS column of `ingest status`'s per-date
// table; output without the table is an error.
func DateEventsTotal(out string) (int64, error) {
	rows := dateRow.FindAllStringSubmatch(out, -1)
	if len(rows) == 0 {
		return 0, fmt.Errorf("no per-date rows in the output of ingest status:\n%s", out)
	}
	var sum int64
	for _, m := range rows {
		n, err := strconv.ParseInt(m[2], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("ingest status: EVENTS %q of %s: %w", m[2], m[1], err)
		}
		sum += n
	}
	return sum, nil
}

// Read calls f with the run's reader inspector until it succeeds (see
// Settled), connecting the inspector anew after each failure: after node
// losses a connection has been seen to get "no responders" to every
// JetStream request for longer than any election while others worked.
func Read[T any](ctx context.Context, r *ClusterRun, f func(context.Context, *Inspector) (T, error)) (T, error) {
	failed := false
	return Settled(ctx, func(ctx context.Context) (T, error) {
		if failed {
			insp, err := NewInspectorFor(ctx, r.Cluster.NATSConfig(NATSUserReader))
			if err != nil {
				var zero T
				return zero, err
			}
			r.Insp.Close()
			r.Insp = insp
		}
		v, err := f(ctx, r.Insp)
		failed = err != nil
		return v, err
	})
}
