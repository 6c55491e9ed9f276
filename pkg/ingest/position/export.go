package position

import (
	"context"
	"time"
)

// Export is the bulk export path's slice of the Store: the position of
// each export chunk of an open date (Chunk), and a Date for each date
// closed for good.
type Export struct{ st *Store }

// Export is the slice of the bulk export path.
func (s *Store) Export() *Export { return &Export{st: s} }

// Chunk is a chunk's saved position (zero if none).
func (x *Export) Chunk(date time.Time, chunk string) (Chunk, error) {
	var c Chunk
	_, err := x.st.Get(ChunkKey(date, chunk), &c)
	return c, err
}

// SaveChunk saves a chunk's position.
func (x *Export) SaveChunk(ctx context.Context, date time.Time, c Chunk) error {
	return x.st.Put(ctx, ChunkKey(date, c.Chunk), c)
}

// Closed reports whether a date is finished for good.
func (x *Export) Closed(date time.Time) bool {
	var d Date
	ok, _ := x.st.Get(DateKey(date), &d)
	return ok && d.Closed
}

// Close marks a date whose chunks are all done as closed, with their
// totals, and drops its chunk entries so the state stays small.
func (x *Export) Close(ctx context.Context, date time.Time) error {
	d := Date{Closed: true}
	keys := x.st.Keys(ChunkPrefix(date))
	for _, k := range keys {
		var c Chunk
		if _, err := x.st.Get(k, &c); err == nil {
			d.Chunks++
			d.Events += c.Events
		}
	}
	if err := x.st.Put(ctx, DateKey(date), d); err != nil {
		return err
	}
	for _, k := range keys {
		if err := x.st.Purge(ctx, k); err != nil {
			return err
		}
	}
	return nil
}
