package sink

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/test/fluentdsim"
)

// TestDeletedConsumerIsNotRecreatedFromStart: an administrator deletes the
// durable consumer under a running sink (the issue: the ingest role could,
// and restarted sinks then delivered every event a second time). The sink
// stops with an error naming the consumer and both recoveries; a restarted
// sink refuses too and delivers nothing again; with sink.recreate-consumer
// = resume it continues after the acknowledged position: every event once.
func TestDeletedConsumerIsNotRecreatedFromStart(t *testing.T) {
	e := newEnv(t, fluentdsim.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e.publishAudit(0, 50)
	r := e.start(e.cfg)
	e.waitStored(50, 30*time.Second)
	kv, err := e.bus.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The sinks record the acknowledged position every markInterval.
	eventually(t, 60*time.Second, "the sink to record ack floor 50", func() bool {
		en, err := kv.Get(ctx, bus.SinkConsumerKey(e.cfg.Sink.AuditConsumer))
		if err != nil {
			return false
		}
		var mk consumerMark
		return json.Unmarshal(en.Value(), &mk) == nil && mk.AckFloor == 50
	})
	if err := e.bus.JS.DeleteConsumer(ctx, e.cfg.NATS.AuditStream, e.cfg.Sink.AuditConsumer); err != nil {
		t.Fatalf("delete consumer: %v", err)
	}
	err = r.wait(t, 30*time.Second)
	var gone *ConsumerDeletedError
	if !errors.As(err, &gone) || gone.Consumer != e.cfg.Sink.AuditConsumer {
		t.Fatalf("Run = %v, want a ConsumerDeletedError for %q", err, e.cfg.Sink.AuditConsumer)
	}

	// A supervisor restarts the sink: it refuses, and delivers nothing.
	r = e.start(e.cfg)
	err = r.wait(t, 30*time.Second)
	want := `consumer "` + e.cfg.Sink.AuditConsumer + `" on stream "` + e.cfg.NATS.AuditStream + `" was deleted (created `
	if err == nil || !strings.HasPrefix(err.Error(), want) ||
		!strings.Contains(err.Error(), "last acknowledged stream sequence 50); the sink stops instead of re-delivering the stream from its start") ||
		!strings.Contains(err.Error(), "--sink-recreate-consumer resume") || !strings.Contains(err.Error(), "--sink-recreate-consumer all") {
		t.Fatalf("restarted sink: %v\nwant %s… naming both recoveries", err, want)
	}
	if _, err := e.bus.JS.Consumer(ctx, e.cfg.NATS.AuditStream, e.cfg.Sink.AuditConsumer); err == nil {
		t.Error("the refusing sink created the consumer again")
	}

	e.publishAudit(50, 10)
	cfg := *e.cfg
	cfg.Sink.RecreateConsumer = "resume"
	cfg.ExitOnLastEvent = true
	r = e.start(&cfg)
	if err := r.wait(t, 60*time.Second); err != nil {
		t.Fatalf("resume: %v", err)
	}
	e.checkExactlyOnce(60)
	if !strings.Contains(r.logs.String(), "recreating the deleted consumer (sink.recreate-consumer)") {
		t.Errorf("no log line about the recreated consumer:\n%s", r.logs)
	}
}
