package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDemo runs what `make demo` runs, smaller, and reads its table as a
// new user would: every event delivered, nothing duplicated or
// dead-lettered, the bus closed (no client without credentials, no forged
// event), nothing left running.
func TestDemo(t *testing.T) {
	for _, forward := range []bool{false, true} {
		t.Run(fmt.Sprintf("forward=%v", forward), func(t *testing.T) { testDemo(t, forward) })
	}
}

func testDemo(t *testing.T, forward bool) {
	dir := filepath.Join(t.TempDir(), "demo")
	args := []string{"--bin", binDir, "--dir", dir, "--events", "3000", "--sessions", "12"}
	if forward {
		args = append(args, "--forward")
	}
	cmd := exec.Command(filepath.Join(binDir, "demo"), args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	table := string(out)
	row := func(label string) string {
		m := regexp.MustCompile(`(?m)` + regexp.QuoteMeta(label) + `\s+(\S+( / \S+)?)\s*$`).FindStringSubmatch(table)
		if m == nil {
			t.Fatalf("demo output has no %q row:\n%s", label, table)
		}
		return m[1]
	}
	if got := row("audit events"); got != "3000" {
		t.Errorf("in Teleport: %s audit events, want 3000", got)
	}
	if got := row("test.log"); got != "3000" {
		t.Errorf("delivered to test.log: %s, want 3000", got)
	}
	if sessions, delivered := row("session events (print skipped)"), row("session.*.log"); sessions != delivered || sessions == "0" {
		t.Errorf("session events: %s in Teleport, %s delivered", sessions, delivered)
	}
	if got := row("at Fluentd / in the stream"); got != "0 / 0" {
		t.Errorf("duplicates %s, want 0 / 0", got)
	}
	if got := row("deadletter.>"); got != "0" {
		t.Errorf("dead letters %s, want 0", got)
	}
	if forward && !strings.Contains(table, "in_forward") {
		t.Errorf("demo --forward does not say it uses in_forward:\n%s", table)
	}
	if got := row("no credentials / forged publish"); got != "refused / refused" {
		t.Errorf("closed bus: %s, want refused / refused", got)
	}
	if !strings.Contains(table, "delivered in") {
		t.Errorf("demo output lacks the summary line:\n%s", table)
	}
}
