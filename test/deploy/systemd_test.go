package deploy

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// units are the systemd units of deploy/systemd, with the instance name
// systemd-analyze verifies them as.
var units = []struct{ file, verifyAs string }{
	{"teleport-event-bus-ingest.service", "teleport-event-bus-ingest.service"},
	{"teleport-event-bus-fluentd-sink@.service", "teleport-event-bus-fluentd-sink@1.service"},
}

// hardening are the directives every unit must carry, with the value.
var hardening = []string{
	"User=teleport-event-bus",
	"NoNewPrivileges=yes",
	"ProtectSystem=strict",
	"ProtectHome=yes",
	"PrivateTmp=yes",
	"PrivateDevices=yes",
	"CapabilityBoundingSet=",
	"Restart=on-failure",
	"UMask=0077",
}

var execStart = regexp.MustCompile(`(?m)^ExecStart=.*$`)

func TestSystemdUnitsHardened(t *testing.T) {
	for _, u := range units {
		data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "systemd", u.file))
		if err != nil {
			t.Fatal(err)
		}
		lines := map[string]bool{}
		for _, l := range strings.Split(string(data), "\n") {
			lines[strings.TrimSpace(l)] = true
		}
		for _, want := range hardening {
			if !lines[want] {
				t.Errorf("%s: missing %q", u.file, want)
			}
		}
		if !strings.Contains(string(data), "ExecStart=/usr/local/bin/") {
			t.Errorf("%s: ExecStart does not run a binary from /usr/local/bin", u.file)
		}
	}
	sysusers, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "systemd", "teleport-event-bus.sysusers.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^u teleport-event-bus `).Match(sysusers) {
		t.Errorf("sysusers.conf does not create the user teleport-event-bus:\n%s", sysusers)
	}
}

// TestSystemdAnalyzeVerify runs `systemd-analyze verify` on a copy of each
// unit whose ExecStart points at a binary that exists here, and fails on any
// complaint, warnings included (systemd ignores an unknown or misspelt
// directive with exit status 0, which would silently drop hardening).
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, u := range units {
		data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "systemd", u.file))
		if err != nil {
			t.Fatal(err)
		}
		data = execStart.ReplaceAll(data, []byte("ExecStart="+self))
		if err := os.WriteFile(filepath.Join(dir, u.file), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range units {
		t.Run(u.verifyAs, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, analyze, "verify", filepath.Join(dir, u.verifyAs))
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			if err != nil {
				t.Fatalf("systemd-analyze verify %s: %v\n%s", u.verifyAs, err, out.String())
			}
			if s := strings.TrimSpace(out.String()); s != "" {
				t.Fatalf("systemd-analyze verify %s complained:\n%s", u.verifyAs, s)
			}
		})
	}
}
