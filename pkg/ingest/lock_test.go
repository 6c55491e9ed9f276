package ingest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/lock"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

var lockOn = config.LockConfig{Enabled: true, FailedAttemptsCount: 3, Period: time.Minute}

func TestLockingWithoutPermissionFailsAtStartUp(t *testing.T) {
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 3, Events: 50, From: now.Add(-time.Hour), To: now, DenyLocks: true})
	e.cfg.Lock = lockOn
	err := e.run(zerolog.Nop())
	if !errors.Is(err, lock.ErrNoLockPermission) {
		t.Fatalf("Run with lock.enabled and a role that cannot lock: %v; want ErrNoLockPermission", err)
	}
	if !strings.Contains(err.Error(), "configure --lock") {
		t.Errorf("error %q does not say how to fix the role", err)
	}
}

func TestLockingRunsBesideTheReader(t *testing.T) {
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 3, Events: 300, From: now.Add(-time.Hour), To: now})
	e.cfg.Lock = lockOn
	if err := e.run(zerolog.Nop()); err != nil {
		t.Fatalf("Run with lock.enabled: %v", err)
	}
	// The start-up permission check is an upsert Teleport saw.
	checked := false
	for _, l := range e.sim.Locks() {
		checked = checked || strings.HasPrefix(l.GetName(), "teleport-event-bus-permission-check")
	}
	if !checked {
		t.Errorf("teleport holds no permission-check lock; locks: %v", e.sim.Locks())
	}
	// The watcher's own durable consumer reads audit.user.login.
	b := e.open()
	cons, err := b.JS.Consumer(context.Background(), b.Cfg.AuditStream, lock.DefaultDurable)
	if err != nil {
		t.Fatalf("lock consumer %q: %v", lock.DefaultDurable, err)
	}
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Config.FilterSubject + strings.Join(info.Config.FilterSubjects, ","); got != "audit.user.login" {
		t.Errorf("lock consumer filters %q, want audit.user.login", got)
	}
}
