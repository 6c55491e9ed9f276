package config

import "time"

// Default values that other packages refer to.
const (
	DefaultTeleportAddr = "localhost:3025"
	DefaultNATSListen   = "127.0.0.1:4222"
	// DefaultDuplicateWindow is the audit and session streams' dedup
	// window. It only has to cover a retry racing its own first attempt:
	// a restart or a publish retry reads the stream after the saved
	// floor to learn what is there already, whatever the window. The
	// server keeps every message id of the window in memory (170–280
	// bytes each, times events/s: 2 m held 1M ids, 200+ MB, during a
	// backfill).
	DefaultDuplicateWindow = 5 * time.Second
	// DefaultMaxMsgSize matches nats-server's default max_payload (1 MiB).
	DefaultMaxMsgSize = 1 << 20
	// DefaultIngestMetricsAddr and DefaultSinkMetricsAddr do not overlap, so
	// ingest and any number of sinks (up to nine) serve their metrics on one
	// host without settings; loopback only until the user opens them.
	DefaultIngestMetricsAddr = "127.0.0.1:9090"
	DefaultSinkMetricsAddr   = "127.0.0.1:9091-9099"
	// MaxPageSize is the largest page Teleport serves a search, and the
	// default ingest.page-size: a search page costs the server the same
	// whatever its size (see docs/migrating.md).
	MaxPageSize = 10_000
)

// Default is the configuration before any file, environment variable or
// flag is applied. Values the older teleport-event-handler had keep its
// defaults (batch 20, timeout 5s, concurrency 5, window 24h, lock 3/1m).
func Default() Config {
	return Config{
		Teleport: TeleportConfig{
			Addr:            []string{DefaultTeleportAddr},
			RefreshInterval: time.Minute,
			ConnectRetries:  0,
		},
		Fluentd: FluentdConfig{
			DialTimeout:     10 * time.Second,
			ResponseTimeout: 30 * time.Second,
			MaxConns:        8,
		},
		NATS: NATSConfig{
			Listen:          DefaultNATSListen,
			AuditStream:     "TELEPORT_AUDIT",
			SessionStream:   "TELEPORT_SESSIONS",
			StateBucket:     "teleport_event_bus",
			Replicas:        1,
			MaxAge:          0,
			MaxBytes:        -1,
			MaxMsgSize:      DefaultMaxMsgSize,
			DuplicateWindow: DefaultDuplicateWindow,
		},
		Ingest: IngestConfig{
			MaxInFlight:         2048,
			PageSize:            MaxPageSize,
			SessionConcurrency:  0,
			LeaseTTL:            10 * time.Second,
			MissingRecordingTTL: 48 * time.Hour,
			ProgressInterval:    5 * time.Second,
			ExitDrainTimeout:    5 * time.Minute,
			MetricsAddr:         DefaultIngestMetricsAddr,
		},
		Sink: SinkConfig{
			AuditConsumer:   "fluentd-sink-audit",
			SessionConsumer: "fluentd-sink-sessions",
			AckWait:         30 * time.Second,
			MaxAckPending:   10_000,
			MaxDeliver:      10,
			BatchSize:       100,
			BatchBytes:      1 << 20,
			BatchWait:       200 * time.Millisecond,
			InFlight:        4,
			ShutdownTimeout: 30 * time.Second,
			MetricsAddr:     DefaultSinkMetricsAddr,
		},
		Lock: LockConfig{
			FailedAttemptsCount: 3,
			Period:              time.Minute,
			For:                 0,
		},
		Storage:          "./storage",
		Batch:            20,
		Namespace:        "default",
		SkipSessionTypes: []string{"print"},
		Timeout:          5 * time.Second,
		Concurrency:      5,
		WindowSize:       24 * time.Hour,
		Configure: ConfigureOptions{
			TeleportAddr: DefaultTeleportAddr,
			CAName:       "ca",
			ServerName:   "server",
			ClientName:   "client",
			TTL:          87600 * time.Hour,
			DNSNames:     []string{"localhost"},
			IPs:          []string{"127.0.0.1"},
			Length:       2048,
			KeyType:      "rsa",
		},
	}
}
