package ingest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/test/fsdigest"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

// TestBadIdentityTouchesNothing: an identity that is missing, unreadable,
// not an identity file, expired, or of another cluster stops Run with a
// configuration error (exit status 2) naming the file and what is wrong,
// before the store, the bucket or the streams are touched: an existing
// store is left byte for byte, and a new storage directory is not made.
func TestBadIdentityTouchesNothing(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 41, Events: 20, From: now.Add(-time.Hour), To: now})
	if err := e.run(zerolog.Nop()); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	good := e.cfg.Teleport.Identity
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(filepath.Join(filepath.Dir(good), teleportsim.CAFileName))
	if err != nil {
		t.Fatal(err)
	}
	expired, err := e.sim.WriteIdentity(filepath.Join(dir, "expired"), "ingest", -time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := teleportsim.Start(context.Background(), teleportsim.Options{ClusterName: "other.example", Events: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })
	foreign, err := other.WriteIdentity(filepath.Join(dir, "other"), "ingest", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	garbage := write("garbage", "this is not an identity\n")

	type badIdentity struct {
		name, path string
		words      []string
	}
	cases := []badIdentity{
		{"missing", filepath.Join(dir, "no-such-identity"), []string{"does not exist"}},
		{"a directory", dir, []string{"is a directory, not a file"}},
		{"a FIFO", fifo, []string{"is not a regular file (named pipe): give the path of the file itself"}},
		{"under a file", filepath.Join(garbage, "identity"), []string{"cannot read", "not a directory"}},
		{"garbage", garbage, []string{"is not a Teleport identity file (it holds no key or certificate)", "tctl auth sign --format=file"}},
		{"a PEM certificate", write("ca.crt", string(pem)), []string{"is not a Teleport identity file (it holds no SSH certificate"}},
		{"expired", expired, []string{"teleport identity expired", "issue a new one (tctl auth sign)"}},
		{"another cluster", foreign, []string{"teleport server certificate not signed by the configured CA", e.sim.Addr()}},
	}
	if os.Geteuid() != 0 {
		// Root reads a file whatever its mode; the cases above that root
		// cannot read either stand in for it then.
		p := write("mode-000", "x")
		if err := os.Chmod(p, 0); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, badIdentity{"mode 000", p, []string{"cannot read", "permission denied", "run ingest as a user that can read it"}})
	}
	store := e.cfg.Storage
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, storage := range []string{store, filepath.Join(dir, "new-storage-"+strings.ReplaceAll(tc.name, " ", "-"))} {
				before, err := fsdigest.Tree(store)
				if err != nil {
					t.Fatal(err)
				}
				cfg := *e.cfg
				cfg.Storage = storage
				cfg.Teleport.Identity = tc.path
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				err = Run(ctx, &cfg, zerolog.Nop())
				cancel()
				var ce *config.Error
				if !errors.As(err, &ce) {
					t.Errorf("Run with identity %s: %v; want a configuration error (exit status 2)", tc.name, err)
				}
				for _, w := range append([]string{`"teleport.identity"`, tc.path}, tc.words...) {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				if strings.Contains(err.Error(), "-cert.pub") || strings.Contains(err.Error(), "\n") {
					t.Errorf("error %q: want one line naming only the configured file", err)
				}
				after, err := fsdigest.Tree(store)
				if err != nil {
					t.Fatal(err)
				}
				if after != before {
					t.Errorf("the store changed:\nbefore:\n%s\nafter:\n%s", before, after)
				}
				if storage != store {
					if _, err := os.Stat(storage); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("storage directory %s was made (stat: %v)", storage, err)
					}
				}
			}
		})
	}
}
