package deploy

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// TestConsumerExample builds docs/examples/consumer, runs it against a
// closed embedded server holding a few events, logged in with the reader's
// key as the docs show, and checks what it printed; without the key it is
// refused.
func TestConsumerExample(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "consumer")
	build := exec.CommandContext(ctx, filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "./docs/examples/consumer")
	build.Dir = repoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./docs/examples/consumer: %v\n%s", err, out)
	}

	dir := t.TempDir()
	var users []bus.User
	seeds := map[bus.Role]string{}
	for _, r := range []bus.Role{bus.RoleIngest, bus.RoleReader} {
		seed, pub, err := bus.NewUserKey()
		if err != nil {
			t.Fatal(err)
		}
		seeds[r] = filepath.Join(dir, "nats-"+string(r)+".nk")
		if err := os.WriteFile(seeds[r], seed, 0o600); err != nil {
			t.Fatal(err)
		}
		users = append(users, bus.User{Role: r, NKey: pub})
	}
	usersData, err := bus.RenderUsers(users)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default().NATS
	cfg.Listen = "127.0.0.1:0"
	cfg.Users = filepath.Join(dir, "nats-users.toml")
	cfg.NKey = seeds[bus.RoleIngest]
	if err := os.WriteFile(cfg.Users, usersData, 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := bus.Open(ctx, cfg, filepath.Join(dir, "storage"), "test", zerolog.Nop(), true)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	events := []bus.Event{auditEvent(1), auditEvent(2), auditEvent(3)}
	events[1].Type, events[1].ID = "session.start", "ev-start"
	publishAll(ctx, t, b, events)

	anon := exec.CommandContext(ctx, bin, "-url", b.Embedded.ClientURL(), "-n", "1")
	if out, err := anon.CombinedOutput(); err == nil || !strings.Contains(string(out), "NATS refused the credentials") {
		t.Fatalf("consumer without the reader's key: %v\n%s", err, out)
	}
	run := func() string {
		cmd := exec.CommandContext(ctx, bin, "-url", b.Embedded.ClientURL(), "-nkey", seeds[bus.RoleReader], "-filter", "audit.user.login", "-n", "2")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("consumer: %v\n%s", err, stderr.String())
		}
		return stdout.String()
	}
	want := "2025-01-02T03:04:06Z user.login ev-001 audit.user.login\n" +
		"2025-01-02T03:04:08Z user.login ev-003 audit.user.login\n"
	if got := run(); got != want {
		t.Fatalf("consumer printed\n%s\nwant\n%s", got, want)
	}
	// The durable consumer remembers: a second run sees only new events.
	publishAll(ctx, t, b, []bus.Event{auditEvent(4), auditEvent(5)})
	want = "2025-01-02T03:04:09Z user.login ev-004 audit.user.login\n" +
		"2025-01-02T03:04:10Z user.login ev-005 audit.user.login\n"
	if got := run(); got != want {
		t.Fatalf("second run printed\n%s\nwant\n%s", got, want)
	}
}

// mdLink finds Markdown links' targets.
var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestDocsLinks checks that every relative link in docs/*.md reaches a file
// or directory of the repository.
func TestDocsLinks(t *testing.T) {
	root := repoRoot(t)
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no docs: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mdLink.FindAllStringSubmatch(string(data), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "#") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			target, _, _ = strings.Cut(target, "#")
			if _, err := os.Stat(filepath.Join(filepath.Dir(f), target)); err != nil {
				t.Errorf("%s links to %s, which does not exist", filepath.Base(f), m[1])
			}
		}
	}
}
