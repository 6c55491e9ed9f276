package teleportsim

import (
	"context"
	"runtime"
	"syscall"
	"testing"
	"time"

	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"
	apievents "github.com/gravitational/teleport/api/types/events"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// BenchmarkGenerateMillion measures backfill generation of 1,000,000 events
// and reports the heap it keeps.
func BenchmarkGenerateMillion(b *testing.B) {
	opts, err := Options{Seed: 1, Events: 1_000_000, Sessions: 20_000, From: baseTime, To: baseTime.Add(30 * 24 * time.Hour)}.withDefaults()
	if err != nil {
		b.Fatal(err)
	}
	var st *store
	for b.Loop() {
		st = generate(opts)
	}
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	b.ReportMetric(float64(m.HeapAlloc)/(1<<20), "heap-MiB")
	runtime.KeepAlive(st)
}

// BenchmarkRenderUnstructured measures turning one audit record into the
// JSON form the API returns.
func BenchmarkRenderUnstructured(b *testing.B) {
	opts, err := Options{Seed: 1, Events: 10_000, Sessions: 300, From: baseTime, To: baseTime.Add(24 * time.Hour)}.withDefaults()
	if err != nil {
		b.Fatal(err)
	}
	st := generate(opts)
	i := 0
	for b.Loop() {
		id := uint32(i % len(st.recs))
		if _, err := apievents.ToUnstructured(st.render(hit{id, st.recs[id]})); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkServeExport measures the server's CPU per event of
// ExportUnstructuredEvents, up to the bytes gRPC writes: "render" is the
// work before encodings were cached (render, JSON, Struct, proto marshal
// per event), "prerendered" is the handler serving a prerendered store.
// cpu-ns/event is process CPU (with GC on other cores) per event sent.
func BenchmarkServeExport(b *testing.B) {
	opts, err := Options{Seed: 1, Events: 20_000, From: baseTime, To: baseTime.Add(24 * time.Hour)}.withDefaults()
	if err != nil {
		b.Fatal(err)
	}
	st := generate(opts)
	chunks := st.chunks(baseTime)
	b.Run("render", func(b *testing.B) {
		out := &discardStream{ctx: b.Context(), codec: newWireCodec()}
		cpu := cpuTime()
		i := 0
		for b.Loop() {
			chunk := chunks[i%len(chunks)]
			hits, _ := st.chunkEvents(baseTime, chunk)
			for pos, h := range hits {
				u, err := apievents.ToUnstructured(st.render(h))
				if err != nil {
					b.Fatal(err)
				}
				if err := out.Send(&auditlogpb.ExportEventUnstructured{Event: u, Cursor: encodeCursor(chunk, pos)}); err != nil {
					b.Fatal(err)
				}
			}
			i++
		}
		b.ReportMetric(float64(cpuTime()-cpu)/float64(out.sent), "cpu-ns/event")
	})
	b.Run("prerendered", func(b *testing.B) {
		if err := st.prerender(b.Context()); err != nil {
			b.Fatal(err)
		}
		a := &auditLogService{s: &Server{opts: opts, st: st}}
		out := &discardStream{ctx: b.Context(), codec: newWireCodec()}
		cpu := cpuTime()
		i := 0
		for b.Loop() {
			req := &auditlogpb.ExportUnstructuredEventsRequest{Date: timestamppb.New(baseTime), Chunk: chunks[i%len(chunks)]}
			if err := a.ExportUnstructuredEvents(req, out); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(cpuTime()-cpu)/float64(out.sent), "cpu-ns/event")
	})
}

// discardStream is the server side of an export stream that encodes each
// message with a codec, as gRPC would, and drops it.
type discardStream struct {
	grpc.ServerStream
	ctx   context.Context
	codec encoding.CodecV2
	sent  int
}

func (d *discardStream) Context() context.Context { return d.ctx }

func (d *discardStream) Send(m *auditlogpb.ExportEventUnstructured) error { return d.SendMsg(m) }

func (d *discardStream) SendMsg(m any) error {
	data, err := d.codec.Marshal(m)
	if err != nil {
		return err
	}
	data.Free()
	d.sent++
	return nil
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
