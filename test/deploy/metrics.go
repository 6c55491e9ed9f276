package deploy

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/metrics"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/sink"
)

// Metric is one metric family a command serves on /metrics.
type Metric struct {
	Name   string
	Type   string // counter, gauge, histogram or summary
	Labels []string
	Help   string
	// Source says which command exports it: "ingest", "fluentd-sink", or
	// "ingest, fluentd-sink" for the Go runtime and process metrics.
	Source string
}

// Series are the names a query may use for m: the name itself, and for a
// histogram or summary the _bucket, _sum and _count series.
func (m Metric) Series() []string {
	switch m.Type {
	case "histogram":
		return []string{m.Name + "_bucket", m.Name + "_sum", m.Name + "_count"}
	case "summary":
		return []string{m.Name, m.Name + "_sum", m.Name + "_count"}
	}
	return []string{m.Name}
}

// sourceOfPackage names the command whose metrics a package under pkg/
// defines.
var sourceOfPackage = map[string]string{
	"ingest": "ingest",
	"sink":   "fluentd-sink",
	"lock":   "ingest (lock.enabled)",
}

// runtimeSource is the Source of the collectors metrics.NewRegistry adds.
const runtimeSource = "ingest, fluentd-sink"

// Metrics lists every metric ingest and fluentd-sink serve, sorted by name:
// the Go runtime and process collectors of metrics.NewRegistry and the
// sink's collectors, both read from the collectors themselves, and the
// metrics of the other packages under pkg/ (ingest keeps its collectors
// unexported), read from their Go source. The sink's metrics are read both
// ways and must agree, which keeps the source reader honest. root is the
// module root.
func Metrics(root string) ([]Metric, error) {
	parsed, err := ParseMetrics(filepath.Join(root, "pkg"))
	if err != nil {
		return nil, err
	}
	out, err := runtimeMetrics()
	if err != nil {
		return nil, err
	}
	rec := &recorder{}
	sink.NewMetrics(rec)
	sinkMetrics, err := rec.metrics(sourceOfPackage["sink"])
	if err != nil {
		return nil, err
	}
	if err := sameMetrics(sinkMetrics, parsed["sink"]); err != nil {
		return nil, fmt.Errorf("pkg/sink: the source reader disagrees with sink.NewMetrics: %w", err)
	}
	out = append(out, sinkMetrics...)
	for pkg, ms := range parsed {
		if pkg != "sink" {
			out = append(out, ms...)
		}
	}
	slices.SortFunc(out, func(a, b Metric) int { return strings.Compare(a.Name, b.Name) })
	for i := 1; i < len(out); i++ {
		if out[i].Name == out[i-1].Name {
			return nil, fmt.Errorf("metric %s is defined twice (%s and %s)", out[i].Name, out[i-1].Source, out[i].Source)
		}
	}
	return out, nil
}

// runtimeMetrics gathers the collectors every command's registry starts
// with.
func runtimeMetrics() ([]Metric, error) {
	families, err := metrics.NewRegistry().Gather()
	if err != nil {
		return nil, fmt.Errorf("gather runtime metrics: %w", err)
	}
	var out []Metric
	for _, f := range families {
		m := Metric{Name: f.GetName(), Type: strings.ToLower(f.GetType().String()), Help: f.GetHelp(), Source: runtimeSource}
		if len(f.GetMetric()) > 0 {
			for _, l := range f.GetMetric()[0].GetLabel() {
				m.Labels = append(m.Labels, l.GetName())
			}
		}
		out = append(out, m)
	}
	return out, nil
}

// recorder is a prometheus.Registerer that keeps what is registered, so a
// package's constructor reveals its collectors.
type recorder struct{ collectors []prometheus.Collector }

func (r *recorder) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	r.collectors = append(r.collectors, cs...)
}

func (r *recorder) Unregister(prometheus.Collector) bool { return false }

var descRE = regexp.MustCompile(`^Desc\{fqName: ("(?:[^"\\]|\\.)*"), help: ("(?:[^"\\]|\\.)*"), .*variableLabels: \{([^{}]*)\}\}$`)

// metrics describes the recorded collectors.
func (r *recorder) metrics(source string) ([]Metric, error) {
	var out []Metric
	for _, c := range r.collectors {
		descs := make(chan *prometheus.Desc, 16)
		c.Describe(descs)
		close(descs)
		for d := range descs {
			m := descRE.FindStringSubmatch(d.String())
			if m == nil {
				return nil, fmt.Errorf("cannot read %s", d)
			}
			name, err1 := strconv.Unquote(m[1])
			help, err2 := strconv.Unquote(m[2])
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("cannot read %s", d)
			}
			typ, err := collectorType(c)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			met := Metric{Name: name, Type: typ, Help: help, Source: source}
			if m[3] != "" {
				met.Labels = strings.Split(m[3], ",")
			}
			out = append(out, met)
		}
	}
	return out, nil
}

// collectorType is the metric type of a collector: from the vector's Go
// type, or from what a plain metric writes.
func collectorType(c prometheus.Collector) (string, error) {
	switch c.(type) {
	case *prometheus.CounterVec:
		return "counter", nil
	case *prometheus.GaugeVec:
		return "gauge", nil
	case *prometheus.HistogramVec:
		return "histogram", nil
	case *prometheus.SummaryVec:
		return "summary", nil
	}
	ch := make(chan prometheus.Metric, 16)
	c.Collect(ch)
	close(ch)
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			return "", err
		}
		switch {
		case pb.Counter != nil:
			return "counter", nil
		case pb.Gauge != nil:
			return "gauge", nil
		case pb.Histogram != nil:
			return "histogram", nil
		case pb.Summary != nil:
			return "summary", nil
		}
	}
	return "", fmt.Errorf("unknown collector type %T", c)
}

// sameMetrics reports the first difference between two metric lists.
func sameMetrics(a, b []Metric) error {
	key := func(m Metric) string {
		return fmt.Sprintf("%s %s {%s} %q", m.Name, m.Type, strings.Join(m.Labels, ","), m.Help)
	}
	var ka, kb []string
	for _, m := range a {
		ka = append(ka, key(m))
	}
	for _, m := range b {
		kb = append(kb, key(m))
	}
	slices.Sort(ka)
	slices.Sort(kb)
	if !slices.Equal(ka, kb) {
		return fmt.Errorf("\n  registered: %s\n  in source:  %s", strings.Join(ka, "; "), strings.Join(kb, "; "))
	}
	return nil
}

// constructors maps prometheus.New* to the metric type it makes.
var constructors = map[string]string{
	"NewCounter": "counter", "NewCounterVec": "counter",
	"NewGauge": "gauge", "NewGaugeVec": "gauge",
	"NewHistogram": "histogram", "NewHistogramVec": "histogram",
	"NewSummary": "summary", "NewSummaryVec": "summary",
}

// ParseMetrics reads the metrics defined under dir (pkg/) from the Go
// source: each prometheus.New<Type>[Vec](prometheus.<Type>Opts{…}, labels)
// call, with Namespace, Subsystem, Name and Help given as string literals,
// constants of the same file, or sums of those. Test files are skipped.
// The result is keyed by the package's directory name.
func ParseMetrics(dir string) (map[string][]Metric, error) {
	out := map[string][]Metric{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !strings.Contains(string(src), "prometheus.New") {
			return nil
		}
		pkg := filepath.Base(filepath.Dir(path))
		ms, err := parseFile(path, src, sourceFor(pkg))
		if err != nil {
			return err
		}
		out[pkg] = append(out[pkg], ms...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read metrics from %s: %w", dir, err)
	}
	return out, nil
}

func sourceFor(pkg string) string {
	if s, ok := sourceOfPackage[pkg]; ok {
		return s
	}
	return pkg
}

func parseFile(path string, src []byte, source string) ([]Metric, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, src, 0)
	if err != nil {
		return nil, err
	}
	consts := fileConsts(f)
	var out []Metric
	var perr error
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || perr != nil {
			return perr == nil
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "prometheus" {
			return true
		}
		typ, ok := constructors[sel.Sel.Name]
		if !ok || len(call.Args) == 0 {
			return true
		}
		m, err := parseOpts(call, typ, consts)
		if err != nil {
			perr = fmt.Errorf("%s: %w", fset.Position(call.Pos()), err)
			return false
		}
		m.Source = source
		out = append(out, m)
		return true
	})
	return out, perr
}

// fileConsts collects the string constants declared anywhere in f.
func fileConsts(f *ast.File) map[string]string {
	consts := map[string]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		gd, ok := n.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			return true
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if i < len(vs.Values) {
					if s, err := stringValue(vs.Values[i], consts); err == nil {
						consts[name.Name] = s
					}
				}
			}
		}
		return true
	})
	return consts
}

func parseOpts(call *ast.CallExpr, typ string, consts map[string]string) (Metric, error) {
	lit, ok := call.Args[0].(*ast.CompositeLit)
	if !ok {
		return Metric{}, fmt.Errorf("options of prometheus.%s are not a literal", call.Fun.(*ast.SelectorExpr).Sel.Name)
	}
	fields := map[string]string{}
	for _, el := range lit.Elts {
		kv, ok := el.(*ast.KeyValueExpr)
		if !ok {
			continue
		}
		key, ok := kv.Key.(*ast.Ident)
		if !ok {
			continue
		}
		switch key.Name {
		case "Namespace", "Subsystem", "Name", "Help":
			s, err := stringValue(kv.Value, consts)
			if err != nil {
				return Metric{}, fmt.Errorf("%s: %w", key.Name, err)
			}
			fields[key.Name] = s
		}
	}
	m := Metric{
		Name: prometheus.BuildFQName(fields["Namespace"], fields["Subsystem"], fields["Name"]),
		Type: typ,
		Help: fields["Help"],
	}
	if m.Name == "" {
		return Metric{}, fmt.Errorf("metric without a name")
	}
	if len(call.Args) > 1 {
		labels, ok := call.Args[1].(*ast.CompositeLit)
		if !ok {
			return Metric{}, fmt.Errorf("%s: labels are not a literal", m.Name)
		}
		for _, l := range labels.Elts {
			s, err := stringValue(l, consts)
			if err != nil {
				return Metric{}, fmt.Errorf("%s: label: %w", m.Name, err)
			}
			m.Labels = append(m.Labels, s)
		}
	}
	return m, nil
}

// stringValue evaluates a string literal, a known constant, or a sum of
// those.
func stringValue(e ast.Expr, consts map[string]string) (string, error) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return "", fmt.Errorf("not a string: %s", e.Value)
		}
		return strconv.Unquote(e.Value)
	case *ast.Ident:
		if s, ok := consts[e.Name]; ok {
			return s, nil
		}
		return "", fmt.Errorf("unknown constant %s", e.Name)
	case *ast.ParenExpr:
		return stringValue(e.X, consts)
	case *ast.BinaryExpr:
		if e.Op != token.ADD {
			return "", fmt.Errorf("unsupported operator %s", e.Op)
		}
		a, err := stringValue(e.X, consts)
		if err != nil {
			return "", err
		}
		b, err := stringValue(e.Y, consts)
		if err != nil {
			return "", err
		}
		return a + b, nil
	}
	return "", fmt.Errorf("unsupported expression %T", e)
}

// MetricsReference renders docs/metrics.md from ms: the pipeline's own
// metrics with type, labels and meaning, then the Go runtime and process
// metrics every command serves.
func MetricsReference(ms []Metric) string {
	var b strings.Builder
	b.WriteString(`# Metrics reference

<!-- Generated from the code by test/deploy (go test ./test/deploy -run TestMetricsReference -update). Do not edit. -->

` + "`ingest` and `fluentd-sink` serve Prometheus metrics on `/metrics` at\n`[ingest] metrics-addr` (default `127.0.0.1:9090`) and `[sink] metrics-addr`\n(default `127.0.0.1:9091-9099`, the first free port), beside `/healthz` (the\nprocess is alive) and `/readyz` (connected to NATS and able to work). Alert\nrules and a Grafana dashboard using these names are in\n[deploy/observability](../deploy/observability).\n\n")
	b.WriteString("## Pipeline metrics\n\n| metric | type | labels | exported by | meaning |\n|---|---|---|---|---|\n")
	for _, m := range ms {
		if m.Source == runtimeSource {
			continue
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", m.Name, m.Type, labelList(m.Labels), m.Source, cell(m.Help))
	}
	b.WriteString("\n## Go runtime and process metrics\n\nServed by every command, from the Prometheus client's standard collectors.\n\n| metric | type | meaning |\n|---|---|---|\n")
	for _, m := range ms {
		if m.Source == runtimeSource {
			fmt.Fprintf(&b, "| `%s` | %s | %s |\n", m.Name, m.Type, cell(m.Help))
		}
	}
	return b.String()
}

func labelList(labels []string) string {
	if len(labels) == 0 {
		return "–"
	}
	return "`" + strings.Join(labels, "`, `") + "`"
}

// cell makes text safe inside a Markdown table cell.
func cell(s string) string {
	return strings.NewReplacer("|", "\\|", "\n", " ", "<", "&lt;", ">", "&gt;").Replace(s)
}
