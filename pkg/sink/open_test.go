package sink

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/fluentd"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
	"github.com/teleport-event-bus/teleport-event-bus/test/fluentdsim"
)

// electing is JetStream as a cluster answers while it elects its leaders
// after a restart: the first `fails` consumer creations get err.
type electing struct {
	jetstream.JetStream
	fails atomic.Int32
	err   error
}

func (j *electing) CreateOrUpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	if j.fails.Add(-1) >= 0 {
		return nil, j.err
	}
	return j.JetStream.CreateOrUpdateConsumer(ctx, stream, cfg)
}

// runOn runs a sink on js until it has delivered want events, or returns
// Run's error if it ends first.
func runOn(t *testing.T, e *env, js jetstream.JetStream, logs *logtest.Buffer, want int) error {
	t.Helper()
	c, err := fluentd.New(e.cfg.Fluentd, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(js, e.bus.Conn, c, e.cfg, zerolog.New(logs), WithMetrics(NewMetrics(prometheus.NewRegistry())), WithBackoff(fastBackoff))
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stored := make(chan error, 1)
	go func() {
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		defer wcancel()
		stored <- e.sim.WaitStored(wctx, int64(want))
	}()
	select {
	case err := <-done:
		return err
	case err := <-stored:
		if err != nil {
			t.Fatalf("waiting for %d events at Fluentd: %v", want, err)
		}
	}
	cancel()
	return <-done
}

func TestConsumerCreationWaitsForJetStream(t *testing.T) {
	e := newEnv(t, fluentdsim.Options{})
	e.publishAudit(0, 50)
	js := &electing{JetStream: e.bus.JS, err: &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}}
	js.fails.Store(2)
	logs := &logtest.Buffer{}
	if err := runOn(t, e, js, logs, 50); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := strings.Count(logs.String(), "JetStream not ready, retrying"); n != 2 {
		t.Errorf("%d retry lines, want 2:\n%s", n, logs.String())
	}
	e.checkExactlyOnce(50)
}

func TestConsumerCreationDoesNotWaitForMissingJetStream(t *testing.T) {
	e := newEnv(t, fluentdsim.Options{})
	js := &electing{JetStream: e.bus.JS, err: jetstream.ErrJetStreamNotEnabled}
	js.fails.Store(1000)
	logs := &logtest.Buffer{}
	err := runOn(t, e, js, logs, 1)
	if err == nil || !strings.Contains(err.Error(), "jetstream not enabled") || !strings.Contains(err.Error(), e.cfg.Sink.AuditConsumer) {
		t.Fatalf("Run: %v, want the consumer named and JetStream not enabled", err)
	}
	if strings.Contains(logs.String(), "retrying") {
		t.Errorf("retried a server without JetStream:\n%s", logs.String())
	}
}
