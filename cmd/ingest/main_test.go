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
	t.Run("memory budget below the minimum", func(t *testing.T) {
		clitest.BadConfig(t, bin, "ingest", "[ingest]\nmemory-budget = \"100MiB\"\n",
			`key "ingest.memory-budget": 100MiB is below the smallest budget ingest runs in, 256MiB; set at least 256MiB, or "off" (`+config.MinMemoryBudgetWhy+`)`)
		out, errOut, code := clitest.Exec(t, bin, "--ingest-memory-budget", "64MB")
		want := "ingest: error: flag --ingest-memory-budget: 64000000 is below the smallest budget ingest runs in, 256MiB; set at least 256MiB, or \"off\" (" + config.MinMemoryBudgetWhy + ")\n"
		if code != 2 || errOut != want || out != "" {
			t.Errorf("exit %d stdout %q stderr %q; want 2 and %q", code, out, errOut, want)
		}
	})
	t.Run("max-in-flight over the NATS client's window", func(t *testing.T) {
		clitest.BadConfig(t, bin, "ingest", "[ingest]\nmax-in-flight = 5000\n", `key "ingest.max-in-flight": must be 1..4000, got 5000`)
	})
	t.Run("memory budget not a size", func(t *testing.T) {
		clitest.BadConfig(t, bin, "ingest", "[ingest]\nmemory-budget = \"256M\"\n",
			`key "ingest.memory-budget": must be "auto", "off" or a size such as "384MiB", "1GiB" or "400MB": "256M" has an unknown unit "M" (use B, KB, MB, GB, KiB, MiB or GiB)`)
	})
}
