package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// TestAnotherConsumerReceivesEveryAuditEvent runs audit-tail — a separate
// program with its own durable consumer on audit.>, written with nothing
// but pkg/bus — beside fluentd-sink: both receive every audit event (the
// fan-out). audit-tail is killed once mid-way and resumes from its durable
// consumer: nothing is missing from its file, and the lines it repeats are
// at most one fetch.
func TestAnotherConsumerReceivesEveryAuditEvent(t *testing.T) {
	const fetch = 200 // audit-tail's --batch
	r := newE2ERun(t, runSpec{
		events:   sized(50_000, 500_000),
		sessions: sized(100, 1000),
		days:     2,
		timeout:  sized(4*time.Minute, 30*time.Minute),
	})
	ing := r.ingest("ingest")
	snk := r.sink("fluentd-sink")
	out := filepath.Join(r.p.Dir, "audit-tail.ids")
	args := []string{
		"--nats-listen", r.p.NATSListen,
		"--nats-nkey", r.p.NATSSeed(bus.RoleReader),
		"--durable", "e2e-audit-tail",
		"--batch", fmt.Sprint(fetch),
		"--out", out,
		"--exit-on-idle", "5s",
	}
	at := r.auditTail(args)
	total := len(r.want.AuditIDs)
	r.waitLines(out, total/3, ing, snk, at)
	at.Kill()
	t.Logf("audit-tail killed after %d+ ids", total/3)
	at = r.auditTail(args)

	r.waitDelivered(ing, snk)
	ctx, cancel := context.WithTimeout(r.ctx, 2*time.Minute)
	defer cancel()
	code, err := at.Wait(ctx)
	if err != nil {
		t.Fatalf("audit-tail did not exit on idle: %v", err)
	}
	if code != 0 {
		t.Fatalf("audit-tail exited %d\n%s", code, at.Tail(20))
	}
	ids, err := readIDs(out)
	if err != nil {
		t.Fatal(err)
	}
	d := r.want.CompareAudit("audit-tail", ids)
	for _, problem := range d.Lost() {
		t.Error(problem)
	}
	t.Logf("audit-tail received %d distinct audit events, %d repeated after its kill", len(ids), d.AuditDuplicates)
	if d.AuditDuplicates > fetch {
		t.Errorf("audit-tail repeated %d events after one kill, want at most one fetch (%d)", d.AuditDuplicates, fetch)
	}
	r.checkFluentd(0)
	r.checkStreams()
}

// auditTail starts audit-tail once the NATS server answers; it is stopped
// when the test ends.
func (r *e2eRun) auditTail(args []string) *harness.Proc {
	r.t.Helper()
	r.inspector()
	proc, err := harness.Start(r.ctx, harness.Spec{
		Name: "audit-tail", Bin: filepath.Join(binDir, "audit-tail"), Args: args, LogDir: r.p.LogDir,
	})
	if err != nil {
		r.t.Fatal(err)
	}
	r.others = append(r.others, proc) // stopped with the pipeline
	return proc
}

// waitLines waits until file has at least n lines.
func (r *e2eRun) waitLines(file string, n int, procs ...*harness.Proc) {
	r.t.Helper()
	err := harness.WaitFor(r.ctx, fmt.Sprintf("%d lines in %s", n, filepath.Base(file)), func(context.Context) (bool, string, error) {
		if err := harness.Alive(procs...); err != nil {
			return false, "", err
		}
		data, err := os.ReadFile(file)
		if err != nil {
			return false, "", err
		}
		lines := bytes.Count(data, []byte("\n"))
		return lines >= n, fmt.Sprintf("%d lines", lines), nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
}

// readIDs counts the ids of a file written by audit-tail, one a line.
func readIDs(file string) (map[string]int, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read ids: %w", err)
	}
	ids := make(map[string]int)
	for _, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		if line != "" {
			ids[line]++
		}
	}
	return ids, nil
}
