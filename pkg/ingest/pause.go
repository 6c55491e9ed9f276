package ingest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
)

// pauser tracks whether ingest is paused because the bus has no room for
// its events (a stream at max-bytes, the JetStream store at its limit).
// Nothing is lost while paused: the refused events are not acknowledged,
// so no position moves past them, and they are published again, with
// backoff, until room is made. The pause is logged once when it starts and
// once when it ends, shown by the paused metric and by /readyz.
type pauser struct {
	gauge *prometheus.GaugeVec // 1 for a reason while a stream is paused for it

	mu     sync.Mutex
	paused map[string]*pause // by stream kind ("audit", "session", or storeKind)
}

// pause is one stream kind's pause.
type pause struct {
	reason, detail string
	since          time.Time
	refusal        time.Time // the latest refused publish
	stored         int       // publishes stored since then
}

// A stream a few bytes short of full still takes a small event now and
// then, which is no end of a pause: a pause ends with resumeStored stored
// publishes in a row, or a stored one resumeQuiet after the latest refusal.
const (
	resumeStored = 64
	resumeQuiet  = 5 * time.Second
)

func newPauser(gauge *prometheus.GaugeVec) *pauser {
	for _, r := range []string{bus.NoRoomMaxBytes, bus.NoRoomStore} {
		gauge.WithLabelValues(r).Set(0)
	}
	return &pauser{gauge: gauge, paused: map[string]*pause{}}
}

// storeKind keys the pause of a full store, which every stream shares.
const storeKind = "store"

// streamKind names the stream an event goes to, for the pause's log lines.
func streamKind(session bool) string {
	if session {
		return "session"
	}
	return "audit"
}

// refused records a publish to the kind's stream refused for lack of
// room; the first one of a pause logs what is full and what to do.
func (p *pauser) refused(log zerolog.Logger, err error, storage, kind string) {
	reason, ok := bus.NoRoom(err)
	if !ok {
		return
	}
	if reason == bus.NoRoomStore {
		kind = storeKind // the store is full for every stream
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if ps := p.paused[kind]; ps != nil {
		ps.refusal, ps.stored = now, 0
		return
	}
	ps := &pause{reason: reason, since: now, refusal: now}
	p.paused[kind] = ps
	p.setGauge()
	switch reason {
	case bus.NoRoomMaxBytes:
		ps.detail = fmt.Sprintf("the %s stream is full ([nats] max-bytes reached; it refuses new events rather than drop unread ones)", kind)
		log.Error().Err(err).Msg("ingest paused: " + ps.detail + "; positions are kept and publishing is retried until room is made: raise [nats] max-bytes, or let max-age expire old messages")
	default:
		ps.detail = "the JetStream store is full (the server's max store limit)"
		what := "free space on the NATS servers or raise their max_file_store"
		if storage != "" {
			what = fmt.Sprintf("free space in storage directory %q and restart ingest "+
				"(the embedded server sets its limit when it starts: 75%% of the free space, plus what it holds)", storage)
		}
		log.Error().Err(err).Msg("ingest paused: " + ps.detail + "; positions are kept and publishing is retried: " + what)
	}
}

// published records a publish to the kind's stream that JetStream
// acknowledged, which may end its pause (see resumeStored). A duplicate
// (an event stored before, published again by a retry from the saved
// position) proves no room and is ignored.
func (p *pauser) published(log zerolog.Logger, kind string, duplicate bool) {
	if duplicate {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range []string{kind, storeKind} {
		ps := p.paused[k]
		if ps == nil {
			continue
		}
		if ps.stored++; ps.stored < resumeStored && time.Since(ps.refusal) < resumeQuiet {
			continue
		}
		delete(p.paused, k)
		p.setGauge()
		log.Info().Str("stream", k).Str("reason", ps.reason).Dur("paused_for", time.Since(ps.since).Round(time.Second)).
			Msg("ingest resumed: the bus has room again")
	}
}

// setGauge shows which reasons hold a pause.
func (p *pauser) setGauge() {
	for _, r := range []string{bus.NoRoomMaxBytes, bus.NoRoomStore} {
		v := 0.0
		for _, ps := range p.paused {
			if ps.reason == r {
				v = 1
			}
		}
		p.gauge.WithLabelValues(r).Set(v)
	}
}

// ready is nil unless paused, when it says why (for /readyz).
func (p *pauser) ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var why []string
	var since time.Time
	for _, ps := range p.paused {
		why = append(why, ps.detail)
		if since.IsZero() || ps.since.Before(since) {
			since = ps.since
		}
	}
	if len(why) == 0 {
		return nil
	}
	slices.Sort(why)
	return fmt.Errorf("paused since %s: %s", since.UTC().Format(time.RFC3339), strings.Join(why, "; "))
}

// noRoom reports whether err is (or wraps) a publish refused for lack of
// room: retried quietly, as the pause was logged once.
func noRoom(err error) bool {
	_, ok := bus.NoRoom(err)
	return ok
}
