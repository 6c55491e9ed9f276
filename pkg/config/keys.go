package config

import (
	"strings"
	"time"
)

// key describes one setting: its TOML name, flag, environment variables,
// the commands it applies to and where it lives in Config. Flags, loading,
// validation, the redacted log dump and the reference are all driven by
// this one table, so they cannot disagree.
type key struct {
	// name is the canonical TOML key ("teleport.addr", "batch").
	name string
	// aliases are other TOML spellings of the same key ("forward.fluentd.url").
	aliases []string
	// flag is the long flag name; short are one-letter aliases.
	flag  string
	short []string
	// legacy keys also accept the FDWRD_ spelling and extraEnv.
	legacy   bool
	extraEnv []string
	cmds     cmdSet
	usage    string
	// unset says, in the reference's Default column, what an empty
	// default means (a default that is not a value, such as "now").
	unset string
	// secret values are never logged.
	secret bool
	// path values name a file that must exist.
	path bool
	// secretFile values name a file holding a credential: it must also be
	// readable by its owner only (CheckSecretFile).
	secretFile bool
	// cliOnly keys are flags of configure, not accepted in the file.
	cliOnly bool
	// field points into the Config: *string, *[]string, *int, *int64,
	// *int32, *bool, *time.Duration, *time.Time or *MemoryBudget.
	field func(*Config) any
	// check validates the merged value; nil means any value of the type.
	check func(c *Config, k *key) error
}

// envVars are the key's environment variables, FDFWD_ first.
func (k *key) envVars() []string {
	snake := strings.ToUpper(strings.ReplaceAll(k.flag, "-", "_"))
	if k.cliOnly {
		return []string{"FDFWD_CONFIGURE_" + snake}
	}
	out := []string{"FDFWD_" + snake}
	if k.legacy {
		out = append(out, "FDWRD_"+snake)
	}
	return append(out, k.extraEnv...)
}

// tomlNames are every spelling the file may use for the key.
func (k *key) tomlNames() []string {
	if k.cliOnly {
		return nil
	}
	return append([]string{k.name}, k.aliases...)
}

// keys is the table of every setting, in reference order.
var keys = []*key{
	// [teleport]
	{name: "teleport.addr", flag: "teleport-addr", legacy: true, cmds: forIngest,
		usage: "Teleport auth or proxy address(es), host:port; a list or comma-separated",
		field: func(c *Config) any { return &c.Teleport.Addr }, check: checkTeleportAddr},
	{name: "teleport.identity", flag: "teleport-identity", legacy: true, cmds: forIngest, path: true,
		usage: "Teleport identity file (tctl auth sign --format=file); excludes cert/key/ca",
		field: func(c *Config) any { return &c.Teleport.Identity }},
	{name: "teleport.ca", flag: "teleport-ca", legacy: true, cmds: forIngest, path: true,
		usage: "Teleport TLS CA file (with cert and key)",
		field: func(c *Config) any { return &c.Teleport.CA }},
	{name: "teleport.cert", flag: "teleport-cert", legacy: true, cmds: forIngest, path: true,
		usage: "Teleport TLS certificate file (with key and ca)",
		field: func(c *Config) any { return &c.Teleport.Cert }},
	{name: "teleport.key", flag: "teleport-key", legacy: true, cmds: forIngest, path: true,
		usage: "Teleport TLS key file (with cert and ca)",
		field: func(c *Config) any { return &c.Teleport.Key }},
	{name: "teleport.refresh.enabled", flag: "teleport-refresh-enabled", legacy: true, cmds: forIngest,
		usage: "Reload the identity file when it changes (for tbot)",
		field: func(c *Config) any { return &c.Teleport.RefreshEnabled }},
	{name: "teleport.refresh.interval", flag: "teleport-refresh-interval", legacy: true, cmds: forIngest,
		usage: "How often the identity file is checked for changes",
		field: func(c *Config) any { return &c.Teleport.RefreshInterval }, check: positive},
	{name: "teleport.connect-retries", flag: "teleport-connect-retries", cmds: forIngest,
		usage: "Start-up connection attempts before giving up; 0 retries forever, logging each attempt",
		field: func(c *Config) any { return &c.Teleport.ConnectRetries }, check: intRange(0, 1_000_000)},

	// [fluentd] / [forward.fluentd]
	{name: "fluentd.url", aliases: []string{"forward.fluentd.url"}, flag: "fluentd-url", legacy: true, cmds: forSink,
		usage: "Fluentd URL for audit events; the path is the tag: in_http https://host:8888/test.log or in_forward tls://host:24224/test.log",
		field: func(c *Config) any { return &c.Fluentd.URL }, check: checkFluentdURL},
	{name: "fluentd.session-url", aliases: []string{"forward.fluentd.session-url"}, flag: "fluentd-session-url", legacy: true, cmds: forSink,
		usage: "Fluentd URL for session recordings; .<session id>.log is appended (in_forward: its path is the session tag)",
		field: func(c *Config) any { return &c.Fluentd.SessionURL }, check: checkFluentdURL},
	{name: "fluentd.ca", aliases: []string{"forward.fluentd.ca"}, flag: "fluentd-ca", legacy: true, cmds: forSink, path: true,
		usage: "CA file that signed Fluentd's server certificate",
		field: func(c *Config) any { return &c.Fluentd.CA }},
	{name: "fluentd.cert", aliases: []string{"forward.fluentd.cert"}, flag: "fluentd-cert", legacy: true, cmds: forSink, path: true,
		usage: "Client certificate file for Fluentd mTLS",
		field: func(c *Config) any { return &c.Fluentd.Cert }},
	{name: "fluentd.key", aliases: []string{"forward.fluentd.key"}, flag: "fluentd-key", legacy: true, cmds: forSink, path: true,
		usage: "Client key file for Fluentd mTLS (may be encrypted, see key-passphrase)",
		field: func(c *Config) any { return &c.Fluentd.Key }},
	{name: "fluentd.key-passphrase", aliases: []string{"forward.fluentd.key-passphrase"}, flag: "fluentd-key-passphrase", cmds: forSink, secret: true,
		usage: "Passphrase of an encrypted client key (never logged)",
		field: func(c *Config) any { return &c.Fluentd.KeyPassphrase }},
	{name: "fluentd.key-passphrase-file", aliases: []string{"forward.fluentd.key-passphrase-file"}, flag: "fluentd-key-passphrase-file", cmds: forSink, path: true,
		usage: "File whose first line is the client key's passphrase",
		field: func(c *Config) any { return &c.Fluentd.KeyPassphraseFile }},
	{name: "fluentd.server-name", aliases: []string{"forward.fluentd.server-name"}, flag: "fluentd-server-name", cmds: forSink,
		usage: "Name to verify in Fluentd's certificate instead of the URL's host",
		field: func(c *Config) any { return &c.Fluentd.ServerName }},
	{name: "fluentd.insecure-http", aliases: []string{"forward.fluentd.insecure-http"}, flag: "insecure-http", cmds: forSink,
		usage: "Allow plain http:// Fluentd URLs (no TLS; for tests only)",
		field: func(c *Config) any { return &c.Fluentd.InsecureHTTP }},
	{name: "fluentd.dial-timeout", aliases: []string{"forward.fluentd.dial-timeout"}, flag: "fluentd-dial-timeout", cmds: forSink,
		usage: "Timeout for a TCP+TLS connection to Fluentd",
		field: func(c *Config) any { return &c.Fluentd.DialTimeout }, check: positive},
	{name: "fluentd.response-timeout", aliases: []string{"forward.fluentd.response-timeout"}, flag: "fluentd-response-timeout", cmds: forSink,
		usage: "Timeout for Fluentd's answer to one request (in_forward: the ack of one message)",
		field: func(c *Config) any { return &c.Fluentd.ResponseTimeout }, check: positive},
	{name: "fluentd.max-conns", aliases: []string{"forward.fluentd.max-conns"}, flag: "fluentd-max-conns", cmds: forSink,
		usage: "Keep-alive connections kept open to Fluentd",
		field: func(c *Config) any { return &c.Fluentd.MaxConns }, check: intRange(1, 1024)},

	// [fluentd] / [forward.fluentd] for in_forward (url tls://host:24224)
	{name: "fluentd.insecure-tcp", aliases: []string{"forward.fluentd.insecure-tcp"}, flag: "insecure-tcp", cmds: forSink,
		usage: "Allow plain tcp:// in_forward URLs (no TLS; for tests only)",
		field: func(c *Config) any { return &c.Fluentd.InsecureTCP }},
	{name: "fluentd.tag", aliases: []string{"forward.fluentd.tag"}, flag: "fluentd-tag", cmds: forSink,
		usage: "in_forward: tag of audit events (default: the url's path, tls://host:24224/test.log)",
		field: func(c *Config) any { return &c.Fluentd.Tag }, check: checkTag},
	{name: "fluentd.session-tag", aliases: []string{"forward.fluentd.session-tag"}, flag: "fluentd-session-tag", cmds: forSink,
		usage: "in_forward: session events get the tag <session-tag>.<sid>.log (default: session-url's path)",
		field: func(c *Config) any { return &c.Fluentd.SessionTag }, check: checkTag},
	{name: "fluentd.shared-key", aliases: []string{"forward.fluentd.shared-key"}, flag: "fluentd-shared-key", cmds: forSink, secret: true,
		usage: "in_forward: <security> shared_key; turns on the handshake (never logged; prefer shared-key-file)",
		field: func(c *Config) any { return &c.Fluentd.SharedKey }},
	{name: "fluentd.shared-key-file", aliases: []string{"forward.fluentd.shared-key-file"}, flag: "fluentd-shared-key-file", cmds: forSink, path: true,
		usage: "in_forward: file whose first line is the shared key",
		field: func(c *Config) any { return &c.Fluentd.SharedKeyFile }},
	{name: "fluentd.self-hostname", aliases: []string{"forward.fluentd.self-hostname"}, flag: "fluentd-self-hostname", cmds: forSink,
		usage: "in_forward: our name in the handshake (default: the host name); must differ from Fluentd's self_hostname",
		field: func(c *Config) any { return &c.Fluentd.SelfHostname }},
	{name: "fluentd.username", aliases: []string{"forward.fluentd.username"}, flag: "fluentd-username", cmds: forSink,
		usage: "in_forward: user for <security> user_auth (with password)",
		field: func(c *Config) any { return &c.Fluentd.Username }},
	{name: "fluentd.password", aliases: []string{"forward.fluentd.password"}, flag: "fluentd-password", cmds: forSink, secret: true,
		usage: "in_forward: the user's password (never logged; prefer password-file)",
		field: func(c *Config) any { return &c.Fluentd.Password }},
	{name: "fluentd.password-file", aliases: []string{"forward.fluentd.password-file"}, flag: "fluentd-password-file", cmds: forSink, path: true,
		usage: "in_forward: file whose first line is the user's password",
		field: func(c *Config) any { return &c.Fluentd.PasswordFile }},

	// [nats]
	{name: "nats.url", flag: "nats-url", cmds: forReaders,
		usage: "NATS server URL(s), comma-separated; empty: ingest runs an embedded server and the sink connects to nats.listen",
		field: func(c *Config) any { return &c.NATS.URL }, check: checkNATSURL},
	{name: "nats.creds", flag: "nats-creds", cmds: forReaders, path: true, secretFile: true,
		usage: "NATS credentials file (JWT + NKey)",
		field: func(c *Config) any { return &c.NATS.Creds }},
	{name: "nats.nkey", flag: "nats-nkey", cmds: forReaders, path: true, secretFile: true,
		usage: "NATS NKey seed file (mode 0600); ingest.nats-nkey and sink.nats-nkey take precedence",
		field: func(c *Config) any { return &c.NATS.NKey }},
	{name: "nats.user", flag: "nats-user", cmds: forReaders,
		usage: "NATS user name (with nats.password); for the embedded server, the user it requires",
		field: func(c *Config) any { return &c.NATS.User }},
	{name: "nats.password", flag: "nats-password", cmds: forReaders, secret: true,
		usage: "NATS password (never logged)",
		field: func(c *Config) any { return &c.NATS.Password }},
	{name: "nats.token", flag: "nats-token", cmds: forReaders, secret: true,
		usage: "NATS token (never logged); for the embedded server, the token it requires",
		field: func(c *Config) any { return &c.NATS.Token }},
	{name: "nats.ca", flag: "nats-ca", cmds: forReaders, path: true,
		usage: "CA file for the NATS servers' certificates",
		field: func(c *Config) any { return &c.NATS.CA }},
	{name: "nats.cert", flag: "nats-cert", cmds: forReaders, path: true,
		usage: "Client certificate file for NATS TLS (with nats.key)",
		field: func(c *Config) any { return &c.NATS.Cert }},
	{name: "nats.key", flag: "nats-key", cmds: forReaders, path: true,
		usage: "Client key file for NATS TLS (with nats.cert)",
		field: func(c *Config) any { return &c.NATS.Key }},
	{name: "nats.users", flag: "nats-users", cmds: forIngest, path: true,
		usage: "Embedded server's users file (configure writes it): the NKeys it admits, each with its role's permissions; empty leaves the bus open to every local process",
		field: func(c *Config) any { return &c.NATS.Users }},
	{name: "nats.server-cert", flag: "nats-server-cert", cmds: forIngest, path: true,
		usage: "Certificate the embedded server presents on its TLS listener (configure writes nats-server.crt, valid for its --nats-names); clients verify it with nats.ca. Required when nats.listen is not a loopback address; optional (used when set) on loopback",
		field: func(c *Config) any { return &c.NATS.ServerCert }},
	{name: "nats.server-key", flag: "nats-server-key", cmds: forIngest, path: true, secretFile: true,
		usage: "Unencrypted key of nats.server-cert (mode 0600; configure writes nats-server.key)",
		field: func(c *Config) any { return &c.NATS.ServerKey }},
	{name: "nats.listen", flag: "nats-listen", cmds: forReaders,
		usage: "Embedded server's client address, host:port (used when nats.url is empty)",
		field: func(c *Config) any { return &c.NATS.Listen }, check: checkHostPort(false)},
	{name: "nats.audit-stream", flag: "nats-audit-stream", cmds: forReaders,
		usage: "JetStream stream holding audit.> subjects",
		field: func(c *Config) any { return &c.NATS.AuditStream }, check: checkName},
	{name: "nats.session-stream", flag: "nats-session-stream", cmds: forReaders,
		usage: "JetStream stream holding session.> subjects",
		field: func(c *Config) any { return &c.NATS.SessionStream }, check: checkName},
	{name: "nats.state-bucket", flag: "nats-state-bucket", cmds: forReaders,
		usage: "JetStream KV bucket with cursors, session progress, lease and lock counters; the sink reads only its caught-up key (exit-on-last-event)",
		field: func(c *Config) any { return &c.NATS.StateBucket }, check: checkName},
	{name: "nats.replicas", flag: "nats-replicas", cmds: forIngest,
		usage: "Replicas of the streams and the bucket (1 for a single server, 3 for a cluster)",
		field: func(c *Config) any { return &c.NATS.Replicas }, check: intRange(1, 5)},
	{name: "nats.max-age", flag: "nats-max-age", cmds: forIngest,
		usage: "Stream retention by age; 0 keeps messages for ever. Removes messages whether or not consumers read them: ingest counts those removed unacknowledged (removed_unacknowledged_total)",
		field: func(c *Config) any { return &c.NATS.MaxAge }, check: nonNegative},
	{name: "nats.max-bytes", flag: "nats-max-bytes", cmds: forIngest,
		usage: "Stream size limit in bytes, per stream; -1 is unlimited. A full stream refuses new events (discard new, nothing unread is dropped) and ingest pauses until room is made",
		field: func(c *Config) any { return &c.NATS.MaxBytes }, check: checkMaxBytes},
	{name: "nats.max-msg-size", flag: "nats-max-msg-size", cmds: forIngest,
		usage: "Largest message in bytes; bigger events are trimmed to fit (at most 64 MiB)",
		field: func(c *Config) any { return &c.NATS.MaxMsgSize }, check: checkMaxMsgSize},
	{name: "nats.duplicate-window", flag: "nats-duplicate-window", cmds: forIngest,
		usage: "JetStream dedup window: a re-published event within it is dropped by Nats-Msg-Id",
		field: func(c *Config) any { return &c.NATS.DuplicateWindow }, check: positive},

	// [ingest]
	{name: "ingest.nats-nkey", flag: "ingest-nats-nkey", cmds: forIngest, path: true, secretFile: true,
		usage: "NKey seed file (mode 0600) ingest and ingest status connect to NATS with (the ingest role); takes precedence over nats.nkey, and with another kind of [nats] credential is an error",
		field: func(c *Config) any { return &c.Ingest.NATSNKey }},
	{name: "ingest.max-in-flight", flag: "ingest-max-in-flight", cmds: forIngest,
		usage: "Publishes awaiting their PubAck at once: at most 4000, the NATS client's limit of asynchronous publishes",
		field: func(c *Config) any { return &c.Ingest.MaxInFlight }, check: intRange(1, 4000)},
	{name: "ingest.page-size", flag: "ingest-page-size", cmds: forIngest,
		usage: "Events per page when searching the audit log (servers without the bulk export API); Teleport serves at most 10,000 and cuts a page at 1 MiB",
		field: func(c *Config) any { return &c.Ingest.PageSize }, check: intRange(1, MaxPageSize)},
	{name: "ingest.session-concurrency", flag: "ingest-session-concurrency", cmds: forIngest,
		usage: "Session recordings streamed at once; 0 uses concurrency",
		field: func(c *Config) any { return &c.Ingest.SessionConcurrency }, check: intRange(0, 1024)},
	{name: "ingest.lease-ttl", flag: "ingest-lease-ttl", cmds: forIngest,
		usage: "Lifetime of the leader's lease; a standby takes over within about this time",
		field: func(c *Config) any { return &c.Ingest.LeaseTTL }, check: minDuration(time.Second)},
	{name: "ingest.missing-recording-ttl", flag: "ingest-missing-recording-ttl", cmds: forIngest,
		usage: "How long a missing session recording is retried before it is given up (and counted)",
		field: func(c *Config) any { return &c.Ingest.MissingRecordingTTL }, check: nonNegative},
	{name: "ingest.progress-interval", flag: "ingest-progress-interval", cmds: forIngest,
		usage: "How often backfill progress is reported",
		field: func(c *Config) any { return &c.Ingest.ProgressInterval }, check: positive},
	{name: "ingest.exit-drain-timeout", flag: "ingest-exit-drain-timeout", cmds: forIngest,
		usage: "With exit-on-last-event and the embedded server: how long to wait for the durable consumers to deliver everything before exiting with an error",
		field: func(c *Config) any { return &c.Ingest.ExitDrainTimeout }, check: positive},
	{name: "ingest.metrics-addr", flag: "ingest-metrics-addr", cmds: forIngest,
		usage: "Serve ingest's /metrics, /healthz and /readyz on host:port, or the first free port of host:first-last; empty is off. The top-level metrics-addr, when set, is read here",
		field: func(c *Config) any { return &c.Ingest.MetricsAddr }, check: checkListenAddr},
	{name: "ingest.pprof-addr", flag: "ingest-pprof-addr", cmds: forIngest,
		usage: "Serve Go's profiles (/debug/pprof/: heap, allocs, CPU…) of ingest, the embedded NATS server included, on host:port; a port alone (\":6060\") listens on 127.0.0.1 only; empty is off. For finding what holds memory or CPU; never on an untrusted network",
		field: func(c *Config) any { return &c.Ingest.PprofAddr }, check: checkListenAddr},
	{name: "ingest.memory-budget", flag: "ingest-memory-budget", cmds: forIngest,
		usage: "Memory ingest keeps to, the embedded NATS server included: \"auto\" (3/4 of the cgroup memory limit, or 288MiB without one), a size of at least 256MiB (384MiB, 1GiB, 400MB, bytes) or \"off\" (the Go runtime's defaults)",
		field: func(c *Config) any { return &c.Ingest.MemoryBudget }, check: checkMemoryBudget},

	// [sink]
	{name: "sink.nats-nkey", flag: "sink-nats-nkey", cmds: forSink, path: true, secretFile: true,
		usage: "NKey seed file (mode 0600) the sink connects to NATS with (the fluentd-sink role); takes precedence over nats.nkey, and with another kind of [nats] credential is an error",
		field: func(c *Config) any { return &c.Sink.NATSNKey }},
	{name: "sink.audit-consumer", flag: "sink-audit-consumer", cmds: forSink,
		usage: "Durable consumer name on the audit stream (shared by all sink replicas)",
		field: func(c *Config) any { return &c.Sink.AuditConsumer }, check: checkName},
	{name: "sink.recreate-consumer", flag: "sink-recreate-consumer", cmds: forSink,
		usage: "Only after a sink stopped because its durable consumer was deleted: \"resume\" recreates it after the last acknowledged position the sinks recorded, \"all\" from the stream's start (everything delivered again); remove it once the sink runs. Empty: a deleted consumer stops the sink",
		field: func(c *Config) any { return &c.Sink.RecreateConsumer }, check: checkRecreateConsumer},
	{name: "sink.session-consumer", flag: "sink-session-consumer", cmds: forSink,
		usage: "Durable consumer name on the session stream",
		field: func(c *Config) any { return &c.Sink.SessionConsumer }, check: checkName},
	{name: "sink.filter-subjects", flag: "sink-filter-subjects", cmds: forSink,
		usage: "Only deliver these subjects (e.g. audit.user.login); empty delivers all",
		field: func(c *Config) any { return &c.Sink.FilterSubjects }, check: checkSubjects},
	{name: "sink.ack-wait", flag: "sink-ack-wait", cmds: forSink,
		usage: "Time a fetched message may stay unacknowledged before it is redelivered",
		field: func(c *Config) any { return &c.Sink.AckWait }, check: minDuration(time.Second)},
	{name: "sink.max-ack-pending", flag: "sink-max-ack-pending", cmds: forSink,
		usage: "Messages out and unacknowledged at once, over all replicas (bounds memory)",
		field: func(c *Config) any { return &c.Sink.MaxAckPending }, check: intRange(1, 1_000_000)},
	{name: "sink.max-deliver", flag: "sink-max-deliver", cmds: forSink,
		usage: "Deliveries of a refused message before it moves to the dead-letter subject",
		field: func(c *Config) any { return &c.Sink.MaxDeliver }, check: intRange(1, 1_000_000)},
	{name: "sink.batch-size", flag: "sink-batch-size", cmds: forSink,
		usage: "Events per Fluentd request (sent as a JSON array)",
		field: func(c *Config) any { return &c.Sink.BatchSize }, check: intRange(1, 10_000)},
	{name: "sink.batch-bytes", flag: "sink-batch-bytes", cmds: forSink,
		usage: "Largest request body in bytes; a batch is sent when it would grow past this",
		field: func(c *Config) any { return &c.Sink.BatchBytes }, check: intRange(1024, 256<<20)},
	{name: "sink.batch-wait", flag: "sink-batch-wait", cmds: forSink,
		usage: "Longest wait to fill a batch before sending what there is",
		field: func(c *Config) any { return &c.Sink.BatchWait }, check: positive},
	{name: "sink.in-flight", flag: "sink-in-flight", cmds: forSink,
		usage: "Requests to Fluentd in flight at once",
		field: func(c *Config) any { return &c.Sink.InFlight }, check: intRange(1, 256)},
	{name: "sink.shutdown-timeout", flag: "sink-shutdown-timeout", cmds: forSink,
		usage: "On SIGTERM, how long in-flight requests may finish before the sink exits",
		field: func(c *Config) any { return &c.Sink.ShutdownTimeout }, check: nonNegative},
	{name: "sink.gzip", flag: "sink-gzip", cmds: forSink,
		usage: "Gzip request bodies",
		field: func(c *Config) any { return &c.Sink.Gzip }},
	{name: "sink.metrics-addr", flag: "sink-metrics-addr", cmds: forSink,
		usage: "Serve the sink's /metrics, /healthz and /readyz on host:port, or the first free port of host:first-last (several sinks on one host each take one); empty is off",
		field: func(c *Config) any { return &c.Sink.MetricsAddr }, check: checkListenAddr},

	// [lock] and the older top-level lock-* keys
	{name: "lock.enabled", aliases: []string{"lock-enabled"}, flag: "lock-enabled", legacy: true, extraEnv: []string{"FDFWD_LOCKING_ENABLED"}, cmds: forIngest,
		usage: "Lock users after repeated failed logins",
		field: func(c *Config) any { return &c.Lock.Enabled }},
	{name: "lock.failed-attempts-count", aliases: []string{"lock-failed-attempts-count"}, flag: "lock-failed-attempts-count", legacy: true, extraEnv: []string{"FDFWD_LOCKING_FAILED_ATTEMPTS"}, cmds: forIngest,
		usage: "Failed logins within lock.period that lock the user",
		field: func(c *Config) any { return &c.Lock.FailedAttemptsCount }, check: intRange(1, 1_000_000)},
	{name: "lock.period", aliases: []string{"lock-period"}, flag: "lock-period", legacy: true, extraEnv: []string{"FDFWD_LOCKING_PERIOD"}, cmds: forIngest,
		usage: "Window in which failed logins are counted",
		field: func(c *Config) any { return &c.Lock.Period }, check: positive},
	{name: "lock.for", aliases: []string{"lock-for"}, flag: "lock-for", legacy: true, extraEnv: []string{"FDFWD_LOCKING_FOR"}, cmds: forIngest,
		usage: "How long the lock lasts; 0 locks until removed",
		field: func(c *Config) any { return &c.Lock.For }, check: nonNegative},
	{name: "lock.reset-on-success", aliases: []string{"lock-reset-on-success"}, flag: "lock-reset-on-success", cmds: forIngest,
		usage: "A successful login clears the user's failed-login count",
		field: func(c *Config) any { return &c.Lock.ResetOnSuccess }},

	// top level
	{name: "storage", flag: "storage", legacy: true, cmds: forIngest,
		usage: "State directory: the embedded server's JetStream files, and with them every cursor",
		field: func(c *Config) any { return &c.Storage }, check: nonEmpty},
	{name: "batch", flag: "batch", legacy: true, cmds: forIngest,
		usage: "Accepted for older files and ignored: searches page with ingest.page-size",
		field: func(c *Config) any { return &c.Batch }, check: intRange(1, 10_000)},
	{name: "namespace", flag: "namespace", legacy: true, cmds: forIngest,
		usage: "Teleport events namespace",
		field: func(c *Config) any { return &c.Namespace }, check: nonEmpty},
	{name: "types", flag: "types", legacy: true, cmds: forIngest,
		usage: "Only these event types are exported (list or comma-separated); empty exports all",
		field: func(c *Config) any { return &c.Types }},
	{name: "skip-event-types", flag: "skip-event-types", legacy: true, cmds: forIngest,
		usage: "Event types never exported",
		field: func(c *Config) any { return &c.SkipEventTypes }},
	{name: "skip-session-types", flag: "skip-session-types", legacy: true, cmds: forIngest,
		usage: "Session recording event types dropped",
		field: func(c *Config) any { return &c.SkipSessionTypes }},
	{name: "start-time", flag: "start-time", legacy: true, cmds: forIngest,
		usage: "Oldest event to export, RFC 3339; fixed by the first run, which without it reads from the moment it starts; ingest backfill moves it earlier",
		unset: "the first run's start (now)",
		field: func(c *Config) any { return &c.StartTime }},
	{name: "timeout", flag: "timeout", legacy: true, cmds: forIngest,
		usage: "Poll interval once caught up",
		field: func(c *Config) any { return &c.Timeout }, check: positive},
	{name: "cursor", flag: "cursor", legacy: true, cmds: forIngest,
		usage: "Start the legacy read path from this cursor",
		field: func(c *Config) any { return &c.Cursor }},
	{name: "debug", flag: "debug", short: []string{"d"}, legacy: true, cmds: forAll,
		usage: "Debug logging",
		field: func(c *Config) any { return &c.Debug }},
	{name: "dry-run", flag: "dry-run", legacy: true, cmds: forReaders,
		usage: "Read and log, but publish (ingest) or deliver (sink) nothing and change no state",
		field: func(c *Config) any { return &c.DryRun }},
	{name: "exit-on-last-event", flag: "exit-on-last-event", legacy: true, cmds: forReaders,
		usage: "Exit 0 once everything is delivered: ingest when caught up, acknowledged and (embedded server) drained by the durable consumers; the sink when ingest is caught up and nothing is pending",
		field: func(c *Config) any { return &c.ExitOnLastEvent }},
	{name: "concurrency", flag: "concurrency", legacy: true, cmds: forIngest,
		usage: "Export chunks and session recordings read in parallel",
		field: func(c *Config) any { return &c.Concurrency }, check: intRange(1, 1024)},
	{name: "window-size", flag: "window-size", legacy: true, cmds: forIngest,
		usage: "Time window of one audit log query (legacy read path)",
		field: func(c *Config) any { return &c.WindowSize }, check: minDuration(time.Second)},
	{name: "metrics-addr", flag: "metrics-addr", cmds: forIngest,
		usage: "Older spelling of ingest.metrics-addr, read by ingest only (the sink has sink.metrics-addr); when both are set, the one set with higher precedence wins, the [ingest] key on a tie",
		field: func(c *Config) any { return &c.MetricsAddr }, check: checkListenAddr},

	// configure's own flags (not file keys)
	{name: "configure.ca-name", flag: "ca-name", cliOnly: true, cmds: forConfigure,
		usage: "Base name of the CA certificate and key files (also 3rd argument)",
		field: func(c *Config) any { return &c.Configure.CAName }, check: checkBaseName},
	{name: "configure.server-name", flag: "server-name", cliOnly: true, cmds: forConfigure,
		usage: "Base name of the server (Fluentd) certificate and key files (also 4th argument)",
		field: func(c *Config) any { return &c.Configure.ServerName }, check: checkBaseName},
	{name: "configure.client-name", flag: "client-name", cliOnly: true, cmds: forConfigure,
		usage: "Base name of the client certificate and key files (also 5th argument)",
		field: func(c *Config) any { return &c.Configure.ClientName }, check: checkBaseName},
	{name: "configure.ca-cn", flag: "ca-cn", cliOnly: true, cmds: forConfigure,
		usage: "Common name of the CA certificate (empty: \"Teleport Event Bus CA\")",
		field: func(c *Config) any { return &c.Configure.CACommonName }},
	{name: "configure.server-cn", flag: "server-cn", cliOnly: true, cmds: forConfigure,
		usage: "Common name of the server certificate (empty: the first DNS name or IP)",
		field: func(c *Config) any { return &c.Configure.ServerCommonName }},
	{name: "configure.client-cn", flag: "client-cn", cliOnly: true, cmds: forConfigure,
		usage: "Common name of the client certificate (empty: \"teleport-event-handler\")",
		field: func(c *Config) any { return &c.Configure.ClientCommonName }},
	{name: "configure.ttl", flag: "ttl", cliOnly: true, cmds: forConfigure,
		usage: "Certificate lifetime",
		field: func(c *Config) any { return &c.Configure.TTL }, check: minDuration(time.Hour)},
	{name: "configure.dns-names", flag: "dns-names", cliOnly: true, cmds: forConfigure,
		usage: "DNS subjectAltNames of the server certificate",
		field: func(c *Config) any { return &c.Configure.DNSNames }},
	{name: "configure.ip", flag: "ip", cliOnly: true, cmds: forConfigure,
		usage: "IP subjectAltNames of the server certificate",
		field: func(c *Config) any { return &c.Configure.IPs }, check: checkIPs},
	{name: "configure.length", flag: "length", cliOnly: true, cmds: forConfigure,
		usage: "RSA key size in bits: 2048 or 4096",
		field: func(c *Config) any { return &c.Configure.Length }, check: checkLength},
	{name: "configure.key-type", flag: "key-type", cliOnly: true, cmds: forConfigure,
		usage: "Key algorithm: rsa or ecdsa (P-256)",
		field: func(c *Config) any { return &c.Configure.KeyType }, check: checkKeyType},
	{name: "configure.encrypt-client-key", flag: "encrypt-client-key", cliOnly: true, cmds: forConfigure,
		usage: "Also encrypt client.key with the passphrase",
		field: func(c *Config) any { return &c.Configure.EncryptClientKey }},
	{name: "configure.force", flag: "force", cliOnly: true, cmds: forConfigure,
		usage: "Overwrite existing files",
		field: func(c *Config) any { return &c.Configure.Force }},
	{name: "configure.nats-credentials", flag: "nats-credentials", cliOnly: true, cmds: forConfigure,
		usage: "Only add NATS credentials (an NKey seed per role and the embedded server's users file) to an existing <out-dir> and its TOML, closing the bus; certificates are left alone",
		field: func(c *Config) any { return &c.Configure.NATSCredentials }},
	{name: "configure.nats-names", flag: "nats-names", cliOnly: true, cmds: forConfigure,
		usage: "DNS names and IPs of the embedded NATS server's certificate nats-server.crt, the names other hosts reach it by (default localhost,127.0.0.1)",
		field: func(c *Config) any { return &c.Configure.NATSNames }},
	{name: "configure.nats-cluster", flag: "nats-cluster", cliOnly: true, cmds: forConfigure,
		usage: "Write a NATS cluster's files to <out-dir>/nats-cluster and point the TOML at it: one entry per node (3 or more), NAME, NAME=HOST or NAME=HOST:PORT (client port, default 4222; routes use PORT+2000, monitoring PORT+4000). Each node gets NAME.conf and a certificate for server and client use naming NAME and HOST; accounts.conf admits the NKeys configure writes",
		field: func(c *Config) any { return &c.Configure.NATSCluster }},
	{name: "configure.nats-conf-dir", flag: "nats-conf-dir", cliOnly: true, cmds: forConfigure,
		usage: "Directory the cluster's files will be in on every node (absolute; default: <out-dir>/nats-cluster), e.g. /etc/nats",
		field: func(c *Config) any { return &c.Configure.NATSConfDir }},
	{name: "configure.nats-store-dir", flag: "nats-store-dir", cliOnly: true, cmds: forConfigure,
		usage: "Directory under which each cluster node keeps JetStream, in <dir>/<NAME> (absolute; default /var/lib/nats)",
		field: func(c *Config) any { return &c.Configure.NATSStoreDir }},
	{name: "configure.lock", flag: "lock", cliOnly: true, cmds: forConfigure,
		usage: "Let the Teleport role create and update locks (for lock.enabled)",
		field: func(c *Config) any { return &c.Configure.Lock }},
	{name: "configure.forward", flag: "forward", cliOnly: true, cmds: forConfigure,
		usage: "Configure Fluentd's in_forward (TLS, generated shared key) instead of in_http",
		field: func(c *Config) any { return &c.Configure.Forward }},
	{name: "configure.helm", flag: "helm", cliOnly: true, cmds: forConfigure,
		usage: "Also write teleport-event-bus-values.yaml (the chart deploy/helm/teleport-event-bus), nats-values.yaml (the official NATS chart, for an external cluster) and teleport-event-bus-secrets.sh (the kubectl create secret commands for the files written)",
		field: func(c *Config) any { return &c.Configure.Helm }},
}

// configFlag is the flag naming the TOML file.
const configFlag = "config"

// configEnv are the variables naming the TOML file.
var configEnv = []string{"FDFWD_CONFIG", "FDWRD_CONFIG"}

// byTOMLName maps every TOML spelling to its key.
var byTOMLName = func() map[string]*key {
	m := map[string]*key{}
	for _, k := range keys {
		for _, n := range k.tomlNames() {
			m[n] = k
		}
	}
	return m
}()

// byName maps canonical names to keys.
var byName = func() map[string]*key {
	m := map[string]*key{}
	for _, k := range keys {
		m[k.name] = k
	}
	return m
}()
