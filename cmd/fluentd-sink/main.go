// Command fluentd-sink delivers the audit events and session recordings on
// JetStream to Fluentd's in_http or in_forward over mTLS, as a durable
// consumer (the scheme of fluentd.url chooses the input): run more
// copies to scale. Flags, environment variables and the TOML file are
// described by `fluentd-sink --help` and docs/configuration.md.
package main

import (
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/sink"
)

func main() {
	config.Main(config.NewApp(config.Sink, "fluentd-sink",
		"Deliver audit events and session recordings from JetStream to Fluentd over mTLS", sink.Run))
}
