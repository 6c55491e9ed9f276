package harness

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// BusCounts is what the streams hold.
type BusCounts struct {
	// Audit counts audit messages by subject (audit.user.login → n).
	Audit      map[string]uint64
	AuditTotal uint64
	// Sessions counts session recording messages.
	Sessions uint64
	// DeadLetters counts messages in the dead-letter stream.
	DeadLetters uint64
}

// Inspector reads the streams as any other consumer would, through pkg/bus.
type Inspector struct {
	cfg  config.NATSConfig
	conn *nats.Conn
	js   jetstream.JetStream
}

// NewInspector connects to the NATS server at listen (the embedded one) or
// at the URLs in url, with the NKey seed file nkey ("" for none; the
// reader's seed, Pipeline.NATSSeed(bus.RoleReader), on a closed bus).
func NewInspector(ctx context.Context, url, listen, nkey string) (*Inspector, error) {
	cfg := config.Default().NATS
	cfg.URL, cfg.Listen, cfg.NKey = url, listen, nkey
	return NewInspectorFor(ctx, cfg)
}

// Close closes the connection.
func (i *Inspector) Close() { i.conn.Close() }

// Counts reads the streams' message counts; a stream not created yet counts
// as empty.
func (i *Inspector) Counts(ctx context.Context) (BusCounts, error) {
	c := BusCounts{Audit: make(map[string]uint64)}
	audit, err := i.stream(ctx, i.cfg.AuditStream, bus.AuditPrefix+".>")
	if err != nil {
		return c, err
	}
	if audit != nil {
		c.Audit = audit.State.Subjects
		c.AuditTotal = audit.State.Msgs
	}
	sessions, err := i.stream(ctx, i.cfg.SessionStream, "")
	if err != nil {
		return c, err
	}
	if sessions != nil {
		c.Sessions = sessions.State.Msgs
	}
	dl, err := i.stream(ctx, bus.DeadLetterStream(i.cfg), "")
	if err != nil {
		return c, err
	}
	if dl != nil {
		c.DeadLetters = dl.State.Msgs
	}
	return c, nil
}

func (i *Inspector) stream(ctx context.Context, name, subjects string) (*jetstream.StreamInfo, error) {
	s, err := i.js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	var opts []jetstream.StreamInfoOpt
	if subjects != "" {
		opts = append(opts, jetstream.WithSubjectFilter(subjects))
	}
	return s.Info(ctx, opts...)
}

// MsgIDs reads every message of a stream (ReadHeaders) and counts each
// Nats-Msg-Id: an id counted twice is a duplicate in the stream.
func (i *Inspector) MsgIDs(ctx context.Context, stream string) (map[string]int, error) {
	ids := make(map[string]int)
	err := i.ReadHeaders(ctx, stream, func(h nats.Header, _ *jetstream.MsgMetadata) { ids[h.Get(bus.HeaderMsgID)]++ })
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// AuditStream is the audit stream's name.
func (i *Inspector) AuditStream() string { return i.cfg.AuditStream }

// SessionStream is the session stream's name.
func (i *Inspector) SessionStream() string { return i.cfg.SessionStream }

// DeleteStream deletes a stream, as an operator (or a mistake) could behind
// ingest's back.
func (i *Inspector) DeleteStream(ctx context.Context, name string) error {
	if err := i.js.DeleteStream(ctx, name); err != nil {
		return fmt.Errorf("delete stream %s: %w", name, err)
	}
	return nil
}

// StreamInfo is a stream's configuration and state.
func (i *Inspector) StreamInfo(ctx context.Context, name string) (*jetstream.StreamInfo, error) {
	s, err := i.js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	return s.CachedInfo(), nil
}

// UpdateStream changes a stream's configuration with f.
func (i *Inspector) UpdateStream(ctx context.Context, name string, f func(*jetstream.StreamConfig)) error {
	info, err := i.StreamInfo(ctx, name)
	if err != nil {
		return err
	}
	cfg := info.Config
	f(&cfg)
	if _, err := i.js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("update stream %s: %w", name, err)
	}
	return nil
}

// AckFloor is the stream sequence up to which a durable consumer has
// acknowledged every message.
func (i *Inspector) AckFloor(ctx context.Context, stream, consumer string) (uint64, error) {
	c, err := i.js.Consumer(ctx, stream, consumer)
	if err != nil {
		return 0, fmt.Errorf("consumer %s on %s: %w", consumer, stream, err)
	}
	return c.CachedInfo().AckFloor.Stream, nil
}

// PublishAudit publishes a test audit event with Nats-Msg-Id id to the
// audit stream (subject audit.test).
func (i *Inspector) PublishAudit(ctx context.Context, id string) error {
	m := nats.NewMsg(bus.AuditPrefix + ".test")
	m.Header.Set(bus.HeaderMsgID, id)
	m.Data = []byte(`{"event":"test","uid":"` + id + `"}`)
	if _, err := i.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("publish %s: %w", id, err)
	}
	return nil
}
