package bus

import "sync"

// Watermark tracks acknowledgements of numbered messages that may complete
// out of order, and reports the highest number n such that every message up
// to n is acknowledged. A cursor saved at the mark therefore never skips a
// message that is not yet in the stream. Number messages 1, 2, 3, … (or from
// the start given to NewWatermark); the zero value starts at 1. It is safe
// for concurrent use.
type Watermark struct {
	mu    sync.Mutex
	mark  uint64              // every number ≤ mark is acknowledged
	ahead map[uint64]struct{} // acknowledged numbers > mark+1
}

// NewWatermark returns a Watermark whose numbers up to start count as done,
// so the next one expected is start+1.
func NewWatermark(start uint64) *Watermark {
	return &Watermark{mark: start}
}

// Ack records that message n is acknowledged and returns the new mark.
// Acknowledging a number at or below the mark, or twice, changes nothing.
func (w *Watermark) Ack(n uint64) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n <= w.mark {
		return w.mark
	}
	if n != w.mark+1 {
		if w.ahead == nil {
			w.ahead = make(map[uint64]struct{})
		}
		w.ahead[n] = struct{}{}
		return w.mark
	}
	w.mark = n
	for {
		if _, ok := w.ahead[w.mark+1]; !ok {
			return w.mark
		}
		delete(w.ahead, w.mark+1)
		w.mark++
	}
}

// Mark is the highest n with every message up to n acknowledged.
func (w *Watermark) Mark() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mark
}

// Gaps is how many acknowledged messages wait above the mark for an
// earlier one.
func (w *Watermark) Gaps() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.ahead)
}
