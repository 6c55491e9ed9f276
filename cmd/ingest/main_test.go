package main

import (
	"testing"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config/clitest"
)

func TestBinary(t *testing.T) {
	bin := clitest.Build(t, "ingest")
	clitest.Binary(t, bin, "ingest", config.Ingest)
	t.Run("bad config", func(t *testing.T) {
		clitest.BadConfig(t, bin, "ingest", "batch = 20\n[nats]\nreplicas = 7\n", `key "nats.replicas": must be 1..5, got 7`)
	})
}
