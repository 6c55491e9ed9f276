package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// TestClosedBusEmbedded runs the pipeline as configure sets it up — the
// embedded server closed, ingest and the sink each with its own key — and
// checks that it delivers everything as before, without a permissions
// violation and without a seed in the debug logs, that `ingest status` works with ingest's key, and then what
// every role of the running server may do (harness.CheckRoles: no
// credentials refused, the sink cannot publish an audit event or delete
// anything, the reader reads and cannot publish or delete, a forged
// publish leaves the stream as it was).
func TestClosedBusEmbedded(t *testing.T) {
	r := newE2ERun(t, runSpec{events: 2000, sessions: 10, days: 2, timeout: 5 * time.Minute})
	// Debug logging: the configuration dump and nats-server's lines too.
	ing := r.ingest("ingest", "--debug")
	snk := r.sink("fluentd-sink", "--debug")
	r.waitDelivered(ing, snk)
	r.checkFluentd(0)
	r.checkStreams()
	var seeds []string
	for _, role := range bus.Roles {
		seed, err := os.ReadFile(r.p.NATSSeed(role))
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, strings.TrimSpace(string(seed)))
	}
	for _, p := range []*harness.Proc{ing, snk} {
		for _, seed := range seeds {
			if strings.Contains(p.Tail(1000000), seed) {
				t.Errorf("%s logged an NKey seed", p.Name)
			}
		}
		log := strings.ToLower(p.Tail(100000))
		if strings.Contains(log, "permissions violation") {
			t.Errorf("%s hit a permissions violation:\n%s", p.Name, p.Tail(20))
		}
		if strings.Contains(log, "nats server is open") {
			t.Errorf("%s warns that the bus is open, but configure closed it", p.Name)
		}
	}

	status, err := runCLI(r.ctx, time.Minute, "ingest", append(r.p.IngestArgs(), "status"), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if status.code != 0 || !strings.Contains(status.stdout, "TELEPORT_AUDIT") || !strings.Contains(status.stdout, "fluentd-sink-audit") {
		t.Errorf("ingest status with ingest's key: exit %d\nstdout:\n%s\nstderr:\n%s", status.code, status.stdout, tail(status.stderr, 10))
	}

	harness.CheckRoles(r.ctx, t, harness.RoleClients{
		Config: func(role bus.Role) config.NATSConfig {
			c := config.Default().NATS
			c.Listen = r.p.NATSListen
			if role != "" {
				c.NKey = r.p.NATSSeed(role)
			}
			return c
		},
	})
}

// TestClosedBusCredentialErrors runs the commands with each credential
// mistake and checks the exact one-line error docs/troubleshooting.md
// quotes: a seed file others can read (ingest and sink), a missing users
// file, a key the server does not know, another role's key, and no key at
// all. The bus never falls back to open: the refused sink delivers nothing.
func TestClosedBusCredentialErrors(t *testing.T) {
	ctx, p := newPipeline(t, 4*time.Minute)
	if err := p.StartTeleport(ctx, "--events", "20", "--sessions", "1"); err != nil {
		t.Fatal(err)
	}
	conf := func(name string) string { return filepath.Join(p.Conf, name) }
	ingestSeed, sinkSeed := p.NATSSeed(bus.RoleIngest), p.NATSSeed(bus.RoleSink)
	sinkArgs := withFlags(p.SinkArgs(), "--fluentd-url", "https://127.0.0.1:1/test.log", "--fluentd-session-url", "https://127.0.0.1:1/session")

	// A seed file anyone on the host can read: refused before starting.
	for _, c := range []struct {
		bin, seed, key string
		args           []string
	}{
		{"ingest", ingestSeed, "ingest.nats-nkey", p.IngestArgs()},
		{"fluentd-sink", sinkSeed, "sink.nats-nkey", sinkArgs},
	} {
		if err := os.Chmod(c.seed, 0o644); err != nil {
			t.Fatal(err)
		}
		res, err := runCLI(ctx, 30*time.Second, c.bin, c.args, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf(`%s: error: config %s: key %q: file %q is open to group or others (mode 0644), it must be readable by its owner only: run chmod 600 %s`,
			c.bin, p.Config, c.key, c.seed, c.seed)
		checkExactError(t, res, exitUsage, want)
		if err := os.Chmod(c.seed, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// The users file gone: ingest does not start an open server instead.
	users := conf("nats-users.toml")
	moved := users + ".moved"
	if err := os.Rename(users, moved); err != nil {
		t.Fatal(err)
	}
	res, err := runCLI(ctx, 30*time.Second, "ingest", p.IngestArgs(), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	checkExactError(t, res, exitUsage, fmt.Sprintf(`ingest: error: config %s: key "nats.users": file %q does not exist: write the NATS credentials with configure --nats-credentials %s, or correct the path`,
		p.Config, users, p.Conf))
	if err := os.Rename(moved, users); err != nil {
		t.Fatal(err)
	}

	ing, err := p.StartIngest(ctx, "ingest")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ing.WaitForLine(ctx, "embedded NATS server started"); err != nil {
		t.Fatal(err)
	}
	url := "nats://" + p.NATSListen

	// A key the server does not know (another installation's seed).
	stranger, _, err := bus.NewUserKey()
	if err != nil {
		t.Fatal(err)
	}
	strangerFile := filepath.Join(p.Dir, "other-install.nk")
	if err := os.WriteFile(strangerFile, stranger, 0o600); err != nil {
		t.Fatal(err)
	}
	res, err = runCLI(ctx, 30*time.Second, "fluentd-sink", withFlags(sinkArgs, "--sink-nats-nkey", strangerFile), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	checkExactError(t, res, exitRuntime, fmt.Sprintf(`fluentd-sink: error: connect to NATS at %s: NATS refused the credentials of nkey seed file %q (the server does not know its public key: use the seed file configure wrote for this command's role, and give the server the users of that same configure run: nats-users.toml for ingest's embedded server, nats-cluster/accounts.conf for a cluster): nats: Authorization Violation`,
		url, strangerFile))
	if strings.Contains(res.stderr, strings.TrimSpace(string(stranger))) {
		t.Error("the sink's output shows the seed")
	}

	// Another role's key (the reader's): its first request the role may
	// not make gets no answer, only the server's asynchronous refusal.
	// The sink stops on it, naming the file, instead of retrying it as a
	// JetStream that is slow to answer.
	readerSeed := p.NATSSeed(bus.RoleReader)
	res, err = runCLI(ctx, time.Minute, "fluentd-sink", withFlags(sinkArgs, "--sink-nats-nkey", readerSeed), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	checkExactError(t, res, exitRuntime, fmt.Sprintf(`fluentd-sink: error: open consumer "fluentd-sink-audit" on stream TELEPORT_AUDIT: NATS refused a request of this sink's user (nkey seed file %q): nats: permissions violation: Permissions Violation for Publish to "$JS.API.CONSUMER.CREATE.TELEPORT_AUDIT.fluentd-sink-audit": the sink needs the fluentd-sink role (sink.nats-nkey: nats-fluentd-sink.nk of the configure run that made the server's users) and the consumer names of the configuration those users were made from (sink.audit-consumer, sink.session-consumer)`,
		readerSeed))

	// No key at all.
	res, err = runCLI(ctx, 30*time.Second, "fluentd-sink", withFlags(sinkArgs, "--sink-nats-nkey", ""), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	checkExactError(t, res, exitRuntime, fmt.Sprintf(`fluentd-sink: error: connect to NATS at %s: NATS refused the credentials (none were given and the server requires them: set [ingest] or [sink] nats-nkey, or [nats] nkey, creds or user): nats: Authorization Violation`, url))

	stats, err := p.FluentdStats(ctx)
	if err == nil && stats.Requests != 0 {
		t.Errorf("a refused sink reached Fluentd: %d requests", stats.Requests)
	}
	if code, err := ing.Stop(30 * time.Second); err != nil || code != 0 {
		t.Errorf("ingest did not stop cleanly: exit %d, %v\n%s", code, err, ing.Tail(10))
	}
}

// TestOpenBusWarnsAndCloses starts ingest with a TOML from before configure
// wrote NATS credentials: it still starts, open, with the warning
// docs/troubleshooting.md quotes. `configure --nats-credentials` then
// closes it without touching the certificates: after a restart a client
// without credentials is refused and the pipeline still runs.
func TestOpenBusWarnsAndCloses(t *testing.T) {
	ctx, p := newPipeline(t, 3*time.Minute)
	if err := p.StartTeleport(ctx, "--events", "50", "--sessions", "1"); err != nil {
		t.Fatal(err)
	}
	// The TOML as configure wrote it before: no credential keys or files.
	data, err := os.ReadFile(p.Config)
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, l := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(l, "users = ") && !strings.HasPrefix(l, "nats-nkey = ") {
			keep = append(keep, l)
		}
	}
	if err := os.WriteFile(p.Config, []byte(strings.Join(keep, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, r := range bus.Roles {
		if err := os.Remove(p.NATSSeed(r)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(filepath.Join(p.Conf, "nats-users.toml")); err != nil {
		t.Fatal(err)
	}
	cert, err := os.ReadFile(filepath.Join(p.Conf, "client.key"))
	if err != nil {
		t.Fatal(err)
	}

	ing, err := p.StartIngest(ctx, "ingest-open", "--start-time", time.Now().UTC().AddDate(0, 0, -2).Format(time.RFC3339))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("the embedded NATS server is open: any local process can publish, read or delete the audit trail; close it with `configure --nats-credentials %s`, then restart ingest and fluentd-sink", p.Conf)
	line, err := ing.WaitForLine(ctx, "the embedded NATS server is open")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(line, want) || !strings.Contains(line, `"level":"warn"`) {
		t.Errorf("warning line:\n  %s\nwant a warning with:\n  %s", line, want)
	}
	if code, err := ing.Stop(30 * time.Second); err != nil || code != 0 {
		t.Fatalf("ingest did not stop cleanly: exit %d, %v", code, err)
	}

	res, err := runCLI(ctx, time.Minute, "configure", []string{"--nats-credentials", p.Conf}, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if res.code != 0 {
		t.Fatalf("configure --nats-credentials: exit %d\n%s", res.code, res.stderr)
	}
	if after, err := os.ReadFile(filepath.Join(p.Conf, "client.key")); err != nil || string(after) != string(cert) {
		t.Errorf("configure --nats-credentials changed client.key (%v)", err)
	}
	ing, err = p.StartIngest(ctx, "ingest-closed")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ing.WaitForLine(ctx, "embedded NATS server started"); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(ing.Tail(1000), "is open") {
		t.Error("ingest still warns that the bus is open")
	}
	anon := config.Default().NATS
	anon.Listen = p.NATSListen
	if nc, err := bus.Connect(ctx, anon, "anonymous", zerolog.Nop()); err == nil {
		nc.Close()
		t.Error("after configure --nats-credentials, a client without credentials connected")
	}
	reader := anon
	reader.NKey = p.NATSSeed(bus.RoleReader)
	nc, err := bus.Connect(ctx, reader, "reader", zerolog.Nop())
	if err != nil {
		t.Fatalf("the reader's new key: %v", err)
	}
	nc.Close()
	if code, err := ing.Stop(30 * time.Second); err != nil || code != 0 {
		t.Errorf("ingest did not stop cleanly: exit %d, %v\n%s", code, err, ing.Tail(10))
	}
}

// checkExactError checks the exit code and that stderr holds exactly one
// error line, equal to want.
func checkExactError(t *testing.T, r cliResult, code int, want string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit code %d, want %d\nstderr:\n%s", r.code, code, tail(r.stderr, 10))
	}
	lines := r.errorLines()
	if len(lines) != 1 || lines[0] != want {
		t.Errorf("error lines:\n  %s\nwant exactly:\n  %s", strings.Join(lines, "\n  "), want)
	}
}
