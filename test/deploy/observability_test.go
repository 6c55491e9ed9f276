package deploy

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v2"
)

var update = flag.Bool("update", false, "rewrite generated docs (docs/metrics.md)")

// alertRules is deploy/observability/alerts.yaml.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// exportedSeries maps every series name a query may use to its metric.
func exportedSeries(t *testing.T) map[string]Metric {
	t.Helper()
	ms, err := Metrics(repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]Metric{}
	for _, m := range ms {
		for _, s := range m.Series() {
			out[s] = m
		}
	}
	return out
}

var (
	quotedRE     = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	identRE      = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	ourPrefixes  = []string{"teleport_event_bus_", "go_", "process_"}
	scrapeSeries = []string{"up"} // added by Prometheus, not by the code
)

// metricNames are the names in a PromQL expression that look like this
// project's or the Go client's metrics (string literals — label values —
// left out), and whether it names Prometheus' own `up`.
func metricNames(expr string) (names []string, usesUp bool) {
	expr = quotedRE.ReplaceAllString(expr, `""`)
	for _, id := range identRE.FindAllString(expr, -1) {
		if slices.Contains(scrapeSeries, id) {
			usesUp = true
		}
		for _, p := range ourPrefixes {
			if strings.HasPrefix(id, p) {
				names = append(names, id)
			}
		}
	}
	return names, usesUp
}

// checkExpr fails when expr names a series the code does not export, uses
// no series at all, or has unbalanced brackets.
func checkExpr(t *testing.T, where, expr string, series map[string]Metric) []string {
	t.Helper()
	names, usesUp := metricNames(expr)
	if len(names) == 0 && !usesUp {
		t.Errorf("%s: %q uses no metric of teleport-event-bus", where, expr)
	}
	for _, n := range names {
		if _, ok := series[n]; !ok {
			t.Errorf("%s: %s is not exported by ingest or fluentd-sink (see docs/metrics.md)", where, n)
		}
	}
	stripped := quotedRE.ReplaceAllString(expr, `""`)
	for _, pair := range []string{"()", "{}", "[]"} {
		if strings.Count(stripped, pair[:1]) != strings.Count(stripped, pair[1:]) {
			t.Errorf("%s: unbalanced %s in %q", where, pair, expr)
		}
	}
	return names
}

func TestAlertRulesUseExportedMetrics(t *testing.T) {
	series := exportedSeries(t)
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "observability", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules alertRules
	if err := yaml.UnmarshalStrict(data, &rules); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	alerts := map[string][]string{} // alert → metrics it uses
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			where := "alerts.yaml " + g.Name + "/" + r.Alert
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("%s: rule without alert name or expr", where)
				continue
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("%s: needs a severity label and a summary annotation", where)
			}
			alerts[r.Alert] = checkExpr(t, where, r.Expr, series)
		}
	}
	// The conditions operators asked for, each by the metric that shows it.
	want := map[string]string{
		"TeleportEventBusIngestStalled":       "teleport_event_bus_ingest_cursor_lag_seconds",
		"TeleportEventBusConsumerLagGrowing":  "teleport_event_bus_sink_consumer_pending",
		"TeleportEventBusDeadLetters":         "teleport_event_bus_sink_dead_lettered_total",
		"TeleportEventBusFluentdErrors":       "teleport_event_bus_sink_request_duration_seconds_count",
		"TeleportEventBusNoIngestLeader":      "teleport_event_bus_ingest_leader",
		"TeleportEventBusIngestLeaseFlapping": "teleport_event_bus_ingest_leader",
		"TeleportEventBusIngestPaused":        "teleport_event_bus_ingest_paused",
		"TeleportEventBusEventsRemovedUnread": "teleport_event_bus_ingest_removed_unacknowledged_total",
	}
	for alert, metric := range want {
		used, ok := alerts[alert]
		if !ok {
			t.Errorf("alerts.yaml: no alert %s", alert)
			continue
		}
		if !slices.Contains(used, metric) {
			t.Errorf("alerts.yaml: %s does not use %s", alert, metric)
		}
	}
}

func TestDashboardUsesExportedMetrics(t *testing.T) {
	series := exportedSeries(t)
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "observability", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if dash["title"] == nil || dash["uid"] == nil {
		t.Error("grafana-dashboard.json: title or uid missing")
	}
	used := map[string]bool{}
	var n int
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if expr, ok := v["expr"].(string); ok {
				n++
				where := "grafana-dashboard.json " + path
				if title, ok := v["legendFormat"].(string); ok {
					where += " (" + title + ")"
				}
				for _, m := range checkExpr(t, where, expr, series) {
					used[series[m].Name] = true
				}
			}
			for k, x := range v {
				walk(path+"."+k, x)
			}
		case []any:
			for _, x := range v {
				walk(path+"[]", x)
			}
		}
	}
	walk("", dash)
	if n == 0 {
		t.Fatal("grafana-dashboard.json has no queries")
	}
	// Every metric of ingest and the sink has a panel.
	for _, m := range series {
		if (m.Source == "ingest" || m.Source == "fluentd-sink") && !used[m.Name] {
			t.Errorf("grafana-dashboard.json: no panel shows %s", m.Name)
		}
	}
}

// TestMetricsReference checks docs/metrics.md is what the code exports;
// run with -update to rewrite it.
func TestMetricsReference(t *testing.T) {
	ms, err := Metrics(repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	want := MetricsReference(ms)
	path := filepath.Join(repoRoot(t), "docs", "metrics.md")
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("docs/metrics.md is out of date with the code: run\n  go test ./test/deploy -run TestMetricsReference -update")
	}
	for _, name := range []string{"teleport_event_bus_ingest_leader", "teleport_event_bus_sink_consumer_pending"} {
		if !strings.Contains(want, "`"+name+"`") {
			t.Errorf("docs/metrics.md does not list %s", name)
		}
	}
}

func TestMetricNamesFromPromQL(t *testing.T) {
	names, up := metricNames(`sum by (job) (rate(teleport_event_bus_sink_delivered_total{job=~"teleport_event_bus_x"}[5m])) > 0 or up == 0`)
	if !slices.Equal(names, []string{"teleport_event_bus_sink_delivered_total"}) || !up {
		t.Fatalf("metricNames = %v, %v", names, up)
	}
}
