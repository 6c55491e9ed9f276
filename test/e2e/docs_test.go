package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gravitational/teleport/api/types"
	"github.com/nats-io/nats.go"
	"gopkg.in/yaml.v3"

	"github.com/teleport-event-bus/teleport-event-bus/test/fluentdsim"
	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// docLine is one command line of a fenced `sh` block.
type docLine struct {
	doc  string
	line int
	cmd  string // without its trailing comment
}

func (l docLine) String() string { return fmt.Sprintf("%s:%d `%s`", l.doc, l.line, l.cmd) }

// shellLines reads the command lines of the ```sh blocks of doc.
func shellLines(t *testing.T, doc string) []docLine {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(root, doc))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	comment := regexp.MustCompile(`\s+#\s.*$`)
	var out []docLine
	in := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		text := sc.Text()
		switch {
		case !in && strings.TrimSpace(text) == "```sh":
			in = true
		case in && strings.TrimSpace(text) == "```":
			in = false
		case in:
			if cmd := strings.TrimSpace(comment.ReplaceAllString(text, "")); cmd != "" {
				out = append(out, docLine{doc: doc, line: n, cmd: cmd})
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// docRule says how a documented command line is run. Every line runs as
// written, in a fresh directory with the built commands in ./bin and on
// PATH, unless it needs a tool this machine has not got (tctl, fluentd,
// nats) or is the machinery of CI itself (make, the release archive): then
// the rule says what is done instead and why. A line no rule matches fails
// the test: add a rule, never skip.
type docRule struct {
	match *regexp.Regexp
	// instead is empty for lines run as written; otherwise what replaces
	// them and why.
	instead string
	do      func(r *docRun, l docLine, m []string) error
}

// Substitutions inside lines run as written: the documented example
// address is the Teleport double's.
const exampleTeleportAddr = "teleport.example.com:443"

// docRules, first match wins.
var docRules = []docRule{
	{match: regexp.MustCompile(`^(?:bin/)?configure (.*)$`),
		do: func(r *docRun, l docLine, _ []string) error {
			// configure reads server.key's passphrase from stdin when stdin is
			// not a terminal, as the doc says: the test pipes one in.
			return r.run(l, strings.ReplaceAll(l.cmd, exampleTeleportAddr, r.p.TeleportAddr), r.p.Passphrase+"\n", 0)
		}},
	{match: regexp.MustCompile(`^(?:bin/)?ingest status (.*)$`),
		do: func(r *docRun, l docLine, _ []string) error { return r.run(l, l.cmd, "", 0) }},
	{match: regexp.MustCompile(`^(?:bin/)?ingest --config (\S+)`),
		do: func(r *docRun, l docLine, _ []string) error {
			return r.background(l, "caught up, now following live events")
		}},
	{match: regexp.MustCompile(`^(?:bin/)?fluentd-sink --config (\S+)`),
		do: func(r *docRun, l docLine, _ []string) error {
			if err := r.background(l, "serving /metrics"); err != nil {
				return err
			}
			return r.waitStored(l)
		}},
	{match: regexp.MustCompile(`^curl .*`),
		do: func(r *docRun, l docLine, _ []string) error { return r.run(l, l.cmd, "", 0) }},

	{match: regexp.MustCompile(`^tctl create -f (\S+)$`),
		instead: "no tctl here: the file is read into the api module's types and validated as tctl does (CheckAndSetDefaults); a user whose role was not created before is refused, as Teleport refuses it",
		do:      (*docRun).tctlCreate},
	{match: regexp.MustCompile(`^tctl auth sign --format=file --user=(\S+) --out=(\S+) --ttl=(\S+)$`),
		instead: "no tctl here: the Teleport double issued an identity for the user; it is copied to --out once the user was created (otherwise Teleport answers access denied)",
		do:      (*docRun).tctlSign},
	{match: regexp.MustCompile(`^fluentd -c (\S+)$`),
		instead: "no Fluentd here: fluentd-sim listens where the fluent.conf says, with its TLS files, passphrase and <match> tags",
		do:      (*docRun).fluentd},
	{match: regexp.MustCompile(`^nats --server (\S+) --nkey (\S+) stream info (\S+)$`),
		instead: "no nats CLI here: the test asks the same server for the stream's info with nats.go, with the same NKey seed file",
		do:      (*docRun).natsStreamInfo},
	{match: regexp.MustCompile(`^nats --server (\S+) --nkey (\S+) sub '([^']+)'$`),
		instead: "no nats CLI here: the test subscribes to the same server and subject with nats.go, with the same NKey seed file, and waits for a live event",
		do:      (*docRun).natsSub},
	{match: regexp.MustCompile(`^(?:sudo )?make ([a-z-]+)(?: .*)?$`),
		instead: "make is CI's own entry point (the binaries of this test are what make build makes): the Makefile must have the target",
		do:      (*docRun).makeTarget},
	{match: regexp.MustCompile(`^(?:tar xzf teleport-event-bus-<version>-.*|cd teleport-event-bus-<version>-.*|sudo \./install|BINDIR="\$HOME/\.local/bin" \./install)$`),
		instead: "a release archive: built, unpacked and installed (with BINDIR) by test/release TestReleaseArchiveInstallsWorkingBinaries",
		do:      (*docRun).releaseCovered},
}

// docRun runs one document's lines in order, in its own directory.
type docRun struct {
	t       *testing.T
	ctx     context.Context
	dir     string
	p       *harness.Pipeline
	created map[string]string // kind/name → file, what tctl create took
	// before are the ids of the audit events Teleport held before the
	// first command: the backfill a documented start-time must bring.
	before []string
}

// TestDocsCommandsRun runs the shell command lines of README.md and
// docs/quickstart.md, and the commands configure prints under "Next
// steps", as written, in order, against the Teleport and Fluentd doubles
// (see docRules for the lines that need tools this machine lacks), and
// fails for each line that does not work.
func TestDocsCommandsRun(t *testing.T) {
	for _, doc := range []string{"README.md", "docs/quickstart.md"} {
		t.Run(doc, func(t *testing.T) {
			lines := shellLines(t, doc)
			if len(lines) < 8 {
				t.Fatalf("%s has %d shell lines; the parser is broken", doc, len(lines))
			}
			runLines(t, newDocRun(t), lines)
		})
	}
	t.Run("configure's Next steps", func(t *testing.T) {
		r := newDocRun(t)
		l := docLine{doc: "the user", line: 1, cmd: "configure ./conf " + exampleTeleportAddr}
		out, err := r.output(l, "configure ./conf "+r.p.TeleportAddr, r.p.Passphrase+"\n", 0)
		if err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		lines := nextSteps(out)
		if len(lines) < 7 {
			t.Fatalf("configure printed %d commands under Next steps; the parser is broken:\n%s", len(lines), out)
		}
		runLines(t, r, lines)
	})
}

// runLines runs lines in order, each by the first docRule it matches.
func runLines(t *testing.T, r *docRun, lines []docLine) {
	t.Helper()
	for _, l := range lines {
		rule, m := matchRule(l)
		if rule == nil {
			t.Errorf("%s: no rule says how to run it; add one to docRules", l)
			continue
		}
		if rule.instead != "" {
			t.Logf("%s: %s", l, rule.instead)
		}
		if err := rule.do(r, l, m); err != nil {
			t.Errorf("%s does not work as written: %v", l, err)
		} else if rule.instead == "" {
			t.Logf("%s: ran as written", l)
		}
	}
}

// nextSteps are the command lines configure printed after "Next steps:":
// the lines indented by seven spaces (the prose around them by five or
// none).
func nextSteps(out string) []docLine {
	_, after, _ := strings.Cut(out, "Next steps:\n")
	var lines []docLine
	for n, text := range strings.Split(after, "\n") {
		if cmd, ok := strings.CutPrefix(text, "       "); ok && cmd != "" && cmd[0] != ' ' {
			lines = append(lines, docLine{doc: "configure's Next steps", line: n + 1, cmd: strings.TrimSpace(cmd)})
		}
	}
	return lines
}

func matchRule(l docLine) (*docRule, []string) {
	for i := range docRules {
		if m := docRules[i].match.FindStringSubmatch(l.cmd); m != nil {
			return &docRules[i], m
		}
	}
	return nil, nil
}

// The fixed addresses the documented configuration uses.
var docPorts = []string{"127.0.0.1:4222", "127.0.0.1:8888", "127.0.0.1:9090"}

func newDocRun(t *testing.T) *docRun {
	for _, a := range docPorts {
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("%s is in use by another process; the documented commands need it: %v", a, err)
		}
		l.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	dir := t.TempDir()
	p := &harness.Pipeline{Bin: binDir, Dir: dir, LogDir: filepath.Join(dir, "logs"), Conf: filepath.Join(dir, "conf"),
		Passphrase: fmt.Sprintf("docs-%d", time.Now().UnixNano())}
	t.Cleanup(func() {
		if bad := p.StopAll(30 * time.Second); len(bad) > 0 {
			t.Errorf("did not stop cleanly on SIGTERM: %v", bad)
		}
	})
	if err := os.Symlink(binDir, filepath.Join(dir, "bin")); err != nil {
		t.Fatal(err)
	}
	// The user's Teleport, there before the first command.
	const events = 300
	if err := p.StartTeleport(ctx, "--events", fmt.Sprint(events), "--sessions", "3", "--live-rate", "20"); err != nil {
		t.Fatal(err)
	}
	before, err := p.TeleportIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) < events {
		t.Fatalf("the Teleport double holds %d events; started with %d", len(before), events)
	}
	return &docRun{t: t, ctx: ctx, dir: dir, p: p, created: map[string]string{}, before: before}
}

// env is the environment of a documented command: the built commands on
// PATH, none of the test's FDFWD_ settings.
func (r *docRun) env() []string {
	return []string{"PATH=" + binDir + string(os.PathListSeparator) + os.Getenv("PATH")}
}

// run runs cmd with sh in the run's directory and wants exit code want.
func (r *docRun) run(l docLine, cmd, stdin string, want int) error {
	_, err := r.output(l, cmd, stdin, want)
	return err
}

// output is run that returns what cmd printed.
func (r *docRun) output(l docLine, cmd, stdin string, want int) (string, error) {
	proc, err := harness.Start(r.ctx, harness.Spec{Name: fmt.Sprintf("line-%d", l.line), Bin: "/bin/sh", Args: []string{"-c", cmd},
		Env: r.env(), Dir: r.dir, LogDir: r.p.LogDir, Stdin: []byte(stdin)})
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(r.ctx, 2*time.Minute)
	defer cancel()
	code, err := proc.Wait(ctx)
	if err != nil {
		proc.Kill()
		return "", err
	}
	if code != want {
		return "", fmt.Errorf("exit %d, want %d:\n%s", code, want, proc.Tail(8))
	}
	return proc.Log(), nil
}

// path is p in the run's directory (configure prints absolute paths, the
// docs relative ones).
func (r *docRun) path(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(r.dir, p)
}

// background starts a long-running command as written and waits for the
// log line saying it works.
func (r *docRun) background(l docLine, ready string) error {
	proc, err := harness.Start(r.ctx, harness.Spec{Name: fmt.Sprintf("line-%d", l.line), Bin: "/bin/sh", Args: []string{"-c", "exec " + l.cmd},
		Env: r.env(), Dir: r.dir, LogDir: r.p.LogDir})
	if err != nil {
		return err
	}
	r.p.Adopt(proc)
	ctx, cancel := context.WithTimeout(r.ctx, 3*time.Minute)
	defer cancel()
	if _, err := proc.WaitForLine(ctx, ready); err != nil {
		return fmt.Errorf("no %q: %v\n%s", ready, err, proc.Tail(8))
	}
	if done, code := proc.Exited(); done {
		return fmt.Errorf("exited %d:\n%s", code, proc.Tail(8))
	}
	return nil
}

// waitStored waits until Fluentd (the double) stored every audit event
// Teleport held before the first command: a documented ingest command
// without a start-time far enough back reads only live events, and fails
// here.
func (r *docRun) waitStored(l docLine) error {
	ctx, cancel := context.WithTimeout(r.ctx, 3*time.Minute)
	defer cancel()
	return harness.WaitFor(ctx, "the backfill in Fluentd", func(ctx context.Context) (bool, string, error) {
		if r.p.FluentdControl == "" {
			return false, "", errors.New("no Fluentd is running (the fluentd line comes before this one)")
		}
		got, err := r.p.FluentdIDs(ctx, harness.AuditTag)
		if err != nil {
			return false, "", err
		}
		n := 0
		for _, id := range r.before {
			if got[id] > 0 {
				n++
			}
		}
		return n == len(r.before), fmt.Sprintf("%d of the %d events Teleport held before the first command stored", n, len(r.before)), nil
	})
}

// tctlCreate validates a role or user file as tctl create would.
func (r *docRun) tctlCreate(l docLine, m []string) error {
	data, err := os.ReadFile(r.path(m[1]))
	if err != nil {
		return err
	}
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%s: %v", m[1], err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	var head struct{ Kind string }
	if err := json.Unmarshal(js, &head); err != nil {
		return err
	}
	switch head.Kind {
	case types.KindRole:
		var role types.RoleV6
		if err := json.Unmarshal(js, &role); err != nil {
			return err
		}
		if !roleVersionsOfV13.MatchString(role.Version) {
			return fmt.Errorf("ERROR: role version %q is not supported (Teleport v13 accepts v3 to v6)", role.Version)
		}
		if err := role.CheckAndSetDefaults(); err != nil {
			return err
		}
		r.created["role/"+role.GetName()] = m[1]
	case types.KindUser:
		var user types.UserV2
		if err := json.Unmarshal(js, &user); err != nil {
			return err
		}
		if err := user.CheckAndSetDefaults(); err != nil {
			return err
		}
		for _, role := range user.GetRoles() {
			if r.created["role/"+role] == "" {
				return fmt.Errorf("ERROR: role %q is not found (create the role before the user)", role)
			}
		}
		r.created["user/"+user.GetName()] = m[1]
	default:
		return fmt.Errorf("%s: kind %q, want a role or a user", m[1], head.Kind)
	}
	return nil
}

// roleVersionsOfV13 are the role versions the oldest Teleport the project
// reads accepts (pkg/configure's role_test.go holds the whole table).
var roleVersionsOfV13 = regexp.MustCompile(`^v[3-6]$`)

// tctlSign hands out the Teleport double's identity as tctl auth sign
// would, once the user exists.
func (r *docRun) tctlSign(l docLine, m []string) error {
	user, out := m[1], r.path(m[2])
	if r.created["user/"+user] == "" {
		return errors.New("ERROR: access denied (the user was never created)")
	}
	if _, err := time.ParseDuration(m[3]); err != nil {
		return fmt.Errorf("--ttl=%s: %v", m[3], err)
	}
	id, err := os.ReadFile(r.p.Identity)
	if err != nil {
		return err
	}
	return os.WriteFile(out, id, 0o600)
}

// fluentd starts fluentd-sim with what the fluent.conf says.
func (r *docRun) fluentd(l docLine, m []string) error {
	conf, err := os.ReadFile(r.path(m[1]))
	if err != nil {
		return err
	}
	val := func(key string) (string, error) {
		re := regexp.MustCompile(`(?m)^\s*` + key + `\s+(.+?)\s*$`)
		v := re.FindStringSubmatch(string(conf))
		if v == nil {
			return "", fmt.Errorf("%s has no %s", m[1], key)
		}
		return strings.NewReplacer(`\#`, `#`, `\"`, `"`, `\\`, `\`).Replace(strings.Trim(v[1], `"`)), nil
	}
	settings := map[string]string{}
	for _, k := range []string{"port", "bind", "ca_path", "cert_path", "private_key_path", "private_key_passphrase"} {
		if settings[k], err = val(k); err != nil {
			return err
		}
	}
	var tags []string
	for _, mt := range regexp.MustCompile(`(?m)^<match (\S+)>`).FindAllStringSubmatch(string(conf), -1) {
		tags = append(tags, mt[1])
	}
	args := []string{"--addr", net.JoinHostPort(settings["bind"], settings["port"]), "--ca", settings["ca_path"], "--cert", settings["cert_path"],
		"--key", settings["private_key_path"], "--key-passphrase", settings["private_key_passphrase"], "--stats-addr", "127.0.0.1:0",
		"--match", strings.Join(tags, ",")}
	if fluentdsim.KeepTimeKey(conf) {
		args = append(args, "--keep-time-key")
	}
	proc, err := harness.Start(r.ctx, harness.Spec{Name: fmt.Sprintf("line-%d-fluentd-sim", l.line), Bin: filepath.Join(binDir, "fluentd-sim"),
		Args: args, LogDir: r.p.LogDir})
	if err != nil {
		return err
	}
	r.p.Adopt(proc)
	line, err := proc.WaitForLine(r.ctx, "fluentd-sim ready")
	if err != nil {
		return fmt.Errorf("%v\n%s", err, proc.Tail(5))
	}
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "stats="); ok {
			r.p.FluentdControl = v
		}
	}
	return nil
}

// natsSub subscribes as `nats sub` would and waits for one message.
func (r *docRun) natsSub(l docLine, m []string) error {
	server, seed, subject := m[1], m[2], m[3]
	if !filepath.IsAbs(seed) {
		seed = filepath.Join(r.dir, seed)
	}
	opt, err := nats.NkeyOptionFromSeed(seed)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(server, opt)
	if err != nil {
		return err
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		return err
	}
	msg, err := sub.NextMsg(90 * time.Second)
	if err != nil {
		return fmt.Errorf("no message on %s within 90s: %v", subject, err)
	}
	if prefix := strings.TrimSuffix(subject, ">"); !strings.HasPrefix(msg.Subject, prefix) {
		return fmt.Errorf("subscribed to %s, got subject %s", subject, msg.Subject)
	}
	return nil
}

// natsStreamInfo asks for a stream's info as `nats stream info` would.
func (r *docRun) natsStreamInfo(l docLine, m []string) error {
	opt, err := nats.NkeyOptionFromSeed(r.path(m[2]))
	if err != nil {
		return err
	}
	nc, err := nats.Connect(m[1], opt)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		return err
	}
	info, err := js.StreamInfo(m[3], nats.Context(r.ctx))
	if err != nil {
		return fmt.Errorf("stream info %s: %v", m[3], err)
	}
	if info.State.Msgs == 0 {
		return fmt.Errorf("stream %s holds no message; ingest ran before this line", m[3])
	}
	return nil
}

// makeTarget checks the Makefile has the target.
func (r *docRun) makeTarget(l docLine, m []string) error {
	root, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		return err
	}
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(m[1]) + `:`).Match(mk) {
		return fmt.Errorf("the Makefile has no target %q", m[1])
	}
	return nil
}

// releaseCovered checks the release test that runs these lines is there.
func (r *docRun) releaseCovered(l docLine, _ []string) error {
	root, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	src, err := os.ReadFile(filepath.Join(root, "test", "release", "release_test.go"))
	if err != nil {
		return err
	}
	if !strings.Contains(string(src), "func TestReleaseArchiveInstallsWorkingBinaries(") {
		return errors.New("test/release no longer has TestReleaseArchiveInstallsWorkingBinaries")
	}
	return nil
}
