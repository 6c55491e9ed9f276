package bench

import (
	"fmt"
	"io"
	"runtime"
	"testing"
	"text/tabwriter"
	"time"
)

// report is what one run measured.
type report struct {
	opts options

	// Backfill phase.
	events                 int
	ingest, sink, overall  time.Duration
	missing                int   // ids teleport-sim holds that fluentd-sim never stored
	requests, connections  int64 // what fluentd-sim answered and accepted
	fluentdDups, streamDup int

	// The older tool's model.
	serialEvents int64
	serialRate   float64

	live liveReport

	rss   []procRSS
	notes []string
}

// liveReport is the live-tail phase.
type liveReport struct {
	rate             float64
	window           time.Duration
	sampled          int
	undelivered      int
	toBus, toFluentd []time.Duration
}

// procRSS is one process's peak resident set; ours is false for the test
// doubles, which the memory goal does not cover.
type procRSS struct {
	name  string
	bytes int64
	ours  bool
	// cpu is the CPU time the process had used when the phase ended.
	cpu time.Duration
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func (r *report) overallRate() float64 { return rate(r.events, r.overall) }

func (r *report) ratio() float64 {
	if r.serialRate == 0 {
		return 0
	}
	return r.overallRate() / r.serialRate
}

// print writes the table.
func (r *report) print(out io.Writer) {
	fmt.Fprintf(out, "\nteleport-event-bus pipeline benchmark: %d audit events; teleport-sim → ingest (embedded NATS) → fluentd-sink → fluentd-sim over mTLS, each a process on this machine (%d CPUs)\n\n",
		r.events, runtime.NumCPU())
	if r.opts.fluentdLatency > 0 {
		fmt.Fprintf(out, "fluentd-sim answers each request %s late (BENCH_FLUENTD_LATENCY) in the backfill and older-model phases\n\n", r.opts.fluentdLatency)
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  stage\tmeasured\tresult\tgoal")
	fmt.Fprintln(tw, "  -----\t--------\t------\t----")
	row := func(stage, what, result, goal string) {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", stage, what, result, goal)
	}
	row("ingest", "ingest start → audit stream holds all", fmt.Sprintf("%s events/s (%s)", num(rate(r.events, r.ingest)), r.ingest.Round(10*time.Millisecond)), "")
	row("sink", "first delivery → fluentd-sim stored all", fmt.Sprintf("%s events/s (%s)", num(rate(r.events, r.sink)), r.sink.Round(10*time.Millisecond)), "")
	row("", "requests / connections at fluentd-sim", fmt.Sprintf("%d / %d (%.1f events per request)", r.requests, r.connections, float64(r.events)/float64(max(r.requests, 1))), "")
	row("overall", "ingest start → last delivery", fmt.Sprintf("%s events/s (%s)", num(r.overallRate()), r.overall.Round(10*time.Millisecond)), goal(r.overallRate() >= goalOverall, "≥ 50,000 events/s"))
	row("older model", fmt.Sprintf("sink, 1 event/request, 1 in flight; %d events, steady rate", r.serialEvents), num(r.serialRate)+" events/s", "")
	row("speed-up", "overall ÷ older model", fmt.Sprintf("%.1f×", r.ratio()), goal(r.ratio() >= goalRatio, "≥ 25×"))
	if r.live.sampled > 0 {
		what := fmt.Sprintf("%s events/s for %s: %d sampled (≈ %d expected)", num(r.live.rate), r.live.window, r.live.sampled, int(r.live.rate*r.live.window.Seconds()))
		row("live tail", what, "", "")
		row("", "event time → on the bus, p50 / p99 / max", delays(r.live.toBus), "")
		row("", "event time → at Fluentd, p50 / p99 / max", delays(r.live.toFluentd), "")
	}
	stage := "peak RSS, CPU"
	for _, p := range r.rss {
		g := "(test double)"
		if p.ours {
			g = goal(p.bytes <= goalRSS, "≤ 150 MB")
		}
		row(stage, p.name, fmt.Sprintf("%d MB, CPU %s", p.bytes>>20, p.cpu.Round(100*time.Millisecond)), g)
		stage = ""
	}
	row("checks", "missing / duplicates at Fluentd / in the stream", fmt.Sprintf("%d / %d / %d", r.missing, r.fluentdDups, r.streamDup), "")
	if r.live.sampled > 0 {
		row("", "live events on the bus never delivered", fmt.Sprint(r.live.undelivered), "")
	}
	tw.Flush()
	for _, n := range r.notes {
		fmt.Fprintln(out, "  note:", n)
	}
	fmt.Fprintln(out)
}

// reportMetrics hands the headline figures to the testing package.
func (r *report) reportMetrics(b *testing.B) {
	b.ReportMetric(r.overallRate(), "events/s")
	b.ReportMetric(rate(r.events, r.ingest), "ingest-events/s")
	b.ReportMetric(rate(r.events, r.sink), "sink-events/s")
	b.ReportMetric(r.serialRate, "older-model-events/s")
	b.ReportMetric(r.ratio(), "x-older-model")
	if r.live.sampled > 0 {
		b.ReportMetric(ms(percentile(r.live.toFluentd, 50)), "live-p50-ms")
		b.ReportMetric(ms(percentile(r.live.toFluentd, 99)), "live-p99-ms")
	}
	var peak int64
	for _, p := range r.rss {
		if p.ours {
			peak = max(peak, p.bytes)
		}
	}
	b.ReportMetric(float64(peak)/(1<<20), "max-rss-MB")
}

// problems are what makes the run invalid, not merely slow.
func (r *report) problems() []string {
	var out []string
	if r.missing > 0 || r.fluentdDups > 0 || r.streamDup > 0 {
		out = append(out, fmt.Sprintf("backfill: %d events missing, %d duplicates at Fluentd, %d in the stream", r.missing, r.fluentdDups, r.streamDup))
	}
	if r.live.undelivered > 0 {
		out = append(out, fmt.Sprintf("live tail: %d events on the bus were not delivered to Fluentd", r.live.undelivered))
	}
	if r.opts.liveFor > 0 && r.live.sampled == 0 {
		out = append(out, "live tail: no event of the window reached the bus")
	}
	return append(out, r.notes...)
}

func goal(met bool, what string) string {
	if met {
		return what + ": met"
	}
	return what + ": MISSED"
}

func delays(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	round := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	return fmt.Sprintf("%s / %s / %s", round(percentile(ds, 50)), round(percentile(ds, 99)), round(percentile(ds, 100)))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// num formats a rate with thousands separators.
func num(f float64) string {
	n := int64(f + 0.5)
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
