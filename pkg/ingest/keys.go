package ingest

import (
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
)

// Keys of the state bucket, all spelled by pkg/bus.
var (
	keyStartTime = bus.StartTimeKey
	keySearch    = bus.CursorKey("search")
	keyLease     = bus.LeaseKey
	prefixChunk  = "chunk."
	prefixDate   = "date."
	prefixSess   = bus.SessionKey("")[:len("session.")]
)

// day is the date part of keys: "2006-01-02".
func day(date time.Time) string { return date.Format(time.DateOnly) }

// dateKey is the key marking a closed export date.
func dateKey(date time.Time) string { return bus.DateKey(day(date)) }

// chunkKey is the key of one export chunk's progress.
func chunkKey(date time.Time, chunk string) string { return bus.ChunkKey(day(date), chunk) }

// chunkPrefix is the common prefix of a date's chunk keys.
func chunkPrefix(date time.Time) string { return bus.ChunkKeyPrefix(day(date)) }

// sessionKey is the key of one session recording's progress.
func sessionKey(sid string) string { return bus.SessionKey(sid) }
