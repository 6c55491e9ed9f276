package fluentdsim

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// benchBody is an array of n audit events of the size Teleport sends.
func benchBody(n, offset int) []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"event":"session.start","code":"T2000I","time":"2024-01-02T03:04:05.461Z","uid":"%08d-7c3e-4b8f-9d0a-1f2e3d4c5b6a",`+
			`"ei":0,"cluster_name":"teleport.example.com","user":"alice@example.com","login":"root","sid":"5f1c9e2a-3b4d-4e6f-8a9b-0c1d2e3f4a5b",`+
			`"server_id":"e9a7b3c1-2d4f-4a6b-8c0d-1e2f3a4b5c6d","server_hostname":"node-1","server_addr":"10.0.0.12:3022",`+
			`"addr.remote":"203.0.113.7:51234","proto":"ssh","namespace":"default","session_recording":"node","private_key_policy":"none","user_kind":1}`, offset+i)
	}
	b.WriteByte(']')
	return b.Bytes()
}

// BenchmarkArrays posts arrays of 100 events from 4 keep-alive clients and
// reports stored records per second (the sink's load in `make bench`).
func BenchmarkArrays(b *testing.B) {
	s := startServer(b, Options{})
	client := newClient(b, getPKI(b).client)
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = 8
	bodies := make([][]byte, 64)
	for i := range bodies {
		bodies[i] = benchBody(100, i*100)
	}
	b.SetParallelism(2)
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			resp, err := client.Post(s.URL()+"/test.log", "application/json", bytes.NewReader(bodies[i%len(bodies)]))
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
			i++
		}
	})
	b.StopTimer()
	st := s.Stats()
	b.ReportMetric(float64(st.StoredTotal)/time.Since(start).Seconds(), "records/s")
}
