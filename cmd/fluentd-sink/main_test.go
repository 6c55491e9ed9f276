package main

import (
	"testing"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config/clitest"
)

func TestBinary(t *testing.T) {
	bin := clitest.Build(t, "fluentd-sink")
	clitest.Binary(t, bin, "fluentd-sink", config.Sink)
	t.Run("bad config", func(t *testing.T) {
		clitest.BadConfig(t, bin, "fluentd-sink", "[sink]\nbatch-size = 0\n", `key "sink.batch-size": must be 1..10000, got 0`)
	})
}
