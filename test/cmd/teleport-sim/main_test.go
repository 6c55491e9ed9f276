package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gravitational/teleport/api/client"
	"go.uber.org/goleak"

	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestBadFlags(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"no out":       {[]string{"--port", "0"}, "--out is required"},
		"bad port":     {[]string{"--out", t.TempDir(), "--port", "70000"}, "--port 70000"},
		"bad from":     {[]string{"--out", t.TempDir(), "--from", "yesterday"}, `--from: "yesterday" is neither`},
		"bad latency":  {[]string{"--out", t.TempDir(), "--latency", "soon"}, "--latency"},
		"unknown flag": {[]string{"--nope"}, "flag provided but not defined: -nope"},
	} {
		var stderr bytes.Buffer
		err := run(t.Context(), tc.args, &bytes.Buffer{}, &stderr)
		if !errors.Is(err, errUsage) || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%s: err %v, stderr %q; want usage error mentioning %q", name, err, stderr.String(), tc.want)
		}
	}
	var stderr bytes.Buffer
	err := run(t.Context(), []string{"--out", t.TempDir(), "--port", "0", "--missing-recordings", "3"}, &bytes.Buffer{}, &stderr)
	if err == nil || !strings.Contains(err.Error(), "missing recording rate 3 is outside 0..1") {
		t.Errorf("bad rate: %v", err)
	}
}

func TestUnreadableCA(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.key"), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := run(t.Context(), []string{"--out", dir, "--port", "0"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "ca.crt") || !strings.Contains(err.Error(), "no PEM CERTIFICATE block") {
		t.Errorf("got %v, want an error naming ca.crt", err)
	}
	if err := os.Remove(filepath.Join(dir, "ca.key")); err != nil {
		t.Fatal(err)
	}
	err = run(t.Context(), []string{"--out", dir, "--port", "0"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "read CA key") {
		t.Errorf("got %v, want an error about the missing CA key", err)
	}
}

func TestPortInUse(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	port := lis.Addr().(*net.TCPAddr).Port
	err = run(t.Context(), []string{"--out", t.TempDir(), "--port", strconv.Itoa(port)}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("got %v, want address already in use", err)
	}
}

// waitFile polls for a file the command writes once it serves.
func waitFile(t *testing.T, path string, done <-chan error) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return strings.TrimSpace(string(b))
		}
		select {
		case err := <-done:
			t.Fatalf("command exited: %v", err)
		case <-time.After(20 * time.Millisecond): // polling, not synchronisation
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not written", path)
		}
	}
}

func TestServesAndReports(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--out", dir, "--port", "0", "--events", "300", "--sessions", "10",
			"--from", "2025-03-01", "--to", "2025-03-03", "--seed", "5", "--huge-events", "0", "--prerender"}, &stdout, &stderr)
	}()
	controlAddr := waitFile(t, filepath.Join(dir, "control-addr"), done)
	addr := waitFile(t, filepath.Join(dir, "addr"), done)

	clt, err := client.New(ctx, client.Config{
		Addrs:       []string{addr},
		Credentials: []client.Credentials{client.LoadIdentityFile(filepath.Join(dir, teleportsim.IdentityFileName))},
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("connect with the written identity: %v", err)
	}
	defer clt.Close()
	from := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	items, _, err := clt.SearchUnstructuredEvents(ctx, from, from.Add(48*time.Hour), "default", nil, 1000, 0, "")
	if err != nil || len(items) != 300 {
		t.Fatalf("search: %d events, %v", len(items), err)
	}

	var stats teleportsim.Stats
	getJSON(t, "http://"+controlAddr+"/stats", &stats)
	if stats.Events != 300 || stats.Sessions != 10 || stats.Addr != addr {
		t.Errorf("stats %+v", stats)
	}
	var ids []string
	getJSON(t, "http://"+controlAddr+"/ids", &ids)
	if len(ids) != 300 || ids[0] != items[0].GetId() {
		t.Errorf("control /ids: %d ids", len(ids))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+controlAddr+"/faults", strings.NewReader(`{"rate_limit_rate": 1, "latency": "10ms"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("put faults: %v %v", resp, err)
	}
	resp.Body.Close()
	if _, _, err := clt.SearchUnstructuredEvents(ctx, from, from.Add(48*time.Hour), "default", nil, 10, 0, ""); err == nil || !strings.Contains(err.Error(), "rate limit exceeded") {
		t.Errorf("search under a rate-limit fault: %v", err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if !strings.Contains(stdout.String(), "serving 300 events, 10 sessions on "+addr) {
		t.Errorf("stdout %q", stdout.String())
	}
	if !strings.Contains(stderr.String(), `"events":300`) {
		t.Errorf("final stats on stderr: %q", stderr.String())
	}

	// A second run reuses the CA, so the old identity's CA still verifies it.
	before, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(t.Context())
	if err := os.Remove(filepath.Join(dir, "addr")); err != nil {
		t.Fatal(err)
	}
	go func() {
		done <- run(ctx2, []string{"--out", dir, "--port", "0", "--control-addr", ""}, &bytes.Buffer{}, &bytes.Buffer{})
	}()
	waitFile(t, filepath.Join(dir, "addr"), done)
	cancel2()
	if err := <-done; err != nil {
		t.Fatalf("second run: %v", err)
	}
	after, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("the second run replaced the CA")
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// TestFileLogFlag: --older answers searches from the file log unless
// --file-log=false says otherwise; --file-log turns it on for a current
// server.
func TestFileLogFlag(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		older bool
		want  teleportsim.SearchMode
	}{
		{nil, false, teleportsim.SearchAuto},
		{[]string{"--older"}, true, teleportsim.SearchAuto},
		{[]string{"--older", "--file-log=false"}, true, teleportsim.SearchIndexed},
		{[]string{"--file-log"}, false, teleportsim.SearchFileLog},
	} {
		c, err := parse(append([]string{"--out", t.TempDir()}, tc.args...), io.Discard)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if c.opts.Search != tc.want || c.opts.Older != tc.older {
			t.Errorf("%q: search %v, older %v; want %v, %v", tc.args, c.opts.Search, c.opts.Older, tc.want, tc.older)
		}
	}
	// What the auto mode becomes, as /stats reports it.
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--out", dir, "--port", "0", "--events", "50", "--older"}, io.Discard, io.Discard)
	}()
	controlAddr := waitFile(t, filepath.Join(dir, "control-addr"), done)
	var stats teleportsim.Stats
	getJSON(t, "http://"+controlAddr+"/stats", &stats)
	if stats.Search != "file-log" {
		t.Errorf("--older serves searches %q; want file-log", stats.Search)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}
