package fluentdsim

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"
)

// bodySizeLimit is in_http's default body_size_limit (32 MiB).
const bodySizeLimit = 32 << 20

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// ServeHTTP answers one in_http request. Order of checks: faults that stop
// the request early (dropped connection, 500), then the body (400 on a bad
// time or a poison record, 200 and dropped when it is not JSON records), then
// the tag's <match>, then storing, then the added latency.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.active.Add(1)
	defer s.active.Done()
	s.counts.requests.Add(1)
	f := s.faults.Load()

	if r.Method != http.MethodPost {
		s.answer(w, http.StatusMethodNotAllowed, "only POST is served here")
		return
	}
	if roll(f.DropPercent) && s.dropConnection(w) {
		return
	}
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer bufPool.Put(buf)
	if err := readBody(buf, r); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.answer(w, http.StatusRequestEntityTooLarge, "")
			return
		}
		s.answer(w, http.StatusBadRequest, err.Error())
		return
	}
	if f.EmitFail || roll(f.ErrorPercent) {
		s.answer(w, http.StatusInternalServerError, "emit failed: buffer space has too many data")
		return
	}

	tag := strings.ReplaceAll(strings.TrimPrefix(r.URL.Path, "/"), "/", ".")
	p := parserPool.Get().(*recordParser)
	defer putParser(p)
	p.reset(tag, time.Now().UTC(), f.Poison, s.store.needJSON())
	p.keepTimeKey = s.opts.KeepTimeKey
	res, err := p.body(buf.Bytes())
	if err != nil {
		s.answer(w, http.StatusBadRequest, err.Error())
		return
	}
	s.counts.dropped.Add(int64(res.dropped))
	switch {
	case len(res.records) == 0:
	case !s.match.matches(tag):
		s.counts.dropped.Add(int64(len(res.records)))
		s.log.Warn().Str("tag", tag).Int("records", len(res.records)).Msg("no patterns matched")
	default:
		if err := s.store.add(tag, res.records); err != nil {
			s.log.Error().Err(err).Msg("store records")
			s.answer(w, http.StatusInternalServerError, err.Error())
			return
		}
	}
	if f.Latency > 0 && !s.wait(r, f.Latency) {
		return
	}
	if s.opts.StatusCreated {
		s.answer(w, http.StatusCreated, "")
		return
	}
	s.answer(w, http.StatusOK, "")
}

// maxPooledRecords is the largest record buffer kept for the next request:
// one huge body should not pin its buffer for good.
const maxPooledRecords = 1 << 14

// putParser returns p to the pool, without the references it holds.
func putParser(p *recordParser) {
	if cap(p.records) > maxPooledRecords {
		return
	}
	clear(p.records[:cap(p.records)])
	p.poison = nil
	parserPool.Put(p)
}

// readBody reads the (possibly gzip- or deflate-encoded) body into buf,
// bounded by bodySizeLimit before and after decoding.
func readBody(buf *bytes.Buffer, r *http.Request) error {
	var body io.Reader = http.MaxBytesReader(nil, r.Body, bodySizeLimit)
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			return fmt.Errorf("gzip body: %w", err)
		}
		defer zr.Close()
		body = zr
	case "deflate":
		zr, err := zlib.NewReader(body)
		if err != nil {
			return fmt.Errorf("deflate body: %w", err)
		}
		defer zr.Close()
		body = zr
	default:
		return fmt.Errorf("unsupported Content-Encoding %q", enc)
	}
	n, err := buf.ReadFrom(io.LimitReader(body, bodySizeLimit+1))
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if n > bodySizeLimit {
		return &http.MaxBytesError{Limit: bodySizeLimit}
	}
	return nil
}

// answer writes a Fluentd-style plain-text answer ("400 Bad Request\n<why>\n";
// an empty body on success) and counts it.
func (s *Server) answer(w http.ResponseWriter, code int, msg string) {
	switch {
	case code >= 500:
		s.counts.errors.Add(1)
	case code >= 400:
		s.counts.rejected.Add(1)
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain")
	w.WriteHeader(code)
	if code < 300 {
		return
	}
	body := fmt.Sprintf("%d %s\n", code, http.StatusText(code))
	if msg != "" {
		body += msg + "\n"
	}
	_, _ = io.WriteString(w, body)
}

// dropConnection closes the connection without an answer. It reports false
// when the connection cannot be taken over (then the request goes on).
func (s *Server) dropConnection(w http.ResponseWriter) bool {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return false
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return false
	}
	s.counts.droppedConns.Add(1)
	_ = conn.Close()
	return true
}

// wait holds the answer for d; it reports false when the client went away
// or the server is closing.
func (s *Server) wait(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	case <-s.closing:
		return false
	}
}

// roll is true percent% of the time.
func roll(percent float64) bool {
	return percent > 0 && (percent >= 100 || rand.Float64()*100 < percent)
}
