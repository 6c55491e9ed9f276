package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
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
	line, err := ingest.WaitForLine(ctx, "serving /metrics, /healthz and /readyz")
	if err != nil {
		return 0, false, err
	}
	var l struct{ Addr string }
	if err := json.Unmarshal([]byte(line), &l); err != nil || l.Addr == "" {
		return 0, false, fmt.Errorf("%s: no address in its metrics line %q (%v)", ingest.Name, line, err)
	}
	v, ok, err := gauge(ctx, "http://"+l.Addr+"/metrics", budgetMetric)
	return int64(v), ok, err
}

// gauge reads the value of an unlabelled metric from a Prometheus text
// page; ok is false when the page lacks it.
func gauge(ctx context.Context, url, name string) (float64, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, false, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != name {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return 0, false, fmt.Errorf("GET %s: %s: %w", url, name, err)
		}
		return v, true, nil
	}
	if err := sc.Err(); err != nil {
		return 0, false, fmt.Errorf("GET %s: %w", url, err)
	}
	return 0, false, nil
}
