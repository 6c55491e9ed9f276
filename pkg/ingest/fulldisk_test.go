package ingest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

// TestFullDiskStopsIngestWithItsPositions fills a real (tmpfs) file system
// under the embedded server's storage while ingest writes to it: the
// server cannot write its store ("no space left on device"), and ingest
// stops with an error naming the storage directory instead of waiting for
// a store that stays broken until the server restarts. After space is
// freed, a new run reads on from the saved positions: nothing the stream
// lost is counted as done (the stream marks would stop it otherwise), and
// every event is there once. It needs to mount a tmpfs (root), and is
// skipped where that is not allowed.
func TestFullDiskStopsIngestWithItsPositions(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(disk, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", disk).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs to fill (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", disk).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", disk, err, out)
		}
	})
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 41, Events: 3000, From: now.Add(-2 * 24 * time.Hour), To: now})
	e.cfg.Storage = filepath.Join(disk, "storage")
	e.cfg.Ingest.MaxInFlight = 16
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, e.cfg, zerolog.Nop()) }()
	// Fill the disk once the audit stream has started writing.
	blocks := filepath.Join(e.cfg.Storage, "jetstream", "$G", "streams", "TELEPORT_AUDIT", "msgs", "1.blk")
	if !until(done, time.Minute, func() bool {
		fi, err := os.Stat(blocks)
		return err == nil && fi.Size() > 0
	}) {
		t.Fatal("ingest wrote nothing to the audit stream")
	}
	filler := fill(t, disk, 64<<10)
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		t.Fatal("ingest kept running on a full disk")
	}
	if !errors.Is(err, ErrStoreFailed) || !strings.Contains(err.Error(), "the JetStream store cannot be written: storage directory \""+e.cfg.Storage+`"`) ||
		!strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("Run on a full disk: %v, want ErrStoreFailed naming the storage directory and the disk error", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := e.run(zerolog.Nop()); err != nil {
		t.Fatalf("Run after space was freed: %v", err)
	}
	b := e.open()
	exactlyOnce(t, "audit stream", read(t, b.JS, b.Cfg.AuditStream), e.sim.AllEventIDs())
}

// fill writes a file that leaves about keep bytes free on dir's file system.
func fill(t *testing.T, dir string, keep int64) string {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	name := filepath.Join(dir, "filler")
	if err := os.WriteFile(name, make([]byte, max(free-keep, 0)), 0o600); err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Fatal(err)
	}
	return name
}
