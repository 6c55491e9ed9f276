package config

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging"
)

// secrets are values that must never reach a log.
var secrets = []string{"fluentd-pass-7f3a", "nats-pw-91c2", "nats-token-55de", "url-pw-0b1e"}

func secretConfig(f fixture) Config {
	cfg := Default()
	cfg.Fluentd.KeyPassphrase = secrets[0]
	cfg.NATS.User = "bus"
	cfg.NATS.Password = secrets[1]
	cfg.NATS.Token = secrets[2]
	cfg.NATS.URL = "nats://bus:" + secrets[3] + "@nats1:4222,nats://nats2:4222"
	cfg.Fluentd.URL = "https://user:" + secrets[3] + "@fluentd:8888/test.log"
	return cfg
}

func assertNoSecrets(t *testing.T, out string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("secret %q in log output:\n%s", s, out)
		}
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	var buf bytes.Buffer
	log := logging.New(&buf, true)
	cfg := secretConfig(newFixture(t))
	log.Debug().Object("config", cfg).Msg("configuration")
	log.Debug().Object("config", &cfg).Msg("configuration by pointer")
	out := buf.String()
	assertNoSecrets(t, out)
	for _, want := range []string{`"fluentd.key-passphrase":"[redacted]"`, `"nats.password":"[redacted]"`, `"nats.token":"[redacted]"`, `"nats.user":"bus"`, "nats2:4222", `"batch":"20"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}

// The app logs the loaded configuration at debug level; with secrets given
// as flags and variables, none of them appears.
func TestAppDebugLogHasNoSecrets(t *testing.T) {
	f := newFixture(t)
	t.Setenv("FDFWD_NATS_TOKEN", secrets[2])
	var stderr, logged bytes.Buffer
	app := NewApp(Sink, "fluentd-sink", "test", func(ctx context.Context, cfg *Config, log zerolog.Logger) error {
		if cfg.NATS.Token != secrets[2] || cfg.Fluentd.KeyPassphrase != secrets[0] {
			t.Errorf("secrets not loaded: token %q passphrase %q", cfg.NATS.Token, cfg.Fluentd.KeyPassphrase)
		}
		log.Info().Msg("running")
		return nil
	})
	app.ErrWriter = &logged
	code := Execute(context.Background(), app, []string{"fluentd-sink", "--debug",
		"--config", f.write(t, "c.toml", sinkOK),
		"--fluentd-key-passphrase", secrets[0], "--nats-url", "nats://u:" + secrets[3] + "@n:4222"}, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := logged.String()
	if !strings.Contains(out, "configuration loaded") || !strings.Contains(out, "running") {
		t.Fatalf("debug log missing:\n%s", out)
	}
	assertNoSecrets(t, out+stderr.String())
}
