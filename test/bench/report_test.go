package bench

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

// report is what one run measured.
type report struct {
	opts options

	events int // audit events teleport-sim held in each backfill

	// The backfill runs: defs with the default budget (at least one),
	// offs with the budget off (none when skipped), BENCH_PAIRS of each;
	// ext with an external NATS server (nil when skipped); order is all of
	// them in the order they ran.
	defs, offs []*backfill
	ext        *backfill
	order      []*backfill

	// serial is the older tool's model (runSerial).
	serial serialReport

	live liveReport

	// rss are the older model's sink and the live phase's processes.
	rss   []procRSS
	notes []string
}

// setting is one way of running ingest in the backfill phase.
type setting struct {
	name  string // in the table
	label string // name, numbered when the setting runs more than once
	key   string // prefix of its metrics
	dir   string // its working directory, under the run's
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

	events                int
	ingest, sink, overall time.Duration
	requests, connections int64 // what fluentd-sim answered and accepted
	// storedBytes and storedMsgs are the audit stream's size after the
	// backfill: what the server's block caches and the budget's write pace
	// (bus.StoredSize) count per event.
	storedBytes, storedMsgs uint64
	// waits are ingest's publish waits when the backfill was done: with
	// ingest's duration, how many of its readers waited on the write pace
	// and for a PubAck slot, on average.
	waits publishWaits
	idChecks

	ingestRSS, sinkRSS, natsRSS procRSS
	rss                         []procRSS // every process, for the table
}

func (b *backfill) overallRate() float64 { return rate(b.events, b.overall) }

// idChecks are the by-id checks of a phase (checkIDs).
type idChecks struct {
	missing                int // ids teleport-sim holds that fluentd-sim never stored
	fluentdDups, streamDup int
}

// serialReport is what the older tool's model measured.
type serialReport struct {
	// events were stored by fluentd-sim (all: every event teleport-sim
	// held, else BENCH_SERIAL_MAX ended it first), at rate from the first
	// delivery on.
	events int64
	all    bool
	rate   float64
	// idChecks: missing is counted only when all were to be delivered.
	idChecks
}

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

// all are the backfill runs, default budget first.
func (r *report) all() []*backfill {
	out := append(append([]*backfill(nil), r.defs...), r.offs...)
	if r.ext != nil {
		out = append(out, r.ext)
	}
	return out
}

// median is the median of f over runs (the mean of the middle two for an
// even count); 0 for none.
func median(runs []*backfill, f func(*backfill) float64) float64 {
	if len(runs) == 0 {
		return 0
	}
	v := make([]float64, len(runs))
	for i, bf := range runs {
		v[i] = f(bf)
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func overall(bf *backfill) float64   { return bf.overallRate() }
func ingestCPU(bf *backfill) float64 { return bf.ingestRSS.cpu.Seconds() }

// peak is the largest of f over runs.
func peak(runs []*backfill, f func(*backfill) int64) int64 {
	var m int64
	for _, bf := range runs {
		m = max(m, f(bf))
	}
	return m
}

// ratio is the default backfill's overall rate (median) as many times the
// older model's; 0 when that phase did not run.
func (r *report) ratio() float64 {
	if r.serial.rate == 0 {
		return 0
	}
	return median(r.defs, overall) / r.serial.rate
}

// budgetShare is the default budget's overall rate as a share of the
// budget-off run's (medians); 0 when that run was skipped.
func (r *report) budgetShare() float64 {
	off := median(r.offs, overall)
	if off == 0 {
		return 0
	}
	return median(r.defs, overall) / off
}

// budgetCPU is ingest's CPU time in the default budget's backfill as many
// times the budget-off run's (medians); 0 when that run was skipped.
func (r *report) budgetCPU() float64 {
	off := median(r.offs, ingestCPU)
	if off == 0 {
		return 0
	}
	return median(r.defs, ingestCPU) / off
}

// print writes the table.
func (r *report) print(out io.Writer) {
	fmt.Fprintf(out, "\nteleport-event-bus pipeline benchmark: %d audit events; teleport-sim → ingest → NATS → fluentd-sink → fluentd-sim over mTLS, each a process on this machine (%d CPUs)\n",
		r.events, runtime.NumCPU())
	fmt.Fprintln(out, "backfill settings, in the order they ran, each on a fresh pipeline:")
	for _, bf := range r.order {
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
		fmt.Fprintf(out, "  %-18s %s; ingest: %s; %s; load average %.1f → %.1f\n", bf.label+":", how, flags, budget, bf.loadStart, bf.loadEnd)
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
		stage := "backfill, " + bf.label
		row(stage, "ingest start → audit stream holds all", fmt.Sprintf("%s events/s (%s)", num(rate(bf.events, bf.ingest)), bf.ingest.Round(10*time.Millisecond)), "")
		row("", "first delivery → fluentd-sim stored all", fmt.Sprintf("%s events/s (%s)", num(rate(bf.events, bf.sink)), bf.sink.Round(10*time.Millisecond)), "")
		row("", "requests / connections at fluentd-sim", fmt.Sprintf("%d / %d (%.1f events per request)", bf.requests, bf.connections, float64(bf.events)/float64(max(bf.requests, 1))), "")
		if bf.waits.ok {
			secs := bf.ingest.Seconds()
			row("", "ingest: publishes waiting, on average", fmt.Sprintf("%.2f on the write pace, %.2f for a PubAck slot (of max-in-flight)", bf.waits.pace/secs, bf.waits.inFlight/secs), "")
		}
		row("", "audit stream: bytes stored per event", fmt.Sprintf("%d (%s MiB for %s events)", bf.storedBytes/max(bf.storedMsgs, 1), num(float64(bf.storedBytes)/(1<<20)), num(float64(bf.storedMsgs))), "")
		g := ""
		if bf == r.defs[0] && len(r.defs) == 1 {
			g = goal(bf.overallRate() >= goalOverall, "≥ 50,000 events/s")
		}
		row("", "overall: ingest start → last delivery", fmt.Sprintf("%s events/s (%s)", num(bf.overallRate()), bf.overall.Round(10*time.Millisecond)), g)
	}
	backfillRows(r.defs[0])
	if len(r.offs) > 0 {
		backfillRows(r.offs[0])
	}
	if len(r.defs) > 1 {
		var each []string
		for _, bf := range r.order {
			if !bf.external {
				each = append(each, bf.label+" "+num(bf.overallRate()))
			}
		}
		row("each pair", "overall events/s, in the order they ran", strings.Join(each, " · "), "")
		m := median(r.defs, overall)
		row("", fmt.Sprintf("overall events/s, default budget, median of %d", len(r.defs)), num(m), goal(m >= goalOverall, "≥ 50,000 events/s"))
		row("", fmt.Sprintf("overall events/s, budget off, median of %d", len(r.offs)), num(median(r.offs, overall)), "")
	}
	if len(r.offs) > 0 {
		share := r.budgetShare()
		what, cpu := "overall events/s, default budget ÷ budget off", "ingest CPU time, default budget ÷ budget off"
		if len(r.offs) > 1 {
			what, cpu = "medians of "+what, "medians of "+cpu
		}
		row("budget ÷ off", what, fmt.Sprintf("%.1f%%", 100*share), goal(share >= goalBudgetShare, "≥ 85%"))
		// Less sensitive to the machine's load than the rates.
		row("", cpu, fmt.Sprintf("%.2f×", r.budgetCPU()), "")
	}
	if r.ext != nil {
		backfillRows(r.ext)
	}
	if r.opts.serialEvents > 0 {
		row("older model", fmt.Sprintf("sink, 1 event/request, 1 in flight; %d events, steady rate", r.serial.events), num(r.serial.rate)+" events/s", "")
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
				g = goal(p.bytes <= p.goal, fmt.Sprintf("≤ %d MiB", p.goal>>20))
			}
			row(stage, p.name, fmt.Sprintf("%d MiB, CPU %s", p.bytes>>20, p.cpu.Round(100*time.Millisecond)), g)
			stage = ""
		}
	}
	for _, bf := range r.all() {
		rssRows("peak RSS, CPU: "+bf.label, bf.rss)
	}
	if len(r.rss) > 0 {
		rssRows("peak RSS, CPU: other phases", r.rss)
	}
	for _, bf := range r.all() {
		row("checks: "+bf.label, "missing / duplicates at Fluentd / in the stream", fmt.Sprintf("%d / %d / %d", bf.missing, bf.fluentdDups, bf.streamDup), "")
	}
	if r.opts.serialEvents > 0 {
		missing := fmt.Sprint(r.serial.missing)
		if !r.serial.all {
			missing = "not all sent (BENCH_SERIAL_MAX)"
		}
		row("checks: older model", "missing / duplicates at Fluentd / in the stream", fmt.Sprintf("%s / %d / %d", missing, r.serial.fluentdDups, r.serial.streamDup), "")
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
// prefix off-, the external-NATS run's with ext-; rates and CPU times are
// medians over the runs of a setting (BENCH_PAIRS), RSS the largest peak,
// in MiB (2^20 bytes).
func (r *report) reportMetrics(b *testing.B) {
	mb := func(n int64) float64 { return float64(n) / (1 << 20) }
	groups := [][]*backfill{r.defs, r.offs}
	if r.ext != nil {
		groups = append(groups, []*backfill{r.ext})
	}
	for _, runs := range groups {
		if len(runs) == 0 {
			continue
		}
		key := runs[0].key
		b.ReportMetric(median(runs, overall), key+"events/s")
		b.ReportMetric(median(runs, func(bf *backfill) float64 { return rate(bf.events, bf.ingest) }), key+"ingest-events/s")
		b.ReportMetric(median(runs, func(bf *backfill) float64 { return rate(bf.events, bf.sink) }), key+"sink-events/s")
		b.ReportMetric(mb(peak(runs, func(bf *backfill) int64 { return bf.ingestRSS.bytes })), key+"ingest-rss-MiB")
		b.ReportMetric(median(runs, ingestCPU), key+"ingest-cpu-s")
		b.ReportMetric(mb(peak(runs, func(bf *backfill) int64 { return bf.sinkRSS.bytes })), key+"sink-rss-MiB")
		if runs[0].external {
			b.ReportMetric(mb(peak(runs, func(bf *backfill) int64 { return bf.natsRSS.bytes })), key+"nats-server-rss-MiB")
		}
	}
	if len(r.offs) > 0 {
		b.ReportMetric(100*r.budgetShare(), "budget-vs-off-%")
		b.ReportMetric(r.budgetCPU(), "budget-cpu-x-off")
	}
	if r.opts.serialEvents > 0 {
		b.ReportMetric(r.serial.rate, "older-model-events/s")
		b.ReportMetric(r.ratio(), "x-older-model")
	}
	if r.live.sampled > 0 {
		b.ReportMetric(ms(percentile(r.live.toFluentd, 50)), "live-p50-ms")
		b.ReportMetric(ms(percentile(r.live.toFluentd, 99)), "live-p99-ms")
	}
	if r.opts.liveFor > 0 {
		b.ReportMetric(mb(r.live.ingestRSS.bytes), "live-ingest-rss-MiB")
	}
	// The sink's goal holds in every phase: its largest peak of all.
	var sinkPeak int64
	for _, p := range r.allRSS() {
		if strings.HasPrefix(p.name, "fluentd-sink") {
			sinkPeak = max(sinkPeak, p.bytes)
		}
	}
	b.ReportMetric(mb(sinkPeak), "max-sink-rss-MiB")
}

// allRSS is every process row of the run.
func (r *report) allRSS() []procRSS {
	var out []procRSS
	for _, bf := range r.all() {
		out = append(out, bf.rss...)
	}
	return append(out, r.rss...)
}

// problems are what makes the run invalid, not merely slow.
func (r *report) problems() []string {
	var out []string
	for _, bf := range r.all() {
		if bf.missing > 0 || bf.fluentdDups > 0 || bf.streamDup > 0 {
			out = append(out, fmt.Sprintf("backfill (%s): %d events missing, %d duplicates at Fluentd, %d in the stream", bf.label, bf.missing, bf.fluentdDups, bf.streamDup))
		}
	}
	// The comparison is only one when ingest applied what the rows say (the
	// knobs left at their defaults).
	if len(r.opts.ingestFlags) == 0 && slices.Equal(r.opts.offFlags, defaultOffFlags) {
		for _, bf := range r.offs {
			if bf.budgetKnown && bf.budget != 0 {
				out = append(out, fmt.Sprintf("backfill (%s): ingest reports a memory budget of %d bytes, not off", bf.label, bf.budget))
			}
		}
		for _, bf := range r.defs {
			if bf.budgetKnown && bf.budget == 0 {
				out = append(out, fmt.Sprintf("backfill (%s): ingest reports its memory budget off", bf.label))
			}
		}
	}
	if c := r.serial.idChecks; c.missing > 0 || c.fluentdDups > 0 || c.streamDup > 0 {
		out = append(out, fmt.Sprintf("older model: %d events missing, %d duplicates at Fluentd, %d in the stream", c.missing, c.fluentdDups, c.streamDup))
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
