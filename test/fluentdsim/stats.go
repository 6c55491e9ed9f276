package fluentdsim

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"
)

// Stats are the server's counts since it started (or since Reset).
type Stats struct {
	// Requests is the number of HTTP requests received.
	Requests int64 `json:"requests"`
	// Connections is the number of connections accepted; with keep-alive it
	// stays far below Requests.
	Connections int64 `json:"connections"`
	// HandshakeErrors counts refused TLS handshakes (no client certificate,
	// one from another CA, …).
	HandshakeErrors int64 `json:"handshake_errors"`
	// Stored is the number of records stored per tag; StoredTotal their sum.
	Stored      map[string]int64 `json:"stored"`
	StoredTotal int64            `json:"stored_total"`
	// Duplicates counts, per tag, stored records whose id had been stored
	// before under that tag; DuplicatesTotal their sum.
	Duplicates      map[string]int64 `json:"duplicates"`
	DuplicatesTotal int64            `json:"duplicates_total"`
	// Dropped counts what was answered 2xx but not stored: a malformed,
	// empty or non-object body counts one, an array element that is not an
	// object counts one, and each record under a tag no <match> takes.
	Dropped int64 `json:"dropped"`
	// Rejected counts 4xx answers, Errors 5xx answers.
	Rejected int64 `json:"rejected"`
	Errors   int64 `json:"errors"`
	// DroppedConnections counts connections closed without an answer by the
	// DropPercent fault.
	DroppedConnections int64 `json:"dropped_connections"`
	// HandshakeRefused counts in_forward shared-key handshakes answered
	// with PONG false; NoAcks the messages stored and not acknowledged
	// (the NoAck fault).
	HandshakeRefused int64 `json:"handshake_refused"`
	NoAcks           int64 `json:"no_acks"`
}

// String is a one-line summary, printed by fluentd-sim on exit.
func (s Stats) String() string {
	tags := make([]string, 0, len(s.Stored))
	for t := range s.Stored {
		tags = append(tags, t)
	}
	sort.Strings(tags)
	per := make([]string, 0, len(tags))
	for _, t := range tags {
		per = append(per, fmt.Sprintf("%s=%d", t, s.Stored[t]))
	}
	return fmt.Sprintf("requests=%d connections=%d stored=%d [%s] duplicates=%d dropped=%d rejected=%d errors=%d dropped_connections=%d handshake_errors=%d handshake_refused=%d no_acks=%d",
		s.Requests, s.Connections, s.StoredTotal, strings.Join(per, " "), s.DuplicatesTotal,
		s.Dropped, s.Rejected, s.Errors, s.DroppedConnections, s.HandshakeErrors, s.HandshakeRefused, s.NoAcks)
}

// counters are the request-level counts, updated without locks.
type counters struct {
	requests, connections, handshakeErrors  atomic.Int64
	dropped, rejected, errors, droppedConns atomic.Int64
	handshakeRefused, noAcks                atomic.Int64
}

func (c *counters) fill(s *Stats) {
	s.Requests = c.requests.Load()
	s.Connections = c.connections.Load()
	s.HandshakeErrors = c.handshakeErrors.Load()
	s.Dropped = c.dropped.Load()
	s.Rejected = c.rejected.Load()
	s.Errors = c.errors.Load()
	s.DroppedConnections = c.droppedConns.Load()
	s.HandshakeRefused = c.handshakeRefused.Load()
	s.NoAcks = c.noAcks.Load()
}

func (c *counters) reset() {
	for _, v := range []*atomic.Int64{&c.requests, &c.connections, &c.handshakeErrors,
		&c.dropped, &c.rejected, &c.errors, &c.droppedConns, &c.handshakeRefused, &c.noAcks} {
		v.Store(0)
	}
}

// faultsJSON is Faults on the wire, with the latency as a Go duration
// string ("250ms").
type faultsJSON struct {
	ErrorPercent float64  `json:"error_percent,omitempty"`
	DropPercent  float64  `json:"drop_percent,omitempty"`
	Latency      string   `json:"latency,omitempty"`
	EmitFail     bool     `json:"emit_fail,omitempty"`
	Poison       []Poison `json:"poison,omitempty"`
	NoAck        bool     `json:"no_ack,omitempty"`
}

// MarshalJSON writes the latency as a duration string.
func (f Faults) MarshalJSON() ([]byte, error) {
	j := faultsJSON{ErrorPercent: f.ErrorPercent, DropPercent: f.DropPercent, EmitFail: f.EmitFail, Poison: f.Poison, NoAck: f.NoAck}
	if f.Latency != 0 {
		j.Latency = f.Latency.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes and checks the ranges.
func (f *Faults) UnmarshalJSON(b []byte) error {
	var j faultsJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	out := Faults{ErrorPercent: j.ErrorPercent, DropPercent: j.DropPercent, EmitFail: j.EmitFail, Poison: j.Poison, NoAck: j.NoAck}
	if j.Latency != "" {
		d, err := time.ParseDuration(j.Latency)
		if err != nil {
			return fmt.Errorf("latency: %w", err)
		}
		out.Latency = d
	}
	if err := out.Validate(); err != nil {
		return err
	}
	*f = out
	return nil
}

// Validate checks the ranges of the settings.
func (f Faults) Validate() error {
	if f.ErrorPercent < 0 || f.ErrorPercent > 100 {
		return fmt.Errorf("error percent %v is not within 0–100", f.ErrorPercent)
	}
	if f.DropPercent < 0 || f.DropPercent > 100 {
		return fmt.Errorf("drop percent %v is not within 0–100", f.DropPercent)
	}
	if f.Latency < 0 {
		return fmt.Errorf("latency %v is negative", f.Latency)
	}
	for _, p := range f.Poison {
		if p.Field == "" {
			return fmt.Errorf("poison rule with an empty field name")
		}
	}
	return nil
}
