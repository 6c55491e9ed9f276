package config

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The tests set the variables they need; none may leak in from the
	// environment they run in.
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "FDFWD_") || strings.HasPrefix(name, "FDWRD_") {
			os.Unsetenv(name)
		}
	}
	goleak.VerifyTestMain(m)
}

// loadArgs runs a minimal app with cmd's flags and args and returns what Load made.
func loadArgs(t *testing.T, cmd Command, args ...string) (*Config, error) {
	t.Helper()
	var cfg *Config
	app := &cli.App{
		Name:           "test",
		Flags:          Flags(cmd),
		Writer:         io.Discard,
		ErrWriter:      io.Discard,
		OnUsageError:   usageError,
		ExitErrHandler: func(*cli.Context, error) {},
		Action: func(c *cli.Context) error {
			var err error
			cfg, err = Load(c, cmd)
			return err
		},
	}
	err := app.Run(append([]string{"test"}, args...))
	return cfg, err
}

// fixture is a directory with the files configurations point at.
type fixture struct {
	dir string
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	f := fixture{dir: t.TempDir()}
	for _, n := range []string{"identity", "ca.crt", "client.crt", "client.key", "tls.crt", "tls.key", "user.creds", "pass", "ingest.nk", "sink.nk", "users.toml"} {
		if err := os.WriteFile(filepath.Join(f.dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A seed file anyone on the host can read.
	loose := filepath.Join(f.dir, "loose.nk")
	if err := os.WriteFile(loose, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f fixture) path(name string) string { return filepath.Join(f.dir, name) }

// write stores a TOML file, with {d} replaced by the fixture directory.
func (f fixture) write(t *testing.T, name, body string) string {
	t.Helper()
	p := f.path(name)
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(body, "{d}", f.dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const (
	ingestOK = "[teleport]\nidentity = \"{d}/identity\"\n"
	sinkOK   = "[fluentd]\nurl = \"https://fluentd:8888/test.log\"\nsession-url = \"https://fluentd:8888/session\"\n"
)

func TestBadInputs(t *testing.T) {
	tests := []struct {
		name  string
		cmd   Command
		toml  string            // "" = no file
		env   map[string]string // set for the test
		args  []string
		want  string // exact message; {f} is the file, {d} the fixture directory
		usage bool   // a *UsageError rather than an *Error
	}{
		{name: "typo with suggestion", toml: "bacth = 5\n" + ingestOK,
			want: `config {f}: unknown key "bacth", did you mean "batch"?`},
		{name: "typo in section name", toml: ingestOK + "[natz]\nurl = \"nats://a:4222\"\n",
			want: `config {f}: unknown key "natz.url", did you mean "nats.url"?`},
		{name: "top-level key inside a section", toml: ingestOK + "batch = 5\n",
			want: `config {f}: unknown key "teleport.batch", did you mean "batch"? (top-level keys go before the first [section])`},
		{name: "unknown key without suggestion", toml: ingestOK + "[nats]\ncolour = \"blue\"\n",
			want: `config {f}: unknown key "nats.colour"`},
		{name: "bad duration", toml: "timeout = \"5 seconds\"\n" + ingestOK,
			want: `config {f}: key "timeout": must be a duration such as "5s" or "1h30m", got "5 seconds"`},
		{name: "duration as integer", toml: ingestOK + "[sink]\nack-wait = 30\n", cmd: Sink,
			want: `config {f}: key "sink.ack-wait": must be a duration string such as "5s" or "1h30m", got integer 30`},
		{name: "bad start-time", toml: "start-time = \"2024-13-01T00:00:00Z\"\n" + ingestOK,
			want: `config {f}: key "start-time": must be an RFC 3339 time such as 2024-01-02T15:04:05Z, got "2024-13-01T00:00:00Z"`},
		{name: "start-time without zone", toml: "start-time = 2024-01-02T03:04:05\n" + ingestOK,
			want: `config {f}: key "start-time": must be an RFC 3339 time with a time zone, such as 2024-01-02T15:04:05Z, got 2024-01-02T03:04:05`},
		{name: "identity file missing", toml: "[teleport]\nidentity = \"{d}/nope\"\n",
			want: `config {f}: key "teleport.identity": file "{d}/nope" does not exist: write it with tctl auth sign --format=file --user=teleport-event-handler --out={d}/nope, or correct the path`},
		{name: "identity and cert", toml: ingestOK + "cert = \"{d}/tls.crt\"\nkey = \"{d}/tls.key\"\nca = \"{d}/ca.crt\"\n",
			want: `config {f}: key "teleport.cert": conflicts with "teleport.identity": use an identity file, or a certificate, key and CA, not both`},
		{name: "cert without key and ca", toml: "[teleport]\ncert = \"{d}/tls.crt\"\n",
			want: `config {f}: key "teleport.cert": needs "teleport.key" and "teleport.ca" as well (teleport.cert, teleport.key and teleport.ca go together)`},
		{name: "no teleport credentials",
			want: `no Teleport credentials: set "teleport.identity" (--teleport-identity, FDFWD_TELEPORT_IDENTITY), or "teleport.cert", "teleport.key" and "teleport.ca"`},
		{name: "replicas out of range", toml: ingestOK + "[nats]\nreplicas = 7\n",
			want: `config {f}: key "nats.replicas": must be 1..5, got 7`},
		{name: "batch zero", toml: "batch = 0\n" + ingestOK,
			want: `config {f}: key "batch": must be 1..10000, got 0`},
		{name: "page size zero", toml: ingestOK + "[ingest]\npage-size = 0\n",
			want: `config {f}: key "ingest.page-size": must be 1..10000, got 0`},
		{name: "page size over the server's maximum", toml: ingestOK + "[ingest]\npage-size = 10001\n",
			want: `config {f}: key "ingest.page-size": must be 1..10000, got 10001`},
		{name: "page size flag", toml: ingestOK, args: []string{"--ingest-page-size", "20000"},
			want: `flag --ingest-page-size: must be 1..10000, got 20000`},
		{name: "page size env", toml: ingestOK, env: map[string]string{"FDFWD_INGEST_PAGE_SIZE": "-5"},
			want: `environment variable FDFWD_INGEST_PAGE_SIZE: key "ingest.page-size": must be 1..10000, got -5`},
		{name: "negative concurrency", toml: "concurrency = -1\n" + ingestOK,
			want: `config {f}: key "concurrency": must be 1..1024, got -1`},
		{name: "listen port out of range", toml: ingestOK + "[nats]\nlisten = \"127.0.0.1:70000\"\n",
			want: `config {f}: key "nats.listen": port must be 0..65535, got "70000"`},
		{name: "metrics address without port", toml: "metrics-addr = \"localhost\"\n" + ingestOK,
			want: `config {f}: key "metrics-addr": must be host:port or host:first-last, got "localhost"`},
		{name: "malformed TOML", toml: "batch = = 3\n" + ingestOK,
			want: `config {f}: line 1, column 9: unexpected character U+003D '=' at start of value`},
		{name: "string where integer expected", toml: "batch = \"20\"\n" + ingestOK,
			want: `config {f}: key "batch": must be an integer, got string "20"`},
		{name: "types with a number", toml: "types = [\"user.login\", 3]\n" + ingestOK,
			want: `config {f}: key "types": element 2 must be a string, got integer 3`},
		{name: "fluentd url bad port", cmd: Sink, toml: "[fluentd]\nurl = \"https://fluentd:99999/test.log\"\nsession-url = \"https://fluentd:8888/s\"\n",
			want: `config {f}: key "fluentd.url": port must be 1..65535, got "99999"`},
		{name: "fluentd url malformed", cmd: Sink, toml: "[forward.fluentd]\nurl = \"https://flu entd/%zz\"\nsession-url = \"https://fluentd:8888/s\"\n",
			want: `config {f}: key "forward.fluentd.url": malformed URL "https://flu entd/%zz": invalid character " " in host name`},
		{name: "fluentd url relative", cmd: Sink, toml: "[fluentd]\nurl = \"fluentd/test.log\"\nsession-url = \"https://fluentd:8888/s\"\n",
			want: `config {f}: key "fluentd.url": must be an absolute URL such as https://fluentd:8888/test.log, got "fluentd/test.log"`},
		{name: "fluentd plain http", cmd: Sink, toml: "[fluentd]\nurl = \"http://fluentd:8888/test.log\"\nsession-url = \"https://fluentd:8888/s\"\n",
			want: `config {f}: key "fluentd.url": "http://fluentd:8888/test.log" is plain http: use https, or set insecure-http = true (--insecure-http) to allow it`},
		{name: "both fluentd sections disagree", cmd: Sink, toml: sinkOK + "[forward.fluentd]\nurl = \"https://other:8888/test.log\"\n",
			want: `config {f}: keys "fluentd.url" and "forward.fluentd.url" are the same setting with different values ("https://fluentd:8888/test.log" and "https://other:8888/test.log"): keep one`},
		{name: "both lock spellings disagree", toml: "lock-enabled = true\n[lock]\nenabled = false\n" + ingestOK,
			want: `config {f}: keys "lock-enabled" and "lock.enabled" are the same setting with different values (true and false): keep one`},
		{name: "sink without url", cmd: Sink,
			want: `key "fluentd.url" is required: set it in [fluentd] or [forward.fluentd], --fluentd-url or FDFWD_FLUENTD_URL`},
		{name: "nats url scheme", cmd: Sink, toml: sinkOK + "[nats]\nurl = \"nats://a:4222,http://b:4222\"\n",
			want: `config {f}: key "nats.url": scheme must be nats, tls, ws or wss, got "http"`},
		{name: "nats creds missing", cmd: Sink, toml: sinkOK + "[nats]\ncreds = \"{d}/missing.creds\"\n",
			want: `config {f}: key "nats.creds": file "{d}/missing.creds" does not exist: write the NATS credentials with configure --nats-credentials {d}, or correct the path`},
		{name: "ingest seed open to others", toml: ingestOK + "[ingest]\nnats-nkey = \"{d}/loose.nk\"\n",
			want: `config {f}: key "ingest.nats-nkey": file "{d}/loose.nk" is open to group or others (mode 0644), it must be readable by its owner only: run chmod 600 {d}/loose.nk`},
		{name: "sink seed open to others by flag", cmd: Sink, toml: sinkOK, args: []string{"--sink-nats-nkey", "{d}/loose.nk"},
			want: `flag --sink-nats-nkey: file "{d}/loose.nk" is open to group or others (mode 0644), it must be readable by its owner only: run chmod 600 {d}/loose.nk`},
		{name: "nats nkey open to others", cmd: Sink, toml: sinkOK + "[nats]\nnkey = \"{d}/loose.nk\"\n",
			want: `config {f}: key "nats.nkey": file "{d}/loose.nk" is open to group or others (mode 0644), it must be readable by its owner only: run chmod 600 {d}/loose.nk`},
		{name: "sink seed missing", cmd: Sink, toml: sinkOK + "[sink]\nnats-nkey = \"{d}/missing.nk\"\n",
			want: `config {f}: key "sink.nats-nkey": file "{d}/missing.nk" does not exist: write the NATS credentials with configure --nats-credentials {d}, or correct the path`},
		{name: "users file without ingest credentials", toml: ingestOK + "[nats]\nusers = \"{d}/users.toml\"\n",
			want: `config {f}: key "nats.users": the embedded server admits only the users of this file, and ingest has no credentials: set "ingest.nats-nkey" to the ingest seed file (configure --nats-credentials writes it)`},
		{name: "users file and token", toml: ingestOK + "[nats]\nusers = \"{d}/users.toml\"\ntoken = \"t0k3n\"\n[ingest]\nnats-nkey = \"{d}/ingest.nk\"\n",
			want: `config {f}: key "nats.token": conflicts with "nats.users": the embedded server admits the users of that file only`},
		{name: "nats creds and token", cmd: Sink, toml: sinkOK + "[nats]\ncreds = \"{d}/user.creds\"\ntoken = \"t0k3n\"\n",
			want: `config {f}: key "nats.token": conflicts with "nats.creds": choose one way to authenticate to NATS`},
		{name: "passphrase twice", cmd: Sink, toml: sinkOK + "key-passphrase = \"pw\"\nkey-passphrase-file = \"{d}/pass\"\n",
			want: `config {f}: key "fluentd.key-passphrase-file": conflicts with "fluentd.key-passphrase": give the passphrase one way`},
		{name: "stream name with a dot", toml: ingestOK + "[nats]\naudit-stream = \"AUDIT.V2\"\n",
			want: `config {f}: key "nats.audit-stream": "AUDIT.V2" must not contain spaces, '.', '*', '>', '/' or '\'`},
		{name: "max message size too big", toml: ingestOK + "[nats]\nmax-msg-size = 100000000\n",
			want: `config {f}: key "nats.max-msg-size": must be 1024..67108864 (64 MiB), got 100000000`},
		{name: "env integer", toml: ingestOK, env: map[string]string{"FDFWD_BATCH": "abc"},
			want: `environment variable FDFWD_BATCH: key "batch": must be an integer, got "abc"`},
		{name: "env legacy spelling duration", cmd: Sink, toml: sinkOK, env: map[string]string{"FDWRD_FLUENTD_CERT": "{d}/missing.crt", "FDWRD_FLUENTD_KEY": "{d}/client.key"},
			want: `environment variable FDWRD_FLUENTD_CERT: key "fluentd.cert": file "{d}/missing.crt" does not exist`},
		{name: "flag out of range", toml: ingestOK, args: []string{"--nats-replicas", "9"},
			want: `flag --nats-replicas: must be 1..5, got 9`},
		{name: "flag bad start-time", toml: ingestOK, args: []string{"--start-time", "yesterday"},
			want: `flag --start-time: must be an RFC 3339 time such as 2024-01-02T15:04:05Z, got "yesterday"`},
		{name: "config file missing", args: []string{"--config", "{d}/nope.toml"},
			want: `config {d}/nope.toml: file does not exist`},
		{name: "positional argument", toml: ingestOK, args: []string{"start"},
			want: `unexpected argument "start" (ingest takes flags only)`, usage: true},
		{name: "configure without out-dir", cmd: Configure,
			want: `missing argument <out-dir>: usage: configure <out-dir> [teleport-addr [ca-name [server-name [client-name]]]]`, usage: true},
		{name: "configure bad length", cmd: Configure, args: []string{"--length", "1024", "out"},
			want: `flag --length: must be 2048 or 4096, got 1024`},
		{name: "configure bad ip", cmd: Configure, args: []string{"--ip", "10.0.0.300", "out"},
			want: `flag --ip: "10.0.0.300" is not an IP address`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			args := make([]string, 0, len(tt.args)+2)
			file := ""
			if tt.toml != "" {
				file = f.write(t, "config.toml", tt.toml)
				args = append(args, "--config", file)
			}
			for _, a := range tt.args {
				args = append(args, strings.ReplaceAll(a, "{d}", f.dir))
			}
			for k, v := range tt.env {
				t.Setenv(k, strings.ReplaceAll(v, "{d}", f.dir))
			}
			_, err := loadArgs(t, tt.cmd, args...)
			if err == nil {
				t.Fatal("no error")
			}
			want := strings.NewReplacer("{f}", file, "{d}", f.dir).Replace(tt.want)
			if err.Error() != want {
				t.Errorf("error\n got: %s\nwant: %s", err, want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("message is not one line: %q", err)
			}
			var ue *UsageError
			var ce *Error
			if tt.usage && !errors.As(err, &ue) {
				t.Errorf("want a *UsageError, got %T", err)
			}
			if !tt.usage && !errors.As(err, &ce) {
				t.Errorf("want a *config.Error, got %T", err)
			}
		})
	}
	if len(tests) < 20 {
		t.Fatalf("only %d bad inputs", len(tests))
	}
}

// TestCommandCredentials: one TOML serves both commands, each connecting
// with its own seed file instead of the [nats] credentials; without its
// own key a command uses the [nats] ones.
// TestCommandCredentials: a command logs in to NATS one way. Its own NKey
// ([ingest] or [sink] nats-nkey) wins over [nats] nkey (one TOML serves
// both commands); with a user and password, a token or a creds file —
// from the file, a variable or a flag — it is an error naming both, as the
// issue saw FDFWD_NATS_USER/PASSWORD silently win over the NKey.
func TestCommandCredentials(t *testing.T) {
	f := newFixture(t)
	path := f.write(t, "c.toml", ingestOK+sinkOK+"[nats]\nnkey = \"{d}/users.toml\"\n[ingest]\nnats-nkey = \"{d}/ingest.nk\"\n[sink]\nnats-nkey = \"{d}/sink.nk\"\n")
	for cmd, want := range map[Command]string{Ingest: f.path("ingest.nk"), Sink: f.path("sink.nk")} {
		cfg, err := LoadFile(path, cmd)
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		if cfg.NATS.NKey != want {
			t.Errorf("%s: nkey %q, want its own %q", cmd, cfg.NATS.NKey, want)
		}
	}

	sinkFile := f.write(t, "e.toml", sinkOK+"[sink]\nnats-nkey = \"{d}/sink.nk\"\n")
	t.Setenv("FDFWD_NATS_USER", "u")
	t.Setenv("FDFWD_NATS_PASSWORD", "p")
	_, err := loadArgs(t, Sink, "--config", sinkFile)
	want := `environment variable FDFWD_NATS_USER: key "nats.user": conflicts with "sink.nats-nkey" (config ` + sinkFile + `): a command logs in to NATS one way; remove one of them`
	if err == nil || err.Error() != want {
		t.Errorf("[sink] nats-nkey with FDFWD_NATS_USER/PASSWORD:\n got %v\nwant %s", err, want)
	}
	t.Setenv("FDFWD_NATS_USER", "")
	t.Setenv("FDFWD_NATS_PASSWORD", "")
	_, err = loadArgs(t, Sink, "--config", sinkFile, "--nats-token", "t0k3n")
	if err == nil || !strings.Contains(err.Error(), `flag --nats-token: conflicts with "sink.nats-nkey"`) {
		t.Errorf("--nats-token with [sink] nats-nkey: %v", err)
	}
	if err != nil && strings.Contains(err.Error(), "t0k3n") {
		t.Error("the error shows the token")
	}
	both := f.write(t, "f.toml", ingestOK+"[nats]\ncreds = \"{d}/user.creds\"\n[ingest]\nnats-nkey = \"{d}/ingest.nk\"\n")
	if _, err := LoadFile(both, Ingest); err == nil || !strings.Contains(err.Error(), `key "nats.creds": conflicts with "ingest.nats-nkey"`) {
		t.Errorf("[nats] creds with [ingest] nats-nkey: %v", err)
	}

	// The other command's key is not this one's: the sink logs in with
	// the [nats] user when only ingest has a key of its own.
	path = f.write(t, "d.toml", ingestOK+sinkOK+"[nats]\nuser = \"u\"\npassword = \"p\"\n[ingest]\nnats-nkey = \"{d}/ingest.nk\"\n")
	cfg, err := LoadFile(path, Sink)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATS.NKey != "" || cfg.NATS.User != "u" || cfg.NATS.Password != "p" {
		t.Errorf("sink without its own key: nkey %q user %q, want the [nats] user", cfg.NATS.NKey, cfg.NATS.User)
	}
}

// TestSinkReadsNoIngestNATSKeys: [nats] replicas and the stream limits are
// ingest's; the sink, reading the same TOML, keeps their defaults, so a
// sink started first creates no R3 stream with ingest's settings.
func TestSinkReadsNoIngestNATSKeys(t *testing.T) {
	f := newFixture(t)
	path := f.write(t, "r.toml", sinkOK+"[nats]\nreplicas = 3\nmax-age = \"1h\"\n")
	cfg, err := LoadFile(path, Sink)
	if err != nil {
		t.Fatal(err)
	}
	if def := Default().NATS; cfg.NATS.Replicas != def.Replicas || cfg.NATS.MaxAge != def.MaxAge {
		t.Errorf("sink: replicas %d, max-age %s; want the defaults %d, %s", cfg.NATS.Replicas, cfg.NATS.MaxAge, def.Replicas, def.MaxAge)
	}
	cfg, err = LoadFile(f.write(t, "i.toml", ingestOK+"[nats]\nreplicas = 3\n"), Ingest)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATS.Replicas != 3 {
		t.Errorf("ingest: replicas %d, want 3", cfg.NATS.Replicas)
	}
}

func TestPrecedence(t *testing.T) {
	tests := []struct {
		name    string
		file    bool
		env     bool
		flag    bool
		batch   int
		timeout time.Duration
		types   []string
		addr    []string
	}{
		{name: "default", batch: 20, timeout: 5 * time.Second, types: nil, addr: []string{"localhost:3025"}},
		{name: "file over default", file: true, batch: 30, timeout: 30 * time.Second, types: []string{"a.file"}, addr: []string{"file:3025"}},
		{name: "env over file", file: true, env: true, batch: 40, timeout: 40 * time.Second, types: []string{"a.env", "b.env"}, addr: []string{"env:3025"}},
		{name: "flag over env and file", file: true, env: true, flag: true, batch: 50, timeout: 50 * time.Second, types: []string{"a.flag", "b.flag"}, addr: []string{"flag1:3025", "flag2:3025"}},
		{name: "flag over env", env: true, flag: true, batch: 50, timeout: 50 * time.Second, types: []string{"a.flag", "b.flag"}, addr: []string{"flag1:3025", "flag2:3025"}},
		{name: "flag over file", file: true, flag: true, batch: 50, timeout: 50 * time.Second, types: []string{"a.flag", "b.flag"}, addr: []string{"flag1:3025", "flag2:3025"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			args := []string{"--teleport-identity", f.path("identity")}
			if tt.file {
				body := "batch = 30\ntimeout = \"30s\"\ntypes = \"a.file\"\n[teleport]\naddr = \"file:3025\"\nidentity = \"{d}/identity\"\n"
				args = append(args, "--config", f.write(t, "c.toml", body))
			}
			if tt.env {
				t.Setenv("FDFWD_BATCH", "40")
				t.Setenv("FDFWD_TIMEOUT", "40s")
				t.Setenv("FDFWD_TYPES", "a.env, b.env")
				t.Setenv("FDFWD_TELEPORT_ADDR", "env:3025")
			}
			if tt.flag {
				args = append(args, "--batch", "50", "--timeout", "50s", "--types", "a.flag", "--types", "b.flag", "--teleport-addr", "flag1:3025,flag2:3025")
			}
			cfg, err := loadArgs(t, Ingest, args...)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Batch != tt.batch || cfg.Timeout != tt.timeout || !reflect.DeepEqual(cfg.Types, tt.types) || !reflect.DeepEqual(cfg.Teleport.Addr, tt.addr) {
				t.Errorf("got batch %d timeout %s types %q addr %q; want %d %s %q %q",
					cfg.Batch, cfg.Timeout, cfg.Types, cfg.Teleport.Addr, tt.batch, tt.timeout, tt.types, tt.addr)
			}
		})
	}
}

func TestConfigFromEnvironment(t *testing.T) {
	f := newFixture(t)
	t.Setenv("FDFWD_CONFIG", f.write(t, "c.toml", "batch = 33\n"+ingestOK))
	cfg, err := loadArgs(t, Ingest)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Batch != 33 || cfg.File != f.path("c.toml") {
		t.Errorf("batch %d file %q: FDFWD_CONFIG not read", cfg.Batch, cfg.File)
	}
	// --config wins over the variable.
	cfg, err = loadArgs(t, Ingest, "--config", f.write(t, "d.toml", "batch = 44\n"+ingestOK))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Batch != 44 {
		t.Errorf("batch %d, want 44 from --config", cfg.Batch)
	}
}

func TestBothEnvironmentSpellings(t *testing.T) {
	f := newFixture(t)
	file := f.write(t, "c.toml", sinkOK)

	t.Run("FDWRD only", func(t *testing.T) {
		t.Setenv("FDWRD_FLUENTD_CERT", f.path("client.crt"))
		t.Setenv("FDWRD_FLUENTD_KEY", f.path("client.key"))
		t.Setenv("FDWRD_FLUENTD_CA", f.path("ca.crt"))
		cfg, err := loadArgs(t, Sink, "--config", file)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Fluentd.Cert != f.path("client.crt") || cfg.Fluentd.Key != f.path("client.key") || cfg.Fluentd.CA != f.path("ca.crt") {
			t.Errorf("fluentd %+v: FDWRD_ variables not read", cfg.Fluentd)
		}
	})
	t.Run("FDFWD wins", func(t *testing.T) {
		t.Setenv("FDFWD_DEBUG", "true")
		t.Setenv("FDWRD_DEBUG", "false")
		t.Setenv("FDFWD_BATCH", "7")
		t.Setenv("FDWRD_BATCH", "8")
		cfg, err := loadArgs(t, Ingest, "--teleport-identity", f.path("identity"))
		if err != nil {
			t.Fatal(err)
		}
		if !cfg.Debug || cfg.Batch != 7 {
			t.Errorf("debug %v batch %d, want the FDFWD_ values", cfg.Debug, cfg.Batch)
		}
	})
	t.Run("older lock variables", func(t *testing.T) {
		t.Setenv("FDFWD_LOCKING_ENABLED", "true")
		t.Setenv("FDFWD_LOCKING_FAILED_ATTEMPTS", "9")
		t.Setenv("FDFWD_LOCKING_PERIOD", "5m")
		t.Setenv("FDFWD_LOCKING_FOR", "1h")
		cfg, err := loadArgs(t, Ingest, "--teleport-identity", f.path("identity"))
		if err != nil {
			t.Fatal(err)
		}
		want := LockConfig{Enabled: true, FailedAttemptsCount: 9, Period: 5 * time.Minute, For: time.Hour}
		if cfg.Lock != want {
			t.Errorf("lock %+v, want %+v", cfg.Lock, want)
		}
	})
}

func TestBothFluentdSections(t *testing.T) {
	f := newFixture(t)
	want := FluentdConfig{URL: "https://fluentd:8888/test.log", SessionURL: "https://fluentd:8888/session",
		CA: f.path("ca.crt"), Cert: f.path("client.crt"), Key: f.path("client.key")}
	body := "url = \"https://fluentd:8888/test.log\"\nsession-url = \"https://fluentd:8888/session\"\nca = \"{d}/ca.crt\"\ncert = \"{d}/client.crt\"\nkey = \"{d}/client.key\"\n"
	for _, section := range []string{"[fluentd]", "[forward.fluentd]"} {
		cfg, err := LoadFile(f.write(t, "c.toml", section+"\n"+body), Sink)
		if err != nil {
			t.Fatalf("%s: %v", section, err)
		}
		got := cfg.Fluentd
		got.DialTimeout, got.ResponseTimeout, got.MaxConns = 0, 0, 0
		if got != want {
			t.Errorf("%s: got %+v, want %+v", section, got, want)
		}
	}
	// Both present with the same values is not a conflict.
	if _, err := LoadFile(f.write(t, "c.toml", "[fluentd]\n"+body+"[forward.fluentd]\n"+body), Sink); err != nil {
		t.Errorf("both sections with equal values: %v", err)
	}
}

// A teleport-event-handler.toml as users have it, with keys of every era
// of the older tool, loads unchanged.
func TestOlderEventHandlerTOMLLoadsUnchanged(t *testing.T) {
	f := newFixture(t)
	path := f.write(t, "teleport-event-handler.toml", `storage = "./storage" # Plugin will save its state here
timeout = "10s"
batch = 20
namespace = "default"
window-size = "24h"
types = ""
skip-event-types = []
skip-session-types = ["print", "desktop.recording"]
start-time = "2023-01-01T00:00:00Z"
concurrency = 5
dry-run = false
exit-on-last-event = false
lock-enabled = true
lock-failed-attempts-count = 5
lock-period = "2m"
lock-for = "30m"

[forward.fluentd]
ca = "{d}/ca.crt"
cert = "{d}/client.crt"
key = "{d}/client.key"
url = "https://fluentd.example.com:8888/test.log"
session-url = "https://fluentd.example.com:8888/session"

[teleport]
addr = "example.teleport.sh:443"
identity = "{d}/identity"
refresh.enabled = true
refresh.interval = "2m"
`)
	for _, cmd := range []Command{Ingest, Sink} {
		cfg, err := LoadFile(path, cmd)
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		checks := []struct {
			what      string
			got, want any
		}{
			{"storage", cfg.Storage, "./storage"},
			{"timeout", cfg.Timeout, 10 * time.Second},
			{"batch", cfg.Batch, 20},
			{"batch given", cfg.Given("batch"), true},
			{"ingest.page-size (batch no longer sets it)", cfg.Ingest.PageSize, 10_000},
			{"ingest.page-size given", cfg.Given("ingest.page-size"), false},
			{"namespace", cfg.Namespace, "default"},
			{"window-size", cfg.WindowSize, 24 * time.Hour},
			{"types", len(cfg.Types), 0},
			{"skip-event-types", len(cfg.SkipEventTypes), 0},
			{"skip-session-types", cfg.SkipSessionTypes, []string{"print", "desktop.recording"}},
			{"start-time", cfg.StartTime, time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC)},
			{"lock", cfg.Lock, LockConfig{Enabled: true, FailedAttemptsCount: 5, Period: 2 * time.Minute, For: 30 * time.Minute}},
			{"fluentd.url", cfg.Fluentd.URL, "https://fluentd.example.com:8888/test.log"},
			{"fluentd.key", cfg.Fluentd.Key, f.path("client.key")},
			{"teleport.addr", cfg.Teleport.Addr, []string{"example.teleport.sh:443"}},
			{"teleport.identity", cfg.Teleport.Identity, f.path("identity")},
			{"teleport.refresh", [2]any{cfg.Teleport.RefreshEnabled, cfg.Teleport.RefreshInterval}, [2]any{true, 2 * time.Minute}},
			{"nats defaults", cfg.NATS.AuditStream + " " + cfg.NATS.Listen, "TELEPORT_AUDIT 127.0.0.1:4222"},
		}
		for _, c := range checks {
			if !reflect.DeepEqual(c.got, c.want) {
				t.Errorf("%s: %s = %v, want %v", cmd, c.what, c.got, c.want)
			}
		}
	}
}

func TestListKeysTakeArrayOrString(t *testing.T) {
	f := newFixture(t)
	for _, v := range []string{`"user.login,session.upload"`, `"user.login, session.upload,"`, `["user.login", "session.upload"]`} {
		cfg, err := LoadFile(f.write(t, "c.toml", "types = "+v+"\n"+ingestOK), Ingest)
		if err != nil {
			t.Fatalf("types = %s: %v", v, err)
		}
		if want := []string{"user.login", "session.upload"}; !reflect.DeepEqual(cfg.Types, want) {
			t.Errorf("types = %s: got %q", v, cfg.Types)
		}
	}
}

func TestStartTimeForms(t *testing.T) {
	f := newFixture(t)
	want := time.Date(2024, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, v := range []string{`"2024-03-04T05:06:07Z"`, `2024-03-04T05:06:07Z`, `"2024-03-04T07:06:07+02:00"`} {
		cfg, err := LoadFile(f.write(t, "c.toml", "start-time = "+v+"\n"+ingestOK), Ingest)
		if err != nil {
			t.Fatalf("start-time = %s: %v", v, err)
		}
		if !cfg.StartTime.Equal(want) || cfg.StartTime.Location() != time.UTC {
			t.Errorf("start-time = %s: got %v", v, cfg.StartTime)
		}
	}
}

func TestOtherCommandsKeysAreAccepted(t *testing.T) {
	f := newFixture(t)
	// One file for all: the ingest ignores [sink] and [fluentd] (even a
	// client key that is not on its host), the sink ignores [teleport].
	path := f.write(t, "c.toml", ingestOK+sinkOK+"cert = \"/not/on/this/host.crt\"\nkey = \"/not/on/this/host.key\"\n[sink]\nbatch-size = 500\n")
	if _, err := LoadFile(path, Ingest); err != nil {
		t.Errorf("ingest: %v", err)
	}
	path = f.write(t, "d.toml", sinkOK+"[teleport]\nidentity = \"/not/here\"\n")
	if _, err := LoadFile(path, Sink); err != nil {
		t.Errorf("sink: %v", err)
	}
}

func TestSessionConcurrencyDefaultsToConcurrency(t *testing.T) {
	f := newFixture(t)
	cfg, err := LoadFile(f.write(t, "c.toml", "concurrency = 9\n"+ingestOK), Ingest)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Ingest.SessionConcurrency != 9 {
		t.Errorf("session concurrency %d, want 9", cfg.Ingest.SessionConcurrency)
	}
}

func TestDecodeSkipsFileChecks(t *testing.T) {
	cfg, err := Decode([]byte("[teleport]\nidentity = \"/does/not/exist\"\n[fluentd]\nurl = \"https://f:8888/t\"\n"), "gen.toml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Teleport.Identity != "/does/not/exist" {
		t.Errorf("identity %q", cfg.Teleport.Identity)
	}
	_, err = Decode([]byte("[nats]\nreplicas = 0\n"), "gen.toml")
	if err == nil || err.Error() != `config gen.toml: key "nats.replicas": must be 1..5, got 0` {
		t.Errorf("Decode range check: %v", err)
	}
}

func TestConfigureArguments(t *testing.T) {
	cfg, err := loadArgs(t, Configure, "--ttl", "24h", "--ip", "10.0.0.1", "--dns-names", "fluentd,fluentd.local", "--key-type", "ecdsa", "--force", "out", "proxy:443", "myca", "srv", "cli")
	if err != nil {
		t.Fatal(err)
	}
	want := ConfigureOptions{OutDir: "out", TeleportAddr: "proxy:443", CAName: "myca", ServerName: "srv", ClientName: "cli",
		TTL: 24 * time.Hour, DNSNames: []string{"fluentd", "fluentd.local"}, IPs: []string{"10.0.0.1"}, Length: 2048, KeyType: "ecdsa", Force: true}
	if !reflect.DeepEqual(cfg.Configure, want) {
		t.Errorf("got  %+v\nwant %+v", cfg.Configure, want)
	}
	cfg, err = loadArgs(t, Configure, "out")
	if err != nil {
		t.Fatal(err)
	}
	if c := cfg.Configure; c.TeleportAddr != "localhost:3025" || c.CAName != "ca" || c.TTL != 87600*time.Hour || c.Length != 2048 {
		t.Errorf("defaults: %+v", c)
	}
	_, err = loadArgs(t, Configure, "--ca-name", "x", "out", "a:1", "y")
	if err == nil || err.Error() != `argument ca-name "y" and flag --ca-name "x" disagree: give one` {
		t.Errorf("disagreeing name: %v", err)
	}
}

func TestEmptyEnvironmentVariableIsUnset(t *testing.T) {
	f := newFixture(t)
	t.Setenv("FDFWD_BATCH", "")
	cfg, err := LoadFile(f.write(t, "c.toml", "batch = 31\n"+ingestOK), Ingest)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Batch != 31 {
		t.Errorf("batch %d", cfg.Batch)
	}
}

// TestNonLoopbackListenNeedsTLS: an embedded server other hosts can reach
// serves TLS; without [nats] server-cert and server-key ingest refuses to
// start with one line naming the keys and the command that writes them.
func TestNonLoopbackListenNeedsTLS(t *testing.T) {
	f := newFixture(t)
	for _, listen := range []string{"0.0.0.0:4222", "10.1.2.3:4222", "[::]:4222"} {
		path := f.write(t, "l.toml", ingestOK+"[nats]\nlisten = \""+listen+"\"\n")
		_, err := LoadFile(path, Ingest)
		want := `config ` + path + `: key "nats.listen": "` + listen + `" is not a loopback address, and the embedded server has no TLS: set "nats.server-cert" and "nats.server-key" (configure <dir> --nats-names <the names clients use> writes nats-server.crt and nats-server.key) and give the clients "nats.ca", or listen on 127.0.0.1`
		if err == nil || err.Error() != want {
			t.Errorf("listen %s without TLS:\n got %v\nwant %s", listen, err, want)
		}
		var ce *Error
		if !errors.As(err, &ce) {
			t.Errorf("listen %s: %T is not a config error (exit 2)", listen, err)
		}
	}
	for name, body := range map[string]string{
		"loopback":        "[nats]\nlisten = \"127.0.0.1:4222\"\n",
		"localhost":       "[nats]\nlisten = \"localhost:4222\"\n",
		"with TLS":        "[nats]\nlisten = \"0.0.0.0:4222\"\nserver-cert = \"{d}/tls.crt\"\nserver-key = \"{d}/tls.key\"\n",
		"external server": "[nats]\nurl = \"tls://nats-1:4222\"\nlisten = \"0.0.0.0:4222\"\n",
	} {
		if _, err := LoadFile(f.write(t, "ok.toml", ingestOK+body), Ingest); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	_, err := LoadFile(f.write(t, "half.toml", ingestOK+"[nats]\nserver-cert = \"{d}/tls.crt\"\n"), Ingest)
	if err == nil || !strings.Contains(err.Error(), `key "nats.server-cert": needs "nats.server-key" as well`) {
		t.Errorf("server-cert alone: %v", err)
	}
}
