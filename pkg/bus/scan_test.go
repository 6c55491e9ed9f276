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

// TestScanEndsWithTheTail: a scan returns once it has read the last
// message, not when its last fetch expires, and returns on its context's
// end while a fetch waits for messages that will not come. Each fetch here
// may wait ten minutes, so a scan that waited for one would fail the test.
// Before, every scan of a tail shorter than a batch took the whole fetch
// wait (5 s): each session recording resumed, each publish retry, and a
// stopping ingest waited for it.
func TestScanEndsWithTheTail(t *testing.T) {
	defer func(d time.Duration) { scanFetchWait = d }(scanFetchWait)
	scanFetchWait = 10 * time.Minute
	ctx := testCtx(t)
	b := openTestBus(t, config.NATSConfig{})
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 1010
	for i := range n {
		if _, err := b.JS.PublishMsg(ctx, NewMsg(auditEvent(i))); err != nil {
			t.Fatal(err)
		}
	}
	// scan runs f and fails the test unless it returns within a minute,
	// far less than one fetch's wait.
	scan := func(what string, f func() (int, error)) (int, error) {
		t.Helper()
		type result struct {
			n   int
			err error
		}
		done := make(chan result, 1)
		go func() {
			n, err := f()
			done <- result{n, err}
		}()
		select {
		case r := <-done:
			return r.n, r.err
		case <-time.After(time.Minute):
			t.Fatalf("%s: still scanning after a minute: the scan waits for its fetch to expire", what)
			return 0, nil
		}
	}

	read, err := scan("a tail of 10", func() (int, error) {
		return ScanTail(ctx, b.JS, DefaultAuditStream, n-10, func(string, uint64) {})
	})
	if err != nil || read != 10 {
		t.Fatalf("ScanTail after %d read %d of 10: %v", n-10, read, err)
	}
	read, err = scan("the whole stream, a full batch and ten more", func() (int, error) {
		return b.ScanMsgIDs(ctx, DefaultAuditStream, func(string) {})
	})
	if err != nil || read != n {
		t.Fatalf("ScanMsgIDs read %d of %d: %v", read, n, err)
	}

	// The stream is emptied under the scan, so its second fetch waits for
	// messages that will not come; the scan's context ends meanwhile.
	s, err := b.JS.Stream(ctx, DefaultAuditStream)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	purged := false
	read, err = scan("a scan whose context ends", func() (int, error) {
		return ScanTail(sctx, b.JS, DefaultAuditStream, 0, func(string, uint64) {
			if !purged {
				purged = true
				if err := s.Purge(context.WithoutCancel(ctx)); err != nil {
					t.Error(err)
				}
				time.AfterFunc(time.Second, cancel)
			}
		})
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("a scan whose context ended read %d messages and returned %v, want context.Canceled", read, err)
	}
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
