package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "teleport_event_bus_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	var notReady atomic.Bool
	notReady.Store(true)
	s, err := Listen("127.0.0.1:0", reg, func() error {
		if notReady.Load() {
			return errors.New("NATS not connected")
		}
		return nil
	}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + s.Addr()
	if code, body := get(t, base+"/metrics"); code != 200 || !strings.Contains(body, "teleport_event_bus_test_total 3") {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "NATS not connected") {
		t.Fatalf("/readyz not ready: %d %s", code, body)
	}
	notReady.Store(false)
	if code, _ := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz ready: %d", code)
	}
	http.DefaultClient.CloseIdleConnections()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestPortInUse(t *testing.T) {
	s, err := Listen("127.0.0.1:0", NewRegistry(), nil, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	_, err = Listen(s.Addr(), NewRegistry(), nil, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), s.Addr()) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("err = %v, want EADDRINUSE naming %s", err, s.Addr())
	}
}

// TestPortRange: copies sharing one setting host:first-last each take the
// next free port, log it, and the one too many gets an error naming the
// range.
func TestPortRange(t *testing.T) {
	first := freeBlock(t, 2)
	addr := fmt.Sprintf("127.0.0.1:%d-%d", first, first+1)
	var logs logtest.Buffer
	a, err := Listen(addr, NewRegistry(), nil, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	b, err := Listen(addr, NewRegistry(), nil, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown(context.Background())
	want := []string{fmt.Sprintf("127.0.0.1:%d", first), fmt.Sprintf("127.0.0.1:%d", first+1)}
	if a.Addr() != want[0] || b.Addr() != want[1] {
		t.Errorf("the two servers took %s and %s, want %v", a.Addr(), b.Addr(), want)
	}
	for _, w := range want {
		if code, _ := get(t, "http://"+w+"/healthz"); code != http.StatusOK {
			t.Errorf("%s/healthz: %d", w, code)
		}
		if !strings.Contains(logs.String(), `"addr":"`+w+`"`) {
			t.Errorf("no log line with the address %s:\n%s", w, logs.String())
		}
	}
	http.DefaultClient.CloseIdleConnections()
	_, err = Listen(addr, NewRegistry(), nil, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "every port of "+addr+" is in use") || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("a third server: err = %v", err)
	}
}

// freeBlock finds n consecutive free loopback ports below the ephemeral
// range.
func freeBlock(t *testing.T, n int) int {
	t.Helper()
	for range 200 {
		first := 20000 + rand.IntN(12000)
		ok := true
		for p := first; p < first+n && ok; p++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				ok = false
				continue
			}
			l.Close()
		}
		if ok {
			return first
		}
	}
	t.Fatal("no block of free ports")
	return 0
}

func TestParseAddr(t *testing.T) {
	for in, want := range map[string]Addr{
		"127.0.0.1:9090":      {"127.0.0.1", 9090, 9090},
		":0":                  {"", 0, 0},
		"127.0.0.1:9091-9099": {"127.0.0.1", 9091, 9099},
		"[::1]:9091-9091":     {"::1", 9091, 9091},
	} {
		got, err := ParseAddr(in)
		if err != nil || got != want {
			t.Errorf("ParseAddr(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "9090", "h:", "h:-1", "h:65536", "h:5-4", "h:0-4", "h:1-70000", "h:x"} {
		if a, err := ParseAddr(in); err == nil {
			t.Errorf("ParseAddr(%q) = %+v, want an error", in, a)
		}
	}
}
