package metrics

import (
	"net/http"
	"net/http/pprof"

	"github.com/rs/zerolog"
)

// ProfileHandler serves Go's profiles under /debug/pprof/ (heap, allocs,
// goroutine, profile, trace…), as net/http/pprof does, on its own mux so
// nothing else in the process is exposed with them.
func ProfileHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// ListenProfiles starts serving ProfileHandler on addr (see ParseAddr).
// A profile shows what the process holds and runs, and costs CPU to take,
// so an address without a host listens on the loopback interface only
// (127.0.0.1), unlike Listen: another interface has to be named. Stop the
// server with Shutdown.
func ListenProfiles(addr string, log zerolog.Logger) (*Server, error) {
	a, err := ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	if a.Host == "" {
		a.Host = "127.0.0.1"
	}
	s, err := serve(a, ProfileHandler())
	if err != nil {
		return nil, err
	}
	log.Info().Str("addr", s.Addr()).Msg("serving Go profiles on /debug/pprof/")
	return s, nil
}
