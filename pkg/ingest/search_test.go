package ingest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

// TestOlderTOMLBatchIsNotThePageSize: an older teleport-event-handler.toml
// with batch = 20 loads, ingest says once that it pages with
// ingest.page-size, and pages at the server's maximum.
func TestOlderTOMLBatchIsNotThePageSize(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 22, Events: 2000, From: now.Add(-30 * time.Hour), To: now, Older: true})
	path := filepath.Join(e.dir, "teleport-event-handler.toml")
	toml := fmt.Sprintf(`storage = %q
batch = 20
timeout = "200ms"
start-time = %q
exit-on-last-event = true

[teleport]
addr = %q
identity = %q

[nats]
listen = "127.0.0.1:0"
`, e.cfg.Storage, e.cfg.StartTime.Format(time.RFC3339), e.sim.Addr(), e.cfg.Teleport.Identity)
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadFile(path, config.Ingest)
	if err != nil {
		t.Fatalf("load the older TOML: %v", err)
	}
	e.cfg = cfg
	logs := &logtest.Buffer{}
	if err := e.run(zerolog.New(logs)); err != nil {
		t.Fatalf("Run: %v", err)
	}
	const note = "batch is not the page size"
	if n := strings.Count(logs.String(), note); n != 1 {
		t.Errorf("%q logged %d times; want once:\n%s", note, n, logs)
	}
	if !strings.Contains(logs.String(), `"page_size":10000`) {
		t.Errorf("the log does not give the page size 10000:\n%s", logs)
	}
	// Two windows of 2,000 events in all: a page or two each at 10,000
	// (and the passes after), where batch = 20 would take over 100.
	if n := e.sim.Stats().Searches; n > 12 {
		t.Errorf("%d searches for 2000 events; pages were not of 10000", n)
	}
	b := e.open()
	exactlyOnce(t, "audit stream", read(t, b.JS, b.Cfg.AuditStream), e.sim.AllEventIDs())
}

// TestSearchOneMiBPagesLoseNothing: a file-log Teleport cuts pages at
// 1 MiB (about 2,700 of the double's events), far below the 10,000 asked for, and sends events over 1 MB
// alone; every event arrives once.
func TestSearchOneMiBPagesLoseNothing(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 23, Events: 6_000, HugeEvents: 2, From: now.Add(-20 * time.Hour), To: now, Older: true})
	e.cfg.Ingest.PageSize = 0 // the default: the server's maximum
	logs := &logtest.Buffer{}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	if err := Run(ctx, e.cfg, zerolog.New(logs)); err != nil || !strings.Contains(logs.String(), "caught up and everything acknowledged") {
		t.Fatalf("Run: %v; did not catch up:\n%s", err, logs)
	}
	if n := e.sim.Stats().Searches; n < 4 {
		t.Errorf("%d searches for 6000 events; the 1 MiB cap should have cut pages", n)
	}
	b := e.open()
	exactlyOnce(t, "audit stream", read(t, b.JS, b.Cfg.AuditStream), e.sim.AllEventIDs())
}
