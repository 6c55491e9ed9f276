package e2e

import (
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// TestSinkLeavesStreamSettingsAlone starts a sink with the defaults of
// [nats] against streams ingest created with other settings (retention by
// age, a longer dedup window): the streams belong to ingest, and a sink,
// which only reads them, must neither change their settings nor fail.
// (On a cluster whose sink user may not update streams, a sink at replicas
// 1 against R3 streams exits: "JetStream refused the change (replicas 3 →
// 1)"; with an unrestricted user it would scale the streams down to R1.)
func TestSinkLeavesStreamSettingsAlone(t *testing.T) {
	ctx, p := newPipeline(t, 2*time.Minute)
	if err := p.StartTeleport(ctx, "--events", "50", "--sessions", "2"); err != nil {
		t.Fatal(err)
	}
	if err := p.StartFluentd(ctx); err != nil {
		t.Fatal(err)
	}
	const maxAge, dupWindow = 720 * time.Hour, 10 * time.Minute
	ing, err := p.StartIngest(ctx, "ingest", "--nats-max-age", maxAge.String(), "--nats-duplicate-window", dupWindow.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ing.WaitForLine(ctx, "ingest lease acquired"); err != nil {
		t.Fatal(err)
	}
	sink, err := p.StartSink(ctx, "fluentd-sink")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.WaitForLine(ctx, "reading stream"); err != nil {
		t.Error(err)
	}
	cfg := config.Default().NATS
	cfg.Listen = p.NATSListen
	cfg.NKey = p.NATSSeed(bus.RoleReader)
	b, err := bus.Open(ctx, cfg, "", "e2e-stream-settings", zerolog.Nop(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, name := range []string{b.Cfg.AuditStream, b.Cfg.SessionStream} {
		info, err := b.StreamInfo(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.MaxAge != maxAge || info.Config.Duplicates != dupWindow {
			t.Errorf("stream %s: max age %s, duplicate window %s after the sink started; ingest made them %s and %s",
				name, info.Config.MaxAge, info.Config.Duplicates, maxAge, dupWindow)
		}
	}
	if line := lineWith(sink.Log(), "stream settings updated"); line != "" {
		t.Errorf("the sink changed the streams: %s", line)
	}
	if done, code := sink.Exited(); done {
		t.Errorf("the sink exited (code %d)\n%s", code, sink.Tail(10))
	}
}
