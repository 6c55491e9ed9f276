package ingest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

func TestPruneSessionsForgetsFinishedJobsAfterADay(t *testing.T) {
	e := newEnv(t, teleportsim.Options{Seed: 1, Events: 10})
	ctx := context.Background()
	kv, err := e.open().State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := position.Open(ctx, kv, "state")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	jobs := map[string]position.Session{
		"done-25h":       {Done: true, Finished: now.Add(-25 * time.Hour)},
		"done-1h":        {Done: true, Finished: now.Add(-time.Hour)},
		"gave-up-30h":    {GaveUp: true, Finished: now.Add(-30 * time.Hour)},
		"running":        {Next: 12, FirstSeen: now.Add(-40 * 24 * time.Hour)},
		"legacy-done-8d": {Done: true, FirstSeen: now.Add(-8 * 24 * time.Hour)},
		"legacy-done-2d": {Done: true, FirstSeen: now.Add(-2 * 24 * time.Hour)},
	}
	for sid, ss := range jobs {
		ss.SessionID = sid
		if err := st.Put(ctx, position.SessionKey(sid), ss); err != nil {
			t.Fatal(err)
		}
	}
	n, err := st.Recordings().Prune(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("removed %d jobs, want 3", n)
	}
	want := []string{position.SessionKey("done-1h"), position.SessionKey("legacy-done-2d"), position.SessionKey("running")}
	slices.Sort(want)

	got := st.Keys(position.PrefixSession)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("in memory after pruning: %v, want %v", got, want)
	}
	// The bucket agrees: a new run loads only what is left.
	again, err := position.Open(ctx, kv, "state")
	if err != nil {
		t.Fatal(err)
	}
	got = again.Keys(position.PrefixSession)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("in the bucket after pruning: %v, want %v", got, want)
	}
	// Nothing more to do the second time.
	if n, err := again.Recordings().Prune(ctx, now); err != nil || n != 0 {
		t.Errorf("second prune: %d, %v", n, err)
	}
}

func TestFinishedSessionJobsRecordWhen(t *testing.T) {
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 4, Events: 200, Sessions: 5, From: now.Add(-5 * time.Hour), To: now})
	before := time.Now().UTC()
	if err := e.run(zerolog.Nop()); err != nil {
		t.Fatalf("Run: %v", err)
	}
	st := loadState(t, e.open())
	keys := st.Keys(position.PrefixSession)
	if len(keys) != 5 {
		t.Fatalf("%d session jobs in the state, want 5", len(keys))
	}
	for _, k := range keys {
		var ss position.Session
		if _, err := st.Get(k, &ss); err != nil {
			t.Fatal(err)
		}
		if !ss.Done || ss.Finished.Before(before) || ss.Finished.After(time.Now()) {
			t.Errorf("%s: done %v, finished %v; want done, finished during the run", k, ss.Done, ss.Finished)
		}
	}
}

// loadState reads ingest's state bucket from b.
func loadState(t *testing.T, b *bus.Bus) *position.Store {
	t.Helper()
	ctx := context.Background()
	kv, err := b.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := position.Open(ctx, kv, "state")
	if err != nil {
		t.Fatal(err)
	}
	return st
}
