package teleportsim

import (
	"errors"
	"fmt"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
)

// Server versions Ping reports.
const (
	// CurrentVersion is what a server with the bulk export API reports.
	CurrentVersion = "17.2.0"
	// OlderVersion is what a server in Older mode reports.
	OlderVersion = "13.4.0"
	// DefaultClusterName is the cluster name of events and Ping by default.
	DefaultClusterName = "sim.teleport.example"
)

// Options configures a simulated Teleport server. The zero value serves an
// empty audit log on a random 127.0.0.1 port.
type Options struct {
	// Addr is the listen address; empty means "127.0.0.1:0" (random port).
	Addr string
	// ClusterName is reported by Ping and carried by every event
	// (DefaultClusterName when empty).
	ClusterName string
	// Seed makes the generated events deterministic: the same Options give
	// the same events, ids and recordings.
	Seed int64

	// Events is the number of audit events the backfill holds, including
	// the session.start, session.end and session.upload events of Sessions.
	Events int
	// From and To bound the backfill's event times: From <= time < To.
	// They default to the 24 hours before now.
	From, To time.Time
	// Sessions is the number of recorded sessions in the backfill; each one
	// adds three audit events (start, end, upload). It is capped at Events/3.
	Sessions int
	// HugeEvents is the number of events over 1 MB: half of them (rounded
	// up) are db.session.query audit events, the rest print events in
	// session recordings.
	HugeEvents int
	// ChunksPerDate is the number of export chunks per UTC date, besides the
	// one single-event chunk every date with two or more events gets
	// (default 3).
	ChunksPerDate int

	// UploadLag is how long after its session.upload event a recording
	// becomes readable; before that the session streams answer NotFound.
	UploadLag time.Duration
	// MissingRecordingRate is the fraction of sessions (0..1) whose
	// recording never exists (recording was off): streams answer NotFound.
	MissingRecordingRate float64

	// Older makes the server behave like Teleport v13–v16: the bulk export
	// RPCs and StreamUnstructuredSessionEvents answer Unimplemented.
	Older bool
	// Search is how searches are answered: SearchAuto (the zero value)
	// answers from the file log, at the real file log's cost, when Older
	// is set, and from an index otherwise.
	Search SearchMode

	// LiveRate is the number of audit events per second appended while the
	// server runs (0 = none). Live events are visible to searches at once
	// and to the bulk export when their chunk is sealed.
	LiveRate float64
	// LiveChunkAge is how long a live chunk collects events before it is
	// sealed and listed by GetEventExportChunks (default 1s).
	LiveChunkAge time.Duration

	// Prerender renders every backfill event on all cores before Start
	// returns, so that serving them later costs little CPU (events are
	// otherwise rendered when first served, and kept).
	Prerender bool

	// DenyLocks makes UpsertLock answer PermissionDenied, as Teleport does
	// for a role without lock create/update.
	DenyLocks bool

	// Faults are the faults in force from the start; see SetFaults.
	Faults Faults

	// CA signs the server certificate and client identities. Nil makes a
	// new one; pass a loaded one to keep identities valid across processes.
	CA *certs.CA

	// Now is the clock (default time.Now). It decides upload lag, live event
	// times and lock expiry.
	Now func() time.Time
}

// Faults are failures injected into every RPC except Ping. The zero value
// injects nothing.
type Faults struct {
	// UnavailableRate is the fraction of calls (0..1) answered
	// codes.Unavailable.
	UnavailableRate float64 `json:"unavailable_rate"`
	// RateLimitRate is the fraction of calls (0..1) answered
	// codes.ResourceExhausted "rate limit exceeded".
	RateLimitRate float64 `json:"rate_limit_rate"`
	// CutAfter cuts every server stream with codes.Unavailable after it
	// has sent this many messages (0 = never).
	CutAfter int `json:"cut_after"`
	// Latency is added before every call is answered.
	Latency time.Duration `json:"latency"`
}

func (f Faults) validate() error {
	if f.UnavailableRate < 0 || f.UnavailableRate > 1 {
		return fmt.Errorf("unavailable rate %v is outside 0..1", f.UnavailableRate)
	}
	if f.RateLimitRate < 0 || f.RateLimitRate > 1 {
		return fmt.Errorf("rate limit rate %v is outside 0..1", f.RateLimitRate)
	}
	if f.UnavailableRate+f.RateLimitRate > 1 {
		return fmt.Errorf("unavailable rate %v plus rate limit rate %v exceed 1", f.UnavailableRate, f.RateLimitRate)
	}
	if f.CutAfter < 0 {
		return fmt.Errorf("cut-after %d is negative", f.CutAfter)
	}
	if f.Latency < 0 {
		return fmt.Errorf("latency %s is negative", f.Latency)
	}
	return nil
}

// withDefaults checks o and fills its zero fields.
func (o Options) withDefaults() (Options, error) {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.ClusterName == "" {
		o.ClusterName = DefaultClusterName
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.To.IsZero() {
		o.To = o.Now().UTC().Truncate(time.Millisecond)
	}
	if o.From.IsZero() {
		o.From = o.To.Add(-24 * time.Hour)
	}
	if o.ChunksPerDate == 0 {
		o.ChunksPerDate = 3
	}
	if o.LiveChunkAge == 0 {
		o.LiveChunkAge = time.Second
	}
	var errs []error
	if o.Events < 0 {
		errs = append(errs, fmt.Errorf("events %d is negative", o.Events))
	}
	if o.Sessions < 0 {
		errs = append(errs, fmt.Errorf("sessions %d is negative", o.Sessions))
	}
	if o.HugeEvents < 0 {
		errs = append(errs, fmt.Errorf("huge events %d is negative", o.HugeEvents))
	}
	if o.ChunksPerDate < 1 || o.ChunksPerDate > 1000 {
		errs = append(errs, fmt.Errorf("chunks per date %d is outside 1..1000", o.ChunksPerDate))
	}
	if !o.From.Before(o.To) {
		errs = append(errs, fmt.Errorf("from %s is not before to %s", o.From.Format(time.RFC3339), o.To.Format(time.RFC3339)))
	}
	if o.UploadLag < 0 {
		errs = append(errs, fmt.Errorf("upload lag %s is negative", o.UploadLag))
	}
	if o.MissingRecordingRate < 0 || o.MissingRecordingRate > 1 {
		errs = append(errs, fmt.Errorf("missing recording rate %v is outside 0..1", o.MissingRecordingRate))
	}
	if o.LiveRate < 0 {
		errs = append(errs, fmt.Errorf("live rate %v is negative", o.LiveRate))
	}
	if o.Search < SearchAuto || o.Search > SearchFileLog {
		errs = append(errs, fmt.Errorf("search mode %d is unknown", o.Search))
	}
	if o.LiveChunkAge < 0 {
		errs = append(errs, fmt.Errorf("live chunk age %s is negative", o.LiveChunkAge))
	}
	if err := o.Faults.validate(); err != nil {
		errs = append(errs, fmt.Errorf("faults: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return o, fmt.Errorf("simulated teleport options: %w", err)
	}
	if o.Search == SearchAuto {
		o.Search = SearchIndexed
		if o.Older {
			o.Search = SearchFileLog
		}
	}
	o.From, o.To = o.From.UTC(), o.To.UTC()
	if o.Sessions > o.Events/3 {
		o.Sessions = o.Events / 3
	}
	return o, nil
}
