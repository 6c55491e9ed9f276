package ingest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

// TestStatusOnLockedStoreReadsNothing: with nothing answering on the
// embedded server's address and the storage directory held by another
// owner, status fails naming the holder and the connection error, and
// leaves the store as it was.
func TestStatusOnLockedStoreReadsNothing(t *testing.T) {
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 21, Events: 50, From: now.Add(-time.Hour), To: now})
	if err := e.run(zerolog.Nop()); err != nil {
		t.Fatalf("Run: %v", err)
	}
	storage, err := filepath.Abs(e.cfg.Storage)
	if err != nil {
		t.Fatal(err)
	}
	held, err := bus.LockStore(storage, "holder")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Unlock()
	before := listTree(t, storage)

	var out bytes.Buffer
	err = Status(context.Background(), e.cfg, &out)
	if err == nil {
		t.Fatalf("Status on a locked store with no server succeeded:\n%s", out.String())
	}
	msg := err.Error()
	prefix := fmt.Sprintf("storage directory %q is locked by pid %d (holder) on host ", storage, os.Getpid())
	middle := ", but no NATS server answers for it (connect to NATS at nats://127.0.0.1:0: "
	suffix := "): status read nothing there; check that process and [nats] listen"
	if !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, middle) || !strings.HasSuffix(msg, suffix) {
		t.Errorf("error:\n %s\nwant %q … %q … %q", msg, prefix, middle, suffix)
	}
	if out.Len() != 0 {
		t.Errorf("status printed %q", out.String())
	}
	if after := listTree(t, storage); after != before {
		t.Errorf("the locked store changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// Once the holder is gone, status serves the store itself.
	held.Unlock()
	out.Reset()
	if err := Status(context.Background(), e.cfg, &out); err != nil {
		t.Fatalf("Status on a free store: %v", err)
	}
	if !strings.Contains(out.String(), "AUDIT") {
		t.Errorf("status output lacks the audit stream:\n%s", out.String())
	}
}

// listTree is every file under dir with its size and modification time.
func listTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %d %s\n", path, info.Size(), info.ModTime().Format(time.RFC3339Nano))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
