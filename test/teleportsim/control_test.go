package teleportsim

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestControlHandler(t *testing.T) {
	s := startSim(t, Options{Seed: 3, Events: 100, Sessions: 5, From: baseTime, To: baseTime.Add(24 * time.Hour)})
	srv := httptest.NewServer(s.ControlHandler())
	defer srv.Close()

	do := func(method, path, body string, want int, out any) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s %s: status %d, want %d", method, path, resp.StatusCode, want)
		}
		if out != nil {
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
		}
	}

	var stats Stats
	do("GET", "/stats", "", 200, &stats)
	if stats.Events != 100 || stats.Sessions != 5 || stats.ByType["session.upload"] != 5 || stats.Addr != s.Addr() {
		t.Errorf("stats %+v", stats)
	}
	var ids []string
	do("GET", "/ids", "", 200, &ids)
	if len(ids) != 100 {
		t.Errorf("%d ids, want 100", len(ids))
	}
	var sessions []SessionInfo
	do("GET", "/sessions", "", 200, &sessions)
	if len(sessions) != 5 || sessions[0].Events < 6 {
		t.Errorf("sessions %+v", sessions)
	}

	var fs FaultSettings
	do("PUT", "/faults", `{"unavailable_rate": 0.5, "cut_after": 4, "latency": "5ms"}`, 200, &fs)
	if f := s.Faults(); f.UnavailableRate != 0.5 || f.CutAfter != 4 || f.Latency != 5*time.Millisecond {
		t.Errorf("faults after PUT: %+v", f)
	}
	do("PUT", "/faults", `{"unavailable_rate": 7}`, 400, nil)
	do("PUT", "/faults", `{"latency": "soon"}`, 400, nil)

	var chunk map[string]string
	do("POST", "/straggler?date=2025-03-10&events=2", "", 200, &chunk)
	var chunks map[string]int
	do("GET", "/chunks?date=2025-03-10", "", 200, &chunks)
	if chunks[chunk["chunk"]] != 2 {
		t.Errorf("straggler chunk %q has %d events in %v", chunk["chunk"], chunks[chunk["chunk"]], chunks)
	}
	do("POST", "/straggler?date=10.3.2025", "", 400, nil)
	do("POST", "/restart", "", 200, nil)
	do("GET", "/stats", "", 200, &stats)
	if stats.Events != 102 {
		t.Errorf("%d events after straggler and restart, want 102", stats.Events)
	}
}
