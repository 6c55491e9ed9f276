package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startBus runs an embedded server with the streams and publishes n audit
// events (ids ev-0 …) and one session event, which audit-tail must not
// print.
func startBus(t *testing.T, n int) *bus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.Open(ctx, config.NATSConfig{Listen: "127.0.0.1:0"}, t.TempDir(), "test", zerolog.Nop(), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		e := bus.Event{ID: fmt.Sprint("ev-", i), Type: "user.login", Time: time.Now(), JSON: []byte(`{}`)}
		if _, err := b.JS.PublishMsg(ctx, bus.NewMsg(e)); err != nil {
			t.Fatal(err)
		}
	}
	s := bus.Event{Session: true, SessionID: "s1", Index: 0, Type: "print", Time: time.Now(), JSON: []byte(`{}`)}
	if _, err := b.JS.PublishMsg(ctx, bus.NewMsg(s)); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTailWritesEveryAuditIDAndExitsOnIdle(t *testing.T) {
	b := startBus(t, 450)
	out := filepath.Join(t.TempDir(), "ids")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	args := []string{"--nats-url", b.Embedded.ClientURL(), "--stream", b.Cfg.AuditStream, "--batch", "100", "--out", out, "--exit-on-idle", "300ms"}
	if err := run(ctx, args, nil, &stderr); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 450 || lines[0] != "ev-0" || lines[449] != "ev-449" {
		t.Fatalf("got %d lines (%q … %q), want ev-0 … ev-449", len(lines), lines[0], lines[len(lines)-1])
	}

	// A second run resumes the durable consumer: nothing left, nothing
	// written again.
	if err := run(ctx, args, nil, &stderr); err != nil {
		t.Fatalf("second run: %v", err)
	}
	again, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, data) {
		t.Errorf("the second run wrote %d more bytes; the durable consumer should have resumed at the end", len(again)-len(data))
	}
}

func TestTailStopsOnCancel(t *testing.T) {
	b := startBus(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr logtest.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--nats-url", b.Embedded.ClientURL(), "--stream", b.Cfg.AuditStream}, &stdout, &stderr)
	}()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(20 * time.Second)
	for !strings.Contains(stdout.String(), "ev-2") {
		select {
		case <-deadline:
			t.Fatalf("audit-tail printed %q, want ev-0 … ev-2\n%s", stdout.String(), stderr.String())
		case <-tick.C:
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("audit-tail did not stop on cancel")
	}
	if got := stdout.String(); got != "ev-0\nev-1\nev-2\n" {
		t.Errorf("stdout %q, want the three ids", got)
	}
}

func TestTailBadFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--batch", "0"}, "--batch 0: must be at least 1"},
		{[]string{"--out", "/nonexistent-dir/ids"}, `open --out "/nonexistent-dir/ids"`},
		{[]string{"--nats-url", "nats://127.0.0.1:1"}, "connect to NATS at nats://127.0.0.1:1"},
	} {
		var stderr bytes.Buffer
		err := run(context.Background(), tt.args, nil, &stderr)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run %q = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}
