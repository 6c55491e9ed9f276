package bus

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

func TestConsumerCreateAndUpdate(t *testing.T) {
	b := openTestBus(t, config.NATSConfig{})
	ctx := testCtx(t)
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := b.Consumer(ctx, DefaultAuditStream, "sink", nil, 30*time.Second, 100, 5)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	cfg := c.CachedInfo().Config
	if cfg.AckPolicy != jetstream.AckExplicitPolicy || cfg.MaxAckPending != 100 || cfg.MaxDeliver != 5 || cfg.AckWait != 30*time.Second {
		t.Fatalf("created with %+v", cfg)
	}
	// The same call again changes nothing; new limits and filters update it.
	if _, err := b.Consumer(ctx, DefaultAuditStream, "sink", nil, 30*time.Second, 100, 5); err != nil {
		t.Fatalf("same settings: %v", err)
	}
	c, err = b.Consumer(ctx, DefaultAuditStream, "sink", []string{"audit.user.>", "audit.session.>"}, time.Minute, 50, 0)
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	cfg = c.CachedInfo().Config
	if cfg.MaxAckPending != 50 || cfg.MaxDeliver != -1 || cfg.AckWait != time.Minute || len(cfg.FilterSubjects) != 2 {
		t.Fatalf("updated to %+v", cfg)
	}
	infos, err := b.ConsumerInfos(ctx, DefaultAuditStream)
	if err != nil {
		t.Fatalf("ConsumerInfos: %v", err)
	}
	if len(infos.Infos) != 1 || infos.Infos[0].Name != "sink" || len(infos.Unanswered) != 0 {
		t.Fatalf("ConsumerInfos: %d answered (want the one, sink), unanswered %v", len(infos.Infos), infos.Unanswered)
	}
}

func TestConsumerConflict(t *testing.T) {
	b := openTestBus(t, config.NATSConfig{})
	ctx := testCtx(t)
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.JS.CreateConsumer(ctx, DefaultAuditStream, jetstream.ConsumerConfig{Durable: "noack", AckPolicy: jetstream.AckNonePolicy}); err != nil {
		t.Fatal(err)
	}
	_, err := b.Consumer(ctx, DefaultAuditStream, "noack", nil, 0, 0, 0)
	if err == nil || !strings.Contains(err.Error(), `"noack"`) || !strings.Contains(err.Error(), "explicit") {
		t.Fatalf("existing consumer without explicit acks: err = %v", err)
	}
	t.Logf("error: %v", err)
	if _, err := b.Consumer(ctx, "NOPE", "x", nil, 0, 0, 0); err == nil || !strings.Contains(err.Error(), "NOPE") {
		t.Fatalf("missing stream: err = %v", err)
	}
}
