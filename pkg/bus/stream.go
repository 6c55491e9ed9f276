package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// EnsureStreams creates the audit, session and dead-letter streams, or
// brings existing ones to the configured limits (max age, max bytes, max
// message size, duplicate window, replicas, discard new), logging what changed. Running it
// again changes nothing. An existing stream whose subjects, storage or
// retention differ from what the bus needs, or whose change JetStream
// refuses, is an error naming the stream and the setting; it is never
// replaced.
func (b *Bus) EnsureStreams(ctx context.Context) error {
	for _, want := range StreamConfigs(b.Cfg) {
		if err := b.ensureStream(ctx, want); err != nil {
			return err
		}
	}
	return nil
}

// CreateMissingStreams creates the audit, session and dead-letter streams
// that do not exist yet, with the configured limits, and leaves existing
// ones exactly as they are: it is for processes that read the bus (the
// sink), which may start before the writer (ingest) but must not overrule
// the limits the writer set. An existing stream whose subjects, storage or
// retention differ from what the bus needs is still an error naming the
// stream and the setting.
func (b *Bus) CreateMissingStreams(ctx context.Context) error {
	for _, want := range StreamConfigs(b.Cfg) {
		have, err := b.createIfMissing(ctx, want)
		if err != nil {
			return err
		}
		if have == nil {
			continue
		}
		if err := checkCompatible(*have, want); err != nil {
			return err
		}
		if changes := limitChanges(*have, want); len(changes) > 0 {
			b.log.Debug().Str("stream", want.Name).Strs("differences", changes).Msg("stream exists with other limits, left as it is")
		}
	}
	return nil
}

// createIfMissing creates the stream when there is none of that name and
// returns nil, or returns the existing stream's configuration. A stream
// that another process creates meanwhile counts as existing.
func (b *Bus) createIfMissing(ctx context.Context, want jetstream.StreamConfig) (*jetstream.StreamConfig, error) {
	s, err := b.JS.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = b.JS.CreateStream(ctx, want)
		if err == nil {
			b.log.Info().Str("stream", want.Name).Strs("subjects", want.Subjects).Int("replicas", want.Replicas).Msg("stream created")
			return nil, nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, fmt.Errorf("create stream %q for %s: %w", want.Name, strings.Join(want.Subjects, ","), err)
		}
		s, err = b.JS.Stream(ctx, want.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("look up stream %q: %w", want.Name, err)
	}
	have := s.CachedInfo().Config
	return &have, nil
}

func (b *Bus) ensureStream(ctx context.Context, want jetstream.StreamConfig) error {
	h, err := b.createIfMissing(ctx, want)
	if err != nil || h == nil {
		return err
	}
	have := *h
	if err := checkCompatible(have, want); err != nil {
		return err
	}
	changes := limitChanges(have, want)
	if len(changes) == 0 {
		return nil
	}
	upd := have
	upd.Replicas = want.Replicas
	upd.MaxAge = want.MaxAge
	upd.MaxBytes = want.MaxBytes
	upd.MaxMsgSize = want.MaxMsgSize
	upd.Duplicates = effectiveDuplicates(want)
	upd.Discard = want.Discard
	if _, err := b.JS.UpdateStream(ctx, upd); err != nil {
		return fmt.Errorf("stream %q exists with other settings and JetStream refused the change (%s): %w",
			want.Name, strings.Join(changes, "; "), err)
	}
	b.log.Info().Str("stream", want.Name).Strs("changes", changes).Msg("stream settings updated")
	return nil
}

// checkCompatible reports settings of an existing stream that the bus cannot
// change without losing or misrouting data.
func checkCompatible(have, want jetstream.StreamConfig) error {
	hs, ws := slices.Clone(have.Subjects), slices.Clone(want.Subjects)
	slices.Sort(hs)
	slices.Sort(ws)
	if !slices.Equal(hs, ws) {
		return fmt.Errorf("stream %q exists with subjects [%s], but the bus needs [%s]: remove or rename the stream, or choose another name in [nats]",
			want.Name, strings.Join(have.Subjects, ", "), strings.Join(want.Subjects, ", "))
	}
	if have.Storage != want.Storage {
		return fmt.Errorf("stream %q exists with %s storage, but the bus needs %s storage: JetStream cannot change a stream's storage",
			want.Name, have.Storage, want.Storage)
	}
	if have.Retention != want.Retention {
		return fmt.Errorf("stream %q exists with %s retention, but the bus needs %s retention",
			want.Name, have.Retention, want.Retention)
	}
	return nil
}

// limitChanges lists the limits that differ, as "setting old → new".
func limitChanges(have, want jetstream.StreamConfig) []string {
	var out []string
	if have.Replicas != want.Replicas {
		out = append(out, fmt.Sprintf("replicas %d → %d", have.Replicas, want.Replicas))
	}
	if have.MaxAge != want.MaxAge {
		out = append(out, fmt.Sprintf("max age %s → %s", have.MaxAge, want.MaxAge))
	}
	if orUnlimited64(have.MaxBytes) != want.MaxBytes {
		out = append(out, fmt.Sprintf("max bytes %d → %d", have.MaxBytes, want.MaxBytes))
	}
	if orUnlimited32(have.MaxMsgSize) != want.MaxMsgSize {
		out = append(out, fmt.Sprintf("max message size %d → %d", have.MaxMsgSize, want.MaxMsgSize))
	}
	if have.Discard != want.Discard {
		out = append(out, fmt.Sprintf("discard %s → %s", have.Discard, want.Discard))
	}
	if d := effectiveDuplicates(want); have.Duplicates != d {
		out = append(out, fmt.Sprintf("duplicate window %s → %s", have.Duplicates, d))
	}
	return out
}

// StreamInfo returns a stream's configuration and state (messages, bytes,
// consumers), for status output.
func (b *Bus) StreamInfo(ctx context.Context, name string) (*jetstream.StreamInfo, error) {
	s, err := b.JS.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("stream %q: %w", name, err)
	}
	return s.CachedInfo(), nil
}

// StreamInfos returns the audit, session and dead-letter streams' info, in
// that order, leaving out any that do not exist yet.
func (b *Bus) StreamInfos(ctx context.Context) ([]*jetstream.StreamInfo, error) {
	var out []*jetstream.StreamInfo
	for _, c := range StreamConfigs(b.Cfg) {
		info, err := b.StreamInfo(ctx, c.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	return out, nil
}

// ConsumerList is a stream's consumers as the server lists them.
type ConsumerList struct {
	// Infos is the state (pending, ack floor, redeliveries) of each
	// consumer that answered.
	Infos []*jetstream.ConsumerInfo
	// Unanswered are the consumers the server knows of but could not get
	// the state of (their servers down, or electing a leader), each with
	// the server's reason, or "" when it gave none.
	Unanswered map[string]string
}

// consumerListWait bounds one page of a consumer listing. A clustered
// server waits up to 4 s for consumers on other servers before it answers
// without them; a client's default 5 s left too little of that on a loaded
// machine, and the listing failed as a whole.
const consumerListWait = 15 * time.Second

// ConsumerInfos lists a stream's consumers, for status output and for
// waiting on their backlogs: a consumer whose server does not answer is
// named in Unanswered, not left out (nats.go's lister drops the server's
// list of them).
func (b *Bus) ConsumerInfos(ctx context.Context, stream string) (*ConsumerList, error) {
	out := &ConsumerList{Unanswered: map[string]string{}}
	for offset := 0; ; {
		page, err := b.consumerPage(ctx, stream, offset)
		if err != nil {
			return nil, fmt.Errorf("list consumers of stream %q: %w", stream, err)
		}
		// A consumer whose servers are all down comes as its configuration
		// alone (no state) and is named missing too; one that answered it
		// is offline comes with the reason.
		names := map[string]bool{}
		for _, name := range page.Missing {
			names[name] = true
			if _, ok := out.Unanswered[name]; !ok {
				out.Unanswered[name] = ""
			}
		}
		for name, why := range page.Offline {
			names[name] = true
			out.Unanswered[name] = why
		}
		for _, ci := range page.Consumers {
			if !names[ci.Name] {
				names[ci.Name] = true
				out.Infos = append(out.Infos, ci)
			}
		}
		offset += len(names)
		if len(names) == 0 || offset >= page.Total {
			return out, nil
		}
	}
}

// consumerPage is one answer of $JS.API.CONSUMER.LIST.
type consumerPage struct {
	Total     int                       `json:"total"`
	Consumers []*jetstream.ConsumerInfo `json:"consumers"`
	Missing   []string                  `json:"missing"`
	Offline   map[string]string         `json:"offline"`
	Error     *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// consumerPage requests the page of stream's consumers from offset.
func (b *Bus) consumerPage(ctx context.Context, stream string, offset int) (*consumerPage, error) {
	ctx, cancel := context.WithTimeout(ctx, consumerListWait)
	defer cancel()
	req, err := json.Marshal(map[string]int{"offset": offset})
	if err != nil {
		return nil, err
	}
	msg, err := b.Conn.RequestWithContext(ctx, jsAPI+"CONSUMER.LIST."+stream, req)
	if err != nil {
		return nil, err
	}
	var page consumerPage
	if err := json.Unmarshal(msg.Data, &page); err != nil {
		return nil, fmt.Errorf("JetStream's answer: %w", err)
	}
	if e := page.Error; e != nil {
		if e.ErrCode == int(jetstream.JSErrCodeStreamNotFound) {
			return nil, fmt.Errorf("%w: %s", jetstream.ErrStreamNotFound, e.Description)
		}
		return nil, fmt.Errorf("JetStream answered %d: %s", e.Code, e.Description)
	}
	return &page, nil
}

// Unavailable reports a JetStream API error that a later try may not get:
// JetStream "temporarily unavailable" (503, as a cluster answers while it
// elects its leaders) or no answer in time. A server or account without
// JetStream is not one of them: that answer does not change.
func Unavailable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeJetStreamNotEnabled, jetstream.JSErrCodeJetStreamNotEnabledForAccount:
			return false // also 503, but for good
		}
		return apiErr.Code == 503
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
}

// Refused is the permission violation NATS last reported to nc, or nil. A
// request the client's user may not make is not answered: the server
// sends the violation as an asynchronous error and the request times out,
// which Unavailable alone takes for a JetStream that is slow to answer.
func Refused(nc *nats.Conn) error {
	if nc == nil {
		return nil
	}
	if err := nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) {
		return err
	}
	return nil
}

// streamPoll is how long each look of WaitStream waits for an answer: a
// stream whose leader was just elected answers within it, while a request
// sent during the election would stay unanswered for the whole API
// timeout.
const streamPoll = 500 * time.Millisecond

// WaitStream returns once stream answers its info request (it has a
// leader), asking every streamPoll, or with the last error once ctx ends.
// A stream that does not exist is not waited for: its error wraps
// jetstream.ErrStreamNotFound. Writers call it before they read a stream
// after a failure, so a read started in a leader election does not wait
// the whole API timeout after the election is over.
func WaitStream(ctx context.Context, js jetstream.JetStream, stream string) error {
	tick := time.NewTicker(streamPoll)
	defer tick.Stop()
	for {
		actx, cancel := context.WithTimeout(ctx, streamPoll)
		_, err := js.Stream(actx, stream)
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrStreamNotFound) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stream %q does not answer: %w", stream, err)
		case <-tick.C:
		}
	}
}
