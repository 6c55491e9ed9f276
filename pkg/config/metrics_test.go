package config

import (
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/metrics"
)

// TestMetricsDefaultsDoNotCollide: ingest's default port is not one of the
// sink's, and the sink's default is a range, so ingest and several sinks
// run on one host with no metrics setting.
func TestMetricsDefaultsDoNotCollide(t *testing.T) {
	d := Default()
	ing, err := metrics.ParseAddr(d.MetricsAddrFor(Ingest))
	if err != nil {
		t.Fatal(err)
	}
	snk, err := metrics.ParseAddr(d.MetricsAddrFor(Sink))
	if err != nil {
		t.Fatal(err)
	}
	if ing.First != ing.Last || ing.First == 0 {
		t.Errorf("ingest's default %s: want one fixed port (the quickstart's curl uses it)", ing)
	}
	if snk.Last-snk.First < 3 {
		t.Errorf("the sink's default %s: want a range for several sinks", snk)
	}
	if ing.Host == snk.Host && ing.First >= snk.First && ing.First <= snk.Last {
		t.Errorf("ingest's default %s lies in the sink's %s", ing, snk)
	}
}

// TestTopLevelMetricsAddrIsIngests: the older top-level key still sets
// ingest's address; the sink does not read it (it used to, and then
// collided with ingest on one host).
func TestTopLevelMetricsAddrIsIngests(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name       string
		toml       string
		env        map[string]string
		args       []string
		ingest     string
		sink       string
		sinkSource string
	}{
		{name: "defaults", toml: ingestOK + sinkOK, ingest: DefaultIngestMetricsAddr, sink: DefaultSinkMetricsAddr},
		{name: "top-level key in the file", toml: "metrics-addr = \":9190\"\n" + ingestOK + sinkOK,
			ingest: ":9190", sink: DefaultSinkMetricsAddr},
		{name: "per-command keys", toml: ingestOK + sinkOK + "[ingest]\nmetrics-addr = \":9191\"\n[sink]\nmetrics-addr = \":9200-9209\"\n",
			ingest: ":9191", sink: ":9200-9209"},
		{name: "both in the file: [ingest] wins", toml: "metrics-addr = \":9190\"\n" + ingestOK + sinkOK + "[ingest]\nmetrics-addr = \":9191\"\n",
			ingest: ":9191", sink: DefaultSinkMetricsAddr},
		{name: "top-level flag over [ingest] in the file", toml: ingestOK + sinkOK + "[ingest]\nmetrics-addr = \":9191\"\n",
			args: []string{"--metrics-addr", ":9192"}, ingest: ":9192", sink: DefaultSinkMetricsAddr},
		{name: "environment", toml: ingestOK + sinkOK,
			env:    map[string]string{"FDFWD_INGEST_METRICS_ADDR": "127.0.0.1:9193", "FDFWD_SINK_METRICS_ADDR": "127.0.0.1:0"},
			ingest: "127.0.0.1:9193", sink: "127.0.0.1:0"},
		{name: "off", toml: ingestOK + sinkOK + "[ingest]\nmetrics-addr = \"\"\n[sink]\nmetrics-addr = \"\"\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			path := f.write(t, "m.toml", tt.toml)
			ing, err := loadArgs(t, Ingest, append([]string{"--config", path}, tt.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			snk, err := loadArgs(t, Sink, "--config", path)
			if err != nil {
				t.Fatal(err)
			}
			if got := ing.MetricsAddrFor(Ingest); got != tt.ingest {
				t.Errorf("ingest serves metrics on %q, want %q", got, tt.ingest)
			}
			if got := snk.MetricsAddrFor(Sink); got != tt.sink {
				t.Errorf("the sink serves metrics on %q, want %q", got, tt.sink)
			}
		})
	}
}

func TestMetricsAddrForms(t *testing.T) {
	f := newFixture(t)
	for v, want := range map[string]string{
		"127.0.0.1:9091-9099": "",
		":0":                  "",
		"[::1]:9090":          "",
		"localhost":           `must be host:port or host:first-last, got "localhost"`,
		"127.0.0.1:9099-9091": `port range "9099-9091" must run from a port >= 1 up to one >= it`,
		"127.0.0.1:0-9":       `port range "0-9" must run from a port >= 1 up to one >= it`,
		"127.0.0.1:70000":     `port must be 0..65535 or a range first-last, got "70000"`,
		"127.0.0.1:a-b":       `port must be 0..65535 or a range first-last, got "a-b"`,
	} {
		path := f.write(t, "m.toml", sinkOK+fmt.Sprintf("[sink]\nmetrics-addr = %q\n", v))
		_, err := loadArgs(t, Sink, "--config", path)
		switch {
		case want == "" && err != nil:
			t.Errorf("%q: %v", v, err)
		case want != "" && (err == nil || err.Error() != fmt.Sprintf("config %s: key \"sink.metrics-addr\": %s", path, want)):
			t.Errorf("%q: error %v, want %s", v, err, want)
		}
	}
}

// TestMetricsListenErrorNamesKeyAndFix: a port in use is reported with the
// key of the command that failed, as the user spelt it, and the way out.
func TestMetricsListenErrorNamesKeyAndFix(t *testing.T) {
	f := newFixture(t)
	inUse := &net.OpError{Op: "listen", Net: "tcp", Err: syscall.EADDRINUSE}
	path := f.write(t, "m.toml", "metrics-addr = \"127.0.0.1:9090\"\n"+ingestOK+sinkOK+"[sink]\nmetrics-addr = \"127.0.0.1:9091-9092\"\n")
	ing, err := loadArgs(t, Ingest, "--config", path)
	if err != nil {
		t.Fatal(err)
	}
	snk, err := loadArgs(t, Sink, "--config", path, "--sink-metrics-addr", "127.0.0.1:9095")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		got  error
		want []string
	}{
		{ing.MetricsListenError(Ingest, inUse), []string{`metrics-addr "127.0.0.1:9090": listen tcp: address already in use`, `set [ingest] metrics-addr, --ingest-metrics-addr or FDFWD_INGEST_METRICS_ADDR`}},
		{snk.MetricsListenError(Sink, inUse), []string{`--sink-metrics-addr "127.0.0.1:9095"`, `set [sink] metrics-addr, --sink-metrics-addr or FDFWD_SINK_METRICS_ADDR`, `a range host:first-last, or "" to turn it off`}},
	} {
		for _, w := range c.want {
			if !strings.Contains(c.got.Error(), w) {
				t.Errorf("%v\nlacks %q", c.got, w)
			}
		}
	}
}
