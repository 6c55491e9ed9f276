package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// BenchmarkCluster is `make bench-cluster`: the backfill against the
// 3-node cluster of deploy/nats (three nats-server processes, streams and
// state bucket R3), ingest and BENCH_CLUSTER_SINKS sinks given every
// node's URL, with one node killed (SIGKILL) once a third of the events
// are on the bus, and not restarted. One run per kind of node in
// BENCH_CLUSTER_KILL, each on a fresh cluster and pipeline. The table
// shows per run: events/s (ingest start → every event at fluentd-sim),
// NATS's re-election (the kill → the bucket's and the streams' infos
// answer with a new leader), the longest pause between two messages the
// audit stream stored, and by how much it exceeds the re-election; the
// peak RSS of every process; and missing/duplicated events, which fail
// the benchmark when not 0/0, as does an `ingest status` whose per-date
// EVENTS do not add up to the stream's count.
//
// Run it with `make bench-cluster` (or go test -run '^$' -bench
// BenchmarkCluster -benchtime 1x -timeout 60m ./test/bench/).
func BenchmarkCluster(b *testing.B) {
	o, err := clusterOptionsFromEnv()
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Minute)
	defer cancel()
	bin := b.TempDir()
	if err := harness.Build(ctx, bin); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		dir := workDir(b, o.options, i)
		var runs []*clusterRun
		for _, kind := range o.kills {
			cr, err := runCluster(ctx, bin, filepath.Join(dir, string(kind)), o, kind)
			if err != nil {
				printCluster(os.Stdout, o, runs) // the runs that completed
				b.Fatal(err)
			}
			runs = append(runs, cr)
		}
		printCluster(os.Stdout, o, runs)
		var problems []string
		for _, cr := range runs {
			problems = append(problems, cr.problems()...)
			if cr.loss != nil {
				b.ReportMetric(cr.gap.Len().Seconds(), string(cr.kind)+"-gap-s")
				b.ReportMetric(cr.loss.Reelected.Seconds(), string(cr.kind)+"-reelection-s")
			}
			b.ReportMetric(rate(cr.events, cr.overall), string(cr.kind)+"-events/s")
		}
		if len(problems) > 0 {
			b.Errorf("the run was not clean:\n  %s", strings.Join(problems, "\n  "))
		}
	}
}

// clusterOptions are BenchmarkCluster's knobs.
type clusterOptions struct {
	options
	// kills are the runs: one per kind of node killed, "none" for a run
	// without a kill (BENCH_CLUSTER_KILL, comma-separated: state-leader,
	// audit-leader, ingest-node, none, all; default state-leader, the
	// hardest case: the lease, positions and marks are written there).
	kills []harness.NodeKind
	// sinks is how many fluentd-sinks share the durable consumer
	// (BENCH_CLUSTER_SINKS, default 3).
	sinks int
}

// noKill is the run without a node loss, for the longest pause of a
// healthy cluster.
const noKill harness.NodeKind = "none"

func clusterOptionsFromEnv() (clusterOptions, error) {
	base, err := optionsFromEnv()
	if err != nil {
		return clusterOptions{}, err
	}
	o := clusterOptions{options: base}
	if o.events, err = envInt("BENCH_CLUSTER_EVENTS", 300_000, 1); err != nil {
		return o, err
	}
	if o.sinks, err = envInt("BENCH_CLUSTER_SINKS", 3, 1); err != nil {
		return o, err
	}
	v := os.Getenv("BENCH_CLUSTER_KILL")
	if v == "" {
		v = string(harness.StateLeader)
	}
	for _, k := range strings.Split(v, ",") {
		switch kind := harness.NodeKind(strings.TrimSpace(k)); kind {
		case "all":
			o.kills = append(o.kills, harness.NodeKinds...)
		case harness.StateLeader, harness.AuditLeader, harness.IngestNode, noKill:
			o.kills = append(o.kills, kind)
		default:
			return o, fmt.Errorf("BENCH_CLUSTER_KILL=%q: %q is none of state-leader, audit-leader, ingest-node, none, all", v, k)
		}
	}
	return o, nil
}

// clusterRun is what one run measured.
type clusterRun struct {
	kind    harness.NodeKind
	events  int
	overall time.Duration // ingest start → fluentd-sim stored every event
	loss    *harness.NodeLoss
	// gap is the longest pause between two audit messages; killedGap the
	// longest one from the kill on.
	gap, killedGap harness.Gap
	rss            []procRSS
	// statusEvents is the sum of `ingest status`'s EVENTS column, stream
	// the audit stream's message count.
	statusEvents int64
	stream       uint64
	missing      int
	fluentdDups  int
	streamDups   int
	notes        []string
}

func (cr *clusterRun) problems() []string {
	var out []string
	if cr.missing > 0 || cr.streamDups > 0 {
		out = append(out, fmt.Sprintf("%s: %d events missing at fluentd-sim, %d duplicated in the stream", cr.kind, cr.missing, cr.streamDups))
	}
	if cr.statusEvents != int64(cr.stream) {
		out = append(out, fmt.Sprintf("%s: ingest status counts %d events, the stream holds %d", cr.kind, cr.statusEvents, cr.stream))
	}
	return append(out, cr.notes...)
}

// runCluster is one backfill on a fresh cluster and pipeline under dir,
// killing the node of kind once a third of the events are on the bus.
func runCluster(ctx context.Context, bin, dir string, o clusterOptions, kind harness.NodeKind) (cr *clusterRun, err error) {
	p, err := harness.NewPipeline(ctx, bin, dir)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	from := now.AddDate(0, 0, -10).Truncate(24 * time.Hour)
	r, err := harness.StartClusterRun(ctx, p, from, []string{"--events", fmt.Sprint(o.events), "--sessions", "0", "--huge-events", "0",
		"--from", from.Format(time.RFC3339), "--to", now.Format(time.RFC3339), "--seed", "1", "--prerender"}, o.ingestFlags, o.sinks)
	if err != nil {
		return nil, withLogs(fmt.Errorf("%s: %w", kind, err), o.dir != "", []string{p.LogDir}, tails(p.Procs()))
	}
	cr = &clusterRun{kind: kind}
	defer func() {
		if bad := r.Stop(30 * time.Second); len(bad) > 0 {
			cr.notes = append(cr.notes, fmt.Sprintf("%s: did not stop cleanly: %s", kind, strings.Join(bad, ", ")))
		}
		if err != nil {
			err = withLogs(fmt.Errorf("%s: %w", kind, err), o.dir != "", []string{p.LogDir, r.Cluster.LogDir()},
				tails(p.Procs())+r.Cluster.Tails(tailLines))
		}
	}()
	tp, err := p.TeleportStats(ctx)
	if err != nil {
		return nil, err
	}
	cr.events = tp.Events
	want := int64(tp.Events)
	procs := append([]*harness.Proc{r.Ingest}, r.Sinks...)
	if kind != noKill {
		err = poll(ctx, 100*time.Millisecond, 20*time.Minute, procs, func(time.Time) (bool, string, error) {
			c, err := r.Insp.Counts(ctx)
			return err == nil && int64(c.AuditTotal) >= want/3, fmt.Sprintf("audit stream %d/%d (%v)", c.AuditTotal, want, err), nil
		})
		if err != nil {
			return nil, err
		}
		if cr.loss, err = r.Kill(ctx, kind); err != nil {
			return nil, err
		}
	}
	var done time.Time
	err = poll(ctx, 200*time.Millisecond, 30*time.Minute, procs, func(now time.Time) (bool, string, error) {
		fs, err := p.FluentdStats(ctx)
		if err != nil {
			return false, "", err
		}
		done = now
		return fs.StoredTotal >= want, fmt.Sprintf("stored by fluentd-sim %d/%d", fs.StoredTotal, want), nil
	})
	if err != nil {
		return nil, err
	}
	cr.overall = done.Sub(r.IngestStart)
	cr.rss = append(cr.rss, usage("ingest", r.Ingest, 0, ""))
	for _, s := range r.Sinks {
		cr.rss = append(cr.rss, usage(s.Name, s, goalSinkRSS, ""))
	}
	for i, n := range r.Cluster.Nodes {
		if n.Proc != nil {
			cr.rss = append(cr.rss, usage(n.Name, n.Proc, 0, "(bus)"))
		} else if cr.loss != nil && cr.loss.Node == i {
			cr.rss = append(cr.rss, procRSS{name: n.Name + " (killed)", bytes: cr.loss.PeakRSS, noGoal: "(bus)"})
		}
	}
	gap := func(since time.Time) (harness.Gap, error) {
		return harness.Read(ctx, r, func(ctx context.Context, insp *harness.Inspector) (harness.Gap, error) {
			return insp.LongestGap(ctx, insp.AuditStream(), since, time.Time{})
		})
	}
	if cr.gap, err = gap(r.IngestStart); err != nil {
		return nil, fmt.Errorf("the longest publish gap: %w", err)
	}
	if cr.loss != nil {
		if cr.killedGap, err = gap(cr.loss.KilledAt); err != nil {
			return nil, fmt.Errorf("the longest publish gap after the kill: %w", err)
		}
	}
	if cr.statusEvents, _, err = r.StatusEvents(ctx); err != nil {
		return nil, err
	}
	info, err := harness.Read(ctx, r, func(ctx context.Context, insp *harness.Inspector) (*jetstream.StreamInfo, error) {
		return insp.StreamInfo(ctx, insp.AuditStream())
	})
	if err != nil {
		return nil, fmt.Errorf("the audit stream's count: %w", err)
	}
	cr.stream = info.State.Msgs
	c, err := harness.Read(ctx, r, func(ctx context.Context, insp *harness.Inspector) (idChecks, error) {
		return checkIDs(ctx, p, insp, true)
	})
	if err != nil {
		return nil, fmt.Errorf("check the events by id: %w", err)
	}
	cr.missing, cr.fluentdDups, cr.streamDups = c.missing, c.fluentdDups, c.streamDup
	return cr, nil
}

// printCluster prints BenchmarkCluster's table.
func printCluster(out io.Writer, o clusterOptions, runs []*clusterRun) {
	fmt.Fprintf(out, "\nteleport-event-bus cluster benchmark: %d audit events; 3 nats-server processes (R3), ingest, %d fluentd-sinks, each a process on this machine (%d CPUs)\n",
		o.events, o.sinks, runtime.NumCPU())
	fmt.Fprintln(out, "one node killed (SIGKILL) once a third of the events are on the bus, not restarted; one fresh cluster per run")
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  run\tmeasured\tresult")
	fmt.Fprintln(tw, "  ---\t--------\t------")
	row := func(run, what, result string) { fmt.Fprintf(tw, "  %s\t%s\t%s\n", run, what, result) }
	for _, cr := range runs {
		run := "no node killed"
		if cr.loss != nil {
			run = fmt.Sprintf("%s killed (%s)", cr.kind, cr.loss.NodeName)
		}
		row(run, "overall: ingest start → fluentd-sim stored all", fmt.Sprintf("%s events/s (%s)", num(rate(cr.events, cr.overall)), cr.overall.Round(10*time.Millisecond)))
		if cr.loss != nil {
			row("", "NATS re-election: kill → new meta, bucket and stream leaders", cr.loss.Reelected.Round(10*time.Millisecond).String())
			row("", "longest publish gap from the kill on", fmt.Sprintf("%s (%s after the kill; %s beyond the re-election)",
				cr.killedGap.Len().Round(10*time.Millisecond), cr.killedGap.From.Sub(cr.loss.KilledAt).Round(10*time.Millisecond),
				(cr.killedGap.Len()-cr.loss.Reelected).Round(10*time.Millisecond)))
		}
		row("", "longest publish gap of the run", cr.gap.Len().Round(10*time.Millisecond).String())
		for _, p := range cr.rss {
			row("", "peak RSS "+p.name, fmt.Sprintf("%d MiB", p.bytes>>20))
		}
		row("", "missing at fluentd-sim / duplicated in the stream / at fluentd-sim", fmt.Sprintf("%d / %d / %d", cr.missing, cr.streamDups, cr.fluentdDups))
		row("", "ingest status EVENTS total / stream messages", fmt.Sprintf("%d / %d", cr.statusEvents, cr.stream))
	}
	tw.Flush()
	for _, cr := range runs {
		for _, n := range cr.notes {
			fmt.Fprintln(out, "  note:", n)
		}
	}
	fmt.Fprintln(out)
}
