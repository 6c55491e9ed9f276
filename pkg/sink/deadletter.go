package sink

import (
	"context"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/fluentd"
)

// maxReason bounds the Dead-Letter-Reason header.
const maxReason = 1024

// DeadLetters moves messages Fluentd keeps refusing to
// deadletter.<original subject> (the dead-letter stream), with the reason in
// headers, so they stop blocking the stream but are kept for inspection and
// replay.
type DeadLetters struct {
	JS jetstream.JetStream
}

// Publish copies msg, with its original headers (Nats-Msg-Id included, so a
// repeated dead-lettering after a crash is deduplicated), to the dead-letter
// subject, adding Fluentd's status and answer and where the message came
// from. It returns once JetStream has stored the copy.
func (d DeadLetters) Publish(ctx context.Context, msg jetstream.Msg, res fluentd.Result, reason string) error {
	out := nats.NewMsg(bus.DeadLetterSubject(msg.Subject()))
	out.Data = msg.Data()
	for k, v := range msg.Headers() {
		out.Header[k] = append([]string(nil), v...)
	}
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	out.Header.Set(bus.HeaderDeadLetterStatus, strconv.Itoa(res.Status))
	out.Header.Set(bus.HeaderDeadLetterReason, reason)
	out.Header.Set(bus.HeaderDeadLetterSubject, msg.Subject())
	if md, err := msg.Metadata(); err == nil {
		out.Header.Set(bus.HeaderDeadLetterStream, md.Stream)
		out.Header.Set(bus.HeaderDeadLetterSeq, strconv.FormatUint(md.Sequence.Stream, 10))
	}
	if _, err := d.JS.PublishMsg(ctx, out); err != nil {
		return fmt.Errorf("publish dead letter to %s: %w", out.Subject, err)
	}
	return nil
}
