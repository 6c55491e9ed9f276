package bus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// defaultMaxPayload is nats-server's default largest message.
const defaultMaxPayload = 1 << 20

// publishAckTimeout is how long JetStream waits for an async PubAck before
// failing it (and the Publisher retrying it).
const publishAckTimeout = 10 * time.Second

// Bus is an open connection to JetStream, with the embedded server when this
// process runs it. Close releases both.
type Bus struct {
	Conn *nats.Conn
	JS   jetstream.JetStream
	// Embedded is the in-process server, nil when connected to an external one.
	Embedded *Embedded
	// Cfg is the [nats] section with defaults applied (stream and bucket names).
	Cfg config.NATSConfig

	log zerolog.Logger

	kvMu sync.Mutex
	kv   jetstream.KeyValue
}

// OpenOption adjusts Open.
type OpenOption func(*openOptions)

type openOptions struct {
	sink config.SinkConfig
}

// WithSinkConsumers names the sink's durable consumers ([sink]
// audit-consumer and session-consumer) for the embedded server's
// permissions; without it the defaults are assumed.
func WithSinkConsumers(sc config.SinkConfig) OpenOption {
	return func(o *openOptions) { o.sink = sc }
}

// Open connects to the bus. With embed set and no [nats] url it first starts
// the embedded server, storing JetStream under storage and listening on
// cfg.Listen; otherwise it connects to cfg.URL (or, when that is empty, to
// the embedded server another process runs on cfg.Listen). With [nats]
// users set, the embedded server admits only the users of that file, each
// with its role's Permissions, and refuses unauthenticated clients. It
// does not create streams: call EnsureStreams for that.
func Open(ctx context.Context, cfg config.NATSConfig, storage string, name string, log zerolog.Logger, embed bool, opts ...OpenOption) (*Bus, error) {
	var o openOptions
	for _, opt := range opts {
		opt(&o)
	}
	cfg = WithDefaults(cfg)
	connCfg := cfg
	var emb *Embedded
	if embed && cfg.URL == "" {
		var err error
		if emb, err = startEmbedded(ctx, cfg, storage, name, o, log); err != nil {
			return nil, err
		}
		connCfg.URL = emb.ClientURL()
		log.Info().Str("url", connCfg.URL).Str("storage", emb.StoreDir()).Msg("embedded NATS server started")
	}
	var extra []nats.Option
	if emb != nil && emb.tls {
		// Its own server's TLS is for other processes: this one connects
		// in process, where the server asks for no TLS.
		connCfg.URL = "nats://" + strings.TrimPrefix(connCfg.URL, "tls://")
		connCfg.CA, connCfg.Cert, connCfg.Key = "", "", ""
		extra = append(extra, nats.InProcessServer(emb.srv))
	}
	nc, err := connect(ctx, connCfg, name, log, extra...)
	if err != nil {
		emb.Shutdown()
		return nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(publishAckTimeout))
	if err != nil {
		nc.Close()
		emb.Shutdown()
		return nil, fmt.Errorf("open JetStream: %w", err)
	}
	return &Bus{Conn: nc, JS: js, Embedded: emb, Cfg: cfg, log: log}, nil
}

// startEmbedded starts the embedded server of Open, with the users of
// cfg.Users (read here, so a missing or loose file stops the start).
func startEmbedded(ctx context.Context, cfg config.NATSConfig, storage, owner string, o openOptions, log zerolog.Logger) (*Embedded, error) {
	var users []User
	if cfg.Users != "" {
		var err error
		if users, err = LoadUsers(cfg.Users); err != nil {
			return nil, err
		}
	}
	var tlsCfg *tls.Config
	if cfg.ServerCert != "" {
		var err error
		if tlsCfg, err = ServerTLS(cfg.ServerCert, cfg.ServerKey); err != nil {
			return nil, err
		}
	}
	return StartEmbedded(ctx, EmbeddedOptions{
		TLS:        tlsCfg,
		Listen:     cfg.Listen,
		StoreDir:   storage,
		Users:      users,
		Names:      NamesFor(cfg, o.sink),
		Token:      cfg.Token,
		User:       cfg.User,
		Password:   cfg.Password,
		MaxPayload: maxPayloadFor(cfg.MaxMsgSize),
		Log:        log,
		Owner:      owner,
	})
}

// Close closes the connection and stops the embedded server, if any, waiting
// for it to finish. Flush a Publisher before closing.
func (b *Bus) Close() {
	if b == nil {
		return
	}
	if b.Conn != nil {
		b.Conn.Close()
	}
	b.Embedded.Shutdown()
}

// Connect connects to NATS as described by cfg: a comma-separated URL list
// (or nats://<cfg.Listen> when empty), a creds file, an NKey seed file, a
// user and password or a token, and TLS with a CA and a client certificate.
// The connection reconnects forever and logs each disconnect and reconnect
// (never the credentials). A failed first connection is an error naming the
// URL. ctx is checked before dialling; each server's dial is bounded by
// nats.go's connect timeout (2 s).
func Connect(ctx context.Context, cfg config.NATSConfig, name string, log zerolog.Logger) (*nats.Conn, error) {
	return connect(ctx, cfg, name, log)
}

// connect is Connect with extra options.
func connect(ctx context.Context, cfg config.NATSConfig, name string, log zerolog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	servers := serverList(cfg)
	shown := redactURLs(servers)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", shown, err)
	}
	opts, err := connectOptions(cfg, name, log)
	if err != nil {
		return nil, err
	}
	opts = append(opts, extra...)
	nc, err := nats.Connect(strings.Join(servers, ","), opts...)
	if err != nil {
		if isAuthError(err) {
			return nil, fmt.Errorf("connect to NATS at %s: NATS refused the credentials%s: %w", shown, credentialHint(cfg), err)
		}
		if errors.Is(err, nats.ErrNkeysNotSupported) {
			return nil, fmt.Errorf("connect to NATS at %s: the server takes no NKeys, so the nkey seed file %q cannot log in: give the credentials it expects ([nats] token, user or creds), or give the server the NKey users configure writes (nats-users.toml for ingest's embedded server, nats-cluster/accounts.conf for a cluster): %w", shown, cfg.NKey, err)
		}
		if hint := tlsHint(err, cfg); hint != "" {
			return nil, fmt.Errorf("connect to NATS at %s: %s: %w", shown, hint, err)
		}
		return nil, fmt.Errorf("connect to NATS at %s: %w", shown, err)
	}
	log.Debug().Str("url", nc.ConnectedUrlRedacted()).Str("name", name).Msg("connected to NATS")
	return nc, nil
}

func connectOptions(cfg config.NATSConfig, name string, log zerolog.Logger) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() {
				return // our own Close, not an outage
			}
			ev := log.Warn()
			if err != nil {
				ev = ev.Err(err)
			}
			ev.Msg("disconnected from NATS, reconnecting")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("url", nc.ConnectedUrlRedacted()).Msg("reconnected to NATS")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Error().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("NATS asynchronous error")
		}),
	}
	if cfg.Creds != "" {
		if err := config.CheckSecretFile("NATS credentials file", cfg.Creds); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	}
	if cfg.NKey != "" {
		if err := config.CheckSecretFile("NATS nkey seed file", cfg.NKey); err != nil {
			return nil, err
		}
		if err := checkSeedFile(cfg.NKey); err != nil {
			return nil, err
		}
		o, err := nats.NkeyOptionFromSeed(cfg.NKey)
		if err != nil {
			return nil, fmt.Errorf("NATS nkey seed file %q holds no user seed (%v): write it again with configure --nats-credentials <dir> --force", cfg.NKey, err)
		}
		opts = append(opts, o)
	}
	if cfg.User != "" || cfg.Password != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.CA != "" {
		opts = append(opts, nats.RootCAs(cfg.CA))
	}
	if (cfg.Cert == "") != (cfg.Key == "") {
		return nil, errors.New("NATS client TLS: set both [nats] cert and key, or neither")
	}
	if cfg.Cert != "" {
		opts = append(opts, nats.ClientCert(cfg.Cert, cfg.Key))
	}
	return opts, nil
}

// serverList splits the comma-separated URL list, or points at the local
// embedded server when there is none.
func serverList(cfg config.NATSConfig) []string {
	var out []string
	for _, u := range strings.Split(cfg.URL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	if len(out) == 0 {
		listen := cfg.Listen
		if listen == "" {
			listen = DefaultListen
		}
		out = []string{"nats://" + listen}
	}
	return out
}

// redactURLs joins the URLs for messages with any password replaced.
func redactURLs(urls []string) string {
	shown := make([]string, len(urls))
	for i, s := range urls {
		shown[i] = s
		u, err := url.Parse(s)
		if err != nil || u.User == nil {
			continue
		}
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		} else {
			u.User = url.User("xxxxx") // a lone user part may be a token
		}
		shown[i] = u.String()
	}
	return strings.Join(shown, ",")
}

// credentialHint says, for a refused connection, which credential was
// presented and what to do about it.
func credentialHint(cfg config.NATSConfig) string {
	switch {
	case cfg.NKey != "":
		return fmt.Sprintf(" of nkey seed file %q (the server does not know its public key: use the seed file configure wrote for this command's role, and give the server the users of that same configure run: nats-users.toml for ingest's embedded server, nats-cluster/accounts.conf for a cluster)", cfg.NKey)
	case cfg.Creds != "":
		return fmt.Sprintf(" of credentials file %q", cfg.Creds)
	case cfg.User != "":
		return fmt.Sprintf(" of user %q (check its password)", cfg.User)
	case cfg.Token != "":
		return " (check the token)"
	}
	return " (none were given and the server requires them: set [ingest] or [sink] nats-nkey, or [nats] nkey, creds or user)"
}

func isAuthError(err error) bool {
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired) {
		return true
	}
	return strings.Contains(strings.ToLower(err.Error()), "authorization violation")
}

// maxPayloadFor sizes the embedded server's largest message so the stream's
// maximum message size, headers included, can be published.
func maxPayloadFor(maxMsgSize int32) int32 {
	const headroom = 64 << 10
	if maxMsgSize <= 0 || int64(maxMsgSize)+headroom <= defaultMaxPayload {
		return 0
	}
	return maxMsgSize + headroom
}

// tlsHint says what to do about a server certificate the client refused,
// or "".
func tlsHint(err error, cfg config.NATSConfig) string {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknown) && cfg.CA == "":
		return "the server's TLS certificate is not signed by a CA this command trusts: set [nats] ca to the CA that signed it (configure's ca.crt)"
	case errors.As(err, &unknown):
		return fmt.Sprintf("the server's TLS certificate is not signed by [nats] ca %q: use the ca.crt of the configure run that made the server's certificate", cfg.CA)
	case errors.As(err, &host):
		return fmt.Sprintf("the server's TLS certificate is not valid for %q: connect by one of its names, or write it again with that name (configure --nats-names, or --nats-cluster NAME=HOST)", host.Host)
	case errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage:
		return "the server's TLS certificate is not valid for server use: give the server a certificate from configure (nats-server.crt, or a node certificate of --nats-cluster)"
	}
	return ""
}

// checkSeedFile recognises the credential files that are not a user's NKey
// seed, so the message says which file it got and which key wants it.
func checkSeedFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("NATS nkey seed file %q: %w", path, err)
	}
	text := strings.TrimSpace(string(data))
	switch {
	case strings.Contains(text, "BEGIN NATS USER JWT"):
		return fmt.Errorf("NATS nkey seed file %q is a creds file (JWT and seed): name it with [nats] creds instead, or give the role's seed (nats-<role>.nk from configure)", path)
	case strings.HasPrefix(text, "-----BEGIN"):
		return fmt.Errorf("NATS nkey seed file %q holds a PEM certificate or key, not an NKey seed: give the role's seed file (nats-<role>.nk from configure); certificates go in [nats] ca", path)
	case strings.HasPrefix(text, "SA") || strings.HasPrefix(text, "SO"):
		return fmt.Errorf("NATS nkey seed file %q holds an account or operator seed, not a user seed (SU…): give the role's seed file (nats-<role>.nk from configure)", path)
	case strings.HasPrefix(text, "U") && len(text) == 56:
		return fmt.Errorf("NATS nkey seed file %q holds a public key (U…), not the seed: give the seed file (nats-<role>.nk from configure); public keys go in the server's users", path)
	}
	return nil
}
