package sink

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/fluentd"
)

// fakeMsg records how a message was settled. Only the methods the
// Deliverer calls are implemented.
type fakeMsg struct {
	jetstream.Msg
	data      string
	delivered uint64

	mu      sync.Mutex
	settled []string
}

func (m *fakeMsg) Data() []byte    { return []byte(m.data) }
func (m *fakeMsg) Subject() string { return "audit.user.login" }
func (m *fakeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{NumDelivered: m.delivered, Stream: "AUDIT"}, nil
}
func (m *fakeMsg) record(s string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settled = append(m.settled, s)
	return nil
}
func (m *fakeMsg) settledCopy() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.settled)
}
func (m *fakeMsg) Ack() error                         { return m.record("ack") }
func (m *fakeMsg) DoubleAck(context.Context) error    { return m.record("ack") }
func (m *fakeMsg) Nak() error                         { return m.record("nak") }
func (m *fakeMsg) NakWithDelay(d time.Duration) error { return m.record("nak-delay") }
func (m *fakeMsg) InProgress() error                  { return m.record("in-progress") }

// refuser answers 400 to any request holding a record containing "poison",
// like in_http refusing a whole array for one bad element.
type refuser struct {
	mu       sync.Mutex
	requests []int
}

func (r *refuser) Send(_ context.Context, url string, recs []json.RawMessage) (fluentd.Result, error) {
	r.mu.Lock()
	r.requests = append(r.requests, len(recs))
	r.mu.Unlock()
	for _, rec := range recs {
		if strings.Contains(string(rec), "poison") {
			res := fluentd.Result{Status: 400, Answer: "invalid time format"}
			return res, &fluentd.RefusedError{URL: url, Result: res, Records: len(recs)}
		}
	}
	return fluentd.Result{Status: 200}, nil
}

func TestDelivererBisectsRefusedArray(t *testing.T) {
	send := &refuser{}
	var settled int
	d := &Deliverer{Send: send, Backoff: fastBackoff, MaxDeliver: 3, Metrics: NewMetrics(nil), Log: zerolog.Nop(),
		Settled: func(n int) { settled += n }}
	var msgs []*fakeMsg
	b := &Batch{URL: "https://f/test.log"}
	for i := range 8 {
		m := &fakeMsg{data: `{"n":1}`, delivered: 1}
		if i == 5 {
			m.data = `{"n":"poison"}`
		}
		msgs = append(msgs, m)
		b.Items = append(b.Items, Item{URL: b.URL, Data: json.RawMessage(m.data), Msg: m, Stream: "AUDIT", Received: time.Now()})
	}
	d.Deliver(context.Background(), b)

	// 8 → 4+4 → 2+2 (of the refused half) → 1+1.
	if got := len(send.requests); got != 7 {
		t.Errorf("%d requests %v, want 7", got, send.requests)
	}
	for i, m := range msgs {
		want := "ack"
		if i == 5 {
			want = "nak-delay" // refused on delivery 1 of 3: retried later
		}
		if len(m.settled) != 1 || m.settled[0] != want {
			t.Errorf("message %d settled %v, want [%s]", i, m.settled, want)
		}
	}
	if settled != 8 {
		t.Errorf("settled %d messages, want 8", settled)
	}
	if d.Failing() {
		t.Error("a refusal marked Fluentd as failing")
	}
}

// TestDelivererWithoutBreakerNaksAndReleases: without a breaker a failed
// batch is handed back with a delay; a stopping sink NAKs at once.
func TestDelivererWithoutBreakerNaksAndReleases(t *testing.T) {
	var settled int
	failing := senderFunc(func() (fluentd.Result, error) {
		return fluentd.Result{Status: 500}, &fluentd.StatusError{Result: fluentd.Result{Status: 500}}
	})
	d := &Deliverer{Send: failing, Backoff: fastBackoff, MaxDeliver: 3, Metrics: NewMetrics(nil), Log: zerolog.Nop(),
		Settled: func(n int) { settled += n }}
	m := &fakeMsg{data: `{}`, delivered: 2}
	d.Deliver(context.Background(), &Batch{Items: []Item{{Data: json.RawMessage(`{}`), Msg: m}}})
	if len(m.settled) != 1 || m.settled[0] != "nak-delay" {
		t.Fatalf("500: settled %v", m.settled)
	}
	// Stopping: no request, an immediate NAK for another sink.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m2 := &fakeMsg{data: `{}`, delivered: 1}
	d.Deliver(ctx, &Batch{Items: []Item{{Data: json.RawMessage(`{}`), Msg: m2}}})
	if len(m2.settled) != 1 || m2.settled[0] != "nak" || settled != 2 {
		t.Fatalf("stopped: settled %v (total %d)", m2.settled, settled)
	}
}

type senderFunc func() (fluentd.Result, error)

func (f senderFunc) Send(context.Context, string, []json.RawMessage) (fluentd.Result, error) {
	return f()
}
