package ingest

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"
	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

// lateRecording is Teleport before a recording's upload lands: it answers
// NotFound to the first tries at one recording. With slow set, the answer
// to the last of them arrives only after the missing-recording TTL has run
// out, counted from the first try: the recording appeared while that
// answer was on its way.
type lateRecording struct {
	teleport.AuditLog
	sid  string
	fail int
	slow time.Duration

	mu    sync.Mutex
	tries []time.Time // when each try at sid began
}

func (l *lateRecording) StreamUnstructuredSessionEvents(ctx context.Context, sid string, from int64) (chan *auditlogpb.EventUnstructured, chan error) {
	if sid != l.sid {
		return l.AuditLog.StreamUnstructuredSessionEvents(ctx, sid, from)
	}
	l.mu.Lock()
	l.tries = append(l.tries, time.Now())
	n, first := len(l.tries), l.tries[0]
	l.mu.Unlock()
	if n > l.fail {
		return l.AuditLog.StreamUnstructuredSessionEvents(ctx, sid, from)
	}
	errc := make(chan error, 1)
	if n == l.fail && l.slow > 0 {
		t := time.NewTimer(time.Until(first.Add(l.slow)))
		defer t.Stop()
		select {
		case <-ctx.Done():
			errc <- ctx.Err()
			return nil, errc
		case <-t.C:
		}
	}
	errc <- status.Errorf(codes.NotFound, "session %q not found", sid)
	return nil, errc
}

// began returns when each try at the recording began.
func (l *lateRecording) began() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.tries...)
}

// TestRecordingThatAppearsLateIsRead: a recording that is not there for
// several tries is read once it appears, before its missing-recording TTL
// gives it up, and also when Teleport's answer to the last try that missed
// it comes after the TTL ran out (a slow server: that try began in time,
// so one more is made).
func TestRecordingThatAppearsLateIsRead(t *testing.T) {
	const ttl = 8 * time.Second // retries every 1 s, then 2 s: the 3rd try begins about 3 s in
	var mu sync.Mutex
	late := map[string]*lateRecording{} // by storage directory
	readerSource = func(cfg *config.Config, c *teleport.Client) teleport.AuditLog {
		mu.Lock()
		defer mu.Unlock()
		if l, ok := late[cfg.Storage]; ok {
			l.AuditLog = c
			return l
		}
		return c
	}
	t.Cleanup(func() { readerSource = func(_ *config.Config, c *teleport.Client) teleport.AuditLog { return c } })

	for _, tc := range []struct {
		name string
		slow time.Duration
	}{
		{"read before its TTL", 0},
		{"the last miss answered after the TTL", ttl + 500*time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			now := time.Now().UTC()
			e := newEnv(t, teleportsim.Options{Seed: 31, Events: 30, Sessions: 1, From: now.Add(-10 * time.Second), To: now})
			e.cfg.Ingest.MissingRecordingTTL = ttl
			sid := e.sim.Sessions()[0].ID
			l := &lateRecording{sid: sid, fail: 3, slow: tc.slow}
			mu.Lock()
			late[e.cfg.Storage] = l
			mu.Unlock()
			logs := &logtest.Buffer{}
			if err := e.run(zerolog.New(logs)); err != nil {
				t.Fatalf("Run: %v", err)
			}
			tries := l.began()
			if len(tries) < l.fail+1 {
				t.Fatalf("%d tries at the recording; want %d that miss and one that reads it", len(tries), l.fail)
			}
			if d := tries[l.fail-1].Sub(tries[0]); d >= ttl {
				t.Fatalf("the last try that missed began %s after the first, past the %s TTL: the machine is too slow for this test's timing", d, ttl)
			}
			b := e.open()
			exactlyOnce(t, "session stream", read(t, b.JS, b.Cfg.SessionStream), sessionIDs(e.sim))
			text := logs.String()
			if n := strings.Count(text, "session recording given up"); n != 0 {
				t.Errorf("%d recordings given up; the recording appeared before its TTL", n)
			}
			if n := countLines(text, sid, "session recording not available yet"); n != l.fail {
				t.Errorf("%d tries logged as not available yet; want %d", n, l.fail)
			}
			kv, err := b.State(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			entry, err := kv.Get(context.Background(), position.SessionKey(sid))
			if err != nil {
				t.Fatalf("session job state: %v", err)
			}
			var ss position.Session
			if err := json.Unmarshal(entry.Value(), &ss); err != nil {
				t.Fatal(err)
			}
			if !ss.Done || ss.GaveUp {
				t.Errorf("session job state %+v; want done", ss)
			}
			if tc.slow == 0 && !ss.Finished.Before(ss.FirstSeen.Add(ttl)) {
				t.Errorf("recording read %s after ingest saw its upload; want within the %s TTL", ss.Finished.Sub(ss.FirstSeen), ttl)
			}
		})
	}
}

// countLines counts the log lines that contain every one of subs.
func countLines(text string, subs ...string) int {
	n := 0
	for _, line := range strings.Split(text, "\n") {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			n++
		}
	}
	return n
}
