package configure

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/fluentd"
	"github.com/teleport-event-bus/teleport-event-bus/test/fluentdsim"
)

// teleportEvents are events as Teleport returns them, `time` with
// milliseconds.
var teleportEvents = []json.RawMessage{
	json.RawMessage(`{"event":"user.login","code":"T1000I","time":"2026-12-01T10:00:00.461Z","uid":"rec-1","user":"alice","success":true,"method":"local","cluster_name":"main"}`),
	json.RawMessage(`{"event":"session.start","code":"T2000I","time":"2026-12-01T10:00:01.002Z","uid":"rec-2","sid":"9d3f","ei":0,"user":"bob","login":"root","server_labels":{"env":"prod"},"initial_command":["bash","-l"]}`),
	json.RawMessage(`{"event":"session.upload","code":"T2005I","time":"2026-12-01T10:05:00.999Z","uid":"rec-3","sid":"9d3f","url":"s3://recordings/9d3f.tar"}`),
}

// TestSameRecordOverBothInputs sends the same Teleport events to
// fluent.conf's in_http (configure) and to its in_forward (configure
// --forward), each served by fluentd-sim as that fluent.conf says, and
// compares what Fluentd stores: the same records, each the event exactly
// as Teleport returned it, `time` included.
func TestSameRecordOverBothInputs(t *testing.T) {
	httpDir, fwdDir := t.TempDir(), t.TempDir()
	if _, _, err := run(t, Options{OutDir: httpDir}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run(t, Options{OutDir: fwdDir, Forward: true}); err != nil {
		t.Fatal(err)
	}
	stored := map[string]map[string]string{
		"in_http":    sendAsConfigured(t, httpDir, false),
		"in_forward": sendAsConfigured(t, fwdDir, true),
	}
	for _, ev := range teleportEvents {
		var want bytes.Buffer
		if err := json.Compact(&want, ev); err != nil {
			t.Fatal(err)
		}
		var id struct{ UID string }
		if err := json.Unmarshal(ev, &id); err != nil {
			t.Fatal(err)
		}
		for input, recs := range stored {
			if got := recs[id.UID]; got != want.String() {
				t.Errorf("%s stored event %s as\n  %s\nwant it as Teleport returned it\n  %s", input, id.UID, got, want.String())
			}
		}
		if stored["in_http"][id.UID] != stored["in_forward"][id.UID] {
			t.Errorf("event %s: in_http stored %s, in_forward %s", id.UID, stored["in_http"][id.UID], stored["in_forward"][id.UID])
		}
	}
}

// sendAsConfigured starts fluentd-sim with dir's fluent.conf settings
// (certificates, passphrase, shared key, keep_time_key), sends
// teleportEvents with the client dir's TOML configures, and returns the
// stored records by uid.
func sendAsConfigured(t *testing.T, dir string, forward bool) map[string]string {
	t.Helper()
	conf, err := os.ReadFile(filepath.Join(dir, FluentConfFile))
	if err != nil {
		t.Fatal(err)
	}
	opts := fluentdsim.Options{
		CAFile: filepath.Join(dir, "ca.crt"), CertFile: filepath.Join(dir, "server.crt"), KeyFile: filepath.Join(dir, "server.key"),
		KeyPassphrase: fluentPassphrase(t, dir), MatchTags: []string{"test.log", "session.*.log"}, KeepRecords: true,
		KeepTimeKey: fluentdsim.KeepTimeKey(conf),
	}
	if forward {
		opts.ForwardAddr, opts.SharedKey, opts.SelfHostname = "127.0.0.1:0", strings.TrimSpace(read(t, filepath.Join(dir, SharedKeyFile))), "localhost"
	}
	sim, err := fluentdsim.Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	cfg, err := config.LoadFile(filepath.Join(dir, TOMLFile), config.Sink)
	if err != nil {
		t.Fatalf("the generated TOML does not load: %v", err)
	}
	f := cfg.Fluentd
	f.ServerName = "localhost"
	f.ResponseTimeout = 10 * time.Second
	ctx := context.Background()
	if forward {
		f.URL = strings.Replace(f.URL, "localhost:24224", sim.ForwardAddr(), 1)
		client, err := fluentd.NewForward(f, zerolog.Nop(), false)
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		if _, err := client.Send(ctx, "test.log", teleportEvents); err != nil {
			t.Fatalf("send to in_forward: %v", err)
		}
	} else {
		f.URL = strings.Replace(f.URL, "localhost:8888", sim.Addr(), 1)
		client, err := fluentd.New(f, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		if _, err := client.Send(ctx, f.URL, teleportEvents); err != nil {
			t.Fatalf("send to in_http: %v", err)
		}
	}
	out := map[string]string{}
	for _, r := range sim.Records("test.log") {
		out[r.ID] = string(r.JSON)
	}
	if len(out) != len(teleportEvents) {
		t.Fatalf("fluentd-sim stored %d records, want %d: %v", len(out), len(teleportEvents), out)
	}
	return out
}
