package configure

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// TestGeneratedTOMLLoadsThroughConfig checks that the commands accept the
// file configure writes, as it is.
func TestGeneratedTOMLLoadsThroughConfig(t *testing.T) {
	for _, encrypt := range []bool{false, true} {
		dir := t.TempDir()
		if _, _, err := run(t, Options{OutDir: dir, Lock: true, EncryptClientKey: encrypt, TeleportAddr: "proxy.example.com:443"}); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, TOMLFile)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := config.Decode(data, path); err != nil {
			t.Fatalf("encrypt=%v: Decode: %v", encrypt, err)
		}
		cfg, err := config.LoadFile(path, config.Sink)
		if err != nil {
			t.Fatalf("encrypt=%v: LoadFile for the sink: %v", encrypt, err)
		}
		if cfg.Fluentd.URL != "https://localhost:8888/test.log" || cfg.Fluentd.Key != filepath.Join(dir, "client.key") {
			t.Errorf("encrypt=%v: fluentd url %q key %q", encrypt, cfg.Fluentd.URL, cfg.Fluentd.Key)
		}
		if encrypt && cfg.Fluentd.KeyPassphraseFile != filepath.Join(dir, "client.key.pass") {
			t.Errorf("key-passphrase-file %q", cfg.Fluentd.KeyPassphraseFile)
		}
		if cfg.NATS.URL != "" || cfg.NATS.Listen != "127.0.0.1:4222" {
			t.Errorf("nats url %q listen %q, want the embedded server", cfg.NATS.URL, cfg.NATS.Listen)
		}
		// The ingest needs the identity `tctl auth sign` writes.
		if err := os.WriteFile(filepath.Join(dir, IdentityFile), []byte("identity"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err = config.LoadFile(path, config.Ingest)
		if err != nil {
			t.Fatalf("encrypt=%v: LoadFile for the ingest: %v", encrypt, err)
		}
		if len(cfg.Teleport.Addr) != 1 || cfg.Teleport.Addr[0] != "proxy.example.com:443" || !cfg.Lock.Enabled {
			t.Errorf("teleport addr %v, lock enabled %v", cfg.Teleport.Addr, cfg.Lock.Enabled)
		}
		if cfg.Storage != filepath.Join(dir, "storage") {
			t.Errorf("storage %q", cfg.Storage)
		}
	}
}
