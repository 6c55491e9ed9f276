package ingest

import (
	"encoding/base64"
	"time"
)

// Keys of the state bucket. Chunk ids and session ids are base64url
// encoded: KV keys allow only [-/_=.a-zA-Z0-9].
const (
	keyStartTime = "ingest.start_time"
	keySearch    = "ingest.search"
	keyLease     = "ingest.lease"
	prefixExport = "export."
	prefixSess   = "session."
)

// dateKey is the key marking a closed export date.
func dateKey(date time.Time) string { return prefixExport + date.Format(time.DateOnly) }

// chunkKey is the key of one export chunk's progress.
func chunkKey(date time.Time, chunk string) string {
	return dateKey(date) + "." + base64.RawURLEncoding.EncodeToString([]byte(chunk))
}

// sessionKey is the key of one session recording's progress.
func sessionKey(sid string) string {
	return prefixSess + base64.RawURLEncoding.EncodeToString([]byte(sid))
}
