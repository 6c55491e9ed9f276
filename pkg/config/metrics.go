package config

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/metrics"
)

// metricsKey is the key holding cmd's metrics address.
func metricsKey(cmd Command) *key {
	if cmd == Sink {
		return byName["sink.metrics-addr"]
	}
	return byName["ingest.metrics-addr"]
}

// MetricsAddrFor is where cmd serves /metrics, /healthz and /readyz
// ("" = off): ingest.metrics-addr (or the older top-level metrics-addr)
// for ingest, sink.metrics-addr for the sink.
func (c *Config) MetricsAddrFor(cmd Command) string {
	return metricsKey(cmd).format(c)
}

// MetricsListenError explains err, returned when cmd could not listen on
// its metrics address: it names the key as the user set it and, for a port
// in use, how to choose another.
func (c *Config) MetricsListenError(cmd Command, err error) error {
	k := metricsKey(cmd)
	name := k.name
	if src := c.sources[k.name]; src.spelling != "" {
		name = src.spelling
	} else if src.kind == srcFlag {
		name = "--" + src.name
	} else if src.kind == srcEnv {
		name = src.name
	}
	msg := fmt.Sprintf("%s %q: %v", name, k.format(c), err)
	if errors.Is(err, syscall.EADDRINUSE) {
		section := "[ingest]"
		if cmd == Sink {
			section = "[sink]"
		}
		envs := k.envVars()
		msg += fmt.Sprintf(" (another process serves there: set %s metrics-addr, --%s or %s to a free host:port, a range host:first-last, or \"\" to turn it off)",
			section, k.flag, envs[0])
	}
	return errors.New(msg)
}

// PprofListenError explains err, returned when ingest could not listen on
// ingest.pprof-addr.
func (c *Config) PprofListenError(err error) error {
	k := byName["ingest.pprof-addr"]
	return fmt.Errorf("key %q: cannot serve profiles on %q: %w (set another host:port, or \"\" to turn it off)", k.name, k.format(c), err)
}

// checkListenAddr accepts "", host:port and host:first-last.
func checkListenAddr(c *Config, k *key) error {
	v := k.format(c)
	if v == "" {
		return nil
	}
	if _, err := metrics.ParseAddr(v); err != nil {
		return c.errAt(k, "%v", err)
	}
	return nil
}
