package ingest

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

// electing is JetStream as a cluster answers while it elects its leaders
// after a start: the first `fails` bucket creations get err.
type electing struct {
	jetstream.JetStream
	fails atomic.Int32
	err   error
}

func (j *electing) CreateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if j.fails.Add(-1) >= 0 {
		return nil, j.err
	}
	return j.JetStream.CreateKeyValue(ctx, cfg)
}

func TestPrepareWaitsForJetStream(t *testing.T) {
	e := newEnv(t, teleportsim.Options{Seed: 1, Events: 10})
	b := e.open()
	js := &electing{JetStream: b.JS, err: &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}}
	js.fails.Store(2)
	b.JS = js
	logs := &logtest.Buffer{}
	kv, err := prepare(context.Background(), b, "", zerolog.New(logs))
	if err != nil || kv == nil {
		t.Fatalf("prepare: %v", err)
	}
	if n := strings.Count(logs.String(), "JetStream not ready, retrying"); n != 2 {
		t.Errorf("%d retry lines, want 2:\n%s", n, logs.String())
	}
}

func TestPrepareDoesNotWaitForMissingJetStream(t *testing.T) {
	e := newEnv(t, teleportsim.Options{Seed: 1, Events: 10})
	b := e.open()
	js := &electing{JetStream: b.JS, err: jetstream.ErrJetStreamNotEnabled}
	js.fails.Store(1000)
	b.JS = js
	logs := &logtest.Buffer{}
	_, err := prepare(context.Background(), b, "", zerolog.New(logs))
	if err == nil || !strings.Contains(err.Error(), "jetstream not enabled") || !strings.Contains(err.Error(), "state bucket") {
		t.Fatalf("prepare: %v, want the state bucket named and JetStream not enabled", err)
	}
	if strings.Contains(logs.String(), "retrying") {
		t.Errorf("retried a server without JetStream:\n%s", logs.String())
	}
}
