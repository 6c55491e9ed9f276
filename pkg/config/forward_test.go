package config

import (
	"bytes"
	"strings"
	"testing"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging"
)

const forwardOK = "[forward.fluentd]\nurl = \"tls://fluentd:24224/test.log\"\nsession-tag = \"session\"\n"

// TestForwardKeysLoad: an in_forward section with every new key loads, from
// the file, and the secrets from the environment.
func TestForwardKeysLoad(t *testing.T) {
	f := newFixture(t)
	t.Setenv("FDFWD_FLUENTD_PASSWORD", "pw-from-env")
	file := f.write(t, "c.toml", forwardOK+"shared-key-file = \"{d}/pass\"\nself-hostname = \"sink-1\"\nusername = \"teleport\"\nca = \"{d}/ca.crt\"\ncert = \"{d}/client.crt\"\nkey = \"{d}/client.key\"\n")
	cfg, err := loadArgs(t, Sink, "--config", file)
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.Fluentd
	if got.URL != "tls://fluentd:24224/test.log" || got.SessionTag != "session" || got.SharedKeyFile != f.path("pass") ||
		got.SelfHostname != "sink-1" || got.Username != "teleport" || got.Password != "pw-from-env" {
		t.Errorf("loaded %+v", got)
	}
	t.Setenv("FDFWD_FLUENTD_SHARED_KEY", "k")
	t.Setenv("FDFWD_FLUENTD_PASSWORD", "")
	if _, err := loadArgs(t, Sink, "--config", f.write(t, "d.toml", forwardOK), "--insecure-tcp", "--fluentd-url", "tcp://fluentd:24224/test.log"); err != nil {
		t.Errorf("tcp with --insecure-tcp: %v", err)
	}
}

func TestForwardBadInputs(t *testing.T) {
	tests := []struct{ name, toml, want string }{
		{"unknown scheme", "[fluentd]\nurl = \"udp://fluentd:24224/test.log\"\nsession-tag = \"session\"\n",
			`config {f}: key "fluentd.url": scheme must be https (in_http) or tls (in_forward), got "udp"`},
		{"plain tcp", "[fluentd]\nurl = \"tcp://fluentd:24224/test.log\"\nsession-tag = \"session\"\n",
			`config {f}: key "fluentd.url": "tcp://fluentd:24224/test.log" is plain tcp: use tls://, or set insecure-tcp = true (--insecure-tcp) to allow it`},
		{"no audit tag", "[fluentd]\nurl = \"tls://fluentd:24224\"\nsession-tag = \"session\"\n",
			`config {f}: key "fluentd.url": "tls://fluentd:24224" has no tag for audit events: add it as the path (tls://host:24224/test.log) or set "fluentd.tag"`},
		{"no session tag", "[fluentd]\nurl = \"tls://fluentd:24224/test.log\"\n",
			`config {f}: no tag for session events: set "fluentd.session-tag" (--fluentd-session-tag; "session" gives session.<sid>.log) or "fluentd.session-url" with the tag as its path`},
		{"session url elsewhere", "[fluentd]\nurl = \"tls://fluentd:24224/test.log\"\nsession-url = \"https://fluentd:8888/session\"\n",
			`config {f}: key "fluentd.session-url": "https://fluentd:8888/session" must name the same in_forward server as "fluentd.url" (tls://fluentd:24224): only its path, the session tag, is used`},
		{"shared key twice", forwardOK + "shared-key = \"k\"\nshared-key-file = \"{d}/pass\"\n",
			`config {f}: key "forward.fluentd.shared-key-file": conflicts with "fluentd.shared-key": give it one way`},
		{"password without user", forwardOK + "shared-key = \"k\"\npassword = \"p\"\n",
			`config {f}: key "fluentd.username": is needed with a fluentd password`},
		{"user without shared key", forwardOK + "username = \"u\"\npassword = \"p\"\n",
			`config {f}: key "forward.fluentd.username": needs a shared key ("fluentd.shared-key-file"): in_forward checks users only in the shared-key handshake`},
		{"bad tag", forwardOK + "tag = \"a b\"\n",
			`config {f}: key "forward.fluentd.tag": "a b" is not a tag: dot-separated parts without spaces, '*' or '/'`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			file := f.write(t, "config.toml", tt.toml)
			_, err := loadArgs(t, Sink, "--config", file)
			if err == nil {
				t.Fatal("no error")
			}
			want := strings.NewReplacer("{f}", file, "{d}", f.dir).Replace(tt.want)
			if err.Error() != want {
				t.Errorf("error\n got: %s\nwant: %s", err, want)
			}
		})
	}
}

// TestForwardSecretsNeverLogged: the shared key and the password are
// redacted in the logged configuration.
func TestForwardSecretsNeverLogged(t *testing.T) {
	cfg := Default()
	cfg.Fluentd.URL = "tls://fluentd:24224/test.log"
	cfg.Fluentd.SharedKey = "shared-0c1d"
	cfg.Fluentd.Username = "teleport"
	cfg.Fluentd.Password = "user-pw-77aa"
	var buf bytes.Buffer
	log := logging.New(&buf, true)
	log.Debug().Object("config", cfg).Msg("configuration")
	out := buf.String()
	for _, s := range []string{"shared-0c1d", "user-pw-77aa"} {
		if strings.Contains(out, s) {
			t.Errorf("secret %q in log output:\n%s", s, out)
		}
	}
	for _, want := range []string{`"fluentd.shared-key":"[redacted]"`, `"fluentd.password":"[redacted]"`, `"fluentd.username":"teleport"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}
