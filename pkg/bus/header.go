package bus

// Message headers of the bus contract. Every published event carries
// HeaderMsgID, HeaderEventType, HeaderEventTime and HeaderEventID; session
// events also carry HeaderSessionID and HeaderEventIndex.
const (
	// HeaderMsgID is JetStream's dedup key: the event id, or <sid>/<index>
	// for session events.
	HeaderMsgID      = "Nats-Msg-Id"
	HeaderEventType  = "Teleport-Event-Type"
	HeaderEventTime  = "Teleport-Event-Time" // RFC 3339, UTC
	HeaderEventID    = "Teleport-Event-Id"
	HeaderSessionID  = "Teleport-Session-Id"
	HeaderEventIndex = "Teleport-Event-Index"
	// HeaderTrimmed is "true" when ingest shortened the event's largest
	// string fields to fit the stream's maximum message size.
	HeaderTrimmed = "Teleport-Event-Trimmed"

	// Dead-letter headers, set by the sink.
	HeaderDeadLetterStatus  = "Dead-Letter-Status"
	HeaderDeadLetterReason  = "Dead-Letter-Reason"
	HeaderDeadLetterSubject = "Dead-Letter-Subject"
	HeaderDeadLetterStream  = "Dead-Letter-Stream"
	HeaderDeadLetterSeq     = "Dead-Letter-Sequence"
)
