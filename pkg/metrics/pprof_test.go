package metrics

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// TestProfilesOnLoopbackByDefault: an address without a host serves the
// profiles on 127.0.0.1 only, and nothing but the profiles.
func TestProfilesOnLoopbackByDefault(t *testing.T) {
	s, err := ListenProfiles(":0", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	host, _, err := net.SplitHostPort(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if host != "127.0.0.1" {
		t.Errorf("profiles listen on %s, want 127.0.0.1", s.Addr())
	}
	base := "http://" + s.Addr()
	if code, body := get(t, base+"/debug/pprof/heap?debug=1"); code != 200 || !strings.Contains(body, "heap profile:") {
		t.Errorf("/debug/pprof/heap: %d %.80q", code, body)
	}
	if code, _ := get(t, base+"/debug/pprof/allocs?debug=1"); code != 200 {
		t.Errorf("/debug/pprof/allocs: %d", code)
	}
	if code, _ := get(t, base+"/metrics"); code != 404 {
		t.Errorf("/metrics on the profiles' address: %d, want 404", code)
	}
	http.DefaultClient.CloseIdleConnections()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}
