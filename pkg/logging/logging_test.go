package logging

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

func TestJSONWhenNotATerminal(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, false)
	log.Info().Str("stream", "TELEPORT_AUDIT").Msg("stream ready")
	log.Debug().Msg("hidden at info level")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want 1 line, got %d: %q", len(lines), buf.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatalf("not JSON: %v: %s", err, lines[0])
	}
	if rec["level"] != "info" || rec["message"] != "stream ready" || rec["stream"] != "TELEPORT_AUDIT" || rec["time"] == nil {
		t.Errorf("record %v", rec)
	}
}

func TestDebugLevel(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, true)
	log.Debug().Msg("shown with debug")
	if !strings.Contains(buf.String(), `"message":"shown with debug"`) {
		t.Errorf("debug line missing: %q", buf.String())
	}
}

// A pipe is a file but not a terminal: JSON, as under systemd or docker.
func TestPipeIsNotATerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if IsTerminal(w) {
		t.Error("pipe reported as a terminal")
	}
	log := New(w, false)
	log.Info().Msg("to a pipe")
	w.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(r); err != nil {
		t.Fatal(err)
	}
	if !json.Valid(bytes.TrimSpace(buf.Bytes())) {
		t.Errorf("not JSON: %q", buf.String())
	}
}
