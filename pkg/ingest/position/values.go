package position

import (
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
)

// Keys of the state bucket, all spelled by pkg/bus.
var (
	KeyStartTime  = bus.StartTimeKey
	KeySearch     = bus.CursorKey("search")
	PrefixChunk   = bus.ChunkKeyPrefix("")[:len("chunk.")]
	PrefixDate    = bus.DateKey("")[:len("date.")]
	PrefixSession = bus.SessionKey("")[:len("session.")]
	PrefixMark    = bus.StreamMarkKey("")[:len("stream.")]
)

// Day is the date part of keys: "2006-01-02".
func Day(date time.Time) string { return date.Format(time.DateOnly) }

// DateKey is the key marking a closed export date.
func DateKey(date time.Time) string { return bus.DateKey(Day(date)) }

// ChunkKey is the key of one export chunk's position.
func ChunkKey(date time.Time, chunk string) string { return bus.ChunkKey(Day(date), chunk) }

// ChunkPrefix is the common prefix of a date's chunk keys.
func ChunkPrefix(date time.Time) string { return bus.ChunkKeyPrefix(Day(date)) }

// SessionKey is the key of one session recording's position.
func SessionKey(sid string) string { return bus.SessionKey(sid) }

// Values stored in the bucket. JSON, so `nats kv get` shows them readably.
type (
	// Start is the start time fixed by the first run.
	Start struct {
		StartTime time.Time `json:"start_time"`
	}
	// Chunk is one export chunk's position.
	Chunk struct {
		Chunk  string `json:"chunk"`
		Cursor string `json:"cursor,omitempty"`
		Done   bool   `json:"done,omitempty"`
		Events int64  `json:"events,omitempty"`
		// Floor: the events after Cursor that are on the bus are stored
		// after this audit stream sequence (see Tracker). Saved before
		// the chunk's first publish; nil in state from older versions.
		Floor *uint64 `json:"floor,omitempty"`
	}
	// Date marks a date whose chunks are all exported and which is past
	// the straggler window: it is not listed again.
	Date struct {
		Closed bool  `json:"closed"`
		Chunks int   `json:"chunks"`
		Events int64 `json:"events"`
	}
	// Search is the position of the search-paging path: the window
	// start, the page key and the id of the last event handled in it.
	Search struct {
		WindowStart time.Time `json:"window_start"`
		Cursor      string    `json:"cursor,omitempty"`
		LastID      string    `json:"last_id,omitempty"`
		// Floor: as Chunk's, for the events after this position.
		Floor *uint64 `json:"floor,omitempty"`
	}
	// Session is one recording's position: the next index to publish,
	// and when the job started or ended.
	Session struct {
		SessionID string    `json:"sid"`
		Next      int64     `json:"next"`
		Uploaded  time.Time `json:"uploaded"`
		FirstSeen time.Time `json:"first_seen"`
		Done      bool      `json:"done,omitempty"`
		GaveUp    bool      `json:"gave_up,omitempty"`
		Reason    string    `json:"reason,omitempty"`
		Events    int64     `json:"events,omitempty"`
		// Finished is when the job ended (done or given up).
		Finished time.Time `json:"finished,omitzero"`
		// Floor: as Chunk's, in the session stream, for the events from
		// Next on.
		Floor *uint64 `json:"floor,omitempty"`
	}
)

// Ended reports whether the recording's job has ended: read to its
// end, or given up.
func (s Session) Ended() bool { return s.Done || s.GaveUp }
