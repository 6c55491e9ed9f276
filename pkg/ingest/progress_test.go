package ingest

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestProgressReportsDatesRateAndETA(t *testing.T) {
	var logs bytes.Buffer
	p := newProgress(zerolog.New(&logs), newMetrics(nil))
	p.bar = nil
	p.begun = time.Now().Add(-10 * time.Second)
	p.SetDates(10, 0)
	p.SetDates(10, 5) // five dates in ten seconds: five more take ten
	p.Event(time.Now())
	p.line(time.Now(), 1234, 123.4)
	for _, want := range []string{`"dates_done":5`, `"dates_total":10`, `"events":1234`, `"events_per_sec":123.4`, `"eta":10000`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("progress line %s lacks %s", logs.String(), want)
		}
	}
	var bar bytes.Buffer
	p.bar = &bar
	p.line(time.Now(), 1234, 123.4)
	if !strings.Contains(bar.String(), "[###############---------------] dates 5/10") {
		t.Errorf("progress bar: %q", bar.String())
	}
}
