package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// TestMetricsPerCommandOnOneHost runs ingest and two sinks on one host from
// one TOML with one sink setting, a port range: each process serves its own
// /metrics, the sinks on different ports of the range, each logged. A third
// sink finds the range full and says which key to change.
func TestMetricsPerCommandOnOneHost(t *testing.T) {
	ctx, p := newPipeline(t, 3*time.Minute)
	if err := p.StartTeleport(ctx, "--events", "200", "--sessions", "2"); err != nil {
		t.Fatal(err)
	}
	if err := p.StartFluentd(ctx); err != nil {
		t.Fatal(err)
	}
	first, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ingestAddr := fmt.Sprintf("127.0.0.1:%d", first)
	sinkRange := fmt.Sprintf("127.0.0.1:%d-%d", first+1, first+2)
	for _, port := range []int{first + 1, first + 2} {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Skipf("port %d is in use: %v", port, err)
		}
		l.Close()
	}

	ing, err := p.StartIngest(ctx, "ingest", "--ingest-metrics-addr", ingestAddr)
	if err != nil {
		t.Fatal(err)
	}
	sinks := make([]*harness.Proc, 2)
	addrs := map[string]bool{}
	for i := range sinks {
		if sinks[i], err = p.StartSink(ctx, fmt.Sprintf("fluentd-sink-%d", i+1), "--sink-metrics-addr", sinkRange); err != nil {
			t.Fatal(err)
		}
		addr := servingAddr(ctx, t, sinks[i])
		if addrs[addr] {
			t.Fatalf("two sinks logged the metrics address %s", addr)
		}
		addrs[addr] = true
	}
	for _, want := range []string{fmt.Sprintf("127.0.0.1:%d", first+1), fmt.Sprintf("127.0.0.1:%d", first+2)} {
		if !addrs[want] {
			t.Errorf("no sink serves on %s (got %v)", want, addrs)
		}
	}
	if got := servingAddr(ctx, t, ing); got != ingestAddr {
		t.Errorf("ingest serves on %s, want %s", got, ingestAddr)
	}
	for addr, prefix := range map[string]string{ingestAddr: "teleport_event_bus_ingest_"} {
		if body := httpGet(ctx, t, "http://"+addr+"/metrics"); !strings.Contains(body, prefix) {
			t.Errorf("%s/metrics has no %s series", addr, prefix)
		}
	}
	for addr := range addrs {
		if body := httpGet(ctx, t, "http://"+addr+"/metrics"); !strings.Contains(body, "teleport_event_bus_sink_") {
			t.Errorf("%s/metrics has no teleport_event_bus_sink_ series", addr)
		}
	}

	third, err := p.StartSink(ctx, "fluentd-sink-3", "--sink-metrics-addr", sinkRange)
	if err != nil {
		t.Fatal(err)
	}
	code, err := third.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := `--sink-metrics-addr "` + sinkRange + `": every port of ` + sinkRange + ` is in use`
	if log := third.Log(); code != 1 || !strings.Contains(log, want) ||
		!strings.Contains(log, "set [sink] metrics-addr, --sink-metrics-addr or FDFWD_SINK_METRICS_ADDR") {
		t.Errorf("a third sink: exit %d, want 1 with %q and the fix:\n%s", code, want, third.Tail(5))
	}
	if err := harness.Alive(ing, sinks[0], sinks[1]); err != nil {
		t.Fatal(err)
	}
}

// servingAddr is the address proc logged it serves its metrics on.
func servingAddr(ctx context.Context, t *testing.T, proc *harness.Proc) string {
	t.Helper()
	line, err := proc.WaitForLine(ctx, "serving /metrics, /healthz and /readyz")
	if err != nil {
		t.Fatalf("%s: %v\n%s", proc.Name, err, proc.Tail(10))
	}
	var l struct{ Addr string }
	if err := json.Unmarshal([]byte(line), &l); err != nil || l.Addr == "" {
		t.Fatalf("%s: metrics line %q: %v", proc.Name, line, err)
	}
	return l.Addr
}

func httpGet(ctx context.Context, t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", url, resp.StatusCode, err)
	}
	return string(body)
}
