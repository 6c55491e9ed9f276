package fluentdsim

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// statsHandler serves the plain-HTTP control endpoint, for tests in other
// processes:
//
//	GET  /stats             Stats as JSON
//	GET  /ids[?tag=T]       {"<id>": times stored, …} for one tag or all
//	GET  /records?tag=T     the tag's records as a JSON array
//	GET  /faults            the faults in force
//	PUT  /faults            replace them (Faults JSON, latency as "250ms")
//	POST /down[?for=5s]     go down (until POST /up when "for" is absent)
//	POST /up                come back up
//	POST /reset             forget records and counts
func (s *Server) statsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, s.Stats())
	})
	mux.HandleFunc("GET /ids", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, s.store.ids(r.URL.Query().Get("tag")))
	})
	mux.HandleFunc("GET /records", func(w http.ResponseWriter, r *http.Request) {
		tag := r.URL.Query().Get("tag")
		if tag == "" {
			http.Error(w, "records: the tag parameter is required", http.StatusBadRequest)
			return
		}
		writeJSON(w, recordsJSON(s.Records(tag)))
	})
	mux.HandleFunc("GET /faults", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, s.Faults())
	})
	mux.HandleFunc("PUT /faults", func(w http.ResponseWriter, r *http.Request) {
		var f Faults
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err == nil {
			err = json.Unmarshal(body, &f)
		}
		if err == nil {
			err = s.SetFaults(f)
		}
		if err != nil {
			http.Error(w, fmt.Sprintf("faults: %v", err), http.StatusBadRequest)
			return
		}
		writeJSON(w, s.Faults())
	})
	mux.HandleFunc("POST /down", func(w http.ResponseWriter, r *http.Request) {
		var d time.Duration
		if v := r.URL.Query().Get("for"); v != "" {
			var err error
			if d, err = time.ParseDuration(v); err != nil {
				http.Error(w, fmt.Sprintf("down: for: %v", err), http.StatusBadRequest)
				return
			}
		}
		s.Down(d)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /up", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.Up(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, _ *http.Request) {
		s.Reset()
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// recordJSON is a Record on the wire.
type recordJSON struct {
	Tag    string          `json:"tag"`
	Time   time.Time       `json:"time"`
	ID     string          `json:"id,omitempty"`
	Size   int             `json:"size"`
	Record json.RawMessage `json:"record,omitempty"`
}

func recordsJSON(recs []Record) []recordJSON {
	out := make([]recordJSON, len(recs))
	for i, r := range recs {
		out[i] = recordJSON{Tag: r.Tag, Time: r.Time, ID: r.ID, Size: r.Size, Record: r.JSON}
	}
	return out
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	// An error here means the client went away; there is no one to tell.
	_ = json.NewEncoder(w).Encode(v)
}
