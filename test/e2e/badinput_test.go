package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// Exit codes of the three commands: 1 for an error at run time (a server
// that cannot be reached, refused credentials, bad state), 2 for bad usage
// or configuration found before anything starts.
const (
	exitRuntime = 1
	exitUsage   = 2
)

// cliResult is what one run of a command left behind.
type cliResult struct {
	code           int
	stdout, stderr string
}

// errorLines are the lines of stderr that are not JSON log records: the
// one-line error a user reads.
func (r cliResult) errorLines() []string {
	var out []string
	for _, l := range strings.Split(strings.TrimRight(r.stderr, "\n"), "\n") {
		if l != "" && !strings.HasPrefix(l, "{") {
			out = append(out, l)
		}
	}
	return out
}

// runCLI runs binDir/bin once with a timeout, stdout and stderr kept apart.
// A run still going at the timeout is killed and reported as an error.
func runCLI(ctx context.Context, timeout time.Duration, bin string, args, env []string, stdin string) (cliResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, bin), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	err := cmd.Run()
	res := cliResult{stdout: stdout.String(), stderr: stderr.String()}
	if ctx.Err() != nil {
		return res, fmt.Errorf("%s %s still running after %s\nstderr:\n%s", bin, strings.Join(args, " "), timeout, tail(res.stderr, 15))
	}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	case err != nil:
		return res, fmt.Errorf("run %s: %w", bin, err)
	}
	return res, nil
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// pollUntil calls cond every 100ms until it reports done, and fails the test
// with what cond last reported when the deadline passes first. Each call
// gets a context of its own, at most 15s long, so one hung request does
// not eat the whole deadline.
func pollUntil(ctx context.Context, t *testing.T, d time.Duration, what string, cond func(ctx context.Context) (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		attempt, stop := context.WithTimeout(ctx, 15*time.Second)
		done, state := cond(attempt)
		stop()
		if done {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %s waiting for %s; last state: %s", d, what, state)
		case <-tick.C:
		}
	}
}

// teleportSim is a teleport-sim process started outside a Pipeline: its
// gRPC address and the identity file it issued.
type teleportSim struct {
	proc           *harness.Proc
	addr, identity string
	dir            string
}

// startTeleportSim starts another teleport-sim (own CA, own identity) with
// extra flags; it is killed at the end of the test.
func startTeleportSim(ctx context.Context, t *testing.T, name, dir string, extra ...string) teleportSim {
	t.Helper()
	out := filepath.Join(dir, name)
	args := append([]string{"--out", out, "--port", "0", "--control-addr", ""}, extra...)
	p, err := harness.Start(ctx, harness.Spec{Name: name, Bin: filepath.Join(binDir, "teleport-sim"), Args: args, LogDir: filepath.Join(dir, "logs")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	if _, err := p.WaitForLine(ctx, "teleport-sim: serving"); err != nil {
		t.Fatal(err)
	}
	addr, err := os.ReadFile(filepath.Join(out, "addr"))
	if err != nil {
		t.Fatalf("%s address: %v", name, err)
	}
	return teleportSim{proc: p, addr: strings.TrimSpace(string(addr)), identity: filepath.Join(out, "identity"), dir: out}
}

// startTokenNATS starts a standalone JetStream nats-server on a free
// loopback port that requires token; it returns the client URL.
func startTokenNATS(ctx context.Context, t *testing.T, dir, token string) string {
	t.Helper()
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p, err := harness.Start(ctx, harness.Spec{
		Name: "nats-token", Bin: filepath.Join(binDir, "nats-server"),
		Args:   []string{"-a", "127.0.0.1", "-p", fmt.Sprint(port), "-js", "-sd", filepath.Join(dir, "nats-token"), "--auth", token},
		LogDir: filepath.Join(dir, "logs"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	if _, err := p.WaitForLine(ctx, "Server is ready"); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("nats://127.0.0.1:%d", port)
}

// badCase is one wrong input and what the command must answer.
type badCase struct {
	name  string
	bin   string
	args  []string
	env   []string
	stdin string
	code  int
	// words must all appear in the one error line.
	words []string
	// check, when set, makes further assertions after the run.
	check func(t *testing.T, r cliResult)
}

// TestBadInput runs each command with one wrong input at a time — config
// files, flags, environment, certificates, identities, addresses, state —
// and checks what a user sees: a non-zero exit (1 at run time, 2 for usage
// and configuration), exactly one error line on stderr naming the problem,
// and never a panic or a stack trace.
func TestBadInput(t *testing.T) {
	ctx, p := newPipeline(t, 5*time.Minute)
	dir := p.Dir
	if err := p.StartTeleport(ctx, "--events", "50", "--sessions", "2"); err != nil {
		t.Fatal(err)
	}
	// A second Teleport with its own CA, whose identity is already expired.
	expired := startTeleportSim(ctx, t, "teleport-expired", dir, "--events", "5", "--sessions", "1", "--ttl", "-1h")
	const token = "s3cret-nats-token-for-bad-input"
	natsURL := startTokenNATS(ctx, t, dir, token)
	closed, err := harness.FreePort() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	storageFile := filepath.Join(dir, "storage-is-a-file")
	if err := os.WriteFile(storageFile, []byte("not a directory\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	writeTOML := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	conf := func(name string) string { return filepath.Join(p.Conf, name) }

	// ingest flags that pass validation: every case breaks one thing. Flags
	// given to ingest() replace these (some are lists, repeating adds).
	ingest := func(extra ...string) []string {
		return withFlags([]string{"--config", p.Config, "--teleport-addr", p.TeleportAddr, "--teleport-identity", p.Identity,
			"--teleport-connect-retries", "1", "--nats-listen", "127.0.0.1:0", "--ingest-metrics-addr", "127.0.0.1:0", "--storage", filepath.Join(dir, "storage-"+fmt.Sprint(time.Now().UnixNano()))}, extra...)
	}
	// sink flags that reach NATS (the token server) and a Fluentd URL.
	sink := func(extra ...string) []string {
		// The token server takes no NKeys: the TOML's own key is emptied
		// (a command logs in one way).
		return withFlags([]string{"--config", p.Config, "--nats-url", natsURL, "--sink-nats-nkey", "", "--nats-token", token, "--sink-metrics-addr", "127.0.0.1:0",
			"--fluentd-url", "https://127.0.0.1:8888/test.log", "--fluentd-session-url", "https://127.0.0.1:8888/session"}, extra...)
	}

	// start-time is fixed by a first run of ingest on this storage.
	fixedStorage := filepath.Join(dir, "storage-fixed")
	first, err := harness.Start(ctx, harness.Spec{Name: "ingest-first-run", Bin: filepath.Join(binDir, "ingest"), LogDir: filepath.Join(dir, "logs"),
		Args: []string{"--config", p.Config, "--teleport-addr", p.TeleportAddr, "--teleport-identity", p.Identity,
			"--nats-listen", "127.0.0.1:0", "--ingest-metrics-addr", "127.0.0.1:0", "--storage", fixedStorage, "--start-time", "2020-01-01T00:00:00Z"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.WaitForLine(ctx, "reading the audit log"); err != nil {
		first.Kill()
		t.Fatal(err)
	}
	if code, err := first.Stop(30 * time.Second); err != nil || code != 0 {
		t.Fatalf("first ingest run: exit %d, %v\n%s", code, err, first.Tail(20))
	}

	confFiles := []string{"ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key",
		"teleport-event-handler-role.yaml", "teleport-event-handler-user.yaml", "fluent.conf", "teleport-event-handler.toml"}
	before := hashFiles(t, p.Conf, confFiles)

	cases := []badCase{
		// configure
		{name: "configure/length 1000", bin: "configure", args: []string{"--length", "1000", filepath.Join(dir, "out-length")},
			code: exitUsage, words: []string{"--length", "2048 or 4096", "1000"}},
		{name: "configure/key-type dsa", bin: "configure", args: []string{"--key-type", "dsa", filepath.Join(dir, "out-dsa")},
			code: exitUsage, words: []string{"--key-type", "rsa or ecdsa", "dsa"}},
		{name: "configure/ttl negative", bin: "configure", args: []string{"--ttl", "-1h", filepath.Join(dir, "out-ttl")},
			code: exitUsage, words: []string{"--ttl", "-1h"}},
		{name: "configure/ttl not a duration", bin: "configure", args: []string{"--ttl", "forever", filepath.Join(dir, "out-ttl2")},
			code: exitUsage, words: []string{"ttl", "forever"}},
		{name: "configure/no out-dir", bin: "configure", code: exitUsage, words: []string{"missing", "<out-dir>"}},
		{name: "configure/unknown flag", bin: "configure", args: []string{"--bogus", filepath.Join(dir, "out-bogus")},
			code: exitUsage, words: []string{"flag provided but not defined", "bogus"}},
		{name: "configure/existing files without --force", bin: "configure", args: []string{p.Conf}, stdin: "other-passphrase\n",
			code: exitRuntime, words: []string{"--force", conf("ca.crt"), conf("client.key"), conf("teleport-event-handler.toml")},
			check: func(t *testing.T, _ cliResult) {
				if after := hashFiles(t, p.Conf, confFiles); after != before {
					t.Errorf("configure changed files it refused to overwrite")
				}
			}},

		// ingest: configuration and flags
		{name: "ingest/unknown TOML key", bin: "ingest", args: []string{"--config", writeTOML("unknown-key.toml", "storagee = \"x\"\n")},
			code: exitUsage, words: []string{"unknown-key.toml", `unknown key "storagee"`, `did you mean "storage"`}},
		{name: "ingest/TOML syntax", bin: "ingest", args: []string{"--config", writeTOML("syntax.toml", "storage = \"x\n")},
			code: exitUsage, words: []string{"syntax.toml", "line 1"}},
		{name: "ingest/bad duration", bin: "ingest", args: []string{"--config", writeTOML("duration.toml", "timeout = \"5 parsecs\"\n")},
			code: exitUsage, words: []string{`"timeout"`, "duration", "5 parsecs"}},
		{name: "ingest/integer as string", bin: "ingest", args: []string{"--config", writeTOML("batch.toml", "batch = \"many\"\n")},
			code: exitUsage, words: []string{`"batch"`, "integer", "many"}},
		{name: "ingest/bad start-time flag", bin: "ingest", args: ingest("--start-time", "yesterday"),
			code: exitUsage, words: []string{"--start-time", "RFC 3339", "yesterday"}},
		{name: "ingest/bad start-time env", bin: "ingest", args: ingest(), env: []string{"FDFWD_START_TIME=soon"},
			code: exitUsage, words: []string{"FDFWD_START_TIME", "start-time", "soon"}},
		{name: "ingest/missing config file", bin: "ingest", args: []string{"--config", filepath.Join(dir, "nope.toml")},
			code: exitUsage, words: []string{"nope.toml", "does not exist"}},
		{name: "ingest/missing identity file", bin: "ingest", args: ingest("--teleport-identity", filepath.Join(dir, "no-identity")),
			code: exitUsage, words: []string{"--teleport-identity", "no-identity", "does not exist"}},
		{name: "ingest/identity not an identity", bin: "ingest", args: ingest("--teleport-identity", conf("ca.crt")),
			code: exitUsage, words: []string{"identity", conf("ca.crt"), "is not a Teleport identity file"}},
		{name: "ingest/expired identity", bin: "ingest", args: ingest("--teleport-addr", expired.addr, "--teleport-identity", expired.identity),
			code: exitUsage, words: []string{"expired", expired.identity, "tctl auth sign"}},
		{name: "ingest/identity from another CA", bin: "ingest", args: ingest("--teleport-addr", expired.addr),
			code: exitUsage, words: []string{expired.addr, "not signed by the configured CA"}},
		{name: "ingest/Teleport unreachable", bin: "ingest", args: ingest("--teleport-addr", fmt.Sprintf("127.0.0.1:%d", closed)),
			code: exitRuntime, words: []string{"connect to teleport", fmt.Sprintf("127.0.0.1:%d", closed), "giving up after 1", "connection refused"}},
		{name: "ingest/Teleport address without port", bin: "ingest", args: ingest("--teleport-addr", "nohost"),
			code: exitUsage, words: []string{"--teleport-addr", "host:port", "nohost"}},
		{name: "ingest/Teleport port out of range", bin: "ingest", args: ingest("--teleport-addr", "127.0.0.1:99999"),
			code: exitUsage, words: []string{"--teleport-addr", "99999"}},
		{name: "ingest/NATS unreachable", bin: "ingest", args: ingest("--nats-url", fmt.Sprintf("nats://127.0.0.1:%d", closed)),
			code: exitRuntime, words: []string{"connect to NATS", fmt.Sprintf("nats://127.0.0.1:%d", closed)}},
		{name: "ingest/NATS auth refused", bin: "ingest", args: ingest("--nats-url", natsURL, "--ingest-nats-nkey", "", "--nats-token", "wrong-token"),
			code: exitRuntime, words: []string{natsURL, "refused the credentials"},
			check: func(t *testing.T, r cliResult) {
				if strings.Contains(r.stderr, "wrong-token") {
					t.Errorf("the refused token is in the output:\n%s", r.stderr)
				}
			}},
		{name: "ingest/embedded NATS port in use", bin: "ingest", args: ingest("--nats-listen", busy.Addr().String()),
			code: exitRuntime, words: []string{"cannot listen on", busy.Addr().String()}},
		{name: "ingest/storage is a file", bin: "ingest", args: ingest("--storage", storageFile),
			code: exitRuntime, words: []string{"storage", storageFile, "not writable"}},
		{name: "ingest/start-time changed after first run", bin: "ingest",
			args: ingest("--storage", fixedStorage, "--start-time", "2021-06-01T00:00:00Z"),
			code: exitRuntime, words: []string{"start-time", "2021-06-01T00:00:00Z", "2020-01-01T00:00:00Z"}},
		{name: "ingest/replicas 7", bin: "ingest", args: ingest("--nats-replicas", "7"),
			code: exitUsage, words: []string{"--nats-replicas", "7"}},
		{name: "ingest/unknown flag", bin: "ingest", args: ingest("--bogus"),
			code: exitUsage, words: []string{"flag provided but not defined", "bogus"}},

		// fluentd-sink
		{name: "sink/[fluentd] and [forward.fluentd] conflict", bin: "fluentd-sink",
			args: []string{"--config", writeTOML("conflict.toml", "[fluentd]\nurl = \"https://a:1/x\"\n[forward.fluentd]\nurl = \"https://b:1/y\"\n")},
			code: exitUsage, words: []string{"fluentd.url", "forward.fluentd.url", "https://a:1/x", "https://b:1/y"}},
		{name: "sink/plain http without --insecure-http", bin: "fluentd-sink", args: sink("--fluentd-url", "http://127.0.0.1:8888/test.log"),
			code: exitUsage, words: []string{"http://127.0.0.1:8888/test.log", "plain http", "--insecure-http"}},
		{name: "sink/URL not absolute", bin: "fluentd-sink", args: sink("--fluentd-url", "https://"),
			code: exitUsage, words: []string{"--fluentd-url", "absolute URL"}},
		{name: "sink/missing CA file", bin: "fluentd-sink", args: sink("--fluentd-ca", filepath.Join(dir, "no-ca.crt")),
			code: exitUsage, words: []string{"--fluentd-ca", "no-ca.crt", "does not exist"}},
		{name: "sink/encrypted key without passphrase", bin: "fluentd-sink", args: sink("--fluentd-key", conf("server.key")),
			code: exitRuntime, words: []string{conf("server.key"), "encrypted", "no passphrase"}},
		{name: "sink/wrong key passphrase", bin: "fluentd-sink", args: sink("--fluentd-key", conf("server.key"), "--fluentd-key-passphrase", "not-the-passphrase"),
			code: exitRuntime, words: []string{conf("server.key"), "wrong passphrase"},
			check: func(t *testing.T, r cliResult) {
				if strings.Contains(r.stderr+r.stdout, "not-the-passphrase") {
					t.Errorf("the passphrase is in the output:\n%s", r.stderr)
				}
			}},
		{name: "sink/mismatched client cert and key", bin: "fluentd-sink", args: sink("--fluentd-key", filepath.Join(expired.dir, "tls.key")),
			code: exitRuntime, words: []string{"tls.key", "does not match", conf("client.crt")}},
		{name: "sink/key file as certificate", bin: "fluentd-sink", args: sink("--fluentd-cert", conf("ca.key")),
			code: exitRuntime, words: []string{conf("ca.key"), "CERTIFICATE"}},
		{name: "sink/NATS cert without key", bin: "fluentd-sink", args: sink("--nats-cert", conf("client.crt")),
			code: exitUsage, words: []string{"--nats-cert", "nats.key"}},
		{name: "sink/batch size 0", bin: "fluentd-sink", args: sink("--sink-batch-size", "0"),
			code: exitUsage, words: []string{"--sink-batch-size", "0"}},
		{name: "sink/NATS auth refused", bin: "fluentd-sink", args: sink("--nats-token", "", "--sink-nats-nkey", ""),
			code: exitRuntime, words: []string{natsURL, "refused the credentials"}},
		{name: "sink/unknown flag", bin: "fluentd-sink", args: sink("--bogus"),
			code: exitUsage, words: []string{"flag provided but not defined", "bogus"}},
	}
	if len(cases) < 25 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := runCLI(ctx, 60*time.Second, c.bin, c.args, c.env, c.stdin)
			if err != nil {
				t.Fatal(err)
			}
			checkOneLineError(t, c, r)
			if c.check != nil {
				c.check(t, r)
			}
		})
	}
	t.Run("sink/Fluentd certificate from another CA", func(t *testing.T) {
		testSinkWrongFluentdCA(ctx, t, p, natsURL, token, filepath.Join(expired.dir, "ca.crt"))
	})
}

// checkOneLineError asserts the exit code, a single error line holding every
// expected word, and no panic or stack trace anywhere in the output.
func checkOneLineError(t *testing.T, c badCase, r cliResult) {
	t.Helper()
	all := r.stdout + r.stderr
	if strings.Contains(all, "goroutine ") || strings.Contains(strings.ToLower(all), "panic") {
		t.Fatalf("%s %s: panic or stack trace in the output:\n%s", c.bin, strings.Join(c.args, " "), tail(all, 30))
	}
	if r.code != c.code {
		t.Errorf("%s %s: exit code %d, want %d\nstderr:\n%s", c.bin, strings.Join(c.args, " "), r.code, c.code, tail(r.stderr, 10))
	}
	lines := r.errorLines()
	if len(lines) != 1 {
		t.Fatalf("%s %s: want exactly one error line on stderr, got %d:\n%s", c.bin, strings.Join(c.args, " "), len(lines), tail(r.stderr, 20))
	}
	line := lines[0]
	if !strings.HasPrefix(line, c.bin+": ") {
		t.Errorf("error line does not start with %q: %s", c.bin+": ", line)
	}
	for _, w := range c.words {
		if !strings.Contains(line, w) {
			t.Errorf("error line lacks %q:\n  %s", w, line)
		}
	}
}

// testSinkWrongFluentdCA runs a sink that trusts another CA than the one
// that signed Fluentd's certificate. Delivery failures are retried forever
// by design, so the sink must keep running and log, naming the CA file,
// why the handshake fails — and deliver nothing.
func testSinkWrongFluentdCA(ctx context.Context, t *testing.T, p *harness.Pipeline, natsURL, token, wrongCA string) {
	if err := p.StartFluentd(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default().NATS
	cfg.URL, cfg.Token = natsURL, token
	b, err := bus.Open(ctx, cfg, "", "e2e-bad-input", zerolog.Nop(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg("audit.user.login")
	msg.Header.Set(bus.HeaderMsgID, "wrong-ca-1")
	msg.Header.Set(bus.HeaderEventID, "wrong-ca-1")
	msg.Header.Set(bus.HeaderEventType, "user.login")
	msg.Header.Set(bus.HeaderEventTime, "2025-01-02T03:04:05Z")
	msg.Data = []byte(`{"event":"user.login","uid":"wrong-ca-1","time":"2025-01-02T03:04:05.000Z","user":"alice"}`)
	if _, err := b.JS.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}

	sink, err := harness.Start(ctx, harness.Spec{Name: "sink-wrong-ca", Bin: filepath.Join(binDir, "fluentd-sink"), LogDir: p.LogDir,
		Args: []string{"--config", p.Config, "--nats-url", natsURL, "--sink-nats-nkey", "", "--nats-token", token,
			"--fluentd-url", p.FluentdURL + "/test.log", "--fluentd-session-url", p.FluentdURL + "/session",
			"--fluentd-ca", wrongCA, "--sink-shutdown-timeout", "2s", "--sink-metrics-addr", "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Kill()
	line, err := sink.WaitForLine(ctx, wrongCA)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(line, "not signed by") {
		t.Errorf("the log line naming the CA does not say what is wrong: %s", line)
	}
	if done, code := sink.Exited(); done {
		t.Errorf("the sink exited (code %d) instead of retrying delivery", code)
	}
	if log := sink.Log(); strings.Contains(log, "goroutine ") || strings.Contains(strings.ToLower(log), "panic") {
		t.Errorf("panic in the sink's log:\n%s", sink.Tail(30))
	}
	stats, err := p.FluentdStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats.StoredTotal != 0 {
		t.Errorf("fluentd-sim stored %d records through an unverified connection", stats.StoredTotal)
	}
	if code, err := sink.Stop(30 * time.Second); err != nil || code != 0 {
		t.Errorf("sink with a failing Fluentd did not stop cleanly on SIGTERM: exit %d, %v\n%s", code, err, sink.Tail(10))
	}
}

// withFlags returns base (flag/value pairs) with the flags of extra
// replacing those of the same name; other extra flags (and a lone last
// flag without value) are appended.
func withFlags(base []string, extra ...string) []string {
	out := append([]string(nil), base...)
	for i := 0; i < len(extra); i += 2 {
		if i+1 == len(extra) {
			out = append(out, extra[i])
			break
		}
		replaced := false
		for j := 0; j+1 < len(out); j += 2 {
			if out[j] == extra[i] {
				out[j+1], replaced = extra[i+1], true
			}
		}
		if !replaced {
			out = append(out, extra[i], extra[i+1])
		}
	}
	return out
}

// hashFiles is one digest over the names and contents of files in dir.
func hashFiles(t *testing.T, dir string, names []string) string {
	t.Helper()
	h := sha256.New()
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(h, "%s %d\n", n, len(data))
		h.Write(data)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}
