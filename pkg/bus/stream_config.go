package bus

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// Default names used when the [nats] section leaves them empty: the same as
// config.Default, so a consumer that builds its NATSConfig by hand finds the
// streams ingest created with the defaults.
const (
	DefaultAuditStream   = "TELEPORT_AUDIT"
	DefaultSessionStream = "TELEPORT_SESSIONS"
	DefaultStateBucket   = "teleport_event_bus"
	// DeadLetterSuffix is appended to the audit stream's name to name the
	// dead-letter stream.
	DeadLetterSuffix = "_DEADLETTER"
)

// serverDefaultDuplicates is JetStream's duplicate window when none is set.
const serverDefaultDuplicates = 2 * time.Minute

// DeadLetterDuplicates is the dead-letter stream's duplicate window, which
// the duplicate-window setting does not change: the sink republishes a
// dead letter after a crash without reading the stream first, and dead
// letters are too few for their ids to cost memory.
const DeadLetterDuplicates = 2 * time.Minute

// WithDefaults returns cfg with empty stream and bucket names, listen
// address and replicas filled in.
func WithDefaults(cfg config.NATSConfig) config.NATSConfig {
	if cfg.AuditStream == "" {
		cfg.AuditStream = DefaultAuditStream
	}
	if cfg.SessionStream == "" {
		cfg.SessionStream = DefaultSessionStream
	}
	if cfg.StateBucket == "" {
		cfg.StateBucket = DefaultStateBucket
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	return cfg
}

// DeadLetterStream is the name of the dead-letter stream: the audit stream's
// name with DeadLetterSuffix.
func DeadLetterStream(cfg config.NATSConfig) string {
	return WithDefaults(cfg).AuditStream + DeadLetterSuffix
}

// StreamConfigs are the streams the bus needs, in creation order: audit
// (audit.>), sessions (session.>) and dead letters (deadletter.>), all file
// storage with the configured limits. A stream at max-bytes refuses new
// messages (discard new) rather than drop its oldest, which a consumer may
// not have read yet: the writer pauses until room is made (NoRoom).
// max-age still removes messages whatever their consumers did; ingest
// counts those removed before they were acknowledged.
func StreamConfigs(cfg config.NATSConfig) []jetstream.StreamConfig {
	cfg = WithDefaults(cfg)
	base := func(name, subject, desc string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    []string{subject},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardNew,
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
			MaxAge:      cfg.MaxAge,
			MaxBytes:    orUnlimited64(cfg.MaxBytes),
			MaxMsgs:     -1,
			MaxMsgSize:  orUnlimited32(cfg.MaxMsgSize),
			Duplicates:  cfg.DuplicateWindow,
		}
	}
	return []jetstream.StreamConfig{
		base(cfg.AuditStream, AuditPrefix+".>", "Teleport audit events (teleport-event-bus)"),
		base(cfg.SessionStream, SessionPrefix+".>", "Teleport session recording events (teleport-event-bus)"),
		deadLetters(base(DeadLetterStream(cfg), DeadLetterPrefix+".>", "Messages Fluentd kept refusing (teleport-event-bus)")),
	}
}

// deadLetters gives the dead-letter stream its own duplicate window.
func deadLetters(c jetstream.StreamConfig) jetstream.StreamConfig {
	c.Duplicates = DeadLetterDuplicates
	if c.MaxAge > 0 && c.MaxAge < c.Duplicates {
		c.Duplicates = c.MaxAge
	}
	return c
}

// StateBucketConfig is the state KV bucket: one value per key, file storage,
// the configured replicas.
func StateBucketConfig(cfg config.NATSConfig) jetstream.KeyValueConfig {
	cfg = WithDefaults(cfg)
	return jetstream.KeyValueConfig{
		Bucket:      cfg.StateBucket,
		Description: "teleport-event-bus state: cursors, session progress, lease, lock counters",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	}
}

func orUnlimited64(v int64) int64 {
	if v <= 0 {
		return -1
	}
	return v
}

func orUnlimited32(v int32) int32 {
	if v <= 0 {
		return -1
	}
	return v
}

// effectiveDuplicates is the duplicate window the server applies: the
// default, capped by MaxAge.
func effectiveDuplicates(c jetstream.StreamConfig) time.Duration {
	d := c.Duplicates
	if d <= 0 {
		d = serverDefaultDuplicates
		if c.MaxAge > 0 && c.MaxAge < d {
			d = c.MaxAge
		}
	}
	return d
}
