package configure

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/fluentd"
	"github.com/teleport-event-bus/teleport-event-bus/test/fluentdsim"
)

// TestForwardConfiguration: --forward writes an in_forward <source> with
// TLS client certificates and a <security> shared key, the key in its own
// 0600 file, and a TOML pointing at both; the files work together: a
// fluentd-sim configured as fluent.conf says accepts a forward client built
// from the TOML, and refuses one with another key.
func TestForwardConfiguration(t *testing.T) {
	dir := t.TempDir()
	res, _, err := run(t, Options{OutDir: dir, Forward: true})
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, SharedKeyFile)
	st, err := os.Stat(keyPath)
	if err != nil {
		t.Fatalf("shared key file: %v (written: %v)", err, res.Files)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s mode %v, want 0600", SharedKeyFile, st.Mode().Perm())
	}
	key := strings.TrimSpace(read(t, keyPath))
	if len(key) != 64 {
		t.Errorf("shared key %d characters, want 64 (32 random bytes in hex)", len(key))
	}

	conf := read(t, filepath.Join(dir, FluentConfFile))
	for _, want := range []string{
		"@type forward", "port 24224", "<transport tls>",
		"ca_path " + fluentString(filepath.Join(dir, "ca.crt")),
		"cert_path " + fluentString(filepath.Join(dir, "server.crt")),
		"private_key_path " + fluentString(filepath.Join(dir, "server.key")),
		"private_key_passphrase ", "client_cert_auth true",
		"<security>", `self_hostname "localhost"`, `shared_key "` + key + `"`,
		"<match test.log>", "<match session.*.log>",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("fluent.conf lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "@type http") || strings.Count(conf, "<source>") != 1 {
		t.Errorf("fluent.conf should have the one in_forward source:\n%s", conf)
	}

	cfg, err := config.LoadFile(filepath.Join(dir, TOMLFile), config.Sink)
	if err != nil {
		t.Fatalf("the generated TOML does not load: %v", err)
	}
	f := cfg.Fluentd
	if f.URL != "tls://localhost:24224/test.log" || f.SessionURL != "tls://localhost:24224/session" ||
		f.SharedKeyFile != keyPath || f.SelfHostname != SinkHostname {
		t.Errorf("TOML [forward.fluentd]: %+v", f)
	}
	if tomlText := read(t, filepath.Join(dir, TOMLFile)); strings.Contains(tomlText, key) {
		t.Error("the TOML holds the shared key itself; it should name the file")
	}

	// fluent.conf's in_forward, as fluentd-sim: its certificate, encrypted
	// key, CA, self_hostname and shared key.
	sim, err := fluentdsim.Start(context.Background(), fluentdsim.Options{
		CAFile: filepath.Join(dir, "ca.crt"), CertFile: filepath.Join(dir, "server.crt"), KeyFile: filepath.Join(dir, "server.key"),
		KeyPassphrase: fluentPassphrase(t, dir), ForwardAddr: "127.0.0.1:0", SharedKey: key, SelfHostname: "localhost",
		MatchTags: []string{"test.log", "session.*.log"}, KeepRecords: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	f.URL = strings.Replace(f.URL, "localhost:24224", sim.ForwardAddr(), 1)
	f.ServerName = "localhost"
	f.ResponseTimeout = 10 * time.Second
	client, err := fluentd.NewForward(f, zerolog.Nop(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	rec := json.RawMessage(`{"event":"user.login","uid":"cfg-1","time":"2026-12-01T10:00:00.000Z"}`)
	if _, err := client.Send(context.Background(), "test.log", []json.RawMessage{rec}); err != nil {
		t.Fatalf("send with the generated configuration: %v", err)
	}
	if ids := sim.TagIDs("test.log"); ids["cfg-1"] != 1 {
		t.Errorf("fluentd-sim holds %v", ids)
	}

	f.SharedKeyFile, f.SharedKey = "", "another key"
	other, err := fluentd.NewForward(f, zerolog.Nop(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Probe(context.Background()); err == nil || !strings.Contains(err.Error(), "shared_key mismatch") {
		t.Errorf("another key: %v", err)
	}
}

// TestForwardRefusesToOverwriteTheKey: the shared key file is one of the
// files configure will not overwrite without --force.
func TestForwardRefusesToOverwriteTheKey(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, SharedKeyFile), []byte("existing\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := run(t, Options{OutDir: dir, Forward: true})
	if err == nil || !strings.Contains(err.Error(), SharedKeyFile) {
		t.Fatalf("Run: %v, want a refusal naming %s", err, SharedKeyFile)
	}
	if got := read(t, filepath.Join(dir, SharedKeyFile)); got != "existing\n" {
		t.Errorf("the key file was changed: %q", got)
	}
}
