package sink

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/backoff"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/fluentd"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
	"github.com/teleport-event-bus/teleport-event-bus/test/fluentdsim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(removePKI{m}) }

// removePKI deletes the shared test certificates after the tests.
type removePKI struct{ m *testing.M }

func (r removePKI) Run() int {
	code := r.m.Run()
	if pkiDir != "" {
		_ = os.RemoveAll(pkiDir)
	}
	return code
}

// fastBackoff keeps retries within a test's patience.
var fastBackoff = backoff.Policy{Base: 50 * time.Millisecond, Max: 400 * time.Millisecond, Jitter: 0.2}

// testPKI is a CA, a server certificate for 127.0.0.1 and a client
// certificate written to files, plus a CA that signed neither.
type testPKI struct {
	ca, otherCA           *certs.CA
	server                *certs.Pair
	caFile, otherCAFile   string
	clientCert, clientKey string
}

var (
	pkiOnce sync.Once
	pkiVal  testPKI
	pkiErr  error
	pkiDir  string
)

func getPKI(t testing.TB) testPKI {
	t.Helper()
	pkiOnce.Do(func() {
		pkiDir, pkiErr = os.MkdirTemp("", "sink-pki")
		if pkiErr != nil {
			return
		}
		req := func(cn string) certs.Request { return certs.Request{CommonName: cn, KeyType: certs.KeyECDSA} }
		var p testPKI
		if p.ca, pkiErr = certs.NewCA(req("test ca")); pkiErr != nil {
			return
		}
		if p.otherCA, pkiErr = certs.NewCA(req("other ca")); pkiErr != nil {
			return
		}
		sr := req("localhost")
		sr.DNSNames, sr.IPs, sr.Usage = []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, certs.ServerAuth
		if p.server, pkiErr = p.ca.Issue(sr); pkiErr != nil {
			return
		}
		cr := req("fluentd-sink")
		cr.Usage = certs.ClientAuth
		client, err := p.ca.Issue(cr)
		if pkiErr = err; err != nil {
			return
		}
		p.caFile, p.otherCAFile = filepath.Join(pkiDir, "ca.crt"), filepath.Join(pkiDir, "other-ca.crt")
		p.clientCert, p.clientKey = filepath.Join(pkiDir, "client.crt"), filepath.Join(pkiDir, "client.key")
		for path, data := range map[string][]byte{p.caFile: p.ca.CertPEM, p.otherCAFile: p.otherCA.CertPEM,
			p.clientCert: client.CertPEM, p.clientKey: client.KeyPEM} {
			if pkiErr = os.WriteFile(path, data, 0o600); pkiErr != nil {
				return
			}
		}
		pkiVal = p
	})
	if pkiErr != nil {
		t.Fatalf("test PKI: %v", pkiErr)
	}
	return pkiVal
}

// env is an embedded NATS server with the bus streams, a fluentdsim over
// mTLS, and a configuration pointing at both.
type env struct {
	t   testing.TB
	emb *bus.Embedded
	bus *bus.Bus
	sim *fluentdsim.Server
	cfg *config.Config
}

func newEnv(t testing.TB, simOpts fluentdsim.Options) *env {
	t.Helper()
	ctx := context.Background()
	emb, err := bus.StartEmbedded(ctx, bus.EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Log: zerolog.Nop()})
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(emb.Shutdown)
	cfg := config.Default()
	cfg.NATS.URL = emb.ClientURL()
	b, err := bus.Open(ctx, cfg.NATS, "", "sink-test", zerolog.Nop(), false)
	if err != nil {
		t.Fatalf("bus.Open: %v", err)
	}
	t.Cleanup(b.Close)
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatalf("EnsureStreams: %v", err)
	}
	p := getPKI(t)
	simOpts.CAPEM, simOpts.CertPEM, simOpts.KeyPEM = p.ca.CertPEM, p.server.CertPEM, p.server.KeyPEM
	sim, err := fluentdsim.Start(ctx, simOpts)
	if err != nil {
		t.Fatalf("fluentdsim.Start: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	cfg.Fluentd.URL = sim.URL() + "/test.log"
	cfg.Fluentd.SessionURL = sim.URL() + "/session"
	cfg.Fluentd.CA, cfg.Fluentd.Cert, cfg.Fluentd.Key = p.caFile, p.clientCert, p.clientKey
	cfg.Sink.BatchWait = 20 * time.Millisecond
	return &env{t: t, emb: emb, bus: b, sim: sim, cfg: &cfg}
}

// auditEvent is a user.login event the way ingest publishes it.
func auditEvent(i int) bus.Event {
	id := fmt.Sprintf("ev-%06d", i)
	ts := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond)
	js := fmt.Sprintf(`{"event":"user.login","code":"T1000I","time":%q,"uid":%q,"user":"alice","success":true,"cluster_name":"test"}`,
		ts.Format("2006-01-02T15:04:05.000Z"), id)
	return bus.Event{ID: id, Type: "user.login", Time: ts, JSON: []byte(js)}
}

// sessionEvent is event ei of session sid.
func sessionEvent(sid string, ei int) bus.Event {
	ts := time.Date(2026, 11, 25, 11, 0, 0, 0, time.UTC).Add(time.Duration(ei) * time.Second)
	js := fmt.Sprintf(`{"event":"print","time":%q,"sid":%q,"ei":%d,"data":"bHM="}`, ts.Format("2006-01-02T15:04:05.000Z"), sid, ei)
	return bus.Event{ID: fmt.Sprintf("%s/%d", sid, ei), Type: "print", Time: ts, JSON: []byte(js), Session: true, SessionID: sid, Index: int64(ei)}
}

// publish puts events on the bus and waits for their PubAcks, then, as
// ingest with exit-on-last-event would, records in the state bucket that
// everything is on the bus (the sink's exit-on-last-event waits for that).
func (e *env) publish(events ...bus.Event) {
	e.t.Helper()
	e.publishOnly(events...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := e.bus.State(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.bus.MarkCaughtUp(ctx, kv); err != nil {
		e.t.Fatal(err)
	}
}

// publishOnly is publish without saying ingest is caught up.
func (e *env) publishOnly(events ...bus.Event) {
	e.t.Helper()
	for _, ev := range events {
		if _, err := e.bus.JS.PublishMsgAsync(bus.NewMsg(ev)); err != nil {
			e.t.Fatalf("publish: %v", err)
		}
	}
	select {
	case <-e.bus.JS.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		e.t.Fatal("publish: no PubAcks after 30s")
	}
}

func (e *env) publishAudit(from, n int) {
	e.t.Helper()
	evs := make([]bus.Event, n)
	for i := range evs {
		evs[i] = auditEvent(from + i)
	}
	e.publish(evs...)
}

// running is a sink started in the background.
type running struct {
	sink    *Sink
	metrics *Metrics
	cancel  context.CancelFunc
	done    chan error
	logs    *logtest.Buffer
}

// start runs a sink on its own NATS connection, as a separate process would.
func (e *env) start(cfg *config.Config) *running {
	e.t.Helper()
	logs := &logtest.Buffer{}
	var send Sender
	if !cfg.DryRun {
		c, err := fluentd.New(cfg.Fluentd, zerolog.New(logs))
		if err != nil {
			e.t.Fatalf("fluentd.New: %v", err)
		}
		e.t.Cleanup(c.Close)
		send = c
	}
	return e.startWith(cfg, send, logs)
}

// startWith is start with another Sender than a Fluentd client, logging
// into logs.
func (e *env) startWith(cfg *config.Config, send Sender, logs *logtest.Buffer) *running {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b, err := bus.Open(ctx, cfg.NATS, "", "sink", zerolog.Nop(), false)
	if err != nil {
		cancel()
		e.t.Fatalf("bus.Open: %v", err)
	}
	log := zerolog.New(logs)
	m := NewMetrics(prometheus.NewRegistry())
	s := New(b.JS, b.Conn, send, cfg, log, WithMetrics(m), WithBackoff(fastBackoff))
	r := &running{sink: s, metrics: m, cancel: cancel, done: make(chan error, 1), logs: logs}
	go func() {
		r.done <- s.Run(ctx)
		b.Close()
	}()
	e.t.Cleanup(func() { r.stop(e.t) })
	return r
}

// stop cancels the sink (SIGTERM) and returns Run's error.
func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
			return err
		}
		return nil
	case <-time.After(60 * time.Second):
		t.Fatal("sink did not stop within 60s")
		return nil
	}
}

// wait waits for Run to return by itself (exit-on-last-event).
func (r *running) wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case err := <-r.done:
		close(r.done)
		return err
	case <-time.After(d):
		t.Fatalf("sink did not return within %s", d)
		return nil
	}
}

// waitStored waits until the simulator stored n records.
func (e *env) waitStored(n int, d time.Duration) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := e.sim.WaitStored(ctx, int64(n)); err != nil {
		e.t.Fatalf("%v; stats: %s", err, e.sim.Stats())
	}
}

// eventually polls cond until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// consumerIdle reports whether the durable consumer has nothing pending
// and nothing awaiting an ack.
func (e *env) consumerIdle(stream, name string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := e.bus.JS.Consumer(ctx, stream, name)
	if err != nil {
		return false
	}
	info, err := c.Info(ctx)
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0
}

// checkExactlyOnce asserts every audit event 0..n-1 was stored exactly once.
func (e *env) checkExactlyOnce(n int) {
	e.t.Helper()
	ids := e.sim.TagIDs("test.log")
	if len(ids) != n {
		e.t.Errorf("fluentd holds %d distinct events, want %d; stats: %s", len(ids), n, e.sim.Stats())
	}
	for i := range n {
		id := auditEvent(i).ID
		if c := ids[id]; c != 1 {
			e.t.Errorf("event %s stored %d times, want 1", id, c)
			return
		}
	}
}

// counter reads a counter's value.
func counter(t testing.TB, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 16)
	c.Collect(ch)
	close(ch)
	var sum float64
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		switch {
		case d.Counter != nil:
			sum += d.Counter.GetValue()
		case d.Gauge != nil:
			sum += d.Gauge.GetValue()
		case d.Histogram != nil:
			sum += float64(d.Histogram.GetSampleCount())
		}
	}
	return sum
}

// readDeadLetters returns the messages stored in the dead-letter stream.
func (e *env) readDeadLetters() []jetstream.Msg {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream := bus.DeadLetterStream(e.cfg.NATS)
	info, err := e.bus.StreamInfo(ctx, stream)
	if err != nil {
		e.t.Fatalf("dead-letter stream: %v", err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	c, err := e.bus.JS.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		e.t.Fatalf("dead-letter consumer: %v", err)
	}
	batch, err := c.Fetch(int(info.State.Msgs), jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		e.t.Fatalf("fetch dead letters: %v", err)
	}
	var out []jetstream.Msg
	for m := range batch.Messages() {
		out = append(out, m)
	}
	return out
}

// newTestConfig is the default configuration with Fluentd URLs set.
func newTestConfig() *config.Config {
	cfg := config.Default()
	// Tests run beside other processes: any free port, not the default range.
	cfg.Sink.MetricsAddr = "127.0.0.1:0"
	cfg.Fluentd.URL = "https://127.0.0.1:8888/test.log"
	cfg.Fluentd.SessionURL = "https://127.0.0.1:8888/session"
	return &cfg
}
