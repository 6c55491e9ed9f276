package bus

import (
	"errors"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// JetStream error codes of a publish refused for lack of room.
const (
	// errCodeStoreFailed is "JSStreamStoreFailedF": the stream could not
	// store the message; with discard new and max-bytes reached its
	// description is "maximum bytes exceeded".
	errCodeStoreFailed jetstream.ErrorCode = 10077
	// errCodeInsufficientResources is "insufficient resources": the server's
	// or account's JetStream store limit (max_file_store) is reached.
	errCodeInsufficientResources jetstream.ErrorCode = 10023
)

// Reasons NoRoom reports.
const (
	// NoRoomMaxBytes: the stream is at its max-bytes with discard new.
	NoRoomMaxBytes = "max_bytes"
	// NoRoomStore: the server's JetStream store limit is reached.
	NoRoomStore = "store_full"
)

// NoRoom reports whether err is a publish refused because there is no room
// for the message, and why (NoRoomMaxBytes or NoRoomStore). Nothing is
// stored then: the same message can be published again once room is made,
// so such errors pause a writer rather than fail it.
func NoRoom(err error) (string, bool) {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return "", false
	}
	switch apiErr.ErrorCode {
	case errCodeInsufficientResources:
		return NoRoomStore, true
	case errCodeStoreFailed:
		if strings.Contains(apiErr.Description, "maximum bytes exceeded") {
			return NoRoomMaxBytes, true
		}
	}
	return "", false
}
