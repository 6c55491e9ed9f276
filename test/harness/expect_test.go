package harness

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

// expected builds an Expected as Expect does, without a teleport-sim: audit
// ids a, b, c; session s1 with 4 events of which 1 print (3 to deliver),
// session s2 without a recording.
func expected() *Expected {
	e := &Expected{
		AuditIDs: []string{"a", "b", "c"},
		Sessions: []teleportsim.SessionInfo{
			{ID: "s1", Events: 4, Types: map[string]int{"print": 1, "resize": 3}},
			{ID: "s2", Events: 5, Missing: true},
		},
		SessionEvents: map[string]int{"s1": 3},
		SessionTotal:  3,
	}
	return e
}

func TestCompareStreams(t *testing.T) {
	full := func() (map[string]int, map[string]int) {
		return map[string]int{"a": 1, "b": 1, "c": 1}, map[string]int{"s1/0": 1, "s1/2": 1, "s1/3": 1}
	}
	tests := []struct {
		name   string
		change func(audit, sessions map[string]int)
		want   []string // words each problem line must hold, in order; nil: none
	}{
		{name: "complete", change: func(_, _ map[string]int) {}},
		{name: "audit missing", change: func(a, _ map[string]int) { delete(a, "b") }, want: []string{"1 audit events missing, e.g. b"}},
		{name: "audit unknown", change: func(a, _ map[string]int) { a["z"] = 1 }, want: []string{"1 audit ids Teleport does not hold, e.g. z"}},
		{name: "audit duplicate", change: func(a, _ map[string]int) { a["c"] = 3 }, want: []string{"2 duplicate audit events"}},
		{name: "session missing", change: func(_, s map[string]int) { delete(s, "s1/2") }, want: []string{"1 session events missing in 1 sessions, e.g. s1"}},
		{name: "session index out of range", change: func(_, s map[string]int) { s["s1/4"] = 1 }, want: []string{"1 session events that do not belong"}},
		{name: "session of a missing recording", change: func(_, s map[string]int) { s["s2/0"] = 1 }, want: []string{"s2: s2/0"}},
		{name: "session duplicate", change: func(_, s map[string]int) { s["s1/0"] = 2 }, want: []string{"1 duplicate session events"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			audit, sessions := full()
			tt.change(audit, sessions)
			got := expected().CompareStreams(audit, sessions).Problems()
			if len(got) != len(tt.want) {
				t.Fatalf("problems %q, want %d matching %q", got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) || !strings.HasPrefix(got[i], "stream: ") {
					t.Errorf("problem %q, want it to start with \"stream: \" and hold %q", got[i], w)
				}
			}
		})
	}
}

func TestDeliveryLostIgnoresDuplicates(t *testing.T) {
	d := expected().CompareAudit("fluentd", map[string]int{"a": 2, "b": 1, "c": 5})
	if lost := d.Lost(); len(lost) != 0 {
		t.Errorf("Lost() = %q, want nothing: duplicates are not losses", lost)
	}
	if d.AuditDuplicates != 5 {
		t.Errorf("AuditDuplicates = %d, want 5", d.AuditDuplicates)
	}
}

func TestExpectedDone(t *testing.T) {
	e := expected()
	for _, tt := range []struct {
		pr   Progress
		want bool
	}{
		{Progress{Audit: 3, Session: 3}, true},
		{Progress{Audit: 3, Session: 2}, false},
		{Progress{Audit: 2, Session: 3, Duplicates: 1}, false},
	} {
		if got := e.Done(tt.pr); got != tt.want {
			t.Errorf("Done(%s) = %v, want %v", tt.pr, got, tt.want)
		}
	}
}

func TestWaitFor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	calls := 0
	err := WaitFor(ctx, "three calls", func(context.Context) (bool, string, error) {
		calls++
		if calls == 1 {
			return false, "", errors.New("not up yet") // transient
		}
		return calls >= 3, "", nil
	})
	if err != nil || calls != 3 {
		t.Errorf("WaitFor = %v after %d calls, want nil after 3", err, calls)
	}
}

func TestWaitForTimeoutQuotesLastState(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := WaitFor(ctx, "the impossible", func(context.Context) (bool, string, error) {
		return false, "audit 7/10", nil
	})
	if err == nil || !strings.Contains(err.Error(), "waiting for the impossible") || !strings.Contains(err.Error(), "last state: audit 7/10") {
		t.Errorf("WaitFor = %v, want the wait and the last state named", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitFor = %v, want it to wrap context.DeadlineExceeded", err)
	}
}

func TestWaitForStopsAtOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	calls := 0
	err := WaitFor(ctx, "a dead process", func(context.Context) (bool, string, error) {
		calls++
		return false, "", errors.Join(ErrStopWaiting, errors.New("ingest exited (code 1)"))
	})
	if calls != 1 || !errors.Is(err, ErrStopWaiting) || !strings.Contains(err.Error(), "ingest exited") {
		t.Errorf("WaitFor = %v after %d calls, want ErrStopWaiting with the reason after 1", err, calls)
	}
}

// A check whose answer never comes (a request to a server killed while it
// answered) is given up after pollTimeout, and the next check runs.
func TestWaitForDoesNotHangOnOneCheck(t *testing.T) {
	defer func(d time.Duration) { pollTimeout = d }(pollTimeout)
	pollTimeout = 50 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	calls := 0
	err := WaitFor(ctx, "an answer", func(ctx context.Context) (bool, string, error) {
		calls++
		if calls == 1 {
			<-ctx.Done() // the lost request
			return false, "", ctx.Err()
		}
		return true, "", nil
	})
	if err != nil || calls != 2 {
		t.Errorf("WaitFor = %v after %d calls, want nil after 2", err, calls)
	}
}
