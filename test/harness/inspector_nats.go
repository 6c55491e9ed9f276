package harness

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// NewInspectorFor connects an Inspector with a whole [nats] section — the
// server list, TLS and credentials of a cluster such as
// NATSCluster.NATSConfig(NATSUserReader) — where NewInspector only knows a
// URL or the embedded server's address.
func NewInspectorFor(ctx context.Context, cfg config.NATSConfig) (*Inspector, error) {
	cfg = bus.WithDefaults(cfg)
	conn, err := bus.Connect(ctx, cfg, "harness-inspector", zerolog.Nop())
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &Inspector{cfg: cfg, conn: conn, js: js}, nil
}
