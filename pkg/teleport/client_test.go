package teleport

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"
	"github.com/gravitational/teleport/api/types"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
	)
}

// startSim starts a Teleport double and writes an identity for it.
func startSim(t *testing.T, opts teleportsim.Options, ttl time.Duration) (*teleportsim.Server, string) {
	t.Helper()
	sim, err := teleportsim.Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start teleport double: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	dir := t.TempDir()
	id, err := sim.WriteIdentity(dir, "ingest", ttl)
	if err != nil {
		t.Fatalf("write identity: %v", err)
	}
	return sim, id
}

func connect(t *testing.T, cfg config.TeleportConfig, log zerolog.Logger) (*Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Connect(ctx, cfg, log)
	if err == nil {
		t.Cleanup(func() { _ = c.Close() })
	}
	return c, err
}

func TestConnectIdentityFileAndKeyPair(t *testing.T) {
	now := time.Now().UTC()
	sim, id := startSim(t, teleportsim.Options{Seed: 1, Events: 50, From: now.Add(-time.Hour), To: now}, time.Hour)
	dir := filepath.Dir(id)
	for name, cfg := range map[string]config.TeleportConfig{
		"identity": {Addr: []string{sim.Addr()}, Identity: id},
		"keypair": {Addr: []string{sim.Addr()}, Cert: filepath.Join(dir, "tls.crt"),
			Key: filepath.Join(dir, "tls.key"), CA: filepath.Join(dir, "ca.crt")},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := connect(t, cfg, zerolog.Nop())
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			pong, err := c.Ping(context.Background())
			if err != nil || pong.ServerVersion != teleportsim.CurrentVersion {
				t.Fatalf("Ping: %v, version %q", err, pong.ServerVersion)
			}
			page, _, err := c.SearchUnstructuredEvents(context.Background(), now.Add(-2*time.Hour), now.Add(time.Minute),
				Namespace, nil, 100, types.EventOrderAscending, "")
			if err != nil || len(page) != 50 {
				t.Fatalf("search: %d events, %v; want 50", len(page), err)
			}
		})
	}
}

func TestExpiredIdentityIsReportedAsSuch(t *testing.T) {
	sim, id := startSim(t, teleportsim.Options{Seed: 2, Events: 5}, -time.Hour)
	_, err := connect(t, config.TeleportConfig{Addr: []string{sim.Addr()}, Identity: id}, zerolog.Nop())
	if !errors.Is(err, ErrIdentityExpired) {
		t.Fatalf("Connect with an expired identity: %v; want ErrIdentityExpired", err)
	}
	if !strings.Contains(err.Error(), "expired at") || !strings.Contains(err.Error(), id) {
		t.Errorf("error %q does not name the file and the expiry", err)
	}
}

func TestWrongCAIsReportedAsSuch(t *testing.T) {
	sim, _ := startSim(t, teleportsim.Options{Seed: 3, Events: 5}, time.Hour)
	_, other := startSim(t, teleportsim.Options{Seed: 4, Events: 5, ClusterName: "other.example"}, time.Hour)
	start := time.Now()
	_, err := connect(t, config.TeleportConfig{Addr: []string{sim.Addr()}, Identity: other, ConnectRetries: 3}, zerolog.Nop())
	if !errors.Is(err, ErrUnknownAuthority) && !errors.Is(err, ErrAccessDenied) {
		t.Fatalf("Connect with another cluster's identity: %v; want ErrUnknownAuthority", err)
	}
	if strings.Contains(err.Error(), "context deadline exceeded") && !strings.Contains(err.Error(), "CA") {
		t.Errorf("error %q hides the cause", err)
	}
	if time.Since(start) > 20*time.Second {
		t.Errorf("a certificate problem took %s to report; it is not worth retrying", time.Since(start))
	}
}

func TestUnreachableServerGivesUpAfterRetries(t *testing.T) {
	_, id := startSim(t, teleportsim.Options{Seed: 5, Events: 5}, time.Hour)
	logs := &logtest.Buffer{}
	_, err := connect(t, config.TeleportConfig{Addr: []string{"127.0.0.1:1"}, Identity: id, ConnectRetries: 2}, zerolog.New(logs))
	if err == nil || !strings.Contains(err.Error(), "giving up after 2 attempts") {
		t.Fatalf("Connect to a closed port: %v; want giving up after 2 attempts", err)
	}
	if n := strings.Count(logs.String(), "retrying"); n != 1 {
		t.Errorf("%d retry log lines; want 1 (before the second attempt)", n)
	}
}

func TestOlderServerFallbacks(t *testing.T) {
	now := time.Now().UTC()
	opts := teleportsim.Options{Seed: 6, Events: 60, Sessions: 3, From: now.Add(-time.Hour), To: now}
	newer, newerID := startSim(t, opts, time.Hour)
	opts.Older = true
	older, olderID := startSim(t, opts, time.Hour)
	cn, err := connect(t, config.TeleportConfig{Addr: []string{newer.Addr()}, Identity: newerID}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	co, err := connect(t, config.TeleportConfig{Addr: []string{older.Addr()}, Identity: olderID}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	s := co.GetEventExportChunks(context.Background(), &auditlogpb.GetEventExportChunksRequest{Date: timestamppb.New(now)})
	for s.Next() {
	}
	if err := s.Done(); !IsNotImplemented(err) {
		t.Fatalf("bulk export on an older server: %v; want NotImplemented", err)
	}
	sid := older.Sessions()[0].ID
	_, errc := co.StreamUnstructuredSessionEvents(context.Background(), sid, 0)
	if err := <-errc; !IsNotImplemented(err) {
		t.Fatalf("StreamUnstructuredSessionEvents on an older server: %v; want NotImplemented", err)
	}
	want := drain(t, cn.StreamUnstructuredSessionEvents, sid)
	got := drain(t, co.StreamSessionEvents, sid)
	if len(got) != len(want) || len(got) == 0 {
		t.Fatalf("structured stream gave %d events, unstructured %d", len(got), len(want))
	}
	for i := range got {
		if got[i].GetType() != want[i].GetType() || got[i].GetIndex() != want[i].GetIndex() || got[i].GetId() != want[i].GetId() {
			t.Errorf("event %d: structured %s/%d/%s, unstructured %s/%d/%s", i,
				got[i].GetType(), got[i].GetIndex(), got[i].GetId(), want[i].GetType(), want[i].GetIndex(), want[i].GetId())
		}
	}
}

func drain(t *testing.T, open func(context.Context, string, int64) (chan *auditlogpb.EventUnstructured, chan error), sid string) []*auditlogpb.EventUnstructured {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch, errc := open(ctx, sid, 0)
	var out []*auditlogpb.EventUnstructured
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				return out
			}
			out = append(out, e)
		case err := <-errc:
			t.Fatalf("stream session %s: %v", sid, err)
		}
	}
}

func TestIdentityReloadedWhenTheFileChanges(t *testing.T) {
	sim, id := startSim(t, teleportsim.Options{Seed: 7, Events: 5}, time.Hour)
	logs := &logtest.Buffer{}
	c, err := connect(t, config.TeleportConfig{Addr: []string{sim.Addr()}, Identity: id, RefreshEnabled: true, RefreshInterval: 20 * time.Millisecond}, zerolog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sim.WriteIdentity(filepath.Dir(id), "ingest", 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "teleport identity reloaded") {
		if time.Now().After(deadline) {
			t.Fatalf("identity not reloaded; log:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond) // polling a log, not synchronising
	}
	if _, err := c.Ping(context.Background()); err != nil {
		t.Fatalf("Ping after reload: %v", err)
	}
}

func TestCheckIdentityNoticesAnExpiredFile(t *testing.T) {
	sim, id := startSim(t, teleportsim.Options{Seed: 8, Events: 5}, time.Hour)
	c, err := connect(t, config.TeleportConfig{Addr: []string{sim.Addr()}, Identity: id}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckIdentity(); err != nil {
		t.Fatalf("fresh identity: %v", err)
	}
	if _, err := sim.WriteIdentity(filepath.Dir(id), "ingest", -time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckIdentity(); !errors.Is(err, ErrIdentityExpired) {
		t.Fatalf("expired identity: %v; want ErrIdentityExpired", err)
	}
}
