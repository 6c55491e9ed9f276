package ingest

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/rs/zerolog"
)

// saved sums up the positions the state holds, for the line ingest logs
// when it stops: what the next run resumes from.
func (s *state) saved() *zerolog.Event {
	d := zerolog.Dict()
	var start startState
	if ok, err := s.get(keyStartTime, &start); ok && err == nil {
		d = d.Time("start_time", start.StartTime)
	}
	dates := s.keys(prefixDate)
	d = d.Int("dates_closed", len(dates))
	if len(dates) > 0 {
		d = d.Str("last_closed_date", strings.TrimPrefix(slices.Max(dates), prefixDate))
	}
	d = d.Int("chunk_positions", len(s.keys(prefixChunk)))
	var search searchState
	if ok, err := s.get(keySearch, &search); ok && err == nil {
		d = d.Time("search_window_start", search.WindowStart)
	}
	var open, finished int
	for _, k := range s.keys(prefixSess) {
		s.mu.Lock()
		raw := s.entries[k]
		s.mu.Unlock()
		var ss sessionState
		if json.Unmarshal(raw, &ss) != nil {
			continue
		}
		if ss.Done || ss.GaveUp {
			finished++
		} else {
			open++
		}
	}
	return d.Int("recordings_in_progress", open).Int("recordings_finished", finished)
}
