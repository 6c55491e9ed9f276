package bench

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

// report is what one run measured.
type report struct {
	opts options

	events int // audit events teleport-sim held in each backfill

	// The backfill runs; off and ext are nil when skipped.
	def, off, ext *backfill

	// The older tool's model, on the default backfill's stream.
	serialEvents int64
	serialRate   float64

	live liveReport

	// rss are the older model's sink and the live phase's processes.
	rss   []procRSS
	notes []string
}

// setting is one way of running ingest in the backfill phase.
type setting struct {
	name string // in the table
	key  string // prefix of its metrics
	// ingestName names ingest in the RSS rows; ingestGoal is its peak RSS
	// goal in bytes (0: none).
	ingestName string
	ingestGoal int64
	// flags are added to ingest after BENCH_INGEST_FLAGS.
	flags []string
	// external: ingest and the sink use a separate nats-server process.
	external bool
}

// backfill is what one backfill run measured.
type backfill struct {
	setting
	natsURL string // the external server's, when external
	// budget is the memory budget ingest reported (bytes, 0: off), when it
	// exports it (budgetKnown).
	budget      int64
	budgetKnown bool
	// loadStart and loadEnd are the machine's 1-minute load average when
	// ingest started and when the last event was delivered: two runs are
	// comparable when they saw the same load.
	loadStart, loadEnd float64

	events                 int
	ingest, sink, overall  time.Duration
	requests, connections  int64 // what fluentd-sim answered and accepted
	missing                int   // ids teleport-sim holds that fluentd-sim never stored
	fluentdDups, streamDup int

	ingestRSS, sinkRSS, natsRSS procRSS
	rss                         []procRSS // every process, for the table
}

func (b *backfill) overallRate() float64 { return rate(b.events, b.overall) }

// liveReport is the live-tail phase.
type liveReport struct {
	rate             float64
	window           time.Duration
	sampled          int
	undelivered      int
	toBus, toFluentd []time.Duration
	ingestRSS        procRSS
}

// procRSS is one process's peak resident set and CPU time.
type procRSS struct {
	name  string
	bytes int64
	// cpu is the CPU time the process had used when the phase ended.
	cpu time.Duration
	// goal is the peak RSS goal in bytes; when 0, noGoal is printed instead
	// (test doubles, the external server, ingest with the budget off).
	goal   int64
	noGoal string
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// ratio is the default backfill's overall rate as many times the older
// model's; 0 when that phase did not run.
func (r *report) ratio() float64 {
	if r.serialRate == 0 {
		return 0
	}
	return r.def.overallRate() / r.serialRate
}

// budgetShare is the default budget's overall rate as a share of the
// budget-off run's; 0 when that run was skipped.
func (r *report) budgetShare() float64 {
	if r.off == nil || r.off.overallRate() == 0 {
		return 0
	}
	return r.def.overallRate() / r.off.overallRate()
}

// budgetCPU is the ingest CPU time of the default budget's backfill as
// many times the budget-off run's; 0 when that run was skipped.
func (r *report) budgetCPU() float64 {
	if r.off == nil || r.off.ingestRSS.cpu == 0 {
		return 0
	}
	return r.def.ingestRSS.cpu.Seconds() / r.off.ingestRSS.cpu.Seconds()
}

// print writes the table.
func (r *report) print(out io.Writer) {
	fmt.Fprintf(out, "\nteleport-event-bus pipeline benchmark: %d audit events; teleport-sim → ingest → NATS → fluentd-sink → fluentd-sim over mTLS, each a process on this machine (%d CPUs)\n",
		r.events, runtime.NumCPU())
	fmt.Fprintln(out, "backfill settings, in the order they ran, each on a fresh pipeline:")
	for _, bf := range []*backfill{r.off, r.def, r.ext} {
		if bf == nil {
			continue
		}
		how := "ingest's embedded NATS server"
		if bf.external {
			how = "a separate nats-server process, ingest and sink with --nats-url " + bf.natsURL
		}
		flags := "no flag"
		if f := append(append([]string(nil), r.opts.ingestFlags...), bf.flags...); len(f) > 0 {
			flags = strings.Join(f, " ")
		}
		budget := budgetMetric + " not exported"
		switch {
		case bf.budgetKnown && bf.budget == 0:
			budget = "budget off (" + budgetMetric + " 0)"
		case bf.budgetKnown:
			budget = fmt.Sprintf("budget %d MiB (%s)", bf.budget>>20, budgetMetric)
		}
		fmt.Fprintf(out, "  %-15s %s; ingest: %s; %s; load average %.1f → %.1f\n", bf.name+":", how, flags, budget, bf.loadStart, bf.loadEnd)
	}
	if r.opts.fluentdLatency > 0 {
		fmt.Fprintf(out, "fluentd-sim answers each request %s late (BENCH_FLUENTD_LATENCY) in the backfill and older-model phases\n", r.opts.fluentdLatency)
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  stage\tmeasured\tresult\tgoal")
	fmt.Fprintln(tw, "  -----\t--------\t------\t----")
	row := func(stage, what, result, goal string) {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", stage, what, result, goal)
	}
	backfillRows := func(bf *backfill) {
		stage := "backfill, " + bf.name
		row(stage, "ingest start → audit stream holds all", fmt.Sprintf("%s events/s (%s)", num(rate(bf.events, bf.ingest)), bf.ingest.Round(10*time.Millisecond)), "")
		row("", "first delivery → fluentd-sim stored all", fmt.Sprintf("%s events/s (%s)", num(rate(bf.events, bf.sink)), bf.sink.Round(10*time.Millisecond)), "")
		row("", "requests / connections at fluentd-sim", fmt.Sprintf("%d / %d (%.1f events per request)", bf.requests, bf.connections, float64(bf.events)/float64(max(bf.requests, 1))), "")
		g := ""
		if bf == r.def {
			g = goal(bf.overallRate() >= goalOverall, "≥ 50,000 events/s")
		}
		row("", "overall: ingest start → last delivery", fmt.Sprintf("%s events/s (%s)", num(bf.overallRate()), bf.overall.Round(10*time.Millisecond)), g)
	}
	backfillRows(r.def)
	if r.off != nil {
		backfillRows(r.off)
		share := r.budgetShare()
		row("budget ÷ off", "overall events/s, default budget ÷ budget off", fmt.Sprintf("%.1f%%", 100*share), goal(share >= goalBudgetShare, "≥ 85%"))
		// Less sensitive to the machine's load than the rates.
		row("", "ingest CPU time, default budget ÷ budget off", fmt.Sprintf("%.2f×", r.budgetCPU()), "")
	}
	if r.ext != nil {
		backfillRows(r.ext)
	}
	if r.opts.serialEvents > 0 {
		row("older model", fmt.Sprintf("sink, 1 event/request, 1 in flight; %d events, steady rate", r.serialEvents), num(r.serialRate)+" events/s", "")
		row("speed-up", "overall (default budget) ÷ older model", fmt.Sprintf("%.1f×", r.ratio()), goal(r.ratio() >= goalRatio, "≥ 25×"))
	}
	if r.live.sampled > 0 {
		what := fmt.Sprintf("%s events/s for %s: %d sampled (≈ %d expected)", num(r.live.rate), r.live.window, r.live.sampled, int(r.live.rate*r.live.window.Seconds()))
		row("live tail", what, "", "")
		row("", "event time → on the bus, p50 / p99 / max", delays(r.live.toBus), "")
		row("", "event time → at Fluentd, p50 / p99 / max", delays(r.live.toFluentd), "")
	}
	rssRows := func(stage string, ps []procRSS) {
		for _, p := range ps {
			g := p.noGoal
			if p.goal > 0 {
				g = goal(p.bytes <= p.goal, fmt.Sprintf("≤ %d MB", p.goal>>20))
			}
			row(stage, p.name, fmt.Sprintf("%d MB, CPU %s", p.bytes>>20, p.cpu.Round(100*time.Millisecond)), g)
			stage = ""
		}
	}
	for _, bf := range []*backfill{r.def, r.off, r.ext} {
		if bf != nil {
			rssRows("peak RSS, CPU: "+bf.name, bf.rss)
		}
	}
	if len(r.rss) > 0 {
		rssRows("peak RSS, CPU: other phases", r.rss)
	}
	for _, bf := range []*backfill{r.def, r.off, r.ext} {
		if bf != nil {
			row("checks: "+bf.name, "missing / duplicates at Fluentd / in the stream", fmt.Sprintf("%d / %d / %d", bf.missing, bf.fluentdDups, bf.streamDup), "")
		}
	}
	if r.live.sampled > 0 {
		row("checks: live tail", "live events on the bus never delivered", fmt.Sprint(r.live.undelivered), "")
	}
	tw.Flush()
	for _, n := range r.notes {
		fmt.Fprintln(out, "  note:", n)
	}
	fmt.Fprintln(out)
}

// reportMetrics hands the figures to the testing package: the default
// backfill's under their names of issue #6, the budget-off run's with the
// prefix off-, the external-NATS run's with ext-; RSS in MB.
func (r *report) reportMetrics(b *testing.B) {
	mb := func(n int64) float64 { return float64(n) / (1 << 20) }
	for _, bf := range []*backfill{r.def, r.off, r.ext} {
		if bf == nil {
			continue
		}
		b.ReportMetric(bf.overallRate(), bf.key+"events/s")
		b.ReportMetric(rate(bf.events, bf.ingest), bf.key+"ingest-events/s")
		b.ReportMetric(rate(bf.events, bf.sink), bf.key+"sink-events/s")
		b.ReportMetric(mb(bf.ingestRSS.bytes), bf.key+"ingest-rss-MB")
		b.ReportMetric(bf.ingestRSS.cpu.Seconds(), bf.key+"ingest-cpu-s")
		b.ReportMetric(mb(bf.sinkRSS.bytes), bf.key+"sink-rss-MB")
		if bf.external {
			b.ReportMetric(mb(bf.natsRSS.bytes), bf.key+"nats-server-rss-MB")
		}
	}
	if r.off != nil {
		b.ReportMetric(100*r.budgetShare(), "budget-vs-off-%")
		b.ReportMetric(r.budgetCPU(), "budget-cpu-x-off")
	}
	if r.opts.serialEvents > 0 {
		b.ReportMetric(r.serialRate, "older-model-events/s")
		b.ReportMetric(r.ratio(), "x-older-model")
	}
	if r.live.sampled > 0 {
		b.ReportMetric(ms(percentile(r.live.toFluentd, 50)), "live-p50-ms")
		b.ReportMetric(ms(percentile(r.live.toFluentd, 99)), "live-p99-ms")
	}
	if r.opts.liveFor > 0 {
		b.ReportMetric(mb(r.live.ingestRSS.bytes), "live-ingest-rss-MB")
	}
	// The sink's goal holds in every phase: its largest peak of all.
	var sinkPeak int64
	for _, p := range r.allRSS() {
		if strings.HasPrefix(p.name, "fluentd-sink") {
			sinkPeak = max(sinkPeak, p.bytes)
		}
	}
	b.ReportMetric(mb(sinkPeak), "max-sink-rss-MB")
}

// allRSS is every process row of the run.
func (r *report) allRSS() []procRSS {
	var out []procRSS
	for _, bf := range []*backfill{r.def, r.off, r.ext} {
		if bf != nil {
			out = append(out, bf.rss...)
		}
	}
	return append(out, r.rss...)
}

// problems are what makes the run invalid, not merely slow.
func (r *report) problems() []string {
	var out []string
	for _, bf := range []*backfill{r.def, r.off, r.ext} {
		if bf != nil && (bf.missing > 0 || bf.fluentdDups > 0 || bf.streamDup > 0) {
			out = append(out, fmt.Sprintf("backfill (%s): %d events missing, %d duplicates at Fluentd, %d in the stream", bf.name, bf.missing, bf.fluentdDups, bf.streamDup))
		}
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
