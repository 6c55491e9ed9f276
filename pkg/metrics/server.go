// Package metrics serves the operational endpoints every long-running
// command exposes on its metrics address (ingest.metrics-addr,
// sink.metrics-addr): /metrics (Prometheus, from the registry
// the command's stages register their collectors in), /healthz (the process
// is alive) and /readyz (the command's own readiness check). It owns no
// metric itself; each stage defines and registers its own.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// ReadyFunc reports why the process is not ready to do its work, or nil
// when it is.
type ReadyFunc func() error

// NewRegistry returns a registry holding the Go runtime and process
// collectors, for a command to add its own metrics to.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves /metrics from reg, /healthz (always 200 "ok") and /readyz
// (200 "ready", or 503 with the reason ready returns; ready may be nil).
func Handler(reg prometheus.Gatherer, ready ReadyFunc) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready != nil {
			if err := ready(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = fmt.Fprintln(w, "ready")
	})
	return mux
}

// Server is the running HTTP server of the operational endpoints.
type Server struct {
	ln  net.Listener
	srv *http.Server
	err chan error
}

// Listen starts serving Handler(reg, ready) on addr (see ParseAddr:
// host:port, port 0 picks a free one, or host:first-last, the first free
// port of the range), and logs the address it took. A port in use is an
// error wrapping syscall.EADDRINUSE; the caller names its setting. Stop the
// server with Shutdown.
func Listen(addr string, reg prometheus.Gatherer, ready ReadyFunc, log zerolog.Logger) (*Server, error) {
	a, err := ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	s, err := serve(a, Handler(reg, ready))
	if err != nil {
		return nil, err
	}
	log.Info().Str("addr", s.Addr()).Msg("serving /metrics, /healthz and /readyz")
	return s, nil
}

// serve listens on a and serves h until Shutdown.
func serve(a Addr, h http.Handler) (*Server, error) {
	ln, err := a.listen()
	if err != nil {
		return nil, err
	}
	s := &Server{
		ln:  ln,
		srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second},
		err: make(chan error, 1),
	}
	go func() {
		err := s.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.err <- err
	}()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Shutdown stops the server, waiting for open requests until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if serveErr := <-s.err; serveErr != nil && err == nil {
		err = fmt.Errorf("metrics server: %w", serveErr)
	}
	return err
}

// Serve runs Listen until ctx is done, then shuts the server down within
// five seconds.
func Serve(ctx context.Context, addr string, reg prometheus.Gatherer, ready ReadyFunc, log zerolog.Logger) error {
	s, err := Listen(addr, reg, ready, log)
	if err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return s.Shutdown(sctx)
}
