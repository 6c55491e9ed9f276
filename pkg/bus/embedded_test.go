package bus

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

func TestEmbeddedStoresUnderStorage(t *testing.T) {
	storage := filepath.Join(t.TempDir(), "state")
	b := openTestBusIn(t, config.NATSConfig{}, storage)
	if b.Embedded == nil {
		t.Fatal("Open with embed and no URL did not start the embedded server")
	}
	if err := b.EnsureStreams(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(storage, "jetstream")); err != nil {
		t.Fatalf("JetStream files not under storage: %v", err)
	}
	if !strings.HasPrefix(b.Embedded.ClientURL(), "nats://127.0.0.1:") || strings.HasSuffix(b.Embedded.ClientURL(), ":0") {
		t.Fatalf("ClientURL = %q, want a loopback URL with the real port", b.Embedded.ClientURL())
	}
}

func TestEmbeddedPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()
	_, err = StartEmbedded(testCtx(t), EmbeddedOptions{Listen: addr, StoreDir: t.TempDir(), Log: zerolog.Nop()})
	if err == nil {
		t.Fatal("StartEmbedded on a used port succeeded")
	}
	if !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("error %q does not name the address %s and say it is in use", err, addr)
	}
	t.Logf("error: %v", err)
}

func TestEmbeddedStorageNotWritable(t *testing.T) {
	// A path under a regular file cannot become a directory, even for root.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(file, "storage")
	_, err := StartEmbedded(testCtx(t), EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: dir, Log: zerolog.Nop()})
	if err == nil {
		t.Fatal("StartEmbedded with an unusable storage directory succeeded")
	}
	if !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "not writable") {
		t.Fatalf("error %q does not name the storage directory %s", err, dir)
	}
	t.Logf("error: %v", err)
}

func TestEmbeddedBadOptions(t *testing.T) {
	for name, o := range map[string]EmbeddedOptions{
		"bad listen":      {Listen: "nowhere", StoreDir: t.TempDir()},
		"no storage":      {Listen: "127.0.0.1:0"},
		"token and user":  {Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Token: "t", User: "u", Password: "p"},
		"user, no passwd": {Listen: "127.0.0.1:0", StoreDir: t.TempDir(), User: "u"},
	} {
		if _, err := StartEmbedded(testCtx(t), o); err == nil {
			t.Errorf("%s: StartEmbedded succeeded", name)
		}
	}
}
