package configure

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
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
		checkNATSCredentials(t, dir, path)
	}
}

// checkNATSCredentials checks that the TOML at path closes the bus with the
// credentials in dir: the users file names each role's public key, each
// command connects with its own seed, and no seed is in the TOML.
func checkNATSCredentials(t *testing.T, dir, path string) {
	t.Helper()
	users, err := bus.LoadUsers(filepath.Join(dir, NATSUsersFile))
	if err != nil {
		t.Fatalf("users file: %v", err)
	}
	toml, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range bus.Roles {
		seedPath := filepath.Join(dir, NATSSeedFile(r))
		st, err := os.Stat(seedPath)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %04o, want 0600", seedPath, st.Mode().Perm())
		}
		seed, err := os.ReadFile(seedPath)
		if err != nil {
			t.Fatal(err)
		}
		kp, err := nkeys.FromSeed(bytes.TrimSpace(seed))
		if err != nil {
			t.Fatalf("%s: %v", seedPath, err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		if users[i].Role != r || users[i].NKey != pub {
			t.Errorf("users file entry %d is %+v, want role %s with the public key of %s", i, users[i], r, seedPath)
		}
		if bytes.Contains(toml, bytes.TrimSpace(seed)) {
			t.Errorf("the TOML holds the %s seed", r)
		}
	}
	for cmd, role := range map[config.Command]bus.Role{config.Ingest: bus.RoleIngest, config.Sink: bus.RoleSink} {
		cfg, err := config.LoadFile(path, cmd)
		if err != nil {
			t.Fatalf("LoadFile for %s: %v", cmd, err)
		}
		if want := filepath.Join(dir, NATSSeedFile(role)); cfg.NATS.NKey != want {
			t.Errorf("%s connects with %q, want %q", cmd, cfg.NATS.NKey, want)
		}
		if cmd == config.Ingest && cfg.NATS.Users != filepath.Join(dir, NATSUsersFile) {
			t.Errorf("[nats] users is %q", cfg.NATS.Users)
		}
	}
}

// oldTOML is a TOML as configure wrote it before it wrote NATS
// credentials: the generated one without the credential keys.
func oldTOML(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "users = ") || strings.HasPrefix(l, "nats-nkey = ") {
			continue
		}
		keep = append(keep, l)
	}
	return []byte(strings.Join(keep, "\n"))
}

// TestAddNATSCredentials closes the bus of a directory configure wrote
// before credentials existed: the seeds and the users file are written,
// the TOML names them, and the certificates are untouched. A second run
// without --force changes nothing.
func TestAddNATSCredentials(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := run(t, Options{OutDir: dir}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, TOMLFile)
	old := oldTOML(t, path)
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range natsFileNames() {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	certsBefore := map[string]string{}
	for _, f := range []string{"ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key", FluentConfFile} {
		certsBefore[f] = read(t, filepath.Join(dir, f))
	}
	if err := os.WriteFile(filepath.Join(dir, IdentityFile), []byte("identity"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res, err := AddNATSCredentials(context.Background(), Options{OutDir: dir, Out: &out})
	if err != nil {
		t.Fatalf("AddNATSCredentials: %v", err)
	}
	if len(res.Files) != 5 {
		t.Errorf("wrote %v, want 3 seeds, the users file and the TOML", res.Files)
	}
	checkNATSCredentials(t, dir, path)
	for f, before := range certsBefore {
		if read(t, filepath.Join(dir, f)) != before {
			t.Errorf("%s changed", f)
		}
	}
	// Every other line of the TOML is kept.
	now := read(t, path)
	for _, l := range strings.Split(string(old), "\n") {
		if !strings.Contains(now, l) {
			t.Errorf("line %q of the TOML is gone", l)
		}
	}
	if !strings.Contains(out.String(), "Restart ingest and fluentd-sink") {
		t.Errorf("summary: %s", out.String())
	}

	tomlBefore := read(t, path)
	_, err = AddNATSCredentials(context.Background(), Options{OutDir: dir})
	if err == nil || !strings.Contains(err.Error(), "refusing to overwrite existing files (use --force)") {
		t.Errorf("second run: %v", err)
	}
	if read(t, path) != tomlBefore {
		t.Error("a refused second run changed the TOML")
	}
	if _, err := AddNATSCredentials(context.Background(), Options{OutDir: dir, Force: true}); err != nil {
		t.Fatalf("with --force: %v", err)
	}
	checkNATSCredentials(t, dir, path)
	if n := strings.Count(read(t, path), "nats-nkey = "); n != 2 {
		t.Errorf("after --force the TOML sets nats-nkey %d times, want 2", n)
	}
}

// TestAddNATSCredentialsMissingSections: a hand-written TOML without
// [nats], [ingest] or [sink] gets the sections.
func TestAddNATSCredentialsMissingSections(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, TOMLFile)
	if err := os.WriteFile(path, []byte("storage = \"/var/lib/teb\"\n\n[teleport]\naddr = \"t:3025\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := AddNATSCredentials(context.Background(), Options{OutDir: dir}); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Decode([]byte(read(t, path)), path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATS.Users != filepath.Join(dir, NATSUsersFile) || cfg.Ingest.NATSNKey == "" || cfg.Sink.NATSNKey == "" || cfg.Teleport.Addr[0] != "t:3025" {
		t.Errorf("users %q ingest %q sink %q addr %v", cfg.NATS.Users, cfg.Ingest.NATSNKey, cfg.Sink.NATSNKey, cfg.Teleport.Addr)
	}
}

// TestAddNATSCredentialsNoDirectory: a directory without the TOML is a
// clear error and nothing is written.
func TestAddNATSCredentialsNoDirectory(t *testing.T) {
	dir := t.TempDir()
	_, err := AddNATSCredentials(context.Background(), Options{OutDir: dir})
	if err == nil || !strings.Contains(err.Error(), TOMLFile) {
		t.Fatalf("got %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("wrote %d files", len(entries))
	}
}
