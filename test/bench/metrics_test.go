package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// budgetMetric is the memory budget ingest applies, in bytes (0: off), as
// its /metrics exports it.
const budgetMetric = "teleport_event_bus_ingest_memory_budget_bytes"

// ingestBudget asks a running ingest which memory budget it applies, so the
// table shows what "default budget" came to on this machine (a cgroup
// limit changes it). ok is false when this ingest does not export the
// metric.
func ingestBudget(ctx context.Context, ingest *harness.Proc) (budget int64, ok bool, err error) {
	url, err := metricsURL(ctx, ingest)
	if err != nil {
		return 0, false, err
	}
	v, ok, err := gauge(ctx, url, budgetMetric)
	return int64(v), ok, err
}

// waitMetric is the time ingest's publishes waited before being sent, by
// reason.
const waitMetric = "teleport_event_bus_ingest_publish_wait_seconds_total"

// publishWaits are a running ingest's waits so far, in seconds summed over
// its publishing readers: on the memory budget's write pace, and for a
// PubAck slot (max-in-flight). ok is false when it does not export them.
type publishWaits struct {
	pace, inFlight float64
	ok             bool
}

// ingestWaits reads a running ingest's publishWaits. A reason that never
// waited has no series yet: 0.
func ingestWaits(ctx context.Context, ingest *harness.Proc) (publishWaits, error) {
	var w publishWaits
	url, err := metricsURL(ctx, ingest)
	if err != nil {
		return w, err
	}
	page, err := metricsPage(ctx, url)
	if err != nil {
		return w, err
	}
	w.ok = strings.Contains(page, "# TYPE "+waitMetric+" ")
	for reason, v := range map[string]*float64{"write_pace": &w.pace, "in_flight": &w.inFlight} {
		if *v, _, err = valueIn(page, url, waitMetric+`{reason="`+reason+`"}`); err != nil {
			return w, err
		}
	}
	return w, nil
}

// metricsURL is the /metrics address a running ingest logged.
func metricsURL(ctx context.Context, ingest *harness.Proc) (string, error) {
	line, err := ingest.WaitForLine(ctx, "serving /metrics, /healthz and /readyz")
	if err != nil {
		return "", err
	}
	var l struct{ Addr string }
	if err := json.Unmarshal([]byte(line), &l); err != nil || l.Addr == "" {
		return "", fmt.Errorf("%s: no address in its metrics line %q (%v)", ingest.Name, line, err)
	}
	return "http://" + l.Addr + "/metrics", nil
}

// gauge reads the value of a series (a metric's name, with its labels as
// the page writes them) from a Prometheus text page; ok is false when the
// page lacks it.
func gauge(ctx context.Context, url, name string) (float64, bool, error) {
	page, err := metricsPage(ctx, url)
	if err != nil {
		return 0, false, err
	}
	return valueIn(page, url, name)
}

// metricsPage GETs a Prometheus text page.
func metricsPage(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	return string(body), nil
}

// valueIn is the value of series name in page (fetched from url); ok is
// false when the page lacks it.
func valueIn(page, url, name string) (float64, bool, error) {
	for _, line := range strings.Split(page, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != name {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return 0, false, fmt.Errorf("GET %s: %s: %w", url, name, err)
		}
		return v, true, nil
	}
	return 0, false, nil
}
