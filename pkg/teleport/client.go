// Package teleport is the source end of the pipeline: the gRPC/mTLS
// connection to a Teleport auth or proxy server and the few audit-log calls
// ingest makes through it. It owns credentials (identity file or cert/key/CA,
// optionally reloaded when the file changes), retry with backoff on
// transient errors, and telling an expired identity or a wrong CA apart from
// a network problem.
package teleport

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gravitational/teleport/api/client"
	"github.com/gravitational/teleport/api/client/proto"
	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"
	"github.com/gravitational/teleport/api/internalutils/stream"
	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/teleport/api/types/events"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/backoff"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// Namespace is the audit-log namespace every Teleport query uses.
const Namespace = "default"

// dialTimeout bounds one connection attempt; the attempt is retried.
const dialTimeout = 15 * time.Second

// AuditLog is what ingest needs from Teleport. *Client implements it over
// the real API client; tests run ingest against the Teleport test double
// through the same *Client. Streams end with io.EOF; session channels follow
// the api client's convention: the event channel is closed at the end, or
// one error arrives on the error channel.
type AuditLog interface {
	// Ping checks the connection and returns the server's version.
	Ping(ctx context.Context) (proto.PingResponse, error)
	// SearchUnstructuredEvents returns one page of events in [from, to)
	// and the key of the next page ("" when there is none).
	SearchUnstructuredEvents(ctx context.Context, from, to time.Time, namespace string, eventTypes []string, limit int, order types.EventOrder, startKey string) ([]*auditlogpb.EventUnstructured, string, error)
	// GetEventExportChunks lists the export chunks of one UTC date.
	GetEventExportChunks(ctx context.Context, req *auditlogpb.GetEventExportChunksRequest) stream.Stream[*auditlogpb.EventExportChunk]
	// ExportUnstructuredEvents streams one chunk's events, each with a
	// resume cursor.
	ExportUnstructuredEvents(ctx context.Context, req *auditlogpb.ExportUnstructuredEventsRequest) stream.Stream[ExportedEvent]
	// StreamUnstructuredSessionEvents streams a session recording from
	// startIndex.
	StreamUnstructuredSessionEvents(ctx context.Context, sessionID string, startIndex int64) (chan *auditlogpb.EventUnstructured, chan error)
	// StreamSessionEvents streams a session recording through the older
	// structured call and converts each event to the unstructured form.
	StreamSessionEvents(ctx context.Context, sessionID string, startIndex int64) (chan *auditlogpb.EventUnstructured, chan error)
	// UpsertLock creates or updates a lock.
	UpsertLock(ctx context.Context, lock types.Lock) error
}

// Client is a connection to Teleport that survives identity renewals: with
// refresh enabled, a changed identity file is loaded into a new connection
// and later calls use it. Safe for concurrent use. Close it when done.
type Client struct {
	cfg config.TeleportConfig
	log zerolog.Logger

	cur atomic.Pointer[client.Client]

	mu   sync.Mutex       // guards prev
	prev []*client.Client // replaced connections, closed later so calls in flight finish

	stop context.CancelFunc
	wg   sync.WaitGroup
}

var _ AuditLog = (*Client)(nil)

// Connect checks the credentials, dials Teleport and pings it. Transient
// failures are retried with exponential backoff and jitter, each retry
// logged; cfg.ConnectRetries bounds the attempts (0 = forever). An expired
// identity, a server certificate from another CA and a rejected client
// certificate fail at once with an error saying so (ErrIdentityExpired,
// ErrUnknownAuthority, ErrAccessDenied).
func Connect(ctx context.Context, cfg config.TeleportConfig, log zerolog.Logger) (*Client, error) {
	if len(cfg.Addr) == 0 {
		return nil, errors.New("teleport: no address configured (teleport.addr)")
	}
	// The file's state is taken before it is read, so a renewal that lands
	// while we connect is still seen as a change by watchIdentity.
	seen, _ := os.Stat(cfg.Identity)
	creds, what, err := credentials(cfg)
	if err != nil {
		return nil, err
	}
	if err := checkCredentials(cfg, creds, what, time.Now()); err != nil {
		return nil, err
	}
	api, err := dialRetry(ctx, cfg, creds, what, log)
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, log: log}
	c.cur.Store(api)
	rctx, cancel := context.WithCancel(context.Background())
	c.stop = cancel
	if cfg.RefreshEnabled && cfg.Identity != "" {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.watchIdentity(rctx, seen)
		}()
	}
	return c, nil
}

// credentials builds the api credentials from the config and names them
// for error messages. Each file must be a regular file this process can
// read (checkFiles).
func credentials(cfg config.TeleportConfig) (client.Credentials, string, error) {
	if err := checkFiles(cfg); err != nil {
		return nil, "", err
	}
	switch {
	case cfg.Identity != "":
		return client.LoadIdentityFile(cfg.Identity), fmt.Sprintf("identity file %q", cfg.Identity), nil
	case cfg.Cert != "" && cfg.Key != "" && cfg.CA != "":
		return client.LoadKeyPair(cfg.Cert, cfg.Key, cfg.CA), fmt.Sprintf("certificate %q", cfg.Cert), nil
	case cfg.Cert != "" || cfg.Key != "" || cfg.CA != "":
		return nil, "", errors.New("teleport: teleport.cert, teleport.key and teleport.ca must all be set")
	default:
		return nil, "", errors.New("teleport: no credentials configured (teleport.identity, or teleport.cert/key/ca)")
	}
}

// checkCredentials reads the credentials and rejects an expired
// certificate before any network traffic, because the server's answer to
// one ("context deadline exceeded" after a TLS alert) does not say so.
func checkCredentials(cfg config.TeleportConfig, creds client.Credentials, what string, now time.Time) error {
	if _, err := creds.TLSConfig(); err != nil {
		if cfg.Identity != "" {
			return notIdentity(cfg.Identity, err)
		}
		return fmt.Errorf("%w: read %s: %v", ErrBadCredentials, what, err)
	}
	if exp, ok := creds.Expiry(); ok && !exp.IsZero() && now.After(exp) {
		return fmt.Errorf("%w: %s expired at %s (%s ago); issue a new one (tctl auth sign)",
			ErrIdentityExpired, what, exp.UTC().Format(time.RFC3339), now.Sub(exp).Round(time.Second))
	}
	return nil
}

// dialRetry dials until success, a permanent error, or the retry budget
// runs out.
func dialRetry(ctx context.Context, cfg config.TeleportConfig, creds client.Credentials, what string, log zerolog.Logger) (*client.Client, error) {
	b := backoff.Backoff{Policy: backoff.Reconnect}
	for attempt := 1; ; attempt++ {
		api, err := dial(ctx, cfg, creds, what)
		if err == nil {
			if attempt > 1 {
				log.Info().Strs("addr", cfg.Addr).Int("attempt", attempt).Msg("connected to teleport")
			}
			return api, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect to teleport %v: %w", cfg.Addr, ctx.Err())
		}
		if !IsTransient(err) {
			return nil, fmt.Errorf("connect to teleport %v: %w", cfg.Addr, err)
		}
		if cfg.ConnectRetries > 0 && attempt >= cfg.ConnectRetries {
			return nil, fmt.Errorf("connect to teleport %v: giving up after %d attempts: %w", cfg.Addr, attempt, err)
		}
		delay := b.Next()
		log.Warn().Err(err).Strs("addr", cfg.Addr).Int("attempt", attempt).Dur("retry_in", delay).Msg("teleport unreachable, retrying")
		if werr := backoff.Sleep(ctx, delay); werr != nil {
			return nil, fmt.Errorf("connect to teleport %v: %w (last error: %v)", cfg.Addr, werr, err)
		}
	}
}

// dial makes one connection attempt and pings the server. When it fails,
// a direct TLS handshake tells whether the certificates are the reason.
func dial(ctx context.Context, cfg config.TeleportConfig, creds client.Credentials, what string) (*client.Client, error) {
	// gRPC keeps retrying a refused connection until its deadline; a plain
	// TCP dial tells at once that nothing listens.
	if err := reachable(ctx, cfg.Addr); err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	api, err := client.New(dctx, client.Config{
		Addrs:       cfg.Addr,
		Credentials: []client.Credentials{creds},
		DialTimeout: dialTimeout,
	})
	if err == nil {
		if _, err = api.Ping(dctx); err != nil {
			_ = api.Close()
		}
	}
	if err == nil {
		return api, nil
	}
	err = classify(err)
	if IsTransient(err) && ctx.Err() == nil {
		if perr := probeHandshake(ctx, cfg.Addr, creds); perr != nil {
			return nil, fmt.Errorf("%s: %w", what, perr)
		}
	}
	return nil, err
}

// watchIdentity reloads the identity file when it changes, so a file
// renewed by tbot is picked up without a restart. last is the file as it
// was before the current credentials were read from it.
func (c *Client) watchIdentity(ctx context.Context, last os.FileInfo) {
	every := c.cfg.RefreshInterval
	if every <= 0 {
		every = time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fi, err := os.Stat(c.cfg.Identity)
		if err != nil {
			c.log.Warn().Err(err).Str("identity", c.cfg.Identity).Msg("identity refresh: cannot read the identity file, keeping the current connection")
			continue
		}
		if last != nil && fi.ModTime().Equal(last.ModTime()) && fi.Size() == last.Size() {
			continue
		}
		if err := c.Reload(ctx); err != nil {
			c.log.Warn().Err(err).Str("identity", c.cfg.Identity).Msg("identity refresh failed, keeping the current connection")
			continue
		}
		last = fi
	}
}

// Reload reads the credentials again and swaps in a new connection. Calls
// in flight on the old connection finish; it is closed at the next Reload
// or at Close.
func (c *Client) Reload(ctx context.Context) error {
	creds, what, err := credentials(c.cfg)
	if err != nil {
		return err
	}
	if err := checkCredentials(c.cfg, creds, what, time.Now()); err != nil {
		return err
	}
	api, err := dial(ctx, c.cfg, creds, what)
	if err != nil {
		return fmt.Errorf("reconnect to teleport %v: %w", c.cfg.Addr, err)
	}
	old := c.cur.Swap(api)
	c.mu.Lock()
	stale := c.prev
	c.prev = []*client.Client{old}
	c.mu.Unlock()
	for _, s := range stale {
		_ = s.Close()
	}
	c.log.Info().Str("identity", c.cfg.Identity).Msg("teleport identity reloaded")
	return nil
}

// CheckIdentity reads the configured credentials again and returns an
// error wrapping ErrIdentityExpired when they have expired (nil when they
// are valid or unreadable for another reason the next connection attempt
// reports). Long-running readers call it when calls keep failing, because
// the server's answer to an expired certificate does not say so.
func (c *Client) CheckIdentity() error {
	creds, what, err := credentials(c.cfg)
	if err != nil {
		return nil
	}
	if err := checkCredentials(c.cfg, creds, what, time.Now()); errors.Is(err, ErrIdentityExpired) {
		return err
	}
	return nil
}

// Close stops the identity watcher and closes every connection.
func (c *Client) Close() error {
	c.stop()
	c.wg.Wait()
	c.mu.Lock()
	stale := c.prev
	c.prev = nil
	c.mu.Unlock()
	for _, s := range stale {
		_ = s.Close()
	}
	return c.cur.Load().Close()
}

// API returns the current underlying api client, for calls AuditLog does
// not cover. Do not keep it across identity reloads.
func (c *Client) API() *client.Client { return c.cur.Load() }

// Ping implements AuditLog.
func (c *Client) Ping(ctx context.Context) (proto.PingResponse, error) {
	return c.cur.Load().Ping(ctx)
}

// SearchUnstructuredEvents implements AuditLog.
func (c *Client) SearchUnstructuredEvents(ctx context.Context, from, to time.Time, namespace string, eventTypes []string, limit int, order types.EventOrder, startKey string) ([]*auditlogpb.EventUnstructured, string, error) {
	return c.cur.Load().SearchUnstructuredEvents(ctx, from, to, namespace, eventTypes, limit, order, startKey)
}

// GetEventExportChunks implements AuditLog.
func (c *Client) GetEventExportChunks(ctx context.Context, req *auditlogpb.GetEventExportChunksRequest) stream.Stream[*auditlogpb.EventExportChunk] {
	return c.cur.Load().GetEventExportChunks(ctx, req)
}

// ExportUnstructuredEvents implements AuditLog. It makes the api client's
// call on the same connection (its interceptors turn gRPC errors into
// trace errors as usual), with a codec that decodes each item straight
// into an Event (see wire.go).
func (c *Client) ExportUnstructuredEvents(ctx context.Context, req *auditlogpb.ExportUnstructuredEventsRequest) stream.Stream[ExportedEvent] {
	ctx, cancel := context.WithCancel(ctx) // Done cancels a stream left early
	s, err := auditlogpb.NewAuditLogServiceClient(c.cur.Load().GetConnection()).
		ExportUnstructuredEvents(ctx, req, grpc.ForceCodecV2(exportCodec{}))
	if err != nil {
		cancel()
		return stream.Fail[ExportedEvent](err)
	}
	return stream.Func(func() (ExportedEvent, error) {
		var f exportFrame
		if err := s.RecvMsg(&f); err != nil {
			return ExportedEvent{}, err // io.EOF at the end
		}
		return f.item, nil
	}, cancel)
}

// StreamUnstructuredSessionEvents implements AuditLog.
func (c *Client) StreamUnstructuredSessionEvents(ctx context.Context, sessionID string, startIndex int64) (chan *auditlogpb.EventUnstructured, chan error) {
	return c.cur.Load().StreamUnstructuredSessionEvents(ctx, sessionID, startIndex)
}

// StreamSessionEvents implements AuditLog over the structured call older
// servers have, converting each event with events.ToUnstructured so the
// JSON matches what StreamUnstructuredSessionEvents returns.
func (c *Client) StreamSessionEvents(ctx context.Context, sessionID string, startIndex int64) (chan *auditlogpb.EventUnstructured, chan error) {
	ctx, cancel := context.WithCancel(ctx)
	in, inErr := c.cur.Load().StreamSessionEvents(ctx, sessionID, startIndex)
	out := make(chan *auditlogpb.EventUnstructured)
	errc := make(chan error, 1)
	go func() {
		defer cancel()
		for {
			select {
			case err := <-inErr:
				errc <- err
				return
			case ev, ok := <-in:
				if !ok {
					close(out)
					return
				}
				u, err := events.ToUnstructured(ev)
				if err != nil {
					errc <- fmt.Errorf("convert session %s event %d: %w", sessionID, ev.GetIndex(), err)
					return
				}
				select {
				case out <- u:
				case <-ctx.Done():
					errc <- ctx.Err()
					return
				}
			}
		}
	}()
	return out, errc
}

// UpsertLock implements AuditLog.
func (c *Client) UpsertLock(ctx context.Context, lock types.Lock) error {
	return c.cur.Load().UpsertLock(ctx, lock)
}
