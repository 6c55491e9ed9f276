package bus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// DefaultListen is the embedded server's client address when none is set.
const DefaultListen = "127.0.0.1:4222"

// embeddedServerName is fixed so JetStream sees the same node across restarts.
const embeddedServerName = "teleport-event-bus"

// embeddedReadyTimeout bounds the wait for the embedded server's listener.
const embeddedReadyTimeout = 10 * time.Second

// EmbeddedOptions configure the single-node NATS server that ingest runs when
// no [nats] url is set.
type EmbeddedOptions struct {
	// Listen is the client address, host:port. Empty means DefaultListen;
	// port 0 picks a free port (tests).
	Listen string
	// StoreDir is the state directory (the `storage` key). JetStream keeps its
	// files in <StoreDir>/jetstream.
	StoreDir string
	// Users, when set, are the only clients admitted, each with its role's
	// Permissions computed from Names; unauthenticated connections are
	// refused. They exclude Token, User and Password.
	Users []User
	Names AuthNames
	// Token, or User and Password, make clients authenticate. Never logged.
	Token    string
	User     string
	Password string
	// TLS, when set, makes the client listener serve TLS only (ServerTLS).
	// The process that runs the server connects in process, without it.
	TLS *tls.Config
	// MaxPayload raises the largest message the server accepts (default 1 MB).
	MaxPayload int32
	// MaxMemory and MaxStore cap JetStream's memory and disk use; 0 lets the
	// server choose.
	MaxMemory int64
	MaxStore  int64
	// HTTPPort serves nats-server's monitoring endpoints on the listen host
	// when > 0; 0 (the default) serves none.
	HTTPPort int
	// Log receives the server's log lines at debug level (warnings and
	// errors at their own level).
	Log zerolog.Logger
	// Owner is how this process appears in the store's lock file, for the
	// message another process gets ("ingest", "ingest-status"); empty is
	// the program's name.
	Owner string
}

// Embedded is a running in-process nats-server with JetStream.
type Embedded struct {
	srv  *server.Server
	tls  bool // the client listener serves TLS
	dir  string
	lock *StoreLock
	log  *serverLog
}

// StartEmbedded locks opts.StoreDir (LockStore), then starts a nats-server
// with JetStream stored under it and waits until it accepts clients. A
// directory another process holds is a *StoreLockedError, returned before
// anything else in the directory is read or written. A port already in use
// or a storage directory that cannot be written is a clear error. The
// server runs, and the directory stays locked, until Shutdown.
func StartEmbedded(ctx context.Context, opts EmbeddedOptions) (*Embedded, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start embedded NATS server: %w", err)
	}
	listen := opts.Listen
	if listen == "" {
		listen = DefaultListen
	}
	host, port, err := splitListen(listen)
	if err != nil {
		return nil, err
	}
	if opts.StoreDir == "" {
		return nil, errors.New("start embedded NATS server: no storage directory set")
	}
	if opts.Token != "" && (opts.User != "" || opts.Password != "") {
		return nil, errors.New("start embedded NATS server: set either a token or a user and password, not both")
	}
	if len(opts.Users) > 0 && (opts.Token != "" || opts.User != "") {
		return nil, errors.New("start embedded NATS server: [nats] users excludes [nats] token and user: the server takes one way to authenticate")
	}
	if (opts.User == "") != (opts.Password == "") {
		return nil, errors.New("start embedded NATS server: a user needs a password and a password needs a user")
	}
	dir, err := filepath.Abs(opts.StoreDir)
	if err != nil {
		return nil, fmt.Errorf("start embedded NATS server: storage %q: %w", opts.StoreDir, err)
	}
	lock, err := LockStore(dir, opts.Owner)
	if err != nil {
		return nil, fmt.Errorf("start embedded NATS server: %w", err)
	}
	emb, err := startLocked(listen, host, port, dir, opts)
	if err != nil {
		lock.Unlock()
		return nil, err
	}
	emb.lock = lock
	return emb, nil
}

// startLocked is StartEmbedded once the directory is locked.
func startLocked(listen, host string, port int, dir string, opts EmbeddedOptions) (*Embedded, error) {
	if err := checkWritable(dir); err != nil {
		return nil, err
	}

	sopts := &server.Options{
		ServerName:         embeddedServerName,
		Host:               host,
		Port:               port,
		NoSigs:             true,
		JetStream:          true,
		StoreDir:           dir,
		JetStreamMaxMemory: opts.MaxMemory,
		JetStreamMaxStore:  opts.MaxStore,
		Authorization:      opts.Token,
		Username:           opts.User,
		Password:           opts.Password,
		MaxPayload:         opts.MaxPayload,
	}
	if len(opts.Users) > 0 {
		sopts.Nkeys = nkeyUsers(opts.Users, opts.Names)
	}
	if opts.TLS != nil {
		sopts.TLSConfig = opts.TLS
		sopts.TLS = true
		sopts.TLSTimeout = serverTLSTimeout
	}
	if opts.HTTPPort > 0 {
		sopts.HTTPHost = host
		sopts.HTTPPort = opts.HTTPPort
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("start embedded NATS server on %s: %w", listen, err)
	}
	logger := &serverLog{log: opts.Log.With().Str("component", "nats-server").Logger()}
	debug := opts.Log.GetLevel() <= zerolog.DebugLevel
	srv.SetLoggerV2(logger, debug, false, false)

	// Start returns early, after logging a fatal line, when the listener or
	// JetStream cannot start; the captured line becomes the error.
	srv.Start()
	if ferr := logger.fatal(); ferr != "" {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, startError(listen, dir, ferr)
	}
	if !srv.ReadyForConnections(embeddedReadyTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		if ferr := logger.fatal(); ferr != "" {
			return nil, startError(listen, dir, ferr)
		}
		return nil, fmt.Errorf("start embedded NATS server on %s: not ready after %s", listen, embeddedReadyTimeout)
	}
	return &Embedded{srv: srv, tls: opts.TLS != nil, dir: dir, log: logger}, nil
}

// ClientURL is the URL clients connect to, with the real port when the
// server was started on port 0.
func (e *Embedded) ClientURL() string {
	return e.srv.ClientURL()
}

// StoreError is the first error the server logged about writing its store
// ("" while there was none): a disk that is full or failing. nats-server
// stops storing into a stream after such an error (and may disable
// JetStream) until it restarts, even once the disk has room again.
func (e *Embedded) StoreError() string {
	return e.log.storeError()
}

// StoreDir is the absolute state directory.
func (e *Embedded) StoreDir() string {
	return e.dir
}

// Server is the underlying nats-server, for status output and tests.
func (e *Embedded) Server() *server.Server {
	return e.srv
}

// Shutdown stops the server, waits until it has stopped and flushed its
// stores, then releases the storage directory. It is safe to call more than
// once.
func (e *Embedded) Shutdown() {
	if e == nil || e.srv == nil {
		return
	}
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	e.lock.Unlock()
}

// splitListen parses host:port; port 0 asks for a random port.
func splitListen(listen string) (string, int, error) {
	host, p, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, fmt.Errorf("embedded NATS listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("embedded NATS listen address %q: bad port %q", listen, p)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// checkWritable creates dir if needed and proves a file can be written in it,
// so an unusable storage directory is reported by name before nats-server
// reports it less clearly.
func checkWritable(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("storage directory %q is not writable: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return fmt.Errorf("storage directory %q is not writable: %w", dir, err)
	}
	name := f.Name()
	if err := f.Close(); err != nil {
		_ = os.Remove(name)
		return fmt.Errorf("storage directory %q is not writable: %w", dir, err)
	}
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("storage directory %q: remove test file: %w", dir, err)
	}
	return nil
}

// startError turns nats-server's fatal log line into an error that names
// the address or directory at fault.
func startError(listen, dir, fatal string) error {
	if isListenFailure(fatal) {
		return fmt.Errorf("start embedded NATS server: cannot listen on %s (is another process using it? [nats] listen sets the address): %s", listen, fatal)
	}
	return fmt.Errorf("start embedded NATS server (storage %q): %s", dir, fatal)
}

func isListenFailure(fatal string) bool {
	return strings.HasPrefix(fatal, "Error listening on port")
}

// serverLog routes nats-server's logger to zerolog and remembers the first
// fatal line instead of exiting the process. Tracing, which would show
// protocol lines including CONNECT credentials, is never enabled.
type serverLog struct {
	log zerolog.Logger

	mu        sync.Mutex
	fatalLine string
	storeLine string // the first store write error
}

// storeFailures are parts of nats-server's log lines about a store that
// cannot be written (lower case).
var storeFailures = []string{"critical write error", "jetstream out of", "permission denied while writing", "no space left on device"}

func (l *serverLog) storeError() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.storeLine
}

// noteStoreError remembers msg when it reports a store write failure.
func (l *serverLog) noteStoreError(msg string) {
	low := strings.ToLower(msg)
	for _, p := range storeFailures {
		if strings.Contains(low, p) {
			l.mu.Lock()
			if l.storeLine == "" {
				l.storeLine = msg
			}
			l.mu.Unlock()
			return
		}
	}
}

func (l *serverLog) fatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatalLine
}

// The server.Logger methods.

func (l *serverLog) Noticef(format string, v ...any) { l.log.Debug().Msgf(format, v...) }
func (l *serverLog) Debugf(format string, v ...any)  { l.log.Debug().Msgf(format, v...) }
func (l *serverLog) Tracef(format string, v ...any)  {}
func (l *serverLog) Warnf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.noteStoreError(msg)
	l.log.Warn().Msg(msg)
}

func (l *serverLog) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.noteStoreError(msg)
	l.log.Error().Msg(msg)
}

func (l *serverLog) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.mu.Lock()
	if l.fatalLine == "" {
		l.fatalLine = msg
	}
	l.mu.Unlock()
	l.log.Error().Msg(msg)
}
