package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// What a node loss costs, measured from outside: which node leads a stream,
// which node a client is connected to, how long the cluster takes to elect
// a new leader, and the longest pause between two messages a stream
// stored. Shared by the cluster benchmark (test/bench) and the node-loss
// e2e test.

// StreamLeader is the name of the node leading stream (nats-1, …), as the
// stream's info says; "" while it has none. A KV bucket's stream is
// "KV_<bucket>".
func (i *Inspector) StreamLeader(ctx context.Context, stream string) (string, error) {
	s, err := i.js.Stream(ctx, stream)
	if err != nil {
		return "", fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("stream %s: %w", stream, err)
	}
	if info.Cluster == nil {
		return "", nil
	}
	return info.Cluster.Leader, nil
}

// WaitNewLeaders polls the info of every stream until each answers with a
// leader other than gone (the killed node), and returns when the last one
// did: the re-election time, as NATS itself takes it, is that minus the
// time of the kill. A stream whose info cannot be read yet (no meta
// leader, the inspector reconnecting) is polled again.
func (i *Inspector) WaitNewLeaders(ctx context.Context, gone string, streams ...string) (time.Time, error) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	left := append([]string(nil), streams...)
	var last error
	for {
		var still []string
		for _, s := range left {
			actx, cancel := context.WithTimeout(ctx, time.Second)
			leader, err := i.StreamLeader(actx, s)
			cancel()
			if err != nil || leader == "" || leader == gone {
				still = append(still, s)
				last = err
			}
		}
		left = still
		if len(left) == 0 {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("no new leader of %v after %s was killed: %w (last error: %v)", left, gone, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// Gap is a pause between two consecutive messages of a stream, by the
// times the stream stored them.
type Gap struct {
	From, To time.Time
	// AfterSeq is the stream sequence of the message before the pause.
	AfterSeq uint64
}

// Len is how long the pause lasted.
func (g Gap) Len() time.Duration { return g.To.Sub(g.From) }

// LongestGap reads the stream's message headers and metadata (see
// ReadHeaders) and returns the longest pause between two consecutive
// messages, the second stored at or after since and, unless until is
// zero, before until: while a writer publishes steadily, that is the
// longest time nothing reached the stream.
func (i *Inspector) LongestGap(ctx context.Context, stream string, since, until time.Time) (Gap, error) {
	var g Gap
	var prev time.Time
	var prevSeq uint64
	err := i.ReadHeaders(ctx, stream, func(_ nats.Header, meta *jetstream.MsgMetadata) {
		at := meta.Timestamp
		in := !at.Before(since) && (until.IsZero() || at.Before(until))
		if !prev.IsZero() && in && at.Sub(prev) > g.Len() {
			g = Gap{From: prev, To: at, AfterSeq: prevSeq}
		}
		prev, prevSeq = at, meta.Sequence.Stream
	})
	return g, err
}

// ReadHeaders calls fn with the headers and metadata of every message the
// stream holds, oldest first, through one consumer of the inspector's own
// (headers only, no acks), deleted afterwards. The consumer has the
// stream's replicas: an ordered consumer, one replica, made anew for every
// fetch, sooner or later lands on a node that was killed and fails with
// "no responders" to every fetch.
func (i *Inspector) ReadHeaders(ctx context.Context, stream string, fn func(nats.Header, *jetstream.MsgMetadata)) error {
	s, err := i.js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	cons, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Name: "harness-" + nuid.Next(), AckPolicy: jetstream.AckNonePolicy,
		HeadersOnly: true, MemoryStorage: true, InactiveThreshold: time.Minute})
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = s.DeleteConsumer(dctx, cons.CachedInfo().Name) // or its inactive threshold
	}()
	for read := uint64(0); read < info.State.Msgs; {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("stream %s: %w", stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("stream %s: %w", stream, err)
			}
			if meta.Sequence.Consumer != read+uint64(n) {
				return fmt.Errorf("stream %s: message %d arrived as number %d (one was not delivered)", stream, read+uint64(n), meta.Sequence.Consumer)
			}
			fn(m.Headers(), meta)
		}
		if err := batch.Error(); err != nil && n == 0 {
			return fmt.Errorf("stream %s: %w", stream, err)
		}
		if n == 0 {
			return fmt.Errorf("stream %s: read %d of %d messages, then nothing more", stream, read, info.State.Msgs)
		}
		read += uint64(n)
	}
	return nil
}

// Consumers lists the names of stream's consumers, as `nats consumer ls`
// does.
func (i *Inspector) Consumers(ctx context.Context, stream string) ([]string, error) {
	s, err := i.js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	var names []string
	l := s.ConsumerNames(ctx)
	for n := range l.Name() {
		names = append(names, n)
	}
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("consumers of %s: %w", stream, err)
	}
	return names, nil
}

// Node is the index of the node called name, or -1.
func (c *NATSCluster) Node(name string) int {
	for i, n := range c.Nodes {
		if n.Name == name {
			return i
		}
	}
	return -1
}

// ConnectedTo is the index of the running node a client named name
// (nats.Name: "ingest", "fluentd-sink") is connected to, from each node's
// /connz; -1 and an error when none lists it.
func (c *NATSCluster) ConnectedTo(ctx context.Context, name string) (int, error) {
	var errs []error
	for i, n := range c.Nodes {
		if n.Proc == nil {
			continue
		}
		body, err := getMonitor(ctx, n.MonitorURL+"/connz?limit=1024")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var connz struct {
			Conns []struct {
				Name string `json:"name"`
			} `json:"connections"`
		}
		if err := json.Unmarshal(body, &connz); err != nil {
			errs = append(errs, fmt.Errorf("%s /connz: %w", n.Name, err))
			continue
		}
		for _, conn := range connz.Conns {
			if conn.Name == name {
				return i, nil
			}
		}
	}
	return -1, fmt.Errorf("no running node lists a client named %q: %w", name, errors.Join(errs...))
}

// Settled calls f until it succeeds, ten times at most, two seconds
// apart: for reads of the cluster after a node loss, while clients
// reconnect and leaders settle ("no responders" for a moment).
func Settled[T any](ctx context.Context, f func(context.Context) (T, error)) (T, error) {
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		v, err := f(actx)
		cancel()
		if err == nil || attempt == 10 || ctx.Err() != nil {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(2 * time.Second):
		}
	}
}

// WaitCurrent waits until every replica of each stream is current (none
// offline or behind), as after a killed node was started again and caught
// up: only then can another node be lost without losing the quorum.
func (i *Inspector) WaitCurrent(ctx context.Context, streams ...string) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		why := ""
		for _, name := range streams {
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			s, err := i.js.Stream(actx, name)
			if err == nil {
				var info *jetstream.StreamInfo
				info, err = s.Info(actx)
				if err == nil {
					why = lagging(name, info)
				}
			}
			cancel()
			if err != nil {
				why = fmt.Sprintf("%s: %v", name, err)
			}
			if why != "" {
				break
			}
		}
		if why == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("replicas not current: %s: %w", why, ctx.Err())
		case <-tick.C:
		}
	}
}

// lagging says which replica of the stream is not current, or "".
func lagging(name string, info *jetstream.StreamInfo) string {
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return name + ": no leader"
	}
	if len(info.Cluster.Replicas) < info.Config.Replicas-1 {
		return fmt.Sprintf("%s: %d of %d followers known", name, len(info.Cluster.Replicas), info.Config.Replicas-1)
	}
	for _, r := range info.Cluster.Replicas {
		if !r.Current || r.Offline {
			return fmt.Sprintf("%s: replica %s current %v, offline %v, lag %d", name, r.Name, r.Current, r.Offline, r.Lag)
		}
	}
	return ""
}
