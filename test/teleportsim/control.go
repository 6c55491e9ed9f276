package teleportsim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Stats is what the control endpoint's /stats reports.
type Stats struct {
	Addr        string `json:"addr"`
	ClusterName string `json:"cluster_name"`
	Older       bool   `json:"older"`
	// Search is how searches are answered: "indexed" or "file-log".
	Search string `json:"search"`
	// Searches and LinesParsed count the searches the file log answered
	// and the lines it JSON-parsed for them: the real server's cost.
	Searches          int64          `json:"searches"`
	LinesParsed       int64          `json:"lines_parsed"`
	Events            int            `json:"events"`
	ByType            map[string]int `json:"by_type"`
	Sessions          int            `json:"sessions"`
	MissingRecordings int            `json:"missing_recordings"`
	Locks             int            `json:"locks"`
	Faults            FaultSettings  `json:"faults"`
	InjectedErrors    map[string]int `json:"injected_errors"`
}

// FaultSettings is Faults as JSON, with the latency as a Go duration
// string ("250ms").
type FaultSettings struct {
	UnavailableRate float64 `json:"unavailable_rate"`
	RateLimitRate   float64 `json:"rate_limit_rate"`
	CutAfter        int     `json:"cut_after"`
	Latency         string  `json:"latency"`
}

func (f Faults) settings() FaultSettings {
	return FaultSettings{UnavailableRate: f.UnavailableRate, RateLimitRate: f.RateLimitRate, CutAfter: f.CutAfter, Latency: f.Latency.String()}
}

func (fs FaultSettings) faults() (Faults, error) {
	f := Faults{UnavailableRate: fs.UnavailableRate, RateLimitRate: fs.RateLimitRate, CutAfter: fs.CutAfter}
	if fs.Latency != "" {
		d, err := time.ParseDuration(fs.Latency)
		if err != nil {
			return Faults{}, fmt.Errorf("latency %q: %w", fs.Latency, err)
		}
		f.Latency = d
	}
	return f, f.validate()
}

// Stats summarises what the server holds.
func (s *Server) Stats() Stats {
	sessions := s.Sessions()
	missing := 0
	for _, si := range sessions {
		if si.Missing {
			missing++
		}
	}
	byType := s.CountsByType()
	events := 0
	for _, n := range byType {
		events += n
	}
	var searches, parsed int64
	if fl := s.st.files; fl != nil {
		searches, parsed = fl.calls.Load(), fl.parsed.Load()
	}
	return Stats{
		Searches:          searches,
		LinesParsed:       parsed,
		Addr:              s.Addr(),
		ClusterName:       s.opts.ClusterName,
		Older:             s.opts.Older,
		Search:            s.opts.Search.String(),
		Events:            events,
		ByType:            byType,
		Sessions:          len(sessions),
		MissingRecordings: missing,
		Locks:             len(s.Locks()),
		Faults:            s.Faults().settings(),
		InjectedErrors:    s.InjectedErrors(),
	}
}

// ControlHandler serves the server's control endpoint, for tests in other
// processes:
//
//	GET  /stats                          Stats
//	GET  /ids                            every audit event id, in time order
//	GET  /sessions                       []SessionInfo
//	GET  /locks                          the upserted locks
//	GET  /chunks?date=2006-01-02         chunk id -> number of events
//	GET  /faults, PUT /faults            FaultSettings
//	POST /straggler?date=2006-01-02&events=N   {"chunk": id}
//	POST /restart                        restart on the same address
func (s *Server) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, s.Stats()) })
	mux.HandleFunc("GET /ids", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, s.AllEventIDs()) })
	mux.HandleFunc("GET /sessions", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, s.Sessions()) })
	mux.HandleFunc("GET /locks", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, s.Locks()) })
	mux.HandleFunc("GET /chunks", func(w http.ResponseWriter, r *http.Request) {
		date, err := time.Parse(time.DateOnly, r.URL.Query().Get("date"))
		if err != nil {
			http.Error(w, fmt.Sprintf("date %q: want YYYY-MM-DD", r.URL.Query().Get("date")), http.StatusBadRequest)
			return
		}
		writeJSON(w, s.ExportChunks(date))
	})
	mux.HandleFunc("GET /faults", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, s.Faults().settings()) })
	mux.HandleFunc("PUT /faults", func(w http.ResponseWriter, r *http.Request) {
		var fs FaultSettings
		if err := json.NewDecoder(r.Body).Decode(&fs); err != nil {
			http.Error(w, "faults: "+err.Error(), http.StatusBadRequest)
			return
		}
		f, err := fs.faults()
		if err == nil {
			err = s.SetFaults(f)
		}
		if err != nil {
			http.Error(w, "faults: "+err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, s.Faults().settings())
	})
	mux.HandleFunc("POST /straggler", func(w http.ResponseWriter, r *http.Request) {
		date, err := time.Parse(time.DateOnly, r.URL.Query().Get("date"))
		if err != nil {
			http.Error(w, fmt.Sprintf("date %q: want YYYY-MM-DD", r.URL.Query().Get("date")), http.StatusBadRequest)
			return
		}
		n := 1
		if v := r.URL.Query().Get("events"); v != "" {
			if n, err = strconv.Atoi(v); err != nil {
				http.Error(w, fmt.Sprintf("events %q: not a number", v), http.StatusBadRequest)
				return
			}
		}
		chunk, err := s.AddStraggler(date, n)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, map[string]string{"chunk": chunk})
	})
	mux.HandleFunc("POST /restart", func(w http.ResponseWriter, r *http.Request) {
		if err := s.Restart(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, map[string]string{"addr": s.Addr()})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing to do
}
