package ingest

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

// logLine is the part of a JSON log line the tests read.
type logLine struct {
	Message string `json:"message"`
	Saved   *struct {
		StartTime      *time.Time `json:"start_time"`
		DatesClosed    *int       `json:"dates_closed"`
		ChunkPositions *int       `json:"chunk_positions"`
	} `json:"saved"`
}

func parseLines(t *testing.T, s string) []logLine {
	t.Helper()
	var out []logLine
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l == "" {
			continue
		}
		var ll logLine
		if err := json.Unmarshal([]byte(l), &ll); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, ll)
	}
	return out
}

// countMsg is how many lines with message msg are in lines.
func countMsg(lines []logLine, msg string) int {
	n := 0
	for _, l := range lines {
		if l.Message == msg {
			n++
		}
	}
	return n
}

// TestLogsMatchState: a backfill logs progress lines, then, once caught
// up, one "caught up, now following live events" line and from then on
// only the live lines, never "backfill progress" again (it used to go on
// with "backfill progress 1066/1067 dates" while following live events).
// A stop (SIGTERM) logs the saved positions, then that ingest stopped
// cleanly, as its last line.
func TestLogsMatchState(t *testing.T) {
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 5, Events: 3000, Sessions: 4, From: now.Add(-3 * 24 * time.Hour), To: now,
		LiveRate: 200, LiveChunkAge: 50 * time.Millisecond})
	e.cfg.ExitOnLastEvent = false
	e.cfg.Ingest.ProgressInterval = 20 * time.Millisecond
	e.cfg.Concurrency = 1
	logs := &logtest.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- Run(runCtx, e.cfg, zerolog.New(logs)) }()

	// Two live lines: the live cadence runs, events keep coming.
	for countMsg(parseLines(t, logs.String()), "following live events") < 2 {
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v\n%s", err, logs.String())
		case <-ctx.Done():
			t.Fatalf("no two live lines within the deadline:\n%s", logs.String())
		case <-time.After(50 * time.Millisecond): // polling the log
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run after a stop: %v", err)
	}

	lines := parseLines(t, logs.String())
	caught := -1
	for i, l := range lines {
		switch l.Message {
		case "caught up, now following live events":
			if caught >= 0 {
				t.Errorf("line %d: a second caught-up line", i)
			}
			caught = i
		case "backfill progress":
			if caught >= 0 {
				t.Errorf("line %d: backfill progress after the caught-up line (line %d)", i, caught)
			}
		case "following live events":
			if caught < 0 {
				t.Errorf("line %d: a live line before the caught-up line", i)
			}
		}
	}
	if caught < 0 {
		t.Fatalf("no caught-up line:\n%s", logs.String())
	}
	if n := countMsg(lines, "backfill progress"); n == 0 {
		t.Errorf("no backfill progress line before catching up (interval %s):\n%s", e.cfg.Ingest.ProgressInterval, logs.String())
	}

	n := len(lines)
	if n < 2 || lines[n-1].Message != "ingest stopped cleanly" {
		t.Fatalf("the last line is not \"ingest stopped cleanly\":\n%s", logs.String())
	}
	var saved *logLine
	for i := range lines {
		if lines[i].Message == "stopped reading; positions saved in the state bucket" {
			saved = &lines[i]
		}
	}
	switch {
	case saved == nil || saved.Saved == nil:
		t.Fatalf("no saved-positions line:\n%s", logs.String())
	case saved.Saved.StartTime == nil || !saved.Saved.StartTime.Equal(e.cfg.StartTime):
		t.Errorf("saved start_time %v, want %s", saved.Saved.StartTime, e.cfg.StartTime)
	case saved.Saved.DatesClosed == nil || saved.Saved.ChunkPositions == nil || *saved.Saved.ChunkPositions < 1:
		// Recent dates stay open (stragglers): their chunks hold the positions.
		t.Errorf("saved positions: want dates_closed and the chunk positions of the dates read:\n%s", logs.String())
	}
}
