package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config/clitest"
)

// TestStatusFlagsAfterTheSubcommand runs the built binary as the README
// shows it, `ingest status --config <file>`, and with --storage on both
// sides of the subcommand: the one after it is the store status reads.
func TestStatusFlagsAfterTheSubcommand(t *testing.T) {
	bin := clitest.Build(t, "ingest")
	dir := t.TempDir()
	// Nothing listens on this address, so status reads the store itself.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	before, after := filepath.Join(dir, "before"), filepath.Join(dir, "after")
	conf := filepath.Join(dir, "x.toml")
	toml := fmt.Sprintf("storage = %q\n[nats]\nlisten = %q\n", before, listen)
	if err := os.WriteFile(conf, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}

	stdout, stderr, code := clitest.Exec(t, bin, "status", "--config", conf)
	if code != 0 {
		t.Fatalf("ingest status --config: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "STREAM") || !strings.Contains(stdout, "ingest has not run") {
		t.Errorf("status output:\n%s", stdout)
	}
	if _, err := os.Stat(filepath.Join(before, "store.lock")); err != nil {
		t.Errorf("status did not read the configured storage: %v", err)
	}

	stdout, stderr, code = clitest.Exec(t, bin, "--config", conf, "--storage", before, "status", "--storage", after)
	if code != 0 {
		t.Fatalf("ingest --storage a status --storage b: exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(after, "store.lock")); err != nil {
		t.Errorf("status did not read the storage given after the subcommand: %v\n%s", err, stdout)
	}
}
