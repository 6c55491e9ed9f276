package fluentdsim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// DefaultAddr is where a server listens when Options.Addr is empty.
const DefaultAddr = "127.0.0.1:0"

// keepAliveTimeout is in_http's default keepalive_timeout: idle connections
// are closed after it, so clients must cope with that.
const keepAliveTimeout = 10 * time.Second

// Server is a running in_http test double. Its methods are safe for
// concurrent use.
type Server struct {
	opts      Options
	log       zerolog.Logger
	tls       *tls.Config
	addr      string // resolved host:port, kept across down periods
	chosen    bool   // the kernel chose addr's port: held while down (port.go)
	match     tagMatcher
	store     *store
	counts    counters
	faults    atomic.Pointer[Faults]
	closing   chan struct{}  // closed when Close starts
	done      chan struct{}  // closed when Close has finished
	wg        sync.WaitGroup // serve goroutines
	active    sync.WaitGroup // requests being answered, on any http.Server
	stats     *http.Server
	statsAddr string
	fwd       *forwardListener // nil without Options.ForwardAddr

	mu      sync.Mutex // guards srv, ln, down, timer, closed, stopCtx, holds
	stopCtx func() bool
	srv     *http.Server
	ln      net.Listener // srv's: Down closes it itself (see Down)
	down    bool
	timer   *time.Timer
	closed  bool
	holds   []*portHold // the chosen ports, while down

	closeOnce sync.Once
	closeErr  error
}

// Start listens and serves until ctx is cancelled or Close is called. It
// returns once the server accepts connections.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if err := opts.Faults.Validate(); err != nil {
		return nil, fmt.Errorf("faults: %w", err)
	}
	if opts.Addr == "" {
		opts.Addr = DefaultAddr
	}
	s := &Server{
		opts:    opts,
		log:     opts.Logger,
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	f := opts.Faults
	s.faults.Store(&f)
	var err error
	if s.match, err = compileMatch(opts.MatchTags); err != nil {
		return nil, err
	}
	if !opts.PlainHTTP {
		if s.tls, err = tlsConfig(opts); err != nil {
			return nil, err
		}
	}
	if s.store, err = newStore(opts.KeepRecords, opts.JSONLPath); err != nil {
		return nil, err
	}
	s.chosen = chosenPort(opts.Addr)
	ln, err := listenTCP(opts.Addr, s.chosen)
	if err != nil {
		_ = s.store.close()
		return nil, fmt.Errorf("in_http: %w", err)
	}
	s.addr = ln.Addr().String()
	if opts.StatsAddr != "" {
		sln, err := net.Listen("tcp", opts.StatsAddr)
		if err != nil {
			ln.Close()
			_ = s.store.close()
			return nil, fmt.Errorf("stats endpoint: %w", err)
		}
		s.statsAddr = sln.Addr().String()
		s.stats = &http.Server{Handler: s.statsHandler(), ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: log.New(&errorLog{s: s}, "", 0)}
		s.wg.Go(func() { s.serve(s.stats, sln, "stats") })
	}
	if opts.ForwardAddr != "" {
		if err := s.startForward(); err != nil {
			ln.Close()
			if s.stats != nil {
				_ = s.stats.Close()
			}
			s.wg.Wait()
			_ = s.store.close()
			return nil, err
		}
	}
	s.mu.Lock()
	s.startLocked(ln)
	// Under the lock: with ctx already done, Close runs at once and reads it.
	s.stopCtx = context.AfterFunc(ctx, func() { _ = s.Close() })
	s.mu.Unlock()
	return s, nil
}

// startLocked serves the in_http endpoint on ln with a fresh http.Server (a
// closed one cannot serve again after a down period).
func (s *Server) startLocked(ln net.Listener) {
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       keepAliveTimeout,
		ErrorLog:          log.New(&errorLog{s: s}, "", 0),
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				s.counts.connections.Add(1)
			}
		},
	}
	s.srv, s.ln = srv, ln
	if s.tls != nil {
		srv.TLSConfig = s.tls
		ln = tls.NewListener(ln, s.tls)
	}
	s.wg.Go(func() { s.serve(srv, ln, "in_http") })
}

func (s *Server) serve(srv *http.Server, ln net.Listener, name string) {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error().Err(err).Str("listener", name).Msg("serve")
	}
}

// URL is the base URL of the in_http endpoint ("https://127.0.0.1:port");
// append "/<tag>" to post.
func (s *Server) URL() string {
	if s.tls == nil {
		return "http://" + s.addr
	}
	return "https://" + s.addr
}

// Addr is the in_http endpoint's host:port.
func (s *Server) Addr() string { return s.addr }

// StatsURL is the base URL of the stats endpoint, or "" without one.
func (s *Server) StatsURL() string {
	if s.statsAddr == "" {
		return ""
	}
	return "http://" + s.statsAddr
}

// SetFaults replaces the faults in force; requests already being answered
// keep the old ones.
func (s *Server) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return fmt.Errorf("faults: %w", err)
	}
	f.Poison = append([]Poison(nil), f.Poison...)
	s.faults.Store(&f)
	return nil
}

// Faults returns the faults in force.
func (s *Server) Faults() Faults { return *s.faults.Load() }

// Down takes the server down as a crash would: the listener is closed (new
// connections are refused) and open connections are cut. After d it listens
// again on the same port; d <= 0 keeps it down until Up. Calling Down while
// down changes when it comes back. A port the kernel chose stays the
// server's while it is down (see port.go).
func (s *Server) Down(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if !s.down {
		s.down = true
		s.holdPorts()
		_ = s.srv.Close()
		// srv.Close closes only the listeners Serve has started on; Serve
		// runs in a goroutine that may not have reached that yet.
		_ = s.ln.Close()
		s.srv, s.ln = nil, nil
		if s.fwd != nil {
			s.fwd.cut()
		}
		s.log.Warn().Str("addr", s.addr).Dur("for", d).Msg("down")
	}
	if d > 0 {
		s.timer = time.AfterFunc(d, s.upFromTimer)
	}
}

func (s *Server) upFromTimer() {
	if err := s.Up(); err != nil {
		s.log.Error().Err(err).Msg("coming back up; retrying in 1s")
		s.mu.Lock()
		if !s.closed && s.down {
			s.timer = time.AfterFunc(time.Second, s.upFromTimer)
		}
		s.mu.Unlock()
	}
}

// Up listens again on the same port after Down. It is a no-op when the
// server is up or closed.
func (s *Server) Up() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.down {
		return nil
	}
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	ln, err := listenTCP(s.addr, s.chosen)
	if err != nil {
		return fmt.Errorf("listen again on %s: %w", s.addr, err)
	}
	if s.fwd != nil {
		if err := s.reopenForward(); err != nil {
			ln.Close()
			return err
		}
	}
	s.releasePorts()
	s.down = false
	s.startLocked(ln)
	s.log.Warn().Str("addr", s.addr).Msg("up")
	return nil
}

// IsDown reports whether the server is in a down period.
func (s *Server) IsDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.down
}

// Stats returns the counts so far.
func (s *Server) Stats() Stats {
	var st Stats
	s.counts.fill(&st)
	s.store.fill(&st)
	return st
}

// Records returns what was stored under tag, in the order it was stored.
func (s *Server) Records(tag string) []Record { return s.store.records(tag) }

// IDs returns, for every tag, event id → times stored (more than 1 is a
// duplicate). See Record.ID for what the id is.
func (s *Server) IDs() map[string]int { return s.store.ids("") }

// TagIDs is IDs for one tag.
func (s *Server) TagIDs(tag string) map[string]int { return s.store.ids(tag) }

// Reset forgets the stored records and zeroes the counts; the JSONL file is
// kept as it is.
func (s *Server) Reset() {
	s.store.reset()
	s.counts.reset()
}

// WaitStored waits until at least n records are stored in total, or ctx
// ends.
func (s *Server) WaitStored(ctx context.Context, n int64) error {
	for {
		total, changed := s.store.wait()
		if total >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for %d stored records (have %d): %w", n, total, ctx.Err())
		}
	}
}

// Done is closed when the server has been closed (by Close or by the
// cancellation of Start's context) and its goroutines have ended.
func (s *Server) Done() <-chan struct{} { return s.done }

// Close stops the server: it stops accepting, lets requests being answered
// finish (for up to 2 s), flushes and closes the JSONL file. It returns the
// JSONL file's error, if any, and may be called more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.stopCtx()
		s.closed = true
		s.releasePorts()
		if s.timer != nil {
			s.timer.Stop()
		}
		srv := s.srv
		s.srv = nil
		s.mu.Unlock()
		close(s.closing)

		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, hs := range []*http.Server{srv, s.stats} {
			if hs == nil {
				continue
			}
			if err := hs.Shutdown(ctx); err != nil {
				_ = hs.Close()
			}
		}
		s.wg.Wait()
		if s.fwd != nil {
			s.fwd.cut()
			s.fwd.wg.Wait()
		}
		// Requests on servers cut by Down are not waited for by Shutdown.
		s.active.Wait()
		s.closeErr = s.store.close()
		close(s.done)
	})
	return s.closeErr
}

// errorLog receives net/http's server log: refused TLS handshakes are
// counted and logged at debug level, anything else at warn level.
type errorLog struct{ s *Server }

func (e *errorLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if strings.Contains(msg, "TLS handshake error") {
		e.s.counts.handshakeErrors.Add(1)
		e.s.log.Debug().Msg(msg)
		return len(p), nil
	}
	e.s.log.Warn().Msg(msg)
	return len(p), nil
}
