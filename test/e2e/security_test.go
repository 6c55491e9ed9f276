package e2e

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// defaultNATSPort is the port of the embedded server's default listen
// address, 127.0.0.1:4222.
const defaultNATSPort = 4222

// TestSecurityEmbeddedNATSLoopbackOnly starts ingest with no [nats] settings
// at all and checks, from the kernel's socket table, that every socket it
// listens on is bound to a loopback address — and that the NATS port cannot
// be reached through this machine's other addresses.
func TestSecurityEmbeddedNATSLoopbackOnly(t *testing.T) {
	ctx, p := newPipeline(t, 2*time.Minute)
	dir := p.Dir
	if err := p.StartTeleport(ctx, "--events", "20", "--sessions", "1"); err != nil {
		t.Fatal(err)
	}
	// The default listen address has a fixed port; another test on this
	// machine may hold it for a while.
	free := false
	pollFor(ctx, 30*time.Second, func() bool { free = portFree(defaultNATSPort); return free })
	if !free {
		t.Skipf("port %d stays in use by another process; cannot start ingest with its defaults", defaultNATSPort)
	}
	// No --config and no --nats-*: the built-in defaults (the metrics on
	// any free port: the default one may be another test's).
	ing, err := harness.Start(ctx, harness.Spec{Name: "ingest-defaults", Bin: filepath.Join(binDir, "ingest"), LogDir: p.LogDir,
		Args: []string{"--teleport-addr", p.TeleportAddr, "--teleport-identity", p.Identity, "--storage", filepath.Join(dir, "storage-defaults"),
			"--ingest-metrics-addr", "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ing.Kill()
	line, err := ing.WaitForLine(ctx, "embedded NATS server started")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("nats://127.0.0.1:%d", defaultNATSPort); !strings.Contains(line, want) {
		t.Errorf("embedded server is not on %s by default: %s", want, line)
	}

	socks, err := listeningSockets(ing.PID())
	if err != nil {
		t.Fatal(err)
	}
	sawNATS := false
	for _, s := range socks {
		if !s.ip.IsLoopback() {
			t.Errorf("ingest listens on %s, which is not a loopback address", net.JoinHostPort(s.ip.String(), strconv.Itoa(s.port)))
		}
		if s.port == defaultNATSPort {
			sawNATS = true
		}
	}
	if !sawNATS {
		t.Fatalf("ingest has no listening socket on port %d; found %v", defaultNATSPort, socks)
	}

	// Reaching the port through a non-loopback address of this host must
	// fail, whatever the socket table says.
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	tried := 0
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		tried++
		target := net.JoinHostPort(ipn.IP.String(), strconv.Itoa(defaultNATSPort))
		conn, err := net.DialTimeout("tcp", target, 2*time.Second)
		if err == nil {
			conn.Close()
			t.Errorf("the embedded NATS server answers on %s", target)
		}
	}
	t.Logf("listening sockets %v; tried %d non-loopback addresses", socks, tried)
	if code, err := ing.Stop(30 * time.Second); err != nil || code != 0 {
		t.Errorf("ingest did not stop cleanly: exit %d, %v\n%s", code, err, ing.Tail(10))
	}
}

// TestSecurityNATSAuthRequired runs ingest's embedded server with a token
// and checks that NATS clients without it — a plain client, one with a
// wrong token, and a fluentd-sink without credentials — are refused, while
// the right token gets in.
func TestSecurityNATSAuthRequired(t *testing.T) {
	ctx, p := newPipeline(t, 2*time.Minute)
	if err := p.StartTeleport(ctx, "--events", "20", "--sessions", "1"); err != nil {
		t.Fatal(err)
	}
	const token = "nats-token-7f3a9c1e"
	// The token form, for an installation without a users file.
	ing, err := p.StartIngest(ctx, "ingest", "--nats-users", "", "--ingest-nats-nkey", "", "--nats-token", token)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ing.WaitForLine(ctx, "embedded NATS server started"); err != nil {
		t.Fatal(err)
	}
	url := "nats://" + p.NATSListen

	for name, opts := range map[string][]nats.Option{
		"no credentials": nil,
		"wrong token":    {nats.Token("not-" + token)},
		"user, no token": {nats.UserInfo("ingest", token)},
	} {
		nc, err := nats.Connect(url, append(opts, nats.MaxReconnects(0))...)
		if err == nil {
			nc.Close()
			t.Errorf("%s: the embedded server accepted the connection", name)
			continue
		}
		if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
			t.Errorf("%s: refused, but not for authorization: %v", name, err)
		}
	}
	nc, err := nats.Connect(url, nats.Token(token), nats.MaxReconnects(0))
	if err != nil {
		t.Fatalf("the right token is refused: %v", err)
	}
	nc.Close()

	sinkArgs := withFlags(p.SinkArgs(), "--fluentd-url", "https://127.0.0.1:1/test.log", "--fluentd-session-url", "https://127.0.0.1:1/session",
		"--sink-nats-nkey", "")
	r, err := runCLI(ctx, 30*time.Second, "fluentd-sink", sinkArgs, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	checkOneLineError(t, badCase{bin: "fluentd-sink", args: sinkArgs, code: exitRuntime,
		words: []string{url, "refused the credentials"}}, r)
	if code, err := ing.Stop(30 * time.Second); err != nil || code != 0 {
		t.Errorf("ingest did not stop cleanly: exit %d, %v\n%s", code, err, ing.Tail(10))
	}
}

// TestSecuritySinkRefusesPlainHTTP checks that a plain http:// Fluentd URL,
// given by flag, environment or config file, for audit events or for
// session recordings, stops the sink before it sends anything, unless
// --insecure-http says so.
func TestSecuritySinkRefusesPlainHTTP(t *testing.T) {
	ctx, p := newPipeline(t, 2*time.Minute)
	dir := p.Dir
	if err := p.StartFluentd(ctx, "--plain-http"); err != nil {
		t.Fatal(err)
	}
	plain := strings.Replace(p.FluentdURL, "https://", "http://", 1)
	if !strings.HasPrefix(plain, "http://") {
		t.Fatalf("fluentd-sim URL %q", p.FluentdURL)
	}
	tomlPath := filepath.Join(dir, "plain.toml")
	toml := fmt.Sprintf("[forward.fluentd]\nurl = %q\nsession-url = %q\n", plain+"/test.log", plain+"/session")
	if err := os.WriteFile(tomlPath, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--config", p.Config, "--nats-listen", p.NATSListen}
	for _, c := range []struct {
		name string
		args []string
		env  []string
		word string
	}{
		{"audit URL flag", withFlags(base, "--fluentd-url", plain+"/test.log"), nil, "--fluentd-url"},
		{"session URL flag", withFlags(base, "--fluentd-session-url", plain+"/session"), nil, "--fluentd-session-url"},
		{"environment", base, []string{"FDFWD_FLUENTD_URL=" + plain + "/test.log"}, "FDFWD_FLUENTD_URL"},
		{"config file", []string{"--config", tomlPath, "--nats-listen", p.NATSListen}, nil, "plain.toml"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := runCLI(ctx, 30*time.Second, "fluentd-sink", c.args, c.env, "")
			if err != nil {
				t.Fatal(err)
			}
			checkOneLineError(t, badCase{bin: "fluentd-sink", args: c.args, code: exitUsage,
				words: []string{c.word, "plain http", "insecure-http"}}, r)
		})
	}
	stats, err := p.FluentdStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Requests != 0 || stats.Connections != 0 {
		t.Errorf("a refused sink still reached Fluentd: %d connections, %d requests", stats.Connections, stats.Requests)
	}
}

// TestSecurityNoSecretsInLogs makes a full run like `make demo` with every
// secret in play — the key passphrase (server.key and, encrypted too,
// client.key) and a NATS token — at debug level, then checks that configure
// wrote its keys 0600, and that no log file holds the passphrase, the token
// or private key material.
func TestSecurityNoSecretsInLogs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	p, err := harness.NewPipeline(ctx, binDir, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p.StopAll(10 * time.Second)
	// Again, with client.key encrypted too, so the sink needs the
	// passphrase.
	cfg, err := p.Run(ctx, "configure-encrypted", []byte(p.Passphrase+"\n"), "configure", "--force", "--encrypt-client-key", "--debug", p.Conf)
	if err != nil {
		t.Fatal(err)
	}
	if _, code := cfg.Exited(); code != 0 {
		t.Fatalf("configure --encrypt-client-key exited %d\n%s", code, cfg.Tail(20))
	}
	checkKeyFiles(t, p.Conf)

	const token = "tok-secret-5d1b0e77a2"
	from := time.Now().UTC().AddDate(0, 0, -2).Truncate(24 * time.Hour)
	if err := p.StartTeleport(ctx, "--events", "500", "--sessions", "5", "--from", from.Format(time.RFC3339), "--missing-recordings", "0"); err != nil {
		t.Fatal(err)
	}
	if err := p.StartFluentd(ctx); err != nil {
		t.Fatal(err)
	}
	ing, err := p.StartIngest(ctx, "ingest", "--debug", "--nats-users", "", "--ingest-nats-nkey", "", "--nats-token", token, "--start-time", from.Format(time.RFC3339))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ing.WaitForLine(ctx, "embedded NATS server started"); err != nil {
		t.Fatal(err)
	}
	// The sink reads client.key's passphrase from the file configure named
	// in the TOML (key-passphrase-file).
	if _, err := p.StartSink(ctx, "fluentd-sink", "--debug", "--sink-nats-nkey", "", "--nats-token", token); err != nil {
		t.Fatal(err)
	}
	ids, err := p.TeleportIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sessions, err := p.TeleportSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantSession := harness.ExpectedSessionEvents(sessions, "print")
	pollUntil(ctx, t, 3*time.Minute, "every event at Fluentd", func(ctx context.Context) (bool, string) {
		for _, proc := range p.Procs() {
			if done, code := proc.Exited(); done {
				t.Fatalf("%s exited (code %d)\n%s", proc.Name, code, proc.Tail(15))
			}
		}
		s, err := p.FluentdStats(ctx)
		if err != nil {
			return false, err.Error()
		}
		var audit, session int64
		for tag, n := range s.Stored {
			if strings.HasPrefix(tag, "session.") {
				session += n
			} else {
				audit += n
			}
		}
		return audit >= int64(len(ids)) && session >= int64(wantSession),
			fmt.Sprintf("audit %d/%d, session %d/%d", audit, len(ids), session, wantSession)
	})
	got, err := p.FluentdIDs(ctx, "test.log")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if got[id] == 0 {
			t.Fatalf("event %s is not at Fluentd", id)
		}
	}
	if bad := p.StopAll(30 * time.Second); len(bad) > 0 {
		t.Errorf("did not stop cleanly: %v", bad)
	}

	logs, err := filepath.Glob(filepath.Join(p.LogDir, "*"))
	if err != nil || len(logs) < 5 {
		t.Fatalf("expected the logs of configure, teleport-sim, fluentd-sim, ingest and fluentd-sink in %s, found %v (%v)", p.LogDir, logs, err)
	}
	secrets := map[string]string{
		"the key passphrase":   p.Passphrase,
		"the NATS token":       token,
		"private key material": "PRIVATE KEY",
		"the passphrase (hex)": hex.EncodeToString([]byte(p.Passphrase)),
	}
	for _, path := range logs {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for what, s := range secrets {
			if n := strings.Count(string(data), s); n > 0 {
				t.Errorf("%s: %s appears %d times, e.g.: %s", filepath.Base(path), what, n, lineWith(string(data), s))
			}
		}
	}
}

// checkKeyFiles asserts that every private key configure wrote, and the
// files holding the passphrase, are readable by the owner only, and that
// server.key and client.key are encrypted.
func checkKeyFiles(t *testing.T, conf string) {
	t.Helper()
	keys, err := filepath.Glob(filepath.Join(conf, "*.key"))
	if err != nil || len(keys) < 3 {
		t.Fatalf("expected ca.key, server.key and client.key in %s, found %v (%v)", conf, keys, err)
	}
	secretFiles := append(keys, filepath.Join(conf, "fluent.conf"), filepath.Join(conf, "teleport-event-handler.toml"), filepath.Join(conf, "client.key.pass"))
	for _, path := range secretFiles {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if mode := fi.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s has mode %#o, want 0600", filepath.Base(path), mode)
		}
	}
	for _, name := range []string{"server.key", "client.key"} {
		data, err := os.ReadFile(filepath.Join(conf, name))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), "ENCRYPTED") {
			t.Errorf("%s is not encrypted", name)
		}
	}
}

// lineWith is the first line of s containing sub, for failure messages.
func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			if len(l) > 300 {
				l = l[:300] + "…"
			}
			return l
		}
	}
	return ""
}

// socket is one listening TCP socket.
type socket struct {
	ip   net.IP
	port int
}

func (s socket) String() string { return net.JoinHostPort(s.ip.String(), strconv.Itoa(s.port)) }

// listeningSockets reads the TCP sockets in LISTEN state that process pid
// holds, from its file descriptors and /proc/net/tcp{,6}.
func listeningSockets(pid int) ([]socket, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, fmt.Errorf("file descriptors of %d: %w", pid, err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if ino, ok := strings.CutPrefix(target, "socket:["); ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	var out []socket
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		socks, err := parseProcNetTCP(table, inodes)
		if err != nil {
			return nil, err
		}
		out = append(out, socks...)
	}
	return out, nil
}

// parseProcNetTCP reads one /proc/net/tcp table: local address in column
// 2 (hex IP:port, the IP in host byte order per 32-bit word), state in
// column 4 (0A is LISTEN), inode in column 10.
func parseProcNetTCP(path string, inodes map[string]bool) ([]socket, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil // no IPv6
		}
		return nil, err
	}
	defer f.Close()
	var out []socket
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] {
			continue
		}
		hexIP, hexPort, ok := strings.Cut(fields[1], ":")
		if !ok {
			return nil, fmt.Errorf("%s: bad address %q", path, fields[1])
		}
		raw, err := hex.DecodeString(hexIP)
		if err != nil || len(raw)%4 != 0 {
			return nil, fmt.Errorf("%s: bad address %q", path, fields[1])
		}
		ip := make(net.IP, len(raw))
		for i := 0; i < len(raw); i += 4 { // each 32-bit word is little-endian
			ip[i], ip[i+1], ip[i+2], ip[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
		}
		port, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil {
			return nil, fmt.Errorf("%s: bad port %q", path, hexPort)
		}
		out = append(out, socket{ip: ip, port: int(port)})
	}
	return out, sc.Err()
}

// portFree reports whether the port can be bound on every address, so
// nothing listens on it.
func portFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// pollFor calls cond every 200ms until it holds or d passes.
func pollFor(ctx context.Context, d time.Duration, cond func() bool) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
