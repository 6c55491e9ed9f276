package bus

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// TestScansLeaveNoConsumers runs scans that succeed, and one that fails
// half-way, and lists the stream's consumers after each, as `nats
// consumer ls` would: a scan deletes the consumer it created, so faults
// that make writers rescan do not leave dozens behind.
func TestScansLeaveNoConsumers(t *testing.T) {
	ctx := testCtx(t)
	b := openTestBus(t, config.NATSConfig{})
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 2500
	for i := range n {
		if _, err := b.JS.PublishMsg(ctx, NewMsg(auditEvent(i))); err != nil {
			t.Fatal(err)
		}
	}
	s, err := b.JS.Stream(ctx, DefaultAuditStream)
	if err != nil {
		t.Fatal(err)
	}
	consumers := func(after string) {
		t.Helper()
		var names []string
		l := s.ConsumerNames(ctx)
		for name := range l.Name() {
			names = append(names, name)
		}
		if err := l.Err(); err != nil {
			t.Fatal(err)
		}
		if len(names) > 0 {
			t.Errorf("after %s, the stream has %d consumers: %v", after, len(names), names)
		}
	}

	read, err := b.ScanMsgIDs(ctx, DefaultAuditStream, func(string) {})
	if err != nil || read != n {
		t.Fatalf("ScanMsgIDs read %d of %d: %v", read, n, err)
	}
	consumers("a whole scan")
	read, err = ScanTail(ctx, b.JS, DefaultAuditStream, 2000, func(string, uint64) {})
	if err != nil || read != n-2000 {
		t.Fatalf("ScanTail after 2000 read %d of %d: %v", read, n-2000, err)
	}
	consumers("a scan of the tail")

	// The stream is emptied under the scan: it reads what the first batch
	// brought, then nothing more, and fails.
	purged := false
	read, err = ScanTail(ctx, b.JS, DefaultAuditStream, 0, func(string, uint64) {
		if !purged {
			purged = true
			if err := s.Purge(context.WithoutCancel(ctx)); err != nil {
				t.Error(err)
			}
		}
	})
	if err == nil {
		t.Fatalf("a scan of a stream purged under it read %d messages and did not fail", read)
	}
	t.Logf("the failed scan: %v", err)
	consumers("a failed scan")
}

// TestWaitStream: a stream that answers is not waited for, and neither is
// one that does not exist; with the server gone, the wait ends with the
// context, saying which stream did not answer.
func TestWaitStream(t *testing.T) {
	ctx := testCtx(t)
	b := openTestBus(t, config.NATSConfig{})
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	if err := WaitStream(ctx, b.JS, DefaultAuditStream); err != nil {
		t.Fatalf("WaitStream on a stream with a leader: %v", err)
	}
	if err := WaitStream(ctx, b.JS, "NO_SUCH_STREAM"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("WaitStream on a missing stream: %v; want ErrStreamNotFound", err)
	}
	b.Embedded.Shutdown()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err := WaitStream(wctx, b.JS, DefaultAuditStream)
	if err == nil || !strings.Contains(err.Error(), `stream "TELEPORT_AUDIT" does not answer`) {
		t.Fatalf("WaitStream with the server gone: %v", err)
	}
}
