package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/configure"
	"github.com/teleport-event-bus/teleport-event-bus/test/fluentdsim"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

// Pipeline is one installation of the whole pipeline on this machine, each
// part a child process: teleport-sim, fluentd-sim, and any number of ingest
// and fluentd-sink processes, all using certificates made by `configure`.
type Pipeline struct {
	Bin    string // directory of the built binaries
	Dir    string // working directory of this run
	LogDir string // one log file per process
	Conf   string // configure's output directory
	// Config is the TOML file configure wrote; every ingest and sink reads it.
	Config string
	// Passphrase encrypts server.key; fluentd-sim needs it.
	Passphrase string

	Teleport        *Proc
	TeleportAddr    string
	TeleportControl string // http://host:port of teleport-sim's control endpoint
	Identity        string

	Fluentd        *Proc
	FluentdURL     string // https://127.0.0.1:port
	FluentdControl string // http://host:port of fluentd-sim's stats endpoint

	// Forward, set before StartFluentd, makes fluentd-sim also serve
	// in_forward over TLS with a shared key (ForwardSharedKey, a file) and
	// the sinks deliver there (ForwardURL) instead of to in_http.
	Forward          bool
	ForwardURL       string // tls://127.0.0.1:port
	ForwardSharedKey string

	// NATSListen is where the embedded server of ingest listens.
	NATSListen string
	// Storage is the ingest's state directory.
	Storage string

	procs []*Proc
}

// NewPipeline runs `configure` into dir/conf and returns a pipeline ready to
// start its parts.
func NewPipeline(ctx context.Context, bin, dir string) (*Pipeline, error) {
	return NewPipelineArgs(ctx, bin, dir)
}

// NewPipelineArgs is NewPipeline with more flags for configure (a cluster,
// say), given before its <out-dir>.
func NewPipelineArgs(ctx context.Context, bin, dir string, configureArgs ...string) (*Pipeline, error) {
	p := &Pipeline{
		Bin:        bin,
		Dir:        dir,
		LogDir:     filepath.Join(dir, "logs"),
		Conf:       filepath.Join(dir, "conf"),
		Passphrase: "demo-" + fmt.Sprint(time.Now().UnixNano()),
		Storage:    filepath.Join(dir, "storage"),
	}
	p.Config = filepath.Join(p.Conf, "teleport-event-handler.toml")
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	p.NATSListen = fmt.Sprintf("127.0.0.1:%d", port)
	cfg, err := p.Run(ctx, "configure", []byte(p.Passphrase+"\n"), "configure", append(configureArgs, p.Conf)...)
	if err != nil {
		return nil, err
	}
	if _, code := cfg.Exited(); code != 0 {
		return nil, fmt.Errorf("configure exited %d\n%s", code, cfg.Tail(20))
	}
	return p, nil
}

// NATSSeed is the NKey seed file configure wrote for role: the embedded
// server of the pipeline's ingest admits only these keys.
func (p *Pipeline) NATSSeed(role bus.Role) string {
	return filepath.Join(p.Conf, configure.NATSSeedFile(role))
}

// Run starts a binary and waits for it to exit; the returned Proc has the
// exit code and the log.
func (p *Pipeline) Run(ctx context.Context, name string, stdin []byte, bin string, args ...string) (*Proc, error) {
	proc, err := Start(ctx, Spec{Name: name, Bin: filepath.Join(p.Bin, bin), Args: args, LogDir: p.LogDir, Stdin: stdin})
	if err != nil {
		return nil, err
	}
	if _, err := proc.Wait(ctx); err != nil {
		return nil, err
	}
	return proc, nil
}

// start starts a long-running part and remembers it for StopAll.
func (p *Pipeline) start(ctx context.Context, s Spec) (*Proc, error) {
	s.LogDir = p.LogDir
	if !filepath.IsAbs(s.Bin) {
		s.Bin = filepath.Join(p.Bin, s.Bin)
	}
	proc, err := Start(ctx, s)
	if err != nil {
		return nil, err
	}
	p.procs = append(p.procs, proc)
	return proc, nil
}

// StartTeleport starts teleport-sim with extra flags (event counts, faults…)
// and waits until it serves.
func (p *Pipeline) StartTeleport(ctx context.Context, extra ...string) error {
	out := filepath.Join(p.Dir, "teleport")
	args := append([]string{"--out", out, "--port", "0"}, extra...)
	proc, err := p.start(ctx, Spec{Name: "teleport-sim", Bin: "teleport-sim", Args: args})
	if err != nil {
		return err
	}
	if _, err := proc.WaitForLine(ctx, "teleport-sim: serving"); err != nil {
		return err
	}
	addr, err := os.ReadFile(filepath.Join(out, "addr"))
	if err != nil {
		return fmt.Errorf("teleport-sim address: %w", err)
	}
	control, err := os.ReadFile(filepath.Join(out, "control-addr"))
	if err != nil {
		return fmt.Errorf("teleport-sim control address: %w", err)
	}
	p.Teleport = proc
	p.TeleportAddr = strings.TrimSpace(string(addr))
	p.TeleportControl = "http://" + strings.TrimSpace(string(control))
	p.Identity = filepath.Join(out, "identity")
	return nil
}

// StartFluentd starts fluentd-sim with configure's server certificate,
// the <match> patterns of the generated fluent.conf, and its in_http
// <parse> keep_time_key.
func (p *Pipeline) StartFluentd(ctx context.Context, extra ...string) error {
	addr := "127.0.0.1:0"
	if p.FluentdURL != "" { // a restart keeps the port the sinks know
		addr = strings.TrimPrefix(p.FluentdURL, "https://")
	}
	args := append([]string{
		"--addr", addr,
		"--ca", filepath.Join(p.Conf, "ca.crt"),
		"--cert", filepath.Join(p.Conf, "server.crt"),
		"--key", filepath.Join(p.Conf, "server.key"),
		"--stats-addr", "127.0.0.1:0",
		"--match", "test.log,session.*.log",
	}, extra...)
	conf, err := os.ReadFile(filepath.Join(p.Conf, "fluent.conf"))
	if err != nil {
		return fmt.Errorf("fluentd-sim: %w", err)
	}
	if fluentdsim.KeepTimeKey(conf) {
		args = append(args, "--keep-time-key")
	}
	if p.Forward {
		fwd, err := p.forwardArgs()
		if err != nil {
			return err
		}
		args = append(args, fwd...)
	}
	proc, err := p.start(ctx, Spec{Name: "fluentd-sim", Bin: "fluentd-sim", Args: args,
		Env: []string{"FLUENTD_SIM_KEY_PASSPHRASE=" + p.Passphrase}})
	if err != nil {
		return err
	}
	line, err := proc.WaitForLine(ctx, "fluentd-sim ready")
	if err != nil {
		return err
	}
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "url="); ok {
			p.FluentdURL = v
		}
		if v, ok := strings.CutPrefix(f, "stats="); ok {
			p.FluentdControl = v
		}
		if v, ok := strings.CutPrefix(f, "forward="); ok {
			p.ForwardURL = v
		}
	}
	if p.Forward && p.ForwardURL == "" {
		return fmt.Errorf("fluentd-sim ready line lacks forward=: %q", line)
	}
	if p.FluentdURL == "" || p.FluentdControl == "" {
		return fmt.Errorf("fluentd-sim ready line lacks url= or stats=: %q", line)
	}
	p.Fluentd = proc
	return nil
}

// forwardArgs are fluentd-sim's in_forward flags; a restart keeps the port
// and the shared key.
func (p *Pipeline) forwardArgs() ([]string, error) {
	addr := "127.0.0.1:0"
	if p.ForwardURL != "" {
		addr = strings.TrimPrefix(p.ForwardURL, "tls://")
	}
	if p.ForwardSharedKey == "" {
		p.ForwardSharedKey = filepath.Join(p.Dir, "forward-shared.key")
		key := fmt.Sprintf("shared-%d-%d\n", time.Now().UnixNano(), rand.Int64())
		if err := os.WriteFile(p.ForwardSharedKey, []byte(key), 0o600); err != nil {
			return nil, fmt.Errorf("write the shared key: %w", err)
		}
	}
	return []string{"--forward-addr", addr, "--shared-key-file", p.ForwardSharedKey, "--self-hostname", "fluentd-sim"}, nil
}

// IngestArgs are the flags every ingest of this pipeline gets. Metrics go
// to any free port: tests run many pipelines on one machine, beyond what
// the default addresses are for.
func (p *Pipeline) IngestArgs() []string {
	return []string{
		"--config", p.Config,
		"--teleport-addr", p.TeleportAddr,
		"--teleport-identity", p.Identity,
		"--storage", p.Storage,
		"--nats-listen", p.NATSListen,
		"--ingest-metrics-addr", "127.0.0.1:0",
	}
}

// StartIngest starts an ingest named name with the pipeline's flags and
// extra ones.
func (p *Pipeline) StartIngest(ctx context.Context, name string, extra ...string) (*Proc, error) {
	return p.start(ctx, Spec{Name: name, Bin: "ingest", Args: append(p.IngestArgs(), extra...)})
}

// SinkArgs are the flags every sink of this pipeline gets.
func (p *Pipeline) SinkArgs() []string {
	if p.Forward {
		return []string{
			"--config", p.Config,
			"--fluentd-url", p.ForwardURL + "/test.log",
			"--fluentd-session-url", p.ForwardURL + "/session",
			"--fluentd-shared-key-file", p.ForwardSharedKey,
			"--fluentd-self-hostname", "fluentd-sink",
			"--nats-listen", p.NATSListen,
		}
	}
	return []string{
		"--config", p.Config,
		"--fluentd-url", p.FluentdURL + "/test.log",
		"--fluentd-session-url", p.FluentdURL + "/session",
		"--nats-listen", p.NATSListen,
		"--sink-metrics-addr", "127.0.0.1:0",
	}
}

// StartSink starts a fluentd-sink named name.
func (p *Pipeline) StartSink(ctx context.Context, name string, extra ...string) (*Proc, error) {
	return p.start(ctx, Spec{Name: name, Bin: "fluentd-sink", Args: append(p.SinkArgs(), extra...)})
}

// StopAll stops every part still running: SIGTERM, then SIGKILL after
// timeout. It returns the processes that did not exit cleanly.
func (p *Pipeline) StopAll(timeout time.Duration) []string {
	var bad []string
	// Consumers first, the embedded server's ingest and the sims last.
	for i := len(p.procs) - 1; i >= 0; i-- {
		proc := p.procs[i]
		if done, _ := proc.Exited(); done {
			continue
		}
		if code, err := proc.Stop(timeout); err != nil || code != 0 {
			bad = append(bad, fmt.Sprintf("%s (exit %d, %v)", proc.Name, code, err))
		}
	}
	return bad
}

// Adopt makes proc, started with Start, one of the parts StopAll stops.
func (p *Pipeline) Adopt(proc *Proc) { p.procs = append(p.procs, proc) }

// Procs are the long-running parts started so far.
func (p *Pipeline) Procs() []*Proc { return p.procs }

// TeleportStats asks teleport-sim what it holds.
func (p *Pipeline) TeleportStats(ctx context.Context) (teleportsim.Stats, error) {
	var s teleportsim.Stats
	return s, getJSON(ctx, p.TeleportControl+"/stats", &s)
}

// TeleportIDs are the ids of every audit event teleport-sim holds.
func (p *Pipeline) TeleportIDs(ctx context.Context) ([]string, error) {
	var ids []string
	return ids, getJSON(ctx, p.TeleportControl+"/ids", &ids)
}

// TeleportSessions describes every recorded session.
func (p *Pipeline) TeleportSessions(ctx context.Context) ([]teleportsim.SessionInfo, error) {
	var s []teleportsim.SessionInfo
	return s, getJSON(ctx, p.TeleportControl+"/sessions", &s)
}

// FluentdStats are fluentd-sim's counts.
func (p *Pipeline) FluentdStats(ctx context.Context) (fluentdsim.Stats, error) {
	var s fluentdsim.Stats
	return s, getJSON(ctx, p.FluentdControl+"/stats", &s)
}

// FluentdIDs maps each stored event id to the times it was stored, for one
// tag ("" = all tags).
func (p *Pipeline) FluentdIDs(ctx context.Context, tag string) (map[string]int, error) {
	ids := make(map[string]int)
	u := p.FluentdControl + "/ids"
	if tag != "" {
		u += "?tag=" + tag
	}
	return ids, getJSON(ctx, u, &ids)
}

// ExpectedSessionEvents is how many recording events should reach the bus:
// every event of every recording that exists, less the skipped types.
func ExpectedSessionEvents(sessions []teleportsim.SessionInfo, skip ...string) int {
	n := 0
	for _, s := range sessions {
		if s.Missing {
			continue
		}
		n += s.Events
		for _, t := range skip {
			n -= s.Types[t]
		}
	}
	return n
}

func getJSON(ctx context.Context, url string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}

// Post sends a control request (faults, down/up, stragglers) to a sim.
func Post(ctx context.Context, method, url, body string) error {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		msg, err := io.ReadAll(resp.Body)
		if err != nil {
			return fmt.Errorf("%s %s: %s (reading the answer: %v)", method, url, resp.Status, err)
		}
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, msg)
	}
	return nil
}

// FreePort finds a free loopback port for a process started later. It
// draws from below the kernel's ephemeral range (32768 and up on Linux), so
// the many listeners that other processes open on port 0 meanwhile cannot
// take it before the process binds it.
func FreePort() (int, error) {
	const lo, hi = 20000, 32767
	var last error
	for range 100 {
		port := lo + rand.IntN(hi-lo+1)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			last = err
			continue
		}
		l.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free port in %d..%d: %w", lo, hi, last)
}
