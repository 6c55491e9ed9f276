// Package teleportsim is a Teleport auth server double for tests: a real
// gRPC server over mTLS on 127.0.0.1 that serves the audit-log parts of
// Teleport's API with the generated service interfaces and types of
// github.com/gravitational/teleport/api, so the real client.Client talks to
// it. It sits at the very start of the pipeline, where ingest reads.
//
// It holds a deterministic, seeded audit log (backfill and live events,
// sessions with recordings, export chunks and late "straggler" chunks),
// behaves like Teleport v17 or, in Older mode, like v13–v16, injects faults
// on demand, and answers questions about what it holds so tests can compare
// what arrived with what exists. Searches are answered from an index, or
// (SearchFileLog, the default in Older mode; filelog.go) at the cost of
// Teleport's file audit log, which parses every event of the days searched
// on every call.
package teleportsim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/gravitational/teleport/api/client/proto"
	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"
	"github.com/gravitational/teleport/api/types"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
)

// Server is a running simulated Teleport auth server.
type Server struct {
	opts   Options
	st     *store
	creds  *clusterCreds
	faults *injector
	locks  lockStore

	mu     sync.Mutex // guards the fields below
	addr   string
	grpc   *grpc.Server
	served chan struct{} // closed when the current grpc.Server stops serving
	closed bool

	cancel context.CancelFunc
	group  *errgroup.Group
}

// Start generates the backfill, listens on opts.Addr and serves until Close
// or until ctx is done.
func Start(ctx context.Context, opts Options) (*Server, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	creds, err := newCredentials(opts.CA, opts.ClusterName)
	if err != nil {
		return nil, fmt.Errorf("simulated teleport credentials: %w", err)
	}
	s := &Server{
		opts:   opts,
		st:     generate(opts),
		creds:  creds,
		faults: newInjector(uint64(opts.Seed), opts.Faults),
	}
	lis, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("simulated teleport: listen on %s: %w", opts.Addr, err)
	}
	if opts.Search == SearchFileLog {
		if s.st.files, err = buildFileLog(ctx, s.st); err != nil {
			_ = lis.Close()
			return nil, fmt.Errorf("simulated teleport: %w", err)
		}
	}
	if opts.Prerender {
		if err := s.st.prerender(ctx); err != nil {
			_ = lis.Close()
			return nil, fmt.Errorf("simulated teleport: %w", err)
		}
	}
	s.addr = lis.Addr().String()
	runCtx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	s.group, runCtx = errgroup.WithContext(runCtx)
	s.serve(lis)
	s.group.Go(func() error {
		<-runCtx.Done()
		s.stop()
		return nil
	})
	if opts.LiveRate > 0 {
		s.group.Go(func() error { return s.live(runCtx) })
	}
	return s, nil
}

// serve starts a gRPC server on lis; the caller holds mu or owns s.
func (s *Server) serve(lis net.Listener) {
	g := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(s.creds.tlsConfig())),
		grpc.ForceServerCodecV2(newWireCodec()),
		grpc.ChainUnaryInterceptor(s.faults.unary),
		grpc.ChainStreamInterceptor(s.faults.stream),
	)
	proto.RegisterAuthServiceServer(g, &authService{s: s})
	auditlogpb.RegisterAuditLogServiceServer(g, &auditLogService{s: s})
	served := make(chan struct{})
	s.grpc, s.served = g, served
	go func() {
		defer close(served)
		_ = g.Serve(lis) // returns when stopped; the listener is closed by then
	}()
}

// stop stops serving, closing every connection, and waits for it.
func (s *Server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.grpc != nil {
		s.grpc.Stop()
		<-s.served
		s.grpc = nil
	}
}

// live appends LiveRate events per second until ctx is done.
func (s *Server) live(ctx context.Context) error {
	const tick = 100 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	start := s.opts.Now()
	emitted := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		now := s.opts.Now()
		due := int(s.opts.LiveRate*now.Sub(start).Seconds()) - emitted
		s.st.appendLive(now, due, s.opts.LiveChunkAge, s.opts.MissingRecordingRate)
		emitted += max(due, 0)
	}
}

// Addr is the host:port the server listens on.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Close stops the server and its live generator, closing every connection.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	return s.group.Wait()
}

// Restart stops the server, closing every connection as a crash would, and
// serves the same data on the same address again.
func (s *Server) Restart(ctx context.Context) error {
	s.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("restart simulated teleport: server is closed")
	}
	for {
		lis, err := net.Listen("tcp", s.addr)
		if err == nil {
			s.serve(lis)
			return nil
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("restart simulated teleport on %s: %w", s.addr, err)
		case <-t.C:
		}
	}
}

// SetFaults replaces the faults in force; calls already running keep theirs.
func (s *Server) SetFaults(f Faults) error {
	if err := f.validate(); err != nil {
		return fmt.Errorf("set faults: %w", err)
	}
	s.faults.set(f)
	return nil
}

// Faults returns the faults in force.
func (s *Server) Faults() Faults { return s.faults.get() }

// InjectedErrors counts the errors faults produced, by gRPC code name.
func (s *Server) InjectedErrors() map[string]int {
	out := make(map[string]int)
	for c, n := range s.faults.injected() {
		out[c.String()] = n
	}
	return out
}

// CA is the cluster CA that signs the server and client certificates.
func (s *Server) CA() *certs.CA { return s.creds.ca }

// ClusterName is the name Ping reports and events carry.
func (s *Server) ClusterName() string { return s.opts.ClusterName }

// WriteIdentity writes a client identity for user, valid for ttl, into
// dir: the identity file (client.LoadIdentityFile) whose path it returns,
// and tls.crt, tls.key and ca.crt (client.LoadKeyPair). A negative ttl
// writes an identity that expired -ttl ago.
func (s *Server) WriteIdentity(dir, user string, ttl time.Duration) (string, error) {
	id, err := s.creds.identity(s.opts.ClusterName, user, ttl, time.Now())
	if err != nil {
		return "", err
	}
	return writeIdentity(id, dir)
}

// AddStraggler adds a new export chunk of n events to a past UTC date, as
// Teleport does when late events land, and returns the chunk's id. The
// events are visible to searches too.
func (s *Server) AddStraggler(date time.Time, n int) (string, error) {
	return s.st.addStraggler(date, n, s.opts.Now())
}

// recordingAvailable finds a session whose recording can be streamed now.
func (s *Server) recordingAvailable(sid string) (int32, error) {
	n, ss, ok := s.st.sessionByID(sid)
	if !ok || ss.missing {
		return 0, status.Errorf(codes.NotFound, "session %q not found", sid)
	}
	if s.opts.Now().Before(time.UnixMilli(ss.upload).Add(s.opts.UploadLag)) {
		return 0, status.Errorf(codes.NotFound, "session %q not found", sid)
	}
	return n, nil
}

// AllEventIDs returns the ids (EventUnstructured.Id, the uid) of every audit
// event the server holds, in time order, including live events whose chunk
// is not sealed yet.
func (s *Server) AllEventIDs() []string {
	s.st.mu.RLock()
	order := slices.Clone(s.st.order)
	s.st.mu.RUnlock()
	out := make([]string, len(order))
	for i, id := range order {
		out[i] = s.st.eventUID(id)
	}
	return out
}

// CountsByType counts the audit events by event type.
func (s *Server) CountsByType() map[string]int {
	s.st.mu.RLock()
	defer s.st.mu.RUnlock()
	out := make(map[string]int)
	for k, n := range s.st.counts {
		if n > 0 {
			out[kindTypes[k]] += n
		}
	}
	return out
}

// SessionInfo describes one recorded session.
type SessionInfo struct {
	ID string `json:"id"`
	// Events is the number of events in the recording (indices 0..Events-1).
	Events int `json:"events"`
	// Types counts the recording's events by type (print, resize, …), so a
	// test can tell how many survive skip-session-types.
	Types map[string]int `json:"types"`
	// Missing is true when the recording never exists.
	Missing bool `json:"missing"`
	// Upload is the time of the session.upload event.
	Upload time.Time `json:"upload"`
	// AvailableAt is when the recording becomes readable (Upload+UploadLag).
	AvailableAt time.Time `json:"available_at"`
}

// Sessions describes every session, in the order they were created.
func (s *Server) Sessions() []SessionInfo {
	s.st.mu.RLock()
	sessions := slices.Clone(s.st.sessions)
	s.st.mu.RUnlock()
	out := make([]SessionInfo, len(sessions))
	for n, ss := range sessions {
		up := time.UnixMilli(ss.upload).UTC()
		out[n] = SessionInfo{
			ID:          s.st.sessionID(int32(n)),
			Events:      ss.length(),
			Types:       ss.types(),
			Missing:     ss.missing,
			Upload:      up,
			AvailableAt: up.Add(s.opts.UploadLag),
		}
	}
	return out
}

// ExportChunks lists the chunks GetEventExportChunks returns for a UTC
// date, with their number of events.
func (s *Server) ExportChunks(date time.Time) map[string]int {
	out := make(map[string]int)
	for _, c := range s.st.chunks(date) {
		hits, _ := s.st.chunkEvents(date, c)
		out[c] = len(hits)
	}
	return out
}

// Locks returns the locks clients upserted, by name order.
func (s *Server) Locks() []types.Lock {
	locks := s.locks.get(false, nil, s.opts.Now())
	out := make([]types.Lock, len(locks))
	for i, l := range locks {
		out[i] = l
	}
	return out
}
