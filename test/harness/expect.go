package harness

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

// AuditTag is the Fluentd tag of audit events in the pipeline's sinks.
const AuditTag = "test.log"

// SessionTag is the Fluentd tag of one session's recording events, as the
// sink builds it from the pipeline's session URL.
func SessionTag(sid string) string { return "session." + sid + ".log" }

// Expected is what a run must deliver, read from teleport-sim: every audit
// event id, and for each session that has a recording the number of its
// events left after the skipped types.
type Expected struct {
	AuditIDs []string
	Sessions []teleportsim.SessionInfo
	// SessionEvents maps a session id to the events of its recording that
	// must arrive; sessions without a recording are absent.
	SessionEvents map[string]int
	// SessionTotal is the sum of SessionEvents.
	SessionTotal int
}

// Expect asks teleport-sim what it holds. skip are the session event types
// the ingest drops (its skip-session-types).
func (p *Pipeline) Expect(ctx context.Context, skip ...string) (*Expected, error) {
	ids, err := p.TeleportIDs(ctx)
	if err != nil {
		return nil, fmt.Errorf("teleport-sim ids: %w", err)
	}
	sessions, err := p.TeleportSessions(ctx)
	if err != nil {
		return nil, fmt.Errorf("teleport-sim sessions: %w", err)
	}
	e := &Expected{AuditIDs: ids, Sessions: sessions, SessionEvents: make(map[string]int)}
	for _, s := range sessions {
		if s.Missing {
			continue
		}
		n := ExpectedSessionEvents([]teleportsim.SessionInfo{s}, skip...)
		e.SessionEvents[s.ID] = n
		e.SessionTotal += n
	}
	return e, nil
}

// Progress is how much of a run Fluentd has, counted without duplicates.
type Progress struct {
	Audit, Session int64
	// Duplicates are records stored again under a tag that already had
	// their id.
	Duplicates int64
	// OtherTags counts records under tags that are neither AuditTag nor a
	// session tag.
	OtherTags int64
}

// String is a one-line summary for logs and wait states.
func (pr Progress) String() string {
	return fmt.Sprintf("fluentd: audit %d, session %d, duplicates %d, other tags %d", pr.Audit, pr.Session, pr.Duplicates, pr.OtherTags)
}

// FluentdProgress reads fluentd-sim's counts: cheap enough to poll.
func (p *Pipeline) FluentdProgress(ctx context.Context) (Progress, error) {
	st, err := p.FluentdStats(ctx)
	if err != nil {
		return Progress{}, err
	}
	pr := Progress{Duplicates: st.DuplicatesTotal}
	for tag, n := range st.Stored {
		unique := n - st.Duplicates[tag]
		switch {
		case tag == AuditTag:
			pr.Audit += unique
		case strings.HasPrefix(tag, "session."):
			pr.Session += unique
		default:
			pr.OtherTags += n
		}
	}
	return pr, nil
}

// Done reports whether pr covers everything e expects.
func (e *Expected) Done(pr Progress) bool {
	return pr.Audit >= int64(len(e.AuditIDs)) && pr.Session >= int64(e.SessionTotal)
}

// Delivery compares, by event id, what arrived somewhere (Fluentd, a
// stream, another consumer) with what was expected.
type Delivery struct {
	Where string
	// Audit events: ids never seen, seen but not in Teleport, and the
	// number of extra copies (an id seen three times counts two).
	AuditMissing, AuditUnknown []string
	AuditDuplicates            int
	// Session events: missing per session id, copies too many, ids that do
	// not belong (wrong session, index out of range, unknown session).
	SessionMissing    map[string]int
	SessionDuplicates int
	SessionStray      []string
}

// Problems lists what is wrong, for test failures; empty when the delivery
// is complete. Duplicates are reported here; callers that allow some
// (at-least-once delivery) check AuditDuplicates and SessionDuplicates
// themselves and use Lost instead.
func (d Delivery) Problems() []string {
	out := d.Lost()
	if d.AuditDuplicates > 0 {
		out = append(out, fmt.Sprintf("%s: %d duplicate audit events", d.Where, d.AuditDuplicates))
	}
	if d.SessionDuplicates > 0 {
		out = append(out, fmt.Sprintf("%s: %d duplicate session events", d.Where, d.SessionDuplicates))
	}
	return out
}

// Lost lists missing, unknown and stray events, ignoring duplicates.
func (d Delivery) Lost() []string {
	var out []string
	if n := len(d.AuditMissing); n > 0 {
		out = append(out, fmt.Sprintf("%s: %d audit events missing, e.g. %s", d.Where, n, sample(d.AuditMissing)))
	}
	if n := len(d.AuditUnknown); n > 0 {
		out = append(out, fmt.Sprintf("%s: %d audit ids Teleport does not hold, e.g. %s", d.Where, n, sample(d.AuditUnknown)))
	}
	if len(d.SessionMissing) > 0 {
		total := 0
		var sids []string
		for sid, n := range d.SessionMissing {
			total += n
			sids = append(sids, sid)
		}
		sort.Strings(sids)
		out = append(out, fmt.Sprintf("%s: %d session events missing in %d sessions, e.g. %s", d.Where, total, len(sids), sample(sids)))
	}
	if n := len(d.SessionStray); n > 0 {
		out = append(out, fmt.Sprintf("%s: %d session events that do not belong where they are, e.g. %s", d.Where, n, sample(d.SessionStray)))
	}
	return out
}

func sample(ids []string) string {
	const show = 5
	if len(ids) > show {
		return strings.Join(ids[:show], ", ") + ", …"
	}
	return strings.Join(ids, ", ")
}

// CompareAudit checks audit ids (id → times seen) against Teleport's.
func (e *Expected) CompareAudit(where string, got map[string]int) Delivery {
	d := Delivery{Where: where, SessionMissing: map[string]int{}}
	want := make(map[string]bool, len(e.AuditIDs))
	for _, id := range e.AuditIDs {
		want[id] = true
		switch n := got[id]; {
		case n == 0:
			d.AuditMissing = append(d.AuditMissing, id)
		case n > 1:
			d.AuditDuplicates += n - 1
		}
	}
	for id := range got {
		if !want[id] {
			d.AuditUnknown = append(d.AuditUnknown, id)
		}
	}
	sort.Strings(d.AuditUnknown)
	return d
}

// compareSession adds one session's ids ("<sid>/<index>" → times seen) to d.
func (e *Expected) compareSession(d *Delivery, sid string, got map[string]int) {
	want, ok := e.SessionEvents[sid]
	distinct := 0
	for id, n := range got {
		s, idx, found := strings.Cut(id, "/")
		i, err := strconv.Atoi(idx)
		if !ok || !found || s != sid || err != nil || i < 0 || i >= e.recordingLength(sid) {
			d.SessionStray = append(d.SessionStray, sid+": "+id)
			continue
		}
		distinct++
		d.SessionDuplicates += n - 1
	}
	if distinct < want {
		d.SessionMissing[sid] = want - distinct
	}
}

func (e *Expected) recordingLength(sid string) int {
	for _, s := range e.Sessions {
		if s.ID == sid {
			return s.Events
		}
	}
	return 0
}

// CompareStreams checks the audit and session streams' Nats-Msg-Id counts
// (Inspector.MsgIDs) against Teleport.
func (e *Expected) CompareStreams(audit, sessions map[string]int) Delivery {
	d := e.CompareAudit("stream", audit)
	bySession := make(map[string]map[string]int)
	for id, n := range sessions {
		sid, _, _ := strings.Cut(id, "/")
		if bySession[sid] == nil {
			bySession[sid] = make(map[string]int)
		}
		bySession[sid][id] = n
	}
	for sid := range e.SessionEvents {
		e.compareSession(&d, sid, bySession[sid])
	}
	for sid, ids := range bySession {
		if _, ok := e.SessionEvents[sid]; !ok {
			e.compareSession(&d, sid, ids)
		}
	}
	sort.Strings(d.SessionStray)
	return d
}

// CompareFluentd reads fluentd-sim's ids, tag by tag, and checks every
// audit event arrived under AuditTag and every session event under its
// session's tag.
func (e *Expected) CompareFluentd(ctx context.Context, p *Pipeline) (Delivery, error) {
	audit, err := p.FluentdIDs(ctx, AuditTag)
	if err != nil {
		return Delivery{}, err
	}
	d := e.CompareAudit("fluentd", audit)
	st, err := p.FluentdStats(ctx)
	if err != nil {
		return Delivery{}, err
	}
	for tag, n := range st.Stored {
		if tag != AuditTag && !strings.HasPrefix(tag, "session.") {
			d.SessionStray = append(d.SessionStray, fmt.Sprintf("%d records under tag %q", n, tag))
		}
	}
	seen := make(map[string]bool)
	for tag := range st.Stored {
		sid, ok := strings.CutPrefix(tag, "session.")
		if !ok {
			continue
		}
		sid, ok = strings.CutSuffix(sid, ".log")
		if !ok {
			d.SessionStray = append(d.SessionStray, fmt.Sprintf("records under tag %q", tag))
			continue
		}
		ids, err := p.FluentdIDs(ctx, tag)
		if err != nil {
			return Delivery{}, err
		}
		seen[sid] = true
		e.compareSession(&d, sid, ids)
	}
	for sid := range e.SessionEvents {
		if !seen[sid] {
			e.compareSession(&d, sid, nil)
		}
	}
	sort.Strings(d.SessionStray)
	return d, nil
}
