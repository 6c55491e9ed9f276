package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// autoBudget is what ingest.memory-budget = "auto" makes of a cgroup memory
// limit: 3/4 of it (docs/deployment.md, "The budget").
func autoBudget(limit int64) int64 { return limit / 4 * 3 }

// unitValue is the value of the one line "name=value" of a unit file; a
// directive missing or set twice is an error (systemd keeps the last
// setting of a memory limit, which would hide the first).
func unitValue(t *testing.T, file, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "systemd", file))
	if err != nil {
		t.Fatal(err)
	}
	var values []string
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), name+"="); ok {
			values = append(values, v)
		}
	}
	if len(values) != 1 {
		t.Fatalf("%s: want one %s= line, got %d %q", file, name, len(values), values)
	}
	return values[0]
}

// systemdBytes parses a systemd memory size: bytes, or a number with K, M,
// G or T, which systemd reads as powers of 1024.
func systemdBytes(s string) (int64, error) {
	mult := int64(1)
	if i := strings.IndexAny(s, "KMGT"); i == len(s)-1 {
		mult = int64(1) << (10 * (strings.IndexByte("KMGT", s[i]) + 1))
		s = s[:i]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("memory size %q: want bytes or a number with K, M, G or T", s)
	}
	return n * mult, nil
}

// kubeBytes parses a Kubernetes memory quantity as the manifests write it:
// bytes, or a number with Ki, Mi or Gi.
func kubeBytes(s string) (int64, error) {
	mult := int64(1)
	for i, suffix := range []string{"Ki", "Mi", "Gi"} {
		if v, ok := strings.CutSuffix(s, suffix); ok {
			mult, s = int64(1)<<(10*(i+1)), v
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("memory quantity %q: want bytes or a number with Ki, Mi or Gi", s)
	}
	return n * mult, nil
}

// chartValues is the chart's values file, relative to the repository.
const chartValues = "deploy/helm/teleport-event-bus/values.yaml"

// containerResources are the memory quantities of one component's values.
type containerResources struct {
	Requests struct {
		Memory string `yaml:"memory"`
	} `yaml:"requests"`
	Limits struct {
		Memory string `yaml:"memory"`
	} `yaml:"limits"`
}

// chartResources are ingest.resources and sink.resources of the chart's
// default values, by component.
func chartResources(t *testing.T) map[string]containerResources {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), chartValues))
	if err != nil {
		t.Fatal(err)
	}
	type component struct {
		Resources *containerResources `yaml:"resources"`
	}
	var v struct {
		Ingest component `yaml:"ingest"`
		Sink   component `yaml:"sink"`
	}
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatalf("%s: %v", chartValues, err)
	}
	out := map[string]containerResources{}
	for name, c := range map[string]component{"ingest": v.Ingest, "sink": v.Sink} {
		if c.Resources == nil {
			t.Fatalf("%s: no %s.resources", chartValues, name)
		}
		out[name] = *c.Resources
	}
	return out
}

// mib formats whole MiB as the docs write a budget ("384 MiB").
func mib(n int64) string { return fmt.Sprintf("%d MiB", n>>20) }

// minBudget finds the smallest budget docs/deployment.md states.
var minBudget = regexp.MustCompile(`The smallest budget is ([0-9]+) MiB`)

// defaultPeak finds the default budget docs/deployment.md names as
// measured, and the peak resident set it reports for it.
var defaultPeak = regexp.MustCompile(`(?s)\*\*([0-9]+) MiB is the default\*\*.*?peaked at [0-9]+–([0-9]+) MiB`)

// sinkPeak finds the fluentd-sink peak docs/deployment.md reports from
// the benchmark.
var sinkPeak = regexp.MustCompile("`fluentd-sink` peaked at ([0-9]+) MiB")

// TestMemoryLimits checks the memory limits of the systemd units and the
// Helm chart's defaults (test/helm checks the pods carry them) against each other and against what
// docs/deployment.md says of them: ingest's limit, the budget "auto" makes
// of it, MemoryHigh between the two, the requests, and a sink limit above
// the sink's measured peak.
func TestMemoryLimits(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "deployment.md"))
	if err != nil {
		t.Fatal(err)
	}
	says := func(what, text string) {
		t.Helper()
		if !strings.Contains(string(doc), text) {
			t.Errorf("docs/deployment.md does not give %s as %q", what, text)
		}
	}

	const ingestUnit = "teleport-event-bus-ingest.service"
	const sinkUnit = "teleport-event-bus-fluentd-sink@.service"
	rawMax, rawHigh := unitValue(t, ingestUnit, "MemoryMax"), unitValue(t, ingestUnit, "MemoryHigh")
	rawSinkMax := unitValue(t, sinkUnit, "MemoryMax")
	ingestMax, err := systemdBytes(rawMax)
	if err != nil {
		t.Fatalf("%s MemoryMax: %v", ingestUnit, err)
	}
	ingestHigh, err := systemdBytes(rawHigh)
	if err != nil {
		t.Fatalf("%s MemoryHigh: %v", ingestUnit, err)
	}
	sinkMax, err := systemdBytes(rawSinkMax)
	if err != nil {
		t.Fatalf("%s MemoryMax: %v", sinkUnit, err)
	}
	budget := autoBudget(ingestMax)
	if ingestHigh <= budget || ingestHigh >= ingestMax {
		t.Errorf("%s: MemoryHigh=%s must lie between the auto budget (%s) and MemoryMax=%s: below the budget the kernel throttles ingest before its budget does, at MemoryMax it never does", ingestUnit, rawHigh, mib(budget), rawMax)
	}
	says("ingest's MemoryMax", "`MemoryMax="+rawMax+"`")
	says("ingest's MemoryHigh", "`MemoryHigh="+rawHigh+"`")
	says("the sink's MemoryMax", "`MemoryMax="+rawSinkMax+"`")
	says("the budget auto makes of MemoryMax", "3/4 of it, "+mib(budget))
	unit, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "systemd", ingestUnit))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), mib(budget)+" here") {
		t.Errorf("%s: the comment does not give the auto budget of its MemoryMax as %q", ingestUnit, mib(budget)+" here")
	}

	resources := map[string]map[string]int64{} // component → "limit"/"request" → bytes
	for name, r := range chartResources(t) {
		got := map[string]int64{}
		for kind, q := range map[string]string{"limit": r.Limits.Memory, "request": r.Requests.Memory} {
			if got[kind], err = kubeBytes(q); err != nil {
				t.Fatalf("%s: %s.resources: memory %s: %v", chartValues, name, kind, err)
			}
			says(name+"'s memory "+kind, "`"+q+"`")
		}
		resources[name] = got
	}
	ingest, sink := resources["ingest"], resources["sink"]
	if ingest == nil || sink == nil {
		t.Fatalf("memory resources of ingest and sink in %s: got %v", chartValues, resources)
	}
	if ingest["limit"] != ingestMax {
		t.Errorf("the chart's ingest limit is %s, the systemd unit's MemoryMax=%s: the measurements give one size", mib(ingest["limit"]), rawMax)
	}
	if ingest["request"] != autoBudget(ingest["limit"]) {
		t.Errorf("the chart's ingest requests %s; the docs say it requests its auto budget, %s", mib(ingest["request"]), mib(autoBudget(ingest["limit"])))
	}
	if sink["limit"] != sinkMax {
		t.Errorf("the chart's sink limit is %s, the systemd unit's MemoryMax=%s", mib(sink["limit"]), rawSinkMax)
	}
	if sink["request"] > sink["limit"] {
		t.Errorf("the chart's sink requests %s, over its limit %s", mib(sink["request"]), mib(sink["limit"]))
	}

	least := docMiB(t, doc, minBudget, "the smallest budget")[0]
	if least != config.MinMemoryBudget {
		t.Errorf("docs/deployment.md gives the smallest budget as %s, ingest refuses below %s (config.MinMemoryBudget)", mib(least), mib(config.MinMemoryBudget))
	}
	says("the budget auto takes without a cgroup limit", mib(config.DefaultMemoryBudget)+" when no limit applies")
	// One default, measured: auto makes the default budget of the units'
	// and the chart's limit too, and what it peaked at fits under it.
	if autoBudget(ingestMax) != config.DefaultMemoryBudget {
		t.Errorf("%s: auto makes %s of MemoryMax=%s, the default without a cgroup limit is %s (config.DefaultMemoryBudget): the docs give one measured default", ingestUnit, mib(autoBudget(ingestMax)), rawMax, mib(config.DefaultMemoryBudget))
	}
	measured := docMiB(t, doc, defaultPeak, "the default budget's measured peak")
	if measured[0] != config.DefaultMemoryBudget {
		t.Errorf("docs/deployment.md gives %s as the measured default budget, the default is %s", mib(measured[0]), mib(config.DefaultMemoryBudget))
	}
	if top := measured[1]; top > config.DefaultMemoryBudget || top >= ingestHigh {
		t.Errorf("docs/deployment.md: the default budget peaked at %s, over the budget (%s) or MemoryHigh=%s", mib(top), mib(config.DefaultMemoryBudget), rawHigh)
	}
	for where, limit := range map[string]int64{ingestUnit + " MemoryMax": ingestMax, "the chart's ingest limit": ingest["limit"]} {
		if autoBudget(limit) < least {
			t.Errorf("%s: auto makes a budget of %s of it, below the smallest budget, %s: ingest would refuse to start", where, mib(autoBudget(limit)), mib(least))
		}
	}
	trouble, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "troubleshooting.md"))
	if err != nil {
		t.Fatal(err)
	}
	if quoted := fmt.Sprintf("below the smallest budget ingest runs in, %dMiB", least>>20); !strings.Contains(string(trouble), quoted) {
		t.Errorf("docs/troubleshooting.md does not quote the smallest budget of docs/deployment.md: no %q", quoted)
	}

	if peak := docMiB(t, doc, sinkPeak, "the sink's measured peak")[0]; peak > sink["request"] {
		t.Errorf("the sink peaked at %s in the benchmark, over what its container requests (%s) and far too near its limit", mib(peak), mib(sink["request"]))
	}
}

// docMiB returns the MiB figures re's groups find in doc, in bytes; the
// test fails when docs/deployment.md does not give what.
func docMiB(t *testing.T, doc []byte, re *regexp.Regexp, what string) []int64 {
	t.Helper()
	m := re.FindSubmatch(doc)
	if m == nil {
		t.Fatalf("docs/deployment.md does not give %s (%s)", what, re)
	}
	var out []int64
	for _, g := range m[1:] {
		n, err := strconv.ParseInt(string(g), 10, 64)
		if err != nil {
			t.Fatalf("docs/deployment.md, %s: %v", what, err)
		}
		out = append(out, n<<20)
	}
	return out
}
