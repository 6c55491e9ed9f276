package ingest

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"
)

// defaultProgressEvery is how often a backfill reports progress.
const defaultProgressEvery = 5 * time.Second

// liveEveryFactor stretches the progress interval into the cadence of the
// lines logged once caught up (5s: one a minute, as the older tool's
// events-per-minute line): live events are few, and each line says so.
const liveEveryFactor = 12

// progress counts what the readers did, for the periodic progress line
// and the cursor-lag metric. While backfilling it logs "backfill
// progress" every interval; after the first pass that read everything
// there was, one "caught up, now following live events" line, then a
// "following live events" line every liveEveryFactor intervals in which
// events came.
type progress struct {
	log   zerolog.Logger
	m     *metrics
	begun time.Time

	datesTotal atomic.Int64
	datesDone  atomic.Int64
	datesAtGo  atomic.Int64 // dates done when this run started (-1: unknown)
	events     atomic.Int64
	chunks     atomic.Int64
	newest     atomic.Int64 // unix nanoseconds of the newest acknowledged event
	caughtUp   atomic.Bool  // the last pass read everything there was
	live       atomic.Bool  // a pass has read everything: the backfill is over

	bar io.Writer // a terminal to draw a progress bar on; nil: log lines
}

func newProgress(log zerolog.Logger, m *metrics) *progress {
	p := &progress{log: log, m: m, begun: time.Now()}
	p.datesAtGo.Store(-1)
	if term.IsTerminal(int(os.Stderr.Fd())) {
		p.bar = os.Stderr
	}
	return p
}

// SetDates records how many dates the backfill spans and how many are done.
func (p *progress) SetDates(total, done int) {
	p.datesTotal.Store(int64(total))
	p.datesDone.Store(int64(done))
	p.datesAtGo.CompareAndSwap(-1, int64(done))
}

// DateDone records one more date whose chunks are all exported.
func (p *progress) DateDone() { p.datesDone.Add(1) }

// Event records one acknowledged audit event of time at.
func (p *progress) Event(at time.Time) {
	p.events.Add(1)
	p.caughtUp.Store(false)
	n := at.UnixNano()
	for {
		old := p.newest.Load()
		if n <= old || p.newest.CompareAndSwap(old, n) {
			return
		}
	}
}

// ChunkDone records one export chunk finished.
func (p *progress) ChunkDone() { p.chunks.Add(1) }

// passDone records a pass that read everything there was. The first one
// ends the backfill: it is logged once, and the progress lines change to
// the live cadence.
func (p *progress) passDone() {
	p.caughtUp.Store(true)
	if !p.live.CompareAndSwap(false, true) {
		return
	}
	if p.bar != nil {
		fmt.Fprintln(p.bar)
	}
	p.log.Info().Int64("dates_total", p.datesTotal.Load()).Int64("events", p.events.Load()).
		Dur("took", time.Since(p.begun).Round(time.Second)).Msg("caught up, now following live events")
}

// run logs a progress line every interval while events flow.
func (p *progress) run(ctx context.Context, every time.Duration) error {
	if every <= 0 {
		every = defaultProgressEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var lastEvents int64
	lastAt := time.Now()
	ticks := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			switch n := p.newest.Load(); {
			case p.caughtUp.Load():
				p.m.cursorLag.Set(0)
			case n > 0:
				p.m.cursorLag.Set(now.Sub(time.Unix(0, n)).Seconds())
			}
			ev := p.events.Load()
			if p.live.Load() {
				if ticks++; ticks%liveEveryFactor != 0 {
					continue
				}
				if ev != lastEvents {
					p.liveLine(ev-lastEvents, now.Sub(lastAt))
				}
				lastEvents, lastAt = ev, now
				continue
			}
			if ev == lastEvents {
				lastAt = now
				continue
			}
			rate := float64(ev-lastEvents) / now.Sub(lastAt).Seconds()
			lastEvents, lastAt = ev, now
			p.line(now, ev, rate)
		}
	}
}

// liveLine reports the live events of the last period.
func (p *progress) liveLine(events int64, period time.Duration) {
	ev := p.log.Info().Int64("events", events).Dur("period", period.Round(time.Second)).Int64("events_total", p.events.Load())
	if n := p.newest.Load(); n > 0 {
		ev = ev.Time("newest_event", time.Unix(0, n).UTC())
	}
	ev.Msg("following live events")
}

// line reports progress with an estimate of the time left: a bar on a
// terminal, a log line otherwise.
func (p *progress) line(now time.Time, events int64, rate float64) {
	total, done := p.datesTotal.Load(), p.datesDone.Load()
	var eta time.Duration
	if atGo := p.datesAtGo.Load(); atGo >= 0 && done > atGo && done < total {
		eta = (now.Sub(p.begun) / time.Duration(done-atGo) * time.Duration(total-done)).Round(time.Second)
	}
	if p.bar != nil {
		const width = 30
		filled := 0
		if total > 0 {
			filled = int(int64(width) * done / total)
		}
		fmt.Fprintf(p.bar, "\r[%s%s] dates %d/%d  %d events  %.0f/s  ETA %s   ",
			strings.Repeat("#", filled), strings.Repeat("-", width-filled), done, total, events, rate, eta)
		return
	}
	ev := p.log.Info().Int64("dates_done", done).Int64("dates_total", total).
		Int64("events", events).Int64("chunks", p.chunks.Load()).Float64("events_per_sec", float64(int64(rate*10))/10)
	if n := p.newest.Load(); n > 0 {
		ev = ev.Time("newest_event", time.Unix(0, n).UTC())
	}
	if eta > 0 {
		ev = ev.Dur("eta", eta)
	}
	ev.Msg("backfill progress")
}
