// Package config is the one configuration layer of every command: the TOML
// file, the flags and the environment variables (FDFWD_*, and the FDWRD_*
// spelling users of teleport-event-handler have in their files), merged with
// precedence flag > environment > file > default, and validated.
package config

import "time"

// Config is the whole configuration. Each command reads the parts it needs;
// the zero value is not valid, use Default or Load.
type Config struct {
	// File is the TOML file the values came from ("" when none).
	File string

	Teleport TeleportConfig
	Fluentd  FluentdConfig
	NATS     NATSConfig
	Ingest   IngestConfig
	Sink     SinkConfig
	Lock     LockConfig

	// Storage is the state directory. With the embedded NATS server it holds
	// JetStream's files, and with them every cursor.
	Storage          string
	Batch            int
	Namespace        string
	Types            []string
	SkipEventTypes   []string
	SkipSessionTypes []string
	// StartTime is fixed on first run; zero means "not set".
	StartTime       time.Time
	Timeout         time.Duration
	Cursor          string
	Debug           bool
	DryRun          bool
	ExitOnLastEvent bool
	Concurrency     int
	WindowSize      time.Duration
	// MetricsAddr is the top-level metrics-addr of earlier releases; ingest
	// reads it (resolved into Ingest.MetricsAddr), the sink does not.
	MetricsAddr string

	// Configure holds the arguments and flags of the configure command;
	// they are not TOML keys.
	Configure ConfigureOptions

	// sources records where each key's value came from, for error messages.
	sources map[string]source
	// only is the command the config was loaded for (0: all); it selects
	// what MarshalZerologObject shows.
	only cmdSet
}

// ConfigureOptions are the arguments and flags of
// `configure <out-dir> [teleport-addr [ca-name [server-name [client-name]]]]`.
// The three names are the base names of the certificate and key files, as
// in teleport-event-handler (ca.crt/ca.key, server.crt/…, client.crt/…).
type ConfigureOptions struct {
	// OutDir is where the files are written (required).
	OutDir string
	// TeleportAddr goes into the generated TOML's [teleport] addr.
	TeleportAddr string
	CAName       string
	ServerName   string
	ClientName   string
	// CACommonName, ServerCommonName and ClientCommonName are the
	// certificates' subject common names; empty leaves the choice to
	// package configure.
	CACommonName     string
	ServerCommonName string
	ClientCommonName string
	// TTL is the certificates' lifetime.
	TTL time.Duration
	// DNSNames and IPs are the server certificate's subjectAltNames.
	DNSNames []string
	IPs      []string
	// Length is the RSA key size in bits (2048 or 4096).
	Length int
	// KeyType is "rsa" or "ecdsa" (P-256).
	KeyType string
	// NATSNames are the names of the embedded NATS server's certificate;
	// NATSCluster the cluster's nodes (NAME[=HOST[:PORT]]); NATSConfDir
	// and NATSStoreDir where the nodes keep their files and stores.
	NATSNames, NATSCluster    []string
	NATSConfDir, NATSStoreDir string
	// EncryptClientKey also encrypts client.key with the passphrase.
	EncryptClientKey bool
	// Force overwrites existing files.
	Force bool
	// Lock adds lock create/update to the generated Teleport role.
	Lock bool
	// Forward writes an in_forward configuration instead of in_http.
	Forward bool
	// Helm also writes the Helm chart's values, the NATS chart's values and
	// the kubectl commands that create the Secrets.
	Helm bool
	// NATSCredentials only adds NATS credentials to an existing OutDir and
	// its TOML (configure --nats-credentials).
	NATSCredentials bool
}

// TeleportConfig is the [teleport] section.
type TeleportConfig struct {
	Addr            []string
	Identity        string
	CA              string
	Cert            string
	Key             string
	RefreshEnabled  bool
	RefreshInterval time.Duration
	// ConnectRetries is how many times a start-up connection is tried before
	// giving up; 0 retries forever with a log line per attempt.
	ConnectRetries int
}

// FluentdConfig is the [fluentd] or [forward.fluentd] section.
type FluentdConfig struct {
	URL        string
	SessionURL string
	CA         string
	Cert       string
	Key        string
	// KeyPassphrase opens an encrypted client key. Never logged.
	KeyPassphrase     string
	KeyPassphraseFile string
	ServerName        string
	InsecureHTTP      bool
	DialTimeout       time.Duration
	ResponseTimeout   time.Duration
	MaxConns          int

	// The in_forward keys (URL tls://host:24224).
	// InsecureTCP allows a plain tcp:// URL.
	InsecureTCP bool
	// Tag and SessionTag override the tags taken from the URLs' paths.
	Tag        string
	SessionTag string
	// SharedKey (or the first line of SharedKeyFile) turns on the
	// shared-key handshake. Never logged.
	SharedKey     string
	SharedKeyFile string
	// SelfHostname is sent in the handshake; the host name when empty.
	SelfHostname string
	Username     string
	// Password (or the first line of PasswordFile) goes with Username.
	// Never logged.
	Password     string
	PasswordFile string
}

// NATSConfig is the [nats] section.
type NATSConfig struct {
	// URL is a comma-separated server list; empty starts the embedded server.
	URL      string
	Creds    string
	NKey     string
	User     string
	Password string // never logged
	Token    string // never logged
	CA       string
	Cert     string
	Key      string
	// Users is the embedded server's users file (written by configure): the
	// public NKeys it admits and their roles. Empty leaves it open.
	Users string
	// ServerCert and ServerKey are the certificate and unencrypted key of
	// the embedded server's TLS listener.
	ServerCert string
	ServerKey  string
	// Listen is the embedded server's client address (default 127.0.0.1:4222).
	Listen          string
	AuditStream     string
	SessionStream   string
	StateBucket     string
	Replicas        int
	MaxAge          time.Duration
	MaxBytes        int64
	MaxMsgSize      int32
	DuplicateWindow time.Duration
}

// IngestConfig is the [ingest] section.
type IngestConfig struct {
	// NATSNKey is the NKey seed file ingest authenticates with (the ingest
	// role); when set it replaces the [nats] client credentials.
	NATSNKey            string
	MaxInFlight         int
	SessionConcurrency  int
	LeaseTTL            time.Duration
	MissingRecordingTTL time.Duration
	ProgressInterval    time.Duration
	// ExitDrainTimeout bounds how long exit-on-last-event waits, with the
	// embedded server, for the durable consumers to deliver everything.
	ExitDrainTimeout time.Duration
	// MetricsAddr is where ingest serves /metrics, /healthz and /readyz:
	// host:port, or host:first-last for the first free port ("" = off).
	MetricsAddr string
	// PprofAddr is where ingest serves Go's profiles (/debug/pprof/):
	// host:port, 127.0.0.1 when the host is empty ("" = off).
	PprofAddr string
	// PageSize is the limit of each SearchUnstructuredEvents call (the
	// search path); 0 means MaxPageSize.
	PageSize int
	// MemoryBudget is the memory ingest keeps to, the embedded server
	// included: auto (the zero value), off or a size.
	MemoryBudget MemoryBudget
}

// SinkConfig is the [sink] section.
type SinkConfig struct {
	// NATSNKey is the NKey seed file the sink authenticates with (the
	// fluentd-sink role); when set it replaces the [nats] client credentials.
	NATSNKey        string
	AuditConsumer   string
	SessionConsumer string
	// RecreateConsumer is "", "resume" or "all": what to do about a
	// durable consumer that was deleted after a sink created it.
	RecreateConsumer string
	FilterSubjects   []string
	AckWait          time.Duration
	MaxAckPending    int
	MaxDeliver       int
	BatchSize        int
	BatchBytes       int
	BatchWait        time.Duration
	InFlight         int
	ShutdownTimeout  time.Duration
	Gzip             bool
	// MetricsAddr is where the sink serves /metrics, /healthz and /readyz:
	// host:port, or host:first-last for the first free port ("" = off).
	MetricsAddr string
}

// Given reports whether the key named name (its canonical TOML name) was
// set by the file, the environment or a flag rather than left at its
// default.
func (c *Config) Given(name string) bool {
	src, ok := c.sources[name]
	return ok && src.kind != srcDefault
}

// LockConfig carries the lock-* keys of teleport-event-handler.
type LockConfig struct {
	Enabled             bool
	FailedAttemptsCount int
	Period              time.Duration
	For                 time.Duration
	ResetOnSuccess      bool
}
