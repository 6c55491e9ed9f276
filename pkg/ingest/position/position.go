// Package position is ingest's exactly-once machinery: where each reader
// of Teleport resumes, and which events it must not publish again.
//
// The contract. A reader saves a position only when every event up to it
// is acknowledged by JetStream (or filtered out), and with it a floor: a
// stream sequence such that every later event of that reader that reached
// the bus at all is stored after it. A reader that starts from a saved
// position (a restart, a retry after an error, a takeover) first reads the
// stream after the floor once — the tail scan — and publishes only the
// events not found there. So every event is on the bus once, however long
// ago an earlier attempt published it, and whatever JetStream's duplicate
// window. Positions are written only after the stream marks that cover
// them (the run's guard, through Store.BeforeSave), so a position is
// trusted only while its stream still holds what it covers.
//
// The pieces: Store (store.go) is the state bucket as ingest sees it, its
// values and keys in values.go and the start time in start.go; each reader
// has its own slice of it — the export chunks and dates (export.go), the
// search window (search.go), the session recordings (sessions.go). A
// Tracker (tracker.go) finds, from the PubAcks, the position that is safe
// to save and its floor; a Tail (tail.go) gives the floor of a publish and
// runs the tail scan.
package position

import "errors"

// ErrBus marks errors from the bus side — a state write, a publish or a
// tail scan that failed, typically while NATS is unreachable or electing
// a leader. Readers retry them like Teleport's transient errors.
var ErrBus = errors.New("bus")
