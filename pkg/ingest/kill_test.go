package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

// childEnv carries a JSON configuration to a re-executed test binary,
// which then runs ingest and nothing else (see TestMain).
const childEnv = "INGEST_TEST_CHILD_CONFIG"

// runChild runs ingest with the configuration in raw; it is the child
// process of TestKillDashNineExactlyOnce.
func runChild(raw string) int {
	var cfg config.Config
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "child config:", err)
		return 2
	}
	if err := Run(context.Background(), &cfg, zerolog.New(os.Stderr).Level(zerolog.WarnLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "ingest:", err)
		return 1
	}
	if path := os.Getenv(reportEnv); path != "" {
		// The benchmark's measure of this process alone.
		if err := os.WriteFile(path, []byte(strconv.FormatUint(peakRSS(), 10)), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
			return 1
		}
	}
	return 0
}

// reportEnv names a file where a child ingest writes its peak RSS (KiB).
const reportEnv = "INGEST_TEST_CHILD_REPORT"

// startChild starts ingest in a child process; extra are added to its
// environment.
func startChild(t testing.TB, cfg *config.Config, extra ...string) (*exec.Cmd, <-chan error) {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(append(os.Environ(), childEnv+"="+string(raw)), extra...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, done
}

// TestKillDashNineExactlyOnce kills ingest mid-backfill, on the bulk
// export path and on the search path (a file-log Teleport, small pages
// fetched ahead, five daily windows).
func TestKillDashNineExactlyOnce(t *testing.T) {
	t.Parallel()
	for _, older := range []bool{false, true} {
		t.Run(map[bool]string{false: "bulk", true: "search"}[older], func(t *testing.T) {
			t.Parallel()
			testKillDashNine(t, older, 0)
		})
	}
}

// TestKillDashNineBeyondDuplicateWindow is TestKillDashNineExactlyOnce
// with a duplicate window of 300 ms, and each restart more than a window
// after the kill: JetStream's dedup no longer knows the events the killed
// ingest published after its last saved position, so only ingest's read
// of the stream after the saved floor keeps them from being published
// twice.
func TestKillDashNineBeyondDuplicateWindow(t *testing.T) {
	t.Parallel()
	for _, older := range []bool{false, true} {
		t.Run(map[bool]string{false: "bulk", true: "search"}[older], func(t *testing.T) {
			t.Parallel()
			testKillDashNine(t, older, 300*time.Millisecond)
		})
	}
}

// testKillDashNine kills ingest three times mid-backfill, then lets a
// fourth run finish, and checks every event is in the streams once. A
// window > 0 is the streams' duplicate window, and each restart waits
// until a window has passed since the kill.
func testKillDashNine(t *testing.T, older bool, window time.Duration) {
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 14, Events: 2000, Sessions: 8, From: now.Add(-5 * 24 * time.Hour), To: now, Older: older})
	e.cfg.Ingest.PageSize = 40
	e.cfg.Concurrency = 3
	e.cfg.Ingest.MaxInFlight = 64
	e.cfg.Ingest.LeaseTTL = time.Second
	if window > 0 {
		e.cfg.NATS.DuplicateWindow = window
	}
	b := e.shared()
	total := uint64(len(e.sim.AllEventIDs()))
	kills := 0
	for _, frac := range []float64{0.05, 0.4, 0.8} {
		cmd, done := startChild(t, e.cfg)
		target := uint64(frac * float64(total))
		if until(done, 30*time.Second, func() bool { return count(b, b.Cfg.AuditStream) >= target }) {
			kills++
		}
		_ = cmd.Process.Kill() // SIGKILL: no release, no flush, no cursor save
		<-done
		if window > 0 {
			// Not synchronisation: the time that has to pass for the
			// dedup window to forget what the killed ingest published.
			time.Sleep(3 * window)
		}
	}
	if kills < 2 {
		t.Errorf("only %d children were killed mid-backfill", kills)
	}
	_, done := startChild(t, e.cfg)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("final ingest: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("final ingest did not finish")
	}
	exactlyOnce(t, "audit stream", read(t, b.JS, b.Cfg.AuditStream), e.sim.AllEventIDs())
	exactlyOnce(t, "session stream", read(t, b.JS, b.Cfg.SessionStream), sessionIDs(e.sim))
}
