package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// running is the "exit code" of a command that does not stop on the
// problem: it logs the message and keeps going (retrying, standing by).
const running = -1

// troubleshootingCase is one entry of docs/troubleshooting.md: the messages
// the doc quotes on its "Message: `…`" lines, the command that fails that
// way here (built from the shared setup) and its exit code.
type troubleshootingCase struct {
	// msgs are the quoted texts exactly as the doc has them; the command
	// must print each one.
	msgs []string
	bin  string
	args func(s *tsSetup) []string
	env  []string
	// code is the exit status, or running: the message is logged while the
	// command keeps going, and it then stops cleanly (exit 0) on SIGTERM.
	code int
}

// troubleshootingCases produce every message docs/troubleshooting.md quotes.
//
// To add an entry: quote the message in docs/troubleshooting.md on a line
// starting "Message: `…`" (copy it from the command's real output), then add
// a row here with the same text in msgs, the command line that fails that
// way (tsSetup has two Teleport doubles, Fluentd doubles, NATS servers and
// busy ports to build it from; add to it what a new case needs) and its exit
// code (1 at run time, 2 for configuration, or running). The test fails for
// a quoted message without a row, for a row whose message the doc no longer
// quotes, and when the command does not print the message or exits
// otherwise.
var troubleshootingCases = []troubleshootingCase{
	{msgs: []string{"teleport identity expired", "issue a new one (tctl auth sign)"}, bin: "ingest", code: exitUsage,
		args: func(s *tsSetup) []string {
			return s.ingest("--teleport-addr", s.expired.addr, "--teleport-identity", s.expired.identity)
		}},
	{msgs: []string{"the server rejected the client certificate (identity from another cluster?)"}, bin: "ingest", code: exitUsage,
		args: func(s *tsSetup) []string { // a certificate from another cluster, with this server's CA
			return s.ingestNoIdentity("--teleport-addr", s.p.TeleportAddr, "--teleport-cert", filepath.Join(s.older.dir, "tls.crt"),
				"--teleport-key", filepath.Join(s.older.dir, "tls.key"), "--teleport-ca", filepath.Join(s.p.Dir, "teleport", "ca.crt"))
		}},
	{msgs: []string{"teleport server certificate not signed by the configured CA"}, bin: "ingest", code: exitUsage,
		args: func(s *tsSetup) []string { return s.ingest("--teleport-addr", s.expired.addr) }},
	{msgs: []string{"does not exist: write it with tctl auth sign --format=file --user=teleport-event-handler --out="}, bin: "ingest", code: exitUsage,
		args: func(s *tsSetup) []string {
			return s.ingest("--teleport-identity", filepath.Join(s.p.Dir, "no-such-identity"))
		}},
	{msgs: []string{"is a directory, not a file"}, bin: "ingest", code: exitUsage,
		args: func(s *tsSetup) []string { return s.ingest("--teleport-identity", s.p.Dir) }},
	{msgs: []string{"is not a regular file (named pipe): give the path of the file itself"}, bin: "ingest", code: exitUsage,
		args: func(s *tsSetup) []string {
			fifo := filepath.Join(s.p.Dir, "identity-fifo")
			if err := syscall.Mkfifo(fifo, 0o600); err != nil && !errors.Is(err, os.ErrExist) {
				panic(err) // the test's own directory
			}
			return s.ingest("--teleport-identity", fifo)
		}},
	{msgs: []string{"cannot read file"}, bin: "ingest", code: exitUsage,
		args: func(s *tsSetup) []string { // root reads any mode; a path under a file, no one can read
			return s.ingest("--teleport-identity", filepath.Join(s.write("not-a-dir", "x"), "identity"))
		}},
	{msgs: []string{"is not a Teleport identity file (it holds no key or certificate); write one with tctl auth sign --format=file"},
		bin: "ingest", code: exitUsage,
		args: func(s *tsSetup) []string {
			return s.ingest("--teleport-identity", s.write("garbage-identity", "this is not an identity\n"))
		}},
	{msgs: []string{`no Teleport credentials: set "teleport.identity" (--teleport-identity, FDFWD_TELEPORT_IDENTITY), or "teleport.cert", "teleport.key" and "teleport.ca"`},
		bin: "ingest", code: exitUsage,
		args: func(s *tsSetup) []string { return s.ingestNoIdentity() }},
	{msgs: []string{"start-time differs from the stored one", "keep the stored value (remove start-time), or reset ingest state to export again from the new time"},
		bin: "ingest", code: exitRuntime,
		args: func(s *tsSetup) []string {
			return s.ingest("--storage", s.fixedStorage, "--start-time", "2021-06-01T00:00:00Z")
		}},
	{msgs: []string{"to read the events from", "on as well, stop ingest and run"}, bin: "ingest", code: exitRuntime,
		args: func(s *tsSetup) []string { // earlier than the stored 2020-01-01
			return s.ingest("--storage", s.fixedStorage, "--start-time", "2019-06-01T00:00:00Z")
		}},
	{msgs: []string{"(is another process using it? [nats] listen sets the address)"}, bin: "ingest", code: exitRuntime,
		args: func(s *tsSetup) []string { return s.ingest("--nats-listen", s.busy) }},
	{msgs: []string{"NATS refused the credentials"}, bin: "ingest", code: exitRuntime,
		args: func(s *tsSetup) []string {
			return s.ingest("--nats-url", s.natsURL, "--ingest-nats-nkey", "", "--nats-token", "wrong-token")
		}},
	{msgs: []string{"does not exist (start ingest first, or check nats.*-stream)"}, bin: "fluentd-sink", code: exitRuntime,
		args: func(s *tsSetup) []string { // a dry run creates no stream
			return s.sink("--nats-url", s.natsURL, "--sink-nats-nkey", "", "--nats-token", s.token, "--dry-run",
				"--nats-audit-stream", "NOT_CREATED", "--nats-session-stream", "NOT_CREATED_EITHER")
		}},
	{msgs: []string{"Fluentd refused our client certificate (client_cert_auth)"}, bin: "fluentd-sink", code: running,
		args: func(s *tsSetup) []string {
			return s.sink("--fluentd-cert", filepath.Join(s.older.dir, "tls.crt"), "--fluentd-key", filepath.Join(s.older.dir, "tls.key"))
		}},
	{msgs: []string{"the Fluentd server's certificate is not signed by ca"}, bin: "fluentd-sink", code: running,
		args: func(s *tsSetup) []string { return s.sink("--fluentd-ca", filepath.Join(s.expired.dir, "ca.crt")) }},
	{msgs: []string{"the Fluentd server did not answer with TLS (is it plain http?)"}, bin: "fluentd-sink", code: running,
		args: func(s *tsSetup) []string {
			https := "https://" + strings.TrimPrefix(s.plainURL, "http://") // the sink expects TLS there
			return s.sink("--fluentd-url", https+"/test.log", "--fluentd-session-url", https+"/session")
		}},
	{msgs: []string{"fluentd refused an event; retrying it later", "fluentd refused an event on every delivery; moved it to the dead-letter subject"},
		bin: "fluentd-sink", code: running,
		args: func(s *tsSetup) []string {
			return s.sink("--fluentd-url", s.poisonURL+"/test.log", "--fluentd-session-url", s.poisonURL+"/session",
				"--sink-max-deliver", "2", "--sink-ack-wait", "1s")
		}},
	{msgs: []string{"fluentd refuses events", "pausing delivery, probing every"}, bin: "fluentd-sink", code: running,
		args: func(s *tsSetup) []string { // nothing listens there
			return s.sink("--fluentd-url", "https://"+s.silent+"/test.log", "--fluentd-session-url", "https://"+s.silent+"/session")
		}},
	{msgs: []string{"unknown key", "(top-level keys go before the first [section])"}, bin: "ingest", code: exitUsage,
		args: func(s *tsSetup) []string {
			return []string{"--config", s.write("section.toml", "[teleport]\nbatch = 5\n")}
		}},
	{msgs: []string{"private key is encrypted and no passphrase was given"}, bin: "fluentd-sink", code: exitRuntime,
		args: func(s *tsSetup) []string { return s.sink("--fluentd-key", filepath.Join(s.p.Conf, "server.key")) }},
	{msgs: []string{"wrong passphrase for private key"}, bin: "fluentd-sink", code: exitRuntime,
		args: func(s *tsSetup) []string {
			return s.sink("--fluentd-key", filepath.Join(s.p.Conf, "server.key"), "--fluentd-key-passphrase", "not-it")
		}},
	{msgs: []string{"another ingest holds the lease: standing by"}, bin: "ingest", code: running,
		args: func(s *tsSetup) []string { return s.ingest("--nats-url", "nats://"+s.p.NATSListen) }},
	{msgs: []string{"server lacks the bulk export API (Teleport older than v17)",
		"server lacks the bulk export API (Teleport older than v17): reading the audit log with SearchUnstructuredEvents paging",
		"server lacks StreamUnstructuredSessionEvents (Teleport older than v17): reading recordings with StreamSessionEvents"},
		bin: "ingest", code: running,
		args: func(s *tsSetup) []string {
			// From before the backfill, so a session.upload asks for a recording.
			return s.ingest("--teleport-addr", s.older.addr, "--teleport-identity", s.older.identity,
				"--start-time", time.Now().Add(-48*time.Hour).UTC().Format(time.RFC3339))
		}},
	{msgs: []string{"remove or rename the stream, or choose another name in [nats]"}, bin: "ingest", code: exitRuntime,
		args: func(s *tsSetup) []string {
			return s.ingest("--nats-url", s.natsURL, "--ingest-nats-nkey", "", "--nats-token", s.token, "--nats-audit-stream", s.foreignStream)
		}},
	{msgs: []string{"another process serves there: set [ingest] metrics-addr, --ingest-metrics-addr or FDFWD_INGEST_METRICS_ADDR"},
		bin: "ingest", code: exitRuntime,
		args: func(s *tsSetup) []string { return s.ingest("--ingest-metrics-addr", s.busy) }},
	{msgs: []string{"only one process may serve a store; stop it first, or give this one another storage"}, bin: "ingest", code: exitRuntime,
		args: func(s *tsSetup) []string { return s.ingest("--storage", s.p.Storage) }}, // the running ingest's store
	{msgs: []string{"is open to group or others", "it must be readable by its owner only: run chmod 600"}, bin: "ingest", code: exitUsage,
		args: func(s *tsSetup) []string {
			seed, err := os.ReadFile(s.p.NATSSeed(bus.RoleIngest))
			if err != nil {
				panic(err) // the test's own directory
			}
			return s.ingest("--ingest-nats-nkey", s.writeMode("readable.nk", string(seed), 0o644))
		}},
	{msgs: []string{`is below the smallest budget ingest runs in, 256MiB; set at least 256MiB, or "off"`}, bin: "ingest", code: exitUsage,
		args: func(s *tsSetup) []string { return s.ingest("--ingest-memory-budget", "100MiB") }},
	{msgs: []string{"does not exist: write the NATS credentials with configure --nats-credentials"}, bin: "ingest", code: exitUsage,
		args: func(s *tsSetup) []string {
			return s.ingest("--nats-users", filepath.Join(s.p.Dir, "no-such-users.toml"))
		}},
	{msgs: []string{"NATS refused the credentials", "of nkey seed file", "the server does not know its public key"},
		bin: "fluentd-sink", code: exitRuntime,
		args: func(s *tsSetup) []string { // another installation's key, against the running ingest's server
			seed, _, err := bus.NewUserKey()
			if err != nil {
				panic(err)
			}
			return withFlags(s.p.SinkArgs(), "--sink-nats-nkey", s.writeMode("other-install.nk", string(seed), 0o600))
		}},
	{msgs: []string{"NATS refused a request of this sink's user", "the sink needs the fluentd-sink role"},
		bin: "fluentd-sink", code: exitRuntime,
		args: func(s *tsSetup) []string { // another role's key: known to the server, refused what a sink does
			return withFlags(s.p.SinkArgs(), "--sink-nats-nkey", s.p.NATSSeed(bus.RoleReader))
		}},
	{msgs: []string{"none were given and the server requires them: set [ingest] or [sink] nats-nkey, or [nats] nkey, creds or user"},
		bin: "fluentd-sink", code: exitRuntime,
		args: func(s *tsSetup) []string { return withFlags(s.p.SinkArgs(), "--sink-nats-nkey", "") }},
	{msgs: []string{"the embedded NATS server is open: any local process can publish, read or delete the audit trail; close it with"},
		bin: "ingest", code: running,
		args: func(s *tsSetup) []string { return s.ingest("--nats-users", "", "--ingest-nats-nkey", "") }},
	{msgs: []string{"but no NATS server answers for it", "status read nothing there; check that process and [nats] listen"},
		bin: "ingest", code: exitRuntime,
		args: func(s *tsSetup) []string {
			return append(append([]string{"status"}, s.p.IngestArgs()...), "--nats-listen", s.silent)
		}},
}

// tsSetup is what the cases fail against.
type tsSetup struct {
	p            *harness.Pipeline
	expired      teleportSim // another cluster, whose identity has expired
	older        teleportSim // Teleport before v17 (no bulk export API), another cluster
	natsURL      string      // a nats-server requiring token
	token        string
	busy         string // host:port another socket holds
	openListen   string // an ingest's embedded server without credentials
	silent       string // host:port nothing listens on
	fixedStorage string // storage whose start-time is 2020-01-01
	plainURL     string // a Fluentd double without TLS
	poisonURL    string // a Fluentd double answering 400 to user.login
	// foreignStream exists on natsURL with subjects the bus does not use.
	foreignStream string
	sinks         int
}

// ingest is a working ingest command line with extra's flags replacing or
// adding to it.
func (s *tsSetup) ingest(extra ...string) []string {
	base := withFlags(s.p.IngestArgs(), "--nats-listen", "127.0.0.1:0", "--teleport-connect-retries", "1",
		"--storage", filepath.Join(s.p.Dir, fmt.Sprintf("storage-%d", time.Now().UnixNano())))
	return withFlags(base, extra...)
}

// ingestNoIdentity is ingest without the pipeline's TOML (which names an
// identity) or --teleport-identity.
func (s *tsSetup) ingestNoIdentity(extra ...string) []string {
	base := []string{"--teleport-addr", s.p.TeleportAddr, "--nats-listen", "127.0.0.1:0", "--ingest-metrics-addr", "127.0.0.1:0",
		"--teleport-connect-retries", "1", "--storage", filepath.Join(s.p.Dir, fmt.Sprintf("storage-%d", time.Now().UnixNano()))}
	return withFlags(base, extra...)
}

// sink is a working sink command line reading the pipeline's streams
// through a consumer of its own (so it has every event to deliver), with
// extra's flags replacing or adding to it.
//
// It reads from the open bus of a second ingest: on the pipeline's closed
// bus the sink role may use only the configured consumers.
func (s *tsSetup) sink(extra ...string) []string {
	s.sinks++
	base := withFlags(s.p.SinkArgs(), "--nats-listen", s.openListen, "--sink-nats-nkey", "",
		"--sink-audit-consumer", fmt.Sprintf("ts-audit-%d", s.sinks),
		"--sink-session-consumer", fmt.Sprintf("ts-sessions-%d", s.sinks), "--sink-shutdown-timeout", "2s")
	return withFlags(base, extra...)
}

func (s *tsSetup) write(name, body string) string {
	return s.writeMode(name, body, 0o600)
}

// writeMode writes a file of the test's own with the given permissions.
func (s *tsSetup) writeMode(name, body string, mode os.FileMode) string {
	path := filepath.Join(s.p.Dir, name)
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		panic(err) // the test's own directory
	}
	if err := os.Chmod(path, mode); err != nil { // WriteFile's mode passes the umask
		panic(err)
	}
	return path
}

// messageDocs are the pages whose "Message: `…`" lines quote what a
// command prints (the quick start quotes the older-Teleport warnings).
var messageDocs = []string{"docs/troubleshooting.md", "docs/quickstart.md"}

// quotedMessages are the texts the messageDocs quote on their "Message:"
// lines.
func quotedMessages(t *testing.T) []string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	quoted := regexp.MustCompile("`([^`]+)`")
	var out []string
	for _, name := range messageDocs {
		doc, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(doc), "\n") {
			if rest, ok := strings.CutPrefix(line, "Message: "); ok {
				for _, m := range quoted.FindAllStringSubmatch(rest, -1) {
					out = append(out, m[1])
				}
			}
		}
	}
	return out
}

// TestTroubleshootingMessages runs, for every message docs/troubleshooting.md
// (and the quick start) quotes, the command that fails that way, and
// compares what it prints and its exit code with the doc.
func TestTroubleshootingMessages(t *testing.T) {
	quoted := quotedMessages(t)
	rows := map[string]bool{}
	for _, c := range troubleshootingCases {
		for _, m := range c.msgs {
			rows[m] = true
		}
	}
	inDoc := map[string]bool{}
	for _, m := range quoted {
		inDoc[m] = true
		if !rows[m] {
			t.Errorf("the docs quote %q, and troubleshootingCases has no row producing it: add one", m)
		}
	}
	for m := range rows {
		if !inDoc[m] {
			t.Errorf("troubleshootingCases has a row for %q, which no page of messageDocs quotes any more", m)
		}
	}
	if len(quoted) < 10 {
		t.Fatalf("the docs quote %d messages, want at least 10", len(quoted))
	}

	s := newTroubleshootingSetup(t)
	for _, c := range troubleshootingCases {
		t.Run(c.msgs[0], func(t *testing.T) {
			args := c.args(s)
			if c.code == running {
				checkLogged(s.p.Dir, t, c, args)
				return
			}
			r, err := runCLI(context.Background(), 90*time.Second, c.bin, args, c.env, "")
			if err != nil {
				t.Fatal(err)
			}
			if r.code != c.code {
				t.Errorf("%s %s: exit %d, want %d\n%s", c.bin, strings.Join(args, " "), r.code, c.code, tail(r.stderr, 10))
			}
			lines := r.errorLines()
			if len(lines) != 1 || !strings.HasPrefix(lines[0], c.bin+": error: ") {
				t.Fatalf("want one line %q on stderr, got:\n%s", c.bin+": error: …", tail(r.stderr, 10))
			}
			for _, m := range c.msgs {
				if !strings.Contains(lines[0], m) {
					t.Errorf("the error line lacks the doc's %q:\n  %s", m, lines[0])
				}
			}
		})
	}
}

// checkLogged starts a command that keeps running, waits for each message
// in its log, then stops it and expects a clean exit.
func checkLogged(dir string, t *testing.T, c troubleshootingCase, args []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	proc, err := harness.Start(ctx, harness.Spec{Name: c.bin + "-" + fmt.Sprint(time.Now().UnixNano()), Bin: filepath.Join(binDir, c.bin),
		Args: args, Env: c.env, LogDir: filepath.Join(dir, "logs")})
	if err != nil {
		t.Fatal(err)
	}
	defer proc.Kill()
	for _, m := range c.msgs {
		if _, err := proc.WaitForLine(ctx, m); err != nil {
			t.Fatalf("%s %s never logged %q: %v\n%s", c.bin, strings.Join(args, " "), m, err, proc.Tail(15))
		}
	}
	if done, code := proc.Exited(); done {
		t.Fatalf("%s exited %d; the doc says it keeps going", c.bin, code)
	}
	if code, err := proc.Stop(30 * time.Second); err != nil || code != 0 {
		t.Errorf("%s did not stop cleanly: exit %d, %v\n%s", c.bin, code, err, proc.Tail(10))
	}
}

func newTroubleshootingSetup(t *testing.T) *tsSetup {
	t.Helper()
	ctx, p := newPipeline(t, 10*time.Minute)
	s := &tsSetup{p: p, token: "troubleshooting-token"}
	if err := p.StartTeleport(ctx, "--events", "100", "--sessions", "2"); err != nil {
		t.Fatal(err)
	}
	if err := p.StartFluentd(ctx); err != nil {
		t.Fatal(err)
	}
	s.expired = startTeleportSim(ctx, t, "teleport-other", p.Dir, "--events", "5", "--sessions", "1", "--ttl", "-1h")
	s.older = startTeleportSim(ctx, t, "teleport-older", p.Dir, "--events", "20", "--sessions", "1", "--older")
	s.natsURL = startTokenNATS(ctx, t, p.Dir, s.token)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	s.busy = busy.Addr().String()
	silent, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	s.silent = fmt.Sprintf("127.0.0.1:%d", silent)
	s.plainURL = startFluentdSim(ctx, t, p, "fluentd-plain", "--plain-http")
	s.poisonURL = startFluentdSim(ctx, t, p, "fluentd-poison", "--poison", "event=user.login")

	// A stream of another program on the token server.
	cfg := config.Default().NATS
	cfg.URL, cfg.Token = s.natsURL, s.token
	b, err := bus.Open(ctx, cfg, "", "e2e-troubleshooting", zerolog.Nop(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s.foreignStream = "OTHER_PROGRAM"
	if _, err := b.JS.CreateStream(ctx, jetstream.StreamConfig{Name: s.foreignStream, Subjects: []string{"other.>"}}); err != nil {
		t.Fatal(err)
	}

	// The pipeline's ingest: it holds the lease and fills the streams the
	// sinks read (the backfill of the Teleport double); a separate first
	// run fixes start-time for the start-time case.
	ing, err := p.StartIngest(ctx, "ingest-leader", "--start-time", time.Now().Add(-48*time.Hour).UTC().Format(time.RFC3339))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ing.WaitForLine(ctx, "caught up, now following live events"); err != nil {
		t.Fatal(err)
	}
	// A second ingest on a bus without credentials fills the streams the
	// sinks of the Fluentd cases read through consumers of their own.
	openPort, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	s.openListen = fmt.Sprintf("127.0.0.1:%d", openPort)
	open, err := harness.Start(ctx, harness.Spec{Name: "ingest-open", Bin: filepath.Join(binDir, "ingest"), LogDir: p.LogDir,
		Args: s.ingest("--nats-listen", s.openListen, "--nats-users", "", "--ingest-nats-nkey", "",
			"--start-time", time.Now().Add(-48*time.Hour).UTC().Format(time.RFC3339))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(open.Kill)
	if _, err := open.WaitForLine(ctx, "caught up, now following live events"); err != nil {
		t.Fatal(err)
	}
	s.fixedStorage = filepath.Join(p.Dir, "storage-fixed")
	first, err := harness.Start(ctx, harness.Spec{Name: "ingest-first-run", Bin: filepath.Join(binDir, "ingest"), LogDir: p.LogDir,
		Args: s.ingest("--storage", s.fixedStorage, "--start-time", "2020-01-01T00:00:00Z")})
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
	return s
}

// startFluentdSim starts another Fluentd double with configure's server
// certificate and extra flags, and returns its base URL.
func startFluentdSim(ctx context.Context, t *testing.T, p *harness.Pipeline, name string, extra ...string) string {
	t.Helper()
	args := append([]string{"--addr", "127.0.0.1:0", "--ca", filepath.Join(p.Conf, "ca.crt"), "--cert", filepath.Join(p.Conf, "server.crt"),
		"--key", filepath.Join(p.Conf, "server.key"), "--stats-addr", "", "--match", "test.log,session.*.log"}, extra...)
	proc, err := harness.Start(ctx, harness.Spec{Name: name, Bin: filepath.Join(binDir, "fluentd-sim"), Args: args, LogDir: p.LogDir,
		Env: []string{"FLUENTD_SIM_KEY_PASSPHRASE=" + p.Passphrase}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proc.Kill)
	line, err := proc.WaitForLine(ctx, "fluentd-sim ready")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "url="); ok {
			return v
		}
	}
	t.Fatalf("%s: no url= in %q", name, line)
	return ""
}
