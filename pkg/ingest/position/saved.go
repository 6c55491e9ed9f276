package position

import (
	"slices"
	"strings"

	"github.com/rs/zerolog"
)

// Saved sums up the positions the Store holds, for the line ingest logs
// when it stops: what the next run resumes from.
func (s *Store) Saved() *zerolog.Event {
	d := zerolog.Dict()
	var start Start
	if ok, err := s.Get(KeyStartTime, &start); ok && err == nil {
		d = d.Time("start_time", start.StartTime)
	}
	dates := s.Keys(PrefixDate)
	d = d.Int("dates_closed", len(dates))
	if len(dates) > 0 {
		d = d.Str("last_closed_date", strings.TrimPrefix(slices.Max(dates), PrefixDate))
	}
	d = d.Int("chunk_positions", len(s.Keys(PrefixChunk)))
	var search Search
	if ok, err := s.Get(KeySearch, &search); ok && err == nil {
		d = d.Time("search_window_start", search.WindowStart)
	}
	var open, finished int
	for _, k := range s.Keys(PrefixSession) {
		var ss Session
		if _, err := s.Get(k, &ss); err != nil {
			continue
		}
		if ss.Ended() {
			finished++
		} else {
			open++
		}
	}
	return d.Int("recordings_in_progress", open).Int("recordings_finished", finished)
}
